//! `meshgate completions SHELL` and `meshgate man`: shell completions and the
//! man page, generated from the same clap definition as the parser, so they
//! cannot drift from the flags. The page is one page, meshgate(1): its
//! subcommands are described in it (there are no meshgate-serve(1) pages),
//! with the environment, the exit status and the files it reads.

use clap::CommandFactory as _;

use super::args::{Cli, ENVIRONMENT};
use super::error::CliError;

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> String {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "meshgate", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The exit status section: the contract of docs/cli.md.
const EXIT_STATUS: &[(&str, &str)] = &[
    ("0", "Done; serve: stopped by SIGINT or SIGTERM."),
    ("1", "An address could not be bound at start (binding is all or nothing), or another failure at run time."),
    ("2", "Usage: an unknown selector (with a \"did you mean\"), a bad flag value, log level or MESHGATE_* variable."),
    ("69", "Nothing matched and --fallback is fail (after --wait, if given)."),
    ("70", "The provider registry is broken: two providers claim one name."),
    ("71", "The host's interfaces could not be read."),
    ("74", "Standard output could not be written (a closed pipe is not an error)."),
    (
        "78",
        "Refused configuration: a non-loopback bind without a token, a bad token file, certificate or config file \
         (naming the file and the line).",
    ),
];

/// The files section.
const FILES: &[(&str, &str)] = &[
    ("/etc/meshgate/meshgate.toml", "The config file read by root without --config, when it exists."),
    (
        "$XDG_CONFIG_HOME/meshgate/meshgate.toml",
        "The config file read by other users without --config, when it exists (~/.config/meshgate/meshgate.toml \
         without XDG_CONFIG_HOME).",
    ),
    ("/etc/meshgate/token", "The bearer token, by convention (--token-file, or token_file in the config file)."),
    (
        "/var/lib/meshgate",
        "The state directory of root (the self-signed key); $STATE_DIRECTORY under systemd, \
         ~/.local/share/meshgate for other users.",
    ),
    ("/lib/systemd/system/meshgate.service", "The systemd unit the package installs."),
];

/// Text as roff: backslashes and hyphens escaped, no line starting with a
/// control character.
fn roff(text: &str) -> String {
    let t = text.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

/// The man page, meshgate(1), in roff.
pub fn man_page() -> Result<String, CliError> {
    // The package version only: the page must not change with each commit.
    let mut cmd = Cli::command().version(env!("CARGO_PKG_VERSION"));
    // Built, so that each subcommand's flags are there to list (they are
    // added when a subcommand is built: args.rs defers them).
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    let err = |e: std::io::Error| CliError::Runtime(format!("render the man page: {e}"));
    man.render_title(&mut out).map_err(err)?;
    man.render_name_section(&mut out).map_err(err)?;
    man.render_synopsis_section(&mut out).map_err(err)?;
    man.render_description_section(&mut out).map_err(err)?;
    man.render_options_section(&mut out).map_err(err)?;
    let mut page = String::from_utf8_lossy(&out).into_owned();
    let w = &mut page;
    use std::fmt::Write as _;
    let _ = writeln!(w, ".SH COMMANDS");
    let top: Vec<_> = cmd.get_arguments().map(|a| a.get_id().clone()).collect();
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let _ = writeln!(w, ".TP\n\\fBmeshgate {}\\fR", sub.get_name());
        let _ = writeln!(w, "{}", roff(&sub.get_about().map(ToString::to_string).unwrap_or_default()));
        let own: Vec<_> = sub
            .get_arguments()
            .filter(|a| !top.contains(a.get_id()) && !a.is_hide_set() && a.get_id() != "help")
            .collect();
        if sub.get_name() == "explain" {
            let _ = writeln!(w, ".br\nTakes every option of serve.");
        }
        for a in own {
            let name = match (a.get_long(), a.get_value_names()) {
                (Some(l), Some(v)) if a.get_action().takes_values() => format!("\\-\\-{} <{}>", roff(l), roff(&v[0])),
                (Some(l), _) => format!("\\-\\-{}", roff(l)),
                (None, Some(v)) => format!("<{}>", roff(&v[0])),
                (None, None) => format!("<{}>", roff(a.get_id().as_str())),
            };
            let help = a.get_help().map(ToString::to_string).unwrap_or_default();
            let _ = writeln!(w, ".RS\n.TP\n\\fB{name}\\fR\n{}\n.RE", roff(&help));
        }
    }
    let _ = writeln!(w, ".SH ENVIRONMENT");
    for line in ENVIRONMENT.lines().skip(1) {
        let line = line.trim_start();
        let (name, what) = line.split_once(' ').unwrap_or((line, ""));
        let _ = writeln!(w, ".TP\n\\fB{}\\fR\n{}", roff(name), roff(what.trim()));
    }
    let _ = writeln!(w, ".SH \"EXIT STATUS\"");
    for (code, what) in EXIT_STATUS {
        let _ = writeln!(w, ".TP\n\\fB{code}\\fR\n{}", roff(what));
    }
    let _ = writeln!(w, ".SH FILES");
    for (file, what) in FILES {
        let _ = writeln!(w, ".TP\n\\fI{}\\fR\n{}", roff(file), roff(what));
    }
    let _ = writeln!(w, ".SH \"SEE ALSO\"\n\\fBsystemd.exec\\fR(5), \\fBwg\\fR(8), \\fBtailscale\\fR(1)");
    let _ = writeln!(w, ".SH VERSION\nv{}", env!("CARGO_PKG_VERSION"));
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_no_page_that_does_not_exist_and_has_exit_status_and_files() {
        let page = man_page().unwrap();
        assert!(!page.contains("meshgate\\-serve") && !page.contains("meshgate\\-explain(1)"), "{page}");
        for section in [".SH COMMANDS", ".SH ENVIRONMENT", ".SH \"EXIT STATUS\"", ".SH FILES"] {
            assert!(page.contains(section), "no {section}");
        }
        assert!(page.contains(".TP\n\\fB78\\fR\n") && page.contains("/etc/meshgate/meshgate.toml"), "{page}");
        assert!(page.contains("\\fBmeshgate peers\\fR") && page.contains("\\fB\\-\\-json\\fR"), "{page}");
        assert!(!page.contains(".SH EXTRA"), "{page}");
    }

    #[test]
    fn bash_completes_selector_names_after_bind() {
        let bash = completions(clap_complete::Shell::Bash);
        let after_bind = bash.split("--bind)").nth(1).expect("a --bind case").lines().nth(1).unwrap_or_default();
        assert!(after_bind.contains("compgen -W") && after_bind.contains("wireguard"), "{after_bind}");
        assert!(after_bind.contains("iface:") && after_bind.contains("auto"), "{after_bind}");
    }
}
