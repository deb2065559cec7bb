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
//! atomics. Follow, reloads and signals stay on the caller's runtime.
//!
//! The accept loops run on the workers too (each listener on the next worker
//! in a turn of their own), so nothing the main runtime does (following the
//! network, a reload) holds up an accept. A socket accepted on one worker and
//! served on another
//! leaves the first's reactor ([`tokio::net::TcpStream::into_std`]) and joins
//! the other's ([`tokio::net::TcpStream::from_std`]): two `epoll_ctl` calls
//! per connection on top of the accept's own, nothing per request.

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
    /// The worker this thread is (its id), on a worker thread.
    static HOME: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Worker ids, unique in the process (two sets never share one).
static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// The id of the worker running this code (unique in the process, whatever
/// set it belongs to), or `None` off the workers (where a task may move
/// between threads). What a worker spawns stays on its thread, so a resource
/// made here (an upstream connection's task) is best used here again: the
/// pool keeps each worker's idle connections apart.
pub(crate) fn current() -> Option<usize> {
    HOME.with(Cell::get)
}

/// A set of connection workers (see the module docs). Cheap to clone. When
/// the last clone is dropped each thread is told to stop: it drops its
/// runtime, and with it every connection still on it (drain first, as
/// [`Running::run_until`](super::Running::run_until) does); the threads are
/// not joined. The workers' runtimes keep real time: `tokio::time::pause()`
/// in a test does not reach a connection's timers.
#[derive(Clone)]
pub struct Workers(Arc<Inner>);

struct Inner {
    handles: Vec<Handle>,
    /// Each worker's id ([`current`] on its thread).
    ids: Vec<usize>,
    /// The turn of connections, and the turn of accept loops.
    next: AtomicUsize,
    next_listener: AtomicUsize,
    /// Dropping these ends each worker's `block_on`, and with it its runtime.
    _stop: Vec<oneshot::Sender<()>>,
}

impl fmt::Debug for Workers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workers").field("threads", &self.0.handles.len()).finish()
    }
}

impl Workers {
    /// Starts `threads` workers, named `mg-conn-0`, `mg-conn-1`, ... (short
    /// enough for Linux's 15-byte thread names up to `mg-conn-999999`). Each
    /// builds its runtime on its own thread and reports back before this
    /// returns, so a failure (thread creation refused by `TasksMax=` or
    /// `RLIMIT_NPROC`, no file descriptor for a reactor) is this error, and a
    /// started worker has its name and index.
    pub fn start(threads: NonZeroUsize) -> io::Result<Self> {
        let mut started = Vec::with_capacity(threads.get());
        let mut stops = Vec::with_capacity(threads.get());
        let mut ids = Vec::with_capacity(threads.get());
        // All threads first, then their answers: they start side by side.
        for i in 0..threads.get() {
            let (stop, stopped) = oneshot::channel::<()>();
            let (ready, handle) = std::sync::mpsc::sync_channel::<io::Result<Handle>>(1);
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            std::thread::Builder::new().name(format!("mg-conn-{i}")).spawn(move || {
                HOME.with(|h| h.set(Some(id)));
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                let _ = ready.send(Ok(runtime.handle().clone()));
                // Err when the sender is dropped: the set is gone. Dropping
                // the runtime then cancels what is left on it.
                let _ = runtime.block_on(stopped);
            })?;
            started.push(handle);
            stops.push(stop);
            ids.push(id);
        }
        let mut handles = Vec::with_capacity(threads.get());
        for (i, handle) in started.into_iter().enumerate() {
            let handle = handle
                .recv()
                .map_err(|_| io::Error::other(format!("connection thread {i} ended before its runtime started")))??;
            handles.push(handle);
        }
        let (next, next_listener) = (AtomicUsize::new(0), AtomicUsize::new(0));
        Ok(Self(Arc::new(Inner { handles, ids, next, next_listener, _stop: stops })))
    }

    /// How many worker threads there are.
    pub fn threads(&self) -> usize {
        self.0.handles.len()
    }

    /// The worker the next connection goes to (round robin).
    pub(crate) fn pick(&self) -> usize {
        self.0.next.fetch_add(1, Ordering::Relaxed) % self.0.handles.len()
    }

    /// The worker the next accept loop goes to (round robin, a turn apart
    /// from the connections', so listeners spread whatever was accepted).
    pub(crate) fn pick_for_listener(&self) -> usize {
        self.0.next_listener.fetch_add(1, Ordering::Relaxed) % self.0.handles.len()
    }

    /// Which of these workers this thread is, if any.
    pub(crate) fn here(&self) -> Option<usize> {
        let id = current()?;
        self.0.ids.iter().position(|&w| w == id)
    }

    /// Worker `i`'s id (what [`current`] says on its thread).
    #[cfg(test)]
    pub(crate) fn id(&self, i: usize) -> usize {
        self.0.ids[i]
    }

    /// Runs `task` on worker `i` (from [`pick`](Self::pick)).
    pub(crate) fn spawn_on<F>(&self, i: usize, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.0.handles[i % self.0.handles.len()].spawn(task)
    }

    /// Runs `task` on the next worker.
    #[cfg(test)]
    pub(crate) fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) {
        drop(self.spawn_on(self.pick(), task));
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
    /// Takes `stream` out of this runtime's reactor unless it is to be served
    /// where it was accepted (`moving` false: no workers, or the worker
    /// chosen is this thread).
    pub(crate) fn new(stream: tokio::net::TcpStream, moving: bool) -> io::Result<Self> {
        if moving {
            stream.into_std().map(Self::Moving)
        } else {
            Ok(Self::Here(stream))
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
        let on = |i: usize| (Some(format!("mg-conn-{i}")), Some(workers.id(i)));
        assert_eq!(seen, [on(0), on(0), on(1), on(1)]);
        assert_eq!(current(), None, "the test's own thread is no worker");
        assert_eq!(workers.here(), None);
        // Another set's workers have ids of their own.
        let other = Workers::start(NonZeroUsize::new(1).unwrap()).unwrap();
        assert!(other.id(0) != workers.id(0) && other.id(0) != workers.id(1));
        let (tx, rx) = std::sync::mpsc::channel();
        let (a, b) = (workers.clone(), other.clone());
        other.spawn(async move { tx.send((a.here(), b.here())).unwrap() });
        assert_eq!(rx.recv().unwrap(), (None, Some(0)), "which set's worker a thread is");
        drop(other);
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
