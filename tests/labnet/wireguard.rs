//! A real WireGuard tunnel (wireguard-go) between two namespaces: the peer
//! reaches the gateway through the tunnel with the token, and cannot reach it on
//! the underlay at all.

use super::{curl, explain, listeners, serve, token_file, TOKEN};
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
