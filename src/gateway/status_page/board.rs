//! The status page's memory, kept in [`AppState`](crate::gateway::AppState):
//! what the running program says about itself ([`PageInfo`]: its services,
//! its certificate, its peer rules), a bounded ring of recent events
//! (attach, detach, fallback, reload, refusals counted by reason), samples
//! of the request counter, from which the request-rate graph is drawn, and
//! the last read of the WireGuard peers (one read answers every view for
//! [`PEERS_FRESH`]).
//!
//! Nothing here runs on its own: the counters are sampled whenever the page
//! or `/status` is read, and every [`SAMPLE_EVERY`] by a program that asks
//! (`meshgate serve` does), and the count between two samples is spread evenly
//! over the time between them (the graph shows an average where nobody
//! looked, never a made-up peak). The
//! counters start at zero with the state, and so does the first sample, so
//! the history is exact from start at the resolution of the reads.
//!
//! It imports nothing of the gateway but the peer rules' type and the
//! certificate resolver's, so the request context can hold it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use meshgate_core::wgpeer::Peer;
use serde::Serialize;

use crate::gateway::identity::SharedPeerRules;
use crate::tls::CertResolver;

/// How many tailnet callers the board remembers (the least recently seen goes).
pub const TAILNET_CALLERS_KEPT: usize = 64;
/// How many events the ring keeps.
pub const EVENTS_KEPT: usize = 200;
/// Events of one kind and text within this many seconds are one line, counted.
pub const COALESCE_SECONDS: u64 = 60;
/// The graph's bar width, in seconds.
pub const BUCKET_SECONDS: u64 = 10;
/// How many bars (10 minutes).
pub const BUCKETS: usize = 60;
/// Samples closer together than this are one (a page polled by several browsers).
const MIN_SAMPLE_GAP: f64 = 0.5;
/// How often a program samples the counters while nobody looks ([`StatusBoard::sample`];
/// `meshgate serve` does), so that a refusal is an event at about the time it
/// happened rather than at the next view.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// How long one read of the WireGuard peers answers every view and `/status`
/// (each open page polls once a second; ten pages cost one read, not ten).
pub const PEERS_FRESH: Duration = Duration::from_secs(1);

/// The WireGuard peers of the interfaces served, as read from the OS: per
/// interface its name, `kernel` or `userspace`, and its peers or why not.
pub type PeerRead = Vec<(String, &'static str, Result<Vec<Peer>, String>)>;

/// The last [`PeerRead`], for which interfaces, and when.
type PeerSlot = Option<(Instant, Vec<String>, Arc<PeerRead>)>;

/// One service as the page shows it: today's gateway is one (the upstream it
/// fronts, or meshgate's own routes); a program serving several describes
/// each, and a service with a `port` owns the listeners on that port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceInfo {
    /// Its name (`dashboard`, `postgres`).
    pub name: String,
    /// `http`, `tcp` or `tls`.
    pub protocol: String,
    /// Where it forwards to (`http://127.0.0.1:3000`); `None`: meshgate's own routes.
    pub upstream: Option<String>,
    /// The port its listeners use; `None`: every listener is its.
    pub port: Option<u16>,
}

impl ServiceInfo {
    /// The single HTTP service of a gateway with one upstream (or none).
    pub fn single(upstream: Option<String>) -> Self {
        Self { name: "meshgate".into(), protocol: "http".into(), upstream, port: None }
    }
}

/// Where the served certificate comes from, and where its CA can be downloaded.
#[derive(Debug, Clone)]
pub struct TlsSource {
    /// In words: `own certificate files`, `self-signed`, `internal CA`, `tailscale`.
    pub mode: String,
    /// The certificate served now (read afresh at every render: a reload
    /// shows at once); `None` when it cannot be read here.
    pub resolver: Option<Arc<CertResolver>>,
    /// A same-origin path where the CA certificate is downloaded (internal CA mode).
    pub ca_url: Option<String>,
}

/// What the program tells the page about itself (the library does not know
/// its upstream, where its certificate came from, or the `[peers]` names).
#[derive(Debug, Clone, Default)]
pub struct PageInfo {
    /// Its services (empty: one, meshgate's own routes or the app served).
    pub services: Vec<ServiceInfo>,
    /// Its certificate, when it serves TLS.
    pub tls: Option<TlsSource>,
    /// The `[peers]` names and the allow-list in force (shared with the peer
    /// lookups, so a reload shows at once).
    pub rules: Option<SharedPeerRules>,
}

/// What kind of thing happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A listener opened.
    Attach,
    /// A listener closed.
    Detach,
    /// Loopback stands in, or stands down.
    Fallback,
    /// The configuration was read again (SIGHUP).
    Reload,
    /// Requests or connections refused, counted by reason.
    Refused,
}

/// One line of the recent events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoardEvent {
    /// When it (first) happened, seconds since the Unix epoch.
    pub at: u64,
    /// When it last happened (the same as `at` for a single one).
    pub last: u64,
    /// What kind.
    pub kind: EventKind,
    /// In words.
    pub text: String,
    /// How many times (refusals: how many were refused).
    pub count: u64,
}

/// A tailnet caller tailscaled named (`whois`), as the page lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TailnetCaller {
    /// Its login (`alice@example.com`, or `tagged-devices` for a tagged node).
    pub login: Option<String>,
    /// Its node name.
    pub node: Option<String>,
    /// Its ACL tags.
    pub tags: Vec<String>,
    /// Its tailnet address, as last seen.
    pub address: Option<String>,
    /// True when it was let in without a token at its last request.
    pub allowed: bool,
    /// Its last request, seconds since the Unix epoch.
    pub last_seen: u64,
    /// Its requests since the gateway started (while remembered).
    pub requests: u64,
}

/// The counters sampled, at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Responses sent so far.
    pub responses: u64,
    /// Refusals so far, each with its reason in words.
    pub refusals: Vec<(String, u64)>,
}

#[derive(Debug)]
struct Samples {
    /// (seconds since the epoch, responses so far), oldest first.
    points: VecDeque<(f64, u64)>,
    /// The refusal counters at the last sample.
    refusals: Vec<(String, u64)>,
}

/// The page's memory (see the module doc).
#[derive(Debug)]
pub struct StatusBoard {
    info: ArcSwap<PageInfo>,
    events: Mutex<VecDeque<BoardEvent>>,
    /// Least recently seen first.
    tailnet: Mutex<VecDeque<TailnetCaller>>,
    samples: Mutex<Samples>,
    /// One read at a time; the views that come meanwhile wait and share it.
    peers: tokio::sync::Mutex<PeerSlot>,
    peer_reads: AtomicU64,
}

impl Default for StatusBoard {
    fn default() -> Self {
        Self::starting_at(now_f64())
    }
}

fn now_f64() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl StatusBoard {
    /// A board whose counters were zero at `start` (seconds since the epoch).
    pub fn starting_at(start: f64) -> Self {
        let mut points = VecDeque::new();
        points.push_back((start, 0));
        Self {
            info: ArcSwap::from_pointee(PageInfo::default()),
            events: Mutex::default(),
            tailnet: Mutex::default(),
            samples: Mutex::new(Samples { points, refusals: Vec::new() }),
            peers: tokio::sync::Mutex::new(None),
            peer_reads: AtomicU64::new(0),
        }
    }

    /// The peers of the interfaces `names`: the last read if it is for the
    /// same interfaces and younger than [`PEERS_FRESH`], else `read()`'s
    /// (awaited by one caller while the others wait for it).
    pub async fn peers<F, Fut>(&self, names: &[String], read: F) -> Arc<PeerRead>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = PeerRead>,
    {
        let mut slot = self.peers.lock().await;
        if let Some((at, of, last)) = &*slot {
            if of == names && at.elapsed() < PEERS_FRESH {
                return last.clone();
            }
        }
        let fresh = Arc::new(read().await);
        *slot = Some((Instant::now(), names.to_vec(), fresh.clone()));
        fresh
    }

    /// Counts a read of the peers from the OS.
    pub fn count_peer_read(&self) {
        self.peer_reads.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times the peers were read from the OS.
    pub fn peer_reads(&self) -> u64 {
        self.peer_reads.load(Ordering::Relaxed)
    }

    /// Tells the page about the program's services, certificate and peer rules.
    pub fn describe(&self, info: PageInfo) {
        self.info.store(Arc::new(info));
    }

    /// What the program said ([`describe`](Self::describe)).
    pub fn info(&self) -> Arc<PageInfo> {
        self.info.load_full()
    }

    /// Records an event now.
    pub fn note(&self, kind: EventKind, text: impl Into<String>) {
        self.note_at(now_f64() as u64, kind, text.into(), 1);
    }

    fn note_at(&self, at: u64, kind: EventKind, text: String, count: u64) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = events.back_mut() {
            if last.kind == kind && last.text == text && at.saturating_sub(last.at) < COALESCE_SECONDS {
                last.count += count;
                last.last = at;
                return;
            }
        }
        if events.len() >= EVENTS_KEPT {
            events.pop_front();
        }
        events.push_back(BoardEvent { at, last: at, kind, text, count });
    }

    /// Counts a request of a tailnet caller (`login` and `node` name it),
    /// from `address`, let in without a token or not, now.
    pub fn seen_tailnet(
        &self,
        login: Option<&str>,
        node: Option<&str>,
        tags: &[String],
        address: Option<String>,
        allowed: bool,
    ) {
        self.seen_tailnet_at(now_f64() as u64, login, node, tags, address, allowed);
    }

    /// [`seen_tailnet`](Self::seen_tailnet) with the clock as a parameter.
    pub fn seen_tailnet_at(
        &self,
        at: u64,
        login: Option<&str>,
        node: Option<&str>,
        tags: &[String],
        address: Option<String>,
        allowed: bool,
    ) {
        let mut callers = self.tailnet.lock().unwrap_or_else(|e| e.into_inner());
        let known = callers.iter().position(|c| c.login.as_deref() == login && c.node.as_deref() == node);
        let mut caller = match known.and_then(|i| callers.remove(i)) {
            Some(c) => c,
            None => {
                if callers.len() >= TAILNET_CALLERS_KEPT {
                    callers.pop_front();
                }
                TailnetCaller {
                    login: login.map(str::to_owned),
                    node: node.map(str::to_owned),
                    tags: Vec::new(),
                    address: None,
                    allowed,
                    last_seen: at,
                    requests: 0,
                }
            }
        };
        // Per request of a tailnet caller: copy the tags only when they changed.
        if caller.tags != tags {
            caller.tags = tags.to_vec();
        }
        if address.is_some() {
            caller.address = address;
        }
        caller.allowed = allowed;
        caller.last_seen = caller.last_seen.max(at);
        caller.requests += 1;
        callers.push_back(caller);
    }

    /// The tailnet callers remembered, most recently seen first.
    pub fn tailnet_callers(&self) -> Vec<TailnetCaller> {
        self.tailnet.lock().unwrap_or_else(|e| e.into_inner()).iter().rev().cloned().collect()
    }

    /// The recent events, newest first.
    pub fn events(&self) -> Vec<BoardEvent> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).iter().rev().cloned().collect()
    }

    /// Samples the counters now: adds a point to the rate history and an
    /// event for each refusal counter that grew since the last sample.
    pub fn sample(&self, counters: &Counters) {
        self.sample_at(now_f64(), counters);
    }

    /// [`sample`](Self::sample) with the clock as a parameter.
    pub fn sample_at(&self, now: f64, counters: &Counters) {
        let grown: Vec<(String, u64)> = {
            let mut s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
            let grown = counters
                .refusals
                .iter()
                .filter_map(|(reason, n)| {
                    let before = s.refusals.iter().find(|(r, _)| r == reason).map_or(0, |(_, b)| *b);
                    (*n > before).then(|| (reason.clone(), n - before))
                })
                .collect();
            s.refusals.clone_from(&counters.refusals);
            let last = s.points.back().copied();
            match last {
                Some((t, _)) if now - t < MIN_SAMPLE_GAP => {
                    if let Some(p) = s.points.back_mut() {
                        p.1 = p.1.max(counters.responses);
                    }
                }
                _ => s.points.push_back((now, counters.responses)),
            }
            // Keep one point older than the window, so its first bar is known.
            let window = (BUCKET_SECONDS * BUCKETS as u64) as f64;
            while s.points.len() > 2 && s.points[1].0 < now - window {
                s.points.pop_front();
            }
            grown
        };
        for (reason, n) in grown {
            self.note_at(now as u64, EventKind::Refused, reason, n);
        }
    }

    /// Responses per bar over the last [`BUCKETS`] × [`BUCKET_SECONDS`],
    /// oldest first, ending at `now`; `None` for a bar before the first sample.
    pub fn rate(&self, now: f64) -> Vec<Option<u64>> {
        let s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let points: Vec<(f64, u64)> = s.points.iter().copied().collect();
        drop(s);
        // The count so far at `t`, interpolated between samples; past the
        // last sample it is the last count (nothing is known to have come).
        let at = |t: f64| -> Option<f64> {
            let first = points.first()?;
            if t < first.0 {
                return None;
            }
            let i = points.partition_point(|p| p.0 <= t);
            let (t0, c0) = points[i - 1];
            match points.get(i) {
                None => Some(c0 as f64),
                Some(&(t1, c1)) => {
                    let f = if t1 > t0 { (t - t0) / (t1 - t0) } else { 1.0 };
                    Some(c0 as f64 + f * (c1.saturating_sub(c0)) as f64)
                }
            }
        };
        let width = BUCKET_SECONDS as f64;
        (0..BUCKETS)
            .map(|i| {
                let end = now - width * (BUCKETS - 1 - i) as f64;
                let start = end - width;
                match (at(start), at(end)) {
                    (Some(a), Some(b)) => Some((b - a).max(0.0).round() as u64),
                    // The bar the first sample falls in: count from the sample.
                    (None, Some(b)) if points.first().is_some_and(|p| p.0 <= end) => {
                        Some((b - points[0].1 as f64).max(0.0).round() as u64)
                    }
                    _ => None,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(responses: u64, refused: u64) -> Counters {
        Counters { responses, refusals: vec![("no credentials (401)".to_owned(), refused)] }
    }

    #[test]
    fn the_rate_spreads_a_count_over_the_time_between_samples() {
        let t0 = 1_000_000.0;
        let board = StatusBoard::starting_at(t0);
        // 60 responses over the first 60 s, then 100 in the next 10 s.
        board.sample_at(t0 + 60.0, &counters(60, 0));
        board.sample_at(t0 + 70.0, &counters(160, 0));
        let bars = board.rate(t0 + 70.0);
        assert_eq!(bars.len(), BUCKETS);
        assert_eq!(bars[BUCKETS - 1], Some(100));
        for bar in &bars[BUCKETS - 7..BUCKETS - 1] {
            assert_eq!(*bar, Some(10), "{bars:?}");
        }
        // Before the gateway started, nothing is known.
        assert_eq!(bars[0], None);
        assert_eq!(bars.iter().flatten().sum::<u64>(), 160);
    }

    #[test]
    fn refusals_become_counted_events_and_repeats_coalesce() {
        let t0 = 2_000_000.0;
        let board = StatusBoard::starting_at(t0);
        board.sample_at(t0 + 1.0, &counters(0, 3));
        board.sample_at(t0 + 2.0, &counters(0, 3));
        board.sample_at(t0 + 5.0, &counters(0, 5));
        let events = board.events();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(
            (events[0].kind, events[0].count, events[0].text.as_str()),
            (EventKind::Refused, 5, "no credentials (401)")
        );
        // A minute on, it is a new line.
        board.sample_at(t0 + 100.0, &counters(0, 6));
        let events = board.events();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].count, 1);
        board.note(EventKind::Attach, "10.0.0.1:1");
        assert_eq!(board.events()[0].kind, EventKind::Attach);
    }

    #[test]
    fn tailnet_callers_are_counted_and_bounded() {
        let board = StatusBoard::default();
        let tags = vec!["tag:ci".to_owned()];
        board.seen_tailnet_at(10, Some("alice@example.com"), Some("laptop"), &[], Some("100.64.0.2".into()), true);
        board.seen_tailnet_at(20, Some("tagged-devices"), Some("runner"), &tags, Some("100.64.0.3".into()), false);
        board.seen_tailnet_at(30, Some("alice@example.com"), Some("laptop"), &[], Some("100.64.0.9".into()), true);
        let seen = board.tailnet_callers();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(
            (seen[0].login.as_deref(), seen[0].requests, seen[0].last_seen, seen[0].address.as_deref()),
            (Some("alice@example.com"), 2, 30, Some("100.64.0.9"))
        );
        assert_eq!((seen[1].tags.clone(), seen[1].allowed), (tags, false));
        for i in 0..TAILNET_CALLERS_KEPT {
            board.seen_tailnet_at(40 + i as u64, Some(&format!("u{i}@example.com")), None, &[], None, false);
        }
        let seen = board.tailnet_callers();
        assert_eq!(seen.len(), TAILNET_CALLERS_KEPT);
        // The least recently seen went first: the tagged node, then alice.
        assert!(seen.iter().all(|c| c.login.as_deref() != Some("tagged-devices")));
        assert!(seen.iter().all(|c| c.login.as_deref() != Some("alice@example.com")));
    }

    #[test]
    fn the_ring_is_bounded() {
        let board = StatusBoard::default();
        for i in 0..EVENTS_KEPT + 10 {
            board.note(EventKind::Attach, format!("listener {i}"));
        }
        let events = board.events();
        assert_eq!(events.len(), EVENTS_KEPT);
        assert_eq!(events[0].text, format!("listener {}", EVENTS_KEPT + 9));
    }
}
