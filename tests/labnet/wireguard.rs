//! A real WireGuard tunnel (wireguard-go) between two namespaces: the peer
//! reaches the gateway through the tunnel with the token, and cannot reach it on
//! the underlay at all.

use super::{curl, explain, listeners, serve, token_file, wait_connect, TOKEN};
use crate::lab::WgPair;

#[test]
fn peer_reaches_the_gateway_through_the_tunnel_only() {
    let Some(pair) = WgPair::or_skip("peer_reaches_the_gateway_through_the_tunnel_only", "wg0") else {
        return;
    };
    let token = token_file(&pair.gateway);
    let (_gw, _lines) = serve(&pair.gateway, &["--bind", "wireguard", "--port", "18789", "--token-file", &token], 2);
    let wg = pair.gateway_wg_addr();
    let (code, status, body) = curl(pair.peer_command("curl"), &format!("http://{wg}:18789/status"), Some(TOKEN));
    assert_eq!((code, status), (0, 200), "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let wg_listener =
        v["listeners"].as_array().unwrap().iter().find(|l| l["address"] == wg.to_string()).unwrap().clone();
    assert_eq!(wg_listener["provider"], "wireguard");
    assert_eq!(wg_listener["interface"], "wg0");
    assert!(wg_listener["reason"].as_str().unwrap().contains("userspace WireGuard"), "{wg_listener}");

    let (_, status, body) = curl(pair.peer_command("curl"), &format!("http://{wg}:18789/status"), None);
    assert_eq!(status, 401, "{body}");
    let (_, status, body) = curl(pair.peer_command("curl"), &format!("http://{wg}:18789/healthz"), None);
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    // The underlay address is not listened on: refused outright (curl exit 7).
    let underlay = pair.gateway_underlay_addr();
    let (code, _, _) = curl(pair.peer_command("curl"), &format!("http://{underlay}:18789/healthz"), None);
    assert_eq!(code, 7, "the gateway must not answer on its underlay address {underlay}");
}

#[test]
fn an_unusually_named_wireguard_interface_is_found_by_kind() {
    let Some(pair) = WgPair::or_skip("an_unusually_named_wireguard_interface_is_found_by_kind", "office") else {
        return;
    };
    let doc = explain(&pair.gateway, &["--bind", "wireguard"]);
    let found: Vec<_> = listeners(&doc).into_iter().filter(|(_, p, _)| p == "wireguard").collect();
    assert_eq!(
        found,
        [
            (pair.gateway_wg_addr().to_string(), "wireguard".to_owned(), "office".to_owned()),
            (pair.gateway_wg_addr6().to_string(), "wireguard".to_owned(), "office".to_owned()),
        ]
    );
    let reason = doc["listeners"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("office is userspace WireGuard"), "{reason}");
    // And through it, serving works end to end.
    let token = token_file(&pair.gateway);
    let (_gw, _lines) = serve(&pair.gateway, &["--bind", "wireguard", "--port", "18790", "--token-file", &token], 3);
    let (code, status, _) =
        curl(pair.peer_command("curl"), &format!("http://[{}]:18790/status", pair.gateway_wg_addr6()), Some(TOKEN));
    assert_eq!((code, status), (0, 200));
}

/// A service for the upstream test: answers every GET with the number of
/// requests it has had, the path, and the headers it got, as JSON.
const ECHO_SERVICE: &str = r#"
import http.server, json, sys
n = 0
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        global n
        n += 1
        headers = {k.lower(): v for k, v in self.headers.items()}
        body = json.dumps({"n": n, "path": self.path, "headers": headers}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

/// Issue #6's scenario: `serve --bind wireguard --upstream http://127.0.0.1:PORT
/// --token-file t` exposes a loopback-only service to the WireGuard peer and
/// nobody else. With the token the peer gets the service's answer (the token
/// stripped, the peer's tunnel address in `X-Forwarded-For`); without it, 401
/// and the service is not called; on the underlay, nothing listens.
#[test]
fn an_upstream_service_is_exposed_to_the_wireguard_peer_only() {
    let Some(pair) = WgPair::or_skip("an_upstream_service_is_exposed_to_the_wireguard_peer_only", "wg0") else {
        return;
    };
    let _service = pair.gateway.spawn("python3", &["-c", ECHO_SERVICE, "18795"]);
    assert!(
        wait_connect(|| pair.gateway.command("curl"), "http://127.0.0.1:18795/ready", true),
        "the echo service did not start"
    );
    let token = token_file(&pair.gateway);
    let args =
        ["--bind", "wireguard", "--port", "18791", "--upstream", "http://127.0.0.1:18795", "--token-file", &token];
    let (_gw, _lines) = serve(&pair.gateway, &args, 2);
    let wg = pair.gateway_wg_addr();

    let (code, status, body) = curl(pair.peer_command("curl"), &format!("http://{wg}:18791/app?x=1"), Some(TOKEN));
    assert_eq!((code, status), (0, 200), "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["path"], "/app?x=1");
    assert!(
        v["headers"].get("authorization").is_none() && !body.contains(TOKEN),
        "the token reached the service: {body}"
    );
    assert_eq!(v["headers"]["x-forwarded-for"], pair.peer_wg_addr().to_string());
    assert_eq!(v["headers"]["x-forwarded-host"], format!("{wg}:18791"));
    let served = v["n"].as_u64().unwrap();

    // Without the token: 401 from meshgate, and the service is not called.
    let (_, status, body) = curl(pair.peer_command("curl"), &format!("http://{wg}:18791/app"), None);
    assert_eq!(status, 401, "{body}");
    let (_, status, body) = curl(pair.peer_command("curl"), &format!("http://{wg}:18791/app"), Some("wrong-token"));
    assert_eq!(status, 401, "{body}");
    let (_, _, body) = curl(pair.peer_command("curl"), &format!("http://{wg}:18791/again"), Some(TOKEN));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["n"].as_u64(), Some(served + 1), "a refused request reached the service");

    // meshgate's own health check is open, under its prefix.
    let (_, status, body) = curl(pair.peer_command("curl"), &format!("http://{wg}:18791/_meshgate/healthz"), None);
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    // Nothing listens on the underlay.
    let underlay = pair.gateway_underlay_addr();
    let (code, _, _) = curl(pair.peer_command("curl"), &format!("http://{underlay}:18791/app"), Some(TOKEN));
    assert_eq!(code, 7, "the gateway must not answer on its underlay address {underlay}");
}
