//! `zerotier`: ZeroTier One.
//!
//! Linux names the interface `zt` + characters derived from the network id
//! (`ztyxaydhzj`); macOS uses `feth` pairs. It is a TAP-like device (layer 2), not
//! WireGuard. Managed ranges differ per network, so none is claimed by default.

use meshgate_core::{BindProvider, MeshProvider, MeshSpec, ProviderInfo, Role};

/// The provider's constant facts.
pub const INFO: ProviderInfo = ProviderInfo {
    name: "zerotier",
    priority: 130,
    description: "ZeroTier network address (zt*, feth* on macOS)",
    role: Role::Mesh,
};

/// How ZeroTier shows up on a host.
pub const SPEC: MeshSpec = MeshSpec {
    mesh: "ZeroTier",
    names: &["zt*", "feth*"],
    weak_names: &[],
    exclude_names: &[],
    kinds: &[],
    ranges: &[],
};

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
