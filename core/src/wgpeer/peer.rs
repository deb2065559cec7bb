//! The facts about one WireGuard interface's peers, shared by every way of
//! reading them: [`Peer`], [`WgKind`] (which way), [`ReadLimits`] and
//! [`PeerReadError`]. Below the readers (`linux.rs`, `uapi.rs`) and the
//! dispatch (`read.rs`), which all import it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use serde::Serialize;

use crate::model::{Interface, InterfaceKind};

use super::PublicKey;

/// One peer of a WireGuard interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Peer {
    /// Its public key: the identity the tunnel proves.
    pub public_key: PublicKey,
    /// The source ranges WireGuard accepts from it (and routes to it).
    pub allowed_ips: Vec<IpNet>,
    /// Where its packets last came from (or the configured endpoint), if known.
    pub endpoint: Option<SocketAddr>,
    /// The last completed handshake; `None` when there has been none.
    pub last_handshake: Option<SystemTime>,
    /// Bytes received from it (0 when the reader does not say).
    pub rx_bytes: u64,
    /// Bytes sent to it (0 when the reader does not say).
    pub tx_bytes: u64,
}

/// How a WireGuard interface is run, hence how its peers are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WgKind {
    /// Kernel WireGuard: generic netlink, family `wireguard`, by interface index.
    Kernel {
        /// The interface index.
        index: u32,
    },
    /// wireguard-go, boringtun: the UAPI control socket.
    Userspace {
        /// `/var/run/wireguard/NAME.sock`.
        socket: PathBuf,
    },
}

impl WgKind {
    /// The way to read `iface`, or `None` when it is not WireGuard.
    pub fn of(iface: &Interface) -> Option<Self> {
        match iface.kind {
            InterfaceKind::WireGuard => Some(Self::Kernel { index: iface.index }),
            InterfaceKind::WireGuardUserspace => Some(Self::Userspace {
                socket: PathBuf::from(crate::source::WIREGUARD_SOCKET_DIR).join(format!("{}.sock", iface.name)),
            }),
            _ => None,
        }
    }
}

/// Bounds on one read: a wedged daemon or a huge dump must not hold a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// The longest one read may take (connect, request and whole reply).
    pub timeout: Duration,
    /// The most reply bytes accepted (UAPI text or netlink messages).
    pub max_bytes: usize,
}

impl Default for ReadLimits {
    /// 200 ms and 16 MiB: a 1,000-peer wireguard-go dump is about 400 KB and
    /// takes a few milliseconds.
    fn default() -> Self {
        Self { timeout: Duration::from_millis(200), max_bytes: 16 << 20 }
    }
}

/// Why an interface's peers could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerReadError {
    /// The interface is not WireGuard.
    #[error("{iface} is {kind}, not WireGuard: it has no peers to read")]
    NotWireGuard {
        /// The interface.
        iface: String,
        /// What it is.
        kind: InterfaceKind,
    },
    /// This platform has no way to read this kind of interface.
    #[error("reading the peers of {iface}: {what}")]
    Unsupported {
        /// The interface.
        iface: String,
        /// What is missing (a sentence).
        what: &'static str,
    },
    /// A socket operation failed (permission, no such socket or device, timeout).
    #[error("reading the peers of {iface}: {what}: {source}")]
    Io {
        /// The interface.
        iface: String,
        /// The step (`connect to /var/run/wireguard/wg0.sock`).
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The daemon or the kernel answered something that is not a peer list.
    #[error("reading the peers of {iface}: {detail}")]
    Protocol {
        /// The interface.
        iface: String,
        /// What was wrong.
        detail: String,
    },
}
