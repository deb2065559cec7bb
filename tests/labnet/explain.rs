//! `explain --json` in a namespace holding TUN/TAP devices named and addressed
//! the way each mesh does (docs/meshes.md), all at once.

use super::{explain, listeners};
use crate::lab::lab_or_skip;

fn addrs_of(doc: &serde_json::Value, provider: &str) -> Vec<String> {
    let mut v: Vec<String> =
        listeners(doc).into_iter().filter(|(_, p, _)| p == provider).map(|(a, _, i)| format!("{a}@{i}")).collect();
    v.sort();
    v
}

#[test]
fn every_selector_over_every_mesh_shape() {
    let Some(lab) = lab_or_skip("every_selector_over_every_mesh_shape") else {
        return;
    };
    lab.tun("tailscale0", &["100.101.1.2/32", "fd7a:115c:a1e0::2/128"]);
    lab.tun("wt0", &["100.72.4.5/16"]);
    lab.tun("wg0", &["10.8.0.1/24", "fd08::1/64"]);
    lab.tun("nebula1", &["192.168.100.7/24"]);
    lab.tun("tun-firezone", &["100.68.9.9/32", "fd00:2021:1111::9/128"]);
    lab.tap("ztmjfnbvsk", &["10.147.17.5/24"]);
    // A tunnel that is down, and one nobody holds (no carrier): both skipped.
    lab.tun("wg1", &["10.9.0.1/24"]);
    lab.link_set("wg1", false);
    lab.tun_unheld("wg2", &["10.10.0.1/24"]);

    let doc = explain(&lab, &["--bind", "tailnet"]);
    assert_eq!(addrs_of(&doc, "tailnet"), ["100.101.1.2@tailscale0", "fd7a:115c:a1e0::2@tailscale0"]);
    // Shared CGNAT space: wt0's and tun-firezone's 100.x addresses are not tailnet's, and the report says why.
    let tailnet = doc["providers"].as_array().unwrap().iter().find(|p| p["name"] == "tailnet").unwrap();
    let rejected = tailnet["rejected"].to_string();
    assert!(rejected.contains("100.72.4.5") && rejected.contains("wt0"), "{rejected}");
    // The loopback companion is listed, with its reason.
    let companion: Vec<_> = doc["listeners"].as_array().unwrap().iter().filter(|l| l["role"] == "companion").collect();
    assert!(companion.iter().any(|l| l["address"] == "127.0.0.1" && l["provider"] == "loopback"), "{doc}");
    assert!(companion[0]["reason"].as_str().unwrap().contains("companion"));

    assert_eq!(addrs_of(&explain(&lab, &["--bind", "netbird"]), "netbird"), ["100.72.4.5@wt0"]);
    assert_eq!(addrs_of(&explain(&lab, &["--bind", "nebula"]), "nebula"), ["192.168.100.7@nebula1"]);
    assert_eq!(
        addrs_of(&explain(&lab, &["--bind", "firezone"]), "firezone"),
        ["100.68.9.9@tun-firezone", "fd00:2021:1111::9@tun-firezone"]
    );
    assert_eq!(addrs_of(&explain(&lab, &["--bind", "zerotier"]), "zerotier"), ["10.147.17.5@ztmjfnbvsk"]);

    let doc = explain(&lab, &["--bind", "wireguard"]);
    assert_eq!(addrs_of(&doc, "wireguard"), ["10.8.0.1@wg0", "100.72.4.5@wt0", "fd08::1@wg0"]);
    let wg = doc["providers"].as_array().unwrap().iter().find(|p| p["name"] == "wireguard").unwrap();
    let rejected = wg["rejected"].to_string();
    assert!(rejected.contains("wg1 is administratively down"), "{rejected}");
    assert!(rejected.contains("wg2 has no carrier"), "{rejected}");
    assert!(rejected.contains("tailscale0"), "tailscale0 must be refused by name: {rejected}");

    // auto: tailnet has the highest priority among the meshes present.
    let doc = explain(&lab, &["--bind", "auto"]);
    assert_eq!(addrs_of(&doc, "tailnet"), ["100.101.1.2@tailscale0", "fd7a:115c:a1e0::2@tailscale0"]);
    assert_eq!(doc["fallback"], false);

    // lan: none of these are LAN links (tunnels; the ZeroTier TAP is ZeroTier's).
    let doc = explain(&lab, &["--bind", "lan"]);
    assert_eq!(doc["fallback"], true, "{doc}");

    // all: the wildcards and nothing else (no companion: the wildcard covers loopback).
    let doc = explain(&lab, &["--bind", "all"]);
    let mut all: Vec<String> = listeners(&doc).into_iter().map(|(a, _, _)| a).collect();
    all.sort();
    assert_eq!(all, ["0.0.0.0", "::"]);

    // loopback: exactly 127.0.0.1 and ::1.
    let doc = explain(&lab, &["--bind", "loopback"]);
    assert_eq!(addrs_of(&doc, "loopback"), ["127.0.0.1@lo", "::1@lo"]);

    // iface: and cidr: selectors, and an IP literal.
    assert_eq!(addrs_of(&explain(&lab, &["--bind", "iface:wg*"]), "iface"), ["10.8.0.1@wg0", "fd08::1@wg0"]);
    assert_eq!(addrs_of(&explain(&lab, &["--bind", "cidr:10.8.0.0/16"]), "cidr"), ["10.8.0.1@wg0"]);
    assert_eq!(addrs_of(&explain(&lab, &["--bind", "10.8.0.1"]), "ip"), ["10.8.0.1@wg0"]);
}

#[test]
fn nothing_but_loopback_falls_back_with_a_reason() {
    let Some(lab) = lab_or_skip("nothing_but_loopback_falls_back_with_a_reason") else {
        return;
    };
    let doc = explain(&lab, &["--bind", "auto"]);
    assert_eq!(doc["fallback"], true);
    assert!(doc["fallback_reason"].as_str().unwrap().contains("matched nothing"), "{doc}");
    let all: Vec<_> = listeners(&doc).into_iter().map(|(a, p, _)| format!("{a}/{p}")).collect();
    assert_eq!(all, ["127.0.0.1/loopback", "::1/loopback"]);
    // With --fallback fail, explain exits 69 like serve.
    let out = super::meshgate(&lab, &["explain", "--bind", "wireguard", "--fallback", "fail"]);
    assert_eq!(out.status.code(), Some(69), "{}", String::from_utf8_lossy(&out.stderr));
}
