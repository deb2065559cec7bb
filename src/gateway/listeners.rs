//! The listener set: its listeners keyed by socket address, each one real
//! socket and accept loop, or with [`Workers`] one socket with an accept loop
//! per worker (the socket dup'd, see `workers.rs`), all stopped together.
//! [`ListenerSet::apply`] adds and removes listeners; a listener whose
//! address stays is untouched, so its open connections carry on. Every
//! socket of every listener of a set takes its places from the same
//! `Admission` (the connection cap and the callers' shares).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use meshgate_core::{Listener, Resolution};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::accept::{accept_loop, Direct, Listen};
use super::admission::Admission;
use super::bind::{bind, display_addr, BindError, Bound};
use super::context::{unix_now, AppState, ListenerCtx, LiveListener, LiveView};
use super::limits::ServerLimits;
use super::metrics::IdleCount;
use super::proxy::Proxy;
use super::tcp::{tcp_accept_loop, TcpHandler, TcpListen};
use super::token::Token;
use super::workers::Workers;
use crate::tls::{AddressNames, TlsAcceptor};

/// HTTPS for a listener set: every non-loopback listener (and the loopback
/// ones when `loopback` is set) speaks TLS with `acceptor`, HTTP/2 or
/// HTTP/1.1 by ALPN. With `address_names` (self-signed, local CA), each
/// address attached is added to the certificate (reissued) before it serves.
#[derive(Debug, Clone)]
pub struct Https {
    /// The acceptor (its certificate resolver may be swapped while serving).
    pub acceptor: Arc<TlsAcceptor>,
    /// The certificate to extend with new addresses, if it names them
    /// (self-signed, or leaves of the local CA).
    pub address_names: Option<Arc<dyn AddressNames>>,
    /// The local CA's certificate (PEM), served on loopback at
    /// `/_meshgate/ca.crt` (`--tls internal`).
    pub ca_pem: Option<Arc<str>>,
    /// The DNS names the certificate carries (`--tls-name`, the tailnet
    /// name): names of the listeners for the ambient-credential Host check.
    pub dns_names: Vec<String>,
    /// Serve TLS on loopback listeners too (`--tls-loopback`).
    pub loopback: bool,
}

struct Live {
    listener: Listener,
    since: u64,
    local: SocketAddr,
    /// Each socket's accept loop (one per worker, else one) and its stop.
    loops: Vec<(oneshot::Sender<()>, JoinHandle<()>)>,
}

/// An accept loop, started on a socket registered where it is to run.
/// `bool`: other loops accept from the same socket (its dups, on the other
/// workers).
type StartLoop = Box<dyn Fn(tokio::net::TcpListener, oneshot::Receiver<()>, bool) -> BoxedLoop>;
type BoxedLoop = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What [`ListenerSet::apply`] did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Listeners opened.
    pub added: Vec<Listener>,
    /// Listeners closed.
    pub removed: Vec<Listener>,
    /// Listeners that stayed but whose provider, reason or role changed.
    pub updated: Vec<Listener>,
    /// New addresses that failed to bind (the caller retries them).
    pub failed: Vec<BindError>,
}

impl Applied {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.updated.is_empty() && self.failed.is_empty()
    }
}

/// What a running listener set lets change from outside it, without
/// re-binding (a reload): the limits, the upstream's limits, the token.
/// Cheap to clone; every change applies to connections and requests from
/// then on, on every listener, open or to come.
#[derive(Debug, Clone)]
pub struct Controls {
    admission: Arc<Admission>,
    proxy: Option<Proxy>,
    state: AppState,
}

/// A change [`Controls`] cannot make on a running gateway.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The gateway started without a token: which listeners may serve and
    /// which routes exist were decided on that, so a token needs a restart.
    #[error("the gateway started without a token; setting one needs a restart")]
    NoToken,
}

impl Controls {
    /// Puts `limits` in force (see [`ListenerSet::set_limits`]), all but
    /// `max_body_bytes`, which meshgate's own routes took at start.
    pub fn set_limits(&self, limits: ServerLimits) {
        self.admission.set(limits);
    }

    /// The limits in force.
    pub fn limits(&self) -> ServerLimits {
        **self.admission.limits()
    }

    /// Puts the upstream's limits in force for requests from now on (the
    /// response timeout: for connections from now on). False when the set
    /// has no upstream.
    pub fn set_upstream_limits(&self, limits: super::proxy::UpstreamLimits) -> bool {
        self.proxy.as_ref().map(|p| p.set_limits(limits)).is_some()
    }

    /// Replaces the token: requests from now on need the new one, it is the
    /// one removed before forwarding, every browser session (signed with the
    /// old one) ends, and so does every open connection off loopback (see
    /// [`revoke_connections`](Self::revoke_connections)).
    pub fn set_token(&self, token: Token) -> Result<(), ControlError> {
        let cell = self.state.credential_cell().ok_or(ControlError::NoToken)?;
        cell.replace(token);
        self.state.revoke_connections();
        Ok(())
    }

    /// Ends every open connection off loopback after its request in flight,
    /// and every upgraded one (WebSockets), so that each next request is
    /// checked and its caller identified afresh. Call it after changing what
    /// a [`PeerLookup`](super::identity::PeerLookup) allows or names.
    pub fn revoke_connections(&self) {
        self.state.revoke_connections();
    }
}

/// The live listeners, keyed by socket address.
pub struct ListenerSet {
    app: Router,
    state: AppState,
    /// The caps, shares and limits every accept loop of the set reads.
    admission: Arc<Admission>,
    tls: Option<Https>,
    live: BTreeMap<SocketAddr, Live>,
    fallback: (bool, Option<String>),
    direct: Option<Direct>,
    workers: Option<Workers>,
    /// A TCP or TLS service's forwarder: its listeners run the TCP accept
    /// loop instead of the HTTP one.
    tcp: Option<Arc<TcpHandler>>,
    /// Where every set of the gateway shows its listeners in the top-level
    /// `/status`, and this set's name there (empty: the top-level set).
    board: Option<(StatusBoard, String)>,
}

/// The listeners of every set of one gateway (the top-level service and
/// each `[[service]]`), published together as the top-level state's
/// [`LiveView`], each service's listeners named by a `service` member.
#[derive(Debug, Clone)]
pub(crate) struct StatusBoard {
    main: AppState,
    sets: Arc<std::sync::Mutex<Board>>,
}

#[derive(Debug, Default)]
struct Board {
    sets: BTreeMap<String, Vec<LiveListener>>,
    fallback: (bool, Option<String>),
}

impl StatusBoard {
    /// A board publishing into `main` (the top-level service's state).
    pub(crate) fn new(main: AppState) -> Self {
        Self { main, sets: Arc::default() }
    }

    fn put(&self, key: &str, listeners: Option<Vec<LiveListener>>, fallback: Option<(bool, Option<String>)>) {
        let mut b = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        match listeners {
            Some(l) => drop(b.sets.insert(key.to_owned(), l)),
            None => drop(b.sets.remove(key)),
        }
        if let Some(f) = fallback {
            b.fallback = f;
        }
        let listeners = b.sets.values().flatten().cloned().collect();
        self.main.publish(LiveView { listeners, fallback: b.fallback.0, fallback_reason: b.fallback.1.clone() });
    }
}

impl std::fmt::Debug for ListenerSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerSet").field("live", &self.live.keys().collect::<Vec<_>>()).finish()
    }
}

impl ListenerSet {
    /// An empty set serving `app` (built with [`app`](super::routes::app) from the same `state`).
    pub fn new(app: Router, state: AppState) -> Self {
        Self {
            app,
            state,
            admission: Arc::new(Admission::new(ServerLimits::default())),
            live: BTreeMap::new(),
            fallback: (false, None),
            direct: None,
            tls: None,
            workers: None,
            tcp: None,
            board: None,
        }
    }

    /// Shows this set's listeners in the top-level `/status` through
    /// `board`, as service `name` (empty: the top-level set itself).
    pub(crate) fn set_status_board(&mut self, board: StatusBoard, name: &str) {
        self.board = Some((board, name.to_owned()));
    }

    /// Serves listeners attached from now on with the TCP forwarder
    /// `handler` (a `tcp` or `tls` service) instead of the HTTP stack. A
    /// `tls` service's acceptor is the set's TLS, on every listener.
    pub fn set_tcp(&mut self, handler: Arc<TcpHandler>) {
        self.tcp = Some(handler);
    }

    /// The TCP forwarder, when the set serves a TCP or TLS service.
    pub fn tcp(&self) -> Option<&Arc<TcpHandler>> {
        self.tcp.as_ref()
    }

    /// Puts `limits` in force on every listener of the set, open or to come,
    /// for the connections accepted from now on (open connections keep the
    /// head and idle limits they were served with; a smaller connection cap
    /// is reached as connections close). Call inside a tokio runtime.
    pub fn set_limits(&self, limits: ServerLimits) {
        self.admission.set(limits);
    }

    /// A handle that changes the limits, the upstream's limits and the token
    /// later, for a caller that does not hold the set. Take it after
    /// [`set_upstream`](Self::set_upstream).
    pub fn controls(&self) -> Controls {
        Controls {
            admission: self.admission.clone(),
            proxy: self.direct.as_ref().map(|d| d.proxy.clone()),
            state: self.state.clone(),
        }
    }

    /// Forwards every request outside `/_meshgate/` on listeners attached from
    /// now on to `proxy` (stripping the token in force in the set's state), after the set's token and browser checks, without
    /// passing it through the router (which then only serves `/_meshgate/...`;
    /// build it with [`upstream_app`](super::routes::upstream_app)). This is how
    /// `meshgate serve --upstream` runs: the same answers as the router's
    /// fallback, with no router, extension map or boxed body per request.
    pub fn set_upstream(&mut self, proxy: Proxy) {
        let proxy = proxy.with_credentials(self.state.credential_cell().cloned());
        let pool = proxy.clone();
        self.state.stats().meter.set_upstream_idle(IdleCount(Box::new(move || pool.idle_connections() as u64)));
        self.direct = Some(Direct { proxy, state: self.state.clone() });
    }

    /// Serves the connections of listeners attached from now on on `workers`
    /// (see [`Workers`]) instead of the runtime that accepts them.
    pub fn set_workers(&mut self, workers: Workers) {
        self.workers = Some(workers);
    }

    /// Serves HTTPS on listeners attached from now on (see [`Https`]).
    pub fn set_tls(&mut self, tls: Https) {
        // The certificate's names are names of the listeners (the ambient-credential Host check).
        if !tls.dns_names.is_empty() {
            self.state.set_tls_names(tls.dns_names.iter().map(String::as_str));
        }
        self.tls = Some(tls);
    }

    fn live_listener(&self, l: &Listener, since: u64) -> LiveListener {
        let tls = self.is_tls(l);
        let url = format!("{}://{}", if tls { "https" } else { "http" }, display_addr(l));
        let url = match &self.tcp {
            Some(t) => format!("{}://{}", if t.tls.is_some() { "tls" } else { "tcp" }, display_addr(l)),
            None => url,
        };
        let service = self.board.as_ref().map(|(_, name)| name.clone()).filter(|n| !n.is_empty());
        LiveListener { listener: l.clone(), since, tls, url, service }
    }

    /// True when `listener` is (or would be) served over TLS.
    pub fn is_tls(&self, listener: &Listener) -> bool {
        self.tls.as_ref().is_some_and(|t| !listener.is_loopback() || t.loopback)
    }

    /// The state `/status` and `/ws` read.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The addresses currently served.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.live.values().map(|l| l.local).collect()
    }

    /// Starts serving a bound socket. Must run inside a tokio runtime. With
    /// [`Workers`] `bound`'s one socket is dup'd once per further worker
    /// (`try_clone`: the same socket, the same listen queue), each copy
    /// registered from here with its worker's reactor; every worker accepts
    /// from it and serves what it accepted. Nothing waits for a worker, so
    /// this may be called on one of them too (an embedder's handler).
    pub fn attach(&mut self, bound: Bound) -> io::Result<SocketAddr> {
        let local = bound.local_addr()?;
        let key = bound.listener.socket_addr();
        let loopback = local.ip().is_loopback();
        let tls = self.tls.as_ref().filter(|t| !loopback || t.loopback);
        if let Some(names) = tls.and_then(|t| t.address_names.as_ref()) {
            // A certificate meshgate makes names every address it is served on.
            match names.ensure_names(&[local.ip()]) {
                Ok(true) => tracing::info!(address = %local.ip(), "the certificate now names this address"),
                Ok(false) => {}
                Err(e) => tracing::warn!("{e}; the certificate does not name {}", local.ip()),
            }
        }
        let ctx = ListenerCtx { local, loopback, tls: tls.is_some() };
        let (interface, state, admission) =
            (bound.listener.interface.as_deref().map(Arc::<str>::from), self.state.clone(), self.admission.clone());
        // The HTTP stack's accept loop, or a TCP or TLS service's.
        let start: StartLoop = match self.tcp.clone() {
            Some(handler) => Box::new(move |listener, stopped, shared| {
                let (interface, state, admission, handler) =
                    (interface.clone(), state.clone(), admission.clone(), handler.clone());
                Box::pin(tcp_accept_loop(
                    TcpListen { listener, ctx, interface, state, admission, handler, shared },
                    stopped,
                ))
            }),
            None => {
                let (app, direct, tls) = (self.app.clone(), self.direct.clone(), tls.map(|t| t.acceptor.clone()));
                Box::new(move |listener, stopped, shared| {
                    let listen = Listen {
                        listener,
                        app: app.clone(),
                        ctx,
                        interface: interface.clone(),
                        state: state.clone(),
                        admission: admission.clone(),
                        direct: direct.clone(),
                        tls: tls.clone(),
                        shared,
                    };
                    Box::pin(accept_loop(listen, stopped))
                })
            }
        };
        // Every socket registered before any loop runs: a failure is this
        // call's error, and the sockets made so far close with it.
        let sockets = match &self.workers {
            None => vec![tokio::net::TcpListener::from_std(bound.socket)?],
            Some(workers) => {
                // The one listening socket, dup'd once per further worker
                // (`try_clone`): every worker's reactor watches the same
                // queue and the first one free accepts.
                let dups = (1..workers.threads()).map(|_| bound.socket.try_clone()).collect::<io::Result<Vec<_>>>()?;
                std::iter::once(bound.socket)
                    .chain(dups)
                    .enumerate()
                    .map(|(i, socket)| workers.listener_on(i, socket))
                    .collect::<io::Result<Vec<_>>>()?
            }
        };
        let shared = sockets.len() > 1;
        let loops = sockets
            .into_iter()
            .enumerate()
            .map(|(i, socket)| {
                let (stop, stopped) = oneshot::channel::<()>();
                let task = match &self.workers {
                    None => tokio::spawn(start(socket, stopped, shared)),
                    Some(workers) => workers.spawn_on(i, start(socket, stopped, shared)),
                };
                (stop, task)
            })
            .collect();
        self.live.insert(key, Live { listener: bound.listener, since: unix_now(), local, loops });
        // Published before the caller announces it, so /status and /ws never lag the log.
        self.publish();
        Ok(local)
    }

    /// How many sockets (accept loops) serve the listener on `key`.
    #[cfg(test)]
    pub(crate) fn sockets(&self, key: &SocketAddr) -> usize {
        self.live.get(key).map_or(0, |l| l.loops.len())
    }

    /// Stops a listener: no new connections; in-flight requests finish.
    pub fn detach(&mut self, key: &SocketAddr) -> Option<Listener> {
        let live = self.live.remove(key)?;
        // Every socket of the address stops accepting; each loop's task ends
        // by itself once its connections finish: nothing to await here.
        for (stop, task) in live.loops {
            let _ = stop.send(());
            drop(task);
        }
        Some(live.listener)
    }

    /// Moves the set to a new resolution: binds new addresses, closes vanished
    /// ones, and leaves the rest (and their connections) untouched.
    pub fn apply(&mut self, res: &Resolution) -> Applied {
        let mut out = Applied::default();
        let wanted: BTreeMap<SocketAddr, &Listener> = res.listeners.iter().map(|l| (l.socket_addr(), l)).collect();
        let gone: Vec<SocketAddr> = self.live.keys().filter(|k| !wanted.contains_key(k)).copied().collect();
        for key in gone {
            if let Some(l) = self.detach(&key) {
                out.removed.push(l);
            }
        }
        for (key, l) in wanted {
            match self.live.get_mut(&key) {
                Some(live) => {
                    if live.listener != *l {
                        live.listener = l.clone();
                        out.updated.push(l.clone());
                    }
                }
                None => match bind(l) {
                    Ok(b) => match self.attach(b) {
                        Ok(_) => out.added.push(l.clone()),
                        Err(e) => out.failed.push(BindError::new(l, e)),
                    },
                    Err(e) => out.failed.push(e),
                },
            }
        }
        self.fallback = (res.fallback, res.fallback_reason.clone());
        self.state.set_mesh_names(res.daemons.iter().filter_map(|f| f.dns_name.as_deref()));
        self.publish();
        out
    }

    /// Why the current fallback is in force, if it is.
    pub fn fallback_reason(&self) -> Option<String> {
        self.fallback.1.clone()
    }

    /// Records the resolution's fallback state (for the first publish at start).
    pub fn set_fallback(&mut self, fallback: bool, reason: Option<String>) {
        self.fallback = (fallback, reason);
    }

    /// Publishes the live set to `/status` and `/ws`.
    pub fn publish(&self) {
        let listeners: Vec<LiveListener> =
            self.live.values().map(|l| self.live_listener(&l.listener, l.since)).collect();
        match &self.board {
            Some((board, name)) => {
                let top = name.is_empty();
                board.put(name, Some(listeners.clone()), top.then(|| self.fallback.clone()));
                if !top {
                    // The service's own state too (its `/_meshgate/status`).
                    self.state.publish(LiveView {
                        listeners,
                        fallback: self.fallback.0,
                        fallback_reason: self.fallback.1.clone(),
                    });
                }
            }
            None => self.state.publish(LiveView {
                listeners,
                fallback: self.fallback.0,
                fallback_reason: self.fallback.1.clone(),
            }),
        }
    }

    /// Stops every listener and waits up to `grace` for in-flight requests.
    pub async fn shutdown(mut self, grace: Duration) {
        if let Some((board, name)) = self.board.take().filter(|(_, n)| !n.is_empty()) {
            board.put(&name, None, None);
        }
        let lives: Vec<Live> = std::mem::take(&mut self.live).into_values().collect();
        let mut tasks = Vec::with_capacity(lives.len());
        for (stop, task) in lives.into_iter().flat_map(|l| l.loops) {
            let _ = stop.send(());
            tasks.push(task);
        }
        let all = async {
            for t in &mut tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(
                grace_seconds = grace.as_secs(),
                "connections still open after the grace period; closing them"
            );
            for t in tasks {
                t.abort();
            }
        }
        self.admission.close();
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::num::NonZeroUsize;
    use std::time::Duration;

    use axum::routing::get;
    use meshgate_core::resolver::ScopedAddr;
    use meshgate_core::ListenerRole;

    use super::*;

    /// `attach` called on one of the set's workers (an embedder's handler)
    /// registers the listener on that worker at once: waiting for a worker
    /// from that same worker would never end.
    #[test]
    fn attach_on_one_of_the_workers_serves_from_there_without_waiting() {
        let workers = Workers::start(NonZeroUsize::MIN).unwrap();
        let state = AppState::new(None);
        let mut set = ListenerSet::new(Router::new().route("/", get(|| async { "hi" })), state);
        set.set_workers(workers.clone());
        let listener = Listener {
            address: ScopedAddr { addr: [127, 0, 0, 1].into(), scope_id: None, scope_name: None },
            port: 0,
            provider: "ip".into(),
            interface: None,
            reason: "a test".into(),
            role: ListenerRole::Selected,
        };
        let bound = bind(&listener).unwrap();
        let (attached, addr) = std::sync::mpsc::channel();
        let (done, finished) = oneshot::channel::<()>();
        drop(workers.spawn_on(0, async move {
            attached.send(set.attach(bound).map_err(|e| e.to_string())).unwrap();
            let _ = finished.await;
            drop(set);
        }));
        let addr = addr.recv_timeout(Duration::from_secs(5)).expect("attach returned").expect("attached");
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conn.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("hi"), "{answer}");
        drop(done);
    }

    fn loopback(port: u16) -> Listener {
        Listener {
            address: ScopedAddr { addr: [127, 0, 0, 1].into(), scope_id: None, scope_name: None },
            port,
            provider: "ip".into(),
            interface: None,
            reason: "a test".into(),
            role: ListenerRole::Selected,
        }
    }

    fn resolution(listeners: Vec<Listener>) -> Resolution {
        Resolution {
            selectors: vec!["127.0.0.1".into()],
            listeners,
            fallback: false,
            fallback_reason: None,
            notes: Vec::new(),
            providers: Vec::new(),
            daemons: Vec::new(),
        }
    }

    /// A set answering `/thread` with the name of the thread that serves it.
    fn thread_set(workers: &Workers) -> ListenerSet {
        let app =
            Router::new().route("/thread", get(|| async { std::thread::current().name().unwrap_or("-").to_owned() }));
        let mut set = ListenerSet::new(app, AppState::new(None));
        set.set_workers(workers.clone());
        set
    }

    /// One `GET /thread` on a connection of its own: the serving thread's name.
    fn served_by(addr: SocketAddr) -> String {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conn.write_all(b"GET /thread HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        answer.rsplit("\r\n\r\n").next().unwrap_or_default().to_owned()
    }

    /// How many connections each worker's accept loops accepted, by thread name.
    fn accepted_per_worker(workers: &Workers) -> BTreeMap<String, u64> {
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..workers.threads() {
            let tx = tx.clone();
            drop(workers.spawn_on(i, async move {
                let name = std::thread::current().name().unwrap_or("-").to_owned();
                tx.send((name, crate::gateway::workers::accepted_here())).unwrap();
            }));
        }
        (0..workers.threads()).map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap()).collect()
    }

    /// With N workers an address (port 0 asked for) has one accept loop per
    /// worker on its one socket (`ss` would list it once), and each
    /// connection is served by the worker that accepted it: per worker, as
    /// many served as accepted.
    #[test]
    fn with_workers_each_connection_is_served_where_it_was_accepted() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _in = rt.enter();
        let workers = Workers::start(NonZeroUsize::new(3).unwrap()).unwrap();
        let mut set = thread_set(&workers);
        let l = loopback(0);
        let addr = set.attach(bind(&l).unwrap()).unwrap();
        assert_ne!(addr.port(), 0);
        assert_eq!(set.sockets(&l.socket_addr()), 3, "one accept loop per worker");
        let mut served: BTreeMap<String, u64> = BTreeMap::new();
        for _ in 0..30 {
            *served.entry(served_by(addr)).or_default() += 1;
        }
        let mut accepted = accepted_per_worker(&workers);
        assert_eq!(accepted.keys().collect::<Vec<_>>(), ["mg-conn-0", "mg-conn-1", "mg-conn-2"]);
        accepted.retain(|_, n| *n > 0);
        assert_eq!(served, accepted, "served (left) and accepted (right) per worker");
        assert_eq!(served.values().sum::<u64>(), 30);
    }

    /// The workers race to accept from the one socket, so a worker that is
    /// busy (here: its thread blocked for 4 s in a handler) takes no new
    /// connection; the free ones accept and serve all of them at once. With
    /// a socket per worker (`SO_REUSEPORT`) the kernel would queue about a
    /// third of them on the busy worker's socket, unserved until it is free.
    #[test]
    fn a_busy_worker_takes_no_connection_the_free_ones_serve_them() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _in = rt.enter();
        let workers = Workers::start(NonZeroUsize::new(3).unwrap()).unwrap();
        let (started, busy) = std::sync::mpsc::sync_channel::<String>(1);
        let app = Router::new()
            .route("/thread", get(|| async { std::thread::current().name().unwrap_or("-").to_owned() }))
            .route(
                "/block",
                get(move || {
                    let started = started.clone();
                    async move {
                        let name = std::thread::current().name().unwrap_or("-").to_owned();
                        let _ = started.send(name.clone());
                        // Blocks the worker's thread (its whole runtime), on purpose.
                        std::thread::sleep(Duration::from_secs(4));
                        name
                    }
                }),
            );
        let mut set = ListenerSet::new(app, AppState::new(None));
        set.set_workers(workers.clone());
        let addr = set.attach(bind(&loopback(0)).unwrap()).unwrap();
        let mut blocker = std::net::TcpStream::connect(addr).unwrap();
        blocker.write_all(b"GET /block HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
        let blocked = busy.recv_timeout(Duration::from_secs(5)).unwrap();
        let t0 = std::time::Instant::now();
        for i in 0..30 {
            let name = served_by(addr);
            assert_ne!(name, blocked, "connection {i} was taken by the blocked worker");
        }
        assert!(t0.elapsed() < Duration::from_secs(3), "30 connections took {:?}", t0.elapsed());
        let mut answer = String::new();
        blocker.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        blocker.read_to_string(&mut answer).unwrap();
        assert!(answer.ends_with(&blocked), "{answer}");
    }

    /// A set without workers attached on a worker (an embedder's handler)
    /// runs its one accept loop there: nothing else accepts from its socket,
    /// so however far that worker is ahead of the others it must not wait
    /// for them to accept first (each new connection would wait up to 5 ms
    /// for nobody).
    #[test]
    fn a_sole_accept_loop_on_a_worker_never_waits_for_the_others() {
        let workers = Workers::start(NonZeroUsize::new(2).unwrap()).unwrap();
        let app =
            Router::new().route("/thread", get(|| async { std::thread::current().name().unwrap_or("-").to_owned() }));
        let mut set = ListenerSet::new(app, AppState::new(None));
        let bound = bind(&loopback(0)).unwrap();
        let (attached, addr) = std::sync::mpsc::channel();
        let (done, finished) = oneshot::channel::<()>();
        drop(workers.spawn_on(0, async move {
            attached.send(set.attach(bound).map_err(|e| e.to_string())).unwrap();
            let _ = finished.await;
            drop(set);
        }));
        let addr = addr.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        // Three open connections on worker 0 (no request yet): 3 ahead of worker 1.
        let idle: Vec<_> = (0..3).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        for _ in 0..5 {
            assert_eq!(served_by(addr), "mg-conn-0");
        }
        let (tx, rx) = std::sync::mpsc::channel();
        drop(workers.spawn_on(0, async move { tx.send(crate::gateway::workers::deferred_here()).unwrap() }));
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 0, "waits for a worker that does not accept");
        drop((idle, done));
    }

    /// A TCP service's listener gets an accept loop per worker too, on its
    /// one socket, and the workers accept (and forward) all its connections.
    #[test]
    fn a_tcp_services_connections_are_accepted_by_the_workers() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _in = rt.enter();
        // The upstream: echoes one line per connection.
        let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in echo.incoming().take(60) {
                let mut conn = conn.unwrap();
                let mut buf = [0u8; 5];
                conn.read_exact(&mut buf).unwrap();
                conn.write_all(&buf).unwrap();
            }
        });
        let workers = Workers::start(NonZeroUsize::new(3).unwrap()).unwrap();
        let mut set = ListenerSet::new(Router::new(), AppState::new(None));
        let service = crate::gateway::Service::tcp("echo", 0, &format!("tcp://{upstream}")).unwrap();
        set.set_tcp(Arc::new(TcpHandler::new(&service).unwrap()));
        set.set_workers(workers.clone());
        let l = loopback(0);
        let addr = set.attach(bind(&l).unwrap()).unwrap();
        assert_eq!(set.sockets(&l.socket_addr()), 3);
        for i in 0..60 {
            let mut conn = std::net::TcpStream::connect(addr).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            conn.write_all(b"ping\n").unwrap();
            let mut back = [0u8; 5];
            conn.read_exact(&mut back).unwrap_or_else(|e| panic!("connection {i}: {e}"));
            assert_eq!(&back, b"ping\n");
        }
        let accepted = accepted_per_worker(&workers);
        assert_eq!(accepted.len(), 3, "{accepted:?}");
        assert_eq!(accepted.values().sum::<u64>(), 60, "{accepted:?}");
    }

    /// A listener follow removes (`apply` without its address) stops
    /// accepting in every one of its accept loops and closes its socket: no
    /// connection gets through.
    #[test]
    fn a_listener_removed_by_follow_stops_accepting_on_all_its_sockets() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _in = rt.enter();
        let workers = Workers::start(NonZeroUsize::new(3).unwrap()).unwrap();
        let mut set = thread_set(&workers);
        // A free port, named: follow re-resolves to the same key each time.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let applied = set.apply(&resolution(vec![loopback(port)]));
        assert_eq!(applied.added.len(), 1, "{applied:?}");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(set.sockets(&addr), 3);
        assert!(served_by(addr).starts_with("mg-conn-"));
        let applied = set.apply(&resolution(Vec::new()));
        assert_eq!(applied.removed.len(), 1, "{applied:?}");
        assert!(set.addresses().is_empty());
        // Each loop closes its dup as it sees the stop (a moment, on its
        // worker); the socket closes with the last.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(addr).is_ok() {
            assert!(std::time::Instant::now() < deadline, "{addr} still accepts after its removal");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
        for i in 0..60 {
            let refused = std::net::TcpStream::connect(addr).map(drop);
            assert_eq!(
                refused.as_ref().map_err(io::Error::kind),
                Err(io::ErrorKind::ConnectionRefused),
                "connection {i} to the removed {addr}"
            );
        }
    }

    /// A port something else listens on (a plain socket, or another
    /// process's reuseport group of the same user) is "address in use"
    /// naming the address, with workers too: the socket is bound without
    /// `SO_REUSEPORT`, so it never joins a foreign group. And once meshgate
    /// serves a port with workers, a second bind of it (a second meshgate)
    /// is refused the same way, and so is a process of the same user asking
    /// for `SO_REUSEPORT` (it could otherwise take a share of the
    /// connections): the workers share dups of one socket, no group.
    #[test]
    fn a_port_held_elsewhere_is_address_in_use_naming_the_address() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _in = rt.enter();
        let workers = Workers::start(NonZeroUsize::new(2).unwrap()).unwrap();
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let reuseport = || {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.set_reuse_address(true).unwrap();
            s.set_reuse_port(true).unwrap();
            s
        };
        let group = reuseport();
        group.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
        group.listen(16).unwrap();
        let group: std::net::TcpListener = group.into();
        for foreign in [&plain, &group] {
            let port = foreign.local_addr().unwrap().port();
            let mut set = thread_set(&workers);
            let applied = set.apply(&resolution(vec![loopback(port)]));
            assert!(applied.added.is_empty(), "joined a foreign socket on {port}");
            let [e] = &applied.failed[..] else { panic!("{applied:?}") };
            assert_eq!(e.kind, crate::gateway::BindErrorKind::PortInUse);
            let text = e.to_string();
            assert!(text.contains(&format!("127.0.0.1:{port}")) && text.contains("already in use"), "{text}");
        }
        let mut set = thread_set(&workers);
        let addr = set.attach(bind(&loopback(0)).unwrap()).unwrap();
        assert_eq!(set.sockets(&loopback(0).socket_addr()), 2, "an accept loop per worker");
        let again = bind(&loopback(addr.port())).map(drop).unwrap_err();
        assert_eq!(again.kind, crate::gateway::BindErrorKind::PortInUse, "{again}");
        let joined = reuseport().bind(&addr.into()).map_err(|e| e.kind());
        assert_eq!(joined, Err(io::ErrorKind::AddrInUse), "a same-user SO_REUSEPORT socket joined {addr}");
        assert!(served_by(addr).starts_with("mg-conn-"), "meshgate still serves {addr}");
    }
}
