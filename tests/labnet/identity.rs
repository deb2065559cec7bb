//! Issue #14 in the namespace lab, with real wireguard-go: who is calling.
//!
//! A gateway with two WireGuard peers (`WgPair` plus `WgPair::add_peer`), one
//! named `laptop` in the config file's `[peers]` and let in with
//! `--allow-peer laptop`, in front of an echo service that answers with the
//! request headers it got. What each peer, and the loopback door, can do and
//! what reaches the service; and what happens when the laptop's key is taken
//! off the interface. Plus the start-up rules: an allow-list without a token
//! is enough to start, a name that is not in `[peers]` is refused.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{meshgate, serve_allowing_laptop, wait_connect, BIN, TOKEN};
use crate::lab::{lab_or_skip, run_bounded, wait_until, Lab, Proc, WgPair};

/// The echo service: answers every GET with the number of requests it has
/// had, the path, and every header it got as `[name, value]` pairs in order
/// (a list, so a header sent twice shows twice).
const ECHO_SERVICE: &str = r#"
import http.server, json, sys
n = 0
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        global n
        n += 1
        headers = [[k.lower(), v] for k, v in self.headers.items()]
        body = json.dumps({"n": n, "path": self.path, "headers": headers}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

const ECHO_PORT: u16 = 18810;
const PORT: u16 = 18811;

/// `curl` with extra headers: (exit code, HTTP status or 0, body).
fn get(mut cmd: Command, url: &str, token: Option<&str>, headers: &[&str]) -> (i32, u16, String) {
    cmd.args(["-sS", "--max-time", "3", "-o", "-", "-w", "\n%{http_code}"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    for h in headers {
        cmd.args(["-H", h]);
    }
    cmd.arg(url);
    let out = run_bounded(cmd, Duration::from_secs(10));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (out.status.code().unwrap_or(-1), code.trim().parse().unwrap_or(0), body.to_owned())
}

/// What the echo service saw: (request count, every `meshgate-peer-*` header
/// as `name: value`, sorted).
fn seen(body: &str) -> (u64, Vec<String>) {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not the echo service's JSON ({e}): {body}"));
    let mut peer: Vec<String> = v["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter_map(|h| {
            let (name, value) = (h[0].as_str()?, h[1].as_str()?);
            name.starts_with("meshgate-peer-").then(|| format!("{name}: {value}"))
        })
        .collect();
    peer.sort();
    (v["n"].as_u64().expect("n"), peer)
}

/// The identity headers the service must see for `key` (and `name`).
fn identity(key: &str, name: Option<&str>) -> Vec<String> {
    let mut h = vec![
        "meshgate-peer-interface: wg0".to_owned(),
        format!("meshgate-peer-key: {key}"),
        "meshgate-peer-mesh: wireguard".to_owned(),
    ];
    if let Some(n) = name {
        h.push(format!("meshgate-peer-name: {n}"));
    }
    h.sort();
    h
}

/// `GET /_meshgate/whoami` from `cmd`'s namespace, parsed.
fn whoami(cmd: Command, base: &str) -> Value {
    let (code, status, body) = get(cmd, &format!("{base}/_meshgate/whoami"), None, &[]);
    assert_eq!((code, status), (0, 200), "whoami: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("whoami is not JSON ({e}): {body}"))
}

const FORGED: &[&str] = &["Meshgate-Peer-Name: admin", "Meshgate-Peer-Key: forged", "meshgate-peer-role: root"];

#[test]
fn each_peer_is_known_by_its_key_and_the_allowed_one_needs_no_token() {
    let test = "each_peer_is_known_by_its_key_and_the_allowed_one_needs_no_token";
    let Some(mut pair) = WgPair::or_skip(test, "wg0") else { return };
    let other = pair.add_peer();
    let laptop_key = pair.peer_public_key().to_owned();
    let other_key = other.public_key().to_owned();

    let _service = pair.gateway.spawn("python3", &["-c", ECHO_SERVICE, &ECHO_PORT.to_string()]);
    assert!(
        wait_connect(|| pair.gateway.command("curl"), &format!("http://127.0.0.1:{ECHO_PORT}/ready"), true),
        "the echo service did not start"
    );
    let upstream = format!("http://127.0.0.1:{ECHO_PORT}");
    let (_gw, _lines) = serve_allowing_laptop(&pair, &upstream, PORT, "/var/run/wireguard/meshgate.toml");
    let base = format!("http://{}:{PORT}", pair.gateway_wg_addr());
    assert!(wait_connect(|| pair.peer_command("curl"), &base, true), "the laptop cannot reach {base}");
    assert!(wait_connect(|| other.command("curl"), &base, true), "the second peer cannot reach {base}");
    let app = format!("{base}/app");

    // The laptop: in without a token, and the service learns who it is.
    let (code, status, body) = get(pair.peer_command("curl"), &app, None, &[]);
    assert_eq!((code, status), (0, 200), "{body}");
    assert_eq!(seen(&body).1, identity(&laptop_key, Some("laptop")), "{body}");
    // Forged identity headers are replaced by the real ones, never added to them.
    let (_, status, body) = get(pair.peer_command("curl"), &app, None, FORGED);
    assert_eq!(status, 200, "{body}");
    assert_eq!(seen(&body).1, identity(&laptop_key, Some("laptop")), "{body}");
    let (_, status, body) = get(pair.peer_command("curl"), &app, Some(TOKEN), FORGED);
    assert_eq!(status, 200, "{body}");
    assert_eq!(seen(&body).1, identity(&laptop_key, Some("laptop")), "{body}");

    // The other peer: known by its key, not allowed, so the token decides.
    let (_, _, body) = get(pair.peer_command("curl"), &app, None, &[]);
    let before = seen(&body).0;
    let (code, status, body) = get(other.command("curl"), &app, None, &[]);
    assert_eq!((code, status), (0, 401), "{body}");
    let (_, status, body) = get(other.command("curl"), &app, None, FORGED);
    assert_eq!(status, 401, "a forged name let the second peer in: {body}");
    let (_, status, body) = get(other.command("curl"), &app, Some(TOKEN), &[]);
    assert_eq!(status, 200, "{body}");
    let (n, headers) = seen(&body);
    assert_eq!(n, before + 1, "a refused request reached the service");
    assert_eq!(headers, identity(&other_key, None), "{body}");
    let (_, status, body) = get(other.command("curl"), &app, Some(TOKEN), FORGED);
    assert_eq!(status, 200, "{body}");
    assert_eq!(seen(&body).1, identity(&other_key, None), "a forged header reached the service: {body}");

    // The loopback door: open, and no identity at all reaches the service.
    let local = format!("http://127.0.0.1:{PORT}");
    let (_, status, body) = get(pair.gateway.command("curl"), &format!("{local}/app"), None, FORGED);
    assert_eq!(status, 200, "{body}");
    assert_eq!(seen(&body).1, Vec::<String>::new(), "a forged header reached the service from loopback: {body}");

    // whoami: each caller its own identity.
    let me = whoami(pair.peer_command("curl"), &base);
    assert_eq!(
        me,
        serde_json::json!({"known": true, "mesh": "wireguard", "interface": "wg0", "key": laptop_key, "name": "laptop", "allowed": true})
    );
    let them = whoami(other.command("curl"), &base);
    assert_eq!(
        them,
        serde_json::json!({"known": true, "mesh": "wireguard", "interface": "wg0", "key": other_key, "allowed": false})
    );
    assert_eq!(whoami(pair.gateway.command("curl"), &local), serde_json::json!({"known": false}));

    // The laptop's key is taken off the interface while its tunnel is up, and
    // the device comes back under a new key at the same address. The address
    // must not keep the old key's name and pass: from its next connection on
    // (within the peer cache's 5 s max age) it is an unknown key that needs
    // the token.
    let removed = Instant::now();
    let new_key = pair.rekey_peer();
    let mut statuses = Vec::new();
    let lost = wait_until(Duration::from_secs(12), || {
        let (_, status, _) = get(pair.peer_command("curl"), &app, None, &[]);
        statuses.push(status);
        status == 401
    });
    let took = removed.elapsed();
    assert!(lost, "the re-keyed laptop still got in after {took:?} without a token: statuses {statuses:?}");
    eprintln!("identity: the removed key lost access after {} ms (statuses {statuses:?})", took.as_millis());
    let me = whoami(pair.peer_command("curl"), &base);
    assert_eq!(
        me,
        serde_json::json!({"known": true, "mesh": "wireguard", "interface": "wg0", "key": new_key, "allowed": false})
    );
    let (_, status, body) = get(pair.peer_command("curl"), &app, Some(TOKEN), FORGED);
    assert_eq!(status, 200, "{body}");
    assert_eq!(seen(&body).1, identity(&new_key, None), "{body}");
}

/// A key that is 32 bytes of base64 (`abcdefghijklmnopqrstuvwxyz123456`).
const SOME_KEY: &str = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=";

/// `meshgate serve ARGS` in `lab` with no token anywhere in its environment.
fn serve_without_token(lab: &Lab, args: &[&str]) -> Command {
    let mut cmd = lab.command(BIN);
    cmd.arg("serve")
        .args(args)
        .env_remove("MESHGATE_TOKEN")
        .env_remove("MESHGATE_BIND")
        .env_remove("MESHGATE_PORT")
        .env_remove("MESHGATE_CONFIG");
    cmd
}

#[test]
fn an_allow_list_is_enough_to_start_and_an_unknown_name_is_refused() {
    let Some(lab) = lab_or_skip("an_allow_list_is_enough_to_start_and_an_unknown_name_is_refused") else {
        return;
    };
    lab.tun("wg0", &["10.8.0.1/24"]);
    let config = "/var/run/wireguard/peers.toml";
    lab.sh_ok(&format!("printf '[peers]\\nlaptop = \"%s\"\\n' '{SOME_KEY}' > {config}"));
    let allowing = "/var/run/wireguard/allowing.toml";
    lab.sh_ok(&format!("printf 'allow_peers = [\"laptop\"]\\n[peers]\\nlaptop = \"%s\"\\n' '{SOME_KEY}' > {allowing}"));

    // Neither a token nor an allow-list: refused (78), as before.
    let out = run_bounded(
        serve_without_token(&lab, &["--bind", "wireguard", "--port", "18813", "--config", config]),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(78), "{}", String::from_utf8_lossy(&out.stderr));

    // An allow-list (flag, or the file's `allow_peers`) and no token: it starts and serves.
    for (port, extra) in
        [("18814", &["--config", config, "--allow-peer", "laptop"][..]), ("18815", &["--config", allowing][..])]
    {
        let mut cmd = serve_without_token(&lab, &["--bind", "wireguard", "--port", port]);
        cmd.args(extra).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut proc = Proc::spawn(&mut cmd);
        let url = format!("http://127.0.0.1:{port}/healthz");
        let up = wait_until(Duration::from_secs(10), || {
            !matches!(proc.child().try_wait(), Ok(None))
                || lab.sh(&format!("curl -sf --max-time 2 {url} >/dev/null")).status.success()
        });
        let running = proc.is_running();
        if !running {
            let mut err = String::new();
            if let Some(mut e) = proc.child().stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("serve {extra:?} without a token exited: {:?}\n{err}", proc.child().try_wait());
        }
        assert!(up, "serve {extra:?} without a token does not answer {url}");
        // Its mesh door still wants credentials from everyone else.
        let (_, status, _) = get(lab.command("curl"), &format!("http://10.8.0.1:{port}/status"), None, &[]);
        assert_eq!(status, 401);
    }

    // A name that is not in [peers]: a usage error (2) that names it.
    let token = super::token_file(&lab);
    let out = meshgate(
        &lab,
        &[
            "serve",
            "--bind",
            "wireguard",
            "--port",
            "18816",
            "--token-file",
            &token,
            "--config",
            config,
            "--allow-peer",
            "nosuchname",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("nosuchname") && err.contains("--allow-peer"), "{err}");
}
