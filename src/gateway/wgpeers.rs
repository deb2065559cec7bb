//! [`WireGuardPeers`]: the [`PeerLookup`] for WireGuard listeners. The source
//! address of a connection on a WireGuard interface names one peer (WireGuard
//! accepts a packet only from the peer whose allowed-ips hold it), so its
//! public key is the caller's identity; `[peers]` gives it a name and
//! `--allow-peer` lets it in without a token.
//!
//! The peer tables are `meshgate_core::wgpeer::PeerCache`'s (refreshed on a
//! miss, at most once a second, and when they age). Which interfaces are
//! WireGuard, and how to read them, comes from the snapshots the gateway
//! resolves ([`WireGuardPeers::note`]): an interface that changed (gone,
//! re-created with a new index) has its table forgotten at once.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Mutex, RwLock};

use meshgate_core::wgpeer::{AllowList, PeerCache, PeerCacheConfig, PeerNames, WgKind};
use meshgate_core::{Interface, PublicKey, Snapshot};

use super::identity::{PeerIdentity, PeerLookup, PeerRules, SharedPeerRules};

/// The mesh these identities are of.
const MESH: &str = "wireguard";

/// How many unknown addresses are remembered so that each is logged once.
const LOGGED_UNKNOWN: usize = 1024;

/// WireGuard peer identity for the gateway's connections.
#[derive(Debug)]
pub struct WireGuardPeers {
    cache: PeerCache,
    rules: SharedPeerRules,
    interfaces: RwLock<HashMap<String, Interface>>,
    logged: Mutex<HashSet<IpAddr>>,
}

impl WireGuardPeers {
    /// Identity by `[peers]` names, letting in the peers of `allow`.
    pub fn new(names: PeerNames, allow: AllowList) -> Self {
        Self::with_rules(PeerRules::shared(names, allow))
    }

    /// Identity by rules that a reload can replace (shared with the tailnet
    /// lookup: see [`PeerRules`]).
    pub fn with_rules(rules: SharedPeerRules) -> Self {
        Self::with_cache_and_rules(PeerCache::new(PeerCacheConfig::default()), rules)
    }

    /// The same with a cache of one's own (tests: a reader, other intervals).
    pub fn with_cache(names: PeerNames, allow: AllowList, cache: PeerCache) -> Self {
        Self::with_cache_and_rules(cache, PeerRules::shared(names, allow))
    }

    fn with_cache_and_rules(cache: PeerCache, rules: SharedPeerRules) -> Self {
        Self { cache, rules, interfaces: RwLock::default(), logged: Mutex::default() }
    }

    /// True when some peer is let in without a token.
    pub fn allows_any(&self) -> bool {
        !self.rules.load().allow.is_empty()
    }

    /// The rules in force (shared with the tailnet lookup).
    pub fn rules(&self) -> &SharedPeerRules {
        &self.rules
    }

    /// Takes note of the host's WireGuard interfaces in a fresh snapshot;
    /// forgets the peer table of each one that is gone or was re-created.
    pub fn note(&self, snapshot: &Snapshot) {
        let now: HashMap<String, Interface> = snapshot
            .interfaces
            .iter()
            .filter(|i| WgKind::of(i).is_some())
            .map(|i| (i.name.clone(), i.clone()))
            .collect();
        let mut known = self.interfaces.write().unwrap_or_else(|e| e.into_inner());
        for (name, old) in known.iter() {
            if now.get(name).is_none_or(|new| new.index != old.index || new.kind != old.kind) {
                self.cache.invalidate(name, old.index);
            }
        }
        *known = now;
    }

    fn log_unknown_once(&self, interface: &str, ip: IpAddr) {
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        if logged.len() >= LOGGED_UNKNOWN {
            logged.clear();
        }
        if logged.insert(ip) {
            tracing::info!(
                %ip,
                interface,
                "no WireGuard peer of this interface holds the address; it is not allowed without a token"
            );
        }
    }
}

impl PeerLookup for WireGuardPeers {
    fn identify<'a>(
        &'a self,
        interface: &'a str,
        peer: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = Option<PeerIdentity>> + Send + 'a>> {
        let ip = peer.ip();
        Box::pin(async move {
            let iface = self.interfaces.read().unwrap_or_else(|e| e.into_inner()).get(interface).cloned()?;
            let Some(key) = self.cache.lookup(&iface, ip.to_canonical()).await else {
                self.log_unknown_once(interface, ip);
                return None;
            };
            let rules = self.rules.load();
            Some(PeerIdentity {
                mesh: MESH.into(),
                interface: interface.to_owned(),
                key: Some(key.to_base64()),
                name: rules.names.name_of(&key).map(str::to_owned),
                login: None,
                node: None,
                tags: Vec::new(),
                allowed: rules.allow.allows(&key),
            })
        })
    }

    fn observe(&self, snapshot: &Snapshot) {
        self.note(snapshot);
    }

    /// The cached table (re-read when older than 5 s, or on a miss at most
    /// once a second) still gives `peer`'s address to the same key.
    fn same_peer<'a>(
        &'a self,
        interface: &'a str,
        peer: SocketAddr,
        identity: &'a PeerIdentity,
    ) -> Option<Pin<Box<dyn Future<Output = bool> + Send + 'a>>> {
        if identity.mesh != MESH {
            return None;
        }
        Some(Box::pin(async move {
            let Some(iface) = self.interfaces.read().unwrap_or_else(|e| e.into_inner()).get(interface).cloned() else {
                return false;
            };
            let now = self.cache.lookup(&iface, peer.ip().to_canonical()).await;
            now.is_some_and(|k| identity.key.as_deref() == Some(k.to_base64().as_str()))
        }))
    }

    fn allows(&self, identity: &PeerIdentity) -> Option<bool> {
        if identity.mesh != MESH {
            return None;
        }
        let key = identity.key.as_deref().and_then(|k| PublicKey::from_base64(k).ok());
        Some(key.is_some_and(|k| self.rules.load().allow.allows(&k)))
    }
}
