//! The reverse proxy: every authorized request that is not one of meshgate's own
//! routes goes to one upstream service (`--upstream http://HOST:PORT` or
//! `unix:/PATH`).
//!
//! - Bodies stream both ways: the request body is handed to the client as the
//!   hyper body it arrived as, the response body back the same way; nothing is
//!   collected in memory.
//! - A keep-alive pool of HTTP/1.1 connections per gateway, built on hyper's
//!   client connection API (one handshake and one connection task per upstream
//!   connection; a connection goes back to the pool when its response body has
//!   been read to the end), over TCP or a [`tokio::net::UnixStream`].
//! - WebSocket (any `Upgrade`) requests are forwarded with their upgrade headers;
//!   on `101` both sides are upgraded and joined with
//!   [`tokio::io::copy_bidirectional`].
//! - Hop-by-hop headers are dropped both ways, `X-Forwarded-*` set, and
//!   meshgate's own credentials removed (see [`Proxy::forward`]).
//! - A refused connection answers 502, a timeout 504, each with a short reason;
//!   the log line names the upstream. No header value ever reaches an error text.

use std::fmt;
use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::uri::{Authority, PathAndQuery};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use http_body_util::Limited;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

pub(crate) use pool::PooledBody;

use super::auth::bearer_value_matches;
use super::body::{GatewayBody, Outbound};
use super::idle::Activity;
use super::token::Token;

/// Default for [`UpstreamLimits::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for [`UpstreamLimits::response_timeout`].
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an idle pooled upstream connection is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The most idle upstream connections kept for reuse; more are closed as they
/// come back.
pub const POOL_MAX_IDLE: usize = 256;

/// Where requests are forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Upstream {
    /// `http://HOST[:PORT]` (port 80 when omitted).
    Http {
        /// `HOST:PORT`.
        authority: Authority,
    },
    /// `unix:/PATH`: a unix domain socket.
    Unix {
        /// The socket's path.
        path: PathBuf,
    },
}

/// An `--upstream` value that cannot be used (exit 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upstream {value:?}: {detail}")]
pub struct UpstreamError {
    /// The value given.
    pub value: String,
    /// What was expected instead.
    pub detail: String,
}

impl Upstream {
    /// Parses `http://HOST[:PORT]`, `unix:/PATH` or `unix:///PATH`.
    pub fn parse(value: &str) -> Result<Self, UpstreamError> {
        let bad = |detail: &str| UpstreamError { value: value.to_owned(), detail: detail.to_owned() };
        let v = value.trim();
        if let Some(rest) = v.strip_prefix("unix:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if !path.starts_with('/') {
                return Err(bad("expected an absolute socket path such as unix:/run/app.sock"));
            }
            if !cfg!(unix) {
                return Err(bad("unix sockets are not available on this platform; use http://HOST:PORT"));
            }
            return Ok(Self::Unix { path: PathBuf::from(path) });
        }
        if !v.contains("://") {
            return Err(bad(&format!(
                "expected http://HOST:PORT or unix:/PATH (e.g. http://{} or unix:/run/app.sock)",
                if v.is_empty() { "127.0.0.1:3000" } else { v }
            )));
        }
        let uri: Uri =
            v.parse().map_err(|_| bad("not a URL; expected http://HOST:PORT such as http://127.0.0.1:3000"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad(
                    "meshgate speaks plain HTTP/1.1 to its upstream; point it at the service's plain-HTTP port on loopback or a unix socket",
                ))
            }
            _ => return Err(bad("expected an http:// URL or unix:/PATH")),
        }
        let Some(authority) = uri.authority() else {
            return Err(bad("no host; expected http://HOST:PORT such as http://127.0.0.1:3000"));
        };
        if authority.as_str().contains('@') {
            return Err(bad("credentials in the URL are not supported; give only http://HOST:PORT"));
        }
        if authority.host().is_empty() {
            return Err(bad("no host; expected http://HOST:PORT such as http://127.0.0.1:3000"));
        }
        if uri.path_and_query().is_some_and(|pq| pq.as_str() != "/" && !pq.as_str().is_empty()) {
            return Err(bad(
                "a path or query is not supported (requests keep their own path); give only http://HOST:PORT",
            ));
        }
        let authority = match authority.port_u16() {
            Some(_) => authority.clone(),
            None => format!("{}:80", authority.host()).parse().map_err(|_| bad("bad host"))?,
        };
        Ok(Self::Http { authority })
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http { authority } => write!(f, "http://{authority}"),
            Self::Unix { path } => write!(f, "unix:{}", path.display()),
        }
    }
}

impl std::str::FromStr for Upstream {
    type Err = UpstreamError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Timeouts towards the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpstreamLimits {
    /// Opening a connection (TCP connect or unix socket connect); past it: 504.
    pub connect_timeout: Duration,
    /// From sending the request to receiving the response headers; past it: 504.
    /// Response bodies are not cut off (downloads and event streams may run long).
    pub response_timeout: Duration,
    /// The largest request body forwarded; `None` (the default): no cap, the
    /// upstream decides. With a cap, a larger `Content-Length` is answered 413
    /// without contacting the upstream, and a chunked body that runs past it
    /// is cut off (the client gets 413 if the upstream has not answered yet).
    /// Bodies stream either way.
    pub max_body_bytes: Option<u64>,
}

impl Default for UpstreamLimits {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            max_body_bytes: None,
        }
    }
}

impl UpstreamLimits {
    /// These limits with another connect timeout.
    pub fn with_connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// These limits with another response-header timeout.
    pub fn with_response_timeout(mut self, d: Duration) -> Self {
        self.response_timeout = d;
        self
    }

    /// These limits with a cap on forwarded request bodies (`None`: no cap).
    pub fn with_max_body_bytes(mut self, bytes: Option<u64>) -> Self {
        self.max_body_bytes = bytes;
        self
    }
}

/// The forwarding half of the gateway. Cheap to clone (one shared pool).
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    upstream: Upstream,
    name: String,
    limits: UpstreamLimits,
    token: Option<Token>,
    pool: Arc<pool::Pool>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy").field("upstream", &self.inner.name).field("limits", &self.inner.limits).finish()
    }
}

/// Headers that describe one connection, not the message (RFC 9110 7.6.1), and
/// `Proxy-Authorization`, which is addressed to meshgate.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

impl Proxy {
    /// A proxy to `upstream`. `token` is meshgate's own token: an
    /// `Authorization: Bearer` carrying it is removed before forwarding.
    pub fn new(upstream: Upstream, limits: UpstreamLimits, token: Option<Token>) -> Self {
        let pool = Arc::new(pool::Pool::new(&upstream, limits.connect_timeout, POOL_MAX_IDLE, POOL_IDLE_TIMEOUT));
        let name = upstream.to_string();
        Self { inner: Arc::new(Inner { upstream, name, limits, token, pool }) }
    }

    /// The same proxy (the same connection pool) stripping `token` instead.
    /// [`upstream_app`](super::upstream_app) and
    /// [`start_upstream`](crate::embed::GatewayBuilder::start_upstream) put
    /// the gateway's own token here, so the token that is checked is always
    /// the token that is removed.
    pub fn with_token(&self, token: Option<Token>) -> Self {
        let i = &self.inner;
        Self {
            inner: Arc::new(Inner {
                upstream: i.upstream.clone(),
                name: i.name.clone(),
                limits: i.limits,
                token,
                pool: i.pool.clone(),
            }),
        }
    }

    /// Where requests go.
    pub fn upstream(&self) -> &Upstream {
        &self.inner.upstream
    }

    /// The limits in force.
    pub fn limits(&self) -> UpstreamLimits {
        self.inner.limits
    }

    /// Forwards one request and returns the upstream's response (streaming), or
    /// a 502/504 that says why not.
    ///
    /// Header rules: hop-by-hop headers (`Connection` and every header it names,
    /// `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`)
    /// are dropped, except that an upgrade request keeps `Upgrade` and
    /// `Connection: upgrade`; `X-Forwarded-For` gets the peer's IP appended,
    /// `X-Forwarded-Proto` is set to `http` and `X-Forwarded-Host` to the
    /// request's `Host`; `Host` itself passes through. An `Authorization` value
    /// that is `Bearer <meshgate's token>` is removed; any other `Authorization`
    /// (the service's own scheme) passes through untouched.
    pub async fn forward(&self, request: Request) -> Response {
        let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| Peer::new(c.0));
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
        request: hyper::Request<Incoming>,
        peer: &Peer,
        activity: &Activity,
    ) -> Response<GatewayBody> {
        let watch = Some(activity);
        match self.inner.limits.max_body_bytes {
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
        let host = parts
            .headers
            .get(header::HOST)
            .cloned()
            .or_else(|| parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));

        let headers = &mut parts.headers;
        strip_hop_by_hop(headers);
        if let Some(proto) = upgrade_proto {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, proto);
        }
        if let Some(token) = &self.inner.token {
            strip_token(headers, token);
        }
        if let Some(peer) = peer {
            append_forwarded_for(headers, peer);
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
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

        let limits = self.inner.limits;
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
                        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                            tracing::debug!(upstream = %name, error = %e, "upgraded connection ended");
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
    /// `--upstream-max-body-bytes`) and logs it with the upstream's address.
    fn failed(&self, e: &pool::SendError) -> Response {
        let name = &self.inner.name;
        match e {
            pool::SendError::Connect(io) if io.kind() == io::ErrorKind::TimedOut => {
                tracing::warn!(
                    upstream = %name,
                    "upstream did not accept a connection within {}; answered 504",
                    secs(self.inner.limits.connect_timeout)
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

/// True for `Connection: upgrade` + `Upgrade: ...` (a WebSocket handshake).
fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Drops the hop-by-hop headers and every header `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the few names present is cheaper
    // than a removal (a hash and a probe) per hop-by-hop name.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    let named: Vec<HeaderName> =
        connection_tokens(headers).filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok()).collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
}

/// Removes every `Authorization` value that is `Bearer <token>`, keeping others.
pub fn strip_token(headers: &mut HeaderMap, token: &Token) {
    if !headers.contains_key(header::AUTHORIZATION) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter(|v| !bearer_value_matches(Some(v), token))
        .cloned()
        .collect();
    headers.remove(header::AUTHORIZATION);
    for v in kept {
        headers.append(header::AUTHORIZATION, v);
    }
}

/// A client's address as `X-Forwarded-For` names it, made once per
/// connection.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    ip: std::net::IpAddr,
    value: Option<HeaderValue>,
}

impl Peer {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        let ip = addr.ip().to_canonical();
        Self { ip, value: ip_header_value(ip) }
    }
}

/// Appends the peer's IP to `X-Forwarded-For` (joining earlier values, which
/// the client may have made up: only the last entry is meshgate's).
fn append_forwarded_for(headers: &mut HeaderMap, peer: &Peer) {
    use axum::http::header::Entry;
    match headers.entry(X_FORWARDED_FOR) {
        Entry::Vacant(v) => {
            if let Some(value) = &peer.value {
                v.insert(value.clone());
            }
        }
        Entry::Occupied(mut o) => {
            let earlier: Vec<&str> = o.iter().filter_map(|v| v.to_str().ok()).collect();
            let value = if earlier.is_empty() {
                peer.value.clone()
            } else {
                HeaderValue::try_from(format!("{}, {}", earlier.join(", "), peer.ip)).ok()
            };
            match value {
                Some(v) => {
                    o.insert(v);
                }
                None => {
                    o.remove();
                }
            }
        }
    }
}

/// An IP address as a header value; IPv4 (every request on the loopback or a
/// v4 mesh) without going through `fmt`.
fn ip_header_value(ip: std::net::IpAddr) -> Option<HeaderValue> {
    let std::net::IpAddr::V4(v4) = ip else {
        return HeaderValue::try_from(ip.to_string()).ok();
    };
    let mut buf = [0u8; 15];
    let mut n = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            buf[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            buf[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + octet % 10;
        n += 1;
    }
    HeaderValue::from_bytes(&buf[..n]).ok()
}

mod pool {
    //! A keep-alive pool of HTTP/1.1 connections to the one upstream, built on
    //! hyper's client connection API.
    //!
    //! Each connection is one `handshake` and one spawned connection task; its
    //! [`SendRequest`] half is checked out for a request and comes back when the
    //! response body has been read to its end ([`Conn::attach`]). Idle senders
    //! wait in a lock-protected stack (the most recently used first, so the
    //! connections that stay warm are few). A connection that errored, was
    //! closed by the upstream, was upgraded, or whose response body was dropped
    //! half-read is never reused. This does per request what hyper-util's legacy
    //! client did with a spawned task and a timer wheel, with neither.

    use std::collections::VecDeque;
    use std::io;
    use std::path::PathBuf;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};
    use std::time::{Duration, Instant};

    use axum::http::uri::Authority;
    use axum::http::{HeaderValue, Request, Response};
    use hyper::body::{Bytes, Frame, Incoming, SizeHint};
    use hyper::client::conn::http1::{self, SendRequest};
    use hyper_util::rt::TokioIo;

    use super::{Outbound, Upstream};

    /// Why a request got no response.
    #[derive(Debug)]
    pub(super) enum SendError {
        /// No connection could be opened (refused, missing socket, timed out).
        Connect(io::Error),
        /// The connection failed the request (closed, invalid response, or the
        /// request body failed, e.g. over its limit).
        Request(hyper::Error),
    }

    enum Target {
        Tcp(Authority),
        #[cfg(unix)]
        Unix(PathBuf),
    }

    struct Idle {
        sender: SendRequest<Outbound>,
        since: Instant,
    }

    pub(super) struct Pool {
        target: Target,
        host: HeaderValue,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
        idle: Mutex<VecDeque<Idle>>,
        builder: http1::Builder,
    }

    impl Pool {
        pub(super) fn new(
            upstream: &Upstream,
            connect_timeout: Duration,
            max_idle: usize,
            idle_timeout: Duration,
        ) -> Self {
            let (target, host) = match upstream {
                Upstream::Http { authority } => (
                    Target::Tcp(authority.clone()),
                    HeaderValue::from_str(authority.as_str()).unwrap_or(HeaderValue::from_static("localhost")),
                ),
                #[cfg(unix)]
                Upstream::Unix { path } => (Target::Unix(path.clone()), HeaderValue::from_static("localhost")),
                #[cfg(not(unix))]
                Upstream::Unix { .. } => unreachable!("Upstream::parse refuses unix: off unix"),
            };
            Self {
                target,
                host,
                connect_timeout,
                idle_timeout,
                max_idle,
                idle: Mutex::new(VecDeque::new()),
                builder: {
                    let mut b = http1::Builder::new();
                    // Requests are small: one buffer, one write (see the server side).
                    b.writev(false);
                    b
                },
            }
        }

        /// The `Host` for a request that came without one.
        pub(super) fn host_header(&self) -> HeaderValue {
            self.host.clone()
        }

        /// Sends `request` on an idle connection, or on a new one. A reused
        /// connection that turns out closed before the request went out (the
        /// upstream dropped it while idle) is retried once on a new connection.
        pub(super) async fn send(
            self: &Arc<Self>,
            request: Request<Outbound>,
        ) -> Result<(Response<Incoming>, Conn), SendError> {
            let mut request = request;
            if let Some(mut sender) = self.checkout() {
                match sender.try_send_request(request).await {
                    Ok(response) => return Ok((response, Conn { sender: Some(sender), pool: self.clone() })),
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => request = unsent,
                        None => return Err(SendError::Request(e.into_error())),
                    },
                }
            }
            let mut sender = self.connect().await?;
            let response = sender.send_request(request).await.map_err(SendError::Request)?;
            Ok((response, Conn { sender: Some(sender), pool: self.clone() }))
        }

        /// The most recently returned idle connection that is ready; closed and
        /// expired ones are dropped on the way.
        fn checkout(&self) -> Option<SendRequest<Outbound>> {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let mut i = idle.len();
            while i > 0 {
                i -= 1;
                let c = &idle[i];
                if c.sender.is_closed() || now.duration_since(c.since) > self.idle_timeout {
                    idle.remove(i);
                } else if c.sender.is_ready() {
                    return idle.remove(i).map(|c| c.sender);
                }
                // Not ready yet (its connection task has not caught up with the
                // end of the last exchange): left for a later request.
            }
            None
        }

        fn checkin(&self, sender: SendRequest<Outbound>) {
            if sender.is_closed() {
                return;
            }
            let now = Instant::now();
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            while idle.front().is_some_and(|c| now.duration_since(c.since) > self.idle_timeout) {
                idle.pop_front();
            }
            if idle.len() < self.max_idle {
                idle.push_back(Idle { sender, since: now });
            }
        }

        async fn connect(&self) -> Result<SendRequest<Outbound>, SendError> {
            let timed_out = || SendError::Connect(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
            let opened = tokio::time::timeout(self.connect_timeout, async {
                match &self.target {
                    Target::Tcp(authority) => {
                        let stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
                        stream.set_nodelay(true)?;
                        self.handshake(stream).await
                    }
                    #[cfg(unix)]
                    Target::Unix(path) => self.handshake(tokio::net::UnixStream::connect(path).await?).await,
                }
            })
            .await;
            match opened {
                Err(_) => Err(timed_out()),
                Ok(Err(HandshakeError::Io(e))) => Err(SendError::Connect(e)),
                Ok(Err(HandshakeError::Http(e))) => Err(SendError::Request(e)),
                Ok(Ok(sender)) => Ok(sender),
            }
        }

        async fn handshake<T>(&self, io: T) -> Result<SendRequest<Outbound>, HandshakeError>
        where
            T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        {
            let (sender, conn) = self.builder.handshake(TokioIo::new(io)).await.map_err(HandshakeError::Http)?;
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(error = %e, "upstream connection ended with an error");
                }
            });
            Ok(sender)
        }
    }

    enum HandshakeError {
        Io(io::Error),
        Http(hyper::Error),
    }

    impl From<io::Error> for HandshakeError {
        fn from(e: io::Error) -> Self {
            Self::Io(e)
        }
    }

    /// A checked-out connection: dropped, it is closed; attached to its
    /// response body, it goes back to the pool when that body ends.
    pub(super) struct Conn {
        sender: Option<SendRequest<Outbound>>,
        pool: Arc<Pool>,
    }

    impl Conn {
        pub(super) fn attach(self, body: Incoming) -> PooledBody {
            PooledBody { body, conn: self }
        }

        fn release(&mut self) {
            if let Some(sender) = self.sender.take() {
                self.pool.checkin(sender);
            }
        }
    }

    /// A response body that hands its connection back once read to the end.
    pub(crate) struct PooledBody {
        body: Incoming,
        conn: Conn,
    }

    impl std::fmt::Debug for PooledBody {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("PooledBody").field("body", &self.body).finish_non_exhaustive()
        }
    }

    impl hyper::body::Body for PooledBody {
        type Data = Bytes;
        type Error = hyper::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
            let this = &mut *self;
            let polled = Pin::new(&mut this.body).poll_frame(cx);
            match &polled {
                Poll::Ready(Some(Err(_))) => this.conn.sender = None,
                Poll::Ready(None) => this.conn.release(),
                Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.conn.release(),
                _ => {}
            }
            polled
        }

        fn is_end_stream(&self) -> bool {
            self.body.is_end_stream()
        }

        fn size_hint(&self) -> SizeHint {
            self.body.size_hint()
        }
    }

    impl Drop for PooledBody {
        fn drop(&mut self) {
            use hyper::body::Body as _;
            // Read to its end (or empty from the start: HEAD, 204, 304): the
            // connection is clean. Otherwise its leftover bytes make it useless.
            if self.body.is_end_stream() {
                self.conn.release();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upstreams() {
        assert_eq!(Upstream::parse("http://127.0.0.1:3000").unwrap().to_string(), "http://127.0.0.1:3000");
        assert_eq!(Upstream::parse("http://localhost/").unwrap().to_string(), "http://localhost:80");
        assert_eq!(Upstream::parse("http://[::1]:8080").unwrap().to_string(), "http://[::1]:8080");
        assert_eq!(Upstream::parse("unix:/run/app.sock").unwrap().to_string(), "unix:/run/app.sock");
        assert_eq!(Upstream::parse("unix:///run/app.sock").unwrap().to_string(), "unix:/run/app.sock");
        for (bad, hint) in [
            ("127.0.0.1:3000", "http://127.0.0.1:3000"),
            ("https://127.0.0.1:3000", "plain HTTP"),
            ("http://127.0.0.1:3000/app", "path"),
            ("http://u:p@127.0.0.1:3000", "credentials"),
            ("unix:run/app.sock", "absolute"),
            ("ftp://x", "http://"),
            ("", "http://127.0.0.1:3000"),
        ] {
            let e = Upstream::parse(bad).unwrap_err().to_string();
            assert!(e.contains(hint), "{bad}: {e}");
        }
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, X-Secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert(header::PROXY_AUTHORIZATION, "Bearer t".parse().unwrap());
        h.insert(header::ACCEPT, "*/*".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::ACCEPT));
    }

    #[test]
    fn only_meshgate_bearer_is_stripped() {
        let t = Token::new("s3cret", "test").unwrap();
        let mut h = HeaderMap::new();
        h.append(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        h.append(header::AUTHORIZATION, "Basic dXNlcjpwdw==".parse().unwrap());
        strip_token(&mut h, &t);
        let left: Vec<_> = h.get_all(header::AUTHORIZATION).iter().collect();
        assert_eq!(left, ["Basic dXNlcjpwdw=="]);
    }

    #[test]
    fn ip_header_values_match_display() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.8.0.1",
            "100.64.10.200",
            "255.255.255.255",
            "127.0.0.1",
            "::1",
            "fd7a:115c:a1e0::1",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(ip_header_value(ip).unwrap().to_str().unwrap(), ip.to_string());
        }
        for a in 0..=255u8 {
            let ip = std::net::IpAddr::from([a, a / 3, 200 - a / 2, 9]);
            assert_eq!(ip_header_value(ip).unwrap().to_str().unwrap(), ip.to_string());
        }
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, &Peer::new("[::ffff:10.8.0.2]:5000".parse().unwrap()));
        assert_eq!(h[X_FORWARDED_FOR], "10.8.0.2");
        append_forwarded_for(&mut h, &Peer::new("10.8.0.3:5000".parse().unwrap()));
        assert_eq!(h[X_FORWARDED_FOR], "10.8.0.2, 10.8.0.3");
        append_forwarded_for(&mut h, &Peer::new("[fd7a::5]:5000".parse().unwrap()));
        assert_eq!(h[X_FORWARDED_FOR], "10.8.0.2, 10.8.0.3, fd7a::5");
        // Two header lines, one of them not text: the text one is kept.
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, "1.1.1.1".parse().unwrap());
        h.append(X_FORWARDED_FOR, HeaderValue::from_bytes(b"\xff").unwrap());
        append_forwarded_for(&mut h, &Peer::new("10.8.0.3:5000".parse().unwrap()));
        assert_eq!(h.get_all(X_FORWARDED_FOR).iter().collect::<Vec<_>>(), ["1.1.1.1, 10.8.0.3"]);
    }
}
