//! The request context every layer of the HTTP stack reads: [`AppState`] (the
//! token, the open paths, the browser policy, the body cap, the live listener
//! view and which HTTP services its listeners serve, [`ServiceNames`]) and
//! [`ListenerCtx`] (which listener a request came in on). It sits at the
//! bottom of the stack and imports none of its users.
//!
//! The live listener set is a `tokio::sync::watch` value: `/status` reads the
//! latest, `/ws` sends it on connect and a diff on every change.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, Guard};
use meshgate_core::Listener;
use serde::Serialize;
use tokio::sync::watch;

use super::browser::{BrowserPolicy, HostNames};
use super::identity::PeerLookup;
use super::limits::DEFAULT_MAX_BODY_BYTES;
use super::metrics::{Meter, ServiceMeters, TOP_SERVICE};
use super::refusals::RefusalLog;
use super::session::Sessions;
use super::status_page::board::{EventKind, StatusBoard};
use super::token::Token;
use crate::tls::TlsStats;

/// Where meshgate's own routes live while an upstream is set.
pub const MESHGATE_PREFIX: &str = "/_meshgate";
/// The open health check while an upstream is set.
pub const UPSTREAM_HEALTHZ: &str = "/_meshgate/healthz";

/// Which listener a request came in on; every listener's router carries one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerCtx {
    /// The listener's local address.
    pub local: SocketAddr,
    /// True for 127.0.0.0/8 and ::1: no token needed there.
    pub loopback: bool,
    /// True when the listener speaks TLS: its origin is `https://` + `Host`
    /// (the browser guard's same-origin rule compares the scheme too).
    pub tls: bool,
}

/// One live listener, as `/status` and `/ws` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveListener {
    /// What the resolver said.
    #[serde(flatten)]
    pub listener: Listener,
    /// When it opened (seconds since the Unix epoch).
    pub since: u64,
    /// True when it serves HTTPS.
    pub tls: bool,
    /// Where to reach it: `https://10.8.0.1:18789`, `http://127.0.0.1:18789`.
    pub url: String,
    /// The `[[service]]` it serves (none: the top-level service).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// The live set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LiveView {
    /// Every open listener.
    pub listeners: Vec<LiveListener>,
    /// True when loopback stands in because nothing matched.
    pub fallback: bool,
    /// Why.
    pub fallback_reason: Option<String>,
}

/// Shared state of the router.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
    browser: Arc<BrowserPolicy>,
    max_body_bytes: usize,
    credentials: Option<CredentialCell>,
    signin: Option<Arc<str>>,
    peers: Option<Arc<dyn PeerLookup>>,
    login_attempts: Arc<LoginAttempts>,
    stats: Arc<Stats>,
    tls_stats: Option<Arc<TlsStats>>,
    names: Arc<ArcSwap<HostNames>>,
    refusals: Arc<RefusalLog>,
    services: ServiceNames,
}

/// True when `prefix` (an HTTP service's `path`) covers `path`: the same
/// segment or below it (`/grafana` covers `/grafana` and `/grafana/d`, not
/// `/grafanax`).
pub(crate) fn covers(prefix: &str, path: &str) -> bool {
    let p = prefix.trim_end_matches('/');
    p.is_empty() || path == p || path.strip_prefix(p).is_some_and(|rest| rest.starts_with('/'))
}

/// The HTTP services a listener set serves, by name: one (the top-level
/// service, [`TOP_SERVICE`], or one `[[service]]`), or several sharing a port,
/// told apart by path as the path router tells them (longest prefix first,
/// the one without a path last; meshgate's own routes are the first's).
/// Metrics and the access log name the service of each request by it.
#[derive(Debug, Clone)]
pub struct ServiceNames(Arc<[(Option<String>, Arc<str>)]>);

impl Default for ServiceNames {
    fn default() -> Self {
        Self::single(TOP_SERVICE)
    }
}

impl ServiceNames {
    /// One service, named `name`.
    pub fn single(name: &str) -> Self {
        Self(Arc::new([(None, Arc::from(name))]))
    }

    /// Several services on one port: `(path, name)` each (`None`: the one
    /// that takes every path the others do not).
    pub fn by_path(mut list: Vec<(Option<String>, String)>) -> Self {
        if list.is_empty() {
            return Self::default();
        }
        list.sort_by_key(|(p, _)| path_order(p.as_deref()));
        Self(list.into_iter().map(|(p, n)| (p, Arc::from(n))).collect())
    }

    /// The names, in the order [`index_for`](Self::index_for) counts.
    pub fn names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.0.iter().map(|(_, n)| n)
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for none (never: there is always one).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Which of them serves `path` (an index into [`names`](Self::names)).
    pub fn index_for(&self, path: &str) -> usize {
        if self.0.len() == 1 {
            return 0;
        }
        serving(self.0.iter().map(|(p, _)| p.as_deref()), path).unwrap_or(0)
    }
}

/// The order services sharing a port are tried in: longest prefix first,
/// the one without a path last (a sort key). The path router and
/// [`ServiceNames`] both sort by it.
pub(crate) fn path_order(prefix: Option<&str>) -> std::cmp::Reverse<usize> {
    std::cmp::Reverse(prefix.map_or(0, |p| p.trim_end_matches('/').len() + 1))
}

/// Which of `prefixes` (sorted by [`path_order`]) serves `path`: meshgate's
/// own routes go to the first; else the first whose prefix covers the path,
/// or the one without a prefix; `None` when none does.
pub(crate) fn serving<'a>(prefixes: impl Iterator<Item = Option<&'a str>>, path: &str) -> Option<usize> {
    let mut prefixes = prefixes.peekable();
    let own = path.strip_prefix(MESHGATE_PREFIX).is_some_and(|r| r.is_empty() || r.starts_with('/'));
    if own {
        return prefixes.peek().is_some().then_some(0);
    }
    prefixes.position(|p| p.is_none_or(|p| covers(p, path)))
}

/// Counters of what the gateway refused and why (read by `/status` and, where
/// there are metrics, by them).
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests refused 401 (no valid token, session or allowed peer).
    pub unauthorized: AtomicU64,
    /// Browsers sent to the sign-in page.
    pub signin_redirects: AtomicU64,
    /// Sign-ins refused (wrong token, foreign origin, too many attempts).
    pub signin_refused: AtomicU64,
    /// Connections closed at once: their address already held its share.
    pub per_address_refused: AtomicU64,
    /// Responses by listener and status, open connections (`/metrics`).
    pub meter: Arc<super::metrics::Meter>,
}

impl Stats {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Failed sign-ins per peer address, in a sliding minute.
#[derive(Debug, Default)]
pub(crate) struct LoginAttempts(Mutex<HashMap<IpAddr, (Instant, u32)>>);

/// Sign-in attempts one address may make per minute.
pub const LOGIN_ATTEMPTS_PER_MINUTE: u32 = 5;

impl LoginAttempts {
    /// True when `ip` may try again now; counts the try.
    pub(crate) fn allow(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 4096 {
            map.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
        }
        let entry = map.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(60) {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= LOGIN_ATTEMPTS_PER_MINUTE
    }
}

/// The token and the sessions signed with it, replaced together: rotating
/// the token signs every browser out (their cookies were signed with a key
/// derived from the old one).
#[derive(Debug)]
pub struct Credentials {
    token: Token,
    sessions: Sessions,
    /// The token this one replaced: never accepted, but still removed before
    /// forwarding, so a request that passed the check just before a reload
    /// cannot carry it to the upstream just after.
    previous: Option<Token>,
}

impl Credentials {
    /// The token and fresh sessions keyed from it.
    pub fn new(token: Token) -> Self {
        let sessions = Sessions::new(&token);
        Self { token, sessions, previous: None }
    }

    /// The token it replaced, if any (to remove, never to accept).
    pub fn previous(&self) -> Option<&Token> {
        self.previous.as_ref()
    }

    /// The bearer token.
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// The sessions signed with it.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }
}

/// The gateway's [`Credentials`], shared by every clone of its state and by
/// its proxy (so the token checked is the token removed before forwarding),
/// and replaceable while requests read it (SIGHUP with a new token file).
#[derive(Debug, Clone)]
pub struct CredentialCell(Arc<ArcSwap<Credentials>>);

impl CredentialCell {
    /// A cell holding `token`.
    pub fn new(token: Token) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(Credentials::new(token))))
    }

    /// The credentials in force (cheap: no lock, no count taken).
    pub fn load(&self) -> Guard<Arc<Credentials>> {
        self.0.load()
    }

    /// Puts `token` in force with fresh sessions; requests already past the
    /// check finish as they were. (Callers that hold connections open end
    /// them too: see [`AppState::revoke_connections`].)
    pub fn replace(&self, token: Token) {
        self.0.rcu(|old| {
            let new = Credentials { previous: Some(old.token.clone()), ..Credentials::new(token.clone()) };
            new.sessions.inherit_revoked(&old.sessions);
            new
        });
    }
}

/// Says when what let connections in has changed (a new token, new peer
/// rules): each open connection off loopback then finishes the request in
/// flight and closes, and each upgraded one (a WebSocket) closes, so that
/// every next request is checked, and its caller identified, afresh.
#[derive(Debug, Clone)]
pub struct Revocation(watch::Receiver<u64>);

impl Revocation {
    /// Resolves at the next revocation after this one was made (at once if
    /// one came since); never, once the gateway is gone.
    pub async fn revoked(&mut self) {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// True once a revocation came after this one was made (and not yet
    /// awaited through it).
    pub fn is_revoked(&self) -> bool {
        self.0.has_changed().unwrap_or(false)
    }
}

#[derive(Debug)]
struct Inner {
    started: Instant,
    revoke: watch::Sender<u64>,
    open_paths: Vec<String>,
    live: watch::Sender<LiveView>,
    board: StatusBoard,
    /// See [`AppState::mark_healthz`].
    healthz: std::sync::OnceLock<&'static str>,
}

impl AppState {
    /// New state with this token (None: only loopback listeners can serve);
    /// `/healthz` is the one path open without it.
    pub fn new(token: Option<Token>) -> Self {
        Self::with_open_paths(token, ["/healthz"])
    }

    /// New state whose token check lets exactly these paths through on every
    /// listener (none: everything needs the token off loopback).
    pub fn with_open_paths<S: Into<String>>(token: Option<Token>, open: impl IntoIterator<Item = S>) -> Self {
        Self {
            inner: Arc::new(Inner {
                started: Instant::now(),
                revoke: watch::Sender::new(0),
                open_paths: open.into_iter().map(Into::into).collect(),
                live: watch::Sender::new(LiveView::default()),
                board: StatusBoard::default(),
                healthz: std::sync::OnceLock::new(),
            }),
            browser: Arc::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            credentials: token.map(CredentialCell::new),
            signin: None,
            peers: None,
            login_attempts: Arc::default(),
            stats: Arc::default(),
            tls_stats: None,
            names: Arc::default(),
            refusals: Arc::default(),
            services: ServiceNames::default(),
        }
    }

    /// The same state counting its responses into `meter` (a gateway's one
    /// [`Meter`], shared by every HTTP service so that `/metrics` shows them
    /// all, each under its `service` label). Its refusal counters stay its own.
    pub fn with_meter(self, meter: Arc<Meter>) -> Self {
        Self { stats: Arc::new(Stats { meter, ..Stats::default() }), ..self }
    }

    /// The same state naming the HTTP services its listeners serve (default:
    /// the top-level service, [`TOP_SERVICE`]).
    pub fn with_services(self, services: ServiceNames) -> Self {
        Self { services, ..self }
    }

    /// The HTTP services its listeners serve.
    pub fn services(&self) -> &ServiceNames {
        &self.services
    }

    /// The counters of each of its services on the listener at `local`
    /// (looked up once per connection), in [`ServiceNames`] order.
    pub fn http_counters(&self, local: SocketAddr) -> ServiceMeters {
        let meter = &self.stats.meter;
        let mut names = self.services.names();
        match (names.next(), self.services.len()) {
            (Some(one), 1) => ServiceMeters::One(meter.http(one, local)),
            _ => ServiceMeters::Several(self.services.names().map(|n| meter.http(n, local)).collect()),
        }
    }

    /// Marks `path` as meshgate's own open health check in the router built
    /// with this state (`routes::app`, `routes::upstream_app`): the accept
    /// loop answers it without the router. The first mark stands.
    pub(crate) fn mark_healthz(&self, path: &'static str) {
        let _ = self.inner.healthz.set(path);
    }

    /// The path meshgate's own health check answers at before the router,
    /// if the router built with this state has one there.
    pub(crate) fn healthz(&self) -> Option<&'static str> {
        self.inner.healthz.get().copied()
    }

    /// The names the listeners answer to besides their addresses (see
    /// [`BrowserPolicy::check_ambient`]); cheap, no lock.
    pub fn host_names(&self) -> Guard<Arc<HostNames>> {
        self.names.load()
    }

    /// Sets the names the TLS certificate carries (`--tls-name`).
    pub fn set_tls_names<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let tls = HostNames::normalize(names);
        self.names.rcu(|n| HostNames { tls: tls.clone(), mesh: n.mesh.clone() });
    }

    /// Sets the DNS names the mesh daemons report for this node (tailscaled's
    /// `DNSName`), replacing the last ones (after every resolution).
    pub fn set_mesh_names<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let mesh = HostNames::mesh_names(names);
        if self.names.load().mesh != mesh {
            self.names.rcu(|n| HostNames { tls: n.tls.clone(), mesh: mesh.clone() });
        }
    }

    /// The refusal log (counts by address and reason, a lines/s cap).
    pub fn refusals(&self) -> &Arc<RefusalLog> {
        &self.refusals
    }

    /// The same state with browser sign-in at `PREFIX/login` (`""`: `/login`;
    /// `"/_meshgate"` in front of an upstream). Without it, a browser without
    /// the token gets the plain 401.
    pub fn with_signin(self, prefix: &str) -> Self {
        Self { signin: Some(Arc::from(prefix.trim_end_matches('/'))), ..self }
    }

    /// Where sign-in lives (the own routes' prefix), if it is on.
    pub fn signin_prefix(&self) -> Option<&str> {
        self.signin.as_deref()
    }

    /// The token and its sessions in force (none without a token).
    pub fn credentials(&self) -> Option<Guard<Arc<Credentials>>> {
        self.credentials.as_ref().map(CredentialCell::load)
    }

    /// The replaceable cell behind [`credentials`](Self::credentials).
    pub fn credential_cell(&self) -> Option<&CredentialCell> {
        self.credentials.as_ref()
    }

    /// True when the gateway has a token (whether one is set is fixed at
    /// start; which one can change, see [`CredentialCell::replace`]).
    pub fn has_token(&self) -> bool {
        self.credentials.is_some()
    }

    /// The same state identifying callers with `lookup` (and letting in the
    /// peers it says are allowed).
    pub fn with_peer_lookup(self, lookup: Arc<dyn PeerLookup>) -> Self {
        Self { peers: Some(lookup), ..self }
    }

    /// How callers are identified, if at all.
    pub fn peer_lookup(&self) -> Option<&Arc<dyn PeerLookup>> {
        self.peers.as_ref()
    }

    /// The refusal counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The same state reporting these TLS handshake counters.
    pub fn with_tls_stats(self, stats: Arc<TlsStats>) -> Self {
        Self { tls_stats: Some(stats), ..self }
    }

    /// The TLS handshake counters, when listeners speak TLS.
    pub fn tls_stats(&self) -> Option<&TlsStats> {
        self.tls_stats.as_deref()
    }

    pub(crate) fn login_attempts(&self) -> &LoginAttempts {
        &self.login_attempts
    }

    /// The same state with this request body cap for meshgate's own routes
    /// (default [`DEFAULT_MAX_BODY_BYTES`]; see [`ServerLimits::max_body_bytes`](super::limits::ServerLimits::max_body_bytes)).
    pub fn with_max_body_bytes(self, bytes: usize) -> Self {
        Self { max_body_bytes: bytes, ..self }
    }

    /// The request body cap for meshgate's own routes.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// The same state with these `Host` and `Origin` rules (see [`BrowserPolicy`]).
    pub fn with_browser_policy(self, policy: BrowserPolicy) -> Self {
        Self { browser: Arc::new(policy), ..self }
    }

    /// The `Host` and `Origin` rules.
    pub fn browser_policy(&self) -> &BrowserPolicy {
        &self.browser
    }

    /// True when `path` needs no token on any listener.
    pub fn is_open_path(&self, path: &str) -> bool {
        self.inner.open_paths.iter().any(|p| p == path)
            || self.signin.as_deref().and_then(|prefix| path.strip_prefix(prefix)).is_some_and(|rest| {
                // Signing in, out, and asking who one is need no credentials.
                matches!(rest, "/login" | "/logout" | "/whoami")
            })
    }

    /// Ends every open connection off loopback after its request in flight,
    /// and every upgraded one, so that each next request is checked and
    /// identified afresh (after a new token or new peer rules).
    pub fn revoke_connections(&self) {
        self.inner.revoke.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A signal of [`revoke_connections`](Self::revoke_connections) from now on.
    pub fn revocation(&self) -> Revocation {
        Revocation(self.inner.revoke.subscribe())
    }

    /// Replaces the live view (wakes `/ws` clients when it changed), and
    /// notes each listener opened or closed, and the fallback's coming and
    /// going, among the status page's recent events.
    pub fn publish(&self, view: LiveView) {
        let board = &self.inner.board;
        self.inner.live.send_if_modified(|v| {
            let changed = *v != view;
            let key = |l: &LiveListener| l.listener.socket_addr();
            for (from, to, kind) in [(&*v, &view, EventKind::Attach), (&view, &*v, EventKind::Detach)] {
                for l in to.listeners.iter().filter(|l| !from.listeners.iter().any(|o| key(o) == key(l))) {
                    board.note(kind, format!("{} ({})", l.url, l.listener.provider));
                }
            }
            if v.fallback != view.fallback {
                let text = match (&view.fallback_reason, view.fallback) {
                    (Some(why), true) => format!("loopback stands in: {why}"),
                    (None, true) => "loopback stands in: nothing matched".to_owned(),
                    (_, false) => "the bind matches again; the fallback is over".to_owned(),
                };
                board.note(EventKind::Fallback, text);
            }
            *v = view;
            changed
        });
    }

    /// The status page's memory: the program's own description, recent
    /// events, the request-rate history.
    pub fn status_board(&self) -> &StatusBoard {
        &self.inner.board
    }

    /// How long since this state was made (the gateway started).
    pub fn uptime(&self) -> std::time::Duration {
        self.inner.started.elapsed()
    }

    /// The current live view.
    pub fn view(&self) -> LiveView {
        self.inner.live.borrow().clone()
    }

    /// A receiver of live view changes.
    pub fn subscribe(&self) -> watch::Receiver<LiveView> {
        self.inner.live.subscribe()
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::session::Refused;

    #[test]
    fn a_replaced_token_ends_the_sessions_and_is_kept_only_to_be_removed() {
        let state = AppState::new(Some(Token::new("first-token-0123", "test").unwrap()));
        let c = state.credentials().unwrap();
        let cookie = c.sessions().issue();
        assert!(c.sessions().check(&cookie).is_ok());
        assert!(c.previous().is_none());
        drop(c);

        // Every clone shares the cell: the router's copy sees the new token too.
        let copy = state.clone();
        state.credential_cell().unwrap().replace(Token::new("second-token-4567", "test").unwrap());
        let c = copy.credentials().unwrap();
        assert_eq!(c.token().expose(), b"second-token-4567");
        assert_eq!(c.previous().map(Token::expose), Some(&b"first-token-0123"[..]));
        assert_eq!(c.sessions().check(&cookie), Err(Refused::BadSignature));
    }

    #[test]
    fn a_logged_out_cookie_stays_out_when_the_token_comes_back() {
        let first = || Token::new("first-token-0123", "test").unwrap();
        let state = AppState::new(Some(first()));
        let c = state.credentials().unwrap();
        let (kept, out) = (c.sessions().issue(), c.sessions().issue());
        c.sessions().revoke(&out);
        drop(c);
        let cell = state.credential_cell().unwrap();
        cell.replace(Token::new("second-token-4567", "test").unwrap());
        cell.replace(first());
        let c = state.credentials().unwrap();
        assert_eq!(c.sessions().check(&out), Err(Refused::Revoked));
        // Same token, same key: a session not logged out is good again, as after a restart.
        assert!(c.sessions().check(&kept).is_ok());
    }

    #[tokio::test]
    async fn a_revocation_reaches_every_signal_made_before_it() {
        let state = AppState::new(None);
        let (mut a, mut b) = (state.revocation(), state.clone().revocation());
        let pending = tokio::time::timeout(std::time::Duration::from_millis(20), a.revoked()).await;
        assert!(pending.is_err(), "a signal fired with no revocation");
        state.revoke_connections();
        for r in [&mut a, &mut b] {
            tokio::time::timeout(std::time::Duration::from_secs(1), r.revoked()).await.expect("revoked");
        }
        // Made after it: waits for the next one.
        let mut c = state.revocation();
        assert!(tokio::time::timeout(std::time::Duration::from_millis(20), c.revoked()).await.is_err());
    }

    #[test]
    fn without_a_token_there_is_nothing_to_replace() {
        let state = AppState::new(None);
        assert!(!state.has_token());
        assert!(state.credentials().is_none() && state.credential_cell().is_none());
    }
}
