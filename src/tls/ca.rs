//! `--tls internal`'s certificate authority: made once in the state directory,
//! limited by X.509 name constraints to what meshgate can serve.
//!
//! [`LocalCa::open`] reads the CA ([`CA_KEY_FILE`], mode 0600, and
//! [`CA_CERT_FILE`]) or makes it the first time, with the [`Constraints`] asked
//! for: the private, CGNAT, ULA and loopback ranges (or the configured mesh
//! ranges) and the configured DNS names; no e-mail address and no URI. The
//! constraints (written here: rcgen has no URI form) are critical and the
//! CA may issue no intermediates (path length 0) and only server certificates
//! (extended key usage), so a device that trusts it trusts it for those
//! addresses and names and nothing else. The key is never served and never
//! printed; only the certificate leaves this module ([`LocalCa::cert_pem`]).
//!
//! The constraints of a CA made earlier are read back from its certificate
//! (a small DER reader on yasna, which rcgen already brings), not from today's
//! flags: a leaf may name only what the CA a device trusts permits.

use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::certs::{provider, validity};
use super::error::TlsError;
use super::selfsigned::pem_encode;

/// The CA's private key in the state directory (0600).
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// The CA's certificate in the state directory: what devices import.
pub const CA_CERT_FILE: &str = "ca.crt";

/// How long the CA is valid (as mkcert's and Caddy's roots: ten years).
const CA_LIFETIME: Duration = Duration::from_secs(3650 * 24 * 3600);
/// notBefore lies this far back, for clients whose clocks are a little behind.
const BACKDATE: Duration = Duration::from_secs(3600);
/// The DNS name permitted when no name is configured: `.invalid` never
/// resolves (RFC 6761), and a permitted subtree of the DNS type must exist
/// for DNS names to be constrained at all (RFC 5280 4.2.1.10).
const NO_NAME: &str = "invalid";
const OID_NAME_CONSTRAINTS: &[u64] = &[2, 5, 29, 30];
/// How long [`LocalCa::open`] waits for the certificate of a key another
/// meshgate has just put in place.
const SETTLE: Duration = Duration::from_secs(2);

/// What a CA may sign for: IP ranges and DNS names (each with its subdomains).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Constraints {
    /// The IP ranges.
    pub ranges: Vec<IpNet>,
    /// The DNS names (a name permits itself and every name below it).
    pub dns: Vec<String>,
}

impl Constraints {
    /// The ranges a mesh address lies in: RFC 1918, CGNAT (100.64.0.0/10, the
    /// tailnet's), ULA (fc00::/7), and loopback (for `--tls-loopback`).
    pub fn default_ranges() -> Vec<IpNet> {
        ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8", "fc00::/7", "::1/128"]
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect()
    }

    /// `ranges` (the default ones when empty; loopback always) and `names`
    /// (the DNS names among them; IP literals must lie in the ranges).
    pub fn new(ranges: &[IpNet], names: &[String]) -> Self {
        let mut r: Vec<IpNet> = if ranges.is_empty() { Self::default_ranges() } else { ranges.to_vec() };
        for lo in ["127.0.0.0/8", "::1/128"] {
            let lo: IpNet = lo.parse().expect("a literal network");
            if !r.iter().any(|n| n.contains(&lo)) {
                r.push(lo);
            }
        }
        let mut dns: Vec<String> =
            names.iter().filter(|n| n.parse::<IpAddr>().is_err()).map(|n| n.to_ascii_lowercase()).collect();
        dns.sort();
        dns.dedup();
        Constraints { ranges: r.into_iter().map(|n| n.trunc()).collect(), dns }
    }

    /// Whether a certificate from this CA may name `ip`.
    pub fn permits_ip(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|n| n.contains(&ip))
    }

    /// Whether a certificate from this CA may name `name` (exactly, or below).
    pub fn permits_dns(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.dns.iter().any(|d| name == *d || name.ends_with(&format!(".{d}")))
    }

    /// One line for a person: `IP 10.0.0.0/8, ...; DNS gw.example (and below)`.
    pub fn describe(&self) -> String {
        let ranges: Vec<String> = self.ranges.iter().map(ToString::to_string).collect();
        let dns = if self.dns.is_empty() {
            "none".to_owned()
        } else {
            format!("{} (each with the names below it)", self.dns.join(", "))
        };
        format!("permitted IP ranges {}; permitted DNS names {dns}", ranges.join(", "))
    }

    /// The NameConstraints extension, critical. Written here rather than by
    /// rcgen because rcgen's subtrees have no URI form: permitted subtrees
    /// constrain only the name forms they list, so a form left out (URIs,
    /// as e-mail addresses before) would stay open to any value.
    fn extension(&self) -> rcgen::CustomExtension {
        use yasna::Tag;
        let dns: Vec<&str> =
            if self.dns.is_empty() { vec![NO_NAME] } else { self.dns.iter().map(String::as_str).collect() };
        let der = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_tagged_implicit(Tag::context(0), |w| {
                    w.write_sequence(|w| {
                        // GeneralSubtree ::= SEQUENCE { base GeneralName } (minimum 0, no maximum).
                        let mut subtree = |tag: u64, write: &dyn Fn(yasna::DERWriter<'_>)| {
                            w.next().write_sequence(|w| w.next().write_tagged_implicit(Tag::context(tag), write));
                        };
                        for n in &self.ranges {
                            // iPAddress [7]: the address, then the mask (RFC 5280 4.2.1.10).
                            let bytes: Vec<u8> = match (n.network(), n.netmask()) {
                                (IpAddr::V4(a), IpAddr::V4(m)) => [a.octets(), m.octets()].concat(),
                                (IpAddr::V6(a), IpAddr::V6(m)) => [a.octets(), m.octets()].concat(),
                                _ => continue,
                            };
                            subtree(7, &|w| w.write_bytes(&bytes));
                        }
                        for d in &dns {
                            subtree(2, &|w| w.write_ia5_string(d)); // dNSName
                        }
                        // No e-mail address and no URI either: the CA is for
                        // servers on the mesh (rfc822Name [1], URI [6]).
                        subtree(1, &|w| w.write_ia5_string(NO_NAME));
                        subtree(6, &|w| w.write_ia5_string(NO_NAME));
                    })
                })
            })
        });
        let mut ext = rcgen::CustomExtension::from_oid_content(OID_NAME_CONSTRAINTS, der);
        ext.set_criticality(true);
        ext
    }
}

/// The local CA: its key (in memory only), the issuer rcgen signs with, and
/// the certificate devices trust.
pub struct LocalCa {
    dir: PathBuf,
    key: rcgen::KeyPair,
    issuer: rcgen::Certificate,
    cert: CaCertificate,
}

/// The CA's certificate alone, read without its key (what `meshgate ca`
/// needs: it never touches the key).
#[derive(Debug, Clone)]
pub struct CaCertificate {
    path: PathBuf,
    der: CertificateDer<'static>,
    subject: Vec<u8>,
    spki: Vec<u8>,
    constraints: Constraints,
}

impl CaCertificate {
    /// Reads and checks [`CA_CERT_FILE`] in `dir` (a CA certificate with
    /// name constraints, not expired); [`TlsError::NoCa`] when there is none.
    pub fn read(dir: &Path) -> Result<Self, TlsError> {
        let path = dir.join(CA_CERT_FILE);
        let pem = match std::fs::read(&path) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TlsError::NoCa { dir: dir.to_path_buf() })
            }
            Err(source) => return Err(TlsError::Read { what: "certificate", flag: "--state-dir", path, source }),
        };
        let bad = |detail: String| TlsError::BadCa { path: path.clone(), detail };
        let der = super::certs::parse_chain(&pem, &path)?.remove(0);
        let parts = tbs_parts(der.as_ref()).map_err(bad)?;
        let ((_, _), (not_after, not_after_text)) = validity(der.as_ref()).map_err(bad)?;
        if not_after < super::certs::unix(SystemTime::now()) {
            return Err(bad(format!("it expired at {not_after_text}")));
        }
        let constraints = match parts.name_constraints {
            Some(nc) => parse_constraints(&nc).map_err(bad)?,
            None => return Err(bad("it carries no name constraints".into())),
        };
        Ok(CaCertificate { path, der, subject: parts.subject, spki: parts.spki, constraints })
    }

    /// The certificate, PEM.
    pub fn pem(&self) -> String {
        pem_encode("CERTIFICATE", self.der.as_ref())
    }

    /// The certificate, DER (what phones import).
    pub fn der(&self) -> &[u8] {
        self.der.as_ref()
    }

    /// SHA-256 of the certificate, colon-separated hex (as browsers and
    /// `openssl x509 -fingerprint -sha256` show it).
    pub fn fingerprint_sha256(&self) -> String {
        let d = ring::digest::digest(&ring::digest::SHA256, self.der.as_ref());
        d.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
    }

    /// What the CA permits (read from the certificate).
    pub fn constraints(&self) -> &Constraints {
        &self.constraints
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("LocalCa")
            .field("dir", &self.dir)
            .field("fingerprint", &self.fingerprint_sha256())
            .field("constraints", &self.cert.constraints)
            .finish_non_exhaustive()
    }
}

impl LocalCa {
    /// Reads the CA in `dir`, or makes it with `wanted` if there is none.
    /// Returns it and whether it was made now.
    pub fn open(dir: &Path, wanted: &Constraints) -> Result<(Self, bool), TlsError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| TlsError::Write { path: dir.to_path_buf(), source })?;
        match Self::load_settled(dir) {
            Ok(ca) => return Ok((ca, false)),
            Err(TlsError::NoCa { .. }) => {}
            Err(e) => return Err(e),
        }
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let now = SystemTime::now();
        let mut params = ca_params(&key);
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + CA_LIFETIME).into();
        params.custom_extensions.push(wanted.extension());
        let cert = params.self_signed(&key)?;
        // The certificate first (harmless if we lose a race), then the key,
        // linked into place: link fails if another meshgate made one meanwhile,
        // and then that one is read back, whole.
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let tmp_cert = dir.join(format!(".{CA_CERT_FILE}.{}", std::process::id()));
        let tmp_key = dir.join(format!(".{CA_KEY_FILE}.{}", std::process::id()));
        // Each temporary file is made anew (O_CREAT|O_EXCL, never through a
        // symlink): one left at the name would keep its own mode, and the key
        // would get that mode through the hard link below.
        let write = |path: &Path, mode: u32, text: &str| -> std::io::Result<()> {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()
        };
        write(&tmp_cert, 0o644, &cert.pem()).map_err(|source| TlsError::Write { path: cert_path.clone(), source })?;
        let linked =
            write(&tmp_key, 0o600, &key.serialize_pem()).and_then(|()| std::fs::hard_link(&tmp_key, &key_path));
        let _ = std::fs::remove_file(&tmp_key);
        match linked {
            Ok(()) => {
                std::fs::rename(&tmp_cert, &cert_path).map_err(|source| TlsError::Write { path: cert_path, source })?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = std::fs::remove_file(&tmp_cert);
                return Ok((Self::load_settled(dir)?, false));
            }
            Err(source) => {
                let _ = std::fs::remove_file(&tmp_cert);
                return Err(TlsError::Write { path: key_path, source });
            }
        }
        Ok((Self::load(dir)?, true))
    }

    /// [`LocalCa::load`], waiting up to [`SETTLE`] while the key is there
    /// without its certificate: another meshgate making the CA links the key
    /// in first and renames the certificate in a moment later. A key whose
    /// certificate stays missing (a crash between the two) is still an error.
    fn load_settled(dir: &Path) -> Result<Self, TlsError> {
        let start = std::time::Instant::now();
        loop {
            match Self::load(dir) {
                Err(TlsError::BadCa { .. })
                    if start.elapsed() < SETTLE
                        && !dir.join(CA_CERT_FILE).exists()
                        && dir.join(CA_KEY_FILE).exists() =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    /// Reads the CA in `dir`; [`TlsError::NoCa`] when there is none yet.
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let key_path = dir.join(CA_KEY_FILE);
        let cert_path = dir.join(CA_CERT_FILE);
        let key_pem = match std::fs::read_to_string(&key_path) {
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TlsError::NoCa { dir: dir.to_path_buf() })
            }
            Err(source) => return Err(TlsError::Read { what: "key", flag: "--state-dir", path: key_path, source }),
        };
        if let Ok(meta) = std::fs::metadata(&key_path) {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    key = %key_path.display(),
                    mode = format!("{:o}", mode & 0o777),
                    "the local CA's key is readable by other users; run chmod 600 on it (and if others may \
                     have copied it, delete both CA files, then remove the old CA from every device)"
                );
            }
        }
        let key = rcgen::KeyPair::from_pem(&key_pem)
            .map_err(|e| TlsError::BadCa { path: key_path.clone(), detail: e.to_string() })?;
        let cert = match CaCertificate::read(dir) {
            Err(TlsError::NoCa { .. }) => {
                return Err(TlsError::BadCa {
                    path: cert_path,
                    detail: format!("it is missing, though its key {} is there", key_path.display()),
                })
            }
            other => other?,
        };
        let bad = |detail: String| TlsError::BadCa { path: cert_path.clone(), detail };
        if cert.spki != key.public_key_der() {
            return Err(bad(format!("it is not the certificate of the key in {}", key_path.display())));
        }
        // rcgen signs with an issuer made from the same name and key: the
        // leaves' issuer and key identifier are then those of the stored
        // certificate (checked, in case the stored one came from elsewhere).
        let issuer = ca_params(&key).self_signed(&key)?;
        if tbs_parts(issuer.der().as_ref()).map(|p| p.subject).ok().as_ref() != Some(&cert.subject) {
            return Err(bad("its subject is not the one meshgate gives its CA".into()));
        }
        Ok(LocalCa { dir: dir.to_path_buf(), key, issuer, cert })
    }

    /// The certificate (without the key).
    pub fn certificate(&self) -> &CaCertificate {
        &self.cert
    }

    /// The certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// SHA-256 of the certificate, colon-separated hex.
    pub fn fingerprint_sha256(&self) -> String {
        self.cert.fingerprint_sha256()
    }

    /// What the CA permits (read from its certificate).
    pub fn constraints(&self) -> &Constraints {
        &self.cert.constraints
    }

    /// The certificate file.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CA_CERT_FILE)
    }

    /// The key file.
    pub fn key_path(&self) -> PathBuf {
        self.dir.join(CA_KEY_FILE)
    }

    /// A leaf for `dns` and `ips` over a fresh key, valid from a little
    /// before now for `lifetime`; its notAfter. The names must be permitted
    /// (the caller filters).
    pub(crate) fn issue(
        &self,
        dns: &[String],
        ips: &[IpAddr],
        lifetime: Duration,
    ) -> Result<(Arc<CertifiedKey>, SystemTime), TlsError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        // Not a host name (it has spaces): no verifier takes it for one.
        params.distinguished_name.push(rcgen::DnType::CommonName, "meshgate leaf");
        for name in dns {
            let ia5 = name
                .clone()
                .try_into()
                .map_err(|e: rcgen::Error| TlsError::BadName { name: name.clone(), detail: e.to_string() })?;
            params.subject_alt_names.push(rcgen::SanType::DnsName(ia5));
        }
        params.subject_alt_names.extend(ips.iter().map(|ip| rcgen::SanType::IpAddress(*ip)));
        let now = SystemTime::now();
        let not_after = now + lifetime;
        params.not_before = (now - BACKDATE.min(lifetime)).into();
        params.not_after = not_after.into();
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        // A random serial: rcgen's default is a hash of the key, fine too, but
        // a serial says "new certificate" to anyone reading logs.
        let mut serial = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
            .map_err(|_| TlsError::Rustls(rustls::Error::FailedToGetRandomBytes))?;
        serial[0] &= 0x7f;
        params.serial_number = Some(serial.to_vec().into());
        let cert = params.signed_by(&key, &self.issuer, &self.key)?;
        let der = PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| TlsError::BadCa { path: self.key_path(), detail: e.to_string() })?;
        let signing = provider().key_provider.load_private_key(der)?;
        Ok((Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing)), not_after))
    }

    /// A leaf for names the CA does not permit, signed all the same: for
    /// tests that show clients refuse it.
    #[cfg(test)]
    pub(crate) fn issue_unchecked_for_tests(
        &self,
        dns: &[String],
        ips: &[IpAddr],
    ) -> Result<(String, String), TlsError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::new(dns.to_vec())?;
        params.subject_alt_names.extend(ips.iter().map(|ip| rcgen::SanType::IpAddress(*ip)));
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, "meshgate leaf");
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + Duration::from_secs(24 * 3600)).into();
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer, &self.key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// The CA's fixed fields; the name is made from the key, so the issuer can be
/// made again from the key alone.
fn ca_params(key: &rcgen::KeyPair) -> rcgen::CertificateParams {
    let id = ring::digest::digest(&ring::digest::SHA256, &key.public_key_der());
    let short: String = id.as_ref()[..4].iter().map(|b| format!("{b:02x}")).collect();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "meshgate");
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("meshgate local CA {short}"));
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params
}

/// The parts of a certificate this module reads.
struct TbsParts {
    subject: Vec<u8>,
    spki: Vec<u8>,
    name_constraints: Option<Vec<u8>>,
}

/// Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version, serial,
/// signature, issuer, validity, subject, subjectPublicKeyInfo, [1] [2]
/// unique IDs, [3] extensions }, signatureAlgorithm, signatureValue }.
fn tbs_parts(der: &[u8]) -> Result<TbsParts, String> {
    use yasna::Tag;
    yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let parts = r.next().read_sequence(|tbs| {
                tbs.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_der()))?;
                tbs.next().read_der()?; // serialNumber
                tbs.next().read_der()?; // signature
                tbs.next().read_der()?; // issuer
                tbs.next().read_der()?; // validity
                let subject = tbs.next().read_der()?;
                let spki = tbs.next().read_der()?;
                let mut name_constraints = None;
                loop {
                    let ext = tbs.read_optional(|r| {
                        let tag = r.lookahead_tag()?;
                        if tag != Tag::context(3) {
                            r.read_der()?;
                            return Ok(None);
                        }
                        r.read_tagged(Tag::context(3), |r| {
                            r.read_sequence_of(|r| {
                                r.read_sequence(|r| {
                                    let oid = r.next().read_oid()?;
                                    r.read_optional(|r| r.read_bool())?;
                                    let value = r.next().read_bytes()?;
                                    if oid.components().as_slice() == OID_NAME_CONSTRAINTS {
                                        name_constraints = Some(value);
                                    }
                                    Ok(())
                                })
                            })
                        })?;
                        Ok(Some(()))
                    })?;
                    if ext.is_none() {
                        break;
                    }
                }
                // The whole SubjectPublicKeyInfo, as rcgen's `public_key_der` gives it.
                Ok(TbsParts { subject, spki, name_constraints })
            })?;
            r.next().read_der()?;
            r.next().read_der()?;
            Ok(parts)
        })
    })
    .map_err(|e| format!("cannot read it as an X.509 certificate ({e})"))
}

/// NameConstraints ::= SEQUENCE { permittedSubtrees [0] IMPLICIT SEQUENCE OF
/// GeneralSubtree OPTIONAL, excludedSubtrees [1] ... OPTIONAL }; GeneralSubtree
/// ::= SEQUENCE { base GeneralName, ... }. Reads the permitted IP ranges and
/// DNS names (the placeholder `invalid` left out).
fn parse_constraints(value: &[u8]) -> Result<Constraints, String> {
    use yasna::Tag;
    let mut out = Constraints::default();
    yasna::parse_der(value, |r| {
        r.read_sequence(|r| {
            r.read_optional(|r| {
                r.read_tagged_implicit(Tag::context(0), |r| {
                    r.read_sequence_of(|r| {
                        r.read_sequence(|r| {
                            let base = r.next();
                            let tag = base.lookahead_tag()?;
                            if tag == Tag::context(2) {
                                let name = base.read_tagged_implicit(Tag::context(2), |r| r.read_ia5_string())?;
                                if name != NO_NAME {
                                    out.dns.push(name);
                                }
                            } else if tag == Tag::context(7) {
                                let b = base.read_tagged_implicit(Tag::context(7), |r| r.read_bytes())?;
                                if let Some(net) = net_of(&b) {
                                    out.ranges.push(net);
                                }
                            } else {
                                base.read_der()?;
                            }
                            while r.read_optional(|r| r.read_der())?.is_some() {}
                            Ok(())
                        })
                    })
                })
            })?;
            r.read_optional(|r| r.read_der())?;
            Ok(())
        })
    })
    .map_err(|e| format!("cannot read its name constraints ({e})"))?;
    Ok(out)
}

/// An address and mask (8 or 32 bytes) as a network.
fn net_of(b: &[u8]) -> Option<IpNet> {
    let prefix = |mask: &[u8]| mask.iter().map(|m| m.count_ones()).sum::<u32>() as u8;
    match b.len() {
        8 => {
            let a: [u8; 4] = b[..4].try_into().ok()?;
            IpNet::new(IpAddr::from(a), prefix(&b[4..])).ok()
        }
        32 => {
            let a: [u8; 16] = b[..16].try_into().ok()?;
            IpNet::new(IpAddr::from(a), prefix(&b[16..])).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn made_once_with_its_constraints_and_a_private_key() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let wanted = Constraints::new(&[], &["gw.example".into(), "10.1.2.3".into()]);
        let (ca, made) = LocalCa::open(&dir, &wanted).unwrap();
        assert!(made);
        assert_eq!(ca.constraints(), &wanted, "read back from the certificate");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ca.key_path()), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert_eq!(ca.fingerprint_sha256().len(), 32 * 3 - 1);
        assert!(!format!("{ca:?}").contains("PRIVATE"), "Debug never shows the key");

        // Opened again with other wishes: the same CA, its own constraints.
        let (again, made) = LocalCa::open(&dir, &Constraints::new(&[], &["other.example".into()])).unwrap();
        assert!(!made);
        assert_eq!(again.fingerprint_sha256(), ca.fingerprint_sha256());
        assert_eq!(again.constraints(), &wanted);
        assert!(again.constraints().permits_dns("gw.example"));
        assert!(again.constraints().permits_dns("a.gw.example."));
        assert!(!again.constraints().permits_dns("evilgw.example"));
        assert!(!again.constraints().permits_dns("other.example"));
        assert!(again.constraints().permits_ip(ip("100.101.102.103")));
        assert!(again.constraints().permits_ip(ip("fd7a:115c:a1e0::1")));
        assert!(!again.constraints().permits_ip(ip("8.8.8.8")));
        assert!(!again.constraints().permits_ip(ip("2001:db8::1")));
    }

    #[test]
    fn the_certificate_alone_is_read_without_the_key() {
        let tmp = tempfile::tempdir().unwrap();
        let (ca, _) = LocalCa::open(tmp.path(), &Constraints::new(&[], &["gw.example".into()])).unwrap();
        let only = tempfile::tempdir().unwrap();
        std::fs::copy(ca.cert_path(), only.path().join(CA_CERT_FILE)).unwrap();
        let cert = CaCertificate::read(only.path()).unwrap();
        assert_eq!(cert.fingerprint_sha256(), ca.fingerprint_sha256());
        assert_eq!(cert.pem(), ca.cert_pem());
        assert_eq!(cert.constraints(), ca.constraints());
        // The key without its certificate is a damaged CA, not a missing one.
        std::fs::remove_file(ca.cert_path()).unwrap();
        let err = LocalCa::load(tmp.path()).unwrap_err();
        assert!(matches!(err, TlsError::BadCa { .. }) && err.to_string().contains("missing"), "{err}");
        assert!(matches!(CaCertificate::read(tmp.path()), Err(TlsError::NoCa { .. })));
    }

    #[test]
    fn configured_ranges_replace_the_default_ones_and_loopback_stays() {
        let c = Constraints::new(&["10.8.0.0/24".parse().unwrap()], &[]);
        assert!(c.permits_ip(ip("10.8.0.9")));
        assert!(!c.permits_ip(ip("10.9.0.1")));
        assert!(c.permits_ip(ip("127.0.0.1")) && c.permits_ip(ip("::1")));
        assert!(!c.permits_dns("invalid"), "the placeholder is no name anyone may use");
        let tmp = tempfile::tempdir().unwrap();
        let (ca, _) = LocalCa::open(tmp.path(), &c).unwrap();
        assert_eq!(ca.constraints(), &c);
        assert!(ca.constraints().describe().contains("10.8.0.0/24"), "{}", ca.constraints().describe());
    }

    #[test]
    fn no_ca_yet_and_a_damaged_one_are_errors_naming_the_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let err = LocalCa::load(tmp.path()).unwrap_err();
        assert!(matches!(err, TlsError::NoCa { .. }), "{err:?}");
        assert!(err.to_string().contains(&tmp.path().display().to_string()), "{err}");
        std::fs::write(tmp.path().join(CA_KEY_FILE), "garbage").unwrap();
        let err = LocalCa::open(tmp.path(), &Constraints::new(&[], &[])).unwrap_err();
        assert!(err.to_string().contains(CA_KEY_FILE), "{err}");
        assert_eq!(std::fs::read_to_string(tmp.path().join(CA_KEY_FILE)).unwrap(), "garbage", "never replaced");
    }

    /// A CA constrained to `gw.example` in `dir`, and rustls's verifier
    /// trusting only it.
    fn ca_and_verifier(dir: &std::path::Path) -> (LocalCa, Arc<rustls::client::WebPkiServerVerifier>) {
        let (ca, _) = LocalCa::open(dir, &Constraints::new(&[], &["gw.example".into()])).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert.der.clone()).unwrap();
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider()).build().unwrap();
        (ca, verifier)
    }

    /// webpki (rustls's verifier) enforces name constraints: a leaf for a
    /// permitted address verifies; one for a name outside does not.
    #[test]
    fn webpki_accepts_a_leaf_inside_and_refuses_one_outside() {
        use rustls::client::danger::ServerCertVerifier as _;
        use rustls::pki_types::{ServerName, UnixTime};
        let tmp = tempfile::tempdir().unwrap();
        let (ca, verifier) = ca_and_verifier(tmp.path());
        let (leaf, _) = ca.issue(&["gw.example".into()], &[ip("10.8.0.1")], Duration::from_secs(120)).unwrap();
        let now = UnixTime::now();
        for name in ["10.8.0.1", "gw.example"] {
            let sn = ServerName::try_from(name).unwrap();
            verifier.verify_server_cert(&leaf.cert[0], &[], &sn, &[], now).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let (pem, _) = ca.issue_unchecked_for_tests(&["bank.example".into()], &[]).unwrap();
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let sn = ServerName::try_from("bank.example").unwrap();
        let err = verifier.verify_server_cert(&der, &[], &sn, &[], now).unwrap_err();
        assert!(format!("{err:?}").contains("NameConstraint"), "{err:?}");
        let (pem, _) = ca.issue_unchecked_for_tests(&[], &[ip("8.8.8.8")]).unwrap();
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let sn = ServerName::try_from("8.8.8.8").unwrap();
        assert!(verifier.verify_server_cert(&der, &[], &sn, &[], now).is_err());
    }

    /// The temporary key file is made anew (O_EXCL, 0600): a file or symlink
    /// left at its name (a crashed run with the same pid, or planted in a
    /// state directory others can write) neither lends the key its wider mode
    /// through the hard link nor receives the key through the symlink.
    #[test]
    fn a_file_left_at_the_temporary_name_gets_neither_the_key_nor_its_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        let stale = dir.join(format!(".{CA_KEY_FILE}.{}", std::process::id()));
        std::fs::write(&stale, "left over").unwrap();
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (ca, made) = LocalCa::open(&dir, &Constraints::new(&[], &[])).unwrap();
        assert!(made);
        let mode = std::fs::metadata(ca.key_path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the key took the left-over file's mode");

        let dir = tmp.path().join("state2");
        std::fs::create_dir(&dir).unwrap();
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::write(&elsewhere, "").unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join(format!(".{CA_KEY_FILE}.{}", std::process::id()))).unwrap();
        let (ca, _) = LocalCa::open(&dir, &Constraints::new(&[], &[])).unwrap();
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "", "the key was written through the symlink");
        let meta = std::fs::symlink_metadata(ca.key_path()).unwrap();
        assert!(meta.file_type().is_file() && meta.permissions().mode() & 0o777 == 0o600, "{meta:?}");
    }

    /// Two meshgates making the CA at once (template units sharing a state
    /// directory): the one that finds the key linked in but the certificate
    /// not yet renamed into place waits for it instead of calling the CA
    /// damaged.
    #[test]
    fn a_ca_being_made_by_another_process_is_waited_for() {
        let other = tempfile::tempdir().unwrap();
        let (made, _) = LocalCa::open(other.path(), &Constraints::new(&[], &[])).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        std::fs::copy(made.key_path(), tmp.path().join(CA_KEY_FILE)).unwrap();
        let (from, to) = (made.cert_path(), tmp.path().join(CA_CERT_FILE));
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            std::fs::copy(from, to).unwrap();
        });
        let (ca, made_now) = LocalCa::open(tmp.path(), &Constraints::new(&[], &["other.example".into()])).unwrap();
        late.join().unwrap();
        assert!(!made_now);
        assert_eq!(ca.fingerprint_sha256(), made.fingerprint_sha256());
        // A certificate that never comes is the damaged CA it was.
        std::fs::remove_file(ca.cert_path()).unwrap();
        let err = LocalCa::open(tmp.path(), &Constraints::new(&[], &[])).unwrap_err();
        assert!(matches!(err, TlsError::BadCa { .. }) && err.to_string().contains("missing"), "{err}");
    }

    /// URIs are closed like e-mail addresses: a leaf naming any URI (a URI-ID
    /// as RFC 6125 clients and SPIFFE-style checks read) is refused, while
    /// ordinary leaves are not affected.
    #[test]
    fn a_leaf_naming_a_uri_is_refused() {
        use rustls::client::danger::ServerCertVerifier as _;
        use rustls::pki_types::{ServerName, UnixTime};
        let tmp = tempfile::tempdir().unwrap();
        let (ca, verifier) = ca_and_verifier(tmp.path());
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["gw.example".to_owned()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::URI("https://bank.example/".try_into().unwrap()));
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let leaf = params.signed_by(&key, &ca.issuer, &ca.key).unwrap();
        let sn = ServerName::try_from("gw.example").unwrap();
        let err = verifier.verify_server_cert(leaf.der(), &[], &sn, &[], UnixTime::now()).unwrap_err();
        assert!(format!("{err:?}").contains("NameConstraint"), "{err:?}");
        // The constraints still read back the same, and a plain leaf still verifies.
        assert_eq!(CaCertificate::read(tmp.path()).unwrap().constraints(), ca.constraints());
        let (leaf, _) = ca.issue(&["gw.example".into()], &[ip("10.8.0.1")], Duration::from_secs(120)).unwrap();
        verifier.verify_server_cert(&leaf.cert[0], &[], &sn, &[], UnixTime::now()).unwrap();
    }

    use rustls_pki_types::pem::PemObject as _;
}
