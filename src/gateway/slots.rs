//! Shares of the connection cap, so that no one caller on the mesh can take
//! every connection: each caller may hold at most
//! [`ServerLimits::max_connections_per_address`] connections, and at most
//! [`ServerLimits::max_unauthenticated_per_address`] of them before a request
//! on them has passed with a token, a session or an allowed peer identity. A
//! connection past its caller's share is closed as soon as its caller is
//! known (once the connection is identified). Loopback listeners have their
//! own connection cap instead (see `listeners.rs`), so no mesh traffic can
//! make the local door wait.
//!
//! A share belongs to the caller, not to an address ([`ShareKey`]): a
//! WireGuard peer is its key over every address its allowed-ips hold (a /27,
//! an IPv6 /64), a tailnet node is its node; a caller without an identity is
//! one IPv4 address, or one IPv6 /64 (what one host is usually given).
//!
//! The last [`reserve`] connections of the mesh door's cap are kept for
//! credentials: while that many or fewer places are left to connections not
//! yet vouched for, a new one that has no allowed identity is admitted only
//! provisionally, and its first request must carry a token or a session, or
//! it is answered 503 and closed. At most half the reserve (rounded up,
//! [`lendable`]) is lent that way at once: a connection that never sends a
//! request would otherwise hold its place until the idle timeout, and
//! enough of them took the whole reserve. Past that, a new connection
//! without an allowed identity is closed at once, so the rest of the reserve
//! stays for callers the mesh identifies as allowed. So callers without
//! credentials, however many, cannot keep an allowed peer out, nor take
//! more than half the reserve from token holders.
//!
//! [`ServerLimits::max_connections_per_address`]: super::limits::ServerLimits::max_connections_per_address
//! [`ServerLimits::max_unauthenticated_per_address`]: super::limits::ServerLimits::max_unauthenticated_per_address

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::identity::PeerIdentity;

/// Whose share a connection takes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum ShareKey {
    /// A caller the mesh identifies: `mesh:key` (WireGuard) or `mesh:node`
    /// (tailnet), over all its addresses.
    Caller(Arc<str>),
    /// No identity: one IPv4 address.
    V4(std::net::Ipv4Addr),
    /// No identity: one IPv6 /64 (its first 64 bits).
    V6(u64),
}

impl ShareKey {
    /// The share of a connection from `ip` whose caller is `caller`.
    pub(crate) fn of(ip: IpAddr, caller: Option<&PeerIdentity>) -> Self {
        if let Some(id) = caller {
            let who = id.key.as_deref().or(id.node.as_deref()).or(id.login.as_deref());
            if let Some(who) = who {
                return Self::Caller(Arc::from(format!("{}:{who}", id.mesh)));
            }
        }
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => Self::V6((v6.to_bits() >> 64) as u64),
        }
    }
}

/// How many of a mesh door's `cap` connections are kept for credentials:
/// an eighth, at least one when the cap is 2 or more.
pub(crate) fn reserve(cap: usize) -> usize {
    if cap < 2 {
        0
    } else {
        (cap / 8).max(1)
    }
}

/// How many places of a reserve of `reserve` may be lent to connections
/// not yet vouched for: half, rounded up (a reserve of 1 is lent, so a token
/// holder without an identity can still come in at a small cap).
pub(crate) fn lendable(reserve: usize) -> usize {
    reserve.div_ceil(2)
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    unauthenticated: usize,
}

#[derive(Debug, Default)]
struct Map {
    shares: HashMap<ShareKey, Counts>,
    /// Connections not yet vouched for, over every share.
    unvouched: usize,
    /// Of those, the ones admitted into the reserve.
    provisional: usize,
}

/// The open connections of every caller of a listener set.
#[derive(Debug)]
pub(crate) struct AddressSlots {
    /// The shares; a reload may change them (connections already held stay).
    max_total: AtomicUsize,
    max_unauthenticated: AtomicUsize,
    /// Connections not yet vouched for past which a new one is only
    /// provisional (the cap less its [`reserve`]).
    max_unvouched: AtomicUsize,
    /// Places of the reserve that may be lent at once ([`lendable`]).
    max_provisional: AtomicUsize,
    map: Mutex<Map>,
}

impl AddressSlots {
    pub(crate) fn new(max_total: usize, max_unauthenticated: usize) -> Self {
        let s = Self {
            max_total: AtomicUsize::new(0),
            max_unauthenticated: AtomicUsize::new(0),
            max_unvouched: AtomicUsize::new(usize::MAX),
            max_provisional: AtomicUsize::new(0),
            map: Mutex::default(),
        };
        s.set_shares(max_total, max_unauthenticated);
        s
    }

    /// New shares for connections admitted from now on; a caller already
    /// over a smaller share keeps what it holds and gets no more until it is
    /// under it.
    pub(crate) fn set_shares(&self, max_total: usize, max_unauthenticated: usize) {
        self.max_total.store(max_total, Ordering::Relaxed);
        self.max_unauthenticated.store(max_unauthenticated.min(max_total), Ordering::Relaxed);
    }

    /// Keeps the [`reserve`] of a mesh door's cap of `cap` for credentials.
    pub(crate) fn set_cap(&self, cap: usize) {
        self.max_unvouched.store(cap.saturating_sub(reserve(cap)), Ordering::Relaxed);
        self.max_provisional.store(lendable(reserve(cap)), Ordering::Relaxed);
    }

    /// A slot for a new connection of `key`, or `None` when that caller
    /// already holds its share, or when it is not vouched for and the part of
    /// the reserve that may be lent is lent. `vouched`: its identity is
    /// allowed without a token (it takes no unauthenticated place, and may
    /// use the reserve).
    pub(crate) fn admit(self: &Arc<Self>, key: ShareKey, vouched: bool) -> Option<Slot> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let map = &mut *map;
        let c = map.shares.entry(key.clone()).or_default();
        let reserve_lent = map.unvouched >= self.max_unvouched.load(Ordering::Relaxed)
            && map.provisional >= self.max_provisional.load(Ordering::Relaxed);
        if c.total >= self.max_total.load(Ordering::Relaxed)
            || (!vouched && (c.unauthenticated >= self.max_unauthenticated.load(Ordering::Relaxed) || reserve_lent))
        {
            if c.total == 0 {
                map.shares.remove(&key);
            }
            return None;
        }
        c.total += 1;
        let mut provisional = false;
        if !vouched {
            c.unauthenticated += 1;
            provisional = map.unvouched >= self.max_unvouched.load(Ordering::Relaxed);
            map.unvouched += 1;
            map.provisional += usize::from(provisional);
        }
        Some(Slot { slots: self.clone(), key, authenticated: AtomicBool::new(vouched), provisional })
    }

    #[cfg(test)]
    fn held(&self, ip: IpAddr) -> (usize, usize) {
        self.held_by(&ShareKey::of(ip, None))
    }

    #[cfg(test)]
    fn held_by(&self, key: &ShareKey) -> (usize, usize) {
        let map = self.map.lock().unwrap();
        map.shares.get(key).map_or((0, 0), |c| (c.total, c.unauthenticated))
    }
}

/// One connection's place in its caller's share; given back on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<AddressSlots>,
    key: ShareKey,
    authenticated: AtomicBool,
    /// Admitted into the reserve: its first request must carry credentials.
    provisional: bool,
}

impl Slot {
    /// True once a request on this connection passed with credentials.
    pub(crate) fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Relaxed)
    }

    /// True when the connection holds a place of the reserve for
    /// credentials: a request without them is not served on it.
    pub(crate) fn is_provisional(&self) -> bool {
        self.provisional
    }

    /// Moves the connection out of the unauthenticated share (once).
    pub(crate) fn authenticated(&self) {
        if self.authenticated.swap(true, Ordering::Relaxed) {
            return;
        }
        let mut map = self.slots.map.lock().unwrap_or_else(|e| e.into_inner());
        map.unvouched = map.unvouched.saturating_sub(1);
        if self.provisional {
            map.provisional = map.provisional.saturating_sub(1);
        }
        if let Some(c) = map.shares.get_mut(&self.key) {
            c.unauthenticated = c.unauthenticated.saturating_sub(1);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.slots.map.lock().unwrap_or_else(|e| e.into_inner());
        let authenticated = *self.authenticated.get_mut();
        if !authenticated {
            map.unvouched = map.unvouched.saturating_sub(1);
            if self.provisional {
                map.provisional = map.provisional.saturating_sub(1);
            }
        }
        if let Some(c) = map.shares.get_mut(&self.key) {
            c.total = c.total.saturating_sub(1);
            if !authenticated {
                c.unauthenticated = c.unauthenticated.saturating_sub(1);
            }
            if c.total == 0 {
                map.shares.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_share_and_no_more() {
        let slots = Arc::new(AddressSlots::new(4, 2));
        let a: IpAddr = "10.8.0.2".parse().unwrap();
        let b: IpAddr = "10.8.0.3".parse().unwrap();
        let s1 = slots.admit(ShareKey::of(a, None), false).unwrap();
        let s2 = slots.admit(ShareKey::of(a, None), false).unwrap();
        // Two unauthenticated: the third waits for one to authenticate or go.
        assert!(slots.admit(ShareKey::of(a, None), false).is_none());
        // Another address is not affected.
        let _b1 = slots.admit(ShareKey::of(b, None), false).unwrap();
        s1.authenticated();
        s1.authenticated(); // twice counts once
        assert_eq!(slots.held(a), (2, 1));
        let s3 = slots.admit(ShareKey::of(a, None), false).unwrap();
        s2.authenticated();
        s3.authenticated();
        let _s4 = slots.admit(ShareKey::of(a, None), false).unwrap();
        // Four in all: the total share is full, authenticated or not.
        assert!(slots.admit(ShareKey::of(a, None), false).is_none());
        drop(s1);
        assert_eq!(slots.held(a), (3, 1));
        assert!(slots.admit(ShareKey::of(a, None), false).is_some()); // dropped at once: back to 3
        drop((s2, s3));
        assert_eq!(slots.held(a), (1, 1));
        // IPv4-mapped IPv6 is the same address.
        let mapped: IpAddr = "::ffff:10.8.0.3".parse().unwrap();
        assert_eq!(slots.held(b), (1, 1));
        let _m = slots.admit(ShareKey::of(mapped, None), false).unwrap();
        assert_eq!(slots.held(b), (2, 2));
    }

    #[test]
    fn new_shares_apply_to_the_next_connection() {
        let slots = Arc::new(AddressSlots::new(4, 4));
        let a: IpAddr = "10.8.0.2".parse().unwrap();
        let held: Vec<Slot> = (0..3).filter_map(|_| slots.admit(ShareKey::of(a, None), false)).collect();
        assert_eq!(held.len(), 3);
        // Shrunk below what the address holds: it keeps them, gets no more.
        slots.set_shares(2, 2);
        assert!(slots.admit(ShareKey::of(a, None), false).is_none());
        assert_eq!(slots.held(a), (3, 3));
        drop(held);
        let s1 = slots.admit(ShareKey::of(a, None), false).unwrap();
        let _s2 = slots.admit(ShareKey::of(a, None), false).unwrap();
        assert!(slots.admit(ShareKey::of(a, None), false).is_none());
        // Grown: room again at once.
        slots.set_shares(3, 3);
        assert!(slots.admit(ShareKey::of(a, None), false).is_some());
        drop(s1);
    }

    #[test]
    fn entries_are_forgotten_when_empty() {
        let slots = Arc::new(AddressSlots::new(2, 1));
        let a: IpAddr = "10.8.0.2".parse().unwrap();
        drop(slots.admit(ShareKey::of(a, None), false).unwrap());
        assert!(slots.map.lock().unwrap().shares.is_empty());
    }

    /// Issue #25 part 4: a WireGuard peer holds one share over every address
    /// its allowed-ips hold; callers without an identity one per IPv4
    /// address and one per IPv6 /64.
    #[test]
    fn a_share_belongs_to_the_caller_not_the_address() {
        let slots = Arc::new(AddressSlots::new(8, 2));
        let id = PeerIdentity {
            mesh: "wireguard".into(),
            interface: "wg0".into(),
            key: Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()),
            name: None,
            login: None,
            node: None,
            tags: Vec::new(),
            allowed: false,
        };
        let held: Vec<Slot> = (33..41u8)
            .filter_map(|i| slots.admit(ShareKey::of(IpAddr::from([10, 77, 0, i]), Some(&id)), false))
            .collect();
        assert_eq!(held.len(), 2, "eight addresses of one key hold one share");
        // An allowed identity takes no unauthenticated place.
        let allowed: Vec<Slot> =
            (0..6).filter_map(|_| slots.admit(ShareKey::of("10.77.0.40".parse().unwrap(), Some(&id)), true)).collect();
        assert_eq!(allowed.len(), 6);
        assert!(slots.admit(ShareKey::of("10.77.0.41".parse().unwrap(), Some(&id)), true).is_none(), "total share");
        // No identity: a /64 is one caller, another /64 another.
        let v6: Vec<Slot> = ["fd00::1", "fd00::2", "fd00::ffff:1"]
            .iter()
            .filter_map(|a| slots.admit(ShareKey::of(a.parse().unwrap(), None), false))
            .collect();
        assert_eq!(v6.len(), 2);
        assert!(slots.admit(ShareKey::of("fd00:0:0:1::1".parse().unwrap(), None), false).is_some());
        // ...and IPv4 addresses one each.
        assert!(slots.admit(ShareKey::of("10.1.0.1".parse().unwrap(), None), false).is_some());
        assert!(slots.admit(ShareKey::of("10.1.0.2".parse().unwrap(), None), false).is_some());
    }

    /// The reserve: past the cap less an eighth, a connection without an
    /// allowed identity is only provisional; an allowed one is not.
    #[test]
    fn the_last_places_are_kept_for_credentials() {
        let slots = Arc::new(AddressSlots::new(64, 64));
        slots.set_cap(16);
        assert_eq!(reserve(16), 2);
        let a: IpAddr = "10.8.0.2".parse().unwrap();
        let held: Vec<Slot> = (0..14).map(|_| slots.admit(ShareKey::of(a, None), false).unwrap()).collect();
        assert!(held.iter().all(|s| !s.is_provisional()));
        let extra = slots.admit(ShareKey::of(a, None), false).unwrap();
        assert!(extra.is_provisional(), "the reserve is for credentials");
        let allowed = slots.admit(ShareKey::Caller(Arc::from("wireguard:k")), true).unwrap();
        assert!(!allowed.is_provisional());
        // One vouched for: a place outside the reserve again.
        held[0].authenticated();
        drop(extra);
        assert!(!slots.admit(ShareKey::of(a, None), false).unwrap().is_provisional());
    }
}
