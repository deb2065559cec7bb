//! The probes against a stand-in tailscaled ([`super::standin`]): a custom
//! Headscale prefix is found, `Starting` and `NeedsLogin` are reported, a
//! hanging daemon is skipped within the bound, whois names the peer, and a
//! state change on the IPN bus wakes the watcher.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::standin::{self, Answer, StandIn};
use super::tailscale::{whois_at, TailscaleProbe};
use super::{Probe, Probes, ProbingSource};
use crate::fact::DaemonState;
use crate::model::{Interface, InterfaceKind, Snapshot};
use crate::registry::Registry;
use crate::resolver::{resolve, ResolveOptions};
use crate::source::{InterfaceSource, MockInterfaceSource};
use crate::watcher::{DaemonWatcher, WatchError, Watcher};

const STATUS: &str = "/localapi/v0/status";

fn sock(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("meshgate-ts-{}-{name}.sock", std::process::id()))
}

fn host() -> Snapshot {
    Snapshot::new(vec![
        Interface::new("lo", 1, InterfaceKind::Loopback).with_addr("127.0.0.1/8"),
        Interface::new("eth0", 2, InterfaceKind::Physical).with_addr("192.0.2.10/24"),
        Interface::new("tailscale0", 5, InterfaceKind::Tun)
            .with_addr("10.99.0.7/32")
            .with_addr("fd7a:115c:a1e0::7/128"),
    ])
}

fn standin(name: &str, status: &str) -> StandIn {
    let s = StandIn::start(sock(name)).expect("stand-in socket");
    s.answer(STATUS, Answer::Json(status.into()));
    s
}

#[tokio::test]
async fn finds_a_custom_headscale_prefix() {
    let s = standin("headscale", standin::STATUS_HEADSCALE_RUNNING);
    let facts = TailscaleProbe::at(s.path()).probe(&host()).await.expect("probe");
    assert_eq!(facts.len(), 1, "{facts:?}");
    let f = &facts[0];
    assert_eq!(f.state, DaemonState::Running);
    assert_eq!(f.interface.as_deref(), Some("tailscale0"));
    let addrs: Vec<String> = f.addresses.iter().map(|a| a.to_string()).collect();
    assert_eq!(addrs, ["10.99.0.7", "fd7a:115c:a1e0::7"]);
    assert_eq!(f.dns_name.as_deref(), Some("gw.office.headscale.example"));
    assert!(!f.userspace);
    assert!(f.summary().contains("tailscaled's local API"), "{}", f.summary());
    assert_eq!(s.requests(), ["GET /localapi/v0/status?peers=false HTTP/1.0"]);
}

#[tokio::test]
async fn reports_starting_and_the_resolution_says_to_wait() {
    let s = standin("starting", standin::STATUS_STARTING);
    let mut snap = host();
    snap.facts = TailscaleProbe::at(s.path()).probe(&snap).await.expect("probe");
    assert_eq!(snap.facts[0].state, DaemonState::Starting);
    assert!(snap.facts[0].addresses.is_empty() && snap.facts[0].interface.is_none());
    let registry = Registry::from_descriptors([]).unwrap();
    let res = resolve(&registry, &[], &snap, &ResolveOptions::default());
    assert!(res.daemon_starting().is_some());
    assert!(res.daemon_needs_login().is_none());
    assert!(res.notes.iter().any(|n| n.contains("tailscale is still starting")), "{:?}", res.notes);
}

#[tokio::test]
async fn reports_needs_login_plainly() {
    let s = standin("login", standin::STATUS_NEEDS_LOGIN);
    let mut snap = host();
    snap.facts = TailscaleProbe::at(s.path()).probe(&snap).await.expect("probe");
    assert_eq!(snap.facts[0].state, DaemonState::NeedsLogin);
    let registry = Registry::from_descriptors([]).unwrap();
    let res = resolve(&registry, &[], &snap, &ResolveOptions::default());
    assert!(res.daemon_needs_login().is_some() && res.daemon_starting().is_none());
    assert!(res.notes.iter().any(|n| n.contains("needs a login") && n.contains("tailscale up")), "{:?}", res.notes);
}

#[tokio::test]
async fn userspace_networking_has_no_interface() {
    let s = standin("userspace", standin::STATUS_USERSPACE_RUNNING);
    let f = &TailscaleProbe::at(s.path()).probe(&host()).await.expect("probe")[0];
    assert!(f.userspace && f.interface.is_none(), "{f:?}");
    assert!(f.summary().contains("userspace networking"), "{}", f.summary());
}

#[tokio::test]
async fn a_hanging_daemon_is_skipped_within_the_bound() {
    let s = StandIn::start(sock("hang")).unwrap();
    s.answer(STATUS, Answer::Hang);
    let mut os = MockInterfaceSource::new();
    os.expect_snapshot().returning(|| Ok(host()));
    let source = ProbingSource::with_probes(Box::new(os), Probes::new(vec![Box::new(TailscaleProbe::at(s.path()))]));
    let start = Instant::now();
    let snap = source.snapshot().await.expect("snapshot");
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(190) && took < Duration::from_millis(600), "took {took:?}");
    assert!(snap.facts.is_empty());
    assert_eq!(snap.probe_notes, ["tailscaled's local API did not answer within 200 ms: skipped"]);
    // The interfaces are all there: a silent daemon costs its bound, nothing more.
    assert_eq!(snap.interfaces, host().interfaces);
}

#[tokio::test]
async fn an_error_answer_is_a_note_that_names_the_socket() {
    let s = StandIn::start(sock("error")).unwrap();
    s.answer(STATUS, Answer::Status(500, "backend broke".into()));
    let source = {
        let mut os = MockInterfaceSource::new();
        os.expect_snapshot().returning(|| Ok(host()));
        ProbingSource::with_probes(Box::new(os), Probes::new(vec![Box::new(TailscaleProbe::at(s.path()))]))
    };
    let snap = source.snapshot().await.unwrap();
    let note = &snap.probe_notes[0];
    assert!(note.contains(&s.path().display().to_string()) && note.contains("backend broke"), "{note}");
}

#[tokio::test]
async fn no_socket_costs_a_failed_stat() {
    let probe = TailscaleProbe::at(sock("absent"));
    let start = Instant::now();
    for _ in 0..100 {
        assert!(probe.probe(&host()).await.unwrap().is_empty());
    }
    // 100 failed stats: far below a millisecond each even in a debug build.
    assert!(start.elapsed() < Duration::from_millis(100), "{:?}", start.elapsed());
}

#[tokio::test]
async fn whois_names_the_login_node_and_tags() {
    let s = StandIn::start(sock("whois")).unwrap();
    s.answer("/localapi/v0/whois", Answer::Json(standin::WHOIS_TAGGED.into()));
    let peer: SocketAddr = "10.99.0.12:51234".parse().unwrap();
    let who = whois_at(s.path(), peer, Duration::from_secs(2)).await.expect("whois");
    assert_eq!(who.node_name, "ci-runner.office.headscale.example");
    assert_eq!(who.tags, ["tag:ci", "tag:server"]);
    assert_eq!(who.login_name, "tagged-devices");
    assert_eq!(s.requests(), ["GET /localapi/v0/whois?addr=10.99.0.12:51234 HTTP/1.0"]);

    s.answer("/localapi/v0/whois", Answer::Json(standin::WHOIS_USER.into()));
    let who = whois_at(s.path(), "[fd7a:115c:a1e0::9]:443".parse().unwrap(), Duration::from_secs(2)).await.unwrap();
    assert_eq!(
        (who.login_name.as_str(), who.node_name.as_str()),
        ("alice@example.com", "laptop.office.headscale.example")
    );
    assert!(who.tags.is_empty());

    s.answer("/localapi/v0/whois", Answer::Hang);
    let err = whois_at(s.path(), peer, Duration::from_millis(100)).await.unwrap_err();
    assert!(err.to_string().contains("no answer within"), "{err}");
}

/// A watcher that never fires: only the daemon can wake the [`DaemonWatcher`].
struct Quiet;

#[async_trait::async_trait]
impl Watcher for Quiet {
    async fn changed(&mut self) -> Result<(), WatchError> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_state_change_on_the_ipn_bus_is_a_network_change() {
    let s = StandIn::start(sock("bus")).unwrap();
    // Starting (5) as the initial state, then a network map (not a change), then Running (6).
    s.answer(
        "/localapi/v0/watch-ipn-bus",
        Answer::Stream(vec![
            (Duration::ZERO, r#"{"Version":"1.82.5","State":5}"#.into()),
            (Duration::from_millis(50), r#"{"NetMap":{"SelfNode":{"ID":1}}}"#.into()),
            (Duration::from_millis(300), r#"{"State":6}"#.into()),
        ]),
    );
    let mut w = DaemonWatcher::new(Box::new(Quiet), s.path().to_owned());
    let start = Instant::now();
    tokio::time::timeout(Duration::from_secs(3), w.changed())
        .await
        .expect("the state change wakes the watcher")
        .unwrap();
    // Not the initial state, not the network map: the change at ~350 ms.
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    println!(
        "IPN bus state change reached the watcher {:?} after it was sent",
        took.saturating_sub(Duration::from_millis(350))
    );
    assert!(s.requests()[0].starts_with("GET /localapi/v0/watch-ipn-bus?mask=18 "), "{:?}", s.requests());
}

#[tokio::test]
async fn probing_a_host_without_daemons_costs_microseconds() {
    // Every registered probe, on a host without TUN/TAP devices: the socket
    // probes pay one failed stat each, the process-table probes read nothing.
    let probes = Probes::global().expect("probe registry");
    assert_eq!(probes.names(), ["openvpn", "tailscaled", "tincd", "yggdrasil"]);
    let daemons =
        [super::tailscale::socket_path(), "/var/run/yggdrasil/yggdrasil.sock".into(), "/var/run/yggdrasil.sock".into()];
    if let Some(d) = daemons.iter().find(|p| p.exists()) {
        // Not a host without daemons: the measurement would be of a real answer.
        let ci = matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"));
        assert!(!ci, "CI runs without mesh daemons, but {} exists", d.display());
        return;
    }
    let bare = Snapshot::new(host().interfaces.into_iter().filter(|i| i.kind != InterfaceKind::Tun).collect());
    let start = Instant::now();
    for _ in 0..1000 {
        let mut snap = bare.clone();
        probes.run(&mut snap, super::PROBE_BOUND).await;
        assert!(snap.probe_notes.is_empty(), "{:?}", snap.probe_notes);
    }
    let each = start.elapsed() / 1000;
    // Tens of microseconds in a debug build; the bound leaves room for a loaded CI machine.
    assert!(each < Duration::from_millis(1), "{each:?} per run");
    println!("probing a host without daemons: {each:?} per run");
}
