//! `yggdrasil`: the Yggdrasil network's address.
//!
//! Yggdrasil is a *public* network: anyone on it can connect to this host, so
//! the mode is only used when named, never by `auto` (like `lan`). Its
//! addresses are in 200::/7 (node addresses in 200::/8, routed /64 subnets in
//! 300::/8) on a TUN whose name is the OS's choice (`tunN`, `ygg0`). The admin
//! socket's word comes first (the `yggdrasil` probe's fact: this node's address
//! and the interface that holds it); without it, an address in 200::/7 on a
//! tunnel is a range-only claim, refused on physical NICs, bridges and veths
//! (a LAN that a Yggdrasil router hands 300::/64 addresses to is not this
//! node's Yggdrasil).

use meshgate_core::{
    claim_facts, BindProvider, Claims, MatchSummary, MeshMatcher, MeshSpec, ProviderConfig, ProviderInfo, Role,
    Snapshot,
};

/// The provider's constant facts.
pub const INFO: ProviderInfo = ProviderInfo {
    name: "yggdrasil",
    priority: 800,
    description: "Yggdrasil address (admin socket, or 200::/7 on a TUN); public network: only when named, never auto",
    role: Role::Public,
};

/// How Yggdrasil shows up on a host when its admin socket does not answer.
pub const SPEC: MeshSpec =
    MeshSpec { mesh: "Yggdrasil", names: &[], weak_names: &[], exclude_names: &[], kinds: &[], ranges: &["200::/7"] };

/// The Yggdrasil provider.
#[derive(Debug, Clone)]
pub struct Yggdrasil {
    matcher: MeshMatcher,
}

impl Default for Yggdrasil {
    fn default() -> Self {
        Self { matcher: MeshMatcher::new(SPEC) }
    }
}

impl BindProvider for Yggdrasil {
    fn info(&self) -> ProviderInfo {
        INFO
    }

    fn matches(&self, config: &ProviderConfig) -> MatchSummary {
        let mut m = self.matcher.summary(config);
        m.kinds.push("the interface holding the address the admin socket gives".into());
        m
    }

    fn claim(&self, snapshot: &Snapshot, config: &ProviderConfig) -> Claims {
        let mut claims = Claims::default();
        let covered = claim_facts(snapshot, "yggdrasil", |_| true, &mut claims);
        let guessed = self.matcher.claim(snapshot, config);
        claims.candidates.extend(guessed.candidates.into_iter().filter(|c| !covered.contains(&c.interface)));
        claims.rejected.extend(guessed.rejected.into_iter().filter(|r| !covered.contains(&r.interface)));
        claims
    }
}

/// Builds the provider.
pub fn build() -> Box<dyn BindProvider> {
    Box::new(Yggdrasil::default())
}

meshgate_core::register_provider!(INFO, build);

#[cfg(test)]
mod conformance {
    use meshgate_core::testing::fixtures::{eth0, with_lo};
    use meshgate_core::{DaemonFact, DaemonState, Interface, InterfaceKind};

    /// The contract every provider keeps (meshgate_core::testing).
    #[test]
    fn passes_the_conformance_kit() {
        let p = super::build();
        let tun0 = Interface::new("tun0", 9, InterfaceKind::Tun).with_addr("201:abcd::1/7");
        meshgate_core::testing::Kit::new(&*p).sample(tun0).check();
    }

    /// The kit again, with the admin socket's answer.
    #[test]
    fn passes_the_kit_with_the_admin_sockets_word() {
        let p = super::build();
        let host = with_lo(vec![eth0(), Interface::new("tun0", 9, InterfaceKind::Tun).with_addr("201:abcd::1/7")])
            .with_fact(
                DaemonFact::new("yggdrasil", "Yggdrasil's admin socket", DaemonState::Running)
                    .on("tun0")
                    .with_addr("201:abcd::1"),
            );
        meshgate_core::testing::Kit::new(&*p).snapshot("admin socket", host).check();
    }
}
