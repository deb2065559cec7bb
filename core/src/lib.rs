//! meshgate's core: decide which addresses a bind mode means on this host, and say why.
//!
//! It reads the host's interfaces into a [`Snapshot`] ([`source`]), asks every
//! registered [`BindProvider`] what it claims ([`registry`]), and turns the user's
//! `--bind` selectors into a [`Resolution`] ([`resolver`]). It knows nothing about
//! any particular VPN (those are provider crates) nor about HTTP (the gateway).
//!
//! Before providers run, [`probe`]s ask the mesh daemons (tailscaled's local
//! API, Yggdrasil's admin socket, the process table) and add their
//! [`DaemonFact`]s to the snapshot: the mesh's word beats a guess.
//!
//! Providers register themselves with [`register_provider!`]; a program must
//! reference each provider crate (`use meshgate_provider_x as _;`) or the linker
//! drops it and its mode silently vanishes.

pub mod config;
pub mod fact;
pub mod fallback;
pub mod model;
pub mod probe;
pub mod provider;
pub mod registry;
pub mod resolver;
pub mod selector;
pub mod source;
#[cfg(feature = "testing")]
pub mod testing;
pub mod watcher;
pub mod wgpeer;

#[doc(hidden)]
pub use inventory;

pub use config::ProviderConfig;
pub use fact::{DaemonFact, DaemonState};
pub use model::{Flags, IfAddr, Interface, InterfaceKind, Snapshot};
pub use probe::{Probe, ProbeDescriptor, ProbeInfo, Probes, ProbingSource};
pub use provider::{
    claim_facts, BindProvider, Candidate, Claims, MatchSummary, MeshMatcher, MeshProvider, MeshSpec, ProviderInfo,
    Rejection, Role, Specificity,
};
pub use registry::{ProviderDescriptor, Registry, RegistryError};
pub use resolver::{resolve, Fallback, Listener, ListenerRole, Resolution, ResolveOptions};
pub use selector::{parse_selector, parse_selectors, Selector, SelectorError};
pub use source::InterfaceSource;
pub use watcher::Watcher;
pub use wgpeer::{AllowList, PeerCache, PeerNames, PeerTable, PublicKey};
