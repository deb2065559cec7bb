//! The bearer-token check. Loopback listeners are open (local tools always have a
//! door); on every other listener everything but `/healthz` needs
//! `Authorization: Bearer TOKEN`, compared in constant time. A missing and a
//! wrong token get the same 401.

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
    let Some(value) = headers.get(header::AUTHORIZATION) else {
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
    if loopback || request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    let ok = state.token().is_some_and(|t| bearer_matches(request.headers(), t));
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
}
