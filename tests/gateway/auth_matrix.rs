//! Router tests through `tower::ServiceExt::oneshot`: loopback vs non-loopback
//! listener × no / wrong / right token × every route.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Extension;
use meshgate::gateway::{app, AppState, ListenerCtx, Token};
use tower::ServiceExt;

const TOKEN: &str = "correct-horse-battery-staple";

#[derive(Debug, Clone, Copy)]
enum Auth {
    None,
    Wrong,
    Right,
}

async fn call(loopback: bool, auth: Auth, path: &str) -> (StatusCode, Option<String>, String) {
    let state = AppState::new(Some(Token::new(TOKEN, "test").unwrap()));
    let local = if loopback { "127.0.0.1:18789" } else { "10.8.0.1:18789" };
    let ctx = ListenerCtx { local: local.parse().unwrap(), loopback, tls: false };
    let router = app(state).layer(Extension(ctx));
    let mut req = Request::get(path);
    match auth {
        Auth::None => {}
        Auth::Wrong => req = req.header(header::AUTHORIZATION, "Bearer not-the-token"),
        Auth::Right => req = req.header(header::AUTHORIZATION, format!("Bearer {TOKEN}")),
    }
    let resp = router.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let www = resp.headers().get(header::WWW_AUTHENTICATE).map(|v| v.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, www, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn healthz_is_open_everywhere() {
    for loopback in [true, false] {
        for auth in [Auth::None, Auth::Wrong, Auth::Right] {
            let (s, _, body) = call(loopback, auth, "/healthz").await;
            assert_eq!(s, StatusCode::OK, "loopback={loopback} auth={auth:?}");
            assert_eq!(body, "ok\n");
        }
    }
}

#[tokio::test]
async fn loopback_listener_needs_no_token() {
    for auth in [Auth::None, Auth::Wrong, Auth::Right] {
        let (s, _, body) = call(true, auth, "/status").await;
        assert_eq!(s, StatusCode::OK, "auth={auth:?}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v["listeners"].is_array() && v["version"].is_string(), "{v}");
        // /ws without an upgrade is refused for not being a WebSocket, not for auth.
        let (s, _, _) = call(true, auth, "/ws").await;
        assert_ne!(s, StatusCode::UNAUTHORIZED, "auth={auth:?}");
        assert!(s.is_client_error(), "{s}");
    }
}

#[tokio::test]
async fn non_loopback_listener_requires_the_token() {
    for path in ["/status", "/ws", "/nope"] {
        let mut bodies = Vec::new();
        for auth in [Auth::None, Auth::Wrong] {
            let (s, www, body) = call(false, auth, path).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{path} auth={auth:?}");
            assert_eq!(www.as_deref(), Some("Bearer realm=\"meshgate\""));
            assert!(!body.contains(TOKEN));
            bodies.push(body);
        }
        // A missing and a wrong token get the very same answer.
        assert_eq!(bodies[0], bodies[1], "{path}");
        let (s, _, body) = call(false, Auth::Right, path).await;
        match path {
            "/status" => {
                assert_eq!(s, StatusCode::OK);
                assert!(!body.contains(TOKEN), "the token must never appear in /status");
            }
            "/ws" => assert!(s.is_client_error() && s != StatusCode::UNAUTHORIZED, "{s}"),
            _ => assert_eq!(s, StatusCode::NOT_FOUND),
        }
    }
}

#[tokio::test]
async fn without_listener_context_it_fails_closed() {
    let state = AppState::new(Some(Token::new(TOKEN, "test").unwrap()));
    let resp = app(state).oneshot(Request::get("/status").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}
