//! Tests of `certs.rs`, in a file of their own: they use the shared test
//! helpers (`testutil.rs`), which themselves use `certs.rs`.

use super::certs::*;
use super::error::TlsError;
use crate::tls::testutil::{write_pair, Made};

#[test]
fn loads_a_good_pair_and_hashes_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let made = Made::new(&["gw.example"], None);
    let (c, k) = write_pair(dir.path(), "a", &made);
    let pair = load_pair(&c, &k).unwrap();
    assert_eq!(pair.spki_sha256, made.spki_sha256());
    assert_eq!(pair.certified.cert.len(), 1);
    assert_eq!(pair.certified.cert[0].as_ref(), made.cert.der().as_ref());
}

#[test]
fn a_missing_file_names_the_file_and_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let made = Made::new(&["gw.example"], None);
    let (c, _k) = write_pair(dir.path(), "a", &made);
    let missing = dir.path().join("nope.key");
    let err = load_pair(&c, &missing).unwrap_err();
    assert!(matches!(err, TlsError::Read { what: "key", .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("nope.key") && text.contains("--tls-key"), "{text}");
}

#[test]
fn garbage_pem_is_no_certificate_and_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let made = Made::new(&["gw.example"], None);
    let (c, k) = write_pair(dir.path(), "a", &made);
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "hello, this is not PEM\n").unwrap();
    let err = load_pair(&junk, &k).unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");
    assert!(err.to_string().contains("junk.pem"));
    let err = load_pair(&c, &junk).unwrap_err();
    assert!(matches!(err, TlsError::NoKey { .. }), "{err:?}");
    assert!(err.to_string().contains("junk.pem"));
    // The certificate given as the key: a PEM file, but no key in it.
    let err = load_pair(&c, &c).unwrap_err();
    assert!(matches!(err, TlsError::NoKey { .. }), "{err:?}");
}

#[test]
fn a_key_from_another_pair_is_a_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = write_pair(dir.path(), "a", &Made::new(&["gw.example"], None));
    let (_, k) = write_pair(dir.path(), "b", &Made::new(&["gw.example"], None));
    let err = load_pair(&c, &k).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("a.crt") && text.contains("b.key"), "{text}");
}

#[test]
fn an_expired_or_future_certificate_is_refused_with_its_date() {
    let dir = tempfile::tempdir().unwrap();
    let old = Made::new(&["gw.example"], Some((2000, 2001)));
    let (c, k) = write_pair(dir.path(), "old", &old);
    let err = load_pair(&c, &k).unwrap_err();
    assert!(matches!(err, TlsError::Expired { .. }), "{err:?}");
    assert!(err.to_string().contains("2001-01-01T00:00:00Z"), "{err}");

    let future = Made::new(&["gw.example"], Some((2200, 2201)));
    let (c, k) = write_pair(dir.path(), "future", &future);
    let err = load_pair(&c, &k).unwrap_err();
    assert!(matches!(err, TlsError::NotYetValid { .. }), "{err:?}");
}

#[test]
fn validity_reads_both_dates() {
    let made = Made::new(&["gw.example"], Some((2000, 2060)));
    let ((nb, nb_text), (na, na_text)) = validity(made.cert.der()).unwrap();
    assert_eq!(nb_text, "2000-01-01T00:00:00Z");
    // 2060 is past UTCTime's range, so this one is a GeneralizedTime.
    assert_eq!(na_text, "2060-01-01T00:00:00Z");
    assert_eq!(nb, 946_684_800);
    assert_eq!(na, 2_840_140_800);
    assert!(validity(b"\x30\x03\x02\x01\x01").is_err());
}
