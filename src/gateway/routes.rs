//! The routers: meshgate's own (`/healthz`, `/status`, `/metrics`, `/ws`, [`app`]), and the
//! same under `/_meshgate/` with everything else forwarded to an upstream
//! ([`upstream_app`]). The state they read is [`AppState`].

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::watch;

use tower_http::limit::RequestBodyLimitLayer;

use super::auth::RequireTokenLayer;
use super::context::{AppState, LiveListener, LiveView, Revocation, MESHGATE_PREFIX, UPSTREAM_HEALTHZ};
use super::identity::{allowed_now, Caller, PeerHeaders};
use super::metrics::{render, Gauges};
use super::proxy::Proxy;
use super::signin;

/// The router, with auth and the request body cap applied. Each request
/// carries its listener's [`ListenerCtx`](super::context::ListenerCtx) (the accept loop inserts it; a test
/// can add `.layer(Extension(ctx))`). Served as returned: an embedder may
/// nest it, layer it or serve it elsewhere, so every request reaches it
/// (`meshgate serve` uses `own_app`, whose `/healthz` skips the router).
pub fn app(state: AppState) -> Router {
    meshgate_routes()
        .route("/", get(super::status_page::page::page))
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
        // The prefix is reserved: a typo there (or the bare prefix) is
        // meshgate's 404, never the upstream's.
        .route(&format!("{MESHGATE_PREFIX}/{{*rest}}"), axum::routing::any(no_such_route))
        .route(MESHGATE_PREFIX, get(|| async { axum::response::Redirect::to("/_meshgate/") }))
        .layer(RequestBodyLimitLayer::new(state.max_body_bytes()));
    // The token that is checked is the token that is removed.
    let proxy = proxy.with_credentials(state.credential_cell().cloned());
    // Forwarded requests stream; their own cap (none by default) is checked
    // against Content-Length up front and counted as the body streams.
    let limit = proxy.limits().max_body_bytes;
    let forward = move |mut request: axum::extract::Request| {
        // Another spelling of meshgate's own namespace is never forwarded.
        let alias = own_path(request.uri().path()) != OwnPath::No;
        // Identity comes from the mesh, never from the client, whoever serves
        // this router: forged `Meshgate-Peer-*` headers go, the caller's own
        // (if the accept loop found one) are set.
        let caller = request.extensions().get::<Caller>().and_then(|c| c.0.clone());
        PeerHeaders::new(caller.as_deref()).apply(request.headers_mut());
        // The session cookie is meshgate's: the service never sees it.
        super::session::strip_cookie(request.headers_mut());
        let proxy = proxy.clone();
        async move {
            if alias {
                return alias_refused();
            }
            proxy.forward(request).await
        }
    };
    let with_fallback = match limit.and_then(|n| usize::try_from(n).ok()) {
        Some(n) => own.fallback(axum::handler::Handler::layer(forward, RequestBodyLimitLayer::new(n))),
        None => own.fallback(forward),
    };
    with_fallback.layer(RequireTokenLayer::new(state.clone())).with_state(state)
}

/// [`app`] as meshgate itself serves it (`meshgate serve`): the accept loop
/// answers its open `GET /healthz` after the same checks, without the router.
/// Only for a router served exactly as returned (nothing nested, layered or
/// routed around it): the mark is on `state`, not on the router.
pub(crate) fn own_app(state: AppState) -> Router {
    state.mark_healthz("/healthz");
    app(state)
}

/// [`upstream_app`] as meshgate itself serves it (the builder's upstream
/// and `[[service]]` sets): `/_meshgate/healthz` answered as in [`own_app`].
pub(crate) fn own_upstream_app(state: AppState, proxy: Proxy) -> Router {
    state.mark_healthz(UPSTREAM_HEALTHZ);
    upstream_app(state, proxy)
}

/// `/_meshgate/ca.crt`: the local CA's certificate (`--tls internal`), on
/// the loopback door only (a 404 on every other listener, as if it did not
/// exist): a person on this host downloads it there to trust it. Public data,
/// so no token; outside the token layer.
pub fn ca_routes(pem: std::sync::Arc<str>) -> Router {
    let handler = move |ctx: Option<axum::Extension<super::context::ListenerCtx>>| {
        let pem = pem.clone();
        async move {
            if !ctx.is_some_and(|c| c.loopback) {
                return no_such_route().await.into_response();
            }
            (
                [
                    (axum::http::header::CONTENT_TYPE, "application/x-x509-ca-cert"),
                    (axum::http::header::CONTENT_DISPOSITION, "attachment; filename=\"meshgate-ca.crt\""),
                ],
                pem.to_string(),
            )
                .into_response()
        }
    };
    Router::new().route(&format!("{MESHGATE_PREFIX}/ca.crt"), get(handler))
}

/// Whether a request path is meshgate's own, in front of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OwnPath {
    /// Not meshgate's: forwarded.
    No,
    /// `/_meshgate` or under it, as written: meshgate's router serves it.
    Canonical,
    /// A spelling that some server would read as `/_meshgate...`
    /// (`//_meshgate/status`, `/_MESHGATE/status`, `/%5Fmeshgate/status`,
    /// `/x/../_meshgate`): meshgate's too, answered 404, never forwarded.
    Alias,
}

/// The one normal form of paths this gateway decides by, so that nothing an
/// upstream could read as meshgate's namespace is forwarded: every `%XX`
/// decoded (`%2F` too, and again while that changes something: `%255F`),
/// overlong UTF-8 read as the ASCII it spells, `\` read as `/`, `;params`
/// and what follows a NUL dropped from each segment, empty and `.` segments
/// dropped, `..` taken back, and the first segment compared without regard
/// to ASCII case or trailing dots and spaces. A path whose normal form is
/// `/_meshgate` or starts with `/_meshgate/` is meshgate's.
pub(crate) fn own_path(path: &str) -> OwnPath {
    let canonical = path.strip_prefix(MESHGATE_PREFIX).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    if canonical {
        return OwnPath::Canonical;
    }
    // Most paths cannot spell the prefix another way: without "meshgate" in
    // some case, and without a `%` that could encode it, a path is not ours.
    let b = path.as_bytes();
    if !path.contains('%') && !b.windows(8).any(|w| w.eq_ignore_ascii_case(b"meshgate")) {
        return OwnPath::No;
    }
    let decoded = lenient_decode(b);
    // `..` can bring a later segment to the front: keep them all.
    let mut segments: Vec<&[u8]> = Vec::new();
    for seg in decoded.split(|c| *c == b'/' || *c == b'\\') {
        // `;params` go, and so does what follows a NUL (where a C string ends).
        match seg.split(|c| *c == b';' || *c == 0).next().unwrap_or_default() {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    // A Windows server drops a name's trailing dots and spaces.
    let trimmed = |s: &[u8]| -> usize { s.iter().rposition(|c| *c != b'.' && *c != b' ').map_or(0, |i| i + 1) };
    match segments.first() {
        Some(f) if f[..trimmed(f)].eq_ignore_ascii_case(&MESHGATE_PREFIX.as_bytes()[1..]) => OwnPath::Alias,
        _ => OwnPath::No,
    }
}

/// `path` decoded as the most lenient server would: `%XX` decoded again
/// while that changes something (`%255F` is `%5F`, then `_`), and overlong
/// UTF-8 forms of ASCII (`C1 9F` for `_`, `C0 AF` for `/`) read as the ASCII
/// they spell. A few rounds at most: each round shortens the path.
fn lenient_decode(path: &[u8]) -> Vec<u8> {
    let mut now = path.to_vec();
    for _ in 0..4 {
        let decoded: Vec<u8> = percent_encoding::percent_decode(&now).collect();
        let folded = fold_overlong(&decoded);
        if folded == now {
            break;
        }
        now = folded;
    }
    now
}

/// Overlong UTF-8 encodings of ASCII (2, 3 or 4 bytes) replaced by the byte
/// they encode; every other byte kept.
fn fold_overlong(bytes: &[u8]) -> Vec<u8> {
    let cont = |b: Option<&u8>| b.copied().filter(|b| b & 0xC0 == 0x80);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let lead = bytes[i];
        let len = match lead {
            0xC0 | 0xC1 => 2,
            0xE0 => 3,
            0xF0 => 4,
            _ => 1,
        };
        if len > 1 {
            let tail: Option<Vec<u8>> = (1..len).map(|k| cont(bytes.get(i + k))).collect();
            if let Some(tail) = tail {
                let mut v = u32::from(lead) & (0x7F >> len);
                for t in &tail {
                    v = v << 6 | u32::from(t & 0x3F);
                }
                if let Ok(ascii) = u8::try_from(v) {
                    if ascii.is_ascii() {
                        out.push(ascii);
                        i += len;
                        continue;
                    }
                }
            }
        }
        out.push(lead);
        i += 1;
    }
    out
}

/// meshgate's answer to a path that only normalises into its namespace.
pub(crate) fn alias_refused() -> Response {
    (
        axum::http::StatusCode::NOT_FOUND,
        "this path is meshgate's namespace written another way; meshgate answers only /_meshgate/... as written\n",
    )
        .into_response()
}

async fn no_such_route() -> (axum::http::StatusCode, &'static str) {
    (
        axum::http::StatusCode::NOT_FOUND,
        "no such meshgate route; meshgate has /_meshgate/ (the status page), /_meshgate/healthz, /_meshgate/status, /_meshgate/metrics, /_meshgate/ws, /_meshgate/whoami, /_meshgate/login and /_meshgate/logout\n",
    )
}

/// `/healthz`, `/status` and `/ws` without auth or state applied: for callers
/// that mount them in their own router (see [`crate::gateway`]).
pub fn meshgate_routes() -> Router<AppState> {
    meshgate_routes_at("")
}

/// The same routes under `prefix` (`"/_meshgate"`: `/_meshgate/healthz`, ...).
pub fn meshgate_routes_at(prefix: &str) -> Router<AppState> {
    let router = Router::new();
    // The status page at PREFIX/; at `/` only in meshgate's own app (`app`),
    // so a program mounting these beside its own `/` keeps it.
    let router = if prefix.is_empty() {
        router
    } else {
        router.route(&format!("{prefix}/"), get(super::status_page::page::page))
    };
    router
        .route(&format!("{prefix}/healthz"), get(|| async { "ok\n" }))
        .route(&format!("{prefix}/status"), get(status))
        .route(&format!("{prefix}/metrics"), get(metrics))
        .route(&format!("{prefix}/ws"), get(ws))
        .route(&format!("{prefix}/whoami"), get(whoami))
        .route(&format!("{prefix}/login"), get(signin::login_page).post(signin::login))
        .route(&format!("{prefix}/logout"), axum::routing::post(signin::logout))
}

/// The caller's identity as the mesh gives it, or `{"known": false}`.
/// `allowed` is the allow-list in force now (a reload may have changed it).
async fn whoami(State(state): State<AppState>, caller: Option<axum::Extension<Caller>>) -> Json<serde_json::Value> {
    let id = caller.and_then(|c| c.0 .0.clone());
    let allowed = allowed_now(state.peer_lookup(), id.as_deref());
    match id.and_then(|id| serde_json::to_value(&*id).ok()) {
        Some(serde_json::Value::Object(mut fields)) => {
            fields.insert("known".into(), true.into());
            fields.insert("allowed".into(), allowed.into());
            Json(serde_json::Value::Object(fields))
        }
        _ => Json(json!({ "known": false })),
    }
}

async fn status(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    ctx: Option<axum::Extension<super::context::ListenerCtx>>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: axum::http::HeaderMap,
) -> Json<serde_json::Value> {
    let view = state.view();
    let caller = caller.and_then(|c| c.0 .0);
    let page = super::status_page::page::status_fields(
        &state,
        caller.as_deref(),
        ctx.map(|c| c.0),
        peer.map(|p| p.0 .0),
        &headers,
    )
    .await;
    let mut doc = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.uptime().as_secs(),
        "listeners": view.listeners,
        "fallback": view.fallback,
        "fallback_reason": view.fallback_reason,
        "refused": {
            "unauthorized": state.stats().unauthorized.load(Ordering::Relaxed),
            "signin_redirects": state.stats().signin_redirects.load(Ordering::Relaxed),
            "signin_refused": state.stats().signin_refused.load(Ordering::Relaxed),
            "per_address": state.stats().per_address_refused.load(Ordering::Relaxed),
        },
        "tls": state.tls_stats().map(|t| {
            let t = t.snapshot();
            json!({
                "handshakes": t.ok,
                "h2": t.h2,
                "failed": t.failed,
                "not_tls": t.garbage,
                "closed_before_hello": t.closed,
                "timed_out": t.timeout,
                "http_redirected": t.redirected,
            })
        }),
    });
    // The status page's document beside (never over) the fields above.
    if let Some(fields) = doc.as_object_mut() {
        for (k, v) in page {
            fields.entry(k).or_insert(v);
        }
    }
    Json(doc)
}

/// The Prometheus text format (or OpenMetrics when asked), behind the token like `/status`.
async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let view = state.view();
    let stats = state.stats();
    let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let gauges = Gauges {
        unauthorized: get(&stats.unauthorized),
        signin_redirects: get(&stats.signin_redirects),
        signin_refused: get(&stats.signin_refused),
        per_address_refused: get(&stats.per_address_refused),
        listeners: view.listeners.len() as u64,
        fallback: view.fallback,
    };
    // The Prometheus text format unless the scraper asks for OpenMetrics.
    let accept = headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = crate::gateway::metrics::Format::negotiate(accept);
    ([(axum::http::header::CONTENT_TYPE, format.content_type())], render(&stats.meter, gauges, format))
}

async fn ws(
    State(state): State<AppState>,
    revocation: Option<axum::Extension<Revocation>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let revoked = revocation.map(|r| r.0);
    upgrade.on_upgrade(move |socket| stream_changes(socket, state.subscribe(), revoked)).into_response()
}

/// Sends the current set, then one event per change, until the client goes
/// (or, off loopback, until the token or the peer rules change).
async fn stream_changes(mut socket: WebSocket, mut rx: watch::Receiver<LiveView>, revoked: Option<Revocation>) {
    let revoked = async move {
        match revoked {
            Some(mut r) => r.revoked().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(revoked);
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
            },
            () = &mut revoked => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #25 part 5: every spelling that normalises into `/_meshgate` is
    /// meshgate's (never forwarded); look-alikes that do not are not.
    #[test]
    fn the_normal_form_of_meshgates_namespace() {
        for p in ["/_meshgate", "/_meshgate/status", "/_meshgate/"] {
            assert_eq!(own_path(p), OwnPath::Canonical, "{p}");
        }
        for p in [
            "//_meshgate/status",
            "/_MESHGATE/status",
            "/_Meshgate",
            "/%5Fmeshgate/status",
            "/%5fMeshGate/metrics",
            "/_%6Deshgate/status",
            "/./_meshgate/status",
            "/x/../_meshgate/status",
            "/x/..%2F_meshgate/status",
            "/%2F_meshgate/status",
            "\\_meshgate/status",
            "/_meshgate;x=1/status",
            "/_meshgate%2Fstatus",
        ] {
            assert_eq!(own_path(p), OwnPath::Alias, "{p}");
        }
    }

    /// What a lenient server still reads as meshgate's namespace: an escape
    /// escaped again (`%255F`, decoded twice), an overlong UTF-8 spelling of
    /// `_` or `/` (`%C1%9F`, `%C0%AF`), a NUL that a C string ends at, and
    /// the trailing dots and spaces a Windows server drops from a name.
    #[test]
    fn lenient_spellings_of_the_namespace_are_meshgates() {
        for p in [
            "/%255Fmeshgate/status",
            "/%25255fmeshgate/status",
            "/x/..%252F_meshgate/status",
            "/%C1%9Fmeshgate/status",
            "/%E0%81%9Fmeshgate/status",
            "/x/..%C0%AF_meshgate/status",
            "/_meshgate%00/status",
            "/_meshgate%00.png",
            "/_meshgate./status",
            "/_meshgate%20/status",
        ] {
            assert_eq!(own_path(p), OwnPath::Alias, "{p}");
        }
        for p in ["/%25", "/%2525", "/%C1%9F", "/_meshgate_x", "/a%00b", "/%E2%82%AC", "/x/%C1%9Fmeshgate"] {
            assert_eq!(own_path(p), OwnPath::No, "{p}");
        }
        for p in ["/", "/app", "/_meshgatex/status", "/x/_meshgate/status", "/meshgate/status", "/%41pp", "/_meshgat"] {
            assert_eq!(own_path(p), OwnPath::No, "{p}");
        }
    }
}
