//! Linux: one rtnetlink dump of links and one of addresses (what `ip -d addr`
//! does), one of routes when there is a veth (for the default route's
//! interface: only a veth's meaning depends on it), plus the
//! WireGuard socket directory, and sysfs where netlink has no link kind (a
//! physical NIC has none).
//!
//! sysfs is only trusted when `/sys/class/net/NAME/ifindex` matches the netlink
//! index: inside a network namespace, /sys may still show the host's interfaces.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use netlink_packet_core::{
    DecodeError, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator, Parseable,
    ParseableParametrized, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoKind, LinkAttribute, LinkExtentMask, LinkFlags, LinkHeader, LinkInfo, LinkLayerType, LinkMessage,
    LinkMessageBuffer,
};
use netlink_packet_route::route::{RouteAttribute, RouteHeader, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::model::{Flags, IfAddr, Interface, InterfaceKind, Snapshot};

use super::{userspace_wireguard_names, InterfaceSource, SourceError, WIREGUARD_SOCKET_DIR};

/// Interfaces from rtnetlink, kinds from link info, sysfs and WireGuard sockets.
///
/// Its snapshots read the table of a registered [`LiveNetlink`](super::LiveNetlink)
/// when there is one (a process following the network); [`read`](Self::read)
/// always dumps.
#[derive(Debug, Clone, PartialEq, Eq)]
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

pub(crate) fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> SourceError {
    move |source| SourceError::Io { what, source }
}

/// Parses one rtnetlink message at the start of `data` (which may hold more).
/// Link messages are parsed as far as a snapshot needs: the header, the name
/// and the link info. The rest (statistics, per-family configuration: most of
/// a link message's bytes) is skipped, through the crate's own attribute
/// iterator, not parsed and thrown away.
pub(crate) fn deserialize(data: &[u8]) -> Result<NetlinkMessage<RouteNetlinkMessage>, DecodeError> {
    let buf = NetlinkBuffer::new_checked(data)?;
    let kind = buf.message_type();
    if kind != libc::RTM_NEWLINK && kind != libc::RTM_DELLINK {
        return NetlinkMessage::deserialize(data);
    }
    let header = NetlinkHeader::parse(&buf)?;
    let payload = buf.payload();
    let mut link = LinkMessage::default();
    link.header = LinkHeader::parse(payload)?;
    let attrs = payload.get(std::mem::size_of::<LinkMessageBuffer>()..).unwrap_or_default();
    for nla in NlasIterator::new(attrs) {
        let nla = nla?;
        if nla.kind() == libc::IFLA_IFNAME {
            link.attributes.push(LinkAttribute::parse_with_param(&nla, link.header.interface_family)?);
        } else if nla.kind() == libc::IFLA_LINKINFO {
            // Link info this crate cannot parse (a new kind's data) leaves the
            // kind unknown (sysfs is asked), not the whole link unread.
            if let Ok(info) = LinkAttribute::parse_with_param(&nla, link.header.interface_family) {
                link.attributes.push(info);
            }
        }
    }
    let inner =
        if kind == libc::RTM_NEWLINK { RouteNetlinkMessage::NewLink(link) } else { RouteNetlinkMessage::DelLink(link) };
    Ok(NetlinkMessage::new(header, NetlinkPayload::InnerMessage(inner)))
}

/// One receive buffer. The kernel sizes each dump datagram by the largest
/// read the socket has seen (up to 32 KiB), so one read into this takes a
/// whole datagram of ~20 links; a peek for the exact size and then the read
/// (`recv_from_full`) kept the datagrams at ~3 KiB with two calls each.
const RECV_BUF: usize = 64 * 1024;

/// Sends one dump request and hands each reply to `each` as it is parsed
/// (a dump of 1,000 links is never held whole).
pub(crate) fn dump(
    socket: &Socket,
    seq: u32,
    msg: RouteNetlinkMessage,
    mut each: impl FnMut(RouteNetlinkMessage),
) -> Result<(), SourceError> {
    let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
    packet.header.flags = NLM_F_DUMP | NLM_F_REQUEST;
    packet.header.sequence_number = seq;
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0).map_err(io("netlink send"))?;
    // Set when the kernel's tables changed during the dump: it may have
    // skipped or repeated entries, so the whole dump is done again.
    let mut interrupted = false;
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
            let msg = deserialize(&data[offset..])
                .map_err(|e| SourceError::Protocol(format!("malformed netlink reply: {e}")))?;
            let len = msg.header.length as usize;
            interrupted |= msg.header.flags & NLM_F_DUMP_INTR != 0;
            match msg.payload {
                NetlinkPayload::Done(_) if interrupted => {
                    return Err(SourceError::Io {
                        what: "netlink dump (interrupted by a change)",
                        source: std::io::ErrorKind::Interrupted.into(),
                    })
                }
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => {
                    if let Some(code) = e.code {
                        return Err(SourceError::Io {
                            what: "netlink dump",
                            source: std::io::Error::from_raw_os_error(-code.get()),
                        });
                    }
                }
                NetlinkPayload::InnerMessage(m) => each(m),
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

/// A link dump request that leaves out the statistics (`RTEXT_FILTER_SKIP_STATS`,
/// as `ip` asks): the kernel skips gathering them, and they are never read.
fn link_request() -> LinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    m
}

impl NetlinkSource {
    /// A snapshot from a dump, synchronously (three netlink round trips and
    /// one directory read), whatever is registered.
    pub fn read(&self) -> Result<Snapshot, SourceError> {
        Ok(self.dump_table()?.snapshot(&userspace_wireguard_names(&self.wireguard_dir)))
    }

    /// Links, addresses and default routes, each dumped once, into a [`Table`].
    /// The dump's messages go through [`Table::apply`], the code that applies
    /// events, so a table kept by events and a fresh one agree by construction
    /// on what each message means.
    pub(crate) fn dump_table(&self) -> Result<Table, SourceError> {
        // A dump the kernel marks interrupted (its tables changed meanwhile)
        // is done again, a few times at most.
        let mut tries = 0;
        loop {
            match self.dump_table_once() {
                Err(SourceError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::Interrupted && tries < 3 =>
                {
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    fn dump_table_once(&self) -> Result<Table, SourceError> {
        let socket = dump_socket()?;
        let mut table = Table::default();
        dump(&socket, 1, RouteNetlinkMessage::GetLink(link_request()), |m| {
            table.apply(&m, self);
        })?;
        dump(&socket, 2, RouteNetlinkMessage::GetAddress(AddressMessage::default()), |m| {
            table.apply(&m, self);
        })?;
        if table.wants_routes() {
            // Without them `lan` refuses every veth, as before: no reason to fail the snapshot.
            table.default_route = self.default_routes(&socket, 3).unwrap_or_else(|e| {
                tracing::debug!("{e}; no default routes read");
                Vec::new()
            });
        }
        Ok(table)
    }

    /// The interfaces holding a default route. The default route's interface
    /// tells a container's LAN (its eth0 veth) from a container link on the
    /// host side. Without routes, `lan` just refuses every veth as before: not
    /// a reason to fail the snapshot.
    pub(crate) fn default_routes(&self, socket: &Socket, seq: u32) -> Result<Vec<u32>, SourceError> {
        let mut out = Vec::new();
        let request = RouteNetlinkMessage::GetRoute(RouteMessage::default());
        dump(socket, seq, request, |m| {
            if let RouteNetlinkMessage::NewRoute(r) = m {
                for index in default_route_interfaces(&r) {
                    if !out.contains(&index) {
                        out.push(index);
                    }
                }
            }
        })?;
        Ok(out)
    }

    /// One link as an interface without addresses; `None` without a name.
    /// The kind is the OS's: a userspace WireGuard socket is looked at when a
    /// snapshot is made ([`Table::snapshot`]).
    pub(crate) fn interface(&self, link: &LinkMessage) -> Option<Interface> {
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

/// A netlink socket for dump requests (not subscribed to any group).
pub(crate) fn dump_socket() -> Result<Socket, SourceError> {
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(io("netlink socket"))?;
    socket.bind_auto().map_err(io("netlink bind"))?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(io("netlink connect"))?;
    Ok(socket)
}

/// What identifies one address of an interface, as the kernel tells two
/// apart: for IPv4, IFA_LOCAL, IFA_ADDRESS (the peer on a point-to-point
/// link) and the prefix length; for IPv6 the address alone (a changed peer
/// or prefix is the same address, changed in place).
type AddrKey = (Option<IpAddr>, Option<IpAddr>, u8);

/// One link and its usable addresses, in the order they came.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Link {
    /// The interface, its `addresses` empty (they are in `addrs`).
    iface: Interface,
    addrs: IndexMap<AddrKey, IfAddr>,
}

/// What a dump says, kept current by applying link and address messages:
/// the links by index with their usable addresses, and the default route's
/// interfaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Table {
    links: BTreeMap<u32, Link>,
    pub(crate) default_route: Vec<u32>,
}

/// What one message did to a [`Table`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    /// The table is different now.
    pub changed: bool,
    /// The default routes may have changed without a route message: IPv4
    /// drops routes silently when a link goes down or goes away, or an
    /// address they used is removed.
    pub routes_stale: bool,
}

impl Table {
    /// Applies one rtnetlink message (a dump's reply or an event). Anything
    /// but an `AF_UNSPEC` link message or an address message is ignored: a
    /// bridge's `AF_BRIDGE` link messages describe its ports, not new links,
    /// and its `DELLINK` only means a port left the bridge.
    pub(crate) fn apply(&mut self, msg: &RouteNetlinkMessage, source: &NetlinkSource) -> Applied {
        match msg {
            RouteNetlinkMessage::NewLink(l) if l.header.interface_family == AddressFamily::Unspec => {
                let Some(iface) = source.interface(l) else { return Applied::default() };
                match self.links.get_mut(&iface.index) {
                    Some(link) if link.iface == iface => Applied::default(),
                    Some(link) => {
                        let stale = link.iface.flags != iface.flags;
                        link.iface = iface;
                        Applied { changed: true, routes_stale: stale }
                    }
                    None => {
                        self.links.insert(iface.index, Link { iface, addrs: IndexMap::new() });
                        Applied { changed: true, routes_stale: true }
                    }
                }
            }
            RouteNetlinkMessage::DelLink(l) if l.header.interface_family == AddressFamily::Unspec => {
                let gone = self.links.remove(&l.header.index).is_some();
                Applied { changed: gone, routes_stale: gone }
            }
            RouteNetlinkMessage::NewAddress(a) => {
                let Some(link) = self.links.get_mut(&a.header.index) else { return Applied::default() };
                let (key, usable) = read_address(a);
                let changed = match usable {
                    Some(addr) => {
                        let new = IfAddr { addr, prefix_len: a.header.prefix_len };
                        link.addrs.insert(key, new) != Some(new)
                    }
                    // Tentative again, or DAD failed: not usable any more.
                    None => link.addrs.shift_remove(&key).is_some(),
                };
                Applied { changed, routes_stale: false }
            }
            RouteNetlinkMessage::DelAddress(a) => {
                let Some(link) = self.links.get_mut(&a.header.index) else { return Applied::default() };
                let (key, _) = read_address(a);
                let changed = link.addrs.shift_remove(&key).is_some();
                Applied { changed, routes_stale: changed && !self.default_route.is_empty() }
            }
            _ => Applied::default(),
        }
    }

    /// True when the default routes mean something here: only a veth's
    /// meaning depends on them (`lan`: a container's own LAN). Without one,
    /// the routes are not read (a host with 1,000 interfaces has thousands).
    pub(crate) fn wants_routes(&self) -> bool {
        self.links.values().any(|l| l.iface.kind == InterfaceKind::Veth)
    }

    /// The snapshot this table describes: interfaces by index, each with its
    /// IPv4 addresses then its IPv6 ones (a dump's order: it lists every IPv4
    /// address before any IPv6 one). A TUN with a userspace WireGuard socket
    /// of its name (`wg_sockets`) is [`InterfaceKind::WireGuardUserspace`].
    pub(crate) fn snapshot(&self, wg_sockets: &HashSet<String>) -> Snapshot {
        let interfaces = self
            .links
            .values()
            .map(|link| {
                let mut iface = link.iface.clone();
                iface.addresses.reserve_exact(link.addrs.len());
                iface.addresses.extend(link.addrs.values().filter(|a| a.addr.is_ipv4()));
                iface.addresses.extend(link.addrs.values().filter(|a| a.addr.is_ipv6()));
                // A userspace WireGuard socket is evidence only for a present TUN of that name.
                if iface.kind == InterfaceKind::Tun && wg_sockets.contains(&iface.name) {
                    iface.kind = InterfaceKind::WireGuardUserspace;
                }
                iface
            })
            .collect();
        Snapshot { default_route: self.default_route.clone(), ..Snapshot::new(interfaces) }
    }

    /// Equal up to the order of each interface's addresses within a family,
    /// which the kernel decides (primaries before secondaries, IPv6 by scope)
    /// and events alone cannot reproduce.
    pub(crate) fn same_as(&self, other: &Table) -> bool {
        // The address maps compare as sets of (key, address): order aside.
        self.default_route == other.default_route
            && self.links.len() == other.links.len()
            && self
                .links
                .iter()
                .zip(&other.links)
                .all(|((i, a), (j, b))| i == j && a.iface == b.iface && a.addrs == b.addrs)
    }
}

/// The interfaces a default route (main table, unicast, prefix length 0) leaves
/// through: its output interface, or each hop's of a multipath route.
pub(crate) fn default_route_interfaces(r: &RouteMessage) -> Vec<u32> {
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

/// What an address message says, in one pass over its attributes: its key
/// (how the kernel tells it apart; for IPv6 the address alone, a changed peer
/// or prefix being the same address changed in place), and the address we
/// can bind if it is usable now. For point-to-point links IFA_ADDRESS is the
/// peer and IFA_LOCAL is ours. IPv6 addresses still in duplicate address
/// detection (tentative) or that failed it cannot be bound yet: they are
/// left out, and the event that ends DAD brings them in.
fn read_address(a: &AddressMessage) -> (AddrKey, Option<IpAddr>) {
    let unusable = |tentative: bool, failed: bool| tentative || failed;
    let mut usable = !unusable(
        a.header.flags.contains(AddressHeaderFlags::Tentative),
        a.header.flags.contains(AddressHeaderFlags::Dadfailed),
    );
    let mut local = None;
    let mut address = None;
    for attr in &a.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Flags(f) => {
                usable &= !unusable(f.contains(AddressFlags::Tentative), f.contains(AddressFlags::Dadfailed));
            }
            _ => {}
        }
    }
    let ours = local.or(address);
    let key = match ours {
        Some(ip @ IpAddr::V6(_)) => (Some(ip), None, 0),
        _ => (local, address, a.header.prefix_len),
    };
    (key, ours.filter(|_| usable))
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
        match super::LiveNetlink::registered(self) {
            Some(live) => live.read(),
            None => self.read(),
        }
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

    /// A source whose sysfs has nothing: kindless links are `Unknown`.
    fn no_sysfs() -> NetlinkSource {
        NetlinkSource { wireguard_dir: "/nonexistent".into(), sysfs_net: "/nonexistent".into() }
    }

    fn link_msg(index: u32, name: &str, kind: Option<InfoKind>, flags: LinkFlags) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = flags;
        m.header.link_layer_type = LinkLayerType::None;
        m.attributes.push(LinkAttribute::IfName(name.into()));
        if let Some(k) = kind {
            m.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(k)]));
        }
        m
    }

    fn new_link(index: u32, name: &str, flags: LinkFlags) -> RouteNetlinkMessage {
        RouteNetlinkMessage::NewLink(link_msg(index, name, Some(InfoKind::Tun), flags))
    }

    fn addr_msg(index: u32, net: &str, flags: AddressHeaderFlags) -> AddressMessage {
        let net: ipnet::IpNet = net.parse().unwrap();
        let mut m = AddressMessage::default();
        m.header.index = index;
        m.header.prefix_len = net.prefix_len();
        m.header.flags = flags;
        m.attributes.push(AddressAttribute::Address(net.addr()));
        if net.addr().is_ipv4() {
            m.attributes.push(AddressAttribute::Local(net.addr()));
        }
        m
    }

    fn new_addr(index: u32, net: &str) -> RouteNetlinkMessage {
        RouteNetlinkMessage::NewAddress(addr_msg(index, net, AddressHeaderFlags::Permanent))
    }

    fn del_addr(index: u32, net: &str) -> RouteNetlinkMessage {
        RouteNetlinkMessage::DelAddress(addr_msg(index, net, AddressHeaderFlags::Permanent))
    }

    fn addrs(snap: &Snapshot, name: &str) -> Vec<String> {
        snap.get(name).expect(name).addresses.iter().map(|a| format!("{}/{}", a.addr, a.prefix_len)).collect()
    }

    fn apply_all(table: &mut Table, msgs: &[RouteNetlinkMessage]) -> Vec<bool> {
        let src = no_sysfs();
        msgs.iter().map(|m| table.apply(m, &src).changed).collect()
    }

    #[test]
    fn links_and_addresses_come_and_go() {
        let mut t = Table::default();
        let up = LinkFlags::Up | LinkFlags::LowerUp;
        let changed = apply_all(
            &mut t,
            &[
                new_link(5, "t0", up),
                new_addr(5, "10.9.0.1/24"),
                new_addr(5, "10.9.0.1/24"), // the same again: nothing new
                new_link(5, "t0", up),      // the same link again: nothing new
                new_addr(7, "10.9.9.1/24"), // no such link (yet): ignored, as a dump does
                del_addr(5, "10.9.0.2/24"), // never there
            ],
        );
        assert_eq!(changed, [true, true, false, false, false, false]);
        let snap = t.snapshot(&HashSet::new());
        assert_eq!(snap.interfaces.len(), 1);
        let t0 = snap.get("t0").unwrap();
        assert_eq!((t0.index, &t0.kind, t0.flags.up, t0.flags.carrier), (5, &InterfaceKind::Tun, true, Some(true)));
        assert_eq!(addrs(&snap, "t0"), ["10.9.0.1/24"]);

        // The link goes down: same addresses, new flags.
        assert_eq!(apply_all(&mut t, &[new_link(5, "t0", LinkFlags::empty())]), [true]);
        let snap = t.snapshot(&HashSet::new());
        assert!(!snap.get("t0").unwrap().flags.up);
        assert_eq!(addrs(&snap, "t0"), ["10.9.0.1/24"]);

        assert_eq!(apply_all(&mut t, &[del_addr(5, "10.9.0.1/24")]), [true]);
        assert!(addrs(&t.snapshot(&HashSet::new()), "t0").is_empty());

        let gone = RouteNetlinkMessage::DelLink(link_msg(5, "t0", Some(InfoKind::Tun), up));
        assert_eq!(apply_all(&mut t, &[new_addr(5, "10.9.0.3/24"), gone]), [true, true]);
        assert!(t.snapshot(&HashSet::new()).interfaces.is_empty());
    }

    #[test]
    fn a_bridge_port_message_is_not_a_link_event() {
        let mut t = Table::default();
        apply_all(&mut t, &[new_link(3, "veth0", LinkFlags::Up), new_addr(3, "192.168.5.2/24")]);
        // A port leaving a bridge: DELLINK with family AF_BRIDGE. The link stays.
        let mut port = link_msg(3, "veth0", None, LinkFlags::Up);
        port.header.interface_family = AddressFamily::Bridge;
        let changed = apply_all(
            &mut t,
            &[RouteNetlinkMessage::DelLink(port.clone()), RouteNetlinkMessage::NewLink(port.clone())],
        );
        assert_eq!(changed, [false, false]);
        assert_eq!(addrs(&t.snapshot(&HashSet::new()), "veth0"), ["192.168.5.2/24"]);
    }

    #[test]
    fn tentative_and_failed_addresses_are_left_out_and_taken_back() {
        let mut t = Table::default();
        apply_all(&mut t, &[new_link(4, "t1", LinkFlags::Up)]);
        let tentative = |f| RouteNetlinkMessage::NewAddress(addr_msg(4, "fd00:9::1/64", f));
        let changed = apply_all(
            &mut t,
            &[
                tentative(AddressHeaderFlags::Tentative), // in DAD: not bindable yet
                tentative(AddressHeaderFlags::Permanent), // DAD over
                tentative(AddressHeaderFlags::Dadfailed), // failed after all: gone
            ],
        );
        assert_eq!(changed, [false, true, true]);
        assert!(addrs(&t.snapshot(&HashSet::new()), "t1").is_empty());
        // The 32-bit IFA_FLAGS attribute counts too (flags above the header's 8 bits).
        let mut m = addr_msg(4, "fd00:9::2/64", AddressHeaderFlags::Permanent);
        m.attributes.push(AddressAttribute::Flags(AddressFlags::Tentative));
        assert_eq!(apply_all(&mut t, &[RouteNetlinkMessage::NewAddress(m)]), [false]);
    }

    #[test]
    fn a_point_to_point_address_is_the_local_one_and_each_peer_is_its_own() {
        let mut t = Table::default();
        apply_all(&mut t, &[new_link(6, "tun9", LinkFlags::Up | LinkFlags::Pointopoint)]);
        let ptp = |peer: &str| {
            let mut m = AddressMessage::default();
            m.header.index = 6;
            m.header.prefix_len = 32;
            m.attributes.push(AddressAttribute::Local("10.20.0.1".parse().unwrap()));
            m.attributes.push(AddressAttribute::Address(peer.parse().unwrap()));
            m
        };
        apply_all(
            &mut t,
            &[RouteNetlinkMessage::NewAddress(ptp("10.20.0.2")), RouteNetlinkMessage::NewAddress(ptp("10.20.0.3"))],
        );
        assert_eq!(addrs(&t.snapshot(&HashSet::new()), "tun9"), ["10.20.0.1/32", "10.20.0.1/32"]);
        assert_eq!(apply_all(&mut t, &[RouteNetlinkMessage::DelAddress(ptp("10.20.0.2"))]), [true]);
        assert_eq!(addrs(&t.snapshot(&HashSet::new()), "tun9"), ["10.20.0.1/32"]);
    }

    #[test]
    fn snapshots_list_ipv4_before_ipv6_as_a_dump_does() {
        let mut t = Table::default();
        apply_all(
            &mut t,
            &[
                new_link(2, "t2", LinkFlags::Up),
                new_addr(2, "fd00:9::1/64"),
                new_addr(2, "10.9.2.1/24"),
                new_addr(2, "10.9.2.2/24"),
            ],
        );
        assert_eq!(addrs(&t.snapshot(&HashSet::new()), "t2"), ["10.9.2.1/24", "10.9.2.2/24", "fd00:9::1/64"]);
        // Another order within a family is the same table (the kernel decides it).
        let mut u = Table::default();
        apply_all(&mut u, &[new_link(2, "t2", LinkFlags::Up), new_addr(2, "10.9.2.2/24"), new_addr(2, "10.9.2.1/24")]);
        assert!(!t.same_as(&u), "u lacks the IPv6 address");
        apply_all(&mut u, &[new_addr(2, "fd00:9::1/64")]);
        assert!(t.same_as(&u) && u.same_as(&t));
        u.default_route = vec![2];
        assert!(!t.same_as(&u), "the default routes differ");
    }

    #[test]
    fn routes_go_stale_when_ipv4_may_have_dropped_one_silently() {
        let src = no_sysfs();
        let mut t = Table::default();
        assert!(t.apply(&new_link(2, "eth0", LinkFlags::Up), &src).routes_stale, "a new link");
        assert!(!t.apply(&new_addr(2, "192.168.1.5/24"), &src).routes_stale, "an address added");
        // Without a default route, an address removed cannot take one along.
        assert!(!t.apply(&del_addr(2, "192.168.1.5/24"), &src).routes_stale);
        t.default_route = vec![2];
        t.apply(&new_addr(2, "192.168.1.5/24"), &src);
        assert!(t.apply(&del_addr(2, "192.168.1.5/24"), &src).routes_stale);
        assert!(t.apply(&new_link(2, "eth0", LinkFlags::empty()), &src).routes_stale, "link down");
        assert!(!t.apply(&new_link(2, "eth0", LinkFlags::empty()), &src).routes_stale, "nothing changed");
    }

    #[test]
    fn a_tun_with_a_wireguard_socket_is_userspace_wireguard() {
        let mut t = Table::default();
        apply_all(&mut t, &[new_link(8, "wg1", LinkFlags::Up), new_link(9, "tun3", LinkFlags::Up)]);
        let wg: HashSet<String> = ["wg1".to_owned(), "absent0".to_owned()].into();
        let snap = t.snapshot(&wg);
        assert_eq!(snap.get("wg1").unwrap().kind, InterfaceKind::WireGuardUserspace);
        assert_eq!(snap.get("tun3").unwrap().kind, InterfaceKind::Tun);
        assert!(snap.get("absent0").is_none(), "a socket alone is no interface");
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
