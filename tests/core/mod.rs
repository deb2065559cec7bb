//! Tests of the core through the root library: the registry, every provider's
//! heuristics over hand-built snapshots, the resolver behind a mocked interface
//! source, and the built binary's command-line contract.

mod build_script;
mod cli;
mod dist;
mod docs;
mod kit;
mod providers;
mod registry;
mod resolver_mock;
