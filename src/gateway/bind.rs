//! Binding: one real socket per resolved address, all or nothing at start
//! ([`bind_all`]): either every address binds, or the sockets already made are
//! dropped (closed) and the error names the address and the cause.
//!
//! With connection workers each address then gets one socket per worker
//! (`share`): the first is bound exactly as without workers (no
//! `SO_REUSEPORT`, so anything already listening on the address and port,
//! another meshgate's group of reuseport sockets included, is "address in
//! use", naming the address); only once it listens is `SO_REUSEPORT` set on
//! it and the others bound beside it, to the port it got (port 0 too). The
//! kernel then spreads new connections over the group by a hash of their
//! addresses and ports. Linux lets only sockets of the same effective user
//! join a reuseport group, and only sockets that ask for it: while meshgate
//! listens, a process of the same user binding the same address and port
//! with `SO_REUSEPORT` would take a share of its connections (as with
//! nginx's `reuseport`); nothing of another user can.

use std::io;
use std::net::SocketAddr;

use meshgate_core::Listener;
use socket2::{Domain, Protocol, Socket, Type};

/// Why an address could not be bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BindErrorKind {
    /// No interface of this host has the address.
    NotOnHost,
    /// Something already listens on that address and port.
    PortInUse,
    /// Not allowed (a port below 1024 without the capability).
    Permission,
    /// Anything else.
    Other,
}

/// An address that could not be bound, and why.
#[derive(Debug, thiserror::Error)]
#[error("bind {addr}: {}", self.explain())]
pub struct BindError {
    /// The address (`[fe80::1%wg0]:18789` style for scoped v6).
    pub addr: String,
    /// The category.
    pub kind: BindErrorKind,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

impl BindError {
    pub(crate) fn new(listener: &Listener, source: io::Error) -> Self {
        let kind = match source.kind() {
            io::ErrorKind::AddrNotAvailable => BindErrorKind::NotOnHost,
            io::ErrorKind::AddrInUse => BindErrorKind::PortInUse,
            io::ErrorKind::PermissionDenied => BindErrorKind::Permission,
            _ => BindErrorKind::Other,
        };
        Self { addr: display_addr(listener), kind, source }
    }

    fn explain(&self) -> String {
        match self.kind {
            BindErrorKind::NotOnHost => format!(
                "the address is not on this host ({}); name an address one of its interfaces holds (see `meshgate explain`)",
                self.source
            ),
            BindErrorKind::PortInUse => {
                format!("the port is already in use ({}); stop what listens there or choose another --port", self.source)
            }
            BindErrorKind::Permission => format!(
                "permission denied ({}); ports below 1024 need root or CAP_NET_BIND_SERVICE: choose a higher --port",
                self.source
            ),
            BindErrorKind::Other => self.source.to_string(),
        }
    }
}

/// `10.8.0.1:18789` or `[fe80::1%wg0]:18789`.
pub fn display_addr(l: &Listener) -> String {
    if l.address.addr.is_ipv6() {
        format!("[{}]:{}", l.address, l.port)
    } else {
        format!("{}:{}", l.address, l.port)
    }
}

/// A bound, listening socket not yet serving.
#[derive(Debug)]
pub struct Bound {
    /// What the resolver said about it.
    pub listener: Listener,
    pub(crate) socket: std::net::TcpListener,
}

impl Bound {
    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The listening socket, for a caller that serves it itself (non-blocking,
    /// ready for `tokio::net::TcpListener::from_std`).
    pub fn into_std(self) -> std::net::TcpListener {
        self.socket
    }
}

/// Binds one listener: a real socket, `IPV6_V6ONLY` set explicitly on v6, the
/// scope id kept for link-local addresses. No probing with throwaway sockets.
pub fn bind(listener: &Listener) -> Result<Bound, BindError> {
    let addr = listener.socket_addr();
    let make = || -> io::Result<std::net::TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        Ok(socket.into())
    };
    make().map(|socket| Bound { listener: listener.clone(), socket }).map_err(|e| BindError::new(listener, e))
}

/// `SO_REUSEPORT` on `first` (a listening socket from [`bind`]) and
/// `n - 1` more listening sockets on its address and port, each with it (see
/// the module docs): a group of `n` the kernel spreads connections over.
/// Nothing for `n` of 1 or less, so one socket never has `SO_REUSEPORT`. On
/// an error the sockets made are closed and `first` is as it was.
pub(crate) fn share(first: &std::net::TcpListener, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    if n <= 1 {
        return Ok(Vec::new());
    }
    // The port it got (port 0 asked for one), and a link-local's scope.
    let addr = first.local_addr()?;
    let first = socket2::SockRef::from(first);
    first.set_reuse_port(true)?;
    let sibling = || -> io::Result<std::net::TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        Ok(socket.into())
    };
    let made: io::Result<Vec<_>> = (1..n).map(|_| sibling()).collect();
    if made.is_err() {
        let _ = first.set_reuse_port(false);
    }
    made
}

/// Binds every listener, or none: on the first failure the sockets already bound
/// are closed and the error is returned.
pub fn bind_all(listeners: &[Listener]) -> Result<Vec<Bound>, BindError> {
    listeners.iter().map(bind).collect()
}

#[cfg(test)]
mod tests {
    use meshgate_core::resolver::ScopedAddr;
    use meshgate_core::ListenerRole;

    use super::*;

    fn listener(addr: std::net::IpAddr) -> Listener {
        Listener {
            address: ScopedAddr { addr, scope_id: None, scope_name: None },
            port: 0,
            provider: "ip".into(),
            interface: None,
            reason: "a test".into(),
            role: ListenerRole::Selected,
        }
    }

    /// Port 0: the first socket gets a port from the kernel and every other
    /// socket of the group is bound to that same port (IPv4 and IPv6); one
    /// socket alone never gets `SO_REUSEPORT` (nothing could join it).
    #[test]
    fn port_0_gives_every_socket_of_the_group_the_same_port() {
        for ip in [std::net::IpAddr::from([127, 0, 0, 1]), std::net::Ipv6Addr::LOCALHOST.into()] {
            let Ok(first) = bind(&listener(ip)) else {
                assert!(ip.is_ipv6() && std::env::var_os("CI").is_none(), "bind {ip}");
                continue; // a host without IPv6 loopback (outside CI)
            };
            let alone = bind(&listener(ip)).unwrap();
            assert!(share(&alone.socket, 1).unwrap().is_empty());
            assert!(!socket2::SockRef::from(&alone.socket).reuse_port().unwrap(), "one socket, no SO_REUSEPORT");
            let local = first.local_addr().unwrap();
            assert_ne!(local.port(), 0);
            let others = share(&first.socket, 4).unwrap();
            assert_eq!(others.len(), 3);
            for s in &others {
                assert_eq!(s.local_addr().unwrap(), local);
                assert!(socket2::SockRef::from(s).reuse_port().unwrap());
            }
            assert!(socket2::SockRef::from(&first.socket).reuse_port().unwrap());
        }
    }
}
