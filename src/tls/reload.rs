//! Keeping an own certificate (`--tls-cert FILE --tls-key FILE`) current.
//!
//! [`Reloader`] loads the pair once (a failure there is fatal: exit 78), then
//! re-reads it when either file changes (polled: the contents of both, so a
//! rename-into-place, a symlink swap and an in-place rewrite all count) or when asked ([`Reloader::reload`], for SIGHUP). A good new pair goes
//! into the [`CertResolver`]: new handshakes get it, open connections keep theirs.
//! A bad new pair is logged with its file and reason and the old one stays.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::certs::{pair_from_pem, read_pair, LoadedPair};
use super::error::TlsError;
use super::resolver::CertResolver;

/// How often [`Reloader::spawn_poll`] looks at the files unless told otherwise.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// What one reload attempt did.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReloadOutcome {
    /// Neither file changed since the last look (only from [`Reloader::poll`]).
    Unchanged,
    /// The new pair is served from now on.
    Reloaded {
        /// SHA-256 of the new public key, base64.
        spki_sha256: String,
        /// The new leaf's notAfter, seconds since the epoch.
        not_after_unix: i64,
    },
    /// The files changed but the pair is unusable; the previous one is still served.
    Kept(TlsError),
}

/// What the files held at the last look: a digest of both, or the read error's
/// text. Contents, not metadata: an in-place rewrite within the same clock tick
/// as the previous look keeps mtime, ctime, inode and often the length (git's
/// "racy" problem), and reading two small files every few seconds costs nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Read([u8; 32]),
    Unreadable(String),
}

/// Both files' bytes (certificate, key), or why they could not be read.
type Bytes = Result<(Vec<u8>, Vec<u8>), TlsError>;

fn look(cert: &Path, key: &Path) -> (Seen, Bytes) {
    match read_pair(cert, key) {
        Ok((c, k)) => {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            ctx.update(&(c.len() as u64).to_be_bytes());
            ctx.update(&c);
            ctx.update(&k);
            let mut d = [0u8; 32];
            d.copy_from_slice(ctx.finish().as_ref());
            (Seen::Read(d), Ok((c, k)))
        }
        Err(e) => (Seen::Unreadable(e.to_string()), Err(e)),
    }
}

/// Serves a certificate/key pair from two files and reloads it when they change.
#[derive(Debug)]
pub struct Reloader {
    cert: PathBuf,
    key: PathBuf,
    resolver: Arc<CertResolver>,
    seen: Mutex<Seen>,
    spki_sha256: Mutex<String>,
}

impl Reloader {
    /// Loads and checks the pair; the error names the file and the fix.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Self, TlsError> {
        let (cert, key) = (cert.into(), key.into());
        let (seen, bytes) = look(&cert, &key);
        let (c, k) = bytes?;
        let pair = pair_from_pem(&c, &k, &cert, &key)?;
        Ok(Reloader {
            resolver: Arc::new(CertResolver::new(pair.certified)),
            spki_sha256: Mutex::new(pair.spki_sha256),
            seen: Mutex::new(seen),
            cert,
            key,
        })
    }

    /// The resolver to build the [`super::TlsAcceptor`] from.
    pub fn resolver(&self) -> Arc<CertResolver> {
        self.resolver.clone()
    }

    /// SHA-256 of the public key served now, base64.
    pub fn spki_sha256_base64(&self) -> String {
        lock(&self.spki_sha256).clone()
    }

    /// The certificate and key paths.
    pub fn paths(&self) -> (&Path, &Path) {
        (&self.cert, &self.key)
    }

    /// Reloads now, whether or not the files changed (SIGHUP).
    pub fn reload(&self) -> ReloadOutcome {
        let (seen, bytes) = look(&self.cert, &self.key);
        self.load(seen, bytes)
    }

    /// Reloads if either file changed since the last look.
    pub fn poll(&self) -> ReloadOutcome {
        let (seen, bytes) = look(&self.cert, &self.key);
        if *lock(&self.seen) == seen {
            return ReloadOutcome::Unchanged;
        }
        self.load(seen, bytes)
    }

    fn load(&self, seen: Seen, bytes: Bytes) -> ReloadOutcome {
        // Remember this state even when it is bad, so a broken pair is reported
        // once, not on every poll, and retried when the files change again.
        *lock(&self.seen) = seen;
        let loaded = bytes.and_then(|(c, k)| pair_from_pem(&c, &k, &self.cert, &self.key));
        let outcome = match loaded {
            Ok(LoadedPair { certified, not_after_unix, spki_sha256 }) => {
                self.resolver.store(certified);
                *lock(&self.spki_sha256) = spki_sha256.clone();
                ReloadOutcome::Reloaded { spki_sha256, not_after_unix }
            }
            Err(e) => ReloadOutcome::Kept(e),
        };
        match &outcome {
            ReloadOutcome::Reloaded { spki_sha256, .. } => tracing::info!(
                cert = %self.cert.display(),
                key = %self.key.display(),
                spki_sha256 = %spki_sha256,
                "reloaded the TLS certificate"
            ),
            ReloadOutcome::Kept(e) => tracing::warn!(
                cert = %self.cert.display(),
                key = %self.key.display(),
                error = %e,
                "kept the previous TLS certificate: the new one is unusable"
            ),
            ReloadOutcome::Unchanged => {}
        }
        outcome
    }

    /// Polls every `every` until the returned task is aborted (or the runtime ends).
    pub fn spawn_poll(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate; the pair was just loaded
            loop {
                tick.tick().await;
                // The file reads are small and rare; doing them inline is fine.
                let _ = self.poll();
            }
        })
    }
}

/// A poisoned lock only means another thread panicked mid-store of a plain value:
/// the value is still whole, so keep going.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::testutil::{client_handshake, write_pair, Made};
    use crate::tls::TlsAcceptor;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Replaces `dst` the way certbot and `tailscale cert` do: write aside, rename.
    fn replace(src: &Path, dst: &Path) {
        let tmp = dst.with_extension("tmp");
        std::fs::copy(src, &tmp).unwrap();
        std::fs::rename(&tmp, dst).unwrap();
    }

    #[tokio::test]
    async fn a_changed_pair_is_served_to_new_handshakes_and_old_sessions_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let first = Made::new(&["gw.example"], None);
        let second = Made::new(&["gw.example"], None);
        let (c, k) = write_pair(dir.path(), "live", &first);
        let (c2, k2) = write_pair(dir.path(), "next", &second);
        let reloader = Reloader::new(&c, &k).unwrap();
        let acc = TlsAcceptor::new(reloader.resolver()).unwrap();

        // A live session opened before the swap.
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let connector = tokio_rustls::TlsConnector::from(crate::tls::testutil::client_config(&[b"http/1.1"], None));
        let name = rustls::pki_types::ServerName::try_from("gw.example").unwrap();
        let (old_client, old_server) = tokio::join!(connector.connect(name, client_io), acc.accept(server_io));
        let (mut old_client, mut old_server) = (old_client.unwrap(), old_server.unwrap());

        let before = client_handshake(&acc, &[b"h2"], None).await.unwrap();
        assert_eq!(before.leaf.as_ref(), first.cert.der().as_ref());
        assert!(matches!(reloader.poll(), ReloadOutcome::Unchanged));

        replace(&c2, &c);
        replace(&k2, &k);
        match reloader.poll() {
            ReloadOutcome::Reloaded { spki_sha256, .. } => {
                assert_eq!(spki_sha256, second.spki_sha256())
            }
            other => panic!("expected a reload, got {other:?}"),
        }
        assert_eq!(reloader.spki_sha256_base64(), second.spki_sha256());
        let after = client_handshake(&acc, &[b"h2"], None).await.unwrap();
        assert_eq!(after.leaf.as_ref(), second.cert.der().as_ref());

        // The session from before still carries data, still with the old leaf.
        old_client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        old_server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        let old_leaf = &old_client.get_ref().1.peer_certificates().unwrap()[0];
        assert_eq!(old_leaf.as_ref(), first.cert.der().as_ref());
    }

    #[tokio::test]
    async fn a_bad_new_pair_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let first = Made::new(&["gw.example"], None);
        let (c, k) = write_pair(dir.path(), "live", &first);
        let reloader = Reloader::new(&c, &k).unwrap();
        let acc = TlsAcceptor::new(reloader.resolver()).unwrap();

        // Only the certificate renewed: the key no longer matches.
        let other = Made::new(&["gw.example"], None);
        let (c2, _) = write_pair(dir.path(), "other", &other);
        replace(&c2, &c);
        match reloader.poll() {
            ReloadOutcome::Kept(TlsError::KeyMismatch { .. }) => {}
            other => panic!("expected the old pair kept on a mismatch, got {other:?}"),
        }
        // Not retried (nor logged again) until the files change once more.
        assert!(matches!(reloader.poll(), ReloadOutcome::Unchanged));
        let seen = client_handshake(&acc, &[b"h2"], None).await.unwrap();
        assert_eq!(seen.leaf.as_ref(), first.cert.der().as_ref());
        assert_eq!(reloader.spki_sha256_base64(), first.spki_sha256());

        // A deleted key on SIGHUP: also kept.
        std::fs::remove_file(&k).unwrap();
        assert!(matches!(reloader.reload(), ReloadOutcome::Kept(TlsError::Read { what: "key", .. })));
        let seen = client_handshake(&acc, &[b"h2"], None).await.unwrap();
        assert_eq!(seen.leaf.as_ref(), first.cert.der().as_ref());

        // The matching key arrives: the pair is whole again and served.
        std::fs::write(&k, other.key.serialize_pem()).unwrap();
        assert!(matches!(reloader.poll(), ReloadOutcome::Reloaded { .. }));
        let seen = client_handshake(&acc, &[b"h2"], None).await.unwrap();
        assert_eq!(seen.leaf.as_ref(), other.cert.der().as_ref());
    }

    #[tokio::test]
    async fn an_in_place_rewrite_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = write_pair(dir.path(), "live", &Made::new(&["gw.example"], None));
        let reloader = Reloader::new(&c, &k).unwrap();
        let next = Made::new(&["gw.example"], None);
        // Same inode, and for P-256 certificates very likely the same length.
        std::fs::write(&c, next.cert.pem()).unwrap();
        std::fs::write(&k, next.key.serialize_pem()).unwrap();
        assert!(matches!(reloader.poll(), ReloadOutcome::Reloaded { .. }));
        assert_eq!(reloader.spki_sha256_base64(), next.spki_sha256());
    }

    #[tokio::test(start_paused = true)]
    async fn the_poll_task_picks_up_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = write_pair(dir.path(), "live", &Made::new(&["gw.example"], None));
        let reloader = Arc::new(Reloader::new(&c, &k).unwrap());
        let task = reloader.clone().spawn_poll(Duration::from_secs(5));
        let next = Made::new(&["gw.example"], None);
        write_pair(dir.path(), "live", &next);
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(reloader.spki_sha256_base64(), next.spki_sha256());
        task.abort();
    }

    #[test]
    fn a_bad_pair_at_start_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Reloader::new(dir.path().join("x.crt"), dir.path().join("x.key")).unwrap_err();
        assert!(err.to_string().contains("x.crt"), "{err}");
    }
}
