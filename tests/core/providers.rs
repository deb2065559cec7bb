//! Every provider's heuristics, through the real registry and `resolve`, over
//! hand-built snapshots: a table of what each selector binds, then one test per
//! heuristic showing it refuse (with the reason a person reads in `explain`).

use std::path::Path;

use meshgate::core::config::FileConfig;
use meshgate::core::resolver::{ListenerRole, ProviderReport};
use meshgate::core::{parse_selectors, resolve, Fallback, Interface, InterfaceKind as K, Resolution, ResolveOptions};
use meshgate::core::{Snapshot, Specificity};

// ---- fixtures -------------------------------------------------------------

fn lo() -> Interface {
    Interface::new("lo", 1, K::Loopback).with_addr("127.0.0.1/8").with_addr("::1/128")
}

fn lo_v4() -> Interface {
    Interface::new("lo", 1, K::Loopback).with_addr("127.0.0.1/8")
}

/// A NIC with a private v4, a public v6 and a link-local v6.
fn eth0() -> Interface {
    Interface::new("eth0", 2, K::Physical)
        .with_addr("192.168.1.10/24")
        .with_addr("2001:db8::10/64")
        .with_addr("fe80::10/64")
}

fn wg0() -> Interface {
    Interface::new("wg0", 5, K::WireGuard).with_addr("10.8.0.1/24")
}

fn tailscale0() -> Interface {
    Interface::new("tailscale0", 6, K::Tun).with_addr("100.101.2.3/32").with_addr("fd7a:115c:a1e0::3/128")
}

/// NetBird on kernel WireGuard, inside the CGNAT space Tailscale also uses.
fn wt0() -> Interface {
    Interface::new("wt0", 7, K::WireGuard).with_addr("100.72.1.2/16")
}

fn docker0() -> Interface {
    Interface::new("docker0", 8, K::Bridge).with_addr("172.17.0.1/16")
}

fn veth() -> Interface {
    Interface::new("veth1a2b3c", 9, K::Veth).with_addr("10.200.0.1/30")
}

fn zerotier() -> Interface {
    Interface::new("ztmjfnbvsk", 10, K::Tap).with_addr("10.147.17.5/24")
}

// ---- helpers --------------------------------------------------------------

fn opts() -> ResolveOptions {
    ResolveOptions { port: 18789, fallback: Fallback::Loopback, loopback_companion: false, ..Default::default() }
}

fn resolve_with(bind: &[&str], ifaces: Vec<Interface>, opts: &ResolveOptions) -> Resolution {
    let reg = crate::registry();
    let values: Vec<String> = bind.iter().map(|s| s.to_string()).collect();
    let selectors = parse_selectors(&values, &reg.names(), None).expect("test selectors parse");
    resolve(reg, &selectors, &Snapshot::new(ifaces), opts)
}

pub(super) fn run(bind: &[&str], ifaces: Vec<Interface>) -> Resolution {
    resolve_with(bind, ifaces, &opts())
}

/// `ADDRESS provider@interface` for every listener, in order.
pub(super) fn bound(res: &Resolution) -> Vec<String> {
    res.listeners
        .iter()
        .map(|l| format!("{} {}@{}", l.address, l.provider, l.interface.as_deref().unwrap_or("*")))
        .collect()
}

pub(super) fn report<'a>(res: &'a Resolution, name: &str) -> &'a ProviderReport {
    res.providers.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no report for {name}"))
}

/// `ADDRESS@interface` for every candidate of a provider.
fn candidates(res: &Resolution, name: &str) -> Vec<String> {
    report(res, name).candidates.iter().map(|c| format!("{}@{}", c.address, c.interface)).collect()
}

/// The reasons a provider gave for turning down anything on `iface`.
pub(super) fn rejections(res: &Resolution, name: &str, iface: &str) -> Vec<String> {
    report(res, name).rejected.iter().filter(|r| r.interface == iface).map(|r| r.reason.clone()).collect()
}

fn assert_rejected(res: &Resolution, name: &str, iface: &str, needles: &[&str]) {
    let reasons = rejections(res, name, iface);
    assert!(
        reasons.iter().any(|r| needles.iter().all(|n| r.contains(n))),
        "{name} should reject {iface} with a reason containing {needles:?}; got {reasons:?}"
    );
}

/// Resolve options carrying one `[providers.NAME]` table, read the way the CLI
/// reads the config file (so the test goes through the same validation).
fn with_config(provider: &str, names: &[&str], cidrs: &[&str]) -> ResolveOptions {
    let list = |v: &[&str]| v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    let text = format!("[providers.{provider}]\nnames = [{}]\ncidrs = [{}]\n", list(names), list(cidrs));
    let path = Path::new("test.toml");
    let file = FileConfig::parse(&text, path).expect("test config parses");
    let provider_configs = file.provider_configs(path, &crate::registry().names()).expect("test config is valid");
    ResolveOptions { provider_configs, ..opts() }
}

// ---- the table ------------------------------------------------------------

struct Case {
    what: &'static str,
    ifaces: Vec<Interface>,
    bind: &'static [&'static str],
    want: &'static [&'static str],
}

#[test]
fn each_selector_binds_what_it_should() {
    let cases = vec![
        Case {
            what: "tailnet beside netbird in shared CGNAT space",
            ifaces: vec![lo(), eth0(), tailscale0(), wt0()],
            bind: &["tailnet"],
            want: &["100.101.2.3 tailnet@tailscale0", "fd7a:115c:a1e0::3 tailnet@tailscale0"],
        },
        Case {
            what: "netbird beside tailnet in shared CGNAT space",
            ifaces: vec![lo(), eth0(), tailscale0(), wt0()],
            bind: &["netbird"],
            want: &["100.72.1.2 netbird@wt0"],
        },
        Case {
            what: "macOS utun with a tailnet address",
            ifaces: vec![
                lo(),
                Interface::new("utun3", 11, K::Unknown).with_addr("100.100.1.1/32"),
                Interface::new("utun4", 12, K::Unknown).with_addr("10.0.0.1/32"),
            ],
            bind: &["tailnet"],
            want: &["100.100.1.1 tailnet@utun3"],
        },
        Case {
            what: "IPv6-only tailnet",
            ifaces: vec![lo(), Interface::new("tailscale0", 6, K::Tun).with_addr("fd7a:115c:a1e0::3/128")],
            bind: &["tailnet"],
            want: &["fd7a:115c:a1e0::3 tailnet@tailscale0"],
        },
        Case {
            what: "WireGuard under unusual names, found by kind",
            ifaces: vec![
                lo(),
                eth0(),
                Interface::new("office", 13, K::WireGuard).with_addr("10.9.0.1/24"),
                Interface::new("mesh", 14, K::WireGuardUserspace).with_addr("10.10.0.1/24"),
                tailscale0(),
            ],
            bind: &["wireguard"],
            want: &["10.9.0.1 wireguard@office", "10.10.0.1 wireguard@mesh"],
        },
        Case {
            what: "lan: RFC 1918 on the NIC only",
            ifaces: vec![lo(), eth0(), wg0(), docker0(), veth(), tailscale0()],
            bind: &["lan"],
            want: &["192.168.1.10 lan@eth0"],
        },
        Case {
            what: "zerotier TAP",
            ifaces: vec![lo(), eth0(), zerotier()],
            bind: &["zerotier"],
            want: &["10.147.17.5 zerotier@ztmjfnbvsk"],
        },
        Case {
            what: "nebula by its default name",
            ifaces: vec![lo(), eth0(), Interface::new("nebula1", 15, K::Tun).with_addr("192.168.100.7/24")],
            bind: &["nebula"],
            want: &["192.168.100.7 nebula@nebula1"],
        },
        Case {
            what: "firezone by its name, inside 100.64.0.0/11",
            ifaces: vec![
                lo(),
                Interface::new("tun-firezone", 16, K::Tun)
                    .with_addr("100.80.12.34/32")
                    .with_addr("fd00:2021:1111::a/128"),
            ],
            bind: &["firezone"],
            want: &["100.80.12.34 firezone@tun-firezone", "fd00:2021:1111::a firezone@tun-firezone"],
        },
        Case {
            what: "all on a v4-only host",
            ifaces: vec![lo_v4(), Interface::new("eth0", 2, K::Physical).with_addr("192.168.1.10/24")],
            bind: &["all"],
            want: &["0.0.0.0 all@*"],
        },
        Case {
            what: "all on a dual-stack host",
            ifaces: vec![lo(), eth0()],
            bind: &["all"],
            want: &["0.0.0.0 all@*", ":: all@*"],
        },
        Case {
            what: "iface glob skips down links and link-local",
            ifaces: vec![
                lo(),
                wg0().with_addr("fe80::5/64"),
                Interface::new("wg1", 17, K::WireGuard).with_addr("10.8.1.1/24").down(),
                Interface::new("wgx", 18, K::WireGuard).with_addr("10.8.2.1/24"),
            ],
            bind: &["iface:wg*"],
            want: &["10.8.0.1 iface@wg0", "10.8.2.1 iface@wgx"],
        },
        Case {
            what: "cidr selects by network, on any interface",
            ifaces: vec![lo(), eth0(), wg0(), Interface::new("office", 13, K::WireGuard).with_addr("10.9.0.1/24")],
            bind: &["cidr:10.8.0.0/24"],
            want: &["10.8.0.1 cidr@wg0"],
        },
        Case {
            what: "auto: tailnet before wireguard",
            ifaces: vec![lo(), eth0(), wg0(), tailscale0()],
            bind: &["auto"],
            want: &["100.101.2.3 tailnet@tailscale0", "fd7a:115c:a1e0::3 tailnet@tailscale0"],
        },
        Case {
            what: "auto: nothing but a LAN falls back to loopback, never to lan or all",
            ifaces: vec![lo(), eth0(), docker0()],
            bind: &["auto"],
            want: &["127.0.0.1 loopback@lo", "::1 loopback@lo"],
        },
        Case {
            what: "union dedupes the same address",
            ifaces: vec![lo(), wg0()],
            bind: &["wireguard", "iface:wg0", "10.8.0.1", "cidr:10.8.0.0/24"],
            want: &["10.8.0.1 wireguard@wg0"],
        },
        Case {
            what: "an IP literal may name a link-local address",
            ifaces: vec![lo(), wg0().with_addr("fe80::1/64")],
            bind: &["fe80::1%wg0"],
            want: &["fe80::1%wg0 ip@wg0"],
        },
        Case {
            what: "custom + --host is an IP literal",
            ifaces: vec![lo(), wg0()],
            bind: &["10.8.0.1"],
            want: &["10.8.0.1 ip@wg0"],
        },
    ];
    for case in cases {
        let res = run(case.bind, case.ifaces);
        assert_eq!(bound(&res), case.want, "{}: bind {:?}\n{res:#?}", case.what, case.bind);
        for l in &res.listeners {
            assert!(!l.reason.is_empty(), "{}: listener {} has no reason", case.what, l.address);
        }
    }
}

// ---- shared CGNAT space ---------------------------------------------------

#[test]
fn tailnet_and_netbird_side_by_side_each_keep_their_own() {
    let res = run(&["tailnet", "netbird"], vec![lo(), eth0(), tailscale0(), wt0()]);
    assert_eq!(candidates(&res, "tailnet"), ["100.101.2.3@tailscale0", "fd7a:115c:a1e0::3@tailscale0"]);
    assert_eq!(candidates(&res, "netbird"), ["100.72.1.2@wt0"]);
    // tailnet saw wt0's address in its range and gave it up to the name claim.
    let reasons = rejections(&res, "tailnet", "wt0");
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("100.72.1.2"), "{reasons:?}");
    assert!(reasons[0].contains("belongs to `netbird`"), "the reason must name the mesh: {reasons:?}");
    assert!(reasons[0].contains("not proof"), "{reasons:?}");
    let lost = report(&res, "tailnet").rejected.iter().find(|r| r.interface == "wt0").unwrap();
    assert_eq!(lost.address, Some("100.72.1.2".parse().unwrap()));
    // wt0 is kernel WireGuard too: the wireguard mode sees it, by kind, but not tailscale0.
    assert_eq!(candidates(&res, "wireguard"), ["100.72.1.2@wt0"]);
    assert_eq!(report(&res, "wireguard").candidates[0].specificity, Specificity::Kind);
}

#[test]
fn a_range_only_claim_stands_when_nobody_claims_the_interface_better() {
    // A TUN of an unknown VPN in CGNAT space: tailnet claims it, but says how weakly.
    let res = run(&["tailnet"], vec![lo(), Interface::new("tun0", 20, K::Tun).with_addr("100.90.1.1/32")]);
    assert_eq!(bound(&res), ["100.90.1.1 tailnet@tun0"]);
    let c = &report(&res, "tailnet").candidates[0];
    assert_eq!(c.specificity, Specificity::Range);
    assert!(c.reason.contains("range only"), "{}", c.reason);
}

#[test]
fn auto_on_a_netbird_host_chooses_netbird_not_the_range_match() {
    let res = run(&["auto"], vec![lo(), eth0(), wt0()]);
    assert_eq!(bound(&res), ["100.72.1.2 netbird@wt0"]);
    assert!(res.notes.iter().any(|n| n.contains("auto: `netbird`")), "{:?}", res.notes);
}

#[test]
fn cgnat_on_a_physical_nic_is_carrier_nat_not_a_tailnet() {
    let eth = Interface::new("eth0", 2, K::Physical).with_addr("100.72.5.5/10");
    let res = run(&["tailnet"], vec![lo(), eth.clone()]);
    assert!(candidates(&res, "tailnet").is_empty());
    assert_rejected(&res, "tailnet", "eth0", &["100.72.5.5", "shared address space"]);
    assert!(res.fallback);
    // Firezone's /11 is inside the same space and gets the same answer.
    let res = run(&["firezone"], vec![lo(), Interface::new("eth0", 2, K::Physical).with_addr("100.80.1.1/10")]);
    assert_rejected(&res, "firezone", "eth0", &["shared address space"]);
    // And auto does not take it either.
    assert_eq!(bound(&run(&["auto"], vec![lo(), eth])), ["127.0.0.1 loopback@lo", "::1 loopback@lo"]);
}

#[test]
fn firezone_owns_its_tun_even_inside_the_tailnet_range() {
    let fz = Interface::new("tun-firezone", 16, K::Tun).with_addr("100.80.12.34/32");
    let res = run(&["tailnet"], vec![lo(), fz]);
    assert!(candidates(&res, "tailnet").is_empty());
    assert_rejected(&res, "tailnet", "tun-firezone", &["100.80.12.34", "belongs to `firezone`"]);
    assert!(res.fallback);
}

#[test]
fn tailscale_in_firezone_space_stays_tailscale() {
    // 100.80.0.0 is in Firezone's /11 too; the tailscale0 name decides.
    let ts = Interface::new("tailscale0", 6, K::Tun).with_addr("100.80.3.3/32");
    let res = run(&["firezone"], vec![lo(), ts]);
    assert!(candidates(&res, "firezone").is_empty());
    assert_rejected(&res, "firezone", "tailscale0", &["belongs to `tailnet`"]);
}

// ---- names, weak names, kinds ---------------------------------------------

#[test]
fn a_utun_counts_for_tailnet_only_with_a_tailnet_address() {
    let ifaces = vec![
        lo(),
        Interface::new("utun3", 11, K::Unknown).with_addr("100.100.1.1/32"),
        Interface::new("utun4", 12, K::Unknown).with_addr("10.0.0.1/32"),
    ];
    let res = run(&["tailnet", "firezone"], ifaces);
    assert_eq!(candidates(&res, "tailnet"), ["100.100.1.1@utun3"]);
    assert!(report(&res, "tailnet").candidates[0].reason.contains("utun*"));
    // 100.100.1.1 is outside Firezone's 100.64.0.0/11, so its utun* rule does not fire.
    assert!(candidates(&res, "firezone").is_empty());
    assert!(!bound(&res).iter().any(|l| l.contains("utun4")), "{:?}", bound(&res));
}

#[test]
fn tailscale0_never_binds_under_wireguard() {
    // As it really is: a plain TUN. wireguard does not even look at it.
    let res = run(&["wireguard"], vec![lo(), tailscale0()]);
    assert!(candidates(&res, "wireguard").is_empty());
    assert!(res.fallback);
    // Even with a stray userspace-WireGuard socket making it look like WireGuard,
    // it belongs to the tailnet mode, and wireguard says so.
    let odd = Interface::new("tailscale0", 6, K::WireGuardUserspace).with_addr("100.101.2.3/32");
    let res = run(&["wireguard"], vec![lo(), odd]);
    assert!(candidates(&res, "wireguard").is_empty());
    assert_rejected(&res, "wireguard", "tailscale0", &["tailscale*", "`tailnet` mode"]);
    assert!(res.fallback);
}

#[test]
fn wireguard_refuses_non_wireguard_tunnels() {
    let res = run(
        &["wireguard"],
        vec![
            lo(),
            Interface::new("tun0", 20, K::Tun).with_addr("10.8.0.1/24"),
            Interface::new("nebula1", 15, K::Tun).with_addr("192.168.100.7/24"),
            zerotier(),
        ],
    );
    assert!(candidates(&res, "wireguard").is_empty(), "{:?}", candidates(&res, "wireguard"));
    assert!(res.fallback);
}

#[test]
fn wg_quick_names_count_without_a_kind() {
    // A portable (non-Linux) snapshot: no kinds, but wg-quick's conventional name.
    let res = run(&["wireguard"], vec![lo(), Interface::new("wg0", 5, K::Unknown).with_addr("10.8.0.1/24")]);
    assert_eq!(bound(&res), ["10.8.0.1 wireguard@wg0"]);
    assert_eq!(report(&res, "wireguard").candidates[0].specificity, Specificity::Name);
}

#[test]
fn nebula_and_firezone_are_claimed_by_name_and_refused_otherwise() {
    let ifaces = vec![
        lo(),
        Interface::new("nebula1", 15, K::Tun).with_addr("192.168.100.7/24"),
        Interface::new("tun-firezone", 16, K::Tun).with_addr("100.70.0.9/32"),
    ];
    let res = run(&["nebula"], ifaces.clone());
    assert_eq!(candidates(&res, "nebula"), ["192.168.100.7@nebula1"]);
    assert_eq!(candidates(&res, "firezone"), ["100.70.0.9@tun-firezone"]);
    // A Nebula renamed in its config is not claimed without a config name.
    let res = run(&["nebula"], vec![lo(), Interface::new("overlay", 21, K::Tun).with_addr("192.168.100.7/24")]);
    assert!(candidates(&res, "nebula").is_empty());
    assert!(res.fallback);
}

// ---- down, carrier, link-local --------------------------------------------

#[test]
fn down_interfaces_are_skipped_with_a_reason() {
    let res = run(&["tailnet", "wireguard"], vec![lo(), tailscale0().down(), wg0().carrier(Some(false))]);
    assert!(candidates(&res, "tailnet").is_empty());
    assert!(candidates(&res, "wireguard").is_empty());
    assert_rejected(&res, "tailnet", "tailscale0", &["administratively down"]);
    assert_rejected(&res, "wireguard", "wg0", &["no carrier"]);
    assert!(res.fallback);
    // Carrier unknown (the OS did not say) is not a reason to skip.
    let res = run(&["wireguard"], vec![lo(), wg0().carrier(None)]);
    assert_eq!(bound(&res), ["10.8.0.1 wireguard@wg0"]);
}

#[test]
fn down_links_are_skipped_by_iface_and_cidr_too() {
    let res = run(&["iface:wg0", "cidr:10.8.0.0/24"], vec![lo(), wg0().down()]);
    assert!(res.fallback, "{:?}", bound(&res));
    assert!(res.notes.iter().any(|n| n.contains("iface:wg0") && n.contains("down")), "{:?}", res.notes);
    assert!(res.notes.iter().any(|n| n.contains("cidr:10.8.0.0/24") && n.contains("down")), "{:?}", res.notes);
}

#[test]
fn link_local_is_never_chosen_by_a_provider() {
    let ifaces = vec![lo(), wg0().with_addr("fe80::1/64"), tailscale0().with_addr("fe80::2/64")];
    let res = run(&["wireguard", "tailnet"], ifaces);
    assert_eq!(
        bound(&res),
        ["10.8.0.1 wireguard@wg0", "100.101.2.3 tailnet@tailscale0", "fd7a:115c:a1e0::3 tailnet@tailscale0"]
    );
    assert_rejected(&res, "wireguard", "wg0", &["fe80::1", "link-local"]);
    assert_rejected(&res, "tailnet", "tailscale0", &["fe80::2", "link-local"]);
    // lan skips it silently on a NIC (eth0's fe80::10 is never a lan candidate).
    let res = run(&["lan"], vec![lo(), eth0()]);
    assert!(!candidates(&res, "lan").iter().any(|c| c.starts_with("fe80")), "{:?}", candidates(&res, "lan"));
}

#[test]
fn an_explicit_link_local_literal_binds_with_its_scope() {
    // eth0 carries the same fe80::1 first: the scope, not the first holder, decides.
    let eth = Interface::new("eth0", 2, K::Physical).with_addr("fe80::1/64");
    let wg = wg0().with_addr("fe80::1/64");
    let wg_index = wg.index;
    let res = run(&["fe80::1%wg0"], vec![lo(), eth.clone(), wg.clone()]);
    assert_eq!(bound(&res), ["fe80::1%wg0 ip@wg0"]);
    let l = &res.listeners[0];
    assert_eq!(l.address.scope_id, Some(wg_index));
    match l.socket_addr() {
        std::net::SocketAddr::V6(a) => assert_eq!(a.scope_id(), wg_index),
        other => panic!("expected a v6 socket address, got {other}"),
    }
    assert!(l.reason.contains("held by wg0"), "{}", l.reason);
    // A numeric scope works too and is shown by name.
    let res = run(&["fe80::1%5"], vec![lo(), eth.clone(), wg.clone()]);
    assert_eq!(bound(&res), ["fe80::1%wg0 ip@wg0"]);
    // Unscoped, the holder's index is filled in.
    let res = run(&["fe80::1"], vec![lo(), wg.clone()]);
    assert_eq!(res.listeners[0].address.scope_id, Some(wg_index));
    // A scope that does not hold the address is reported, not papered over.
    let res = run(&["fe80::1%eth0"], vec![lo(), Interface::new("eth0", 2, K::Physical), wg]);
    assert!(res.listeners[0].reason.contains("no interface holds it"), "{}", res.listeners[0].reason);
}

#[test]
fn cidr_skips_link_local_unless_it_names_link_local_and_then_keeps_the_scope() {
    let eth = Interface::new("eth0", 2, K::Physical).with_addr("fe80::1/64");
    let wg = wg0().with_addr("fe80::1/64");
    // A wide network is not a way to reach link-local addresses.
    let res = run(&["cidr:fe80::/1"], vec![lo(), eth.clone(), wg.clone()]);
    assert!(res.fallback, "{:?}", bound(&res));
    assert!(res.notes.iter().any(|n| n.contains("skipped link-local fe80::1")), "{:?}", res.notes);
    // A link-local network names them on purpose: one listener per link, each scoped.
    let res = run(&["cidr:fe80::/64"], vec![lo(), eth, wg]);
    assert_eq!(bound(&res), ["fe80::1%eth0 cidr@eth0", "fe80::1%wg0 cidr@wg0"]);
    assert_eq!(res.listeners[1].address.scope_id, Some(5));
}

#[test]
fn an_ip_nobody_holds_is_kept_and_said_to_fail() {
    let res = run(&["10.99.0.1"], vec![lo(), wg0()]);
    assert_eq!(bound(&res), ["10.99.0.1 ip@*"]);
    assert!(res.listeners[0].reason.contains("binding will fail"), "{}", res.listeners[0].reason);
    assert!(!res.fallback, "an IP the user named is never replaced by a fallback");
}

// ---- lan ------------------------------------------------------------------

#[test]
fn lan_refuses_tunnels_container_links_and_public_addresses() {
    let br0 = Interface::new("br0", 22, K::Bridge).with_addr("192.168.50.2/24");
    let eth1 = Interface::new("eth1", 23, K::Physical).with_addr("10.1.0.5/24").down();
    let res = run(&["lan"], vec![lo(), eth0(), wg0(), tailscale0(), docker0(), veth(), br0, eth1]);
    // A host bridge (VMs on the LAN) counts; docker's does not.
    assert_eq!(bound(&res), ["192.168.1.10 lan@eth0", "192.168.50.2 lan@br0"]);
    assert_rejected(&res, "lan", "wg0", &["tunnel"]);
    assert_rejected(&res, "lan", "docker0", &["container or VM link"]);
    assert_rejected(&res, "lan", "veth1a2b3c", &["container or VM link"]);
    assert_rejected(&res, "lan", "eth1", &["down"]);
    assert!(!candidates(&res, "lan").iter().any(|c| c.starts_with("2001:db8")), "public v6 is never lan");
    // Tailscale's fd7a:115c:a1e0::/48 is inside fc00::/7 (ULA): still a tunnel, not the LAN.
    assert_rejected(&res, "lan", "tailscale0", &["tunnel"]);
    // An interface with nothing private is not even mentioned.
    let public = Interface::new("eth2", 24, K::Physical).with_addr("203.0.113.7/24");
    assert!(rejections(&run(&["lan"], vec![lo(), public]), "lan", "eth2").is_empty());
}

#[test]
fn lan_with_only_public_addresses_matches_nothing() {
    let res = run(&["lan"], vec![lo(), Interface::new("eth0", 2, K::Physical).with_addr("203.0.113.7/24")]);
    assert!(candidates(&res, "lan").is_empty());
    assert!(res.fallback);
    assert!(res.notes.iter().any(|n| n.contains("`lan` matched nothing")), "{:?}", res.notes);
}

#[test]
fn zerotier_tap_is_zerotiers_not_the_lans() {
    let res = run(&["lan", "zerotier"], vec![lo(), eth0(), zerotier()]);
    assert_eq!(candidates(&res, "zerotier"), ["10.147.17.5@ztmjfnbvsk"]);
    assert!(!candidates(&res, "lan").iter().any(|c| c.contains("ztmjfnbvsk")));
    assert_rejected(&res, "lan", "ztmjfnbvsk", &["tunnel"]);
    // Where the OS gives no kind (macOS, BSD), lan's range claim is settled away
    // by zerotier's name claim, and the reason says whose it is.
    let bare = Interface::new("ztmjfnbvsk", 10, K::Unknown).with_addr("10.147.17.5/24");
    let res = run(&["lan"], vec![lo(), eth0(), bare]);
    assert_eq!(candidates(&res, "lan"), ["192.168.1.10@eth0"]);
    assert_rejected(&res, "lan", "ztmjfnbvsk", &["10.147.17.5", "belongs to `zerotier`"]);
}

// ---- all, wildcards, auto -------------------------------------------------

#[test]
fn all_is_never_chosen_by_auto() {
    let res = run(&["auto"], vec![lo(), eth0()]);
    assert!(res.fallback);
    assert!(!bound(&res).iter().any(|l| l.starts_with("0.0.0.0") || l.starts_with(":: ")), "{:?}", bound(&res));
    let note = res.notes.iter().find(|n| n.starts_with("auto:")).expect("an auto note");
    assert!(!note.contains("all") && !note.contains("lan"), "{note}");
    assert!(res.fallback_reason.as_deref().unwrap_or_default().contains("auto matched nothing"));
}

#[test]
fn auto_honours_a_custom_order() {
    let o = ResolveOptions { auto_order: Some(vec!["wireguard".into(), "tailnet".into()]), ..opts() };
    let res = resolve_with(&["auto"], vec![lo(), tailscale0(), wg0()], &o);
    assert_eq!(bound(&res), ["10.8.0.1 wireguard@wg0"]);
    assert!(res.listeners[0].reason.starts_with("auto chose wireguard"), "{}", res.listeners[0].reason);
    // A mesh left out of the order is not walked.
    let o = ResolveOptions { auto_order: Some(vec!["zerotier".into()]), ..opts() };
    let res = resolve_with(&["auto"], vec![lo(), tailscale0(), wg0()], &o);
    assert!(res.fallback);
}

#[test]
fn auto_falls_back_to_loopback_and_fail_means_nothing() {
    let res = run(&["auto"], vec![lo(), eth0()]);
    assert_eq!(bound(&res), ["127.0.0.1 loopback@lo", "::1 loopback@lo"]);
    assert!(res.listeners.iter().all(|l| l.role == ListenerRole::Fallback));
    let fail = ResolveOptions { fallback: Fallback::Fail, ..opts() };
    let res = resolve_with(&["auto"], vec![lo(), eth0()], &fail);
    assert!(res.nothing_to_bind());
    assert!(!res.fallback);
}

#[test]
fn no_match_falls_back_to_loopback_or_fails() {
    let res = run(&["wireguard"], vec![lo(), eth0(), docker0()]);
    assert!(res.fallback);
    assert_eq!(bound(&res), ["127.0.0.1 loopback@lo", "::1 loopback@lo"]);
    let why = res.fallback_reason.as_deref().expect("a fallback reason");
    assert!(why.contains("wireguard matched nothing") && why.contains("loopback"), "{why}");
    assert!(res.listeners[0].reason.starts_with("fallback:"), "{}", res.listeners[0].reason);

    let fail = ResolveOptions { fallback: Fallback::Fail, ..opts() };
    let res = resolve_with(&["wireguard"], vec![lo(), eth0(), docker0()], &fail);
    assert!(res.listeners.is_empty(), "never widen, never fall back under fail: {:?}", bound(&res));
    assert!(!res.fallback);
    assert!(res.fallback_reason.as_deref().unwrap_or_default().contains("--fallback is fail"));
}

#[test]
fn a_wildcard_covers_the_specific_addresses_of_its_family() {
    let res = run(&["wireguard", "all", "tailnet"], vec![lo(), wg0(), tailscale0()]);
    assert_eq!(bound(&res), ["0.0.0.0 all@*", ":: all@*"]);
    for covered in ["10.8.0.1", "100.101.2.3", "fd7a:115c:a1e0::3"] {
        assert!(
            res.notes.iter().any(|n| n.contains(covered) && n.contains("covered by the wildcard")),
            "{covered}: {:?}",
            res.notes
        );
    }
    // On a v4-only host there is no `::`, so a v6 literal stays beside 0.0.0.0.
    let res = run(&["all", "fd00::9"], vec![lo_v4(), Interface::new("eth0", 2, K::Physical).with_addr("10.0.0.2/24")]);
    assert_eq!(bound(&res), ["0.0.0.0 all@*", "fd00::9 ip@*"]);
}

// ---- the loopback companion -----------------------------------------------

#[test]
fn non_loopback_binds_get_a_loopback_companion() {
    let on = ResolveOptions { loopback_companion: true, ..opts() };
    let res = resolve_with(&["wireguard"], vec![lo(), wg0()], &on);
    assert_eq!(bound(&res), ["10.8.0.1 wireguard@wg0", "127.0.0.1 loopback@lo", "::1 loopback@lo"]);
    for l in &res.listeners[1..] {
        assert_eq!(l.role, ListenerRole::Companion);
        assert!(l.reason.contains("companion"), "{}", l.reason);
    }
    assert!(!res.fallback);
    // No ::1 on lo (IPv6 disabled): only 127.0.0.1.
    let res = resolve_with(&["wireguard"], vec![lo_v4(), wg0()], &on);
    assert_eq!(bound(&res), ["10.8.0.1 wireguard@wg0", "127.0.0.1 loopback@lo"]);
    // Turned off: the mesh address alone.
    let res = resolve_with(&["wireguard"], vec![lo(), wg0()], &opts());
    assert_eq!(bound(&res), ["10.8.0.1 wireguard@wg0"]);
}

#[test]
fn no_companion_beside_loopback_or_a_wildcard() {
    let on = ResolveOptions { loopback_companion: true, ..opts() };
    let res = resolve_with(&["loopback"], vec![lo(), wg0()], &on);
    assert_eq!(bound(&res), ["127.0.0.1 loopback@lo", "::1 loopback@lo"]);
    assert!(res.listeners.iter().all(|l| l.role == ListenerRole::Selected));
    // 0.0.0.0 already covers 127.0.0.1; binding both would collide.
    let v4_host = vec![lo_v4(), Interface::new("eth0", 2, K::Physical).with_addr("192.168.1.10/24")];
    let res = resolve_with(&["all"], v4_host, &on);
    assert_eq!(bound(&res), ["0.0.0.0 all@*"]);
    let res = resolve_with(&["all"], vec![lo(), eth0()], &on);
    assert_eq!(bound(&res), ["0.0.0.0 all@*", ":: all@*"]);
    // The fallback is loopback already: no companion on top.
    let res = resolve_with(&["wireguard"], vec![lo()], &on);
    assert!(res.listeners.iter().all(|l| l.role == ListenerRole::Fallback), "{:?}", bound(&res));
}

// ---- widening and narrowing with config -------------------------------------

#[test]
fn config_names_extend_a_provider() {
    // wg-quick's `office` where the OS gives no kind (portable source).
    let office = Interface::new("office", 13, K::Unknown).with_addr("10.9.0.1/24");
    let res = run(&["wireguard"], vec![lo(), office.clone()]);
    assert!(candidates(&res, "wireguard").is_empty());
    assert!(res.fallback);
    let res = resolve_with(&["wireguard"], vec![lo(), office.clone()], &with_config("wireguard", &["office"], &[]));
    assert_eq!(bound(&res), ["10.9.0.1 wireguard@office"]);
    assert!(res.listeners[0].reason.contains("office matches office"), "{}", res.listeners[0].reason);
    // Only the configured provider gains it.
    for other in ["tailnet", "netbird", "zerotier", "nebula", "firezone", "lan"] {
        assert!(candidates(&res, other).is_empty(), "{other}: {:?}", candidates(&res, other));
    }
    // A config name for lan lets it take a tunnel the user calls their LAN.
    let res = resolve_with(&["lan"], vec![lo(), wg0()], &with_config("lan", &["wg0"], &[]));
    assert_eq!(bound(&res), ["10.8.0.1 lan@wg0"]);
}

#[test]
fn config_cidrs_extend_a_provider_but_not_onto_a_nic() {
    let cfg = || with_config("nebula", &[], &["192.168.100.0/24"]);
    let overlay = Interface::new("overlay", 21, K::Tun).with_addr("192.168.100.7/24");
    let res = resolve_with(&["nebula"], vec![lo(), overlay], &cfg());
    assert_eq!(bound(&res), ["192.168.100.7 nebula@overlay"]);
    assert_eq!(report(&res, "nebula").candidates[0].specificity, Specificity::Range);
    // The same range on a physical NIC is a LAN, not Nebula.
    let nic = Interface::new("eth1", 23, K::Physical).with_addr("192.168.100.7/24");
    let res = resolve_with(&["nebula"], vec![lo(), nic], &cfg());
    assert!(candidates(&res, "nebula").is_empty());
    assert_rejected(&res, "nebula", "eth1", &["shared address space"]);
    assert!(res.fallback);
}

/// `lan` with a configured range that holds everything (`0.0.0.0/0`) still
/// never claims a wildcard an interface lists: it binds the real address, and
/// the wildcard is not even a candidate (the kit's rule, before the resolver's).
#[test]
fn lan_never_claims_a_wildcard_even_in_a_configured_range() {
    let eth0 = Interface::new("eth0", 2, K::Physical).with_addr("0.0.0.0/32").with_addr("192.168.1.10/24");
    let res = resolve_with(&["lan"], vec![lo(), eth0], &with_config("lan", &[], &["0.0.0.0/0"]));
    assert_eq!(bound(&res), ["192.168.1.10 lan@eth0"]);
    assert!(!candidates(&res, "lan").iter().any(|c| c.starts_with("0.0.0.0")), "{res:?}");
    assert!(rejections(&res, "lan", "eth0").iter().all(|r| !r.contains("0.0.0.0")), "{res:?}");
}

// ---- daemon facts (probes) --------------------------------------------------

use meshgate::core::{DaemonFact, DaemonState};

fn resolve_snapshot(bind: &[&str], snapshot: &Snapshot) -> Resolution {
    let reg = crate::registry();
    let values: Vec<String> = bind.iter().map(|s| s.to_string()).collect();
    let selectors = parse_selectors(&values, &reg.names(), None).expect("test selectors parse");
    resolve(reg, &selectors, snapshot, &opts())
}

fn tailscaled(state: DaemonState) -> DaemonFact {
    DaemonFact::new("tailscale", "tailscaled's local API", state)
}

/// A Headscale network with a custom prefix: no range table knows 10.99.0.0/16.
fn headscale0() -> Interface {
    Interface::new("tailscale0", 6, K::Tun).with_addr("10.99.0.7/32").with_addr("fd7a:115c:a1e0::7/128")
}

#[test]
fn tailscaleds_word_finds_a_custom_headscale_prefix() {
    let fact = tailscaled(DaemonState::Running).on("tailscale0").with_addr("10.99.0.7").with_addr("fd7a:115c:a1e0::7");
    let snap = Snapshot::new(vec![lo(), eth0(), headscale0()]).with_fact(fact);
    for bind in [&["tailnet"][..], &["auto"][..]] {
        let res = resolve_snapshot(bind, &snap);
        let want: Vec<String> =
            ["10.99.0.7", "fd7a:115c:a1e0::7"].iter().map(|a| format!("{a} tailnet@tailscale0")).collect();
        assert_eq!(bound(&res), want, "{bind:?}");
        let c = &report(&res, "tailnet").candidates[0];
        assert_eq!(c.specificity, Specificity::Daemon);
        assert!(c.reason.contains("from tailscaled's local API"), "{}", c.reason);
        assert!(res.notes.iter().any(|n| n.starts_with("tailscaled's local API: tailscale is running on tailscale0")));
    }
    // Without the daemon's word, 10.99.0.7 on tailscale0 is still taken by name;
    // the word is what makes it more than a name.
    let res = run(&["tailnet"], vec![lo(), headscale0()]);
    assert_eq!(report(&res, "tailnet").candidates[0].specificity, Specificity::Name);
}

#[test]
fn with_tailscaleds_word_cgnat_elsewhere_is_not_the_tailnet() {
    // A utun (macOS) with a CGNAT address tailscaled does not list: NetBird's, not ours.
    let utun = Interface::new("utun5", 20, K::Unknown).with_addr("100.80.1.1/32");
    let fact =
        tailscaled(DaemonState::Running).on("tailscale0").with_addr("100.101.2.3").with_addr("fd7a:115c:a1e0::3");
    let with = Snapshot::new(vec![lo(), tailscale0(), utun.clone()]).with_fact(fact);
    let res = resolve_snapshot(&["tailnet"], &with);
    assert_eq!(candidates(&res, "tailnet"), ["100.101.2.3@tailscale0", "fd7a:115c:a1e0::3@tailscale0"]);
    assert_rejected(&res, "tailnet", "utun5", &["100.80.1.1", "does not list it"]);
    // The guess, without the daemon, takes the utun.
    let res = run(&["tailnet"], vec![lo(), tailscale0(), utun]);
    assert!(candidates(&res, "tailnet").contains(&"100.80.1.1@utun5".to_owned()));
}

#[test]
fn tailscales_service_addresses_are_never_claimed() {
    let odd = Interface::new("tailscale0", 6, K::Tun)
        .with_addr("100.101.2.3/32")
        .with_addr("100.100.100.100/32")
        .with_addr("100.115.92.5/23");
    let res = run(&["tailnet"], vec![lo(), odd]);
    assert_eq!(candidates(&res, "tailnet"), ["100.101.2.3@tailscale0"]);
    assert_rejected(&res, "tailnet", "tailscale0", &["100.100.100.100", "service addresses"]);
    assert_rejected(&res, "tailnet", "tailscale0", &["100.115.92.5", "never this node's"]);
}

#[test]
fn starting_and_needs_login_claim_nothing_and_say_so() {
    let bare = Interface::new("tailscale0", 6, K::Tun);
    for (state, says) in [(DaemonState::Starting, "still starting"), (DaemonState::NeedsLogin, "tailscale up")] {
        // tailscale0 exists but has no address yet; a stale CGNAT address elsewhere must not stand in.
        let stray = Interface::new("tun7", 21, K::Tun).with_addr("100.90.0.1/32");
        let snap = Snapshot::new(vec![lo(), bare.clone(), stray]).with_fact(tailscaled(state));
        let res = resolve_snapshot(&["tailnet"], &snap);
        assert!(res.fallback, "{state:?}: {:?}", bound(&res));
        assert!(res.notes.iter().any(|n| n.contains(says)), "{state:?}: {:?}", res.notes);
        assert_rejected(&res, "tailnet", "tun7", &["does not list it"]);
        assert_eq!(res.daemon_starting().is_some(), state == DaemonState::Starting);
        assert_eq!(res.daemon_needs_login().is_some(), state == DaemonState::NeedsLogin);
    }
}

#[test]
fn userspace_networking_is_explained_with_the_way_in() {
    let mut fact = tailscaled(DaemonState::Running).with_addr("100.101.102.103");
    fact.userspace = true;
    let snap = Snapshot::new(vec![lo(), eth0()]).with_fact(fact);
    let res = resolve_snapshot(&["tailnet"], &snap);
    assert!(res.fallback);
    assert_rejected(&res, "tailnet", "(no interface)", &["userspace networking", "tailscale serve", "127.0.0.1"]);
}

#[test]
fn tinc_and_openvpn_take_only_their_daemons_word() {
    let tap = Interface::new("office", 30, K::Tap).with_addr("10.20.0.1/24");
    let tun0 = Interface::new("tun0", 31, K::Tun).with_addr("10.8.8.6/24");
    let tun1 = Interface::new("tun1", 32, K::Tun).with_addr("10.9.9.6/24");
    let plain = vec![lo(), tap.clone(), tun0.clone(), tun1.clone()];
    // No daemon: tun0 is not proof of OpenVPN, a TAP is not proof of tinc.
    let res = run(&["tinc", "openvpn"], plain.clone());
    assert!(res.fallback, "{:?}", bound(&res));
    let snap = Snapshot::new(plain)
        .with_fact(DaemonFact::new("tinc", "the device tincd (pid 7) holds open", DaemonState::Running).on("office"))
        .with_fact(DaemonFact::new("openvpn", "openvpn's --dev (pid 8)", DaemonState::Running).on("tun1"));
    let res = resolve_snapshot(&["tinc", "openvpn"], &snap);
    assert_eq!(bound(&res), ["10.20.0.1 tinc@office", "10.9.9.6 openvpn@tun1"]);
    assert!(report(&res, "openvpn").candidates[0].reason.contains("openvpn's --dev (pid 8)"));
    // And `auto` takes them, in priority order (tinc before openvpn).
    assert_eq!(bound(&resolve_snapshot(&["auto"], &snap)), ["10.20.0.1 tinc@office"]);
}

#[test]
fn openvpn_dco_is_claimed_by_kind() {
    let dco = Interface::new("ovpn-dco0", 33, K::Virtual("ovpn-dco".into())).with_addr("10.8.0.2/24");
    let res = run(&["openvpn"], vec![lo(), dco]);
    assert_eq!(bound(&res), ["10.8.0.2 openvpn@ovpn-dco0"]);
    assert_eq!(report(&res, "openvpn").candidates[0].specificity, Specificity::Kind);
}

#[test]
fn yggdrasil_is_public_so_only_when_named() {
    let ygg = Interface::new("tun0", 34, K::Tun).with_addr("201:5b1c:aa7e::1/7");
    let res = run(&["yggdrasil"], vec![lo(), eth0(), ygg.clone()]);
    assert_eq!(bound(&res), ["201:5b1c:aa7e::1 yggdrasil@tun0"]);
    assert!(run(&["auto"], vec![lo(), eth0(), ygg.clone()]).fallback, "auto never picks a public network");
    // A LAN that a Yggdrasil router hands 300::/64 addresses to is not this node's Yggdrasil.
    let lan6 = Interface::new("eth1", 35, K::Physical).with_addr("300:5b1c:aa7e::5/64");
    let res = run(&["yggdrasil"], vec![lo(), lan6]);
    assert!(res.fallback);
    assert_rejected(&res, "yggdrasil", "eth1", &["shared address space"]);
    // The admin socket's word names the interface and the address.
    let fact = DaemonFact::new("yggdrasil", "Yggdrasil's admin socket", DaemonState::Running)
        .on("tun0")
        .with_addr("201:5b1c:aa7e::1");
    let res = resolve_snapshot(&["yggdrasil"], &Snapshot::new(vec![lo(), ygg]).with_fact(fact));
    assert_eq!(report(&res, "yggdrasil").candidates[0].specificity, Specificity::Daemon);
}

#[test]
fn husarnet_by_name_and_range() {
    let hnet0 = Interface::new("hnet0", 36, K::Tun).with_addr("fc94:b01d:1803:8dd8::1/16");
    let res = run(&["husarnet"], vec![lo(), hnet0.clone()]);
    assert_eq!(bound(&res), ["fc94:b01d:1803:8dd8::1 husarnet@hnet0"]);
    // The ULA on a NIC is the LAN's, not Husarnet's.
    let nic = Interface::new("eth1", 37, K::Physical).with_addr("fc94::5/64");
    let res = run(&["husarnet"], vec![lo(), nic]);
    assert!(res.fallback);
    assert_rejected(&res, "husarnet", "eth1", &["shared address space"]);
}

#[test]
fn lan_inside_a_container_is_the_veth_with_the_default_route() {
    let eth0 = Interface::new("eth0", 40, K::Veth).with_addr("172.18.0.5/16");
    let snap = Snapshot::new(vec![lo(), eth0.clone()]).with_default_route("eth0");
    let res = resolve_snapshot(&["lan"], &snap);
    assert_eq!(bound(&res), ["172.18.0.5 lan@eth0"]);
    assert!(res.listeners[0].reason.contains("default route"), "{}", res.listeners[0].reason);
    // On the host side (no default route through it) the same veth is a container link.
    let res = run(&["lan"], vec![lo(), eth0]);
    assert!(res.fallback);
    assert_rejected(&res, "lan", "eth0", &["container or VM link", "without this namespace's default route"]);
}
