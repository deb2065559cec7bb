//! The conformance kit: every registered provider keeps the contract (with and
//! without a config), and the kit itself catches each way of breaking it: a toy
//! provider with one flaw at a time must fail exactly the rule it breaks, and
//! the flawless toy must pass. Last, the two providers written by following
//! docs/writing-a-provider.md (`netmaker`, `cloudflare-warp`) beside the
//! built-ins, through the resolver.

use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use meshgate::core::config::FileConfig;
use meshgate::core::model::is_link_local;
use meshgate::core::testing::{fixtures, Check, Kit};
use meshgate::core::{
    BindProvider, Candidate, Claims, InterfaceKind as K, MatchSummary, ProviderConfig, ProviderInfo, Rejection, Role,
    Snapshot, Specificity,
};

#[test]
fn every_registered_provider_keeps_the_contract() {
    let entries = crate::registry().entries();
    assert_eq!(entries.len(), meshgate::builtin::NAMES.len());
    let failures: Vec<String> =
        entries.iter().map(|e| Kit::new(&*e.provider).run()).filter(|r| !r.is_ok()).map(|r| r.to_string()).collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn every_configurable_provider_keeps_the_contract_with_a_config() {
    // Names and ranges a user might add: a wg-quick name, a Netmaker network id, a
    // Nebula CA network (nebula1 holds 192.168.100.7), a ULA.
    for e in crate::registry().entries().iter().filter(|e| matches!(e.info().role, Role::Mesh | Role::Lan)) {
        let name = e.info().name;
        let text = format!(
            "[providers.{name}]\nnames = [\"office\", \"mynetwork*\"]\ncidrs = [\"192.168.100.0/24\", \"fd99::/64\"]\n"
        );
        let path = Path::new("kit.toml");
        let file = FileConfig::parse(&text, path).expect("the kit's config parses");
        let config = file.provider_configs(path, &[name]).expect("the kit's config is valid").remove(name).unwrap();
        let report = Kit::new(&*e.provider)
            .config(config)
            .sample(fixtures::iface("mynetwork1", 60, K::WireGuard, &["10.103.0.1/24", "fd99::1/64"]))
            .run();
        assert!(report.is_ok(), "{report}");
    }
}

#[test]
fn the_fixtures_are_what_the_kit_promises() {
    let huge = fixtures::huge(5_000);
    assert_eq!(huge.interfaces.len(), 5_000);
    let names: std::collections::BTreeSet<&str> = huge.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names.len(), 5_000, "names in the huge snapshot are distinct");
    let odd = fixtures::odd_snapshots();
    let has = |label: &str| odd.iter().find(|(l, _)| l == label).map(|(_, s)| s.clone()).expect(label);
    assert!(has("empty").interfaces.is_empty());
    assert!(has("no addresses anywhere").interfaces.iter().all(|i| i.addresses.is_empty()));
    assert!(has("only link-local addresses")
        .interfaces
        .iter()
        .flat_map(|i| &i.addresses)
        .all(|a| is_link_local(a.addr)));
    assert!(has("every index 0").interfaces.iter().all(|i| i.index == 0));
    assert!(has("empty names").interfaces.iter().all(|i| i.name.is_empty()));
    assert!(has("unicode names").interfaces.iter().any(|i| !i.name.is_ascii()));
    let dup = has("duplicate names");
    assert_eq!(dup.interfaces.len(), 2 * fixtures::busy_host().interfaces.len());
    // The macOS host has no kinds but its loopback.
    assert!(fixtures::macos_host().interfaces.iter().all(|i| i.kind == K::Unknown || i.flags.loopback));
    // The zoo has every mesh of docs/meshes.md that ships as a provider.
    let zoo: Vec<String> = fixtures::zoo().into_iter().map(|i| i.name).collect();
    for name in ["tailscale0", "wt0", "tun-firezone", "ztmjfnbvsk", "nebula1", "netmaker", "CloudflareWARP", "wg0"] {
        assert!(zoo.iter().any(|z| z == name), "{name} is missing from the zoo");
    }
}

// ---- the kit catches each flaw ------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flaw {
    None,
    IgnoresDown,
    SilentDown,
    ClaimsLinkLocal,
    ClaimsLoopback,
    ClaimsWildcard,
    NoReason,
    Nondeterministic,
    OrderDependent,
    NameForAnyTunnel,
    KindByName,
    RangeOnNic,
    PanicsOnEmptyName,
    InventsAddress,
    ClaimsNothing,
    BadName,
}

/// A mesh that claims interfaces named `toy*`, correctly unless told otherwise.
struct Toy {
    flaw: Flaw,
    calls: AtomicUsize,
}

fn toy(flaw: Flaw) -> Toy {
    Toy { flaw, calls: AtomicUsize::new(0) }
}

impl BindProvider for Toy {
    fn info(&self) -> ProviderInfo {
        let name = if self.flaw == Flaw::BadName { "Toy Mode" } else { "toy" };
        ProviderInfo { name, priority: 170, description: "toy mesh for testing the kit (toy*)", role: Role::Mesh }
    }

    fn matches(&self, _: &ProviderConfig) -> MatchSummary {
        let ranges = if self.flaw == Flaw::RangeOnNic { vec!["192.168.0.0/16".into()] } else { vec![] };
        MatchSummary { names: vec!["toy*".into()], ranges, kinds: vec![] }
    }

    fn claim(&self, snapshot: &Snapshot, _: &ProviderConfig) -> Claims {
        let flaw = self.flaw;
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let mut claims = Claims::default();
        let mut claimed_one = false;
        for iface in &snapshot.interfaces {
            let mut push = |address: IpAddr, specificity: Specificity, reason: String| {
                claims.candidates.push(Candidate { interface: iface.name.clone(), address, specificity, reason })
            };
            if flaw == Flaw::PanicsOnEmptyName && iface.name.is_empty() {
                panic!("toy: an interface without a name");
            }
            if flaw == Flaw::ClaimsLoopback && iface.flags.loopback {
                for a in iface.addresses.iter().filter(|a| a.addr.is_loopback()) {
                    push(a.addr, Specificity::Name, format!("{} is the toy's fallback", iface.name));
                }
            }
            let ours = iface.name.starts_with("toy") || (flaw == Flaw::NameForAnyTunnel && iface.kind.is_tunnel());
            if flaw == Flaw::RangeOnNic && !ours {
                let in_range = |a: IpAddr| matches!(a, IpAddr::V4(v) if v.octets()[..2] == [192, 168]);
                for a in iface.addresses.iter().filter(|a| in_range(a.addr)) {
                    match iface.unusable() {
                        None => push(a.addr, Specificity::Range, format!("{} is in the toy range", a.addr)),
                        Some(why) => claims.rejected.push(Rejection {
                            interface: iface.name.clone(),
                            address: Some(a.addr),
                            reason: why,
                        }),
                    }
                }
            }
            if !ours || (flaw == Flaw::OrderDependent && claimed_one) {
                continue;
            }
            claimed_one = true;
            if let Some(why) = iface.unusable() {
                match flaw {
                    Flaw::IgnoresDown => {}
                    Flaw::SilentDown => continue,
                    _ => {
                        claims.rejected.push(Rejection { interface: iface.name.clone(), address: None, reason: why });
                        continue;
                    }
                }
            }
            for a in &iface.addresses {
                let odd = a.addr.is_loopback() || a.addr.is_unspecified();
                if odd || (is_link_local(a.addr) && flaw != Flaw::ClaimsLinkLocal) {
                    let reason = format!("{} is not for a mesh to claim", a.addr);
                    claims.rejected.push(Rejection { interface: iface.name.clone(), address: Some(a.addr), reason });
                    continue;
                }
                let reason = match flaw {
                    Flaw::NoReason => String::new(),
                    Flaw::Nondeterministic => format!("{} matches toy* (call {call})", iface.name),
                    _ => format!("{} matches toy*", iface.name),
                };
                let specificity = if flaw == Flaw::KindByName { Specificity::Kind } else { Specificity::Name };
                push(a.addr, specificity, reason);
            }
            if flaw == Flaw::InventsAddress {
                push("10.77.0.99".parse().unwrap(), Specificity::Name, "the toy's favourite address".into());
            }
        }
        if flaw == Flaw::ClaimsWildcard {
            claims.candidates.push(Candidate {
                interface: "*".into(),
                address: "0.0.0.0".parse().unwrap(),
                specificity: Specificity::Name,
                reason: "the toy listens everywhere".into(),
            });
        }
        if flaw == Flaw::ClaimsNothing {
            claims.candidates.clear();
        }
        claims
    }
}

fn kit_for(p: &Toy) -> Kit<'_> {
    Kit::new(p)
        .sample(fixtures::iface("toy0", 60, K::Tun, &["10.77.0.1/24"]))
        .sample(fixtures::iface("toy1", 61, K::Tun, &["10.77.1.1/24", "fe80::77/64"]))
        .huge(500)
}

#[test]
fn a_flawless_provider_passes() {
    let p = toy(Flaw::None);
    let report = kit_for(&p).run();
    assert!(report.is_ok(), "{report}");
    assert!(report.candidates > 0 && report.snapshots > 50, "{report:?}");
}

#[test]
fn each_flaw_breaks_exactly_its_rule() {
    let table = [
        (Flaw::IgnoresDown, Check::Down, "toy0"),
        (Flaw::SilentDown, Check::Down, "toy0"),
        (Flaw::ClaimsLinkLocal, Check::LinkLocal, "toy1"),
        (Flaw::ClaimsLoopback, Check::Loopback, "lo"),
        (Flaw::ClaimsWildcard, Check::Wildcard, "*"),
        (Flaw::NoReason, Check::Reason, "toy0"),
        (Flaw::Nondeterministic, Check::Deterministic, "toy0"),
        (Flaw::OrderDependent, Check::OrderIndependent, "toy1"),
        (Flaw::NameForAnyTunnel, Check::Specificity, "tailscale0"),
        (Flaw::KindByName, Check::Specificity, "toy0"),
        (Flaw::RangeOnNic, Check::SharedSpace, "eth0"),
        (Flaw::PanicsOnEmptyName, Check::NoPanic, ""),
        (Flaw::InventsAddress, Check::Held, "toy0"),
        (Flaw::ClaimsNothing, Check::Coverage, "toy0"),
        (Flaw::BadName, Check::Info, ""),
    ];
    for (flaw, check, iface) in table {
        let p = toy(flaw);
        let report = kit_for(&p).run();
        let hits: Vec<_> = report.of(check).collect();
        assert!(!hits.is_empty(), "{flaw:?} must break [{check}]; the kit said:\n{report}");
        if !iface.is_empty() {
            assert!(
                hits.iter().any(|v| v.interface.as_deref() == Some(iface)),
                "{flaw:?}: a [{check}] violation should name interface {iface}:\n{report}"
            );
        }
        // Only the broken rule, and the rules it implies, fire: a flaw in one
        // place is not reported as noise in others.
        let allowed: &[Check] = match flaw {
            // A name claim on a loopback interface is also not advertised, and
            // the toy's loopback claim does not look at `lo` going down either.
            Flaw::ClaimsLoopback => &[Check::Loopback, Check::Specificity, Check::Down],
            // `*` is not an interface of any snapshot.
            Flaw::ClaimsWildcard => &[Check::Wildcard],
            Flaw::IgnoresDown => &[Check::Down],
            // A reason that changes with each call also changes with the order.
            Flaw::Nondeterministic => &[Check::Deterministic, Check::OrderIndependent],
            _ => &[check],
        };
        let stray: Vec<_> = report.violations.iter().filter(|v| !allowed.contains(&v.check)).collect();
        assert!(stray.is_empty(), "{flaw:?} should only break {allowed:?}; also got {stray:#?}");
    }
}

#[test]
fn a_failure_names_provider_rule_snapshot_and_interface() {
    let p = toy(Flaw::IgnoresDown);
    let payload = catch_unwind(AssertUnwindSafe(|| kit_for(&p).check())).expect_err("the kit must fail");
    let msg = payload.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("conformance kit: provider `toy` breaks 1 rule(s)"), "{msg}");
    assert!(msg.contains("[down] provider `toy`, snapshot `lo + samples, toy0 down`, interface `toy0`"), "{msg}");
    assert!(msg.contains("still claims 10.77.0.1 on toy0 when it is down"), "{msg}");
    // And `check_provider` is the same run without samples.
    let p = toy(Flaw::None);
    let payload = catch_unwind(AssertUnwindSafe(|| meshgate::core::testing::check_provider(&p)))
        .expect_err("without samples the toy claims nothing");
    let msg = payload.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("[coverage]") && msg.contains("Kit::sample"), "{msg}");
}

// ---- proof by example: the two new providers beside the built-ins -------------
//
// What docs/bind-modes.md promises about `netmaker` and `cloudflare-warp` that
// only the resolver decides (shared space, `lan`, `auto`), through the real
// registry.

mod examples {
    use meshgate::core::testing::fixtures::{eth0, iface, lo};
    use meshgate::core::{Interface, InterfaceKind as K};

    use crate::core::providers::{bound, rejections, report, run};

    fn netmaker() -> Interface {
        iface("netmaker", 40, K::WireGuard, &["10.101.0.5/16"])
    }

    fn warp() -> Interface {
        iface("CloudflareWARP", 21, K::Tun, &["172.16.0.2/32", "2606:4700:110:8a36:df92:102a:9602:fa18/128"])
    }

    #[test]
    fn auto_names_netmaker_not_its_wireguard_transport() {
        let res = run(&["auto"], vec![lo(), eth0(), netmaker()]);
        assert_eq!(bound(&res), ["10.101.0.5 netmaker@netmaker"]);
        assert!(res.notes.iter().any(|n| n.starts_with("auto: `netmaker`")), "{:?}", res.notes);
        // `wireguard` answers its own question about the same interface.
        assert_eq!(bound(&run(&["wireguard"], vec![lo(), netmaker()])), ["10.101.0.5 wireguard@netmaker"]);
        // And a plain wg0 beside it is wireguard's alone.
        let wg0 = iface("wg0", 10, K::WireGuard, &["10.8.0.1/24"]);
        assert_eq!(bound(&run(&["netmaker"], vec![lo(), netmaker(), wg0])), ["10.101.0.5 netmaker@netmaker"]);
    }

    #[test]
    fn a_netmaker_network_in_cgnat_space_is_netmakers_not_the_tailnets() {
        let nm = iface("netmaker", 40, K::WireGuard, &["100.70.0.5/16"]);
        let res = run(&["tailnet"], vec![lo(), nm.clone()]);
        assert!(report(&res, "tailnet").candidates.is_empty());
        let why = rejections(&res, "tailnet", "netmaker");
        assert!(why.iter().any(|r| r.contains("belongs to `netmaker`") && r.contains("`wireguard`")), "{why:?}");
        assert_eq!(bound(&run(&["auto"], vec![lo(), nm])), ["100.70.0.5 netmaker@netmaker"]);
    }

    #[test]
    fn lan_refuses_netmaker_and_warp_but_keeps_networkmanagers_bridge() {
        let nm_bridge = iface("nm-bridge", 43, K::Bridge, &["10.42.0.1/24"]);
        let res = run(&["lan", "netmaker"], vec![lo(), netmaker(), warp(), nm_bridge]);
        assert_eq!(bound(&res), ["10.42.0.1 lan@nm-bridge", "10.101.0.5 netmaker@netmaker"]);
        for tunnel in ["netmaker", "CloudflareWARP"] {
            assert!(rejections(&res, "lan", tunnel).iter().any(|r| r.contains("tunnel")), "{tunnel}");
        }
        assert!(rejections(&res, "netmaker", "nm-bridge").iter().any(|r| r.contains("NetworkManager")));
    }

    #[test]
    fn where_the_os_gives_no_kind_warps_name_outweighs_lans_range() {
        // Windows' adapter, as a kind-less source sees it: not point-to-point either.
        let adapter = iface("Cloudflare WARP", 30, K::Unknown, &["172.16.0.2/32"]);
        let res = run(&["lan", "cloudflare-warp"], vec![lo(), adapter]);
        assert_eq!(bound(&res), ["172.16.0.2 cloudflare-warp@Cloudflare WARP"]);
        let why = rejections(&res, "lan", "Cloudflare WARP");
        assert!(why.iter().any(|r| r.contains("belongs to `cloudflare-warp`")), "{why:?}");
    }

    #[test]
    fn a_lan_holding_172_16_0_2_is_lan_not_warp() {
        let nic = iface("eth1", 3, K::Physical, &["172.16.0.2/24"]);
        let res = run(&["lan", "cloudflare-warp"], vec![lo(), nic.clone()]);
        assert_eq!(bound(&res), ["172.16.0.2 lan@eth1"]);
        assert!(rejections(&res, "cloudflare-warp", "eth1").iter().any(|r| r.contains("shared address space")));
        // And auto does not mistake it for WARP.
        assert!(run(&["auto"], vec![lo(), nic]).fallback);
    }

    #[test]
    fn auto_tries_warp_last() {
        let wg0 = iface("wg0", 10, K::WireGuard, &["10.8.0.1/24"]);
        assert_eq!(bound(&run(&["auto"], vec![lo(), warp(), wg0])), ["10.8.0.1 wireguard@wg0"]);
        let res = run(&["auto"], vec![lo(), eth0(), warp()]);
        assert_eq!(
            bound(&res),
            [
                "172.16.0.2 cloudflare-warp@CloudflareWARP",
                "2606:4700:110:8a36:df92:102a:9602:fa18 cloudflare-warp@CloudflareWARP"
            ]
        );
        let order = res.notes.iter().find(|n| n.starts_with("auto:")).expect("an auto note");
        assert!(order.ends_with("openvpn, wireguard, cloudflare-warp"), "{order}");
    }

    #[test]
    fn a_macos_utun_with_warp_addresses_is_warps_not_the_tailnets() {
        let mut utun = iface("utun4", 15, K::Unknown, &["172.16.0.2/32", "2606:4700:110:8a36::2/128"]);
        utun.flags.point_to_point = true;
        let res = run(&["cloudflare-warp", "tailnet", "lan"], vec![lo(), utun]);
        assert_eq!(bound(&res), ["172.16.0.2 cloudflare-warp@utun4", "2606:4700:110:8a36::2 cloudflare-warp@utun4"]);
    }
}

// ---- the resolver keeps rule 1 whatever a provider claims ---------------------

fn build_wild_toy() -> Box<dyn BindProvider> {
    Box::new(toy(Flaw::ClaimsWildcard))
}

/// A provider that claims `0.0.0.0` (a third-party crate with a bug) still gets
/// no wildcard listener: the resolver moves the claim to its rejections, and
/// the toy's real address is bound.
#[test]
fn the_resolver_refuses_a_wildcard_from_any_provider_but_all() {
    static WILD: meshgate::core::registry::ProviderDescriptor = meshgate::core::registry::ProviderDescriptor {
        info: ProviderInfo {
            name: "toy",
            priority: 170,
            description: "toy mesh for testing the kit (toy*)",
            role: Role::Mesh,
        },
        crate_name: "crate-toy",
        build: build_wild_toy,
    };
    let reg = meshgate::core::registry::Registry::from_descriptors([&WILD]).expect("one provider");
    let selectors = meshgate::core::parse_selectors(&["toy".to_owned()], &reg.names(), None).unwrap();
    let snap = Snapshot::new(vec![fixtures::iface("toy0", 7, K::Tun, &["10.77.0.1/24"])]);
    let opts = meshgate::core::ResolveOptions { loopback_companion: false, ..Default::default() };
    let res = meshgate::core::resolve(&reg, &selectors, &snap, &opts);
    let bound: Vec<String> = res.listeners.iter().map(|l| l.address.addr.to_string()).collect();
    assert_eq!(bound, ["10.77.0.1"], "{res:?}");
    let report = res.providers.iter().find(|p| p.name == "toy").unwrap();
    assert!(
        report.rejected.iter().any(|r| r.address == Some("0.0.0.0".parse().unwrap()) && r.reason.contains("wildcard")),
        "{:?}",
        report.rejected
    );
}
