//! The refusal log: refused requests counted by address and reason, and
//! written as a few lines, not one per request.
//!
//! A client without credentials (or a page borrowing a peer's identity) can
//! send thousands of requests a second; one WARN line each filled 36 MB of
//! log in 15 s. Here the first refusal of an address for a reason is written
//! at once (with its path), later ones are counted, and each address's count
//! is written as "N refused from ADDR in 10 s (reason)" when its window ends.
//! Over everything sits a hard cap of [`MAX_LINES_PER_SECOND`]: a line that
//! would pass it is not lost but postponed, its count kept and carried into
//! the next line for that address, so the sum of the counts written is
//! always the number refused. Addresses beyond [`MAX_TRACKED`] share one
//! entry ("other addresses"), so a flood from many addresses cannot grow the
//! table without bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How long refusals of one address for one reason are counted before their
/// count is written.
pub const WINDOW: Duration = Duration::from_secs(10);
/// At most this many refusal lines a second, whatever the flood.
pub const MAX_LINES_PER_SECOND: u32 = 5;
/// Addresses counted one by one; the rest share one entry.
pub const MAX_TRACKED: usize = 1024;

/// Why a request was refused, as the log groups them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Reason {
    /// No valid token, session or allowed peer (401).
    Unauthorized,
    /// A session cookie alone on a request from another origin (403).
    SessionCrossOrigin,
    /// Ambient credentials with a `Host` that does not name the listener (421).
    ForeignHost,
    /// Ambient credentials on a cross-site request (403).
    CrossSite,
    /// A cross-origin upgrade (403): with ambient credentials, or on any
    /// listener when the origin is not allowed.
    CrossOriginUpgrade,
    /// More than one `Host` line (400).
    RepeatedHost,
    /// A `Host` the loopback door does not answer to (421).
    LoopbackHost,
    /// A malformed `Host` on the loopback door (400).
    MalformedHost,
    /// A sign-in posted from another origin (403).
    SigninCrossOrigin,
    /// Sign-in attempts past the limit of an address (429).
    SigninTooMany,
}

impl Reason {
    /// The phrase in the log line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "no valid bearer token, session or allowed peer",
            Self::SessionCrossOrigin => "a session cookie alone on a request from another origin",
            Self::ForeignHost => "a Host that does not name the listener, under a peer identity or session",
            Self::CrossSite => "a cross-site request under a peer identity or session",
            Self::CrossOriginUpgrade => "a cross-origin upgrade (WebSocket hijacking?)",
            Self::RepeatedHost => "more than one Host header",
            Self::LoopbackHost => "a foreign Host on the loopback door (DNS rebinding?)",
            Self::MalformedHost => "a malformed Host on the loopback door",
            Self::SigninCrossOrigin => "a sign-in posted from another origin",
            Self::SigninTooMany => "too many sign-in attempts (429 for a minute)",
        }
    }
}

/// One line the log writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// The first refusal of an address for a reason in a while.
    First {
        /// The client's address (`None`: one of the addresses past [`MAX_TRACKED`]).
        addr: Option<IpAddr>,
        /// Why.
        reason: Reason,
        /// The path it asked for.
        path: String,
    },
    /// Refusals counted since the last line for this address and reason.
    Count {
        /// The client's address (`None`: the addresses past [`MAX_TRACKED`]).
        addr: Option<IpAddr>,
        /// Why.
        reason: Reason,
        /// How many.
        count: u64,
        /// Over how long.
        over: Duration,
    },
}

impl Line {
    /// How many refusals this line reports.
    pub fn count(&self) -> u64 {
        match self {
            Self::First { .. } => 1,
            Self::Count { count, .. } => *count,
        }
    }
}

#[derive(Debug)]
struct Entry {
    /// When the current window started.
    since: Instant,
    /// Refusals not yet written.
    count: u64,
    /// True once the window's first refusal was written (or postponed).
    started: bool,
}

#[derive(Debug)]
struct Inner {
    entries: HashMap<(Option<IpAddr>, Reason), Entry>,
    /// The cap: the second the budget is for, and lines left in it.
    second: Option<Instant>,
    left: u32,
    last_sweep: Option<Instant>,
}

/// The refusal log (one per gateway, shared by every clone of its state).
#[derive(Debug)]
pub struct RefusalLog {
    inner: Mutex<Inner>,
    /// Where lines go: `tracing` in a gateway, a vector in tests.
    sink: fn(&Line),
    /// True once a sweeper task runs (lines for quiet addresses are then
    /// written when their window ends, not at the next refusal).
    sweeping: std::sync::atomic::AtomicBool,
}

impl Default for RefusalLog {
    fn default() -> Self {
        Self::with_sink(write_line)
    }
}

/// The `tracing` record of a line.
fn write_line(line: &Line) {
    let addr = |a: &Option<IpAddr>| a.map_or_else(|| "other addresses".to_owned(), |a| a.to_string());
    match line {
        Line::First { addr: a, reason, path } => tracing::warn!(
            peer = %addr(a),
            path = %path,
            "refused a request: {} (more from this address are counted and reported every {} s)",
            reason.as_str(),
            WINDOW.as_secs()
        ),
        Line::Count { addr: a, reason, count, over } => {
            tracing::warn!(peer = %addr(a), "{count} refused from {} in {} s: {}", addr(a), over.as_secs().max(1), reason.as_str())
        }
    }
}

impl RefusalLog {
    /// A log writing its lines to `sink`.
    pub fn with_sink(sink: fn(&Line)) -> Self {
        Self {
            inner: Mutex::new(Inner { entries: HashMap::new(), second: None, left: 0, last_sweep: None }),
            sink,
            sweeping: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Counts one refusal of `addr` for `reason` (on `path`), writing what is due.
    pub fn record(self: &Arc<Self>, addr: Option<IpAddr>, reason: Reason, path: &str) {
        self.start_sweeper();
        self.record_at(Instant::now(), addr, reason, path);
    }

    /// [`record`](Self::record) at `now` (tests drive the clock).
    pub fn record_at(&self, now: Instant, addr: Option<IpAddr>, reason: Reason, path: &str) {
        let mut lines = Vec::new();
        {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let key = if inner.entries.len() >= MAX_TRACKED && !inner.entries.contains_key(&(addr, reason)) {
                (None, reason)
            } else {
                (addr, reason)
            };
            let entry = inner.entries.entry(key).or_insert(Entry { since: now, count: 0, started: false });
            let first = !std::mem::replace(&mut entry.started, true);
            if first && inner.take_line(now) {
                lines.push(Line::First { addr: key.0, reason, path: path.chars().take(200).collect() });
            } else if let Some(e) = inner.entries.get_mut(&key) {
                // Counted (a first line over the cap is postponed into the count).
                e.count += 1;
            }
            if inner.last_sweep.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
                inner.sweep(now, &mut lines);
            }
        }
        for line in &lines {
            (self.sink)(line);
        }
    }

    /// Writes the counts whose window has ended (as far as the cap allows).
    pub fn flush_at(&self, now: Instant) {
        let mut lines = Vec::new();
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).sweep(now, &mut lines);
        for line in &lines {
            (self.sink)(line);
        }
    }

    /// Refusals counted and not yet written (tests).
    pub fn pending(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).entries.values().map(|e| e.count).sum()
    }

    /// Starts, once and where there is a runtime, a task that writes ended
    /// windows every second; it ends with the log.
    fn start_sweeper(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.sweeping.load(Ordering::Relaxed) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        handle.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(log) => log.flush_at(Instant::now()),
                    None => return,
                }
            }
        });
    }
}

impl Inner {
    /// True when the cap allows one more line in `now`'s second (and takes it).
    fn take_line(&mut self, now: Instant) -> bool {
        if self.second.is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1)) {
            self.second = Some(now);
            self.left = MAX_LINES_PER_SECOND;
        }
        if self.left == 0 {
            return false;
        }
        self.left -= 1;
        true
    }

    /// Moves ended windows into `lines` while the cap allows; forgets
    /// entries whose window ended with nothing to say.
    fn sweep(&mut self, now: Instant, lines: &mut Vec<Line>) {
        self.last_sweep = Some(now);
        let mut due: Vec<(Option<IpAddr>, Reason)> =
            self.entries.iter().filter(|(_, e)| now.duration_since(e.since) >= WINDOW).map(|(k, _)| *k).collect();
        // The oldest first, so a postponed count is not postponed forever.
        due.sort_by_key(|k| self.entries.get(k).map(|e| e.since));
        for key in due {
            let Some(count) = self.entries.get(&key).map(|e| e.count) else { continue };
            if count == 0 {
                self.entries.remove(&key);
                continue;
            }
            if !self.take_line(now) {
                // Over the cap: kept, counting on, written in a later second.
                continue;
            }
            if let Some(e) = self.entries.remove(&key) {
                lines.push(Line::Count {
                    addr: key.0,
                    reason: key.1,
                    count: e.count,
                    over: now.duration_since(e.since),
                });
            }
            // The address's next refusal starts a new window with a line of its own.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    static LINES: StdMutex<Vec<(u64, Line)>> = StdMutex::new(Vec::new());
    /// The test's start and its clock now.
    static CLOCK: StdMutex<Option<(Instant, Instant)>> = StdMutex::new(None);

    #[test]
    fn a_flood_of_refusals_writes_a_bounded_number_of_lines_and_the_right_count() {
        // The sink is a plain fn: collect through a static, one test only uses it.
        fn collect(line: &Line) {
            let (start, now) = CLOCK.lock().unwrap().expect("the clock is set");
            LINES.lock().unwrap().push((now.duration_since(start).as_millis() as u64, line.clone()));
        }
        let log = RefusalLog::with_sink(collect);
        let start = Instant::now();
        let flood: IpAddr = [10, 77, 0, 9].into();
        let mut sent = 0u64;
        let mut lines_by_second: HashMap<u64, u32> = HashMap::new();
        // 60 s: one address at 2,000 refusals a second, and 3,000 other
        // addresses (past MAX_TRACKED) once each during the first 3 s.
        for ms in 0..60_000u64 {
            let now = start + Duration::from_millis(ms);
            *CLOCK.lock().unwrap() = Some((start, now));
            for _ in 0..2 {
                log.record_at(now, Some(flood), Reason::Unauthorized, "/api");
                sent += 1;
            }
            if ms < 3_000 {
                let other: IpAddr = std::net::Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(ms)).into();
                log.record_at(now, Some(other), Reason::CrossSite, "/x");
                sent += 1;
            }
        }
        // Then quiet: the sweeper writes what is left within the cap.
        for s in 60..600u64 {
            let now = start + Duration::from_secs(s);
            *CLOCK.lock().unwrap() = Some((start, now));
            log.flush_at(now);
        }
        let lines = LINES.lock().unwrap().clone();
        for (at, _) in &lines {
            *lines_by_second.entry(at / 1000).or_default() += 1;
        }
        let worst = lines_by_second.values().max().copied().unwrap_or(0);
        assert!(worst <= MAX_LINES_PER_SECOND, "{worst} lines in one second");
        let written: u64 = lines.iter().map(|(_, l)| l.count()).sum();
        assert_eq!(log.pending(), 0, "counts left unwritten");
        assert_eq!(written, sent, "the lines report {written} refusals of {sent}");
        // The flooding address: a first line, then a line per window once the
        // backlog of older counts is written (the oldest go first).
        let flood_lines = lines
            .iter()
            .filter(|(_, l)| matches!(l, Line::First { addr: Some(a), .. } | Line::Count { addr: Some(a), .. } if *a == flood))
            .count();
        assert!((2..=14).contains(&flood_lines), "{flood_lines} lines for 120,000 refusals of one address");
        // 123,000 refusals: about one line per address counted one by one,
        // however many refusals each sent (the ~2,000 past the table share one).
        assert!(lines.len() <= MAX_TRACKED + 20, "{} lines", lines.len());
        assert!(
            lines.iter().any(|(_, l)| matches!(l, Line::Count { addr: None, reason: Reason::CrossSite, .. })),
            "no line for the addresses past the table"
        );
    }

    #[test]
    fn a_single_refusal_is_written_at_once_and_a_quiet_address_is_forgotten() {
        fn nothing(_: &Line) {}
        let log = RefusalLog::with_sink(nothing);
        let t = Instant::now();
        let a: IpAddr = [192, 0, 2, 7].into();
        log.record_at(t, Some(a), Reason::ForeignHost, "/");
        assert_eq!(log.pending(), 0, "the first refusal is its own line");
        log.record_at(t + Duration::from_secs(1), Some(a), Reason::ForeignHost, "/");
        assert_eq!(log.pending(), 1);
        log.flush_at(t + WINDOW);
        assert_eq!(log.pending(), 0);
        log.flush_at(t + WINDOW * 3);
        assert!(log.inner.lock().unwrap().entries.is_empty(), "a quiet address stays in the table");
    }
}
