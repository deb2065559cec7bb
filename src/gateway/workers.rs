//! Connection workers: threads that each run a single-threaded tokio runtime
//! and serve the connections handed to them, as nginx's worker processes do.
//!
//! Without workers a connection is served on the runtime that accepted it. On
//! tokio's multi-threaded runtime the tasks of one connection (the client's,
//! and the upstream connection's the proxy spawns) then wake one another
//! across threads and are stolen between them; each cross-thread wake-up is
//! a futex call and a cold cache. With workers the accept loop hands each
//! accepted socket to the next worker (round robin), and everything that
//! connection spawns stays on that worker's thread, whose scheduler needs no
//! atomics. The accept loops, follow and signals stay on the caller's
//! runtime.
//!
//! A socket moves between runtimes by leaving the accepting runtime's reactor
//! ([`tokio::net::TcpStream::into_std`]) and joining the worker's
//! ([`tokio::net::TcpStream::from_std`]): two `epoll_ctl` calls per
//! connection, nothing per request.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::io;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    /// The worker this thread is (its index in the set), on a worker thread.
    static HOME: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the worker running this code, or `None` off the workers
/// (where a task may move between threads). What a worker spawns stays on its
/// thread, so a resource made here (an upstream connection's task) is best
/// used here again: the pool keeps each worker's idle connections apart.
pub(crate) fn current() -> Option<usize> {
    HOME.with(Cell::get)
}

/// A set of connection workers (see the module docs). Cheap to clone; the
/// threads stop when the last clone is dropped (their connections with
/// them: drain first, as [`Running::run_until`](super::Running::run_until) does).
#[derive(Clone)]
pub struct Workers(Arc<Inner>);

struct Inner {
    handles: Vec<Handle>,
    next: AtomicUsize,
    /// Dropping these ends each worker's `block_on`, and with it its runtime.
    _stop: Vec<oneshot::Sender<()>>,
}

impl fmt::Debug for Workers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workers").field("threads", &self.0.handles.len()).finish()
    }
}

impl Workers {
    /// Starts `threads` workers, named `meshgate-conn-0`, `-1`, ...
    pub fn start(threads: NonZeroUsize) -> io::Result<Self> {
        let mut handles = Vec::with_capacity(threads.get());
        let mut stops = Vec::with_capacity(threads.get());
        for i in 0..threads.get() {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            std::thread::Builder::new().name(format!("meshgate-conn-{i}")).spawn(move || {
                HOME.with(|h| h.set(Some(i)));
                // Err when the sender is dropped: the set is gone.
                let _ = runtime.block_on(stopped);
                // Dropping the runtime cancels what is left on it.
            })?;
        }
        Ok(Self(Arc::new(Inner { handles, next: AtomicUsize::new(0), _stop: stops })))
    }

    /// How many worker threads there are.
    pub fn threads(&self) -> usize {
        self.0.handles.len()
    }

    /// Runs `task` on the next worker.
    pub(crate) fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) {
        let i = self.0.next.fetch_add(1, Ordering::Relaxed) % self.0.handles.len();
        drop(self.0.handles[i].spawn(task));
    }
}

/// An accepted socket on its way to the runtime that serves it.
pub(crate) enum Handoff {
    /// Served where it was accepted.
    Here(tokio::net::TcpStream),
    /// Out of the accepting runtime's reactor, to join a worker's.
    Moving(std::net::TcpStream),
}

impl Handoff {
    /// Takes `stream` out of this runtime's reactor when a worker serves it.
    pub(crate) fn new(stream: tokio::net::TcpStream, workers: Option<&Workers>) -> io::Result<Self> {
        match workers {
            None => Ok(Self::Here(stream)),
            Some(_) => stream.into_std().map(Self::Moving),
        }
    }

    /// The stream, registered with the runtime this runs on.
    pub(crate) fn arrive(self) -> io::Result<tokio::net::TcpStream> {
        match self {
            Self::Here(s) => Ok(s),
            Self::Moving(s) => tokio::net::TcpStream::from_std(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_go_round_robin_to_named_threads_and_stop_with_the_set() {
        let workers = Workers::start(NonZeroUsize::new(2).unwrap()).unwrap();
        assert_eq!(workers.threads(), 2);
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let tx = tx.clone();
            workers.spawn(async move {
                tx.send((std::thread::current().name().map(str::to_owned), current())).unwrap();
            });
        }
        let mut seen: Vec<_> = (0..4).map(|_| rx.recv().unwrap()).collect();
        seen.sort();
        let on = |i: usize| (Some(format!("meshgate-conn-{i}")), Some(i));
        assert_eq!(seen, [on(0), on(0), on(1), on(1)]);
        assert_eq!(current(), None, "the test's own thread is no worker");
        // A task still pending when the set goes is dropped with its runtime.
        let (held, dropped) = oneshot::channel::<()>();
        workers.spawn(async move {
            let _held = held;
            std::future::pending::<()>().await;
        });
        drop(workers);
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            let gone = tokio::time::timeout(std::time::Duration::from_secs(5), dropped).await;
            assert!(matches!(gone, Ok(Err(_))), "the pending task was not dropped: {gone:?}");
        });
    }
}
