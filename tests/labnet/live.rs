//! The snapshot a serving process keeps from netlink events
//! ([`LiveNetlink`]) equals a fresh dump after random sequences of link,
//! address and default route changes, made with real `ip` commands in a lab.
//!
//! The checking runs inside the lab: [`live_table_matches_a_dump`] builds the
//! lab and runs this test binary again inside it, filtered to
//! [`inside_the_lab`] (ignored otherwise, and a no-op without [`INSIDE`]).
//! Bounded: 32 cases of at most 24 changes, on four TUN devices and a veth, and the
//! whole run killed after two minutes.

use std::process::Command;
use std::time::Duration;

use meshgate_core::source::{LiveNetlink, NetlinkSource};
use meshgate_core::watcher::Watcher;
use meshgate_core::Snapshot;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::lab::{lab_or_skip, run_bounded};

/// Set in the environment of the run inside the lab.
const INSIDE: &str = "MESHGATE_LIVE_TABLE_INSIDE";

#[test]
fn live_table_matches_a_dump() {
    let Some(lab) = lab_or_skip("live_table_matches_a_dump") else { return };
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = lab.command(exe);
    cmd.args(["labnet::live::inside_the_lab", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1");
    let out = run_bounded(cmd, Duration::from_secs(120));
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the property test inside the lab failed:\n{text}");
    // It ran, and did not skip: the run inside says how many cases passed.
    assert!(text.contains("live table: 32 cases equal to a dump"), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

/// One change, as an `ip` command on one of the TUN devices t0..t3 or the
/// veth v0 (number 4; its peer is v1): with a veth, the default routes are read.
#[derive(Debug, Clone)]
enum Op {
    AddLink(u8),
    DelLink(u8),
    Up(u8),
    Down(u8),
    /// One of [`ADDRS`], on a device.
    AddAddr(u8, usize),
    DelAddr(u8, usize),
    /// `addr replace`: an address already there changes in place (an IPv6
    /// peer: the kernel keys IPv6 addresses by the local address alone).
    Replace(u8, usize),
    /// The device renamed to `r{n}` and back (same index, same addresses).
    Rename(u8),
    Unrename(u8),
    Flush(u8),
    DefaultVia(u8),
    NoDefault,
}

/// The addresses tried, `{}` being the device number: a primary and a
/// secondary IPv4 address, a host route, a point-to-point pair, IPv6 without
/// and with DAD (a TUN without carrier keeps the latter tentative: left out).
const ADDRS: &[&str] = &[
    "10.9.{}.1/24",
    "10.9.{}.2/24",
    "10.99.0.{}/32",
    "10.98.{}.1 peer 10.98.{}.2",
    "fd00:9::{}:1/64 nodad",
    "fd00:9::{}:2/64",
    "fd00:8::{}:1 peer fd00:8::{}:2 nodad",
    "fd00:8::{}:1 peer fd00:8::{}:3 nodad",
];

fn op() -> impl Strategy<Value = Op> {
    let dev = 0u8..5;
    prop_oneof![
        3 => dev.clone().prop_map(Op::AddLink),
        1 => dev.clone().prop_map(Op::DelLink),
        2 => dev.clone().prop_map(Op::Up),
        1 => dev.clone().prop_map(Op::Down),
        5 => (dev.clone(), 0..ADDRS.len()).prop_map(|(d, a)| Op::AddAddr(d, a)),
        3 => (dev.clone(), 0..ADDRS.len()).prop_map(|(d, a)| Op::DelAddr(d, a)),
        2 => (dev.clone(), 0..ADDRS.len()).prop_map(|(d, a)| Op::Replace(d, a)),
        1 => dev.clone().prop_map(Op::Rename),
        1 => dev.clone().prop_map(Op::Unrename),
        1 => dev.clone().prop_map(Op::Flush),
        1 => dev.prop_map(Op::DefaultVia),
        1 => Just(Op::NoDefault),
    ]
}

impl Op {
    fn args(&self) -> Vec<String> {
        let addr = |d: u8, a: usize| ADDRS[a].replace("{}", &d.to_string());
        let dev = |d: u8| if d == 4 { "v0".to_owned() } else { format!("t{d}") };
        let line = match self {
            Op::AddLink(4) => "link add v0 type veth peer name v1".to_owned(),
            Op::AddLink(d) => format!("tuntap add mode tun name t{d}"),
            Op::DelLink(d) => format!("link del {}", dev(*d)),
            Op::Up(d) => format!("link set {} up", dev(*d)),
            Op::Down(d) => format!("link set {} down", dev(*d)),
            Op::AddAddr(d, a) => format!("addr add {} dev {}", addr(*d, *a), dev(*d)),
            Op::DelAddr(d, a) => format!("addr del {} dev {}", addr(*d, *a).trim_end_matches(" nodad"), dev(*d)),
            Op::Replace(d, a) => format!("addr replace {} dev {}", addr(*d, *a), dev(*d)),
            Op::Rename(d) => format!("link set {} name r{d}", dev(*d)),
            Op::Unrename(d) => format!("link set r{d} name {}", dev(*d)),
            Op::Flush(d) => format!("addr flush dev {}", dev(*d)),
            Op::DefaultVia(d) => format!("route replace default dev {}", dev(*d)),
            Op::NoDefault => "route del default".to_owned(),
        };
        line.split_whitespace().map(str::to_owned).collect()
    }

    /// Runs it; a change the kernel refuses (an address twice, a device that
    /// is not there) is part of the sequence too: the kernel's state is what
    /// it is, and both readers must agree on it.
    fn run(&self) {
        let _ = Command::new("ip").args(self.args()).output().expect("ip runs");
    }
}

/// Each interface's addresses sorted: the order within an interface is the
/// kernel's (primaries first, IPv6 by scope), which events cannot reproduce.
fn sorted(mut s: Snapshot) -> Snapshot {
    for i in &mut s.interfaces {
        i.addresses.sort_by_key(|a| (a.addr, a.prefix_len));
    }
    s
}

fn dump() -> Snapshot {
    sorted(NetlinkSource::default().read().expect("a dump"))
}

/// A dump once the kernel is done: some changes finish after `ip` returns
/// (IPv6 DAD completes from a work queue), so two dumps 50 ms apart must
/// agree (2 s at most).
fn settled() -> Snapshot {
    let mut last = dump();
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(50));
        let now = dump();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

#[test]
#[ignore = "runs inside a lab namespace, started by live_table_matches_a_dump"]
fn inside_the_lab() {
    if std::env::var_os(INSIDE).is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let _enter = rt.enter();
    let live = LiveNetlink::new().expect("subscribe and dump");
    // proptest wants a `Fn`: the watcher is borrowed mutably once per case.
    // No safety dump during the run: the dump counts below are exact, and a
    // timer's dump must not mend a divergence before it is checked.
    let watcher = std::cell::RefCell::new(live.watcher_every(Duration::from_secs(3600)).expect("the watcher"));
    let config = Config { cases: 32, failure_persistence: None, max_shrink_iters: 64, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&proptest::collection::vec(op(), 1..24), |ops| {
        // Whatever an earlier case left pending is reported now.
        let _ = rt.block_on(tokio::time::timeout(Duration::from_millis(100), watcher.borrow_mut().changed()));
        let before = dump();
        for op in &ops {
            op.run();
        }
        let after = settled();
        if after != before {
            // The watcher reads the events itself and says so.
            let said = rt.block_on(tokio::time::timeout(Duration::from_secs(2), watcher.borrow_mut().changed()));
            prop_assert!(matches!(said, Ok(Ok(()))), "the watcher did not report {ops:?}: {said:?}");
        }
        let kept = sorted(live.read().map_err(|e| TestCaseError::fail(e.to_string()))?);
        prop_assert_eq!(&kept, &after, "after {:?}", ops);
        // The crate's own comparison agrees: a dump finds nothing new.
        prop_assert!(!live.redump().map_err(|e| TestCaseError::fail(e.to_string()))?, "after {:?}", ops);
        Ok(())
    });
    if let Err(e) = result {
        panic!("the event-kept snapshot differs from a dump: {e}");
    }
    // Without the watcher: a snapshot reads the queued events itself.
    for op in [Op::AddLink(0), Op::Up(0), Op::AddAddr(0, 0), Op::AddAddr(0, 4), Op::DelAddr(0, 0)] {
        op.run();
    }
    let after = settled();
    assert_eq!(sorted(live.read().expect("a snapshot")), after);
    // One dump at start and one per case's check: no overrun made another.
    assert_eq!(live.dumps(), 1 + 32);

    // An overrun: a burst far larger than a tiny receive buffer. The events
    // lost, the table is read again, and equals a dump.
    live.set_receive_buffer(4096).expect("a small buffer");
    let burst: String = (0..400).map(|k| format!("addr add 10.77.{}.{}/32 dev t0\n", k / 200, k % 200 + 1)).collect();
    let out = Command::new("ip")
        .args(["-b", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(burst.as_bytes())?;
            c.wait()
        })
        .expect("ip -b runs");
    assert!(out.success(), "the burst of addresses");
    let kept = sorted(live.read().expect("a snapshot after the overrun"));
    assert_eq!(live.dumps(), 1 + 32 + 1, "the overrun was seen and mended by one dump");
    assert_eq!(kept, dump());
    let burst_kept =
        kept.get("t0").map(|i| i.addresses.iter().filter(|a| a.addr.to_string().starts_with("10.77.")).count());
    assert_eq!(burst_kept, Some(400), "every address of the burst");
    println!("live table: 32 cases equal to a dump");
}
