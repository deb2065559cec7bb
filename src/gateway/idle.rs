//! A client connection's timers, kept per connection rather than per request:
//! the idle timeout (`--idle-timeout`), the response deadlines of forwarded
//! requests (`--upstream-timeout`, [`response_deadlines`]), and the
//! [`Supervised`] future that drives a connection next to them and polls them
//! only when their own timers fire.
//!
//! A connection is closed once it has had no request in flight and received no
//! new request head for a whole timeout: that bounds idle keep-alive
//! connections, and slowloris clients that dribble a head and never finish it
//! (hyper calls the service only once a head is complete). A request in flight
//! (from its head until its response body has been sent or dropped) holds the
//! connection open however long it takes: uploads, downloads and event streams
//! are not cut off, unless the response has been stuck for the whole timeout
//! on a client that stopped reading (the slow-read attack; nginx's
//! `send_timeout`), which the connection's writes tell, or its request body
//! waits for bytes the client does not send (nginx's `client_body_timeout`,
//! told by [`ClientBody`]), or its response waits for the client to take a
//! frame it does not take (an HTTP/2 window held shut, told by [`InFlight`]).
//! As with nginx, a
//! client reading so slowly that the kernel finds no room for more within a
//! whole timeout (Linux reports a socket writable again once about a third of
//! its send buffer has drained) counts as stopped.
//!
//! The watch wakes four times per timeout and closes the connection at the first
//! wake that completes a quiet timeout, counted from the last request head, the
//! end of the last request or (for a stuck response) the last write that went
//! through, so a connection goes between 1 and 1.25 timeouts after its last
//! activity. Per request this costs a few atomic
//! operations; hyper's own `header_read_timeout` and a `tokio::time::timeout`
//! around each exchange would each arm and drop a timer-wheel entry for every
//! request instead.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, SizeHint};

/// What a connection has been doing; shared by its service and its watch.
#[derive(Debug)]
pub(crate) struct Activity {
    /// Request heads received plus requests finished: any change restarts the
    /// quiet count.
    events: AtomicU64,
    in_flight: AtomicUsize,
    /// When the exchange in flight started waiting for the upstream's
    /// response headers: nanoseconds after `base`, plus one; 0 for none.
    waiting: AtomicU64,
    base: Instant,
    /// Writes to the client that made progress.
    writes: AtomicU64,
    /// The last write to the client could not proceed (its buffers are full:
    /// the client is not reading).
    blocked: AtomicBool,
    /// Set when a request was refused for want of credentials: the connection
    /// is to end after what is in flight (HTTP/2 ignores `Connection: close`).
    refused: tokio::sync::Notify,
    /// HTTP/2 streams without credentials seen so far (a flight of them is
    /// answered only up to [`MAX_UNVOUCHED_STREAMS`]).
    unvouched: AtomicU32,
    /// Request bodies waiting for the client to send more ([`ClientBody`]).
    reading: AtomicUsize,
    /// Request body frames received.
    received: AtomicU64,
    /// Response bodies waiting for the client to take more ([`InFlight`]):
    /// over HTTP/2, a flow-control window the client holds shut.
    unsent: AtomicUsize,
    /// Response body frames taken by the connection.
    sent: AtomicU64,
    /// The connection speaks HTTP/2: its writes (PING acknowledgements,
    /// other streams' frames) say nothing about a stream's progress.
    h2: AtomicBool,
}

/// The most HTTP/2 streams without credentials one connection gets answers
/// to; past it a stream gets none and the connection is closed hard. A flight
/// of streams is read before the first refusal is out, so the refusal alone
/// cannot stop them.
pub(crate) const MAX_UNVOUCHED_STREAMS: u32 = 4;

/// How long a connection told to go (a GOAWAY after a refusal) may take to
/// finish before it is closed hard: a client that never acknowledges the
/// GOAWAY's PING would otherwise keep it open.
pub(crate) const REFUSED_GRACE: Duration = Duration::from_secs(1);

impl Default for Activity {
    fn default() -> Self {
        Self {
            events: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            waiting: AtomicU64::new(0),
            base: Instant::now(),
            writes: AtomicU64::new(0),
            blocked: AtomicBool::new(false),
            refused: tokio::sync::Notify::new(),
            unvouched: AtomicU32::new(0),
            reading: AtomicUsize::new(0),
            received: AtomicU64::new(0),
            unsent: AtomicUsize::new(0),
            sent: AtomicU64::new(0),
            h2: AtomicBool::new(false),
        }
    }
}

impl Activity {
    /// Resolves once a request on this connection was refused for want of
    /// credentials.
    pub(crate) async fn refused(&self) {
        self.refused.notified().await;
    }

    /// Marks the connection as HTTP/2 (see [`Activity::h2`]).
    pub(crate) fn set_h2(&self) {
        self.h2.store(true, Ordering::Relaxed);
    }

    /// Records an HTTP/2 stream without credentials; false once the
    /// connection has had its share of them (the stream is then not answered
    /// and the connection is told to end).
    pub(crate) fn unvouched_stream(&self) -> bool {
        let n = self.unvouched.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if n > MAX_UNVOUCHED_STREAMS {
            self.refused.notify_one();
            return false;
        }
        true
    }

    /// A stream this connection will not serve (past its refusals, or after
    /// a revocation): the connection ends at once, not after a grace.
    pub(crate) fn turned_away(&self) {
        self.refused.notify_one();
    }

    /// Records a request head; the returned guard marks the request in flight
    /// until dropped (hand it to the response body with [`InFlight`]).
    pub(crate) fn request(self: &Arc<Self>) -> Guard {
        // Relaxed: the watch only needs to see the counts change eventually,
        // and it reads them at most four times per timeout.
        self.events.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Guard(self.clone())
    }

    /// Marks the start of a wait for the upstream's response headers; the
    /// mark goes when the returned value is dropped.
    pub(crate) fn waiting(&self, since: Instant) -> Waiting<'_> {
        let nanos = u64::try_from(since.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX - 1);
        self.waiting.store(nanos + 1, Ordering::Relaxed);
        Waiting(self)
    }

    fn waiting_since(&self) -> Option<Instant> {
        match self.waiting.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.base + Duration::from_nanos(n - 1)),
        }
    }

    /// Records a write to the client: progress, or blocked on a client that
    /// does not read.
    pub(crate) fn wrote<T>(&self, polled: &Poll<std::io::Result<T>>) {
        match polled {
            Poll::Pending => self.blocked.store(true, Ordering::Relaxed),
            Poll::Ready(_) => {
                self.blocked.store(false, Ordering::Relaxed);
                self.writes.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            events: self.events.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            blocked: self.blocked.load(Ordering::Relaxed),
            reading: self.reading.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            unsent: self.unsent.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            h2: self.h2.load(Ordering::Relaxed),
        }
    }
}

/// What the idle watch sees at one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Snapshot {
    events: u64,
    in_flight: usize,
    writes: u64,
    blocked: bool,
    reading: usize,
    received: u64,
    unsent: usize,
    sent: u64,
    h2: bool,
}

impl Snapshot {
    /// Nothing happened between `earlier` and this, and nothing is going on:
    /// no request in flight, or one whose response is stuck on a client that
    /// does not read (the slow-read attack; nginx's `send_timeout`).
    ///
    /// A request in flight counts as stuck on its client, too, when a request
    /// body waits for bytes that do not come (nginx's `client_body_timeout`:
    /// the time between two reads), or when a response body waits for the
    /// client to take more and none was taken (an HTTP/2 window held shut).
    fn quiet_since(&self, earlier: &Snapshot) -> bool {
        let unchanged = self.events == earlier.events;
        let idle = self.in_flight == 0;
        let stalled = self.blocked && self.writes == earlier.writes;
        let body_stalled = self.reading > 0 && self.received == earlier.received;
        // Over HTTP/1.1 a large frame goes out in many writes: those are
        // progress. Over HTTP/2 only a frame taken is (a client that holds
        // a window shut can still make the connection write PING answers).
        let window_stalled = self.unsent > 0 && self.sent == earlier.sent && (self.h2 || self.writes == earlier.writes);
        unchanged && (idle || stalled || body_stalled || window_stalled)
    }
}

/// A request in flight; dropped, it is over (and the quiet count restarts
/// from there).
#[derive(Debug)]
pub(crate) struct Guard(Arc<Activity>);

impl Guard {
    /// The request was refused for want of credentials: its connection ends
    /// once the answer is out (one guess per connection, on HTTP/2 too).
    pub(crate) fn refused(&self) {
        self.0.refused.notify_one();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.events.fetch_add(1, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A wait for the upstream's response headers, marked in [`Activity`].
#[derive(Debug)]
pub(crate) struct Waiting<'a>(&'a Activity);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.store(0, Ordering::Relaxed);
    }
}

/// The response timeout of a connection's forwarded requests, kept with one
/// timer per connection: the exchange notes when it started waiting
/// ([`Activity::waiting`]) and checks its own deadline whenever it is polled;
/// this wakes the connection's task at that deadline (a wake polls the
/// exchange), and is otherwise re-armed one timeout ahead. Never resolves.
/// A `tokio::time::timeout` per request would arm and drop a timer-wheel entry
/// for every request instead.
pub(crate) async fn response_deadlines(timeout: Duration, activity: &Activity) {
    let sleep = tokio::time::sleep(timeout);
    tokio::pin!(sleep);
    loop {
        sleep.as_mut().await;
        let now = tokio::time::Instant::now();
        let next = match activity.waiting_since() {
            Some(since) if since + timeout > now.into_std() => tokio::time::Instant::from_std(since + timeout),
            _ => now + timeout,
        };
        sleep.as_mut().reset(next);
    }
}

/// A connection's timers: resolves when the idle timeout runs out
/// ([`expired`]); meanwhile, with a `response_timeout`, wakes forwarded
/// requests at their response deadlines ([`response_deadlines`]).
pub(crate) async fn timers(idle_timeout: Duration, response_timeout: Option<Duration>, activity: &Activity) {
    match response_timeout {
        None => expired(idle_timeout, activity).await,
        Some(rt) => {
            tokio::select! {
                () = expired(idle_timeout, activity) => {}
                () = response_deadlines(rt, activity) => {}
            }
        }
    }
}

/// Resolves once the connection has been quiet for `timeout`: no new request
/// head, and no request in flight, or one whose response has been stuck for
/// the whole timeout on a client that stopped reading.
pub(crate) async fn expired(timeout: Duration, activity: &Activity) {
    const TICKS: u32 = 4;
    let tick = (timeout / TICKS).max(Duration::from_millis(1));
    let mut last = activity.snapshot();
    let mut quiet = 0;
    loop {
        tokio::time::sleep(tick).await;
        let now = activity.snapshot();
        if !now.quiet_since(&last) {
            quiet = 0;
        } else {
            quiet += 1;
            if quiet >= TICKS {
                return;
            }
        }
        last = now;
    }
}

/// A response body that keeps its request's [`Guard`] until it is sent or
/// dropped, and tells the connection's [`Activity`] while it waits for the
/// client to take its next frame (from the moment it is handed over, and
/// after each frame until it is polled again or dropped): a client that
/// holds an HTTP/2 window shut never lets it be polled, nor its last frame
/// go, and no write blocks to say so.
#[derive(Debug)]
pub(crate) struct InFlight<B> {
    body: B,
    /// Counted in [`Activity::unsent`].
    unsent: bool,
    guard: Guard,
}

impl<B: Body> InFlight<B> {
    pub(crate) fn new(body: B, guard: Guard) -> Self {
        let mut f = Self { body, unsent: false, guard };
        if !f.body.is_end_stream() {
            f.set_unsent(true);
        }
        f
    }
}

impl<B> InFlight<B> {
    fn set_unsent(&mut self, on: bool) {
        if self.unsent == on {
            return;
        }
        self.unsent = on;
        let unsent = &self.guard.0.unsent;
        if on {
            unsent.fetch_add(1, Ordering::Relaxed);
        } else {
            unsent.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl<B> Drop for InFlight<B> {
    fn drop(&mut self) {
        self.set_unsent(false);
    }
}

impl<B: Body + Unpin> Body for InFlight<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        this.set_unsent(false);
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            // Taken, not yet delivered: the connection polls again, or drops
            // the body once its last frame is out (HTTP/2 keeps it until the
            // window lets the frame go).
            this.guard.0.sent.fetch_add(1, Ordering::Relaxed);
            this.set_unsent(true);
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

/// A request body as the client sends it, telling the connection's
/// [`Activity`] while it waits for more (polled, nothing there), so that a
/// body that stops (`Content-Length: 100` and no byte) ends its connection
/// after the idle timeout, on meshgate's own routes and forwarded ones alike.
#[derive(Debug)]
pub(crate) struct ClientBody {
    inner: hyper::body::Incoming,
    activity: Arc<Activity>,
    /// Counted in [`Activity::reading`].
    reading: bool,
}

impl ClientBody {
    pub(crate) fn new(inner: hyper::body::Incoming, activity: Arc<Activity>) -> Self {
        Self { inner, activity, reading: false }
    }

    fn set_reading(&mut self, on: bool) {
        if self.reading == on {
            return;
        }
        self.reading = on;
        if on {
            self.activity.reading.fetch_add(1, Ordering::Relaxed);
        } else {
            self.activity.reading.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        self.set_reading(false);
    }
}

impl Body for ClientBody {
    type Data = hyper::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Pending => this.set_reading(true),
            Poll::Ready(got) => {
                this.set_reading(false);
                if matches!(got, Some(Ok(_))) {
                    this.activity.received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Awaits `watch` and checks it ended between `lo` and `hi` seconds from now.
    async fn ends_within(watch: impl Future<Output = ()>, lo: u64, hi: u64) {
        let t0 = tokio::time::Instant::now();
        watch.await;
        let took = t0.elapsed();
        assert!(took >= Duration::from_secs(lo) && took <= Duration::from_secs(hi), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_connection_expires_within_a_quarter_past_the_timeout() {
        let a = Arc::new(Activity::default());
        ends_within(expired(Duration::from_secs(60), &a), 60, 75).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_holds_the_connection_open() {
        let a = Arc::new(Activity::default());
        let guard = a.request();
        let watch = expired(Duration::from_secs(4), &a);
        tokio::pin!(watch);
        // Ten timeouts with a request in flight: still open.
        assert!(tokio::time::timeout(Duration::from_secs(40), watch.as_mut()).await.is_err());
        drop(guard);
        ends_within(watch, 4, 6).await;
    }

    /// A request that spans ticks and ends between two of them: the timeout
    /// counts from its end, not from the last tick it was seen in flight.
    #[tokio::test(start_paused = true)]
    async fn the_count_starts_when_a_request_ends() {
        let a = Arc::new(Activity::default());
        let watch = expired(Duration::from_secs(4), &a);
        tokio::pin!(watch);
        let guard = a.request();
        assert!(tokio::time::timeout(Duration::from_millis(1900), watch.as_mut()).await.is_err());
        drop(guard);
        ends_within(watch, 4, 5).await;
    }

    /// A response stuck on a client that does not read: closed after the
    /// timeout although a request is in flight. A slow reader that still makes
    /// progress is not.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_closed() {
        let a = Arc::new(Activity::default());
        let _guard = a.request();
        let watch = expired(Duration::from_secs(4), &a);
        tokio::pin!(watch);
        // Slow but reading: a write gets through every 2 s between blocks.
        for _ in 0..10 {
            a.wrote::<usize>(&Poll::Pending);
            assert!(tokio::time::timeout(Duration::from_secs(2), watch.as_mut()).await.is_err());
            a.wrote(&Poll::Ready(Ok(4096usize)));
        }
        // Stops reading.
        a.wrote::<usize>(&Poll::Pending);
        ends_within(watch, 3, 5).await;
    }

    /// A slow reader of one large frame over HTTP/1.1 makes progress with
    /// every write and is not closed; over HTTP/2, a frame that is not taken
    /// for the whole timeout closes the connection whatever else it writes.
    #[tokio::test(start_paused = true)]
    async fn a_frame_not_taken_counts_only_over_http2() {
        for h2 in [false, true] {
            let a = Arc::new(Activity::default());
            if h2 {
                a.set_h2();
            }
            let body = InFlight::new(http_body_util::Full::new(hyper::body::Bytes::from_static(b"x")), a.request());
            let watch = expired(Duration::from_secs(4), &a);
            tokio::pin!(watch);
            let writing = async {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    a.wrote(&Poll::Ready(Ok(1usize)));
                }
            };
            tokio::pin!(writing);
            let closed = tokio::select! {
                () = watch.as_mut() => true,
                () = writing.as_mut() => false,
                () = tokio::time::sleep(Duration::from_secs(40)) => false,
            };
            assert_eq!(closed, h2, "h2 = {h2}");
            drop(body);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn new_heads_restart_the_count() {
        let a = Arc::new(Activity::default());
        let watch = expired(Duration::from_secs(4), &a);
        tokio::pin!(watch);
        for _ in 0..10 {
            // A short request every 3 s keeps a 4 s timeout from firing.
            assert!(tokio::time::timeout(Duration::from_secs(3), watch.as_mut()).await.is_err());
            drop(a.request());
        }
        ends_within(watch, 4, 6).await;
    }
}

/// Why [`Supervised`] ended.
#[derive(Debug)]
pub(crate) enum Ended<R, S> {
    /// The connection finished.
    Conn(R),
    /// The supervisor resolved first (the connection is left as it is).
    Supervisor(S),
}

/// Drives a connection together with its supervisor (the drain signal and the
/// [`timers`]), polling the supervisor only when one of its own wakers fired:
/// a connection task is woken for every packet, its supervisor a few times per
/// timeout. (A `select!` would poll the watch's timer and the drain signal on
/// every wake, re-registering both each time.)
pub(crate) struct Supervised<C, S> {
    conn: C,
    supervisor: Pin<Box<S>>,
    flag: Arc<Flag>,
}

/// Set by the supervisor's wakers; wakes the connection task.
#[derive(Default)]
struct Flag {
    woken: std::sync::atomic::AtomicBool,
    task: std::sync::Mutex<Option<std::task::Waker>>,
}

impl std::task::Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = task.as_ref() {
            w.wake_by_ref();
        }
    }
}

impl<C, S> Supervised<C, S> {
    pub(crate) fn new(conn: C, supervisor: S) -> Self {
        let flag = Arc::new(Flag::default());
        // Polled the first time round.
        flag.woken.store(true, Ordering::Relaxed);
        Self { conn, supervisor: Box::pin(supervisor), flag }
    }
}

impl<C: Future + Unpin, S: Future> Future for Supervised<C, S> {
    type Output = Ended<C::Output, S::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        {
            // The task to wake when the supervisor's wakers fire (refreshed on
            // every poll, in case the task's waker changed).
            let mut task = this.flag.task.lock().unwrap_or_else(|e| e.into_inner());
            if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        if this.flag.woken.swap(false, Ordering::AcqRel) {
            let waker = std::task::Waker::from(this.flag.clone());
            if let Poll::Ready(s) = this.supervisor.as_mut().poll(&mut Context::from_waker(&waker)) {
                return Poll::Ready(Ended::Supervisor(s));
            }
        }
        Pin::new(&mut this.conn).poll(cx).map(Ended::Conn)
    }
}
