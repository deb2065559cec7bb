//! Follow with a scripted watcher and source: a sequence of snapshots in,
//! listener changes out, including bursts (no-op changes) and flapping.
//! Binds only 127.0.0.0/8 addresses on an ephemeral-port-free port.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshgate::core::source::{InterfaceSource, SourceError};
use meshgate::core::watcher::{WatchError, Watcher};
use meshgate::core::{resolve, Interface, InterfaceKind, ResolveOptions, Snapshot};
use meshgate::gateway::{app, follow::follow, AppState, ListenerSet, LiveView};
use tokio::sync::mpsc;

/// A watcher fed by the test: each message is one (coalesced) change.
struct Scripted(mpsc::UnboundedReceiver<()>);

#[async_trait::async_trait]
impl Watcher for Scripted {
    async fn changed(&mut self) -> Result<(), WatchError> {
        match self.0.recv().await {
            Some(()) => Ok(()),
            None => std::future::pending().await,
        }
    }
}

/// A source returning whatever snapshot the test set last.
#[derive(Clone)]
/// The snapshot in the mutex; the next `.1` reads fail first.
struct Current(Arc<Mutex<Snapshot>>, Arc<std::sync::atomic::AtomicUsize>);

impl Current {
    fn new(snapshot: Arc<Mutex<Snapshot>>) -> Self {
        Self(snapshot, Arc::default())
    }
}

#[async_trait::async_trait]
impl InterfaceSource for Current {
    async fn snapshot(&self) -> Result<Snapshot, SourceError> {
        use std::sync::atomic::Ordering;
        if self.1.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok() {
            return Err(SourceError::Protocol("a test's read failure".into()));
        }
        Ok(self.0.lock().unwrap().clone())
    }
}

/// Runs `follow` in a task fed by a scripted watcher: send `()` on the first
/// channel for each change, then on the second to stop; the task returns the set.
fn spawn_follow(
    mut set: ListenerSet,
    source: Current,
    resolve_now: impl Fn(&Snapshot) -> meshgate::core::Resolution + Send + 'static,
) -> (mpsc::UnboundedSender<()>, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<ListenerSet>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut watcher = Scripted(rx);
        follow(&mut set, &mut watcher, &source, resolve_now, async {
            let _ = stop_rx.await;
        })
        .await;
        set
    });
    (tx, stop_tx, task)
}

fn host(with_wg: bool) -> Snapshot {
    let mut s = Snapshot::new(vec![Interface::new("lo", 1, InterfaceKind::Loopback).with_addr("127.0.0.1/8")]);
    if with_wg {
        // 127.0.0.0/8 is all local on Linux, so a "WireGuard" address there binds for real.
        s.interfaces.push(Interface::new("wg0", 7, InterfaceKind::WireGuard).with_addr("127.0.0.77/32"));
    }
    s
}

/// Waits up to `within` for a published view that `ok` accepts; false if
/// none came in time.
async fn view_until(
    views: &mut tokio::sync::watch::Receiver<LiveView>,
    within: Duration,
    ok: impl Fn(&LiveView) -> bool,
) -> bool {
    tokio::time::timeout(within, async {
        loop {
            views.changed().await.unwrap();
            if ok(&views.borrow_and_update()) {
                break;
            }
        }
    })
    .await
    .is_ok()
}

/// True when `view` lists a listener on `address`.
fn lists(view: &LiveView, address: &str) -> bool {
    view.listeners.iter().any(|l| l.listener.address.to_string() == address)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn listeners_follow_snapshots() {
    meshgate::builtin::link();
    let registry = meshgate::core::Registry::global().unwrap();
    let port = free_port();
    // Outside a namespace only 127.0.0.0/8 binds, and no mesh provider claims
    // loopback addresses, so wg0 is selected by name (iface:wg0). 127.0.0.77 gets
    // no companion (it is loopback itself): name loopback too, so 127.0.0.1 stays
    // throughout (the lab's follow test covers the fallback turning into the
    // companion on a real tunnel).
    let selectors = vec![
        meshgate::core::parse_selector("iface:wg0", &[], None).unwrap(),
        meshgate::core::Selector::Provider("loopback".into()),
    ];
    let opts = ResolveOptions { port, loopback_companion: true, ..Default::default() };
    let resolve_now = move |s: &Snapshot| resolve(registry, &selectors, s, &opts);

    let snapshot = Arc::new(Mutex::new(host(false)));
    let source = Current::new(snapshot.clone());
    let state = AppState::new(None);
    let mut set = ListenerSet::new(app(state.clone()), state.clone());
    let first = resolve_now(&host(false));
    assert!(!first.fallback);
    set.apply(&first);
    let lo: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let wg: std::net::SocketAddr = format!("127.0.0.77:{port}").parse().unwrap();
    assert_eq!(set.addresses(), vec![lo]);

    // A client holds a connection on loopback throughout.
    let held = tokio::net::TcpStream::connect(lo).await.unwrap();

    let mut views = state.subscribe();
    let (tx, stop_tx, task) = spawn_follow(set, source, resolve_now);

    // wg0 appears: its listener opens; 127.0.0.1 stays, same socket.
    *snapshot.lock().unwrap() = host(true);
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), views.changed()).await.expect("a change in time").unwrap();
    let v = views.borrow_and_update().clone();
    let addrs: Vec<String> = v.listeners.iter().map(|l| l.listener.address.to_string()).collect();
    assert_eq!(addrs, ["127.0.0.1", "127.0.0.77"], "{v:?}");
    tokio::net::TcpStream::connect(wg).await.expect("the wireguard listener accepts");

    // A burst of no-op changes publishes nothing.
    for _ in 0..5 {
        tx.send(()).unwrap();
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), views.changed()).await.is_err(),
        "no-op burst changed the set"
    );

    // Flapping: 50 quick up/downs end where they started, with no socket left behind.
    for i in 0..50 {
        *snapshot.lock().unwrap() = host(i % 2 == 1);
        tx.send(()).unwrap();
        tokio::task::yield_now().await;
    }
    *snapshot.lock().unwrap() = host(false);
    tx.send(()).unwrap();
    assert!(view_until(&mut views, Duration::from_secs(5), |v| v.listeners.len() == 1).await, "back to loopback only");
    stop_tx.send(()).unwrap();
    let set = task.await.unwrap();
    assert_eq!(set.addresses(), vec![lo]);
    // wg0's listener is closed for good. (Detaching asks its accept loop to
    // stop and does not wait for it, so allow that loop a moment to run.)
    let mut closed = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(wg).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "127.0.0.77 still accepts");
    // The loopback connection held throughout still works: write a request on it.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut held = held;
    held.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut resp = String::new();
    held.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    set.shutdown(Duration::from_secs(1)).await;
}

/// A new address whose port is taken is retried with backoff, without any
/// further network change, once the port frees up.
#[tokio::test]
async fn a_failed_bind_is_retried_until_it_works() {
    meshgate::builtin::link();
    let registry = meshgate::core::Registry::global().unwrap();
    let squatter = std::net::TcpListener::bind("127.0.0.78:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    let selectors = vec![
        meshgate::core::parse_selector("iface:wg0", &[], None).unwrap(),
        meshgate::core::Selector::Provider("loopback".into()),
    ];
    let opts = ResolveOptions { port, loopback_companion: true, ..Default::default() };
    let resolve_now = move |s: &Snapshot| resolve(registry, &selectors, s, &opts);
    let mut with_wg = host(false);
    with_wg.interfaces.push(Interface::new("wg0", 8, InterfaceKind::WireGuard).with_addr("127.0.0.78/32"));
    let snapshot = Arc::new(Mutex::new(host(false)));
    let source = Current::new(snapshot.clone());
    let state = AppState::new(None);
    let mut set = ListenerSet::new(app(state.clone()), state.clone());
    set.apply(&resolve_now(&host(false)));
    let mut views = state.subscribe();
    let (tx, stop_tx, task) = spawn_follow(set, source, resolve_now);
    *snapshot.lock().unwrap() = with_wg;
    tx.send(()).unwrap();
    // The first attempt fails (port taken): nothing new is published for a while.
    assert!(tokio::time::timeout(Duration::from_millis(250), views.changed()).await.is_err());
    drop(squatter);
    // No further change is sent: the backoff retry alone must attach it.
    assert!(
        view_until(&mut views, Duration::from_secs(10), |v| lists(v, "127.0.0.78")).await,
        "the retry attached 127.0.0.78"
    );
    stop_tx.send(()).unwrap();
    task.await.unwrap().shutdown(Duration::from_secs(1)).await;
}

/// A snapshot that fails to read after a change is read again by itself: the
/// change that woke the loop is not left for the next one.
#[tokio::test]
async fn a_failed_snapshot_is_read_again_without_another_change() {
    meshgate::builtin::link();
    let registry = meshgate::core::Registry::global().unwrap();
    let selectors = vec![meshgate::core::parse_selector("iface:wg0", &[], None).unwrap()];
    let opts = ResolveOptions { port: 0, loopback_companion: false, ..Default::default() };
    let resolve_now = move |s: &Snapshot| resolve(registry, &selectors, s, &opts);
    let mut with_wg = host(false);
    with_wg.interfaces.push(Interface::new("wg0", 8, InterfaceKind::WireGuard).with_addr("127.0.0.79/32"));
    let snapshot = Arc::new(Mutex::new(host(false)));
    let source = Current::new(snapshot.clone());
    let failures = source.1.clone();
    let state = AppState::new(None);
    let set = ListenerSet::new(app(state.clone()), state.clone());
    let mut views = state.subscribe();
    let (tx, stop_tx, task) = spawn_follow(set, source, resolve_now);
    *snapshot.lock().unwrap() = with_wg;
    failures.store(2, std::sync::atomic::Ordering::Relaxed);
    tx.send(()).unwrap();
    assert!(
        view_until(&mut views, Duration::from_secs(10), |v| lists(v, "127.0.0.79")).await,
        "127.0.0.79 attached after two failed reads and one change"
    );
    assert_eq!(failures.load(std::sync::atomic::Ordering::Relaxed), 0);
    stop_tx.send(()).unwrap();
    task.await.unwrap().shutdown(Duration::from_secs(1)).await;
}
