//! `lan`: private-range addresses on interfaces that are not tunnels.
//!
//! RFC 1918 (10/8, 172.16/12, 192.168/16) and IPv6 ULA (fc00::/7) on physical
//! NICs and other non-tunnel links. openclaw's `lan` meant 0.0.0.0; ours is
//! narrower on purpose: public addresses are never part of `lan` (use `all`).
//! Tunnels, point-to-point links, veths and container/VM bridges are turned down
//! with a reason, with one exception: inside a container (or any network
//! namespace), the veth that holds the namespace's default route *is* the LAN
//! (`eth0`); a veth without it (the host side, or one enslaved to a bridge,
//! which then holds the addresses and the route) stays a container link; a mesh's name or kind claim on an interface beats lan's range
//! claim (a ZeroTier TAP in 10.147.0.0/16 is ZeroTier's, not the LAN).

use ipnet::IpNet;
use meshgate_core::{
    BindProvider, Candidate, Claims, MatchSummary, ProviderConfig, ProviderInfo, Rejection, Role, Snapshot, Specificity,
};

/// The provider's constant facts.
pub const INFO: ProviderInfo = ProviderInfo {
    name: "lan",
    priority: 900,
    description: "private-range addresses (RFC 1918, IPv6 ULA) on non-tunnel interfaces (only when named)",
    role: Role::Lan,
};

const RANGES: &[&str] = &["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"];
const BRIDGES: &[&str] = &["docker*", "br-*", "virbr*", "cni*", "podman*", "lxcbr*", "lxdbr*"];

/// The LAN provider.
#[derive(Debug)]
pub struct Lan {
    ranges: Vec<IpNet>,
    bridges: Vec<glob::Pattern>,
}

impl Default for Lan {
    fn default() -> Self {
        Self {
            ranges: RANGES.iter().map(|r| r.parse().expect("built-in range")).collect(),
            bridges: BRIDGES.iter().map(|p| glob::Pattern::new(p).expect("built-in pattern")).collect(),
        }
    }
}

impl BindProvider for Lan {
    fn info(&self) -> ProviderInfo {
        INFO
    }

    fn matches(&self, config: &ProviderConfig) -> MatchSummary {
        let mut ranges: Vec<String> = RANGES.iter().map(|s| s.to_string()).collect();
        ranges.extend(config.cidrs.iter().map(|c| format!("{c} (config)")));
        MatchSummary {
            names: config.names.iter().map(|p| format!("{} (config)", p.as_str())).collect(),
            ranges,
            kinds: vec!["physical NIC".into(), "any non-tunnel link".into()],
        }
    }

    fn claim(&self, snapshot: &Snapshot, config: &ProviderConfig) -> Claims {
        let mut claims = Claims::default();
        for iface in snapshot.interfaces.iter().filter(|i| !i.is_loopback()) {
            let named = config.names.iter().any(|p| p.matches(&iface.name));
            let private: Vec<_> = iface
                .addresses
                .iter()
                .filter_map(|a| {
                    self.ranges.iter().chain(&config.cidrs).find(|n| n.contains(&a.addr)).map(|n| (a.addr, *n))
                })
                // Never a wildcard (only `all` binds those), never link-local.
                .filter(|(a, _)| !a.is_unspecified() && !meshgate_core::model::is_link_local(*a))
                .collect();
            if private.is_empty() {
                continue;
            }
            let reject = |claims: &mut Claims, reason: String| {
                claims.rejected.push(Rejection { interface: iface.name.clone(), address: None, reason })
            };
            if !named {
                if iface.kind.is_tunnel() || iface.flags.point_to_point {
                    reject(&mut claims, format!("{} is a tunnel ({}), not the LAN", iface.name, iface.kind));
                    continue;
                }
                let veth = iface.kind == meshgate_core::InterfaceKind::Veth;
                if veth && snapshot.holds_default_route(iface) {
                    // Inside a container (or a network namespace) the veth with
                    // the default route is the way out: the namespace's LAN.
                } else if veth {
                    reject(
                        &mut claims,
                        format!(
                            "{} is a container or VM link (veth) without this namespace's default route, not the LAN",
                            iface.name
                        ),
                    );
                    continue;
                } else if self.bridges.iter().any(|p| p.matches(&iface.name)) {
                    reject(
                        &mut claims,
                        format!("{} is a container or VM link ({}), not the LAN", iface.name, iface.kind),
                    );
                    continue;
                }
            }
            if let Some(why) = iface.unusable() {
                reject(&mut claims, why);
                continue;
            }
            for (addr, net) in private {
                let specificity = if named { Specificity::Name } else { Specificity::Range };
                let reason = if iface.kind == meshgate_core::InterfaceKind::Veth && !named {
                    format!(
                        "{addr} on {} is in the private range {net}; {} is a veth holding this namespace's default \
                         route: the container's LAN",
                        iface.name, iface.name
                    )
                } else {
                    format!("{addr} on {} ({}) is in the private range {net}", iface.name, iface.kind)
                };
                claims.candidates.push(Candidate { interface: iface.name.clone(), address: addr, specificity, reason });
            }
        }
        claims
    }
}

/// Builds the provider.
pub fn build() -> Box<dyn BindProvider> {
    Box::new(Lan::default())
}

meshgate_core::register_provider!(INFO, build);

#[cfg(test)]
mod tests {
    use super::*;
    use meshgate_core::{Interface, InterfaceKind};

    fn claim(ifaces: Vec<Interface>) -> Claims {
        Lan::default().claim(&Snapshot::new(ifaces), &ProviderConfig::default())
    }

    #[test]
    fn private_ranges_on_a_nic() {
        let c = claim(vec![Interface::new("eth0", 2, InterfaceKind::Physical)
            .with_addr("192.168.1.10/24")
            .with_addr("203.0.113.7/24")
            .with_addr("fd12::10/64")
            .with_addr("fe80::1/64")]);
        let a: Vec<_> = c.candidates.iter().map(|c| c.address.to_string()).collect();
        assert_eq!(a, ["192.168.1.10", "fd12::10"]);
    }

    #[test]
    fn a_containers_veth_with_the_default_route_is_its_lan() {
        let eth0 = Interface::new("eth0", 2, InterfaceKind::Veth).with_addr("172.18.0.5/16");
        let side = Interface::new("veth9", 3, InterfaceKind::Veth).with_addr("10.200.0.1/30");
        let snap = Snapshot::new(vec![eth0, side]).with_default_route("eth0");
        let c = Lan::default().claim(&snap, &ProviderConfig::default());
        let a: Vec<_> = c.candidates.iter().map(|c| (c.address.to_string(), c.reason.clone())).collect();
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].0, "172.18.0.5");
        assert!(a[0].1.contains("default route") && a[0].1.contains("container's LAN"), "{a:?}");
        assert!(c.rejected[0]
            .reason
            .contains("veth9 is a container or VM link (veth) without this namespace's default route"));
        // Without the default route, eth0 is a container link like any veth.
        let c = claim(vec![Interface::new("eth0", 2, InterfaceKind::Veth).with_addr("172.18.0.5/16")]);
        assert!(c.candidates.is_empty() && c.rejected[0].reason.contains("without"), "{c:?}");
    }

    #[test]
    fn refuses_tunnels_bridges_and_down_links() {
        let c = claim(vec![
            Interface::new("wg0", 3, InterfaceKind::WireGuard).with_addr("10.8.0.1/24"),
            Interface::new("docker0", 4, InterfaceKind::Bridge).with_addr("172.17.0.1/16"),
            Interface::new("eth1", 5, InterfaceKind::Physical).with_addr("10.0.0.5/24").down(),
        ]);
        assert!(c.candidates.is_empty(), "{c:?}");
        let r: Vec<_> = c.rejected.iter().map(|r| r.reason.as_str()).collect();
        assert!(r[0].contains("tunnel") && r[1].contains("container") && r[2].contains("down"), "{r:?}");
    }
}

#[cfg(test)]
mod conformance {
    /// The contract every provider keeps (meshgate_core::testing).
    #[test]
    fn passes_the_conformance_kit() {
        meshgate_core::testing::check_provider(&*super::build());
    }
}
