//! A keep-alive pool of HTTP/1.1 connections to the one upstream, built on
//! hyper's client connection API.
//!
//! Each connection is one `handshake` and one spawned connection task; its
//! [`SendRequest`] half is checked out for a request and comes back when the
//! response body has been read to its end ([`Conn::attach`]). Idle senders
//! wait in a lock-protected stack (the most recently used first, so the
//! connections that stay warm are few): one stack per connection worker
//! (`crate::gateway::workers`), since a connection's task runs on the worker
//! that opened it, and one for connections returned off the workers. A connection that errored, was
//! closed by the upstream, was upgraded, or whose response body was dropped
//! half-read is never reused. This does per request what hyper-util's legacy
//! client did with a spawned task and a timer wheel, with neither; one task
//! per pool sweeps the stacks while they hold anything, so an idle connection
//! is closed when it expires even if no request comes to take one.
//!
//! In front of the stacks, each client connection keeps the upstream
//! connection its last exchange used ([`Affinity`]) and takes it again for
//! its next: its requests then go over one upstream connection, as a
//! one-to-one proxy's would, instead of whichever connection was returned
//! last (on tokio's multi-threaded runtime, one whose task then has to be
//! woken on another thread: that cost the p99 with two worker threads 1.4x
//! what it was with one).
//! A client connection holds at most one idle upstream connection this way
//! (the connection cap bounds them all); it returns it to the stack when it
//! closes.

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::uri::Authority;
use axum::http::{HeaderValue, Request, Response};
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use super::outbound::Outbound;
use super::upstream::Upstream;
use crate::gateway::workers;

tokio::task_local! {
    /// The client connection a forwarded request came in on.
    static AFFINITY: Affinity;
}

/// One client connection's own upstream connection (see the module docs).
/// Cheap to clone; the connection goes back to its pool when the last clone
/// (the client connection's, or an exchange's still in flight) is dropped.
#[derive(Clone, Default)]
pub(crate) struct Affinity(Arc<Kept>);

#[derive(Default)]
struct Kept(Mutex<Option<(Arc<Pool>, SendRequest<Outbound>)>>);

impl Affinity {
    /// Runs `future` (one forwarded exchange) as this client connection's:
    /// [`Pool::send`] takes this connection's upstream connection first and
    /// the response body hands it back here.
    pub(crate) fn scope<F: std::future::Future>(self, future: F) -> impl std::future::Future<Output = F::Output> {
        AFFINITY.scope(self, future)
    }

    /// The kept sender, when it is `pool`'s and still open.
    fn take(&self, pool: &Arc<Pool>) -> Option<SendRequest<Outbound>> {
        let mut kept = self.0 .0.lock().unwrap_or_else(|e| e.into_inner());
        match kept.take() {
            Some((p, sender)) if Arc::ptr_eq(&p, pool) && !sender.is_closed() => Some(sender),
            // Another pool's (the upstream changed): back where it came from.
            Some((p, sender)) if !Arc::ptr_eq(&p, pool) => {
                p.checkin(sender);
                None
            }
            _ => None,
        }
    }

    /// Keeps `sender` for this client connection's next exchange, or hands
    /// it to the pool when one is kept already.
    fn keep(&self, pool: &Arc<Pool>, sender: SendRequest<Outbound>) {
        let mut kept = self.0 .0.lock().unwrap_or_else(|e| e.into_inner());
        match &*kept {
            None => *kept = Some((pool.clone(), sender)),
            Some(_) => {
                drop(kept);
                pool.checkin(sender);
            }
        }
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        // The client connection closed: its upstream connection is anyone's.
        let kept = self.0.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some((pool, sender)) = kept.take() {
            pool.checkin(sender);
        }
    }
}

/// Why a request got no response.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be opened (refused, missing socket, timed out).
    Connect(io::Error),
    /// The connection failed the request (closed, invalid response, or the
    /// request body failed, e.g. over its limit).
    Request(hyper::Error),
}

enum Target {
    Tcp(Authority),
    #[cfg(unix)]
    Unix(PathBuf),
}

struct Idle {
    sender: SendRequest<Outbound>,
    since: Instant,
    /// The connection worker it was returned on (see `checkout`).
    home: Option<usize>,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

pub(crate) struct Pool {
    target: Target,
    host: HeaderValue,
    /// In nanoseconds; a reload may change it while connections are made.
    connect_timeout_ns: AtomicU64,
    idle_timeout: Duration,
    /// Per stack.
    max_idle: usize,
    /// The idle connections: one stack (with its own lock and cap) for those
    /// returned off the workers, and one per connection worker (past 64
    /// workers some share a stack, its lock and its cap, each taking only its
    /// own; see `checkout`).
    idle: Box<[Mutex<VecDeque<Idle>>]>,
    builder: http1::Builder,
    /// True while a sweeper task runs (see [`Pool::sweep_later`]).
    sweeping: AtomicBool,
}

/// Idle stacks: one off the workers, 64 for workers.
const SHARDS: usize = 65;

impl Pool {
    pub(crate) fn new(upstream: &Upstream, connect_timeout: Duration, max_idle: usize, idle_timeout: Duration) -> Self {
        let (target, host) = match upstream {
            Upstream::Http { authority } => (
                Target::Tcp(authority.clone()),
                HeaderValue::from_str(authority.as_str()).unwrap_or(HeaderValue::from_static("localhost")),
            ),
            #[cfg(unix)]
            Upstream::Unix { path } => (Target::Unix(path.clone()), HeaderValue::from_static("localhost")),
            #[cfg(not(unix))]
            Upstream::Unix { .. } => unreachable!("Upstream::parse refuses unix: off unix"),
        };
        Self {
            target,
            host,
            connect_timeout_ns: AtomicU64::new(nanos(connect_timeout)),
            idle_timeout,
            max_idle,
            idle: (0..SHARDS).map(|_| Mutex::new(VecDeque::new())).collect(),
            builder: {
                let mut b = http1::Builder::new();
                // Requests are small: one buffer, one write (see the server side).
                b.writev(false);
                b
            },
            sweeping: AtomicBool::new(false),
        }
    }

    /// The `Host` for a request that came without one.
    pub(crate) fn host_header(&self) -> HeaderValue {
        self.host.clone()
    }

    /// Sends `request` on an idle connection, or on a new one. A reused
    /// connection that turns out closed before the request went out (the
    /// upstream dropped it while idle) is retried once on a new connection.
    pub(crate) async fn send(
        self: &Arc<Self>,
        request: Request<Outbound>,
    ) -> Result<(Response<Incoming>, Conn), SendError> {
        let mut request = request;
        let affinity = AFFINITY.try_with(Affinity::clone).ok();
        let conn = |sender| Conn { sender: Some(sender), pool: self.clone(), affinity: affinity.clone() };
        // This client connection's own first: its task has just finished the
        // last exchange, so it is ready at once or as soon as that task runs.
        let own = match affinity.as_ref().and_then(|a| a.take(self)) {
            Some(mut sender) => std::future::poll_fn(|cx| sender.poll_ready(cx)).await.ok().map(|()| sender),
            None => None,
        };
        if let Some(mut sender) = own.or_else(|| self.checkout()) {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, conn(sender))),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Request(e.into_error())),
                },
            }
        }
        let mut sender = self.connect().await?;
        let response = sender.send_request(request).await.map_err(SendError::Request)?;
        Ok((response, conn(sender)))
    }

    /// The idle stack of connections returned on worker `home` (or off the
    /// workers).
    fn stack(&self, home: Option<usize>) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        let i = home.map_or(0, |h| 1 + h % (SHARDS - 1));
        self.idle[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently returned idle connection that is ready; closed and
    /// expired ones are dropped on the way. On a connection worker, only one
    /// returned on this worker: its connection task runs on this thread, and
    /// the client connection that takes it keeps it (`Affinity`). One of
    /// another worker's would tie the two threads together for the client
    /// connection's life, each request then waiting for both to be scheduled
    /// (with two workers sharing two cores with other work, the p99 went 1.15x).
    /// Each worker (up to 64) has a stack of its own, so one worker's idle
    /// connections never crowd out another's, and no lock is shared between
    /// workers.
    fn checkout(&self) -> Option<SendRequest<Outbound>> {
        let here = workers::current();
        let mut idle = self.stack(here);
        let now = Instant::now();
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            let c = &idle[i];
            if c.sender.is_closed() || now.duration_since(c.since) > self.idle_timeout {
                idle.remove(i);
            } else if c.home != here {
                // Another worker's sharing this stack: left for it.
            } else if c.sender.is_ready() {
                return idle.remove(i).map(|c| c.sender);
            }
            // Not ready yet (its connection task has not caught up with the
            // end of the last exchange): left for a later request.
        }
        None
    }

    /// Drops every idle connection past the idle timeout (closing it);
    /// returns how many are left.
    fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut left = 0;
        for stack in self.idle.iter() {
            let mut idle = stack.lock().unwrap_or_else(|e| e.into_inner());
            idle.retain(|c| !c.sender.is_closed() && now.duration_since(c.since) <= self.idle_timeout);
            left += idle.len();
        }
        left
    }

    /// Makes sure a task sweeps the idle stacks while they hold anything:
    /// an idle connection is closed within a quarter of the idle timeout
    /// after it expires, whether or not a request comes to take one (a
    /// flood's worth of upstream connections must not stay open for good).
    /// One task per pool at most, ending when the stacks are empty.
    fn sweep_later(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.sweeping.store(false, Ordering::Release);
            return;
        };
        let pool = Arc::downgrade(self);
        let tick = (self.idle_timeout / 4).max(Duration::from_millis(50));
        rt.spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                let Some(pool) = pool.upgrade() else { return };
                if pool.sweep() > 0 {
                    continue;
                }
                pool.sweeping.store(false, Ordering::Release);
                // One checked in between the sweep and the store saw a
                // sweeper running: keep going for it.
                if pool.idle_count() == 0 || pool.sweeping.swap(true, Ordering::AcqRel) {
                    return;
                }
            }
        });
    }

    fn checkin(self: &Arc<Self>, sender: SendRequest<Outbound>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let here = workers::current();
        let mut idle = self.stack(here);
        while idle.front().is_some_and(|c| now.duration_since(c.since) > self.idle_timeout) {
            idle.pop_front();
        }
        if idle.len() < self.max_idle {
            // Returned where its last exchange ran, which is where its
            // connection task runs on a worker (see `checkout`).
            idle.push_back(Idle { sender, since: now, home: here });
            drop(idle);
            self.sweep_later();
        }
    }

    /// Idle connections kept for reuse now (some may have been closed by
    /// the upstream since; they are dropped when next taken).
    pub(crate) fn idle_count(&self) -> usize {
        self.idle.iter().map(|stack| stack.lock().unwrap_or_else(|e| e.into_inner()).len()).sum()
    }

    /// Connections opened from now on get `timeout` to connect.
    pub(crate) fn set_connect_timeout(&self, timeout: Duration) {
        self.connect_timeout_ns.store(nanos(timeout), Ordering::Relaxed);
    }

    async fn connect(&self) -> Result<SendRequest<Outbound>, SendError> {
        let timed_out = || SendError::Connect(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
        let limit = Duration::from_nanos(self.connect_timeout_ns.load(Ordering::Relaxed));
        let opened = tokio::time::timeout(limit, async {
            match &self.target {
                Target::Tcp(authority) => {
                    let stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
                    stream.set_nodelay(true)?;
                    self.handshake(stream).await
                }
                #[cfg(unix)]
                Target::Unix(path) => self.handshake(tokio::net::UnixStream::connect(path).await?).await,
            }
        })
        .await;
        match opened {
            Err(_) => Err(timed_out()),
            Ok(Err(HandshakeError::Io(e))) => Err(SendError::Connect(e)),
            Ok(Err(HandshakeError::Http(e))) => Err(SendError::Request(e)),
            Ok(Ok(sender)) => Ok(sender),
        }
    }

    async fn handshake<T>(&self, io: T) -> Result<SendRequest<Outbound>, HandshakeError>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = self.builder.handshake(TokioIo::new(io)).await.map_err(HandshakeError::Http)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

enum HandshakeError {
    Io(io::Error),
    Http(hyper::Error),
}

impl From<io::Error> for HandshakeError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// A checked-out connection: dropped, it is closed; attached to its
/// response body, it goes back to the pool when that body ends.
pub(crate) struct Conn {
    sender: Option<SendRequest<Outbound>>,
    pool: Arc<Pool>,
    /// The client connection's, when the exchange ran in its scope.
    affinity: Option<Affinity>,
}

impl Conn {
    pub(crate) fn attach(self, body: Incoming) -> PooledBody {
        PooledBody { body, conn: self }
    }

    fn release(&mut self) {
        if let Some(sender) = self.sender.take() {
            match &self.affinity {
                Some(a) if !sender.is_closed() => a.keep(&self.pool, sender),
                _ => self.pool.checkin(sender),
            }
        }
    }
}

/// A response body that hands its connection back once read to the end.
pub(crate) struct PooledBody {
    body: Incoming,
    conn: Conn,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody").field("body", &self.body).finish_non_exhaustive()
    }
}

impl hyper::body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Err(_))) => this.conn.sender = None,
            Poll::Ready(None) => this.conn.release(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.conn.release(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        use hyper::body::Body as _;
        // Read to its end (or empty from the start: HEAD, 204, 304): the
        // connection is clean. Otherwise its leftover bytes make it useless.
        if self.body.is_end_stream() {
            self.conn.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use super::*;
    use crate::gateway::workers::Workers;

    /// A step run on one worker, answering yes or no.
    type Step = fn(Arc<Pool>) -> Pin<Box<dyn std::future::Future<Output = bool> + Send>>;

    /// On a worker, the pool hands out only the idle connections returned on
    /// that worker; off the workers, only those returned off the workers.
    #[test]
    fn a_worker_takes_only_its_own_idle_connections() {
        // An upstream that accepts and holds connections (a handshake needs no reply).
        let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let authority: Authority = upstream.local_addr().unwrap().to_string().parse().unwrap();
        let held = std::thread::spawn(move || upstream.incoming().take(1).map(Result::unwrap).collect::<Vec<_>>());
        let pool =
            Arc::new(Pool::new(&Upstream::Http { authority }, Duration::from_secs(5), 8, Duration::from_secs(60)));
        let workers = Workers::start(NonZeroUsize::new(2).unwrap()).unwrap();
        let on = |worker: usize, task: Step| {
            let (pool, id) = (pool.clone(), workers.id(worker));
            let (tx, rx) = std::sync::mpsc::channel();
            drop(workers.spawn_on(worker, async move {
                assert_eq!(workers::current(), Some(id));
                tx.send(task(pool).await).unwrap();
            }));
            rx.recv_timeout(Duration::from_secs(10)).expect("the worker answered")
        };
        // Opened and returned on worker 0: its connection task runs there.
        let opened = on(0, |pool| {
            Box::pin(async move {
                let mut sender = pool.connect().await.map_err(|_| "connect").unwrap();
                std::future::poll_fn(|cx| sender.poll_ready(cx)).await.unwrap();
                pool.checkin(sender);
                true
            })
        });
        assert!(opened);
        assert_eq!(pool.idle_count(), 1);
        let take: Step = |pool| {
            Box::pin(async move {
                match pool.checkout() {
                    Some(sender) => {
                        pool.checkin(sender);
                        true
                    }
                    None => false,
                }
            })
        };
        assert!(!on(1, take), "worker 1 took worker 0's connection");
        assert_eq!(pool.idle_count(), 1, "worker 1 dropped worker 0's connection");
        assert!(on(0, take), "worker 0 could not take its own connection back");
        // Off the workers (a multi-threaded runtime, where tasks move): a
        // stack of their own, which neither worker's connection is in.
        assert_eq!(workers::current(), None);
        assert!(pool.checkout().is_none(), "off the workers, a worker's connection was taken");
        assert_eq!(pool.idle_count(), 1);
        drop(workers);
        drop(held);
    }

    /// Issue #25 part 3: an idle connection is closed when it expires, not
    /// when a later request looks at the stack: the upstream sees it close.
    #[tokio::test]
    async fn idle_connections_close_by_themselves_when_they_expire() {
        use tokio::io::AsyncReadExt as _;
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = upstream.local_addr().unwrap().to_string().parse().unwrap();
        let pool =
            Arc::new(Pool::new(&Upstream::Http { authority }, Duration::from_secs(5), 8, Duration::from_millis(300)));
        let mut sender = pool.connect().await.map_err(|_| "connect").unwrap();
        let (mut held, _) = upstream.accept().await.unwrap();
        std::future::poll_fn(|cx| sender.poll_ready(cx)).await.unwrap();
        pool.checkin(sender);
        assert_eq!(pool.idle_count(), 1);
        let t0 = Instant::now();
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), held.read(&mut b))
            .await
            .expect("the upstream saw the idle connection close");
        assert_eq!(n.unwrap(), 0);
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        assert_eq!(pool.idle_count(), 0);
    }
    /// An upstream answering every request on a connection with `200 ok`
    /// (or, for an `Upgrade` request, `101` and then echoing what it gets);
    /// counts the connections it accepted.
    async fn counting_upstream() -> (Authority, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut b = [0u8; 1024];
                    loop {
                        let Ok(n) = s.read(&mut b).await else { return };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&b[..n]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        buf.drain(..end + 4);
                        if head.contains("upgrade: echo") {
                            let _ = s
                                .write_all(
                                    b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
                                )
                                .await;
                            let (mut r, mut w) = s.split();
                            let _ = tokio::io::copy(&mut r, &mut w).await;
                            return;
                        }
                        if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (authority, accepted)
    }

    fn get(upgrade: bool) -> Request<Outbound> {
        let mut r = Request::builder().uri("/").header("host", "upstream");
        if upgrade {
            r = r.header("connection", "upgrade").header("upgrade", "echo");
        }
        r.body(Outbound::Axum(axum::body::Body::empty())).unwrap()
    }

    /// One exchange in `affinity`'s scope, its body read to the end.
    async fn exchange(pool: &Arc<Pool>, affinity: Option<&Affinity>) -> Bytes {
        use http_body_util::BodyExt as _;
        let send = pool.send(get(false));
        let (response, conn) = match affinity {
            Some(a) => a.clone().scope(send).await,
            None => send.await,
        }
        .map_err(|e| format!("{e:?}"))
        .unwrap();
        conn.attach(response.into_body()).collect().await.unwrap().to_bytes()
    }

    /// A client connection's exchanges go over one upstream connection
    /// (kept for it, not idle in the pool meanwhile), which goes back to the
    /// pool when the client connection ends.
    #[tokio::test]
    async fn a_client_connections_exchanges_share_one_upstream_connection_returned_when_it_ends() {
        let (authority, accepted) = counting_upstream().await;
        let pool =
            Arc::new(Pool::new(&Upstream::Http { authority }, Duration::from_secs(5), 8, Duration::from_secs(60)));
        let affinity = Affinity::default();
        for _ in 0..5 {
            let out = tokio::time::timeout(Duration::from_secs(10), exchange(&pool, Some(&affinity))).await;
            assert_eq!(out.expect("answered"), "ok");
            assert_eq!(pool.idle_count(), 0, "the client connection's upstream connection was in the pool");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "more than one upstream connection");
        drop(affinity);
        assert_eq!(pool.idle_count(), 1, "the upstream connection did not go back to the pool");
        let out = tokio::time::timeout(Duration::from_secs(10), exchange(&pool, None)).await;
        assert_eq!(out.expect("the pooled connection answered"), "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }
}
