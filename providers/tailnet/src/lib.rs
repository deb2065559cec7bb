//! `tailnet`: Tailscale and Headscale.
//!
//! Linux names the interface `tailscale0`; macOS puts it on a `utunN` (which only
//! counts with a tailnet address on it). Addresses come from 100.64.0.0/10 and
//! fd7a:115c:a1e0::/48, but CGNAT space is shared with NetBird, Firezone and
//! carrier NAT, so a range-only match is the weakest claim and never counts on a
//! physical NIC.

use meshgate_core::{BindProvider, MeshProvider, MeshSpec, ProviderInfo, Role};

/// The provider's constant facts.
pub const INFO: ProviderInfo = ProviderInfo {
    name: "tailnet",
    priority: 100,
    description: "Tailscale / Headscale tailnet address (tailscale0, utunN with a tailnet address)",
    role: Role::Mesh,
};

/// How Tailscale shows up on a host.
pub const SPEC: MeshSpec = MeshSpec {
    mesh: "Tailscale",
    names: &["tailscale*"],
    weak_names: &["utun*"],
    exclude_names: &[],
    kinds: &[],
    ranges: &["100.64.0.0/10", "fd7a:115c:a1e0::/48"],
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
