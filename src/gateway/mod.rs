//! The gateway: everything that serves on a [`Resolution`](meshgate_core::Resolution).
//!
//! - [`listeners`]: binds the resolution's addresses (all or nothing at start) and
//!   keeps one accept loop per address, adding and removing them later.
//! - [`routes`]: the axum routers (`/healthz`, `/status`, `/ws`, or the same
//!   under `/_meshgate/` in front of an upstream) and their state.
//! - [`upstream`]: the reverse proxy to `--upstream`.
//! - [`auth`]: the bearer-token check on non-loopback listeners.
//! - [`token`]: where the token comes from.
//! - [`serve`]: `meshgate serve` put together.

pub mod auth;
pub(crate) mod body;
pub mod browser;
pub mod follow;
mod idle;
pub mod listeners;
pub mod routes;
pub mod serve;
pub mod token;
pub mod upstream;

pub use browser::BrowserPolicy;
pub use listeners::{bind_all, BindError, Bound, ListenerSet, ServerLimits};
pub use routes::{app, upstream_app, AppState, ListenerCtx, LiveListener, LiveView};
pub use token::Token;
pub use upstream::{Proxy, Upstream, UpstreamLimits};
