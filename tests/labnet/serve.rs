//! `serve --bind wireguard` in a namespace: reachable on the WireGuard address
//! (with the token) and on loopback, and on no other address of the namespace.

use super::{curl, serve, token_file, TOKEN};
use crate::lab::lab_or_skip;

#[test]
fn serves_on_wireguard_and_loopback_only() {
    let Some(lab) = lab_or_skip("serves_on_wireguard_and_loopback_only") else {
        return;
    };
    lab.tun("wg0", &["10.8.0.1/24"]);
    lab.veth("lan0", "lan1");
    lab.addr_add("lan0", "192.168.50.1/24");
    lab.addr_add("lan1", "192.168.50.2/24");
    let token = token_file(&lab);
    let (_gw, _lines) = serve(&lab, &["--bind", "wireguard", "--port", "18789", "--token-file", &token], 2);

    // Exactly the WireGuard address and the loopback companion(s) listen.
    let mut listening: Vec<String> =
        lab.sh_ok("ss -Hltn 'sport = :18789' | awk '{print $4}'").lines().map(str::to_owned).collect();
    listening.sort();
    let expected: &[&str] = if listening.len() == 3 {
        &["10.8.0.1:18789", "127.0.0.1:18789", "[::1]:18789"]
    } else {
        &["10.8.0.1:18789", "127.0.0.1:18789"]
    };
    assert_eq!(listening, expected);

    let (code, status, body) = curl(lab.command("curl"), "http://10.8.0.1:18789/status", Some(TOKEN));
    assert_eq!((code, status), (0, 200), "{body}");
    assert!(body.contains("\"provider\":\"wireguard\"") && !body.contains(TOKEN), "{body}");
    let (_, status, _) = curl(lab.command("curl"), "http://10.8.0.1:18789/status", None);
    assert_eq!(status, 401);
    let (_, status, _) = curl(lab.command("curl"), "http://10.8.0.1:18789/healthz", None);
    assert_eq!(status, 200);
    let (_, status, _) = curl(lab.command("curl"), "http://127.0.0.1:18789/status", None);
    assert_eq!(status, 200, "the loopback door needs no token");
    // Not on the other address of the namespace: connection refused (curl exit 7).
    let (code, _, _) = curl(lab.command("curl"), "http://192.168.50.1:18789/healthz", None);
    assert_eq!(code, 7);
}
