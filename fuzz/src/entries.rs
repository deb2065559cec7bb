#![allow(unreachable_pub)]
//! Fuzz entry points: one function per target, each taking arbitrary bytes.
//!
//! The same file is compiled into the fuzz targets (nightly, libFuzzer) and into
//! the main test binary (`tests/hardening`), which replays the committed seeds
//! (`fuzz/corpus/`) and crash regressions (`fuzz/regressions/`) on stable, so a
//! crash once found stays fixed (`fuzz/README.md`). Besides "no panic", each
//! entry checks the invariants it can: a never-widen rule for the resolver, the
//! exact-token rule for the Authorization check.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use meshgate::core::config::FileConfig;
use meshgate::core::{parse_selector, parse_selectors, resolve, Fallback, Interface, InterfaceKind, ListenerRole};
use meshgate::core::{Registry, ResolveOptions, Selector, Snapshot};
use meshgate::gateway::auth::bearer_matches;
use meshgate::gateway::Token;

fn registry() -> &'static Registry {
    meshgate::builtin::link();
    Registry::global().expect("built-in providers register")
}

/// `--bind` values: one per line; a first line starting `host=` is `--host`.
pub fn selector(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let names = registry().names();
    let mut lines: Vec<&str> = text.lines().collect();
    let host = lines.first().and_then(|l| l.strip_prefix("host=")).map(str::to_owned);
    if host.is_some() {
        lines.remove(0);
    }
    for l in &lines {
        if let Ok(sel) = parse_selector(l, &names, host.as_deref()) {
            // What parses must print back to something that parses to the same thing.
            let again = parse_selector(&sel.to_string(), &names, None);
            if !matches!(sel, Selector::Ip(_)) || host.is_none() {
                assert_eq!(again.as_ref().ok(), Some(&sel), "{l:?} -> {sel} does not round-trip");
            }
        }
    }
    let values: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    let _ = parse_selectors(&values, &names, host.as_deref());
}

/// A config file.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("fuzz.toml");
    if let Ok(cfg) = FileConfig::parse(text, path) {
        let _ = cfg.provider_configs(path, &registry().names());
    }
}

/// The Authorization check: first byte = token length, then the token, then the header value.
pub fn auth_header(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else { return };
    let n = (n as usize).min(rest.len());
    let (tok, header) = rest.split_at(n);
    let Ok(tok_str) = std::str::from_utf8(tok) else { return };
    let Ok(token) = Token::new(tok_str, "fuzz") else { return };
    let mut headers = axum::http::HeaderMap::new();
    if let Ok(v) = axum::http::HeaderValue::from_bytes(header) {
        headers.insert(axum::http::header::AUTHORIZATION, v);
    }
    let ok = bearer_matches(&headers, &token);
    // Only "Bearer <the token>" (scheme case-insensitive) may pass.
    let want = tok_str.trim().as_bytes();
    let expected = headers.contains_key(axum::http::header::AUTHORIZATION)
        && header.len() == 7 + want.len()
        && header[..7].eq_ignore_ascii_case(b"bearer ")
        && &header[7..] == want;
    assert_eq!(ok, expected, "header {:?} token {:?}", String::from_utf8_lossy(header), tok_str);
}

/// Snapshot and selectors decoded from bytes; the resolution must never widen.
pub fn resolution(data: &[u8]) {
    let mut r = Reader(data);
    let snapshot = decode_snapshot(&mut r);
    let providers = registry().names();
    let mut selectors = Vec::new();
    for _ in 0..r.byte() % 4 {
        let s = match r.byte() % 6 {
            0 => Selector::Auto,
            1 | 2 => Selector::Provider(providers[r.byte() as usize % providers.len()].to_owned()),
            3 => match parse_selector(&format!("iface:{}", r.name()), &providers, None) {
                Ok(s) => s,
                Err(_) => continue,
            },
            4 => match parse_selector(&format!("cidr:{}/{}", r.addr(), r.byte() % 129), &providers, None) {
                Ok(s) => s,
                Err(_) => continue,
            },
            _ => match parse_selector(&r.addr().to_string(), &providers, None) {
                Ok(s) => s,
                Err(_) => continue,
            },
        };
        selectors.push(s);
    }
    let opts = ResolveOptions {
        port: 18789,
        fallback: if r.byte() & 1 == 0 { Fallback::Loopback } else { Fallback::Fail },
        loopback_companion: r.byte() & 1 == 0,
        ..Default::default()
    };
    let res = resolve(registry(), &selectors, &snapshot, &opts);
    let asked_all = selectors.iter().any(|s| matches!(s, Selector::Provider(p) if p == "all"));
    for l in &res.listeners {
        assert!(!l.reason.is_empty());
        if l.address.addr.is_unspecified() {
            assert!(asked_all, "wildcard {l:?} without `all`; selectors {selectors:?}; snapshot {snapshot:?}");
        }
        if matches!(l.role, ListenerRole::Fallback | ListenerRole::Companion) {
            assert!(l.address.addr.is_loopback(), "{:?} on {}", l.role, l.address);
        }
    }
    // `explain --json` must always be producible.
    serde_json::to_string(&res).expect("a resolution serializes");
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn name(&mut self) -> String {
        let n = (self.byte() % 12) as usize;
        (0..n).map(|_| b"wgtaiscle0123456789*?[]-_.zn\xc3"[self.byte() as usize % 29] as char).collect()
    }
    fn addr(&mut self) -> IpAddr {
        let b: Vec<u8> = (0..17).map(|_| self.byte()).collect();
        if b[0] & 1 == 0 {
            IpAddr::V4(Ipv4Addr::new(b[1], b[2], b[3], b[4]))
        } else {
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[1..17]);
            IpAddr::V6(Ipv6Addr::from(o))
        }
    }
}

fn decode_snapshot(r: &mut Reader<'_>) -> Snapshot {
    let kinds = [
        InterfaceKind::Loopback,
        InterfaceKind::WireGuard,
        InterfaceKind::WireGuardUserspace,
        InterfaceKind::Tun,
        InterfaceKind::Tap,
        InterfaceKind::Physical,
        InterfaceKind::Bridge,
        InterfaceKind::Veth,
        InterfaceKind::Virtual("dummy".into()),
        InterfaceKind::Unknown,
    ];
    let mut out = Vec::new();
    for index in 0..(r.byte() % 8) as u32 {
        let kind = kinds[r.byte() as usize % kinds.len()].clone();
        let mut i = Interface::new(&r.name(), index, kind);
        let flags = r.byte();
        i.flags.up = flags & 1 != 0;
        i.flags.carrier = [None, Some(true), Some(false)][(flags >> 1) as usize % 3];
        i.flags.point_to_point = flags & 8 != 0;
        for _ in 0..r.byte() % 4 {
            let addr = r.addr();
            let max = if addr.is_ipv4() { 32 } else { 128 };
            i.addresses.push(meshgate::core::IfAddr { addr, prefix_len: r.byte() % (max + 1) });
        }
        out.push(i);
    }
    Snapshot::new(out)
}
