//! Faults in a namespace: a host with IPv6 disabled, and an interface that
//! vanishes under a live connection.

use std::io::{Read, Write};
use std::time::Duration;

use super::{serve, token_file, TOKEN};
use crate::lab::{lab_or_skip, Proc, WgPair};

#[test]
fn ipv6_disabled_still_opens_the_v4_companion() {
    let Some(lab) = lab_or_skip("ipv6_disabled_still_opens_the_v4_companion") else {
        return;
    };
    lab.sh_ok("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 net.ipv6.conf.lo.disable_ipv6=1");
    assert!(!lab.sh_ok("ip -6 addr").contains("::1"), "IPv6 is still on");
    lab.tun("wg0", &["10.8.0.1/24"]);
    let token = token_file(&lab);
    let (mut gw, lines) = serve(&lab, &["--bind", "wireguard", "--port", "18789", "--token-file", &token], 2);
    let mut printed = vec![lines.recv_timeout(Duration::from_secs(1)).ok()];
    printed.retain(Option::is_some);
    let listening = lab.sh_ok("ss -Hltn 'sport = :18789' | awk '{print $4}' | sort");
    assert_eq!(listening, "10.8.0.1:18789\n127.0.0.1:18789\n");
    assert!(gw.is_running(), "serve died on a host without IPv6");
    assert!(printed.is_empty(), "unexpected extra listener: {printed:?}");
}

/// Speaks just enough WebSocket to open `/ws` and read the first frame.
const WS_CLIENT: &str = r#"
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(("GET /ws HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Authorization: Bearer %s\r\n\r\n" % (sys.argv[1], sys.argv[2], sys.argv[3])).encode())
head = s.recv(4096)
print("101" if head.startswith(b"HTTP/1.1 101") else "no upgrade: %r" % head[:80], flush=True)
time.sleep(30)
"#;

#[test]
fn an_interface_vanishing_under_a_live_connection() {
    let Some(mut pair) = WgPair::or_skip("an_interface_vanishing_under_a_live_connection", "wg0") else {
        return;
    };
    let token = token_file(&pair.gateway);
    let mut cmd = pair.gateway.command(super::BIN);
    cmd.args(["serve", "--bind", "wireguard", "--port", "18789", "--token-file", &token])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut gw = Proc::spawn(&mut cmd);
    let mut stdout = gw.child().stdout.take().unwrap();
    let mut stderr = gw.child().stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(&mut stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    // wg0's v4 and v6 addresses, and the two loopback companions.
    for _ in 0..4 {
        rx.recv_timeout(Duration::from_secs(10)).expect("listening lines");
    }
    // A peer holds a live WebSocket through the tunnel.
    let wg = pair.gateway_wg_addr().to_string();
    let mut client = pair.peer_command("python3");
    client.args(["-c", WS_CLIENT, &wg, "18789", TOKEN]).stdout(std::process::Stdio::piped());
    let mut ws = Proc::spawn(&mut client);
    let mut first = [0u8; 4];
    ws.child().stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
    assert_eq!(&first, b"101\n");

    pair.tear_down_tunnel();
    let mut stopped: Vec<String> = (0..2).filter_map(|_| rx.recv_timeout(Duration::from_secs(10)).ok()).collect();
    stopped.sort();
    let wg6 = pair.gateway_wg_addr6();
    assert_eq!(
        stopped,
        [
            format!("stopped listening on http://{wg}:18789 (wireguard: no longer matched)"),
            format!("stopped listening on http://[{wg6}]:18789 (wireguard: no longer matched)"),
        ]
    );
    // The gateway is alive and its loopback door serves.
    assert!(gw.is_running());
    let out = pair.gateway.sh_ok("curl -sS --max-time 5 http://127.0.0.1:18789/healthz");
    assert_eq!(out, "ok\n");
    // Stop it and read its log: no panic, and the vanished listener is said once.
    let _ = std::process::Command::new("kill").args(["-TERM", &gw.pid().to_string()]).status();
    let mut log = String::new();
    let _ = stderr.read_to_string(&mut log);
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(log.matches(&format!("stopped listening on http://{wg}:18789")).count(), 1, "{log}");
    drop(ws);
    let _ = std::io::stdout().flush();
}
