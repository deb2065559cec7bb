//! A keep-alive pool of HTTP/1.1 connections to the one upstream, built on
//! hyper's client connection API, and the client connection's own upstream
//! connection ([`Affinity`]), driven in the client connection's task.
//!
//! Each connection is one `handshake`: a [`SendRequest`] half, lent to one
//! exchange at a time and back when the response body has been read to its
//! end ([`Conn::attach`]), and a connection future that someone must poll.
//!
//! A client connection served with [`Affinity::drive`] owns one upstream
//! connection: its first forwarded exchange takes an idle one from the pool
//! (taking its connection future from the task that drove it while idle) or
//! opens one, and every later exchange of that client connection uses it.
//! Its connection future is polled in the client connection's own task,
//! beside the server connection ([`Driven`]): a request goes from the client
//! socket to the upstream socket and its response back without waking
//! another task (hyper's pooled client, and this pool before, woke the
//! connection's own task for the request and the exchange's for the
//! response: two task switches per request). Wakes during that task's poll
//! only ask for another round of the same poll. When the client connection
//! ends, its upstream connection is given a task of its own and goes back to
//! the pool (still lent to an exchange, e.g. an HTTP/2 stream, it goes back
//! when that exchange is done; upgraded, its task carries it to the upgrade
//! and the connection is never pooled).
//!
//! Exchanges outside a client connection's task (the router's path, a
//! client's last request, a second HTTP/2 stream while the first holds the
//! connection) take pooled connections, each driven by a task of its own.
//! Idle connections wait in a lock-protected stack (the most recently used
//! first, so the connections that stay warm are few): one stack per
//! connection worker (`crate::gateway::workers`), since a connection's task
//! runs on the worker that opened it, and one for connections returned off
//! the workers. A connection that errored, was closed by the upstream, was
//! upgraded, or whose response body was dropped half-read is never reused.
//! One task per pool sweeps the stacks while they hold anything, so an idle
//! connection is closed when it expires even if no request comes to take one.
//!
//! Keeping the client connection's requests on one upstream connection is
//! also what a one-to-one proxy does, instead of whichever connection was
//! returned last (on tokio's multi-threaded runtime, one whose task then has
//! to be woken on another thread: that cost the p99 with two worker threads
//! 1.4x what it was with one). The connection cap bounds the upstream
//! connections held this way.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One upstream connection's connection future (hyper's, with upgrades):
/// whoever holds it drives the connection.
type Driving = Pin<Box<dyn Future<Output = ()> + Send>>;

/// An upstream connection driven by a task of its own: idle in the pool, or
/// used by an exchange outside any client connection's task. A client
/// connection may take it over ([`Driver::adopt`]); the task then ends.
struct Driver(Mutex<Loose>);

struct Loose {
    conn: Option<Driving>,
    /// The driving task, woken when the connection is taken from it.
    task: Option<Waker>,
}

impl Driver {
    /// Spawns a task driving `conn` (on this worker, when on one).
    fn spawn(conn: Driving) -> Arc<Self> {
        let driver = Arc::new(Self(Mutex::new(Loose { conn: Some(conn), task: None })));
        let held = driver.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn(std::future::poll_fn(move |cx| held.poll(cx)))),
            // No runtime (shutting down): the connection closes.
            Err(_) => lock(&driver.0).conn = None,
        }
        driver
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut loose = lock(&self.0);
        let Some(conn) = loose.conn.as_mut() else { return Poll::Ready(()) };
        if conn.as_mut().poll(cx).is_ready() {
            loose.conn = None;
            return Poll::Ready(());
        }
        if !loose.task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            loose.task = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// The connection future, taken from its task (which then ends); none
    /// when the connection has ended.
    fn adopt(&self) -> Option<Driving> {
        let (conn, task) = {
            let mut loose = lock(&self.0);
            (loose.conn.take(), loose.task.take())
        };
        if let Some(task) = task {
            task.wake();
        }
        conn
    }
}

/// One client connection's own upstream connection (see the module docs).
/// Cheap to clone. While [`Affinity::drive`] serves the client connection,
/// the upstream connection its exchanges use is driven by the client
/// connection's own task; when the client connection ends it goes back to the
/// pool with a task of its own.
#[derive(Clone, Default)]
pub(crate) struct Affinity(Arc<Own>);

#[derive(Default)]
struct Own {
    state: Mutex<OwnState>,
    /// A connection future waits in `handoff` for the driving task.
    handed: AtomicBool,
}

#[derive(Default)]
struct OwnState {
    /// A [`Driven`] polls this client connection's upstream connections.
    driven: bool,
    /// The upstream connection this client connection's exchanges take.
    link: Option<Link>,
    /// Connection futures for the driving task to take (put here by an
    /// exchange, which on HTTP/2 may run in a task of its own).
    handoff: Vec<(u64, Driving)>,
    /// The driving task (its waker picks up the handoff).
    task: Option<Waker>,
    next: u64,
    /// Links lent to an exchange when the client connection ended: their
    /// own tasks drive them now, and the pool takes them when the exchange
    /// hands them back.
    left: Vec<(u64, Arc<Pool>, Arc<Driver>)>,
}

struct Link {
    id: u64,
    pool: Arc<Pool>,
    /// None while an exchange has it, or for good once an exchange dropped it.
    sender: Option<SendRequest<Outbound>>,
    lent: bool,
}

impl Affinity {
    /// Runs `future` (one forwarded exchange) as this client connection's:
    /// [`Pool::send`] takes this connection's upstream connection first and
    /// the response body hands it back here.
    pub(crate) fn scope<F: Future>(self, future: F) -> impl Future<Output = F::Output> {
        AFFINITY.scope(self, future)
    }

    /// Drives `server` (the client connection) and, in the same task, the
    /// upstream connection its exchanges use: a request and its response
    /// then pass between the two connections without waking another task.
    /// When `server` ends (or is dropped), the upstream connection goes back
    /// to the pool, driven by a task of its own from then on.
    pub(crate) fn drive<F: Future>(self, server: F) -> Driven<F> {
        let wakes = Arc::new(Wakes::default());
        // Both sides are polled the first time round.
        wakes.woken.iter().for_each(|w| w.store(true, Ordering::Relaxed));
        let wakers = [SERVER, UPSTREAM].map(|side| Waker::from(Arc::new(Side(wakes.clone(), side))));
        {
            let mut own = lock(&self.0.state);
            own.driven = true;
            // A connection handed over is picked up by the upstream side.
            own.task = Some(wakers[UPSTREAM].clone());
        }
        Driven { server, affinity: self, conns: Vec::new(), wakes, wakers, task: None, done: false }
    }

    /// Lends out this client connection's upstream connection, when it is
    /// `pool`'s, idle and open.
    fn take(&self, pool: &Arc<Pool>) -> Option<Conn> {
        let mut own = lock(&self.0.state);
        let link = own.link.as_mut()?;
        if link.lent || !Arc::ptr_eq(&link.pool, pool) || link.sender.as_ref().is_none_or(SendRequest::is_closed) {
            return None;
        }
        link.lent = true;
        let sender = link.sender.take();
        Some(Conn { sender, pool: pool.clone(), home: Home::Own(self.clone(), link.id) })
    }

    /// True when an upstream connection for `pool` may be made this client
    /// connection's own: it is driven, and has none that is open and free or
    /// lent out.
    fn has_room(&self, pool: &Arc<Pool>) -> bool {
        let own = lock(&self.0.state);
        own.driven
            && match &own.link {
                None => true,
                Some(l) => {
                    !l.lent && (!Arc::ptr_eq(&l.pool, pool) || l.sender.as_ref().is_none_or(SendRequest::is_closed))
                }
            }
    }

    /// Makes `conn` this client connection's own upstream connection, lent
    /// out at once (with `sender`) to the exchange asking; hands both back
    /// when there is no room ([`Self::has_room`]).
    fn install(
        &self,
        pool: &Arc<Pool>,
        sender: SendRequest<Outbound>,
        conn: Driving,
    ) -> Result<Conn, (SendRequest<Outbound>, Driving)> {
        if !self.has_room(pool) {
            return Err((sender, conn));
        }
        let (replaced, task, id) = {
            let mut own = lock(&self.0.state);
            own.next += 1;
            let id = own.next;
            // The one it replaces (closed, spent or another pool's) ends in
            // the driving task once its sender is dropped.
            let replaced = own.link.replace(Link { id, pool: pool.clone(), sender: None, lent: true });
            own.handoff.push((id, conn));
            self.0.handed.store(true, Ordering::Release);
            (replaced, own.task.clone(), id)
        };
        drop(replaced);
        if let Some(task) = task {
            task.wake();
        }
        Ok(Conn { sender: Some(sender), pool: pool.clone(), home: Home::Own(self.clone(), id) })
    }

    /// An exchange hands link `id` back, read to its end.
    fn give_back(&self, id: u64, sender: SendRequest<Outbound>) {
        let mut own = lock(&self.0.state);
        if let Some(link) = own.link.as_mut().filter(|l| l.id == id && l.lent) {
            link.lent = false;
            link.sender = Some(sender);
            return;
        }
        // The client connection ended while the exchange had it.
        if let Some(i) = own.left.iter().position(|(l, ..)| *l == id) {
            let (_, pool, driver) = own.left.swap_remove(i);
            drop(own);
            pool.checkin(sender, driver);
        }
    }

    /// An exchange dropped link `id` (the connection is not reusable).
    fn spent(&self, id: u64) {
        let mut own = lock(&self.0.state);
        if let Some(link) = own.link.as_mut().filter(|l| l.id == id) {
            link.lent = false;
            link.sender = None;
        }
        own.left.retain(|(l, ..)| *l != id);
    }

    /// Link `id`'s connection ended.
    fn ended(&self, id: u64) {
        let gone = {
            let mut own = lock(&self.0.state);
            match &own.link {
                Some(l) if l.id == id => own.link.take(),
                _ => None,
            }
        };
        drop(gone);
    }

    /// The client connection ended: every connection future still held is
    /// given a task of its own, and the idle link goes back to its pool.
    fn leave(&self, conns: &mut Vec<(u64, Driving)>) {
        let (mut link, handoff) = {
            let mut own = lock(&self.0.state);
            own.driven = false;
            own.task = None;
            self.0.handed.store(false, Ordering::Release);
            (own.link.take(), std::mem::take(&mut own.handoff))
        };
        conns.extend(handoff);
        for (id, conn) in conns.drain(..) {
            let driver = Driver::spawn(conn);
            let Some(l) = link.as_mut().filter(|l| l.id == id) else { continue };
            if l.lent {
                lock(&self.0.state).left.push((id, l.pool.clone(), driver));
            } else if let Some(sender) = l.sender.take() {
                l.pool.checkin(sender, driver);
            }
        }
    }
}

/// The wakers of a [`Driven`]: one for the server connection and one for
/// the upstream connections, so that each poll polls only the side that was
/// woken. A wake while the task is being polled only asks for one more round
/// of that poll (no second trip through the scheduler); any other wakes the
/// task.
#[derive(Default)]
struct Wakes {
    /// Per side (server, upstream): woken since it was last polled.
    woken: [AtomicBool; 2],
    polling: AtomicBool,
    task: Mutex<Option<Waker>>,
}

const SERVER: usize = 0;
const UPSTREAM: usize = 1;

/// One side's waker.
struct Side(Arc<Wakes>, usize);

impl Wake for Side {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let Self(wakes, side) = &**self;
        wakes.woken[*side].store(true, Ordering::SeqCst);
        if !wakes.polling.load(Ordering::SeqCst) {
            if let Some(task) = lock(&wakes.task).as_ref() {
                task.wake_by_ref();
            }
        }
    }
}

impl Wakes {
    /// Side `side` was woken (and is polled now).
    fn take(&self, side: usize) -> bool {
        self.woken[side].swap(false, Ordering::SeqCst)
    }
}

/// Rounds of one poll of a [`Driven`] before it yields to other tasks.
const ROUNDS: usize = 8;

pin_project_lite::pin_project! {
    /// A client connection and the upstream connection(s) its exchanges use,
    /// driven in one task ([`Affinity::drive`]).
    pub(crate) struct Driven<F> {
        #[pin]
        server: F,
        affinity: Affinity,
        conns: Vec<(u64, Driving)>,
        wakes: Arc<Wakes>,
        // Per side.
        wakers: [Waker; 2],
        // The task's waker, as last stored in `wakes`.
        task: Option<Waker>,
        done: bool,
    }

    impl<F> PinnedDrop for Driven<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !*this.done {
                this.affinity.leave(this.conns);
            }
        }
    }
}

impl<F: Future> Future for Driven<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        if !this.task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *this.task = Some(cx.waker().clone());
            *lock(&this.wakes.task) = Some(cx.waker().clone());
        }
        let wakes = &**this.wakes;
        for _ in 0..ROUNDS {
            wakes.polling.store(true, Ordering::SeqCst);
            // The upstream side first: a response it reads is then written
            // to the client in this same round.
            if wakes.take(UPSTREAM) {
                let own = &this.affinity.0;
                if own.handed.swap(false, Ordering::AcqRel) {
                    this.conns.append(&mut lock(&own.state).handoff);
                }
                let mut cx = Context::from_waker(&this.wakers[UPSTREAM]);
                let mut i = 0;
                while i < this.conns.len() {
                    if this.conns[i].1.as_mut().poll(&mut cx).is_ready() {
                        let (id, _) = this.conns.swap_remove(i);
                        this.affinity.ended(id);
                    } else {
                        i += 1;
                    }
                }
            }
            if wakes.take(SERVER) {
                let mut cx = Context::from_waker(&this.wakers[SERVER]);
                if let Poll::Ready(out) = this.server.as_mut().poll(&mut cx) {
                    wakes.polling.store(false, Ordering::SeqCst);
                    *this.done = true;
                    this.affinity.leave(this.conns);
                    return Poll::Ready(out);
                }
            }
            wakes.polling.store(false, Ordering::SeqCst);
            if !wakes.woken.iter().any(|w| w.load(Ordering::SeqCst)) {
                return Poll::Pending;
            }
        }
        // Still busy: let other tasks run first.
        cx.waker().wake_by_ref();
        Poll::Pending
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
    driver: Arc<Driver>,
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
    ///
    /// In a client connection's scope ([`Affinity`]), its own upstream
    /// connection is taken first; without one (its first request, or the one
    /// it had closed), an idle connection taken from the pool or a new one
    /// becomes its own, driven by the client connection's task. One that is
    /// lent to another exchange of the same client connection (HTTP/2
    /// streams) leaves the others to the pool's own connections.
    pub(crate) async fn send(
        self: &Arc<Self>,
        request: Request<Outbound>,
    ) -> Result<(Response<Incoming>, Conn), SendError> {
        let mut request = request;
        let affinity = AFFINITY.try_with(Affinity::clone).ok();
        // This client connection's own first: its task has just finished the
        // last exchange, so it is ready at once or as soon as that task runs.
        if let Some(mut conn) = affinity.as_ref().and_then(|a| a.take(self)) {
            let sender = conn.sender.as_mut().expect("a lent link has its sender");
            if std::future::poll_fn(|cx| sender.poll_ready(cx)).await.is_ok() {
                match sender.try_send_request(request).await {
                    Ok(response) => return Ok((response, conn)),
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => request = unsent,
                        None => return Err(SendError::Request(e.into_error())),
                    },
                }
            }
            // Closed: dropped, and replaced below.
        }
        let own = affinity.as_ref().filter(|a| a.has_room(self));
        if let Some(idle) = self.checkout() {
            let mut conn = match own.and_then(|_| idle.driver.adopt()) {
                Some(driving) => self.hold(idle.sender, driving, own),
                None => Conn { sender: Some(idle.sender), pool: self.clone(), home: Home::Pooled(idle.driver) },
            };
            let sender = conn.sender.as_mut().expect("a new conn has its sender");
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, conn)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Request(e.into_error())),
                },
            }
        }
        let (sender, driving) = self.connect().await?;
        let own = affinity.as_ref().filter(|a| a.has_room(self));
        let mut conn = self.hold(sender, driving, own);
        let sender = conn.sender.as_mut().expect("a new conn has its sender");
        let response = sender.send_request(request).await.map_err(SendError::Request)?;
        Ok((response, conn))
    }

    /// A connection for one exchange: `own`'s when it has room, otherwise
    /// driven by a task of its own.
    fn hold(self: &Arc<Self>, sender: SendRequest<Outbound>, driving: Driving, own: Option<&Affinity>) -> Conn {
        let (sender, driving) = match own {
            Some(a) => match a.install(self, sender, driving) {
                Ok(conn) => return conn,
                Err(back) => back,
            },
            None => (sender, driving),
        };
        Conn { sender: Some(sender), pool: self.clone(), home: Home::Pooled(Driver::spawn(driving)) }
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
    fn checkout(&self) -> Option<Idle> {
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
                return idle.remove(i);
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

    fn checkin(self: &Arc<Self>, sender: SendRequest<Outbound>, driver: Arc<Driver>) {
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
            idle.push_back(Idle { sender, driver, since: now, home: here });
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

    /// A new connection, not yet driven by anyone.
    async fn connect(&self) -> Result<(SendRequest<Outbound>, Driving), SendError> {
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
            Ok(Ok(opened)) => Ok(opened),
        }
    }

    async fn handshake<T>(&self, io: T) -> Result<(SendRequest<Outbound>, Driving), HandshakeError>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = self.builder.handshake(TokioIo::new(io)).await.map_err(HandshakeError::Http)?;
        let driving = Box::pin(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok((sender, driving))
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
/// response body, it goes back when that body ends (to its client
/// connection when it is that connection's own, otherwise to the pool).
pub(crate) struct Conn {
    sender: Option<SendRequest<Outbound>>,
    pool: Arc<Pool>,
    home: Home,
}

/// Where a [`Conn`] goes back to.
enum Home {
    /// A client connection's own (link id), driven by that connection's task.
    Own(Affinity, u64),
    /// The pool's, driven by a task of its own.
    Pooled(Arc<Driver>),
}

impl Conn {
    pub(crate) fn attach(self, body: Incoming) -> PooledBody {
        PooledBody { body, conn: self }
    }

    fn release(&mut self) {
        if let Some(sender) = self.sender.take() {
            match &self.home {
                Home::Own(affinity, id) => affinity.give_back(*id, sender),
                Home::Pooled(driver) => self.pool.checkin(sender, driver.clone()),
            }
        }
    }

    /// Never reused (an error, a body dropped half-read, an upgrade).
    fn spend(&mut self) {
        if self.sender.take().is_some() {
            if let Home::Own(affinity, id) = &self.home {
                affinity.spent(*id);
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.spend();
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
            Poll::Ready(Some(Err(_))) => this.conn.spend(),
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
                let (mut sender, driving) = pool.connect().await.map_err(|_| "connect").unwrap();
                let driver = Driver::spawn(driving);
                std::future::poll_fn(|cx| sender.poll_ready(cx)).await.unwrap();
                pool.checkin(sender, driver);
                true
            })
        });
        assert!(opened);
        assert_eq!(pool.idle_count(), 1);
        let take: Step = |pool| {
            Box::pin(async move {
                match pool.checkout() {
                    Some(idle) => {
                        pool.checkin(idle.sender, idle.driver);
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
        let (mut sender, driving) = pool.connect().await.map_err(|_| "connect").unwrap();
        let driver = Driver::spawn(driving);
        let (mut held, _) = upstream.accept().await.unwrap();
        std::future::poll_fn(|cx| sender.poll_ready(cx)).await.unwrap();
        pool.checkin(sender, driver);
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

    /// Issue #29: a client connection's exchanges go over one upstream
    /// connection, driven by the client connection's task (it is nobody
    /// else's meanwhile: not idle in the pool); when the client connection
    /// ends it goes back to the pool with a task of its own (a request from
    /// outside any client connection then uses it), and the next client
    /// connection takes it over.
    #[tokio::test]
    async fn a_client_connection_drives_its_upstream_connection_and_returns_it_when_it_ends() {
        let (authority, accepted) = counting_upstream().await;
        let pool =
            Arc::new(Pool::new(&Upstream::Http { authority }, Duration::from_secs(5), 8, Duration::from_secs(60)));
        for client in 0..2 {
            let affinity = Affinity::default();
            let (p, a) = (pool.clone(), affinity.clone());
            let served = affinity.clone().drive(async move {
                for _ in 0..5 {
                    assert_eq!(exchange(&p, Some(&a)).await, "ok");
                    assert_eq!(p.idle_count(), 0, "the client connection's upstream connection was in the pool");
                }
                // Driven here, not by a task of its own.
                let own = lock(&a.0.state).link.as_ref().map(|l| l.id);
                assert!(own.is_some(), "no upstream connection of its own");
            });
            tokio::time::timeout(Duration::from_secs(10), served).await.expect("the exchanges finished");
            assert_eq!(accepted.load(Ordering::SeqCst), 1, "client {client}: more than one upstream connection");
            assert_eq!(pool.idle_count(), 1, "client {client}: its upstream connection did not go back to the pool");
            assert!(lock(&affinity.0.state).link.is_none());
        }
        // Outside any client connection: the pooled connection, driven by its own task.
        let out = tokio::time::timeout(Duration::from_secs(10), exchange(&pool, None)).await;
        assert_eq!(out.expect("the pooled connection answered"), "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    /// Issue #29: an upgraded upstream connection keeps being driven after
    /// the client connection's task has finished its HTTP exchange: the
    /// upgrade completes and bytes flow both ways.
    #[tokio::test]
    async fn an_upgraded_upstream_connection_keeps_flowing_after_the_client_connection_ends() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (authority, _) = counting_upstream().await;
        let pool =
            Arc::new(Pool::new(&Upstream::Http { authority }, Duration::from_secs(5), 8, Duration::from_secs(60)));
        let affinity = Affinity::default();
        let (p, a) = (pool.clone(), affinity.clone());
        // The client connection's part ends as soon as the 101 is in.
        let upgrade = affinity.drive(async move {
            let (mut response, conn) = a.scope(p.send(get(true))).await.map_err(|e| format!("{e:?}")).unwrap();
            assert_eq!(response.status(), 101);
            let upgrade = hyper::upgrade::on(&mut response);
            drop(conn);
            upgrade
        });
        let upgrade = tokio::time::timeout(Duration::from_secs(10), upgrade).await.expect("101");
        let upgraded = tokio::time::timeout(Duration::from_secs(10), upgrade)
            .await
            .expect("the upgrade completed after the client connection ended")
            .unwrap();
        let mut io = TokioIo::new(upgraded);
        io.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(10), io.read_exact(&mut b)).await.expect("echoed").unwrap();
        assert_eq!(&b, b"ping");
        assert_eq!(pool.idle_count(), 0, "an upgraded connection went back to the pool");
    }
}
