//! The per-connection cost of peer identity: a longest-prefix lookup in a table
//! of 1,000 peers (each a /32 and a /128, plus a few wider subnets), bare and
//! through the cache's hit path. Issue #14's budget: well under 2 µs.
//!
//! `cargo bench -p meshgate-core --bench peer_lookup`

// criterion_group!/criterion_main! generate undocumented public functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use meshgate_core::wgpeer::{Peer, PeerCache, PeerCacheConfig, PeerTable, PublicKey};
use meshgate_core::{Interface, InterfaceKind};

const PEERS: u32 = 1000;

fn v4(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a4d_0000 + i)
}

fn v6(i: u32) -> Ipv6Addr {
    Ipv6Addr::from(0xfd77_u128 << 112 | u128::from(i))
}

fn peers() -> Vec<Peer> {
    (0..PEERS)
        .map(|i| {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_be_bytes());
            let mut allowed_ips =
                vec![format!("{}/32", v4(i)).parse().unwrap(), format!("{}/128", v6(i)).parse().unwrap()];
            // Every hundredth peer is a site router with a subnet behind it.
            if i % 100 == 0 {
                allowed_ips.push(format!("10.{}.0.0/16", 100 + i / 100).parse().unwrap());
            }
            Peer {
                public_key: PublicKey::from_bytes(key),
                allowed_ips,
                endpoint: None,
                last_handshake: None,
                rx_bytes: 0,
                tx_bytes: 0,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let table = PeerTable::new(peers());
    let addrs: Vec<IpAddr> = (0..PEERS).step_by(7).flat_map(|i| [IpAddr::V4(v4(i)), IpAddr::V6(v6(i))]).collect();
    let mut g = c.benchmark_group("peer_lookup_1000");
    g.measurement_time(Duration::from_secs(3));
    let mut n = 0;
    g.bench_function("table_hit", |b| {
        b.iter(|| {
            n = (n + 1) % addrs.len();
            black_box(table.lookup(black_box(addrs[n])))
        })
    });
    g.bench_function("table_subnet_hit", |b| {
        b.iter(|| black_box(table.lookup(black_box("10.105.3.4".parse().unwrap()))))
    });
    g.bench_function("table_miss", |b| b.iter(|| black_box(table.lookup(black_box("192.0.2.9".parse().unwrap())))));

    // The cache's hit path as the gateway calls it (one current-thread runtime,
    // the table already read).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let all = peers();
    let cache = PeerCache::with_reader(
        PeerCacheConfig { max_age: Duration::from_secs(3600), ..PeerCacheConfig::default() },
        move |_, _, _| Ok(all.clone()),
    );
    let iface = Interface::new("wg0", 4, InterfaceKind::WireGuardUserspace);
    assert!(rt.block_on(cache.lookup(&iface, addrs[0])).is_some());
    let mut n = 0;
    g.bench_function("cache_hit", |b| {
        b.iter(|| {
            n = (n + 1) % addrs.len();
            black_box(rt.block_on(cache.lookup(&iface, black_box(addrs[n]))))
        })
    });
    // What block_on itself costs, to tell it from the cache's own work above.
    g.bench_function("block_on_baseline", |b| b.iter(|| black_box(rt.block_on(async { black_box(1) }))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
