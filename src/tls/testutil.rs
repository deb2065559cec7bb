//! Test helpers: certificates made with rcgen, written to a temp dir, and a
//! rustls client that records what the server presented.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::accept::{Alpn, TlsAcceptor};
use super::certs::{provider, spki_sha256_base64};

/// A key and a certificate for it.
pub(crate) struct Made {
    pub(crate) key: rcgen::KeyPair,
    pub(crate) cert: rcgen::Certificate,
}

impl Made {
    /// A self-signed P-256 certificate for `names`, valid from Jan 1 of the
    /// first year to Jan 1 of the second (default: 1975 to 4096, rcgen's).
    pub(crate) fn new(names: &[&str], years: Option<(i32, i32)>) -> Made {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        if let Some((from, to)) = years {
            params.not_before = rcgen::date_time_ymd(from, 1, 1);
            params.not_after = rcgen::date_time_ymd(to, 1, 1);
        }
        let cert = params.self_signed(&key).unwrap();
        Made { key, cert }
    }

    pub(crate) fn spki_sha256(&self) -> String {
        spki_sha256_base64(&self.key.public_key_der())
    }

    pub(crate) fn certified(&self) -> Arc<CertifiedKey> {
        let key = PrivateKeyDer::try_from(self.key.serialize_der()).unwrap();
        let signing = provider().key_provider.load_private_key(key).unwrap();
        Arc::new(CertifiedKey::new(vec![self.cert.der().clone()], signing))
    }
}

/// Writes `made` as `<stem>.crt` and `<stem>.key` in `dir`.
pub(crate) fn write_pair(dir: &Path, stem: &str, made: &Made) -> (PathBuf, PathBuf) {
    let c = dir.join(format!("{stem}.crt"));
    let k = dir.join(format!("{stem}.key"));
    std::fs::write(&c, made.cert.pem()).unwrap();
    std::fs::write(&k, made.key.serialize_pem()).unwrap();
    (c, k)
}

/// Accepts any certificate but checks the handshake signatures for real, so a
/// server whose key does not match its certificate still fails.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What one client handshake saw.
#[derive(Debug)]
pub(crate) struct Seen {
    /// The leaf the server presented.
    pub(crate) leaf: CertificateDer<'static>,
    /// The ALPN as the server side reports it.
    pub(crate) server_alpn: Alpn,
    /// The protocol version the client negotiated.
    pub(crate) version: rustls::ProtocolVersion,
}

/// A client config offering `alpn`, accepting any certificate; TLS 1.2 only
/// when `version` is given as TLS 1.2.
pub(crate) fn client_config(
    alpn: &[&[u8]],
    version: Option<&'static rustls::SupportedProtocolVersion>,
) -> Arc<ClientConfig> {
    let p = provider();
    let versions = match version {
        Some(v) => vec![v],
        None => vec![&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let mut c = ClientConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(p)))
        .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(c)
}

/// One handshake over an in-memory pipe, then one byte each way to prove the
/// session works.
pub(crate) async fn client_handshake(
    acceptor: &TlsAcceptor,
    alpn: &[&[u8]],
    version: Option<&'static rustls::SupportedProtocolVersion>,
) -> Result<Seen, String> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let connector = tokio_rustls::TlsConnector::from(client_config(alpn, version));
    let name = ServerName::try_from("gw.example").unwrap();
    let client = async move {
        let mut s = connector.connect(name, client_io).await?;
        s.write_all(b"?").await?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await?;
        Ok::<_, std::io::Error>(s)
    };
    let server = async {
        let mut s = acceptor.accept(server_io).await.map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        s.write_all(b"!").await.map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(s)
    };
    let (c, s) = tokio::join!(client, server);
    let s = s?;
    let c = c.map_err(|e| format!("client: {e}"))?;
    let conn = c.get_ref().1;
    Ok(Seen {
        leaf: conn.peer_certificates().unwrap()[0].clone().into_owned(),
        server_alpn: Alpn::of(&s),
        version: conn.protocol_version().unwrap(),
    })
}

/// A well-formed TLS 1.2 ClientHello offering only TLS_RSA_WITH_AES_128_CBC_SHA,
/// which this server does not support; with or without signature_algorithms.
pub(crate) fn hello_with_rsa_kx_only(with_sigalgs: bool) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0x00, 0x02, 0x00, 0x2f]); // one cipher suite
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    if with_sigalgs {
        // extensions: signature_algorithms = [ecdsa_secp256r1_sha256]
        body.extend_from_slice(&[0x00, 0x08, 0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03]);
    }
    let mut hs = vec![0x01, 0x00, 0x00, body.len() as u8];
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01, 0x00, hs.len() as u8];
    rec.extend_from_slice(&hs);
    rec
}
