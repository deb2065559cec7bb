//! Hostile-client limits that are not about headers: the request body cap on
//! meshgate's own routes (and an embedding program's), the cap on open
//! connections, and their flags and config keys. (Forwarded bodies: see
//! `upstream.rs`.)

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::routing::{get, post};
use axum::Router;
use meshgate::gateway::{app, AppState, ServerLimits};
use meshgate::gateway::{Gateway, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{keep_alive_get, read_response};

/// meshgate's own router (`/healthz`, `/status`, `/ws`) on 127.0.0.1:0.
async fn own_routes(limits: ServerLimits) -> (Running<'static>, SocketAddr) {
    let running = Gateway::builder()
        .bind(["127.0.0.1"])
        .port(0)
        .follow(false)
        .limits(limits)
        .open_path("/healthz")
        .start_with(|s| app(s.clone()))
        .await
        .expect("gateway starts");
    let addr = running.addresses()[0];
    (running, addr)
}

/// Writes `request`, reads to EOF, returns the status code and the text.
async fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    (text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0), text)
}

#[tokio::test]
async fn own_routes_refuse_a_body_over_the_limit_with_413() {
    let (running, gw) = own_routes(ServerLimits::default().with_max_body_bytes(1024)).await;
    let with_body = |len: usize| {
        let mut r =
            format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
                .into_bytes();
        r.extend(std::iter::repeat_n(b'x', len));
        r
    };
    let (s, text) = exchange(gw, &with_body(4096)).await;
    assert_eq!(s, 413, "{text}");
    let (s, text) = exchange(gw, &with_body(512)).await;
    assert_eq!(s, 200, "{text}");
    // The default is axum's own extractor default, 2 MiB.
    assert_eq!(ServerLimits::default().max_body_bytes, 2 << 20);
    assert_eq!(AppState::new(None).max_body_bytes(), 2 << 20);
    running.shutdown().await;
}

/// An embedding program's routes get the same cap, also for a chunked body
/// whose length is only known as it streams in.
#[tokio::test]
async fn an_embedded_router_gets_the_body_cap_for_chunked_bodies_too() {
    let my_app = Router::new().route("/echo", post(|body: Bytes| async move { format!("{} bytes\n", body.len()) }));
    let running = Gateway::builder()
        .bind(["127.0.0.1"])
        .port(0)
        .follow(false)
        .limits(ServerLimits::default().with_max_body_bytes(1000))
        .start(my_app)
        .await
        .expect("start");
    let gw = running.addresses()[0];
    let chunked = |chunks: usize| {
        let mut r =
            b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                .to_vec();
        for _ in 0..chunks {
            r.extend_from_slice(b"100\r\n");
            r.extend(std::iter::repeat_n(b'y', 256));
            r.extend_from_slice(b"\r\n");
        }
        r.extend_from_slice(b"0\r\n\r\n");
        r
    };
    let (s, text) = exchange(gw, &chunked(8)).await;
    assert_eq!(s, 413, "{text}");
    let (s, text) = exchange(gw, &chunked(3)).await;
    assert_eq!((s, text.ends_with("768 bytes\n")), (200, true), "{text}");
    running.shutdown().await;
}

/// With a cap of one connection, a second client is not served while the first
/// holds its (idle, kept-alive) connection, and is served as soon as it closes.
#[tokio::test]
async fn the_connection_past_the_cap_waits_until_one_closes() {
    let limits = ServerLimits::default().with_max_connections(1);
    let my_app = Router::new().route("/n", get(|| async { "served\n" }));
    let running =
        Gateway::builder().bind(["127.0.0.1"]).port(0).follow(false).limits(limits).start(my_app).await.expect("start");
    let gw = running.addresses()[0];

    let mut first = TcpStream::connect(gw).await.unwrap();
    assert!(keep_alive_get(&mut first, "/n").await.ends_with("served\n"));
    // The second connection completes its TCP handshake (the kernel queues it)
    // and sends a whole request...
    let mut second = TcpStream::connect(gw).await.unwrap();
    second.write_all(b"GET /n HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    // ...and while the first is served again, and again, nothing answers it:
    // the gateway has not accepted it. (The runtime is single-threaded, so by
    // the time these round trips are done the accept loop has run.)
    for _ in 0..3 {
        assert!(keep_alive_get(&mut first, "/n").await.ends_with("served\n"));
    }
    let mut peek = [0u8; 1];
    match second.try_read(&mut peek) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the connection past the cap was answered: {other:?}"),
    }
    // The first goes away: its permit comes back and the second is served.
    drop(first);
    assert!(read_response(&mut second).await.ends_with("served\n"));
    assert_eq!(ServerLimits::default().max_connections, 512);
    running.shutdown().await;
}

/// The permit lives as long as the socket: an upgraded (WebSocket) connection
/// still counts after its HTTP exchange is over.
#[tokio::test]
async fn an_upgraded_connection_keeps_its_permit() {
    let (running, gw) = own_routes(ServerLimits::default().with_max_connections(1)).await;
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{gw}/ws")).await.expect("ws");
    let mut second = TcpStream::connect(gw).await.unwrap();
    second.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    // A round trip on the WebSocket lets the accept loop run.
    let (mut tx, mut rx) = futures_util::StreamExt::split(ws);
    futures_util::SinkExt::send(&mut tx, tokio_tungstenite::tungstenite::Message::Ping(vec![1].into())).await.unwrap();
    loop {
        match futures_util::StreamExt::next(&mut rx).await {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Pong(_))) => break,
            Some(Ok(_)) => continue,
            other => panic!("websocket: {other:?}"),
        }
    }
    let mut peek = [0u8; 1];
    assert!(
        matches!(second.try_read(&mut peek), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "served past the cap while a WebSocket was open"
    );
    drop((tx, rx));
    assert!(read_response(&mut second).await.ends_with("ok\n"));
    running.shutdown().await;
}

#[test]
fn limit_flags_and_config_keys_are_checked() {
    for (args, needle) in [
        (vec!["--max-connections", "0"], "from 1"),
        (vec!["--max-connections", "many"], "not a number"),
        (vec!["--max-body-bytes", "lots"], "not a number"),
        (vec!["--upstream-max-body-bytes", "2199023255553"], "from 0"),
    ] {
        super::assert_serve_usage_error(&args, needle);
    }
    let (code, e) = super::serve_with_config("limits", "[limits]\nmax_connections = 0\n");
    assert_eq!(code, Some(78), "{e}");
    assert!(e.contains("limits.max_connections") && e.contains("m.toml"), "{e}");
}

#[test]
fn serve_options_apply_precedence_to_the_new_limits() {
    use clap::Parser;
    use meshgate::cli::serve_options;
    let parse = |args: &[&str]| match meshgate::cli::Cli::try_parse_from(args).unwrap().command {
        Some(meshgate::cli::Command::Serve(a)) => a,
        _ => unreachable!(),
    };
    let defaults = serve_options(&parse(&["meshgate", "serve"]), None).unwrap();
    assert_eq!(defaults.server_limits.max_connections, 512);
    assert_eq!(defaults.server_limits.max_body_bytes, 2 << 20);
    assert_eq!(defaults.upstream_limits.max_body_bytes, None, "forwarded bodies have no cap by default");

    let file = meshgate::core::config::FileConfig::parse(
        "[limits]\nmax_connections = 64\nmax_body_bytes = 4096\nupstream_max_body_bytes = 1048576\n",
        std::path::Path::new("m.toml"),
    )
    .unwrap();
    let path = std::path::Path::new("m.toml");
    let from_file = serve_options(&parse(&["meshgate", "serve"]), Some((path, &file))).unwrap();
    assert_eq!(from_file.server_limits.max_connections, 64);
    assert_eq!(from_file.server_limits.max_body_bytes, 4096);
    assert_eq!(from_file.upstream_limits.max_body_bytes, Some(1 << 20));
    let flags = parse(&["meshgate", "serve", "--max-connections", "8", "--upstream-max-body-bytes", "10"]);
    let both = serve_options(&flags, Some((path, &file))).unwrap();
    assert_eq!(both.server_limits.max_connections, 8, "the flag wins over the file");
    assert_eq!(both.server_limits.max_body_bytes, 4096);
    assert_eq!(both.upstream_limits.max_body_bytes, Some(10));
}

/// Issue #25 part 3: a request body that stops is bounded like nginx's
/// `client_body_timeout`, by the idle timeout between two reads: `POST
/// /_meshgate/login` with `Content-Length: 100` and no body is closed after
/// about the idle timeout (3 s here), not held open while the sign-in handler
/// waits for the form. The same holds for a forwarded request's body.
#[tokio::test]
async fn a_request_body_that_stops_is_closed_after_the_idle_timeout() {
    use meshgate::gateway::proxy::{Proxy, Upstream, UpstreamLimits};
    let token = meshgate::gateway::Token::new("s3cret-token-for-body-tests", "test").unwrap();
    // An upstream that reads whatever comes and never answers.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = upstream.accept().await {
            tokio::spawn(async move {
                let mut b = [0u8; 1024];
                while matches!(s.read(&mut b).await, Ok(n) if n > 0) {}
            });
        }
    });
    let proxy = Proxy::new(Upstream::parse(&format!("http://{at}")).unwrap(), UpstreamLimits::default(), None);
    let running = Gateway::builder()
        .bind(["127.0.0.1"])
        .port(0)
        .follow(false)
        .token(token)
        .limits(ServerLimits::default().with_idle_timeout(std::time::Duration::from_secs(3)))
        .start_upstream(proxy)
        .await
        .expect("gateway starts");
    let gw = running.addresses()[0];
    for (path, extra) in [
        ("/_meshgate/login", format!("Origin: http://{gw}\r\n")),
        ("/upload", "Authorization: Bearer s3cret-token-for-body-tests\r\n".to_owned()),
    ] {
        let mut s = TcpStream::connect(gw).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {gw}\r\n{extra}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(b"token=abc").await.unwrap();
        let t0 = std::time::Instant::now();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf)).await;
        let took = t0.elapsed();
        assert!(read.is_ok(), "{path}: a stopped body held the connection open 10 s");
        assert!(
            took >= std::time::Duration::from_millis(2900) && took < std::time::Duration::from_secs(5),
            "{path}: closed after {took:?}"
        );
    }
    running.shutdown().await;
}
