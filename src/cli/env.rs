//! The `MESHGATE_*` environment variables: read here, once, into the parsed
//! flags (a flag given on the command line wins), so that a bad value names
//! its variable (`MESHGATE_PORT="abc"`, not `--port`) and an empty variable
//! counts as unset, for every one of them as for `MESHGATE_BIND`.

use std::path::PathBuf;

use clap::ValueEnum as _;

use super::args::{BindArgs, CaArgs, Cli, Command, LogFormat, ServeArgs};
use super::error::CliError;
use crate::gateway::Upstream;

/// A variable's value; an empty (or unset, or not UTF-8) one is `None`.
/// Every `MESHGATE_*` variable is read through this.
pub(crate) fn var(name: &str) -> Option<String> {
    var_from(name, |k| std::env::var(k).ok())
}

fn var_from(name: &str, get: impl Fn(&str) -> Option<String>) -> Option<String> {
    get(name).filter(|v| !v.is_empty())
}

/// Fills the flags the command line left unset from the environment.
pub fn apply(cli: &mut Cli) -> Result<(), CliError> {
    apply_from(cli, |k| std::env::var(k).ok())
}

fn apply_from(cli: &mut Cli, get: impl Fn(&str) -> Option<String> + Copy) -> Result<(), CliError> {
    match &mut cli.command {
        None => serve(&mut cli.serve, get),
        Some(Command::Serve(a)) => serve(a, get),
        Some(Command::Explain(a)) => serve(&mut a.serve, get),
        Some(Command::Peers(a)) => bind(&mut a.bind, get),
        Some(Command::Ca(a)) => {
            ca(a, get);
            Ok(())
        }
        Some(_) => Ok(()),
    }
}

fn bad(name: &str, value: &str, detail: impl std::fmt::Display) -> CliError {
    CliError::BadFlag(format!("{name}={value:?}: {detail}; fix the variable or unset it"))
}

fn bind(args: &mut BindArgs, get: impl Fn(&str) -> Option<String>) -> Result<(), CliError> {
    if args.port.is_none() {
        if let Some(v) = var_from("MESHGATE_PORT", &get) {
            let port = v.trim().parse::<u16>().map_err(|_| bad("MESHGATE_PORT", &v, "not a port (0 to 65535)"))?;
            args.port = Some(port);
        }
    }
    if args.config.is_none() {
        args.config = var_from("MESHGATE_CONFIG", &get).map(PathBuf::from);
    }
    Ok(())
}

fn serve(args: &mut ServeArgs, get: impl Fn(&str) -> Option<String> + Copy) -> Result<(), CliError> {
    bind(&mut args.bind, get)?;
    if args.upstream.is_none() {
        if let Some(v) = var_from("MESHGATE_UPSTREAM", get) {
            args.upstream = Some(Upstream::parse(&v).map_err(|e| bad("MESHGATE_UPSTREAM", &v, e.detail))?);
        }
    }
    if args.log.log_format.is_none() {
        if let Some(v) = var_from("MESHGATE_LOG_FORMAT", get) {
            let f = LogFormat::from_str(v.trim(), true)
                .map_err(|_| bad("MESHGATE_LOG_FORMAT", &v, "expected text or json"))?;
            args.log.log_format = Some(f);
        }
    }
    if args.tls.state_dir.is_none() {
        args.tls.state_dir = var_from("MESHGATE_STATE_DIR", get).map(PathBuf::from);
    }
    // Read by the TCP forwarder itself (the library has no flags); checked
    // here so that a bad value stops the start, as for every variable.
    if let Some(v) = var_from("MESHGATE_TCP_SPLICE", get) {
        if v != "on" && v != "off" {
            return Err(bad(
                "MESHGATE_TCP_SPLICE",
                &v,
                "expected on or off (off copies TCP bytes instead of splicing)",
            ));
        }
    }
    Ok(())
}

/// `meshgate ca` reads the same state directory and config file as `serve`.
fn ca(args: &mut CaArgs, get: impl Fn(&str) -> Option<String> + Copy) {
    if args.state_dir.is_none() {
        args.state_dir = var_from("MESHGATE_STATE_DIR", get).map(PathBuf::from);
    }
    if args.config.is_none() {
        args.config = var_from("MESHGATE_CONFIG", get).map(PathBuf::from);
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + Copy + 'a {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let mut cli = Cli::parse_from(["meshgate", "explain"]);
        let e = apply_from(&mut cli, env(&[("MESHGATE_PORT", "abc")])).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().starts_with("MESHGATE_PORT=\"abc\": not a port"), "{e}");
        let mut cli = Cli::parse_from(["meshgate", "serve"]);
        let e = apply_from(&mut cli, env(&[("MESHGATE_LOG_FORMAT", "yaml")])).unwrap_err();
        assert!(e.to_string().starts_with("MESHGATE_LOG_FORMAT=\"yaml\""), "{e}");
        let e = apply_from(&mut cli, env(&[("MESHGATE_UPSTREAM", "ftp://x")])).unwrap_err();
        assert!(e.to_string().starts_with("MESHGATE_UPSTREAM=\"ftp://x\""), "{e}");
        for v in ["0", "true", "OFF", " off"] {
            let e = apply_from(&mut cli, env(&[("MESHGATE_TCP_SPLICE", v)])).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{v:?}");
            let text = e.to_string();
            assert!(text.starts_with(&format!("MESHGATE_TCP_SPLICE={v:?}: expected on or off")), "{text}");
        }
        for v in ["on", "off"] {
            apply_from(&mut cli, env(&[("MESHGATE_TCP_SPLICE", v)])).unwrap();
        }
    }

    #[test]
    fn empty_is_unset_and_a_flag_wins() {
        let empty = [
            ("MESHGATE_PORT", ""),
            ("MESHGATE_CONFIG", ""),
            ("MESHGATE_UPSTREAM", ""),
            ("MESHGATE_LOG_FORMAT", ""),
            ("MESHGATE_STATE_DIR", ""),
            ("MESHGATE_TCP_SPLICE", ""),
        ];
        let mut cli = Cli::parse_from(["meshgate"]);
        apply_from(&mut cli, env(&empty)).unwrap();
        let s = &cli.serve;
        assert!(s.bind.port.is_none() && s.bind.config.is_none() && s.upstream.is_none());
        assert!(s.log.log_format.is_none() && s.tls.state_dir.is_none());
        let mut cli = Cli::parse_from(["meshgate", "serve", "--port", "7"]);
        apply_from(&mut cli, env(&[("MESHGATE_PORT", "abc"), ("MESHGATE_LOG_FORMAT", "JSON")])).unwrap();
        let Some(Command::Serve(s)) = &cli.command else { panic!("serve") };
        assert_eq!(s.bind.port, Some(7));
        assert_eq!(s.log.log_format, Some(LogFormat::Json));
        assert_eq!(var_from("MESHGATE_TOKEN", env(&[("MESHGATE_TOKEN", "")])), None);
    }

    #[test]
    fn ca_reads_the_state_dir_and_config_as_serve_does() {
        let vars = [("MESHGATE_STATE_DIR", "/srv/mg"), ("MESHGATE_CONFIG", "/etc/mg.toml")];
        let mut cli = Cli::parse_from(["meshgate", "ca"]);
        apply_from(&mut cli, env(&vars)).unwrap();
        let Some(Command::Ca(a)) = &cli.command else { panic!("ca") };
        assert_eq!(a.state_dir.as_deref(), Some(std::path::Path::new("/srv/mg")));
        assert_eq!(a.config.as_deref(), Some(std::path::Path::new("/etc/mg.toml")));
        let mut cli = Cli::parse_from(["meshgate", "ca", "--state-dir", "/flag"]);
        apply_from(&mut cli, env(&[("MESHGATE_STATE_DIR", "/srv/mg"), ("MESHGATE_CONFIG", "")])).unwrap();
        let Some(Command::Ca(a)) = &cli.command else { panic!("ca") };
        assert_eq!(a.state_dir.as_deref(), Some(std::path::Path::new("/flag")));
        assert!(a.config.is_none());
    }
}
