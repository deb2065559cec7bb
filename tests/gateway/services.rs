//! Issue #30 without namespaces: TCP services served in-process on loopback
//! (which admits as it does for HTTP) against a real upstream socket in the
//! test: half-close both ways, resets passed on, the idle timeout, an
//! upstream that is down (the client is closed, not left hanging), the
//! PROXY protocol v2 header; and, through the binary, the start-up rules: a
//! TCP service off loopback with no allow-list is refused (78) by `serve` and
//! `explain`, naming the service, and `allow_peers = ["*"]` is named as
//! admitting every peer of the mesh.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use meshgate::gateway::{Gateway, Running, Service};

use super::{meshgate, run, Server};

/// A gateway on loopback with `service` (port 0: a free port) and nothing else.
async fn start(service: Service) -> (Running<'static>, SocketAddr) {
    let name = service.name().to_owned();
    let running = Gateway::builder()
        .bind(["127.0.0.1"])
        .port(0)
        .follow(false)
        .service(service.bind(["127.0.0.1"]))
        .start(axum::Router::new())
        .await
        .expect("start");
    let addrs = running.service_addresses(&name).expect("the service runs");
    assert_eq!(addrs.len(), 1, "{addrs:?}");
    (running, addrs[0])
}

fn upstream() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("tcp://{}", l.local_addr().unwrap());
    (l, url)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// The client's FIN reaches the upstream and the reply still flows back;
/// then the upstream's FIN reaches the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_passes_through_both_ways() {
    let (up, url) = upstream();
    let (running, addr) = start(Service::tcp("echo", 0, &url).unwrap()).await;
    let server = std::thread::spawn(move || {
        let (mut s, _) = up.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        // Read to EOF: only the client's FIN passed on ends this.
        s.read_to_end(&mut got).unwrap();
        s.write_all(format!("got {} bytes", got.len()).as_bytes()).unwrap();
        got
    });
    let answer = tokio::task::spawn_blocking(move || {
        let mut c = connect(addr);
        c.write_all(&vec![7u8; 100_000]).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        answer
    })
    .await
    .unwrap();
    assert_eq!(server.join().unwrap().len(), 100_000);
    assert_eq!(answer, "got 100000 bytes");
    running.shutdown().await;
}

/// An upstream that resets its connection: the client's is reset too (not a
/// clean close that would read as a complete answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_reset_reaches_the_client_as_a_reset() {
    let (up, url) = upstream();
    let (running, addr) = start(Service::tcp("rst", 0, &url).unwrap()).await;
    let server = std::thread::spawn(move || {
        let (mut s, _) = up.accept().unwrap();
        let mut b = [0u8; 5];
        s.read_exact(&mut b).unwrap();
        socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
        drop(s);
    });
    let got = tokio::task::spawn_blocking(move || {
        let mut c = connect(addr);
        c.write_all(b"hello").unwrap();
        let mut buf = [0u8; 16];
        c.read(&mut buf)
    })
    .await
    .unwrap();
    server.join().unwrap();
    match got {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
        Ok(n) => panic!("the client read {n} bytes (a clean close), not a reset"),
    }
    running.shutdown().await;
}

/// A client that resets: the upstream sees a reset too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reset_reaches_the_upstream_as_a_reset() {
    let (up, url) = upstream();
    let (running, addr) = start(Service::tcp("rst2", 0, &url).unwrap()).await;
    let server = std::thread::spawn(move || {
        let (mut s, _) = up.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 5];
        s.read_exact(&mut b).unwrap();
        let mut rest = [0u8; 16];
        s.read(&mut rest)
    });
    tokio::task::spawn_blocking(move || {
        let mut c = connect(addr);
        c.write_all(b"hello").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO)).unwrap();
        drop(c);
    })
    .await
    .unwrap();
    match server.join().unwrap() {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
        Ok(n) => panic!("the upstream read {n} bytes (a clean close), not a reset"),
    }
    running.shutdown().await;
}

/// Nothing either way for the idle timeout: both connections are closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let (up, url) = upstream();
    let service = Service::tcp("idle", 0, &url).unwrap().idle_timeout(Duration::from_millis(400));
    let (running, addr) = start(service).await;
    let server = std::thread::spawn(move || {
        let (mut s, _) = up.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        s.write_all(b"pong").unwrap();
        let t = Instant::now();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        t.elapsed()
    });
    let (answer, closed_after) = tokio::task::spawn_blocking(move || {
        let mut c = connect(addr);
        c.write_all(b"ping").unwrap();
        let mut b = [0u8; 4];
        c.read_exact(&mut b).unwrap();
        let t = Instant::now();
        let mut rest = Vec::new();
        let n = c.read_to_end(&mut rest).expect("a clean close, not a timeout of the test's read");
        assert_eq!(n, 0);
        (b, t.elapsed())
    })
    .await
    .unwrap();
    assert_eq!(&answer, b"pong");
    assert!(closed_after >= Duration::from_millis(350) && closed_after < Duration::from_secs(2), "{closed_after:?}");
    let upstream_closed_after = server.join().unwrap();
    assert!(upstream_closed_after < Duration::from_secs(2), "{upstream_closed_after:?}");
    running.shutdown().await;
}

/// Nothing listens at the upstream: the client's connection is closed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_is_down_closes_the_client_instead_of_hanging() {
    let (up, url) = upstream();
    drop(up);
    let (running, addr) = start(Service::tcp("down", 0, &url).unwrap()).await;
    let (n, took) = tokio::task::spawn_blocking(move || {
        let mut c = connect(addr);
        let t = Instant::now();
        let mut rest = Vec::new();
        let n = c.read_to_end(&mut rest).map(|_| rest.len());
        (n, t.elapsed())
    })
    .await
    .unwrap();
    assert_eq!(n.expect("closed, not timed out"), 0);
    assert!(took < Duration::from_secs(2), "{took:?}");
    let stats = running.tcp_handlers()[0].stats().values();
    assert!(stats.iter().any(|(k, _, v)| *k == "tcp_upstream_failed_total" && *v == 1), "{stats:?}");
    running.shutdown().await;
}

/// `proxy_protocol = true`: the upstream first reads a v2 header naming the
/// client's address and port and the address it connected to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_reads_a_proxy_v2_header_first() {
    let (up, url) = upstream();
    let (running, addr) = start(Service::tcp("pp", 0, &url).unwrap().proxy_protocol(true)).await;
    let server = std::thread::spawn(move || {
        let (mut s, _) = up.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut head = [0u8; 16];
        s.read_exact(&mut head).unwrap();
        let len = u16::from_be_bytes([head[14], head[15]]) as usize;
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).unwrap();
        let mut hello = [0u8; 5];
        s.read_exact(&mut hello).unwrap();
        (head, body, hello)
    });
    let client = tokio::task::spawn_blocking(move || {
        let mut c = connect(addr);
        c.write_all(b"hello").unwrap();
        let local = c.local_addr().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        local
    })
    .await
    .unwrap();
    let (head, body, hello) = server.join().unwrap();
    assert_eq!(&head[..12], b"\r\n\r\n\0\r\nQUIT\n");
    assert_eq!((head[12], head[13]), (0x21, 0x11), "v2 PROXY, TCP over IPv4");
    assert_eq!(&body[..4], &[127, 0, 0, 1]);
    assert_eq!(u16::from_be_bytes([body[8], body[9]]), client.port(), "the client's port");
    assert_eq!(u16::from_be_bytes([body[10], body[11]]), addr.port(), "the service's port");
    assert_eq!(body.len(), 12, "loopback: no peer, no TLVs");
    assert_eq!(&hello, b"hello");
    running.shutdown().await;
}

/// Two services on one address and port: refused at start, naming both.
#[tokio::test]
async fn two_services_on_one_port_are_refused_naming_both() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let e = Gateway::builder()
        .bind(["127.0.0.1"])
        .port(0)
        .follow(false)
        .service(Service::tcp("ssh", port, "tcp://127.0.0.1:22").unwrap().bind(["127.0.0.1"]))
        .service(Service::tcp("pg", port, "tcp://127.0.0.1:5432").unwrap().bind(["127.0.0.1"]))
        .start(axum::Router::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"ssh\"") && e.contains("\"pg\"") && e.contains(&format!("127.0.0.1:{port}")), "{e}");
}

fn config(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

/// A TCP service that could listen off loopback with no allow-list: `serve`
/// and `explain` refuse (78), naming the service and the fix, from the flag
/// and from a `[[service]]` table alike; bound to loopback it starts.
#[test]
fn a_tcp_service_off_loopback_without_an_allow_list_is_refused_naming_it() {
    let token = config("a-token-of-enough-length-0123456789\n");
    let token = token.path().to_str().unwrap().to_owned();
    let out =
        run(&mut meshgate(&["serve", "--bind", "wireguard", "--token-file", &token, "--tcp", "15432=127.0.0.1:5432"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("\"tcp-15432\"") && err.contains("allow_peers"), "{err}");
    let out = run(&mut meshgate(&[
        "explain",
        "--bind",
        "wireguard",
        "--token-file",
        &token,
        "--tcp",
        "15432=127.0.0.1:5432",
    ]));
    assert_eq!(out.status.code(), Some(78), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("refused; serve would stop here"));

    let file = config(
        "[[service]]\nname = \"postgres\"\nport = 15433\nprotocol = \"tcp\"\nupstream = \"tcp://127.0.0.1:5432\"\nbind = [\"wireguard\"]\n",
    );
    let path = file.path().to_str().unwrap();
    let out = run(&mut meshgate(&["serve", "--config", path]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("\"postgres\"") && err.contains("port 15433"), "{err}");

    // ["*"] is the explicit opt-in, named as such by explain.
    let file = config(
        "[[service]]\nname = \"mqtt\"\nport = 15434\nprotocol = \"tcp\"\nupstream = \"tcp://127.0.0.1:1883\"\nbind = [\"wireguard\"]\nallow_peers = [\"*\"]\n",
    );
    let out = run(&mut meshgate(&["explain", "--json", "--config", file.path().to_str().unwrap()]));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let mqtt = &doc["services"][0];
    assert_eq!(mqtt["name"], "mqtt");
    assert_eq!(mqtt["any_peer"], true);
    assert!(mqtt["access"].as_str().unwrap().contains("every peer of the mesh"), "{mqtt}");
    assert!(mqtt["refused"].is_null(), "{mqtt}");
}

/// A bad `--tcp` is a usage error naming the value; a `[[service]]` typo is
/// 78 naming the file and line.
#[test]
fn bad_tcp_flags_and_service_tables_name_the_value() {
    let out = run(&mut meshgate(&["serve", "--tcp", "5432"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PORT=UPSTREAM"));
    let out = run(&mut meshgate(&["serve", "--tcp", "5432=http://127.0.0.1:1"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tcp://HOST:PORT"));
    let file = config("[[service]]\nname = \"pg\"\nport = 5432\nprotocl = \"tcp\"\nupstream = \"tcp://h:1\"\n");
    let out = run(&mut meshgate(&["serve", "--config", file.path().to_str().unwrap()]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("protocl") && err.contains("line 4"), "{err}");
    // `meshgate` names the top-level service (metrics, access log, status):
    // a `[[service]]` may not take it.
    let file = config("[[service]]\nname = \"meshgate\"\nport = 5432\nprotocol = \"tcp\"\nupstream = \"tcp://h:1\"\n");
    let out = run(&mut meshgate(&["explain", "--config", file.path().to_str().unwrap()]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("line 2: service.meshgate.name") && err.contains("another name"), "{err}");
    // A tls service needs the top level's certificate: serve and explain say so.
    let file = config("[[service]]\nname = \"mqtt\"\nport = 8883\nprotocol = \"tls\"\nupstream = \"tcp://h:1\"\n");
    for cmd in ["serve", "explain"] {
        let out = run(&mut meshgate(&[cmd, "--config", file.path().to_str().unwrap()]));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{cmd}: {err}");
        assert!(err.contains("line 4: service.mqtt.protocol") && err.contains("[tls]"), "{cmd}: {err}");
        assert!(err.contains("--tls internal"), "{cmd}: {err}");
    }
    // With the local CA's certificate it is accepted.
    let state = tempfile::tempdir().unwrap();
    let out = run(&mut meshgate(&[
        "explain",
        "--config",
        file.path().to_str().unwrap(),
        "--tls",
        "internal",
        "--state-dir",
        state.path().to_str().unwrap(),
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("tls://127.0.0.1:8883"), "{text}");
    // A service's bind is read as the top level's (a string of selectors
    // too); a typo names its own line and the selector meant.
    let file = config(
        "[[service]]\nname = \"pg\"\nport = 5432\nprotocol = \"tcp\"\nbind = \"loopback, wiregaurd\"\nupstream = \"tcp://h:1\"\n",
    );
    let out = run(&mut meshgate(&["explain", "--config", file.path().to_str().unwrap()]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("line 5: service.pg.bind") && err.contains("did you mean `wireguard`"), "{err}");
    let file = config(
        "[[service]]\nname = \"pg\"\nport = 5432\nprotocol = \"tcp\"\nbind = \"loopback,127.0.0.1\"\nupstream = \"tcp://h:1\"\n",
    );
    let out = run(&mut meshgate(&["explain", "--json", "--config", file.path().to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["services"][0]["bind"], serde_json::json!(["loopback", "127.0.0.1"]), "{doc}");
    // `tls` is an HTTP service's key.
    let file =
        config("[[service]]\nname = \"pg\"\nport = 5432\nprotocol = \"tcp\"\ntls = true\nupstream = \"tcp://h:1\"\n");
    let out = run(&mut meshgate(&["serve", "--config", file.path().to_str().unwrap()]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("service.pg.tls") && err.contains("for HTTP services"), "{err}");
}

/// An HTTP upstream answering every request with `NAME PATH`, on a thread.
fn named_upstream(name: &'static str) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(1) => head.push(b[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split_whitespace().nth(1).unwrap_or("?");
                let body = format!("{name} {path}");
                let _ = s.write_all(
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                        .as_bytes(),
                );
            });
        }
    });
    url
}

/// Two HTTP services on one port: the longest path prefix wins, on a segment
/// boundary, and the upstream sees the path unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_http_services_share_a_port_by_path() {
    use meshgate::gateway::Upstream;
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dash = Service::http("dash", port, Upstream::parse(&named_upstream("dash")).unwrap()).unwrap();
    let grafana =
        Service::http("grafana", port, Upstream::parse(&named_upstream("grafana")).unwrap()).unwrap().path("/grafana");
    let running = Gateway::builder()
        .bind(["127.0.0.1"])
        .port(0)
        .follow(false)
        .service(dash.bind(["127.0.0.1"]))
        .service(grafana.bind(["127.0.0.1"]))
        .start(axum::Router::new())
        .await
        .expect("start");
    let addr = running.service_addresses("grafana").expect("grafana runs")[0];
    assert_eq!(running.service_addresses("dash").unwrap(), [addr], "one listener set for both");
    for (path, want) in [
        ("/grafana/d/home", "grafana /grafana/d/home"),
        ("/grafana", "grafana /grafana"),
        ("/grafanax", "dash /grafanax"),
        ("/", "dash /"),
        ("/api/x", "dash /api/x"),
    ] {
        let got = tokio::task::spawn_blocking(move || super::http_get(addr, path, None)).await.unwrap();
        assert!(got.starts_with("HTTP/1.1 200") && got.ends_with(want), "{path}: {got}");
    }
    running.shutdown().await;
}

/// Two services of one name are refused at start, naming it: `/metrics`,
/// the access log and `/status` tell services apart by name (two HTTP
/// services sharing a port would count as one series), and a reload matches
/// the running services by name. The config file refuses a repeated name; the
/// library, and `--tcp 5432=...` beside a `[[service]]` named `tcp-5432`,
/// reach here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_of_one_name_are_refused() {
    use meshgate::gateway::Upstream;
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let up = || Upstream::parse("http://127.0.0.1:9").unwrap();
    let a = Service::http("dash", port, up()).unwrap().bind(["127.0.0.1"]);
    let b = Service::http("dash", port, up()).unwrap().path("/grafana").bind(["127.0.0.1"]);
    let started = Gateway::builder()
        .bind(["127.0.0.1"])
        .port(0)
        .follow(false)
        .service(a)
        .service(b)
        .start(axum::Router::new())
        .await;
    let err = match started {
        Ok(running) => {
            running.shutdown().await;
            panic!("two services named \"dash\" started");
        }
        Err(e) => e.to_string(),
    };
    assert!(err.contains("\"dash\"") && err.contains("its own name"), "{err}");
}

/// `/metrics` carries each TCP service's counters with a `service` label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_a_service_label() {
    let (up, url) = upstream();
    let running = Gateway::builder()
        .bind(["127.0.0.1"])
        .port(0)
        .follow(false)
        .status_routes("/_meshgate")
        .service(Service::tcp("pg", 0, &url).unwrap().bind(["127.0.0.1"]))
        .start(axum::Router::new())
        .await
        .expect("start");
    let (main, addr) = (running.addresses()[0], running.service_addresses("pg").unwrap()[0]);
    let server = std::thread::spawn(move || {
        let (mut s, _) = up.accept().unwrap();
        let mut b = [0u8; 2];
        s.read_exact(&mut b).unwrap();
        s.write_all(&b).unwrap();
    });
    tokio::task::spawn_blocking(move || {
        let mut c = connect(addr);
        c.write_all(b"hi").unwrap();
        let mut b = [0u8; 2];
        c.read_exact(&mut b).unwrap();
    })
    .await
    .unwrap();
    server.join().unwrap();
    let text = tokio::task::spawn_blocking(move || super::http_get(main, "/_meshgate/metrics", None)).await.unwrap();
    assert!(text.contains("meshgate_tcp_admitted_total{service=\"pg\"} 1"), "{text}");
    assert!(text.contains("meshgate_tcp_refused_peer_total{service=\"pg\"} 0"), "{text}");
    assert!(text.contains("# TYPE meshgate_tcp_open_connections gauge"), "{text}");
    // /status lists the service's listener beside the top-level one, named.
    let status = tokio::task::spawn_blocking(move || super::http_get(main, "/_meshgate/status", None)).await.unwrap();
    let body = status.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let doc: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {status}"));
    let listeners = doc["listeners"].as_array().expect("listeners");
    let pg: Vec<_> = listeners.iter().filter(|l| l["service"] == "pg").collect();
    assert_eq!(pg.len(), 1, "{doc}");
    // (Asked for port 0, each listener shows the port as asked.)
    assert!(pg[0]["url"].as_str().unwrap().starts_with("tcp://127.0.0.1:"), "{doc}");
    let top = |l: &&serde_json::Value| l.get("service").is_none() && l["url"].as_str().unwrap().starts_with("http://");
    assert_eq!(listeners.iter().filter(top).count(), 1, "{doc}");
    let _ = addr;
    running.shutdown().await;
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `meshgate status --json` from a running gateway: its services by name.
fn status_services(port: &str) -> Vec<serde_json::Value> {
    let o = run(&mut meshgate(&["status", "--json", "--port", port]));
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    doc["services"].as_array().cloned().unwrap_or_default()
}

fn listener_urls(service: &serde_json::Value) -> Vec<String> {
    let urls = service["listeners"].as_array().cloned().unwrap_or_default();
    urls.iter().filter_map(|l| l["url"].as_str().map(str::to_owned)).collect()
}

/// The status page (and `meshgate status`) shows each `[[service]]` and
/// `--tcp` service with its own listeners, and the top-level service with
/// only its own; a SIGHUP that adds a service shows it.
#[test]
fn status_shows_each_service_with_its_listeners() {
    let (port, db, cache) = (free_port().to_string(), free_port(), free_port());
    let table = |name: &str, port: u16| {
        format!(
            "[[service]]\nname = \"{name}\"\nport = {port}\nprotocol = \"tcp\"\nupstream = \"tcp://127.0.0.1:9\"\n\n"
        )
    };
    let cfg = config(&table("db", db));
    let cfg_path = cfg.path().to_str().unwrap().to_owned();
    let tcp = free_port();
    let flag = format!("{tcp}=127.0.0.1:9");
    let server = Server::start(&mut meshgate(&["serve", "--port", &port, "--config", &cfg_path, "--tcp", &flag]));
    server.wait_lines(1);
    let listening = |services: &[serde_json::Value], name: &str, url: &str| {
        services.iter().any(|s| s["name"] == name && listener_urls(s).iter().any(|u| u == url))
    };
    let db_url = format!("tcp://127.0.0.1:{db}");
    let ready = wait(|| listening(&status_services(&port), "db", &db_url));
    let services = status_services(&port);
    assert!(ready, "{services:?}");
    let names: Vec<&str> = services.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["meshgate", &format!("tcp-{tcp}"), "db"], "{services:?}");
    assert!(listening(&services, &format!("tcp-{tcp}"), &format!("tcp://127.0.0.1:{tcp}")), "{services:?}");
    let db_doc = services.iter().find(|s| s["name"] == "db").unwrap();
    assert_eq!((db_doc["protocol"].as_str(), db_doc["upstream"].as_str()), (Some("tcp"), Some("tcp://127.0.0.1:9")));
    // The top-level service has its own listeners only.
    let top = listener_urls(&services[0]);
    assert!(
        !top.is_empty() && top.iter().all(|u| u.starts_with("http://") && u.ends_with(&format!(":{port}"))),
        "{top:?}"
    );
    // The table says the same.
    let o = run(&mut meshgate(&["status", "--port", &port]));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("service db (tcp) -> tcp://127.0.0.1:9") && text.contains(&db_url), "{text}");

    // A reload adds `cache`: the page shows it.
    std::fs::write(cfg.path(), format!("{}{}", table("db", db), table("cache", cache))).unwrap();
    let hup = std::process::Command::new("kill").args(["-HUP", &server.pid().to_string()]).status().unwrap();
    assert!(hup.success());
    let cache_url = format!("tcp://127.0.0.1:{cache}");
    assert!(wait(|| listening(&status_services(&port), "cache", &cache_url)), "{:?}", status_services(&port));
}

/// Polls `f` for up to 10 s.
fn wait(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// docs/services.md's worked example (a dashboard, Grafana on a path,
/// PostgreSQL for one peer, SSH for two, MQTT over TLS) is one config file
/// meshgate takes as written: `explain` accepts it (0) and shows the five
/// services with their protocol, upstream and who may use each. Only the
/// token's path is moved into a scratch directory.
#[test]
fn the_worked_example_in_docs_services_is_one_config_meshgate_takes() {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/services.md")).unwrap();
    let block = page.split("```toml\n").nth(1).and_then(|b| b.split("\n```").next()).expect("the worked example");
    assert!(block.contains("# /etc/meshgate/meshgate.toml"), "the first toml block is the worked example: {block}");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "a-token-of-enough-length-0123456789\n").unwrap();
    let text = block.replace("\"/etc/meshgate/token\"", &format!("{:?}", token.to_str().unwrap()));
    assert_ne!(text, block, "the example names /etc/meshgate/token");
    let file = config(&text);
    let out = run(&mut meshgate(&["explain", "--json", "--config", file.path().to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let services = doc["services"].as_array().expect("services");
    let seen: Vec<(String, String, String)> = services
        .iter()
        .map(|s| (s["name"].to_string(), s["protocol"].to_string(), s["upstream"].to_string()))
        .collect();
    let want = [
        ("dashboard", "http", "http://127.0.0.1:3000"),
        ("grafana", "http", "http://127.0.0.1:3001"),
        ("postgres", "tcp", "tcp://127.0.0.1:5432"),
        ("ssh", "tcp", "tcp://127.0.0.1:22"),
        ("mqtt", "tls", "tcp://127.0.0.1:1883"),
    ]
    .map(|(n, p, u)| (format!("{n:?}"), format!("{p:?}"), format!("{u:?}")));
    assert_eq!(seen, want, "{}", String::from_utf8_lossy(&out.stdout));
    for s in services {
        assert!(s["refused"].is_null(), "{s}");
    }
    let access = |name: &str| services.iter().find(|s| s["name"] == name).unwrap()["access"].to_string();
    assert!(access("postgres").contains("its own allow-list"), "{}", access("postgres"));
    assert!(access("ssh").contains("top-level allow-list"), "{}", access("ssh"));
}
