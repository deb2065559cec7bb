//! Kernel WireGuard off Linux: there is none (FreeBSD's `if_wg` speaks its own
//! ioctl, not supported yet), so reading it is an "unsupported" error.

use super::peer::{Peer, PeerReadError, ReadLimits};

/// Always [`PeerReadError::Unsupported`].
pub(crate) fn read_kernel(name: &str, _index: u32, _limits: ReadLimits) -> Result<Vec<Peer>, PeerReadError> {
    Err(PeerReadError::Unsupported {
        iface: name.to_owned(),
        what: "kernel WireGuard is not supported on this platform",
    })
}
