//! `meshgate serve`: settings → token → options → [`crate::embed`]'s gateway
//! (resolution → listeners → serve until a signal, following interface changes
//! unless `--no-follow`). The library API and the command are one code path.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use meshgate_core::config::{ConfigError, FileConfig};
use meshgate_core::{InterfaceSource, Listener, ListenerRole, Resolution, Selector};

use super::browser::BrowserPolicy;
use super::listeners::{display_addr, ServerLimits, MIN_HEADER_BYTES};
use super::routes::app;
use super::token::Token;
use super::upstream::{Proxy, Upstream, UpstreamLimits};
use crate::cli::{self, CliError, ServeArgs};
use crate::embed::{self, Gateway};

/// How long in-flight requests get to finish at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The token, by precedence: `--token-file` > `MESHGATE_TOKEN` > config
/// `token_file` > config `token`.
pub fn load_token(
    args: &ServeArgs,
    env_token: Option<String>,
    file: Option<&meshgate_core::config::FileConfig>,
) -> Result<Option<Token>, CliError> {
    let refused = |e: super::token::TokenError| CliError::Refused(e.to_string());
    let from_file = |p: &std::path::Path| -> Result<Option<Token>, CliError> {
        let (t, warning) = Token::from_file(p).map_err(refused)?;
        if let Some(w) = warning {
            tracing::warn!("{w}");
        }
        Ok(Some(t))
    };
    if let Some(p) = &args.token_file {
        return from_file(p);
    }
    if let Some(v) = env_token {
        return Token::new(&v, "MESHGATE_TOKEN").map(Some).map_err(refused);
    }
    if let Some(p) = file.and_then(|f| f.token_file.as_deref()) {
        return from_file(p);
    }
    if let Some(v) = file.and_then(|f| f.token.as_deref()) {
        return Token::new(v, "the config file's `token`").map(Some).map_err(refused);
    }
    Ok(None)
}

/// Refuses non-loopback serving without a token (see [`embed::check_auth`]).
pub fn check_auth(selectors: &[Selector], res: &Resolution, token: Option<&Token>) -> Result<(), CliError> {
    embed::check_auth(selectors, res, token).map_err(CliError::from)
}

impl From<embed::Error> for CliError {
    fn from(e: embed::Error) -> Self {
        match e {
            embed::Error::Selector(e) => Self::Usage(e),
            embed::Error::Refused(m) => Self::Refused(m),
            embed::Error::NothingMatched(m) => Self::NothingMatched(m),
            embed::Error::Registry(e) => Self::Registry(e),
            embed::Error::Source(e) => Self::Source(e),
            embed::Error::Bind(e) => Self::Runtime(e.to_string()),
            embed::Error::Watch(m) => Self::Runtime(m),
        }
    }
}

/// The longest timeout a flag or the config file may set (one day).
pub const MAX_SECONDS: f64 = 86_400.0;
/// The largest `--max-header-bytes` (16 MiB).
pub const MAX_HEADER_BYTES: usize = 16 << 20;

/// The largest `--max-connections` (a million).
pub const MAX_CONNECTIONS: usize = 1_000_000;
/// The largest body cap (1 TiB: effectively none, but still a number).
pub const MAX_BODY_BYTES: u64 = 1 << 40;

/// Parses a connection cap: 1 to a million.
pub fn parse_connections(value: &str) -> Result<usize, String> {
    let v: u64 =
        value.trim().parse().map_err(|_| format!("{value:?} is not a number of connections; write e.g. 512"))?;
    connections(v).map_err(|d| format!("{value:?}: {d}"))
}

fn connections(v: u64) -> Result<usize, String> {
    match usize::try_from(v) {
        Ok(n) if (1..=MAX_CONNECTIONS).contains(&n) => Ok(n),
        _ => Err(format!("expected a number of connections from 1 to {MAX_CONNECTIONS} (e.g. 512)")),
    }
}

/// Parses a request body cap in bytes: 0 (no body at all) to 1 TiB.
pub fn parse_body_bytes(value: &str) -> Result<u64, String> {
    let v: u64 = value.trim().parse().map_err(|_| format!("{value:?} is not a number of bytes; write e.g. 1048576"))?;
    body_bytes(v).map_err(|d| format!("{value:?}: {d}"))
}

fn body_bytes(v: u64) -> Result<u64, String> {
    if v > MAX_BODY_BYTES {
        return Err(format!("expected bytes from 0 to {MAX_BODY_BYTES} (e.g. 1048576)"));
    }
    Ok(v)
}

/// Parses a timeout in seconds (`5`, `0.25`): positive, at most a day.
pub fn parse_seconds(value: &str) -> Result<Duration, String> {
    let v: f64 =
        value.trim().parse().map_err(|_| format!("{value:?} is not a number of seconds; write e.g. 5 or 0.5"))?;
    seconds(v).map_err(|d| format!("{value:?}: {d}"))
}

fn seconds(v: f64) -> Result<Duration, String> {
    if !v.is_finite() || v <= 0.0 || v > MAX_SECONDS {
        return Err(format!("expected seconds above 0 and at most {MAX_SECONDS} (e.g. 5 or 0.5)"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Parses a request-head size cap in bytes: at least 8192 (hyper's minimum).
pub fn parse_header_bytes(value: &str) -> Result<usize, String> {
    let v: u64 = value.trim().parse().map_err(|_| format!("{value:?} is not a number of bytes; write e.g. 65536"))?;
    header_bytes(v).map_err(|d| format!("{value:?}: {d}"))
}

fn header_bytes(v: u64) -> Result<usize, String> {
    match usize::try_from(v) {
        Ok(b) if (MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&b) => Ok(b),
        _ => Err(format!("expected bytes from {MIN_HEADER_BYTES} to {MAX_HEADER_BYTES} (e.g. 65536)")),
    }
}

/// What `serve` forwards to and the limits it applies, after precedence
/// (flag > environment > config file > default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeOptions {
    /// `--upstream`.
    pub upstream: Option<Upstream>,
    /// `--upstream-connect-timeout`, `--upstream-timeout`, `--upstream-max-body-bytes`.
    pub upstream_limits: UpstreamLimits,
    /// `--max-header-bytes`, `--idle-timeout`, `--max-connections`, `--max-body-bytes`.
    pub server_limits: ServerLimits,
}

/// Applies precedence to the upstream and the limits; a bad config value is
/// exit 78 naming the file and the key.
pub fn serve_options(args: &ServeArgs, file: Option<(&Path, &FileConfig)>) -> Result<ServeOptions, CliError> {
    let bad = |path: &Path, key: &str, value: String, detail: String| -> CliError {
        ConfigError::Value { path: path.into(), key: key.into(), value, detail }.into()
    };
    let mut out = ServeOptions::default();
    let (path, f) = match file {
        Some((p, f)) => (Some(p), Some(f)),
        None => (None, None),
    };
    out.upstream = match (&args.upstream, f.and_then(|f| f.upstream.as_deref()), path) {
        (Some(u), _, _) => Some(u.clone()),
        (None, Some(v), Some(p)) => Some(Upstream::parse(v).map_err(|e| bad(p, "upstream", v.into(), e.detail))?),
        _ => None,
    };
    let limits = f.map(|f| f.limits.clone()).unwrap_or_default();
    let secs = |flag: Option<Duration>, key: &str, v: Option<f64>, default: Duration| -> Result<Duration, CliError> {
        match (flag, v, path) {
            (Some(d), _, _) => Ok(d),
            (None, Some(v), Some(p)) => seconds(v).map_err(|d| bad(p, &format!("limits.{key}"), v.to_string(), d)),
            _ => Ok(default),
        }
    };
    out.upstream_limits = UpstreamLimits::default()
        .with_connect_timeout(secs(
            args.upstream_connect_timeout,
            "upstream_connect_timeout",
            limits.upstream_connect_timeout,
            super::upstream::DEFAULT_CONNECT_TIMEOUT,
        )?)
        .with_response_timeout(secs(
            args.upstream_timeout,
            "upstream_timeout",
            limits.upstream_timeout,
            super::upstream::DEFAULT_RESPONSE_TIMEOUT,
        )?);
    let header = match (args.max_header_bytes, limits.max_header_bytes, path) {
        (Some(b), _, _) => b,
        (None, Some(v), Some(p)) => header_bytes(v).map_err(|d| bad(p, "limits.max_header_bytes", v.to_string(), d))?,
        _ => super::listeners::DEFAULT_MAX_HEADER_BYTES,
    };
    let idle = secs(args.idle_timeout, "idle_timeout", limits.idle_timeout, super::listeners::DEFAULT_IDLE_TIMEOUT)?;
    let max_connections = match (args.max_connections, limits.max_connections, path) {
        (Some(n), _, _) => n,
        (None, Some(v), Some(p)) => connections(v).map_err(|d| bad(p, "limits.max_connections", v.to_string(), d))?,
        _ => super::listeners::DEFAULT_MAX_CONNECTIONS,
    };
    let body = |flag: Option<u64>, key: &str, v: Option<u64>| -> Result<Option<u64>, CliError> {
        match (flag, v, path) {
            (Some(b), _, _) => Ok(Some(b)),
            (None, Some(v), Some(p)) => {
                body_bytes(v).map(Some).map_err(|d| bad(p, &format!("limits.{key}"), v.to_string(), d))
            }
            _ => Ok(None),
        }
    };
    let max_body = body(args.max_body_bytes, "max_body_bytes", limits.max_body_bytes)?
        .map_or(super::listeners::DEFAULT_MAX_BODY_BYTES, |b| usize::try_from(b).unwrap_or(usize::MAX));
    out.upstream_limits = out.upstream_limits.with_max_body_bytes(body(
        args.upstream_max_body_bytes,
        "upstream_max_body_bytes",
        limits.upstream_max_body_bytes,
    )?);
    out.server_limits = ServerLimits::default()
        .with_max_header_bytes(header)
        .with_idle_timeout(idle)
        .with_max_connections(max_connections)
        .with_max_body_bytes(max_body);
    Ok(out)
}

/// The line printed as a listener opens.
pub fn listening_line(l: &Listener) -> String {
    let via = l.interface.as_deref().filter(|_| l.role != ListenerRole::Companion).map(|i| format!(" via {i}"));
    let what = match l.role {
        ListenerRole::Selected => format!("{}{}", l.provider, via.unwrap_or_default()),
        ListenerRole::Fallback => format!("loopback fallback{}", via.unwrap_or_default()),
        ListenerRole::Companion => "loopback companion".to_owned(),
    };
    format!("listening on http://{} ({what})", display_addr(l))
}

/// Prints one line to stdout at once (the listening lines are a contract).
pub(crate) fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// `--allow-host`/`--allow-origin` if given, else the config file's lists.
pub fn browser_policy(args: &ServeArgs, file: Option<&meshgate_core::config::FileConfig>) -> BrowserPolicy {
    let pick = |flag: &Vec<String>, file: Option<&Vec<String>>| {
        if flag.is_empty() {
            file.cloned().unwrap_or_default()
        } else {
            flag.clone()
        }
    };
    BrowserPolicy {
        allowed_hosts: pick(&args.allow_host, file.map(|f| &f.allowed_hosts)),
        allowed_origins: pick(&args.allow_origin, file.map(|f| &f.allowed_origins)),
    }
}

/// Runs `serve` until SIGINT/SIGTERM.
pub async fn run(args: &ServeArgs, source: &dyn InterfaceSource) -> Result<(), CliError> {
    let registry = cli::registry()?;
    let settings = cli::settings(&args.bind, registry)?;
    let file = settings.file.as_ref().map(|(p, f)| (p.as_path(), f));
    let token = load_token(args, std::env::var("MESHGATE_TOKEN").ok(), file.map(|(_, f)| f))?;
    let options = serve_options(args, file)?;
    let follow = !args.no_follow && file.and_then(|(_, f)| f.follow).unwrap_or(true);
    let stop = shutdown_signal();

    let builder = Gateway::builder()
        .selectors(settings.selectors.clone())
        .resolve_options(settings.resolve.clone())
        .token(token.clone())
        .follow(follow)
        .wait(args.wait.map(Duration::from_secs))
        .limits(options.server_limits)
        .browser_policy(browser_policy(args, file.map(|(_, f)| f)))
        .source(source);
    let running = match options.upstream {
        Some(upstream) => {
            let proxy = Proxy::new(upstream, options.upstream_limits, token);
            tracing::info!(
                upstream = %proxy.upstream(),
                "forwarding to the upstream; meshgate's own routes are under /_meshgate/"
            );
            builder.start_upstream(proxy).await?
        }
        None => builder.open_path("/healthz").start_with(|state| app(state.clone())).await?,
    };
    running.run_until(stop).await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed by this call, not
/// on first poll, so call it before announcing listeners: a signal sent right
/// after the `listening on` line then stops the gateway gracefully.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let int = signal(SignalKind::interrupt()).ok();
        let term = signal(SignalKind::terminate()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(int) => {}
                _ = wait(term) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
