//! Fuzz entry points for meshgate (see `entries.rs`).

pub mod entries;
