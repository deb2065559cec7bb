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

use super::accept::{accept_loop, Direct, Listen};
use super::bind::{bind, display_addr, BindError, Bound};
use super::context::{unix_now, AppState, ListenerCtx, LiveListener, LiveView};
use super::limits::ServerLimits;
use super::proxy::Proxy;
use super::slots::AddressSlots;
use crate::tls::{SelfSigned, TlsAcceptor};

/// HTTPS for a listener set: every non-loopback listener (and the loopback
/// ones when `loopback` is set) speaks TLS with `acceptor`, HTTP/2 or
/// HTTP/1.1 by ALPN. With `self_signed`, each address attached is added to the
/// certificate (reissued with the same key) before it serves.
#[derive(Debug, Clone)]
pub struct Https {
    /// The acceptor (its certificate resolver may be swapped while serving).
    pub acceptor: Arc<TlsAcceptor>,
    /// The self-signed certificate to extend with new addresses, if that is
    /// where the certificate comes from.
    pub self_signed: Option<Arc<SelfSigned>>,
    /// Serve TLS on loopback listeners too (`--tls-loopback`).
    pub loopback: bool,
}

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
    /// The cap shared by the non-loopback listeners, and the loopback door's own.
    connections: Arc<Semaphore>,
    loopback_connections: Arc<Semaphore>,
    slots: Arc<AddressSlots>,
    tls: Option<Https>,
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
        Self {
            app,
            state,
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            loopback_connections: Arc::new(Semaphore::new(limits.max_connections)),
            slots: Arc::new(AddressSlots::new(
                limits.max_connections_per_address,
                limits.max_unauthenticated_per_address,
            )),
            limits,
            live: BTreeMap::new(),
            fallback: (false, None),
            direct: None,
            tls: None,
        }
    }

    /// Sets the limits for listeners attached from now on (the connection cap
    /// is shared by those listeners).
    pub fn set_limits(&mut self, limits: ServerLimits) {
        if limits.max_connections != self.limits.max_connections {
            self.connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
            self.loopback_connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        }
        self.slots =
            Arc::new(AddressSlots::new(limits.max_connections_per_address, limits.max_unauthenticated_per_address));
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

    /// Serves HTTPS on listeners attached from now on (see [`Https`]).
    pub fn set_tls(&mut self, tls: Https) {
        self.tls = Some(tls);
    }

    fn live_listener(&self, l: &Listener, since: u64) -> LiveListener {
        let tls = self.is_tls(l);
        let url = format!("{}://{}", if tls { "https" } else { "http" }, display_addr(l));
        LiveListener { listener: l.clone(), since, tls, url }
    }

    /// True when `listener` is (or would be) served over TLS.
    pub fn is_tls(&self, listener: &Listener) -> bool {
        self.tls.as_ref().is_some_and(|t| !listener.is_loopback() || t.loopback)
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
        let loopback = local.ip().is_loopback();
        let tls = self.tls.as_ref().filter(|t| !loopback || t.loopback);
        if let Some(names) = tls.and_then(|t| t.self_signed.as_ref()) {
            // A self-signed certificate names every address it is served on.
            match names.ensure_names(&[local.ip()]) {
                Ok(true) => tracing::info!(address = %local.ip(), "the self-signed certificate now names this address"),
                Ok(false) => {}
                Err(e) => tracing::warn!("{e}; the certificate does not name {}", local.ip()),
            }
        }
        let ctx = ListenerCtx { local, loopback, tls: tls.is_some() };
        let (stop, stopped) = oneshot::channel::<()>();
        let listen = Listen {
            listener,
            app: self.app.clone(),
            ctx,
            interface: bound.listener.interface.as_deref().map(Arc::from),
            state: self.state.clone(),
            limits: self.limits,
            // The loopback door has a cap of its own: no mesh traffic can make it wait.
            connections: if loopback { self.loopback_connections.clone() } else { self.connections.clone() },
            slots: (!loopback).then(|| self.slots.clone()),
            direct: self.direct.clone(),
            tls: tls.map(|t| t.acceptor.clone()),
        };
        let task = tokio::spawn(accept_loop(listen, stopped));
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
        let listeners = self.live.values().map(|l| self.live_listener(&l.listener, l.since)).collect();
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
