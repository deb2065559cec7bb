//! Linux: one rtnetlink dump of links and one of addresses (what `ip -d addr`
//! does), one of routes (for the default route's interface), plus the
//! WireGuard socket directory, and sysfs where netlink has no link kind (a
//! physical NIC has none).
//!
//! sysfs is only trusted when `/sys/class/net/NAME/ifindex` matches the netlink
//! index: inside a network namespace, /sys may still show the host's interfaces.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage};
use netlink_packet_route::route::{RouteAttribute, RouteHeader, RouteMessage, RouteType};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::model::{Flags, IfAddr, Interface, InterfaceKind, Snapshot};

use super::{userspace_wireguard_names, InterfaceSource, SourceError, WIREGUARD_SOCKET_DIR};

/// Interfaces from rtnetlink, kinds from link info, sysfs and WireGuard sockets.
#[derive(Debug, Clone)]
pub struct NetlinkSource {
    /// Where to look for userspace WireGuard sockets.
    pub wireguard_dir: PathBuf,
    /// The sysfs net class directory.
    pub sysfs_net: PathBuf,
}

impl Default for NetlinkSource {
    fn default() -> Self {
        Self { wireguard_dir: WIREGUARD_SOCKET_DIR.into(), sysfs_net: "/sys/class/net".into() }
    }
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> SourceError {
    move |source| SourceError::Io { what, source }
}

/// One receive buffer. The kernel sizes each dump datagram by the largest
/// read the socket has seen (up to 32 KiB), so one read into this takes a
/// whole datagram of ~20 links; a peek for the exact size and then the read
/// (`recv_from_full`) kept the datagrams at ~3 KiB with two calls each.
const RECV_BUF: usize = 64 * 1024;

/// Sends one dump request and collects the replies.
fn dump(socket: &Socket, seq: u32, msg: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>, SourceError> {
    let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
    packet.header.flags = NLM_F_DUMP | NLM_F_REQUEST;
    packet.header.sequence_number = seq;
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0).map_err(io("netlink send"))?;
    let mut out = Vec::new();
    let mut data = Vec::with_capacity(RECV_BUF);
    loop {
        data.clear();
        // MSG_TRUNC: the datagram's full length, so a cut-off one is an error, not garbage.
        let len = socket.recv(&mut data, libc::MSG_TRUNC).map_err(io("netlink receive"))?;
        if len > data.len() {
            return Err(SourceError::Protocol(format!(
                "a netlink reply of {len} bytes does not fit the {RECV_BUF}-byte receive buffer"
            )));
        }
        let mut offset = 0;
        while offset < data.len() {
            let msg: NetlinkMessage<RouteNetlinkMessage> = NetlinkMessage::deserialize(&data[offset..])
                .map_err(|e| SourceError::Protocol(format!("malformed netlink reply: {e}")))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    if let Some(code) = e.code {
                        return Err(SourceError::Io {
                            what: "netlink dump",
                            source: std::io::Error::from_raw_os_error(-code.get()),
                        });
                    }
                }
                NetlinkPayload::InnerMessage(m) => out.push(m),
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

impl NetlinkSource {
    /// A snapshot, synchronously (two netlink round trips and one directory read).
    pub fn read(&self) -> Result<Snapshot, SourceError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(io("netlink socket"))?;
        socket.bind_auto().map_err(io("netlink bind"))?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(io("netlink connect"))?;
        let links = dump(&socket, 1, RouteNetlinkMessage::GetLink(LinkMessage::default()))?;
        let addrs = dump(&socket, 2, RouteNetlinkMessage::GetAddress(AddressMessage::default()))?;
        // The default route's interface tells a container's LAN (its eth0 veth)
        // from a container link on the host side. Without routes, `lan` just
        // refuses every veth as before: not a reason to fail the snapshot.
        let routes = dump(&socket, 3, RouteNetlinkMessage::GetRoute(RouteMessage::default())).unwrap_or_default();
        let wg_sockets = userspace_wireguard_names(&self.wireguard_dir);

        let mut by_index: BTreeMap<u32, Interface> = BTreeMap::new();
        for m in links {
            if let RouteNetlinkMessage::NewLink(link) = m {
                if let Some(iface) = self.interface(&link, &wg_sockets) {
                    by_index.insert(iface.index, iface);
                }
            }
        }
        for m in addrs {
            if let RouteNetlinkMessage::NewAddress(a) = m {
                if let (Some(iface), Some(addr)) = (by_index.get_mut(&a.header.index), local_address(&a)) {
                    iface.addresses.push(IfAddr { addr, prefix_len: a.header.prefix_len });
                }
            }
        }
        let mut snapshot = Snapshot::new(by_index.into_values().collect());
        for m in routes {
            if let RouteNetlinkMessage::NewRoute(r) = m {
                for index in default_route_interfaces(&r) {
                    if !snapshot.default_route.contains(&index) {
                        snapshot.default_route.push(index);
                    }
                }
            }
        }
        Ok(snapshot)
    }

    fn interface(&self, link: &LinkMessage, wg_sockets: &HashSet<String>) -> Option<Interface> {
        let mut name = None;
        let mut kind = None;
        for attr in &link.attributes {
            match attr {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::LinkInfo(infos) => {
                    kind = infos.iter().find_map(|i| match i {
                        LinkInfo::Kind(k) => Some(k.clone()),
                        _ => None,
                    })
                }
                _ => {}
            }
        }
        let name = name?;
        let h = &link.header;
        let ether = h.link_layer_type == LinkLayerType::Ether;
        let kind = match kind {
            _ if h.flags.contains(LinkFlags::Loopback) || h.link_layer_type == LinkLayerType::Loopback => {
                InterfaceKind::Loopback
            }
            Some(InfoKind::Wireguard) => InterfaceKind::WireGuard,
            Some(InfoKind::Tun) if ether => InterfaceKind::Tap,
            Some(InfoKind::Tun) => InterfaceKind::Tun,
            Some(InfoKind::Bridge) => InterfaceKind::Bridge,
            Some(InfoKind::Veth) => InterfaceKind::Veth,
            Some(InfoKind::Other(k)) => kind_from_name(&k),
            Some(k) => InterfaceKind::Virtual(k.to_string().to_lowercase()),
            None => sysfs_kind(&self.sysfs_net, &name, h.index, ether).unwrap_or(InterfaceKind::Unknown),
        };
        // A userspace WireGuard socket is evidence only for a present TUN of that name.
        let kind = if kind == InterfaceKind::Tun && wg_sockets.contains(&name) {
            InterfaceKind::WireGuardUserspace
        } else {
            kind
        };
        Some(Interface {
            flags: Flags {
                up: h.flags.contains(LinkFlags::Up),
                loopback: kind == InterfaceKind::Loopback,
                point_to_point: h.flags.contains(LinkFlags::Pointopoint),
                carrier: Some(h.flags.contains(LinkFlags::LowerUp)),
            },
            name,
            index: h.index,
            kind,
            addresses: Vec::new(),
        })
    }
}

/// The interfaces a default route (main table, unicast, prefix length 0) leaves
/// through: its output interface, or each hop's of a multipath route.
fn default_route_interfaces(r: &RouteMessage) -> Vec<u32> {
    let h = &r.header;
    if h.destination_prefix_length != 0 || h.table != RouteHeader::RT_TABLE_MAIN || h.kind != RouteType::Unicast {
        return Vec::new();
    }
    let mut out = Vec::new();
    for attr in &r.attributes {
        match attr {
            RouteAttribute::Oif(i) => out.push(*i),
            RouteAttribute::MultiPath(hops) => out.extend(hops.iter().map(|h| h.interface_index)),
            _ => {}
        }
    }
    out
}

fn kind_from_name(k: &str) -> InterfaceKind {
    match k {
        "wireguard" => InterfaceKind::WireGuard,
        "tun" => InterfaceKind::Tun,
        "bridge" => InterfaceKind::Bridge,
        "veth" => InterfaceKind::Veth,
        other => InterfaceKind::Virtual(other.to_owned()),
    }
}

/// The address we can bind, if this one is usable now. For point-to-point links
/// IFA_ADDRESS is the peer and IFA_LOCAL is ours. IPv6 addresses still in
/// duplicate address detection (tentative) or that failed it cannot be bound
/// yet: they are left out, and the event that ends DAD brings them in.
fn local_address(a: &AddressMessage) -> Option<IpAddr> {
    let unusable = |tentative: bool, failed: bool| tentative || failed;
    if unusable(
        a.header.flags.contains(AddressHeaderFlags::Tentative),
        a.header.flags.contains(AddressHeaderFlags::Dadfailed),
    ) {
        return None;
    }
    let mut local = None;
    let mut address = None;
    for attr in &a.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Flags(f)
                if unusable(f.contains(AddressFlags::Tentative), f.contains(AddressFlags::Dadfailed)) =>
            {
                return None
            }
            _ => {}
        }
    }
    local.or(address)
}

/// The kind sysfs reports for `name`, if sysfs describes this namespace's
/// interface of that index (checked through `ifindex`).
pub(crate) fn sysfs_kind(root: &Path, name: &str, index: u32, ether: bool) -> Option<InterfaceKind> {
    let dir = root.join(name);
    let ifindex = std::fs::read_to_string(dir.join("ifindex")).ok()?;
    if ifindex.trim().parse::<u32>().ok()? != index {
        return None;
    }
    let uevent = std::fs::read_to_string(dir.join("uevent")).unwrap_or_default();
    if uevent.lines().any(|l| l.trim() == "DEVTYPE=wireguard") {
        return Some(InterfaceKind::WireGuard);
    }
    if dir.join("tun_flags").exists() {
        let arphrd = std::fs::read_to_string(dir.join("type")).ok().and_then(|t| t.trim().parse::<u32>().ok());
        return Some(if arphrd == Some(1) || (arphrd.is_none() && ether) {
            InterfaceKind::Tap
        } else {
            InterfaceKind::Tun
        });
    }
    if dir.join("bridge").exists() {
        return Some(InterfaceKind::Bridge);
    }
    if dir.join("device").exists() {
        return Some(InterfaceKind::Physical);
    }
    None
}

#[async_trait::async_trait]
impl InterfaceSource for NetlinkSource {
    async fn snapshot(&self) -> Result<Snapshot, SourceError> {
        self.read()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(root: &Path, name: &str, index: u32, files: &[(&str, &str)]) {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("ifindex"), format!("{index}\n")).unwrap();
        for (f, body) in files {
            if body.is_empty() && !f.contains('.') && *f != "uevent" && *f != "type" && *f != "tun_flags" {
                std::fs::create_dir_all(d.join(f)).unwrap();
            } else {
                std::fs::write(d.join(f), body).unwrap();
            }
        }
    }

    #[test]
    fn sysfs_kinds_and_the_namespace_guard() {
        let root = std::env::temp_dir().join(format!("meshgate-sysfs-{}", std::process::id()));
        fake(&root, "wg0", 5, &[("uevent", "DEVTYPE=wireguard\nINTERFACE=wg0\n")]);
        fake(&root, "tun0", 6, &[("tun_flags", "0x1001"), ("type", "65534")]);
        fake(&root, "zt1", 7, &[("tun_flags", "0x1002"), ("type", "1")]);
        fake(&root, "eth0", 2, &[("device", "")]);
        fake(&root, "br0", 8, &[("bridge", "")]);
        assert_eq!(sysfs_kind(&root, "wg0", 5, false), Some(InterfaceKind::WireGuard));
        assert_eq!(sysfs_kind(&root, "tun0", 6, false), Some(InterfaceKind::Tun));
        assert_eq!(sysfs_kind(&root, "zt1", 7, true), Some(InterfaceKind::Tap));
        assert_eq!(sysfs_kind(&root, "eth0", 2, true), Some(InterfaceKind::Physical));
        assert_eq!(sysfs_kind(&root, "br0", 8, true), Some(InterfaceKind::Bridge));
        // Same name, other index: the host's sysfs seen from a namespace. Not evidence.
        assert_eq!(sysfs_kind(&root, "eth0", 9, true), None);
        assert_eq!(sysfs_kind(&root, "missing", 1, true), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn reads_this_hosts_loopback() {
        let snap = NetlinkSource::default().read().expect("netlink dump");
        let lo = snap.get("lo").expect("every Linux namespace has lo");
        assert_eq!(lo.kind, InterfaceKind::Loopback);
        assert!(lo.flags.loopback);
        assert!(!snap.holds_default_route(lo), "the default route never leaves through lo");
    }
}
