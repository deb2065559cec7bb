//! Binding: one real socket per resolved address, all or nothing at start
//! ([`bind_all`]): either every address binds, or the sockets already made are
//! dropped (closed) and the error names the address and the cause.
//!
//! With connection workers, the listener set (`listeners.rs`) gives each
//! worker a dup (`try_clone`) of the one socket of an address, not a socket
//! of its own: no socket here ever has `SO_REUSEPORT`, so nothing already
//! listening on the address and port (a reuseport group included) can be
//! joined, and while meshgate listens no other process, of the same user or
//! not, can bind the address and port to take a share of its connections.

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

    /// Port 0 gets a port from the kernel, and the socket has no
    /// `SO_REUSEPORT` (IPv4 and IPv6): a process of the same user asking
    /// for `SO_REUSEPORT` on that address and port is refused "address in
    /// use", so it cannot take a share of the connections.
    #[test]
    fn port_0_gets_a_port_no_reuseport_socket_can_join() {
        for ip in [std::net::IpAddr::from([127, 0, 0, 1]), std::net::Ipv6Addr::LOCALHOST.into()] {
            let Ok(bound) = bind(&listener(ip)) else {
                assert!(ip.is_ipv6() && std::env::var_os("CI").is_none(), "bind {ip}");
                continue; // a host without IPv6 loopback (outside CI)
            };
            let local = bound.local_addr().unwrap();
            assert_ne!(local.port(), 0);
            assert!(!socket2::SockRef::from(&bound.socket).reuse_port().unwrap(), "{local}: SO_REUSEPORT");
            let joiner = Socket::new(Domain::for_address(local), Type::STREAM, Some(Protocol::TCP)).unwrap();
            if ip.is_ipv6() {
                joiner.set_only_v6(true).unwrap();
            }
            joiner.set_reuse_address(true).unwrap();
            joiner.set_reuse_port(true).unwrap();
            let joined = joiner.bind(&local.into());
            assert_eq!(joined.map_err(|e| e.kind()), Err(io::ErrorKind::AddrInUse), "joined {local}");
        }
    }
}
