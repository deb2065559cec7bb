//! Probes: ask the mesh daemons instead of guessing from names and ranges.
//!
//! A [`Probe`] is the second kind of plugin beside
//! [`BindProvider`](crate::BindProvider), registered the same way
//! ([`register_probe!`](crate::register_probe)). What comes in: the interface
//! snapshot the OS gave. What goes out: [`DaemonFact`](crate::fact::DaemonFact)s (addresses, interface,
//! state, DNS name, and the source that said so) added to that snapshot, so
//! providers read the daemons' word without doing I/O themselves.
//!
//! The rule this module guarantees: probing never blocks resolution. Every probe
//! runs concurrently under [`PROBE_BOUND`]; one that does not answer in time is
//! skipped and the snapshot says so in [`Snapshot::probe_notes`](crate::Snapshot::probe_notes). A probe whose
//! daemon is absent answers with a failed `stat` (or, for the process-table
//! probes, without reading anything when the snapshot has no TUN/TAP device),
//! so a host without mesh daemons pays microseconds.
//!
//! [`ProbingSource`] wraps an [`InterfaceSource`](crate::InterfaceSource) and runs the probes after each
//! snapshot; [`crate::source::system`] returns one, so every caller of the
//! system source (explain, serve, follow) gets the facts.

mod openvpn;
mod plugin;
mod probing;
pub(crate) mod process;
#[cfg(any(test, feature = "testing"))]
pub mod standin;
pub mod tailscale;
#[cfg(test)]
mod tests;
mod tinc;
pub mod yggdrasil;

pub(crate) use plugin::{has_tunnel_device, holder_of};
pub use plugin::{Probe, ProbeDescriptor, ProbeError, ProbeInfo, Probes, PROBE_BOUND};
pub use probing::ProbingSource;
