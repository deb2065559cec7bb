//! The listener set: one real socket and one accept loop per address, keyed by
//! socket address. [`ListenerSet::apply`] adds and removes listeners; a
//! listener whose address stays is untouched, so its open connections carry on.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use meshgate_core::{Listener, Resolution};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

use super::accept::{accept_loop, Direct};
use super::bind::{bind, BindError, Bound};
use super::context::{unix_now, AppState, ListenerCtx, LiveListener, LiveView};
use super::limits::ServerLimits;
use super::proxy::Proxy;

struct Live {
    listener: Listener,
    since: u64,
    local: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// What [`ListenerSet::apply`] did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Listeners opened.
    pub added: Vec<Listener>,
    /// Listeners closed.
    pub removed: Vec<Listener>,
    /// Listeners that stayed but whose provider, reason or role changed.
    pub updated: Vec<Listener>,
    /// New addresses that failed to bind (the caller retries them).
    pub failed: Vec<BindError>,
}

impl Applied {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.updated.is_empty() && self.failed.is_empty()
    }
}

/// The live listeners, keyed by socket address.
pub struct ListenerSet {
    app: Router,
    state: AppState,
    limits: ServerLimits,
    connections: Arc<Semaphore>,
    live: BTreeMap<SocketAddr, Live>,
    fallback: (bool, Option<String>),
    direct: Option<Direct>,
}

impl std::fmt::Debug for ListenerSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerSet").field("live", &self.live.keys().collect::<Vec<_>>()).finish()
    }
}

impl ListenerSet {
    /// An empty set serving `app` (built with [`app`](super::routes::app) from the same `state`).
    pub fn new(app: Router, state: AppState) -> Self {
        let limits = ServerLimits::default();
        let connections = Arc::new(Semaphore::new(limits.max_connections));
        Self { app, state, limits, connections, live: BTreeMap::new(), fallback: (false, None), direct: None }
    }

    /// Sets the limits for listeners attached from now on (the connection cap
    /// is shared by those listeners).
    pub fn set_limits(&mut self, limits: ServerLimits) {
        if limits.max_connections != self.limits.max_connections {
            self.connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        }
        self.limits = limits;
    }

    /// Forwards every request outside `/_meshgate/` on listeners attached from
    /// now on to `proxy`, after the set's token and browser checks, without
    /// passing it through the router (which then only serves `/_meshgate/...`;
    /// build it with [`upstream_app`](super::routes::upstream_app)). This is how
    /// `meshgate serve --upstream` runs: the same answers as the router's
    /// fallback, with no router, extension map or boxed body per request.
    pub fn set_upstream(&mut self, proxy: Proxy) {
        self.direct = Some(Direct { proxy, state: self.state.clone() });
    }

    /// The state `/status` and `/ws` read.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The addresses currently served.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.live.values().map(|l| l.local).collect()
    }

    /// Starts serving a bound socket. Must run inside a tokio runtime.
    pub fn attach(&mut self, bound: Bound) -> io::Result<SocketAddr> {
        let local = bound.local_addr()?;
        let key = bound.listener.socket_addr();
        let listener = tokio::net::TcpListener::from_std(bound.socket)?;
        let ctx = ListenerCtx { local, loopback: local.ip().is_loopback(), tls: false };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(accept_loop(
            listener,
            self.app.clone(),
            ctx,
            self.limits,
            self.connections.clone(),
            self.direct.clone(),
            stopped,
        ));
        self.live.insert(key, Live { listener: bound.listener, since: unix_now(), local, stop, task });
        // Published before the caller announces it, so /status and /ws never lag the log.
        self.publish();
        Ok(local)
    }

    /// Stops a listener: no new connections; in-flight requests finish.
    pub fn detach(&mut self, key: &SocketAddr) -> Option<Listener> {
        let live = self.live.remove(key)?;
        let _ = live.stop.send(());
        // The task ends by itself once its connections finish; nothing to await here.
        drop(live.task);
        Some(live.listener)
    }

    /// Moves the set to a new resolution: binds new addresses, closes vanished
    /// ones, and leaves the rest (and their connections) untouched.
    pub fn apply(&mut self, res: &Resolution) -> Applied {
        let mut out = Applied::default();
        let wanted: BTreeMap<SocketAddr, &Listener> = res.listeners.iter().map(|l| (l.socket_addr(), l)).collect();
        let gone: Vec<SocketAddr> = self.live.keys().filter(|k| !wanted.contains_key(k)).copied().collect();
        for key in gone {
            if let Some(l) = self.detach(&key) {
                out.removed.push(l);
            }
        }
        for (key, l) in wanted {
            match self.live.get_mut(&key) {
                Some(live) => {
                    if live.listener != *l {
                        live.listener = l.clone();
                        out.updated.push(l.clone());
                    }
                }
                None => match bind(l) {
                    Ok(b) => match self.attach(b) {
                        Ok(_) => out.added.push(l.clone()),
                        Err(e) => out.failed.push(BindError::new(l, e)),
                    },
                    Err(e) => out.failed.push(e),
                },
            }
        }
        self.fallback = (res.fallback, res.fallback_reason.clone());
        self.publish();
        out
    }

    /// Why the current fallback is in force, if it is.
    pub fn fallback_reason(&self) -> Option<String> {
        self.fallback.1.clone()
    }

    /// Records the resolution's fallback state (for the first publish at start).
    pub fn set_fallback(&mut self, fallback: bool, reason: Option<String>) {
        self.fallback = (fallback, reason);
    }

    /// Publishes the live set to `/status` and `/ws`.
    pub fn publish(&self) {
        let listeners =
            self.live.values().map(|l| LiveListener { listener: l.listener.clone(), since: l.since }).collect();
        self.state.publish(LiveView { listeners, fallback: self.fallback.0, fallback_reason: self.fallback.1.clone() });
    }

    /// Stops every listener and waits up to `grace` for in-flight requests.
    pub async fn shutdown(mut self, grace: Duration) {
        let lives: Vec<Live> = std::mem::take(&mut self.live).into_values().collect();
        let mut tasks = Vec::with_capacity(lives.len());
        for l in lives {
            let _ = l.stop.send(());
            tasks.push(l.task);
        }
        let all = async {
            for t in &mut tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(
                grace_seconds = grace.as_secs(),
                "connections still open after the grace period; closing them"
            );
            for t in tasks {
                t.abort();
            }
        }
    }
}
