//! Loading and checking a PEM certificate chain and its private key.
//!
//! [`load_pair`] is the single gate every served certificate passes, at start-up
//! and on reload: the files are read, the leaf is parsed, the key must match the
//! leaf's public key and the leaf's dates must include now. Dates are read with
//! `yasna`, the ASN.1 reader rcgen already brings (so no extra crate; x509-parser
//! would add nom, der-parser, asn1-rs and more for two timestamps).

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::error::TlsError;

/// A checked certificate chain and key, ready to serve.
#[derive(Debug, Clone)]
pub struct LoadedPair {
    /// The chain and signing key, as rustls serves them.
    pub certified: Arc<CertifiedKey>,
    /// The leaf's notAfter, seconds since the Unix epoch.
    pub not_after_unix: i64,
    /// SHA-256 of the leaf's SubjectPublicKeyInfo, base64 (see [`spki_sha256_base64`]).
    pub spki_sha256: String,
}

/// The crypto provider every config in this module uses (ring).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// SHA-256 of a DER SubjectPublicKeyInfo, base64: the form `curl --pinnedpubkey
/// sha256//HASH` and Chromium's `--ignore-certificate-errors-spki-list=HASH` take.
pub fn spki_sha256_base64(spki_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

fn read(path: &Path, what: &'static str, flag: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, flag, path: path.to_path_buf(), source })
}

/// Reads `cert_path` (PEM chain, leaf first) and `key_path` (PEM private key) and
/// checks them: the key matches the leaf and the leaf is valid now.
pub fn load_pair(cert_path: &Path, key_path: &Path) -> Result<LoadedPair, TlsError> {
    let (cert_pem, key_pem) = read_pair(cert_path, key_path)?;
    pair_from_pem(&cert_pem, &key_pem, cert_path, key_path)
}

/// The raw bytes of both files.
pub(crate) fn read_pair(cert_path: &Path, key_path: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    Ok((read(cert_path, "certificate", "--tls-cert")?, read(key_path, "key", "--tls-key")?))
}

/// [`load_pair`] on bytes already read (the paths are for messages).
pub(crate) fn pair_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<LoadedPair, TlsError> {
    let chain = parse_chain(cert_pem, cert_path)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::NoKey {
        path: key_path.to_path_buf(),
        detail: match e {
            rustls_pki_types::pem::Error::NoItemsFound => "no PEM private key block found".into(),
            other => format!("{other:?}"),
        },
    })?;
    check_pair(chain, key, cert_path, key_path, SystemTime::now())
}

pub(crate) fn parse_chain(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| {
        TlsError::NoCertificate { path: path.to_path_buf(), detail: format!("; the PEM parser said: {e:?}") }
    })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_path_buf(), detail: String::new() });
    }
    Ok(chain)
}

/// The checks of [`load_pair`] on parsed input, with the clock as a parameter.
pub(crate) fn check_pair(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
    now: SystemTime,
) -> Result<LoadedPair, TlsError> {
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::NoKey { path: key_path.to_path_buf(), detail: e.to_string() })?;
    let (not_before, not_after) =
        validity(&chain[0]).map_err(|detail| TlsError::BadCertificate { path: cert_path.to_path_buf(), detail })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::KeyMismatch { cert: cert_path.to_path_buf(), key: key_path.to_path_buf() })
        }
        // ring's keys always know their public half, so "Unknown" cannot happen;
        // anything else is the leaf failing webpki's parse.
        Err(e) => return Err(TlsError::BadCertificate { path: cert_path.to_path_buf(), detail: e.to_string() }),
    }
    let now_unix = unix(now);
    if now_unix < not_before.0 {
        return Err(TlsError::NotYetValid { path: cert_path.to_path_buf(), not_before: not_before.1 });
    }
    if now_unix > not_after.0 {
        return Err(TlsError::Expired {
            path: cert_path.to_path_buf(),
            not_after: not_after.1,
            not_after_unix: not_after.0,
        });
    }
    // keys_match succeeded, so the key knows its SPKI and it equals the leaf's.
    let spki = certified.key.public_key().map(|spki| spki_sha256_base64(spki.as_ref())).unwrap_or_default();
    Ok(LoadedPair { certified: Arc::new(certified), not_after_unix: not_after.0, spki_sha256: spki })
}

pub(crate) fn unix(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// (seconds since the epoch, RFC 3339-ish text) of notBefore and notAfter.
type Validity = ((i64, String), (i64, String));

/// Reads notBefore/notAfter from a DER certificate: Certificate ::= SEQUENCE {
/// tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber, signature,
/// issuer, validity SEQUENCE { notBefore, notAfter }, ... }, ... }.
pub(super) fn validity(der: &[u8]) -> Result<Validity, String> {
    use yasna::tags::{TAG_GENERALIZEDTIME, TAG_UTCTIME};
    use yasna::{BERReader, Tag};

    fn time(r: BERReader<'_, '_>) -> yasna::ASN1Result<(i64, String)> {
        let tag = r.lookahead_tag()?;
        let t = if tag == TAG_UTCTIME {
            *r.read_utctime()?.datetime()
        } else if tag == TAG_GENERALIZEDTIME {
            *r.read_generalized_time()?.datetime()
        } else {
            return Err(yasna::ASN1Error::new(yasna::ASN1ErrorKind::Invalid));
        };
        let text = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
        Ok((t.unix_timestamp(), text))
    }

    yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let v = r.next().read_sequence(|tbs| {
                tbs.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_der()))?;
                tbs.next().read_der()?; // serialNumber
                tbs.next().read_der()?; // signature algorithm
                tbs.next().read_der()?; // issuer
                let v = tbs.next().read_sequence(|r| Ok((time(r.next())?, time(r.next())?)))?;
                // subject, subjectPublicKeyInfo, then optional unique IDs and extensions.
                while tbs.read_optional(|r| r.read_der())?.is_some() {}
                Ok(v)
            })?;
            r.next().read_der()?; // signatureAlgorithm
            r.next().read_der()?; // signatureValue
            Ok(v)
        })
    })
    .map_err(|e| format!("cannot read its validity dates ({e})"))
}
