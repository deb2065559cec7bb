//! `husarnet`: the Husarnet peer-to-peer VPN.
//!
//! The Husarnet daemon drives a TUN called `hnet0` and gives the host an IPv6
//! address in fc94::/16 (inside ULA space, so the name is the real signal and
//! the range only confirms; `lan` refuses the tunnel either way).

use meshgate_core::{BindProvider, MeshProvider, MeshSpec, ProviderInfo, Role};

/// The provider's constant facts.
pub const INFO: ProviderInfo = ProviderInfo {
    name: "husarnet",
    priority: 160,
    description: "Husarnet address (hnet*, fc94::/16)",
    role: Role::Mesh,
};

/// How Husarnet shows up on a host.
pub const SPEC: MeshSpec = MeshSpec {
    mesh: "Husarnet",
    names: &["hnet*"],
    weak_names: &[],
    exclude_names: &[],
    kinds: &[],
    ranges: &["fc94::/16"],
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
        use meshgate_core::{Interface, InterfaceKind};
        let p = super::build();
        let hnet0 =
            Interface::new("hnet0", 9, InterfaceKind::Tun).with_addr("fc94:b01d:1803:8dd8:b293:5c7d:7639:932a/16");
        meshgate_core::testing::Kit::new(&*p).sample(hnet0).check();
    }
}
