//! The request context every layer of the HTTP stack reads: [`AppState`] (the
//! token, the open paths, the browser policy, the body cap and the live
//! listener view) and [`ListenerCtx`] (which listener a request came in on).
//! It sits at the bottom of the stack and imports none of its users.
//!
//! The live listener set is a `tokio::sync::watch` value: `/status` reads the
//! latest, `/ws` sends it on connect and a diff on every change.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use meshgate_core::Listener;
use serde::Serialize;
use tokio::sync::watch;

use super::browser::BrowserPolicy;
use super::limits::DEFAULT_MAX_BODY_BYTES;
use super::token::Token;

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
}

#[derive(Debug)]
struct Inner {
    started: Instant,
    token: Option<Token>,
    open_paths: Vec<String>,
    live: watch::Sender<LiveView>,
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
                token,
                open_paths: open.into_iter().map(Into::into).collect(),
                live: watch::Sender::new(LiveView::default()),
            }),
            browser: Arc::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
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
    }

    /// The token, if any.
    pub fn token(&self) -> Option<&Token> {
        self.inner.token.as_ref()
    }

    /// Replaces the live view (wakes `/ws` clients when it changed).
    pub fn publish(&self, view: LiveView) {
        self.inner.live.send_if_modified(|v| {
            let changed = *v != view;
            *v = view;
            changed
        });
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
