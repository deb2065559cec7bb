//! Where snapshots come from: the [`InterfaceSource`] trait and the real sources.
//!
//! [`system`] builds the best source for this OS: rtnetlink on Linux (one dump of
//! links and one of addresses, plus the WireGuard socket directory), the portable
//! `getifaddrs` source elsewhere. Tests use the mockall mock (`mocks` feature)
//! or hand-built snapshots.

#[cfg(target_os = "linux")]
mod linux;
mod portable;
mod wgsock;

#[cfg(target_os = "linux")]
pub use linux::NetlinkSource;
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
}

/// Something that can describe the host's interfaces.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait::async_trait]
pub trait InterfaceSource: Send + Sync {
    /// A fresh snapshot.
    async fn snapshot(&self) -> Result<Snapshot, SourceError>;
}

/// The real source for this OS.
pub fn system() -> Box<dyn InterfaceSource> {
    #[cfg(target_os = "linux")]
    {
        Box::new(NetlinkSource::default())
    }
    #[cfg(not(target_os = "linux"))]
    {
        Box::new(IfAddrsSource::default())
    }
}
