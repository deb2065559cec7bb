//! The gateway: everything that serves on a [`Resolution`](meshgate_core::Resolution).
//!
//! - [`listeners`]: binds the resolution's addresses (all or nothing at start) and
//!   keeps one accept loop per address, adding and removing them later.
//! - [`routes`]: the axum router (`/healthz`, `/status`, `/ws`) and its state.
//! - [`auth`]: the bearer-token check on non-loopback listeners.
//! - [`token`]: where the token comes from.
//! - [`serve`]: `meshgate serve` put together.

pub mod auth;
pub mod follow;
pub mod listeners;
pub mod routes;
pub mod serve;
pub mod token;

pub use listeners::{bind_all, BindError, Bound, ListenerSet};
pub use routes::{app, AppState, ListenerCtx, LiveListener, LiveView};
pub use token::Token;
