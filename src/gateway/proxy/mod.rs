//! The reverse proxy: every authorized request that is not one of meshgate's own
//! routes goes to one upstream service (`--upstream http://HOST:PORT` or
//! `unix:/PATH`). Bottom to top, each file importing only those above it in
//! this list:
//!
//! - [`upstream`]: where requests go and the limits towards it (the header
//!   rules among them);
//! - `outbound`: the request body on its way out (a plain enum, never boxed);
//! - `pool`: a keep-alive pool of HTTP/1.1 connections to the upstream, on
//!   hyper's client connection API;
//! - [`headers`]: the header rules (hop-by-hop, credentials, look-alikes,
//!   `X-Forwarded-*`);
//! - [`forward`]: [`Proxy`], one exchange over the pool, 502/504/413 pages.

pub mod forward;
pub mod headers;
pub(crate) mod outbound;
pub(crate) mod pool;
pub mod upstream;

pub use forward::{Proxy, POOL_IDLE_TIMEOUT, POOL_MAX_IDLE};
pub use headers::{strip_hop_by_hop, strip_look_alikes, strip_token};
pub use upstream::{
    HeaderRules, Upstream, UpstreamError, UpstreamLimits, DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT,
};
