//! `--tls tailscale`: this node's `*.ts.net` certificate from tailscaled.
//!
//! [`TailnetCert::open`] asks tailscaled's local API which names it can get
//! certificates for (`CertDomains` in its status; none when the tailnet has
//! HTTPS certificates turned off, which is said plainly with the fix), then
//! for the certificate of the first, in the pair form (key and chain in one
//! body). The pair passes the same checks as an own certificate file. The
//! poll task ([`TailnetCert::spawn_refresh`]) asks again well before the end
//! (an eighth of the time left, at most hourly): tailscaled renews the
//! certificate itself and hands out the new one, which then goes into the
//! [`CertResolver`] for new handshakes; open connections keep theirs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use meshgate_core::probe::tailscale::{cert_domains_at, cert_pair_at};

use super::certs::{pair_from_pem, unix};
use super::error::TlsError;
use super::resolver::CertResolver;

/// How long the status question may take.
const STATUS_LIMIT: Duration = Duration::from_secs(5);
/// How long a certificate may take: the first one comes from Let's Encrypt.
const CERT_LIMIT: Duration = Duration::from_secs(120);
/// The longest wait between two polls, and the shortest.
const MAX_POLL: Duration = Duration::from_secs(3600);
const MIN_POLL: Duration = Duration::from_secs(2);

/// What to do when the tailnet has HTTPS certificates turned off.
const HTTPS_OFF: &str = "HTTPS certificates are turned off in this tailnet: an admin turns them on in the \
admin console (DNS page, \"Enable HTTPS\": https://tailscale.com/kb/1153/enabling-https), then start \
meshgate again; or use --tls internal (a local CA) instead";

/// The node's certificate from tailscaled, kept current.
#[derive(Debug)]
pub struct TailnetCert {
    socket: PathBuf,
    domain: String,
    resolver: Arc<CertResolver>,
    /// SHA-256 of the pair last served (to tell a renewal from the same
    /// answer; not the bytes: they hold the private key, which would then
    /// show in this struct's Debug), and its notAfter.
    current: Mutex<([u8; 32], i64)>,
}

impl TailnetCert {
    /// Asks the tailscaled at `socket` for this node's certificate.
    pub async fn open(socket: &Path) -> Result<Self, TlsError> {
        let info = cert_domains_at(socket, STATUS_LIMIT).await.map_err(|e| TlsError::Tailnet(e.to_string()))?;
        if info.backend_state != "Running" {
            return Err(TlsError::Tailnet(format!(
                "tailscaled at {} is {:?}, not Running; run `tailscale up` first",
                socket.display(),
                info.backend_state
            )));
        }
        let Some(domain) = info.domains.first().cloned() else {
            return Err(TlsError::Tailnet(HTTPS_OFF.into()));
        };
        let (digest, not_after, certified) = fetch(socket, &domain).await?;
        Ok(TailnetCert {
            socket: socket.to_path_buf(),
            domain,
            resolver: Arc::new(CertResolver::new(certified)),
            current: Mutex::new((digest, not_after)),
        })
    }

    /// The resolver to build the [`super::TlsAcceptor`] from.
    pub fn resolver(&self) -> Arc<CertResolver> {
        self.resolver.clone()
    }

    /// The name the certificate is for (`node.tailnet.ts.net`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The served certificate's notAfter, seconds since the epoch.
    pub fn not_after_unix(&self) -> i64 {
        lock(&self.current).1
    }

    /// Asks tailscaled again; serves what it hands out if it changed. A bad
    /// or missing answer keeps the current certificate (the error says why).
    pub async fn refresh(&self) -> Result<bool, TlsError> {
        let (digest, not_after, certified) = fetch(&self.socket, &self.domain).await?;
        let mut cur = lock(&self.current);
        if cur.0 == digest {
            return Ok(false);
        }
        self.resolver.store(certified);
        *cur = (digest, not_after);
        tracing::info!(domain = %self.domain, not_after_unix = not_after, "serving the renewed tailnet certificate");
        Ok(true)
    }

    /// How long until the next poll: an eighth of the time left, within bounds.
    fn next_poll(&self) -> Duration {
        let left = self.not_after_unix() - unix(SystemTime::now());
        Duration::from_secs(u64::try_from(left / 8).unwrap_or(0)).clamp(MIN_POLL, MAX_POLL)
    }

    /// Polls tailscaled for a renewed certificate until the returned task
    /// is aborted (or the runtime ends); the task keeps this value alive.
    pub fn spawn_refresh(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(this.next_poll()).await;
                if let Err(e) = this.refresh().await {
                    tracing::warn!(domain = %this.domain, error = %e, "kept the tailnet certificate: asking for a renewed one failed");
                }
            }
        })
    }
}

/// SHA-256 of the answer, its notAfter, the pair to serve.
type Fetched = ([u8; 32], i64, Arc<rustls::sign::CertifiedKey>);

async fn fetch(socket: &Path, domain: &str) -> Result<Fetched, TlsError> {
    let pem = cert_pair_at(socket, domain, CERT_LIMIT).await.map_err(|e| {
        let text = e.to_string();
        if text.contains("does not support getting TLS certs") || text.contains("HTTPS") && text.contains("enable") {
            TlsError::Tailnet(format!("{HTTPS_OFF} (tailscaled said: {text})"))
        } else {
            TlsError::Tailnet(text)
        }
    })?;
    let what = PathBuf::from(format!("tailscaled's certificate for {domain}"));
    let pair = pair_from_pem(&pem, &pem, &what, &what)?;
    let mut digest = [0u8; 32];
    digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &pem).as_ref());
    Ok((digest, pair.not_after_unix, pair.certified))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::testutil::client_handshake;
    use crate::tls::TlsAcceptor;
    use meshgate_core::probe::standin::{Answer, StandIn};

    fn status(domains: &[&str]) -> String {
        serde_json::json!({
            "BackendState": "Running",
            "Self": { "DNSName": "gw.tail1234.ts.net.", "TailscaleIPs": ["100.101.102.103"] },
            "CertDomains": domains,
        })
        .to_string()
    }

    /// A leaf for `domain` from a throwaway CA: (key PEM, chain PEM, leaf DER).
    fn issued(domain: &str) -> (String, String, Vec<u8>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf =
            rcgen::CertificateParams::new(vec![domain.to_owned()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
        (key.serialize_pem(), format!("{}{}", leaf.pem(), ca.pem()), leaf.der().to_vec())
    }

    #[tokio::test]
    async fn serves_the_stand_ins_certificate_and_its_renewal() {
        let dir = tempfile::tempdir().unwrap();
        let standin = StandIn::start(dir.path().join("ts.sock")).unwrap();
        standin.answer("/localapi/v0/status", Answer::Json(status(&["gw.tail1234.ts.net"])));
        let (k, c, der) = issued("gw.tail1234.ts.net");
        standin.serve_cert("gw.tail1234.ts.net", &k, &c);
        let cert = TailnetCert::open(standin.path()).await.unwrap();
        assert_eq!(cert.domain(), "gw.tail1234.ts.net");
        // Debug (what a `?cert` in a log line prints) shows no part of the key.
        let shown = format!("{cert:?}");
        let key_bytes = format!("{:?}", k.as_bytes());
        let some_key = &key_bytes[1..120];
        assert!(!shown.contains(some_key) && !shown.contains("PRIVATE"), "the key in Debug: {shown}");
        let acc = TlsAcceptor::new(cert.resolver()).unwrap();
        assert_eq!(client_handshake(&acc, &[b"h2"], None).await.unwrap().leaf.as_ref(), der.as_slice());
        assert!(!cert.refresh().await.unwrap(), "same answer, nothing to do");
        let (k2, c2, der2) = issued("gw.tail1234.ts.net");
        standin.serve_cert("gw.tail1234.ts.net", &k2, &c2);
        assert!(cert.refresh().await.unwrap());
        assert_eq!(client_handshake(&acc, &[b"h2"], None).await.unwrap().leaf.as_ref(), der2.as_slice());
        // A broken answer keeps what is served.
        standin.serve_cert("gw.tail1234.ts.net", &k, &c2);
        assert!(matches!(cert.refresh().await, Err(TlsError::KeyMismatch { .. })));
        assert_eq!(client_handshake(&acc, &[b"h2"], None).await.unwrap().leaf.as_ref(), der2.as_slice());
        assert!(standin.requests().iter().any(|r| r.contains("/localapi/v0/cert/gw.tail1234.ts.net?type=pair")));
    }

    #[tokio::test]
    async fn https_certificates_off_is_said_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let standin = StandIn::start(dir.path().join("ts.sock")).unwrap();
        standin.answer("/localapi/v0/status", Answer::Json(status(&[])));
        let err = TailnetCert::open(standin.path()).await.unwrap_err().to_string();
        assert!(err.contains("HTTPS certificates are turned off") && err.contains("Enable HTTPS"), "{err}");
        // Listed, but tailscaled refuses all the same.
        standin.answer("/localapi/v0/status", Answer::Json(status(&["gw.tail1234.ts.net"])));
        standin.refuse_cert("gw.tail1234.ts.net");
        let err = TailnetCert::open(standin.path()).await.unwrap_err().to_string();
        assert!(err.contains("HTTPS certificates are turned off") && err.contains("does not support"), "{err}");
        // No tailscaled at all.
        let err = TailnetCert::open(&dir.path().join("none.sock")).await.unwrap_err().to_string();
        assert!(err.contains("none.sock"), "{err}");
    }
}
