//! The accept loop of one listener and the service of each connection.
//!
//! Each accept loop serves HTTP/1.1 with hyper's connection builder directly
//! (rather than `axum::serve`) so that the [`ServerLimits`](super::limits::ServerLimits) apply: the
//! request-head size cap is hyper's own setting (431), and each connection
//! task carries the idle timeout (one coarse timer per connection, see
//! `idle.rs`), which closes slow-head and idle keep-alive connections. With an
//! upstream a forwarded request goes from hyper straight to the proxy, with no
//! router. The cap on open connections is a [`tokio::sync::Semaphore`] shared
//! by the mesh listeners of a set (the loopback door has its own): a permit is
//! taken as soon as a connection is accepted, before it is served (past the
//! cap it waits for one, and the loop accepts no more, so new connections wait
//! in the kernel's listen queue instead of being served), and lives as long as
//! the socket, WebSocket and other upgraded connections included. (tower's `ConcurrencyLimit` counts requests in
//! flight, not connections: an idle keep-alive connection, which is what a
//! slowloris-style client holds, would not count.)
//!
//! Once a connection is identified it takes its caller's share (`slots.rs`;
//! past it, it is closed at once). Each request is then checked against the
//! caller's identity (still the same key?), the revocation signal (a new
//! token or new peer rules: no further request is served) and, over HTTP/2,
//! the count of streams without credentials; a refusal ends the connection
//! within a bound whatever the client does (see `supervise`).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit};

use axum::http::{header, HeaderValue, Method, StatusCode, Version};
use axum::response::IntoResponse;

use super::admission::Admission;
use super::auth::{self, Verdict};
use super::body::GatewayBody;
use super::context::{AppState, ListenerCtx, Revocation, Stats};
use super::identity::{allowed_now, Caller, PeerHeaders};
use super::idle::{self, Activity, ClientBody, Ended, Guard, InFlight, Supervised};
use super::metrics::{AccessRecord, Metered, ServiceMeters};
use super::proxy::headers::Peer;
use super::proxy::pool::Affinity;
use super::proxy::Proxy;
use super::routes::{self, OwnPath};
use super::session;
use super::slots::{ShareKey, Slot};
use crate::tls::{Alpn, TlsAcceptor};

/// Accepts until `stop`, serving each connection with hyper's HTTP/1 builder;
/// then lets every open connection finish its in-flight request. Each
/// accepted connection takes a permit from `connections`, then, once
/// identified, its caller's slot, before it is served.
pub(crate) async fn accept_loop(listen: Listen, stop: oneshot::Receiver<()>) {
    let Listen { listener, app, ctx, interface, state, admission, direct, tls, shared } = listen;
    // The loopback door has a cap of its own and no per-address shares: no
    // mesh traffic can make it wait.
    let connections = if ctx.loopback { &admission.loopback_connections } else { &admission.connections };
    let slots = (!ctx.loopback).then(|| admission.slots.clone());
    // The HTTP/1 builder, remade only when a reload changed the limits.
    let mut limits = admission.limits().clone();
    let mut builder = limits.http1();
    // Every connection task holds a receiver; `closed()` resolves when all are gone.
    let (drain, draining) = watch::channel(false);
    tokio::pin!(stop);
    loop {
        // On a worker well ahead of another, a moment for it to accept first.
        super::workers::accept_turn(shared).await;
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
        };
        // Then a place under the cap. Past it this connection waits here,
        // unserved, and the loop accepts no more (the rest wait in the listen
        // queue). Taken after `accept`, not before: a permit taken before
        // would sit in every idle listener's loop, and with several listeners
        // sharing a cap of N fewer than N connections could be served.
        let open = super::workers::open();
        let permit = tokio::select! {
            _ = &mut stop => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let _ = stream.set_nodelay(true);
        let now = admission.limits();
        if !Arc::ptr_eq(&now, &limits) {
            limits = now.clone();
            builder = limits.http1();
        }
        let activity = Arc::new(Activity::default());
        let (app, direct, state, interface, builder, tls, limits) = (
            app.clone(),
            direct.clone(),
            state.clone(),
            interface.clone(),
            builder.clone(),
            tls.clone(),
            limits.clone(),
        );
        let draining = draining.clone();
        let slots = slots.clone();
        let idle_timeout = limits.idle_timeout;
        let response_timeout = direct.as_ref().map(|d| d.proxy.limits().response_timeout);
        let meter = state.stats().meter.clone();
        #[cfg(test)]
        super::workers::note_accept();
        let task = async move {
            let _on_worker = open;
            let _open = meter.connection();
            // Off loopback, a new token or new peer rules end the connection
            // (after its request in flight): every next request is checked
            // and identified afresh.
            let revocation = (!ctx.loopback).then(|| state.revocation());
            // Who is calling, once per connection, before its first request.
            let caller = match (state.peer_lookup(), interface.as_deref()) {
                (Some(lookup), Some(iface)) if !ctx.loopback => lookup.identify(iface, peer).await.map(Arc::new),
                _ => None,
            };
            // Each caller (a peer's key over all its addresses; without an
            // identity, an IPv4 address or an IPv6 /64) gets its share of a
            // mesh listener's connections; one past it is closed at once.
            let slot = match &slots {
                None => None,
                Some(slots) => {
                    let key = ShareKey::of(peer.ip(), caller.as_deref());
                    let vouched = allowed_now(state.peer_lookup(), caller.as_deref());
                    match slots.admit(key, vouched) {
                        Some(slot) => Some(Arc::new(slot)),
                        None => {
                            Stats::bump(&state.stats().per_address_refused);
                            tracing::debug!(
                                %peer,
                                "closed a connection at once: its caller holds its share (or, without an allowed identity, the reserve's lendable half is lent)"
                            );
                            return;
                        }
                    }
                }
            };
            let service = ConnService(Arc::new(Conn {
                counters: state.http_counters(ctx.local),
                app,
                ctx,
                peer,
                state,
                peer_headers: PeerHeaders::new(caller.as_deref()),
                caller: Caller(caller),
                interface: interface.clone(),
                slot: slot.clone(),
                // The peer as `X-Forwarded-For` names it, made only with an upstream.
                direct: direct.map(|d| (d, Peer::new(peer, ctx.tls))),
                activity: activity.clone(),
                revocation: revocation.clone(),
                affinity: Affinity::default(),
            }));
            let supervision = Supervision {
                draining,
                revoked: revocation.clone(),
                idle_timeout,
                response_timeout,
                activity: activity.clone(),
            };
            let result = match tls {
                None => {
                    let io = Counted { stream, activity, _permit: permit, _slot: slot };
                    supervise(builder.serve_connection(TokioIo::new(io), service).with_upgrades(), supervision).await
                }
                Some(acceptor) => match acceptor.accept_tcp(stream).await {
                    Err(e) => {
                        // Scanners, and plain HTTP at an HTTPS port (redirected), are counted, not logged.
                        if !e.is_noise() {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        return;
                    }
                    Ok(stream) => {
                        let alpn = Alpn::of(&stream);
                        let io = TokioIo::new(Counted { stream, activity, _permit: permit, _slot: slot });
                        match alpn {
                            Alpn::H2 => {
                                supervision.activity.set_h2();
                                supervise(limits.http2().serve_connection(io, service), supervision).await
                            }
                            Alpn::Http11 => {
                                supervise(builder.serve_connection(io, service).with_upgrades(), supervision).await
                            }
                        }
                    }
                },
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        };
        // Served where it was accepted: on a worker, by the worker that was
        // free first to accept it (workers.rs); nothing moves between threads.
        drop(tokio::spawn(task));
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
    /// A request was refused for want of credentials (or a stream was not to
    /// be served): send what is in flight, for a second at most.
    Refused,
}

/// Everything one accept loop needs.
pub(crate) struct Listen {
    pub(crate) listener: tokio::net::TcpListener,
    pub(crate) app: Router,
    pub(crate) ctx: ListenerCtx,
    /// The interface the listener's address is on (for the peer lookup).
    pub(crate) interface: Option<Arc<str>>,
    pub(crate) state: AppState,
    /// The caps, shares and limits of the listener set (a reload may change them).
    pub(crate) admission: Arc<Admission>,
    pub(crate) direct: Option<Direct>,
    /// TLS on this listener (HTTPS; HTTP/2 or HTTP/1.1 by ALPN).
    pub(crate) tls: Option<Arc<TlsAcceptor>>,
    /// Other workers accept from this listener's socket too (its dups), so
    /// this loop may let a freer one go first (`workers::accept_turn`).
    pub(crate) shared: bool,
}

/// What watches a connection from outside: the listener's drain and the
/// connection's timers.
struct Supervision {
    draining: watch::Receiver<bool>,
    revoked: Option<Revocation>,
    idle_timeout: Duration,
    response_timeout: Option<Duration>,
    activity: Arc<Activity>,
}

/// A hyper server connection of either HTTP version: it can be told to finish
/// what is in flight and take no more.
trait Graceful: Future<Output = Result<(), hyper::Error>> {
    fn graceful(self: Pin<&mut Self>);
}

impl<I, S> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = InFlight<GatewayBody>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, E> Graceful for hyper::server::conn::http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = InFlight<GatewayBody>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, InFlight<GatewayBody>>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Drives one connection next to its drain signal and timers.
///
/// A connection told to go ends within a bound, over HTTP/2 too (whose
/// graceful close waits for the client to acknowledge a PING, which a client
/// may never do): after a refusal it gets [`idle::REFUSED_GRACE`] to send
/// what is in flight, and after a drain or a revocation its requests in
/// flight finish under the idle watch; either way a stream it is not to serve
/// (one more refusal, a stream after a revocation) closes it hard at once.
async fn supervise<C: Graceful>(conn: C, s: Supervision) -> Result<(), hyper::Error> {
    tokio::pin!(conn);
    // Held until the connection ends: the accept loop's drain waits for every
    // receiver to go.
    let Supervision { mut draining, revoked, idle_timeout, response_timeout, activity } = s;
    let timers = || idle::timers(idle_timeout, response_timeout, &activity);
    let first = Supervised::new(conn.as_mut(), async {
        let revoked = async {
            match revoked {
                Some(mut r) => r.revoked().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = draining.changed() => Stop::Drain,
            () = revoked => Stop::Drain,
            () = timers() => Stop::Timeout,
            // A refused request ends its connection: no second guess on it.
            () = activity.refused() => Stop::Refused,
        }
    })
    .await;
    let result = match first {
        Ended::Conn(r) => r,
        // Quiet for the whole idle timeout (nothing in flight, or a response
        // stuck on a client that stopped reading): close.
        Ended::Supervisor(Stop::Timeout) => Ok(()),
        Ended::Supervisor(stop) => {
            conn.as_mut().graceful();
            // The request in flight finishes, with its response deadline still
            // kept; a half-sent head keeps hyper from closing at once, and the
            // idle watch still bounds it. A refused connection gets a second
            // at most; a stream turned away ends it at once.
            let grace = async {
                match stop {
                    Stop::Refused => tokio::time::sleep(idle::REFUSED_GRACE).await,
                    _ => std::future::pending().await,
                }
            };
            let bound = async {
                tokio::select! {
                    () = timers() => {}
                    () = activity.refused() => {}
                    () = grace => {}
                }
            };
            match Supervised::new(conn.as_mut(), bound).await {
                Ended::Conn(r) => r,
                Ended::Supervisor(()) => Ok(()),
            }
        }
    };
    drop(draining);
    result
}

/// Requests outside `/_meshgate/` that go straight to an upstream: checked
/// against the state's token and browser rules, then forwarded, with no router
/// in between (see `ListenerSet::set_upstream`).
#[derive(Clone)]
pub(crate) struct Direct {
    pub(crate) proxy: Proxy,
    pub(crate) state: AppState,
}

/// One connection's service: its [`Conn`], made once when the connection is
/// identified, behind one `Arc`. A request for an upstream (when the set has
/// one) is checked and forwarded directly, meshgate's open health check is
/// answered after the same checks, and any other is tagged with the listener
/// it came in on ([`ListenerCtx`]), the peer ([`ConnectInfo`]) and the caller
/// and handed to the router. Per forwarded request: one `Arc` clone for the
/// exchange, one for its counters, and no request extension inserted (an
/// upgrade's revocation signal aside); the same for `/healthz`.
#[derive(Clone)]
struct ConnService(Arc<Conn>);

/// Everything the requests of one connection read.
struct Conn {
    app: Router,
    ctx: ListenerCtx,
    peer: SocketAddr,
    state: AppState,
    /// The caller as the mesh identifies it, and the headers that say so.
    caller: Caller,
    /// The interface the listener is on (to re-check the caller).
    interface: Option<Arc<str>>,
    peer_headers: PeerHeaders,
    slot: Option<Arc<Slot>>,
    /// The upstream, with the peer as `X-Forwarded-For` names it (made once
    /// per connection).
    direct: Option<(Direct, Peer)>,
    activity: Arc<Activity>,
    /// Its service's (or each path-shared service's) response counters on
    /// this listener (`/metrics`).
    counters: ServiceMeters,
    /// Off loopback: ends what an upgrade request starts (a WebSocket) when
    /// what let it in changes.
    revocation: Option<Revocation>,
    /// The upstream connection this client connection keeps (pool.rs).
    affinity: Affinity,
}

impl hyper::service::Service<hyper::Request<Incoming>> for ConnService {
    type Response = hyper::Response<InFlight<GatewayBody>>;
    type Error = Infallible;
    type Future = Metered<ConnFuture>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let conn = &*self.0;
        let services = conn.state.services();
        let counters = conn.counters.get(services.index_for(request.uri().path()));
        let access = AccessRecord::start(&request, counters.service(), conn.ctx.local, conn.peer, || {
            conn.caller
                .0
                .as_deref()
                .and_then(|id| id.name.clone().or_else(|| id.login.clone()).or_else(|| id.key.clone()))
        });
        #[cfg(meshgate_uncounted)]
        return Metered::uncounted(self.serve(request), access);
        #[cfg(not(meshgate_uncounted))]
        Metered::new(self.serve(request), counters.clone(), access)
    }
}

impl ConnService {
    /// [`Self::serve_now`], after checking, for a caller with an identity,
    /// that its address still belongs to it (the peer table may have changed
    /// since the connection opened): if not, 421 (a client may retry on a
    /// new connection, identified afresh) and the connection ends.
    fn serve(&self, request: hyper::Request<Incoming>) -> ConnFuture {
        let conn = &*self.0;
        let recheck = match (&conn.caller.0, conn.state.peer_lookup(), &conn.interface) {
            (Some(_), Some(lookup), Some(_)) => {
                // The connection's one Arc carries the caller, the
                // interface and the address into the check.
                let conn = self.0.clone();
                let lookup = lookup.clone();
                Some(Box::pin(async move {
                    let (Some(id), Some(iface)) = (conn.caller.0.as_deref(), conn.interface.as_deref()) else {
                        return true;
                    };
                    match lookup.same_peer(iface, conn.peer, id) {
                        Some(check) => check.await,
                        None => true,
                    }
                }) as Pin<Box<dyn Future<Output = bool> + Send>>)
            }
            _ => None,
        };
        let inner = self.serve_now(request);
        match recheck {
            None => inner,
            Some(check) => ConnFuture::Recheck {
                check: Some(check),
                inner: Some(Box::pin(inner)),
                activity: conn.activity.clone(),
            },
        }
    }

    fn serve_now(&self, request: hyper::Request<Incoming>) -> ConnFuture {
        let conn = &*self.0;
        let guard = Some(conn.activity.request());
        // The body's progress is watched: one that stops ends the connection.
        let mut request = request.map(|b| ClientBody::new(b, conn.activity.clone()));
        if request.method() == Method::CONNECT {
            // meshgate is no forward proxy: say so rather than leave it hanging.
            let refused =
                (StatusCode::METHOD_NOT_ALLOWED, [(header::CONNECTION, "close")], "CONNECT is not supported\n");
            return ConnFuture::Ready { response: Some(refused.into_response().map(GatewayBody::Axum)), guard };
        }
        // HTTP/2 names the host in `:authority`: every check below reads `Host`.
        if request.version() == Version::HTTP_2 && !request.headers().contains_key(header::HOST) {
            if let Some(host) = request.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
                request.headers_mut().insert(header::HOST, host);
            }
        }
        // Identity comes from the mesh, never from the client.
        conn.peer_headers.apply(request.headers_mut());
        // What let this connection in has changed (a new token, new peer
        // rules): it serves no further request, not even one already read.
        if let Some(r) = &conn.revocation {
            if r.is_revoked() {
                conn.activity.turned_away();
                return ConnFuture::Held { guard };
            }
            if request.headers().contains_key(header::UPGRADE) {
                request.extensions_mut().insert(r.clone());
            }
        }
        let caller = conn.caller.0.as_deref();
        let mut vouched = None;
        if let Some(slot) = conn.slot.as_deref().filter(|s| !s.is_authenticated()) {
            let v = auth::vouched_for(&conn.state, request.headers(), caller);
            vouched = Some(v);
            if v {
                slot.authenticated();
            } else if slot.is_provisional() {
                // A place kept for credentials, taken without them.
                let busy = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::CONNECTION, "close")],
                    "busy: the last connections are kept for callers with credentials\n",
                );
                if let Some(g) = &guard {
                    g.refused();
                }
                return ConnFuture::Ready { response: Some(busy.into_response().map(GatewayBody::Axum)), guard };
            }
        }
        // A flight of HTTP/2 streams is read before the first refusal is out:
        // past a handful without credentials, no more answers on this
        // connection, which is closed.
        if request.version() == Version::HTTP_2
            && !conn.ctx.loopback
            && !conn.state.is_open_path(request.uri().path())
            && !vouched.unwrap_or_else(|| auth::vouched_for(&conn.state, request.headers(), caller))
            && !conn.activity.unvouched_stream()
        {
            return ConnFuture::Held { guard };
        }
        // meshgate's own health check: the router's checks, then the
        // router's answer, without the router (it is what a load balancer
        // polls). Only where the set serves one service (by path, the
        // chosen service's own state would decide), and without a body (the
        // router's body cap answers one: 413 past it).
        if request.method() == Method::GET
            && conn.state.healthz().is_some_and(|h| h == request.uri().path())
            && conn.state.services().len() == 1
            && hyper::body::Body::size_hint(request.body()).exact() == Some(0)
        {
            let response = match auth::check(&conn.state, &request, Some(conn.ctx), Some(conn.peer), caller) {
                Verdict::Refuse(refused) => refused,
                Verdict::Pass => healthz(),
            };
            return ConnFuture::Ready { response: Some(response.map(GatewayBody::Axum)), guard };
        }
        if let Some((direct, _)) = &conn.direct {
            let own = routes::own_path(request.uri().path());
            if own == OwnPath::Alias {
                // meshgate's namespace spelled another way: never forwarded.
                return ConnFuture::Ready { response: Some(routes::alias_refused().map(GatewayBody::Axum)), guard };
            }
            if own == OwnPath::No {
                if let Verdict::Refuse(refused) =
                    auth::check(&direct.state, &request, Some(conn.ctx), Some(conn.peer), caller)
                {
                    return ConnFuture::Ready { response: Some(refused.map(GatewayBody::Axum)), guard };
                }
                session::strip_cookie(request.headers_mut());
                // The last request of a connection hands its upstream connection
                // straight back to the pool, not when this connection is dropped
                // (a moment after the client has seen it close).
                let last = closes_after(&request);
                // The connection's one Arc carries the proxy, the peer and the watch.
                let conn = self.0.clone();
                let forward = async move {
                    let Some((direct, peer)) = &conn.direct else { unreachable!("checked above") };
                    direct.proxy.forward_direct(request, peer, &conn.activity).await
                };
                let future: Pin<Box<dyn Future<Output = _> + Send>> =
                    if last { Box::pin(forward) } else { Box::pin(self.0.affinity.clone().scope(forward)) };
                return ConnFuture::Forward { future, guard };
            }
        }
        let extensions = request.extensions_mut();
        extensions.insert(ConnectInfo(conn.peer));
        extensions.insert(conn.ctx);
        extensions.insert(conn.caller.clone());
        // A Router is always ready: no poll_ready needed.
        ConnFuture::Route { future: tower::Service::call(&mut conn.app.clone(), request), guard }
    }
}

/// The answer of meshgate's own `/healthz`, as its route gives it (axum's
/// router sets `Content-Length`; the access log reads it).
fn healthz() -> axum::response::Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8")),
            (header::CONTENT_LENGTH, HeaderValue::from_static("3")),
        ],
        axum::body::Body::from(Bytes::from_static(b"ok\n")),
    )
        .into_response()
}

/// The answer to a request whose connection's caller has changed: 421, so
/// that a client may send it again on a new connection.
fn misdirected() -> axum::response::Response {
    (
        StatusCode::MISDIRECTED_REQUEST,
        [(header::CONNECTION, "close")],
        "this connection's address now belongs to another peer (or none); send the request again on a new connection\n",
    )
        .into_response()
}

/// True when the client closes its connection after this request
/// (`Connection: close`, or HTTP/1.0).
fn closes_after<B>(request: &hyper::Request<B>) -> bool {
    request.version() < Version::HTTP_11
        || request
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
}

/// True for meshgate's own refusal for want of credentials (not a 401 of the
/// upstream's, which must not end the client's connection).
fn is_meshgates_401<B>(response: &hyper::Response<B>) -> bool {
    response.status() == StatusCode::UNAUTHORIZED
        && response.headers().get(header::WWW_AUTHENTICATE).is_some_and(|v| v == auth::WWW_AUTHENTICATE)
}

pin_project_lite::pin_project! {
    /// The future of [`ConnService`]: the router's, a forwarded exchange, or a
    /// refusal ready at once.
    #[project = ConnFutureProj]
    enum ConnFuture {
        Route { #[pin] future: axum::routing::future::RouteFuture<Infallible>, guard: Option<Guard> },
        Forward { future: Pin<Box<dyn Future<Output = hyper::Response<GatewayBody>> + Send>>, guard: Option<Guard> },
        Ready { response: Option<hyper::Response<GatewayBody>>, guard: Option<Guard> },
        // A stream the connection will not answer: it waits for the close.
        Held { guard: Option<Guard> },
        // The caller's identity re-checked first, then the request.
        Recheck {
            check: Option<Pin<Box<dyn Future<Output = bool> + Send>>>,
            inner: Option<Pin<Box<ConnFuture>>>,
            activity: Arc<Activity>,
        },
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
            ConnFutureProj::Held { .. } => return Poll::Pending,
            ConnFutureProj::Recheck { check, inner, activity } => {
                if let Some(c) = check.as_mut() {
                    match c.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(true) => *check = None,
                        Poll::Ready(false) => {
                            *check = None;
                            *inner = None;
                            tracing::info!(
                                "a connection's address no longer belongs to the peer it was opened by; closed"
                            );
                            let guard = activity.request();
                            guard.refused();
                            let body = GatewayBody::Axum(misdirected().into_body());
                            let response = misdirected().map(|_| InFlight::new(body, guard));
                            return Poll::Ready(Ok(response));
                        }
                    }
                }
                return inner.as_mut().expect("ConnFuture polled after completion").as_mut().poll(cx);
            }
        };
        // The request stays in flight until its response body is sent or dropped.
        let guard = guard.take().expect("ConnFuture polled after completion");
        if is_meshgates_401(&response) {
            guard.refused();
        }
        Poll::Ready(Ok(response.map(|body| InFlight::new(body, guard))))
    }
}

/// A client socket holding its connection permit: the permit goes back when
/// the socket closes, however long an upgraded connection keeps it. Its writes
/// are reported to the connection's [`Activity`], so that the idle watch can
/// tell a client that stopped reading.
struct Counted<S> {
    stream: S,
    activity: Arc<Activity>,
    _permit: OwnedSemaphorePermit,
    _slot: Option<Arc<Slot>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
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

#[cfg(test)]
#[path = "accept_tests.rs"]
mod tests;
