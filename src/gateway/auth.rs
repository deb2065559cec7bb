//! The bearer-token check. Loopback listeners are open (local tools always have a
//! door); on every other listener everything but the open paths (`/healthz`, or
//! `/_meshgate/healthz` in front of an upstream) needs `Authorization: Bearer
//! TOKEN` or `Proxy-Authorization: Bearer TOKEN`, compared in constant time. A
//! missing and a wrong token get the same 401.
//!
//! An allowed peer's identity and a session cookie also let a request in,
//! but they are ambient (a browser attaches them whichever page asked), so
//! such a request must also pass [`BrowserPolicy::check_ambient`](super::browser::BrowserPolicy::check_ambient).
//! Refusals go to the refusal log ([`super::refusals`]), which counts them
//! rather than writing a line each.
//!
//! `Proxy-Authorization` is there for upstreams with an `Authorization` scheme of
//! their own: the client sends meshgate's token in the one and the service's
//! credentials in the other (see `docs/upstream.md`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::browser::{request_is_same_origin, AmbientRefusal, GuardRefusal};
use super::context::{AppState, ListenerCtx, Stats};
use super::identity::{allowed_now, Caller, PeerIdentity};
use super::refusals::Reason;
use super::session;
use super::token::Token;

/// True when `headers` carry `Authorization: Bearer <token>`.
///
/// The work done depends only on the expected token's length, not on where the
/// given value first differs.
pub fn bearer_matches(headers: &HeaderMap, token: &Token) -> bool {
    bearer_value_matches(headers.get(header::AUTHORIZATION), token)
}

/// True when `Authorization` or `Proxy-Authorization` carries `Bearer <token>`.
/// Both are always checked, so the time taken does not say which one held it.
pub fn token_matches(headers: &HeaderMap, token: &Token) -> bool {
    let a = bearer_value_matches(headers.get(header::AUTHORIZATION), token);
    let p = bearer_value_matches(headers.get(header::PROXY_AUTHORIZATION), token);
    a | p
}

/// True when one header value is `Bearer <token>` (scheme case-insensitive).
pub fn bearer_value_matches(value: Option<&axum::http::HeaderValue>, token: &Token) -> bool {
    let Some(value) = value else {
        return false;
    };
    let value = value.as_bytes();
    let given = match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => &value[7..],
        _ => return false,
    };
    token_value_matches(given, token)
}

/// True when `given` is the token, compared in constant time: the work done
/// depends only on the token's length, not on where `given` first differs.
pub fn token_value_matches(given: &[u8], token: &Token) -> bool {
    let expected = token.expose();
    let mut same = subtle::Choice::from(u8::from(given.len() == expected.len()));
    for (i, e) in expected.iter().enumerate() {
        same &= e.ct_eq(given.get(i).unwrap_or(&0));
    }
    same.into()
}

/// The challenge of meshgate's own 401.
pub const WWW_AUTHENTICATE: &str = "Bearer realm=\"meshgate\"";

/// The 401 every refused request gets. It closes the connection: a client
/// without credentials gets one answer per connection, and a refused
/// connection never stays open on the strength of its refusals.
pub fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, WWW_AUTHENTICATE), (header::CONNECTION, "close")],
        "unauthorized: send Authorization: Bearer <token>\n",
    )
        .into_response()
}

/// The middleware: lets loopback listeners and the open paths through, checks
/// the rest; refuses browser attacks (a rebound `Host`, a cross-site WebSocket)
/// first. For `axum::middleware::from_fn_with_state(state, require_token)`;
/// [`RequireTokenLayer`] does the same without boxing a future per request.
pub async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match refusal(&state, &request) {
        Some(refused) => refused,
        None => next.run(request).await,
    }
}

/// The answer for a request that must not pass, or `None` to let it through.
fn refusal(state: &AppState, request: &Request) -> Option<Response> {
    let ctx = request.extensions().get::<ListenerCtx>().copied();
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let caller = request.extensions().get::<Caller>().and_then(|c| c.0.as_deref());
    match check(state, request, ctx, peer, caller) {
        Verdict::Refuse(r) => Some(r),
        Verdict::Pass => None,
    }
}

/// What [`check`] decided.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Let it through.
    Pass,
    /// Answer this instead.
    Refuse(Response),
}

/// The checks of [`require_token`] on a request: `ctx` is the listener it
/// came in on (`None`: unknown, treated as non-loopback), `peer` names the
/// client in the log line, `caller` is its mesh identity, if known.
pub(crate) fn check<B>(
    state: &AppState,
    request: &axum::http::Request<B>,
    ctx: Option<ListenerCtx>,
    peer: Option<SocketAddr>,
    caller: Option<&PeerIdentity>,
) -> Verdict {
    let headers = request.headers();
    let path = request.uri().path();
    // A tailnet caller is listed on the status page, by login.
    if let Some(c) = caller.filter(|c| c.mesh == "tailscale") {
        let allowed = allowed_now(state.peer_lookup(), Some(c));
        let address = peer.map(|p| p.ip().to_string());
        state.status_board().seen_tailnet(c.login.as_deref(), c.node.as_deref(), &c.tags, address, allowed);
    }
    // No listener context means we cannot tell: treat as non-loopback (fail closed).
    let loopback = ctx.is_some_and(|c| c.loopback);
    // Browser attacks first: a rebound Host or a cross-site WebSocket is refused
    // even where no token is needed.
    if let Some(why) = state.browser_policy().guard(headers, loopback, ctx.is_some_and(|c| c.tls)) {
        let reason = match why {
            GuardRefusal::RepeatedHost => Reason::RepeatedHost,
            GuardRefusal::LoopbackHost => Reason::LoopbackHost,
            GuardRefusal::CrossOriginUpgrade => Reason::CrossOriginUpgrade,
            _ => Reason::MalformedHost,
        };
        state.refusals().record(peer.map(|p| p.ip()), reason, path);
        return Verdict::Refuse(why.response());
    }
    if loopback {
        return Verdict::Pass;
    }
    if state.is_open_path(path) {
        // `whoami` answers from ambient credentials (any known peer's identity,
        // a session): a rebound page must not read them. The other open paths
        // say nothing of the caller.
        let whoami = state.signin_prefix().is_some_and(|p| path.strip_prefix(p) == Some("/whoami"));
        if whoami && (caller.is_some() || session::cookie_values(headers).next().is_some()) {
            if let Err(why) = ambient(state, request, ctx) {
                refused(state, peer, reason_of(why), path);
                return Verdict::Refuse(why.response());
            }
        }
        return Verdict::Pass;
    }
    if state.credentials().is_some_and(|c| token_matches(headers, c.token())) {
        return Verdict::Pass;
    }
    let session = valid_session(state, headers);
    if session || allowed_now(state.peer_lookup(), caller) {
        // Ambient credentials: a browser attaches them whichever page asked.
        if let Err(why) = ambient(state, request, ctx) {
            refused(state, peer, reason_of(why), path);
            return Verdict::Refuse(why.response());
        }
        let tls = ctx.is_some_and(|c| c.tls);
        // SameSite is per site, not per origin: another port of this host (or
        // another name under the same site) could make a browser post here
        // with the cookie. A request that can change something must come from
        // this very origin when the cookie is all it has (a browser sends
        // Origin on every such request; the peer identity, unlike a cookie,
        // is also what curl on the peer has, hence the difference).
        let safe = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        if !session || safe || request_is_same_origin(headers, tls) || allowed_now(state.peer_lookup(), caller) {
            return Verdict::Pass;
        }
        refused(state, peer, Reason::SessionCrossOrigin, path);
        return Verdict::Refuse(
            (StatusCode::FORBIDDEN, "forbidden: a request from another origin needs the token, not a session\n")
                .into_response(),
        );
    }
    if let Some(to) = signin_redirect(state, request) {
        Stats::bump(&state.stats().signin_redirects);
        return Verdict::Refuse(to);
    }
    refused(state, peer, Reason::Unauthorized, path);
    Verdict::Refuse(unauthorized())
}

/// [`BrowserPolicy::check_ambient`](super::browser::BrowserPolicy::check_ambient)
/// on a request that came in on `ctx`.
fn ambient<B>(
    state: &AppState,
    request: &axum::http::Request<B>,
    ctx: Option<ListenerCtx>,
) -> Result<(), AmbientRefusal> {
    let (local, tls) = (ctx.map(|c| c.local), ctx.is_some_and(|c| c.tls));
    let names = state.host_names();
    let (policy, headers) = (state.browser_policy(), request.headers());
    // The request's authority (HTTP/2's `:authority`, an absolute-form
    // target) names the host as much as `Host` does, and hyper does not copy
    // it into `Host`: where it is not the `Host` line, it is checked too.
    if let Some(authority) = request.uri().authority() {
        let host = headers.get(header::HOST);
        if host.is_none_or(|h| h.as_bytes() != authority.as_str().as_bytes()) {
            let mut with = headers.clone();
            match axum::http::HeaderValue::from_str(authority.as_str()) {
                Ok(v) => drop(with.insert(header::HOST, v)),
                Err(_) => return Err(AmbientRefusal::ForeignHost),
            }
            policy.check_ambient(request.method(), &with, local, tls, &names)?;
            if host.is_none() {
                return Ok(());
            }
        }
    }
    policy.check_ambient(request.method(), headers, local, tls, &names)
}

/// The refusal log's reason for an ambient refusal.
fn reason_of(why: AmbientRefusal) -> Reason {
    match why {
        AmbientRefusal::ForeignHost => Reason::ForeignHost,
        AmbientRefusal::CrossOriginUpgrade => Reason::CrossOriginUpgrade,
        _ => Reason::CrossSite,
    }
}

/// Counts a refusal and hands it to the refusal log (which writes a few
/// lines, not one per request).
fn refused(state: &AppState, peer: Option<SocketAddr>, reason: Reason, path: &str) {
    // `unauthorized` keeps its meaning (no credentials that count); the
    // ambient refusals are counted by status (403, 421) with every response.
    if matches!(reason, Reason::Unauthorized | Reason::SessionCrossOrigin) {
        Stats::bump(&state.stats().unauthorized);
    }
    state.refusals().record(peer.map(|p| p.ip()), reason, path);
}

/// True when the request carries a valid token or session, or its caller is
/// an allowed peer: what moves a connection out of its address's
/// unauthenticated share. No logging, no counting.
pub(crate) fn vouched_for(state: &AppState, headers: &HeaderMap, caller: Option<&PeerIdentity>) -> bool {
    allowed_now(state.peer_lookup(), caller)
        || state.credentials().is_some_and(|c| token_matches(headers, c.token()))
        || valid_session(state, headers)
}

/// True when one of the request's session cookies (a few at most) is valid.
fn valid_session(state: &AppState, headers: &HeaderMap) -> bool {
    state.credentials().is_some_and(|k| session::cookie_values(headers).any(|c| k.sessions().check(c).is_ok()))
}

/// A browser's page load that would get 401 is sent to sign in instead: a
/// `GET` (or `HEAD`) that accepts `text/html`, where sign-in is on (there is
/// a token to sign in with). The page comes back to the same path after.
fn signin_redirect<B>(state: &AppState, request: &axum::http::Request<B>) -> Option<Response> {
    let prefix = state.signin_prefix()?;
    if !state.has_token() {
        return None;
    }
    let method = request.method();
    if method != axum::http::Method::GET && method != axum::http::Method::HEAD {
        return None;
    }
    let html = request
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|m| m.trim().starts_with("text/html")));
    if !html {
        return None;
    }
    let next = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let next = percent_encoding::utf8_percent_encode(next, percent_encoding::NON_ALPHANUMERIC);
    let to = format!("{prefix}/login?next={next}");
    Some(
        (StatusCode::SEE_OTHER, [(header::LOCATION, to.as_str()), (header::CACHE_CONTROL, "no-store")]).into_response(),
    )
}

/// [`require_token`] as a tower layer: the same checks, in a service whose
/// future is the inner service's own (no per-request allocation).
/// `router.layer(RequireTokenLayer::new(state))`.
#[derive(Debug, Clone)]
pub struct RequireTokenLayer {
    state: AppState,
}

impl RequireTokenLayer {
    /// The check against this state's token, open paths and browser policy.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl<S> tower::Layer<S> for RequireTokenLayer {
    type Service = RequireToken<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireToken { inner, state: self.state.clone() }
    }
}

/// The service [`RequireTokenLayer`] makes.
#[derive(Debug, Clone)]
pub struct RequireToken<S> {
    inner: S,
    state: AppState,
}

impl<S> tower::Service<Request> for RequireToken<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = RequireTokenFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match refusal(&self.state, &request) {
            Some(refused) => RequireTokenFuture { inner: None, refused: Some(refused) },
            None => RequireTokenFuture { inner: Some(self.inner.call(request)), refused: None },
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`RequireToken`]: the inner service's, or a refusal.
    pub struct RequireTokenFuture<F> {
        #[pin]
        inner: Option<F>,
        refused: Option<Response>,
    }
}

impl<F, E> Future for RequireTokenFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.as_pin_mut() {
            Some(future) => future.poll(cx),
            None => Poll::Ready(Ok(this.refused.take().expect("RequireTokenFuture polled after completion"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn bearer_check() {
        let t = Token::new("abc123", "test").unwrap();
        assert!(bearer_matches(&headers("Bearer abc123"), &t));
        assert!(bearer_matches(&headers("bearer abc123"), &t));
        assert!(!bearer_matches(&headers("Bearer abc12"), &t));
        assert!(!bearer_matches(&headers("Bearer abc1234"), &t));
        assert!(!bearer_matches(&headers("Bearer abd123"), &t));
        assert!(!bearer_matches(&headers("Basic abc123"), &t));
        assert!(!bearer_matches(&headers("Bearer"), &t));
        assert!(!bearer_matches(&HeaderMap::new(), &t));
    }

    #[test]
    fn proxy_authorization_also_carries_the_token() {
        let t = Token::new("abc123", "test").unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::PROXY_AUTHORIZATION, "Bearer abc123".parse().unwrap());
        h.insert(header::AUTHORIZATION, "Basic dXNlcjpwdw==".parse().unwrap());
        assert!(token_matches(&h, &t));
        assert!(!bearer_matches(&h, &t));
        h.insert(header::PROXY_AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert!(!token_matches(&h, &t));
    }

    /// One request through [`check`] on the mesh listener 10.77.0.1:18789:
    /// the status it is refused with, or `None` when it passes.
    fn verdict(
        state: &AppState,
        method: &str,
        path: &str,
        h: &[(&str, &str)],
        peer: Option<&PeerIdentity>,
    ) -> Option<u16> {
        let mut request = axum::http::Request::builder().method(method).uri(path);
        for (k, v) in h {
            request = request.header(*k, *v);
        }
        let request = request.body(()).unwrap();
        let ctx = ListenerCtx { local: "10.77.0.1:18789".parse().unwrap(), loopback: false, tls: false };
        match check(state, &request, Some(ctx), Some("10.77.0.2:40000".parse().unwrap()), peer) {
            Verdict::Pass => None,
            Verdict::Refuse(r) => Some(r.status().as_u16()),
        }
    }

    /// Review of issue #25 part 1: over HTTP/2 the host is `:authority`, and
    /// hyper adds no `Host`. The accept loop copies it in, but the router
    /// served by another server (`routes::app` in a program's own axum
    /// server) saw no `Host` and let a rebound name through as "not a
    /// browser": the ambient check now reads the authority when `Host` is
    /// absent.
    #[test]
    fn over_http2_the_authority_is_the_host_the_ambient_check_reads() {
        let state = AppState::new(Some(Token::new("abc123abc123abc123", "test").unwrap()));
        let laptop = PeerIdentity::allowed_wireguard("wg0", "key", "laptop");
        let ctx = ListenerCtx { local: "10.77.0.1:18789".parse().unwrap(), loopback: false, tls: true };
        let h2 = |uri: &str, origin: Option<&str>| {
            let mut r = axum::http::Request::builder().method("POST").uri(uri).version(axum::http::Version::HTTP_2);
            if let Some(o) = origin {
                r = r.header("origin", o).header("sec-fetch-site", "same-origin");
            }
            let r = r.body(()).unwrap();
            match check(&state, &r, Some(ctx), Some("10.77.0.2:40000".parse().unwrap()), Some(&laptop)) {
                Verdict::Pass => None,
                Verdict::Refuse(r) => Some(r.status().as_u16()),
            }
        };
        assert_eq!(h2("https://attacker.example:18789/api", None), Some(421));
        assert_eq!(h2("https://10.77.0.1:18789/api", None), None);
        // The service's own page posting over HTTP/2: its Origin is the authority's.
        assert_eq!(h2("https://10.77.0.1:18789/api", Some("https://10.77.0.1:18789")), None);
        assert_eq!(h2("https://10.77.0.1:18789/api", Some("https://attacker.example:18789")), Some(403));
    }

    #[test]
    fn ambient_credentials_get_the_browser_checks_and_the_token_does_not() {
        let state = AppState::new(Some(Token::new("abc123abc123abc123", "test").unwrap())).with_signin("/_meshgate");
        let cookie = format!("meshgate_session={}", state.credentials().unwrap().sessions().issue());
        let laptop = PeerIdentity::allowed_wireguard("wg0", "key", "laptop");
        let host = ("host", "10.77.0.1:18789");
        let rebound = ("host", "attacker.example:18789");
        let cross = [("sec-fetch-site", "cross-site"), ("sec-fetch-mode", "no-cors"), ("sec-fetch-dest", "empty")];
        let form = [
            host,
            ("origin", "http://attacker.example"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "navigate"),
        ];
        let bearer = ("authorization", "Bearer abc123abc123abc123");
        fn with<'a>(a: &[(&'a str, &'a str)], b: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
            a.iter().chain(b).copied().collect()
        }
        let jar = ("cookie", cookie.as_str());
        // The allowed peer: curl passes, its own page passes, a rebound Host
        // and cross-site requests are refused, the token passes anything.
        assert_eq!(verdict(&state, "POST", "/api", &[host], Some(&laptop)), None);
        assert_eq!(verdict(&state, "GET", "/", &[rebound], Some(&laptop)), Some(421));
        assert_eq!(verdict(&state, "POST", "/api", &form, Some(&laptop)), Some(403));
        assert_eq!(verdict(&state, "POST", "/api", &with(&[host], &cross), Some(&laptop)), Some(403));
        assert_eq!(verdict(&state, "GET", "/_meshgate/whoami", &[rebound], Some(&laptop)), Some(421));
        assert_eq!(verdict(&state, "GET", "/", &with(&[rebound, bearer], &cross), Some(&laptop)), None);
        assert_eq!(verdict(&state, "POST", "/api", &with(&form, &[bearer]), None), None);
        // A session: the same, and an unsafe method needs its own Origin.
        assert_eq!(verdict(&state, "GET", "/", &[host, jar], None), None);
        assert_eq!(verdict(&state, "GET", "/", &[rebound, jar], None), Some(421));
        assert_eq!(verdict(&state, "POST", "/api", &with(&form, &[jar]), None), Some(403));
        assert_eq!(verdict(&state, "POST", "/api", &[host, jar], None), Some(403));
        assert_eq!(verdict(&state, "POST", "/api", &[host, jar, ("origin", "http://10.77.0.1:18789")], None), None);
        // Without credentials: 401; whoami and healthz stay open.
        assert_eq!(verdict(&state, "GET", "/", &[rebound], None), Some(401));
        assert_eq!(verdict(&state, "GET", "/_meshgate/whoami", &[rebound], None), None);
        assert_eq!(verdict(&state, "GET", "/healthz", &[rebound], Some(&laptop)), None);
    }
}
