//! Refused TCP connections, logged aggregated: a scanner or a stranger
//! retrying in a loop must not write one log line per attempt. Each refusal
//! is counted at once (`/metrics`); the log gets at most one line per
//! [`WINDOW`] per service, naming how many were refused from which
//! addresses (the busiest few).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often at most a service logs its refusals.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);
/// How many addresses a line names.
const NAMED: usize = 5;
/// How many addresses a window counts one by one (as `refusals.rs` tracks
/// for HTTP); refusals from any more are counted together, so a scan from
/// many addresses cannot grow the table without bound.
const TRACKED: usize = 1024;

/// Refusals not yet logged.
#[derive(Debug)]
pub(crate) struct Refusals {
    inner: Mutex<Pending>,
}

#[derive(Debug)]
struct Pending {
    /// When the last line was written (none yet: the first refusal is said at once).
    last: Option<Instant>,
    by_address: BTreeMap<IpAddr, u64>,
    /// Refusals from addresses past [`TRACKED`], and how many such addresses.
    others: (u64, u64),
}

impl Refusals {
    pub(crate) fn new() -> Self {
        Self { inner: Mutex::new(Pending { last: None, by_address: BTreeMap::new(), others: (0, 0) }) }
    }

    /// Notes a refusal from `ip`; returns the line to log now, if the window
    /// has passed.
    pub(crate) fn note(&self, ip: IpAddr, now: Instant) -> Option<String> {
        let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if p.by_address.len() >= TRACKED && !p.by_address.contains_key(&ip) {
            p.others.0 += 1;
            p.others.1 += 1;
        } else {
            *p.by_address.entry(ip).or_default() += 1;
        }
        if p.last.is_some_and(|t| now.duration_since(t) < WINDOW) {
            return None;
        }
        p.take(now)
    }

    /// The line for what is pending, if the window has passed (a timer calls it).
    pub(crate) fn flush(&self, now: Instant) -> Option<String> {
        let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if p.by_address.is_empty() || p.last.is_some_and(|t| now.duration_since(t) < WINDOW) {
            return None;
        }
        p.take(now)
    }
}

impl Pending {
    fn take(&mut self, now: Instant) -> Option<String> {
        if self.by_address.is_empty() {
            return None;
        }
        self.last = Some(now);
        let all = std::mem::take(&mut self.by_address);
        let (other_refusals, other_addresses) = std::mem::take(&mut self.others);
        let total: u64 = all.values().sum::<u64>() + other_refusals;
        // An address past the table may repeat: counted as at most one per refusal.
        let addresses = all.len() as u64 + other_addresses;
        let mut busiest: Vec<(IpAddr, u64)> = all.iter().map(|(a, n)| (*a, *n)).collect();
        busiest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut named: Vec<String> = busiest.iter().take(NAMED).map(|(a, n)| format!("{a} ({n})")).collect();
        let unnamed = addresses - named.len() as u64;
        if unnamed > 0 {
            named.push(format!("and {unnamed} more"));
        }
        Some(format!(
            "refused {total} connection{} from {} address{} not allowed on this service: {}",
            if total == 1 { "" } else { "s" },
            addresses,
            if addresses == 1 { "" } else { "es" },
            named.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_refusal_is_said_then_one_line_per_window() {
        let r = Refusals::new();
        let t0 = Instant::now();
        let a: IpAddr = "10.8.0.9".parse().unwrap();
        let b: IpAddr = "10.8.0.7".parse().unwrap();
        assert_eq!(
            r.note(a, t0).unwrap(),
            "refused 1 connection from 1 address not allowed on this service: 10.8.0.9 (1)"
        );
        for i in 0..1000 {
            assert!(r.note(if i % 4 == 0 { b } else { a }, t0 + Duration::from_millis(i)).is_none());
        }
        assert!(r.flush(t0 + Duration::from_secs(5)).is_none());
        let line = r.flush(t0 + WINDOW).unwrap();
        assert_eq!(
            line,
            "refused 1000 connections from 2 addresses not allowed on this service: 10.8.0.9 (750), 10.8.0.7 (250)"
        );
        assert!(r.flush(t0 + WINDOW * 3).is_none(), "nothing pending");
    }

    #[test]
    fn a_scan_from_many_addresses_is_counted_in_a_bounded_table() {
        let r = Refusals::new();
        let t0 = Instant::now();
        let _ = r.note("10.0.0.1".parse().unwrap(), t0);
        for i in 0..5000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a01_0000 + i));
            assert!(r.note(ip, t0 + Duration::from_millis(1)).is_none());
        }
        assert_eq!(r.inner.lock().unwrap().by_address.len(), TRACKED, "the table stops growing");
        let line = r.flush(t0 + WINDOW).unwrap();
        assert!(line.starts_with("refused 5000 connections from 5000 addresses"), "{line}");
        assert!(line.ends_with("and 4995 more"), "{line}");
    }
}
