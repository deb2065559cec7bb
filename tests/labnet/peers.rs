//! Peer identity against a real wireguard-go interface: meshgate-core's
//! `wgpeer` reads the gateway's peers over the UAPI socket, finds the peer of a
//! tunnel address by longest prefix, and stops finding a removed peer once its
//! cache is invalidated or its table too old. The code runs inside the gateway
//! namespace as the `wgpeers` example of meshgate-core (built next to this test
//! binary by `cargo test`).
//!
//! Kernel WireGuard is not tested here: the lab cannot create it where the host
//! has no `wireguard` module (`ip link add wg0 type wireguard` fails with
//! "Unknown device type"); the generic netlink path is covered by unit tests on
//! a captured kernel reply.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{ChildStdin, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use crate::lab::{in_ci, run_bounded, wait_until, Proc, WgPair};

/// The built `wgpeers` example, or `None` (a skip, a failure in CI) when
/// only the test binary was built (`cargo test --test main`).
fn example(test: &str) -> Option<PathBuf> {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_meshgate")).with_file_name("examples").join("wgpeers");
    if bin.exists() {
        return Some(bin);
    }
    assert!(!in_ci(), "{} is not built in CI", bin.display());
    let _ =
        writeln!(std::io::stderr(), "SKIPPED {test}: {} is not built (run `cargo test --workspace`)", bin.display());
    None
}

/// `wgpeers IFACE` in the gateway lab: one JSON object per peer.
fn read(pair: &WgPair, bin: &PathBuf, iface: &str) -> Vec<serde_json::Value> {
    let mut cmd = pair.gateway.command(bin);
    cmd.arg(iface);
    let out = run_bounded(cmd, Duration::from_secs(10));
    assert!(out.status.success(), "wgpeers {iface}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

/// `wgpeers IFACE --serve ...` in the gateway lab, driven line by line.
struct Server {
    _proc: Proc,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Server {
    fn start(pair: &WgPair, bin: &PathBuf, iface: &str, args: &[&str]) -> Server {
        let mut cmd = pair.gateway.command(bin);
        cmd.arg(iface).arg("--serve").args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut proc = Proc::spawn(&mut cmd);
        let stdin = proc.child().stdin.take().expect("stdin");
        let stdout = proc.child().stdout.take().expect("stdout");
        let lines = crate::lines(stdout);
        let mut s = Server { _proc: proc, stdin, lines };
        assert_eq!(s.next()["ready"], iface);
        s
    }

    fn next(&mut self) -> serde_json::Value {
        let l = self.lines.recv_timeout(Duration::from_secs(10)).expect("wgpeers --serve answers in time");
        serde_json::from_str(&l).expect("a JSON line")
    }

    fn send(&mut self, cmd: &str) -> serde_json::Value {
        writeln!(self.stdin, "{cmd}").expect("write to wgpeers");
        self.next()
    }

    /// The base64 key of the peer holding `ip`, or `None`.
    fn lookup(&mut self, ip: &str) -> Option<String> {
        let v = self.send(&format!("lookup {ip}"));
        v["peer"].as_str().map(str::to_owned)
    }
}

#[test]
fn finds_the_peer_of_a_tunnel_address_and_forgets_a_removed_one() {
    let test = "finds_the_peer_of_a_tunnel_address_and_forgets_a_removed_one";
    let Some(bin) = example(test) else { return };
    let Some(pair) = WgPair::or_skip(test, "wg0") else { return };
    let peer_key = pair.peer_sh("wg show wgpeer public-key");
    let peer_key = String::from_utf8_lossy(&peer_key.stdout).trim().to_owned();
    assert_eq!(peer_key.len(), 44, "{peer_key:?}");
    // A second peer holding the whole tunnel subnet: the real peer's /32 and
    // /128 are longer prefixes and must win inside it.
    let site = pair.gateway.sh_ok(
        "k=$(wg genkey | wg pubkey) && wg set wg0 peer \"$k\" allowed-ips 10.77.0.0/24,fd77::/64 && echo \"$k\"",
    );
    let site = site.trim().to_owned();

    // What `wg` itself says, and what wgpeer reads, agree.
    let wg_dump = pair.gateway.sh_ok("wg show wg0 allowed-ips");
    let peers = read(&pair, &bin, "wg0");
    assert_eq!(peers.len(), 2, "{peers:?}\nwg: {wg_dump}");
    let me = peers.iter().find(|p| p["public_key"] == peer_key.as_str()).expect("the tunnel peer");
    assert_eq!(me["allowed_ips"], serde_json::json!(["10.77.0.2/32", "fd77::2/128"]), "wg: {wg_dump}");
    assert_eq!(me["endpoint"], "192.0.2.2:51820");
    let other = peers.iter().find(|p| p["public_key"] == site.as_str()).expect("the site peer");
    assert_eq!(other["allowed_ips"], serde_json::json!(["10.77.0.0/24", "fd77::/64"]));
    assert!(other["endpoint"].is_null() && other["last_handshake_unix"].is_null());

    // A packet into the tunnel makes a handshake, which the read then reports.
    pair.peer.sh_ok(&format!(
        "python3 -c \"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('{}', 9))\"",
        pair.gateway_wg_addr()
    ));
    let handshake = wait_until(Duration::from_secs(10), || {
        let peers = read(&pair, &bin, "wg0");
        let me = peers.iter().find(|p| p["public_key"] == peer_key.as_str()).cloned().unwrap_or_default();
        me["last_handshake_unix"].as_u64().is_some_and(|t| t > 1_600_000_000)
    });
    assert!(handshake, "no handshake reported: {:?}", read(&pair, &bin, "wg0"));

    // Through the cache: one with a long max age (only `invalidate` forgets),
    // one with a short one (forgets by age).
    let mut long = Server::start(&pair, &bin, "wg0", &["--max-age-ms", "600000", "--refresh-ms", "600000"]);
    let mut short = Server::start(&pair, &bin, "wg0", &["--max-age-ms", "300", "--refresh-ms", "100"]);
    for s in [&mut long, &mut short] {
        assert_eq!(s.lookup(&pair.peer_wg_addr().to_string()).as_deref(), Some(peer_key.as_str()));
        assert_eq!(s.lookup("fd77::2").as_deref(), Some(peer_key.as_str()));
        assert_eq!(s.lookup("10.77.0.9").as_deref(), Some(site.as_str()));
        assert_eq!(s.lookup("fd77::9").as_deref(), Some(site.as_str()));
        assert_eq!(s.lookup("192.0.2.2"), None, "the underlay is no peer's");
    }

    pair.gateway.sh_ok(&format!("wg set wg0 peer '{peer_key}' remove"));
    // The long-lived cache still answers from its table: that is what a cache does ...
    assert_eq!(long.lookup("10.77.0.2").as_deref(), Some(peer_key.as_str()));
    // ... until told the interface changed. Then the address falls to the site peer.
    assert_eq!(long.send("invalidate")["invalidated"], "wg0");
    assert_eq!(long.lookup("10.77.0.2").as_deref(), Some(site.as_str()));
    assert_eq!(long.lookup("fd77::2").as_deref(), Some(site.as_str()));
    // The short-lived one forgets by itself once its table is older than 300 ms.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(short.lookup("10.77.0.2").as_deref(), Some(site.as_str()));

    // And with the site peer gone too, nobody holds the address.
    pair.gateway.sh_ok(&format!("wg set wg0 peer '{site}' remove"));
    long.send("invalidate");
    assert_eq!(long.lookup("10.77.0.2"), None);
    assert!(read(&pair, &bin, "wg0").is_empty());
}
