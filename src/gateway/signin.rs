//! Sign-in for browsers: `GET PREFIX/login` shows a small page that takes the
//! token once; `POST PREFIX/login` checks it and sets the session cookie
//! (see `session.rs`); `POST PREFIX/logout` ends the session.
//!
//! The door is narrow: the `POST`s must come from the page's own origin
//! (`Origin` equal to the scheme and `Host` the request came to), sign-in is
//! limited per peer address ([`LOGIN_ATTEMPTS_PER_MINUTE`]), a wrong token gets
//! the same page and status every time, and `next` only ever leads to a path
//! on this site (no open redirect). The page has no external assets.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::auth::token_value_matches;
use super::browser::request_is_same_origin;
use super::context::{AppState, ListenerCtx, Stats, LOGIN_ATTEMPTS_PER_MINUTE};
use super::refusals::Reason;
use super::session::{self, clear_cookie};

/// The query of `GET /login`.
#[derive(Debug, Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

/// The form of `POST /login`.
#[derive(Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    token: String,
    next: Option<String>,
}

/// True for a path on this site: `/` then anything but a second `/` or `\`
/// (which browsers read as another host), and no control characters.
pub fn is_safe_next(next: &str) -> bool {
    let b = next.as_bytes();
    b.first() == Some(&b'/')
        && !matches!(b.get(1), Some(b'/' | b'\\'))
        && !b.iter().any(|c| c.is_ascii_control() || *c == b'\\')
}

fn safe_next(next: Option<&str>) -> &str {
    next.filter(|n| is_safe_next(n)).unwrap_or("/")
}

/// `GET PREFIX/login`.
pub(crate) async fn login_page(State(state): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    let next = safe_next(q.next.as_deref());
    page(&state, StatusCode::OK, next, None)
}

/// `POST PREFIX/login`.
pub(crate) async fn login(
    State(state): State<AppState>,
    ctx: Option<Extension<ListenerCtx>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let tls = ctx.is_some_and(|c| c.tls);
    let next = safe_next(form.next.as_deref()).to_owned();
    if !request_is_same_origin(&headers, tls) {
        Stats::bump(&state.stats().signin_refused);
        let addr = peer.as_ref().map(|p| p.0 .0.ip());
        state.refusals().record(addr, Reason::SigninCrossOrigin, &login_path(&state));
        return (StatusCode::FORBIDDEN, "forbidden: sign in from meshgate's own sign-in page\n").into_response();
    }
    let Some(credentials) = state.credentials() else {
        return page(&state, StatusCode::NOT_FOUND, &next, None);
    };
    if let Some(Extension(ConnectInfo(peer))) = peer {
        if !state.login_attempts().allow(peer.ip()) {
            Stats::bump(&state.stats().signin_refused);
            state.refusals().record(Some(peer.ip()), Reason::SigninTooMany, &login_path(&state));
            return page(&state, StatusCode::TOO_MANY_REQUESTS, &next, Some("Too many attempts. Wait a minute."));
        }
    }
    let right = token_value_matches(form.token.trim().as_bytes(), credentials.token());
    if !right {
        Stats::bump(&state.stats().signin_refused);
        return page(&state, StatusCode::UNAUTHORIZED, &next, Some("That token is not right."));
    }
    let sessions = credentials.sessions();
    let cookie = sessions.set_cookie(&sessions.issue(), tls);
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, next.as_str()), (header::SET_COOKIE, cookie.as_str()), (header::CACHE_CONTROL, "no-store")],
    )
        .into_response()
}

/// `PREFIX/login`, for the refusal log.
fn login_path(state: &AppState) -> String {
    format!("{}/login", state.signin_prefix().unwrap_or(""))
}

/// `POST PREFIX/logout`.
pub(crate) async fn logout(
    State(state): State<AppState>,
    ctx: Option<Extension<ListenerCtx>>,
    headers: HeaderMap,
) -> Response {
    let tls = ctx.is_some_and(|c| c.tls);
    if !request_is_same_origin(&headers, tls) {
        return (StatusCode::FORBIDDEN, "forbidden: sign out from meshgate's own page\n").into_response();
    }
    if let Some(k) = state.credentials() {
        for c in session::cookie_values(&headers) {
            k.sessions().revoke(c);
        }
    }
    let to = format!("{}/login", state.signin_prefix().unwrap_or(""));
    (StatusCode::SEE_OTHER, [(header::LOCATION, to), (header::SET_COOKIE, clear_cookie(tls))]).into_response()
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(state: &AppState, status: StatusCode, next: &str, error: Option<&str>) -> Response {
    let prefix = escape(state.signin_prefix().unwrap_or(""));
    let body = if !state.has_token() {
        "<p>Sign-in is not set up on this gateway: it has no token. Ask its operator.</p>".to_owned()
    } else {
        let error = error.map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e))).unwrap_or_default();
        format!(
            r#"{error}<form method="post" action="{prefix}/login">
  <label for="token">Access token</label>
  <input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
  <input type="hidden" name="next" value="{next}">
  <button type="submit">Sign in</button>
</form>"#,
            next = escape(next)
        )
    };
    let html = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · meshgate</title>
<style>
  :root {{ color-scheme: light dark; --accent: #2f6fde; }}
  body {{ margin: 0; min-height: 100vh; display: grid; place-items: center;
         font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif;
         background: Canvas; color: CanvasText; }}
  main {{ width: min(22rem, 90vw); padding: 2rem; border-radius: 12px;
         border: 1px solid color-mix(in srgb, CanvasText 15%, transparent);
         box-shadow: 0 8px 30px color-mix(in srgb, CanvasText 10%, transparent); }}
  h1 {{ margin: 0 0 .25rem; font-size: 1.3rem; }}
  .sub {{ margin: 0 0 1.5rem; opacity: .7; font-size: .9rem; }}
  label {{ display: block; font-weight: 600; margin-bottom: .35rem; }}
  input[type=password] {{ box-sizing: border-box; width: 100%; padding: .6rem .7rem; font: inherit;
         border-radius: 8px; border: 1px solid color-mix(in srgb, CanvasText 30%, transparent); }}
  button {{ margin-top: 1rem; width: 100%; padding: .65rem; font: inherit; font-weight: 600;
         color: white; background: var(--accent); border: 0; border-radius: 8px; cursor: pointer; }}
  button:hover {{ filter: brightness(1.1); }}
  .error {{ color: #c62828; background: color-mix(in srgb, #c62828 12%, transparent);
         padding: .5rem .7rem; border-radius: 8px; }}
</style>
</head>
<body>
<main>
<h1>Sign in</h1>
<p class="sub">This service is on your mesh behind meshgate. Enter its access token once; this browser stays signed in for {hours} hours.</p>
{body}
</main>
</body>
</html>
"#,
        hours = state.credentials().map_or(0, |k| k.sessions().ttl().as_secs() / 3600),
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            // The page is only ever shown as itself: no framing, no scripts, no outside assets.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
            // Not `no-referrer`: under it browsers send `Origin: null` with the
            // form's own POST, which the same-origin check must refuse.
            (header::REFERRER_POLICY, "same-origin"),
        ],
        html,
    )
        .into_response()
}

/// The most sign-in attempts per address per minute (re-exported for docs).
pub const ATTEMPTS_PER_MINUTE: u32 = LOGIN_ATTEMPTS_PER_MINUTE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_only_leads_to_a_path_on_this_site() {
        for ok in ["/", "/app", "/app?x=1&y=//z", "/a/b#c"] {
            assert!(is_safe_next(ok), "{ok}");
        }
        for bad in ["", "app", "//evil.com", "/\\evil.com", "https://evil.com", "/a\nb", "\\\\evil", "/\\/evil"] {
            assert!(!is_safe_next(bad), "{bad:?}");
        }
        assert_eq!(safe_next(Some("//evil.com")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn origin_must_match_scheme_and_host() {
        let h = |o: &str, host: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ORIGIN, o.parse().unwrap());
            m.insert(header::HOST, host.parse().unwrap());
            m
        };
        assert!(request_is_same_origin(&h("http://10.8.0.1:18789", "10.8.0.1:18789"), false));
        assert!(request_is_same_origin(&h("https://10.8.0.1:18789", "10.8.0.1:18789"), true));
        assert!(!request_is_same_origin(&h("https://10.8.0.1:18789", "10.8.0.1:18789"), false));
        assert!(!request_is_same_origin(&h("http://evil.com", "10.8.0.1:18789"), false));
        assert!(!request_is_same_origin(&h("null", "10.8.0.1:18789"), false));
        assert!(!request_is_same_origin(&HeaderMap::new(), false));
    }

    #[test]
    fn escaping() {
        assert_eq!(escape(r#"/a?"><script>&'"#), "/a?&quot;&gt;&lt;script&gt;&amp;&#39;");
    }
}
