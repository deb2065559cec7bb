//! The listener set: one real socket and one accept loop per address.
//!
//! Binding at start is all or nothing ([`bind_all`]): either every address binds,
//! or the sockets already made are dropped (closed) and the error names the
//! address and the cause. Later, [`ListenerSet::apply`] adds and removes
//! listeners by socket address; a listener whose address stays is untouched, so
//! its open connections carry on.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::{Extension, Router};
use meshgate_core::{Listener, Resolution};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::routes::{unix_now, AppState, ListenerCtx, LiveListener, LiveView};

/// Why an address could not be bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BindErrorKind {
    /// No interface of this host has the address.
    NotOnHost,
    /// Something already listens on that address and port.
    PortInUse,
    /// Not allowed (a port below 1024 without the capability).
    Permission,
    /// Anything else.
    Other,
}

/// An address that could not be bound, and why.
#[derive(Debug, thiserror::Error)]
#[error("bind {addr}: {}", self.explain())]
pub struct BindError {
    /// The address (`[fe80::1%wg0]:18789` style for scoped v6).
    pub addr: String,
    /// The category.
    pub kind: BindErrorKind,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

impl BindError {
    fn new(listener: &Listener, source: io::Error) -> Self {
        let kind = match source.kind() {
            io::ErrorKind::AddrNotAvailable => BindErrorKind::NotOnHost,
            io::ErrorKind::AddrInUse => BindErrorKind::PortInUse,
            io::ErrorKind::PermissionDenied => BindErrorKind::Permission,
            _ => BindErrorKind::Other,
        };
        Self { addr: display_addr(listener), kind, source }
    }

    fn explain(&self) -> String {
        match self.kind {
            BindErrorKind::NotOnHost => format!(
                "the address is not on this host ({}); name an address one of its interfaces holds (see `meshgate explain`)",
                self.source
            ),
            BindErrorKind::PortInUse => {
                format!("the port is already in use ({}); stop what listens there or choose another --port", self.source)
            }
            BindErrorKind::Permission => format!(
                "permission denied ({}); ports below 1024 need root or CAP_NET_BIND_SERVICE: choose a higher --port",
                self.source
            ),
            BindErrorKind::Other => self.source.to_string(),
        }
    }
}

/// `10.8.0.1:18789` or `[fe80::1%wg0]:18789`.
pub fn display_addr(l: &Listener) -> String {
    if l.address.addr.is_ipv6() {
        format!("[{}]:{}", l.address, l.port)
    } else {
        format!("{}:{}", l.address, l.port)
    }
}

/// A bound, listening socket not yet serving.
#[derive(Debug)]
pub struct Bound {
    /// What the resolver said about it.
    pub listener: Listener,
    socket: std::net::TcpListener,
}

impl Bound {
    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

/// Binds one listener: a real socket, `IPV6_V6ONLY` set explicitly on v6, the
/// scope id kept for link-local addresses. No probing with throwaway sockets.
pub fn bind(listener: &Listener) -> Result<Bound, BindError> {
    let addr = listener.socket_addr();
    let make = || -> io::Result<std::net::TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        Ok(socket.into())
    };
    make().map(|socket| Bound { listener: listener.clone(), socket }).map_err(|e| BindError::new(listener, e))
}

/// Binds every listener, or none: on the first failure the sockets already bound
/// are closed and the error is returned.
pub fn bind_all(listeners: &[Listener]) -> Result<Vec<Bound>, BindError> {
    listeners.iter().map(bind).collect()
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
    live: BTreeMap<SocketAddr, Live>,
    fallback: (bool, Option<String>),
}

impl std::fmt::Debug for ListenerSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerSet").field("live", &self.live.keys().collect::<Vec<_>>()).finish()
    }
}

impl ListenerSet {
    /// An empty set serving `app` (built with [`super::app`] from the same `state`).
    pub fn new(app: Router, state: AppState) -> Self {
        Self { app, state, live: BTreeMap::new(), fallback: (false, None) }
    }

    /// The addresses currently served.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.live.values().map(|l| l.local).collect()
    }

    /// Starts serving a bound socket. Must run inside a tokio runtime.
    pub fn attach(&mut self, bound: Bound) -> io::Result<SocketAddr> {
        let local = bound.socket.local_addr()?;
        let key = bound.listener.socket_addr();
        let listener = tokio::net::TcpListener::from_std(bound.socket)?;
        let ctx = ListenerCtx { local, loopback: local.ip().is_loopback() };
        let service = self.app.clone().layer(Extension(ctx)).into_make_service_with_connect_info::<SocketAddr>();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, service).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(%local, error = %e, "listener stopped");
            }
        });
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
