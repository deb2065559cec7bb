//! [`WgPair`]: a real WireGuard tunnel (userspace `wireguard-go`) between a
//! `gateway` lab and a `peer` lab joined by a veth underlay. See `mod.rs`.

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
        Ok(WgPair { gateway, peer, gw_keys: Keys::generate()?, peer_keys: Keys::generate()?, gw_iface: None })
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
