//! Who is calling, as the mesh says: a [`PeerIdentity`] is found once per
//! connection (by a [`PeerLookup`], e.g. the WireGuard peer whose allowed-ips
//! hold the source address) and travels with every request of it.
//!
//! The identity headers (`Meshgate-Peer-Mesh`, `-Interface`, `-Key`, `-Name`)
//! are meshgate's word: every `Meshgate-Peer-*` header a client sent is
//! removed from every request on every listener, loopback included, before
//! meshgate sets its own. So a service behind meshgate may trust them.

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

/// `Meshgate-Peer-Mesh`: which mesh vouches for the caller (`wireguard`).
pub const PEER_MESH: HeaderName = HeaderName::from_static("meshgate-peer-mesh");
/// `Meshgate-Peer-Interface`: the interface the connection came in on.
pub const PEER_INTERFACE: HeaderName = HeaderName::from_static("meshgate-peer-interface");
/// `Meshgate-Peer-Key`: the peer's public key (base64, as `wg` prints it).
pub const PEER_KEY: HeaderName = HeaderName::from_static("meshgate-peer-key");
/// `Meshgate-Peer-Name`: the peer's name from `[peers]`, when it has one.
pub const PEER_NAME: HeaderName = HeaderName::from_static("meshgate-peer-name");

const PREFIX: &[u8] = b"meshgate-peer-";

/// The caller of one connection, as the mesh identifies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerIdentity {
    /// The mesh that vouches for it (`wireguard`).
    pub mesh: String,
    /// The interface the connection came in on.
    pub interface: String,
    /// The peer's public key (base64).
    pub key: String,
    /// Its name from the config's `[peers]`, if it has one.
    pub name: Option<String>,
    /// True when `--allow-peer` lets it in without a token.
    pub allowed: bool,
}

/// What a request carries about its connection's caller (a request extension).
#[derive(Debug, Clone, Default)]
pub struct Caller(pub Option<Arc<PeerIdentity>>);

/// Finds the identity of a connection from its listener's interface and its
/// source address. Called once per connection, before its first request.
pub trait PeerLookup: Send + Sync + std::fmt::Debug {
    /// The peer, or `None` when the mesh does not know the address (or the
    /// interface is not one whose peers can be read).
    fn identify<'a>(
        &'a self,
        interface: &'a str,
        ip: IpAddr,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<PeerIdentity>> + Send + 'a>>;

    /// Takes note of a fresh snapshot of the host's interfaces (the gateway
    /// calls it on every snapshot it resolves). Default: nothing.
    fn observe(&self, snapshot: &meshgate_core::Snapshot) {
        let _ = snapshot;
    }
}

/// The identity headers of one connection, made once and set on each request.
#[derive(Debug, Clone, Default)]
pub(crate) struct PeerHeaders(Vec<(HeaderName, HeaderValue)>);

impl PeerHeaders {
    pub(crate) fn new(identity: Option<&PeerIdentity>) -> Self {
        let Some(id) = identity else { return Self::default() };
        let mut out = Vec::with_capacity(4);
        let mut push = |name: HeaderName, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                out.push((name, v));
            }
        };
        push(PEER_MESH, &id.mesh);
        push(PEER_INTERFACE, &id.interface);
        push(PEER_KEY, &id.key);
        if let Some(n) = &id.name {
            push(PEER_NAME, n);
        }
        Self(out)
    }

    /// Removes every `Meshgate-Peer-*` header the client sent and sets this
    /// connection's own.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: Option<&str>) -> PeerIdentity {
        PeerIdentity {
            mesh: "wireguard".into(),
            interface: "wg0".into(),
            key: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
            name: name.map(Into::into),
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
