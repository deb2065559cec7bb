//! Several HTTP services on one port, told apart by path: the router a
//! shared listener set serves. Each service keeps its own upstream app (its
//! own routes under `/_meshgate/`, its own auth state and allow-list); a
//! request goes to the service whose `path` is the longest prefix of its
//! path, on a segment boundary (`/grafana` takes `/grafana` and
//! `/grafana/...`, not `/grafanax`); a service without a path takes the
//! rest. The upstream sees the request's path unchanged (`/grafana/api/...`),
//! as an app served from a sub-path expects (Grafana's `serve_from_sub_path`).

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceExt;

#[cfg(test)]
use super::context::covers;
use super::context::{path_order, serving};

/// The router that hands each request to the app of the service whose path
/// covers it, longest first (`None`: the service without a path).
pub(crate) fn path_router(mut apps: Vec<(Option<String>, Router)>) -> Router {
    // Longest prefix first; the service without a path last.
    apps.sort_by_key(|(p, _)| path_order(p.as_deref()));
    let apps = Arc::new(apps);
    let dispatch = tower::service_fn(move |request: Request| {
        let apps = apps.clone();
        async move {
            // meshgate's own routes (sign-in, status) are the same in every
            // app: the first one serves them.
            let chosen = serving(apps.iter().map(|(p, _)| p.as_deref()), request.uri().path()).map(|i| &apps[i]);
            let response: Response = match chosen {
                Some((_, app)) => app.clone().oneshot(request).await.unwrap_or_else(|never: Infallible| match never {}),
                None => (StatusCode::NOT_FOUND, "no service on this port serves this path\n").into_response(),
            };
            Ok::<_, Infallible>(response)
        }
    });
    Router::new().fallback_service(dispatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_covers_its_segment_and_below_only() {
        assert!(covers("/grafana", "/grafana"));
        assert!(covers("/grafana", "/grafana/d/abc"));
        assert!(covers("/grafana/", "/grafana/d"));
        assert!(!covers("/grafana", "/grafanax"));
        assert!(!covers("/grafana", "/"));
        assert!(covers("/", "/anything"));
    }
}
