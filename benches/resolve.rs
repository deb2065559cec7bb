//! How `resolve` scales with the number of interfaces.
//!
//! `auto` runs every registered provider over the snapshot (so `explain` can
//! say what each saw), settles shared address space and picks the first mesh, on
//! every network change under follow. A container host easily has hundreds of
//! veths, so this measures snapshots of 4, 64 and 1024 interfaces of a
//! realistic mix: loopback, a dual-stack NIC with a link-local address, docker
//! bridges, veths with link-local addresses, tailscale0, and wg0 near the end.
//!
//! Run: `cargo bench --bench resolve -- --warm-up-time 1 --measurement-time 3`.

// criterion_group!/criterion_main! generate undocumented public functions.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use meshgate::core::{resolve, Fallback, Interface, InterfaceKind, Registry, ResolveOptions, Selector, Snapshot};

/// A host with `n` interfaces (n >= 4): the four that matter, padded with
/// container links in between, wg0 second to last as a late-created tunnel.
fn host(n: usize) -> Snapshot {
    assert!(n >= 4, "a host needs lo, eth0, tailscale0 and wg0");
    let mut ifaces = vec![
        Interface::new("lo", 1, InterfaceKind::Loopback).with_addr("127.0.0.1/8").with_addr("::1/128"),
        Interface::new("eth0", 2, InterfaceKind::Physical)
            .with_addr("192.168.1.10/24")
            .with_addr("2001:db8::10/64")
            .with_addr("fe80::10/64"),
    ];
    let mut index = 3u32;
    // Padding: one docker bridge per 16 links, veths (with link-local v6) for the rest.
    for i in 0..n - 4 {
        let iface = if i % 16 == 0 {
            let net = (i / 16) % 240;
            Interface::new(&format!("br-{i:012x}"), index, InterfaceKind::Bridge).with_addr(&format!(
                "172.{}.{}.1/24",
                16 + net / 16 % 16,
                net
            ))
        } else {
            Interface::new(&format!("veth{i:07x}"), index, InterfaceKind::Veth)
                .with_addr(&format!("fe80::{:x}:1/64", i))
        };
        ifaces.push(iface);
        index += 1;
    }
    ifaces.push(
        Interface::new("tailscale0", index, InterfaceKind::Tun)
            .with_addr("100.101.2.3/32")
            .with_addr("fd7a:115c:a1e0::3/128"),
    );
    ifaces.push(
        Interface::new("wg0", index + 1, InterfaceKind::WireGuard).with_addr("10.8.0.1/24").with_addr("fe80::1/64"),
    );
    assert_eq!(ifaces.len(), n);
    Snapshot::new(ifaces)
}

fn bench_resolve(c: &mut Criterion) {
    meshgate::builtin::link();
    let registry = Registry::global().expect("built-in providers register");
    let opts =
        ResolveOptions { port: 18789, fallback: Fallback::Loopback, loopback_companion: true, ..Default::default() };
    let selectors = [Selector::Auto];

    // Sanity: the bench measures the real decision, not an empty one.
    let res = resolve(registry, &selectors, &host(64), &opts);
    assert_eq!(res.listeners[0].interface.as_deref(), Some("tailscale0"));

    let mut group = c.benchmark_group("resolve_auto");
    for n in [4usize, 64, 1024] {
        let snapshot = host(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &snapshot, |b, snap| {
            b.iter(|| resolve(registry, black_box(&selectors), black_box(snap), &opts))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_resolve);
criterion_main!(benches);
