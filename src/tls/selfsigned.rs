//! `--tls self-signed`: a key made once and kept, a certificate made from it.
//!
//! The key lives in the state directory ([`KEY_FILE`], mode 0600, in a directory
//! made 0700) so its fingerprint, the SHA-256 of the public key that clients pin,
//! survives restarts. The certificate is issued at start and again whenever an
//! address appears that it does not name ([`SelfSigned::ensure_names`], for
//! follow) or it nears its end: always with the same key, so pins stay valid.
//! The current certificate is also written to [`CERT_FILE`] for people who want
//! to import it into a trust store.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::pki_types::PrivateKeyDer;
use rustls::sign::{CertifiedKey, SigningKey};

use super::certs::{provider, spki_sha256_base64};
use super::error::TlsError;
use super::resolver::CertResolver;

/// The key's file name in the state directory.
pub const KEY_FILE: &str = "tls-key.pem";
/// The current certificate's file name in the state directory.
pub const CERT_FILE: &str = "tls-cert.pem";

/// Validity of each issued certificate: under the 398 days browsers accept for
/// a leaf, in case someone imports it as trusted.
const LIFETIME: Duration = Duration::from_secs(397 * 24 * 3600);
/// Reissue when less than this is left.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// notBefore lies this far back, for clients whose clocks are a little behind.
const BACKDATE: Duration = Duration::from_secs(3600);

#[derive(Debug, Default)]
struct Named {
    dns: BTreeSet<String>,
    ips: BTreeSet<IpAddr>,
    not_after: Option<SystemTime>,
}

/// A self-signed certificate over a persistent key.
pub struct SelfSigned {
    dir: PathBuf,
    key: rcgen::KeyPair,
    signing: Arc<dyn SigningKey>,
    spki_sha256: String,
    named: Mutex<Named>,
    resolver: Arc<CertResolver>,
}

impl std::fmt::Debug for SelfSigned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfSigned")
            .field("dir", &self.dir)
            .field("spki_sha256", &self.spki_sha256)
            .field("named", &self.named)
            .finish_non_exhaustive()
    }
}

impl SelfSigned {
    /// Opens (or creates) the key in `state_dir` and issues a certificate naming
    /// `names` (`--tls-name`: DNS names; IP literals become IP names) and `addrs`.
    pub fn open(state_dir: &Path, names: &[String], addrs: &[IpAddr]) -> Result<Self, TlsError> {
        let mut named = Named::default();
        for name in names {
            match name.parse::<IpAddr>() {
                Ok(ip) => {
                    named.ips.insert(ip);
                }
                Err(_) => {
                    // Ask rcgen now, so a bad name fails at start with the name in it.
                    rcgen::CertificateParams::new(vec![name.clone()])
                        .map_err(|e| TlsError::BadName { name: name.clone(), detail: e.to_string() })?;
                    named.dns.insert(name.to_ascii_lowercase());
                }
            }
        }
        named.ips.extend(addrs.iter().copied());
        let key = open_key(state_dir)?;
        let der = PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| TlsError::NoKey { path: state_dir.join(KEY_FILE), detail: e.to_string() })?;
        let signing = provider()
            .key_provider
            .load_private_key(der)
            .map_err(|e| TlsError::NoKey { path: state_dir.join(KEY_FILE), detail: e.to_string() })?;
        let spki_sha256 = spki_sha256_base64(&key.public_key_der());
        let certified = issue(&key, &signing, &mut named)?;
        let this = SelfSigned {
            dir: state_dir.to_path_buf(),
            key,
            signing,
            spki_sha256,
            named: Mutex::new(named),
            resolver: Arc::new(CertResolver::new(certified)),
        };
        this.write_cert()?;
        Ok(this)
    }

    /// The resolver to build the [`super::TlsAcceptor`] from.
    pub fn resolver(&self) -> Arc<CertResolver> {
        self.resolver.clone()
    }

    /// SHA-256 of the public key, base64: print it at start-up; it is what
    /// `curl --pinnedpubkey sha256//HASH` and Chromium's
    /// `--ignore-certificate-errors-spki-list=HASH` take. Stable across restarts
    /// and reissues.
    pub fn spki_sha256_base64(&self) -> &str {
        &self.spki_sha256
    }

    /// The key file.
    pub fn key_path(&self) -> PathBuf {
        self.dir.join(KEY_FILE)
    }

    /// The file holding the current certificate.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CERT_FILE)
    }

    /// DNS names and IP addresses the current certificate names.
    pub fn names(&self) -> (Vec<String>, Vec<IpAddr>) {
        let n = lock(&self.named);
        (n.dns.iter().cloned().collect(), n.ips.iter().copied().collect())
    }

    /// Makes sure the certificate names every address in `addrs` (and is not
    /// near its end); reissues it with the same key otherwise. Returns whether it
    /// reissued. Addresses are only ever added: a certificate naming an address
    /// that went away does no harm, and reissuing on every flap would not help.
    pub fn ensure_names(&self, addrs: &[IpAddr]) -> Result<bool, TlsError> {
        let mut named = lock(&self.named);
        let missing = addrs.iter().any(|a| !named.ips.contains(a));
        let due = named.not_after.is_none_or(|end| SystemTime::now() + RENEW_BEFORE > end);
        if !missing && !due {
            return Ok(false);
        }
        let mut next =
            Named { dns: named.dns.clone(), ips: named.ips.iter().chain(addrs).copied().collect(), not_after: None };
        let certified = issue(&self.key, &self.signing, &mut next)?;
        self.resolver.store(certified);
        *named = next;
        drop(named);
        if let Err(e) = self.write_cert() {
            // The served certificate does not depend on this copy.
            tracing::warn!(error = %e, "could not write the reissued self-signed certificate");
        }
        tracing::info!(spki_sha256 = %self.spki_sha256, "reissued the self-signed certificate");
        Ok(true)
    }

    fn write_cert(&self) -> Result<(), TlsError> {
        let current = self.resolver.current();
        let text = pem_encode("CERTIFICATE", current.cert[0].as_ref());
        let path = self.cert_path();
        let tmp = self.dir.join(format!(".{CERT_FILE}.{}", std::process::id()));
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| TlsError::Write { path, source })
    }
}

/// A certificate for `named` over `key`; records its end in `named`.
fn issue(
    key: &rcgen::KeyPair,
    signing: &Arc<dyn SigningKey>,
    named: &mut Named,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, "meshgate self-signed");
    for dns in &named.dns {
        let ia5 = dns
            .clone()
            .try_into()
            .map_err(|e: rcgen::Error| TlsError::BadName { name: dns.clone(), detail: e.to_string() })?;
        params.subject_alt_names.push(rcgen::SanType::DnsName(ia5));
    }
    for ip in &named.ips {
        params.subject_alt_names.push(rcgen::SanType::IpAddress(*ip));
    }
    let now = SystemTime::now();
    let not_after = now + LIFETIME;
    params.not_before = (now - BACKDATE).into();
    params.not_after = not_after.into();
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.self_signed(key)?;
    named.not_after = Some(not_after);
    Ok(Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing.clone())))
}

pub(super) fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

impl super::resolver::AddressNames for SelfSigned {
    fn ensure_names(&self, addrs: &[IpAddr]) -> Result<bool, TlsError> {
        SelfSigned::ensure_names(self, addrs)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Checks the key in `dir` as [`SelfSigned::open`] would use it, without
/// making one or writing anything (for `explain`): a key file that is there
/// must read, parse and load. `Ok(false)` when there is none yet.
pub fn check_key(dir: &Path) -> Result<bool, TlsError> {
    let path = dir.join(KEY_FILE);
    let pem = match std::fs::read_to_string(&path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(TlsError::Read { what: "key", flag: "--state-dir", path, source }),
    };
    let key = parse_key(&path, &pem)?;
    let der = PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| TlsError::NoKey { path: path.clone(), detail: e.to_string() })?;
    provider().key_provider.load_private_key(der).map_err(|e| TlsError::NoKey { path, detail: e.to_string() })?;
    Ok(true)
}

/// Reads the key in `dir`, or makes one (P-256) if there is none.
fn open_key(dir: &Path) -> Result<rcgen::KeyPair, TlsError> {
    let path = dir.join(KEY_FILE);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| TlsError::Write { path: dir.to_path_buf(), source })?;
    match std::fs::read_to_string(&path) {
        Ok(pem) => return parse_key(&path, &pem),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(TlsError::Read { what: "key", flag: "--state-dir", path, source }),
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    // Write aside with 0600 from the first byte, then link into place: link fails
    // if another meshgate made the key meanwhile, and then we use that one.
    let tmp = dir.join(format!(".{KEY_FILE}.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(key.serialize_pem().as_bytes())?;
        f.sync_all()
    };
    let linked = write().and_then(|()| std::fs::hard_link(&tmp, &path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let pem = std::fs::read_to_string(&path).map_err(|source| TlsError::Read {
                what: "key",
                flag: "--state-dir",
                path: path.clone(),
                source,
            })?;
            parse_key(&path, &pem)
        }
        Err(source) => Err(TlsError::Write { path, source }),
    }
}

fn parse_key(path: &Path, pem: &str) -> Result<rcgen::KeyPair, TlsError> {
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            // Warn rather than refuse: whoever could read it already may have, and
            // refusing would stop the gateway over a restored backup's modes.
            tracing::warn!(
                key = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "the self-signed key is readable by other users; run chmod 600 on it \
                 (and delete it to make a new key if others may have copied it)"
            );
        }
    }
    rcgen::KeyPair::from_pem(pem).map_err(|e| TlsError::NoKey {
        path: path.to_path_buf(),
        detail: format!(
            "{e}; this file is meshgate's own self-signed key: delete it to make a new one \
             (clients that pinned the old key must then pin the new hash)"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::testutil::client_handshake;
    use crate::tls::{load_pair, TlsAcceptor};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_key_persists_across_opens_with_its_hash() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state/meshgate");
        let a = SelfSigned::open(&dir, &["gw.example".into()], &[ip("10.8.0.1")]).unwrap();
        let b = SelfSigned::open(&dir, &[], &[ip("10.8.0.1")]).unwrap();
        assert_eq!(a.spki_sha256_base64(), b.spki_sha256_base64());
        assert_eq!(a.spki_sha256_base64().len(), 44, "base64 of 32 bytes");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&a.key_path()), 0o600);
        assert_eq!(mode(&dir), 0o700);
        // The written certificate and the key are a valid pair with the same hash
        // as printed: what a client pins is what the server serves.
        let pair = load_pair(&b.cert_path(), &b.key_path()).unwrap();
        assert_eq!(pair.spki_sha256, a.spki_sha256_base64());

        // Another directory, another key.
        let c = SelfSigned::open(&tmp.path().join("other"), &[], &[]).unwrap();
        assert_ne!(c.spki_sha256_base64(), a.spki_sha256_base64());
    }

    #[test]
    fn check_key_reads_what_open_would_and_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        assert!(!check_key(&dir).unwrap(), "no key yet");
        assert!(!dir.exists(), "check_key made the directory");
        SelfSigned::open(&dir, &[], &[]).unwrap();
        assert!(check_key(&dir).unwrap());
        std::fs::write(dir.join(KEY_FILE), "not a key\n").unwrap();
        assert!(matches!(check_key(&dir), Err(TlsError::NoKey { .. })));
        assert!(SelfSigned::open(&dir, &[], &[]).is_err(), "open refuses it too");
    }

    #[tokio::test]
    async fn ensure_names_adds_an_address_with_the_same_key() {
        let tmp = tempfile::tempdir().unwrap();
        let ss = SelfSigned::open(tmp.path(), &["gw.example".into()], &[ip("10.8.0.1")]).unwrap();
        let acc = TlsAcceptor::new(ss.resolver()).unwrap();
        let before = client_handshake(&acc, &[b"h2"], None).await.unwrap();
        assert!(contains(before.leaf.as_ref(), &[10, 8, 0, 1]));
        assert!(!contains(before.leaf.as_ref(), &[100, 64, 0, 7]));

        assert!(!ss.ensure_names(&[ip("10.8.0.1")]).unwrap(), "already named");
        assert!(ss.ensure_names(&[ip("100.64.0.7")]).unwrap());
        assert!(!ss.ensure_names(&[ip("100.64.0.7"), ip("10.8.0.1")]).unwrap());
        let (dns, ips) = ss.names();
        assert_eq!(dns, vec!["gw.example".to_string()]);
        assert_eq!(ips, vec![ip("10.8.0.1"), ip("100.64.0.7")]);

        let after = client_handshake(&acc, &[b"h2"], None).await.unwrap();
        assert_ne!(after.leaf.as_ref(), before.leaf.as_ref());
        assert!(contains(after.leaf.as_ref(), &[100, 64, 0, 7]));
        assert!(contains(after.leaf.as_ref(), &[10, 8, 0, 1]));
        assert!(contains(after.leaf.as_ref(), b"gw.example"));
        let pair = load_pair(&ss.cert_path(), &ss.key_path()).unwrap();
        assert_eq!(pair.spki_sha256, ss.spki_sha256_base64());
        assert_eq!(pair.certified.cert[0], after.leaf);
    }

    /// Whether `der` contains an IP SAN ([7] implicit OCTET STRING) or the bytes.
    fn contains(der: &[u8], what: &[u8]) -> bool {
        let mut needle = Vec::new();
        if what.len() == 4 || what.len() == 16 {
            needle.extend_from_slice(&[0x87, what.len() as u8]);
        }
        needle.extend_from_slice(what);
        der.windows(needle.len()).any(|w| w == needle.as_slice())
    }

    #[test]
    fn a_bad_name_is_refused_with_the_name() {
        let tmp = tempfile::tempdir().unwrap();
        let err = SelfSigned::open(tmp.path(), &["bücher.example".into()], &[]).unwrap_err();
        assert!(matches!(err, TlsError::BadName { .. }), "{err:?}");
        assert!(err.to_string().contains("bücher.example"), "{err}");
    }

    #[test]
    fn a_damaged_key_is_refused_not_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(KEY_FILE), "garbage").unwrap();
        let err = SelfSigned::open(tmp.path(), &[], &[]).unwrap_err();
        assert!(matches!(err, TlsError::NoKey { .. }), "{err:?}");
        assert!(err.to_string().contains(KEY_FILE), "{err}");
        assert_eq!(std::fs::read_to_string(tmp.path().join(KEY_FILE)).unwrap(), "garbage");
    }
}
