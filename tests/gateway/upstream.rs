//! `--upstream`: a real upstream (an axum app on 127.0.0.1:0 and on a unix
//! socket) behind meshgate: streamed bodies both ways, a WebSocket echo, the
//! header rules, 502/504, auth before forwarding, the `/_meshgate/` routes and
//! the client limits.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use meshgate::gateway::UPSTREAM_HEALTHZ;
use meshgate::gateway::{upstream_app, AppState, ListenerCtx, Proxy, ServerLimits, Token, Upstream, UpstreamLimits};
use meshgate::gateway::{Gateway, GatewayBuilder, Running, Workers};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{keep_alive_get, meshgate, Server};
use tower::ServiceExt;

const TOKEN: &str = "upstream-test-token-0123456789";
const BIG: u64 = 64 << 20;

/// FNV-1a: chunking-independent, so both ends can hash a stream as it passes.
#[derive(Clone, Copy)]
struct Fnv(u64);
impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// Deterministic bytes, generated chunk by chunk (never the whole body at once).
struct Pattern {
    state: u64,
    left: u64,
}
impl Pattern {
    fn new(len: u64) -> Self {
        Self { state: 0x9e37_79b9_7f4a_7c15, left: len }
    }
    fn next_chunk(&mut self) -> Option<Vec<u8>> {
        if self.left == 0 {
            return None;
        }
        let n = self.left.min(64 * 1024) as usize;
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            v.extend_from_slice(&self.state.to_le_bytes());
        }
        v.truncate(n);
        self.left -= n as u64;
        Some(v)
    }
    fn digest(len: u64) -> (u64, u64) {
        let mut p = Self::new(len);
        let mut h = Fnv::new();
        while let Some(c) = p.next_chunk() {
            h.update(&c);
        }
        (len, h.0)
    }
}

#[derive(Clone, Default)]
struct Seen(Arc<AtomicUsize>);

/// The upstream service.
fn upstream_router(seen: Seen) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "upstream healthz\n" }))
        .route(
            "/echo",
            any(|headers: HeaderMap| async move {
                let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for (k, v) in &headers {
                    m.entry(k.to_string()).or_default().push(v.to_str().unwrap_or("?").to_owned());
                }
                Json(m)
            }),
        )
        .route(
            "/upload",
            post(|request: Request| async move {
                let mut body = request.into_body().into_data_stream();
                let (mut len, mut h) = (0u64, Fnv::new());
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
                    len += chunk.len() as u64;
                    h.update(&chunk);
                }
                Ok::<_, (StatusCode, String)>(format!("{len} {:016x}", h.0))
            }),
        )
        .route(
            "/download/{n}",
            get(|Path(n): Path<u64>| async move {
                let mut p = Pattern::new(n);
                let stream = futures_util::stream::poll_fn(move |_| {
                    std::task::Poll::Ready(p.next_chunk().map(Ok::<_, std::io::Error>))
                });
                // A declared length with a streamed body: no chunk framing to undo.
                ([(header::CONTENT_LENGTH, n.to_string())], Body::from_stream(stream))
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late\n"
            }),
        )
        .route("/ws", get(|up: WebSocketUpgrade| async move { up.on_upgrade(echo) }))
        .fallback(|State(seen): State<Seen>, request: Request| async move {
            seen.0.fetch_add(1, Ordering::SeqCst);
            format!("upstream saw {}\n", request.uri())
        })
        .with_state(seen)
}

async fn echo(mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        let reply = match msg {
            Message::Text(t) => Message::Text(format!("echo: {}", t.as_str()).into()),
            Message::Binary(b) => Message::Binary(b),
            Message::Close(_) => return,
            _ => continue,
        };
        if socket.send(reply).await.is_err() {
            return;
        }
    }
}

async fn tcp_upstream(seen: Seen) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, upstream_router(seen)).await });
    addr
}

fn token() -> Token {
    Token::new(TOKEN, "test").unwrap()
}

/// How requests reach the proxy: the direct path (`GatewayBuilder::start_upstream`:
/// no router for forwarded requests), the same served on two connection
/// threads as `meshgate serve` does (`GatewayBuilder::workers`), or the
/// public router (`upstream_app` served with `start_with`). All must give the
/// same answers.
#[derive(Debug, Clone, Copy)]
enum Via {
    Direct,
    Workers,
    Router,
}

const PATHS: [Via; 3] = [Via::Direct, Via::Workers, Via::Router];

/// Starts `builder` in front of `proxy` the `via` way.
async fn start_via(via: Via, builder: GatewayBuilder<'static>, proxy: Proxy) -> Running<'static> {
    match via {
        Via::Direct => builder.start_upstream(proxy).await,
        Via::Workers => {
            let workers = Workers::start(std::num::NonZeroUsize::new(2).unwrap()).expect("worker threads");
            builder.workers(workers).start_upstream(proxy).await
        }
        Via::Router => builder.open_path(UPSTREAM_HEALTHZ).start_with(|s| upstream_app(s.clone(), proxy)).await,
    }
    .expect("gateway starts")
}

/// meshgate in-process, in front of `upstream`, on 127.0.0.1 (port 0), as
/// `meshgate serve` runs it.
async fn gateway(upstream: &str, limits: UpstreamLimits, server: ServerLimits) -> (Running<'static>, SocketAddr) {
    gateway_via(Via::Direct, upstream, limits, server).await
}

async fn gateway_via(
    via: Via,
    upstream: &str,
    limits: UpstreamLimits,
    server: ServerLimits,
) -> (Running<'static>, SocketAddr) {
    let proxy = Proxy::new(Upstream::parse(upstream).unwrap(), limits, Some(token()));
    let builder = Gateway::builder()
        .bind(["127.0.0.1"])
        .port(0)
        .follow(false)
        .token(token())
        .limits(server)
        // header_rules sends a mesh-style Host to this loopback listener.
        .browser_policy(meshgate::gateway::BrowserPolicy {
            allowed_hosts: vec!["mesh.example".into()],
            ..Default::default()
        });
    let running = start_via(via, builder, proxy).await;
    let addr = running.addresses()[0];
    (running, addr)
}

/// One raw HTTP/1.1 exchange with `Connection: close`: status line, head, body.
async fn raw(addr: SocketAddr, head: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await.expect("answer in time").unwrap();
    split(&buf)
}

fn split(buf: &[u8]) -> (u16, String, String) {
    let text = String::from_utf8_lossy(buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

fn get_req(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n")
}

#[tokio::test]
async fn get_post_and_meshgate_routes_through_the_proxy() {
    let up = tcp_upstream(Seen::default()).await;
    for via in PATHS {
        let (running, gw) =
            gateway_via(via, &format!("http://{up}"), UpstreamLimits::default(), ServerLimits::default()).await;
        let (s, _, body) = raw(gw, &get_req("/anything?x=1", "")).await;
        assert_eq!((s, body.as_str()), (200, "upstream saw /anything?x=1\n"));
        // /healthz is the upstream's now; meshgate's own routes moved under /_meshgate/.
        let (s, _, body) = raw(gw, &get_req("/healthz", "")).await;
        assert_eq!((s, body.as_str()), (200, "upstream healthz\n"));
        let (s, _, body) = raw(gw, &get_req("/_meshgate/healthz", "")).await;
        assert_eq!((s, body.as_str()), (200, "ok\n"));
        let (s, _, body) = raw(gw, &get_req("/_meshgate/status", "")).await;
        assert_eq!(s, 200);
        assert!(body.contains("\"listeners\"") && !body.contains(TOKEN), "{body}");
        let (s, _, _) = raw(gw, &get_req("/_meshgate/nope", "")).await;
        assert_eq!(s, 404);
        // meshgate's /ws still streams listener changes under the prefix.
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{gw}/_meshgate/ws")).await.expect("ws");
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) => assert!(t.contains("\"listeners\"")),
            other => panic!("expected the listener set, got {other:?}"),
        }
        // A small POST with a body.
        let (s, _, body) =
            raw(gw, "POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
                .await;
        let mut h = Fnv::new();
        h.update(b"hello");
        assert_eq!((s, body), (200, format!("5 {:016x}", h.0)));
        running.shutdown().await;
    }
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// 64 MiB up and 64 MiB down through the real `meshgate` process, generated and
/// hashed chunk by chunk at both ends; meshgate's peak RSS stays far below the
/// body size, so nothing buffered a whole body.
#[tokio::test]
async fn large_bodies_stream_both_ways_without_buffering() {
    let up = tcp_upstream(Seen::default()).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let proc = Server::start(
        meshgate(&["serve", "--bind", "127.0.0.1", "--no-follow", "--port", &port.to_string()])
            .args(["--upstream", &format!("http://{up}")])
            .env("RUST_LOG", "warn"),
    );
    let first = proc.wait_lines(1);
    assert!(first[0].starts_with("listening"), "meshgate printed its listening line: {first:?}");
    let gw: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let pid = proc.pid();
    let before = vm_hwm_kib(pid);

    // Upload: written in 64 KiB chunks as they are generated.
    let mut s = TcpStream::connect(gw).await.unwrap();
    let head =
        format!("POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: {BIG}\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut p = Pattern::new(BIG);
    while let Some(c) = p.next_chunk() {
        s.write_all(&c).await.unwrap();
    }
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let (status, _, body) = split(&buf);
    let (len, hash) = Pattern::digest(BIG);
    assert_eq!((status, body), (200, format!("{len} {hash:016x}")), "the upstream got every byte in order");

    // Download: read and hashed as it arrives.
    let mut s = TcpStream::connect(gw).await.unwrap();
    s.write_all(get_req(&format!("/download/{BIG}"), "").as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let (mut got, mut h) = (0u64, Fnv::new());
    let mut in_body = false;
    loop {
        let n = s.read(&mut chunk).await.unwrap();
        if n == 0 {
            break;
        }
        if in_body {
            got += n as u64;
            h.update(&chunk[..n]);
            continue;
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = head.split_off(i + 4);
            in_body = true;
            got += rest.len() as u64;
            h.update(&rest);
        }
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains(&format!("content-length: {BIG}")), "{head}");
    assert_eq!((got, h.0), (len, hash), "download arrived whole and in order");

    let after = vm_hwm_kib(pid);
    eprintln!("meshgate peak RSS: {before} KiB before, {after} KiB after moving 2 x {} MiB", BIG >> 20);
    assert!(
        after < before + 32 * 1024,
        "meshgate's peak RSS grew from {before} KiB to {after} KiB: a body was buffered"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn unix_socket_upstream() {
    let dir = std::env::temp_dir().join(format!("meshgate-up-{}-{}", std::process::id(), line!()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock: PathBuf = dir.join("app.sock");
    let _ = std::fs::remove_file(&sock);
    let l = tokio::net::UnixListener::bind(&sock).unwrap();
    tokio::spawn(async move { axum::serve(l, upstream_router(Seen::default())).await });
    let (running, gw) =
        gateway(&format!("unix:{}", sock.display()), UpstreamLimits::default(), ServerLimits::default()).await;
    let (s, _, body) = raw(gw, &get_req("/over/unix", "")).await;
    assert_eq!((s, body.as_str()), (200, "upstream saw /over/unix\n"));
    let (s, _, body) =
        raw(gw, "POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc").await;
    assert_eq!(s, 200);
    assert!(body.starts_with("3 "), "{body}");
    // A WebSocket through the unix socket too.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{gw}/ws")).await.expect("ws through unix");
    ws.send(tokio_tungstenite::tungstenite::Message::Text("hi".into())).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(m.into_text().unwrap().as_str(), "echo: hi");
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn websocket_echo_passes_through() {
    use tokio_tungstenite::tungstenite::Message as M;
    let up = tcp_upstream(Seen::default()).await;
    for via in PATHS {
        let (running, gw) =
            gateway_via(via, &format!("http://{up}"), UpstreamLimits::default(), ServerLimits::default()).await;
        let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{gw}/ws")).await.expect("ws connect");
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        for i in 0..20 {
            ws.send(M::Text(format!("message {i}").into())).await.unwrap();
            let m = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
            assert_eq!(m.into_text().unwrap().as_str(), format!("echo: message {i}"));
        }
        let blob: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        ws.send(M::Binary(blob.clone().into())).await.unwrap();
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(m.into_data().as_ref(), blob.as_slice());
        ws.close(None).await.unwrap();
        running.shutdown().await;
    }
}

#[tokio::test]
async fn header_rules() {
    let up = tcp_upstream(Seen::default()).await;
    for via in PATHS {
        let (running, gw) =
            gateway_via(via, &format!("http://{up}"), UpstreamLimits::default(), ServerLimits::default()).await;
        let head = format!(
            "GET /echo HTTP/1.1\r\nHost: mesh.example:18789\r\nAuthorization: Bearer {TOKEN}\r\n\
             Proxy-Authorization: Bearer {TOKEN}\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Host: evil.example\r\n\
             X-Forwarded-Proto: https\r\nConnection: close, X-Drop-Me\r\nX-Drop-Me: 1\r\nKeep-Alive: timeout=5\r\n\
             TE: trailers\r\nX-Kept: yes\r\n\r\n"
        );
        let (s, _, body) = raw(gw, &head).await;
        assert_eq!(s, 200, "{body}");
        assert!(!body.contains(TOKEN), "the token reached the upstream: {body}");
        let seen: BTreeMap<String, Vec<String>> = serde_json::from_str(&body).unwrap();
        for gone in ["authorization", "proxy-authorization", "x-drop-me", "keep-alive", "te", "connection"] {
            assert!(!seen.contains_key(gone), "{gone} was forwarded: {seen:?}");
        }
        let one = |k: &str| seen.get(k).map(|v| v.join(" | ")).unwrap_or_default();
        assert_eq!(one("x-forwarded-for"), "203.0.113.9, 127.0.0.1");
        assert_eq!(one("x-forwarded-proto"), "http");
        assert_eq!(one("x-forwarded-host"), "mesh.example:18789");
        assert_eq!(one("host"), "mesh.example:18789");
        assert_eq!(one("x-kept"), "yes");

        // The service's own Authorization passes through when meshgate's token
        // travels in Proxy-Authorization.
        let head = format!(
            "GET /echo HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic dXNlcjpwdw==\r\n\
             Proxy-Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
        );
        let (_, _, body) = raw(gw, &head).await;
        let seen: BTreeMap<String, Vec<String>> = serde_json::from_str(&body).unwrap();
        assert_eq!(seen.get("authorization").map(|v| v.join("")), Some("Basic dXNlcjpwdw==".into()));
        assert!(!seen.contains_key("proxy-authorization") && !body.contains(TOKEN), "{seen:?}");
        running.shutdown().await;
    }
}

#[tokio::test]
async fn upstream_down_is_502_and_the_gateway_keeps_serving() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    for via in PATHS {
        let (running, gw) =
            gateway_via(via, &format!("http://{dead}"), UpstreamLimits::default(), ServerLimits::default()).await;
        for _ in 0..3 {
            let (s, _, body) = raw(gw, &get_req("/x", &format!("Authorization: Bearer {TOKEN}\r\n"))).await;
            assert_eq!(s, 502, "{body}");
            assert!(body.contains("refused") && !body.contains(TOKEN), "{body}");
        }
        let (s, _, _) = raw(gw, &get_req("/_meshgate/healthz", "")).await;
        assert_eq!(s, 200);
        // A unix socket that does not exist: 502 too.
        let (running2, gw2) = gateway_via(
            via,
            "unix:/nonexistent/meshgate-test.sock",
            UpstreamLimits::default(),
            ServerLimits::default(),
        )
        .await;
        let (s, _, body) = raw(gw2, &get_req("/x", "")).await;
        assert_eq!(s, 502, "{body}");
        running.shutdown().await;
        running2.shutdown().await;
    }
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let up = tcp_upstream(Seen::default()).await;
    let limits = UpstreamLimits::default().with_response_timeout(Duration::from_millis(300));
    for via in PATHS {
        let (running, gw) = gateway_via(via, &format!("http://{up}"), limits, ServerLimits::default()).await;
        let t0 = Instant::now();
        let (s, _, body) = raw(gw, &get_req("/slow", &format!("Authorization: Bearer {TOKEN}\r\n"))).await;
        assert_eq!(s, 504, "{body}");
        assert!(t0.elapsed() < Duration::from_secs(2), "504 took {:?}", t0.elapsed());
        assert!(body.contains("did not answer in time") && !body.contains(TOKEN), "{body}");
        // Fast routes still work on the same gateway.
        let (s, _, _) = raw(gw, &get_req("/fast", "")).await;
        assert_eq!(s, 200);

        // On a kept-alive connection, a slow request that starts well after the
        // connection did still gets its full timeout, counted from its own start.
        let mut conn = TcpStream::connect(gw).await.unwrap();
        let r = keep_alive_get(&mut conn, "/fast").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{via:?}: {r}");
        tokio::time::sleep(Duration::from_millis(250)).await;
        let t0 = Instant::now();
        let r = keep_alive_get(&mut conn, "/slow").await;
        let took = t0.elapsed();
        assert!(r.starts_with("HTTP/1.1 504"), "{via:?}: {r}");
        assert!(took >= Duration::from_millis(290), "{via:?}: 504 after only {took:?}");
        assert!(took < Duration::from_secs(2), "{via:?}: 504 took {took:?}");
        running.shutdown().await;
    }
}

/// Shutdown lets a request in flight finish, and keeps its response deadline:
/// a slow upstream still gets the client a 504 at the timeout, and shutdown
/// waits for it (not for the upstream's late answer, nor past it).
#[tokio::test]
async fn shutdown_waits_for_the_request_in_flight_and_keeps_its_deadline() {
    let up = tcp_upstream(Seen::default()).await;
    let limits = UpstreamLimits::default().with_response_timeout(Duration::from_millis(300));
    for via in PATHS {
        let (running, gw) = gateway_via(via, &format!("http://{up}"), limits, ServerLimits::default()).await;
        let t0 = Instant::now();
        let client = tokio::spawn(async move { (raw(gw, &get_req("/slow", "")).await, t0.elapsed()) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let s0 = Instant::now();
        running.shutdown().await;
        let shutdown_took = s0.elapsed();
        let ((status, _, body), took) = client.await.unwrap();
        assert_eq!(status, 504, "{via:?}: {body}");
        assert!(took >= Duration::from_millis(290) && took < Duration::from_secs(2), "{via:?}: 504 after {took:?}");
        assert!(
            shutdown_took >= Duration::from_millis(200),
            "{via:?}: shutdown took {shutdown_took:?}: it did not wait for the request in flight"
        );
        assert!(shutdown_took < Duration::from_secs(2), "{via:?}: shutdown took {shutdown_took:?}");
    }
}

/// An upstream that accepts no connection in time answers 504 after
/// `--upstream-connect-timeout`, and the gateway keeps serving. The upstream is
/// a socket listening with a backlog of 0 whose one queue slot is taken by a
/// connection nobody accepts: Linux then drops further SYNs, so a connect hangs
/// (on loopback, with no firewall rule or outside address needed).
#[tokio::test]
async fn upstream_connect_timeout_is_504() {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let _queued = std::net::TcpStream::connect(addr).unwrap();
    let probe = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300));
    assert!(
        probe.is_err(),
        "the full listen queue did not hold back a connect; the test cannot make a hanging upstream"
    );

    let limits = UpstreamLimits::default().with_connect_timeout(Duration::from_millis(300));
    for via in PATHS {
        let (running, gw) = gateway_via(via, &format!("http://{addr}"), limits, ServerLimits::default()).await;
        let t0 = Instant::now();
        let (s, _, body) = raw(gw, &get_req("/x", "")).await;
        assert_eq!(s, 504, "{via:?}: {body}");
        assert!(body.contains("did not accept a connection in time"), "{via:?}: {body}");
        assert!(t0.elapsed() < Duration::from_secs(3), "{via:?}: 504 took {:?}", t0.elapsed());
        let (s, _, _) = raw(gw, &get_req("/_meshgate/healthz", "")).await;
        assert_eq!(s, 200, "{via:?}: the gateway stopped serving");
        running.shutdown().await;
    }
    drop(listener);
}

/// The token removed before forwarding is the gateway's, even when the
/// `Proxy` was made without one (or with another): what is checked is what is
/// stripped, on both paths.
#[tokio::test]
async fn the_gateway_token_is_stripped_whatever_the_proxy_was_made_with() {
    let up = tcp_upstream(Seen::default()).await;
    for (via, made_with) in [(Via::Direct, None), (Via::Router, None), (Via::Direct, Some("another-token"))] {
        let proxy = Proxy::new(
            Upstream::parse(&format!("http://{up}")).unwrap(),
            UpstreamLimits::default(),
            made_with.map(|t| Token::new(t, "test").unwrap()),
        );
        let builder = Gateway::builder().bind(["127.0.0.1"]).port(0).follow(false).token(token());
        let running = start_via(via, builder, proxy).await;
        let gw = running.addresses()[0];
        let (s, _, body) = raw(gw, &get_req("/echo", &format!("Authorization: Bearer {TOKEN}\r\n"))).await;
        assert_eq!(s, 200, "{via:?}: {body}");
        assert!(
            !body.contains(TOKEN),
            "{via:?}, proxy made with {made_with:?}: the token reached the upstream: {body}"
        );
        running.shutdown().await;
    }
}

/// A token replaced on the running gateway (a reload) is the one stripped
/// from then on, on both paths, and the one it replaced is stripped too: a
/// request checked just before the reload must not carry it upstream.
#[tokio::test]
async fn a_replaced_token_and_the_one_before_it_never_reach_the_upstream() {
    const NEW: &str = "the-rotated-token-0123456789";
    let up = tcp_upstream(Seen::default()).await;
    for via in PATHS {
        let proxy = Proxy::new(Upstream::parse(&format!("http://{up}")).unwrap(), UpstreamLimits::default(), None);
        let builder = Gateway::builder().bind(["127.0.0.1"]).port(0).follow(false).token(token());
        let running = start_via(via, builder, proxy).await;
        running.controls().set_token(Token::new(NEW, "test").unwrap()).expect("the gateway has a token");
        let gw = running.addresses()[0];
        for sent in [NEW, TOKEN] {
            let (s, _, body) = raw(gw, &get_req("/echo", &format!("Authorization: Bearer {sent}\r\n"))).await;
            assert_eq!(s, 200, "{via:?}: {body}");
            assert!(!body.contains(sent), "{via:?}: {sent} reached the upstream after the reload: {body}");
        }
        running.shutdown().await;
    }
    // Without a token at start there is none to replace.
    let running =
        Gateway::builder().bind(["127.0.0.1"]).port(0).follow(false).start(axum::Router::new()).await.unwrap();
    assert!(running.controls().set_token(token()).is_err());
    running.shutdown().await;
}

/// The router seen from a non-loopback listener: nothing reaches the upstream
/// without the token, including the upstream's own `/healthz`.
#[tokio::test]
async fn auth_happens_before_forwarding_on_mesh_listeners() {
    let seen = Seen::default();
    let up = tcp_upstream(seen.clone()).await;
    let proxy = Proxy::new(Upstream::parse(&format!("http://{up}")).unwrap(), UpstreamLimits::default(), Some(token()));
    let state = AppState::with_open_paths(Some(token()), [UPSTREAM_HEALTHZ]);
    let router = upstream_app(state, proxy).layer(axum::Extension(ListenerCtx {
        local: "10.8.0.1:18789".parse().unwrap(),
        loopback: false,
        tls: false,
    }));
    let call = |path: &str, auth: Option<(header::HeaderName, String)>| {
        let mut r = Request::get(path);
        if let Some((k, v)) = auth {
            r = r.header(k, v);
        }
        router.clone().oneshot(r.body(Body::empty()).unwrap())
    };
    for path in ["/", "/x", "/healthz", "/_meshgate/status", "/_meshgate/ws"] {
        for auth in [None, Some((header::AUTHORIZATION, "Bearer wrong".to_owned()))] {
            let resp = call(path, auth).await.unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        }
    }
    assert_eq!(seen.0.load(Ordering::SeqCst), 0, "a request reached the upstream without the token");
    assert_eq!(call("/_meshgate/healthz", None).await.unwrap().status(), StatusCode::OK);
    let ok = call("/x", Some((header::AUTHORIZATION, format!("Bearer {TOKEN}")))).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let ok = call("/y", Some((header::PROXY_AUTHORIZATION, format!("Bearer {TOKEN}")))).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(seen.0.load(Ordering::SeqCst), 2);
    let status = call("/_meshgate/status", Some((header::AUTHORIZATION, format!("Bearer {TOKEN}")))).await.unwrap();
    assert_eq!(status.status(), StatusCode::OK);
}

#[tokio::test]
async fn header_size_and_idle_limits() {
    let up = tcp_upstream(Seen::default()).await;
    let server = ServerLimits::default().with_max_header_bytes(16 * 1024).with_idle_timeout(Duration::from_millis(400));
    let (running, gw) = gateway(&format!("http://{up}"), UpstreamLimits::default(), server).await;
    let big = format!("X-Big: {}\r\n", "a".repeat(20 * 1024));
    let (s, _, _) = raw(gw, &get_req("/x", &big)).await;
    assert_eq!(s, 431);
    let small = format!("X-Small: {}\r\n", "a".repeat(8 * 1024));
    let (s, _, _) = raw(gw, &get_req("/x", &small)).await;
    assert_eq!(s, 200);
    // A connection that sends nothing is closed after the idle timeout.
    let mut idle = TcpStream::connect(gw).await.unwrap();
    let t0 = Instant::now();
    let mut b = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut b)).await.expect("closed in time");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(t0.elapsed() >= Duration::from_millis(300), "closed too early: {:?}", t0.elapsed());
    running.shutdown().await;
}

/// `--idle-timeout` bounds slow heads and idle keep-alive connections, never a
/// request in flight: a client dribbling a head byte by byte is cut off, a
/// kept-alive connection left idle is closed, and a request the upstream takes
/// 3 s to answer (over seven timeouts) gets its answer.
#[tokio::test]
async fn idle_timeout_closes_slow_heads_but_spares_requests_in_flight() {
    let up = tcp_upstream(Seen::default()).await;
    let server = ServerLimits::default().with_idle_timeout(Duration::from_millis(400));
    let (running, gw) = gateway(&format!("http://{up}"), UpstreamLimits::default(), server).await;

    // Slowloris: one header byte every 100 ms, never finishing the head.
    let (mut rd, mut wr) = TcpStream::connect(gw).await.unwrap().into_split();
    let t0 = Instant::now();
    let closed = tokio::spawn(async move {
        let mut b = [0u8; 256];
        let n = rd.read(&mut b).await;
        (n.map_or(0, |n| n), t0.elapsed())
    });
    wr.write_all(b"GET /x HTTP/1.1\r\nHost: localhost\r\nX-Slow: ").await.unwrap();
    for _ in 0..50 {
        if closed.is_finished() || wr.write_all(b"a").await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (n, took) =
        tokio::time::timeout(Duration::from_secs(5), closed).await.expect("the slow head was never cut off").unwrap();
    assert_eq!(n, 0, "a dribbled head got an answer");
    assert!(took >= Duration::from_millis(350) && took < Duration::from_secs(2), "slow head closed after {took:?}");

    // A kept-alive connection, idle after one exchange, is closed.
    let mut s = TcpStream::connect(gw).await.unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    let t0 = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("idle connection closed");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(t0.elapsed() >= Duration::from_millis(350), "closed too early: {:?}", t0.elapsed());

    // A request in flight for 3 s is not cut off.
    let (s, _, body) = raw(gw, &get_req("/slow", "")).await;
    assert_eq!((s, body.as_str()), (200, "late\n"));

    // A half-sent head does not hold up shutdown (hyper alone would wait for the
    // rest of it through the whole 10 s grace): the idle timeout still applies.
    let mut half = TcpStream::connect(gw).await.unwrap();
    half.write_all(b"GET /x HTTP/1.1\r\nHost: loc").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t0 = Instant::now();
    running.shutdown().await;
    assert!(t0.elapsed() < Duration::from_secs(3), "shutdown waited {:?} for a half-sent head", t0.elapsed());
    let n =
        tokio::time::timeout(Duration::from_secs(2), half.read(&mut buf)).await.expect("the half-sent head was closed");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
}

/// A client that asks for a large download and stops reading holds a request
/// in flight forever unless something notices: the idle timeout does (the
/// response has made no progress for a whole timeout), like nginx's
/// `send_timeout`, and the connection is cut.
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off() {
    let up = tcp_upstream(Seen::default()).await;
    let server = ServerLimits::default().with_idle_timeout(Duration::from_millis(400));
    let (running, gw) = gateway(&format!("http://{up}"), UpstreamLimits::default(), server).await;
    let n: u64 = 256 << 20;
    let mut s = TcpStream::connect(gw).await.unwrap();
    s.write_all(get_req(&format!("/download/{n}"), "").as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = s.read(&mut buf).await.unwrap() as u64;
    assert!(total > 0);
    // Five timeouts without reading.
    tokio::time::sleep(Duration::from_secs(2)).await;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.expect("the download ended") {
            Ok(0) | Err(_) => break,
            Ok(k) => total += k as u64,
        }
    }
    assert!(total < n / 4, "the stalled download was not cut off: {total} of {n} bytes arrived");
    // The gateway serves on.
    let (s, _, _) = raw(gw, &get_req("/_meshgate/healthz", "")).await;
    assert_eq!(s, 200);
    running.shutdown().await;
}

#[test]
fn bad_upstream_flags_are_usage_errors() {
    for (args, needle) in [
        (vec!["--upstream", "127.0.0.1:3000"], "http://127.0.0.1:3000"),
        (vec!["--upstream", "https://127.0.0.1:3000"], "plain HTTP"),
        (vec!["--upstream-timeout", "0"], "above 0"),
        (vec!["--idle-timeout", "soon"], "not a number"),
        (vec!["--max-header-bytes", "100"], "8192"),
    ] {
        super::assert_serve_usage_error(&args, needle);
    }
}

#[test]
fn config_file_upstream_and_limits() {
    let (code, e) =
        super::serve_with_config("cfg", "upstream = \"http://127.0.0.1:1\"\n[limits]\nupstream_timeout = -1\n");
    assert_eq!(code, Some(78), "{e}");
    assert!(e.contains("limits.upstream_timeout") && e.contains("m.toml"), "{e}");
    let (code, e) = super::serve_with_config("cfg", "upstream = \"ftp://x\"\n");
    assert_eq!(code, Some(78), "{e}");
    assert!(e.contains("upstream"), "{e}");
}

/// Forwarded bodies have no cap by default (the upstream decides), even past
/// the cap on meshgate's own routes; `--upstream-max-body-bytes` sets one:
/// a larger `Content-Length` is refused before the upstream is contacted, a
/// chunked body that runs past it is cut off with 413.
#[tokio::test]
async fn forwarded_bodies_are_uncapped_by_default_and_capped_when_asked() {
    let seen = Seen::default();
    let up = tcp_upstream(seen.clone()).await;
    let post = |len: usize| {
        let mut r =
            format!("POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
                .into_bytes();
        r.extend(std::iter::repeat_n(b'z', len));
        r
    };
    for via in PATHS {
        let own_cap = ServerLimits::default().with_max_body_bytes(1024);
        let (running, gw) = gateway_via(via, &format!("http://{up}"), UpstreamLimits::default(), own_cap).await;
        let (s, body) = raw_bytes(gw, &post(64 * 1024)).await;
        assert_eq!(s, 200, "{body}");
        assert!(body.starts_with("65536 "), "{body}");
        running.shutdown().await;

        let capped = UpstreamLimits::default().with_max_body_bytes(Some(4096));
        let (running, gw) = gateway_via(via, &format!("http://{up}"), capped, ServerLimits::default()).await;
        let (s, body) = raw_bytes(gw, &post(4096)).await;
        assert_eq!(s, 200, "at the cap: {body}");
        // Over the cap by Content-Length: 413, and the upstream never saw it (its
        // fallback counts what reaches it; /upload is a route, so use the fallback).
        let before = seen.0.load(Ordering::SeqCst);
        let mut over =
            b"POST /anything HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n".to_vec();
        over.extend(std::iter::repeat_n(b'z', 5000));
        let (s, body) = raw_bytes(gw, &over).await;
        assert_eq!(s, 413, "{body}");
        assert_eq!(seen.0.load(Ordering::SeqCst), before, "an over-cap request reached the upstream");
        // The same length on two header lines (hyper takes it as one): still 413.
        let mut twice = b"POST /anything HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n\
            Content-Length: 5000\r\nConnection: close\r\n\r\n"
            .to_vec();
        twice.extend(std::iter::repeat_n(b'z', 5000));
        let (s, body) = raw_bytes(gw, &twice).await;
        assert_eq!(s, 413, "{via:?}: {body}");
        assert_eq!(seen.0.load(Ordering::SeqCst), before, "{via:?}: a doubled over-cap length reached the upstream");
        // Over the cap while streaming (chunked): the upload is cut off, 413.
        let mut chunked =
            b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                .to_vec();
        for _ in 0..8 {
            chunked.extend_from_slice(b"400\r\n");
            chunked.extend(std::iter::repeat_n(b'z', 1024));
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let (s, body) = raw_bytes(gw, &chunked).await;
        assert_eq!(s, 413, "{body}");
        running.shutdown().await;
    }
}

async fn raw_bytes(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await.expect("answer in time").unwrap();
    let (status, _, body) = split(&buf);
    (status, body)
}

/// A hand-made upstream that counts the connections it accepts and answers
/// every request on a connection, keep-alive, with a fixed body; `/close`
/// answers with `Connection: close` and closes; `/big` sends 1 MiB.
async fn counting_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { return };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    let reply = match path.as_str() {
                        "/close" => {
                            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nclose\n".to_vec()
                        }
                        "/big" => {
                            // Larger than every socket buffer between here and the client.
                            let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", 16 << 20).into_bytes();
                            r.extend(std::iter::repeat_n(b'b', 16 << 20));
                            r
                        }
                        _ => b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n".to_vec(),
                    };
                    if s.write_all(&reply).await.is_err() || path == "/close" {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// A kept-alive client connection keeps the upstream connection its last
/// request used for its next (its requests do not hop between upstream
/// connections whose tasks another worker thread drives): two client
/// connections taking turns use two upstream connections, where one shared
/// stack would hand the same one to both.
#[tokio::test]
async fn a_kept_alive_client_keeps_its_upstream_connection() {
    let (up, accepted) = counting_upstream().await;
    let (running, gw) = gateway(&format!("http://{up}"), UpstreamLimits::default(), ServerLimits::default()).await;
    let mut a = TcpStream::connect(gw).await.unwrap();
    let mut b = TcpStream::connect(gw).await.unwrap();
    for i in 0..5 {
        for s in [&mut a, &mut b] {
            let answer = keep_alive_get(s, &format!("/turn{i}")).await;
            assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n"), "{answer}");
        }
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "upstream connections opened for two clients taking turns");
    running.shutdown().await;
}

/// On connection threads, each keeps its own upstream connections: client
/// connections one after the other, each accepted by whichever of two
/// threads is free first (one or both), reuse at most two upstream
/// connections (one per thread that served) and open no more.
#[tokio::test]
async fn each_connection_thread_reuses_its_own_upstream_connection() {
    let (up, accepted) = counting_upstream().await;
    let (running, gw) =
        gateway_via(Via::Workers, &format!("http://{up}"), UpstreamLimits::default(), ServerLimits::default()).await;
    for i in 0..20 {
        let (s, _, body) = raw(gw, &get_req(&format!("/r{i}"), "")).await;
        assert_eq!((s, body.as_str()), (200, "ok\n"));
    }
    let opened = accepted.load(Ordering::SeqCst);
    assert!((1..=2).contains(&opened), "{opened} upstream connections for two threads");
    running.shutdown().await;
}

/// Keep-alive to the upstream: sequential requests share one upstream
/// connection; a connection the upstream closes, or whose response the client
/// abandoned half-read, is never reused, and the next request still succeeds.
#[tokio::test]
async fn upstream_connections_are_pooled_and_bad_ones_dropped() {
    let (up, accepted) = counting_upstream().await;
    let (running, gw) = gateway(&format!("http://{up}"), UpstreamLimits::default(), ServerLimits::default()).await;
    for i in 0..20 {
        let (s, _, body) = raw(gw, &get_req(&format!("/r{i}"), "")).await;
        assert_eq!((s, body.as_str()), (200, "ok\n"));
    }
    // One client connection per request above, but one upstream connection for all.
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "the upstream connection was not reused");

    // The upstream says Connection: close: that connection is gone, the next
    // request opens a new one.
    let (s, _, body) = raw(gw, &get_req("/close", "")).await;
    assert_eq!((s, body.as_str()), (200, "close\n"));
    let (s, _, body) = raw(gw, &get_req("/after-close", "")).await;
    assert_eq!((s, body.as_str()), (200, "ok\n"));
    assert_eq!(accepted.load(Ordering::SeqCst), 2);

    // A client that reads a little of a big response and hangs up: the
    // upstream connection still has body bytes in flight and is dropped.
    let mut s = TcpStream::connect(gw).await.unwrap();
    s.write_all(get_req("/big", "").as_bytes()).await.unwrap();
    let mut some = [0u8; 1024];
    s.read_exact(&mut some).await.unwrap();
    drop(s);
    for _ in 0..5 {
        let (s, _, body) = raw(gw, &get_req("/again", "")).await;
        assert_eq!((s, body.as_str()), (200, "ok\n"), "a half-read connection was reused");
    }
    // Exactly one new connection: the half-read one was dropped, not reused.
    assert_eq!(accepted.load(Ordering::SeqCst), 3, "upstream connections opened");
    running.shutdown().await;
}

/// Issue #25 part 5: meshgate's namespace has one normal form (see
/// docs/security.md): every path that normalises into `/_meshgate` is
/// meshgate's and never forwarded, on every path to the proxy; the upstream
/// sees none of them, and a session cookie in any case form never reaches it.
#[tokio::test]
async fn meshgates_namespace_spelled_otherwise_is_never_forwarded() {
    let seen = Seen::default();
    let up = tcp_upstream(seen.clone()).await;
    for via in PATHS {
        let (running, gw) =
            gateway_via(via, &format!("http://{up}"), UpstreamLimits::default(), ServerLimits::default()).await;
        for path in ["//_meshgate/status", "/_MESHGATE/status", "/%5Fmeshgate/status", "/x/../_meshgate/metrics"] {
            let (s, _, body) = raw(gw, &get_req(path, "")).await;
            assert_eq!(s, 404, "{via:?} {path}: {body}");
            assert!(!body.contains("upstream saw"), "{via:?} {path}: {body}");
        }
        assert_eq!(seen.0.load(Ordering::SeqCst), 0, "{via:?}: the upstream saw meshgate's namespace");
        // A look-alike that is not meshgate's still goes through.
        let (s, _, body) = raw(gw, &get_req("/x/_meshgate/status", "")).await;
        assert_eq!((s, body.as_str()), (200, "upstream saw /x/_meshgate/status\n"), "{via:?}");
        seen.0.store(0, Ordering::SeqCst);
        // Case forms of the session cookie's name are stripped.
        let (s, _, body) =
            raw(gw, &get_req("/echo", "Cookie: Meshgate_Session=v1.1.n.m; app=1; MESHGATE_SESSION=x\r\n")).await;
        assert_eq!(s, 200, "{via:?}");
        assert!(body.contains("\"cookie\":[\"app=1\"]"), "{via:?}: {body}");
        running.shutdown().await;
    }
}
