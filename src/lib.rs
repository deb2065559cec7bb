//! meshgate: a gateway that listens only on the networks you name.
//!
//! This crate is the program: the command line ([`cli`]) and, on top of
//! [`meshgate_core`] (re-exported as [`core`]), everything that serves. Linking
//! it links every built-in provider ([`builtin`]). A program with its own axum
//! router gets the same bind, follow and token rules from [`embed`].

pub mod builtin;
pub mod cli;
pub mod embed;
pub mod gateway;
pub mod tls;

pub use meshgate_core as core;
