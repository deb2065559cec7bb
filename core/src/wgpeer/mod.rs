//! WireGuard peer identity: who is behind a source address on a WireGuard interface.
//!
//! WireGuard accepts a packet only from the peer whose allowed-ips hold its source
//! address, so on a WireGuard interface the source address of a connection names
//! one peer's public key. This module reads an interface's peers ([`read_peers`]:
//! kernel WireGuard over generic netlink, userspace wireguard-go/boringtun over
//! their UAPI control socket), answers "which peer holds this address" by longest
//! prefix ([`PeerTable`]), caches one table per interface for the gateway
//! ([`PeerCache`]), and maps people's names to keys ([`PeerNames`], [`AllowList`]).
//!
//! This file only declares and re-exports; the code lives in the submodules.

mod cache;
#[cfg(not(target_os = "linux"))]
mod fallback;
mod key;
#[cfg(target_os = "linux")]
mod linux;
mod names;
mod peer;
mod read;
mod table;
#[cfg(unix)]
mod uapi;

pub use cache::{PeerCache, PeerCacheConfig};
pub use key::{KeyError, PublicKey, KEY_LEN};
pub use names::{AllowList, PeerNameError, PeerNames, MAX_NAME_LEN};
pub use peer::{Peer, PeerReadError, ReadLimits, WgKind};
pub use read::read_peers;
pub use table::PeerTable;
#[cfg(unix)]
pub use uapi::parse_uapi_get;
