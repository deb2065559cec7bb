//! The library API: [`Gateway`], what `meshgate serve` does, for a program that
//! has its own axum [`Router`].
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use meshgate::gateway::Gateway;
//! use meshgate::gateway::Token;
//!
//! # async fn run() -> Result<(), meshgate::gateway::Error> {
//! let app = Router::new().route("/", get(|| async { "hello from my app\n" }));
//! let token = Token::new(&std::env::var("MY_APP_TOKEN").unwrap_or_default(), "MY_APP_TOKEN").ok();
//! Gateway::builder()
//!     .bind(["wireguard"]) // the WireGuard address(es), plus 127.0.0.1/::1
//!     .port(8080)
//!     .token(token) // required off loopback; checked on every request there
//!     .serve(app) // until SIGINT/SIGTERM, following interface changes
//!     .await
//! # }
//! ```
//!
//! The same rules as `meshgate serve` hold, because `serve` is built on this
//! module:
//!
//! - **Never widen**: the resolver only ever narrows to loopback; `all` is the
//!   only way to a wildcard.
//! - **All or nothing**: every resolved address binds, or [`GatewayBuilder::start`]
//!   fails naming the address and the cause, with nothing left listening.
//! - **Non-loopback needs a token**: starting a non-loopback bind (or one that can
//!   attach non-loopback addresses later) without a token is [`Error::Refused`];
//!   with one, every request on a non-loopback listener needs `Authorization:
//!   Bearer TOKEN` (or `Proxy-Authorization`) except the [open
//!   paths](GatewayBuilder::open_path).
//! - **Follow**: listeners are attached and detached as interfaces change, and
//!   connections on listeners that stay are untouched.
//! - **Say why, never print**: every listener opened or closed, every bind
//!   retry and fallback is an [`Event`] (given to the callback set with
//!   [`GatewayBuilder::on_event`]) and a `tracing` record; the library writes
//!   nothing to stdout. `meshgate serve` prints its `listening on` lines from
//!   these events.
//!
//! A program that wants only the sockets can call [`GatewayBuilder::listeners`]
//! and serve them however it likes (then auth and follow are its own business).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use meshgate_core::registry::Registry;
use meshgate_core::watcher::Watcher;
use meshgate_core::{
    parse_selectors, resolve, Fallback, InterfaceSource, Listener, Resolution, ResolveOptions, Selector, Snapshot,
};

use tower_http::limit::RequestBodyLimitLayer;

use super::auth::RequireTokenLayer;
use super::bind::{bind_all, BindError};
use super::browser::BrowserPolicy;
use super::context::{AppState, LiveView, MESHGATE_PREFIX, UPSTREAM_HEALTHZ};
use super::error::Error;
use super::event::{Event, EventSink};
use super::follow;
use super::identity::PeerLookup;
use super::limits::ServerLimits;
use super::listeners::{Https, ListenerSet};
use super::proxy::Proxy;
use super::routes::{meshgate_routes_at, own_upstream_app};
use super::service::{loopback_only, PeerAccess, Protocol, Service, ServicePeers};
use super::signal::shutdown_signal;
use super::tcp::TcpHandler;
use super::token::Token;
use super::workers::Workers;

/// The default port.
pub const DEFAULT_PORT: u16 = 18789;
/// How long in-flight requests get to finish at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The entry point: [`Gateway::builder`].
#[derive(Debug)]
pub struct Gateway;

impl Gateway {
    /// A builder with `serve`'s defaults: bind `loopback`, port 18789, loopback
    /// fallback, the loopback companion on, follow on, no token, no open paths.
    pub fn builder() -> GatewayBuilder<'static> {
        GatewayBuilder {
            bind: Vec::new(),
            host: None,
            selectors: None,
            options: ResolveOptions { port: DEFAULT_PORT, loopback_companion: true, ..ResolveOptions::default() },
            token: None,
            follow: true,
            wait: None,
            limits: ServerLimits::default(),
            open_paths: Vec::new(),
            browser: BrowserPolicy::default(),
            status_routes: None,
            signin: None,
            peers: None,
            peers_allow: false,
            tls: None,
            source: None,
            watcher: None,
            events: None,
            workers: None,
            services: Vec::new(),
            session_dir: None,
        }
    }
}

/// How the gateway reads interfaces: its own, or one the caller lends.
enum Source<'a> {
    Owned(Box<dyn InterfaceSource>),
    Borrowed(&'a dyn InterfaceSource),
}

impl Source<'_> {
    fn get(&self) -> &dyn InterfaceSource {
        match self {
            Self::Owned(s) => s.as_ref(),
            Self::Borrowed(s) => *s,
        }
    }
}

/// Settings for one gateway; finish with [`serve`](Self::serve),
/// [`start`](Self::start) or [`listeners`](Self::listeners).
#[must_use = "a builder does nothing until it is started"]
pub struct GatewayBuilder<'a> {
    bind: Vec<String>,
    host: Option<String>,
    selectors: Option<Vec<Selector>>,
    options: ResolveOptions,
    token: Option<Token>,
    follow: bool,
    wait: Option<Duration>,
    limits: ServerLimits,
    open_paths: Vec<String>,
    browser: BrowserPolicy,
    status_routes: Option<String>,
    signin: Option<String>,
    peers: Option<Arc<dyn PeerLookup>>,
    peers_allow: bool,
    tls: Option<Https>,
    source: Option<Source<'a>>,
    watcher: Option<Box<dyn Watcher>>,
    events: Option<EventSink>,
    workers: Option<Workers>,
    services: Vec<Service>,
    /// Where logged-out sessions are kept across restarts.
    session_dir: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for GatewayBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayBuilder")
            .field("bind", &self.bind)
            .field("selectors", &self.selectors)
            .field("port", &self.options.port)
            .field("token", &self.token)
            .field("follow", &self.follow)
            .field("limits", &self.limits)
            .field("open_paths", &self.open_paths)
            .field("services", &self.services)
            .finish_non_exhaustive()
    }
}

impl<'a> GatewayBuilder<'a> {
    /// Where to listen, as `--bind` takes it: `wireguard`, `tailnet`, `auto`,
    /// `iface:wg*`, `cidr:10.8.0.0/24`, `10.8.0.1`, ... (union of all). Default:
    /// `loopback`. Parsed at start ([`Error::Selector`] names a bad one).
    pub fn bind<S: Into<String>>(mut self, selectors: impl IntoIterator<Item = S>) -> Self {
        self.bind = selectors.into_iter().map(Into::into).collect();
        self.selectors = None;
        self
    }

    /// Already parsed selectors (replaces [`bind`](Self::bind)).
    pub fn selectors(mut self, selectors: Vec<Selector>) -> Self {
        self.selectors = Some(selectors);
        self
    }

    /// The address for the `custom` selector (`--host`).
    pub fn host(mut self, ip: impl Into<String>) -> Self {
        self.host = Some(ip.into());
        self
    }

    /// The port every listener uses (0: each listener gets its own free port,
    /// handy in tests; see [`Running::addresses`]).
    pub fn port(mut self, port: u16) -> Self {
        self.options.port = port;
        self
    }

    /// What to do when nothing matches: loopback (default) or fail.
    pub fn fallback(mut self, fallback: Fallback) -> Self {
        self.options.fallback = fallback;
        self
    }

    /// Whether non-loopback binds get a 127.0.0.1/::1 companion (default: yes).
    pub fn loopback_companion(mut self, on: bool) -> Self {
        self.options.loopback_companion = on;
        self
    }

    /// Every resolver option at once (port, fallback, companion, `auto` order,
    /// per-provider names and ranges), as `meshgate serve` builds them from its flags and config file.
    pub fn resolve_options(mut self, options: ResolveOptions) -> Self {
        self.options = options;
        self
    }

    /// The bearer token (`None`: loopback-only binds are all that can start).
    pub fn token(mut self, token: impl Into<Option<Token>>) -> Self {
        self.token = token.into();
        self
    }

    /// Follow interface changes (default: yes).
    pub fn follow(mut self, on: bool) -> Self {
        self.follow = on;
        self
    }

    /// At start, wait up to this long for the selectors to match before falling
    /// back (`--wait`).
    pub fn wait(mut self, wait: impl Into<Option<Duration>>) -> Self {
        self.wait = wait.into();
        self
    }

    /// Client connection limits (header size, idle timeout, open connections,
    /// request body size for the served router).
    pub fn limits(mut self, limits: ServerLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Extra `Host` names for the loopback listeners and `Origin`s for WebSocket
    /// upgrades ([`BrowserPolicy`]; default: none beyond the built-in rules).
    pub fn browser_policy(mut self, policy: BrowserPolicy) -> Self {
        self.browser = policy;
        self
    }

    /// A path that needs no token even on non-loopback listeners (a health
    /// check). Exact match; repeat for more. Default: none.
    pub fn open_path(mut self, path: impl Into<String>) -> Self {
        self.open_paths.push(path.into());
        self
    }

    /// Also serve meshgate's `healthz`, `status` and `ws` under `prefix`
    /// (e.g. `"/_meshgate"`); `PREFIX/healthz` becomes an open path.
    pub fn status_routes(mut self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into().trim_end_matches('/').to_owned();
        self.open_paths.push(format!("{prefix}/healthz"));
        self.signin = Some(prefix.clone());
        self.status_routes = Some(prefix);
        self
    }

    /// Browser sign-in at `PREFIX/login` (and `PREFIX/logout`, `PREFIX/whoami`,
    /// all open): a page load on a non-loopback listener without credentials
    /// is sent there, and the token entered once gives a session cookie. Set
    /// by [`status_routes`](Self::status_routes) and
    /// [`start_upstream`](Self::start_upstream); with
    /// [`start_with`](Self::start_with), say where your router mounts
    /// [`meshgate_routes_at`](super::routes::meshgate_routes_at).
    pub fn signin(mut self, prefix: impl Into<String>) -> Self {
        self.signin = Some(prefix.into());
        self
    }

    /// Identify callers with `lookup` (once per connection on non-loopback
    /// listeners): their identity reaches handlers and the upstream as
    /// `Meshgate-Peer-*` headers, and a peer `lookup` marks allowed needs no
    /// token. With it, starting off loopback without a token is allowed when
    /// `allow_without_token` is true (an allow-list exists).
    pub fn peer_lookup(mut self, lookup: Arc<dyn PeerLookup>, allow_without_token: bool) -> Self {
        self.peers = Some(lookup);
        self.peers_allow = allow_without_token;
        self
    }

    /// Keep logged-out sessions in `dir` (`revoked-sessions`), so that a
    /// logout outlives a restart; read before the first connection is served.
    pub fn session_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.session_dir = Some(dir.into());
        self
    }

    /// Serve HTTPS (HTTP/2 or HTTP/1.1 by ALPN) on the non-loopback
    /// listeners, and on the loopback ones when [`Https::loopback`] is set.
    /// Session cookies set over TLS are `Secure`.
    pub fn tls(mut self, tls: Https) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Read interfaces from this source instead of the host's (tests, or a
    /// program with its own view of the network).
    pub fn source<'b>(self, source: &'b dyn InterfaceSource) -> GatewayBuilder<'b>
    where
        'a: 'b,
    {
        GatewayBuilder { source: Some(Source::Borrowed(source)), ..self }
    }

    /// Calls `f` with every [`Event`]: each listener as it opens or closes,
    /// bind retries, fallbacks. Called from the gateway's task, in order; keep
    /// it quick (print a line, send on a channel). Default: none (the same
    /// events are `tracing` records either way).
    pub fn on_event(mut self, f: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.events = Some(Arc::new(f));
        self
    }

    /// Serves connections on `workers`, each a thread with a single-threaded
    /// runtime, as nginx's worker processes do (see [`Workers`]); the accept
    /// loops run there too. Follow and signals stay on the runtime that
    /// starts the gateway, which can then be a current-thread one. Default:
    /// everything is served on the runtime that starts the gateway.
    pub fn workers(mut self, workers: Workers) -> Self {
        self.workers = Some(workers);
        self
    }

    /// Also runs `service` ([`Service::tcp`], [`Service::http`], ...) on
    /// its own port, with its own listeners (its bind, or this builder's),
    /// next to the top-level one. Everything the top level has (workers,
    /// follow, the peer lookup, limits) serves it too. Checked at start: a
    /// TCP or TLS service off loopback with no allow-list is refused
    /// ([`Error::Refused`], naming it), as are two services on one address
    /// and port.
    ///
    /// ```no_run
    /// use meshgate::gateway::{Gateway, Service, Upstream};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let grafana = Service::http("grafana", 8080, Upstream::parse("http://127.0.0.1:3000")?)?.path("/grafana");
    /// let postgres = Service::tcp("postgres", 5432, "tcp://127.0.0.1:5432")?.bind(["wireguard"]);
    /// Gateway::builder()
    ///     .service(grafana)
    ///     .service(postgres) // refused at start without an allow-list: see `peer_lookup`
    ///     .serve(axum::Router::new())
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn service(mut self, service: Service) -> Self {
        self.services.push(service);
        self
    }

    /// [`service`](Self::service) for each.
    pub fn services(mut self, services: impl IntoIterator<Item = Service>) -> Self {
        self.services.extend(services);
        self
    }

    /// Learn of interface changes from this watcher instead of the host's.
    pub fn watcher(mut self, watcher: Box<dyn Watcher>) -> Self {
        self.watcher = Some(watcher);
        self
    }

    /// Serves `app` until SIGINT or SIGTERM, then lets in-flight requests finish
    /// (up to 10 s).
    pub async fn serve(self, app: Router) -> Result<(), Error> {
        let stop = shutdown_signal();
        self.serve_with_shutdown(app, stop).await
    }

    /// Serves `app` until `stop` resolves.
    pub async fn serve_with_shutdown(self, app: Router, stop: impl Future<Output = ()>) -> Result<(), Error> {
        self.start(app).await?.run_until(stop).await;
        Ok(())
    }

    /// Resolves, binds every address (or none) and starts serving `app` with the
    /// token check applied; returns at once. Drive follow and shutdown with
    /// [`Running::run_until`].
    pub async fn start(self, app: Router) -> Result<Running<'a>, Error> {
        let status_routes = self.status_routes.clone();
        self.start_with(move |state| {
            let app = match &status_routes {
                Some(prefix) => app.merge(meshgate_routes_at(prefix).with_state(state.clone())),
                None => app,
            };
            app.layer(RequestBodyLimitLayer::new(state.max_body_bytes())).layer(RequireTokenLayer::new(state.clone()))
        })
        .await
    }

    /// Like [`start`](Self::start), but the router is built from the gateway's
    /// state and served exactly as returned: no token check is added (add
    /// [`RequireTokenLayer`] with the same state, or
    /// [`require_token`](super::auth::require_token) as axum middleware).
    /// `meshgate serve` starts this way.
    pub async fn start_with(self, make_app: impl FnOnce(&AppState) -> Router) -> Result<Running<'a>, Error> {
        self.start_inner(make_app, None).await
    }

    /// Starts in front of an upstream service, as `meshgate serve --upstream`
    /// does: meshgate's own routes move under `/_meshgate/` (with
    /// `/_meshgate/healthz` open), and every other request passes the token
    /// and browser checks and is forwarded through `proxy` (header rules in
    /// [`Proxy::forward`]). Forwarded requests skip the router altogether; the
    /// answers are those of [`upstream_app`](super::routes::upstream_app)
    /// served with [`start_with`](Self::start_with), only cheaper. The token
    /// removed before forwarding is this builder's [`token`](Self::token),
    /// whatever `proxy` was made with: both paths strip the token in force in
    /// the gateway's state ([`upstream_app`](super::routes::upstream_app) and `ListenerSet::set_upstream`
    /// put its cell in the proxy).
    pub async fn start_upstream(self, proxy: Proxy) -> Result<Running<'a>, Error> {
        let direct = proxy.clone();
        self.open_path(UPSTREAM_HEALTHZ)
            .signin(MESHGATE_PREFIX)
            .start_inner(move |state| own_upstream_app(state.clone(), proxy), Some(direct))
            .await
    }

    async fn start_inner(
        mut self,
        make_app: impl FnOnce(&AppState) -> Router,
        upstream: Option<Proxy>,
    ) -> Result<Running<'a>, Error> {
        crate::builtin::link();
        let registry = Registry::global()?;
        let selectors = match self.selectors.take() {
            Some(s) => s,
            None => {
                let raw = if self.bind.is_empty() { vec!["loopback".to_owned()] } else { self.bind.clone() };
                parse_selectors(&raw, &registry.names(), self.host.as_deref())?
            }
        };
        let source = self.source.take().unwrap_or_else(|| Source::Owned(meshgate_core::source::system()));
        // Subscribe before the first snapshot so no change falls between the two.
        let mut watcher = match self.watcher.take() {
            Some(w) => Some(w),
            None if self.follow || self.wait.is_some() => {
                // The watcher reads the interfaces first: failing that is the
                // source's error (exit 71), not a watch failure.
                Some(meshgate_core::watcher::system().map_err(|e| match e {
                    meshgate_core::watcher::WatchError::Source(e) => Error::Source(e),
                    e => Error::Watch(e.to_string()),
                })?)
            }
            None => None,
        };
        let options = self.options.clone();
        let resolver: Resolver = {
            let selectors = selectors.clone();
            // Every snapshot resolved is also shown to the peer lookup (which
            // interfaces are WireGuard now, and which changed).
            let peers = self.peers.clone();
            Box::new(move |s: &Snapshot| {
                if let Some(p) = &peers {
                    p.observe(s);
                }
                resolve(registry, &selectors, s, &options)
            })
        };
        let snapshot = source.get().snapshot().await?;
        let mut res = resolver(&snapshot);
        if let (Some(wait), Some(w)) = (self.wait, watcher.as_deref_mut()) {
            if follow::still_waiting(&res) {
                tracing::info!("nothing matched yet; waiting up to {} s for a match", wait.as_secs_f64());
                res = follow::wait_for_match(res, wait, w, source.get(), &resolver).await;
            }
        }
        if res.nothing_to_bind() {
            return Err(Error::NothingMatched(res.fallback_reason.clone().unwrap_or_else(|| "nothing matched".into())));
        }
        check_auth(&selectors, &res, self.token.as_ref(), self.peers.is_some() && self.peers_allow)?;
        let mut ctx = ServiceCtx {
            registry,
            top: selectors.clone(),
            host: self.host.clone(),
            options: self.options.clone(),
            token: self.token.clone(),
            peers: self.peers.clone(),
            peers_allow: self.peers_allow,
            limits: self.limits,
            browser: self.browser.clone(),
            tls: self.tls.clone(),
            workers: self.workers.clone(),
            events: self.events.clone(),
            meter: None,
            board: None,
        };
        let planned = ctx.plan_services(&self.services, &snapshot, taken_by(&res, "the top-level service"))?;

        let bound = bind_all(&res.listeners)?;
        // All or nothing across the services too: a failure drops every
        // socket bound so far.
        let mut service_bound = Vec::with_capacity(planned.len());
        for p in &planned {
            service_bound.push(
                bind_all(&p.res.listeners).map_err(|e| Error::Refused(format!("service {:?}: {e}", p.service.name)))?,
            );
        }

        let mut state = AppState::with_open_paths(self.token.clone(), self.open_paths.clone())
            .with_browser_policy(self.browser.clone())
            .with_max_body_bytes(self.limits.max_body_bytes);
        if let Some(prefix) = &self.signin {
            state = state.with_signin(prefix);
        }
        if let Some(lookup) = self.peers.clone() {
            state = state.with_peer_lookup(lookup);
        }
        if let Some(tls) = &self.tls {
            state = state.with_tls_stats(tls.acceptor.stats().clone());
        }
        if let (Some(dir), Some(c)) = (&self.session_dir, state.credentials()) {
            if let Err(e) = c.sessions().persist_in(dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not read the logged-out sessions; logouts hold until a restart");
            }
        }
        state.set_mesh_names(res.daemons.iter().filter_map(|f| f.dns_name.as_deref()));
        ctx.meter = Some(state.stats().meter.clone());
        let board = super::listeners::StatusBoard::new(state.clone());
        ctx.board = Some(board.clone());
        let mut app = make_app(&state);
        if let Some(pem) = self.tls.as_ref().and_then(|t| t.ca_pem.clone()) {
            app = app.merge(super::routes::ca_routes(pem));
        }
        let mut set = ListenerSet::new(app, state);
        if !self.services.is_empty() {
            set.set_status_board(board, "");
        }
        set.set_limits(self.limits);
        if let Some(tls) = self.tls.take() {
            set.set_tls(tls);
        }
        if let Some(workers) = self.workers.take() {
            set.set_workers(workers);
        }
        if let Some(proxy) = upstream {
            set.set_upstream(proxy);
        }
        let events = self.events.take();
        if res.fallback {
            let reason =
                res.fallback_reason.clone().unwrap_or_else(|| "nothing matched; serving on loopback only".into());
            tracing::warn!("{reason}");
            follow::emit(events.as_ref(), Event::Fallback { reason });
        }
        set.set_fallback(res.fallback, res.fallback_reason.clone());
        for b in bound {
            let mut listener = b.listener.clone();
            let local = set.attach(b).map_err(|source| Error::Bind(BindError::new(&listener, source)))?;
            // With port 0 each socket got its own port: report the real one.
            listener.port = local.port();
            let tls = set.is_tls(&listener);
            tracing::info!(
                "listening on {}://{} ({})",
                follow::scheme(tls),
                super::bind::display_addr(&listener),
                listener.provider
            );
            follow::emit(events.as_ref(), Event::Listening { listener, tls });
        }
        set.publish();
        let mut services = Vec::with_capacity(planned.len());
        for (p, bound) in planned.into_iter().zip(service_bound) {
            services.push(ctx.start_service(p, bound)?);
        }
        let follow = if self.follow { watcher.map(|w| (w, resolver)) } else { None };
        let (commands, rx) = tokio::sync::mpsc::channel(4);
        Ok(Running { set, follow, source, events, services, ctx, commands, rx: Some(rx) })
    }

    /// Resolves and binds every address (or none), and hands back the listening
    /// sockets with what the resolver said about each. No serving, no follow, no
    /// token check: the caller serves them (the non-loopback-needs-a-token rule
    /// is still checked against the token given here).
    pub async fn listeners(mut self) -> Result<Vec<(Listener, tokio::net::TcpListener)>, Error> {
        self.follow = false;
        self.wait = None;
        crate::builtin::link();
        let registry = Registry::global()?;
        let selectors = match self.selectors.take() {
            Some(s) => s,
            None => {
                let raw = if self.bind.is_empty() { vec!["loopback".to_owned()] } else { self.bind.clone() };
                parse_selectors(&raw, &registry.names(), self.host.as_deref())?
            }
        };
        let source = self.source.take().unwrap_or_else(|| Source::Owned(meshgate_core::source::system()));
        let res = resolve(registry, &selectors, &source.get().snapshot().await?, &self.options);
        if res.nothing_to_bind() {
            return Err(Error::NothingMatched(res.fallback_reason.clone().unwrap_or_else(|| "nothing matched".into())));
        }
        check_auth(&selectors, &res, self.token.as_ref(), false)?;
        let mut out = Vec::new();
        for b in bind_all(&res.listeners)? {
            let listener = b.listener.clone();
            let socket = tokio::net::TcpListener::from_std(b.into_std())
                .map_err(|source| Error::Bind(BindError::new(&listener, source)))?;
            out.push((listener, socket));
        }
        Ok(out)
    }
}

type Resolver = Box<dyn Fn(&Snapshot) -> Resolution + Send + Sync>;

/// What starting a service needs from the gateway, kept for a reload.
#[derive(Clone)]
struct ServiceCtx {
    registry: &'static Registry,
    top: Vec<Selector>,
    host: Option<String>,
    options: ResolveOptions,
    token: Option<Token>,
    peers: Option<Arc<dyn PeerLookup>>,
    peers_allow: bool,
    limits: ServerLimits,
    browser: BrowserPolicy,
    tls: Option<Https>,
    workers: Option<Workers>,
    events: Option<EventSink>,
    /// The top-level `/metrics`, where TCP services' counters show.
    meter: Option<Arc<super::metrics::Meter>>,
    /// The top-level `/status`, where every service's listeners show.
    board: Option<super::listeners::StatusBoard>,
}

/// The socket addresses `res` holds, each named `who` (ports 0 left out:
/// each of those gets its own).
fn taken_by(res: &Resolution, who: &str) -> std::collections::BTreeMap<SocketAddr, String> {
    res.listeners.iter().filter(|l| l.port != 0).map(|l| (l.socket_addr(), who.to_owned())).collect()
}

impl ServiceCtx {
    /// The top-level service's resolution on `snapshot` (what it holds).
    fn resolve_top(&self, snapshot: &Snapshot) -> Resolution {
        resolve(self.registry, &self.top, snapshot, &self.options)
    }

    /// Resolves every service's bind on `snapshot`, checks it (fail closed;
    /// HTTP ones need auth as the top level does) and refuses two services
    /// on one address and port. Nothing is bound yet.
    fn plan_services(
        &self,
        services: &[Service],
        snapshot: &Snapshot,
        mut taken: std::collections::BTreeMap<SocketAddr, String>,
    ) -> Result<Vec<Planned>, Error> {
        let (registry, top) = (self.registry, &self.top);
        let allows = self.peers.is_some() && self.peers_allow;
        // One name, one service: `/metrics`, the access log and `/status`
        // tell services apart by name, and a reload matches them by it.
        let mut names = std::collections::BTreeSet::new();
        if let Some(twice) = services.iter().find(|s| !names.insert(s.name.as_str())) {
            return Err(Error::Refused(format!(
                "two services are named {:?}; give each service its own name (metrics, the access log and /status tell them apart by it)",
                twice.name
            )));
        }
        let mut out: Vec<Planned> = Vec::with_capacity(services.len());
        for service in services {
            let selectors = match &service.bind {
                Some(raw) => parse_selectors(raw, &registry.names(), self.host.as_deref())?,
                None => top.to_vec(),
            };
            service.check_exposure(&selectors, allows).map_err(Error::Refused)?;
            let options = service.resolve_options(&self.options);
            let res = service.settle(resolve(registry, &selectors, snapshot, &options));
            // A TCP service that matches nothing yet waits (no fallback).
            if res.nothing_to_bind() && !service.protocol.is_stream() {
                return Err(Error::NothingMatched(format!(
                    "service {:?}: {}",
                    service.name,
                    res.fallback_reason.clone().unwrap_or_else(|| "nothing matched".into())
                )));
            }
            if service.protocol == Protocol::Http {
                let own = match &service.access {
                    PeerAccess::Inherit => allows,
                    PeerAccess::AnyPeer => true,
                    PeerAccess::Peers(l) => !l.is_empty(),
                };
                check_auth(&selectors, &res, self.token.as_ref(), self.peers.is_some() && own)
                    .map_err(|e| Error::Refused(format!("service {:?}: {e}", service.name)))?;
            }
            // HTTP services on the same port and bind with different paths
            // share one listener set.
            let key = |sel: &[Selector]| sel.iter().map(ToString::to_string).collect::<Vec<_>>();
            let joins = out.iter_mut().find(|q| {
                q.service.protocol == Protocol::Http
                    && service.protocol == Protocol::Http
                    && q.service.port == service.port
                    && service.port != 0
                    && key(&q.selectors) == key(&selectors)
                    && std::iter::once(&q.service).chain(&q.mounts).all(|m| m.path != service.path)
            });
            match joins {
                Some(q) => q.mounts.push(service.clone()),
                None => out.push(Planned { service: service.clone(), mounts: Vec::new(), selectors, options, res }),
            }
        }
        // Two services on one socket address: one socket cannot be both.
        for p in &out {
            for l in p.res.listeners.iter().filter(|l| l.port != 0) {
                if let Some(other) = taken.insert(l.socket_addr(), format!("service {:?}", p.service.name)) {
                    return Err(Error::Refused(format!(
                        "{other} and service {:?} both listen on {}; give one of them another port or bind",
                        p.service.name,
                        super::bind::display_addr(l)
                    )));
                }
            }
        }
        Ok(out)
    }

    /// Builds the listener set of one planned service and starts its bound sockets.
    fn start_service(&self, p: Planned, bound: Vec<super::bind::Bound>) -> Result<ServiceRun, Error> {
        let (workers, events) = (self.workers.clone(), self.events.as_ref());
        let Planned { service, mounts, selectors, options, res } = p;
        let fingerprint = group_fingerprint(&service, &mounts);
        // An HTTP service always reads its callers through its own access
        // (Inherit: the top level's answer), so a reload can change it in place.
        let http_access = match (&self.peers, service.protocol) {
            (Some(inner), Protocol::Http) => Some(Arc::new(ServicePeers {
                inner: inner.clone(),
                access: arc_swap::ArcSwap::from_pointee(service.access.clone()),
            })),
            _ => None,
        };
        let lookup: Option<Arc<dyn PeerLookup>> = match &http_access {
            Some(p) => Some(p.clone()),
            None => self.peers.clone(),
        };
        let mut limits = self.limits;
        if let Some(n) = service.max_connections {
            limits = limits.with_max_connections(n);
        }
        let mut set = match service.protocol {
            Protocol::Http => {
                let mut state = AppState::with_open_paths(self.token.clone(), [UPSTREAM_HEALTHZ])
                    .with_browser_policy(self.browser.clone())
                    .with_max_body_bytes(self.limits.max_body_bytes)
                    .with_signin(MESHGATE_PREFIX);
                // One meter for the gateway: `/metrics` names each service.
                if let Some(m) = &self.meter {
                    state = state.with_meter(m.clone());
                }
                let by_path = std::iter::once(&service).chain(&mounts).map(|s| (s.path.clone(), s.name.clone()));
                state = state.with_services(super::context::ServiceNames::by_path(by_path.collect()));
                if let Some(l) = lookup {
                    state = state.with_peer_lookup(l);
                }
                let upstream = service.http.clone().ok_or_else(|| {
                    Error::Refused(format!(
                        "service {:?}: an HTTP service needs an http:// or unix: upstream",
                        service.name
                    ))
                })?;
                let proxy = Proxy::new(upstream, service.upstream_limits, self.token.clone());
                let shared = !mounts.is_empty() || service.path.is_some();
                let app = if shared {
                    // Each service on the port keeps its own state (its
                    // allow-list) and upstream; the set's state identifies.
                    let mut apps = vec![(service.path.clone(), own_upstream_app(state.clone(), proxy.clone()))];
                    for m in &mounts {
                        let mut own = AppState::with_open_paths(self.token.clone(), [UPSTREAM_HEALTHZ])
                            .with_browser_policy(self.browser.clone())
                            .with_max_body_bytes(self.limits.max_body_bytes)
                            .with_signin(MESHGATE_PREFIX);
                        let lookup: Option<Arc<dyn PeerLookup>> = match (&self.peers, &m.access) {
                            (Some(inner), access) if *access != PeerAccess::Inherit => Some(Arc::new(ServicePeers {
                                inner: inner.clone(),
                                access: arc_swap::ArcSwap::from_pointee(access.clone()),
                            })),
                            (peers, _) => peers.clone(),
                        };
                        if let Some(l) = lookup {
                            own = own.with_peer_lookup(l);
                        }
                        let upstream = m.http.clone().ok_or_else(|| {
                            Error::Refused(format!(
                                "service {:?}: an HTTP service needs an http:// or unix: upstream",
                                m.name
                            ))
                        })?;
                        let p = Proxy::new(upstream, m.upstream_limits, self.token.clone());
                        apps.push((m.path.clone(), own_upstream_app(own, p)));
                    }
                    super::service_paths::path_router(apps)
                } else {
                    own_upstream_app(state.clone(), proxy.clone())
                };
                let state = match (&self.peers, shared) {
                    (Some(inner), true) => state.with_peer_lookup(inner.clone()),
                    _ => state,
                };
                let mut set = ListenerSet::new(app, state);
                match (&service.tls, &self.tls) {
                    _ if service.plain => {}
                    (Some(acceptor), top) => set.set_tls(Https {
                        acceptor: acceptor.clone(),
                        address_names: None,
                        ca_pem: None,
                        dns_names: top.as_ref().map(|t| t.dns_names.clone()).unwrap_or_default(),
                        loopback: false,
                    }),
                    (None, Some(tls)) => set.set_tls(tls.clone()),
                    (None, None) => {}
                }
                if !shared {
                    set.set_upstream(proxy);
                }
                set
            }
            Protocol::Tcp | Protocol::Tls => {
                let mut state = AppState::new(self.token.clone());
                if let Some(l) = lookup {
                    state = state.with_peer_lookup(l);
                }
                let mut set = ListenerSet::new(Router::new(), state);
                let handler = TcpHandler::new(&service).ok_or_else(|| {
                    Error::Refused(format!(
                        "service {:?}: a {} service needs a tcp:// or unix: upstream",
                        service.name, service.protocol
                    ))
                })?;
                if let Some(acceptor) = &service.tls {
                    // A tls service speaks TLS on every listener, loopback too.
                    // Its certificate is the top level's: new addresses extend it.
                    let top = self.tls.as_ref();
                    set.set_tls(Https {
                        acceptor: acceptor.clone(),
                        address_names: top.and_then(|t| t.address_names.clone()),
                        ca_pem: None,
                        dns_names: top.map(|t| t.dns_names.clone()).unwrap_or_default(),
                        loopback: true,
                    });
                }
                let handler = Arc::new(handler);
                if let Some(meter) = &self.meter {
                    let stats = handler.stats().clone();
                    meter.add_service(
                        &service.name,
                        super::metrics::ServiceCounters(Box::new(move || stats.values().to_vec())),
                    );
                }
                set.set_tcp(handler);
                set
            }
        };
        set.set_limits(limits);
        if let Some(w) = workers {
            set.set_workers(w);
        }
        set.set_fallback(res.fallback, res.fallback_reason.clone());
        let names: Vec<&str> =
            std::iter::once(service.name.as_str()).chain(mounts.iter().map(|m| m.name.as_str())).collect();
        let name = (names.join(","), service.protocol);
        if let Some(board) = &self.board {
            set.set_status_board(board.clone(), &name.0);
        }
        for b in bound {
            let mut listener = b.listener.clone();
            let local = set.attach(b).map_err(|source| Error::Bind(BindError::new(&listener, source)))?;
            listener.port = local.port();
            let tls = set.is_tls(&listener);
            tracing::info!(
                service = %service.name,
                "listening on {}://{} ({}) for {}",
                service.protocol,
                super::bind::display_addr(&listener),
                listener.provider,
                service.upstream_text()
            );
            follow::emit(
                events,
                Event::ServiceListening { service: name.0.clone(), protocol: service.protocol, listener, tls },
            );
        }
        set.publish();
        let registry = self.registry;
        let settle = service.clone();
        let resolver: Resolver =
            Box::new(move |s: &Snapshot| settle.settle(resolve(registry, &selectors, s, &options)));
        Ok(ServiceRun { name, set, resolver, fingerprint, access: service.access.clone(), http_access })
    }
}

/// The settings of a service and the services sharing its port, but the
/// first one's access (which a reload changes in place); the others' access
/// counts (a change there restarts the set).
fn group_fingerprint(first: &Service, mounts: &[Service]) -> String {
    let mut out = first.fingerprint();
    for m in mounts {
        out.push_str(&format!("|{} {:?}", m.fingerprint(), m.access));
    }
    out
}

async fn next_command(rx: &mut Option<tokio::sync::mpsc::Receiver<Command>>) -> Command {
    match rx {
        Some(r) => match r.recv().await {
            Some(c) => c,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// A service resolved and checked, not bound yet.
struct Planned {
    service: Service,
    /// HTTP services sharing its port and bind, told apart by path.
    mounts: Vec<Service>,
    selectors: Vec<Selector>,
    options: ResolveOptions,
    res: Resolution,
}

/// One running `[[service]]`: its listener set and how it resolves.
struct ServiceRun {
    name: (String, Protocol),
    set: ListenerSet,
    resolver: Resolver,
    /// The members' settings but their access (a reload compares them).
    fingerprint: String,
    /// The access it runs with (a single service; a path-shared set's first).
    access: PeerAccess,
    /// An HTTP service's own allow-list, replaceable in place.
    http_access: Option<Arc<ServicePeers>>,
}

impl ServiceRun {
    /// Puts `access` in force for new and open connections.
    fn set_access(&self, access: PeerAccess) {
        if let Some(tcp) = self.set.tcp() {
            tcp.set_access(access);
        } else if let Some(peers) = &self.http_access {
            peers.access.store(Arc::new(access));
            self.set.state().revoke_connections();
        }
    }
}

/// A started gateway: listeners open and serving.
pub struct Running<'a> {
    set: ListenerSet,
    follow: Option<(Box<dyn Watcher>, Resolver)>,
    source: Source<'a>,
    events: Option<EventSink>,
    services: Vec<ServiceRun>,
    ctx: ServiceCtx,
    commands: tokio::sync::mpsc::Sender<Command>,
    rx: Option<tokio::sync::mpsc::Receiver<Command>>,
}

/// A change to the running services, from [`ServiceControls`].
enum Command {
    Replace(Vec<Service>, tokio::sync::oneshot::Sender<Result<Vec<String>, Error>>),
}

/// Changes the services of a running gateway (a reload): see
/// [`replace`](Self::replace). Cheap to clone.
#[derive(Clone)]
pub struct ServiceControls(tokio::sync::mpsc::Sender<Command>);

impl std::fmt::Debug for ServiceControls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceControls")
    }
}

impl ServiceControls {
    /// Puts `services` in force: a service whose settings are unchanged keeps
    /// its listeners and connections (a new allow-list applies to its open
    /// connections too: a peer taken off loses them); a removed one stops
    /// listening and its connections close after the grace; a new or
    /// changed one is resolved, checked and bound. A list that fails the
    /// checks is refused whole, and the running services stay. Returns one
    /// line per change. Needs [`Running::run_until`] to be running.
    pub async fn replace(&self, services: Vec<Service>) -> Result<Vec<String>, Error> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.0
            .send(Command::Replace(services, reply))
            .await
            .map_err(|_| Error::Refused("the gateway is not running".into()))?;
        answer.await.map_err(|_| Error::Refused("the gateway stopped".into()))?
    }
}

impl std::fmt::Debug for Running<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("set", &self.set).field("follow", &self.follow.is_some()).finish()
    }
}

impl Running<'_> {
    /// The socket addresses served now (the real ports when 0 was asked for).
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.set.addresses()
    }

    /// The socket addresses a service serves now (`None`: no such service).
    pub fn service_addresses(&self, name: &str) -> Option<Vec<SocketAddr>> {
        self.services.iter().find(|s| s.name.0.split(',').any(|n| n == name)).map(|s| s.set.addresses())
    }

    /// The TCP and TLS services' forwarders (their counters, their access).
    pub fn tcp_handlers(&self) -> Vec<Arc<TcpHandler>> {
        self.services.iter().filter_map(|s| s.set.tcp().cloned()).collect()
    }

    /// The live listeners, as `/status` shows them.
    pub fn view(&self) -> LiveView {
        self.set.state().view()
    }

    /// The state shared with the router (token, live view).
    pub fn state(&self) -> &AppState {
        self.set.state()
    }

    /// What can change while it runs, without re-binding: limits, the
    /// upstream's limits, the token (see [`Controls`](super::listeners::Controls)).
    pub fn controls(&self) -> super::listeners::Controls {
        self.set.controls()
    }

    /// Follows interface changes (unless follow is off) until `stop` resolves,
    /// then stops every listener and lets in-flight requests finish (up to 10 s).
    pub async fn run_until(mut self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut rx = self.rx.take();
        let events = self.events.clone();
        loop {
            let mut command = None;
            {
                let interrupted = async {
                    tokio::select! {
                        () = &mut stop => {}
                        c = next_command(&mut rx) => command = Some(c),
                    }
                };
                match self.follow.as_mut() {
                    Some((watcher, resolver)) => {
                        let mut sets =
                            vec![follow::Followed { set: &mut self.set, resolve: &**resolver, service: None }];
                        for s in &mut self.services {
                            sets.push(follow::Followed {
                                set: &mut s.set,
                                resolve: &*s.resolver,
                                service: Some(s.name.clone()),
                            });
                        }
                        follow::follow_sets(
                            &mut sets,
                            watcher.as_mut(),
                            self.source.get(),
                            interrupted,
                            events.as_ref(),
                        )
                        .await
                    }
                    None => interrupted.await,
                }
            }
            match command {
                None => break,
                Some(Command::Replace(services, reply)) => {
                    let result = self.replace_services(services).await;
                    let _ = reply.send(result);
                }
            }
        }
        tracing::info!("shutting down: letting in-flight requests finish (up to {}s)", SHUTDOWN_GRACE.as_secs());
        // Every set drains at once, each within the grace.
        let services: Vec<_> = std::mem::take(&mut self.services)
            .into_iter()
            .map(|s| tokio::spawn(s.set.shutdown(SHUTDOWN_GRACE)))
            .collect();
        self.set.shutdown(SHUTDOWN_GRACE).await;
        for s in services {
            let _ = s.await;
        }
    }

    /// A handle that changes the services while [`run_until`](Self::run_until) runs.
    pub fn service_controls(&self) -> ServiceControls {
        ServiceControls(self.commands.clone())
    }

    async fn replace_services(&mut self, new: Vec<Service>) -> Result<Vec<String>, Error> {
        let snapshot = self.source.get().snapshot().await?;
        let top = taken_by(&self.ctx.resolve_top(&snapshot), "the top-level service");
        // Checked whole first: a bad list changes nothing.
        let planned = self.ctx.plan_services(&new, &snapshot, top)?;
        let key = |p: &Planned| -> (String, String) {
            let members: Vec<&Service> = std::iter::once(&p.service).chain(&p.mounts).collect();
            (
                members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(","),
                group_fingerprint(&p.service, &p.mounts),
            )
        };
        let mut out = Vec::new();
        let mut keep: Vec<ServiceRun> = Vec::new();
        let mut start: Vec<Planned> = Vec::new();
        let mut old: Vec<ServiceRun> = std::mem::take(&mut self.services);
        for p in planned {
            let (name, fingerprint) = key(&p);
            match old.iter().position(|r| r.name.0 == name && r.fingerprint == fingerprint) {
                Some(i) => {
                    let run = old.remove(i);
                    // Same settings: listeners and connections stay; a new
                    // allow-list applies to the open connections at once.
                    if run.access != p.service.access {
                        out.push(format!(
                            "service {name}: allow-list changed: applied (open connections checked again)"
                        ));
                    }
                    run.set_access(p.service.access.clone());
                    keep.push(run);
                }
                None => start.push(p),
            }
        }
        // What is gone or changed stops first (a changed one may keep its port).
        for run in old {
            let changed = start.iter().any(|p| key(p).0 == run.name.0);
            out.push(format!(
                "service {}: {}; its connections close within {} s",
                run.name.0,
                if changed { "changed, restarted" } else { "removed" },
                super::tcp::DRAIN_GRACE.as_secs()
            ));
            if let (Some(meter), Some(_)) = (&self.ctx.meter, run.set.tcp()) {
                meter.remove_service(&run.name.0);
            }
            drop(tokio::spawn(run.set.shutdown(SHUTDOWN_GRACE)));
        }
        for p in start {
            let name = key(&p).0;
            // A restarted service's old sockets close as their accept loops
            // see the stop: give them a moment before calling a port taken.
            let mut bound = bind_all(&p.res.listeners);
            for _ in 0..40 {
                match &bound {
                    Err(e) if e.kind == super::bind::BindErrorKind::PortInUse => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        bound = bind_all(&p.res.listeners);
                    }
                    _ => break,
                }
            }
            match bound {
                Ok(bound) => match self.ctx.start_service(p, bound) {
                    Ok(run) => {
                        out.push(format!("service {name}: started"));
                        keep.push(run);
                    }
                    Err(e) => out.push(format!("service {name}: not started: {e}")),
                },
                Err(e) => out.push(format!("service {name}: not started: {e}")),
            }
        }
        self.services = keep;
        Ok(out)
    }

    /// Stops at once (in-flight requests get up to 10 s).
    pub async fn shutdown(self) {
        self.run_until(async {}).await;
    }
}

/// Refuses non-loopback serving without a token. Checked against the selectors,
/// not just today's resolution: under follow, `--bind wireguard` that falls back
/// to loopback now would attach the WireGuard address later.
///
/// `allowed_peers` is true when an allow-list of mesh peers guards the
/// non-loopback listeners instead (`--allow-peer`): that is auth too.
pub fn check_auth(
    selectors: &[Selector],
    res: &Resolution,
    token: Option<&Token>,
    allowed_peers: bool,
) -> Result<(), Error> {
    if token.is_some() || allowed_peers {
        return Ok(());
    }
    let exposed: Vec<String> =
        res.listeners.iter().filter(|l| !l.is_loopback()).map(|l| format!("{} ({})", l.address, l.provider)).collect();
    let wide: Vec<String> = selectors.iter().filter(|s| !loopback_only(s)).map(|s| s.to_string()).collect();
    if exposed.is_empty() && wide.is_empty() {
        return Ok(());
    }
    let what = if exposed.is_empty() {
        format!("--bind {} (it can attach non-loopback addresses as interfaces come up)", wide.join(","))
    } else {
        exposed.join(", ")
    };
    let advice = super::token::create_advice(std::path::Path::new("/etc/meshgate/token"));
    Err(Error::Refused(format!(
        "refusing to serve on {what} without a token: set one with --token-file PATH, the MESHGATE_TOKEN environment variable, or token_file in the config file (e.g. `{advice}`), or let in mesh peers with --allow-peer NAME|KEY|LOGIN|tag:T; --bind loopback needs none"
    )))
}
