//! The listener set: one real socket and one accept loop per address.
//!
//! Binding at start is all or nothing ([`bind_all`]): either every address binds,
//! or the sockets already made are dropped (closed) and the error names the
//! address and the cause. Later, [`ListenerSet::apply`] adds and removes
//! listeners by socket address; a listener whose address stays is untouched, so
//! its open connections carry on.
//!
//! Each accept loop serves HTTP/1.1 with hyper's connection builder directly
//! (rather than `axum::serve`) so that the [`ServerLimits`] apply: the
//! request-head size cap is hyper's own setting (431), and each connection
//! task carries the idle timeout (one coarse timer per connection, see
//! `idle.rs`), which closes slow-head and idle keep-alive connections. With an
//! upstream ([`ListenerSet::set_upstream`]) a forwarded request goes from
//! hyper straight to the proxy, with no router. The cap on open connections is a
//! [`tokio::sync::Semaphore`] shared by every listener of the set: a permit is
//! taken before `accept` (so past the cap new connections wait in the kernel's
//! listen queue instead of being served) and lives as long as the socket,
//! WebSocket and other upgraded connections included. (tower's
//! `ConcurrencyLimit` counts requests in flight, not connections: an idle
//! keep-alive connection, which is what a slowloris-style client holds, would
//! not count.)

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use meshgate_core::{Listener, Resolution};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::auth;
use super::body::GatewayBody;
use super::idle::{self, Activity, Ended, Guard, InFlight, Supervised};
use super::routes::{unix_now, AppState, ListenerCtx, LiveListener, LiveView, MESHGATE_PREFIX};
use super::upstream::{Peer, Proxy};

/// Default for [`ServerLimits::max_header_bytes`].
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Default for [`ServerLimits::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The smallest `max_header_bytes` hyper accepts (its minimum read buffer).
pub const MIN_HEADER_BYTES: usize = 8192;
/// Default for [`ServerLimits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Default for [`ServerLimits::max_body_bytes`] (axum's own default for its body
/// extractors, so an embedding program's routes see no change).
pub const DEFAULT_MAX_BODY_BYTES: usize = 2 << 20;

/// Limits on client connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerLimits {
    /// The largest request head (request line and headers); larger gets 431 and
    /// the connection closes. At least [`MIN_HEADER_BYTES`].
    pub max_header_bytes: usize,
    /// How long a connection may stay with no request in flight and no
    /// complete new request head (so it bounds idle keep-alive time and
    /// slowloris clients); such a connection is closed between 1 and 1.25 of
    /// this after its last activity. A request in flight is not cut off by it,
    /// unless its response has been stuck for the whole timeout on a client
    /// that stopped reading.
    pub idle_timeout: Duration,
    /// The most client connections open at once over all listeners of a
    /// gateway; past it, new connections wait in the listen queue until one
    /// closes. At least 1.
    pub max_connections: usize,
    /// The largest request body meshgate's own routes (and an embedding
    /// program's, through [`crate::embed`]) accept: a larger `Content-Length`
    /// is answered 413 before the handler runs, and a longer chunked body fails
    /// to read. Requests forwarded to an upstream have their own limit
    /// ([`super::UpstreamLimits::max_body_bytes`]).
    pub max_body_bytes: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

impl ServerLimits {
    /// These limits with another header cap (raised to [`MIN_HEADER_BYTES`] if lower).
    pub fn with_max_header_bytes(mut self, bytes: usize) -> Self {
        self.max_header_bytes = bytes.max(MIN_HEADER_BYTES);
        self
    }

    /// These limits with another idle timeout.
    pub fn with_idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }

    /// These limits with another cap on open connections (raised to 1 if 0).
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// These limits with another request body cap for meshgate's own routes.
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    fn builder(&self) -> hyper::server::conn::http1::Builder {
        let mut b = hyper::server::conn::http1::Builder::new();
        let bytes = self.max_header_bytes.max(MIN_HEADER_BYTES);
        // No hyper timer: the idle timeout is kept per connection (see
        // `super::idle`), not by a timer armed for every request head.
        b.keep_alive(true)
            .header_read_timeout(None)
            // One buffer and one write per response instead of a head buffer
            // plus body buffers in a writev: fewer syscall iovecs, measurably
            // cheaper for the small responses that dominate (benches/proxy_load.sh).
            .writev(false)
            .max_header_size(bytes)
            // The read buffer must hold the largest head; bodies stream through it.
            .max_buf_size(bytes.max(64 * 1024));
        b
    }
}

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
    pub(crate) fn new(listener: &Listener, source: io::Error) -> Self {
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

    /// The listening socket, for a caller that serves it itself (non-blocking,
    /// ready for `tokio::net::TcpListener::from_std`).
    pub fn into_std(self) -> std::net::TcpListener {
        self.socket
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

/// Accepts until `stop`, serving each connection with hyper's HTTP/1 builder;
/// then lets every open connection finish its in-flight request. Each
/// connection first takes a permit from `connections`.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    ctx: ListenerCtx,
    limits: ServerLimits,
    connections: Arc<Semaphore>,
    direct: Option<Direct>,
    stop: oneshot::Receiver<()>,
) {
    let builder = limits.builder();
    // Every connection task holds a receiver; `closed()` resolves when all are gone.
    let (drain, draining) = watch::channel(false);
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            _ = &mut stop => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    drop(permit);
                    accept_error(e).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::default());
        let service = ConnService {
            app: app.clone(),
            ctx,
            peer,
            // The peer as `X-Forwarded-For` names it, made only with an upstream.
            direct: direct.clone().map(|d| (d, Peer::new(peer))),
            activity: activity.clone(),
        };
        let io = TokioIo::new(Counted { stream, activity: activity.clone(), _permit: permit });
        let conn = builder.serve_connection(io, service).with_upgrades();
        let draining = draining.clone();
        let idle_timeout = limits.idle_timeout;
        let response_timeout = direct.as_ref().map(|d| d.proxy.limits().response_timeout);
        tokio::spawn(async move {
            tokio::pin!(conn);
            // Held until the connection ends: the accept loop's drain waits
            // for every receiver to go.
            let mut draining = draining;
            let timers = || idle::timers(idle_timeout, response_timeout, &activity);
            let first = Supervised::new(conn.as_mut(), async {
                tokio::select! {
                    _ = draining.changed() => Stop::Drain,
                    () = timers() => Stop::Timeout,
                }
            })
            .await;
            let result = match first {
                Ended::Conn(r) => r,
                // Quiet for the whole idle timeout (nothing in flight, or a
                // response stuck on a client that stopped reading): close.
                Ended::Supervisor(Stop::Timeout) => Ok(()),
                Ended::Supervisor(Stop::Drain) => {
                    conn.as_mut().graceful_shutdown();
                    // The request in flight finishes, with its response
                    // deadline still kept; a half-sent head keeps hyper from
                    // closing at once, and the idle watch still bounds it.
                    match Supervised::new(conn.as_mut(), timers()).await {
                        Ended::Conn(r) => r,
                        Ended::Supervisor(()) => Ok(()),
                    }
                }
            };
            drop(draining);
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    drop(draining);
    let _ = drain.send(true);
    drain.closed().await;
}

/// What stops a connection from outside.
enum Stop {
    /// The listener is closing: finish the request in flight, take no more.
    Drain,
    /// The idle timeout ran out.
    Timeout,
}

/// Requests outside `/_meshgate/` that go straight to an upstream: checked
/// against the state's token and browser rules, then forwarded, with no router
/// in between (see [`ListenerSet::set_upstream`]).
#[derive(Clone)]
struct Direct {
    proxy: Proxy,
    state: AppState,
}

/// One connection's service. A request for an upstream (when the set has one)
/// is checked and forwarded directly; any other is tagged with the listener it
/// came in on ([`ListenerCtx`]) and the peer ([`ConnectInfo`]) and handed to
/// the router.
#[derive(Clone)]
struct ConnService {
    app: Router,
    ctx: ListenerCtx,
    peer: SocketAddr,
    /// The upstream, with the peer as `X-Forwarded-For` names it (made once
    /// per connection).
    direct: Option<(Direct, Peer)>,
    activity: Arc<Activity>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for ConnService {
    type Response = hyper::Response<InFlight<GatewayBody>>;
    type Error = Infallible;
    type Future = ConnFuture;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Self::Future {
        let guard = Some(self.activity.request());
        if let Some((direct, forwarded)) = &self.direct {
            let path = request.uri().path();
            if !is_own_path(path) {
                if let Some(refused) =
                    auth::check(&direct.state, request.headers(), path, Some(self.ctx), Some(self.peer))
                {
                    return ConnFuture::Ready { response: Some(refused.map(GatewayBody::Axum)), guard };
                }
                let (proxy, peer, activity) = (direct.proxy.clone(), forwarded.clone(), self.activity.clone());
                let future = Box::pin(async move { proxy.forward_direct(request, &peer, &activity).await });
                return ConnFuture::Forward { future, guard };
            }
        }
        let extensions = request.extensions_mut();
        extensions.insert(ConnectInfo(self.peer));
        extensions.insert(self.ctx);
        // A Router is always ready: no poll_ready needed.
        ConnFuture::Route { future: tower::Service::call(&mut self.app.clone(), request), guard }
    }
}

/// True for meshgate's own routes in front of an upstream (`/_meshgate/...`).
fn is_own_path(path: &str) -> bool {
    path.strip_prefix(MESHGATE_PREFIX).is_some_and(|rest| rest.starts_with('/'))
}

pin_project_lite::pin_project! {
    /// The future of [`ConnService`]: the router's, a forwarded exchange, or a
    /// refusal ready at once.
    #[project = ConnFutureProj]
    enum ConnFuture {
        Route { #[pin] future: axum::routing::future::RouteFuture<Infallible>, guard: Option<Guard> },
        Forward { future: Pin<Box<dyn Future<Output = hyper::Response<GatewayBody>> + Send>>, guard: Option<Guard> },
        Ready { response: Option<hyper::Response<GatewayBody>>, guard: Option<Guard> },
    }
}

impl Future for ConnFuture {
    type Output = Result<hyper::Response<InFlight<GatewayBody>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (response, guard) = match self.project() {
            ConnFutureProj::Route { future, guard } => match future.poll(cx) {
                Poll::Ready(Ok(r)) => (r.map(GatewayBody::Axum), guard),
                Poll::Ready(Err(never)) => match never {},
                Poll::Pending => return Poll::Pending,
            },
            ConnFutureProj::Forward { future, guard } => match future.as_mut().poll(cx) {
                Poll::Ready(r) => (r, guard),
                Poll::Pending => return Poll::Pending,
            },
            ConnFutureProj::Ready { response, guard } => {
                (response.take().expect("ConnFuture polled after completion"), guard)
            }
        };
        // The request stays in flight until its response body is sent or dropped.
        let guard = guard.take().expect("ConnFuture polled after completion");
        Poll::Ready(Ok(response.map(|body| InFlight::new(body, guard))))
    }
}

/// A client socket holding its connection permit: the permit goes back when
/// the socket closes, however long an upgraded connection keeps it. Its writes
/// are reported to the connection's [`Activity`], so that the idle watch can
/// tell a client that stopped reading.
struct Counted {
    stream: TcpStream,
    activity: Arc<Activity>,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.activity.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.activity.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Connection-level accept errors are the client's problem; anything else (out
/// of file descriptors) gets a pause so the loop does not spin.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; pausing for 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
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
    /// An empty set serving `app` (built with [`super::app`] from the same `state`).
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
    /// build it with [`upstream_app`](super::upstream_app)). This is how
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
        let local = bound.socket.local_addr()?;
        let key = bound.listener.socket_addr();
        let listener = tokio::net::TcpListener::from_std(bound.socket)?;
        let ctx = ListenerCtx { local, loopback: local.ip().is_loopback() };
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
