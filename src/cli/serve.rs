//! `meshgate serve`: settings → token → options → the library's [`Gateway`]
//! (resolution → listeners → serve until a signal, following interface changes
//! unless `--no-follow`), printing a line per listener from its events.

use std::time::Duration;

use meshgate_core::source::InterfaceSource;

use super::args::ServeArgs;
use super::error::CliError;
use super::print::{event_line, say};
use super::settings::{browser_policy, load_token, registry, serve_options, settings, tls_setup, wireguard_peers};
use crate::gateway::{app, shutdown_signal, Gateway, MeshPeers, Proxy, TailnetPeers};
use crate::tls::{Reloader, DEFAULT_POLL_INTERVAL};
use std::sync::Arc;

/// Runs `serve` until SIGINT/SIGTERM.
pub async fn run(args: &ServeArgs, source: &dyn InterfaceSource) -> Result<(), CliError> {
    let registry = registry()?;
    let settings = settings(&args.bind, registry)?;
    let file = settings.file.as_ref().map(|(p, f)| (p.as_path(), f));
    let token = load_token(args, std::env::var("MESHGATE_TOKEN").ok(), file.map(|(_, f)| f))?;
    let options = serve_options(args, file)?;
    let follow = !args.no_follow && file.and_then(|(_, f)| f.follow).unwrap_or(true);
    let wireguard = wireguard_peers(args, file.map(|(_, f)| f))?;
    let allows_any = wireguard.allows_any();
    let tailnet = TailnetPeers::new(wireguard.allow_list().clone());
    let peers = Arc::new(MeshPeers(vec![Arc::new(wireguard), Arc::new(tailnet)]));
    let tls = tls_setup(&args.tls, file)?;
    let stop = shutdown_signal();

    let mut builder = Gateway::builder()
        .selectors(settings.selectors.clone())
        .resolve_options(settings.resolve.clone())
        .token(token.clone())
        .follow(follow)
        .wait(args.wait.map(Duration::from_secs))
        .limits(options.server_limits)
        .browser_policy(browser_policy(args, file.map(|(_, f)| f)))
        .source(source)
        .peer_lookup(peers, allows_any)
        .on_event(|event| {
            if let Some(line) = event_line(event) {
                say(&line);
            }
        });
    if let Some(tls) = tls {
        say(&tls.summary);
        builder = builder.tls(tls.https);
        match tls.reloader {
            Some(reloader) => {
                // New handshakes get a replaced certificate; open connections keep theirs.
                reloader.clone().spawn_poll(DEFAULT_POLL_INTERVAL);
                reload_on_sighup(reloader);
            }
            None => reload_on_sighup_noop(),
        }
    } else {
        reload_on_sighup_noop();
    }
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
    running.run_until(stop).await;
    Ok(())
}

/// SIGHUP re-reads the certificate files at once (a bad new pair is logged and
/// the old one kept).
fn reload_on_sighup(reloader: Arc<Reloader>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the TLS certificate");
                    let _ = reloader.reload();
                }
            });
        }
    }
    #[cfg(not(unix))]
    let _ = reloader;
}

/// Without anything to reload, SIGHUP is still not a reason to die (its
/// default action ends the process).
fn reload_on_sighup_noop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: nothing to reload");
                }
            });
        }
    }
}
