//! `meshgate status`: asks the gateway running on this host, through its
//! loopback door (127.0.0.1, else ::1, at the port `serve` would use: the same
//! `--port`, `MESHGATE_PORT` and config file), for `/status`, and prints its
//! services, listeners and peers as a table, like `tailscale status`
//! (`--json`: the document as the gateway sent it). No gateway answering is
//! exit 3, with a sentence saying where it looked.
//!
//! Also here: what `serve` tells the status page about its certificate
//! ([`page_tls`]).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use serde_json::Value;

use super::args::StatusArgs;
use super::error::CliError;
use super::settings::{registry, settings, TlsKind, TlsSetup};
use crate::gateway::status_page::html::{ago, bytes};
use crate::gateway::status_page::TlsSource;

/// How long the gateway gets to answer (connect and whole reply).
const ASK_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest `/status` accepted.
const MAX_STATUS_BYTES: usize = 8 << 20;

/// Where the served certificate comes from, for the status page. The local
/// CA's certificate downloads from `/_meshgate/ca.crt`, which answers on the
/// loopback door only (the mode says so: from a mesh device the link is a 404,
/// and `meshgate ca` on this host prints it).
pub(crate) fn page_tls(tls: &TlsSetup) -> TlsSource {
    let resolver = Some(tls.resolver.clone());
    match &tls.kind {
        TlsKind::Own => TlsSource {
            mode: match &tls.reloader {
                Some(r) => format!("own certificate files ({})", r.paths().0.display()),
                None => "own certificate files".into(),
            },
            resolver,
            ca_url: None,
        },
        TlsKind::SelfSigned => TlsSource { mode: "self-signed (pin its key)".into(), resolver, ca_url: None },
        TlsKind::Internal { ca_cert } => TlsSource {
            mode: format!(
                "internal CA ({}; download it on this host's loopback door, or run `meshgate ca`)",
                ca_cert.display()
            ),
            resolver,
            ca_url: Some(format!("{}/ca.crt", crate::gateway::MESHGATE_PREFIX)),
        },
        TlsKind::Tailscale { domain } => TlsSource {
            mode: format!("tailscale (tailscaled's certificate for {domain}, publicly trusted)"),
            resolver,
            ca_url: None,
        },
    }
}

/// One GET of `path` on `addr`, bounded by [`ASK_TIMEOUT`].
async fn get(addr: SocketAddr, path: &str) -> Result<(u16, Vec<u8>), String> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let host = match addr.ip() {
            IpAddr::V4(ip) => format!("{ip}:{}", addr.port()),
            IpAddr::V6(ip) => format!("[{ip}]:{}", addr.port()),
        };
        let request = axum::http::Request::get(path)
            .header(axum::http::header::HOST, host)
            .header(axum::http::header::ACCEPT, "application/json")
            .header(axum::http::header::USER_AGENT, concat!("meshgate-status/", env!("CARGO_PKG_VERSION")))
            .body(Empty::<axum::body::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = send.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body =
            Limited::new(response.into_body(), MAX_STATUS_BYTES).collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, body.to_vec()))
    };
    tokio::time::timeout(ASK_TIMEOUT, exchange).await.unwrap_or_else(|_| Err("no answer within 3 s".into()))
}

/// `/status` of the gateway at `port` on this host: the JSON document, or why not.
pub(crate) async fn ask(port: u16) -> Result<Value, CliError> {
    let mut tried = Vec::new();
    for ip in [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)] {
        let addr = SocketAddr::new(ip, port);
        // In front of an upstream the own routes are under /_meshgate/ (and
        // /status is the upstream's); without one, /_meshgate/... is a 404.
        for path in ["/_meshgate/status", "/status"] {
            match get(addr, path).await {
                Err(e) => {
                    tried.push(format!("{addr}: {e}"));
                    break;
                }
                Ok((200, body)) => match serde_json::from_slice::<Value>(&body) {
                    Ok(v) if v.get("listeners").is_some() && v.get("version").is_some() => return Ok(v),
                    _ => tried.push(format!("http://{addr}{path}: an answer that is not meshgate's status")),
                },
                Ok((code, _)) => tried.push(format!("http://{addr}{path}: HTTP {code}")),
            }
        }
    }
    Err(CliError::NoGateway(format!(
        "no meshgate answers on this host's loopback door at port {port} ({}); start one with `meshgate serve`, or \
         name its port with --port, MESHGATE_PORT or the config file (a gateway started with --no-loopback or \
         --tls-loopback has no plain loopback door to ask)",
        tried.join("; ")
    )))
}

/// Runs `status`. Returns the text to print.
pub async fn status(args: &StatusArgs) -> Result<String, CliError> {
    let registry = registry()?;
    let bind = super::args::BindArgs { port: args.port, config: args.config.clone(), ..Default::default() };
    let port = settings(&bind, registry)?.resolve.port;
    let doc = ask(port).await?;
    if args.json {
        let mut out = serde_json::to_string_pretty(&doc).unwrap_or_default();
        out.push('\n');
        return Ok(out);
    }
    Ok(text(&doc))
}

/// The string at `key` (empty when absent), fit for a terminal: the answer
/// comes from whatever listens on the port, and names from the OS may hold
/// any byte, so control characters are printed escaped (`\u{1b}`), never sent.
fn s(v: &Value, key: &str) -> String {
    opt(v, key).unwrap_or_default()
}

/// [`s`], `None` when absent.
fn opt(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(clean)
}

/// `text` with its control characters escaped.
fn clean(text: &str) -> String {
    text.chars().fold(String::with_capacity(text.len()), |mut out, c| {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        out
    })
}

/// The table, from a `/status` document.
pub(crate) fn text(doc: &Value) -> String {
    let now = doc.get("now").and_then(Value::as_u64).unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "meshgate {}, up {} s: {}",
        s(doc, "version"),
        doc.get("uptime_seconds").and_then(Value::as_u64).unwrap_or(0),
        s(doc, "state")
    );
    let empty = Vec::new();
    let arr = |v: &Value, key: &str| v.get(key).and_then(Value::as_array).cloned().unwrap_or_else(|| empty.clone());
    for svc in arr(doc, "services") {
        let target = match opt(&svc, "upstream") {
            Some(u) => format!("-> {u}"),
            None => "meshgate's own routes".to_owned(),
        };
        // An HTTP service's responses, a TCP one's connections (a gateway
        // that predates the count gives none).
        let count = match (svc.get("requests").and_then(Value::as_u64), s(&svc, "protocol").as_str()) {
            (Some(n), "http") => format!(", {n} requests"),
            (Some(n), _) => format!(", {n} connections"),
            (None, _) => String::new(),
        };
        let _ = writeln!(out, "\nservice {} ({}) {target}{count}", s(&svc, "name"), s(&svc, "protocol"));
        let listeners = arr(&svc, "listeners");
        if listeners.is_empty() {
            let _ = writeln!(out, "  no listener");
        }
        for l in listeners {
            let since = l.get("since").and_then(Value::as_u64).map_or_else(String::new, |t| ago(now, t));
            let _ = writeln!(
                out,
                "  {:<32} {:<10} {:<5} since {:<12} {}",
                s(&l, "url"),
                s(&l, "provider"),
                if l.get("tls").and_then(Value::as_bool) == Some(true) { "tls" } else { "plain" },
                since,
                s(&l, "reason")
            );
        }
    }
    let interfaces = arr(doc, "interfaces");
    for i in &interfaces {
        let peers = arr(i, "peers");
        let _ = writeln!(
            out,
            "\n{} (WireGuard, {}): {} peer{}",
            s(i, "interface"),
            s(i, "wireguard"),
            peers.len(),
            if peers.len() == 1 { "" } else { "s" }
        );
        if let Some(e) = opt(i, "error") {
            let _ = writeln!(out, "  peers unreadable: {e}");
        }
        for p in peers {
            let name = opt(&p, "name").unwrap_or_else(|| "-".to_owned());
            let handshake =
                p.get("last_handshake").and_then(Value::as_u64).map_or_else(|| "never".into(), |t| ago(now, t));
            let allowed =
                if p.get("allowed").and_then(Value::as_bool) == Some(true) { "allowed" } else { "needs sign-in" };
            let _ = writeln!(
                out,
                "  {name:<16} {}…  {allowed:<13}  handshake {handshake:<12}  rx {} tx {}  {}",
                s(&p, "short_key"),
                bytes(p.get("rx_bytes").and_then(Value::as_u64).unwrap_or(0)),
                bytes(p.get("tx_bytes").and_then(Value::as_u64).unwrap_or(0)),
                opt(&p, "endpoint").unwrap_or_else(|| "-".to_owned()),
            );
        }
    }
    if interfaces.is_empty() {
        let _ = writeln!(out, "\nno WireGuard interface served: no peers");
    }
    let callers = arr(doc, "tailnet_callers");
    if !callers.is_empty() {
        let _ = writeln!(out, "\ntailnet callers: {}", callers.len());
    }
    for c in callers {
        let tags: Vec<String> = arr(&c, "tags").iter().filter_map(Value::as_str).map(clean).collect();
        let allowed = if c.get("allowed").and_then(Value::as_bool) == Some(true) { "allowed" } else { "needs sign-in" };
        let seen = c.get("last_seen").and_then(Value::as_u64).map_or_else(|| "-".into(), |t| ago(now, t));
        let _ = writeln!(
            out,
            "  {:<24} {:<24} {:<16} {allowed:<13}  seen {seen:<12}  {} requests  {}",
            opt(&c, "login").unwrap_or_else(|| "-".to_owned()),
            opt(&c, "node").unwrap_or_else(|| "-".to_owned()),
            opt(&c, "address").unwrap_or_else(|| "-".to_owned()),
            c.get("requests").and_then(Value::as_u64).unwrap_or(0),
            if tags.is_empty() { "-".to_owned() } else { tags.join(",") },
        );
    }
    if let Some(c) = doc.get("counters") {
        let refused: Vec<String> = arr(c, "refusals")
            .iter()
            .filter(|r| r.get("count").and_then(Value::as_u64).unwrap_or(0) > 0)
            .map(|r| format!("{} {}", r.get("count").and_then(Value::as_u64).unwrap_or(0), s(r, "reason")))
            .collect();
        let _ = writeln!(
            out,
            "\n{} responses, {} open connections; refused: {}",
            c.get("responses").and_then(Value::as_u64).unwrap_or(0),
            c.get("open_connections").and_then(Value::as_i64).unwrap_or(0),
            if refused.is_empty() { "none".to_owned() } else { refused.join(", ") }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn the_page_links_the_local_ca_and_names_each_source() {
        use crate::cli::{tls_setup, TlsArgs, TlsMode};
        let tmp = tempfile::tempdir().unwrap();
        let args = |mode| TlsArgs { tls: Some(mode), state_dir: Some(tmp.path().to_owned()), ..TlsArgs::default() };
        let internal = tls_setup(&args(TlsMode::Internal), None).await.unwrap().expect("TLS on");
        let page = page_tls(&internal);
        // The route that serves the CA (loopback door only), same-origin.
        assert_eq!(page.ca_url.as_deref(), Some("/_meshgate/ca.crt"));
        assert!(page.mode.starts_with("internal CA (") && page.mode.contains("ca.crt"), "{}", page.mode);
        assert!(page.mode.contains("loopback door"), "{}", page.mode);
        assert!(page.resolver.is_some());
        let own = tls_setup(&args(TlsMode::SelfSigned), None).await.unwrap().expect("TLS on");
        let page = page_tls(&own);
        assert!(page.ca_url.is_none() && page.mode.starts_with("self-signed"), "{}", page.mode);
        let tailscale = TlsSetup { kind: TlsKind::Tailscale { domain: "gw.tail1.ts.net".into() }, ..own };
        let page = page_tls(&tailscale);
        assert!(page.ca_url.is_none() && page.mode.contains("gw.tail1.ts.net"), "{}", page.mode);
    }

    #[test]
    fn the_table_shows_services_listeners_and_peers() {
        let doc = json!({
            "version": "0.1.0", "uptime_seconds": 5, "now": 1000, "state": "serving on WireGuard (1 address) and loopback",
            "listeners": [],
            "services": [{"name": "meshgate", "protocol": "http", "upstream": "http://127.0.0.1:3000/", "requests": 12, "listeners": [
                {"url": "http://10.8.0.1:18789", "provider": "wireguard", "tls": false, "since": 990, "reason": "wg0 is WireGuard"}
            ]}],
            "interfaces": [{"interface": "wg0", "wireguard": "userspace", "peers": [
                {"name": "laptop", "short_key": "xTIBA5rb", "allowed": true, "last_handshake": 958, "rx_bytes": 2048, "tx_bytes": 10, "endpoint": "192.0.2.7:51820"}
            ]}],
            "tailnet_callers": [{"login": "alice@example.com", "node": "alice-laptop", "tags": ["tag:ops"], "address": "100.64.0.2", "allowed": true, "last_seen": 995, "requests": 3}],
            "counters": {"responses": 7, "open_connections": 1, "refusals": [{"reason": "no token, session or allowed peer (401)", "count": 2}]}
        });
        let t = text(&doc);
        assert!(t.starts_with("meshgate 0.1.0, up 5 s: serving on WireGuard"), "{t}");
        assert!(t.contains("service meshgate (http) -> http://127.0.0.1:3000/, 12 requests"), "{t}");
        assert!(t.contains("http://10.8.0.1:18789") && t.contains("wireguard") && t.contains("10 s ago"), "{t}");
        assert!(t.contains("wg0 (WireGuard, userspace): 1 peer"), "{t}");
        assert!(t.contains("laptop") && t.contains("allowed") && t.contains("handshake 42 s ago"), "{t}");
        assert!(t.contains("2.0 KiB") && t.contains("192.0.2.7:51820"), "{t}");
        assert!(t.contains("refused: 2 no token"), "{t}");
        assert!(t.contains("tailnet callers: 1"), "{t}");
        assert!(t.contains("alice@example.com") && t.contains("alice-laptop") && t.contains("100.64.0.2"), "{t}");
        assert!(t.contains("seen 5 s ago") && t.contains("3 requests  tag:ops"), "{t}");
    }

    /// Whatever answers on the port (any local user can listen there when no
    /// gateway does) and the OS (an interface name may hold any byte but `/`,
    /// `:` and blanks) must not drive the terminal: control characters are
    /// printed escaped.
    #[test]
    fn the_table_never_sends_control_characters_to_the_terminal() {
        let evil = "x\u{1b}]0;owned\u{7}\u{1b}[2J\r\u{9b}31m";
        let doc = json!({
            "version": evil, "uptime_seconds": 5, "now": 1000, "state": evil, "listeners": [],
            "services": [{"name": evil, "protocol": evil, "upstream": evil, "listeners": [
                {"url": evil, "provider": evil, "tls": false, "since": 990, "reason": evil}
            ]}],
            "interfaces": [{"interface": evil, "wireguard": evil, "error": evil, "peers": [
                {"name": evil, "short_key": evil, "allowed": true, "last_handshake": 958, "endpoint": evil}
            ]}],
            "tailnet_callers": [{"login": evil, "node": evil, "tags": [evil], "address": evil, "allowed": false, "last_seen": 990, "requests": 1}],
            "counters": {"responses": 7, "open_connections": 1, "refusals": [{"reason": evil, "count": 2}]}
        });
        let t = text(&doc);
        assert!(!t.chars().any(|c| c.is_control() && c != '\n'), "{t:?}");
        assert!(t.contains("x\\u{1b}]0;owned"), "{t}");
    }
}
