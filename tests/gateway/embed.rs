//! The library API: an axum app served through `meshgate::gateway::Gateway`
//! in-process, its refusals, the hand-back of listeners, and the
//! `examples/embed.rs` binary itself.

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use meshgate::gateway::Token;
use meshgate::gateway::{Error, Event, Gateway};

use super::http_get as get_text;
use super::Server;

fn my_app() -> Router {
    Router::new().route("/", get(|| async { "hello from my app\n" }))
}

#[tokio::test]
async fn serves_the_callers_router_on_loopback() {
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = events.clone();
    let running = Gateway::builder()
        .bind(["127.0.0.1"])
        .port(0)
        .follow(false)
        .on_event(move |e| seen.lock().unwrap().push(e.clone()))
        .status_routes("/_meshgate")
        .start(my_app())
        .await
        .expect("start");
    let addrs = running.addresses();
    assert_eq!(addrs.len(), 1, "{addrs:?}");
    let addr = addrs[0];
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    // One Listening event, with the port the OS chose.
    match events.lock().unwrap().as_slice() {
        [Event::Listening { listener: l, tls: false }] => assert_eq!(l.socket_addr(), addr),
        other => panic!("expected one Listening event, got {other:?}"),
    }
    let r = tokio::task::spawn_blocking(move || get_text(addr, "/", None)).await.unwrap();
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("hello from my app\n"), "{r}");
    let r = tokio::task::spawn_blocking(move || get_text(addr, "/_meshgate/status", None)).await.unwrap();
    assert!(r.contains("\"listeners\""), "{r}");
    assert_eq!(running.view().listeners.len(), 1);
    running.shutdown().await;
    // Nothing of ours listens there any more. (Another test running alongside
    // may already have bound the freed port: then it must not be this app.)
    if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
        use std::io::{Read, Write};
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let mut r = String::new();
        let _ = s.read_to_string(&mut r);
        assert!(!r.contains("hello from my app"), "still listening: {r}");
    }
}

#[tokio::test]
async fn refuses_non_loopback_without_a_token_and_bad_selectors() {
    let e = Gateway::builder().bind(["lan"]).port(0).follow(false).start(my_app()).await.unwrap_err();
    assert!(matches!(e, Error::Refused(_)), "{e}");
    assert!(e.to_string().contains("without a token"), "{e}");
    let e = Gateway::builder().bind(["wiregaurd"]).follow(false).start(my_app()).await.unwrap_err();
    assert!(matches!(e, Error::Selector(_)), "{e}");
    assert!(e.to_string().contains("wireguard"), "a did-you-mean names the right mode: {e}");
}

#[tokio::test]
async fn non_loopback_routes_need_the_token() {
    use axum::body::Body;
    use axum::http::{header, Request, StatusCode};
    use meshgate::gateway::auth::require_token;
    use meshgate::gateway::{AppState, ListenerCtx};
    use tower::ServiceExt;
    // What `start` wraps the caller's router in, seen from a mesh listener.
    let state = AppState::with_open_paths(Some(Token::new("tok", "test").unwrap()), ["/healthz"]);
    let app = my_app()
        .route("/healthz", get(|| async { "ok" }))
        .layer(axum::middleware::from_fn_with_state(state, require_token))
        .layer(axum::Extension(ListenerCtx { local: "10.8.0.1:8080".parse().unwrap(), loopback: false, tls: false }));
    let call = |path: &str, auth: Option<&str>| {
        let mut r = Request::get(path);
        if let Some(a) = auth {
            r = r.header(header::AUTHORIZATION, a);
        }
        app.clone().oneshot(r.body(Body::empty()).unwrap())
    };
    assert_eq!(call("/", None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(call("/", Some("Bearer nope")).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(call("/", Some("Bearer tok")).await.unwrap().status(), StatusCode::OK);
    assert_eq!(call("/healthz", None).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn hands_back_bound_listeners() {
    let listeners = Gateway::builder().bind(["127.0.0.1"]).port(0).listeners().await.expect("bind");
    assert_eq!(listeners.len(), 1);
    let (l, socket) = listeners.into_iter().next().unwrap();
    assert_eq!(l.address.addr.to_string(), "127.0.0.1");
    let addr = socket.local_addr().unwrap();
    let task = tokio::spawn(async move { axum::serve(socket, my_app()).await });
    let r = tokio::task::spawn_blocking(move || get_text(addr, "/", None)).await.unwrap();
    assert!(r.ends_with("hello from my app\n"), "{r}");
    task.abort();
}

/// Runs the built `examples/embed` binary (cargo test builds examples next to
/// the test binary's target directory).
#[test]
fn the_embed_example_serves_its_app() {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_meshgate")).with_file_name("examples").join("embed");
    if !bin.exists() {
        // `cargo test` builds examples; `cargo test --test main` alone does not.
        // In CI (which runs `cargo test --workspace`) a missing example is a failure.
        assert!(!crate::lab::in_ci(), "{} is not built in CI", bin.display());
        // Not eprintln!: libtest would swallow it for a passing test.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED the_embed_example_serves_its_app: {} is not built (run `cargo test`)",
            bin.display()
        );
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = Server::start(
        Command::new(&bin).env("APP_PORT", port.to_string()).env("APP_BIND", "127.0.0.1").env_remove("APP_TOKEN"),
    );
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // The example's own line, made from the Listening event: the library
        // itself writes nothing to stdout.
        let line = server.wait_lines(1).remove(0);
        assert_eq!(line, format!("app: listening on 127.0.0.1:{port} (ip)"));
        let r = get_text(format!("127.0.0.1:{port}").parse().unwrap(), "/", None);
        assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("hello from my app\n"), "{r}");
    }));
    // Everything else the process wrote to stdout, up to its end (the reader
    // sees EOF once the killed child is reaped): nothing.
    let rest = server.kill_and_rest();
    assert!(rest.is_empty(), "the library wrote to stdout: {rest:?}");
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

/// With `workers`, each connection is served on one of the worker threads
/// (the first free one accepts it from the listening socket they share); the
/// caller's own thread serves none.
#[tokio::test]
async fn workers_serve_the_connections() {
    let workers = meshgate::gateway::Workers::start(std::num::NonZeroUsize::new(2).unwrap()).expect("threads");
    let app =
        Router::new().route("/thread", get(|| async { std::thread::current().name().unwrap_or("unnamed").to_owned() }));
    let running =
        Gateway::builder().bind(["127.0.0.1"]).port(0).follow(false).workers(workers).start(app).await.expect("start");
    let addr = running.addresses()[0];
    for _ in 0..10 {
        // One connection each (`Connection: close`), from a plain thread.
        let answer = tokio::task::spawn_blocking(move || get_text(addr, "/thread", None)).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let name = answer.rsplit("\r\n\r\n").next().unwrap_or_default();
        assert!(["mg-conn-0", "mg-conn-1"].contains(&name), "served on {name}");
    }
    running.shutdown().await;
}
