//! `all`: the wildcards 0.0.0.0 and `::`, only when asked for by name.
//!
//! Every address of the host, now and later, including public ones. `auto` never
//! chooses it and no fallback ever leads to it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use meshgate_core::{
    BindProvider, Candidate, Claims, MatchSummary, ProviderConfig, ProviderInfo, Role, Snapshot, Specificity,
};

/// The provider's constant facts.
pub const INFO: ProviderInfo = ProviderInfo {
    name: "all",
    priority: 1000,
    description: "the wildcards 0.0.0.0 and ::, every address, public ones included (only when named)",
    role: Role::Wildcard,
};

/// The wildcard provider.
#[derive(Debug, Default)]
pub struct All;

impl BindProvider for All {
    fn info(&self) -> ProviderInfo {
        INFO
    }

    fn matches(&self, _: &ProviderConfig) -> MatchSummary {
        MatchSummary { names: vec![], ranges: vec!["0.0.0.0".into(), "::".into()], kinds: vec![] }
    }

    fn claim(&self, snapshot: &Snapshot, _: &ProviderConfig) -> Claims {
        let mut claims = Claims::default();
        claims.candidates.push(Candidate {
            interface: "*".into(),
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            specificity: Specificity::Exact,
            reason: "wildcard: every IPv4 address of this host, public ones included".into(),
        });
        // `::` only where the host has IPv6 at all: binding it elsewhere fails.
        if snapshot.interfaces.iter().any(|i| i.addresses.iter().any(|a| a.addr.is_ipv6())) {
            claims.candidates.push(Candidate {
                interface: "*".into(),
                address: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                specificity: Specificity::Exact,
                reason: "wildcard: every IPv6 address of this host, public ones included".into(),
            });
        }
        claims
    }
}

/// Builds the provider.
pub fn build() -> Box<dyn BindProvider> {
    Box::new(All)
}

meshgate_core::register_provider!(INFO, build);

#[cfg(test)]
mod tests {
    use super::*;
    use meshgate_core::{Interface, InterfaceKind};

    #[test]
    fn v6_wildcard_only_with_ipv6() {
        let v4only = Snapshot::new(vec![Interface::new("lo", 1, InterfaceKind::Loopback).with_addr("127.0.0.1/8")]);
        let c: Vec<_> =
            All.claim(&v4only, &ProviderConfig::default()).candidates.iter().map(|c| c.address.to_string()).collect();
        assert_eq!(c, ["0.0.0.0"]);
        let dual = Snapshot::new(vec![Interface::new("lo", 1, InterfaceKind::Loopback).with_addr("::1/128")]);
        let c: Vec<_> =
            All.claim(&dual, &ProviderConfig::default()).candidates.iter().map(|c| c.address.to_string()).collect();
        assert_eq!(c, ["0.0.0.0", "::"]);
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
