//! The certificate cell every TLS listener reads on each handshake.
//!
//! [`CertResolver`] holds the current chain and key behind an `ArcSwap`: a
//! handshake takes a snapshot (one atomic load), a reload stores a new one.
//! Connections already up keep the key they negotiated with; only handshakes
//! after the store see the new certificate.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A [`ResolvesServerCert`] whose certificate can be replaced at any time.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl CertResolver {
    /// A resolver serving `initial` until [`CertResolver::store`] replaces it.
    pub fn new(initial: Arc<CertifiedKey>) -> Self {
        CertResolver { current: ArcSwap::new(initial) }
    }

    /// Serve `next` to every handshake from now on.
    pub fn store(&self, next: Arc<CertifiedKey>) {
        self.current.store(next);
    }

    /// The certificate served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CertResolver {
    // One certificate for every SNI name (or none: clients connecting by IP send no
    // SNI): the certificate names all the gateway's addresses and names.
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A certificate that names every address it is served on: the listener set
/// calls [`ensure_names`](AddressNames::ensure_names) before a new address
/// serves (`--tls self-signed` and `--tls internal` reissue to add it).
pub trait AddressNames: Send + Sync + std::fmt::Debug {
    /// Makes sure the served certificate names every address in `addrs`
    /// (that it may name); returns whether it reissued.
    fn ensure_names(&self, addrs: &[std::net::IpAddr]) -> Result<bool, super::error::TlsError>;
}
