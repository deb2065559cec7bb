//! `nebula`: Slack's Nebula.
//!
//! The interface is `tun.dev` in Nebula's config, `nebula1` by default: other names
//! go in config. The overlay range is the CA's choice, so none is claimed by default.

use meshgate_core::{BindProvider, MeshProvider, MeshSpec, ProviderInfo, Role};

/// The provider's constant facts.
pub const INFO: ProviderInfo =
    ProviderInfo { name: "nebula", priority: 140, description: "Nebula overlay address (nebula*)", role: Role::Mesh };

/// How Nebula shows up on a host.
pub const SPEC: MeshSpec =
    MeshSpec { mesh: "Nebula", names: &["nebula*"], weak_names: &[], exclude_names: &[], kinds: &[], ranges: &[] };

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
