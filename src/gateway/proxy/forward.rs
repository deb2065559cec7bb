//! [`Proxy`]: forwards one request to the upstream over the pool and hands back
//! its response, streaming both bodies; WebSocket (any `Upgrade`) requests are
//! joined end to end on `101`. A refused connection answers 502, a timeout
//! 504, a request body the client got wrong 400, each with a short reason; the
//! log line names the upstream. No header value ever reaches an error text.

use std::fmt;
use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::uri::PathAndQuery;
use axum::http::{header, HeaderValue, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use http_body_util::Limited;
use hyper_util::rt::TokioIo;

use super::headers::{
    append_forwarded_for, strip_hop_by_hop, strip_look_alikes, strip_token, wants_upgrade, Peer, X_FORWARDED_HOST,
    X_FORWARDED_PROTO,
};
use super::outbound::Outbound;
use super::pool;
use super::upstream::{Upstream, UpstreamLimits};
use crate::gateway::body::GatewayBody;
use crate::gateway::context::{CredentialCell, ListenerCtx, Revocation};
use crate::gateway::idle::{Activity, ClientBody};
use crate::gateway::token::Token;

/// How long an idle pooled upstream connection is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The most idle upstream connections kept for reuse, per connection thread
/// (as nginx's `keepalive` is per worker); more are closed as they come back.
pub const POOL_MAX_IDLE: usize = 256;

/// The forwarding half of the gateway. Cheap to clone (one shared pool).
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    upstream: Upstream,
    name: String,
    /// Shared by every proxy made from one with `with_*`, and replaceable.
    limits: Arc<ArcSwap<UpstreamLimits>>,
    token: Option<CredentialCell>,
    pool: Arc<pool::Pool>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy").field("upstream", &self.inner.name).field("limits", &self.limits()).finish()
    }
}

impl Proxy {
    /// A proxy to `upstream`. `token` is meshgate's own token: an
    /// `Authorization: Bearer` carrying it is removed before forwarding.
    pub fn new(upstream: Upstream, limits: UpstreamLimits, token: Option<Token>) -> Self {
        let pool = Arc::new(pool::Pool::new(&upstream, limits.connect_timeout, POOL_MAX_IDLE, POOL_IDLE_TIMEOUT));
        let name = upstream.to_string();
        let limits = Arc::new(ArcSwap::from_pointee(limits));
        Self { inner: Arc::new(Inner { upstream, name, limits, token: token.map(CredentialCell::new), pool }) }
    }

    /// The same proxy (the same connection pool and limits) stripping `token`
    /// instead.
    pub fn with_token(&self, token: Option<Token>) -> Self {
        self.with_credentials(token.map(CredentialCell::new))
    }

    /// The same proxy (the same connection pool and limits) stripping the
    /// token in force in `cell`, whichever it is when a request passes.
    /// [`upstream_app`](crate::gateway::upstream_app) and the gateway's
    /// listeners put the gateway's own cell here, so the token that is
    /// checked is always the token that is removed, across reloads too.
    pub fn with_credentials(&self, cell: Option<CredentialCell>) -> Self {
        let i = &self.inner;
        Self {
            inner: Arc::new(Inner {
                upstream: i.upstream.clone(),
                name: i.name.clone(),
                limits: i.limits.clone(),
                token: cell,
                pool: i.pool.clone(),
            }),
        }
    }

    /// Puts new limits in force for requests from now on (every proxy made
    /// from this one with `with_*` shares them). Requests in flight keep
    /// theirs.
    pub fn set_limits(&self, limits: UpstreamLimits) {
        self.inner.pool.set_connect_timeout(limits.connect_timeout);
        self.inner.limits.store(Arc::new(limits));
    }

    /// Idle keep-alive connections to the upstream in the pool now.
    pub fn idle_connections(&self) -> usize {
        self.inner.pool.idle_count()
    }

    /// Where requests go.
    pub fn upstream(&self) -> &Upstream {
        &self.inner.upstream
    }

    /// The limits in force.
    pub fn limits(&self) -> UpstreamLimits {
        **self.inner.limits.load()
    }

    /// Forwards one request and returns the upstream's response (streaming), or
    /// a 502/504 that says why not.
    ///
    /// Header rules: hop-by-hop headers (`Connection` and every header it names,
    /// `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`)
    /// are dropped, except that an upgrade request keeps `Upgrade` and
    /// `Connection: upgrade`; the client-IP look-alikes (`Forwarded`,
    /// `X-Real-IP`, `X-Client-IP`, `X-Forwarded-Port`, `X-Forwarded-Prefix`,
    /// `X-Forwarded-Ssl`) and every name with an underscore are dropped unless
    /// the [`HeaderRules`](super::HeaderRules) keep them (they do not by
    /// default); `X-Forwarded-For` gets the peer's IP appended,
    /// `X-Forwarded-Proto` is set to `http` and `X-Forwarded-Host` to the
    /// request's `Host`; `Host` itself passes through. An `Authorization` value
    /// that is `Bearer <meshgate's token>` is removed; any other `Authorization`
    /// (the service's own scheme) passes through untouched.
    pub async fn forward(&self, request: Request) -> Response {
        let tls = request.extensions().get::<ListenerCtx>().is_some_and(|c| c.tls);
        let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| Peer::new(c.0, tls));
        self.exchange(request, peer.as_ref(), None, Outbound::Axum).await.map(GatewayBody::into_axum)
    }

    /// [`Proxy::forward`] for a request straight off a client connection (no
    /// router in between, no body boxed), as the gateway's listeners use it.
    /// `--upstream-max-body-bytes` is applied here: a larger `Content-Length`
    /// is answered 413 at once, a longer chunked body is cut off.
    ///
    /// The response timeout is kept by the connection's supervisor
    /// ([`idle::response_deadlines`](super::idle::response_deadlines) on
    /// `activity`), not by a timer per request.
    pub(crate) async fn forward_direct(
        &self,
        request: hyper::Request<ClientBody>,
        peer: &Peer,
        activity: &Activity,
    ) -> Response<GatewayBody> {
        let watch = Some(activity);
        match self.limits().max_body_bytes {
            None => self.exchange(request, Some(peer), watch, Outbound::Client).await,
            Some(cap) => {
                // hyper's decoded length (it accepts `Content-Length: 5, 5` too).
                if hyper::body::Body::size_hint(request.body()).exact().is_some_and(|n| n > cap) {
                    return too_large().map(GatewayBody::Axum);
                }
                let cap = usize::try_from(cap).unwrap_or(usize::MAX);
                self.exchange(request, Some(peer), watch, |b| Outbound::Capped(Limited::new(b, cap))).await
            }
        }
    }

    /// The exchange behind both: rewrites the head, sends it with `body` on a
    /// pooled connection, and hands back the response (or 502/504/413).
    async fn exchange<B>(
        &self,
        mut request: hyper::Request<B>,
        peer: Option<&Peer>,
        watch: Option<&Activity>,
        body: impl FnOnce(B) -> Outbound,
    ) -> Response<GatewayBody> {
        let upgrade = wants_upgrade(request.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let (mut parts, client_body) = request.into_parts();
        let upgrade_proto = if upgrade { parts.headers.get(header::UPGRADE).cloned() } else { None };
        // Off loopback, the tunnel closes when what let it in changes.
        let revoked = parts.extensions.remove::<Revocation>();
        let host = parts
            .headers
            .get(header::HOST)
            .cloned()
            .or_else(|| parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));

        let headers = &mut parts.headers;
        strip_hop_by_hop(headers);
        strip_look_alikes(headers, self.limits().headers);
        if let Some(proto) = upgrade_proto {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, proto);
        }
        if let Some(cell) = &self.inner.token {
            let c = cell.load();
            strip_token(headers, c.token());
            // A request checked just before a reload carries the old one.
            if let Some(old) = c.previous() {
                strip_token(headers, old);
            }
        }
        if let Some(peer) = peer {
            append_forwarded_for(headers, peer);
        }
        let proto = peer.map_or(HeaderValue::from_static("http"), Peer::proto);
        headers.insert(X_FORWARDED_PROTO, proto);
        match host {
            Some(h) => headers.insert(X_FORWARDED_HOST, h),
            None => headers.remove(X_FORWARDED_HOST),
        };

        // Origin-form (`/path?query`) on the wire, as an HTTP/1.1 client sends to
        // an origin server; `Host` says which site (the upstream's own name when
        // the client sent none). An origin-form URI is kept as it is.
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            let pq = parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
            parts.uri = Uri::from(pq);
        }
        if !headers.contains_key(header::HOST) {
            headers.insert(header::HOST, self.inner.pool.host_header());
        }
        parts.version = Version::HTTP_11;
        parts.extensions = Default::default();
        let outbound = hyper::Request::from_parts(parts, body(client_body));

        let limits = self.limits();
        let sent = match watch {
            None => tokio::time::timeout(limits.response_timeout, self.inner.pool.send(outbound)).await.ok(),
            Some(activity) => {
                // The connection's supervisor wakes this task at the deadline
                // (`idle::response_deadlines`); each poll checks it.
                let started = std::time::Instant::now();
                let _waiting = activity.waiting(started);
                let send = self.inner.pool.send(outbound);
                tokio::pin!(send);
                std::future::poll_fn(|cx| match send.as_mut().poll(cx) {
                    Poll::Ready(r) => Poll::Ready(Some(r)),
                    Poll::Pending if started.elapsed() >= limits.response_timeout => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                })
                .await
            }
        };
        let (mut response, conn) = match sent {
            None => {
                tracing::warn!(
                    upstream = %self.inner.name,
                    "upstream sent no response headers within {}; answered 504",
                    secs(limits.response_timeout)
                );
                return plain(StatusCode::GATEWAY_TIMEOUT, "gateway timeout: the upstream did not answer in time")
                    .map(GatewayBody::Axum);
            }
            Some(Err(e)) => return self.failed(&e).map(GatewayBody::Axum),
            Some(Ok(r)) => r,
        };

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                tracing::warn!(upstream = %self.inner.name, "upstream switched protocols unasked; answered 502");
                return plain(StatusCode::BAD_GATEWAY, "bad gateway: the upstream switched protocols unasked")
                    .map(GatewayBody::Axum);
            };
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            // The upstream connection now carries the upgraded stream: never pooled again.
            drop(conn);
            let name = self.inner.name.clone();
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok((client, upstream)) => {
                        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                        let revoked = async {
                            match revoked {
                                Some(mut r) => r.revoked().await,
                                None => std::future::pending().await,
                            }
                        };
                        tokio::select! {
                            copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                                if let Err(e) = copied {
                                    tracing::debug!(upstream = %name, error = %e, "upgraded connection ended");
                                }
                            }
                            () = revoked => {
                                tracing::info!(upstream = %name, "closed an upgraded connection: the token or the peer rules changed");
                            }
                        }
                    }
                    Err(e) => tracing::warn!(upstream = %name, error = %e, "upgrade failed"),
                }
            });
            let (mut parts, _) = response.into_parts();
            let proto = parts.headers.get(header::UPGRADE).cloned();
            strip_hop_by_hop(&mut parts.headers);
            parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            if let Some(p) = proto {
                parts.headers.insert(header::UPGRADE, p);
            }
            return Response::from_parts(parts, GatewayBody::Axum(Body::empty()));
        }

        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        // The connection goes back to the pool when this body has been read to its end.
        Response::from_parts(parts, GatewayBody::Upstream(conn.attach(body)))
    }

    /// Maps a forwarding error to 502/504 (413 for a request body over
    /// `--upstream-max-body-bytes`, 400 for a request body the client got
    /// wrong) and logs it with the upstream's address.
    fn failed(&self, e: &pool::SendError) -> Response {
        let name = &self.inner.name;
        match e {
            pool::SendError::Connect(io) if io.kind() == io::ErrorKind::TimedOut => {
                tracing::warn!(
                    upstream = %name,
                    "upstream did not accept a connection within {}; answered 504",
                    secs(self.limits().connect_timeout)
                );
                plain(StatusCode::GATEWAY_TIMEOUT, "gateway timeout: the upstream did not accept a connection in time")
            }
            pool::SendError::Connect(io) => {
                tracing::warn!(upstream = %name, error = %error_chain(io), "cannot connect to the upstream; answered 502");
                let why = match io.kind() {
                    io::ErrorKind::ConnectionRefused => "bad gateway: the upstream refused the connection",
                    io::ErrorKind::NotFound => "bad gateway: the upstream's socket does not exist",
                    _ => "bad gateway: cannot connect to the upstream",
                };
                plain(StatusCode::BAD_GATEWAY, why)
            }
            pool::SendError::Request(e) if body_too_large(e) => {
                tracing::warn!(upstream = %name, "a request body went over the upstream body limit; answered 413");
                too_large()
            }
            pool::SendError::Request(e) if client_body_failed(e) => {
                // The client's fault, not the upstream's: no warning about the upstream.
                tracing::debug!(
                    upstream = %name,
                    error = %error_chain(e),
                    "the client sent a malformed or cut-off request body; answered 400"
                );
                plain(StatusCode::BAD_REQUEST, "bad request: the request body is malformed")
            }
            pool::SendError::Request(e) => {
                tracing::warn!(upstream = %name, error = %error_chain(e), "the upstream failed the request; answered 502");
                plain(
                    StatusCode::BAD_GATEWAY,
                    "bad gateway: the upstream closed the connection or sent an invalid response",
                )
            }
        }
    }
}

/// True when the request body was cut off by the body cap (tower-http's
/// `RequestBodyLimit` on the router path, `http_body_util::Limited` on the
/// direct path: both report `LengthLimitError`).
fn body_too_large(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// True when sending failed because reading the client's request body failed
/// (bad chunked framing, a connection cut mid-body): hyper's client reports a
/// failed request body as a user error whose source is the body's error, and
/// the only `hyper::Error` a request body can carry is the one hyper's server
/// raised reading it from the client.
fn client_body_failed(e: &hyper::Error) -> bool {
    if !e.is_user() {
        return false;
    }
    let mut cur = std::error::Error::source(e);
    while let Some(err) = cur {
        if err.is::<hyper::Error>() {
            return true;
        }
        cur = err.source();
    }
    false
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// The answer to a request body over `--upstream-max-body-bytes`.
fn too_large() -> Response {
    plain(StatusCode::PAYLOAD_TOO_LARGE, "payload too large: the request body is over the gateway's limit")
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{text}\n")).into_response()
}

/// `a: b: c` from an error and its sources (none of which carries header values).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        out.push_str(": ");
        out.push_str(&err.to_string());
        cur = err.source();
    }
    out
}
