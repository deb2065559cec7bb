//! TLS for mesh listeners: certificates, reload, self-signed keys, the local
//! CA, tailscaled's certificate, the acceptor.
//!
//! This module sits below the gateway and imports nothing else from the crate
//! (the core's tailscaled client aside): the accept loop and the command line
//! call into it, never the reverse. What comes in is a PEM certificate + key
//! pair ([`Reloader`]), a state directory ([`SelfSigned`]; [`Internal`] with its
//! [`LocalCa`], whose name constraints limit it to the mesh), or tailscaled's
//! local API ([`TailnetCert`]); what goes out is a [`CertResolver`] whose
//! certificate can be swapped while the listener runs, and a [`TlsAcceptor`]
//! that turns an accepted socket into a TLS stream and says which HTTP version
//! the client picked ([`Alpn`]), or answers plain HTTP with a redirect to
//! https. The one rule: a certificate that is served has been checked first
//! (parsed, key matches, dates valid); a bad replacement never displaces a
//! good one.

mod accept;
#[cfg(test)]
mod accept_tests;
mod ca;
mod certs;
#[cfg(test)]
mod certs_tests;
mod error;
mod internal;
mod redirect;
mod reload;
mod resolver;
mod selfsigned;
mod statedir;
mod tailnet;
#[cfg(test)]
pub(crate) mod testutil;

pub use accept::{
    server_config, Alpn, HandshakeError, HandshakeErrorKind, TlsAcceptor, TlsStats, TlsStatsSnapshot,
    DEFAULT_HANDSHAKE_TIMEOUT,
};
pub use ca::{CaCertificate, Constraints, LocalCa, CA_CERT_FILE, CA_KEY_FILE};
pub use certs::{load_pair, spki_sha256_base64, LoadedPair};
pub use error::TlsError;
pub use internal::{leaf_lifetime_from, Internal, LEAF_LIFETIME, LEAF_LIFETIME_ENV};
pub use reload::{ReloadOutcome, Reloader, DEFAULT_POLL_INTERVAL};
pub use resolver::{AddressNames, CertResolver};
pub use selfsigned::{check_key, SelfSigned, CERT_FILE, KEY_FILE};
pub use statedir::{default_state_dir, running_as_root, state_dir_from};
pub use tailnet::TailnetCert;
pub use tokio_rustls::server::TlsStream;
