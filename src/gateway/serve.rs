//! `meshgate serve`: settings → token → resolution → listeners → serve until a
//! signal, following interface changes unless `--no-follow`.

use std::io::Write as _;
use std::time::Duration;

use meshgate_core::{resolve, InterfaceSource, Listener, ListenerRole, Resolution, Selector};

use super::follow;
use super::listeners::{bind_all, display_addr, ListenerSet};
use super::routes::{app, AppState};
use super::token::Token;
use crate::cli::{self, CliError, ServeArgs};

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

/// True when a selector can only ever yield loopback addresses.
fn loopback_only(s: &Selector) -> bool {
    match s {
        Selector::Provider(p) => p == "loopback",
        Selector::Ip(ip) => ip.addr.is_loopback(),
        Selector::Cidr(net) => net.network().is_loopback() && net.broadcast().is_loopback(),
        _ => false,
    }
}

/// Refuses non-loopback serving without a token. Checked against the selectors,
/// not just today's resolution: under follow, `--bind wireguard` that falls back
/// to loopback now would attach the WireGuard address later.
pub fn check_auth(selectors: &[Selector], res: &Resolution, token: Option<&Token>) -> Result<(), CliError> {
    if token.is_some() {
        return Ok(());
    }
    let exposed: Vec<String> =
        res.listeners.iter().filter(|l| !l.is_loopback()).map(|l| format!("{} ({})", l.address, l.provider)).collect();
    let wide: Vec<String> = selectors.iter().filter(|s| !loopback_only(s)).map(|s| s.to_string()).collect();
    if exposed.is_empty() && wide.is_empty() {
        return Ok(());
    }
    let what = if exposed.is_empty() {
        format!("--bind {} (it can attach non-loopback addresses as interfaces come up)", wide.join(","))
    } else {
        exposed.join(", ")
    };
    Err(CliError::Refused(format!(
        "refusing to serve on {what} without a token: set one with --token-file PATH, the MESHGATE_TOKEN environment variable, or token_file in the config file (e.g. `head -c 32 /dev/urandom | base64 > /etc/meshgate/token && chmod 600 /etc/meshgate/token`); --bind loopback needs none"
    )))
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

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs `serve` until SIGINT/SIGTERM.
pub async fn run(args: &ServeArgs, source: &dyn InterfaceSource) -> Result<(), CliError> {
    let registry = cli::registry()?;
    let settings = cli::settings(&args.bind, registry)?;
    let file = settings.file.as_ref().map(|(_, f)| f);
    let token = load_token(args, std::env::var("MESHGATE_TOKEN").ok(), file)?;
    let follow = !args.no_follow && settings.file.as_ref().and_then(|(_, f)| f.follow).unwrap_or(true);
    // Subscribe before the first snapshot so no change falls between the two.
    let mut watcher = if follow || args.wait.is_some() {
        Some(meshgate_core::watcher::system().map_err(|e| CliError::Runtime(e.to_string()))?)
    } else {
        None
    };
    let resolve_now = |s: &meshgate_core::Snapshot| resolve(registry, &settings.selectors, s, &settings.resolve);
    let snapshot = source.snapshot().await?;
    let mut res = resolve_now(&snapshot);
    if let (Some(secs), Some(w)) = (args.wait, watcher.as_deref_mut()) {
        if res.fallback || res.nothing_to_bind() {
            tracing::info!("nothing matched yet; waiting up to {secs} s for a match (--wait)");
            res = follow::wait_for_match(res, Duration::from_secs(secs), w, source, resolve_now).await;
        }
    }
    if res.nothing_to_bind() {
        return Err(CliError::NothingMatched(res.fallback_reason.clone().unwrap_or_else(|| "nothing matched".into())));
    }
    check_auth(&settings.selectors, &res, token.as_ref())?;

    let bound = bind_all(&res.listeners).map_err(|e| CliError::Runtime(e.to_string()))?;
    let state = AppState::new(token);
    let mut set = ListenerSet::new(app(state.clone()), state);
    if res.fallback {
        tracing::warn!("{}", res.fallback_reason.as_deref().unwrap_or("nothing matched; serving on loopback only"));
    }
    set.set_fallback(res.fallback, res.fallback_reason.clone());
    for b in bound {
        let line = listening_line(&b.listener);
        set.attach(b).map_err(|e| CliError::Runtime(format!("serve: {e}")))?;
        say(&line);
    }
    set.publish();

    match watcher.as_deref_mut() {
        Some(w) if follow => follow::follow(&mut set, w, source, resolve_now, shutdown_signal()).await,
        _ => shutdown_signal().await,
    }
    tracing::info!("shutting down: letting in-flight requests finish (up to {}s)", SHUTDOWN_GRACE.as_secs());
    set.shutdown(SHUTDOWN_GRACE).await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
