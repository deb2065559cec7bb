//! The bearer-token check. Loopback listeners are open (local tools always have a
//! door); on every other listener everything but the open paths (`/healthz`, or
//! `/_meshgate/healthz` in front of an upstream) needs `Authorization: Bearer
//! TOKEN` or `Proxy-Authorization: Bearer TOKEN`, compared in constant time. A
//! missing and a wrong token get the same 401.
//!
//! `Proxy-Authorization` is there for upstreams with an `Authorization` scheme of
//! their own: the client sends meshgate's token in the one and the service's
//! credentials in the other (see `docs/upstream.md`).

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::routes::{AppState, ListenerCtx};
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
    let expected = token.expose();
    let mut same = subtle::Choice::from(u8::from(given.len() == expected.len()));
    for (i, e) in expected.iter().enumerate() {
        same &= e.ct_eq(given.get(i).unwrap_or(&0));
    }
    same.into()
}

/// The 401 every refused request gets.
pub fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"meshgate\"")],
        "unauthorized: send Authorization: Bearer <token>\n",
    )
        .into_response()
}

/// The middleware: lets loopback listeners and `/healthz` through, checks the rest.
pub async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let ctx = request.extensions().get::<ListenerCtx>().copied();
    // No listener context means we cannot tell: treat as non-loopback (fail closed).
    let loopback = ctx.is_some_and(|c| c.loopback);
    // Browser attacks first: a rebound Host or a cross-site WebSocket is refused
    // even where no token is needed.
    if let Some(refused) = state.browser_policy().check(request.headers(), loopback) {
        return refused;
    }
    if loopback || state.is_open_path(request.uri().path()) {
        return next.run(request).await;
    }
    let ok = state.token().is_some_and(|t| token_matches(request.headers(), t));
    if ok {
        return next.run(request).await;
    }
    let peer = request.extensions().get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.to_string());
    tracing::warn!(
        peer = peer.as_deref().unwrap_or("unknown"),
        listener = ctx.map(|c| c.local.to_string()).as_deref().unwrap_or("unknown"),
        path = request.uri().path(),
        "refused a request without a valid bearer token"
    );
    unauthorized()
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
}
