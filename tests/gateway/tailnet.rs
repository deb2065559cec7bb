//! Tailnet identity: tailscaled's `whois` (a stand-in local API with the JSON
//! shapes of tailscale's client/local package) names the caller of a
//! connection on tailscale's interface; the allow-list takes logins and tags.

use std::time::Duration;

use meshgate::core::fact::{DaemonFact, DaemonState};
use meshgate::core::probe::standin::{self, Answer, StandIn};
use meshgate::core::wgpeer::{AllowList, PeerNames};
use meshgate::core::Snapshot;
use meshgate::gateway::identity::PeerHeaders;
use meshgate::gateway::{PeerLookup, TailnetPeers};

fn socket(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("meshgate-tailnet-{}-{name}.sock", std::process::id()))
}

fn with_tailscale_on(iface: &str) -> Snapshot {
    let mut s = Snapshot::default();
    s.facts.push(DaemonFact::new("tailscale", "tailscaled's local API", DaemonState::Running).on(iface));
    s
}

#[tokio::test]
async fn whois_names_the_caller_and_the_allow_list_takes_logins_and_tags() {
    let daemon = StandIn::start(socket("who")).expect("stand-in");
    let allow = AllowList::resolve(&PeerNames::default(), ["tag:server"]).unwrap();
    let peers = TailnetPeers::at(allow, daemon.path());
    let caller = "10.99.0.12:51234".parse().unwrap();

    // Before a snapshot says which interface is tailscale's, nobody is asked.
    assert_eq!(peers.identify("tailscale0", caller).await, None);
    assert!(daemon.requests().is_empty());

    peers.observe(&with_tailscale_on("tailscale0"));
    daemon.answer("/localapi/v0/whois", Answer::Json(standin::WHOIS_TAGGED.into()));
    let id = peers.identify("tailscale0", caller).await.expect("a tagged node");
    assert_eq!(id.mesh, "tailscale");
    assert_eq!(id.login.as_deref(), Some("tagged-devices"));
    assert_eq!(id.node.as_deref(), Some("ci-runner.office.headscale.example"));
    assert_eq!(id.tags, ["tag:ci", "tag:server"]);
    assert!(id.allowed, "tag:server is on the allow-list");
    // The identity reaches the service as headers, a forged one replaced.
    let mut h = axum::http::HeaderMap::new();
    h.insert("meshgate-peer-login", "admin@example.com".parse().unwrap());
    PeerHeaders::new(Some(&id)).apply(&mut h);
    assert_eq!(h["meshgate-peer-login"], "tagged-devices");
    assert_eq!(h["meshgate-peer-tags"], "tag:ci,tag:server");
    assert_eq!(h["meshgate-peer-mesh"], "tailscale");

    // A user's node not on the list: known, not allowed.
    daemon.answer("/localapi/v0/whois", Answer::Json(standin::WHOIS_USER.into()));
    let id = peers.identify("tailscale0", caller).await.unwrap();
    assert_eq!(id.login.as_deref(), Some("alice@example.com"));
    assert!(!id.allowed);

    // Another interface is not tailscale's: not asked.
    let before = daemon.requests().len();
    assert_eq!(peers.identify("wg0", caller).await, None);
    assert_eq!(daemon.requests().len(), before);

    // A daemon that does not answer in time: unknown, within the bound.
    daemon.answer("/localapi/v0/whois", Answer::Hang);
    let started = std::time::Instant::now();
    assert_eq!(peers.identify("tailscale0", caller).await, None);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}
