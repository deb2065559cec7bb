//! The data every provider reads: a [`Snapshot`] of the host's interfaces.
//!
//! A snapshot is plain data, built by an [`InterfaceSource`](crate::source::InterfaceSource)
//! from the OS or by hand in tests. Providers never look at the OS themselves, so
//! everything they may need to tell meshes apart (name, flags, addresses, and the
//! interface *kind* the OS reports) lives here.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use crate::fact::DaemonFact;

/// Every interface of the host at one moment, and what the mesh daemons said.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// The interfaces, in the order the OS listed them.
    pub interfaces: Vec<Interface>,
    /// The indexes of the interfaces that hold this namespace's default route
    /// (IPv4 or IPv6), when the source read the routes (Linux does when there
    /// is a veth: only a veth's meaning depends on them, in `lan`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub default_route: Vec<u32>,
    /// What the mesh daemons said ([`crate::probe`] fills this in).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub facts: Vec<DaemonFact>,
    /// Probes that could not answer, and why ("tailscaled's local API did not
    /// answer within 200 ms: skipped").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub probe_notes: Vec<String>,
}

impl Snapshot {
    /// A snapshot holding these interfaces (no routes, no daemon facts).
    pub fn new(interfaces: Vec<Interface>) -> Self {
        Self { interfaces, ..Self::default() }
    }

    /// Adds a daemon fact (fixtures; probes push into `facts`).
    pub fn with_fact(mut self, fact: DaemonFact) -> Self {
        self.facts.push(fact);
        self
    }

    /// Marks the interface of this name as holding the default route (fixtures).
    pub fn with_default_route(mut self, name: &str) -> Self {
        if let Some(i) = self.get(name) {
            self.default_route.push(i.index);
        }
        self
    }

    /// The facts of one mesh (`tailscale`, `tinc`...).
    pub fn facts_of<'a>(&'a self, mesh: &'a str) -> impl Iterator<Item = &'a DaemonFact> + 'a {
        self.facts.iter().filter(move |f| f.mesh == mesh)
    }

    /// True when this interface holds the namespace's default route.
    pub fn holds_default_route(&self, iface: &Interface) -> bool {
        self.default_route.contains(&iface.index)
    }

    /// The interface with this name, if any.
    pub fn get(&self, name: &str) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.name == name)
    }
}

/// One network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interface {
    /// The OS name (`wg0`, `tailscale0`, `utun3`).
    pub name: String,
    /// The OS interface index (also the scope id of its link-local IPv6 addresses).
    pub index: u32,
    /// Up, loopback, point-to-point, carrier.
    pub flags: Flags,
    /// What the OS says the interface is.
    pub kind: InterfaceKind,
    /// Its addresses, v4 and v6.
    pub addresses: Vec<IfAddr>,
}

impl Interface {
    /// A new interface that is up, with no addresses, of the given kind.
    /// Handy for fixtures: `Interface::new("wg0", 3, InterfaceKind::WireGuard).with_addr("10.8.0.1/24")`.
    pub fn new(name: &str, index: u32, kind: InterfaceKind) -> Self {
        Self {
            name: name.to_owned(),
            index,
            flags: Flags {
                up: true,
                loopback: kind == InterfaceKind::Loopback,
                point_to_point: matches!(
                    kind,
                    InterfaceKind::Tun | InterfaceKind::WireGuard | InterfaceKind::WireGuardUserspace
                ),
                carrier: Some(true),
            },
            kind,
            addresses: Vec::new(),
        }
    }

    /// Adds an address written as `IP/PREFIX`; panics on a malformed literal
    /// (fixtures only: real snapshots come from the OS).
    pub fn with_addr(mut self, cidr: &str) -> Self {
        let net: ipnet::IpNet = cidr.parse().unwrap_or_else(|e| panic!("fixture address {cidr:?}: {e}"));
        self.addresses.push(IfAddr { addr: net.addr(), prefix_len: net.prefix_len() });
        self
    }

    /// Marks the interface administratively down.
    pub fn down(mut self) -> Self {
        self.flags.up = false;
        self
    }

    /// Sets whether the interface has carrier (`None`: the OS did not say).
    pub fn carrier(mut self, carrier: Option<bool>) -> Self {
        self.flags.carrier = carrier;
        self
    }

    /// The loopback interface, by its flag or by its kind.
    pub fn is_loopback(&self) -> bool {
        self.flags.loopback || self.kind == InterfaceKind::Loopback
    }

    /// Why this interface cannot carry a listener right now, if it cannot.
    pub fn unusable(&self) -> Option<String> {
        if !self.flags.up {
            return Some(format!("{} is administratively down", self.name));
        }
        if self.flags.carrier == Some(false) {
            return Some(format!("{} has no carrier (for a tunnel: no VPN process holds it open)", self.name));
        }
        None
    }
}

/// Interface flags, as the OS reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Flags {
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// A loopback interface (`IFF_LOOPBACK`).
    pub loopback: bool,
    /// A point-to-point link (`IFF_POINTOPOINT`), as most tunnels are.
    pub point_to_point: bool,
    /// Whether the link has carrier (`IFF_LOWER_UP`); `None` where the OS does not say.
    pub carrier: Option<bool>,
}

/// One address of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IfAddr {
    /// The address.
    pub addr: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
}

/// What an interface is, as far as the OS tells.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum InterfaceKind {
    /// The loopback interface.
    Loopback,
    /// Kernel WireGuard (Linux link kind `wireguard`, sysfs `DEVTYPE=wireguard`).
    WireGuard,
    /// A TUN device with a WireGuard control socket of the same name
    /// (`/var/run/wireguard/NAME.sock`): wireguard-go, boringtun.
    WireGuardUserspace,
    /// A layer-3 TUN device (ARPHRD_NONE): Tailscale, Nebula, Firezone, OpenVPN tun.
    Tun,
    /// A layer-2 TAP device (ARPHRD_ETHER with tun flags): ZeroTier, OpenVPN tap.
    Tap,
    /// A physical network card.
    Physical,
    /// A bridge.
    Bridge,
    /// One end of a veth pair (containers).
    Veth,
    /// Another virtual link kind the OS named (`dummy`, `vlan`, `vxlan`...).
    Virtual(String),
    /// The OS did not say (non-Linux hosts, or no permission).
    Unknown,
}

impl InterfaceKind {
    /// True for kinds that are tunnels a mesh VPN could run on.
    pub fn is_tunnel(&self) -> bool {
        matches!(self, Self::WireGuard | Self::WireGuardUserspace | Self::Tun | Self::Tap)
    }

    /// True for kinds that rule out a mesh VPN: a range match on such an
    /// interface is carrier NAT or a LAN, not a mesh.
    pub fn rules_out_mesh(&self) -> bool {
        matches!(self, Self::Loopback | Self::Physical | Self::Bridge | Self::Veth)
    }
}

impl fmt::Display for InterfaceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Loopback => f.write_str("loopback"),
            Self::WireGuard => f.write_str("kernel WireGuard"),
            Self::WireGuardUserspace => f.write_str("userspace WireGuard (TUN + control socket)"),
            Self::Tun => f.write_str("TUN"),
            Self::Tap => f.write_str("TAP"),
            Self::Physical => f.write_str("physical NIC"),
            Self::Bridge => f.write_str("bridge"),
            Self::Veth => f.write_str("veth"),
            Self::Virtual(k) => write!(f, "{k}"),
            Self::Unknown => f.write_str("unknown kind"),
        }
    }
}

/// True for addresses no provider may choose on its own: IPv4 169.254.0.0/16
/// and IPv6 fe80::/10.
pub fn is_link_local(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => a.is_unicast_link_local(),
    }
}
