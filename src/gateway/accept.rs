//! The accept loop of one listener and the service of each connection.
//!
//! Each accept loop serves HTTP/1.1 with hyper's connection builder directly
//! (rather than `axum::serve`) so that the [`ServerLimits`] apply: the
//! request-head size cap is hyper's own setting (431), and each connection
//! task carries the idle timeout (one coarse timer per connection, see
//! `idle.rs`), which closes slow-head and idle keep-alive connections. With an
//! upstream a forwarded request goes from hyper straight to the proxy, with no
//! router. The cap on open connections is a [`tokio::sync::Semaphore`] shared
//! by every listener of a set: a permit is taken before `accept` (so past the
//! cap new connections wait in the kernel's listen queue instead of being
//! served) and lives as long as the socket, WebSocket and other upgraded
//! connections included. (tower's `ConcurrencyLimit` counts requests in
//! flight, not connections: an idle keep-alive connection, which is what a
//! slowloris-style client holds, would not count.)

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
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};

use super::auth;
use super::body::GatewayBody;
use super::context::{AppState, ListenerCtx, MESHGATE_PREFIX};
use super::idle::{self, Activity, Ended, Guard, InFlight, Supervised};
use super::limits::ServerLimits;
use super::proxy::headers::Peer;
use super::proxy::Proxy;

/// Accepts until `stop`, serving each connection with hyper's HTTP/1 builder;
/// then lets every open connection finish its in-flight request. Each
/// connection first takes a permit from `connections`.
pub(crate) async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    ctx: ListenerCtx,
    limits: ServerLimits,
    connections: Arc<Semaphore>,
    direct: Option<Direct>,
    stop: oneshot::Receiver<()>,
) {
    let builder = limits.http1();
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
/// in between (see `ListenerSet::set_upstream`).
#[derive(Clone)]
pub(crate) struct Direct {
    pub(crate) proxy: Proxy,
    pub(crate) state: AppState,
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
