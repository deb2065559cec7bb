//! The gateway: everything that serves on a [`Resolution`](meshgate_core::Resolution),
//! as a library. `meshgate serve` is one caller; a program with its own axum
//! router is another ([`Gateway`]).
//!
//! Bottom to top, each module importing only modules above it in this list
//! (ARCHITECTURE.md has the whole map):
//!
//! - [`token`], [`browser`], [`limits`], `idle`: leaves (the secret, the
//!   `Host`/`Origin` guard, connection limits, per-connection timers);
//! - [`workers`]: a leaf too (threads with a runtime each, serving the
//!   connections handed to them);
//! - [`session`], [`identity`]: leaves too (signed session cookies; the
//!   caller's mesh identity and the `Meshgate-Peer-*` headers);
//! - [`metrics`]: response counters (atomics), the access log and the
//!   Prometheus text of `/metrics`; a leaf too;
//! - [`refusals`]: the refusal log (counts by address and reason, a lines/s
//!   cap); a leaf too;
//! - [`context`]: the state every request reads ([`AppState`], [`ListenerCtx`]);
//! - [`auth`]: the check (token, session, allowed peer; sign-in redirect);
//! - [`signin`]: the sign-in page and its `POST`s;
//! - [`proxy`]: the reverse proxy (upstream, pool, header rules, forwarding),
//!   and `body`, the response body both paths send;
//! - [`status_page`]: the status page (its memory, `board`, sits below
//!   [`context`]; the rest above [`auth`]);
//! - [`routes`]: meshgate's own routes and the router in front of an upstream;
//! - [`bind`], `accept`, [`listeners`]: sockets, accept loops, the live set;
//! - [`event`], [`follow`], [`signal`], `error`, `builder`: the [`Gateway`] API.

mod accept;
mod admission;
pub mod auth;
pub mod bind;
pub(crate) mod body;
pub mod browser;
mod builder;
pub mod context;
mod error;
pub mod event;
pub mod follow;
pub mod identity;
mod idle;
pub mod limits;
pub mod listeners;
pub mod metrics;
pub mod proxy;
pub mod refusals;
pub mod routes;
pub mod session;
pub mod signal;
pub mod signin;
mod slots;
pub mod status_page;
pub mod tailnet;
pub mod token;
pub mod wgpeers;
pub mod workers;

pub use bind::{bind_all, display_addr, BindError, BindErrorKind, Bound};
pub use browser::{AmbientRefusal, BrowserPolicy, GuardRefusal, HostNames};
pub use builder::{check_auth, Gateway, GatewayBuilder, Running, DEFAULT_PORT, SHUTDOWN_GRACE};
pub use context::{
    AppState, CredentialCell, Credentials, ListenerCtx, LiveListener, LiveView, Revocation, MESHGATE_PREFIX,
    UPSTREAM_HEALTHZ,
};
pub use error::Error;
pub use event::Event;
pub use identity::{MeshPeers, PeerIdentity, PeerLookup, PeerRules, SharedPeerRules};
pub use limits::{
    ServerLimits, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HEADER_BYTES,
    MIN_HEADER_BYTES,
};
pub use listeners::{Applied, ControlError, Controls, Https, ListenerSet};
pub use proxy::{Proxy, Upstream, UpstreamLimits};
pub use routes::{app, meshgate_routes, meshgate_routes_at, upstream_app};
pub use signal::shutdown_signal;
pub use tailnet::TailnetPeers;
pub use token::{Token, TokenError};
pub use wgpeers::WireGuardPeers;
pub use workers::Workers;
