//! Self-tests of the network-namespace lab harness: it must really make what
//! the other lab tests rely on.

use super::{lab_or_skip, wait_until, Lab, Proc, WgPair};
use std::path::Path;
use std::time::{Duration, Instant};

/// Waits (bounded) until something in `lab` listens on TCP `port`.
fn wait_listening(lab: &Lab, port: u16) {
    let script = format!("ss -Hltn 'sport = :{port}' | grep -q LISTEN");
    let ok = wait_until(Duration::from_secs(5), || lab.sh(&script).status.success());
    assert!(ok, "nothing listens on port {port}");
}

/// `curl` from the peer; returns (exit code, stdout, stderr).
fn curl(pair: &WgPair, url: &str) -> (i32, String, String) {
    let out = pair.peer_sh(&format!("curl -sS --max-time 5 '{url}'"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn lab_is_private_and_has_loopback() {
    let Some(lab) = lab_or_skip("lab_is_private_and_has_loopback") else {
        return;
    };
    assert_eq!(lab.sh_ok("id -u").trim(), "0");
    let lo = lab.link_line("lo");
    assert!(lo.contains("LOWER_UP") && lo.contains(",UP"), "{lo}");
    // Only loopback in a fresh lab.
    assert_eq!(lab.sh_ok("ip -o link").lines().count(), 1);
    // Private tmpfs for wireguard-go sockets, visible under both paths.
    let mounts = lab.sh_ok("cat /proc/self/mountinfo");
    assert!(mounts.contains(" lab-"), "no private tmpfs: {mounts}");
    lab.sh_ok("touch /var/run/wireguard/probe && test -e /run/wireguard/probe");
    assert!(!Path::new("/run/wireguard/probe").exists());
    // An interface made in the lab exists neither on the host nor in another lab.
    lab.veth("labveth0", "labveth1");
    let t0 = Instant::now();
    let other = Lab::new().expect("second lab");
    eprintln!("Lab::new took {} ms", t0.elapsed().as_millis());
    assert!(!other.has_link("labveth0"));
    assert!(!other.sh_ok("ls /var/run/wireguard").contains("probe"));
    let host = std::process::Command::new("ip")
        .args(["-o", "link"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(!host.contains("labveth0"), "leaked to host: {host}");
}

#[test]
fn held_tun_has_carrier_unheld_does_not() {
    let Some(lab) = lab_or_skip("held_tun_has_carrier_unheld_does_not") else {
        return;
    };
    lab.tun("tailscale0", &["100.101.1.2/32", "fd7a:115c:a1e0::2/128"]);
    let line = lab.link_line("tailscale0");
    assert!(line.contains("LOWER_UP"), "{line}");
    assert!(line.contains("state UNKNOWN"), "{line}");
    assert!(lab.link_details("tailscale0").contains("tun type tun"));
    let addrs = lab.addrs("tailscale0");
    assert!(addrs.contains("inet 100.101.1.2/32"), "{addrs}");
    assert!(addrs.contains("inet6 fd7a:115c:a1e0::2/128"), "{addrs}");
    assert!(!addrs.contains("tentative"), "{addrs}");
    // The v6 address is usable at once (nodad): bind to it.
    lab.sh_ok("python3 -c 'import socket; socket.socket(socket.AF_INET6).bind((\"fd7a:115c:a1e0::2\", 0))'");

    lab.tun_unheld("dead0", &["100.101.9.9/32"]);
    let line = lab.link_line("dead0");
    assert!(line.contains("NO-CARRIER"), "{line}");
    assert!(!line.contains("LOWER_UP"), "{line}");
    assert!(line.contains("state DOWN"), "{line}");
}

#[test]
fn tap_is_ethernet() {
    let Some(lab) = lab_or_skip("tap_is_ethernet") else {
        return;
    };
    lab.tap("zt0", &["10.147.17.5/24", "fd80:56c2::5/64"]);
    let details = lab.link_details("zt0");
    assert!(details.contains("tun type tap"), "{details}");
    assert!(details.contains("link/ether"), "{details}");
    assert!(lab.link_line("zt0").contains("LOWER_UP"));
    assert!(lab.addrs("zt0").contains("10.147.17.5/24"));
}

#[test]
fn link_and_addr_helpers() {
    let Some(lab) = lab_or_skip("link_and_addr_helpers") else {
        return;
    };
    lab.tun("vpn0", &["100.64.0.7/32"]);
    lab.addr_add("vpn0", "fd00:aa::7/128");
    lab.addr_del("vpn0", "100.64.0.7/32");
    let addrs = lab.addrs("vpn0");
    assert!(!addrs.contains("100.64.0.7"), "{addrs}");
    assert!(addrs.contains("fd00:aa::7/128"), "{addrs}");
    lab.link_set("vpn0", false);
    assert!(!lab.link_line("vpn0").contains("LOWER_UP"));
    lab.link_set("vpn0", true);
    assert!(lab.link_line("vpn0").contains("LOWER_UP"));
    // Killing the holder (VPN daemon died) removes the interface.
    assert!(lab.release("vpn0"));
    assert!(!lab.has_link("vpn0"));
    // link_del works for held and unheld interfaces alike.
    lab.tap("tap1", &[]);
    lab.link_del("tap1");
    lab.tun_unheld("tun9", &[]);
    lab.link_del("tun9");
    lab.veth("va", "vb");
    lab.link_del("va");
    assert_eq!(lab.sh_ok("ip -o link").lines().count(), 1, "only lo left");
}

#[test]
fn processes_die_with_their_guards_and_the_lab() {
    let Some(lab) = lab_or_skip("processes_die_with_their_guards_and_the_lab") else {
        return;
    };
    let alive = |pid: u32| Path::new(&format!("/proc/{pid}")).exists();
    let guarded = lab.spawn("sleep", &["30"]);
    let pid = guarded.pid();
    // nsenter execs: the pid is sleep itself, inside the lab's netns.
    let ns = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
    let lab_ns = ns(lab.pid());
    assert!(wait_until(Duration::from_secs(5), || ns(pid) == lab_ns));
    let comm = || std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert!(wait_until(Duration::from_secs(5), || comm().trim() == "sleep"));
    drop(guarded);
    assert!(!alive(pid));

    // A child spawned without a guard is killed when the lab is dropped.
    let mut loose = lab.command("sleep").arg("30").spawn().unwrap();
    let loose_pid = loose.id();
    lab.tun("held0", &[]);
    let holder = lab.pid();
    drop(lab);
    let reaped = wait_until(Duration::from_secs(5), || loose.try_wait().unwrap().is_some());
    assert!(reaped, "leftover child {loose_pid} not killed");
    assert!(!alive(loose_pid) && !alive(holder));
}

#[test]
fn command_runs_inside_with_env_and_cwd() {
    let Some(lab) = lab_or_skip("command_runs_inside_with_env_and_cwd") else {
        return;
    };
    let out = lab
        .command("sh")
        .args(["-c", "echo $LABVAR; pwd; ip -o link | wc -l"])
        .env("LABVAR", "hello")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(text, format!("hello\n{}\n1\n", cwd.display()));
    // Proc::spawn for a custom command; exit is observable.
    let mut p = Proc::spawn(lab.command("true").stdout(std::process::Stdio::null()));
    assert!(wait_until(Duration::from_secs(5), || !p.is_running()));
}

#[test]
fn wg_tunnel_carries_tcp_and_bind_is_exclusive() {
    let t0 = Instant::now();
    let Some(pair) = WgPair::or_skip("wg_tunnel_carries_tcp_and_bind_is_exclusive", "wg0") else {
        return;
    };
    eprintln!("the wg0 pair took {} ms to build", t0.elapsed().as_millis());
    let gw = pair.gateway_wg_addr().to_string();
    assert_eq!(gw, "10.77.0.1");
    let _server = pair.gateway.spawn("python3", &["-m", "http.server", "--bind", &gw, "18789", "--directory", "/"]);
    wait_listening(&pair.gateway, 18789);
    let t1 = Instant::now();
    let (code, body, err) = curl(&pair, "http://10.77.0.1:18789/");
    eprintln!("first request over the tunnel: {} ms", t1.elapsed().as_millis());
    assert_eq!(code, 0, "curl over the tunnel failed: {err}");
    assert!(body.contains("Directory listing"), "{body}");
    // Same server, underlay address: refused (curl exit 7), not timed out.
    let underlay = pair.gateway_underlay_addr();
    let (code, _, err) = curl(&pair, &format!("http://{underlay}:18789/"));
    assert_eq!(code, 7, "expected connection refused: {err}");
    // The handshake really happened.
    let hs = pair.gateway.sh_ok("wg show wg0 latest-handshakes");
    let ts: u64 = hs.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(ts > 0, "{hs}");
    // wireguard-go sockets are per lab.
    assert_eq!(pair.gateway.sh_ok("ls /var/run/wireguard").trim(), "wg0.sock");
    assert_eq!(pair.peer_sh("ls /var/run/wireguard").status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&pair.peer_sh("ls /var/run/wireguard").stdout).trim(), "wgpeer.sock");
    assert!(!Path::new("/var/run/wireguard/wg0.sock").exists());
}

#[test]
fn wg_unusual_name_and_ipv6() {
    let Some(pair) = WgPair::or_skip("wg_unusual_name_and_ipv6", "office") else {
        return;
    };
    assert_eq!(pair.gateway_iface(), Some("office"));
    let details = pair.gateway.link_details("office");
    assert!(details.contains("tun type tun"), "{details}");
    assert!(pair.gateway.link_line("office").contains("LOWER_UP"));
    assert!(pair.gateway.sh_ok("wg show interfaces").trim() == "office");
    // WG_PROCESS_FOREGROUND=1 silences wireguard-go's "use the kernel" banner.
    let log = pair.gateway.sh_ok("cat /var/run/wireguard/.office.log");
    assert!(!log.contains("not required"), "{log}");
    let _server =
        pair.gateway.spawn("python3", &["-m", "http.server", "--bind", "fd77::1", "18790", "--directory", "/"]);
    wait_listening(&pair.gateway, 18790);
    let (code, _, err) = curl(&pair, "http://[fd77::1]:18790/");
    assert_eq!(code, 0, "curl over v6 tunnel failed: {err}");
}

#[test]
fn wg_tunnel_can_come_up_late_and_go_away() {
    let Some(mut pair) = WgPair::underlay_or_skip("wg_tunnel_can_come_up_late_and_go_away") else {
        return;
    };
    assert_eq!(pair.gateway_iface(), None);
    assert_eq!(pair.gateway.sh_ok("ip -o link | wc -l").trim(), "2"); // lo, veth
                                                                      // Underlay works before any tunnel.
    let _server =
        pair.gateway.spawn("python3", &["-m", "http.server", "--bind", "0.0.0.0", "18791", "--directory", "/"]);
    wait_listening(&pair.gateway, 18791);
    assert_eq!(curl(&pair, "http://192.0.2.1:18791/").0, 0);
    // curl exit 7: no route to 10.77.0.1 yet ("Network is unreachable").
    assert_ne!(curl(&pair, "http://10.77.0.1:18791/").0, 0);

    pair.bring_up_tunnel("office");
    assert!(pair.gateway.has_link("office"));
    assert_eq!(curl(&pair, "http://10.77.0.1:18791/").0, 0);

    pair.tear_down_tunnel();
    assert!(!pair.gateway.has_link("office"));
    assert!(!pair.peer.has_link(pair.peer_iface()));
    assert_eq!(pair.gateway.sh_ok("ls /var/run/wireguard").trim(), "");
    assert_ne!(curl(&pair, "http://10.77.0.1:18791/").0, 0);

    // And again, with another name.
    pair.bring_up_tunnel("wg7");
    assert_eq!(curl(&pair, "http://10.77.0.1:18791/").0, 0);
}
