//! The routers: meshgate's own (`/healthz`, `/status`, `/ws`, [`app`]), the same
//! under `/_meshgate/` with everything else forwarded to an upstream
//! ([`upstream_app`]), and the state they read.
//!
//! The live listener set is a `tokio::sync::watch` value: `/status` reads the
//! latest, `/ws` sends it on connect and a diff on every change.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use meshgate_core::Listener;
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;

use tower_http::limit::RequestBodyLimitLayer;

use super::auth::RequireTokenLayer;
use super::browser::BrowserPolicy;
use super::listeners::DEFAULT_MAX_BODY_BYTES;
use super::token::Token;
use super::upstream::Proxy;

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
    /// (default [`DEFAULT_MAX_BODY_BYTES`]; see [`ServerLimits::max_body_bytes`](super::ServerLimits::max_body_bytes)).
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

/// The router, with auth and the request body cap applied. Each request
/// carries its listener's [`ListenerCtx`] (the accept loop inserts it; a test
/// can add `.layer(Extension(ctx))`).
pub fn app(state: AppState) -> Router {
    meshgate_routes()
        .layer(RequestBodyLimitLayer::new(state.max_body_bytes()))
        .layer(RequireTokenLayer::new(state.clone()))
        .with_state(state)
}

/// The router in front of an upstream: `/_meshgate/healthz`, `/_meshgate/status`
/// and `/_meshgate/ws`, and every other request forwarded through `proxy`, all
/// behind the token check. Build `state` with
/// `AppState::with_open_paths(token, [UPSTREAM_HEALTHZ])` so that only the health
/// check is open (the upstream's own `/healthz` is not).
pub fn upstream_app(state: AppState, proxy: Proxy) -> Router {
    let own = Router::new()
        .merge(meshgate_routes_at(MESHGATE_PREFIX))
        // The prefix is reserved: a typo there is meshgate's 404, not the upstream's.
        .route(
            &format!("{MESHGATE_PREFIX}/{{*rest}}"),
            axum::routing::any(|| async {
                (
                    axum::http::StatusCode::NOT_FOUND,
                    "no such meshgate route; meshgate has /_meshgate/healthz, /_meshgate/status and /_meshgate/ws\n",
                )
            }),
        )
        .layer(RequestBodyLimitLayer::new(state.max_body_bytes()));
    // The token that is checked is the token that is removed.
    let proxy = proxy.with_token(state.token().cloned());
    // Forwarded requests stream; their own cap (none by default) is checked
    // against Content-Length up front and counted as the body streams.
    let limit = proxy.limits().max_body_bytes;
    let forward = move |request: axum::extract::Request| {
        let proxy = proxy.clone();
        async move { proxy.forward(request).await }
    };
    let with_fallback = match limit.and_then(|n| usize::try_from(n).ok()) {
        Some(n) => own.fallback(axum::handler::Handler::layer(forward, RequestBodyLimitLayer::new(n))),
        None => own.fallback(forward),
    };
    with_fallback.layer(RequireTokenLayer::new(state.clone())).with_state(state)
}

/// `/healthz`, `/status` and `/ws` without auth or state applied: for callers
/// that mount them in their own router (see [`crate::embed`]).
pub fn meshgate_routes() -> Router<AppState> {
    meshgate_routes_at("")
}

/// The same routes under `prefix` (`"/_meshgate"`: `/_meshgate/healthz`, ...).
pub fn meshgate_routes_at(prefix: &str) -> Router<AppState> {
    Router::new()
        .route(&format!("{prefix}/healthz"), get(|| async { "ok\n" }))
        .route(&format!("{prefix}/status"), get(status))
        .route(&format!("{prefix}/ws"), get(ws))
}

async fn status(State(state): State<AppState>) -> Json<serde_json::Value> {
    let view = state.view();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.inner.started.elapsed().as_secs(),
        "listeners": view.listeners,
        "fallback": view.fallback,
        "fallback_reason": view.fallback_reason,
    }))
}

async fn ws(State(state): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| stream_changes(socket, state.subscribe())).into_response()
}

/// Sends the current set, then one event per change, until the client goes.
async fn stream_changes(mut socket: WebSocket, mut rx: watch::Receiver<LiveView>) {
    let mut last = rx.borrow_and_update().clone();
    let hello = json!({ "event": "listeners", "listeners": last.listeners, "fallback": last.fallback, "fallback_reason": last.fallback_reason });
    if socket.send(Message::Text(hello.to_string().into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = rx.borrow_and_update().clone();
                let key = |l: &LiveListener| l.listener.socket_addr();
                let added: Vec<_> = now.listeners.iter().filter(|l| !last.listeners.iter().any(|o| key(o) == key(l))).collect();
                let removed: Vec<_> = last.listeners.iter().filter(|l| !now.listeners.iter().any(|o| key(o) == key(l))).collect();
                let event = json!({
                    "event": "changed",
                    "added": added,
                    "removed": removed,
                    "listeners": now.listeners,
                    "fallback": now.fallback,
                    "fallback_reason": now.fallback_reason,
                });
                if socket.send(Message::Text(event.to_string().into())).await.is_err() {
                    return;
                }
                last = now;
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    }
}
