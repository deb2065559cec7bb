//! A real browser against meshgate: Debian's `chromium`, headless, run inside
//! the WireGuard peer's namespace of the lab (`crate::lab::WgPair`), reaching
//! the gateway through a real wireguard-go tunnel.
//!
//! * Issue #14 (sign-in for browsers): a page load without credentials is sent
//!   to the sign-in page; the form takes the token; the upstream's dashboard
//!   shows; a WebSocket opened by the page's own script echoes through the
//!   proxy; the session cookie is invisible to scripts; logout sends the
//!   browser back to sign-in; the token and the cookie never reach the
//!   upstream.
//! * Issue #15 (HTTPS): with `--tls self-signed` and the printed key pinned
//!   (`--ignore-certificate-errors-spki-list`), the page is a secure context
//!   (`crypto.subtle` exists), unlike the same page over plain HTTP, and the
//!   session cookie is `Secure`, `HttpOnly`, `SameSite=Strict`.
//!
//! The browser is driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: chromium reads commands on fd 3 and writes
//! answers on fd 4, each a JSON text ended by a NUL byte). A pipe needs no port
//! inside the namespace and no WebSocket client: the test process, outside the
//! namespaces, holds both ends through `nsenter`, which execs chromium itself.
//!
//! Chromium fails requests in flight with `ERR_NETWORK_CHANGED` when a link or
//! address of its namespace changes, so [`Chromium`] records them when it
//! starts and the test fails, naming the difference, if they changed before it
//! ends (the lab must not change a browser's namespace; see `crate::lab`).
//! Nothing is retried.
//!
//! `MESHGATE_BROWSER_SCREENSHOT=FILE.png` saves a screenshot of the sign-in
//! page (to look at its markup in a real browser).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::lab::{in_ci, wait_until, Lab, Proc, WgPair};
use crate::labnet::{token_file, wait_connect, BIN, TOKEN};

/// How long one DevTools command may take.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a page may take to reach an expected state.
pub(crate) const PAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// The flags every run needs: headless, and nothing that reaches for the
/// (closed) network on its own. `--no-sandbox`: the lab makes us root in a
/// user namespace, where chromium's sandbox cannot start.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--password-store=basic",
    "--remote-debugging-pipe",
];

/// Fails the test (a skip outside CI) when chromium is not installed.
pub(crate) fn chromium_or_skip(test: &str) -> bool {
    let found =
        ["/usr/bin", "/usr/local/bin", "/bin"].iter().any(|d| std::path::Path::new(d).join("chromium").is_file());
    if found {
        return true;
    }
    let why = "chromium is not installed (apt-get install chromium; .ci/run does)";
    if in_ci() {
        panic!("{test}: {why}");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
    false
}

/// A headless chromium inside a lab, attached to one page.
pub(crate) struct Chromium<'l> {
    /// The lab it runs in, and its links and addresses when it started: a
    /// change while it runs would fail its requests (`ERR_NETWORK_CHANGED`),
    /// so the lab must not make one, and a test fails saying so if it does.
    lab: &'l Lab,
    network: String,
    proc: Proc,
    commands: ChildStdin,
    answers: mpsc::Receiver<Value>,
    next_id: u64,
    /// The DevTools session of the page every page-level command goes to.
    session: String,
    /// Profile, HOME and chromium's stderr; removed on drop.
    dir: tempfile::TempDir,
}

impl<'l> Chromium<'l> {
    /// Starts chromium in `lab` with `extra` flags and opens a blank page.
    pub(crate) fn start(lab: &'l Lab, extra: &[String]) -> Chromium<'l> {
        Chromium::start_in(lab, extra, tempfile::tempdir().expect("a temporary directory"))
    }

    /// [`Chromium::start`] with `dir` as its HOME (and profile's parent):
    /// for a test that prepares the home first (an NSS database, say).
    pub(crate) fn start_in(lab: &'l Lab, extra: &[String], dir: tempfile::TempDir) -> Chromium<'l> {
        let network = lab.links_and_addresses();
        let profile = dir.path().join("profile");
        let log = dir.path().join("stderr.log");
        let mut cmd = lab.command("sh");
        // fd 3 = our stdin pipe (commands), fd 4 = our stdout pipe (answers).
        cmd.args(["-c", r#"log=$1; shift; exec chromium "$@" 3<&0 4>&1 </dev/null >/dev/null 2>"$log""#, "sh"])
            .arg(&log)
            .args(CHROMIUM_FLAGS)
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg("about:blank")
            .env("HOME", dir.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_CACHE_HOME")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut proc = Proc::spawn(&mut cmd);
        let commands = proc.child().stdin.take().expect("piped stdin");
        let out = proc.child().stdout.take().expect("piped stdout");
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            loop {
                let mut msg = Vec::new();
                match r.read_until(0, &mut msg) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if msg.last() == Some(&0) {
                            msg.pop();
                        }
                        let Ok(v) = serde_json::from_slice::<Value>(&msg) else { continue };
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let mut browser = Chromium { lab, network, proc, commands, answers, next_id: 0, session: String::new(), dir };
        let target = browser.browser_call("Target.createTarget", json!({"url": "about:blank"}));
        let attached = browser
            .browser_call("Target.attachToTarget", json!({"targetId": target["targetId"].clone(), "flatten": true}));
        browser.session = attached["sessionId"].as_str().expect("a DevTools session id").to_owned();
        browser
    }

    /// The end of chromium's stderr, for failure messages, and what changed
    /// in the lab's network since it started, if anything did.
    pub(crate) fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.contains("dbus")).collect();
        lines[lines.len().saturating_sub(15)..].join("\n") + &self.network_change()
    }

    /// Takes the lab's links and addresses as they are now as the ones the
    /// browser started with: for a test that changes the network on purpose
    /// while the browser runs (and whose page tolerates a request failing
    /// with `ERR_NETWORK_CHANGED` then), so that only changes nobody meant
    /// still fail it.
    pub(crate) fn network_changed_on_purpose(&mut self) {
        self.network = self.lab.links_and_addresses();
    }

    /// Empty while the lab's links and addresses are as they were when
    /// chromium started; else what they were and are.
    fn network_change(&self) -> String {
        let now = self.lab.links_and_addresses();
        if now == self.network {
            return String::new();
        }
        format!(
            "\nthe lab's links or addresses changed while chromium ran (it fails requests in flight with \
             ERR_NETWORK_CHANGED then); at its start:\n{}\nnow:\n{now}",
            self.network
        )
    }

    /// Sends one command (to the page's session when `page`) and waits for
    /// its answer; events in between are dropped.
    pub(crate) fn send(&mut self, method: &str, params: Value, page: bool) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if page {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg).expect("JSON");
        bytes.push(0);
        if let Err(e) = self.commands.write_all(&bytes).and_then(|()| self.commands.flush()) {
            return Err(format!("{method}: chromium's pipe is closed ({e}); its stderr:\n{}", self.stderr_tail()));
        }
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.answers.recv_timeout(left) {
                Ok(v) if v["id"] == id => {
                    return match v.get("error") {
                        Some(e) => Err(format!("{method}: {e}")),
                        None => Ok(v["result"].clone()),
                    };
                }
                Ok(_) => {}
                Err(_) => {
                    return Err(format!(
                        "{method}: no answer within {CALL_TIMEOUT:?}; chromium's stderr:\n{}",
                        self.stderr_tail()
                    ))
                }
            }
        }
    }

    pub(crate) fn browser_call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, false).unwrap_or_else(|e| panic!("{e}"))
    }

    pub(crate) fn call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, true).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `js` in the page (a promise is awaited) and returns its value
    /// (`null` for `undefined`), or the exception it threw.
    pub(crate) fn try_eval(&mut self, js: &str) -> Result<Value, String> {
        let r = self.send(
            "Runtime.evaluate",
            json!({"expression": js, "awaitPromise": true, "returnByValue": true}),
            true,
        )?;
        if let Some(ex) = r.get("exceptionDetails") {
            let what = ex["exception"]["description"].as_str().or(ex["text"].as_str()).unwrap_or("an exception");
            return Err(format!("`{js}` threw: {what}"));
        }
        Ok(r["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    pub(crate) fn eval(&mut self, js: &str) -> Value {
        self.try_eval(js).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Polls `js` until it is truthy (errors, e.g. during a navigation,
    /// count as not yet) and returns that value; panics after [`PAGE_TIMEOUT`].
    pub(crate) fn wait_for(&mut self, js: &str, what: &str) -> Value {
        let mut last = Err(String::from("not evaluated"));
        let done = wait_until(PAGE_TIMEOUT, || {
            last = self.try_eval(js);
            matches!(&last, Ok(v) if !matches!(v, Value::Null | Value::Bool(false)) && v != "")
        });
        if done {
            return last.expect("truthy");
        }
        let at = self.try_eval("location.href + ' :: ' + document.body.innerText.slice(0, 300)");
        panic!("the browser never got to {what} (`{js}` is {last:?}); the page: {at:?}{}", self.network_change())
    }

    /// Navigates the page to `url`; panics when the load fails outright.
    pub(crate) fn navigate(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({ "url": url }));
        if let Some(e) = r.get("errorText").and_then(Value::as_str) {
            panic!("the browser could not load {url}: {e}{}", self.network_change());
        }
    }

    /// Saves a PNG of the page to `path`.
    pub(crate) fn screenshot(&mut self, path: &std::path::Path) {
        use base64::Engine as _;
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("base64 PNG");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// The cookies the browser holds for `url`, as DevTools reports them.
    pub(crate) fn cookies(&mut self, url: &str) -> Vec<Value> {
        let r = self.call("Network.getCookies", json!({ "urls": [url] }));
        r["cookies"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Chromium<'_> {
    fn drop(&mut self) {
        let changed = self.network_change();
        if !changed.is_empty() && !std::thread::panicking() {
            panic!("{changed}");
        }
        // A clean exit first (so the profile is not written while removed);
        // the Proc guard kills it if that does not work, and the lab's drop
        // kills any renderer left in the namespace.
        let _ = self.send("Browser.close", json!({}), false);
        let proc = &mut self.proc;
        wait_until(Duration::from_secs(3), || !proc.is_running());
    }
}

/// The upstream service: an HTML dashboard at every path but `/ws`, a
/// WebSocket echo at `/ws` (RFC 6455 by hand: the stdlib has no WebSocket),
/// and a log of every request's method, path and headers (one JSON per line)
/// in the file named by its second argument. A `POST` gets the same page.
pub(super) const UPSTREAM: &str = r#"
import base64, hashlib, http.server, json, sys
PORT, LOG = int(sys.argv[1]), sys.argv[2]
PAGE = b"""<!doctype html><html><head><meta charset="utf-8"><title>Lab dashboard</title></head>
<body><h1 id="hello">Dashboard of the lab service</h1></body></html>"""
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.do_GET()
    def do_GET(self):
        with open(LOG, "a") as f:
            seen = [[k.lower(), v] for k, v in self.headers.items()]
            f.write(json.dumps({"method": self.command, "path": self.path, "headers": seen}) + "\n")
        if self.path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            return self.echo()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)
    def echo(self):
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.close_connection = True
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            op, n = head[0] & 0x0F, head[1] & 0x7F
            if n == 126:
                n = int.from_bytes(self.rfile.read(2), "big")
            elif n == 127:
                n = int.from_bytes(self.rfile.read(8), "big")
            mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(n)))
            if op == 8:
                return self.frame(8, data[:2])
            if op == 9:
                self.frame(10, data)
            elif op in (1, 2):
                self.frame(op, b"echo: " + data)
    def frame(self, op, data):
        n = len(data)
        size = bytes([n]) if n < 126 else bytes([126]) + n.to_bytes(2, "big")
        self.wfile.write(bytes([0x80 | op]) + size + data)
        self.wfile.flush()
http.server.ThreadingHTTPServer(("127.0.0.1", PORT), H).serve_forever()
"#;

/// Starts `meshgate serve ARGS` in `lab` and waits (bounded) until it printed a
/// line containing `until`; returns the guard and every line up to it.
pub(crate) fn serve_until(lab: &Lab, args: &[&str], until: &str) -> (Proc, Vec<String>) {
    serve_logged(lab, args, until, Stdio::null())
}

/// [`serve_until`] with its log (stderr) going to `log`.
pub(crate) fn serve_logged(lab: &Lab, args: &[&str], until: &str, log: Stdio) -> (Proc, Vec<String>) {
    let mut cmd = lab.command(BIN);
    cmd.arg("serve")
        .args(args)
        .env_remove("MESHGATE_BIND")
        .env_remove("MESHGATE_PORT")
        .env_remove("MESHGATE_TOKEN")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(log);
    let mut proc = Proc::spawn(&mut cmd);
    let out = proc.child().stdout.take().expect("stdout");
    let rx = crate::lines(out);
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lines.last().is_some_and(|l: &String| l.contains(until)) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) => lines.push(l),
            Err(_) => panic!("meshgate serve {args:?} never printed {until:?}; it printed {lines:?}"),
        }
    }
    (proc, lines)
}

/// The `meshgate_session` cookie among `cookies`, if any.
pub(crate) fn session_cookie(cookies: &[Value]) -> Option<&Value> {
    cookies.iter().find(|c| c["name"] == "meshgate_session")
}

/// A page's own script opens a WebSocket to `/ws` on its origin, sends a text
/// and resolves with the first message back (or rejects, bounded in time).
pub(super) const WS_ROUND_TRIP: &str = r#"new Promise((ok, fail) => {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
  setTimeout(() => fail(new Error("no echo within 5 s")), 5000);
  ws.onopen = () => ws.send("ping from the page");
  ws.onmessage = (e) => { ok(e.data); ws.close(); };
  ws.onerror = () => fail(new Error("the WebSocket failed"));
})"#;

/// Issue #14's browser test, end to end in a real chromium on the peer.
#[test]
fn a_browser_on_the_peer_signs_in_uses_the_dashboard_and_its_websocket_and_signs_out() {
    const TEST: &str = "a_browser_on_the_peer_signs_in_uses_the_dashboard_and_its_websocket_and_signs_out";
    if !chromium_or_skip(TEST) {
        return;
    }
    let Some(pair) = WgPair::or_skip(TEST, "wg0") else {
        return;
    };
    let work = tempfile::tempdir().expect("a temporary directory");
    let log = work.path().join("upstream.log");
    let _upstream = pair.gateway.spawn("python3", &["-c", UPSTREAM, "18801", log.to_str().expect("UTF-8 path")]);
    assert!(
        wait_connect(|| pair.gateway.command("curl"), "http://127.0.0.1:18801/ready", true),
        "the upstream service did not start"
    );
    let token = token_file(&pair.gateway);
    let wg = pair.gateway_wg_addr();
    let args =
        ["--bind", "wireguard", "--port", "18802", "--upstream", "http://127.0.0.1:18801", "--token-file", &token];
    let (_gw, _) = serve_until(&pair.gateway, &args, &format!("listening on http://{wg}:18802"));
    let origin = format!("http://{wg}:18802");

    let mut browser = Chromium::start(&pair.peer, &[]);

    // A page load without credentials is sent to sign in, and back to `/` after.
    browser.navigate(&format!("{origin}/"));
    let at = browser.wait_for(
        "document.readyState === 'complete' && location.pathname === '/_meshgate/login' && location.href",
        "the sign-in page",
    );
    assert_eq!(at, format!("{origin}/_meshgate/login?next=%2F"));
    let form = browser.eval(
        "(() => { const f = document.querySelector('form'); const t = document.getElementById('token');
           return f && t && [f.method, f.getAttribute('action'), t.type, t.name, f.elements.next.value].join(' '); })()",
    );
    assert_eq!(form, "post /_meshgate/login password token /");
    if let Some(path) = std::env::var_os("MESHGATE_BROWSER_SCREENSHOT") {
        browser.screenshot(&PathBuf::from(path));
    }

    // A wrong token: the same page again, with a message.
    browser.eval(
        "document.getElementById('token').value = 'not-the-token'; document.querySelector('form').requestSubmit()",
    );
    browser.wait_for(
        "document.readyState === 'complete' && document.querySelector('[role=alert]')?.textContent",
        "the wrong-token message",
    );
    assert!(session_cookie(&browser.cookies(&origin)).is_none(), "a wrong token got a session");

    // The right token: the upstream's dashboard.
    browser.eval(&format!(
        "document.getElementById('token').value = '{TOKEN}'; document.querySelector('form').requestSubmit()"
    ));
    let heading = browser.wait_for(
        "document.readyState === 'complete' && document.getElementById('hello')?.textContent",
        "the dashboard after signing in",
    );
    assert_eq!(heading, "Dashboard of the lab service");
    assert_eq!(browser.eval("location.href"), format!("{origin}/"));

    // The session cookie is there, but scripts cannot read it.
    let cookies = browser.cookies(&origin);
    let cookie = session_cookie(&cookies).unwrap_or_else(|| panic!("no session cookie after sign-in: {cookies:?}"));
    let signed_in = cookie["value"].clone();
    assert_eq!(
        (&cookie["httpOnly"], &cookie["sameSite"], &cookie["path"]),
        (&json!(true), &json!("Strict"), &json!("/"))
    );
    assert_eq!(cookie["secure"], false, "a plain-HTTP listener cannot set a Secure cookie: {cookie}");
    let seen_by_js = browser.eval("document.cookie");
    assert!(!seen_by_js.as_str().unwrap_or("").contains("meshgate_session"), "document.cookie shows it: {seen_by_js}");

    // The page's own WebSocket, through the proxy to the upstream and back.
    let echo = browser.try_eval(WS_ROUND_TRIP).unwrap_or_else(|e| panic!("WebSocket through meshgate: {e}"));
    assert_eq!(echo, "echo: ping from the page");

    // Logout from the page (a form POST, as a sign-out button would), then the
    // dashboard sends the browser back to sign in.
    browser.eval(
        "(() => { const f = document.createElement('form'); f.method = 'post'; f.action = '/_meshgate/logout';
           document.body.append(f); f.submit(); })()",
    );
    browser.wait_for(
        "document.readyState === 'complete' && location.pathname === '/_meshgate/login'",
        "the sign-in page after logout",
    );
    assert!(session_cookie(&browser.cookies(&origin)).is_none(), "logout left the cookie");
    browser.navigate(&format!("{origin}/"));
    let at = browser.wait_for(
        "document.readyState === 'complete' && location.pathname === '/_meshgate/login' && location.href",
        "the sign-in page on the next visit",
    );
    assert_eq!(at, format!("{origin}/_meshgate/login?next=%2F"));

    // A copy of the logged-out cookie is refused too (revoked on the gateway,
    // not only cleared in this browser).
    browser.call(
        "Network.setCookie",
        json!({"name": "meshgate_session", "value": signed_in, "url": origin, "path": "/",
               "httpOnly": true, "sameSite": "Strict"}),
    );
    assert!(session_cookie(&browser.cookies(&origin)).is_some(), "the old cookie was not put back");
    browser.navigate(&format!("{origin}/"));
    browser.wait_for(
        "document.readyState === 'complete' && location.pathname === '/_meshgate/login'",
        "the sign-in page with the logged-out cookie put back",
    );

    // What the upstream got: the dashboard and the WebSocket, neither with the
    // token nor with the session cookie.
    let text = std::fs::read_to_string(&log).expect("the upstream's log");
    let requests: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let browser_requests: Vec<&Value> = requests.iter().filter(|r| r["path"] != "/ready").collect();
    let paths: Vec<&str> = browser_requests.iter().filter_map(|r| r["path"].as_str()).collect();
    assert!(paths.contains(&"/") && paths.contains(&"/ws"), "the upstream saw only {paths:?}");
    for r in &browser_requests {
        let headers = r["headers"].to_string();
        assert!(!headers.contains(TOKEN), "the token reached the upstream: {r}");
        assert!(!headers.contains("meshgate_session"), "the session cookie reached the upstream: {r}");
        assert!(!headers.to_ascii_lowercase().contains("\"authorization\""), "credentials reached the upstream: {r}");
    }
    let ws = browser_requests.iter().find(|r| r["path"] == "/ws").expect("the WebSocket request");
    assert!(ws["headers"].to_string().contains(&format!("\"origin\",\"{origin}\"")), "{ws}");
}

/// Issue #15's browser test: the pinned self-signed certificate makes a
/// secure context (and a Secure cookie); plain HTTP on the same tunnel does not.
#[test]
fn a_browser_trusting_the_printed_key_gets_a_secure_context_over_https_only() {
    const TEST: &str = "a_browser_trusting_the_printed_key_gets_a_secure_context_over_https_only";
    if !chromium_or_skip(TEST) {
        return;
    }
    let Some(pair) = WgPair::or_skip(TEST, "wg0") else {
        return;
    };
    let work = tempfile::tempdir().expect("a temporary directory");
    let state = work.path().join("state");
    let state = state.to_str().expect("UTF-8 path");
    let token = token_file(&pair.gateway);
    let wg = pair.gateway_wg_addr();
    let tls_args = [
        "--bind",
        "wireguard",
        "--port",
        "18811",
        "--tls",
        "self-signed",
        "--state-dir",
        state,
        "--token-file",
        &token,
    ];
    let (_tls_gw, lines) = serve_until(&pair.gateway, &tls_args, &format!("listening on https://{wg}:18811"));
    let tls_line = lines
        .iter()
        .find(|l| l.starts_with("tls: self-signed certificate"))
        .unwrap_or_else(|| panic!("no `tls:` line before the listening lines: {lines:?}"));
    assert!(tls_line.contains(&format!("(key in {state})")), "{tls_line}");
    let pin = tls_line
        .split("public key sha256//")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no key hash in {tls_line:?}"));
    assert_eq!(pin.len(), 44, "a base64 SHA-256 is 44 characters: {pin:?}");
    let plain_args = ["--bind", "wireguard", "--port", "18812", "--token-file", &token];
    let (_plain_gw, _) = serve_until(&pair.gateway, &plain_args, &format!("listening on http://{wg}:18812"));

    let mut browser = Chromium::start(&pair.peer, &[format!("--ignore-certificate-errors-spki-list={pin}")]);
    const CONTEXT: &str = "[window.isSecureContext, typeof crypto.subtle, location.protocol].join(' ')";

    // Plain HTTP first (before a Secure cookie exists for this host).
    browser.navigate(&format!("http://{wg}:18812/status"));
    browser
        .wait_for("document.readyState === 'complete' && location.pathname === '/login'", "the sign-in page over HTTP");
    assert_eq!(browser.eval(CONTEXT), "false undefined http:");

    // HTTPS with the pinned key: sent to sign in, a secure context.
    let origin = format!("https://{wg}:18811");
    browser.navigate(&format!("{origin}/status"));
    let at = browser.wait_for(
        "document.readyState === 'complete' && location.pathname === '/login' && location.href",
        "the sign-in page over HTTPS",
    );
    assert_eq!(at, format!("{origin}/login?next=%2Fstatus"));
    assert_eq!(browser.eval(CONTEXT), "true object https:");

    browser.eval(&format!(
        "document.getElementById('token').value = '{TOKEN}'; document.querySelector('form').requestSubmit()"
    ));
    browser.wait_for(
        "document.readyState === 'complete' && location.pathname === '/status' && document.body.innerText.includes('listeners')",
        "meshgate's status after signing in over HTTPS",
    );
    let cookies = browser.cookies(&origin);
    let cookie = session_cookie(&cookies).unwrap_or_else(|| panic!("no session cookie after sign-in: {cookies:?}"));
    assert_eq!(
        (&cookie["secure"], &cookie["httpOnly"], &cookie["sameSite"]),
        (&json!(true), &json!(true), &json!("Strict")),
        "{cookie}"
    );
    let seen_by_js = browser.eval("document.cookie");
    assert!(!seen_by_js.as_str().unwrap_or("").contains("meshgate_session"), "document.cookie shows it: {seen_by_js}");
}
