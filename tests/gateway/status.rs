//! `meshgate status` against a real gateway on this host's loopback, and
//! against none (exit 3); the page and `/status` as a process serves them.

use std::net::{SocketAddr, TcpListener};

use super::{http_get, meshgate, run, Server};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn status_asks_the_running_gateway_and_prints_its_listeners() {
    let port = free_port();
    let p = port.to_string();
    let server = Server::start(&mut meshgate(&["serve", "--port", &p]));
    server.wait_lines(1);

    // The table.
    let o = run(&mut meshgate(&["status", "--port", &p]));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out} {}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("serving on loopback only, as the bind asks"), "{out}");
    assert!(out.contains("service meshgate (http) meshgate's own routes"), "{out}");
    assert!(out.contains(&format!("http://127.0.0.1:{port}")) && out.contains("loopback"), "{out}");
    assert!(out.contains("no WireGuard interface served"), "{out}");

    // The same port from the environment, and JSON for scripts.
    let o = run(meshgate(&["status", "--json"]).env("MESHGATE_PORT", &p));
    assert_eq!(o.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let listeners = doc["services"][0]["listeners"].as_array().expect("a service with listeners");
    assert!(listeners.iter().any(|l| l["url"] == format!("http://127.0.0.1:{port}")), "{doc}");
    assert_eq!(doc["you"]["door"], "loopback");
    assert!(doc["events"].as_array().is_some_and(|e| e.iter().any(|e| e["kind"] == "attach")), "{doc}");

    // The page itself: HTML with a strict CSP.
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let r = http_get(addr, "/", None);
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let lower = r.to_ascii_lowercase();
    assert!(lower.contains("content-type: text/html"), "{r}");
    let csp = lower.lines().find(|l| l.starts_with("content-security-policy:")).expect("a CSP");
    assert!(csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"), "{csp}");
    assert!(r.contains("serving on loopback only, as the bind asks"), "{r}");
}

#[test]
fn status_without_a_gateway_exits_3_and_says_where_it_looked() {
    let port = free_port().to_string();
    let o = run(&mut meshgate(&["status", "--port", &port]));
    assert_eq!(o.status.code(), Some(3));
    assert!(o.stdout.is_empty());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains(&format!("no meshgate answers on this host's loopback door at port {port}")), "{e}");
    assert!(e.contains("meshgate serve") && e.contains("--port"), "{e}");
}

#[test]
fn a_service_that_is_not_meshgate_is_not_taken_for_one() {
    // Something else answers on the port: still exit 3, naming what answered.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let answer = std::thread::spawn(move || {
        use std::io::{Read, Write};
        for _ in 0..2 {
            let Ok((mut s, _)) = listener.accept() else { return };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
        }
    });
    let o = run(&mut meshgate(&["status", "--port", &port]));
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stdout));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("not meshgate's status"), "{e}");
    let _ = answer.join();
}

#[test]
fn a_reload_is_a_recent_event() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("m.toml");
    std::fs::write(&config, "log_level = \"info\"\n").unwrap();
    let port = free_port().to_string();
    let server = Server::start(&mut meshgate(&["serve", "--port", &port, "--config", config.to_str().unwrap()]));
    server.wait_lines(1);
    std::fs::write(&config, "log_level = \"debug\"\n").unwrap();
    let pid = server.pid().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let mut last = serde_json::Value::Null;
    let seen = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let o = run(&mut meshgate(&["status", "--json", "--port", &port]));
        last = serde_json::from_slice(&o.stdout).unwrap_or_default();
        last["events"].as_array().is_some_and(|e| {
            e.iter().any(|e| e["kind"] == "reload" && e["text"].as_str().is_some_and(|t| t.contains("log filter")))
        })
    });
    assert!(seen, "no reload event naming the log filter: {}", last["events"]);
}

/// The page through the router alone: a tailnet caller let in by login is
/// named by it, the logins let in are listed, a stranger's browser is sent to
/// sign in and a stranger's script gets 401.
#[tokio::test]
async fn the_page_names_a_tailnet_caller_by_login_and_refuses_strangers() {
    use axum::body::Body;
    use axum::http::{header, Request, StatusCode};
    use axum::Extension;
    use meshgate::core::wgpeer::{AllowList, PeerNames};
    use meshgate::gateway::identity::Caller;
    use meshgate::gateway::status_page::PageInfo;
    use meshgate::gateway::{app, AppState, ListenerCtx, LiveListener, LiveView, PeerIdentity, PeerRules, Token};
    use tower::ServiceExt;

    let state = AppState::new(Some(Token::new("correct-horse-battery-staple", "test").unwrap())).with_signin("");
    let allow = AllowList::resolve(&PeerNames::default(), ["alice@example.com", "tag:ops"]).unwrap();
    state
        .status_board()
        .describe(PageInfo { rules: Some(PeerRules::shared(PeerNames::default(), allow)), ..PageInfo::default() });
    let listener = meshgate::core::Listener {
        address: meshgate::core::resolver::ScopedAddr {
            addr: "100.64.1.2".parse().unwrap(),
            scope_id: None,
            scope_name: None,
        },
        port: 18789,
        provider: "tailnet".into(),
        interface: Some("tailscale0".into()),
        reason: "tailscaled says tailscale0 is its interface".into(),
        role: meshgate::core::ListenerRole::Selected,
    };
    state.publish(LiveView {
        listeners: vec![LiveListener {
            listener,
            since: 0,
            tls: false,
            url: "http://100.64.1.2:18789".into(),
            service: None,
        }],
        fallback: false,
        fallback_reason: None,
    });
    let ctx = ListenerCtx { local: "100.64.1.2:18789".parse().unwrap(), loopback: false, tls: false };
    let alice = PeerIdentity {
        mesh: "tailscale".into(),
        interface: "tailscale0".into(),
        key: None,
        name: None,
        login: Some("alice@example.com".into()),
        node: Some("alice-laptop".into()),
        tags: Vec::new(),
        allowed: true,
    };
    let get = |caller: Option<PeerIdentity>, accept: &str| {
        let router = app(state.clone()).layer(Extension(ctx)).layer(Extension(Caller(caller.map(std::sync::Arc::new))));
        let request = Request::get("/").header(header::HOST, "100.64.1.2:18789").header(header::ACCEPT, accept);
        async move {
            let resp = router.oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
            let status = resp.status();
            let location = resp.headers().get(header::LOCATION).map(|v| v.to_str().unwrap().to_owned());
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
            (status, location, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let (status, _, page) = get(Some(alice.clone()), "text/html").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("alice@example.com, an allowed peer of tailscale on tailscale0"), "{page}");
    assert!(page.contains("let in by login or tag: alice@example.com, tag:ops"), "{page}");
    assert!(page.contains("serving on tailnet (1 address)"), "{page}");

    let stranger = PeerIdentity { login: Some("mallory@example.com".into()), allowed: false, ..alice };
    let (status, location, _) = get(Some(stranger.clone()), "text/html,*/*").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some("/login?next=%2F"));
    let (status, _, body) = get(Some(stranger), "*/*").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!body.contains("alice"), "{body}");
}

/// A tailnet caller that tailscaled's `whois` (the stand-in local API of
/// `tests/gateway/tailnet.rs`) names is listed by login in `/status` and on
/// the page after its request, with its node, tags, address and count; a
/// login with markup in it is shown as text.
#[tokio::test]
async fn tailnet_callers_are_listed_by_login_and_escaped() {
    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::http::{header, Request, StatusCode};
    use axum::Extension;
    use meshgate::core::fact::{DaemonFact, DaemonState};
    use meshgate::core::probe::standin::{self, Answer, StandIn};
    use meshgate::core::wgpeer::{AllowList, PeerNames};
    use meshgate::core::Snapshot;
    use meshgate::gateway::identity::Caller;
    use meshgate::gateway::{app, AppState, ListenerCtx, PeerLookup, TailnetPeers, Token};
    use tower::ServiceExt;

    let sock = std::env::temp_dir().join(format!("meshgate-status-tailnet-{}.sock", std::process::id()));
    let daemon = StandIn::start(sock).expect("stand-in");
    let allow = AllowList::resolve(&PeerNames::default(), ["tag:server"]).unwrap();
    let peers = std::sync::Arc::new(TailnetPeers::at(allow, daemon.path()));
    let mut snapshot = Snapshot::default();
    snapshot.facts.push(DaemonFact::new("tailscale", "tailscaled's local API", DaemonState::Running).on("tailscale0"));
    peers.observe(&snapshot);
    let state = AppState::new(Some(Token::new("correct-horse-battery-staple", "test").unwrap()))
        .with_peer_lookup(peers.clone());
    let ctx = ListenerCtx { local: "100.64.1.2:18789".parse().unwrap(), loopback: false, tls: false };
    let tagged: std::net::SocketAddr = "100.64.0.12:51234".parse().unwrap();
    let evil: std::net::SocketAddr = "100.64.0.13:40000".parse().unwrap();

    let get = |from: std::net::SocketAddr, path: &str, accept: &str| {
        let state = state.clone();
        let peers = peers.clone();
        let request = Request::get(path).header(header::HOST, "100.64.1.2:18789").header(header::ACCEPT, accept);
        async move {
            let caller = peers.identify("tailscale0", from).await.map(std::sync::Arc::new);
            let router =
                app(state).layer(Extension(ctx)).layer(Extension(Caller(caller))).layer(Extension(ConnectInfo(from)));
            let resp = router.oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    // A login with markup (a tailnet's login names are the identity
    // provider's, not meshgate's), not allowed: refused, and still listed.
    let marked = standin::WHOIS_USER.replace("alice@example.com", "<img src=x onerror=alert(1)>@example.com");
    daemon.answer("/localapi/v0/whois", Answer::Json(marked));
    let (status, _) = get(evil, "/status", "*/*").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A tagged node on the allow-list reads the status twice.
    daemon.answer("/localapi/v0/whois", Answer::Json(standin::WHOIS_TAGGED.into()));
    get(tagged, "/healthz", "*/*").await;
    let (status, json) = get(tagged, "/status", "application/json").await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let callers = doc["tailnet_callers"].as_array().expect("a tailnet_callers list");
    assert_eq!(callers.len(), 2, "{callers:?}");
    let first = &callers[0];
    assert_eq!(first["login"], "tagged-devices", "{first}");
    assert_eq!(first["node"], "ci-runner.office.headscale.example", "{first}");
    assert_eq!(first["tags"], serde_json::json!(["tag:ci", "tag:server"]));
    assert_eq!(first["address"], "100.64.0.12");
    assert_eq!(first["allowed"], true);
    assert_eq!(first["requests"], 2);
    assert_eq!(callers[1]["login"], "<img src=x onerror=alert(1)>@example.com");
    assert_eq!(
        (&callers[1]["allowed"], &callers[1]["address"]),
        (&serde_json::json!(false), &serde_json::json!("100.64.0.13"))
    );

    let (status, page) = get(tagged, "/", "text/html").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Tailnet callers"), "{page}");
    assert!(page.contains("<b>tagged-devices</b>") && page.contains("tag:ci, tag:server"), "{page}");
    assert!(page.contains("100.64.0.12"), "{page}");
    assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;@example.com"), "{page}");
    assert!(!page.contains("<img src=x"), "markup from a login reached the page");
}

/// A config file that no longer parses is refused at SIGHUP, and the page
/// says so; but the page (and `/status`) is seen by allowed peers who may not
/// hold the token, and toml's message quotes the offending line, which may be
/// `token = ...`. The event names the file and the line, never its text.
#[test]
fn a_refused_reload_never_shows_the_config_file_s_text() {
    const SECRET: &str = "s3cret-token-from-the-config-file";
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("m.toml");
    std::fs::write(&config, "log_level = \"info\"\n").unwrap();
    let port = free_port().to_string();
    let server = Server::start(&mut meshgate(&["serve", "--port", &port, "--config", config.to_str().unwrap()]));
    server.wait_lines(1);
    // The quotes forgotten: not TOML.
    std::fs::write(&config, format!("log_level = \"info\"\ntoken = {SECRET}\n")).unwrap();
    let pid = server.pid().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let mut last = String::new();
    let seen = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let o = run(&mut meshgate(&["status", "--json", "--port", &port]));
        last = String::from_utf8_lossy(&o.stdout).into_owned();
        let doc: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
        doc["events"].as_array().is_some_and(|e| {
            e.iter().any(|e| e["kind"] == "reload" && e["text"].as_str().is_some_and(|t| t.contains("refused")))
        })
    });
    assert!(seen, "no refused reload among the events: {last}");
    assert!(!last.contains(SECRET), "the token's line is in /status: {last}");
    assert!(last.contains("line 2"), "the event does not say where the file is wrong: {last}");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let page = http_get(addr, "/", None);
    assert!(page.contains("refused"), "{page}");
    assert!(!page.contains(SECRET), "the token's line is on the page: {page}");
}

/// A refusal is a recent event at about the time it happened, not at the
/// next time someone looks: the counters are sampled while nobody does.
#[test]
fn a_refusal_is_an_event_when_it_happened_not_when_the_page_is_next_read() {
    use std::io::{Read, Write};
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let port = free_port();
    let p = port.to_string();
    let server = Server::start(&mut meshgate(&["serve", "--port", &p]));
    server.wait_lines(1);
    // A name this host does not serve: the Host guard's 421, on the loopback door too.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    write!(s, "GET /status HTTP/1.1\r\nHost: rebound.example\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
    let refused_at = now();
    // Nobody looks for a while (the sampler's 2 s, with room for a loaded machine, is well inside it).
    std::thread::sleep(std::time::Duration::from_secs(7));
    let o = run(&mut meshgate(&["status", "--json", "--port", &p]));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let event = doc["events"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["kind"] == "refused"))
        .unwrap_or_else(|| panic!("no refusal among the events: {}", doc["events"]))
        .clone();
    assert!(event["text"].as_str().is_some_and(|t| t.contains("421")), "{event}");
    let at = event["at"].as_u64().unwrap();
    assert!(at <= refused_at + 4, "refused at {refused_at}, the event says {at} (read at {})", doc["now"]);
}
