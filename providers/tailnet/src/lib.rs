//! `tailnet`: Tailscale and Headscale.
//!
//! tailscaled's word comes first: when its local API answered (a `tailscale`
//! [`DaemonFact`](meshgate_core::DaemonFact) in the snapshot), the tailnet is
//! exactly the addresses it lists, on the interface that holds them, so a
//! Headscale network with a custom prefix is found, and nothing else in
//! 100.64.0.0/10 is claimed. A tailscaled that is starting, needs a login or is
//! stopped claims nothing and says so; one in userspace-networking mode has no
//! interface to listen on, and the rejection says how to reach meshgate anyway.
//!
//! Without an answer, the guess: Linux names the interface `tailscale0`; macOS
//! puts it on a `utunN` (which only counts with a tailnet address on it).
//! Addresses come from 100.64.0.0/10 and fd7a:115c:a1e0::/48, but CGNAT space is
//! shared with NetBird, Firezone, WARP and carrier NAT, so a range-only match is
//! the weakest claim and never counts on a physical NIC. Tailscale's own
//! service addresses (100.100.100.100, ChromeOS's 100.115.92.0/23) are never
//! this node's and never claimed.

use meshgate_core::probe::tailscale::is_tailscale_service_address;
use meshgate_core::{
    claim_facts, provider::NO_INTERFACE, BindProvider, Claims, DaemonState, MatchSummary, MeshMatcher, MeshSpec,
    ProviderConfig, ProviderInfo, Rejection, Role, Snapshot,
};

/// The provider's constant facts.
pub const INFO: ProviderInfo = ProviderInfo {
    name: "tailnet",
    priority: 100,
    description:
        "Tailscale / Headscale tailnet address (tailscaled's local API; else tailscale0, utunN with a tailnet address)",
    role: Role::Mesh,
};

/// How Tailscale shows up on a host when tailscaled does not answer.
pub const SPEC: MeshSpec = MeshSpec {
    mesh: "Tailscale",
    names: &["tailscale*"],
    weak_names: &["utun*"],
    exclude_names: &[],
    kinds: &[],
    ranges: &["100.64.0.0/10", "fd7a:115c:a1e0::/48"],
};

/// The tailnet provider.
#[derive(Debug, Clone)]
pub struct Tailnet {
    matcher: MeshMatcher,
}

impl Default for Tailnet {
    fn default() -> Self {
        Self { matcher: MeshMatcher::new(SPEC) }
    }
}

impl BindProvider for Tailnet {
    fn info(&self) -> ProviderInfo {
        INFO
    }

    fn matches(&self, config: &ProviderConfig) -> MatchSummary {
        let mut m = self.matcher.summary(config);
        m.kinds.push("whatever interface holds the addresses tailscaled's local API lists".into());
        m
    }

    fn claim(&self, snapshot: &Snapshot, config: &ProviderConfig) -> Claims {
        let mut claims = Claims::default();
        let facts: Vec<_> = snapshot.facts_of("tailscale").collect();
        if facts.is_empty() {
            claims = self.matcher.claim(snapshot, config);
        } else {
            let covered = claim_facts(snapshot, "tailscale", |_| true, &mut claims);
            if facts.iter().any(|f| f.userspace && f.state == DaemonState::Running) {
                // tailscaled's userspace-networking mode: say how to get in anyway.
                for r in claims.rejected.iter_mut().filter(|r| r.interface == NO_INTERFACE) {
                    r.reason.push_str(
                        ". Reach meshgate through tailscaled instead: `tailscale serve --bg PORT` forwards the \
                         tailnet to 127.0.0.1:PORT (or run tailscaled with a TUN device)",
                    );
                }
            }
            // The daemon said which addresses are the tailnet's; a CGNAT address
            // anywhere else is someone else's (NetBird, carrier NAT).
            let other = self.matcher.claim(snapshot, config);
            for c in other.candidates.into_iter().filter(|c| !covered.contains(&c.interface)) {
                claims.rejected.push(Rejection {
                    reason: format!(
                        "{} on {} looks like a tailnet address, but tailscaled's local API does not list it",
                        c.address, c.interface
                    ),
                    interface: c.interface,
                    address: Some(c.address),
                });
            }
        }
        let (keep, service): (Vec<_>, Vec<_>) =
            claims.candidates.into_iter().partition(|c| !is_tailscale_service_address(c.address));
        claims.candidates = keep;
        claims.rejected.extend(service.into_iter().map(|c| Rejection {
            reason: format!(
                "{} is one of Tailscale's service addresses (MagicDNS 100.100.100.100, ChromeOS 100.115.92.0/23), \
                 never this node's",
                c.address
            ),
            interface: c.interface,
            address: Some(c.address),
        }));
        claims
    }
}

/// Builds the provider.
pub fn build() -> Box<dyn BindProvider> {
    Box::new(Tailnet::default())
}

meshgate_core::register_provider!(INFO, build);

#[cfg(test)]
mod conformance {
    /// The contract every provider keeps (meshgate_core::testing).
    #[test]
    fn passes_the_conformance_kit() {
        meshgate_core::testing::check_provider(&*super::build());
    }

    /// The kit again, on a host where tailscaled answered (a Headscale prefix).
    #[test]
    fn passes_the_kit_with_tailscaleds_word() {
        use meshgate_core::testing::fixtures::{eth0, with_lo};
        use meshgate_core::{DaemonFact, DaemonState, Interface, InterfaceKind};
        let p = super::build();
        let host = with_lo(vec![
            eth0(),
            Interface::new("tailscale0", 9, InterfaceKind::Tun)
                .with_addr("10.99.0.7/32")
                .with_addr("fd7a:115c:a1e0::7/128"),
        ])
        .with_fact(
            DaemonFact::new("tailscale", "tailscaled's local API", DaemonState::Running)
                .on("tailscale0")
                .with_addr("10.99.0.7")
                .with_addr("fd7a:115c:a1e0::7"),
        );
        meshgate_core::testing::Kit::new(&*p).snapshot("headscale", host).check();
    }
}
