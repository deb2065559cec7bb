//! The real mesh daemons from Debian, each between two namespaces over a veth
//! underlay (192.0.2.1 <-> 192.0.2.2): tinc, Yggdrasil (two nodes peered) and
//! OpenVPN (point to point, static key). For each, `explain` finds the right
//! address through its provider and its daemon's word, `auto` does what
//! docs/bind-modes.md says, and the peer reaches `serve` through the tunnel and
//! not through the underlay. Then the container case (`--bind lan` on a veth
//! `eth0` holding the default route) and a stand-in tailscaled's local API
//! (a Headscale prefix, `Starting`) seen through the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use meshgate::core::probe::standin::{self, Answer, StandIn};

use super::{curl, listeners, serve, token_file, wait_connect, BIN, TOKEN};
use crate::lab::{in_ci, lab_or_skip, run_bounded, wait_until, Lab, Proc};

const GW_UNDERLAY: &str = "192.0.2.1";
const PEER_UNDERLAY: &str = "192.0.2.2";

/// Two labs joined by a veth underlay, and a scratch directory for configs.
struct Pair {
    gw: Lab,
    peer: Lab,
    dir: PathBuf,
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Skips (or fails, in CI) when a daemon is not installed.
fn tools_or_skip(test: &str, tools: &[&str]) -> bool {
    let found = |t: &&str| {
        ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin"]
            .iter()
            .any(|d| Path::new(d).join(t).is_file())
    };
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !found(t)).collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!("missing tools: {} (apt-get install {})", missing.join(", "), missing.join(" "));
    assert!(!in_ci(), "{test}: {why}");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("SKIPPED {test}: {why}\n").as_bytes());
    false
}

fn pair_or_skip(test: &str, tools: &[&str]) -> Option<Pair> {
    if !tools_or_skip(test, tools) {
        return None;
    }
    let gw = lab_or_skip(test)?;
    let peer = gw.sibling().unwrap_or_else(|e| panic!("{test}: sibling lab: {e}"));
    gw.sh_ok(&format!(
        "set -e
ip link add veth-gw type veth peer name veth-peer netns {}
ip addr add {GW_UNDERLAY}/24 dev veth-gw
ip link set veth-gw up",
        peer.pid()
    ));
    peer.sh_ok(&format!("set -e\nip addr add {PEER_UNDERLAY}/24 dev veth-peer\nip link set veth-peer up"));
    let dir = std::env::temp_dir().join(format!("meshgate-daemons-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    Some(Pair { gw, peer, dir })
}

/// `meshgate ARGS` in the lab with extra environment, bounded.
fn meshgate_env(lab: &Lab, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = lab.command(BIN);
    cmd.args(args).env_remove("MESHGATE_BIND").env_remove("MESHGATE_PORT").env_remove("MESHGATE_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_bounded(cmd, Duration::from_secs(20))
}

/// `meshgate explain --json ARGS` with extra environment, parsed (any exit code).
fn explain_env(lab: &Lab, args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let mut full = vec!["explain", "--json"];
    full.extend_from_slice(args);
    let out = meshgate_env(lab, &full, env);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "explain {args:?}: {e}\nstderr: {}\nstdout: {}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `meshgate serve ARGS` in the lab with extra environment; returns once it
/// printed a line, with that line and the rest to come.
fn serve_env(lab: &Lab, args: &[&str], env: &[(&str, &str)]) -> (Proc, String, std::sync::mpsc::Receiver<String>) {
    let mut cmd = lab.command(BIN);
    cmd.arg("serve").args(args).env("RUST_LOG", "warn").stdout(Stdio::piped()).stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut proc = Proc::spawn(&mut cmd);
    let out = proc.child().stdout.take().expect("stdout");
    let rx = crate::lines(out);
    let first =
        rx.recv_timeout(Duration::from_secs(15)).unwrap_or_else(|_| panic!("meshgate serve {args:?} printed nothing"));
    (proc, first, rx)
}

/// The selected (not companion, not fallback) listeners.
fn selected(doc: &serde_json::Value) -> Vec<(String, String, String)> {
    listeners(doc).into_iter().filter(|(_, p, _)| p != "loopback").collect()
}

/// The address of `iface` in `lab` that starts with `prefix` (waits for it).
fn wait_addr(lab: &Lab, iface: &str, prefix: &str, what: &str) -> String {
    let mut found = String::new();
    let ok = wait_until(Duration::from_secs(15), || {
        let out = lab.sh(&format!("ip -o addr show dev '{iface}' 2>/dev/null"));
        let text = String::from_utf8_lossy(&out.stdout);
        found = text
            .split_whitespace()
            .filter_map(|w| w.split('/').next())
            .find(|a| a.starts_with(prefix))
            .unwrap_or_default()
            .to_owned();
        !found.is_empty()
    });
    assert!(ok, "{what}: no {prefix}* address on {iface}: {}", lab.sh_ok("ip -o addr show; ip -o link show"));
    found
}

/// Starts `program args` in `lab` with its output in `log` (for failure messages).
fn daemon(lab: &Lab, program: &str, args: &[&str], log: &Path) -> Proc {
    let out = std::fs::File::create(log).expect("daemon log");
    let mut cmd = lab.command(program);
    cmd.args(args).stdout(out.try_clone().expect("log fd")).stderr(out);
    Proc::spawn(&mut cmd)
}

fn log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The peer reaches `serve` at `addr:port` (through the tunnel), and nothing
/// answers at the gateway's underlay address on that port.
fn peer_reaches_only_through_the_tunnel(pair: &Pair, addr: &str, port: u16, why: &dyn Fn() -> String) {
    let host = if addr.contains(':') { format!("[{addr}]") } else { addr.to_owned() };
    let url = format!("http://{host}:{port}/healthz");
    assert!(wait_connect(|| pair.peer.command("curl"), &url, true), "peer cannot reach {url}\n{}", why());
    let (code, status, body) = curl(pair.peer.command("curl"), &format!("http://{host}:{port}/status"), Some(TOKEN));
    assert_eq!((code, status), (0, 200), "{body}");
    let (code, _, _) = curl(pair.peer.command("curl"), &format!("http://{GW_UNDERLAY}:{port}/healthz"), None);
    assert_eq!(code, 7, "the gateway must not answer on its underlay address {GW_UNDERLAY}");
}

// ---- tinc -----------------------------------------------------------------

fn tinc_node(dir: &Path, name: &str, conf: &str, subnet: &str, addr: &str) {
    std::fs::create_dir_all(dir.join("hosts")).unwrap();
    std::fs::write(dir.join("tinc.conf"), conf).unwrap();
    std::fs::write(dir.join("hosts").join(name), format!("Subnet = {subnet}\n")).unwrap();
    let up = format!("#!/bin/sh\nip addr add {addr} dev \"$INTERFACE\"\nip link set \"$INTERFACE\" up\n");
    std::fs::write(dir.join("tinc-up"), up).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("tinc-up"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut keygen = Command::new("tincd");
    keygen.arg("-c").arg(dir).args(["-K", "1024"]).stdin(Stdio::null());
    let out = run_bounded(keygen, Duration::from_secs(30));
    assert!(out.status.success(), "tincd -K: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn tinc_is_found_through_tincd_and_reached_through_the_tunnel() {
    let Some(pair) = pair_or_skip("tinc", &["tincd", "curl"]) else { return };
    let (gw_dir, peer_dir) = (pair.dir.join("gw"), pair.dir.join("peer"));
    // The gateway's device is named by `Interface =`, the peer's after the network.
    tinc_node(
        &gw_dir,
        "gw",
        "Name = gw\nInterface = tinc-office\nMode = router\nAddressFamily = ipv4\n",
        "10.55.0.1/32",
        "10.55.0.1/24",
    );
    tinc_node(
        &peer_dir,
        "peer",
        "Name = peer\nMode = router\nAddressFamily = ipv4\nConnectTo = gw\n",
        "10.55.0.2/32",
        "10.55.0.2/24",
    );
    let gw_host = format!("Address = {GW_UNDERLAY}\n{}", std::fs::read_to_string(gw_dir.join("hosts/gw")).unwrap());
    std::fs::write(gw_dir.join("hosts/gw"), &gw_host).unwrap();
    std::fs::write(peer_dir.join("hosts/gw"), &gw_host).unwrap();
    std::fs::copy(peer_dir.join("hosts/peer"), gw_dir.join("hosts/peer")).unwrap();
    let tincd = |lab: &Lab, dir: &Path, who: &str| {
        let pidfile = format!("--pidfile=/var/run/wireguard/tinc-{who}.pid");
        daemon(
            lab,
            "tincd",
            &["-c", dir.to_str().unwrap(), "-n", "office", "-D", "-d1", &pidfile],
            &pair.dir.join(format!("{who}.log")),
        )
    };
    let _gw = tincd(&pair.gw, &gw_dir, "gw");
    let why = || format!("gw log:\n{}\npeer log:\n{}", log(&pair.dir.join("gw.log")), log(&pair.dir.join("peer.log")));
    // The peer connects once the gateway listens (tinc-up runs after the sockets are open).
    wait_addr(&pair.gw, "tinc-office", "10.55.0.1", &why());
    let _peer = tincd(&pair.peer, &peer_dir, "peer");
    wait_addr(&pair.peer, "office", "10.55.0.2", &why());

    let doc = explain_env(&pair.gw, &["--bind", "tinc"], &[]);
    assert_eq!(selected(&doc), [("10.55.0.1".to_owned(), "tinc".to_owned(), "tinc-office".to_owned())], "{doc:#}");
    let reason = doc["listeners"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("tinc-office is tinc's interface (network office)"), "{reason}");
    // The kernel's word (the device tincd holds open), not a guess from its config.
    assert!(reason.contains("the device tincd (pid"), "{reason}");
    // Only the gateway's tincd: the peer's runs in another network namespace.
    let facts = doc["daemons"].as_array().expect("daemons");
    assert_eq!(facts.len(), 1, "{doc:#}");
    assert_eq!((facts[0]["mesh"].as_str(), facts[0]["network"].as_str()), (Some("tinc"), Some("office")), "{doc:#}");
    // tinc is a mesh: `auto` takes it (nothing else here is one).
    let auto = explain_env(&pair.gw, &["--bind", "auto"], &[]);
    assert_eq!(selected(&auto), selected(&doc), "{auto:#}");

    let token = token_file(&pair.gw);
    let (_serve, _lines) = serve(&pair.gw, &["--bind", "tinc", "--port", "18801", "--token-file", &token], 1);
    peer_reaches_only_through_the_tunnel(&pair, "10.55.0.1", 18801, &why);
}

// ---- Yggdrasil --------------------------------------------------------------

fn ygg_conf(dir: &Path, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let out = run_bounded(
        {
            let mut c = Command::new("yggdrasil");
            c.args(["-genconf", "-json"]).stdin(Stdio::null());
            c
        },
        Duration::from_secs(20),
    );
    assert!(out.status.success(), "yggdrasil -genconf: {}", String::from_utf8_lossy(&out.stderr));
    let mut conf: serde_json::Value = serde_json::from_slice(&out.stdout).expect("genconf JSON");
    conf["Peers"] = serde_json::json!([]);
    conf["Listen"] = serde_json::json!([]);
    conf["MulticastInterfaces"] = serde_json::json!([]);
    conf["AdminListen"] = serde_json::json!("none");
    conf["IfName"] = serde_json::json!("auto");
    edit(&mut conf);
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, conf.to_string()).unwrap();
    path
}

#[test]
fn yggdrasil_is_found_through_its_admin_socket_and_never_by_auto() {
    let Some(pair) = pair_or_skip("yggdrasil", &["yggdrasil", "curl"]) else { return };
    // The admin socket in the lab's private /var/run/wireguard (never the host's /run).
    let admin = "/var/run/wireguard/yggdrasil.sock";
    let gw_conf = ygg_conf(&pair.dir, "gw", |c| {
        c["Listen"] = serde_json::json!([format!("tcp://{GW_UNDERLAY}:14242")]);
        c["AdminListen"] = serde_json::json!(format!("unix://{admin}"));
    });
    let peer_conf = ygg_conf(&pair.dir, "peer", |c| {
        c["Peers"] = serde_json::json!([format!("tcp://{GW_UNDERLAY}:14242")]);
    });
    let _gw = daemon(&pair.gw, "yggdrasil", &["-useconffile", gw_conf.to_str().unwrap()], &pair.dir.join("gw.log"));
    let why = || format!("gw log:\n{}\npeer log:\n{}", log(&pair.dir.join("gw.log")), log(&pair.dir.join("peer.log")));
    // The peer dials once the gateway listens (a refused dial backs off for seconds).
    assert!(
        wait_until(Duration::from_secs(10), || log(&pair.dir.join("gw.log")).contains("TCP listener started")),
        "{}",
        why()
    );
    let _peer =
        daemon(&pair.peer, "yggdrasil", &["-useconffile", peer_conf.to_str().unwrap()], &pair.dir.join("peer.log"));
    let addr = wait_addr(&pair.gw, "tun0", "2", &why());
    assert!(
        wait_until(Duration::from_secs(10), || pair.gw.sh(&format!("test -S {admin}")).status.success()),
        "{}",
        why()
    );
    let env = [("MESHGATE_YGGDRASIL_SOCKET", admin)];

    let doc = explain_env(&pair.gw, &["--bind", "yggdrasil"], &env);
    assert_eq!(selected(&doc), [(addr.clone(), "yggdrasil".to_owned(), "tun0".to_owned())], "{doc:#}");
    let reason = doc["listeners"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("from Yggdrasil's admin socket"), "{reason}");
    // A public network: `auto` never takes it, even when it is the only overlay.
    let auto = explain_env(&pair.gw, &["--bind", "auto"], &env);
    assert!(selected(&auto).is_empty() && auto["fallback"] == true, "{auto:#}");

    let token = token_file(&pair.gw);
    let _serve = serve_env(&pair.gw, &["--bind", "yggdrasil", "--port", "18802", "--token-file", &token], &env);

    peer_reaches_only_through_the_tunnel(&pair, &addr, 18802, &why);
}

// ---- OpenVPN ----------------------------------------------------------------

#[test]
fn openvpn_is_found_through_its_process_not_its_name() {
    let Some(pair) = pair_or_skip("openvpn", &["openvpn", "curl"]) else { return };
    let key = pair.dir.join("static.key");
    let mut genkey = Command::new("openvpn");
    genkey.args(["--genkey", "secret"]).arg(&key).stdin(Stdio::null());
    let out = run_bounded(genkey, Duration::from_secs(20));
    assert!(out.status.success(), "openvpn --genkey: {}", String::from_utf8_lossy(&out.stderr));
    let common =
        format!("dev-type tun\nproto udp\nsecret {}\ncipher AES-256-CBC\ndisable-dco\nping 1\nverb 3\n", key.display());
    // The gateway's device is named in its config file; the peer's is the kernel's `tunN`.
    let gw_conf = pair.dir.join("gw.conf");
    std::fs::write(
        &gw_conf,
        format!("dev vpn-office\nlocal {GW_UNDERLAY}\nlport 1194\nifconfig 10.66.0.1 10.66.0.2\n{common}"),
    )
    .unwrap();
    let peer_conf = pair.dir.join("peer.conf");
    std::fs::write(
        &peer_conf,
        format!("dev tun\nremote {GW_UNDERLAY} 1194\nnobind\nifconfig 10.66.0.2 10.66.0.1\n{common}"),
    )
    .unwrap();
    // A decoy: a `tun7` that no openvpn drives (tun0 is not proof of OpenVPN).
    pair.gw.tun("tun7", &["10.67.0.1/24"]);
    let _gw = daemon(&pair.gw, "openvpn", &["--config", gw_conf.to_str().unwrap()], &pair.dir.join("gw.log"));
    let _peer = daemon(&pair.peer, "openvpn", &[peer_conf.to_str().unwrap()], &pair.dir.join("peer.log"));
    let why = || format!("gw log:\n{}\npeer log:\n{}", log(&pair.dir.join("gw.log")), log(&pair.dir.join("peer.log")));
    wait_addr(&pair.gw, "vpn-office", "10.66.0.1", &why());

    let doc = explain_env(&pair.gw, &["--bind", "openvpn"], &[]);
    assert_eq!(selected(&doc), [("10.66.0.1".to_owned(), "openvpn".to_owned(), "vpn-office".to_owned())], "{doc:#}");
    let reason = doc["listeners"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("the device openvpn (pid"), "{reason}");
    assert_eq!(doc["daemons"].as_array().map(Vec::len), Some(1), "only the gateway's openvpn: {doc:#}");
    let openvpn = doc["providers"].as_array().unwrap().iter().find(|p| p["name"] == "openvpn").unwrap();
    assert!(!openvpn.to_string().contains("tun7"), "the decoy tun7 is nobody's: {openvpn}");
    // `auto` takes OpenVPN's device, and still not the decoy.
    let auto = explain_env(&pair.gw, &["--bind", "auto"], &[]);
    assert_eq!(selected(&auto), selected(&doc), "{auto:#}");

    let token = token_file(&pair.gw);
    let (_serve, _lines) = serve(&pair.gw, &["--bind", "openvpn", "--port", "18803", "--token-file", &token], 1);
    peer_reaches_only_through_the_tunnel(&pair, "10.66.0.1", 18803, &why);
}

// ---- a container's LAN --------------------------------------------------------

#[test]
fn lan_in_a_container_binds_the_veth_with_the_default_route() {
    if !tools_or_skip("lan_in_a_container", &["curl"]) {
        return;
    }
    let Some(container) = lab_or_skip("lan_in_a_container") else { return };
    let host = container.sibling().expect("sibling lab");
    // The container's only link (besides lo) is a veth `eth0` with the default route.
    container.sh_ok(&format!(
        "set -e
ip link add eth0 type veth peer name veth-c1 netns {}
ip addr add 172.18.0.5/16 dev eth0
ip link set eth0 up
ip route add default via 172.18.0.1",
        host.pid()
    ));
    host.sh_ok("set -e\nip addr add 172.18.0.1/16 dev veth-c1\nip link set veth-c1 up");

    let doc = explain_env(&container, &["--bind", "lan"], &[]);
    assert_eq!(selected(&doc), [("172.18.0.5".to_owned(), "lan".to_owned(), "eth0".to_owned())], "{doc:#}");
    let reason = doc["listeners"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("default route") && reason.contains("container's LAN"), "{reason}");
    // On the host side the veth has no default route: a container link, not the LAN.
    let other = explain_env(&host, &["--bind", "lan"], &[]);
    assert!(selected(&other).is_empty(), "{other:#}");
    let lan = other["providers"].as_array().unwrap().iter().find(|p| p["name"] == "lan").unwrap();
    assert!(lan["rejected"].to_string().contains("without this namespace's default route"), "{lan}");

    let token = token_file(&container);
    let (_serve, _lines) = serve(&container, &["--bind", "lan", "--port", "18804", "--token-file", &token], 1);
    let url = "http://172.18.0.5:18804/healthz";
    assert!(wait_connect(|| host.command("curl"), url, true), "the host cannot reach {url}");
}

// ---- tailscaled's local API, through the binary ---------------------------------

#[test]
fn explain_says_what_tailscaled_said() {
    let Some(lab) = lab_or_skip("explain_says_what_tailscaled_said") else { return };
    // A Headscale network on a prefix no range table knows, and a CGNAT decoy.
    lab.tun("tailscale0", &["10.99.0.7/32", "fd7a:115c:a1e0::7/128"]);
    lab.tun("tun5", &["100.80.0.9/32"]);
    let sock = std::env::temp_dir().join(format!("meshgate-lab-tailscaled-{}.sock", std::process::id()));
    let api = StandIn::start(&sock).expect("stand-in tailscaled");
    api.answer("/localapi/v0/status", Answer::Json(standin::STATUS_HEADSCALE_RUNNING.into()));
    let env = [("MESHGATE_TAILSCALED_SOCKET", sock.to_str().unwrap())];

    let doc = explain_env(&lab, &["--bind", "auto"], &env);
    let want: Vec<_> = ["10.99.0.7", "fd7a:115c:a1e0::7"]
        .iter()
        .map(|a| (a.to_string(), "tailnet".to_owned(), "tailscale0".to_owned()))
        .collect();
    assert_eq!(selected(&doc), want, "{doc:#}");
    assert!(doc["listeners"][0]["reason"].as_str().unwrap().contains("from tailscaled's local API"), "{doc:#}");
    assert_eq!(doc["daemons"][0]["dns_name"], "gw.office.headscale.example");
    let text = String::from_utf8_lossy(&meshgate_env(&lab, &["explain", "--bind", "auto"], &env).stdout).into_owned();
    assert!(text.contains("note: tailscaled's local API: tailscale is running on tailscale0"), "{text}");
    assert!(text.contains("100.80.0.9 on tun5: 100.80.0.9 on tun5 looks like a tailnet address, but tailscaled's local API does not list it"), "{text}");

    // Starting: nothing yet, and the note says to wait.
    api.answer("/localapi/v0/status", Answer::Json(standin::STATUS_STARTING.into()));
    let doc = explain_env(&lab, &["--bind", "tailnet"], &env);
    assert!(selected(&doc).is_empty() && doc["fallback"] == true, "{doc:#}");
    assert!(doc["notes"].to_string().contains("still starting"), "{doc:#}");

    // A daemon that hangs costs its bound, and is said to.
    api.answer("/localapi/v0/status", Answer::Hang);
    let start = std::time::Instant::now();
    let doc = explain_env(&lab, &["--bind", "tailnet"], &env);
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    assert!(doc["notes"].to_string().contains("did not answer within 200 ms"), "{doc:#}");

    // NeedsLogin: said plainly, with what to do.
    api.answer("/localapi/v0/status", Answer::Json(standin::STATUS_NEEDS_LOGIN.into()));
    let text =
        String::from_utf8_lossy(&meshgate_env(&lab, &["explain", "--bind", "tailnet"], &env).stdout).into_owned();
    assert!(text.contains("note: tailscale needs a login before it has addresses: run `tailscale up`"), "{text}");
}

#[test]
fn serve_waits_while_tailscaled_is_starting_and_binds_when_it_runs() {
    let Some(lab) = lab_or_skip("serve_waits_while_tailscaled_is_starting") else { return };
    lab.tun("tailscale0", &["10.99.0.7/32"]);
    let sock = std::env::temp_dir().join(format!("meshgate-lab-starting-{}.sock", std::process::id()));
    let api = StandIn::start(&sock).expect("stand-in tailscaled");
    api.answer("/localapi/v0/status", Answer::Json(standin::STATUS_STARTING.into()));
    // The IPN bus: Starting (5) at once, Running (6) after 1.5 s. No interface or
    // address changes meanwhile: only the daemon's state can wake meshgate.
    api.answer(
        "/localapi/v0/watch-ipn-bus",
        Answer::Stream(vec![
            (Duration::ZERO, r#"{"State":5}"#.into()),
            (Duration::from_millis(1500), r#"{"State":6}"#.into()),
        ]),
    );
    let env = [("MESHGATE_TAILSCALED_SOCKET", sock.to_str().unwrap())];
    let token = token_file(&lab);
    let start = std::time::Instant::now();
    let (mut proc, first, _rx) = std::thread::scope(|s| {
        let serving = s.spawn(|| {
            serve_env(&lab, &["--bind", "tailnet", "--port", "18805", "--token-file", &token, "--wait", "20"], &env)
        });
        // tailscaled is Running before it says so on the bus.
        std::thread::sleep(Duration::from_millis(500));
        api.answer("/localapi/v0/status", Answer::Json(standin::STATUS_HEADSCALE_RUNNING.into()));
        serving.join().expect("serve thread")
    });
    assert_eq!(first, "listening on http://10.99.0.7:18805 (tailnet via tailscale0)");
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(1400) && took < Duration::from_secs(10), "{took:?}");
    assert!(proc.is_running());
}

// ---- several overlays at once ---------------------------------------------------

#[test]
fn explain_on_a_host_with_several_overlays_says_which_daemon_said_what() {
    let Some(pair) = pair_or_skip("several_overlays", &["tincd", "openvpn", "yggdrasil"]) else { return };
    let lab = &pair.gw;
    // tinc alone (no peer needed for its device to come up).
    let tinc_dir = pair.dir.join("tinc");
    tinc_node(&tinc_dir, "gw", "Name = gw\nMode = router\nAddressFamily = ipv4\n", "10.55.0.1/32", "10.55.0.1/24");
    let _tincd = daemon(
        lab,
        "tincd",
        &["-c", tinc_dir.to_str().unwrap(), "-n", "lab", "-D", "--pidfile=/var/run/wireguard/tinc.pid"],
        &pair.dir.join("tinc.log"),
    );
    // OpenVPN with a static key, listening (its device is up before any peer).
    let key = pair.dir.join("static.key");
    let out = run_bounded(
        {
            let mut c = Command::new("openvpn");
            c.args(["--genkey", "secret"]).arg(&key).stdin(Stdio::null());
            c
        },
        Duration::from_secs(20),
    );
    assert!(out.status.success());
    let _openvpn = daemon(
        lab,
        "openvpn",
        &[
            "--dev",
            "ovpn-lab",
            "--dev-type",
            "tun",
            "--ifconfig",
            "10.66.0.1",
            "10.66.0.2",
            "--secret",
            key.to_str().unwrap(),
            "--cipher",
            "AES-256-CBC",
            "--disable-dco",
            "--lport",
            "1194",
            "--local",
            GW_UNDERLAY,
        ],
        &pair.dir.join("openvpn.log"),
    );
    // Yggdrasil with its admin socket, peered with nobody.
    let admin = "/var/run/wireguard/yggdrasil.sock";
    let conf = ygg_conf(&pair.dir, "ygg", |c| c["AdminListen"] = serde_json::json!(format!("unix://{admin}")));
    let _ygg = daemon(lab, "yggdrasil", &["-useconffile", conf.to_str().unwrap()], &pair.dir.join("ygg.log"));
    // A tailnet on a Headscale prefix, through a stand-in local API.
    lab.tun("tailscale0", &["10.99.0.7/32", "fd7a:115c:a1e0::7/128"]);
    let sock = std::env::temp_dir().join(format!("meshgate-lab-overlays-{}.sock", std::process::id()));
    let api = StandIn::start(&sock).expect("stand-in tailscaled");
    api.answer("/localapi/v0/status", Answer::Json(standin::STATUS_HEADSCALE_RUNNING.into()));

    let why = || {
        ["tinc", "openvpn", "ygg"]
            .iter()
            .map(|d| format!("{d}:\n{}", log(&pair.dir.join(format!("{d}.log")))))
            .collect::<String>()
    };
    wait_addr(lab, "lab", "10.55.0.1", &why());
    wait_addr(lab, "ovpn-lab", "10.66.0.1", &why());
    let ygg = wait_addr(lab, "tun0", "2", &why());
    assert!(wait_until(Duration::from_secs(10), || lab.sh(&format!("test -S {admin}")).status.success()), "{}", why());
    let env = [("MESHGATE_TAILSCALED_SOCKET", sock.to_str().unwrap()), ("MESHGATE_YGGDRASIL_SOCKET", admin)];

    let out = meshgate_env(lab, &["explain", "--bind", "auto"], &env);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for said in [
        "note: tailscaled's local API: tailscale is running on tailscale0 with 10.99.0.7, fd7a:115c:a1e0::7, named gw.office.headscale.example",
        "tinc is running (network lab) on lab with 10.55.0.1",
        "openvpn is running on ovpn-lab with 10.66.0.1",
        &format!("note: Yggdrasil's admin socket: yggdrasil is running on tun0 with {ygg}"),
        "auto: `tailnet` is the first match",
        "10.55.0.1 on lab: from the device tincd (pid",
    ] {
        assert!(text.contains(said), "explain does not say {said:?}:\n{text}");
    }
    let doc = explain_env(lab, &["--bind", "auto"], &env);
    let meshes: Vec<&str> = doc["daemons"].as_array().unwrap().iter().map(|f| f["mesh"].as_str().unwrap()).collect();
    assert_eq!(meshes, ["openvpn", "tailscale", "tinc", "yggdrasil"], "{doc:#}");
    assert_eq!(
        selected(&doc),
        [
            ("10.99.0.7".to_owned(), "tailnet".to_owned(), "tailscale0".to_owned()),
            ("fd7a:115c:a1e0::7".to_owned(), "tailnet".to_owned(), "tailscale0".to_owned())
        ]
    );
    // Each named mode takes its own daemon's device, and only that.
    let doc = explain_env(lab, &["--bind", "tinc,openvpn,yggdrasil"], &env);
    assert_eq!(
        selected(&doc),
        [
            ("10.55.0.1".to_owned(), "tinc".to_owned(), "lab".to_owned()),
            ("10.66.0.1".to_owned(), "openvpn".to_owned(), "ovpn-lab".to_owned()),
            (ygg.clone(), "yggdrasil".to_owned(), "tun0".to_owned())
        ],
        "{doc:#}"
    );
}
