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
use super::routes::{meshgate_routes_at, upstream_app};
use super::signal::shutdown_signal;
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
    /// answers are those of [`upstream_app`]
    /// served with [`start_with`](Self::start_with), only cheaper. The token
    /// removed before forwarding is this builder's [`token`](Self::token),
    /// whatever `proxy` was made with: both paths strip the token in force in
    /// the gateway's state ([`upstream_app`] and `ListenerSet::set_upstream`
    /// put its cell in the proxy).
    pub async fn start_upstream(self, proxy: Proxy) -> Result<Running<'a>, Error> {
        let direct = proxy.clone();
        self.open_path(UPSTREAM_HEALTHZ)
            .signin(MESHGATE_PREFIX)
            .start_inner(move |state| upstream_app(state.clone(), proxy), Some(direct))
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

        let bound = bind_all(&res.listeners)?;
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
        let mut app = make_app(&state);
        if let Some(pem) = self.tls.as_ref().and_then(|t| t.ca_pem.clone()) {
            app = app.merge(super::routes::ca_routes(pem));
        }
        let mut set = ListenerSet::new(app, state);
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
        let follow = if self.follow { watcher.map(|w| (w, resolver)) } else { None };
        Ok(Running { set, follow, source, events })
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

/// A started gateway: listeners open and serving.
pub struct Running<'a> {
    set: ListenerSet,
    follow: Option<(Box<dyn Watcher>, Resolver)>,
    source: Source<'a>,
    events: Option<EventSink>,
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
        match self.follow.take() {
            Some((mut watcher, resolver)) => {
                let events = self.events.clone();
                follow::follow_with(
                    &mut self.set,
                    watcher.as_mut(),
                    self.source.get(),
                    &resolver,
                    stop,
                    events.as_ref(),
                )
                .await
            }
            None => stop.await,
        }
        tracing::info!("shutting down: letting in-flight requests finish (up to {}s)", SHUTDOWN_GRACE.as_secs());
        self.set.shutdown(SHUTDOWN_GRACE).await;
    }

    /// Stops at once (in-flight requests get up to 10 s).
    pub async fn shutdown(self) {
        self.run_until(async {}).await;
    }
}

/// True when a selector can only ever yield loopback addresses.
fn loopback_only(s: &Selector) -> bool {
    match s {
        Selector::Provider(p) => p == "loopback",
        Selector::Ip(ip) => ip.addr.is_loopback(),
        Selector::Cidr(net) => net.network().is_loopback() && net.broadcast().is_loopback(),
        _ => false,
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
