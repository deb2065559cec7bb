//! Linux: bytes both ways between two plain TCP sockets with `splice(2)`,
//! socket → pipe → socket, so they never pass through user space. One pipe
//! per direction, non-blocking, driven by tokio's readiness
//! ([`TcpStream::readable`], [`TcpStream::try_io`]); emptied pipes go back
//! to a small per-thread pool. Each direction copies its first bytes and
//! splices once a read fills its small buffer (see [`one_way`]), so a short
//! exchange costs what copying costs.
//!
//! The contract is [`copy_bidirectional`](tokio::io::copy_bidirectional)'s:
//! a side's EOF is passed on as a shutdown of the other's write half (once
//! its pipe is empty) while the other direction flows (the second EOF is
//! passed on by the caller's close); it returns the bytes
//! each way once both have ended, or the first error with the side it came
//! from, so the caller can pass a reset on.

use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;

/// Which socket an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    /// The first socket given to [`bidirectional`] (the client).
    A,
    /// The second (the upstream).
    B,
}

/// At most this much per `splice` into a pipe: the kernel moves what the
/// pipe holds (64 KiB by default), so this only bounds one call.
const CHUNK: usize = 1 << 20;

/// The copy buffer a direction starts with (see [`one_way`]).
const SMALL: usize = 8 * 1024;

/// Pipes kept per thread for the next connections.
const POOL: usize = 32;

thread_local! {
    static PIPES: RefCell<Vec<(OwnedFd, OwnedFd)>> = const { RefCell::new(Vec::new()) };
}

/// How many pipes this thread's pool holds.
#[cfg(test)]
pub(super) fn pooled() -> usize {
    PIPES.with(|p| p.borrow().len())
}

/// A pipe and how many bytes sit in it.
struct Pipe {
    fds: Option<(OwnedFd, OwnedFd)>,
    held: usize,
}

impl Pipe {
    fn new() -> io::Result<Self> {
        if let Some(fds) = PIPES.try_with(|p| p.borrow_mut().pop()).ok().flatten() {
            return Ok(Self { fds: Some(fds), held: 0 });
        }
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded: both are open descriptors owned by nobody else.
        let fds = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Self { fds: Some(fds), held: 0 })
    }

    fn read_end(&self) -> RawFd {
        self.fds.as_ref().map_or(-1, |(r, _)| r.as_raw_fd())
    }

    fn write_end(&self) -> RawFd {
        self.fds.as_ref().map_or(-1, |(_, w)| w.as_raw_fd())
    }
}

impl Drop for Pipe {
    /// An empty pipe goes back to the pool; one still holding bytes (the
    /// connection failed midway) is closed, and its bytes with it.
    fn drop(&mut self) {
        if let Some(fds) = self.fds.take() {
            if self.held == 0 {
                // `try_with`: at a thread's exit the pool may be gone
                // already; the pipe is then closed (`with` would panic in a
                // thread-local destructor: an abort).
                let _ = PIPES.try_with(|p| {
                    let mut p = p.borrow_mut();
                    if p.len() < POOL {
                        p.push(fds);
                    }
                });
            }
        }
    }
}

/// Whether SIGPIPE is ignored in this process, as Rust's runtime sets it
/// for a binary. [`splice`] into a socket whose peer is gone fails with
/// `EPIPE` AND raises SIGPIPE (splice has no `MSG_NOSIGNAL`, which the
/// copying path's `send` has): a program embedding the library that leaves
/// SIGPIPE at its default action would be killed. A direction splices only
/// when this holds (one `sigaction` query when it turns bulk), else copies.
fn sigpipe_ignored() -> bool {
    // SAFETY: a zeroed sigaction is a valid out-parameter; a null new action
    // only reads the current one.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// One `splice(2)`, non-blocking. (Into a socket the peer reset it fails
/// with `EPIPE` and raises `SIGPIPE`: see [`sigpipe_ignored`].)
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain descriptors, no offsets; the kernel checks both.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// One non-blocking `recv` into `buf`.
fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// All of `b` into `to`, waiting for room.
async fn write_all(to: &TcpStream, mut b: &[u8]) -> io::Result<()> {
    while !b.is_empty() {
        match to.try_write(b) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => b = &b[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => to.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Passes `from`'s EOF on: the first EOF of a connection as a shutdown of
/// `to`'s write half (half-close); the second ends both ways, and the
/// caller's close of both sockets sends that FIN (nothing is left unread on
/// either): one system call less per connection.
fn eof(to: &TcpStream, to_side: Side, ended: &AtomicBool) -> Result<(), (Side, io::Error)> {
    if !ended.swap(true, Ordering::Relaxed) {
        socket2::SockRef::from(to).shutdown(Shutdown::Write).map_err(|e| (to_side, e))?;
    }
    Ok(())
}

/// Moves bytes `from` → `to` until `from`'s EOF (passed on by [`eof`]) or
/// an error. `moved` grows with every read, EOF included (the idle watch
/// reads it).
///
/// A direction starts by copying through a [`SMALL`] buffer: tokio's read
/// knows a short read drained the socket and skips the retry a `splice`
/// would spend (a pipe cannot tell a drained socket from a full pipe), and a
/// short exchange never takes a pipe. The first read that fills the buffer
/// marks a bulk flow, spliced from then on (copied on if no pipe can be had:
/// out of descriptors, a connection carries on rather than failing; or if
/// SIGPIPE is not ignored, see [`sigpipe_ignored`]).
async fn one_way(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    sides: (Side, Side),
    moved: &AtomicU64,
    ended: &AtomicBool,
) -> Result<u64, (Side, io::Error)> {
    let (from_side, to_side) = sides;
    let mut total = 0u64;
    let mut buf = Vec::with_capacity(SMALL);
    // Once no pipe could be had (out of descriptors), the direction copies
    // to its end: that needs none, and the connection is not cut midway.
    let mut no_pipe = false;
    let mut pipe = loop {
        buf.clear();
        let n = from.read_buf(&mut buf).await.map_err(|e| (from_side, e))?;
        moved.fetch_add(n as u64 + 1, Ordering::Relaxed);
        if n == 0 {
            eof(to.as_ref(), to_side, ended)?;
            return Ok(total);
        }
        to.write_all(&buf).await.map_err(|e| (to_side, e))?;
        total += n as u64;
        if n >= SMALL && !no_pipe {
            // Asked here, when a flow turns bulk, not per connection: a
            // short exchange never pays the `sigaction` query.
            if !sigpipe_ignored() {
                no_pipe = true;
                continue;
            }
            match Pipe::new() {
                Ok(pipe) => break pipe,
                Err(e) => {
                    tracing::debug!(error = %e, "no pipe to splice through; copying");
                    no_pipe = true;
                }
            }
        }
    };
    buf.resize(SMALL, 0);
    let (from, to): (&TcpStream, &TcpStream) = (from.as_ref(), to.as_ref());
    let (from_fd, to_fd) = (from.as_raw_fd(), to.as_raw_fd());
    loop {
        // Tried before waiting (as for writes below): a socket tokio knows
        // to be ready costs no wake-up.
        let n = loop {
            match from.try_io(Interest::READABLE, || splice(from_fd, pipe.write_end(), CHUNK)) {
                Ok(0) => {}
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err((from_side, e)),
            }
            // `splice` stops for good at TCP urgent data (`MSG_OOB`): it
            // says EAGAIN while bytes wait past the mark, and 0 once a FIN
            // is in, which would end the flow short. `recv` steps over the
            // urgent byte, as copying does: before waiting or ending, it
            // tells what the socket really holds (the pipe is empty here, so
            // what it reads goes out in order).
            match recv(from_fd, &mut buf) {
                Ok(0) => break 0,
                Ok(m) => {
                    moved.fetch_add(m as u64 + 1, Ordering::Relaxed);
                    total += m as u64;
                    write_all(to, &buf[..m]).await.map_err(|e| (to_side, e))?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    from.readable().await.map_err(|e| (from_side, e))?;
                }
                Err(e) => return Err((from_side, e)),
            }
        };
        moved.fetch_add(n as u64 + 1, Ordering::Relaxed);
        if n == 0 {
            eof(to, to_side, ended)?;
            return Ok(total);
        }
        pipe.held = n;
        total += n as u64;
        while pipe.held > 0 {
            match to.try_io(Interest::WRITABLE, || splice(pipe.read_end(), to_fd, pipe.held)) {
                Ok(0) => return Err((to_side, io::ErrorKind::WriteZero.into())),
                Ok(n) => pipe.held -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    to.writable().await.map_err(|e| (to_side, e))?;
                }
                Err(e) => return Err((to_side, e)),
            }
        }
    }
}

/// Both ways between `a` and `b` until both have ended or one fails:
/// `(bytes a→b, bytes b→a)`, or the error and the side it came from.
pub(super) async fn bidirectional(
    a: &mut TcpStream,
    b: &mut TcpStream,
    moved: &AtomicU64,
) -> Result<(u64, u64), (Side, io::Error)> {
    let ended = AtomicBool::new(false);
    let ((ar, aw), (br, bw)) = (a.split(), b.split());
    tokio::try_join!(
        one_way(ar, bw, (Side::A, Side::B), moved, &ended),
        one_way(br, aw, (Side::B, Side::A), moved, &ended)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipe dropped at a thread's exit after the thread's pool is gone (a
    /// connection held by another thread-local: a runtime kept in one) is
    /// closed, not a panic inside a thread-local destructor, which aborts
    /// the process. In a child process: an abort would end every test.
    #[test]
    fn a_pipe_dropped_after_its_threads_pool_is_closed_quietly() {
        const CHILD: &str = "MESHGATE_TEST_SPLICE_CHILD";
        const NAME: &str = "gateway::tcp::splice::tests::a_pipe_dropped_after_its_threads_pool_is_closed_quietly";
        if std::env::var_os(CHILD).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "the child: {:?}\n{text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(text.contains("1 passed"), "the child ran no test:\n{text}");
            return;
        }
        thread_local! {
            static HELD: RefCell<Option<Pipe>> = const { RefCell::new(None) };
        }
        std::thread::spawn(|| {
            // Touched first, so destroyed after the pool (last in, first out).
            HELD.with(|_| {});
            let pipe = Pipe::new().unwrap();
            HELD.with(|h| *h.borrow_mut() = Some(pipe));
        })
        .join()
        .unwrap();
    }
}
