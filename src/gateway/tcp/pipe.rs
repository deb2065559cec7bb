//! Bytes both ways between a client and its upstream: a FIN from either
//! side is passed on as a shutdown of the other's write half while the other
//! direction still flows (half-close), a reset from either side is passed on
//! as a reset ([`Socket::abort`]: `SO_LINGER` 0, then close), and a
//! connection that carries nothing either way for the idle timeout is closed.
//!
//! Two ways to move the bytes, with the same contract:
//! - on Linux, between two plain TCP sockets (a `tcp` service to a
//!   `tcp://` upstream), `splice(2)` through a pipe each way once a
//!   direction carries more than a small read ([`super::splice`]): bulk
//!   bytes never enter user space; only while SIGPIPE is ignored, as in any
//!   Rust binary (a splice into a socket whose peer is gone raises it);
//! - otherwise (TLS, whose bytes must be decrypted here; a `unix:`
//!   upstream; other systems), [`tokio::io::copy_bidirectional_with_sizes`]
//!   with a 32 KiB buffer each way.
//!
//! Measured (`benches/tcp_load.py`, one run, 3 rounds, medians, the proxy
//! on one core, on a shared 2-core machine at load 5-8): a 1 GiB bulk
//! transfer cost 360 ms of CPU per GiB spliced against 520 copied (0.69x;
//! haproxy `mode tcp` 770) at 705 MB/s against 671 (1.05x; haproxy 460). A
//! short connection (connect, one 100-byte exchange, close) cost 169 µs of
//! CPU against 165 copied (1.02x, noise; haproxy 176): splicing from the
//! first byte had cost 1.05-1.07x, two `splice` calls per connection ending
//! in `EAGAIN` where tokio's read skips the retry after a short read, so each
//! direction now copies until a read fills its 8 KiB buffer, then splices.
//! Splicing stays for the bulk gain.
//!
//! `MESHGATE_TCP_SPLICE=off` (read once) makes plain sockets copy too: the
//! switch `benches/tcp_load.py` uses to measure both in one run.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// A stream the forwarder can reset (rather than close) when the other side
/// was reset.
pub(crate) trait Socket: AsyncRead + AsyncWrite + Unpin + Send {
    /// Makes the next close a reset (RST), where the transport has one.
    fn abort(&self);

    /// The plain TCP socket underneath, if this is one (bytes can then be
    /// spliced rather than copied).
    fn plain_tcp(&mut self) -> Option<&mut tokio::net::TcpStream> {
        None
    }
}

impl Socket for tokio::net::TcpStream {
    fn abort(&self) {
        let _ = socket2::SockRef::from(self).set_linger(Some(Duration::ZERO));
    }

    fn plain_tcp(&mut self) -> Option<&mut tokio::net::TcpStream> {
        Some(self)
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
    #[cfg(target_os = "linux")]
    let splice = splice_on();
    #[cfg(not(target_os = "linux"))]
    let splice = false;
    pipe_with(client, upstream, idle, stop, splice).await
}

/// [`pipe`], splicing plain sockets if `splice` (and on Linux).
async fn pipe_with<C: Socket, U: Socket>(
    client: &mut C,
    upstream: &mut U,
    idle: Duration,
    stop: impl Future<Output = ()>,
    splice: bool,
) -> Ended {
    let moved = AtomicU64::new(0);
    #[cfg(target_os = "linux")]
    if let (Some(a), Some(b), true) = (client.plain_tcp(), upstream.plain_tcp(), splice) {
        let ended = tokio::select! {
            r = super::splice::bidirectional(a, b, &moved) => match r {
                Ok((up, down)) => Ended::Closed { up, down },
                Err((side, e)) => match (is_reset(&e), side) {
                    (true, super::splice::Side::A) => Ended::ClientReset,
                    (true, super::splice::Side::B) => Ended::UpstreamReset,
                    (false, _) => Ended::Failed(e.kind()),
                },
            },
            () = idle_watch(&moved, idle) => Ended::Idle,
            () = stop => Ended::Stopped,
        };
        pass_reset_on(ended, client, upstream);
        return ended;
    }
    let _ = splice;
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
    pass_reset_on(ended, client, upstream);
    ended
}

fn pass_reset_on<C: Socket, U: Socket>(ended: Ended, client: &C, upstream: &U) {
    match ended {
        Ended::ClientReset => upstream.abort(),
        Ended::UpstreamReset => client.abort(),
        _ => {}
    }
}

/// The environment variable that turns splicing off (`off`) or on (`on`,
/// the default).
#[cfg(target_os = "linux")]
pub(crate) const SPLICE_ENV: &str = "MESHGATE_TCP_SPLICE";

/// Whether plain sockets are spliced: [`SPLICE_ENV`], read once; empty is
/// unset. The command line refuses a value other than `on` or `off` at start
/// (`cli::env`); the library embedded elsewhere names it in a warning and
/// leaves splicing on.
#[cfg(target_os = "linux")]
fn splice_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| splice_setting(std::env::var_os(SPLICE_ENV).as_deref()))
}

#[cfg(target_os = "linux")]
fn splice_setting(value: Option<&std::ffi::OsStr>) -> bool {
    match value.filter(|v| !v.is_empty()).map(|v| v.to_str()) {
        None => true,
        Some(Some("on")) => true,
        Some(Some("off")) => false,
        Some(other) => {
            tracing::warn!(
                "{SPLICE_ENV}={}: not on or off; splicing stays on (set it to off to copy through user space, or unset it)",
                other.unwrap_or("(not UTF-8)")
            );
            true
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// Two connected sockets: (the far end, the forwarder's end).
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let far = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (near, _) = l.accept().await.unwrap();
        (far, near)
    }

    /// Both ways of moving bytes (splice only exists on Linux).
    const WAYS: &[bool] = if cfg!(target_os = "linux") { &[false, true] } else { &[false] };

    /// The forwarder between a client and an upstream, in a task:
    /// (client, upstream, how the forwarding ended).
    async fn forwarding(idle: Duration, splice: bool) -> (TcpStream, TcpStream, tokio::task::JoinHandle<Ended>) {
        let (client, mut c) = pair().await;
        let (mut u, upstream) = pair().await;
        let task = tokio::spawn(async move { pipe_with(&mut c, &mut u, idle, std::future::pending(), splice).await });
        (client, upstream, task)
    }

    #[tokio::test]
    async fn half_close_passes_through_and_bytes_are_counted() {
        for &splice in WAYS {
            let (mut client, mut upstream, task) = forwarding(Duration::from_secs(10), splice).await;
            // More than a pipe or a socket buffer holds, read slowly at
            // first: the forwarder must wait for room to write.
            let sent: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
            let writer = {
                let sent = sent.clone();
                tokio::spawn(async move {
                    client.write_all(&sent).await.unwrap();
                    client.shutdown().await.unwrap();
                    client
                })
            };
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut got = Vec::new();
            upstream.read_to_end(&mut got).await.unwrap();
            assert!(got == sent, "splice {splice}: {} bytes arrived, not the {} sent, in order", got.len(), sent.len());
            // The client's FIN arrived; the reply still flows back.
            upstream.write_all(b"thanks").await.unwrap();
            upstream.shutdown().await.unwrap();
            let mut client = writer.await.unwrap();
            let mut reply = Vec::new();
            client.read_to_end(&mut reply).await.unwrap();
            assert_eq!(reply, b"thanks", "splice {splice}");
            assert_eq!(task.await.unwrap(), Ended::Closed { up: 4_000_000, down: 6 }, "splice {splice}");
            // Spliced, the bulk way took a pipe, which came back empty to
            // this thread's pool (a current-thread runtime: the task ran
            // here); the 6-byte reply was copied and took none.
            #[cfg(target_os = "linux")]
            assert_eq!(super::super::splice::pooled(), if splice { 1 } else { 0 }, "splice {splice}");
        }
    }

    #[tokio::test]
    async fn resets_are_passed_on_both_ways() {
        // 5 bytes each way: both ways still copying; 64 KiB: both spliced.
        for (&splice, size) in WAYS.iter().flat_map(|w| [(w, 5), (w, 65_536)]) {
            for client_resets in [false, true] {
                let (mut client, mut upstream, task) = forwarding(Duration::from_secs(10), splice).await;
                let mut b = vec![0u8; size];
                client.write_all(&b).await.unwrap();
                upstream.read_exact(&mut b).await.unwrap();
                upstream.write_all(&b).await.unwrap();
                client.read_exact(&mut b).await.unwrap();
                let (resetting, mut other, ended) = if client_resets {
                    (client, upstream, Ended::ClientReset)
                } else {
                    (upstream, client, Ended::UpstreamReset)
                };
                resetting.abort();
                drop(resetting);
                assert_eq!(task.await.unwrap(), ended, "splice {splice}, {size} bytes");
                let e = other.read(&mut b).await.expect_err("a reset, not a clean close");
                assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "splice {splice}, {size} bytes: {e}");
            }
        }
    }

    #[tokio::test]
    async fn a_connection_carrying_nothing_ends_after_the_idle_timeout() {
        for &splice in WAYS {
            let (mut client, mut upstream, task) = forwarding(Duration::from_millis(200), splice).await;
            client.write_all(b"ping").await.unwrap();
            let mut b = [0u8; 4];
            upstream.read_exact(&mut b).await.unwrap();
            let t = Instant::now();
            assert_eq!(task.await.unwrap(), Ended::Idle, "splice {splice}");
            let took = t.elapsed();
            assert!(took >= Duration::from_millis(150) && took < Duration::from_secs(2), "splice {splice}: {took:?}");
        }
    }

    /// Whether this is the child process running test `name` alone (for a
    /// test that changes what is process-wide: a signal's action, a limit);
    /// if not, runs that child, asserts it passed, and says `false`.
    #[cfg(target_os = "linux")]
    fn in_child(name: &str) -> bool {
        const CHILD: &str = "MESHGATE_TEST_PIPE_CHILD";
        if std::env::var_os(CHILD).is_some() {
            return true;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([&format!("gateway::tcp::pipe::tests::{name}"), "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "the child: {:?}\n{text}{}", out.status, String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("1 passed"), "the child ran no test:\n{text}");
        false
    }

    /// Out of file descriptors (a busy gateway at its limit), a connection
    /// that turns bulk cannot get a pipe: it keeps copying, which needs no
    /// descriptor, rather than failing midway. In a child process: the
    /// limit is process-wide.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_connection_that_gets_no_pipe_keeps_copying() {
        if !in_child("a_connection_that_gets_no_pipe_keeps_copying") {
            return;
        }
        let (mut client, mut upstream, task) = forwarding(Duration::from_secs(10), true).await;
        // Every descriptor below a lowered limit taken: pipe2 fails (EMFILE).
        let highest = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .max()
            .unwrap();
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: plain out/in parameters; the child process alone.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
            limit.rlim_cur = (highest + 8) as libc::rlim_t;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
            while libc::dup(0) >= 0 {}
        }
        assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::EMFILE));
        let sent: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.shutdown().await.unwrap();
            (client, sent)
        });
        let mut got = Vec::new();
        upstream.read_to_end(&mut got).await.unwrap();
        let (mut client, sent) = writer.await.unwrap();
        assert!(got == sent, "{} bytes arrived, not the {} sent, in order", got.len(), sent.len());
        upstream.write_all(b"ok").await.unwrap();
        drop(upstream);
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"ok");
        assert_eq!(task.await.unwrap(), Ended::Closed { up: 300_000, down: 2 });
    }

    /// The library embedded in a program that leaves SIGPIPE at its default
    /// action (kill the process): `splice(2)` into a socket whose peer is
    /// gone fails with `EPIPE` AND raises SIGPIPE (it has no
    /// `MSG_NOSIGNAL`, which the copying path's `send` has). The scenario
    /// runs in a child process (this test binary again) with SIGPIPE at
    /// `SIG_DFL`, so the signal cannot touch the other tests.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_program_that_does_not_ignore_sigpipe_survives_an_upstream_gone_mid_bulk() {
        if !in_child("a_program_that_does_not_ignore_sigpipe_survives_an_upstream_gone_mid_bulk") {
            return;
        }
        // SAFETY: the child process, one test thread: back to the default
        // action a C program (or a Rust one built to) would have.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        let (mut client, mut upstream, task) = forwarding(Duration::from_secs(10), true).await;
        // 64 KiB: the client→upstream way reads a full buffer and splices.
        let mut b = vec![7u8; 65_536];
        client.write_all(&b).await.unwrap();
        upstream.read_exact(&mut b).await.unwrap();
        // The upstream goes (FIN, nothing unread); the client keeps sending:
        // the upstream's kernel answers with a reset, the next write into
        // that socket fails with EPIPE.
        drop(upstream);
        let mut eof = [0u8; 1];
        assert_eq!(client.read(&mut eof).await.unwrap(), 0, "the upstream's FIN passed on");
        for _ in 0..20 {
            if client.write_all(&b).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ended = task.await.unwrap();
        assert!(matches!(ended, Ended::UpstreamReset | Ended::Failed(_)), "{ended:?}");
    }

    /// Urgent data (`MSG_OOB`, telnet's interrupt) in a bulk flow: `recv`
    /// steps over the urgent byte, `splice` stops at the mark for good
    /// (`EAGAIN` while the socket holds data): the bytes after it must still
    /// arrive.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn bytes_after_urgent_data_still_arrive() {
        use std::os::fd::AsRawFd;
        for &splice in WAYS {
            let (mut client, mut upstream, task) = forwarding(Duration::from_secs(10), splice).await;
            let bulk = vec![1u8; 65_536];
            client.write_all(&bulk).await.unwrap();
            let mut b = vec![0u8; bulk.len()];
            upstream.read_exact(&mut b).await.unwrap();
            // SAFETY: one byte from a live buffer on an open socket.
            let sent = unsafe { libc::send(client.as_raw_fd(), b"!".as_ptr().cast(), 1, libc::MSG_OOB) };
            assert_eq!(sent, 1);
            client.write_all(&bulk).await.unwrap();
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(3), upstream.read_to_end(&mut got)).await;
            assert!(read.is_ok(), "splice {splice}: {} bytes after the urgent byte, then nothing", got.len());
            assert!(got.ends_with(&bulk), "splice {splice}: {} bytes", got.len());
            drop((client, upstream));
            let _ = task.await;
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_splice_switch_reads_on_and_off_and_keeps_splicing_on_a_bad_value() {
        use std::ffi::OsStr;
        assert!(splice_setting(None));
        assert!(splice_setting(Some(OsStr::new(""))));
        assert!(splice_setting(Some(OsStr::new("on"))));
        assert!(!splice_setting(Some(OsStr::new("off"))));
        assert!(splice_setting(Some(OsStr::new("0"))));
    }
}
