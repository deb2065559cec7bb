//! `wireguard`: every WireGuard interface, whatever the mesh on top.
//!
//! The OS kind is the strong signal: kernel WireGuard (link kind `wireguard`) and
//! userspace WireGuard (a TUN with a control socket in /var/run/wireguard) are
//! found under any name, including wg-quick's `office` or `mesh`. The names `wg*`
//! (wg-quick's convention) and `wt*` (NetBird) count too. Tailscale runs WireGuard
//! inside its daemon on a plain TUN; `tailscale*` belongs to the `tailnet` mode.

use meshgate_core::{BindProvider, InterfaceKind, MeshProvider, MeshSpec, ProviderInfo, Role};

/// The provider's constant facts.
pub const INFO: ProviderInfo = ProviderInfo {
    name: "wireguard",
    priority: 200,
    description: "any WireGuard interface: kernel or userspace by OS kind, or named wg*/wt*",
    role: Role::Mesh,
};

/// How WireGuard shows up on a host.
pub const SPEC: MeshSpec = MeshSpec {
    mesh: "WireGuard",
    names: &["wg*", "wt*"],
    weak_names: &[],
    exclude_names: &[("tailscale*", "tailnet")],
    kinds: &[InterfaceKind::WireGuard, InterfaceKind::WireGuardUserspace],
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
