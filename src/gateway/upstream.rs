//! The reverse proxy: every authorized request that is not one of meshgate's own
//! routes goes to one upstream service (`--upstream http://HOST:PORT` or
//! `unix:/PATH`).
//!
//! - Bodies stream both ways: the request body is handed to the client as the
//!   hyper body it arrived as, the response body back the same way; nothing is
//!   collected in memory.
//! - One pooled keep-alive HTTP/1.1 client ([`hyper_util`]'s legacy client) per
//!   gateway; for unix sockets a small connector over [`tokio::net::UnixStream`].
//! - WebSocket (any `Upgrade`) requests are forwarded with their upgrade headers;
//!   on `101` both sides are upgraded and joined with
//!   [`tokio::io::copy_bidirectional`].
//! - Hop-by-hop headers are dropped both ways, `X-Forwarded-*` set, and
//!   meshgate's own credentials removed (see [`Proxy::forward`]).
//! - A refused connection answers 502, a timeout 504, each with a short reason;
//!   the log line names the upstream. No header value ever reaches an error text.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::uri::{Authority, PathAndQuery};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::auth::bearer_value_matches;
use super::token::Token;

/// Default for [`UpstreamLimits::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for [`UpstreamLimits::response_timeout`].
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an idle pooled upstream connection is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

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
}

impl Default for UpstreamLimits {
    fn default() -> Self {
        Self { connect_timeout: DEFAULT_CONNECT_TIMEOUT, response_timeout: DEFAULT_RESPONSE_TIMEOUT }
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
    pool: Pool,
}

enum Pool {
    Tcp(Client<HttpConnector, Body>),
    #[cfg(unix)]
    Unix(Client<unix::UnixConnector, Body>),
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
        let mut builder = Client::builder(TokioExecutor::new());
        builder.pool_timer(TokioTimer::new()).timer(TokioTimer::new()).pool_idle_timeout(POOL_IDLE_TIMEOUT);
        let pool = match &upstream {
            Upstream::Http { .. } => {
                let mut connector = HttpConnector::new();
                connector.set_connect_timeout(Some(limits.connect_timeout));
                connector.set_nodelay(true);
                Pool::Tcp(builder.build(connector))
            }
            #[cfg(unix)]
            Upstream::Unix { path } => {
                Pool::Unix(builder.build(unix::UnixConnector::new(path.clone(), limits.connect_timeout)))
            }
            #[cfg(not(unix))]
            Upstream::Unix { .. } => unreachable!("Upstream::parse refuses unix: off unix"),
        };
        let name = upstream.to_string();
        Self { inner: Arc::new(Inner { upstream, name, limits, token, pool }) }
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
    pub async fn forward(&self, mut request: Request) -> Response {
        let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        let upgrade = wants_upgrade(request.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let (mut parts, body) = request.into_parts();
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

        let pq = parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        let authority = match &self.inner.upstream {
            Upstream::Http { authority } => authority.clone(),
            Upstream::Unix { .. } => Authority::from_static("localhost"),
        };
        parts.uri = match Uri::builder().scheme("http").authority(authority).path_and_query(pq).build() {
            Ok(u) => u,
            Err(_) => return plain(StatusCode::BAD_REQUEST, "bad request: the request target cannot be forwarded"),
        };
        parts.version = Version::HTTP_11;
        parts.extensions = Default::default();
        let outbound = Request::from_parts(parts, body);

        let sent = match &self.inner.pool {
            Pool::Tcp(c) => c.request(outbound),
            #[cfg(unix)]
            Pool::Unix(c) => c.request(outbound),
        };
        let limits = self.inner.limits;
        let mut response = match tokio::time::timeout(limits.response_timeout, sent).await {
            Err(_) => {
                tracing::warn!(
                    upstream = %self.inner.name,
                    "upstream sent no response headers within {}; answered 504",
                    secs(limits.response_timeout)
                );
                return plain(StatusCode::GATEWAY_TIMEOUT, "gateway timeout: the upstream did not answer in time");
            }
            Ok(Err(e)) => return self.failed(&e),
            Ok(Ok(r)) => r,
        };

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                tracing::warn!(upstream = %self.inner.name, "upstream switched protocols unasked; answered 502");
                return plain(StatusCode::BAD_GATEWAY, "bad gateway: the upstream switched protocols unasked");
            };
            let upstream_upgrade = hyper::upgrade::on(&mut response);
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
            return Response::from_parts(parts, Body::empty());
        }

        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Response::from_parts(parts, Body::new(body))
    }

    /// Maps a client error to 502/504 and logs it with the upstream's address.
    fn failed(&self, e: &hyper_util::client::legacy::Error) -> Response {
        let name = &self.inner.name;
        let io_kind = io_error_kind(e);
        let chain = error_chain(e);
        if e.is_connect() {
            if io_kind == Some(io::ErrorKind::TimedOut) {
                tracing::warn!(
                    upstream = %name,
                    "upstream did not accept a connection within {}; answered 504",
                    secs(self.inner.limits.connect_timeout)
                );
                return plain(
                    StatusCode::GATEWAY_TIMEOUT,
                    "gateway timeout: the upstream did not accept a connection in time",
                );
            }
            tracing::warn!(upstream = %name, error = %chain, "cannot connect to the upstream; answered 502");
            let why = match io_kind {
                Some(io::ErrorKind::ConnectionRefused) => "bad gateway: the upstream refused the connection",
                Some(io::ErrorKind::NotFound) => "bad gateway: the upstream's socket does not exist",
                _ => "bad gateway: cannot connect to the upstream",
            };
            return plain(StatusCode::BAD_GATEWAY, why);
        }
        tracing::warn!(upstream = %name, error = %chain, "the upstream failed the request; answered 502");
        plain(StatusCode::BAD_GATEWAY, "bad gateway: the upstream closed the connection or sent an invalid response")
    }
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{text}\n")).into_response()
}

/// The first I/O error kind in the source chain.
fn io_error_kind(e: &(dyn std::error::Error + 'static)) -> Option<io::ErrorKind> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        cur = err.source();
    }
    None
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

/// Appends the peer's IP to `X-Forwarded-For` (joining earlier values, which
/// the client may have made up: only the last entry is meshgate's).
fn append_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    let ip = peer.ip().to_canonical().to_string();
    let earlier: Vec<&str> = headers.get_all(X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).collect();
    let value = if earlier.is_empty() { ip } else { format!("{}, {ip}", earlier.join(", ")) };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_FOR, v);
    }
}

#[cfg(unix)]
mod unix {
    //! A connector for `hyper_util`'s client that ignores the URI and opens the
    //! configured unix socket.

    use std::future::Future;
    use std::io;
    use std::path::PathBuf;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use axum::http::Uri;
    use hyper_util::rt::TokioIo;
    use tokio::net::UnixStream;

    #[derive(Clone)]
    pub(super) struct UnixConnector {
        path: Arc<PathBuf>,
        timeout: Duration,
    }

    impl UnixConnector {
        pub(super) fn new(path: PathBuf, timeout: Duration) -> Self {
            Self { path: Arc::new(path), timeout }
        }
    }

    impl tower::Service<Uri> for UnixConnector {
        type Response = TokioIo<UnixStream>;
        type Error = io::Error;
        type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Uri) -> Self::Future {
            let (path, timeout) = (self.path.clone(), self.timeout);
            Box::pin(async move {
                match tokio::time::timeout(timeout, UnixStream::connect(path.as_path())).await {
                    Ok(stream) => stream.map(TokioIo::new),
                    Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "unix socket connect timed out")),
                }
            })
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
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, "[::ffff:10.8.0.2]:5000".parse().unwrap());
        assert_eq!(h[X_FORWARDED_FOR], "10.8.0.2");
        append_forwarded_for(&mut h, "10.8.0.3:5000".parse().unwrap());
        assert_eq!(h[X_FORWARDED_FOR], "10.8.0.2, 10.8.0.3");
    }
}
