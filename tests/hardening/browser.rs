//! Browser attacks on the loopback door: DNS rebinding (a foreign `Host`) gets
//! 421 on loopback listeners; a cross-site WebSocket (a foreign `Origin`) gets
//! 403 on every listener; mesh listeners accept any `Host`.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Extension;
use meshgate::gateway::{app, AppState, BrowserPolicy, ListenerCtx, Token};
use tower::ServiceExt;

const TOKEN: &str = "browser-test-token";

async fn status(loopback: bool, policy: BrowserPolicy, headers: &[(&str, &str)], path: &str) -> StatusCode {
    let state = AppState::new(Some(Token::new(TOKEN, "test").unwrap())).with_browser_policy(policy);
    let local = if loopback { "127.0.0.1:18789" } else { "10.8.0.1:18789" };
    let router = app(state).layer(Extension(ListenerCtx { local: local.parse().unwrap(), loopback, tls: false }));
    let mut req = Request::get(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    router.oneshot(req.body(Body::empty()).unwrap()).await.unwrap().status()
}

#[tokio::test]
async fn a_rebound_host_is_misdirected_on_the_loopback_door() {
    let p = BrowserPolicy::default;
    assert_eq!(status(true, p(), &[("host", "evil.example:18789")], "/status").await, StatusCode::MISDIRECTED_REQUEST);
    // Even the open health check: a rebinding page must learn nothing.
    assert_eq!(status(true, p(), &[("host", "evil.example")], "/healthz").await, StatusCode::MISDIRECTED_REQUEST);
    for ok in ["localhost:18789", "127.0.0.1:18789", "[::1]:18789", "localhost"] {
        assert_eq!(status(true, p(), &[("host", ok)], "/status").await, StatusCode::OK, "{ok}");
    }
    let allowed = BrowserPolicy { allowed_hosts: vec!["dev.local".into()], ..Default::default() };
    assert_eq!(status(true, allowed, &[("host", "dev.local:18789")], "/status").await, StatusCode::OK);
}

#[tokio::test]
async fn mesh_listeners_accept_any_host_and_the_token_guards_them() {
    let host = [("host", "gateway.tailnet-1234.ts.net")];
    assert_eq!(status(false, BrowserPolicy::default(), &host, "/healthz").await, StatusCode::OK);
    assert_eq!(status(false, BrowserPolicy::default(), &host, "/status").await, StatusCode::UNAUTHORIZED);
    let bearer = format!("Bearer {TOKEN}");
    let with_token = [host[0], (header::AUTHORIZATION.as_str(), bearer.as_str())];
    assert_eq!(status(false, BrowserPolicy::default(), &with_token, "/status").await, StatusCode::OK);
}

#[tokio::test]
async fn a_cross_site_websocket_is_forbidden() {
    let ws = |origin: &'static str| {
        [("host", "127.0.0.1:18789"), ("upgrade", "websocket"), ("connection", "upgrade"), ("origin", origin)]
    };
    assert_eq!(status(true, BrowserPolicy::default(), &ws("https://evil.example"), "/ws").await, StatusCode::FORBIDDEN);
    // Same origin passes the guard (and then fails only for not being a real upgrade here).
    let same = status(true, BrowserPolicy::default(), &ws("http://127.0.0.1:18789"), "/ws").await;
    assert!(same != StatusCode::FORBIDDEN && same != StatusCode::MISDIRECTED_REQUEST, "{same}");
    let allowed = BrowserPolicy { allowed_origins: vec!["https://dash.example".into()], ..Default::default() };
    let s = status(true, allowed, &ws("https://dash.example"), "/ws").await;
    assert_ne!(s, StatusCode::FORBIDDEN);
    // On a mesh listener too, even with the token.
    let bearer = format!("Bearer {TOKEN}");
    let mesh = [
        ("host", "10.8.0.1:18789"),
        ("upgrade", "websocket"),
        ("connection", "upgrade"),
        ("origin", "https://evil.example"),
        ("authorization", bearer.as_str()),
    ];
    assert_eq!(status(false, BrowserPolicy::default(), &mesh, "/ws").await, StatusCode::FORBIDDEN);
}

/// The real process on loopback: a rebinding request and a cross-site WebSocket.
#[tokio::test]
async fn the_real_loopback_door_refuses_both() {
    use std::io::{Read, Write};
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args(["serve", "--no-follow", "--port", &port.to_string()])
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed on drop, so a failed assertion below leaves nothing running.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let _child = Kill(child);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert!(line.starts_with("listening on"), "{line}");
    let raw = |req: String| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        // An upgraded connection stays open: read what arrives before the timeout.
        let mut r = Vec::new();
        let _ = s.read_to_end(&mut r);
        String::from_utf8_lossy(&r).into_owned()
    };
    let r = raw("GET /status HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n".into());
    assert!(r.starts_with("HTTP/1.1 421"), "{r}");
    let r = raw(format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: https://evil.example\r\n\r\n"
    ));
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    let r = raw(format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://127.0.0.1:{port}\r\n\r\n"
    ));
    assert!(r.starts_with("HTTP/1.1 101"), "same-origin upgrade: {r:?}");
}
