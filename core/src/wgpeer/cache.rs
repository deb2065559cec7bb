//! [`PeerCache`]: one [`PeerTable`] per WireGuard interface, for the gateway's
//! once-per-connection "who is this?".
//!
//! Reading peers costs a netlink or UAPI round trip (about a millisecond for a
//! thousand peers), far too slow per connection, so tables are cached and
//! re-read only when needed:
//!
//! - **miss**: an address no peer holds may belong to a peer added since the
//!   last read, so the table is re-read, at most once per
//!   [`refresh_interval`](PeerCacheConfig::refresh_interval) per interface
//!   (a flood of unknown addresses costs one read a second, not one each);
//! - **age**: a table older than [`max_age`](PeerCacheConfig::max_age) is
//!   re-read before it answers, so a peer removed from the interface loses its
//!   identity within `max_age` even when nothing else happens;
//! - **[`invalidate`](PeerCache::invalidate)**: the interface changed (gone,
//!   re-created): forget its table.
//!
//! One read at a time per interface: concurrent lookups wait for the read in
//! flight and use its result. A read that fails answers "not found" (an
//! unknown peer is never allowed) and is logged once until a read succeeds
//! again, not once per connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::model::{Interface, InterfaceKind};

use super::peer::{Peer, PeerReadError, ReadLimits, WgKind};
use super::read::read_kind;
use super::{PeerTable, PublicKey};

/// How [`PeerCache`] refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCacheConfig {
    /// The shortest time between two reads of one interface caused by misses
    /// (default 1 s).
    pub refresh_interval: Duration,
    /// The oldest a table may be and still answer (default 5 s): the longest a
    /// removed peer keeps its identity when nobody calls `invalidate`. Never
    /// shorter than `refresh_interval` (raised to it).
    pub max_age: Duration,
    /// Bounds on one read.
    pub limits: ReadLimits,
}

impl Default for PeerCacheConfig {
    fn default() -> Self {
        Self {
            refresh_interval: Duration::from_secs(1),
            max_age: Duration::from_secs(5),
            limits: ReadLimits::default(),
        }
    }
}

/// Reads one interface's peers (the real one is [`read_kind`]; tests pass their own).
type Reader = dyn Fn(&str, &WgKind, ReadLimits) -> Result<Vec<Peer>, PeerReadError> + Send + Sync;

/// Cached peer tables, one per WireGuard interface. Cheap to clone (shared).
#[derive(Clone)]
pub struct PeerCache {
    inner: Arc<Inner>,
}

struct Inner {
    config: PeerCacheConfig,
    reader: Box<Reader>,
    /// By interface index; an entry whose name differs is a new interface.
    entries: Mutex<HashMap<u32, Arc<Entry>>>,
}

struct Entry {
    name: String,
    state: RwLock<State>,
    /// Held for the whole of a read: one read at a time.
    refresh: Arc<tokio::sync::Mutex<Refresh>>,
}

struct State {
    table: Arc<PeerTable>,
    /// When `table` was read; `None` before the first read.
    read_at: Option<Instant>,
    /// Bumped by every read, so a waiter can tell a read happened meanwhile.
    generation: u64,
}

#[derive(Default)]
struct Refresh {
    last_attempt: Option<Instant>,
    /// The last read failed and was logged.
    failing: bool,
}

impl std::fmt::Debug for PeerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerCache").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl Default for PeerCache {
    fn default() -> Self {
        Self::new(PeerCacheConfig::default())
    }
}

impl PeerCache {
    /// A cache reading the real interfaces.
    pub fn new(config: PeerCacheConfig) -> Self {
        Self::with_reader(config, read_kind)
    }

    /// A cache reading peers with `reader` (for tests, or another source).
    pub fn with_reader(
        config: PeerCacheConfig,
        reader: impl Fn(&str, &WgKind, ReadLimits) -> Result<Vec<Peer>, PeerReadError> + Send + Sync + 'static,
    ) -> Self {
        let config = PeerCacheConfig { max_age: config.max_age.max(config.refresh_interval), ..config };
        Self { inner: Arc::new(Inner { config, reader: Box::new(reader), entries: Mutex::default() }) }
    }

    /// The configuration in force.
    pub fn config(&self) -> PeerCacheConfig {
        self.inner.config
    }

    /// The public key of the peer of `iface` whose allowed-ips hold `ip`
    /// (longest prefix); `None` when there is none, the table cannot be read,
    /// or `iface` is not WireGuard.
    pub async fn lookup(&self, iface: &Interface, ip: IpAddr) -> Option<PublicKey> {
        // Not `WgKind::of` yet: it builds a socket path, wasted on a cache hit.
        if !matches!(iface.kind, InterfaceKind::WireGuard | InterfaceKind::WireGuardUserspace) {
            return None;
        }
        let entry = self.entry(&iface.name, iface.index);
        let now = Instant::now();
        let (generation, hit) = {
            let s = entry.state.read().unwrap_or_else(PoisonError::into_inner);
            let fresh = s.read_at.is_some_and(|t| now.saturating_duration_since(t) < self.inner.config.max_age);
            let hit = s.table.lookup(ip).map(|p| p.public_key);
            if fresh && hit.is_some() {
                return hit;
            }
            (s.generation, hit.filter(|_| fresh))
        };
        // A miss, or a stale table: read again, unless a read happened while
        // we waited or the last one was too recent.
        let guard = entry.refresh.clone().lock_owned().await;
        {
            let s = entry.state.read().unwrap_or_else(PoisonError::into_inner);
            if s.generation != generation {
                return s.table.lookup(ip).map(|p| p.public_key);
            }
        }
        if guard.last_attempt.is_some_and(|t| t.elapsed() < self.inner.config.refresh_interval) {
            return hit;
        }
        // The read and the update run on a blocking thread that owns the lock:
        // a caller that goes away (its connection closed) neither stops the
        // read half-way nor leaves the table un-updated.
        let kind = WgKind::of(iface)?;
        let inner = self.inner.clone();
        let task_entry = entry.clone();
        let done = tokio::task::spawn_blocking(move || inner.refresh(&task_entry, &kind, guard)).await;
        if done.is_err() {
            return None; // The reader panicked: nothing was updated; not found.
        }
        let s = entry.state.read().unwrap_or_else(PoisonError::into_inner);
        s.table.lookup(ip).map(|p| p.public_key)
    }

    /// The table of `iface` as last read, reading it first when there is none
    /// or it is older than `max_age` (for `whoami`-style listings).
    pub async fn table(&self, iface: &Interface) -> Arc<PeerTable> {
        // An address no peer can hold: any miss path reads when needed. The
        // unspecified address is never a WireGuard source.
        let _ = self.lookup(iface, IpAddr::from([0u8; 16])).await;
        match self.inner.entries.lock().unwrap_or_else(PoisonError::into_inner).get(&iface.index) {
            Some(e) if e.name == iface.name => e.state.read().unwrap_or_else(PoisonError::into_inner).table.clone(),
            _ => Arc::default(),
        }
    }

    /// Forgets the table of interface `name` (index `index`): the next lookup reads it
    /// again, whatever the rate limit. Call it when the interface changed.
    pub fn invalidate(&self, name: &str, index: u32) {
        let mut entries = self.inner.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.get(&index).is_some_and(|e| e.name == name) {
            entries.remove(&index);
        }
    }

    /// Forgets every table.
    pub fn invalidate_all(&self) {
        self.inner.entries.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    fn entry(&self, name: &str, index: u32) -> Arc<Entry> {
        let mut entries = self.inner.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(&index) {
            Some(e) if e.name == name => e.clone(),
            _ => {
                // New, or the index now belongs to another interface.
                let e = Arc::new(Entry {
                    name: name.to_owned(),
                    state: RwLock::new(State { table: Arc::default(), read_at: None, generation: 0 }),
                    refresh: Arc::default(),
                });
                entries.insert(index, e.clone());
                e
            }
        }
    }
}

impl Inner {
    /// Reads `entry`'s interface and installs the result (blocking).
    fn refresh(&self, entry: &Entry, kind: &WgKind, mut guard: tokio::sync::OwnedMutexGuard<Refresh>) {
        let result = (self.reader)(&entry.name, kind, self.config.limits);
        let now = Instant::now();
        guard.last_attempt = Some(now);
        let table = match result {
            Ok(peers) => {
                if guard.failing {
                    tracing::info!(interface = %entry.name, peers = peers.len(), "WireGuard peers readable again");
                }
                guard.failing = false;
                PeerTable::new(peers)
            }
            Err(e) => {
                if !guard.failing {
                    tracing::warn!(
                        interface = %entry.name,
                        error = %e,
                        "cannot read WireGuard peers: its connections count as unknown peers until a read succeeds"
                    );
                }
                guard.failing = true;
                // Fail closed: an old table may name a peer that is gone.
                PeerTable::default()
            }
        };
        let mut s = entry.state.write().unwrap_or_else(PoisonError::into_inner);
        s.table = Arc::new(table);
        s.read_at = Some(now);
        s.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn peer(k: u8, ip: &str) -> Peer {
        Peer {
            public_key: PublicKey::from_bytes([k; 32]),
            allowed_ips: vec![ip.parse().unwrap()],
            endpoint: None,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
        }
    }

    /// A cache over a shared, mutable peer list that counts reads.
    /// What the fake reader returns next: peers, or an error text.
    type Answer = Arc<Mutex<Result<Vec<Peer>, String>>>;

    fn fake(config: PeerCacheConfig) -> (PeerCache, Answer, Arc<AtomicUsize>) {
        let peers = Arc::new(Mutex::new(Ok(vec![peer(1, "10.77.0.2/32")])));
        let reads = Arc::new(AtomicUsize::new(0));
        let (p, r) = (peers.clone(), reads.clone());
        let cache = PeerCache::with_reader(config, move |name, _, _| {
            r.fetch_add(1, Ordering::SeqCst);
            // Slow enough that concurrent lookups overlap with the read.
            std::thread::sleep(Duration::from_millis(20));
            p.lock().unwrap().clone().map_err(|detail| PeerReadError::Protocol { iface: name.into(), detail })
        });
        (cache, peers, reads)
    }

    fn wg0() -> Interface {
        Interface::new("wg0", 4, InterfaceKind::WireGuardUserspace)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const LONG: PeerCacheConfig = PeerCacheConfig {
        refresh_interval: Duration::from_secs(3600),
        max_age: Duration::from_secs(3600),
        limits: ReadLimits { timeout: Duration::from_millis(200), max_bytes: 1 << 20 },
    };

    #[tokio::test]
    async fn hits_are_cached_and_misses_rate_limited() {
        let (cache, peers, reads) = fake(LONG);
        let k1 = PublicKey::from_bytes([1; 32]);
        assert_eq!(cache.lookup(&wg0(), ip("10.77.0.2")).await, Some(k1));
        assert_eq!(cache.lookup(&wg0(), ip("10.77.0.2")).await, Some(k1));
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        // A peer added after the read: the miss would read, but the last read is too recent.
        peers.lock().unwrap().as_mut().unwrap().push(peer(2, "10.77.0.3/32"));
        for _ in 0..10 {
            assert_eq!(cache.lookup(&wg0(), ip("10.77.0.3")).await, None);
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        // After invalidate the next lookup reads, and finds it.
        cache.invalidate("wg0", 4);
        assert_eq!(cache.lookup(&wg0(), ip("10.77.0.3")).await, Some(PublicKey::from_bytes([2; 32])));
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        // Not WireGuard: no read at all.
        let tun = Interface::new("tun0", 5, InterfaceKind::Tun);
        assert_eq!(cache.lookup(&tun, ip("10.77.0.2")).await, None);
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        // Invalidating another interface (or another index) changes nothing.
        cache.invalidate("wg1", 4);
        cache.invalidate("wg0", 5);
        assert_eq!(cache.lookup(&wg0(), ip("10.77.0.3")).await, Some(PublicKey::from_bytes([2; 32])));
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_miss_reads_again_once_the_interval_passed() {
        let config = PeerCacheConfig { refresh_interval: Duration::from_millis(50), ..LONG };
        let (cache, peers, reads) = fake(config);
        assert_eq!(cache.lookup(&wg0(), ip("10.77.0.3")).await, None);
        peers.lock().unwrap().as_mut().unwrap().push(peer(2, "10.77.0.3/32"));
        assert_eq!(cache.lookup(&wg0(), ip("10.77.0.3")).await, None);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(cache.lookup(&wg0(), ip("10.77.0.3")).await, Some(PublicKey::from_bytes([2; 32])));
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_removed_peer_is_forgotten_after_max_age() {
        let config =
            PeerCacheConfig { refresh_interval: Duration::from_millis(10), max_age: Duration::from_millis(50), ..LONG };
        let (cache, peers, reads) = fake(config);
        assert!(cache.lookup(&wg0(), ip("10.77.0.2")).await.is_some());
        *peers.lock().unwrap() = Ok(vec![]);
        // Still cached (a hit on a fresh table) ...
        assert!(cache.lookup(&wg0(), ip("10.77.0.2")).await.is_some());
        tokio::time::sleep(Duration::from_millis(60)).await;
        // ... and gone once the table is too old to answer.
        assert_eq!(cache.lookup(&wg0(), ip("10.77.0.2")).await, None);
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_lookups_share_one_read() {
        let (cache, _, reads) = fake(LONG);
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let c = cache.clone();
                tokio::spawn(
                    async move { c.lookup(&wg0(), ip(if i % 2 == 0 { "10.77.0.2" } else { "10.9.9.9" })).await },
                )
            })
            .collect();
        let mut found = 0;
        for t in tasks {
            found += usize::from(t.await.unwrap().is_some());
        }
        assert_eq!(found, 16);
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_read_is_not_found_and_fails_closed() {
        let config =
            PeerCacheConfig { refresh_interval: Duration::from_millis(10), max_age: Duration::from_millis(10), ..LONG };
        let (cache, peers, reads) = fake(config);
        assert!(cache.lookup(&wg0(), ip("10.77.0.2")).await.is_some());
        *peers.lock().unwrap() = Err("daemon gone".into());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(cache.lookup(&wg0(), ip("10.77.0.2")).await, None, "a failed read drops the old table");
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        *peers.lock().unwrap() = Ok(vec![peer(1, "10.77.0.2/32")]);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(cache.lookup(&wg0(), ip("10.77.0.2")).await.is_some());
        assert_eq!(cache.table(&wg0()).await.len(), 1);
    }

    #[tokio::test]
    async fn an_index_reused_by_another_interface_is_a_new_table() {
        let (cache, _, reads) = fake(LONG);
        assert!(cache.lookup(&wg0(), ip("10.77.0.2")).await.is_some());
        let other = Interface::new("office", 4, InterfaceKind::WireGuardUserspace);
        assert!(cache.lookup(&other, ip("10.77.0.2")).await.is_some());
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }
}
