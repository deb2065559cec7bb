//! `netbird`: NetBird.
//!
//! NetBird's interface is `wt0` (`wt1`... for more; `--interface-name` can change
//! it: add the name in config). It is kernel WireGuard where the module exists and
//! a TUN otherwise, and its addresses are drawn from 100.64.0.0/10, the space
//! Tailscale uses too, so the name decides, not the range. No range is claimed by
//! default; a network's range can be added in config.

use meshgate_core::{BindProvider, MeshProvider, MeshSpec, ProviderInfo, Role};

/// The provider's constant facts.
pub const INFO: ProviderInfo = ProviderInfo {
    name: "netbird",
    priority: 110,
    description: "NetBird peer address (wt0, wt1, ...)",
    role: Role::Mesh,
};

/// How NetBird shows up on a host.
pub const SPEC: MeshSpec =
    MeshSpec { mesh: "NetBird", names: &["wt*"], weak_names: &[], exclude_names: &[], kinds: &[], ranges: &[] };

/// Builds the provider.
pub fn build() -> Box<dyn BindProvider> {
    Box::new(MeshProvider::new(INFO, SPEC))
}

meshgate_core::register_provider!(INFO, build);

#[cfg(test)]
mod conformance {
    /// The contract every provider keeps (meshgate_core::testing).
    #[test]
    fn passes_the_conformance_kit() {
        meshgate_core::testing::check_provider(&*super::build());
    }
}
