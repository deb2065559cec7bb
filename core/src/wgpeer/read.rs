//! [`read_peers`]: one WireGuard interface's peers, from whichever implementation runs it.
//!
//! The [`Snapshot`](crate::Snapshot) already tells kernel WireGuard (a link of
//! kind `wireguard`, read over generic netlink) from userspace WireGuard (a TUN
//! with a control socket, read over UAPI), so the caller passes that kind and no
//! probing happens here.

use crate::model::Interface;

use super::peer::{Peer, PeerReadError, ReadLimits, WgKind};

/// Reads the peers of `iface` (blocking; bounded by `limits`).
pub fn read_peers(iface: &Interface, limits: ReadLimits) -> Result<Vec<Peer>, PeerReadError> {
    match WgKind::of(iface) {
        None => Err(PeerReadError::NotWireGuard { iface: iface.name.clone(), kind: iface.kind.clone() }),
        Some(kind) => read_kind(&iface.name, &kind, limits),
    }
}

/// Reads the peers of the interface `name`, run as `kind`.
pub(crate) fn read_kind(name: &str, kind: &WgKind, limits: ReadLimits) -> Result<Vec<Peer>, PeerReadError> {
    match kind {
        WgKind::Kernel { index } => kernel(name, *index, limits),
        WgKind::Userspace { socket } => userspace(name, socket, limits),
    }
}

#[cfg(target_os = "linux")]
fn kernel(name: &str, index: u32, limits: ReadLimits) -> Result<Vec<Peer>, PeerReadError> {
    super::linux::read_kernel(name, index, limits)
}

#[cfg(not(target_os = "linux"))]
fn kernel(name: &str, index: u32, limits: ReadLimits) -> Result<Vec<Peer>, PeerReadError> {
    super::fallback::read_kernel(name, index, limits)
}

#[cfg(unix)]
fn userspace(name: &str, socket: &std::path::Path, limits: ReadLimits) -> Result<Vec<Peer>, PeerReadError> {
    super::uapi::read_uapi(name, socket, limits)
}

#[cfg(not(unix))]
fn userspace(name: &str, _socket: &std::path::Path, _limits: ReadLimits) -> Result<Vec<Peer>, PeerReadError> {
    Err(PeerReadError::Unsupported {
        iface: name.to_owned(),
        what: "the WireGuard UAPI socket is not supported on this platform",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::InterfaceKind;

    #[test]
    fn the_interface_kind_picks_the_reader() {
        let k = Interface::new("wg0", 7, InterfaceKind::WireGuard);
        assert_eq!(WgKind::of(&k), Some(WgKind::Kernel { index: 7 }));
        let u = Interface::new("office", 8, InterfaceKind::WireGuardUserspace);
        assert_eq!(WgKind::of(&u), Some(WgKind::Userspace { socket: "/var/run/wireguard/office.sock".into() }));
        let t = Interface::new("tun0", 9, InterfaceKind::Tun);
        assert_eq!(WgKind::of(&t), None);
        let e = read_peers(&t, ReadLimits::default()).unwrap_err().to_string();
        assert!(e.contains("tun0") && e.contains("not WireGuard"), "{e}");
    }
}
