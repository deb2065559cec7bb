//! [`WgPair`]: a real WireGuard tunnel (userspace `wireguard-go`) between a
//! `gateway` lab and a `peer` lab joined by a veth underlay. See `mod.rs`.
//! [`WgPair::add_peer`] adds a second peer lab ([`WgPeer`], 10.77.0.3) with a
//! key and an underlay of its own, for tests that tell two peers apart;
//! [`WgPair::rekey_peer`] gives the first peer a new key at the same address.

use super::{require_tools, run_bounded, skip_unless, wait_until, Lab, Proc, BASE_TOOLS, READY_TIMEOUT};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Gateway end of the underlay (veth `veth-gw`, /24).
const GW_UNDERLAY: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Peer end of the underlay (veth `veth-peer`, /24).
const PEER_UNDERLAY: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const GW_WG: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const PEER_WG: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const GW_WG6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
const PEER_WG6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
/// The second peer ([`WgPair::add_peer`]): its own underlay (veth `veth-gw2`
/// 198.51.100.1/24 <-> `veth-peer` 198.51.100.2/24, so it never shares an
/// underlay address with the first peer) and tunnel address 10.77.0.3, fd77::3.
const GW_UNDERLAY2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const PEER2_UNDERLAY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const PEER2_WG: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
const PEER2_WG6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 3);
const GW_VETH2: &str = "veth-gw2";
/// UDP port both wireguard-go instances listen on (underlay only).
const WG_PORT: u16 = 51820;
/// Underlay interface names.
const GW_VETH: &str = "veth-gw";
const PEER_VETH: &str = "veth-peer";
/// Name of the WireGuard interface in the peer lab.
const PEER_IFACE: &str = "wgpeer";

#[derive(Debug)]
struct Keys {
    private: String,
    public: String,
}

impl Keys {
    fn generate() -> Result<Keys, String> {
        let run = |script: &str| {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", script]).stdin(Stdio::null());
            let out = run_bounded(cmd, Duration::from_secs(10));
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !text.is_empty() {
                Ok(text)
            } else {
                Err(format!("`{script}`: {}", String::from_utf8_lossy(&out.stderr)))
            }
        };
        let private = run("wg genkey")?;
        let public = run(&format!("printf '%s\\n' '{private}' | wg pubkey"))?;
        Ok(Keys { private, public })
    }
}

/// Two labs joined by a veth underlay and (once up) a WireGuard tunnel:
///
/// | | gateway | peer |
/// |---|---|---|
/// | underlay | `veth-gw` 192.0.2.1/24 | `veth-peer` 192.0.2.2/24 |
/// | WireGuard | `<gw_iface>` 10.77.0.1/24, fd77::1/64 | `wgpeer` 10.77.0.2/24, fd77::2/64 |
///
/// Both wireguard-go daemons listen on UDP 51820 of their underlay address.
/// The peer lab shares the gateway's user namespace.
#[derive(Debug)]
pub(crate) struct WgPair {
    /// Where the code under test runs.
    pub(crate) gateway: Lab,
    /// The other end of the tunnel (a client of the gateway).
    pub(crate) peer: Lab,
    gw_keys: Keys,
    peer_keys: Keys,
    gw_iface: Option<String>,
    /// True once [`WgPair::add_peer`] made the second peer (there is one).
    second: std::sync::atomic::AtomicBool,
}

/// A second peer of a [`WgPair`]'s gateway, made by [`WgPair::add_peer`]:
/// its own lab, key, underlay and tunnel address (10.77.0.3, fd77::3; its
/// interface is `wgpeer` too, in its own namespace). Torn down on drop.
#[derive(Debug)]
pub(crate) struct WgPeer {
    /// The peer's lab (its own net and mount namespaces).
    pub(crate) lab: Lab,
    public_key: String,
}

impl WgPeer {
    /// 10.77.0.3 (prefix /24).
    pub(crate) fn wg_addr(&self) -> IpAddr {
        PEER2_WG.into()
    }

    /// fd77::3 (prefix /64).
    pub(crate) fn wg_addr6(&self) -> IpAddr {
        PEER2_WG6.into()
    }

    /// The peer's public key (base64, as `wg` prints it).
    pub(crate) fn public_key(&self) -> &str {
        &self.public_key
    }

    /// A `Command` running `program` in this peer's lab (see [`Lab::command`]).
    pub(crate) fn command(&self, program: &str) -> Command {
        self.lab.command(program)
    }

    /// Runs `sh -c script` in this peer's lab (see [`Lab::sh`]).
    pub(crate) fn sh(&self, script: &str) -> Output {
        self.lab.sh(script)
    }
}

impl WgPair {
    /// Underlay plus tunnel, or `SKIPPED <test>: ..` / `None` (panics with
    /// `CI=true`), like [`super::lab_or_skip`].
    pub(crate) fn or_skip(test: &str, gw_iface: &str) -> Option<WgPair> {
        let mut pair = WgPair::underlay_or_skip(test)?;
        let up = pair.try_bring_up_tunnel(gw_iface);
        skip_unless(test, up)?;
        Some(pair)
    }

    /// Underlay only (no tunnel yet), or skip like [`WgPair::or_skip`].
    pub(crate) fn underlay_or_skip(test: &str) -> Option<WgPair> {
        skip_unless(test, WgPair::underlay_only())
    }

    /// Both labs and the veth underlay, no WireGuard yet (see
    /// [`WgPair::bring_up_tunnel`]).
    pub(crate) fn underlay_only() -> Result<WgPair, String> {
        require_tools(BASE_TOOLS)?;
        require_tools(&["wireguard-go", "wg"])?;
        let gateway = Lab::new()?;
        let peer = gateway.sibling()?;
        // Before any link exists: nothing in the pair changes after setup.
        gateway.quiet_ipv6()?;
        peer.quiet_ipv6()?;
        let out = gateway.sh(&format!(
            "set -e
ip link add {GW_VETH} type veth peer name {PEER_VETH} netns {peer_pid}
ip addr add {GW_UNDERLAY}/24 dev {GW_VETH}
ip link set {GW_VETH} up",
            peer_pid = peer.pid()
        ));
        check(&out, "veth underlay (gateway side)")?;
        let out = peer.sh(&format!(
            "set -e
ip addr add {PEER_UNDERLAY}/24 dev {PEER_VETH}
ip link set {PEER_VETH} up"
        ));
        check(&out, "veth underlay (peer side)")?;
        // The kernel marks a link's state UP a moment after its carrier comes
        // (link watch, up to 1 s): waited for here, so it does not change
        // later, under a browser that watches its links.
        let up = |lab: &Lab, iface: &str| {
            wait_until(Duration::from_secs(5), || {
                String::from_utf8_lossy(&lab.sh(&format!("ip -o link show {iface}")).stdout).contains("state UP")
            })
        };
        if !up(&gateway, GW_VETH) || !up(&peer, PEER_VETH) {
            return Err("the veth underlay did not come up within 5 s".into());
        }
        Ok(WgPair {
            gateway,
            peer,
            gw_keys: Keys::generate()?,
            peer_keys: Keys::generate()?,
            gw_iface: None,
            second: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Starts wireguard-go on both sides (gateway interface `gw_iface`),
    /// configures keys, peers, addresses, and sets the interfaces up.
    /// Returns once both interfaces exist and are configured. Panics on
    /// failure or if a tunnel is already up.
    pub(crate) fn bring_up_tunnel(&mut self, gw_iface: &str) {
        if let Err(e) = self.try_bring_up_tunnel(gw_iface) {
            panic!("WgPair: {e}");
        }
    }

    fn try_bring_up_tunnel(&mut self, gw_iface: &str) -> Result<(), String> {
        assert!(self.gw_iface.is_none(), "WgPair: tunnel already up");
        start_wireguard(&self.gateway, gw_iface)?;
        self.gw_iface = Some(gw_iface.to_string());
        start_wireguard(&self.peer, PEER_IFACE)?;
        configure(
            &self.gateway,
            gw_iface,
            &self.gw_keys.private,
            &self.peer_keys.public,
            &format!("{PEER_WG}/32,{PEER_WG6}/128"),
            PEER_UNDERLAY,
            [GW_WG.into(), GW_WG6.into()],
        )?;
        configure(
            &self.peer,
            PEER_IFACE,
            &self.peer_keys.private,
            &self.gw_keys.public,
            &format!("{GW_WG}/32,{GW_WG6}/128"),
            GW_UNDERLAY,
            [PEER_WG.into(), PEER_WG6.into()],
        )
    }

    /// A second peer of the gateway (10.77.0.3), with its own lab, key and
    /// underlay, and a tunnel to the gateway's interface; returns once its
    /// interface is configured (the handshake happens on its first packet).
    /// One per pair. Panics when the tunnel is not up or on failure (the pair
    /// itself already worked, so the machine can do it).
    pub(crate) fn add_peer(&self) -> WgPeer {
        match self.try_add_peer() {
            Ok(p) => p,
            Err(e) => panic!("WgPair::add_peer: {e}"),
        }
    }

    fn try_add_peer(&self) -> Result<WgPeer, String> {
        let gw_iface = self.gw_iface.as_deref().ok_or("bring the tunnel up first")?;
        if self.second.swap(true, std::sync::atomic::Ordering::Relaxed) {
            return Err("the pair already has a second peer".into());
        }
        let lab = self.gateway.sibling()?;
        let keys = Keys::generate()?;
        let out = self.gateway.sh(&format!(
            "set -e
ip link add {GW_VETH2} type veth peer name {PEER_VETH} netns {pid}
ip addr add {GW_UNDERLAY2}/24 dev {GW_VETH2}
ip link set {GW_VETH2} up
wg set {gw_iface} peer '{public}' allowed-ips {PEER2_WG}/32,{PEER2_WG6}/128 endpoint {PEER2_UNDERLAY}:{WG_PORT}",
            pid = lab.pid(),
            public = keys.public,
        ));
        check(&out, "second peer (gateway side)")?;
        let out = lab.sh(&format!(
            "set -e
ip addr add {PEER2_UNDERLAY}/24 dev {PEER_VETH}
ip link set {PEER_VETH} up"
        ));
        check(&out, "second peer underlay")?;
        start_wireguard(&lab, PEER_IFACE)?;
        configure(
            &lab,
            PEER_IFACE,
            &keys.private,
            &self.gw_keys.public,
            &format!("{GW_WG}/32,{GW_WG6}/128"),
            GW_UNDERLAY2,
            [PEER2_WG.into(), PEER2_WG6.into()],
        )?;
        Ok(WgPeer { lab, public_key: keys.public })
    }

    /// The first peer's public key (base64, as `wg` prints it).
    pub(crate) fn peer_public_key(&self) -> &str {
        &self.peer_keys.public
    }

    /// Gives the first peer a new key at the same tunnel address, as when a
    /// device is re-installed: the old key is removed from the gateway's
    /// interface (`wg set IFACE peer OLD remove`), the peer takes the new
    /// private key, and the gateway learns the new public key with the same
    /// allowed-ips and endpoint. Returns the new public key. Panics when the
    /// tunnel is not up or on failure.
    pub(crate) fn rekey_peer(&mut self) -> String {
        let gw_iface = self.gw_iface.clone().expect("WgPair::rekey_peer: bring the tunnel up first");
        let keys = Keys::generate().unwrap_or_else(|e| panic!("WgPair::rekey_peer: {e}"));
        self.gateway.sh_ok(&format!("wg set {gw_iface} peer '{}' remove", self.peer_keys.public));
        self.peer.sh_ok(&format!("printf '%s\\n' '{}' | wg set {PEER_IFACE} private-key /dev/stdin", keys.private));
        self.gateway.sh_ok(&format!(
            "wg set {gw_iface} peer '{}' allowed-ips {PEER_WG}/32,{PEER_WG6}/128 endpoint {PEER_UNDERLAY}:{WG_PORT}",
            keys.public
        ));
        self.peer_keys = keys;
        self.peer_keys.public.clone()
    }

    /// Stops both wireguard-go daemons: the WireGuard interfaces (and their
    /// addresses) disappear, the underlay stays. No-op when no tunnel is up.
    pub(crate) fn tear_down_tunnel(&mut self) {
        let Some(gw_iface) = self.gw_iface.take() else {
            return;
        };
        for (lab, iface) in [(&self.gateway, gw_iface.as_str()), (&self.peer, PEER_IFACE)] {
            lab.release(iface);
            // SIGKILL leaves the control socket behind: remove it so `wg show`
            // and interface detection do not see a stale one.
            lab.sh(&format!("rm -f /var/run/wireguard/{iface}.sock"));
        }
    }

    /// Name of the gateway's WireGuard interface, if the tunnel is up.
    pub(crate) fn gateway_iface(&self) -> Option<&str> {
        self.gw_iface.as_deref()
    }

    /// Name of the peer's WireGuard interface (`wgpeer`).
    pub(crate) fn peer_iface(&self) -> &'static str {
        PEER_IFACE
    }

    /// 10.77.0.1 (prefix /24).
    pub(crate) fn gateway_wg_addr(&self) -> IpAddr {
        GW_WG.into()
    }

    /// fd77::1 (prefix /64).
    pub(crate) fn gateway_wg_addr6(&self) -> IpAddr {
        GW_WG6.into()
    }

    /// 10.77.0.2 (prefix /24).
    pub(crate) fn peer_wg_addr(&self) -> IpAddr {
        PEER_WG.into()
    }

    /// 192.0.2.1 (prefix /24) on `veth-gw`: reachable from the peer outside
    /// the tunnel.
    pub(crate) fn gateway_underlay_addr(&self) -> IpAddr {
        GW_UNDERLAY.into()
    }

    /// Runs `sh -c script` in the peer lab (see [`Lab::sh`]).
    pub(crate) fn peer_sh(&self, script: &str) -> Output {
        self.peer.sh(script)
    }

    /// A `Command` running `program` in the peer lab (see [`Lab::command`]).
    pub(crate) fn peer_command(&self, program: &str) -> Command {
        self.peer.command(program)
    }
}

fn check(out: &Output, what: &str) -> Result<(), String> {
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Runs `wireguard-go -f iface` in `lab` (adopted by the lab, so killed with
/// it) and waits until the interface and its control socket exist.
fn start_wireguard(lab: &Lab, iface: &str) -> Result<(), String> {
    let log = format!("/var/run/wireguard/.{iface}.log");
    let mut cmd = lab.command("sh");
    cmd.args(["-c", "exec wireguard-go -f \"$1\" >\"$2\" 2>&1", "sh", iface, &log])
        .env("WG_PROCESS_FOREGROUND", "1")
        .env("LOG_LEVEL", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut proc = Proc::spawn(&mut cmd);
    let ready = format!("test -S /var/run/wireguard/{iface}.sock && ip link show dev {iface}");
    let mut exited = false;
    let up = wait_until(READY_TIMEOUT, || {
        exited = !proc.is_running();
        exited || lab.sh(&format!("{ready} >/dev/null 2>&1")).status.success()
    });
    if up && !exited {
        lab.adopt(iface, proc);
        return Ok(());
    }
    proc.kill_now();
    let log = String::from_utf8_lossy(&lab.sh(&format!("cat '{log}'")).stdout).into_owned();
    let why = if exited { "exited" } else { "not ready in time" };
    Err(format!("wireguard-go -f {iface} {why}: {}", log.trim()))
}

fn configure(
    lab: &Lab,
    iface: &str,
    private_key: &str,
    peer_public: &str,
    allowed_ips: &str,
    endpoint: Ipv4Addr,
    addrs: [IpAddr; 2],
) -> Result<(), String> {
    let out = lab.sh(&format!(
        "set -e
printf '%s\\n' '{private_key}' | wg set {iface} listen-port {WG_PORT} private-key /dev/stdin \
  peer '{peer_public}' allowed-ips {allowed_ips} endpoint {endpoint}:{WG_PORT}
ip addr add {v4}/24 dev {iface}
ip addr add {v6}/64 dev {iface} nodad
ip link set {iface} up",
        v4 = addrs[0],
        v6 = addrs[1],
    ));
    check(&out, &format!("configuring {iface}"))
}

/// The second peer and the re-key: two peers reach the gateway each from its
/// own tunnel address, over both families; after a re-key the first peer is
/// back at its address under its new key, and the gateway knows only that.
#[test]
fn a_second_peer_and_a_new_key_reach_the_gateway() {
    let Some(mut pair) = WgPair::or_skip("a_second_peer_and_a_new_key_reach_the_gateway", "wg0") else {
        return;
    };
    let second = pair.add_peer();
    assert!(pair.try_add_peer().is_err(), "a pair has one second peer");
    // An HTTP server in the gateway that answers with the caller's address.
    let server = "import http.server as h
class H(h.BaseHTTPRequestHandler):
    def do_GET(self):
        b = self.client_address[0].encode(); self.send_response(200); self.end_headers(); self.wfile.write(b)
    def log_message(self, *a): pass
import socket, socketserver
class S(socketserver.TCPServer): address_family = socket.AF_INET6
S(('::', 18792), H).serve_forever()";
    let _server = pair.gateway.spawn("python3", &["-c", server]);
    let ask = |lab: &Lab, url: &str| {
        let out = lab.sh(&format!("curl -sS --max-time 5 '{url}'"));
        assert!(out.status.success(), "{url}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(wait_until(Duration::from_secs(10), || pair
        .peer_sh("curl -s --max-time 2 http://10.77.0.1:18792/")
        .status
        .success()));
    assert_eq!(ask(&pair.peer, "http://10.77.0.1:18792/"), "::ffff:10.77.0.2");
    assert_eq!(ask(&second.lab, "http://10.77.0.1:18792/"), format!("::ffff:{}", second.wg_addr()));
    assert_eq!(ask(&second.lab, "http://[fd77::1]:18792/"), second.wg_addr6().to_string());
    assert!(second.sh("wg show wgpeer latest-handshakes").status.success());
    let mut cmd = second.command("wg");
    cmd.args(["show", "wgpeer", "public-key"]);
    let out = run_bounded(cmd, Duration::from_secs(5));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), second.public_key());
    // The gateway knows both keys, each with its own address.
    let gw = pair.gateway.sh_ok("wg show wg0 allowed-ips");
    assert!(gw.contains(&format!("{}\t10.77.0.2/32", pair.peer_public_key())), "{gw}");
    assert!(gw.contains(&format!("{}\t10.77.0.3/32", second.public_key())), "{gw}");

    let old = pair.peer_public_key().to_owned();
    let new = pair.rekey_peer();
    assert_ne!(old, new);
    let gw = pair.gateway.sh_ok("wg show wg0 allowed-ips");
    assert!(!gw.contains(&old) && gw.contains(&format!("{new}\t10.77.0.2/32")), "{gw}");
    assert_eq!(pair.peer_sh("wg show wgpeer public-key").stdout, format!("{new}\n").into_bytes());
    assert!(wait_until(Duration::from_secs(10), || pair
        .peer_sh("curl -s --max-time 2 http://10.77.0.1:18792/")
        .status
        .success()));
    assert_eq!(ask(&pair.peer, "http://10.77.0.1:18792/"), "::ffff:10.77.0.2");
}
