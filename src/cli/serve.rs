//! `meshgate serve`: settings → token → options → the library's [`Gateway`]
//! (resolution → listeners → serve until a signal, following interface changes
//! unless `--no-follow`), printing a line per listener from its events,
//! telling systemd when it is ready (`READY=1`, `STATUS=`), counting attaches
//! for `/metrics`, and re-reading its configuration on SIGHUP.

use std::sync::{Arc, Mutex, OnceLock};

use meshgate_core::source::InterfaceSource;

use super::args::ServeArgs;
use super::error::CliError;
use super::logging;
use super::notify;
use super::print::{event_line, say};
use super::reload::{Live, Loaded};
use super::settings::{
    browser_policy, config_line, registry, services, settings, state_dir, tls_setup, worker_threads, ServiceTls,
    WORKERS_ENV,
};
use crate::gateway::metrics::Meter;
use crate::gateway::routes::own_app;
use crate::gateway::{
    display_addr, shutdown_signal, Event, Gateway, Https, MeshPeers, PeerRules, Proxy, ServiceControls, TailnetPeers,
    WireGuardPeers, Workers,
};
use crate::tls::{Reloader, DEFAULT_POLL_INTERVAL};

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
    // First, which file: after `dpkg -i` /etc/meshgate/meshgate.toml is read
    // without any --config.
    tracing::info!("{}", config_line(file.map(|(p, _)| p)));
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
    let services = services(args, file, options.upstream_limits, ServiceTls::Serve(tls.as_ref().map(|t| &t.https)))?;
    let service_tls = tls.as_ref().map(|t| t.https.clone());
    let described = page_services(options.upstream.as_ref().map(ToString::to_string), &services);
    for s in services.iter().filter(|s| *s.peer_access() == crate::gateway::PeerAccess::AnyPeer) {
        tracing::warn!(
            service = %s.name(),
            "allow_peers = [\"*\"]: every peer of the mesh may use service {:?}, identified or not",
            s.name()
        );
    }
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
            match event {
                Event::ServiceListening { service, protocol, listener, .. } => {
                    say(&format!(
                        "service {service}: listening on {protocol}://{} ({})",
                        display_addr(listener),
                        listener.provider
                    ));
                }
                Event::ServiceStopped { service, protocol, listener } => {
                    say(&format!(
                        "service {service}: stopped listening on {protocol}://{} ({}: no longer matched)",
                        display_addr(listener),
                        listener.provider
                    ));
                }
                _ => {}
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
        .services(services)
        .on_event(on_event);
    // A logout outlives a restart: revoked sessions are kept in the state directory.
    if let Some(dir) = state_dir(&args.tls, file) {
        builder = builder.session_dir(dir);
    }
    let mut tls_stats = None;
    let mut reloader = None;
    let page_tls = tls.as_ref().map(super::status::page_tls);
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
        None => builder.open_path("/healthz").signin("").start_with(|state| own_app(state.clone())).await?,
    };
    let state = running.state().clone();
    state.status_board().describe(crate::gateway::status_page::PageInfo {
        services: described,
        tls: page_tls,
        rules: Some(rules.clone()),
    });
    // The counters sampled while nobody looks: a refusal is a recent event
    // at about the time it happened, not at the next view of the page.
    let sampler = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(crate::gateway::status_page::board::SAMPLE_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                let (sample, _) = crate::gateway::status_page::doc::counters(&state);
                state.status_board().sample(&sample);
            }
        })
    };
    let m = state.stats().meter.clone();
    if let Some(s) = tls_stats {
        m.set_tls(s);
    }
    let _ = meter.set(m);
    notify::ready(&listeners.lock().unwrap_or_else(|e| e.into_inner()));
    let live = Live { controls: running.controls(), rules };
    let service_controls = running.service_controls();
    reload_on_sighup(hangup, args.clone(), loaded, live, reloader, (service_controls, service_tls), state.clone());
    running.run_until(stop).await;
    sampler.abort();
    notify::stopping();
    Ok(())
}

/// What the status page says about a reload refused for `e`: the file and
/// the place, never the text. The page (and `/status`) is seen by allowed
/// peers that may not hold the token, and toml's message quotes the line it
/// stumbled on, which may be `token = ...` (as may other messages quote a
/// value); the log, which only this host's administrator reads, has it whole.
fn refused_reload_text(e: &CliError) -> String {
    use meshgate_core::config::ConfigError;
    let place = match e {
        CliError::Config(ConfigError::Parse { path, detail }) => {
            // toml's first line is its position ("TOML parse error at line 2, column 9").
            format!(" ({}: {})", path.display(), detail.lines().next().unwrap_or("not TOML"))
        }
        CliError::Config(ConfigError::Value { path, key, .. }) => format!(" ({}: {key})", path.display()),
        CliError::Config(ConfigError::ValueAt { path, line, key, .. }) => {
            format!(" ({}, line {line}: {key})", path.display())
        }
        _ => String::new(),
    };
    format!("the new configuration is refused{place}, the running one kept; the log says why")
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
    services: (ServiceControls, Option<Https>),
    state: crate::gateway::AppState,
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
                            tracing::error!("SIGHUP: the new configuration is refused, the running one kept: {e}");
                            state
                                .status_board()
                                .note(crate::gateway::status_page::EventKind::Reload, refused_reload_text(&e));
                        }
                        Ok(new) => {
                            let (changes, now) = current.apply(&new, &live);
                            if logging::set_filter(now.filter()) {
                                tracing::debug!("SIGHUP: log filter is now {}", now.filter_text);
                            }
                            let board = state.status_board();
                            if changes.is_empty() {
                                board.note(
                                    crate::gateway::status_page::EventKind::Reload,
                                    "configuration read again: nothing changed",
                                );
                            }
                            for change in changes {
                                tracing::info!("SIGHUP: {change}");
                                board.note(crate::gateway::status_page::EventKind::Reload, change.to_string());
                            }
                            current = now;
                            // The services: added, removed, changed; the
                            // allow-lists (new rules) checked on open connections.
                            match reload_services(&args, services.1.as_ref(), &services.0, &state).await {
                                Ok(lines) => {
                                    for line in lines {
                                        tracing::info!("SIGHUP: {line}");
                                    }
                                }
                                Err(e) => {
                                    tracing::error!("SIGHUP: the new services are refused, the running ones kept: {e}")
                                }
                            }
                        }
                    }
                    notify::ready_again();
                }
            });
        }
    }
    #[cfg(not(unix))]
    let _ = (hangup, args, loaded, live, reloader, services, state);
}

/// Reads the services again (flags and config file, checked as at start)
/// and puts them in force.
async fn reload_services(
    args: &ServeArgs,
    tls: Option<&Https>,
    controls: &ServiceControls,
    state: &crate::gateway::AppState,
) -> Result<Vec<String>, CliError> {
    let s = settings(&args.bind, registry()?)?;
    let file = s.file.as_ref().map(|(p, f)| (p.as_path(), f));
    let options = super::settings::serve_options(args, file)?;
    let list = services(args, file, options.upstream_limits, ServiceTls::Serve(tls))?;
    let described = page_services(options.upstream.as_ref().map(ToString::to_string), &list);
    let lines = controls.replace(list).await?;
    // The status page (and `meshgate status`) shows the services now in force.
    let mut info = (*state.status_board().info()).clone();
    info.services = described;
    state.status_board().describe(info);
    Ok(lines)
}

/// The services the status page shows: the top-level one (meshgate's own
/// routes, or the upstream it fronts) on the listeners of no `[[service]]`,
/// then each `[[service]]` (and `--tcp`) on its own.
fn page_services(
    upstream: Option<String>,
    list: &[crate::gateway::Service],
) -> Vec<crate::gateway::status_page::ServiceInfo> {
    use crate::gateway::status_page::ServiceInfo;
    std::iter::once(ServiceInfo::single(upstream))
        .chain(list.iter().map(|s| ServiceInfo {
            name: s.name().to_owned(),
            protocol: s.protocol().as_str().to_owned(),
            upstream: Some(s.upstream_text()),
            port: Some(s.port()),
        }))
        .collect()
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
