//! Linux: rtnetlink multicast groups for links and IPv4/IPv6 addresses.
//!
//! Any message in those groups is a reason to look again; the snapshot that
//! follows (and the resolver) decide whether it mattered, so no message is parsed
//! here. Bursts are coalesced: after the first message the socket is drained
//! until it stays quiet for [`QUIET`], or [`MAX_COALESCE`] has passed.

use std::io;
use std::os::fd::AsRawFd;

use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use tokio::io::unix::AsyncFd;
use tokio::time::{timeout_at, Instant};

use super::{WatchError, Watcher, MAX_COALESCE, QUIET};

// The legacy group bitmask `bind` takes, and below ENOBUFS: from libc, never by hand
const GROUPS: u32 = (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;

/// Link and address events from rtnetlink.
#[derive(Debug)]
pub struct NetlinkWatcher {
    fd: AsyncFd<Socket>,
    buf: Vec<u8>,
}

impl NetlinkWatcher {
    /// Subscribes to link and address events. Must run inside a tokio runtime.
    pub fn new() -> Result<Self, WatchError> {
        let io = |what| move |source| WatchError::Io { what, source };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(io("netlink socket"))?;
        socket.bind(&SocketAddr::new(0, GROUPS)).map_err(io("netlink subscribe"))?;
        socket.set_non_blocking(true).map_err(io("netlink non-blocking"))?;
        // A flapping interface can outrun us; a lost event must not be silent.
        let _ = socket.set_rx_buf_sz(1 << 20);
        // SAFETY: the AsyncFd owns the socket, so its fd stays open and unchanged
        // for as long as it is registered.
        let fd = unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) }
            .map_err(|e| WatchError::Io { what: "netlink register", source: e.into() })?;
        Ok(Self { fd, buf: vec![0; 1 << 16] })
    }

    /// Reads every queued message; true if there was at least one (or an overrun).
    fn drain(&mut self) -> io::Result<bool> {
        let mut any = false;
        loop {
            match self.fd.get_ref().recv(&mut &mut self.buf[..], 0) {
                Ok(_) => any = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(any),
                // ENOBUFS: events were lost; the caller re-reads everything anyway.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => any = true,
                Err(e) => return Err(e),
            }
        }
    }

    async fn wait_readable(&mut self) -> io::Result<()> {
        let mut guard = self.fd.readable().await?;
        guard.clear_ready();
        Ok(())
    }
}

impl AsRawFd for NetlinkWatcher {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.get_ref().as_raw_fd()
    }
}

#[async_trait::async_trait]
impl Watcher for NetlinkWatcher {
    async fn changed(&mut self) -> Result<(), WatchError> {
        let err = |source| WatchError::Io { what: "netlink receive", source };
        // Wait for the first event of a burst.
        loop {
            if self.drain().map_err(err)? {
                break;
            }
            self.wait_readable().await.map_err(err)?;
        }
        // Coalesce the rest of the burst.
        let deadline = Instant::now() + MAX_COALESCE;
        loop {
            let quiet_until = (Instant::now() + QUIET).min(deadline);
            match timeout_at(quiet_until, self.wait_readable()).await {
                Err(_) => return Ok(()),
                Ok(r) => {
                    r.map_err(err)?;
                    self.drain().map_err(err)?;
                }
            }
            if Instant::now() >= deadline {
                return Ok(());
            }
        }
    }
}
