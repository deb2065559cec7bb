//! `meshgate serve`: settings → token → options → the library's [`Gateway`]
//! (resolution → listeners → serve until a signal, following interface changes
//! unless `--no-follow`), printing a line per listener from its events,
//! telling systemd when it is ready (`READY=1`, `STATUS=`), counting attaches
//! for `/metrics`, and re-reading its configuration on SIGHUP.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, OnceLock};

use meshgate_core::source::InterfaceSource;

use super::args::ServeArgs;
use super::error::CliError;
use super::logging;
use super::notify;
use super::print::{event_line, say};
use super::reload::{Live, Loaded};
use super::settings::{browser_policy, registry, settings, tls_setup};
use crate::gateway::metrics::Meter;
use crate::gateway::{
    app, display_addr, shutdown_signal, Event, Gateway, MeshPeers, PeerRules, Proxy, TailnetPeers, WireGuardPeers,
    Workers,
};
use crate::tls::{Reloader, DEFAULT_POLL_INTERVAL};

/// The variable that sets how many connection threads serve (tokio's own name
/// for its worker count, which the benches and containers already set).
const WORKERS_ENV: &str = "TOKIO_WORKER_THREADS";

/// Each thread is a runtime with three file descriptors of its own; more
/// threads than this is a typo, not a plan.
const MAX_WORKERS: usize = 1024;

/// How many connection threads: `TOKIO_WORKER_THREADS` when set, else one per
/// CPU this process may run on (its affinity and cgroup quota counted).
fn worker_threads(set: Option<&std::ffi::OsStr>) -> Result<NonZeroUsize, CliError> {
    let Some(raw) = set else {
        return Ok(std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN));
    };
    raw.to_str().and_then(|s| s.trim().parse::<NonZeroUsize>().ok()).filter(|n| n.get() <= MAX_WORKERS).ok_or_else(
        || {
            CliError::BadFlag(format!(
                "{WORKERS_ENV}={}: not a number of threads; set a whole number from 1 to {MAX_WORKERS}, or unset it \
                 for one per CPU",
                raw.to_string_lossy()
            ))
        },
    )
}

/// Raises the soft limit on open files to the hard one, as servers do (Go's
/// runtime does it for every program): each proxied connection holds two
/// descriptors and each connection thread three, so the default cap of 512
/// connections alone reaches the soft limit of 1,024 systemd and most shells
/// give. The hard limit stays what the operator set (`LimitNOFILE=`). Returns
/// the soft limit before and after, or `None` when it could not be read.
#[cfg(unix)]
fn raise_open_files_limit() -> Option<(libc::rlim_t, libc::rlim_t)> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given, which lives here.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit only reads the struct it is given; raising the
        // soft limit up to the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Some((before, before));
        }
    }
    Some((before, limit.rlim_cur))
}

/// Runs `serve` until SIGINT/SIGTERM.
pub async fn run(args: &ServeArgs, source: &dyn InterfaceSource) -> Result<(), CliError> {
    let registry = registry()?;
    let settings = settings(&args.bind, registry)?;
    let file = settings.file.as_ref().map(|(p, f)| (p.as_path(), f));
    // The config file's log_level and access_log apply now that it is read;
    // the token is read here, once.
    let loaded = Loaded::read(args)?;
    logging::set_filter(loaded.filter());
    let token = loaded.token().cloned();
    let options = loaded.options.clone();
    let follow = !args.no_follow && file.and_then(|(_, f)| f.follow).unwrap_or(true);
    // One set of rules for both lookups; a reload replaces it.
    let rules = PeerRules::shared(loaded.peers.names.clone(), loaded.peers.allow.clone());
    let allows_any = !loaded.peers.allow.is_empty();
    let wireguard = WireGuardPeers::with_rules(rules.clone());
    let tailnet = TailnetPeers::with_rules(rules.clone());
    let peers = Arc::new(MeshPeers(vec![Arc::new(wireguard), Arc::new(tailnet)]));
    let tls = tls_setup(&args.tls, file).await?;
    #[cfg(unix)]
    if let Some((before, now)) = raise_open_files_limit() {
        tracing::debug!(before, now, "open files limit (soft)");
    }
    let workers = Workers::start(worker_threads(std::env::var_os(WORKERS_ENV).as_deref())?)
        .map_err(|e| CliError::Runtime(format!("start the connection threads: {e}")))?;
    let stop = shutdown_signal();
    // Installed before anything is announced, like the shutdown handlers: a
    // SIGHUP sent right after the first `listening on` line must not end us.
    let hangup = hangup_signal();

    // The meter is known once the gateway has started; no listener closes
    // before that.
    let meter: Arc<OnceLock<Arc<Meter>>> = Arc::default();
    let listeners: Arc<Mutex<Vec<String>>> = Arc::default();
    let on_event = {
        let (meter, listeners) = (meter.clone(), listeners.clone());
        move |event: &Event| {
            if let Some(line) = event_line(event) {
                say(&line);
            }
            let mut open = listeners.lock().unwrap_or_else(|e| e.into_inner());
            match event {
                Event::Listening { listener, tls } => {
                    open.push(format!("{}://{}", if *tls { "https" } else { "http" }, display_addr(listener)));
                }
                Event::Stopped { listener, .. } => {
                    let addr = display_addr(listener);
                    open.retain(|u| !u.ends_with(&format!("://{addr}")));
                    if let Some(m) = meter.get() {
                        crate::gateway::context::Stats::bump(&m.detached);
                    }
                }
                _ => return,
            }
            if meter.get().is_some() {
                notify::status(&open);
            }
        }
    };
    let mut builder = Gateway::builder()
        .selectors(settings.selectors.clone())
        .resolve_options(settings.resolve.clone())
        .token(token.clone())
        .follow(follow)
        .wait(args.wait)
        .limits(options.server_limits)
        .browser_policy(browser_policy(args, file.map(|(_, f)| f)))
        .source(source)
        .peer_lookup(peers, allows_any)
        .workers(workers)
        .on_event(on_event);
    let mut tls_stats = None;
    let mut reloader = None;
    if let Some(tls) = tls {
        say(&tls.summary);
        tls_stats = Some(tls.https.acceptor.stats().clone());
        builder = builder.tls(tls.https);
        if let Some(r) = tls.reloader {
            // New handshakes get a replaced certificate; open connections keep theirs.
            r.clone().spawn_poll(DEFAULT_POLL_INTERVAL);
            reloader = Some(r);
        }
    }
    notify::starting(args.wait);
    let running = match options.upstream {
        Some(upstream) => {
            let proxy = Proxy::new(upstream, options.upstream_limits, token);
            tracing::info!(
                upstream = %proxy.upstream(),
                "forwarding to the upstream; meshgate's own routes are under /_meshgate/"
            );
            builder.start_upstream(proxy).await?
        }
        None => builder.open_path("/healthz").signin("").start_with(|state| app(state.clone())).await?,
    };
    let state = running.state().clone();
    let m = state.stats().meter.clone();
    if let Some(s) = tls_stats {
        m.set_tls(s);
    }
    let _ = meter.set(m);
    notify::ready(&listeners.lock().unwrap_or_else(|e| e.into_inner()));
    let live = Live { controls: running.controls(), rules };
    reload_on_sighup(hangup, args.clone(), loaded, live, reloader);
    running.run_until(stop).await;
    notify::stopping();
    Ok(())
}

/// SIGHUP: re-read the certificate files (a bad new pair is logged and the
/// old one kept), the config file and the token, and apply what can change
/// without re-binding: the log filter, the token, the peer names and
/// allow-list, the limits (see [`Loaded::apply`]). A bad new config is
/// refused with a log line and the old one kept; a change that needs a
/// restart is named. Without a handler, SIGHUP's default action would end
/// the process.
fn reload_on_sighup(
    hangup: Option<Hangup>,
    args: ServeArgs,
    loaded: Loaded,
    live: Live,
    reloader: Option<Arc<Reloader>>,
) {
    #[cfg(unix)]
    {
        if let Some(mut hup) = hangup {
            tokio::spawn(async move {
                let mut current = loaded;
                while hup.recv().await.is_some() {
                    notify::reloading();
                    if let Some(r) = &reloader {
                        tracing::info!("SIGHUP: reloading the TLS certificate");
                        let _ = r.reload();
                    }
                    match Loaded::read(&args) {
                        Err(e) => {
                            tracing::error!("SIGHUP: the new configuration is refused, the running one kept: {e}")
                        }
                        Ok(new) => {
                            let (changes, now) = current.apply(&new, &live);
                            if logging::set_filter(now.filter()) {
                                tracing::debug!("SIGHUP: log filter is now {}", now.filter_text);
                            }
                            for change in changes {
                                tracing::info!("SIGHUP: {change}");
                            }
                            current = now;
                        }
                    }
                    notify::ready_again();
                }
            });
        }
    }
    #[cfg(not(unix))]
    let _ = (hangup, args, loaded, live, reloader);
}

#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = ();

/// The SIGHUP stream; once made, SIGHUP no longer has its default action
/// (ending the process).
fn hangup_signal() -> Option<Hangup> {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn worker_threads_takes_a_whole_number_or_one_per_cpu() {
        assert_eq!(worker_threads(Some(OsStr::new("3"))).unwrap().get(), 3);
        assert_eq!(worker_threads(Some(OsStr::new(" 1 "))).unwrap().get(), 1);
        let cpus = std::thread::available_parallelism().unwrap();
        assert_eq!(worker_threads(None).unwrap(), cpus);
        assert_eq!(worker_threads(Some(OsStr::new("1024"))).unwrap().get(), 1024);
        for bad in ["0", "-1", "two", "", "1.5", "1025"] {
            let e = worker_threads(Some(OsStr::new(bad))).unwrap_err();
            assert!(matches!(e, CliError::BadFlag(_)), "{bad}: {e:?}");
            let text = e.to_string();
            assert!(text.starts_with(&format!("TOKIO_WORKER_THREADS={bad}:")), "{text}");
            assert!(text.contains("whole number from 1 to 1024"), "{text}");
        }
    }
}
