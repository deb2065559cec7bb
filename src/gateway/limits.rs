//! [`ServerLimits`]: the limits on client connections (head size, idle
//! timeout, open connections, body size of meshgate's own routes) and their
//! defaults, and the hyper HTTP/1 builder they configure.

use std::time::Duration;

/// Default for [`ServerLimits::max_header_bytes`].
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Default for [`ServerLimits::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The smallest `max_header_bytes` hyper accepts (its minimum read buffer).
pub const MIN_HEADER_BYTES: usize = 8192;
/// Default for [`ServerLimits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// The most requests in flight at once on one HTTP/2 connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 128;
/// Default for [`ServerLimits::max_connections_per_address`].
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 64;
/// Default for [`ServerLimits::max_unauthenticated_per_address`].
pub const DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS: usize = 16;
/// Default for [`ServerLimits::max_body_bytes`] (axum's own default for its body
/// extractors, so an embedding program's routes see no change).
pub const DEFAULT_MAX_BODY_BYTES: usize = 2 << 20;

/// Limits on client connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerLimits {
    /// The largest request head (request line and headers); larger gets 431 and
    /// the connection closes. At least [`MIN_HEADER_BYTES`].
    pub max_header_bytes: usize,
    /// The progress deadline of every phase of a connection: how long it may
    /// stay with no request in flight and no complete new request head (so it
    /// bounds idle keep-alive time and slowloris clients), with a request body
    /// waiting for the client's next bytes (nginx's `client_body_timeout`), or
    /// with a response stuck on a client that stopped reading or holds an
    /// HTTP/2 window shut; such a connection is closed between 1 and 1.25 of
    /// this after its last progress. A request in flight that makes progress
    /// is not cut off by it.
    pub idle_timeout: Duration,
    /// The most client connections open at once over all listeners of a
    /// gateway; past it, new connections wait in the listen queue until one
    /// closes. At least 1.
    pub max_connections: usize,
    /// The most connections one caller may hold open on the non-loopback
    /// listeners; past it a new connection is closed as soon as its caller is
    /// known. A caller is a WireGuard key or a tailnet node over all its
    /// addresses; without an identity, an IPv4 address or an IPv6 /64.
    pub max_connections_per_address: usize,
    /// The most connections one caller may hold open before a request on them
    /// has passed with a token, a session or an allowed peer identity (so a
    /// peer without credentials cannot take the cap). At most
    /// `max_connections_per_address`.
    pub max_unauthenticated_per_address: usize,
    /// The largest request body meshgate's own routes (and an embedding
    /// program's, through [`crate::gateway::Gateway`]) accept: a larger `Content-Length`
    /// is answered 413 before the handler runs, and a longer chunked body fails
    /// to read. Requests forwarded to an upstream have their own limit
    /// ([`super::proxy::UpstreamLimits::max_body_bytes`]).
    pub max_body_bytes: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            max_unauthenticated_per_address: DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

impl ServerLimits {
    /// These limits with another header cap (raised to [`MIN_HEADER_BYTES`] if lower).
    pub fn with_max_header_bytes(mut self, bytes: usize) -> Self {
        self.max_header_bytes = bytes.max(MIN_HEADER_BYTES);
        self
    }

    /// These limits with another idle timeout.
    pub fn with_idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }

    /// These limits with another cap on open connections (raised to 1 if 0).
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// These limits with other per-address shares (each raised to 1 if 0).
    pub fn with_per_address(mut self, total: usize, unauthenticated: usize) -> Self {
        self.max_connections_per_address = total.max(1);
        self.max_unauthenticated_per_address = unauthenticated.max(1);
        self
    }

    /// These limits with another request body cap for meshgate's own routes.
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// The HTTP/2 server builder for TLS listeners that negotiated `h2`: the
    /// same head cap (as the header list size), a bounded number of streams.
    pub(crate) fn http2(&self) -> hyper::server::conn::http2::Builder<hyper_util::rt::TokioExecutor> {
        let mut b = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
        let bytes = u32::try_from(self.max_header_bytes.max(MIN_HEADER_BYTES)).unwrap_or(u32::MAX);
        b.max_header_list_size(bytes).max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
        b
    }

    pub(crate) fn http1(&self) -> hyper::server::conn::http1::Builder {
        let mut b = hyper::server::conn::http1::Builder::new();
        let bytes = self.max_header_bytes.max(MIN_HEADER_BYTES);
        // No hyper timer: the idle timeout is kept per connection (see
        // `super::idle`), not by a timer armed for every request head.
        b.keep_alive(true)
            .header_read_timeout(None)
            // One buffer and one write per response instead of a head buffer
            // plus body buffers in a writev: fewer syscall iovecs, measurably
            // cheaper for the small responses that dominate (benches/proxy_load.sh).
            .writev(false)
            .max_header_size(bytes)
            // The read buffer must hold the largest head; bodies stream through it.
            .max_buf_size(bytes.max(64 * 1024));
        b
    }
}
