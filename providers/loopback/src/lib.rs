//! `loopback`: 127.0.0.1, and ::1 where the host has it.
//!
//! The default bind, the fallback when nothing matches, and the companion door
//! beside every non-loopback bind. 127.0.0.1 is always claimed (every host has
//! it); ::1 only when an up loopback interface carries it (IPv6 can be disabled).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use meshgate_core::{
    BindProvider, Candidate, Claims, MatchSummary, ProviderConfig, ProviderInfo, Role, Snapshot, Specificity,
};

/// The provider's constant facts.
pub const INFO: ProviderInfo = ProviderInfo {
    name: "loopback",
    priority: 10,
    description: "127.0.0.1 and ::1: this host only (the default, and the fallback)",
    role: Role::Loopback,
};

/// The loopback provider.
#[derive(Debug, Default)]
pub struct Loopback;

impl BindProvider for Loopback {
    fn info(&self) -> ProviderInfo {
        INFO
    }

    fn matches(&self, _: &ProviderConfig) -> MatchSummary {
        MatchSummary { names: vec![], ranges: vec!["127.0.0.1".into(), "::1".into()], kinds: vec!["loopback".into()] }
    }

    fn claim(&self, snapshot: &Snapshot, _: &ProviderConfig) -> Claims {
        let lo = snapshot.interfaces.iter().filter(|i| i.flags.loopback && i.flags.up);
        let holder = |a: IpAddr| lo.clone().find(|i| i.addresses.iter().any(|x| x.addr == a)).map(|i| i.name.clone());
        let mut claims = Claims::default();
        let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let (interface, reason) = match holder(v4) {
            Some(n) => (n.clone(), format!("IPv4 loopback on {n}")),
            None => ("lo".to_owned(), "IPv4 loopback (every host has it)".to_owned()),
        };
        claims.candidates.push(Candidate { interface, address: v4, specificity: Specificity::Exact, reason });
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        if let Some(n) = holder(v6) {
            claims.candidates.push(Candidate {
                interface: n.clone(),
                address: v6,
                specificity: Specificity::Exact,
                reason: format!("IPv6 loopback on {n}"),
            });
        }
        claims
    }
}

/// Builds the provider.
pub fn build() -> Box<dyn BindProvider> {
    Box::new(Loopback)
}

meshgate_core::register_provider!(INFO, build);

#[cfg(test)]
mod tests {
    use super::*;
    use meshgate_core::{Interface, InterfaceKind};

    fn addrs(s: &Snapshot) -> Vec<String> {
        Loopback.claim(s, &ProviderConfig::default()).candidates.iter().map(|c| c.address.to_string()).collect()
    }

    #[test]
    fn claims_v4_always_and_v6_only_when_present() {
        let lo = Interface::new("lo", 1, InterfaceKind::Loopback).with_addr("127.0.0.1/8");
        assert_eq!(addrs(&Snapshot::new(vec![lo.clone()])), ["127.0.0.1"]);
        assert_eq!(addrs(&Snapshot::new(vec![lo.with_addr("::1/128")])), ["127.0.0.1", "::1"]);
        assert_eq!(addrs(&Snapshot::default()), ["127.0.0.1"]);
    }

    #[test]
    fn never_claims_other_interfaces() {
        let wg = Interface::new("wg0", 3, InterfaceKind::WireGuard).with_addr("10.8.0.1/24").with_addr("::1/128");
        assert_eq!(addrs(&Snapshot::new(vec![wg])), ["127.0.0.1"]);
    }
}

#[cfg(test)]
mod conformance {
    /// The contract every provider keeps (meshgate_core::testing).
    #[test]
    fn passes_the_conformance_kit() {
        meshgate_core::testing::check_provider(&*super::build());
    }
}
