//! meshgate: a gateway that listens only on the networks you name.
//!
//! Layers, each using only those below it (ARCHITECTURE.md has the map):
//!
//! - [`cli`]: the `meshgate` program's commands, flags, printers and exit
//!   codes (only `main.rs` uses it);
//! - [`gateway`]: the library: [`gateway::Gateway`] (builder, events), the
//!   listeners and the HTTP stack; it never prints;
//! - [`builtin`]: links every built-in provider crate;
//! - [`meshgate_core`] (re-exported as [`core`]): snapshots, providers,
//!   selectors, the resolver.

pub mod builtin;
pub mod cli;
pub mod gateway;
pub mod tls;

pub use meshgate_core as core;
