//! From an accepted socket to a TLS stream, with a time limit and counters.
//!
//! [`TlsAcceptor::accept`] reads the ClientHello first (tokio-rustls's
//! `LazyConfigAcceptor`) so that a peer that is not speaking TLS at all (a port
//! scan, `http://` typed at an `https://` port) is told apart from a TLS
//! handshake that failed: the first is [`HandshakeErrorKind::Garbage`], which a
//! caller counts without writing a log line per attempt. Nothing here logs.
//! [`Alpn`] says which HTTP the client chose, so the caller can hand the stream
//! to hyper's HTTP/2 or HTTP/1.1 server.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

use super::certs::provider;
use super::error::TlsError;
use super::resolver::CertResolver;

/// How long a client has from the first byte to a finished handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The ALPN protocols offered, best first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A server config: TLS 1.3 and 1.2 only, ALPN `h2` then `http/1.1`, the
/// certificate from `resolver` on every handshake, no client certificates.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The HTTP version the client and server agreed on through ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// `h2`: serve with hyper's HTTP/2 builder.
    H2,
    /// `http/1.1`, or no ALPN at all (older clients): serve HTTP/1.1.
    Http11,
}

impl Alpn {
    /// What `stream` negotiated.
    pub fn of<IO>(stream: &TlsStream<IO>) -> Alpn {
        match stream.get_ref().1.alpn_protocol() {
            Some(b"h2") => Alpn::H2,
            _ => Alpn::Http11,
        }
    }
}

/// What went wrong in a handshake, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeErrorKind {
    /// The first bytes were not a TLS ClientHello (plain HTTP, a scanner, noise).
    /// Count it; do not log each one.
    Garbage,
    /// The peer closed before sending a ClientHello (port probes, TCP health checks).
    Closed,
    /// No finished handshake within the time limit.
    Timeout,
    /// A real TLS client whose handshake failed (no common version or cipher, the
    /// client rejected the certificate, the connection broke mid-way).
    Failed,
    /// Plain HTTP at the TLS port, answered with a redirect to https
    /// ([`TlsAcceptor::accept_tcp`]); the connection is done.
    Redirected,
}

/// A handshake that did not finish; [`HandshakeError::kind`] says how.
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake: {kind:?}: {source}")]
pub struct HandshakeError {
    kind: HandshakeErrorKind,
    #[source]
    source: io::Error,
}

impl HandshakeError {
    /// How it failed.
    pub fn kind(&self) -> HandshakeErrorKind {
        self.kind
    }

    /// Whether it is background noise (garbage, closed, timed out): worth a
    /// counter, not a log line.
    pub fn is_noise(&self) -> bool {
        self.kind != HandshakeErrorKind::Failed
    }
}

/// Handshake counters, cheap to bump from every accept task.
#[derive(Debug, Default)]
pub struct TlsStats {
    ok: AtomicU64,
    failed: AtomicU64,
    garbage: AtomicU64,
    closed: AtomicU64,
    timeout: AtomicU64,
    h2: AtomicU64,
    redirected: AtomicU64,
}

/// A copy of [`TlsStats`] at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TlsStatsSnapshot {
    /// Finished handshakes.
    pub ok: u64,
    /// Of those, how many chose HTTP/2.
    pub h2: u64,
    /// TLS clients whose handshake failed.
    pub failed: u64,
    /// Connections that did not start with a ClientHello.
    pub garbage: u64,
    /// Connections closed before a ClientHello.
    pub closed: u64,
    /// Handshakes that ran out of time.
    pub timeout: u64,
    /// Plain HTTP requests answered with a redirect to https.
    pub redirected: u64,
}

impl TlsStats {
    /// The counters now.
    pub fn snapshot(&self) -> TlsStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TlsStatsSnapshot {
            ok: get(&self.ok),
            h2: get(&self.h2),
            failed: get(&self.failed),
            garbage: get(&self.garbage),
            closed: get(&self.closed),
            timeout: get(&self.timeout),
            redirected: get(&self.redirected),
        }
    }

    fn count(&self, kind: HandshakeErrorKind) {
        let c = match kind {
            HandshakeErrorKind::Garbage => &self.garbage,
            HandshakeErrorKind::Closed => &self.closed,
            HandshakeErrorKind::Timeout => &self.timeout,
            HandshakeErrorKind::Failed => &self.failed,
            HandshakeErrorKind::Redirected => &self.redirected,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Accepts TLS on sockets: one per gateway, shared by every TLS listener.
#[derive(Debug, Clone)]
pub struct TlsAcceptor {
    config: Arc<ServerConfig>,
    timeout: Duration,
    stats: Arc<TlsStats>,
}

impl TlsAcceptor {
    /// An acceptor serving the certificate in `resolver` (see [`server_config`]),
    /// with [`DEFAULT_HANDSHAKE_TIMEOUT`] and fresh counters.
    pub fn new(resolver: Arc<CertResolver>) -> Result<Self, TlsError> {
        Ok(Self::from_config(server_config(resolver)?))
    }

    /// An acceptor for a config built elsewhere.
    pub fn from_config(config: Arc<ServerConfig>) -> Self {
        TlsAcceptor { config, timeout: DEFAULT_HANDSHAKE_TIMEOUT, stats: Arc::default() }
    }

    /// Change the handshake time limit.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The counters every [`TlsAcceptor::accept`] bumps.
    pub fn stats(&self) -> &Arc<TlsStats> {
        &self.stats
    }

    /// The rustls config (for tests and for building other acceptors).
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }

    /// Runs the server handshake on `io` within the time limit, counting the
    /// outcome. Logs nothing: the caller decides from [`HandshakeError::kind`].
    pub async fn accept<IO>(&self, io: IO) -> Result<TlsStream<IO>, HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let result = timeout(self.timeout, handshake(io, self.config.clone())).await;
        self.count(&result);
        result
    }
}

impl TlsAcceptor {
    /// [`TlsAcceptor::accept`] on a TCP socket, which it peeks at first: a TLS
    /// record goes to the handshake; plain HTTP gets a redirect to the same
    /// URL over https ([`HandshakeErrorKind::Redirected`]); anything else is
    /// [`HandshakeErrorKind::Garbage`], dropped and counted. One time limit
    /// covers it all.
    pub async fn accept_tcp(
        &self,
        stream: tokio::net::TcpStream,
    ) -> Result<TlsStream<tokio::net::TcpStream>, HandshakeError> {
        let config = self.config.clone();
        let sniffed = async move {
            let mut first = [0u8; 1];
            let n = stream
                .peek(&mut first)
                .await
                .map_err(|source| HandshakeError { kind: HandshakeErrorKind::Failed, source })?;
            if n == 0 {
                let source = io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a ClientHello");
                return Err(HandshakeError { kind: HandshakeErrorKind::Closed, source });
            }
            if first[0] == TLS_HANDSHAKE_RECORD {
                // rustls tells a ClientHello from garbage that happens to start so.
                return handshake(stream, config).await;
            }
            if !super::redirect::may_be_http(first[0]) {
                // Neither TLS nor HTTP: closed without a word (not even a TLS alert).
                let source = io::Error::new(io::ErrorKind::InvalidData, "neither a TLS record nor HTTP");
                return Err(HandshakeError { kind: HandshakeErrorKind::Garbage, source });
            }
            match super::redirect::answer(stream).await {
                Ok(()) => Err(HandshakeError {
                    kind: HandshakeErrorKind::Redirected,
                    source: io::Error::other("plain HTTP at a TLS port: redirected to https"),
                }),
                Err(source) => Err(HandshakeError { kind: HandshakeErrorKind::Garbage, source }),
            }
        };
        let result = timeout(self.timeout, sniffed).await;
        self.count(&result);
        result
    }

    fn count<IO>(&self, result: &Result<TlsStream<IO>, HandshakeError>) {
        match result {
            Ok(stream) => {
                self.stats.ok.fetch_add(1, Ordering::Relaxed);
                if Alpn::of(stream) == Alpn::H2 {
                    self.stats.h2.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => self.stats.count(e.kind),
        }
    }
}

/// The content type of a TLS record carrying a handshake message (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

async fn timeout<T>(
    limit: Duration,
    fut: impl Future<Output = Result<T, HandshakeError>>,
) -> Result<T, HandshakeError> {
    tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
        Err(HandshakeError {
            kind: HandshakeErrorKind::Timeout,
            source: io::Error::new(io::ErrorKind::TimedOut, format!("no finished handshake within {limit:?}")),
        })
    })
}

async fn handshake<IO>(io: IO, config: Arc<ServerConfig>) -> Result<TlsStream<IO>, HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io)
        .await
        .map_err(|source| HandshakeError { kind: hello_error_kind(&source), source })?;
    start.into_stream(config).await.map_err(|source| HandshakeError { kind: HandshakeErrorKind::Failed, source })
}

/// Sorts a failure to read a ClientHello: bytes that are not TLS records or not
/// a ClientHello are garbage, end of stream is a peer that closed, and anything
/// else (a real ClientHello rustls cannot serve, a broken socket) a failure.
fn hello_error_kind(e: &io::Error) -> HandshakeErrorKind {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        return HandshakeErrorKind::Closed;
    }
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(
            rustls::Error::InvalidMessage(_)
            | rustls::Error::InappropriateMessage { .. }
            | rustls::Error::InappropriateHandshakeMessage { .. },
        ) => HandshakeErrorKind::Garbage,
        _ => HandshakeErrorKind::Failed,
    }
}
