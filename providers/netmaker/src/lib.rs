//! `netmaker`: Netmaker networks.
//!
//! netclient puts every network on one kernel WireGuard interface called
//! `netmaker`; older releases made one per network, `nm-NETWORK` (or the
//! bare network id when it is long). `netmaker` is claimed by its name alone:
//! nothing else uses it. `nm-*` is shared with NetworkManager, whose bonds,
//! bridges and teams default to `nm-bond`, `nm-bridge`, `nm-team`, so an `nm-*`
//! interface counts only when the OS says it is WireGuard (kernel, or userspace
//! where the module is missing); with an unknown kind it is refused with a reason
//! (name it under `[providers.netmaker]` to take it). Network ranges are each
//! network's choice, so none is claimed by default.
//!
//! Netmaker runs on WireGuard, so `wireguard` claims the same interface by kind:
//! both answers are right ("my Netmaker address" and "any WireGuard address"),
//! and `netmaker` comes first in `auto` (priority 150 < 200) so `auto` names the
//! mesh, not the transport.

use meshgate_core::{
    BindProvider, Claims, Interface, InterfaceKind, MatchSummary, MeshMatcher, MeshSpec, ProviderConfig, ProviderInfo,
    Rejection, Role, Snapshot, Specificity,
};

/// The provider's constant facts.
pub const INFO: ProviderInfo = ProviderInfo {
    name: "netmaker",
    priority: 150,
    description: "Netmaker network address (netmaker; nm-* when it is WireGuard)",
    role: Role::Mesh,
};

/// How current Netmaker shows up: the `netmaker` interface, by name.
pub const SPEC: MeshSpec =
    MeshSpec { mesh: "Netmaker", names: &["netmaker"], weak_names: &[], exclude_names: &[], kinds: &[], ranges: &[] };

/// The per-network interfaces of older netclient releases (`nm-NETWORK`).
const LEGACY_PREFIX: &str = "nm-";

/// Legacy names, claimed only on these kinds.
const LEGACY_KINDS: &[InterfaceKind] = &[InterfaceKind::WireGuard, InterfaceKind::WireGuardUserspace];

/// The same mesh, for `nm-*` interfaces that passed the kind test.
const LEGACY_SPEC: MeshSpec =
    MeshSpec { mesh: "Netmaker", names: &["nm-*"], weak_names: &[], exclude_names: &[], kinds: &[], ranges: &[] };

/// The Netmaker provider: a [`MeshMatcher`] for `netmaker`, and a second one for
/// `nm-*` interfaces that the OS says are WireGuard.
#[derive(Debug, Clone)]
pub struct Netmaker {
    current: MeshMatcher,
    legacy: MeshMatcher,
}

impl Default for Netmaker {
    fn default() -> Self {
        Self { current: MeshMatcher::new(SPEC), legacy: MeshMatcher::new(LEGACY_SPEC) }
    }
}

fn is_legacy(iface: &Interface, config: &ProviderConfig) -> bool {
    // A name the user configured is theirs to vouch for: it goes through the
    // ordinary matcher like any configured name.
    iface.name.starts_with(LEGACY_PREFIX) && !config.names.iter().any(|p| p.matches(&iface.name))
}

impl BindProvider for Netmaker {
    fn info(&self) -> ProviderInfo {
        INFO
    }

    fn matches(&self, config: &ProviderConfig) -> MatchSummary {
        let mut m = self.current.summary(config);
        m.names.insert(1, "nm-* (only on kernel or userspace WireGuard: NetworkManager uses nm-* too)".into());
        m
    }

    fn claim(&self, snapshot: &Snapshot, config: &ProviderConfig) -> Claims {
        let mut claims = Claims::default();
        // One interface at a time keeps the claims in snapshot order.
        for iface in &snapshot.interfaces {
            if !is_legacy(iface, config) {
                self.current.claim_interface(iface, config, &mut claims);
                continue;
            }
            if !LEGACY_KINDS.contains(&iface.kind) {
                let why = match iface.kind {
                    InterfaceKind::Unknown => "the OS does not say what it is".to_owned(),
                    ref k => format!("it is a {k}, not WireGuard"),
                };
                claims.rejected.push(Rejection {
                    interface: iface.name.clone(),
                    address: None,
                    reason: format!(
                        "{} matches nm-* but {why}: NetworkManager names links nm-* too, so only a WireGuard \
                         nm-* is Netmaker's (add the name under [providers.netmaker] to take it)",
                        iface.name
                    ),
                });
                continue;
            }
            let first = claims.candidates.len();
            self.legacy.claim_interface(iface, config, &mut claims);
            for cand in &mut claims.candidates[first..] {
                if cand.specificity == Specificity::Name {
                    cand.reason =
                        format!("{} matches nm-* and is {} (Netmaker, per-network interface)", iface.name, iface.kind);
                }
            }
        }
        claims
    }
}

/// Builds the provider.
pub fn build() -> Box<dyn BindProvider> {
    Box::new(Netmaker::default())
}

meshgate_core::register_provider!(INFO, build);

#[cfg(test)]
mod tests {
    use super::*;
    use meshgate_core::config::FileConfig;
    use meshgate_core::testing::fixtures::{chosen, refused};
    use meshgate_core::testing::{fixtures, Kit};
    use meshgate_core::InterfaceKind as K;

    fn claim_with(ifaces: Vec<Interface>, config: &ProviderConfig) -> Claims {
        Netmaker::default().claim(&fixtures::with_lo(ifaces), config)
    }

    fn claim(ifaces: Vec<Interface>) -> Claims {
        claim_with(ifaces, &ProviderConfig::default())
    }

    #[test]
    fn passes_the_conformance_kit() {
        Kit::new(&Netmaker::default())
            .sample(fixtures::iface("netmaker", 40, K::WireGuard, &["10.101.0.5/16"]))
            .sample(fixtures::iface("nm-home", 41, K::WireGuard, &["10.102.0.7/16"]))
            .sample(fixtures::iface("nm-lab", 42, K::WireGuardUserspace, &["10.103.0.7/16"]))
            .check();
    }

    struct Case {
        what: &'static str,
        ifaces: Vec<Interface>,
        want: &'static [&'static str],
    }

    #[test]
    fn chooses_and_refuses() {
        let cases = [
            Case {
                what: "current netclient: netmaker, kernel WireGuard",
                ifaces: vec![fixtures::iface("netmaker", 40, K::WireGuard, &["10.101.0.5/16", "fd01::5/64"])],
                want: &["10.101.0.5@netmaker Name", "fd01::5@netmaker Name"],
            },
            Case {
                what: "the name alone is enough for `netmaker` (kind unknown, non-Linux source)",
                ifaces: vec![fixtures::iface("netmaker", 40, K::Unknown, &["10.101.0.5/16"])],
                want: &["10.101.0.5@netmaker Name"],
            },
            Case {
                what: "legacy per-network interfaces, kernel and userspace WireGuard",
                ifaces: vec![
                    fixtures::iface("nm-home", 41, K::WireGuard, &["10.102.0.7/16"]),
                    fixtures::iface("nm-lab", 42, K::WireGuardUserspace, &["10.103.0.7/16"]),
                ],
                want: &["10.102.0.7@nm-home Name", "10.103.0.7@nm-lab Name"],
            },
            Case {
                what: "NetworkManager's nm-bridge and nm-bond are not Netmaker",
                ifaces: vec![
                    fixtures::iface("nm-bridge", 43, K::Bridge, &["10.42.0.1/24"]),
                    fixtures::iface("nm-bond", 44, K::Virtual("bond".into()), &["192.168.1.5/24"]),
                ],
                want: &[],
            },
            Case {
                what: "an nm-* of unknown kind is not proof",
                ifaces: vec![fixtures::iface("nm-home", 41, K::Unknown, &["10.102.0.7/16"])],
                want: &[],
            },
            Case {
                what: "plain WireGuard is the wireguard mode's, not Netmaker's",
                ifaces: vec![fixtures::iface("wg0", 10, K::WireGuard, &["10.8.0.1/24"])],
                want: &[],
            },
            Case {
                what: "netmaker down, link-local skipped",
                ifaces: vec![
                    fixtures::iface("netmaker", 40, K::WireGuard, &["10.101.0.5/16"]).down(),
                    fixtures::iface("nm-home", 41, K::WireGuard, &["10.102.0.7/16", "fe80::7/64"]),
                ],
                want: &["10.102.0.7@nm-home Name"],
            },
        ];
        for case in cases {
            assert_eq!(chosen(&claim(case.ifaces)), case.want, "{}", case.what);
        }
    }

    #[test]
    fn every_refusal_says_why() {
        let c = claim(vec![
            fixtures::iface("nm-bridge", 43, K::Bridge, &["10.42.0.1/24"]),
            fixtures::iface("nm-x", 45, K::Unknown, &["10.102.0.9/16"]),
            fixtures::iface("netmaker", 40, K::WireGuard, &["10.101.0.5/16"]).carrier(Some(false)),
            fixtures::iface("nm-home", 41, K::WireGuard, &["fe80::7/64"]),
        ]);
        assert!(c.candidates.is_empty(), "{c:?}");
        let bridge = refused(&c, "nm-bridge");
        assert!(bridge[0].contains("is a bridge, not WireGuard") && bridge[0].contains("NetworkManager"), "{bridge:?}");
        let unknown = refused(&c, "nm-x");
        assert!(unknown[0].contains("does not say") && unknown[0].contains("[providers.netmaker]"), "{unknown:?}");
        assert!(refused(&c, "netmaker")[0].contains("no carrier"), "{:?}", refused(&c, "netmaker"));
        assert!(refused(&c, "nm-home")[0].contains("link-local"), "{:?}", refused(&c, "nm-home"));
    }

    #[test]
    fn a_configured_name_takes_an_nm_interface_of_unknown_kind() {
        // Read the way the CLI reads `[providers.netmaker] names = ["nm-x"]`.
        let path = std::path::Path::new("test.toml");
        let file = FileConfig::parse("[providers.netmaker]\nnames = [\"nm-x\"]\n", path).unwrap();
        let cfg = file.provider_configs(path, &["netmaker"]).unwrap().remove("netmaker").unwrap();
        let nm_x = || fixtures::iface("nm-x", 45, K::Unknown, &["10.102.0.9/16"]);
        assert_eq!(chosen(&claim(vec![nm_x()])), Vec::<String>::new());
        let c = claim_with(vec![nm_x()], &cfg);
        assert_eq!(chosen(&c), ["10.102.0.9@nm-x Name"]);
        assert!(c.candidates[0].reason.contains("nm-x matches nm-x"), "{}", c.candidates[0].reason);
    }

    #[test]
    fn the_summary_shows_both_rules() {
        let m = Netmaker::default().matches(&ProviderConfig::default());
        assert_eq!(m.names[0], "netmaker");
        assert!(m.names[1].starts_with("nm-* (only on kernel or userspace WireGuard"), "{:?}", m.names);
        assert!(m.ranges.is_empty() && m.kinds.is_empty(), "{m:?}");
    }
}
