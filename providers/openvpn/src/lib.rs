//! `openvpn`: the device of each running OpenVPN.
//!
//! Two kinds of evidence, never a name: the link kind `ovpn-dco` (OpenVPN's
//! data channel offload, the OS's word), and the `openvpn` probe's facts (the
//! TUN/TAP an `openvpn` process in this namespace holds open, its `--dev`, or
//! the `dev` line of its config file). `tun0` alone is not proof: many tools
//! make `tunN`.

use meshgate_core::{
    claim_facts, model::is_link_local, BindProvider, Candidate, Claims, InterfaceKind, MatchSummary, MeshMatcher,
    MeshSpec, ProviderConfig, ProviderInfo, Rejection, Role, Snapshot, Specificity,
};

/// The provider's constant facts.
pub const INFO: ProviderInfo = ProviderInfo {
    name: "openvpn",
    priority: 180,
    description: "each running OpenVPN's device (link kind ovpn-dco, or found through openvpn's process)",
    role: Role::Mesh,
};

/// The link kind of OpenVPN's data channel offload device.
pub const DCO_KIND: &str = "ovpn-dco";

/// Nothing to match by itself: only the user's `[providers.openvpn]` names and cidrs.
const CONFIG_ONLY: MeshSpec =
    MeshSpec { mesh: "OpenVPN", names: &[], weak_names: &[], exclude_names: &[], kinds: &[], ranges: &[] };

/// The OpenVPN provider.
#[derive(Debug, Clone)]
pub struct OpenVpn {
    config_only: MeshMatcher,
}

impl Default for OpenVpn {
    fn default() -> Self {
        Self { config_only: MeshMatcher::new(CONFIG_ONLY) }
    }
}

impl BindProvider for OpenVpn {
    fn info(&self) -> ProviderInfo {
        INFO
    }

    fn matches(&self, config: &ProviderConfig) -> MatchSummary {
        let mut m = self.config_only.summary(config);
        m.kinds.extend([DCO_KIND.into(), "the TUN/TAP a running openvpn drives".into()]);
        m
    }

    fn claim(&self, snapshot: &Snapshot, config: &ProviderConfig) -> Claims {
        let mut claims = Claims::default();
        let covered = claim_facts(snapshot, "openvpn", |_| true, &mut claims);
        let dco = InterfaceKind::Virtual(DCO_KIND.into());
        for iface in snapshot.interfaces.iter().filter(|i| i.kind != dco && !covered.contains(&i.name)) {
            self.config_only.claim_interface(iface, config, &mut claims);
        }
        for iface in snapshot.interfaces.iter().filter(|i| i.kind == dco && !covered.contains(&i.name)) {
            if let Some(why) = iface.unusable() {
                claims.rejected.push(Rejection { interface: iface.name.clone(), address: None, reason: why });
                continue;
            }
            for a in iface.addresses.iter().map(|a| a.addr) {
                if a.is_unspecified() || is_link_local(a) {
                    claims.rejected.push(Rejection {
                        interface: iface.name.clone(),
                        address: Some(a),
                        reason: format!("{a} is link-local or a wildcard: never chosen by a provider"),
                    });
                    continue;
                }
                claims.candidates.push(Candidate {
                    interface: iface.name.clone(),
                    address: a,
                    specificity: Specificity::Kind,
                    reason: format!("{} is {DCO_KIND} (OpenVPN data channel offload)", iface.name),
                });
            }
        }
        claims
    }
}

/// Builds the provider.
pub fn build() -> Box<dyn BindProvider> {
    Box::new(OpenVpn::default())
}

meshgate_core::register_provider!(INFO, build);

#[cfg(test)]
mod conformance {
    use meshgate_core::testing::fixtures::{eth0, with_lo};
    use meshgate_core::{DaemonFact, DaemonState, Interface, InterfaceKind};

    /// The contract every provider keeps (meshgate_core::testing), with a DCO
    /// device and an openvpn process's device.
    #[test]
    fn passes_the_kit_with_dco_and_a_process() {
        let p = super::build();
        let host = with_lo(vec![
            eth0(),
            Interface::new("ovpn-dco0", 9, InterfaceKind::Virtual(super::DCO_KIND.into())).with_addr("10.8.0.2/24"),
            Interface::new("tun3", 10, InterfaceKind::Tun).with_addr("10.9.0.2/24"),
        ])
        .with_fact(DaemonFact::new("openvpn", "openvpn's --dev (pid 9)", DaemonState::Running).on("tun3"));
        meshgate_core::testing::Kit::new(&*p).snapshot("openvpn", host).check();
    }
}
