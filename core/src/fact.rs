//! What a mesh daemon said about itself: a [`DaemonFact`].
//!
//! Probes ([`crate::probe`]) ask the daemons (tailscaled's local API, Yggdrasil's
//! admin socket, the process table) and put their answers into the
//! [`Snapshot`](crate::Snapshot); providers read them from there, so they stay
//! pure and table-testable. A fact is the strongest evidence a provider can cite
//! ([`Specificity::Daemon`](crate::Specificity::Daemon)): the mesh's own word
//! beats its kind, its name and its range.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

/// The state a daemon reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub enum DaemonState {
    /// Up and carrying traffic.
    Running,
    /// Coming up (tailscaled's `Starting`): wait for it.
    Starting,
    /// Needs a person to log in (tailscaled's `NeedsLogin`, `NeedsMachineAuth`).
    NeedsLogin,
    /// Deliberately down (tailscaled's `Stopped`, `tailscale down`).
    Stopped,
    /// Something else (the daemon's own word is kept in [`DaemonFact::detail`]).
    Unknown,
}

impl fmt::Display for DaemonState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Running => "running",
            Self::Starting => "starting",
            Self::NeedsLogin => "needs login",
            Self::Stopped => "stopped",
            Self::Unknown => "in an unknown state",
        })
    }
}

/// One daemon's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DaemonFact {
    /// The mesh, as a provider matches it: `tailscale`, `yggdrasil`, `tinc`, `openvpn`.
    pub mesh: String,
    /// Where the fact came from, for reasons: "tailscaled's local API",
    /// "tincd's command line (pid 812)".
    pub source: String,
    /// The daemon's state.
    pub state: DaemonState,
    /// The interface it drives, when known (and present in the snapshot).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// This node's addresses on the mesh, as the daemon says.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpAddr>,
    /// This node's DNS name on the mesh (`gw.tail1234.ts.net`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
    /// The daemon's network name, when it runs several (tinc's `-n NET`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The daemon carries the mesh without an OS interface (tailscaled's
    /// userspace networking): nothing on this host can bind its addresses.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub userspace: bool,
    /// The daemon's own words, when they add something (`BackendState=NeedsMachineAuth`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl DaemonFact {
    /// A running daemon's fact with nothing else known; fill in the rest.
    pub fn new(mesh: &str, source: impl Into<String>, state: DaemonState) -> Self {
        Self {
            mesh: mesh.to_owned(),
            source: source.into(),
            state,
            interface: None,
            addresses: Vec::new(),
            dns_name: None,
            network: None,
            userspace: false,
            detail: None,
        }
    }

    /// Sets the interface (fixtures and probes).
    pub fn on(mut self, interface: &str) -> Self {
        self.interface = Some(interface.to_owned());
        self
    }

    /// Adds an address; panics on a malformed literal (fixtures only).
    pub fn with_addr(mut self, addr: &str) -> Self {
        self.addresses.push(addr.parse().unwrap_or_else(|e| panic!("fixture address {addr:?}: {e}")));
        self
    }

    /// One line for a person: "tailscaled's local API: tailscale is running on tailscale0".
    pub fn summary(&self) -> String {
        let mut s = format!("{}: {} is {}", self.source, self.mesh, self.state);
        if let Some(n) = &self.network {
            s.push_str(&format!(" (network {n})"));
        }
        if let Some(i) = &self.interface {
            s.push_str(&format!(" on {i}"));
        } else if self.userspace {
            s.push_str(" in userspace networking mode (no interface)");
        }
        if !self.addresses.is_empty() {
            let a: Vec<String> = self.addresses.iter().map(|a| a.to_string()).collect();
            s.push_str(&format!(" with {}", a.join(", ")));
        }
        if let Some(d) = &self.dns_name {
            s.push_str(&format!(", named {d}"));
        }
        if let Some(d) = &self.detail {
            s.push_str(&format!(" ({d})"));
        }
        s
    }
}
