//! Per-address shares of the connection cap, so that one address on the mesh
//! cannot take every connection: each source address may hold at most
//! [`ServerLimits::max_connections_per_address`] connections, and at most
//! [`ServerLimits::max_unauthenticated_per_address`] of them before a request
//! on them has passed with a token, a session or an allowed peer identity. A
//! connection past its address's share is closed as soon as it is accepted.
//! Loopback listeners have their own connection cap instead (see
//! `listeners.rs`), so no mesh traffic can make the local door wait.
//!
//! [`ServerLimits::max_connections_per_address`]: super::limits::ServerLimits::max_connections_per_address
//! [`ServerLimits::max_unauthenticated_per_address`]: super::limits::ServerLimits::max_unauthenticated_per_address

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    unauthenticated: usize,
}

/// The open connections of every source address of a listener set.
#[derive(Debug)]
pub(crate) struct AddressSlots {
    /// The shares; a reload may change them (connections already held stay).
    max_total: AtomicUsize,
    max_unauthenticated: AtomicUsize,
    map: Mutex<HashMap<IpAddr, Counts>>,
}

impl AddressSlots {
    pub(crate) fn new(max_total: usize, max_unauthenticated: usize) -> Self {
        let s =
            Self { max_total: AtomicUsize::new(0), max_unauthenticated: AtomicUsize::new(0), map: Mutex::default() };
        s.set_shares(max_total, max_unauthenticated);
        s
    }

    /// New shares for connections admitted from now on; an address already
    /// over a smaller share keeps what it holds and gets no more until it is
    /// under it.
    pub(crate) fn set_shares(&self, max_total: usize, max_unauthenticated: usize) {
        self.max_total.store(max_total, Ordering::Relaxed);
        self.max_unauthenticated.store(max_unauthenticated.min(max_total), Ordering::Relaxed);
    }

    /// A slot for a new connection from `ip`, or `None` when its address
    /// already holds its share.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let ip = ip.to_canonical();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let c = map.entry(ip).or_default();
        if c.total >= self.max_total.load(Ordering::Relaxed)
            || c.unauthenticated >= self.max_unauthenticated.load(Ordering::Relaxed)
        {
            if c.total == 0 {
                map.remove(&ip);
            }
            return None;
        }
        c.total += 1;
        c.unauthenticated += 1;
        Some(Slot { slots: self.clone(), ip, authenticated: AtomicBool::new(false) })
    }

    #[cfg(test)]
    fn held(&self, ip: IpAddr) -> (usize, usize) {
        let map = self.map.lock().unwrap();
        map.get(&ip).map_or((0, 0), |c| (c.total, c.unauthenticated))
    }
}

/// One connection's place in its address's share; given back on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<AddressSlots>,
    ip: IpAddr,
    authenticated: AtomicBool,
}

impl Slot {
    /// True once a request on this connection passed with credentials.
    pub(crate) fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Relaxed)
    }

    /// Moves the connection out of the unauthenticated share (once).
    pub(crate) fn authenticated(&self) {
        if self.authenticated.swap(true, Ordering::Relaxed) {
            return;
        }
        let mut map = self.slots.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get_mut(&self.ip) {
            c.unauthenticated = c.unauthenticated.saturating_sub(1);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.slots.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get_mut(&self.ip) {
            c.total = c.total.saturating_sub(1);
            if !*self.authenticated.get_mut() {
                c.unauthenticated = c.unauthenticated.saturating_sub(1);
            }
            if c.total == 0 {
                map.remove(&self.ip);
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
        let s1 = slots.admit(a).unwrap();
        let s2 = slots.admit(a).unwrap();
        // Two unauthenticated: the third waits for one to authenticate or go.
        assert!(slots.admit(a).is_none());
        // Another address is not affected.
        let _b1 = slots.admit(b).unwrap();
        s1.authenticated();
        s1.authenticated(); // twice counts once
        assert_eq!(slots.held(a), (2, 1));
        let s3 = slots.admit(a).unwrap();
        s2.authenticated();
        s3.authenticated();
        let _s4 = slots.admit(a).unwrap();
        // Four in all: the total share is full, authenticated or not.
        assert!(slots.admit(a).is_none());
        drop(s1);
        assert_eq!(slots.held(a), (3, 1));
        assert!(slots.admit(a).is_some()); // dropped at once: back to 3
        drop((s2, s3));
        assert_eq!(slots.held(a), (1, 1));
        // IPv4-mapped IPv6 is the same address.
        let mapped: IpAddr = "::ffff:10.8.0.3".parse().unwrap();
        assert_eq!(slots.held(b), (1, 1));
        let _m = slots.admit(mapped).unwrap();
        assert_eq!(slots.held(b), (2, 2));
    }

    #[test]
    fn new_shares_apply_to_the_next_connection() {
        let slots = Arc::new(AddressSlots::new(4, 4));
        let a: IpAddr = "10.8.0.2".parse().unwrap();
        let held: Vec<Slot> = (0..3).filter_map(|_| slots.admit(a)).collect();
        assert_eq!(held.len(), 3);
        // Shrunk below what the address holds: it keeps them, gets no more.
        slots.set_shares(2, 2);
        assert!(slots.admit(a).is_none());
        assert_eq!(slots.held(a), (3, 3));
        drop(held);
        let s1 = slots.admit(a).unwrap();
        let _s2 = slots.admit(a).unwrap();
        assert!(slots.admit(a).is_none());
        // Grown: room again at once.
        slots.set_shares(3, 3);
        assert!(slots.admit(a).is_some());
        drop(s1);
    }

    #[test]
    fn entries_are_forgotten_when_empty() {
        let slots = Arc::new(AddressSlots::new(2, 1));
        let a: IpAddr = "10.8.0.2".parse().unwrap();
        drop(slots.admit(a).unwrap());
        assert!(slots.map.lock().unwrap().is_empty());
    }
}
