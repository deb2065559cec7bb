//! [`TailnetPeers`]: the [`PeerLookup`] for tailnet listeners. tailscaled
//! knows which node and user every tailnet address belongs to; its local API's
//! `whois` says so (login, node name, ACL tags), once per connection. A node
//! whose login or one of whose tags is on the allow-list (`--allow-peer
//! user@example.com`, `--allow-peer tag:server`) is let in without a token.
//!
//! Which interfaces are tailscale's comes from the daemon's own facts in each
//! snapshot ([`PeerLookup::observe`]); a connection on any other interface is
//! not asked about.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::RwLock;
use std::time::Duration;

use meshgate_core::probe::tailscale;
use meshgate_core::wgpeer::AllowList;
use meshgate_core::Snapshot;

use super::identity::{PeerIdentity, PeerLookup, PeerRules, SharedPeerRules};

/// The mesh these identities are of.
const MESH: &str = "tailscale";

/// How long a `whois` may take before the caller counts as unknown.
pub const WHOIS_LIMIT: Duration = Duration::from_millis(200);

/// Tailnet identity by tailscaled's `whois`.
#[derive(Debug)]
pub struct TailnetPeers {
    rules: SharedPeerRules,
    /// tailscaled's socket (`None`: its usual place, or `MESHGATE_TAILSCALED_SOCKET`).
    socket: Option<std::path::PathBuf>,
    interfaces: RwLock<HashSet<String>>,
}

impl TailnetPeers {
    /// Identity from the tailscaled on this host, letting in what `allow` names.
    pub fn new(allow: AllowList) -> Self {
        Self::with_rules(PeerRules::shared(Default::default(), allow))
    }

    /// Identity from the tailscaled on this host, letting in what the shared
    /// rules' allow-list names (a reload can replace it: see [`PeerRules`]).
    pub fn with_rules(rules: SharedPeerRules) -> Self {
        Self { rules, socket: None, interfaces: RwLock::default() }
    }

    /// The same, asking the tailscaled at `socket` (tests: a stand-in).
    pub fn at(allow: AllowList, socket: impl Into<std::path::PathBuf>) -> Self {
        Self { socket: Some(socket.into()), ..Self::new(allow) }
    }
}

impl PeerLookup for TailnetPeers {
    fn identify<'a>(
        &'a self,
        interface: &'a str,
        peer: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = Option<PeerIdentity>> + Send + 'a>> {
        Box::pin(async move {
            if !self.interfaces.read().unwrap_or_else(|e| e.into_inner()).contains(interface) {
                return None;
            }
            let answer = match &self.socket {
                Some(s) => tailscale::whois_at(s, peer, WHOIS_LIMIT).await,
                None => tailscale::whois(peer, WHOIS_LIMIT).await,
            };
            match answer {
                Ok(p) => Some(PeerIdentity {
                    mesh: MESH.into(),
                    interface: interface.to_owned(),
                    key: None,
                    name: None,
                    allowed: self.rules.load().allow.allows_tailnet(&p.login_name, &p.tags),
                    login: Some(p.login_name),
                    node: Some(p.node_name),
                    tags: p.tags,
                }),
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "tailscaled could not say who this is");
                    None
                }
            }
        })
    }

    fn observe(&self, snapshot: &Snapshot) {
        let now: HashSet<String> =
            snapshot.facts.iter().filter(|f| f.mesh == MESH).filter_map(|f| f.interface.clone()).collect();
        *self.interfaces.write().unwrap_or_else(|e| e.into_inner()) = now;
    }

    fn allows(&self, identity: &PeerIdentity) -> Option<bool> {
        if identity.mesh != MESH {
            return None;
        }
        let login = identity.login.as_deref().unwrap_or_default();
        Some(self.rules.load().allow.allows_tailnet(login, &identity.tags))
    }
}
