//! The one error type of the TLS module: every variant names the file or value
//! at fault and says what to do, because these reach a person at start-up (exit
//! 78) or in a reload warning.

use std::path::PathBuf;

/// Why a certificate, key or state directory could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read (missing, permissions, a directory...).
    #[error("read {what} {}: {source}; check the path given to {flag} and that meshgate may read it", path.display())]
    Read {
        /// "certificate" or "key".
        what: &'static str,
        /// The flag that names this file, for the hint.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The certificate file holds no PEM `CERTIFICATE` block.
    #[error("no certificate in {}: expected a PEM file with \"-----BEGIN CERTIFICATE-----\" (the leaf first, then the chain){detail}", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said, if anything (starts with "; ").
        detail: String,
    },
    /// The key file holds no private key block, or one rustls cannot use.
    #[error("no usable private key in {}: {detail}; expected a PEM \"PRIVATE KEY\", \"EC PRIVATE KEY\" or \"RSA PRIVATE KEY\" (RSA, ECDSA P-256/P-384 or Ed25519)", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The key's public half is not the one in the leaf certificate.
    #[error("key {} does not match certificate {}: the first certificate in the file must be the one issued for this key (renewed one file but not the other?)", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The leaf certificate cannot be parsed as X.509.
    #[error("certificate {} is not a valid X.509 certificate: {detail}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// The leaf certificate has expired.
    #[error("certificate {} expired at {not_after} (unix time {not_after_unix}); renew it (for example `tailscale cert` or certbot renew) and meshgate picks up the new file", path.display())]
    Expired {
        /// The file.
        path: PathBuf,
        /// The notAfter date, RFC 3339.
        not_after: String,
        /// The same as seconds since the epoch.
        not_after_unix: i64,
    },
    /// The leaf certificate is not valid yet.
    #[error("certificate {} is not valid before {not_before}; check this machine's clock or wait", path.display())]
    NotYetValid {
        /// The file.
        path: PathBuf,
        /// The notBefore date, RFC 3339.
        not_before: String,
    },
    /// rustls refused the configuration (should not happen with the built-in provider).
    #[error("set up TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// No state directory was given and none could be derived from the environment.
    #[error("find a state directory for the self-signed key: {0}; pass --state-dir DIR")]
    NoStateDir(&'static str),
    /// The state directory or a file in it could not be created or written.
    #[error("write {}: {source}; check that meshgate may write to the state directory (--state-dir)", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A `--tls-name` value cannot go into a certificate.
    #[error("--tls-name {name:?} cannot be named in a certificate: {detail}; give an ASCII DNS name (use punycode for IDNs) or an IP address")]
    BadName {
        /// The value as given.
        name: String,
        /// What rcgen said.
        detail: String,
    },
    /// Making the self-signed certificate or key failed.
    #[error("make the self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// `--tls internal`: no CA in the state directory yet (`meshgate ca`).
    #[error("no local CA in {} yet: it is made the first time `meshgate serve --tls internal` runs with this state directory (--state-dir, MESHGATE_STATE_DIR or state_dir in the config file)", dir.display())]
    NoCa {
        /// The state directory looked in.
        dir: PathBuf,
    },
    /// The local CA's key or certificate is unusable.
    #[error("the local CA file {} is unusable: {detail}; it is meshgate's own: to start over, delete ca.crt and ca-key.pem in that directory (and remove the old CA from every device that trusts it)", path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A name or address to serve lies outside what the local CA may sign for.
    #[error("{name} lies outside the local CA's name constraints ({permitted}): devices would refuse its certificate; the CA in {} was made for other names. Serve only permitted names, or delete ca.crt and ca-key.pem there to make a new CA (and trust the new one on every device)", dir.display())]
    OutsideConstraints {
        /// The name or address.
        name: String,
        /// What the CA permits.
        permitted: String,
        /// The state directory.
        dir: PathBuf,
    },
    /// `--tls tailscale`: tailscaled gave no certificate.
    #[error("get this node's certificate from tailscaled: {0}")]
    Tailnet(String),
}
