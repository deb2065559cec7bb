//! The handlers: the page itself (`/`, or `/_meshgate/` in front of an
//! upstream) and the fields it adds to `/status`. Both sit behind the same
//! check as every own route (the loopback door, the token, a session, an
//! allowed peer; a browser without any is sent to sign in).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::doc::{gather, Asker};
use super::html::{csp, page as render};
use crate::gateway::context::{AppState, ListenerCtx};
use crate::gateway::identity::Caller;

/// `GET /` (`/_meshgate/`): the status page.
pub async fn page(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    ctx: Option<Extension<ListenerCtx>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let caller = caller.and_then(|c| c.0 .0);
    let asker =
        Asker { ctx: ctx.map(|c| c.0), caller: caller.as_deref(), headers: &headers, peer: peer.map(|p| p.0 .0) };
    let doc = gather(&state, asker).await;
    // The page is PREFIX/, beside PREFIX/status (sign-in may be off, so its
    // prefix cannot tell).
    let own = uri.path().strip_suffix('/').unwrap_or("");
    let html = render(&doc, own);
    let mut response = html.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if let Ok(v) = HeaderValue::from_str(csp()) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    response
}

/// The page's document as JSON fields, for `/status` to carry beside its own
/// (`services`, `interfaces`, `certificate`, `events`, `counters`, `rate`,
/// `you`, `state`, ...; a field `/status` already has is left as it is).
pub async fn status_fields(
    state: &AppState,
    caller: Option<&crate::gateway::identity::PeerIdentity>,
    ctx: Option<ListenerCtx>,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> serde_json::Map<String, serde_json::Value> {
    let doc = gather(state, Asker { ctx, caller, headers, peer }).await;
    match serde_json::to_value(doc) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}
