//! Who is calling, as the mesh says: a [`PeerIdentity`] is found once per
//! connection (by a [`PeerLookup`], e.g. the WireGuard peer whose allowed-ips
//! hold the source address) and travels with every request of it.
//!
//! The identity headers (`Meshgate-Peer-Mesh`, `-Interface`, `-Key`, `-Name`)
//! are meshgate's word: every `Meshgate-Peer-*` header a client sent is
//! removed from every request on every listener, loopback included, before
//! meshgate sets its own. So a service behind meshgate may trust them.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use meshgate_core::wgpeer::{AllowList, PeerNames};
use serde::Serialize;

/// `Meshgate-Peer-Mesh`: which mesh vouches for the caller (`wireguard`).
pub const PEER_MESH: HeaderName = HeaderName::from_static("meshgate-peer-mesh");
/// `Meshgate-Peer-Interface`: the interface the connection came in on.
pub const PEER_INTERFACE: HeaderName = HeaderName::from_static("meshgate-peer-interface");
/// `Meshgate-Peer-Key`: the peer's public key (base64, as `wg` prints it).
pub const PEER_KEY: HeaderName = HeaderName::from_static("meshgate-peer-key");
/// `Meshgate-Peer-Name`: the peer's name from `[peers]`, when it has one.
pub const PEER_NAME: HeaderName = HeaderName::from_static("meshgate-peer-name");
/// `Meshgate-Peer-Login`: a tailnet node's user login (`tagged-devices` for tagged nodes).
pub const PEER_LOGIN: HeaderName = HeaderName::from_static("meshgate-peer-login");
/// `Meshgate-Peer-Node`: a tailnet node's name.
pub const PEER_NODE: HeaderName = HeaderName::from_static("meshgate-peer-node");
/// `Meshgate-Peer-Tags`: a tailnet node's ACL tags, comma-separated.
pub const PEER_TAGS: HeaderName = HeaderName::from_static("meshgate-peer-tags");

const PREFIX: &[u8] = b"meshgate-peer-";

/// The caller of one connection, as the mesh identifies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerIdentity {
    /// The mesh that vouches for it (`wireguard`, `tailscale`).
    pub mesh: String,
    /// The interface the connection came in on.
    pub interface: String,
    /// A WireGuard peer's public key (base64).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Its name from the config's `[peers]`, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A tailnet node's user login.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    /// A tailnet node's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// A tailnet node's ACL tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// True when `--allow-peer` lets it in without a token.
    pub allowed: bool,
}

/// What a request carries about its connection's caller (a request extension).
#[derive(Debug, Clone, Default)]
pub struct Caller(pub Option<Arc<PeerIdentity>>);

/// True when `caller` is let in without a token now: `lookup` (the one that
/// identified it) decides, else what it said when the connection opened.
pub fn allowed_now(lookup: Option<&Arc<dyn PeerLookup>>, caller: Option<&PeerIdentity>) -> bool {
    caller.is_some_and(|c| lookup.and_then(|l| l.allows(c)).unwrap_or(c.allowed))
}

/// Finds the identity of a connection from its listener's interface and its
/// source address. Called once per connection, before its first request.
pub trait PeerLookup: Send + Sync + std::fmt::Debug {
    /// The peer, or `None` when the mesh does not know the address (or the
    /// interface is not one whose peers can be read).
    fn identify<'a>(
        &'a self,
        interface: &'a str,
        peer: SocketAddr,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<PeerIdentity>> + Send + 'a>>;

    /// Takes note of a fresh snapshot of the host's interfaces (the gateway
    /// calls it on every snapshot it resolves). Default: nothing.
    fn observe(&self, snapshot: &meshgate_core::Snapshot) {
        let _ = snapshot;
    }

    /// Whether `identity` is let in without a token now, or `None` when this
    /// lookup does not answer for its mesh (then what was found when the
    /// connection opened stands: [`PeerIdentity::allowed`]). Asked on every
    /// request, so a peer taken off the allow-list by a reload is refused on
    /// the connections it holds open too. Default: `None`.
    fn allows(&self, identity: &PeerIdentity) -> Option<bool> {
        let _ = identity;
        None
    }

    /// Whether `peer` on `interface` is still `identity` (a WireGuard key
    /// removed, or its allowed-ips moved to another key, since the
    /// connection opened), or `None` when this lookup does not re-check its
    /// mesh's identities. Asked before every request of a connection with an
    /// identity, so a keep-alive connection is never served as a peer its
    /// address no longer belongs to. Must be cheap (a cached table).
    /// Default: `None`.
    #[allow(clippy::type_complexity)]
    fn same_peer<'a>(
        &'a self,
        interface: &'a str,
        peer: SocketAddr,
        identity: &'a PeerIdentity,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>>> {
        let _ = (interface, peer, identity);
        None
    }
}

/// The `[peers]` names and the allow-list, as the WireGuard and tailnet
/// lookups read them. One [`SharedPeerRules`] is shared by both and replaced
/// whole on a reload: new connections get the new names, and every request
/// is checked against the new allow-list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerRules {
    /// Names for WireGuard keys (`[peers]`).
    pub names: PeerNames,
    /// Who is let in without a token (`--allow-peer`, `allow_peers`).
    pub allow: AllowList,
}

/// [`PeerRules`] that a reload can replace while connections read them.
pub type SharedPeerRules = Arc<ArcSwap<PeerRules>>;

impl PeerRules {
    /// These rules, shareable and replaceable.
    pub fn shared(names: PeerNames, allow: AllowList) -> SharedPeerRules {
        Arc::new(ArcSwap::from_pointee(Self { names, allow }))
    }
}

/// The identity headers of one connection, made once and set on each request
/// (after removing every `Meshgate-Peer-*` header the client sent).
#[derive(Debug, Clone, Default)]
pub struct PeerHeaders(Vec<(HeaderName, HeaderValue)>);

impl PeerHeaders {
    /// The headers for `identity` (none for an unknown caller).
    pub fn new(identity: Option<&PeerIdentity>) -> Self {
        let Some(id) = identity else { return Self::default() };
        let mut out = Vec::with_capacity(4);
        let mut push = |name: HeaderName, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                out.push((name, v));
            }
        };
        push(PEER_MESH, &id.mesh);
        push(PEER_INTERFACE, &id.interface);
        for (header, value) in
            [(PEER_KEY, &id.key), (PEER_NAME, &id.name), (PEER_LOGIN, &id.login), (PEER_NODE, &id.node)]
        {
            if let Some(v) = value {
                push(header, v);
            }
        }
        if !id.tags.is_empty() {
            push(PEER_TAGS, &id.tags.join(","));
        }
        Self(out)
    }

    /// Removes every `Meshgate-Peer-*` header the client sent and sets this
    /// connection's own.
    pub fn apply(&self, headers: &mut HeaderMap) {
        strip_peer_headers(headers);
        for (n, v) in &self.0 {
            headers.insert(n.clone(), v.clone());
        }
    }
}

/// Removes every header whose name starts with `Meshgate-Peer-` (any case:
/// header names arrive lower-cased).
pub fn strip_peer_headers(headers: &mut HeaderMap) {
    // One pass over the names; most requests carry none, and then nothing is allocated.
    if !headers.keys().any(|k| k.as_str().as_bytes().starts_with(PREFIX)) {
        return;
    }
    let forged: Vec<HeaderName> =
        headers.keys().filter(|k| k.as_str().as_bytes().starts_with(PREFIX)).cloned().collect();
    for n in forged {
        headers.remove(n);
    }
}

/// An allowed WireGuard peer named `name` on `interface` (the identity most
/// tests need).
#[cfg(test)]
impl PeerIdentity {
    pub(crate) fn allowed_wireguard(interface: &str, key: &str, name: &str) -> Self {
        PeerIdentity {
            mesh: "wireguard".into(),
            interface: interface.into(),
            key: Some(key.into()),
            name: Some(name.into()),
            login: None,
            node: None,
            tags: Vec::new(),
            allowed: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: Option<&str>) -> PeerIdentity {
        PeerIdentity {
            mesh: "wireguard".into(),
            interface: "wg0".into(),
            key: Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()),
            name: name.map(Into::into),
            login: None,
            node: None,
            tags: Vec::new(),
            allowed: true,
        }
    }

    #[test]
    fn forged_peer_headers_are_replaced_or_removed() {
        let mut h = HeaderMap::new();
        h.insert("meshgate-peer-name", "admin".parse().unwrap());
        h.append("meshgate-peer-name", "root".parse().unwrap());
        h.insert("meshgate-peer-anything", "x".parse().unwrap());
        h.insert("accept", "*/*".parse().unwrap());
        PeerHeaders::new(Some(&id(None))).apply(&mut h);
        assert!(!h.contains_key(PEER_NAME), "{h:?}");
        assert!(!h.contains_key("meshgate-peer-anything"));
        assert_eq!(h[PEER_MESH], "wireguard");
        assert_eq!(h[PEER_KEY], "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
        assert_eq!(h.get_all(PEER_INTERFACE).iter().count(), 1);
        assert!(h.contains_key("accept"));

        let mut h = HeaderMap::new();
        h.insert("meshgate-peer-name", "admin".parse().unwrap());
        PeerHeaders::new(Some(&id(Some("laptop")))).apply(&mut h);
        assert_eq!(h.get_all(PEER_NAME).iter().collect::<Vec<_>>(), ["laptop"]);

        // No identity (loopback, unknown peer): the forged ones go, nothing is set.
        let mut h = HeaderMap::new();
        h.insert("meshgate-peer-key", "forged".parse().unwrap());
        PeerHeaders::new(None).apply(&mut h);
        assert!(h.is_empty(), "{h:?}");
    }
}

/// Several lookups, one per mesh: the first that knows the interface answers.
#[derive(Debug, Default)]
pub struct MeshPeers(pub Vec<std::sync::Arc<dyn PeerLookup>>);

impl PeerLookup for MeshPeers {
    fn identify<'a>(
        &'a self,
        interface: &'a str,
        peer: SocketAddr,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<PeerIdentity>> + Send + 'a>> {
        Box::pin(async move {
            for lookup in &self.0 {
                if let Some(id) = lookup.identify(interface, peer).await {
                    return Some(id);
                }
            }
            None
        })
    }

    fn observe(&self, snapshot: &meshgate_core::Snapshot) {
        for lookup in &self.0 {
            lookup.observe(snapshot);
        }
    }

    /// The first lookup that answers for the identity's mesh decides.
    fn allows(&self, identity: &PeerIdentity) -> Option<bool> {
        self.0.iter().find_map(|lookup| lookup.allows(identity))
    }

    /// The first lookup that re-checks the identity's mesh decides.
    fn same_peer<'a>(
        &'a self,
        interface: &'a str,
        peer: SocketAddr,
        identity: &'a PeerIdentity,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>>> {
        self.0.iter().find_map(|lookup| lookup.same_peer(interface, peer, identity))
    }
}
