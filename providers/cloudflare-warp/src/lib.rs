//! `cloudflare-warp`: the Cloudflare WARP client's address.
//!
//! The client's virtual interface is `CloudflareWARP` on Linux (a TUN driven by
//! the userspace daemon; no WireGuard control socket, so `wireguard` does not
//! see it) and the adapter "Cloudflare WARP" on Windows; on macOS it is a
//! `utunN`, counted only with a WARP address on it. Addresses: 172.16.0.2 for
//! the consumer client, an IPv6 address in 2606:4700:110::/48, and, for Zero
//! Trust device IPs, 100.96.0.0/12 and 2606:4700:cf1:1000::/64 (Cloudflare's
//! "Device IPs" docs). 100.96.0.0/12 is carrier-NAT space the tailnet uses too:
//! on a `utunN` it counts only beside a Zero Trust IPv6 device address (WARP
//! hands out both; a tailnet's utun has fd7a:115c:a1e0::/48 instead), and a pool
//! moved elsewhere goes in `[providers.cloudflare-warp] cidrs`.
//!
//! The ranges only ever confirm a `utunN`: on their own they claim nothing.
//! 172.16.0.2 sits in RFC 1918 space any LAN or OpenVPN pool may hand out, so an
//! address there on another interface (a NIC, `tun0`, a macOS `en0` of unknown
//! kind) is refused with a reason. `lan` never takes the WARP interface either:
//! it is a tunnel, and where the OS gives no kind, WARP's name claim outweighs
//! `lan`'s range claim when the resolver settles shared space.
//!
//! WARP is last among the meshes in `auto` (priority 250, after `wireguard`):
//! with the consumer client nothing can reach 172.16.0.2 from outside, so any
//! real mesh on the host should win.

use meshgate_core::{
    BindProvider, Claims, MatchSummary, MeshMatcher, MeshSpec, ProviderConfig, ProviderInfo, Rejection, Role, Snapshot,
    Specificity,
};

/// The provider's constant facts.
pub const INFO: ProviderInfo = ProviderInfo {
    name: "cloudflare-warp",
    priority: 250,
    description: "Cloudflare WARP address (CloudflareWARP, utunN with a WARP address)",
    role: Role::Mesh,
};

/// How WARP shows up on a host.
pub const SPEC: MeshSpec = MeshSpec {
    mesh: "Cloudflare WARP",
    names: &["CloudflareWARP", "Cloudflare WARP"],
    weak_names: &["utun*"],
    exclude_names: &[],
    kinds: &[],
    ranges: &["172.16.0.2/32", "2606:4700:110::/48", "100.96.0.0/12", "2606:4700:cf1:1000::/64"],
};

/// The WARP provider: a [`MeshMatcher`] whose range-only claims from the
/// built-in ranges are turned into rejections.
#[derive(Debug, Clone)]
pub struct Warp {
    matcher: MeshMatcher,
}

impl Default for Warp {
    fn default() -> Self {
        Self { matcher: MeshMatcher::new(SPEC) }
    }
}

impl BindProvider for Warp {
    fn info(&self) -> ProviderInfo {
        INFO
    }

    fn matches(&self, config: &ProviderConfig) -> MatchSummary {
        self.matcher.summary(config)
    }

    fn claim(&self, snapshot: &Snapshot, config: &ProviderConfig) -> Claims {
        let mut claims = self.matcher.claim(snapshot, config);
        // A range claim stands only when the user's own config range vouches for it.
        let (keep, weak): (Vec<_>, Vec<_>) = claims
            .candidates
            .into_iter()
            .partition(|c| c.specificity != Specificity::Range || config.cidrs.iter().any(|n| n.contains(&c.address)));
        // 100.96.0.0/12 is a quarter of the tailnet's space: on a utunN it counts
        // only beside a Zero Trust IPv6 device address (WARP hands out both).
        let zt_v4: ipnet::IpNet = "100.96.0.0/12".parse().expect("built-in range");
        let zt_v6: ipnet::IpNet = "2606:4700:cf1:1000::/64".parse().expect("built-in range");
        let named = |iface: &str| SPEC.names.contains(&iface);
        let vouched = |c: &meshgate_core::Candidate| {
            !zt_v4.contains(&c.address)
                || named(&c.interface)
                || config.cidrs.iter().any(|n| n.contains(&c.address))
                || keep.iter().any(|o| o.interface == c.interface && zt_v6.contains(&o.address))
        };
        let (keep, shared): (Vec<_>, Vec<_>) = keep.iter().cloned().partition(vouched);
        claims.candidates = keep;
        claims.rejected.extend(shared.into_iter().map(|c| Rejection {
            reason: format!(
                "{} on {} is in WARP's Zero Trust pool 100.96.0.0/12, but without a Zero Trust IPv6 address \
                 beside it that is tailnet space as much as WARP's: not proof",
                c.address, c.interface
            ),
            interface: c.interface,
            address: Some(c.address),
        }));
        claims.rejected.extend(weak.into_iter().map(|c| Rejection {
            reason: format!(
                "{} on {} is a WARP address, but {} is neither CloudflareWARP nor a macOS utunN: \
                 the address alone is not proof (172.16.0.2 is RFC 1918 space any network may use)",
                c.address, c.interface, c.interface
            ),
            interface: c.interface,
            address: Some(c.address),
        }));
        claims
    }
}

/// Builds the provider.
pub fn build() -> Box<dyn BindProvider> {
    Box::new(Warp::default())
}

meshgate_core::register_provider!(INFO, build);

#[cfg(test)]
mod tests {
    use super::*;
    use meshgate_core::config::FileConfig;
    use meshgate_core::testing::fixtures::{chosen, refused};
    use meshgate_core::testing::{fixtures, Kit};
    use meshgate_core::{Interface, InterfaceKind as K};

    const V6: &str = "2606:4700:110:8a36:df92:102a:9602:fa18";

    fn warp_linux() -> Interface {
        fixtures::iface("CloudflareWARP", 21, K::Tun, &["172.16.0.2/32", &format!("{V6}/128")])
    }

    /// A macOS utun as the portable source reports it: no kind, point-to-point.
    fn utun(name: &str, addrs: &[&str]) -> Interface {
        let mut i = fixtures::iface(name, 15, K::Unknown, addrs);
        i.flags.point_to_point = true;
        i
    }

    fn claim_with(ifaces: Vec<Interface>, config: &ProviderConfig) -> Claims {
        Warp::default().claim(&fixtures::with_lo(ifaces), config)
    }

    fn claim(ifaces: Vec<Interface>) -> Claims {
        claim_with(ifaces, &ProviderConfig::default())
    }

    #[test]
    fn passes_the_conformance_kit() {
        Kit::new(&Warp::default())
            .sample(warp_linux())
            .sample(utun("utun4", &["172.16.0.2/32", &format!("{V6}/128")]))
            .sample(fixtures::iface("Cloudflare WARP", 30, K::Unknown, &["172.16.0.2/32"]))
            .check();
    }

    struct Case {
        what: &'static str,
        ifaces: Vec<Interface>,
        want: Vec<String>,
    }

    #[test]
    fn chooses_and_refuses() {
        let cases = [
            Case {
                what: "Linux: CloudflareWARP, both families",
                ifaces: vec![warp_linux()],
                want: vec!["172.16.0.2@CloudflareWARP Name".into(), format!("{V6}@CloudflareWARP Name")],
            },
            Case {
                what: "Windows: the adapter is called Cloudflare WARP",
                ifaces: vec![fixtures::iface("Cloudflare WARP", 30, K::Unknown, &["172.16.0.2/32"])],
                want: vec!["172.16.0.2@Cloudflare WARP Name".into()],
            },
            Case {
                what: "Zero Trust device IPs: any address on the named interface",
                ifaces: vec![fixtures::iface(
                    "CloudflareWARP",
                    21,
                    K::Tun,
                    &["100.96.0.7/12", "2606:4700:cf1:1000::7/128"],
                )],
                want: vec!["100.96.0.7@CloudflareWARP Name".into(), "2606:4700:cf1:1000::7@CloudflareWARP Name".into()],
            },
            Case {
                what: "macOS: a utun with WARP's addresses; only those addresses",
                ifaces: vec![utun("utun4", &["172.16.0.2/32", &format!("{V6}/128"), "fe80::4/64"])],
                want: vec!["172.16.0.2@utun4 Name".into(), format!("{V6}@utun4 Name")],
            },
            Case {
                what: "macOS: a utun with Zero Trust's device IPs, v4 and v6",
                ifaces: vec![utun("utun4", &["100.96.0.7/32", "2606:4700:cf1:1000::7/128"])],
                want: vec!["100.96.0.7@utun4 Name".into(), "2606:4700:cf1:1000::7@utun4 Name".into()],
            },
            Case {
                what: "macOS: a tailnet utun with an address in 100.96.0.0/12 is not WARP's",
                ifaces: vec![utun("utun7", &["100.100.9.9/32", "fd7a:115c:a1e0::9/128"])],
                want: vec![],
            },
            Case {
                what: "macOS: a utun of another VPN",
                ifaces: vec![utun("utun5", &["100.101.2.3/32"]), utun("utun6", &["10.8.0.2/32"])],
                want: vec![],
            },
            Case {
                what: "a physical NIC on a LAN that hands out 172.16.0.2",
                ifaces: vec![fixtures::iface("eth0", 2, K::Physical, &["172.16.0.2/24"])],
                want: vec![],
            },
            Case {
                what: "macOS en0 (kind unknown) holding 172.16.0.2",
                ifaces: vec![fixtures::iface("en0", 4, K::Unknown, &["172.16.0.2/24"])],
                want: vec![],
            },
            Case {
                what: "an OpenVPN tun0 from a 172.16.0.0/24 pool",
                ifaces: vec![fixtures::iface("tun0", 22, K::Tun, &["172.16.0.2/24"])],
                want: vec![],
            },
            Case {
                what: "a wgcf/wg-quick WARP profile is the wireguard mode's",
                ifaces: vec![fixtures::iface("wgcf", 23, K::WireGuard, &["172.16.0.2/32", &format!("{V6}/128")])],
                want: vec![],
            },
            Case {
                what: "WARP disconnected: the TUN has no carrier",
                ifaces: vec![warp_linux().carrier(Some(false))],
                want: vec![],
            },
        ];
        for case in cases {
            assert_eq!(chosen(&claim(case.ifaces)), case.want, "{}", case.what);
        }
    }

    #[test]
    fn a_lookalike_address_is_refused_with_the_reason() {
        let c = claim(vec![
            fixtures::iface("eth0", 2, K::Physical, &["172.16.0.2/24"]),
            fixtures::iface("en0", 4, K::Unknown, &["172.16.0.2/24"]),
            fixtures::iface("tun0", 22, K::Tun, &[&format!("{V6}/128")]),
            warp_linux().down(),
        ]);
        assert!(c.candidates.is_empty(), "{c:?}");
        let nic = refused(&c, "eth0");
        assert!(nic.iter().any(|r| r.contains("physical NIC") && r.contains("shared address space")), "{nic:?}");
        let en0 = refused(&c, "en0");
        assert!(en0.iter().any(|r| r.contains("172.16.0.2 on en0") && r.contains("not proof")), "{en0:?}");
        let tun0 = refused(&c, "tun0");
        assert!(tun0.iter().any(|r| r.contains("neither CloudflareWARP nor a macOS utunN")), "{tun0:?}");
        assert!(refused(&c, "CloudflareWARP").iter().any(|r| r.contains("administratively down")));
    }

    #[test]
    fn a_configured_range_does_claim_on_its_own() {
        // `[providers.cloudflare-warp] cidrs = ["100.96.0.0/12"]`: the user's Zero
        // Trust pool, vouched for by the user, claims range-only like any mesh's.
        let path = std::path::Path::new("test.toml");
        let file = FileConfig::parse("[providers.cloudflare-warp]\ncidrs = [\"100.96.0.0/12\"]\n", path).unwrap();
        let cfg = file.provider_configs(path, &["cloudflare-warp"]).unwrap().remove("cloudflare-warp").unwrap();
        let warp0 = fixtures::iface("warp0", 31, K::Tun, &["100.96.0.7/32", "172.16.0.2/32"]);
        let c = claim_with(vec![warp0.clone()], &cfg);
        assert_eq!(chosen(&c), ["100.96.0.7@warp0 Range"]);
        assert!(refused(&c, "warp0").iter().any(|r| r.contains("172.16.0.2 on warp0")), "{:?}", c.rejected);
        // Without the config, nothing.
        assert!(claim(vec![warp0]).candidates.is_empty());
        // And never on a NIC, config or not.
        let nic = fixtures::iface("eth0", 2, K::Physical, &["100.96.0.7/12"]);
        assert!(claim_with(vec![nic], &cfg).candidates.is_empty());
    }
}
