//! Never widen, shown over random hosts (proptest). Snapshots shaped like real
//! hosts (realistic and random names, every kind, up/down, carrier, addresses from
//! CGNAT, ULA, RFC 1918, public, link-local and loopback space) crossed with
//! random selector lists. 10,000 cases per property; a failure shrinks to a
//! small snapshot printed with `Debug`.

use std::collections::{BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use meshgate::core::model::is_link_local;
use meshgate::core::{
    parse_selector, resolve, Fallback, Interface, InterfaceKind, ListenerRole, Resolution, ResolveOptions, Selector,
    Snapshot,
};
use proptest::prelude::*;
use proptest::test_runner::Config;

const NAMES: &[&str] = &[
    "lo",
    "eth0",
    "enp3s0",
    "wlan0",
    "wg0",
    "wg1",
    "wt0",
    "tailscale0",
    "utun3",
    "utun4",
    "ztmjfnbvsk",
    "feth1",
    "nebula1",
    "tun-firezone",
    "docker0",
    "br-5f2a",
    "veth1a2b",
    "office",
    "mesh",
    "CloudflareWARP",
    "netmaker",
    "nm-home",
    "tun0",
    "tap0",
    "virbr0",
    "ñet0",
    "",
];

fn kind() -> impl Strategy<Value = InterfaceKind> {
    prop_oneof![
        Just(InterfaceKind::Loopback),
        Just(InterfaceKind::WireGuard),
        Just(InterfaceKind::WireGuardUserspace),
        Just(InterfaceKind::Tun),
        Just(InterfaceKind::Tap),
        Just(InterfaceKind::Physical),
        Just(InterfaceKind::Bridge),
        Just(InterfaceKind::Veth),
        Just(InterfaceKind::Virtual("dummy".into())),
        Just(InterfaceKind::Unknown),
    ]
}

/// An address from one of the spaces that matter, with a prefix length.
fn address() -> impl Strategy<Value = (IpAddr, u8)> {
    prop_oneof![
        // CGNAT (Tailscale, NetBird, Firezone, carrier NAT)
        (0u32..(1 << 22)).prop_map(|n| (IpAddr::V4(Ipv4Addr::from(0x6440_0000 | n)), 32)),
        // RFC 1918
        (any::<u8>(), any::<u16>()).prop_map(|(a, b)| (IpAddr::V4(Ipv4Addr::new(10, a, (b >> 8) as u8, b as u8)), 24)),
        any::<u16>().prop_map(|b| (IpAddr::V4(Ipv4Addr::new(192, 168, (b >> 8) as u8, b as u8)), 24)),
        any::<u16>().prop_map(|b| (IpAddr::V4(Ipv4Addr::new(172, 16 | (b >> 12) as u8, (b >> 4) as u8, b as u8)), 16)),
        // public
        any::<u32>().prop_map(|n| (IpAddr::V4(Ipv4Addr::from(0x0800_0000 | (n & 0x00ff_ffff))), 24)),
        // link-local v4 / v6
        any::<u16>().prop_map(|b| (IpAddr::V4(Ipv4Addr::new(169, 254, (b >> 8) as u8, b as u8)), 16)),
        any::<u64>().prop_map(|n| (IpAddr::V6(Ipv6Addr::from((0xfe80u128 << 112) | n as u128)), 64)),
        // loopback
        Just((IpAddr::V4(Ipv4Addr::LOCALHOST), 8)),
        Just((IpAddr::V6(Ipv6Addr::LOCALHOST), 128)),
        // ULA, the tailnet's and Firezone's v6 ranges
        any::<u64>().prop_map(|n| (IpAddr::V6(Ipv6Addr::from((0xfd12u128 << 112) | n as u128)), 64)),
        any::<u32>().prop_map(|n| (IpAddr::V6(Ipv6Addr::from((0xfd7a_115c_a1e0u128 << 80) | n as u128)), 128)),
        any::<u16>().prop_map(|n| (IpAddr::V6(Ipv6Addr::from((0xfd00_2021_1111u128 << 80) | n as u128)), 128)),
        // wildcards on an interface (malformed OS data): never to be bound
        Just((IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)),
        Just((IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)),
        // public v6
        any::<u64>().prop_map(|n| (IpAddr::V6(Ipv6Addr::from((0x2001_0db8u128 << 96) | n as u128)), 64)),
    ]
}

fn interface() -> impl Strategy<Value = Interface> {
    let name = prop_oneof![3 => prop::sample::select(NAMES).prop_map(str::to_owned), 1 => "[a-z]{1,6}[0-9]?"];
    (name, kind(), any::<bool>(), prop::option::of(any::<bool>()), prop::collection::vec(address(), 0..4)).prop_map(
        |(name, kind, up, carrier, addrs)| {
            let mut i = Interface::new(&name, 0, kind);
            i.flags.up = up || name == "lo";
            i.flags.carrier = carrier;
            for (a, p) in addrs {
                i = i.with_addr(&format!("{a}/{p}"));
            }
            i
        },
    )
}

/// A host: unique interface names and indexes, every address on one interface only.
fn snapshot() -> impl Strategy<Value = Snapshot> {
    prop::collection::vec(interface(), 0..10).prop_map(|ifaces| {
        let mut names = HashSet::new();
        let mut addrs = HashSet::new();
        let mut out = Vec::new();
        for (n, mut i) in ifaces.into_iter().enumerate() {
            if !names.insert(i.name.clone()) {
                continue;
            }
            i.index = n as u32 + 1;
            i.addresses.retain(|a| addrs.insert(a.addr));
            out.push(i);
        }
        Snapshot::new(out)
    })
}

fn selector_text() -> impl Strategy<Value = String> {
    let providers = meshgate::builtin::NAMES.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    prop_oneof![
        4 => prop::sample::select(providers),
        2 => Just("auto".to_owned()),
        1 => prop::sample::select(NAMES).prop_filter("non-empty", |n| !n.is_empty()).prop_map(|n| format!("iface:{n}")),
        1 => Just("iface:wg*".to_owned()),
        1 => prop_oneof![Just("cidr:10.0.0.0/8"), Just("cidr:100.64.0.0/10"), Just("cidr:fe80::/10"), Just("cidr:0.0.0.0/0")]
            .prop_map(str::to_owned),
        1 => address().prop_filter("the wildcard is `all`, not an IP", |(a, _)| !a.is_unspecified()).prop_map(|(a, _)| a.to_string()),
    ]
}

fn case() -> impl Strategy<Value = (Snapshot, Vec<String>, bool, bool)> {
    (snapshot(), prop::collection::vec(selector_text(), 1..4), any::<bool>(), any::<bool>())
}

fn run(snapshot: &Snapshot, texts: &[String], companion: bool, fail: bool) -> (Vec<Selector>, Resolution) {
    let registry = crate::registry();
    let names = registry.names();
    let selectors: Vec<Selector> =
        texts.iter().map(|t| parse_selector(t, &names, None).expect("generated selectors are valid")).collect();
    let opts = ResolveOptions {
        port: 18789,
        fallback: if fail { Fallback::Fail } else { Fallback::Loopback },
        loopback_companion: companion,
        ..Default::default()
    };
    let res = resolve(registry, &selectors, snapshot, &opts);
    (selectors, res)
}

fn config() -> Config {
    Config { cases: 10_000, failure_persistence: None, ..Config::default() }
}

proptest! {
    #![proptest_config(config())]

    /// No wildcard unless `all` was asked for; every listener is a loopback
    /// fallback or companion, an IP the user named, or an address present on a
    /// usable interface of the snapshot (the one it names), or loopback by the
    /// loopback provider; link-local only when
    /// named; a reason everywhere.
    #[test]
    fn never_wider_than_asked((snap, texts, companion, fail) in case()) {
        let (selectors, res) = run(&snap, &texts, companion, fail);
        let asked_all = selectors.iter().any(|s| matches!(s, Selector::Provider(p) if p == "all"));
        let named: HashSet<IpAddr> = selectors.iter().filter_map(|s| match s { Selector::Ip(ip) => Some(ip.addr), _ => None }).collect();
        let ll_cidr = selectors.iter().any(|s| matches!(s, Selector::Cidr(n) if is_link_local(n.network())));
        for l in &res.listeners {
            let a = l.address.addr;
            prop_assert!(!l.reason.is_empty(), "listener {} has no reason", l.address);
            if a.is_unspecified() {
                prop_assert!(asked_all, "wildcard {a} without `all`: {res:?}");
                continue;
            }
            match l.role {
                ListenerRole::Fallback | ListenerRole::Companion => prop_assert!(a.is_loopback(), "{:?} {a}", l.role),
                ListenerRole::Selected if l.provider == "ip" => prop_assert!(named.contains(&a)),
                // 127.0.0.1 is claimed even where the snapshot lacks lo: every host has it.
                ListenerRole::Selected if l.provider == "loopback" => prop_assert!(a.is_loopback()),
                ListenerRole::Selected => {
                    let holder = snap.interfaces.iter().find(|i| i.addresses.iter().any(|x| x.addr == a));
                    let holder = holder.unwrap_or_else(|| panic!("{a} ({}) is on no interface", l.provider));
                    prop_assert!(holder.unusable().is_none(), "{a} chosen on unusable {}", holder.name);
                    prop_assert_eq!(l.interface.as_deref(), Some(holder.name.as_str()));
                }
            }
            if is_link_local(a) {
                prop_assert!(named.contains(&a) || (l.provider == "cidr" && ll_cidr), "link-local {a} not named: {}", l.provider);
            }
        }
        if fail && res.fallback {
            prop_assert!(false, "--fallback fail took a fallback");
        }
        for p in &res.providers {
            for c in &p.candidates {
                prop_assert!(!c.reason.is_empty(), "{} candidate {} has no reason", p.name, c.address);
                prop_assert!(!is_link_local(c.address), "{} proposed link-local {}", p.name, c.address);
            }
            for r in &p.rejected {
                prop_assert!(!r.reason.is_empty(), "{} rejection on {} has no reason", p.name, r.interface);
            }
        }
    }

    /// The result does not depend on the order of interfaces or addresses.
    #[test]
    fn order_does_not_matter(
        (snap, texts, companion, fail) in case(),
        rotate in 0usize..10,
    ) {
        let (_, a) = run(&snap, &texts, companion, fail);
        let mut shuffled = snap.clone();
        shuffled.interfaces.reverse();
        let len = shuffled.interfaces.len().max(1);
        shuffled.interfaces.rotate_left(rotate % len);
        for i in &mut shuffled.interfaces {
            i.addresses.reverse();
        }
        let (_, b) = run(&shuffled, &texts, companion, fail);
        let key = |r: &Resolution| -> BTreeSet<(String, String, Option<String>, String)> {
            r.listeners.iter().map(|l| (l.address.to_string(), l.provider.clone(), l.interface.clone(), format!("{:?}", l.role))).collect()
        };
        prop_assert_eq!(key(&a), key(&b));
        prop_assert_eq!(a.fallback, b.fallback);
    }
}
