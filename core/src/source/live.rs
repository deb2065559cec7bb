//! Linux: a snapshot kept current by rtnetlink events, for a process that
//! follows the network ([`LiveNetlink`]).
//!
//! [`NetlinkSource`] dumps every link and address on every snapshot: on a host
//! with 1,000 interfaces that is most of the cost of each change, and a
//! serving process takes one snapshot per change. The link and address events
//! carry what a dump carries, so [`LiveNetlink`] dumps once, subscribes to the
//! link and address groups (and the route groups while the default routes
//! matter: while there is a veth, see [`Table::wants_routes`]), and applies
//! each message to an in-memory [`Table`] with the same code that reads a dump
//! ([`Table::apply`]).
//!
//! It dumps again only when it must: after an overrun (`ENOBUFS`: events were
//! lost), on a safety timer ([`REDUMP_EVERY`]), and, for the default routes
//! alone, when they may have changed (a default route message, or a change
//! after which IPv4 drops routes without saying so). Route messages are read
//! no further than their header: every address brings some, and only a default
//! route in the main table matters.
//!
//! [`LiveNetlink::watcher`] gives the [`Watcher`] that drives it; the
//! snapshot also reads what is queued, so it is current even between changes.
//!
//! [`crate::watcher::system`] makes one and [registers](LiveNetlink::register)
//! it: while it lives, [`NetlinkSource`]'s snapshots (the system source's, with
//! the same directories) read its table instead of dumping. That is how a
//! serving process that was handed the system source gets the table without
//! knowing of it; a one-shot `explain` has no watcher and dumps.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use netlink_packet_core::{NetlinkBuffer, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::route::{RouteHeader, RouteType};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use tokio::io::unix::AsyncFd;
use tokio::time::{sleep_until, timeout_at, Instant};

use crate::model::Snapshot;
use crate::watcher::{WatchError, Watcher, MAX_COALESCE, QUIET};

use super::linux::{dump_socket, io, Table};
use super::{userspace_wireguard_names, InterfaceSource, NetlinkSource, SourceError};

/// How often the table is checked against a full dump, as a safety net.
pub const REDUMP_EVERY: Duration = Duration::from_secs(60);

// The legacy group bitmask `bind` takes: from libc, never by hand.
const GROUPS: u32 = (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;
/// The route groups, joined only while the default routes are read (while
/// there is a veth, [`Table::wants_routes`]): every address brings a route
/// message or more, and without a veth they would only be read and dropped.
const ROUTE_GROUPS: [u32; 2] = [libc::RTNLGRP_IPV4_ROUTE, libc::RTNLGRP_IPV6_ROUTE];

/// How long a watcher lets messages gather, once a burst is under way, before
/// it reads them: at most this much later, many messages for one wake-up.
const BATCH: Duration = Duration::from_millis(1);

/// The receive buffer asked for: a burst of address changes brings one
/// message each (two with a veth: the address's local route), each near 1 kB of kernel
/// memory. The kernel caps it at `net.core.rmem_max`; an overrun costs one
/// dump, not a wrong snapshot.
const RCVBUF: usize = 4 << 20;

/// The registered tables ([`LiveNetlink::register`]), newest last.
static REGISTERED: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

/// A snapshot source kept current by rtnetlink events. Clones share one table.
#[derive(Clone)]
pub struct LiveNetlink {
    shared: Arc<Shared>,
}

struct Shared {
    source: NetlinkSource,
    /// The network namespace the sockets were made in: a thread moved into
    /// another one (a library serving per container) must not read this table.
    netns: Option<(u64, u64)>,
    state: Mutex<State>,
    fd: RawFd,
}

struct State {
    events: Socket,
    table: Table,
    /// Bumped whenever `table` changes; a watcher reports a change when it moved.
    generation: u64,
    /// Events were lost (an overrun) and no dump has mended it yet: set
    /// until a dump succeeds, so a failed one is tried again at the next
    /// refresh instead of leaving the table wrong.
    needs_dump: bool,
    routes_stale: bool,
    /// Whether the socket is in [`ROUTE_GROUPS`].
    route_groups: bool,
    buf: Vec<u8>,
    /// Full dumps so far (the initial one included): tests and the bench.
    dumps: u64,
}

impl std::fmt::Debug for LiveNetlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveNetlink").field("source", &self.shared.source).finish()
    }
}

impl LiveNetlink {
    /// Subscribes, then dumps once (in that order, so no change falls between).
    pub fn new() -> Result<Self, SourceError> {
        Self::with_source(NetlinkSource::default())
    }

    /// As [`new`](Self::new), with this source's sysfs and WireGuard socket directories.
    pub fn with_source(source: NetlinkSource) -> Result<Self, SourceError> {
        let mut events = Socket::new(NETLINK_ROUTE).map_err(io("netlink socket"))?;
        events.bind(&SocketAddr::new(0, GROUPS)).map_err(io("netlink subscribe"))?;
        events.set_non_blocking(true).map_err(io("netlink non-blocking"))?;
        // Capped by net.core.rmem_max; smaller only means earlier overruns.
        let _ = events.set_rx_buf_sz(RCVBUF);
        let table = source.dump_table()?;
        let fd = events.as_raw_fd();
        let mut state = State {
            events,
            table,
            generation: 0,
            needs_dump: false,
            routes_stale: false,
            route_groups: false,
            buf: vec![0; 1 << 16],
            dumps: 1,
        };
        state.sync_route_groups()?;
        Ok(Self { shared: Arc::new(Shared { source, netns: current_netns(), state: Mutex::new(state), fd }) })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a table that is at worst stale;
        // the next refresh or dump mends it.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes [`NetlinkSource`] snapshots in this process (of a source with the
    /// same directories) read this table instead of dumping, for as long as
    /// this table lives. Registering twice is harmless.
    pub fn register(&self) {
        let mut all = REGISTERED.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|w| w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), Arc::as_ptr(&self.shared)));
        all.push(Arc::downgrade(&self.shared));
    }

    /// The newest registered table still alive for `source`'s directories.
    pub(crate) fn registered(source: &NetlinkSource) -> Option<LiveNetlink> {
        let netns = current_netns();
        let all = REGISTERED.lock().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .rev()
            .filter_map(Weak::upgrade)
            .find(|s| s.source == *source && netns.is_some() && s.netns == netns)
            .map(|shared| LiveNetlink { shared })
    }

    /// A snapshot, after applying whatever events are queued.
    pub fn read(&self) -> Result<Snapshot, SourceError> {
        let wg_sockets = userspace_wireguard_names(&self.shared.source.wireguard_dir);
        let mut state = self.lock();
        state.refresh(&self.shared.source)?;
        Ok(state.table.snapshot(&wg_sockets))
    }

    /// Applies the queued events; returns the table's generation.
    fn refresh(&self) -> Result<u64, SourceError> {
        let mut state = self.lock();
        state.refresh(&self.shared.source)?;
        Ok(state.generation)
    }

    /// Dumps everything again and keeps the dump; true if the table was not
    /// already equal to it (a lost event: the safety net caught something).
    pub fn redump(&self) -> Result<bool, SourceError> {
        let mut state = self.lock();
        state.refresh(&self.shared.source)?;
        state.redump(&self.shared.source)
    }

    /// Sets the events socket's receive buffer (the kernel doubles it and caps
    /// it at `net.core.rmem_max`). A small one overruns sooner: tests use it to
    /// check that an overrun ends in a dump, not a wrong table.
    pub fn set_receive_buffer(&self, bytes: usize) -> Result<(), SourceError> {
        self.lock().events.set_rx_buf_sz(bytes).map_err(io("netlink receive buffer"))
    }

    /// How many full dumps this source made (the first included).
    pub fn dumps(&self) -> u64 {
        self.lock().dumps
    }

    /// The [`Watcher`] for this source: it resolves when the table changed
    /// (coalescing bursts as [`NetlinkWatcher`](crate::watcher::NetlinkWatcher)
    /// does) and dumps again every [`REDUMP_EVERY`]. Must run inside a tokio
    /// runtime; one watcher per source (they would share the readiness).
    pub fn watcher(&self) -> Result<LiveWatcher, WatchError> {
        self.watcher_every(REDUMP_EVERY)
    }

    /// A watcher that checks against a full dump every `period` instead
    /// (tests that count dumps use a long one).
    pub fn watcher_every(&self, period: Duration) -> Result<LiveWatcher, WatchError> {
        // SAFETY: the descriptor belongs to the socket in `self.shared`, which the
        // watcher holds (`live`) and drops only after `fd` (declared first), so it
        // stays open and unchanged for as long as it is registered.
        let fd = unsafe { AsyncFd::register_with_interest(Fd(self.shared.fd), tokio::io::Interest::READABLE) }
            .map_err(|e| WatchError::Io { what: "netlink register", source: e.into() })?;
        let seen = self.lock().generation;
        Ok(LiveWatcher { fd, live: self.clone(), seen, period, redump_at: Instant::now() + period })
    }
}

impl State {
    /// Reads every queued message and applies it; dumps again after an
    /// overrun, and re-reads the default routes if they may have changed.
    fn refresh(&mut self, source: &NetlinkSource) -> Result<(), SourceError> {
        loop {
            let n = match self.events.recv(&mut &mut self.buf[..], 0) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // Events were lost. What is still queued is older than what
                // was lost: read it all, then dump (below).
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.needs_dump = true;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SourceError::Io { what: "netlink receive", source: e }),
            };
            if !self.needs_dump {
                let (table, stale) = (&mut self.table, &mut self.routes_stale);
                let changed = apply_datagram(&self.buf[..n.min(self.buf.len())], table, stale, source);
                if changed {
                    self.generation += 1;
                }
            }
        }
        if self.needs_dump {
            tracing::debug!("netlink events overran the receive buffer; reading every interface again");
            // Cleared by a dump that succeeds; a failed one is tried again next time.
            self.redump(source)?;
        }
        self.sync_route_groups()?;
        if self.routes_stale {
            let routes =
                if self.table.wants_routes() { source.default_routes(&dump_socket()?, 1)? } else { Vec::new() };
            // Stale until read: a failed read keeps the old routes and tries again.
            self.routes_stale = false;
            if routes != self.table.default_route {
                self.table.default_route = routes;
                self.generation += 1;
            }
        }
        Ok(())
    }

    /// Joins the route groups when the table came to want the default routes,
    /// leaves them when it no longer does. Joining makes the routes stale: a
    /// change before the join was not heard, so they are read after it.
    fn sync_route_groups(&mut self) -> Result<(), SourceError> {
        let want = self.table.wants_routes();
        if want == self.route_groups {
            return Ok(());
        }
        for group in ROUTE_GROUPS {
            if want {
                self.events.add_membership(group).map_err(io("netlink join the route group"))?;
            } else {
                // Not fatal: route messages only come along and are dropped.
                let _ = self.events.drop_membership(group);
            }
        }
        self.route_groups = want;
        self.routes_stale |= want;
        Ok(())
    }

    fn redump(&mut self, source: &NetlinkSource) -> Result<bool, SourceError> {
        let fresh = source.dump_table()?;
        self.dumps += 1;
        (self.needs_dump, self.routes_stale) = (false, false);
        let differed = !self.table.same_as(&fresh);
        // Kept either way: the dump has the kernel's order of addresses.
        self.table = fresh;
        if differed {
            self.generation += 1;
        }
        Ok(differed)
    }
}

/// Applies every message of one datagram; true if the table changed.
/// Malformed messages are skipped (logged): one bad message must not stop
/// the others, and the safety dump mends what it would have said.
fn apply_datagram(data: &[u8], table: &mut Table, routes_stale: &mut bool, source: &NetlinkSource) -> bool {
    let mut changed = false;
    let mut offset = 0;
    while offset < data.len() {
        let Ok(buf) = NetlinkBuffer::new_checked(&data[offset..]) else {
            tracing::debug!("malformed netlink event skipped");
            break;
        };
        let len = buf.length() as usize;
        let kind = buf.message_type();
        if kind == libc::RTM_NEWROUTE || kind == libc::RTM_DELROUTE {
            // The header says whether it is a default route of the main table.
            if let Ok(h) = RouteHeader::parse(buf.payload()) {
                if h.destination_prefix_length == 0
                    && h.table == RouteHeader::RT_TABLE_MAIN
                    && h.kind == RouteType::Unicast
                {
                    *routes_stale = true;
                }
            }
        } else {
            match super::linux::deserialize(&data[offset..]) {
                Ok(NetlinkMessage { payload: NetlinkPayload::InnerMessage(m), .. }) => {
                    let applied = table.apply(&m, source);
                    changed |= applied.changed;
                    *routes_stale |= applied.routes_stale;
                }
                Ok(_) => {}
                Err(e) => tracing::debug!("malformed netlink event skipped: {e}"),
            }
        }
        if len == 0 {
            break;
        }
        offset += (len + 3) & !3;
    }
    changed
}

#[async_trait::async_trait]
impl InterfaceSource for LiveNetlink {
    async fn snapshot(&self) -> Result<Snapshot, SourceError> {
        self.read()
    }
}

/// The calling thread's network namespace (device and inode of its
/// `/proc/thread-self/ns/net`), or `None` when it cannot be told (then no
/// registered table is used: a dump is always right).
fn current_netns() -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net").ok().map(|m| (m.dev(), m.ino()))
}

/// The events socket's descriptor, for the reactor. The socket itself lives
/// in the [`LiveNetlink`] the watcher holds, so it outlives the registration.
struct Fd(RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// The [`Watcher`] of a [`LiveNetlink`]: resolves when its table changed.
pub struct LiveWatcher {
    // Declared first: dropped (deregistered) before `live` may close the socket.
    fd: AsyncFd<Fd>,
    live: LiveNetlink,
    seen: u64,
    period: Duration,
    redump_at: Instant,
}

impl std::fmt::Debug for LiveWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveWatcher").field("seen", &self.seen).finish()
    }
}

impl LiveWatcher {
    async fn wait_readable(&self) -> io::Result<()> {
        let mut guard = self.fd.readable().await?;
        guard.clear_ready();
        Ok(())
    }
}

#[async_trait::async_trait]
impl Watcher for LiveWatcher {
    async fn changed(&mut self) -> Result<(), WatchError> {
        let err = |source| WatchError::Io { what: "netlink receive", source };
        // Wait for the first change of a burst (or a safety dump that found one).
        loop {
            if self.live.refresh()? != self.seen {
                break;
            }
            tokio::select! {
                r = self.wait_readable() => r.map_err(err)?,
                _ = sleep_until(self.redump_at) => {
                    self.redump_at = Instant::now() + self.period;
                    // A full dump is blocking work (milliseconds on a big host):
                    // off the runtime's worker threads.
                    let live = self.live.clone();
                    let redumped = tokio::task::spawn_blocking(move || live.redump())
                        .await
                        .map_err(|e| WatchError::Io { what: "netlink dump", source: io::Error::other(e) })?;
                    if redumped? {
                        tracing::warn!("the interfaces differed from what the netlink events said; read them again");
                    }
                }
            }
        }
        // Coalesce the rest of the burst. After each wake-up, wait [`BATCH`]
        // before reading: a burst of 10,000 changes is some 20,000 messages,
        // and a wake-up for each cost more than all the rest of the work.
        let deadline = Instant::now() + MAX_COALESCE;
        loop {
            let quiet_until = (Instant::now() + QUIET).min(deadline);
            match timeout_at(quiet_until, self.wait_readable()).await {
                Err(_) => break,
                Ok(r) => {
                    r.map_err(err)?;
                    sleep_until((Instant::now() + BATCH).min(deadline)).await;
                    self.live.refresh()?;
                }
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        self.seen = self.live.refresh()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::NetlinkHeader;
    use netlink_packet_route::address::AddressMessage;
    use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
    use netlink_packet_route::route::{RouteAttribute, RouteMessage};
    use netlink_packet_route::RouteNetlinkMessage;

    use super::*;

    fn datagram(msgs: Vec<RouteNetlinkMessage>) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(m));
            packet.finalize();
            let mut buf = vec![0; packet.buffer_len()];
            packet.serialize(&mut buf);
            out.extend_from_slice(&buf);
        }
        out
    }

    fn link(index: u32, name: &str) -> RouteNetlinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.attributes.push(LinkAttribute::IfName(name.into()));
        RouteNetlinkMessage::NewLink(m)
    }

    fn addr(index: u32) -> RouteNetlinkMessage {
        let mut m = AddressMessage::default();
        m.header.index = index;
        m.header.prefix_len = 24;
        m.attributes.push(netlink_packet_route::address::AddressAttribute::Address("10.3.0.1".parse().unwrap()));
        RouteNetlinkMessage::NewAddress(m)
    }

    fn route(prefix: u8, table: u8) -> RouteNetlinkMessage {
        let mut m = RouteMessage::default();
        m.header.destination_prefix_length = prefix;
        m.header.table = table;
        m.header.kind = RouteType::Unicast;
        m.attributes.push(RouteAttribute::Oif(3));
        RouteNetlinkMessage::NewRoute(m)
    }

    fn source() -> NetlinkSource {
        NetlinkSource { wireguard_dir: "/nonexistent".into(), sysfs_net: "/nonexistent".into() }
    }

    #[test]
    fn a_datagram_of_several_messages_is_applied_in_order() {
        let (mut table, mut stale) = (Table::default(), false);
        // A prefix route and a local-table route: not default routes of the main table.
        let data = datagram(vec![link(3, "t3"), addr(3), route(24, RouteHeader::RT_TABLE_MAIN), route(0, 255)]);
        assert!(apply_datagram(&data, &mut table, &mut stale, &source()));
        let snap = table.snapshot(&Default::default());
        assert_eq!(snap.get("t3").unwrap().addresses.len(), 1, "{snap:?}");
        // A new link makes the routes stale by itself; start again from a known table.
        stale = false;
        let data = datagram(vec![route(24, RouteHeader::RT_TABLE_MAIN), addr(3)]);
        assert!(!apply_datagram(&data, &mut table, &mut stale, &source()), "the same address again");
        assert!(!stale, "no default route message");
        let data = datagram(vec![route(0, RouteHeader::RT_TABLE_MAIN)]);
        apply_datagram(&data, &mut table, &mut stale, &source());
        assert!(stale, "a default route of the main table");
    }

    /// The kernel keys an IPv6 address by the address alone: `ip -6 addr
    /// change fd00::1 peer fd00::3` sends one NEWADDR with the new peer, and
    /// the later DELADDR names that peer. No ghost of the old peer may stay.
    #[test]
    fn an_ipv6_address_whose_peer_changed_is_one_address() {
        use netlink_packet_route::address::AddressAttribute;
        use netlink_packet_route::AddressFamily;
        let v6 = |peer: &str, new: bool| {
            let mut m = AddressMessage::default();
            m.header.family = AddressFamily::Inet6;
            m.header.index = 3;
            m.header.prefix_len = 128;
            m.attributes.push(AddressAttribute::Local("fd00::1".parse().unwrap()));
            m.attributes.push(AddressAttribute::Address(peer.parse().unwrap()));
            if new {
                RouteNetlinkMessage::NewAddress(m)
            } else {
                RouteNetlinkMessage::DelAddress(m)
            }
        };
        let (mut table, mut stale) = (Table::default(), false);
        apply_datagram(&datagram(vec![link(3, "t3"), v6("fd00::2", true)]), &mut table, &mut stale, &source());
        apply_datagram(&datagram(vec![v6("fd00::3", true)]), &mut table, &mut stale, &source());
        assert_eq!(table.snapshot(&Default::default()).get("t3").unwrap().addresses.len(), 1, "{table:?}");
        assert!(apply_datagram(&datagram(vec![v6("fd00::3", false)]), &mut table, &mut stale, &source()));
        assert!(table.snapshot(&Default::default()).get("t3").unwrap().addresses.is_empty(), "{table:?}");
    }

    #[test]
    fn malformed_bytes_are_skipped_not_a_panic() {
        let (mut table, mut stale) = (Table::default(), false);
        let mut data = datagram(vec![link(4, "t4")]);
        data.extend_from_slice(&[0xff; 7]);
        assert!(apply_datagram(&data, &mut table, &mut stale, &source()), "the good message before the bytes");
        assert!(!apply_datagram(&[1, 2, 3], &mut table, &mut stale, &source()));
        // A header that claims more than there is.
        let mut short = datagram(vec![link(5, "t5")]);
        short.truncate(short.len() - 4);
        assert!(!apply_datagram(&short, &mut table, &mut stale, &source()));
        assert_eq!(table.snapshot(&Default::default()).interfaces.len(), 1);
    }

    #[tokio::test]
    async fn in_this_namespace_it_reads_what_a_dump_reads() {
        let live = LiveNetlink::new().expect("netlink");
        let _watcher = live.watcher().expect("register");
        let mut a = live.read().expect("live snapshot");
        let mut b = NetlinkSource::default().read().expect("dump");
        for s in [&mut a, &mut b] {
            for i in &mut s.interfaces {
                i.addresses.sort_by_key(|x| (x.addr, x.prefix_len));
            }
        }
        assert_eq!(a, b);
        assert!(a.get("lo").is_some());
        assert_eq!(live.dumps(), 1);
        // Nothing was lost, so a dump finds nothing new (this host may change
        // under us: only asserted when two fresh dumps agree around it).
        let before = NetlinkSource::default().read().expect("dump");
        let differed = live.redump().expect("dump");
        assert_eq!(live.dumps(), 2);
        if NetlinkSource::default().read().expect("dump") == before {
            assert!(!differed, "the table kept by events differed from a dump");
        }
    }

    #[test]
    fn a_registered_table_serves_sources_with_its_directories_while_it_lives() {
        // Directories of this test's own: other tests' sources are not affected.
        let dirs =
            NetlinkSource { wireguard_dir: "/nonexistent/registered-test".into(), sysfs_net: "/sys/class/net".into() };
        assert!(LiveNetlink::registered(&dirs).is_none());
        let live = LiveNetlink::with_source(dirs.clone()).expect("netlink");
        live.register();
        live.register();
        assert!(LiveNetlink::registered(&dirs).is_some_and(|l| Arc::ptr_eq(&l.shared, &live.shared)));
        assert!(LiveNetlink::registered(&source()).is_none(), "other directories: a dump");
        let snap = futures_util::FutureExt::now_or_never(dirs.snapshot()).expect("no await").expect("a snapshot");
        assert!(snap.get("lo").is_some());
        drop(live);
        assert!(LiveNetlink::registered(&dirs).is_none(), "gone with its last owner");
    }
}
