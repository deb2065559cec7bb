//! The clap definition of the command line: [`Cli`], its subcommands and their
//! flags. Values are checked as they are parsed (`values.rs`).

use std::path::PathBuf;

use clap::{Args, Parser};
use meshgate_core::Fallback;

use super::values;
use crate::gateway::Upstream;

/// meshgate: a gateway that listens only on the networks you name.
#[derive(Debug, Parser)]
#[command(
    name = "meshgate",
    version = VERSION,
    about,
    args_conflicts_with_subcommands = true,
    after_help = ENVIRONMENT
)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `serve`'s options, when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// `--version`: the package version, and the commit when built from git
/// (build.rs sets `MESHGATE_VERSION_LONG`).
pub(super) const VERSION: &str = match option_env!("MESHGATE_VERSION_LONG") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};

/// Every environment variable meshgate reads, for `--help` and the man page.
pub(crate) const ENVIRONMENT: &str = "\
Environment (an empty MESHGATE_* variable counts as unset):
  MESHGATE_BIND        --bind (comma-separated)
  MESHGATE_PORT        --port
  MESHGATE_CONFIG      --config
  MESHGATE_TOKEN       the bearer token itself (below --token-file, above the config file)
  MESHGATE_UPSTREAM    --upstream
  MESHGATE_STATE_DIR   --state-dir (systemd's STATE_DIRECTORY is used when unset)
  MESHGATE_LOG_FORMAT  --log-format
  MESHGATE_TCP_SPLICE  off: TCP services copy bytes rather than splice them (Linux; default on)
  RUST_LOG             the log filter, below --log-level (default info)
  NO_COLOR             no colour in the log even on a terminal
  NOTIFY_SOCKET        set by systemd (Type=notify): READY=1 and STATUS= are sent there
  TOKIO_WORKER_THREADS how many threads serve connections (default: one per CPU)";

/// The subcommands.
///
/// Written out rather than derived so that each subcommand's flags are added
/// to the parser only when that subcommand is the one given (clap's
/// [`clap::Command::defer`]): `meshgate explain` no longer builds the ~130
/// flag definitions of every other subcommand before it starts. The names,
/// summaries and `--help` text are the derive's (a test renders both).
// Parsed once per process: the size of the `serve` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Command {
    /// Serve on the resolved addresses (the default).
    Serve(ServeArgs),
    /// Show which addresses a bind would use, and why; binds nothing.
    Explain(ExplainArgs),
    /// List the bind modes linked into this program.
    Providers(ProvidersArgs),
    /// List the WireGuard peers of the interfaces a bind resolves to.
    Peers(PeersArgs),
    /// Ask the gateway running on this host where it listens.
    Status(StatusArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
    /// Print the man page (roff).
    Man(ManArgs),
    /// Print the local CA's certificate.
    Ca(CaArgs),
}

/// One row per subcommand: its variant, flags, name, one-line summary (what
/// `meshgate --help` lists) and whether its `--help` ends with the
/// environment variables.
macro_rules! subcommands {
    ($($variant:ident($args:ty) = $name:literal, $about:expr, $env:expr;)*) => {
        impl clap::Subcommand for Command {
            fn augment_subcommands(cmd: clap::Command) -> clap::Command {
                // The summary again after the flags: a derived `Args` sets its
                // own doc comment as `about`.
                cmd$(.subcommand(subcommand($name, $about, $env).defer(|c| {
                    subcommand_text(<$args as clap::Args>::augment_args(c), $about, $env)
                })))*
            }
            fn augment_subcommands_for_update(cmd: clap::Command) -> clap::Command {
                cmd$(.subcommand(subcommand($name, $about, $env).defer(|c| {
                    subcommand_text(<$args as clap::Args>::augment_args_for_update(c), $about, $env)
                })))*
            }
            fn has_subcommand(name: &str) -> bool {
                matches!(name, $($name)|*)
            }
        }

        impl clap::FromArgMatches for Command {
            fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
                Self::from_arg_matches_mut(&mut m.clone())
            }
            fn from_arg_matches_mut(m: &mut clap::ArgMatches) -> Result<Self, clap::Error> {
                match m.remove_subcommand() {
                    $(Some((name, mut sub)) if name == $name => {
                        Ok(Self::$variant(<$args as clap::FromArgMatches>::from_arg_matches_mut(&mut sub)?))
                    })*
                    Some((name, _)) => Err(clap::Error::raw(
                        clap::error::ErrorKind::InvalidSubcommand,
                        format!("the subcommand '{name}' wasn't recognized"),
                    )),
                    None => Err(clap::Error::raw(
                        clap::error::ErrorKind::MissingSubcommand,
                        "a subcommand is required but one was not provided",
                    )),
                }
            }
            fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
                self.update_from_arg_matches_mut(&mut m.clone())
            }
            fn update_from_arg_matches_mut(&mut self, m: &mut clap::ArgMatches) -> Result<(), clap::Error> {
                let Some(name) = m.subcommand_name().map(str::to_owned) else { return Ok(()) };
                match self {
                    $(Self::$variant(args) if name == $name => {
                        if let Some((_, mut sub)) = m.remove_subcommand() {
                            <$args as clap::FromArgMatches>::update_from_arg_matches_mut(args, &mut sub)?;
                        }
                        Ok(())
                    })*
                    other => {
                        *other = Self::from_arg_matches_mut(m)?;
                        Ok(())
                    }
                }
            }
        }
    };
}

subcommands! {
    Serve(ServeArgs) = "serve", "Serve on the resolved addresses (the default)", true;
    Explain(ExplainArgs) = "explain", "Show which addresses a bind would use, and why; binds nothing", true;
    Providers(ProvidersArgs) = "providers", "List the bind modes linked into this program", false;
    Peers(PeersArgs) = "peers",
        "List the WireGuard peers of the interfaces a bind resolves to: name, key, allowed-ips, last handshake, and \
         whether each needs the token",
        false;
    Status(StatusArgs) = "status",
        "Ask the gateway running on this host (through its loopback door) where it listens, its services and peers; \
         exit 3 when none answers",
        false;
    Completions(CompletionsArgs) = "completions",
        "Print a shell completion script: `meshgate completions bash > /etc/bash_completion.d/meshgate`",
        false;
    Man(ManArgs) = "man", "Print the man page (roff): `meshgate man | man -l -`", false;
    Ca(CaArgs) = "ca",
        "Print the local CA's certificate (`--tls internal`) to import into browsers and devices; its fingerprint, \
         constraints and path on stderr",
        true;
}

/// A subcommand without its flags (they come with `defer`).
fn subcommand(name: &'static str, about: &'static str, environment: bool) -> clap::Command {
    subcommand_text(clap::Command::new(name), about, environment)
}

/// A subcommand's summary, and the environment variables below its `--help`.
fn subcommand_text(cmd: clap::Command, about: &'static str, environment: bool) -> clap::Command {
    let cmd = cmd.about(about).long_about(None);
    if environment {
        cmd.after_help(ENVIRONMENT)
    } else {
        cmd
    }
}

/// `completions`' argument.
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `man` takes no options.
#[derive(Debug, Clone, Default, Args)]
pub struct ManArgs {}

/// Options that choose addresses (shared by `serve` and `explain`).
#[derive(Debug, Clone, Default, Args)]
pub struct BindArgs {
    /// Where to listen: a mode (loopback, lan, all, tailnet, wireguard, ...), auto,
    /// iface:NAME, cidr:NETWORK, an IP, or custom with --host. Repeat for a union.
    /// [env: MESHGATE_BIND, comma-separated; empty is unset]
    // Read in settings.rs rather than by clap, so that a bad selector can say
    // it came from the variable and an empty variable counts as unset.
    // The names are offered to shell completion only (SelectorNames accepts
    // any text): `hide_possible_values` keeps them out of --help.
    #[arg(
        help_heading = "Binding",
        long = "bind",
        value_delimiter = ',',
        value_name = "SELECTOR",
        value_parser = values::SelectorNames,
        hide_possible_values = true
    )]
    pub bind: Vec<String>,
    /// The address for `--bind custom`.
    #[arg(help_heading = "Binding", long, value_name = "IP")]
    pub host: Option<String>,
    /// The port [default: 18789] [env: MESHGATE_PORT]
    // The MESHGATE_* variables are read in env.rs, not by clap, so that a bad
    // value names its variable and an empty one counts as unset.
    #[arg(help_heading = "Binding", long)]
    pub port: Option<u16>,
    /// A TOML config file [default: /etc/meshgate/meshgate.toml for root, else
    /// ~/.config/meshgate/meshgate.toml, when it exists] [env: MESHGATE_CONFIG]
    #[arg(help_heading = "Binding", long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// When nothing matches: serve on loopback, or fail (exit 69) [default: loopback].
    #[arg(help_heading = "Binding", long, value_enum)]
    pub fallback: Option<FallbackArg>,
    /// Do not add the 127.0.0.1/::1 companion listener beside non-loopback ones.
    #[arg(help_heading = "Binding", long)]
    pub no_loopback: bool,
}

/// `--fallback`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FallbackArg {
    /// Serve on loopback only, and say so.
    Loopback,
    /// Serve nothing: exit 69.
    Fail,
}

impl From<FallbackArg> for Fallback {
    fn from(f: FallbackArg) -> Self {
        match f {
            FallbackArg::Loopback => Fallback::Loopback,
            FallbackArg::Fail => Fallback::Fail,
        }
    }
}

/// `serve`'s options.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Address selection.
    #[command(flatten)]
    pub bind: BindArgs,
    /// A file holding the bearer token (required for non-loopback listeners).
    #[arg(help_heading = "Auth", long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Resolve once at start; do not follow interface changes.
    #[arg(help_heading = "Binding", long)]
    pub no_follow: bool,
    /// At start, wait up to SECONDS for the selectors to match before falling back
    /// (with --fallback fail, an expired wait exits 69).
    #[arg(help_heading = "Binding", long, value_name = "SECONDS", value_parser = values::parse_seconds)]
    pub wait: Option<std::time::Duration>,
    /// Forward every authorized request to this service: http://HOST:PORT or
    /// unix:/PATH. meshgate's own routes move under /_meshgate/. [env: MESHGATE_UPSTREAM]
    #[arg(help_heading = "Upstream", long, value_name = "URL", value_parser = Upstream::parse)]
    pub upstream: Option<Upstream>,
    /// Seconds to open a connection to the upstream before answering 504 [default: 5].
    #[arg(help_heading = "Upstream", long, value_name = "SECONDS", value_parser = values::parse_seconds)]
    pub upstream_connect_timeout: Option<std::time::Duration>,
    /// Seconds to wait for the upstream's response headers before answering 504
    /// [default: 60]. Bodies (downloads, event streams) are not cut off.
    #[arg(help_heading = "Upstream", long, value_name = "SECONDS", value_parser = values::parse_seconds)]
    pub upstream_timeout: Option<std::time::Duration>,
    /// The largest request head (request line and headers) a client may send;
    /// larger gets 431 [default: 65536; at least 8192].
    #[arg(help_heading = "Limits", long, value_name = "BYTES", value_parser = values::parse_header_bytes)]
    pub max_header_bytes: Option<usize>,
    /// Seconds a client connection may take to send a request head, idle
    /// keep-alive time included, before it is closed [default: 60].
    #[arg(help_heading = "Limits", long, value_name = "SECONDS", value_parser = values::parse_seconds)]
    pub idle_timeout: Option<std::time::Duration>,
    /// The most client connections open at once, over all listeners; more wait
    /// in the listen queue until one closes [default: 512].
    #[arg(help_heading = "Limits", long, value_name = "N", value_parser = values::parse_connections)]
    pub max_connections: Option<usize>,
    /// The largest request body meshgate's own routes accept; larger gets 413
    /// [default: 2097152].
    #[arg(help_heading = "Limits", long, value_name = "BYTES", value_parser = values::parse_body_bytes)]
    pub max_body_bytes: Option<u64>,
    /// The largest request body forwarded to the upstream; larger gets 413
    /// [default: no cap]. Bodies stream either way.
    #[arg(help_heading = "Upstream", long, value_name = "BYTES", value_parser = values::parse_body_bytes)]
    pub upstream_max_body_bytes: Option<u64>,
    /// An extra `Host` name the loopback listeners answer to (besides localhost,
    /// 127.x.y.z and `[::1]`); others get 421. Repeatable.
    #[arg(help_heading = "Browser guard", long = "allow-host", value_name = "NAME")]
    pub allow_host: Vec<String>,
    /// An extra `Origin` a WebSocket upgrade may come from (besides the origin it
    /// is sent to); others get 403. Repeatable.
    #[arg(help_heading = "Browser guard", long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origin: Vec<String>,
    /// Let this mesh peer in without a token: a name from the config file's
    /// `[peers]`, a base64 WireGuard public key, a tailnet login
    /// (user@example.com) or a tailnet tag (tag:NAME). Repeatable; replaces the
    /// config file's allow_peers.
    #[arg(help_heading = "Auth", long = "allow-peer", value_name = "NAME|KEY|LOGIN|tag:T")]
    pub allow_peer: Vec<String>,
    /// The most connections one address may hold open on non-loopback
    /// listeners [default: 64].
    #[arg(help_heading = "Limits", long, value_name = "N", value_parser = values::parse_connections)]
    pub max_connections_per_address: Option<usize>,
    /// The most connections one address may hold open before presenting a
    /// token, a session or an allowed peer identity [default: 16].
    #[arg(help_heading = "Limits", long, value_name = "N", value_parser = values::parse_connections)]
    pub max_unauthenticated_per_address: Option<usize>,
    /// Forward TCP port PORT on the bind's addresses to UPSTREAM
    /// (tcp://HOST:PORT, HOST:PORT or unix:/PATH), admitting only the peers
    /// of the allow-list (--allow-peer); named tcp-PORT. Repeatable. More
    /// services: `[[service]]` tables in the config file.
    #[arg(help_heading = "Services", long = "tcp", value_name = "PORT=UPSTREAM", value_parser = parse_tcp)]
    pub tcp: Vec<(u16, String)>,
    /// HTTPS.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

/// `--tcp PORT=UPSTREAM`: the port and the upstream as `tcp://HOST:PORT` or
/// `unix:/PATH` (a bare `HOST:PORT` is TCP).
pub(crate) fn parse_tcp(value: &str) -> Result<(u16, String), String> {
    let hint = "expected PORT=UPSTREAM, e.g. 5432=tcp://127.0.0.1:5432, 5432=127.0.0.1:5432 or 5432=unix:/run/postgresql/.s.PGSQL.5432";
    let (port, upstream) = value.split_once('=').ok_or_else(|| format!("{value:?}: {hint}"))?;
    let port: u16 = port
        .trim()
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{value:?}: the port {port:?} is not 1 to 65535; {hint}"))?;
    let upstream = upstream.trim();
    let upstream = if upstream.starts_with("tcp://") || upstream.starts_with("unix:") {
        upstream.to_owned()
    } else {
        format!("tcp://{upstream}")
    };
    crate::gateway::Target::parse(&upstream).map_err(|e| format!("{value:?}: {e}"))?;
    Ok((port, upstream))
}

/// Logging (`serve`'s options).
#[derive(Debug, Clone, Default, Args)]
pub struct LogArgs {
    /// The log's format on stderr: text for a person, json for a collector
    /// (one object a line) [default: text] [env: MESHGATE_LOG_FORMAT]
    #[arg(help_heading = "Logging", long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// The log level or filter (error, warn, info, debug, trace, or a
    /// tracing filter such as `meshgate=debug`); above RUST_LOG [default: info].
    #[arg(help_heading = "Logging", long, value_name = "LEVEL", value_parser = values::parse_log_level)]
    pub log_level: Option<String>,
    /// Log one line per request (listener, peer, identity, method, path
    /// without the query, status, bytes, duration); never a token or cookie.
    #[arg(help_heading = "Logging", long)]
    pub access_log: bool,
}

/// `--log-format`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for a person; coloured only on a terminal and without NO_COLOR.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// HTTPS on the non-loopback listeners (`serve`'s options).
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// Serve HTTPS with this PEM certificate chain (with --tls-key); reloaded
    /// when the files change or on SIGHUP.
    #[arg(help_heading = "HTTPS", long, value_name = "FILE", requires = "tls_key", conflicts_with = "tls")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(help_heading = "HTTPS", long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve HTTPS with a certificate meshgate gets itself: `internal` (from
    /// a local CA in --state-dir that devices trust once: `meshgate ca`),
    /// `tailscale` (this node's *.ts.net certificate from tailscaled) or
    /// `self-signed` (its key's SHA-256 printed at start, for pinning).
    #[arg(help_heading = "HTTPS", long, value_enum, value_name = "MODE")]
    pub tls: Option<TlsMode>,
    /// A DNS name the self-signed or internal certificate also names (a
    /// MagicDNS name, say); a new local CA permits exactly these. Repeatable.
    #[arg(help_heading = "HTTPS", long = "tls-name", value_name = "NAME")]
    pub tls_name: Vec<String>,
    /// Where the self-signed key and the local CA live [default: $STATE_DIRECTORY, else
    /// /var/lib/meshgate for root, else ~/.local/share/meshgate] [env: MESHGATE_STATE_DIR]
    #[arg(help_heading = "HTTPS", long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Serve HTTPS on the loopback listeners too (they stay plain HTTP otherwise).
    #[arg(help_heading = "HTTPS", long)]
    pub tls_loopback: bool,
}

/// `--tls`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsMode {
    /// A self-signed certificate over a key kept in the state directory.
    SelfSigned,
    /// Short-lived certificates from a local CA kept in the state directory,
    /// limited by name constraints to the mesh's addresses and your names.
    Internal,
    /// This node's *.ts.net certificate from tailscaled (HTTPS certificates
    /// must be on in the tailnet).
    Tailscale,
}

/// `ca`'s options: the same state directory and config file as `serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct CaArgs {
    /// Print the certificate as DER (for phones) instead of PEM.
    #[arg(long)]
    pub der: bool,
    /// Where the local CA lives [default: as serve: $STATE_DIRECTORY, else
    /// /var/lib/meshgate for root, else ~/.local/share/meshgate] [env: MESHGATE_STATE_DIR]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// A TOML config file (its state_dir is used when --state-dir is not given)
    /// [env: MESHGATE_CONFIG]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// `explain`'s options: every `serve` flag (so that `serve` can become
/// `explain` in a command line), and `--json`.
#[derive(Debug, Clone, Default, Args)]
pub struct ExplainArgs {
    /// `serve`'s options; only the address selection and the token's presence
    /// change the answer.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `peers`' options.
#[derive(Debug, Clone, Default, Args)]
pub struct PeersArgs {
    /// Address selection (default: wireguard).
    #[command(flatten)]
    pub bind: BindArgs,
    /// Judge "allowed" by these instead of the config file's allow_peers.
    #[arg(long = "allow-peer", value_name = "NAME|KEY|LOGIN|tag:T")]
    pub allow_peer: Vec<String>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `status`' options: the port as `serve` takes it.
#[derive(Debug, Clone, Default, Args)]
pub struct StatusArgs {
    /// The gateway's port [default: 18789].
    #[arg(long, env = "MESHGATE_PORT")]
    pub port: Option<u16>,
    /// The config file the gateway was started with (for its port).
    #[arg(long, env = "MESHGATE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print the gateway's status document as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `providers`' options.
#[derive(Debug, Clone, Default, Args)]
pub struct ProvidersArgs {
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser, Subcommand};

    use super::*;

    /// The subcommands as `#[derive(Subcommand)]` wrote them before they were
    /// deferred: the written-out [`Command`] must read the same to a person.
    #[allow(clippy::large_enum_variant, dead_code)]
    #[derive(Debug, Subcommand)]
    enum Derived {
        /// Serve on the resolved addresses (the default).
        #[command(after_help = ENVIRONMENT)]
        Serve(ServeArgs),
        /// Show which addresses a bind would use, and why; binds nothing.
        #[command(after_help = ENVIRONMENT)]
        Explain(ExplainArgs),
        /// List the bind modes linked into this program.
        Providers(ProvidersArgs),
        /// List the WireGuard peers of the interfaces a bind resolves to: name,
        /// key, allowed-ips, last handshake, and whether each needs the token.
        Peers(PeersArgs),
        /// Ask the gateway running on this host (through its loopback door) where
        /// it listens, its services and peers; exit 3 when none answers.
        Status(StatusArgs),
        /// Print a shell completion script: `meshgate completions bash > /etc/bash_completion.d/meshgate`.
        Completions(CompletionsArgs),
        /// Print the man page (roff): `meshgate man | man -l -`.
        Man(ManArgs),
        /// Print the local CA's certificate (`--tls internal`) to import into
        /// browsers and devices; its fingerprint, constraints and path on stderr.
        #[command(after_help = ENVIRONMENT)]
        Ca(CaArgs),
    }

    /// meshgate: a gateway that listens only on the networks you name.
    #[derive(Debug, Parser)]
    #[command(name = "meshgate", version = VERSION, about, args_conflicts_with_subcommands = true, after_help = ENVIRONMENT)]
    struct DerivedCli {
        #[command(subcommand)]
        command: Option<Derived>,
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn deferred_subcommands_read_as_the_derived_ones() {
        let mut ours = Cli::command();
        let mut derived = DerivedCli::command();
        ours.build();
        derived.build();
        assert_eq!(ours.render_long_help().to_string(), derived.render_long_help().to_string());
        assert_eq!(ours.render_help().to_string(), derived.render_help().to_string());
        let names: Vec<String> = derived.get_subcommands().map(|s| s.get_name().to_owned()).collect();
        assert_eq!(names, ours.get_subcommands().map(|s| s.get_name().to_owned()).collect::<Vec<_>>());
        for name in names {
            let a = ours.find_subcommand_mut(&name).unwrap();
            let (help, long) = (a.render_help().to_string(), a.render_long_help().to_string());
            let usage = a.render_usage().to_string();
            let b = derived.find_subcommand_mut(&name).unwrap();
            assert_eq!(help, b.render_help().to_string(), "meshgate {name} -h");
            assert_eq!(long, b.render_long_help().to_string(), "meshgate {name} --help");
            assert_eq!(usage, b.render_usage().to_string(), "meshgate {name}");
        }
    }

    #[test]
    fn each_subcommand_parses_into_its_variant_and_errors_read_the_same() {
        type Case<'a> = (&'a [&'a str], fn(&Command) -> bool);
        let cases: [Case<'_>; 8] = [
            (&["meshgate", "serve", "--port", "7"], |c| matches!(c, Command::Serve(a) if a.bind.port == Some(7))),
            (&["meshgate", "explain", "--json"], |c| matches!(c, Command::Explain(a) if a.json)),
            (&["meshgate", "providers", "--json"], |c| matches!(c, Command::Providers(a) if a.json)),
            (&["meshgate", "peers", "--allow-peer", "x"], |c| matches!(c, Command::Peers(a) if a.allow_peer == ["x"])),
            (&["meshgate", "status", "--json"], |c| matches!(c, Command::Status(a) if a.json)),
            (&["meshgate", "completions", "bash"], |c| matches!(c, Command::Completions(_))),
            (&["meshgate", "man"], |c| matches!(c, Command::Man(_))),
            (&["meshgate", "ca", "--der"], |c| matches!(c, Command::Ca(a) if a.der)),
        ];
        for (argv, is) in cases {
            let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            assert!(cli.command.as_ref().is_some_and(is), "{argv:?}: {:?}", cli.command);
        }
        assert!(Cli::try_parse_from(["meshgate", "--port", "7"]).unwrap().command.is_none());
        for argv in [
            &["meshgate", "explian"][..],
            &["meshgate", "explain", "--jsn"],
            &["meshgate", "serve", "--bogus"],
            &["meshgate", "peers", "--port", "x"],
            &["meshgate", "completions"],
            &["meshgate", "--port", "1", "explain"],
            &["meshgate", "--der"],
            &["meshgate", "--jsn"],
            &["meshgate", "help", "explain"],
            &["meshgate", "help", "ca"],
            &["meshgate", "help"],
            &["meshgate", "explain", "--help"],
            &["meshgate", "peers", "-h"],
            &["meshgate", "ca", "--port", "1"],
            &["meshgate", "completions", "fsh"],
            &["meshgate", "status", "--der"],
            &["meshgate", "--version"],
            &["meshgate", "explain", "--version"],
            &["meshgate", "explain", "--", "x"],
        ] {
            let ours = Cli::try_parse_from(argv).unwrap_err();
            let derived = DerivedCli::try_parse_from(argv).unwrap_err();
            assert_eq!(ours.kind(), derived.kind(), "{argv:?}");
            assert_eq!(ours.render().to_string(), derived.render().to_string(), "{argv:?}");
        }
    }
}
