//! Issue #17's reload in the namespace lab, with real wireguard-go: SIGHUP
//! puts a new token, allow-list and connection limits in force on a running
//! `serve --bind wireguard`, without re-binding, on connections already open
//! too; a bad new token file is refused and the running one kept.

use std::io::Write;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use super::{curl, token_file, wait_connect, BIN, TOKEN};
use crate::lab::{Proc, WgPair};

const PORT: u16 = 18851;
const NEW_TOKEN: &str = "lab-token-rotated-9876543210";

/// One HTTP/1.1 keep-alive connection from the peer: each line written is a
/// bearer token (`-`: none) for a `GET /status`; each answer is `STATUS
/// LOCAL_PORT` (the port shows whether the connection is the same one).
const CLIENT: &str = r#"
import http.client, sys
c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=5)
for line in sys.stdin:
    t = line.strip()
    h = {} if t == "-" else {"Authorization": "Bearer " + t}
    try:
        c.request("GET", "/status", headers=h)
        port = c.sock.getsockname()[1]
        r = c.getresponse()
        r.read()
        print(r.status, port, flush=True)
    except Exception as e:
        print("error", type(e).__name__, flush=True)
        c.close()
"#;

struct Client {
    _proc: Proc,
    stdin: ChildStdin,
    answers: Receiver<String>,
}

impl Client {
    fn open(pair: &WgPair) -> Self {
        let mut cmd = pair.peer_command("python3");
        cmd.args(["-c", CLIENT, &pair.gateway_wg_addr().to_string(), &PORT.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut proc = Proc::spawn(&mut cmd);
        let stdin = proc.child().stdin.take().expect("stdin");
        let out = proc.child().stdout.take().expect("stdout");
        let answers = crate::lines(out);
        Self { _proc: proc, stdin, answers }
    }

    /// (status, local port) of one `GET /status` with `token`; `Err` with
    /// the error's name when the connection was closed under it (the client
    /// opens a new one for the next request).
    fn try_get(&mut self, token: Option<&str>) -> Result<(u16, u16), String> {
        writeln!(self.stdin, "{}", token.unwrap_or("-")).expect("write to the client");
        let line = self.answers.recv_timeout(Duration::from_secs(10)).expect("the client answered");
        let mut parts = line.split(' ');
        match parts.next().and_then(|s| s.parse().ok()) {
            Some(status) => Ok((status, parts.next().and_then(|p| p.parse().ok()).unwrap_or(0))),
            None => Err(line),
        }
    }

    fn get(&mut self, token: Option<&str>) -> (u16, u16) {
        self.try_get(token).unwrap_or_else(|e| panic!("client: {e}"))
    }
}

/// A WebSocket to `/_meshgate/ws` from the peer, with the token: prints
/// `OPEN` after the 101 and the first message, then `CLOSED` when the server
/// ends it (or `TIMEOUT` after 10 s).
const WS_CLIENT: &str = r#"
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(("GET /ws HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
           "Authorization: Bearer %s\r\n\r\n" % (sys.argv[1], sys.argv[2], sys.argv[3])).encode())
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(4096)
if not head.startswith(b"HTTP/1.1 101"):
    print("REFUSED", head.split(b"\r\n")[0].decode(), flush=True)
    sys.exit(0)
print("OPEN", flush=True)
try:
    while s.recv(4096):
        pass
    print("CLOSED", flush=True)
except socket.timeout:
    print("TIMEOUT", flush=True)
"#;

/// The WebSocket client's lines, as they come.
fn websocket(pair: &WgPair, token: &str) -> (Proc, Receiver<String>) {
    let mut cmd = pair.peer_command("python3");
    cmd.args(["-c", WS_CLIENT, &pair.gateway_wg_addr().to_string(), &PORT.to_string(), token])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut proc = Proc::spawn(&mut cmd);
    let out = proc.child().stdout.take().expect("stdout");
    let rx = crate::lines(out);
    (proc, rx)
}

/// The gateway's log (stderr, kept in a host file) and its process.
struct Gateway {
    proc: Proc,
    log: std::path::PathBuf,
}

impl Gateway {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGHUP, then waits until the log holds `needle` one more time than before.
    fn reload(&self, needle: &str) {
        let before = self.log().matches(needle).count();
        let ok = Command::new("kill").args(["-HUP", &self.proc.pid().to_string()]).status().expect("kill");
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.log().matches(needle).count() <= before {
            assert!(Instant::now() < deadline, "no new {needle:?} in the log after SIGHUP:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

#[test]
fn sighup_puts_a_new_token_allow_list_and_limits_in_force_on_open_connections() {
    let test = "sighup_puts_a_new_token_allow_list_and_limits_in_force_on_open_connections";
    let Some(pair) = WgPair::or_skip(test, "wg0") else { return };
    let key = pair.peer_public_key().to_owned();
    let token = token_file(&pair.gateway);
    let config = "/var/run/wireguard/reload.toml";
    let write_config = |allow: bool, per_address: u32| {
        let allow = if allow { "allow_peers = [\"laptop\"]\\n" } else { "" };
        pair.gateway.sh_ok(&format!(
            "printf '{allow}[limits]\\nmax_connections_per_address = {per_address}\\n[peers]\\nlaptop = \"%s\"\\n' '{key}' > {config}"
        ));
    };
    write_config(true, 8);
    let log = std::env::temp_dir().join(format!("meshgate-reload-{}.log", std::process::id()));
    let port = PORT.to_string();
    let mut cmd = pair.gateway.command(BIN);
    cmd.args(["serve", "--bind", "wireguard", "--port", &port, "--token-file", &token, "--config", config])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"));
    let gw = Gateway { proc: Proc::spawn(&mut cmd), log };
    let base = format!("http://{}:{PORT}", pair.gateway_wg_addr());
    let status = format!("{base}/status");
    assert!(wait_connect(|| pair.peer_command("curl"), &base, true), "the peer cannot reach {base}:\n{}", gw.log());

    let bound = gw.log().matches("listening on").count();
    // The laptop is on the allow-list: in without a token, on a connection it keeps open.
    let mut held = Client::open(&pair);
    let (code, first_port) = held.get(None);
    assert_eq!(code, 200, "{}", gw.log());
    // A WebSocket opened with the token that is about to be replaced.
    let (_ws, ws_lines) = websocket(&pair, TOKEN);
    assert_eq!(ws_lines.recv_timeout(Duration::from_secs(10)).as_deref(), Ok("OPEN"));

    // A new token and no allow-list, one SIGHUP.
    pair.gateway.sh_ok(&format!("umask 077; printf '%s\\n' '{NEW_TOKEN}' > {token}"));
    write_config(false, 8);
    // The allow-list line is the later of the two.
    gw.reload("allow-list changed");
    assert!(gw.log().contains("the token changed: applied"), "{}", gw.log());
    // What the old token and the old allow-list let in is gone: the WebSocket
    // is closed, and the kept-alive connection too (its next request goes on
    // a new one, and is refused).
    assert_eq!(ws_lines.recv_timeout(Duration::from_secs(10)).as_deref(), Ok("CLOSED"), "{}", gw.log());
    let again = match held.try_get(None) {
        Err(_) => held.get(None),
        Ok(answer) => answer,
    };
    assert_eq!(again.0, 401, "the laptop kept its old allowance");
    assert_ne!(again.1, first_port, "the connection let in by the old allow-list stayed open");
    let (_, code, body) = curl(pair.peer_command("curl"), &status, Some(TOKEN));
    assert_eq!(code, 401, "the old token still works: {body}");
    let (_, code, body) = curl(pair.peer_command("curl"), &status, Some(NEW_TOKEN));
    assert_eq!(code, 200, "the new token does not work: {body}");

    // A bad token file is refused; the running token stays in force.
    pair.gateway.sh_ok(&format!("printf '' > {token}"));
    gw.reload("the new configuration is refused");
    let (_, code, body) = curl(pair.peer_command("curl"), &status, Some(NEW_TOKEN));
    assert_eq!(code, 200, "the refused reload changed the token: {body}");
    pair.gateway.sh_ok(&format!("umask 077; printf '%s\\n' '{NEW_TOKEN}' > {token}"));

    // One connection per address: the held one (with the token) keeps its
    // place, and a second is closed at once.
    let mut holder = Client::open(&pair);
    assert_eq!(holder.get(Some(NEW_TOKEN)).0, 200);
    write_config(false, 1);
    gw.reload("the connection limits changed");
    let (code, _, _) = curl(pair.peer_command("curl"), &status, Some(NEW_TOKEN));
    assert_ne!(code, 0, "a second connection got in past a share of one:\n{}", gw.log());
    let (code, port_before) = holder.get(Some(NEW_TOKEN));
    assert_eq!(code, 200, "the held connection was cut off by the smaller share");
    // Room again after the next reload.
    write_config(false, 4);
    gw.reload("the connection limits changed");
    let (code, status_code, body) = curl(pair.peer_command("curl"), &status, Some(NEW_TOKEN));
    assert_eq!((code, status_code), (0, 200), "{body}");
    assert_eq!(holder.get(Some(NEW_TOKEN)), (200, port_before));
    assert_eq!(gw.log().matches("listening on").count(), bound, "a reload re-bound:\n{}", gw.log());
}
