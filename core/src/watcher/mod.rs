//! Watching the network: a [`Watcher`] resolves when interfaces or addresses
//! changed, with bursts coalesced (a VPN coming up emits several events within
//! milliseconds; one change should mean one re-resolution).
//!
//! [`system`] builds the best watcher for this OS: on Linux the watcher of a
//! [`LiveNetlink`](crate::source::LiveNetlink), a table of links and addresses
//! kept by rtnetlink events, which the system source then reads instead of
//! dumping the host on every change; polling elsewhere ([`PollWatcher`],
//! which any [`InterfaceSource`](crate::source::InterfaceSource) can drive).
//! Both are wrapped in a [`DaemonWatcher`] so that a mesh daemon's state
//! change counts too. ([`NetlinkWatcher`] is the plain Linux watcher, for a
//! caller with a source of its own.)

mod daemon;
#[cfg(target_os = "linux")]
mod linux;
mod poll;

pub use daemon::DaemonWatcher;

use std::time::Duration;

#[cfg(target_os = "linux")]
pub use linux::NetlinkWatcher;
pub use poll::PollWatcher;

#[cfg(not(target_os = "linux"))]
use crate::source::InterfaceSource;

/// How long the network must be quiet before a burst counts as one change.
pub const QUIET: Duration = Duration::from_millis(5);
/// The longest a burst is coalesced before the change is reported anyway.
pub const MAX_COALESCE: Duration = Duration::from_millis(50);

/// Watching failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// The OS call failed.
    #[error("watch network changes ({what}): {source}")]
    Io {
        /// Which call.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The interface source failed (polling watcher).
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
}

/// Something that says when the network changed.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait::async_trait]
pub trait Watcher: Send {
    /// Resolves after the next relevant change (a burst counts once).
    async fn changed(&mut self) -> Result<(), WatchError>;
}

/// The real watcher for this OS, with tailscaled's state changes
/// ([`DaemonWatcher`]). Must run inside a tokio runtime.
pub fn system() -> Result<Box<dyn Watcher>, WatchError> {
    // The table kept by events, registered so that the system source reads it
    // instead of dumping the host on every change (see crate::source::LiveNetlink).
    #[cfg(target_os = "linux")]
    let os: Box<dyn Watcher> = {
        let live = crate::source::LiveNetlink::new()?;
        live.register();
        Box::new(live.watcher()?)
    };
    #[cfg(not(target_os = "linux"))]
    let os: Box<dyn Watcher> = {
        let source: Box<dyn InterfaceSource> = crate::source::system();
        Box::new(PollWatcher::new(source, Duration::from_secs(2)))
    };
    Ok(Box::new(DaemonWatcher::new(os, crate::probe::tailscale::socket_path())))
}
