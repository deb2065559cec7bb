//! The idle timeout of a client connection (`--idle-timeout`), kept with one
//! coarse timer per connection instead of one timer per request.
//!
//! A connection is closed once it has had no request in flight and received no
//! new request head for a whole timeout: that bounds idle keep-alive
//! connections, and slowloris clients that dribble a head and never finish it
//! (hyper calls the service only once a head is complete). A request in flight
//! (from its head until its response body has been sent or dropped) holds the
//! connection open however long it takes: uploads, downloads and event streams
//! are not cut off.
//!
//! The watch wakes four times per timeout and closes the connection at the first
//! wake that completes a quiet timeout, so an idle connection goes between 1
//! and 1.25 timeouts after its last activity. Per request this costs two atomic
//! increments and a decrement; hyper's own `header_read_timeout` instead arms
//! and drops a timer-wheel entry for every request head.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};

/// What a connection has been doing; shared by its service and its watch.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// Request heads received plus requests finished: any change restarts the
    /// quiet count.
    events: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    /// Records a request head; the returned guard marks the request in flight
    /// until dropped (hand it to the response body with [`InFlight`]).
    pub(crate) fn request(self: &Arc<Self>) -> Guard {
        // Relaxed: the watch only needs to see the counts change eventually,
        // and it reads them at most four times per timeout.
        self.events.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Guard(self.clone())
    }

    fn snapshot(&self) -> (u64, usize) {
        (self.events.load(Ordering::Relaxed), self.in_flight.load(Ordering::Relaxed))
    }
}

/// A request in flight; dropped, it is over (and the quiet count restarts
/// from there).
#[derive(Debug)]
pub(crate) struct Guard(Arc<Activity>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.events.fetch_add(1, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves once the connection has been quiet for `timeout`: no request in
/// flight, and no new request head.
pub(crate) async fn expired(timeout: Duration, activity: &Activity) {
    const TICKS: u32 = 4;
    let tick = (timeout / TICKS).max(Duration::from_millis(1));
    let mut last = activity.snapshot();
    let mut quiet = 0;
    loop {
        tokio::time::sleep(tick).await;
        let now = activity.snapshot();
        if now.0 != last.0 || now.1 > 0 {
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
/// dropped.
#[derive(Debug)]
pub(crate) struct InFlight<B> {
    body: B,
    _guard: Guard,
}

impl<B> InFlight<B> {
    pub(crate) fn new(body: B, guard: Guard) -> Self {
        Self { body, _guard: guard }
    }
}

impl<B: Body + Unpin> Body for InFlight<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn quiet_connection_expires_within_a_quarter_past_the_timeout() {
        let a = Arc::new(Activity::default());
        let t0 = tokio::time::Instant::now();
        expired(Duration::from_secs(60), &a).await;
        let took = t0.elapsed();
        assert!(took >= Duration::from_secs(60) && took <= Duration::from_secs(75), "{took:?}");
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
        let t0 = tokio::time::Instant::now();
        watch.await;
        let took = t0.elapsed();
        assert!(took >= Duration::from_secs(4) && took <= Duration::from_secs(6), "{took:?}");
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
        let t0 = tokio::time::Instant::now();
        watch.await;
        let took = t0.elapsed();
        assert!(took >= Duration::from_secs(4) && took <= Duration::from_secs(5), "{took:?}");
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
        let t0 = tokio::time::Instant::now();
        watch.await;
        assert!(t0.elapsed() <= Duration::from_secs(6), "{:?}", t0.elapsed());
    }
}
