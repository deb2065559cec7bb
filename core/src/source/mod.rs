//! Where snapshots come from: the [`InterfaceSource`] trait and the real sources.
//!
//! [`system`] builds the best source for this OS: rtnetlink on Linux (one dump of
//! links and one of addresses, plus the WireGuard socket directory), the portable
//! `getifaddrs` source elsewhere, wrapped in the probes that add the mesh
//! daemons' facts ([`crate::probe`]); [`os`] is the bare OS source. While a
//! process follows the network ([`crate::watcher::system`]), the Linux source
//! reads the [`LiveNetlink`] table that watcher keeps current from events,
//! rather than dumping the host on every change. Tests use the mockall mock (`mocks` feature)
//! or hand-built snapshots.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
mod live;
mod portable;
mod wgsock;

#[cfg(target_os = "linux")]
pub use linux::NetlinkSource;
#[cfg(target_os = "linux")]
pub use live::{LiveNetlink, LiveWatcher, REDUMP_EVERY};
pub use portable::IfAddrsSource;
pub use wgsock::{userspace_wireguard_names, WIREGUARD_SOCKET_DIR};

use crate::model::Snapshot;

/// Reading the host's interfaces failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The OS call failed.
    #[error("read network interfaces ({what}): {source}")]
    Io {
        /// Which call.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The OS answered with something unexpected.
    #[error("read network interfaces: {0}")]
    Protocol(String),
    /// The probe registry is broken (two probes with one name).
    #[error("{0}")]
    Probes(crate::registry::RegistryError),
}

/// Something that can describe the host's interfaces.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait::async_trait]
pub trait InterfaceSource: Send + Sync {
    /// A fresh snapshot.
    async fn snapshot(&self) -> Result<Snapshot, SourceError>;
}

/// The real source for this OS, with the mesh daemons' facts
/// ([`ProbingSource`](crate::probe::ProbingSource) around [`os`]).
pub fn system() -> Box<dyn InterfaceSource> {
    Box::new(crate::probe::ProbingSource::new(os()))
}

/// The OS's interfaces alone, without asking any daemon.
pub fn os() -> Box<dyn InterfaceSource> {
    #[cfg(target_os = "linux")]
    {
        Box::new(NetlinkSource::default())
    }
    #[cfg(not(target_os = "linux"))]
    {
        Box::new(IfAddrsSource::default())
    }
}
