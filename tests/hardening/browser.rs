//! Browser attacks on the loopback door: DNS rebinding (a foreign `Host`) gets
//! 421 on loopback listeners; a cross-site WebSocket (a foreign `Origin`) gets
//! 403 on every listener; mesh listeners accept any `Host` with the token,
//! and ask a session (ambient) for a `Host` naming them and a same-site request.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Extension;
use meshgate::gateway::{app, AppState, BrowserPolicy, ListenerCtx, Token};
use tower::ServiceExt;

use crate::gateway::{meshgate, Server};

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
    // Killed on drop, so a failed assertion below leaves nothing running.
    let server =
        Server::start(meshgate(&["serve", "--no-follow", "--port", &port.to_string()]).env("RUST_LOG", "error"));
    let line = server.wait_lines(1).remove(0);
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

/// The names the Host check of ambient credentials accepts follow what the
/// mesh daemon reports: each resolution applied to the listener set puts the
/// daemons' DNS names (and their first label) in force, and a later one
/// without them takes them away. A session then reaches `/status` by that
/// name, and not by a name the daemon no longer reports.
#[tokio::test]
async fn the_tailnet_name_the_daemon_reports_is_a_name_of_the_listeners() {
    use meshgate::core::fact::{DaemonFact, DaemonState};
    use meshgate::core::Resolution;
    use meshgate::gateway::ListenerSet;

    let state = AppState::new(Some(Token::new(TOKEN, "test").unwrap()));
    let cookie = format!("meshgate_session={}", state.credentials().unwrap().sessions().issue());
    let mut set = ListenerSet::new(app(state.clone()), state.clone());
    let mut fact = DaemonFact::new("tailscale", "tailscaled's local API", DaemonState::Running).on("tailscale0");
    fact.dns_name = Some("laptop-gw.tail1234.ts.net.".into());
    let res = |daemons: Vec<DaemonFact>| Resolution {
        selectors: vec!["tailnet".into()],
        listeners: Vec::new(),
        fallback: false,
        fallback_reason: None,
        notes: Vec::new(),
        providers: Vec::new(),
        daemons,
    };
    let by = |state: AppState, host: &'static str| {
        let cookie = cookie.clone();
        async move {
            let ctx = ListenerCtx { local: "100.101.1.2:18789".parse().unwrap(), loopback: false, tls: false };
            let router = app(state).layer(Extension(ctx));
            let req = Request::get("/status").header("host", host).header(header::COOKIE, cookie);
            router.oneshot(req.body(Body::empty()).unwrap()).await.unwrap().status()
        }
    };
    assert_eq!(by(state.clone(), "laptop-gw.tail1234.ts.net:18789").await, StatusCode::MISDIRECTED_REQUEST);
    set.apply(&res(vec![fact.clone()]));
    for host in ["laptop-gw.tail1234.ts.net:18789", "LAPTOP-GW:18789", "100.101.1.2:18789"] {
        assert_eq!(by(state.clone(), host).await, StatusCode::OK, "{host}");
    }
    assert_eq!(by(state.clone(), "tail1234.ts.net:18789").await, StatusCode::MISDIRECTED_REQUEST);
    set.apply(&res(Vec::new()));
    assert_eq!(by(state.clone(), "laptop-gw.tail1234.ts.net:18789").await, StatusCode::MISDIRECTED_REQUEST);
}

/// Through the router, on a mesh listener: a session is refused on a rebound
/// `Host` (421) and from another site (403), passes from its own page and as a
/// link from another site; the token passes all of them.
#[tokio::test]
async fn a_session_on_a_mesh_listener_gets_the_ambient_checks() {
    let state = AppState::new(Some(Token::new(TOKEN, "test").unwrap()));
    let cookie = format!("meshgate_session={}", state.credentials().unwrap().sessions().issue());
    let bearer = format!("Bearer {TOKEN}");
    let run = |extra: Vec<(&'static str, String)>| {
        let state = state.clone();
        async move {
            let ctx = ListenerCtx { local: "10.8.0.1:18789".parse().unwrap(), loopback: false, tls: false };
            let router = app(state).layer(Extension(ctx));
            let mut req = Request::get("/status");
            for (k, v) in extra {
                req = req.header(k, v);
            }
            router.oneshot(req.body(Body::empty()).unwrap()).await.unwrap().status()
        }
    };
    let c = || ("cookie", cookie.clone());
    let s = |k: &'static str, v: &str| (k, v.to_owned());
    assert_eq!(run(vec![s("host", "10.8.0.1:18789"), c()]).await, StatusCode::OK);
    assert_eq!(run(vec![s("host", "evil.example:18789"), c()]).await, StatusCode::MISDIRECTED_REQUEST);
    let cross = || vec![s("host", "10.8.0.1:18789"), s("sec-fetch-site", "cross-site"), s("sec-fetch-mode", "cors")];
    assert_eq!(run([cross(), vec![c(), s("origin", "http://evil.example")]].concat()).await, StatusCode::FORBIDDEN);
    let link = vec![
        s("host", "10.8.0.1:18789"),
        s("sec-fetch-site", "cross-site"),
        s("sec-fetch-mode", "navigate"),
        s("sec-fetch-dest", "document"),
    ];
    assert_eq!(run([link, vec![c()]].concat()).await, StatusCode::OK);
    let token = vec![s("host", "evil.example:18789"), s("authorization", &bearer), s("origin", "http://evil.example")];
    assert_eq!(run([token, cross()[1..].to_vec()].concat()).await, StatusCode::OK);
}
