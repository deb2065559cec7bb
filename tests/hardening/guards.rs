//! The guards of issue 20 with raw sockets, as an attacker would send them:
//! exact bytes on a `std::net::TcpStream` to a gateway started in-process in
//! front of an echo upstream that records every request it sees.
//!
//! - `Host` is parsed as an authority on the loopback door (400 for a
//!   malformed one, 421 for a foreign one), and a repeated `Host` is 400 on
//!   every listener;
//! - every request carrying `Upgrade`, whatever its form, passes the `Origin`
//!   check, and the check compares the scheme too;
//! - client-IP look-alikes (`Forwarded`, `X-Real-IP`, ...) and header names
//!   with underscores never reach the upstream unless configured to;
//! - a malformed chunked body is the client's fault: 400, not 502.
//!
//! Each case also checks what the upstream saw, so a refusal that still
//! forwarded the request would fail.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::{Extension, Router};
use meshgate::gateway::proxy::HeaderRules;
use meshgate::gateway::{app, upstream_app, AppState, Gateway, ListenerCtx, Proxy, Running, Token, Upstream};
use meshgate::gateway::{UpstreamLimits, UPSTREAM_HEALTHZ};
use tower::ServiceExt;

const TOKEN: &str = "guards-test-token-0123456789";

/// One request's header lines as the upstream got them, in order.
type Lines = Vec<(String, String)>;

/// What the upstream saw: one entry per request.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Lines>>>);

impl Seen {
    fn requests(&self) -> Vec<Lines> {
        self.0.lock().unwrap().clone()
    }
}

/// An upstream that records each request's headers, reads its body to the
/// end, and answers 200 with the header lines it got.
async fn echo_upstream(seen: Seen) -> SocketAddr {
    let router = Router::new()
        .fallback(|State(seen): State<Seen>, request: Request| async move {
            let (parts, body) = request.into_parts();
            let headers: Lines = parts
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            seen.0.lock().unwrap().push(headers.clone());
            let body = axum::body::to_bytes(body, 1 << 20).await;
            let mut text = format!("body ok: {}\n", body.is_ok());
            for (k, v) in headers {
                text.push_str(&format!("{k}: {v}\n"));
            }
            text
        })
        .with_state(seen);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, router).await });
    addr
}

/// meshgate in front of `upstream` on 127.0.0.1 (port 0), as `meshgate serve
/// --upstream` runs it.
async fn gateway(upstream: SocketAddr, limits: UpstreamLimits) -> (Running<'static>, SocketAddr) {
    gateway_via(upstream, limits, false).await
}

/// The same, through the public router (`upstream_app` served with
/// `start_with`) when `router`: the embedding path, which must answer alike.
async fn gateway_via(upstream: SocketAddr, limits: UpstreamLimits, router: bool) -> (Running<'static>, SocketAddr) {
    let token = Token::new(TOKEN, "test").unwrap();
    let proxy = Proxy::new(Upstream::parse(&format!("http://{upstream}")).unwrap(), limits, Some(token.clone()));
    let builder = Gateway::builder().bind(["127.0.0.1"]).port(0).follow(false).token(token);
    let running = if router {
        builder.open_path(UPSTREAM_HEALTHZ).start_with(|s| upstream_app(s.clone(), proxy)).await
    } else {
        builder.start_upstream(proxy).await
    }
    .expect("gateway starts");
    let addr = running.addresses()[0];
    (running, addr)
}

/// Writes `request` as it is on a fresh connection and reads until the
/// gateway closes it (each request says `Connection: close`) or 10 s pass:
/// (status, whole response text).
async fn exchange(addr: SocketAddr, request: &str) -> (u16, String) {
    let bytes = request.as_bytes().to_vec();
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&bytes).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                // Reset after the response (the gateway closing with unread bytes): keep what came.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("no complete answer within 10 s ({e}); got {:?}", String::from_utf8_lossy(&buf)),
            }
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, text)
    })
    .await
    .unwrap()
}

/// A GET with these extra header lines (each ending in `\r\n`).
fn get(extra: &str) -> String {
    format!("GET /x HTTP/1.1\r\n{extra}Connection: close\r\n\r\n")
}

#[tokio::test]
async fn host_is_parsed_as_an_authority_on_the_loopback_door() {
    let seen = Seen::default();
    let (running, gw) = gateway(echo_upstream(seen.clone()).await, UpstreamLimits::default()).await;
    let port = gw.port();
    // The control: a loopback Host is forwarded (so "never forwarded" below means something).
    let (s, text) = exchange(gw, &get(&format!("Host: 127.0.0.1:{port}\r\n"))).await;
    assert_eq!(s, 200, "{text}");
    assert_eq!(seen.requests().len(), 1);

    for bad in [
        format!("[::1]evil.com:{port}"),
        "[::1".to_owned(),
        "[::1]:".to_owned(),
        "[::1]:99999".to_owned(),
        "localhost..".to_owned(),
        "localhost:abc".to_owned(),
        format!("localhost:{port}x"),
        "localhost:65536".to_owned(),
        "::1".to_owned(),
        "local host".to_owned(),
        "".to_owned(),
    ] {
        let (s, text) = exchange(gw, &get(&format!("Host: {bad}\r\n"))).await;
        assert_eq!(s, 400, "Host: {bad:?}: {text}");
    }
    // A well-formed foreign name is still a rebinding attempt: 421.
    let (s, text) = exchange(gw, &get(&format!("Host: evil.example:{port}\r\n"))).await;
    assert_eq!(s, 421, "{text}");
    // Two Host lines, the loopback one first: 400, whichever comes first.
    for pair in [
        format!("Host: 127.0.0.1:{port}\r\nHost: evil.example\r\n"),
        format!("Host: localhost\r\nHost: localhost:{port}\r\n"),
    ] {
        let (s, text) = exchange(gw, &get(&pair)).await;
        assert_eq!(s, 400, "{pair:?}: {text}");
    }
    // No Host at all (an HTTP/1.0 tool): not a browser, forwarded as today.
    let (s, text) = exchange(gw, "GET /x HTTP/1.0\r\n\r\n").await;
    assert_eq!(s, 200, "{text}");
    assert_eq!(seen.requests().len(), 2, "only the two loopback requests reached the upstream");
    running.shutdown().await;
}

/// A mesh listener (no loopback) accepts any `Host`, but not two of them, not
/// even with the token.
#[tokio::test]
async fn two_host_lines_are_400_on_a_mesh_listener_too() {
    let state = AppState::new(Some(Token::new(TOKEN, "test").unwrap()));
    let ctx = ListenerCtx { local: "10.8.0.1:18789".parse().unwrap(), loopback: false, tls: false };
    let router = app(state).layer(Extension(ctx));
    let request = |hosts: &[&str]| {
        let mut r = axum::http::Request::get("/status").header("authorization", format!("Bearer {TOKEN}"));
        for h in hosts {
            r = r.header("host", *h);
        }
        r.body(Body::empty()).unwrap()
    };
    let status = router.clone().oneshot(request(&["gateway.tailnet-1.ts.net"])).await.unwrap().status();
    assert_eq!(status, StatusCode::OK);
    let status = router.oneshot(request(&["gateway.tailnet-1.ts.net", "evil.example"])).await.unwrap().status();
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn every_upgrade_form_gets_the_origin_check() {
    let seen = Seen::default();
    let (running, gw) = gateway(echo_upstream(seen.clone()).await, UpstreamLimits::default()).await;
    let host = format!("Host: 127.0.0.1:{}\r\n", gw.port());
    let evil = "Origin: https://evil.example\r\n";
    for upgrade in [
        "Upgrade: websocket\r\nConnection: Upgrade\r\n",
        "Upgrade: WebSocket\r\nConnection: upgrade\r\n",
        "Upgrade: h2c, websocket\r\nConnection: Upgrade\r\n",
        "Upgrade: h2c\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
        "Upgrade: foo\r\nConnection: Upgrade\r\n",
        // Without `Connection: upgrade` too: it carries Upgrade, it is checked.
        "Upgrade: websocket\r\n",
    ] {
        let ws = "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
        let (s, text) = exchange(gw, &get(&format!("{host}{upgrade}{ws}{evil}"))).await;
        assert_eq!(s, 403, "{upgrade:?}: {text}");
    }
    assert!(seen.requests().is_empty(), "a cross-origin upgrade reached the upstream: {:?}", seen.requests());
    // A plain request with a foreign Origin is not an upgrade: forwarded.
    let (s, text) = exchange(gw, &get(&format!("{host}{evil}"))).await;
    assert_eq!(s, 200, "{text}");
    assert_eq!(seen.requests().len(), 1);
    running.shutdown().await;
}

#[tokio::test]
async fn an_https_origin_is_not_the_origin_of_a_plain_http_listener() {
    let seen = Seen::default();
    let (running, gw) = gateway(echo_upstream(seen.clone()).await, UpstreamLimits::default()).await;
    let port = gw.port();
    let ws = |origin: &str| {
        get(&format!("Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nOrigin: {origin}\r\n"))
    };
    let (s, text) = exchange(gw, &ws(&format!("https://127.0.0.1:{port}"))).await;
    assert_eq!(s, 403, "{text}");
    assert!(seen.requests().is_empty(), "{:?}", seen.requests());
    // The same origin with the listener's own scheme passes the guard and is forwarded.
    let (s, text) = exchange(gw, &ws(&format!("http://127.0.0.1:{port}"))).await;
    assert_ne!(s, 403, "{text}");
    assert_eq!(seen.requests().len(), 1);
    running.shutdown().await;
}

/// The look-alikes a client may send, one of each.
const LOOK_ALIKES: &str = "Forwarded: for=1.2.3.4;proto=https\r\n\
X-Real-IP: 1.2.3.4\r\n\
X-Client-IP: 1.2.3.4\r\n\
X-Forwarded-Port: 443\r\n\
X-Forwarded-Prefix: /admin\r\n\
X-Forwarded-Ssl: on\r\n\
X_Forwarded_For: 1.2.3.4\r\n\
Transfer_Encoding: chunked\r\n\
Content_Length: 5\r\n\
X-Custom_Name: 1\r\n";

const CLIENT_IP: [&str; 6] =
    ["forwarded", "x-real-ip", "x-client-ip", "x-forwarded-port", "x-forwarded-prefix", "x-forwarded-ssl"];
const UNDERSCORED: [&str; 4] = ["x_forwarded_for", "transfer_encoding", "content_length", "x-custom_name"];

#[tokio::test]
async fn client_ip_and_underscore_look_alikes_never_reach_the_upstream() {
    let seen = Seen::default();
    let (running, gw) = gateway(echo_upstream(seen.clone()).await, UpstreamLimits::default()).await;
    let (s, text) = exchange(gw, &get(&format!("Host: localhost\r\n{LOOK_ALIKES}X-Kept: yes\r\n"))).await;
    assert_eq!(s, 200, "{text}");
    let got = seen.requests();
    assert_eq!(got.len(), 1);
    let names: Vec<&str> = got[0].iter().map(|(k, _)| k.as_str()).collect();
    for gone in CLIENT_IP.iter().chain(&UNDERSCORED) {
        assert!(!names.contains(gone), "{gone} reached the upstream: {names:?}");
    }
    // Everything else passes, and meshgate's own X-Forwarded-For is the peer.
    assert!(names.contains(&"x-kept"), "{names:?}");
    assert!(got[0].contains(&("x-forwarded-for".to_owned(), "127.0.0.1".to_owned())), "{got:?}");
    running.shutdown().await;
}

/// `[headers]` in the config file reaches the proxy: each key lets its kind
/// through, and only its kind.
#[tokio::test]
async fn look_alikes_pass_when_the_config_keeps_them() {
    use clap::Parser;
    let args = match meshgate::cli::Cli::try_parse_from(["meshgate", "serve"]).unwrap().command {
        Some(meshgate::cli::Command::Serve(a)) => a,
        _ => unreachable!(),
    };
    let path = std::path::Path::new("m.toml");
    let options = |toml: &str| {
        let file = meshgate::core::config::FileConfig::parse(toml, path).unwrap();
        meshgate::cli::serve_options(&args, Some((path, &file))).unwrap().upstream_limits
    };
    assert_eq!(meshgate::cli::serve_options(&args, None).unwrap().upstream_limits.headers, HeaderRules::default());
    for (toml, client_ip, underscored) in [
        ("", false, false),
        ("[headers]\nkeep_client_ip_headers = true\n", true, false),
        ("[headers]\nkeep_underscores = true\n", false, true),
        ("[headers]\nkeep_underscores = true\nkeep_client_ip_headers = true\n", true, true),
    ] {
        let seen = Seen::default();
        let (running, gw) = gateway(echo_upstream(seen.clone()).await, options(toml)).await;
        let (s, text) = exchange(gw, &get(&format!("Host: localhost\r\n{LOOK_ALIKES}"))).await;
        assert_eq!(s, 200, "{text}");
        let got = seen.requests();
        let names: Vec<&str> = got[0].iter().map(|(k, _)| k.as_str()).collect();
        for name in CLIENT_IP {
            assert_eq!(names.contains(&name), client_ip, "{toml:?}: {name} in {names:?}");
        }
        for name in UNDERSCORED {
            assert_eq!(names.contains(&name), underscored, "{toml:?}: {name} in {names:?}");
        }
        running.shutdown().await;
    }
}

#[tokio::test]
async fn a_malformed_chunked_body_is_the_clients_fault() {
    for router in [false, true] {
        let seen = Seen::default();
        let (running, gw) = gateway_via(echo_upstream(seen.clone()).await, UpstreamLimits::default(), router).await;
        malformed_bodies_are_400(gw).await;
        running.shutdown().await;
    }
    // With a body cap too (the body is read through `Limited`).
    let limits = UpstreamLimits::default().with_max_body_bytes(Some(1 << 20));
    let (running, gw) = gateway(echo_upstream(Seen::default()).await, limits).await;
    malformed_bodies_are_400(gw).await;
    running.shutdown().await;
}

async fn malformed_bodies_are_400(gw: SocketAddr) {
    let head = "POST /x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    // The control: a well-formed chunked body is forwarded and read whole.
    let (s, text) = exchange(gw, &format!("{head}5\r\nhello\r\n0\r\n\r\n")).await;
    assert_eq!(s, 200, "{text}");
    assert!(text.contains("body ok: true"), "{text}");
    for body in ["zz\r\nhello\r\n0\r\n\r\n", "5\r\nhelloXX\r\n0\r\n\r\n", "fffffffffffffffffff\r\nhello\r\n0\r\n\r\n"] {
        let (s, text) = exchange(gw, &format!("{head}{body}")).await;
        assert_eq!(s, 400, "{body:?}: {text}");
        assert!(text.contains("the request body is malformed"), "{body:?}: {text}");
    }
}

/// Issue 20, part 2: `/_meshgate` itself and everything under it is
/// meshgate's, never the upstream's, on both serving paths.
#[tokio::test]
async fn the_meshgate_prefix_is_never_forwarded() {
    for router in [false, true] {
        let seen = Seen::default();
        let up = echo_upstream(seen.clone()).await;
        let (running, gw) = gateway_via(up, UpstreamLimits::default(), router).await;
        // `/_meshgate/` is the status page (issue 28), `/_meshgate` sends there.
        let (status, text) =
            exchange(gw, "GET /_meshgate/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await;
        assert_eq!(status, 200, "router={router}: {text}");
        assert!(text.contains("meshgate status"), "router={router}: {text}");
        // Its links to the JSON are meshgate's, never the upstream's `/status`.
        assert!(text.contains(r#"<a href="/_meshgate/status">"#), "router={router}: {text}");
        let (status, text) =
            exchange(gw, "GET /_meshgate HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await;
        assert_eq!(status, 303, "router={router}: {text}");
        for path in ["/_meshgate/nope", "/_meshgate//x"] {
            let (status, text) =
                exchange(gw, &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")).await;
            assert_eq!(status, 404, "router={router} {path}: {text}");
            assert!(text.contains("no such meshgate route"), "router={router} {path}: {text}");
        }
        // A path that only starts like the prefix is the upstream's.
        let (status, _) =
            exchange(gw, "GET /_meshgateway HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await;
        assert_eq!(status, 200, "router={router}");
        assert_eq!(seen.requests().len(), 1, "router={router}: only /_meshgateway reached the upstream");
        running.shutdown().await;
    }
}

/// Issue 20, part 5: an authenticated `CONNECT` gets an answer (405) instead
/// of a hanging connection, and never reaches the upstream.
#[tokio::test]
async fn connect_is_answered_405() {
    let seen = Seen::default();
    let up = echo_upstream(seen.clone()).await;
    let (running, gw) = gateway(up, UpstreamLimits::default()).await;
    let request =
        format!("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
    let (status, text) = exchange(gw, &request).await;
    assert_eq!(status, 405, "{text}");
    assert!(seen.requests().is_empty());
    running.shutdown().await;
}

/// An embedder that serves `upstream_app` itself (no meshgate accept loop in
/// front) still never forwards a client's `Meshgate-Peer-*` headers, nor a
/// `Connection` that names them.
#[tokio::test]
async fn the_router_alone_strips_forged_identity_headers() {
    let seen = Seen::default();
    let up = echo_upstream(seen.clone()).await;
    let token = Token::new(TOKEN, "test").unwrap();
    let proxy = Proxy::new(Upstream::parse(&format!("http://{up}")).unwrap(), UpstreamLimits::default(), None);
    let state = AppState::with_open_paths(Some(token), [UPSTREAM_HEALTHZ]);
    let ctx = ListenerCtx { local: "127.0.0.1:18789".parse().unwrap(), loopback: true, tls: false };
    let router = upstream_app(state, proxy).layer(Extension(ctx));
    let request = axum::http::Request::get("/x")
        .header("host", "localhost")
        .header("meshgate-peer-name", "admin")
        .header("Meshgate-Peer-Key", "forged")
        .body(Body::empty())
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let got = seen.requests();
    assert_eq!(got.len(), 1);
    assert!(got[0].iter().all(|(k, _)| !k.starts_with("meshgate-peer-")), "{:?}", got[0]);
}
