//! `tinc`: the interface of each running tinc network.
//!
//! tinc has no naming convention to go by (the device is named after the
//! network, or whatever `Interface =` says; TUN or TAP) and no address range,
//! so this mode takes only tincd's word: the `tincd` probe finds each tincd in
//! this network namespace and the device it drives (the one it holds open, else
//! its tinc.conf, else its network name), and every usable address on that
//! device is claimed. No running tincd, no claim (but `[providers.tinc]`
//! `names` and `cidrs` count as for any mode).

use meshgate_core::{
    claim_facts, BindProvider, Claims, MatchSummary, MeshMatcher, MeshSpec, ProviderConfig, ProviderInfo, Role,
    Snapshot,
};

/// The provider's constant facts.
pub const INFO: ProviderInfo = ProviderInfo {
    name: "tinc",
    priority: 170,
    description: "each running tinc network's interface (found through tincd's process)",
    role: Role::Mesh,
};

/// Nothing to match by itself: only the user's `[providers.tinc]` names and cidrs.
const CONFIG_ONLY: MeshSpec =
    MeshSpec { mesh: "tinc", names: &[], weak_names: &[], exclude_names: &[], kinds: &[], ranges: &[] };

/// The tinc provider.
#[derive(Debug, Clone)]
pub struct Tinc {
    config_only: MeshMatcher,
}

impl Default for Tinc {
    fn default() -> Self {
        Self { config_only: MeshMatcher::new(CONFIG_ONLY) }
    }
}

impl BindProvider for Tinc {
    fn info(&self) -> ProviderInfo {
        INFO
    }

    fn matches(&self, config: &ProviderConfig) -> MatchSummary {
        let mut m = self.config_only.summary(config);
        m.kinds.push("the TUN/TAP a running tincd drives".into());
        m
    }

    fn claim(&self, snapshot: &Snapshot, config: &ProviderConfig) -> Claims {
        let mut claims = Claims::default();
        let covered = claim_facts(snapshot, "tinc", |_| true, &mut claims);
        claim_configured(&self.config_only, snapshot, config, &covered, &mut claims);
        claims
    }
}

/// What the user's config names, on the interfaces no daemon fact covered.
fn claim_configured(
    m: &MeshMatcher,
    snapshot: &Snapshot,
    config: &ProviderConfig,
    covered: &[String],
    claims: &mut Claims,
) {
    for iface in snapshot.interfaces.iter().filter(|i| !covered.contains(&i.name)) {
        m.claim_interface(iface, config, claims);
    }
}

/// Builds the provider.
pub fn build() -> Box<dyn BindProvider> {
    Box::new(Tinc::default())
}

meshgate_core::register_provider!(INFO, build);

#[cfg(test)]
mod conformance {
    use meshgate_core::testing::fixtures::{eth0, with_lo};
    use meshgate_core::{DaemonFact, DaemonState, Interface, InterfaceKind};

    /// The contract every provider keeps (meshgate_core::testing), on a host
    /// with a running tincd (without one, this mode claims nothing at all).
    #[test]
    fn passes_the_kit_with_tincds_word() {
        let p = super::build();
        let host = with_lo(vec![
            eth0(),
            Interface::new("office", 9, InterfaceKind::Tap).with_addr("10.20.0.1/24").with_addr("fe80::9/64"),
        ])
        .with_fact(DaemonFact::new("tinc", "the device tincd (pid 7) holds open", DaemonState::Running).on("office"));
        meshgate_core::testing::Kit::new(&*p).snapshot("tincd", host).check();
    }
}
