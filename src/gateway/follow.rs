//! Following the network: on every coalesced change, take a fresh snapshot,
//! re-resolve, and hand the difference to the [`ListenerSet`]. Addresses that
//! fail to bind (not usable yet, port taken) are retried with backoff. What
//! changed is reported as [`Event`]s and `tracing` records, never printed.

use std::future::Future;
use std::time::Duration;

use meshgate_core::watcher::Watcher;
use meshgate_core::{InterfaceSource, Resolution, Snapshot};

use super::bind::display_addr;
use super::event::{Event, EventSink};
use super::listeners::{Applied, ListenerSet};
use super::service::Protocol;

/// The first retry delay after a failed bind; doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest retry delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The retry delay after `last` (none yet: [`FIRST_BACKOFF`]), doubling up to [`MAX_BACKOFF`].
fn next_backoff(last: Option<Duration>) -> Duration {
    last.map_or(FIRST_BACKOFF, |d| (d * 2).min(MAX_BACKOFF))
}

/// `https` or `http`.
pub(crate) fn scheme(tls: bool) -> &'static str {
    if tls {
        "https"
    } else {
        "http"
    }
}

/// Hands `event` to the sink, if there is one.
pub(crate) fn emit(sink: Option<&EventSink>, event: Event) {
    if let Some(f) = sink {
        f(&event);
    }
}

/// Reports what an [`Applied`] did, as events and log records. Returns true
/// if some bind failed.
/// `service` is the set's `[[service]]` (`None`: the top-level one).
pub(crate) fn report_for(
    set: &ListenerSet,
    service: Option<&(String, Protocol)>,
    applied: &Applied,
    retry_in: Duration,
    sink: Option<&EventSink>,
) -> bool {
    if let Some((name, protocol)) = service {
        for l in &applied.removed {
            tracing::info!(service = %name, "stopped listening on {}://{} ({}: no longer matched)", protocol, display_addr(l), l.provider);
            emit(sink, Event::ServiceStopped { service: name.clone(), protocol: *protocol, listener: l.clone() });
        }
        for l in &applied.added {
            let tls = set.is_tls(l);
            tracing::info!(service = %name, "listening on {}://{} ({})", protocol, display_addr(l), l.provider);
            emit(
                sink,
                Event::ServiceListening { service: name.clone(), protocol: *protocol, listener: l.clone(), tls },
            );
        }
        for e in &applied.failed {
            tracing::warn!(service = %name, "{e}; retrying in {} ms", retry_in.as_millis());
            emit(sink, Event::BindFailed { error: format!("service {name}: {e}"), retry_in });
        }
        return !applied.failed.is_empty();
    }
    for l in &applied.removed {
        let tls = set.is_tls(l);
        tracing::info!(
            "stopped listening on {}://{} ({}: no longer matched)",
            scheme(tls),
            display_addr(l),
            l.provider
        );
        emit(sink, Event::Stopped { listener: l.clone(), tls });
    }
    for l in &applied.added {
        let tls = set.is_tls(l);
        tracing::info!("listening on {}://{} ({})", scheme(tls), display_addr(l), l.provider);
        emit(sink, Event::Listening { listener: l.clone(), tls });
    }
    for l in &applied.updated {
        tracing::info!(address = %display_addr(l), provider = %l.provider, role = ?l.role, "listener kept; {}", l.reason);
        emit(sink, Event::Updated(l.clone()));
    }
    for e in &applied.failed {
        tracing::warn!("{e}; retrying in {} ms", retry_in.as_millis());
        emit(sink, Event::BindFailed { error: e.to_string(), retry_in });
    }
    !applied.failed.is_empty()
}

/// Follows changes until `stop` resolves, reporting nothing but `tracing`
/// records (a [`Gateway`](super::Gateway) with `on_event` also gets events).
pub async fn follow(
    set: &mut ListenerSet,
    watcher: &mut dyn Watcher,
    source: &dyn InterfaceSource,
    resolve: impl Fn(&Snapshot) -> Resolution,
    stop: impl Future<Output = ()>,
) {
    follow_with(set, watcher, source, resolve, stop, None).await
}

/// Follows changes until `stop` resolves. `resolve` turns a snapshot into the
/// wanted resolution (selectors and options already applied); every change is
/// handed to `sink` as an [`Event`].
pub(crate) async fn follow_with(
    set: &mut ListenerSet,
    watcher: &mut dyn Watcher,
    source: &dyn InterfaceSource,
    resolve: impl Fn(&Snapshot) -> Resolution,
    stop: impl Future<Output = ()>,
    sink: Option<&EventSink>,
) {
    follow_sets(&mut [Followed { set, resolve, service: None }], watcher, source, stop, sink).await
}

/// One listener set as follow moves it: how it resolves, and which
/// `[[service]]` it serves (`None`: the top-level one).
pub(crate) struct Followed<'s, R: Fn(&Snapshot) -> Resolution> {
    pub(crate) set: &'s mut ListenerSet,
    pub(crate) resolve: R,
    pub(crate) service: Option<(String, Protocol)>,
}

/// Follows changes for every set until `stop` resolves: one snapshot per
/// change, each set re-resolved with its own selectors and port, so every
/// service follows its binds as interfaces come and go.
pub(crate) async fn follow_sets<R: Fn(&Snapshot) -> Resolution>(
    sets: &mut [Followed<'_, R>],
    watcher: &mut dyn Watcher,
    source: &dyn InterfaceSource,
    stop: impl Future<Output = ()>,
    sink: Option<&EventSink>,
) {
    tokio::pin!(stop);
    let mut backoff: Option<Duration> = None;
    let mut last_reason: Vec<Option<String>> = sets.iter().map(|f| f.set.fallback_reason()).collect();
    loop {
        let retry = async {
            match backoff {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut stop => return,
            changed = watcher.changed() => {
                if let Err(e) = changed {
                    tracing::error!("{e}; looking again in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            _ = retry => {}
        }
        let snapshot = match source.snapshot().await {
            Ok(s) => s,
            Err(e) => {
                // The change that woke us is seen; look again soon, or it
                // would wait for the next one.
                let next = next_backoff(backoff);
                tracing::error!("{e}; reading the interfaces again in {} ms", next.as_millis());
                backoff = Some(next);
                continue;
            }
        };
        let next = next_backoff(backoff);
        let mut failed = false;
        for (f, last_reason) in sets.iter_mut().zip(last_reason.iter_mut()) {
            let res = (f.resolve)(&snapshot);
            // Say it loudly once when the fallback starts (or its reason changes), not on every event.
            if res.fallback_reason != *last_reason {
                match (&res.fallback_reason, &f.service) {
                    (Some(why), None) => {
                        tracing::warn!("{why}");
                        emit(sink, Event::Fallback { reason: why.clone() });
                    }
                    (None, None) => {
                        tracing::info!("the selectors match again; fallback over");
                        emit(sink, Event::FallbackOver);
                    }
                    (Some(why), Some((name, _))) => tracing::warn!(service = %name, "{why}"),
                    (None, Some((name, _))) => {
                        tracing::info!(service = %name, "the selectors match again; fallback over")
                    }
                }
                *last_reason = res.fallback_reason.clone();
            }
            let applied = f.set.apply(&res);
            failed |= report_for(f.set, f.service.as_ref(), &applied, next, sink);
        }
        backoff = failed.then_some(next);
    }
}

/// True while `--wait` should keep waiting: nothing matched (or only the
/// fallback did), or a mesh daemon is still starting (whatever else matched).
pub(crate) fn still_waiting(res: &Resolution) -> bool {
    res.fallback || res.nothing_to_bind() || res.daemon_starting().is_some()
}

/// Waits up to `wait` for a resolution that is not a fallback. Returns the last
/// resolution seen (the caller decides what an expired wait means).
pub async fn wait_for_match(
    first: Resolution,
    wait: Duration,
    watcher: &mut dyn Watcher,
    source: &dyn InterfaceSource,
    resolve: impl Fn(&Snapshot) -> Resolution,
) -> Resolution {
    let deadline = tokio::time::Instant::now() + wait;
    let mut res = first;
    while still_waiting(&res) {
        if let Some(f) = res.daemon_needs_login() {
            // Waiting will not help: a person has to log in.
            tracing::warn!("{}; not waiting for it: log in (e.g. `tailscale up`) and meshgate follows", f.summary());
            break;
        }
        match tokio::time::timeout_at(deadline, watcher.changed()).await {
            Err(_) => break,
            Ok(Err(e)) => {
                tracing::error!("{e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(Ok(())) => {}
        }
        match source.snapshot().await {
            Ok(s) => res = resolve(&s),
            Err(e) => tracing::error!("{e}"),
        }
    }
    res
}
