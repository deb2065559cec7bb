//! Issue #25.1 in a real browser: a web page cannot borrow the identity of
//! the allowed peer its browser runs on.
//!
//! The scene: the WireGuard pair of the lab (`crate::lab::WgPair`), meshgate on
//! the gateway (`--allow-peer` the peer's key, an upstream that logs every
//! request it gets, the access log on), Chromium on the peer, and a third
//! namespace, the attacker's, joined to the peer by a veth and serving its
//! pages from a private address (10.99.0.1) and a TEST-NET one (203.0.113.10,
//! which Chromium counts as public). Each attack is one test; each asserts
//! that meshgate refused it (its access log shows the status) and that
//! nothing of it reached the upstream. The last test is the positive one: the
//! service's own page, as the allowed peer without a token, still posts and
//! opens its WebSocket, under its address and under an allowed name, and a
//! link from another site still opens it.
//!
//! Chromium's own Local/Private Network Access checks are turned off
//! (`--disable-features=...`): they stop some of these requests in Chromium
//! only, and this test is about what meshgate refuses whichever browser asks.
//! DNS rebinding is modelled with `--host-resolver-rules`: `attacker.example`
//! resolves to the mesh address, as it would once the attacker's DNS
//! re-pointed it, and the attacker's script runs in that origin.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::browser_real::{chromium_or_skip, serve_logged, Chromium, UPSTREAM, WS_ROUND_TRIP};
use crate::lab::{Lab, Proc, WgPair};
use crate::labnet::{token_file, wait_connect};

/// meshgate's port on the mesh address, the upstream's on the gateway's loopback.
const PORT: u16 = 18830;
const UPSTREAM_PORT: u16 = 18831;
/// Where the attacker serves its pages.
const PRIVATE_PAGE: &str = "http://10.99.0.1:8080";
const TESTNET_PAGE: &str = "http://203.0.113.10:8080";

/// What turns off Chromium's own defences against pages reaching private
/// addresses (so meshgate's are what is tested).
const NO_BROWSER_LNA: &str = "--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests,\
PrivateNetworkAccessSendPreflights,PrivateNetworkAccessRespectPreflightResults,\
PrivateNetworkAccessForNavigations,PrivateNetworkAccessForWorkers";

/// Everything but the browser.
struct Scene {
    pair: WgPair,
    /// The attacker's namespace and its page server.
    _attacker: Lab,
    _pages: Proc,
    _upstream: Proc,
    _gateway: Proc,
    upstream_log: PathBuf,
    gateway_log: PathBuf,
    _work: tempfile::TempDir,
}

/// The attacker's pages; `TARGET` is the service on the mesh.
fn pages(dir: &Path, target: &str) {
    let write = |name: &str, body: String| {
        std::fs::write(dir.join(name), format!("<!doctype html><meta charset=utf-8><body>{body}</body>"))
            .expect("an attacker page")
    };
    // An auto-submitted top-level form.
    write(
        "form.html",
        format!(
            r#"<form id=f method=post action="{target}/api/form-top"><input name=amount value=1000></form>
<script>document.getElementById('f').submit()</script>"#
        ),
    );
    // A no-cors fetch (the answer is opaque, but the request is what counts).
    write(
        "fetch.html",
        format!(
            r#"<script>
fetch("{target}/api/fetch-from-" + location.hostname, {{method: "POST", mode: "no-cors", credentials: "include", body: "amount=1000"}})
  .then(() => document.title = "sent", (e) => document.title = "error " + e);
</script>"#
        ),
    );
    // A form posted into a hidden iframe.
    write(
        "iframe.html",
        format!(
            r#"<iframe name=hidden style="display:none"></iframe>
<form id=f method=post target=hidden><input name=amount value=1000></form>
<script>
const f = document.getElementById('f');
f.action = "{target}/api/iframe-from-" + location.hostname;
document.querySelector('iframe').onload = () => document.title = "loaded";
f.submit();
</script>"#
        ),
    );
    // A plain link, followed: a top-level GET navigation from another site.
    write("link.html", format!(r#"<a id=a href="{target}/from-a-link">the service</a>"#));
}

impl Scene {
    /// Builds the scene, or `None` (a skip outside CI) where the machine cannot.
    fn new(test: &str) -> Option<Scene> {
        if !chromium_or_skip(test) {
            return None;
        }
        let pair = WgPair::or_skip(test, "wg0")?;
        let work = tempfile::tempdir().expect("a temporary directory");
        let upstream_log = work.path().join("upstream.log");
        let gateway_log = work.path().join("gateway.log");
        let site = work.path().join("site");
        std::fs::create_dir(&site).expect("the attacker's site");
        let wg = pair.gateway_wg_addr();
        pages(&site, &format!("http://{wg}:{PORT}"));

        // The attacker: its own namespace, a veth to the peer, two addresses.
        let attacker = pair.peer.sibling().unwrap_or_else(|e| panic!("the attacker's namespace: {e}"));
        attacker.quiet_ipv6().unwrap_or_else(|e| panic!("{e}"));
        attacker.sh_ok(&format!(
            "set -e
ip link add att0 type veth peer name att1 netns {peer}
ip addr add 10.99.0.1/24 dev att0
ip addr add 203.0.113.10/24 dev att0
ip link set att0 up",
            peer = pair.peer.pid()
        ));
        pair.peer.sh_ok(
            "set -e
ip addr add 10.99.0.2/24 dev att1
ip addr add 203.0.113.2/24 dev att1
ip link set att1 up",
        );
        let site = site.to_str().expect("UTF-8 path");
        let pages = attacker.spawn("python3", &["-m", "http.server", "8080", "--bind", "0.0.0.0", "--directory", site]);
        for page in [PRIVATE_PAGE, TESTNET_PAGE] {
            assert!(
                wait_connect(|| pair.peer.command("curl"), &format!("{page}/link.html"), true),
                "the attacker's pages are not served at {page}"
            );
        }
        // Settled before the browser starts: the peer's links are UP.
        assert!(
            crate::lab::wait_until(std::time::Duration::from_secs(5), || {
                String::from_utf8_lossy(&pair.peer.sh("ip -o link show att1").stdout).contains("state UP")
            }),
            "the attacker's veth did not come up"
        );

        let upstream = pair.gateway.spawn(
            "python3",
            &["-c", UPSTREAM, &UPSTREAM_PORT.to_string(), upstream_log.to_str().expect("UTF-8 path")],
        );
        assert!(
            wait_connect(|| pair.gateway.command("curl"), &format!("http://127.0.0.1:{UPSTREAM_PORT}/ready"), true),
            "the upstream service did not start"
        );
        let token = token_file(&pair.gateway);
        let port = PORT.to_string();
        let upstream_url = format!("http://127.0.0.1:{UPSTREAM_PORT}");
        let args = [
            "--bind",
            "wireguard",
            "--port",
            &port,
            "--upstream",
            &upstream_url,
            "--token-file",
            &token,
            "--allow-peer",
            pair.peer_public_key(),
            "--allow-host",
            "gw.lab",
            "--access-log",
            "--log-format",
            "json",
        ];
        let log = std::fs::File::create(&gateway_log).expect("the gateway's log");
        let (gateway, _) = serve_logged(&pair.gateway, &args, &format!("listening on http://{wg}:{PORT}"), log.into());
        Some(Scene {
            pair,
            _attacker: attacker,
            _pages: pages,
            _upstream: upstream,
            _gateway: gateway,
            upstream_log,
            gateway_log,
            _work: work,
        })
    }

    /// A browser on the peer, with `extra` flags besides [`NO_BROWSER_LNA`].
    fn browser(&self, extra: &[&str]) -> Chromium<'_> {
        let mut flags = vec![NO_BROWSER_LNA.to_owned()];
        flags.extend(extra.iter().map(|s| (*s).to_owned()));
        Chromium::start(&self.pair.peer, &flags)
    }

    /// The service's origin on the mesh.
    fn origin(&self) -> String {
        format!("http://{}:{PORT}", self.pair.gateway_wg_addr())
    }

    /// Every request the upstream got (but the test's own `/ready`).
    fn upstream_saw(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.upstream_log).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
            .filter(|r| r["path"] != "/ready")
            .collect()
    }

    /// The statuses meshgate's access log shows for `path`, waiting (bounded)
    /// until there is at least one.
    fn gateway_answered(&self, path: &str) -> Vec<u64> {
        let mut found = Vec::new();
        crate::lab::wait_until(std::time::Duration::from_secs(5), || {
            let text = std::fs::read_to_string(&self.gateway_log).unwrap_or_default();
            found = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|l| l["target"] == "meshgate::access" && l["path"] == path)
                .filter_map(|l| l["status"].as_u64())
                .collect();
            !found.is_empty()
        });
        found
    }

    /// Asserts that meshgate refused `path` with `status` and that the
    /// upstream never saw it.
    fn assert_refused(&self, path: &str, status: u64) {
        let answered = self.gateway_answered(path);
        let log = std::fs::read_to_string(&self.gateway_log).unwrap_or_default();
        assert!(
            !answered.is_empty() && answered.iter().all(|s| *s == status),
            "meshgate answered {path} with {answered:?}, not {status}; its log:\n{log}"
        );
        let saw = self.upstream_saw();
        assert!(saw.iter().all(|r| r["path"] != path), "{path} reached the upstream: {saw:?}");
    }
}

/// A page on another site auto-submits a top-level `<form method=POST>` to
/// the service: refused 403, nothing forwarded.
#[test]
fn a_cross_site_form_posted_at_the_top_level_does_not_act_as_the_peer() {
    let Some(scene) = Scene::new("a_cross_site_form_posted_at_the_top_level_does_not_act_as_the_peer") else {
        return;
    };
    let mut browser = scene.browser(&[]);
    browser.navigate(&format!("{TESTNET_PAGE}/form.html"));
    let at = browser.wait_for(
        "document.readyState === 'complete' && location.pathname === '/api/form-top' && document.body.innerText",
        "meshgate's answer to the posted form",
    );
    assert!(at.as_str().unwrap_or("").starts_with("forbidden"), "the form's answer: {at}");
    scene.assert_refused("/api/form-top", 403);
    // Now on meshgate's 403 page, at the service's origin, the browser may
    // ask that origin for its icon by itself: a same-origin GET, the peer's own.
    let saw = scene.upstream_saw();
    assert!(saw.iter().all(|r| r["method"] == "GET" && r["path"] == "/favicon.ico"), "the upstream saw {saw:?}");
}

/// A `no-cors` fetch from a page on a private address and from one on a
/// TEST-NET address: each reaches meshgate and is refused there.
#[test]
fn a_no_cors_fetch_from_a_private_or_a_testnet_page_does_not_act_as_the_peer() {
    let Some(scene) = Scene::new("a_no_cors_fetch_from_a_private_or_a_testnet_page_does_not_act_as_the_peer") else {
        return;
    };
    let mut browser = scene.browser(&[]);
    for (page, host) in [(PRIVATE_PAGE, "10.99.0.1"), (TESTNET_PAGE, "203.0.113.10")] {
        browser.navigate(&format!("{page}/fetch.html"));
        let title = browser.wait_for("document.title", "the fetch's end");
        assert_eq!(title, "sent", "the fetch from {page} did not go out");
        scene.assert_refused(&format!("/api/fetch-from-{host}"), 403);
    }
    assert!(scene.upstream_saw().is_empty(), "the upstream saw {:?}", scene.upstream_saw());
}

/// A form posted into a hidden iframe, from a private and a TEST-NET page.
#[test]
fn a_form_posted_into_a_hidden_iframe_does_not_act_as_the_peer() {
    let Some(scene) = Scene::new("a_form_posted_into_a_hidden_iframe_does_not_act_as_the_peer") else {
        return;
    };
    let mut browser = scene.browser(&[]);
    for (page, host) in [(PRIVATE_PAGE, "10.99.0.1"), (TESTNET_PAGE, "203.0.113.10")] {
        browser.navigate(&format!("{page}/iframe.html"));
        browser.wait_for("document.title === 'loaded'", "the hidden iframe's load");
        scene.assert_refused(&format!("/api/iframe-from-{host}"), 403);
    }
    assert!(scene.upstream_saw().is_empty(), "the upstream saw {:?}", scene.upstream_saw());
}

/// DNS rebinding: `attacker.example` now resolves to the mesh address, and
/// the attacker's script, in that origin, reads the service's pages.
#[test]
fn a_rebound_name_cannot_read_the_service_as_the_peer() {
    let Some(scene) = Scene::new("a_rebound_name_cannot_read_the_service_as_the_peer") else {
        return;
    };
    let wg = scene.pair.gateway_wg_addr();
    let mut browser = scene.browser(&[&format!("--host-resolver-rules=MAP attacker.example {wg}")]);
    browser.navigate(&format!("http://attacker.example:{PORT}/"));
    let text = browser.wait_for(
        "document.readyState === 'complete' && location.host === 'attacker.example:18830' && document.body.innerText",
        "the rebound page",
    );
    assert!(text.as_str().unwrap_or("").starts_with("misdirected request"), "the rebound page: {text}");
    // The attacker's script in the rebound origin: a same-origin read.
    let read = browser.eval("fetch('/secret').then(async (r) => r.status + ' ' + (await r.text()).slice(0, 40))");
    assert!(read.as_str().unwrap_or("").starts_with("421 misdirected"), "the script read {read}");
    // Nor who the peer is (meshgate's own route, open to callers without credentials).
    let who =
        browser.eval("fetch('/_meshgate/whoami').then(async (r) => r.status + ' ' + (await r.text()).slice(0, 60))");
    assert!(who.as_str().unwrap_or("").starts_with("421 misdirected"), "the script read {who}");
    scene.assert_refused("/", 421);
    scene.assert_refused("/secret", 421);
    scene.assert_refused("/_meshgate/whoami", 421);
    assert!(scene.upstream_saw().is_empty(), "the upstream saw {:?}", scene.upstream_saw());
}

/// DNS rebinding, a WebSocket: its `Origin` (`http://attacker.example:PORT`)
/// matches its `Host`, so only the Host check stops it.
#[test]
fn a_rebound_name_cannot_open_a_websocket_as_the_peer() {
    let Some(scene) = Scene::new("a_rebound_name_cannot_open_a_websocket_as_the_peer") else {
        return;
    };
    let wg = scene.pair.gateway_wg_addr();
    let mut browser = scene.browser(&[&format!("--host-resolver-rules=MAP attacker.example {wg}")]);
    browser.navigate(&format!("http://attacker.example:{PORT}/"));
    browser.wait_for(
        "document.readyState === 'complete' && location.host === 'attacker.example:18830'",
        "the rebound page",
    );
    let opened = browser.eval(
        r#"new Promise((done) => {
  const ws = new WebSocket("ws://attacker.example:18830/ws");
  setTimeout(() => done("no answer within 5 s"), 5000);
  ws.onopen = () => { done("open"); ws.close(); };
  ws.onerror = () => done("refused");
})"#,
    );
    assert_eq!(opened, "refused");
    scene.assert_refused("/ws", 421);
    assert!(scene.upstream_saw().is_empty(), "the upstream saw {:?}", scene.upstream_saw());
}

/// What must keep working: the service's own page, as the allowed peer and
/// without a token, posts and opens its WebSocket, by address and by an
/// allowed name; a link from another site opens the service.
#[test]
fn the_services_own_page_still_posts_and_opens_its_websocket_as_the_peer() {
    let Some(scene) = Scene::new("the_services_own_page_still_posts_and_opens_its_websocket_as_the_peer") else {
        return;
    };
    let wg = scene.pair.gateway_wg_addr();
    let mut browser = scene.browser(&[&format!("--host-resolver-rules=MAP gw.lab {wg}")]);
    for origin in [scene.origin(), format!("http://gw.lab:{PORT}")] {
        browser.navigate(&format!("{origin}/"));
        let heading = browser.wait_for(
            "document.readyState === 'complete' && document.getElementById('hello')?.textContent",
            "the dashboard as the allowed peer",
        );
        assert_eq!(heading, "Dashboard of the lab service", "at {origin}");
        let posted = browser.eval(
            "fetch('/api/save', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{\"a\":1}'})
               .then((r) => r.status)",
        );
        assert_eq!(posted, 200, "the page's own POST at {origin}");
        let echo = browser.try_eval(WS_ROUND_TRIP).unwrap_or_else(|e| panic!("WebSocket at {origin}: {e}"));
        assert_eq!(echo, "echo: ping from the page", "at {origin}");
    }
    // A link on another site, followed.
    browser.navigate(&format!("{TESTNET_PAGE}/link.html"));
    browser.wait_for("document.readyState === 'complete' && document.getElementById('a')", "the attacker's link page");
    browser.eval("document.getElementById('a').click()");
    let heading = browser.wait_for(
        "document.readyState === 'complete' && location.pathname === '/from-a-link' && document.getElementById('hello')?.textContent",
        "the service, by a link from another site",
    );
    assert_eq!(heading, "Dashboard of the lab service");

    let saw = scene.upstream_saw();
    let posts: Vec<&Value> = saw.iter().filter(|r| r["method"] == "POST" && r["path"] == "/api/save").collect();
    assert_eq!(posts.len(), 2, "the upstream saw {saw:?}");
    for r in &saw {
        let headers = r["headers"].to_string();
        assert!(headers.contains("meshgate-peer-key"), "forwarded without the peer's identity: {r}");
        assert!(!headers.to_ascii_lowercase().contains("\"authorization\""), "credentials reached the upstream: {r}");
    }
    let sockets = saw.iter().filter(|r| r["path"] == "/ws").count();
    assert_eq!(sockets, 2, "the upstream saw {saw:?}");
    assert!(saw.iter().any(|r| r["path"] == "/from-a-link"), "the link did not reach the upstream: {saw:?}");
}
