//! Sign-in for browsers and peer identity, through the router with
//! `tower::ServiceExt::oneshot` on a non-loopback listener context: the
//! redirect, the page, the cookie, logout, and the doors each one refuses.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::{Extension, Router};
use meshgate::gateway::identity::Caller;
use meshgate::gateway::{app, AppState, ListenerCtx, PeerIdentity, Token};
use tower::ServiceExt;

const TOKEN: &str = "correct-horse-battery-staple";
const HOST: &str = "10.8.0.1:18789";

fn state() -> AppState {
    AppState::new(Some(Token::new(TOKEN, "test").unwrap())).with_signin("")
}

fn router(state: &AppState, tls: bool, caller: Option<PeerIdentity>) -> Router {
    let ctx = ListenerCtx { local: HOST.parse().unwrap(), loopback: false, tls };
    app(state.clone())
        .layer(Extension(Caller(caller.map(Arc::new))))
        .layer(Extension(ctx))
        .layer(Extension(axum::extract::ConnectInfo::<std::net::SocketAddr>("10.8.0.2:40000".parse().unwrap())))
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn send(router: Router, req: Request<Body>) -> Reply {
    let resp = router.oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    Reply { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
}

fn page_load(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut r = Request::get(path).header(header::HOST, HOST).header(header::ACCEPT, "text/html,application/xhtml+xml");
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    r.body(Body::empty()).unwrap()
}

fn post_login(token: &str, next: &str, origin: Option<&str>) -> Request<Body> {
    let mut r = Request::post("/login")
        .header(header::HOST, HOST)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(o) = origin {
        r = r.header(header::ORIGIN, o);
    }
    let form = format!(
        "token={}&next={}",
        percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC),
        percent_encoding::utf8_percent_encode(next, percent_encoding::NON_ALPHANUMERIC)
    );
    r.body(Body::from(form)).unwrap()
}

/// The `name=value` of a `Set-Cookie` header.
fn cookie_pair(reply: &Reply) -> String {
    let set = reply.headers.get(header::SET_COOKIE).expect("a Set-Cookie").to_str().unwrap();
    set.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn a_page_load_without_credentials_is_sent_to_sign_in() {
    let s = state();
    let r = send(router(&s, false, None), page_load("/status?x=1", None)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.headers[header::LOCATION], "/login?next=%2Fstatus%3Fx%3D1");
    // Not a page load (a script, curl): the plain 401, which closes the connection.
    let req = Request::get("/status").header(header::HOST, HOST).body(Body::empty()).unwrap();
    let r = send(router(&s, false, None), req).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers[header::CONNECTION], "close");
    // Without a token there is nothing to sign in with: the plain 401 too.
    let open = AppState::new(None).with_signin("");
    let r = send(router(&open, false, None), page_load("/status", None)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn signing_in_gives_a_cookie_that_opens_the_pages_until_logout() {
    let s = state();
    let page = send(router(&s, false, None), page_load("/login?next=%2Fstatus", None)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<form method=\"post\" action=\"/login\">"), "{}", page.body);
    assert!(page.body.contains("name=\"next\" value=\"/status\""), "{}", page.body);
    assert!(!page.body.contains("http://") && !page.body.contains("https://"), "no external assets");

    let r = send(router(&s, false, None), post_login(TOKEN, "/status", Some(&format!("http://{HOST}")))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.headers[header::LOCATION], "/status");
    let set = r.headers[header::SET_COOKIE].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Secure"), "a plain-HTTP listener cannot keep a Secure cookie: {set}");
    assert!(!set.contains(TOKEN), "the cookie holds no secret: {set}");
    let cookie = cookie_pair(&r);

    let r = send(router(&s, false, None), page_load("/status", Some(&cookie))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // Logout ends it: the same cookie, replayed, is sent to sign in again.
    let logout = Request::post("/logout")
        .header(header::HOST, HOST)
        .header(header::ORIGIN, format!("http://{HOST}"))
        .header(header::COOKIE, &cookie)
        .body(Body::empty())
        .unwrap();
    let r = send(router(&s, false, None), logout).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.headers[header::SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    let r = send(router(&s, false, None), page_load("/status", Some(&cookie))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_tls_listener_sets_a_secure_cookie() {
    let s = state();
    let r = send(router(&s, true, None), post_login(TOKEN, "/", Some(&format!("https://{HOST}")))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.headers[header::SET_COOKIE].to_str().unwrap().contains("; Secure"));
    // The http:// origin is not this listener's.
    let r = send(router(&s, true, None), post_login(TOKEN, "/", Some(&format!("http://{HOST}")))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_wrong_token_gets_the_same_page_every_time_then_a_pause() {
    let s = state();
    let origin = format!("http://{HOST}");
    let first = send(router(&s, false, None), post_login("nope", "/", Some(&origin))).await;
    assert_eq!(first.status, StatusCode::UNAUTHORIZED);
    assert!(first.headers.get(header::SET_COOKIE).is_none());
    for guess in ["nope", "also-wrong", &TOKEN[..TOKEN.len() - 1]] {
        let again = send(router(&s, false, None), post_login(guess, "/", Some(&origin))).await;
        assert_eq!((again.status, &again.body), (first.status, &first.body), "{guess}");
    }
    // Five tries a minute per address: the sixth, even with the right token, waits.
    let _ = send(router(&s, false, None), post_login("nope", "/", Some(&origin))).await;
    let r = send(router(&s, false, None), post_login(TOKEN, "/", Some(&origin))).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers.get(header::SET_COOKIE).is_none());
}

#[tokio::test]
async fn sign_in_refuses_other_origins_and_open_redirects() {
    let s = state();
    for origin in [None, Some("http://evil.example"), Some("null")] {
        let r = send(router(&s, false, None), post_login(TOKEN, "/", origin)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{origin:?}");
        assert!(r.headers.get(header::SET_COOKIE).is_none());
    }
    let origin = format!("http://{HOST}");
    for next in ["//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"] {
        let r = send(router(&s, false, None), post_login(TOKEN, next, Some(&origin))).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
        assert_eq!(r.headers[header::LOCATION], "/", "{next}");
    }
}

#[tokio::test]
async fn tampered_and_foreign_cookies_do_not_open_anything() {
    let s = state();
    let r = send(router(&s, false, None), post_login(TOKEN, "/", Some(&format!("http://{HOST}")))).await;
    let cookie = cookie_pair(&r);
    let (head, mac) = cookie.rsplit_once('.').unwrap();
    let tampered =
        format!("{head}.{}", if mac.starts_with('A') { mac.replacen('A', "B", 1) } else { format!("A{}", &mac[1..]) });
    // Another gateway's (another token's) cookie.
    let other = AppState::new(Some(Token::new("another-token-entirely", "test").unwrap())).with_signin("");
    let r =
        send(router(&other, false, None), post_login("another-token-entirely", "/", Some(&format!("http://{HOST}"))))
            .await;
    let foreign = cookie_pair(&r);
    for c in [tampered.as_str(), foreign.as_str(), "meshgate_session=v1.99999999999.x.y"] {
        let r = send(router(&s, false, None), page_load("/status", Some(c))).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{c}");
    }
}

fn identity(allowed: bool) -> PeerIdentity {
    PeerIdentity {
        mesh: "wireguard".into(),
        interface: "wg0".into(),
        key: Some("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=".into()),
        name: Some("laptop".into()),
        login: None,
        node: None,
        tags: Vec::new(),
        allowed,
    }
}

#[tokio::test]
async fn an_allowed_peer_needs_no_token_and_whoami_says_who() {
    let s = state();
    let req = || Request::get("/status").header(header::HOST, HOST).body(Body::empty()).unwrap();
    let r = send(router(&s, false, Some(identity(true))), req()).await;
    assert_eq!(r.status, StatusCode::OK);
    // Known but not allowed: the token is still needed.
    let r = send(router(&s, false, Some(identity(false))), req()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let who = || Request::get("/whoami").header(header::HOST, HOST).body(Body::empty()).unwrap();
    let r = send(router(&s, false, Some(identity(false))), who()).await;
    assert_eq!(r.status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["known"], true);
    assert_eq!(v["name"], "laptop");
    assert_eq!(v["key"], "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=");
    assert_eq!(v["allowed"], false);
    let r = send(router(&s, false, None), who()).await;
    assert_eq!(r.body, r#"{"known":false}"#);
    // whoami is the caller's own business: no listener, token or peer list in it.
    assert!(!r.body.contains(TOKEN));
}

#[tokio::test]
async fn only_get_and_head_page_loads_are_redirected() {
    let s = state();
    for method in [Method::POST, Method::DELETE] {
        let req = Request::builder()
            .method(method.clone())
            .uri("/status")
            .header(header::HOST, HOST)
            .header(header::ACCEPT, "text/html")
            .body(Body::empty())
            .unwrap();
        let r = send(router(&s, false, None), req).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method}");
    }
}

/// SameSite is per site, not per origin: a page on another port of the same
/// host could post here with the cookie. A state-changing request that has
/// only the session cookie must come from this origin.
#[tokio::test]
async fn a_session_cookie_alone_does_not_carry_a_cross_origin_post() {
    let s = state();
    let r = send(router(&s, false, None), post_login(TOKEN, "/", Some(&format!("http://{HOST}")))).await;
    let cookie = cookie_pair(&r);
    let post = |origin: Option<&str>, token: bool| {
        let mut r = Request::post("/status").header(header::HOST, HOST).header(header::COOKIE, &cookie);
        if let Some(o) = origin {
            r = r.header(header::ORIGIN, o);
        }
        if token {
            r = r.header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        }
        r.body(Body::empty()).unwrap()
    };
    for origin in [Some("http://10.8.0.1:3000"), Some("null"), None] {
        let r = send(router(&s, false, None), post(origin, false)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{origin:?}: {}", r.body);
    }
    // From its own origin the cookie carries it (the route itself is GET-only: 405).
    let r = send(router(&s, false, None), post(Some(&format!("http://{HOST}")), false)).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    // The token carries any request, whatever its origin.
    let r = send(router(&s, false, None), post(Some("http://10.8.0.1:3000"), true)).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    // A page load (GET) needs no Origin.
    let r = send(router(&s, false, None), page_load("/status", Some(&cookie))).await;
    assert_eq!(r.status, StatusCode::OK);
}

/// Another service on the same host can set a cookie of the same name (cookies
/// ignore ports): ours is still found among them.
#[tokio::test]
async fn a_look_alike_session_cookie_does_not_lock_the_user_out() {
    let s = state();
    let r = send(router(&s, false, None), post_login(TOKEN, "/", Some(&format!("http://{HOST}")))).await;
    let ours = cookie_pair(&r);
    let both = format!("meshgate_session=junk; {ours}");
    let r = send(router(&s, false, None), page_load("/status", Some(&both))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}
