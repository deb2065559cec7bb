//! `firezone`: Firezone 1.x clients.
//!
//! The Linux client's interface is `tun-firezone`; on macOS a `utunN` that carries
//! a Firezone address. Addresses come from 100.64.0.0/11 and fd00:2021:1111::/107,
//! inside the CGNAT space Tailscale also uses: the name decides where both match.

use meshgate_core::{BindProvider, MeshProvider, MeshSpec, ProviderInfo, Role};

/// The provider's constant facts.
pub const INFO: ProviderInfo = ProviderInfo {
    name: "firezone",
    priority: 120,
    description: "Firezone client address (tun-firezone, utunN with a Firezone address)",
    role: Role::Mesh,
};

/// How Firezone shows up on a host.
pub const SPEC: MeshSpec = MeshSpec {
    mesh: "Firezone",
    names: &["tun-firezone"],
    weak_names: &["utun*"],
    exclude_names: &[],
    kinds: &[],
    ranges: &["100.64.0.0/11", "fd00:2021:1111::/107"],
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
