//! What the status page says about the certificate served: the names on it
//! (subjectAltName DNS names and IP addresses), when it expires, and the
//! SHA-256 of its public key (the pin `curl --pinnedpubkey` takes).
//!
//! Read with `yasna`, the ASN.1 reader the TLS module already uses for the
//! dates, from the leaf the resolver serves now.

use std::net::IpAddr;

use serde::Serialize;
use yasna::models::ObjectIdentifier;
use yasna::{BERReader, Tag};

use crate::tls::{spki_sha256_base64, CertResolver};

/// The served certificate, as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    /// DNS names and IP addresses it is valid for.
    pub names: Vec<String>,
    /// Its notAfter, seconds since the Unix epoch (`None`: unreadable).
    pub not_after: Option<i64>,
    /// SHA-256 of its public key, base64.
    pub pin: Option<String>,
}

/// The certificate `resolver` serves now.
pub fn cert_info(resolver: &CertResolver) -> CertInfo {
    let current = resolver.current();
    let pin = current.key.public_key().map(|spki| spki_sha256_base64(spki.as_ref()));
    let (names, not_after) = current.cert.first().map(|leaf| read_leaf(leaf.as_ref())).unwrap_or_default();
    CertInfo { names, not_after, pin }
}

/// (names, notAfter) of a DER certificate; what cannot be read is left empty.
pub fn read_leaf(der: &[u8]) -> (Vec<String>, Option<i64>) {
    let parsed = yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let v = r.next().read_sequence(|tbs| {
                tbs.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_der()))?;
                tbs.next().read_der()?; // serialNumber
                tbs.next().read_der()?; // signature algorithm
                tbs.next().read_der()?; // issuer
                let not_after = tbs.next().read_sequence(|r| {
                    r.next().read_der()?;
                    time(r.next())
                })?;
                tbs.next().read_der()?; // subject
                tbs.next().read_der()?; // subjectPublicKeyInfo
                let mut names = Vec::new();
                // issuerUniqueID [1], subjectUniqueID [2], extensions [3].
                while let Some(found) = tbs.read_optional(|r| {
                    if r.lookahead_tag()? == Tag::context(3) {
                        r.read_tagged(Tag::context(3), |r| {
                            r.read_sequence_of(|ext| {
                                if let Some(mut n) = extension_names(ext)? {
                                    names.append(&mut n);
                                }
                                Ok(())
                            })
                        })
                    } else {
                        r.read_der().map(drop)
                    }
                })? {
                    let () = found;
                }
                Ok((names, not_after))
            })?;
            r.next().read_der()?; // signatureAlgorithm
            r.next().read_der()?; // signatureValue
            Ok(v)
        })
    });
    match parsed {
        Ok((names, after)) => (names, Some(after)),
        Err(_) => (Vec::new(), None),
    }
}

fn time(r: BERReader<'_, '_>) -> yasna::ASN1Result<i64> {
    use yasna::tags::{TAG_GENERALIZEDTIME, TAG_UTCTIME};
    let tag = r.lookahead_tag()?;
    if tag == TAG_UTCTIME {
        Ok(r.read_utctime()?.datetime().unix_timestamp())
    } else if tag == TAG_GENERALIZEDTIME {
        Ok(r.read_generalized_time()?.datetime().unix_timestamp())
    } else {
        Err(yasna::ASN1Error::new(yasna::ASN1ErrorKind::Invalid))
    }
}

/// The names of a subjectAltName extension; `None` for any other extension.
fn extension_names(r: BERReader<'_, '_>) -> yasna::ASN1Result<Option<Vec<String>>> {
    let san = ObjectIdentifier::from_slice(&[2, 5, 29, 17]);
    r.read_sequence(|r| {
        let oid = r.next().read_oid()?;
        // critical BOOLEAN DEFAULT FALSE
        let mut value = None;
        while let Some(v) = r.read_optional(|r| {
            if r.lookahead_tag()? == yasna::tags::TAG_BOOLEAN {
                r.read_bool().map(|_| None)
            } else {
                r.read_bytes().map(Some)
            }
        })? {
            if v.is_some() {
                value = v;
            }
        }
        if oid != san {
            return Ok(None);
        }
        let Some(value) = value else { return Ok(None) };
        let names = yasna::parse_der(&value, |r| {
            r.collect_sequence_of(|r| {
                let tag = r.lookahead_tag()?;
                if tag == Tag::context(2) {
                    let b = r.read_tagged_implicit(Tag::context(2), |r| r.read_bytes())?;
                    Ok(Some(String::from_utf8_lossy(&b).into_owned()))
                } else if tag == Tag::context(7) {
                    let b = r.read_tagged_implicit(Tag::context(7), |r| r.read_bytes())?;
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                        _ => None,
                    };
                    Ok(ip.map(|ip| ip.to_string()))
                } else {
                    r.read_der().map(|_| None)
                }
            })
        })?;
        Ok(Some(names.into_iter().flatten().collect()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_expiry_are_read_from_a_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["gw.example".to_owned()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::IpAddress("10.8.0.1".parse().unwrap()));
        params.subject_alt_names.push(rcgen::SanType::IpAddress("fd00::1".parse().unwrap()));
        params.not_after = rcgen::date_time_ymd(2031, 1, 2);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (names, after) = read_leaf(cert.der());
        assert_eq!(names, ["gw.example", "10.8.0.1", "fd00::1"]);
        assert_eq!(after, Some(1_925_078_400), "2031-01-02T00:00:00Z");
        assert_eq!(read_leaf(b"not a certificate"), (Vec::new(), None));
    }
}
