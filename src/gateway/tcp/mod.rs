//! The TCP forwarder: the protocol handler of `tcp` and `tls` services, on
//! top of the same connection layer as the HTTP stack (listeners, admission,
//! shares, workers, TLS, peer identity).
//!
//! - `handler`: [`TcpHandler`], one service (target, access, counters);
//! - `serve`: the accept loop and each connection's life;
//! - `pipe`: bytes both ways (half-close, resets, idle timeout);
//! - `splice` (Linux): the same between two plain sockets, with `splice(2)`;
//! - `proxy_v2`: the PROXY protocol v2 header;
//! - `refusals`: refused connections, logged aggregated.

mod handler;
mod pipe;
pub mod proxy_v2;
mod refusals;
mod serve;
#[cfg(target_os = "linux")]
mod splice;

pub use handler::{TcpHandler, TcpStats, TCP_REFUSED_PEER};
pub use serve::DRAIN_GRACE;
pub(crate) use serve::{tcp_accept_loop, TcpListen};
