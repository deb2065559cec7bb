//! [`TcpHandler`]: one TCP or TLS service as its accept loops read it: where
//! to forward, who may connect (replaceable by a reload, which makes every
//! open connection check its peer again), and its counters.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::refusals::Refusals;
use crate::gateway::identity::{allowed_now, PeerIdentity, PeerLookup};
use crate::gateway::service::{PeerAccess, Service, Target};
use crate::tls::TlsAcceptor;

/// The name of [`TcpStats::refused_peer`] among [`TcpStats::values`] (the
/// status page samples it).
pub const TCP_REFUSED_PEER: &str = "tcp_refused_peer_total";

/// Counters of one TCP service (`/metrics`, the `service` label).
#[derive(Debug, Default)]
pub struct TcpStats {
    /// Connections accepted (before admission).
    pub accepted: AtomicU64,
    /// Connections admitted and forwarded.
    pub admitted: AtomicU64,
    /// Connections refused: the peer is not allowed (or not known).
    pub refused_peer: AtomicU64,
    /// Connections refused: the address holds its share.
    pub refused_share: AtomicU64,
    /// Connections whose upstream could not be reached in time.
    pub upstream_failed: AtomicU64,
    /// Connections closed for carrying nothing for the idle timeout.
    pub idle_closed: AtomicU64,
    /// Connections ended because their peer lost its access (a reload).
    pub revoked: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
    /// Bytes from clients to the upstream.
    pub bytes_up: AtomicU64,
    /// Bytes from the upstream to clients.
    pub bytes_down: AtomicU64,
}

impl TcpStats {
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters as `(metric suffix, help, value)`, for a scrape.
    pub fn values(&self) -> [(&'static str, &'static str, u64); 10] {
        let v = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("tcp_accepted_total", "TCP connections accepted, before admission", v(&self.accepted)),
            ("tcp_admitted_total", "TCP connections admitted and forwarded", v(&self.admitted)),
            (TCP_REFUSED_PEER, "TCP connections refused: peer not allowed", v(&self.refused_peer)),
            ("tcp_refused_share_total", "TCP connections refused: the address holds its share", v(&self.refused_share)),
            (
                "tcp_upstream_failed_total",
                "TCP connections whose upstream could not be reached",
                v(&self.upstream_failed),
            ),
            ("tcp_idle_closed_total", "TCP connections closed after the idle timeout", v(&self.idle_closed)),
            ("tcp_revoked_total", "TCP connections ended when their peer lost access", v(&self.revoked)),
            ("tcp_open_connections", "TCP connections open now", v(&self.open)),
            ("tcp_bytes_up_total", "bytes from clients to the upstream", v(&self.bytes_up)),
            ("tcp_bytes_down_total", "bytes from the upstream to clients", v(&self.bytes_down)),
        ]
    }
}

/// One TCP or TLS service, shared by its accept loops and connections.
#[derive(Debug)]
pub struct TcpHandler {
    name: Arc<str>,
    target: Target,
    /// `target` when its host is an IP literal: connected to without
    /// parsing the host again per connection (a name is looked up at each).
    literal: Option<SocketAddr>,
    proxy_protocol: bool,
    connect_timeout: Duration,
    idle_timeout: Duration,
    access: ArcSwap<PeerAccess>,
    /// Bumped when `access` changes: open connections check their peer again.
    changed: watch::Sender<u64>,
    pub(crate) tls: Option<Arc<TlsAcceptor>>,
    stats: Arc<TcpStats>,
    pub(crate) refusals: Refusals,
}

impl TcpHandler {
    /// The handler for `service` (a TCP or TLS one; `None` for HTTP).
    pub fn new(service: &Service) -> Option<Self> {
        let target = service.target.clone()?;
        let literal = match &target {
            Target::Tcp { host, port } => host.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, *port)),
            Target::Unix(_) => None,
        };
        Some(Self {
            name: Arc::from(service.name.as_str()),
            target,
            literal,
            proxy_protocol: service.proxy_protocol,
            connect_timeout: service.connect_timeout,
            idle_timeout: service.idle_timeout,
            access: ArcSwap::from_pointee(service.access.clone()),
            changed: watch::channel(0).0,
            tls: service.tls.clone(),
            stats: Arc::default(),
            refusals: Refusals::new(),
        })
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its counters.
    pub fn stats(&self) -> &Arc<TcpStats> {
        &self.stats
    }

    /// Where it forwards.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The target's address when its host is an IP literal.
    pub(crate) fn literal_target(&self) -> Option<SocketAddr> {
        self.literal
    }

    pub(crate) fn proxy_protocol(&self) -> bool {
        self.proxy_protocol
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    pub(crate) fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Replaces who may connect; every open connection checks its peer
    /// against the new access and closes if it is no longer admitted.
    pub fn set_access(&self, access: PeerAccess) {
        self.access.store(Arc::new(access));
        self.changed.send_modify(|n| *n += 1);
    }

    /// Who may connect now.
    pub fn access(&self) -> PeerAccess {
        (**self.access.load()).clone()
    }

    /// A receiver that changes when the access does.
    pub(crate) fn access_changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Whether a connection of `identity` (off loopback) is admitted now.
    pub(crate) fn admits(&self, lookup: Option<&Arc<dyn PeerLookup>>, identity: Option<&PeerIdentity>) -> bool {
        self.access.load().admits(identity, |id| allowed_now(lookup, Some(id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ip_literal_target_is_parsed_once_and_a_name_is_not() {
        let h = |url: &str| TcpHandler::new(&Service::tcp("t", 1, url).unwrap()).unwrap();
        assert_eq!(h("tcp://127.0.0.1:5432").literal_target(), Some("127.0.0.1:5432".parse().unwrap()));
        assert_eq!(h("tcp://[::1]:22").literal_target(), Some("[::1]:22".parse().unwrap()));
        assert_eq!(h("tcp://localhost:22").literal_target(), None);
        assert_eq!(h("unix:/run/x.sock").literal_target(), None);
    }
}
