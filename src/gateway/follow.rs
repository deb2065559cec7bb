//! Following the network: on every coalesced change, take a fresh snapshot,
//! re-resolve, and hand the difference to the [`ListenerSet`]. Addresses that
//! fail to bind (not usable yet, port taken) are retried with backoff.

use std::future::Future;
use std::time::Duration;

use meshgate_core::watcher::Watcher;
use meshgate_core::{InterfaceSource, Resolution, Snapshot};

use super::listeners::{display_addr, Applied, ListenerSet};
use super::serve::listening_line;

/// The first retry delay after a failed bind; doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest retry delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Prints and logs what an [`Applied`] did. Returns true if some bind failed.
pub fn report(applied: &Applied, retry_in: Duration) -> bool {
    for l in &applied.removed {
        let line = format!("stopped listening on http://{} ({}: no longer matched)", display_addr(l), l.provider);
        tracing::info!("{line}");
        println!("{line}");
    }
    for l in &applied.added {
        let line = listening_line(l);
        tracing::info!("{line}");
        println!("{line}");
    }
    for l in &applied.updated {
        tracing::info!(address = %display_addr(l), provider = %l.provider, role = ?l.role, "listener kept; {}", l.reason);
    }
    for e in &applied.failed {
        tracing::warn!("{e}; retrying in {} ms", retry_in.as_millis());
    }
    !applied.failed.is_empty()
}

/// Follows changes until `stop` resolves. `resolve` turns a snapshot into the
/// wanted resolution (selectors and options already applied).
pub async fn follow(
    set: &mut ListenerSet,
    watcher: &mut dyn Watcher,
    source: &dyn InterfaceSource,
    resolve: impl Fn(&Snapshot) -> Resolution,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut backoff: Option<Duration> = None;
    let mut last_reason: Option<String> = set.fallback_reason();
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
                tracing::error!("{e}");
                continue;
            }
        };
        let res = resolve(&snapshot);
        // Say it loudly once when the fallback starts (or its reason changes), not on every event.
        if res.fallback_reason != last_reason {
            match &res.fallback_reason {
                Some(why) => tracing::warn!("{why}"),
                None => tracing::info!("the selectors match again; fallback over"),
            }
            last_reason = res.fallback_reason.clone();
        }
        let applied = set.apply(&res);
        let next = backoff.map_or(FIRST_BACKOFF, |d| (d * 2).min(MAX_BACKOFF));
        backoff = report(&applied, next).then_some(next);
    }
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
    while res.fallback || res.nothing_to_bind() {
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
