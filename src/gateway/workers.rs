//! Connection workers: threads that each run a single-threaded tokio runtime
//! and serve the connections accepted on them, as nginx's worker processes
//! do (with its default, one listening socket shared by all workers).
//!
//! Without workers a connection is served on the runtime that accepted it. On
//! tokio's multi-threaded runtime the tasks of one connection (the client's,
//! and the upstream connection's the proxy spawns) then wake one another
//! across threads and are stolen between them; each cross-thread wake-up is
//! a futex call and a cold cache. With workers everything a connection
//! spawns stays on its worker's thread, whose scheduler needs no atomics.
//! Follow, reloads and signals stay on the caller's runtime.
//!
//! Each listening address has one socket, dup'd (`try_clone`) once per
//! further worker; each worker registers its copy with its own reactor, runs
//! an accept loop on it and serves what it accepts right there. A new
//! connection wakes every worker waiting on the socket and the first to call
//! `accept` takes it (the others get `EAGAIN` and wait again): a worker busy
//! with a long piece of work, or with many connections, accepts less, so the
//! load spreads by readiness, and no connection moves between workers (no
//! `epoll_ctl` beyond the accept's own, no wake-up of another thread to hand
//! it over). Racing alone, the first worker awake would drain a burst of
//! new connections (64 at once from a load test went mostly to one), so an
//! accept loop more than one open connection ahead of another worker first
//! gives it up to 5 ms to accept (`accept_turn`, nginx's
//! `accept_disabled` by count). The cost is that wake-up of every idle worker per new
//! connection (the thundering herd nginx avoids with `EPOLLEXCLUSIVE`, which
//! tokio does not ask for): nothing per request on a kept-alive connection.
//! A listener's copies are registered with their workers' reactors from the
//! thread that attaches them (`Workers::listener_on`), so a failure is that
//! call's error and nothing waits for a worker.
//!
//! Why not a socket per worker with `SO_REUSEPORT` (nginx's `reuseport`,
//! tried and measured): the kernel spreads connections over such sockets by
//! a hash of their addresses and ports, not by who is free, so a few
//! long-lived connections loaded the workers unevenly and the busier one set
//! a worse p99; and while meshgate listened, any process of the same user
//! could join the group and take a share of its connections. With one
//! socket, nothing can bind the port while meshgate listens.
//!
//! When the connection cap (shared by every listener of a set) is reached,
//! each worker's loop holds the connection it accepted until a place frees
//! up, and the rest wait in the socket's listen queue. Closing a listener
//! (follow removing its address, a shutdown) stops every loop; the socket
//! closes with the last copy, and connections still in its listen queue are
//! reset.

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
    /// Each worker's id ([`current`] on its thread), for tests to name them.
    #[cfg(test)]
    ids: Vec<usize>,
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
        let load: Arc<[AtomicUsize]> = (0..threads.get()).map(|_| AtomicUsize::new(0)).collect();
        // All threads first, then their answers: they start side by side.
        for i in 0..threads.get() {
            let (stop, stopped) = oneshot::channel::<()>();
            let (ready, handle) = std::sync::mpsc::sync_channel::<io::Result<Handle>>(1);
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            let load = load.clone();
            std::thread::Builder::new().name(format!("mg-conn-{i}")).spawn(move || {
                HOME.with(|h| h.set(Some(id)));
                LOAD.with(|l| drop(l.set((load, i))));
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
        #[cfg(not(test))]
        let _ = ids;
        Ok(Self(Arc::new(Inner {
            handles,
            #[cfg(test)]
            ids,
            _stop: stops,
        })))
    }

    /// How many worker threads there are.
    pub fn threads(&self) -> usize {
        self.0.handles.len()
    }

    /// Which of these workers this thread is, if any.
    #[cfg(test)]
    pub(crate) fn here(&self) -> Option<usize> {
        let id = current()?;
        self.0.ids.iter().position(|&w| w == id)
    }

    /// Worker `i`'s id (what [`current`] says on its thread).
    #[cfg(test)]
    pub(crate) fn id(&self, i: usize) -> usize {
        self.0.ids[i]
    }

    /// Runs `task` on worker `i`.
    pub(crate) fn spawn_on<F>(&self, i: usize, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.0.handles[i % self.0.handles.len()].spawn(task)
    }

    /// `socket` (a listening socket or a dup of one), registered with worker
    /// `i`'s reactor (its accept loop is to run there). Works from any thread, a worker's own or another's: it
    /// waits for no worker.
    pub(crate) fn listener_on(&self, i: usize, socket: std::net::TcpListener) -> io::Result<tokio::net::TcpListener> {
        let _entered = self.0.handles[i % self.0.handles.len()].enter();
        tokio::net::TcpListener::from_std(socket)
    }
}

thread_local! {
    /// On a worker: the open connections of each worker of its set, and
    /// which one this is.
    static LOAD: std::cell::OnceCell<(Arc<[AtomicUsize]>, usize)> = const { std::cell::OnceCell::new() };
}

/// How far ahead of the least loaded other worker a worker may be before
/// it lets the others accept first, and for how long at most.
const AHEAD: usize = 1;
const MAX_DEFER: std::time::Duration = std::time::Duration::from_millis(5);

/// Called by an accept loop before each `accept`: on a worker that serves
/// more than [`AHEAD`] connections more than another worker of its set,
/// waits (in 1 ms steps, at most [`MAX_DEFER`]) so that a freer worker,
/// racing for the same socket, takes the next connection (nginx's
/// `ngx_accept_disabled`, by count). Bounded so that a worker that is stuck
/// never holds new connections back for long. Off workers, or when the
/// listener's socket is not `shared` with the other workers (a set without
/// workers whose loop runs on a worker: nobody else would take the
/// connection): returns at once.
pub(crate) async fn accept_turn(shared: bool) {
    if !shared {
        return;
    }
    let Some((load, me)) = LOAD.with(|l| l.get().cloned()) else { return };
    let until = tokio::time::Instant::now() + MAX_DEFER;
    loop {
        let mine = load[me].load(Ordering::Relaxed);
        let least = load.iter().enumerate().filter(|&(i, _)| i != me).map(|(_, n)| n.load(Ordering::Relaxed)).min();
        match least {
            Some(least) if mine > least + AHEAD && tokio::time::Instant::now() < until => {
                #[cfg(test)]
                DEFERRED.with(|d| d.set(d.get() + 1));
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            _ => return,
        }
    }
}

/// A connection open on this worker, counted for [`accept_turn`] while it
/// lives (made where it is accepted, dropped when it ends).
pub(crate) struct Open(Option<(Arc<[AtomicUsize]>, usize)>);

/// Counts a connection accepted on this thread (nothing off workers).
pub(crate) fn open() -> Open {
    let here = LOAD.with(|l| l.get().cloned());
    if let Some((load, me)) = &here {
        load[*me].fetch_add(1, Ordering::Relaxed);
    }
    Open(here)
}

impl Drop for Open {
    fn drop(&mut self) {
        if let Some((load, me)) = &self.0 {
            load[*me].fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
thread_local! {
    /// How many connections the accept loops running on this thread accepted.
    static ACCEPTED: Cell<u64> = const { Cell::new(0) };
}

/// Counts a connection accepted on this thread (tests compare it with the
/// thread that served it).
#[cfg(test)]
pub(crate) fn note_accept() {
    ACCEPTED.with(|a| a.set(a.get() + 1));
}

/// How many connections were accepted on this thread.
#[cfg(test)]
pub(crate) fn accepted_here() -> u64 {
    ACCEPTED.with(Cell::get)
}

#[cfg(test)]
thread_local! {
    /// How many 1 ms waits `accept_turn` took on this thread.
    static DEFERRED: Cell<u64> = const { Cell::new(0) };
}

/// How many 1 ms waits [`accept_turn`] took on this thread.
#[cfg(test)]
pub(crate) fn deferred_here() -> u64 {
    DEFERRED.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_go_to_named_threads_and_stop_with_the_set() {
        let workers = Workers::start(NonZeroUsize::new(2).unwrap()).unwrap();
        assert_eq!(workers.threads(), 2);
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..4 {
            let tx = tx.clone();
            drop(workers.spawn_on(i, async move {
                tx.send((std::thread::current().name().map(str::to_owned), current())).unwrap();
            }));
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
        drop(other.spawn_on(0, async move { tx.send((a.here(), b.here())).unwrap() }));
        assert_eq!(rx.recv().unwrap(), (None, Some(0)), "which set's worker a thread is");
        drop(other);
        // A task still pending when the set goes is dropped with its runtime.
        let (held, dropped) = oneshot::channel::<()>();
        drop(workers.spawn_on(0, async move {
            let _held = held;
            std::future::pending::<()>().await;
        }));
        drop(workers);
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            let gone = tokio::time::timeout(std::time::Duration::from_secs(5), dropped).await;
            assert!(matches!(gone, Ok(Err(_))), "the pending task was not dropped: {gone:?}");
        });
    }
}
