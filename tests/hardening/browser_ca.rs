//! Issue #27's browser test: a real chromium on the WireGuard peer that
//! trusts meshgate's local CA the way a person makes it (imported into its
//! NSS database with `certutil`, no pin flag, no `--ignore-certificate-errors`).
//!
//! - `https://MESH-IP:PORT/` is a secure context; curl `--cacert` works.
//! - A leaf made with a two-minute lifetime (`MESHGATE_TEST_LEAF_SECONDS`, a
//!   knob for tests) is renewed while the page stays open: its WebSocket and
//!   its connection carry on, and the next connection gets the new leaf.
//! - The constraints bite: a leaf for `bank.example` signed with the same CA
//!   key (by openssl, in the test) is refused by chromium and by `openssl
//!   verify`, while a leaf for the mesh address signed the same way is accepted.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::browser_real::{chromium_or_skip, Chromium};
use crate::lab::{run_bounded, wait_until, Lab, Proc, WgPair};
use crate::labnet::tls::{forge_leaf, openssl_verify};
use crate::labnet::{token_file, BIN, TOKEN};

/// Chromium in `lab` with its HOME holding an NSS database that trusts `ca`
/// to identify web sites (`certutil -A -t C,,`), as docs/tls.md tells a person.
fn chromium_trusting<'l>(lab: &'l Lab, ca: &Path, extra: &[String]) -> Chromium<'l> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        r#"set -e; mkdir -p "$HOME/.pki/nssdb"; certutil -d "sql:$HOME/.pki/nssdb" -N --empty-password;
           certutil -d "sql:$HOME/.pki/nssdb" -A -t "C,," -n "meshgate local CA" -i "$1";
           certutil -d "sql:$HOME/.pki/nssdb" -L"#,
        "sh",
    ])
    .arg(ca)
    .env("HOME", dir.path());
    let out = run_bounded(cmd, Duration::from_secs(20));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && listed.contains("meshgate local CA"),
        "certutil: {listed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Chromium::start_in(lab, extra, dir)
}

/// `meshgate serve ARGS` in `lab` with `env`; its stdout lines (as they come)
/// and its log.
fn serve(lab: &Lab, args: &[&str], env: &[(&str, &str)]) -> (Proc, mpsc::Receiver<String>, Arc<Mutex<String>>) {
    let mut cmd = lab.command(BIN);
    cmd.arg("serve")
        .args(args)
        .envs(env.iter().copied())
        .env_remove("MESHGATE_BIND")
        .env_remove("MESHGATE_PORT")
        .env_remove("MESHGATE_TOKEN")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut proc = Proc::spawn(&mut cmd);
    let lines = crate::lines(proc.child().stdout.take().expect("stdout"));
    let err = proc.child().stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
            s.push_str(&l);
            s.push('\n');
        }
    });
    (proc, lines, log)
}

/// Waits (10 s) until every line in `want` was printed; the lines seen.
fn wait_lines(rx: &mpsc::Receiver<String>, want: &[String], log: &Mutex<String>) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !want.iter().all(|w| seen.iter().any(|l| l.contains(w.as_str()))) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) => seen.push(l),
            Err(_) => panic!("never printed {want:?}; printed {seen:?}; log:\n{}", log.lock().unwrap()),
        }
    }
    seen
}

/// SHA-256 (upper-case hex) of the leaf a new connection from the peer to
/// `addr` gets.
fn leaf_of_new_connection(pair: &WgPair, addr: &str) -> String {
    pair.peer
        .sh_ok(&format!(
            "timeout 5 openssl s_client -connect {addr} </dev/null 2>/dev/null \
             | openssl x509 -outform der | openssl dgst -sha256 -r | cut -d' ' -f1"
        ))
        .trim()
        .to_ascii_uppercase()
}

/// SHA-256 (upper-case hex) of the leaf of the connection chromium uses for `origin`.
fn leaf_chromium_uses(browser: &mut Chromium<'_>, origin: &str) -> String {
    use base64::Engine as _;
    let r = browser.call("Network.getCertificate", json!({ "origin": origin }));
    let first = r["tableNames"][0].as_str().unwrap_or_else(|| panic!("no certificate for {origin}: {r}"));
    let der = base64::engine::general_purpose::STANDARD.decode(first).expect("base64 DER");
    ring::digest::digest(&ring::digest::SHA256, &der).as_ref().iter().map(|b| format!("{b:02X}")).collect()
}

const CONTEXT: &str = "[window.isSecureContext, typeof crypto.subtle, location.protocol].join(' ')";

#[test]
fn a_browser_trusting_the_local_ca_gets_a_secure_context_across_renewals_and_only_for_the_mesh() {
    const TEST: &str = "a_browser_trusting_the_local_ca_gets_a_secure_context_across_renewals_and_only_for_the_mesh";
    if !chromium_or_skip(TEST) {
        return;
    }
    let Some(pair) = WgPair::or_skip(TEST, "wg0") else {
        return;
    };
    let work = tempfile::tempdir().expect("a temporary directory");
    let state = work.path().join("state");
    let state_s = state.to_str().expect("UTF-8 path").to_owned();
    let token = token_file(&pair.gateway);
    let wg = pair.gateway_wg_addr();
    let args = [
        "--bind",
        "wireguard",
        "--port",
        "18831",
        "--tls",
        "internal",
        "--state-dir",
        &state_s,
        "--token-file",
        &token,
    ];
    let (_gw, _lines, log) = serve(&pair.gateway, &args, &[("MESHGATE_TEST_LEAF_SECONDS", "120")]);
    let _ = wait_lines(
        &_lines,
        &[format!("listening on https://{wg}:18831"), "listening on https://[fd77::1]:18831".to_owned()],
        &log,
    );
    let ca = state.join("ca.crt");
    let ca_s = ca.to_str().unwrap();

    // The constraint bites for openssl too; the control leaf is accepted.
    let (bad, bad_key) = forge_leaf(&state, work.path(), "bank", "DNS:bank.example");
    let (ok, text) = openssl_verify(&ca, &bad, &[]);
    assert!(!ok && text.contains("permitted subtree violation"), "{text}");
    let (good, good_key) = forge_leaf(&state, work.path(), "mesh", &format!("IP:{wg}"));
    let (ok, text) = openssl_verify(&ca, &good, &["-verify_ip", &wg.to_string()]);
    assert!(ok, "{text}");
    let forged =
        ["--bind", "wireguard", "--port", "18832", "--token-file", &token, "--tls-cert", &bad, "--tls-key", &bad_key];
    let (_bank, bank_lines, bank_log) = serve(&pair.gateway, &forged, &[]);
    let _ = wait_lines(&bank_lines, &[format!("listening on https://{wg}:18832")], &bank_log);
    let control =
        ["--bind", "wireguard", "--port", "18833", "--token-file", &token, "--tls-cert", &good, "--tls-key", &good_key];
    let (_ctl, ctl_lines, ctl_log) = serve(&pair.gateway, &control, &[]);
    let _ = wait_lines(&ctl_lines, &[format!("listening on https://{wg}:18833")], &ctl_log);

    // curl on the peer: the CA alone is enough.
    let out = pair.peer.sh(&format!("curl -sS --max-time 5 --cacert '{ca_s}' https://{wg}:18831/healthz"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n", "{}", String::from_utf8_lossy(&out.stderr));

    let mut browser = chromium_trusting(&pair.peer, &ca, &[format!("--host-resolver-rules=MAP bank.example {wg}")]);
    browser.call("Network.enable", json!({}));
    let origin = format!("https://{wg}:18831");
    browser.navigate(&format!("{origin}/status"));
    browser.wait_for(
        "document.readyState === 'complete' && location.pathname === '/login'",
        "the sign-in page over HTTPS, trusted through the CA",
    );
    assert_eq!(browser.eval(CONTEXT), "true object https:");
    browser.eval(&format!(
        "document.getElementById('token').value = '{TOKEN}'; document.querySelector('form').requestSubmit()"
    ));
    browser.wait_for(
        "document.readyState === 'complete' && location.pathname === '/status' && document.body.innerText.includes('listeners')",
        "meshgate's status after signing in",
    );
    // A WebSocket held open across the renewal.
    browser.eval(
        "window.__ws = new WebSocket('wss://' + location.host + '/ws'); window.__open = false; \
         window.__closed = false; window.__msgs = 0; __ws.onopen = () => { __open = true }; \
         __ws.onclose = () => { __closed = true }; __ws.onmessage = () => { __msgs++ }; true",
    );
    browser.wait_for("__open && __msgs >= 1", "the WebSocket open");
    let first = leaf_chromium_uses(&mut browser, &origin);
    assert_eq!(first, leaf_of_new_connection(&pair, &format!("{wg}:18831")), "chromium got another leaf than openssl");

    // Renewed a third of the lifetime before its end (80 s after issue).
    let started = Instant::now();
    // Polled once a second: each look is a process and a handshake.
    let renewed = wait_until(Duration::from_secs(115), || {
        std::thread::sleep(Duration::from_secs(1));
        leaf_of_new_connection(&pair, &format!("{wg}:18831")) != first
    });
    assert!(renewed, "no new leaf within 115 s; log:\n{}", log.lock().unwrap());
    let second = leaf_of_new_connection(&pair, &format!("{wg}:18831"));
    assert!(started.elapsed() < Duration::from_secs(115));
    // The page stayed open: its WebSocket and its connection (with the old leaf) carry on.
    assert_eq!(browser.eval("__ws.readyState === 1 && !__closed"), json!(true), "the WebSocket dropped");
    assert_eq!(browser.eval("fetch('/healthz').then(r => r.text())"), "ok\n");
    // The next connection gets the new leaf, trusted the same way: curl, and
    // chromium on the other mesh address (a new origin, so a new connection).
    let out = pair.peer.sh(&format!("curl -sS --max-time 5 --cacert '{ca_s}' https://{wg}:18831/healthz"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n", "{}", String::from_utf8_lossy(&out.stderr));
    let v6 = "https://[fd77::1]:18831";
    browser.navigate(&format!("{v6}/healthz"));
    browser.wait_for("document.readyState === 'complete' && document.body.innerText === 'ok\\n'", "healthz over IPv6");
    assert_eq!(browser.eval(CONTEXT), "true object https:");
    assert_eq!(leaf_chromium_uses(&mut browser, v6), second, "the next connection did not get the renewed leaf");
    assert!(log.lock().unwrap().contains("issued a new certificate from the local CA"));

    // The control: a leaf for the mesh address signed with the CA key by openssl is trusted.
    browser.navigate(&format!("https://{wg}:18833/healthz"));
    browser.wait_for("document.readyState === 'complete' && document.body.innerText === 'ok\\n'", "the control leaf");
    assert_eq!(browser.eval(CONTEXT), "true object https:");
    // A leaf for a name outside the constraints, signed with the same key: refused.
    let r = browser.call("Page.navigate", json!({ "url": "https://bank.example:18832/healthz" }));
    let error = r.get("errorText").and_then(Value::as_str).unwrap_or("").to_owned();
    let page = browser.try_eval("document.body ? document.body.innerText : ''").unwrap_or(Value::Null);
    let refused = error.contains("ERR_CERT") || page.as_str().is_some_and(|t| t.contains("ERR_CERT"));
    assert!(refused, "chromium accepted a leaf outside the constraints: errorText {error:?}, page {page:?}");
    assert_ne!(page.as_str(), Some("ok\n"));
}
