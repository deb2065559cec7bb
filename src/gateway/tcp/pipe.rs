//! Bytes both ways between a client and its upstream, with
//! [`tokio::io::copy_bidirectional_with_sizes`]: a FIN from either side is passed on as
//! a shutdown of the other's write half while the other direction still
//! flows (half-close), a reset from either side is passed on as a reset
//! ([`Socket::abort`]: `SO_LINGER` 0, then close), and a connection that
//! carries nothing either way for the idle timeout is closed.
//!
//! (`splice(2)` between two plain sockets would save the copy through user
//! space; it is not used yet: the bench `benches/tcp_load.sh` is the place
//! to show it pays before it is added.)

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// A stream the forwarder can reset (rather than close) when the other side
/// was reset.
pub(crate) trait Socket: AsyncRead + AsyncWrite + Unpin + Send {
    /// Makes the next close a reset (RST), where the transport has one.
    fn abort(&self);
}

impl Socket for tokio::net::TcpStream {
    fn abort(&self) {
        let _ = socket2::SockRef::from(self).set_linger(Some(Duration::ZERO));
    }
}

impl Socket for tokio::net::UnixStream {
    fn abort(&self) {}
}

impl<S: Socket> Socket for tokio_rustls::server::TlsStream<S> {
    fn abort(&self) {
        self.get_ref().0.abort();
    }
}

/// The copy buffer each way. tokio's default (8 KiB) costs a read and a
/// write per 8 KiB; 32 KiB cuts the system calls of a bulk transfer by four
/// for 64 KiB per connection (`benches/tcp_load.py`: CPU per GiB).
const BUFFER: usize = 32 * 1024;

/// How a forwarded connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Both sides closed; bytes client→upstream and upstream→client.
    Closed { up: u64, down: u64 },
    /// The client reset its connection; the upstream's was reset too.
    ClientReset,
    /// The upstream reset its connection; the client's was reset too.
    UpstreamReset,
    /// Nothing moved for the idle timeout.
    Idle,
    /// Told to stop (the service went, or the peer lost its access).
    Stopped,
    /// Another error (logged at debug by the caller).
    Failed(io::ErrorKind),
}

impl Ended {
    /// One word or two for a log line.
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Self::Closed { .. } => "closed",
            Self::ClientReset => "client reset",
            Self::UpstreamReset => "upstream reset",
            Self::Idle => "idle timeout",
            Self::Stopped => "stopped",
            Self::Failed(_) => "failed",
        }
    }
}

/// Reads counted (for the idle watch) and resets noted.
struct Watched<'a, S> {
    inner: &'a mut S,
    moved: &'a AtomicU64,
    reset: &'a AtomicBool,
}

fn is_reset(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted)
}

impl<S: Socket> AsyncRead for Watched<'_, S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut *self.inner).poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) => {
                self.moved.fetch_add((buf.filled().len() - before) as u64 + 1, Ordering::Relaxed);
            }
            Poll::Ready(Err(e)) if is_reset(e) => self.reset.store(true, Ordering::Relaxed),
            _ => {}
        }
        polled
    }
}

impl<S: Socket> AsyncWrite for Watched<'_, S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut *self.inner).poll_write(cx, buf);
        if let Poll::Ready(Err(e)) = &polled {
            if is_reset(e) {
                self.reset.store(true, Ordering::Relaxed);
            }
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

/// Forwards until both sides have closed, one is reset, nothing moves for
/// `idle`, or `stop` resolves. Resets are passed on before returning.
pub(crate) async fn pipe<C: Socket, U: Socket>(
    client: &mut C,
    upstream: &mut U,
    idle: Duration,
    stop: impl Future<Output = ()>,
) -> Ended {
    let moved = Arc::new(AtomicU64::new(0));
    let (client_reset, upstream_reset) = (AtomicBool::new(false), AtomicBool::new(false));
    let ended = {
        let mut a = Watched { inner: &mut *client, moved: &moved, reset: &client_reset };
        let mut b = Watched { inner: &mut *upstream, moved: &moved, reset: &upstream_reset };
        let copy = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, BUFFER, BUFFER);
        tokio::select! {
            r = copy => match r {
                Ok((up, down)) => Ended::Closed { up, down },
                Err(e) => {
                    if client_reset.load(Ordering::Relaxed) {
                        Ended::ClientReset
                    } else if upstream_reset.load(Ordering::Relaxed) {
                        Ended::UpstreamReset
                    } else {
                        Ended::Failed(e.kind())
                    }
                }
            },
            () = idle_watch(&moved, idle) => Ended::Idle,
            () = stop => Ended::Stopped,
        }
    };
    match ended {
        Ended::ClientReset => upstream.abort(),
        Ended::UpstreamReset => client.abort(),
        _ => {}
    }
    ended
}

/// Resolves once `moved` has not changed for `idle` (checked every quarter
/// of it: a connection is closed between `idle` and 1.25 × `idle` after its
/// last byte).
async fn idle_watch(moved: &AtomicU64, idle: Duration) {
    let step = (idle / 4).max(Duration::from_millis(10));
    let mut seen = moved.load(Ordering::Relaxed);
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(step).await;
        let now = moved.load(Ordering::Relaxed);
        if now != seen {
            (seen, since) = (now, Instant::now());
        } else if since.elapsed() >= idle {
            return;
        }
    }
}
