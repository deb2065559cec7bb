//! A stand-in for tailscaled's local API, for tests (feature `testing`): a unix
//! socket that answers GETs with fixture JSON, hangs, or streams IPN bus lines,
//! and serves a node certificate (from a test CA the test makes) at the cert
//! endpoint, in tailscaled's pair form ([`StandIn::serve_cert`]).
//!
//! It runs on plain threads (no runtime), so a test that spawns the `meshgate`
//! binary can point `MESHGATE_TAILSCALED_SOCKET` at it. It checks the `Host`
//! header the way tailscaled does (`local-tailscaled.sock`, else 403).
//! The fixtures follow tailscale v1.82 (see `fixtures/README.md`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `ipnstate.Status` of a running node on a Headscale network with a custom
/// prefix (10.99.0.7, gw.office.headscale.example).
pub const STATUS_HEADSCALE_RUNNING: &str = include_str!("fixtures/status-headscale-running.json");
/// `ipnstate.Status` while tailscaled is `Starting` (no addresses yet).
pub const STATUS_STARTING: &str = include_str!("fixtures/status-starting.json");
/// `ipnstate.Status` of a logged-out node (`NeedsLogin`).
pub const STATUS_NEEDS_LOGIN: &str = include_str!("fixtures/status-needs-login.json");
/// `ipnstate.Status` in userspace-networking mode (`TUN: false`).
pub const STATUS_USERSPACE_RUNNING: &str = include_str!("fixtures/status-userspace-running.json");
/// `apitype.WhoIsResponse` of a tagged node.
pub const WHOIS_TAGGED: &str = include_str!("fixtures/whois-tagged.json");
/// `apitype.WhoIsResponse` of a user's node.
pub const WHOIS_USER: &str = include_str!("fixtures/whois-user.json");

/// The longest a hanging or streaming answer holds its connection.
const HOLD: Duration = Duration::from_secs(30);

/// How the stand-in answers one path.
#[derive(Debug, Clone)]
pub enum Answer {
    /// 200 with this JSON body.
    Json(String),
    /// Reads the request and never answers (until the stand-in is dropped, or 30 s).
    Hang,
    /// This status code and body.
    Status(u16, String),
    /// 200, then each line after its delay, then the connection stays open.
    Stream(Vec<(Duration, String)>),
}

#[derive(Debug, Default)]
struct State {
    answers: HashMap<String, Answer>,
    requests: Vec<String>,
}

/// A running stand-in; stops and removes its socket when dropped.
#[derive(Debug)]
pub struct StandIn {
    path: PathBuf,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl StandIn {
    /// Listens on `path` (removing a stale socket there first).
    pub fn start(path: impl Into<PathBuf>) -> std::io::Result<Self> {
        let path = path.into();
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (s, st) = (s.clone(), st.clone());
                std::thread::spawn(move || serve(conn, &s, &st));
            }
        });
        Ok(Self { path, state, stop })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers GETs of `path` (without the query) this way from now on.
    pub fn answer(&self, path: &str, answer: Answer) -> &Self {
        self.state.lock().expect("stand-in state").answers.insert(path.to_owned(), answer);
        self
    }

    /// Serves `domain`'s certificate at `/localapi/v0/cert/DOMAIN` as
    /// tailscaled does with `?type=pair`: the PEM key, then the PEM chain.
    /// Call again to replace it (tailscaled renewing).
    pub fn serve_cert(&self, domain: &str, key_pem: &str, chain_pem: &str) -> &Self {
        let mut body = key_pem.to_owned();
        if !body.ends_with('\n') {
            body.push('\n');
        }
        body.push_str(chain_pem);
        self.answer(&format!("/localapi/v0/cert/{domain}"), Answer::Json(body))
    }

    /// Answers the cert endpoint for `domain` as tailscaled does when the
    /// tailnet has HTTPS certificates turned off.
    pub fn refuse_cert(&self, domain: &str) -> &Self {
        self.answer(
            &format!("/localapi/v0/cert/{domain}"),
            Answer::Status(500, "your Tailscale account does not support getting TLS certs\n".into()),
        )
    }

    /// The request lines received so far (`GET /localapi/v0/status HTTP/1.0`).
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().expect("stand-in state").requests.clone()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(conn: UnixStream, state: &Mutex<State>, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(&conn);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut host_ok = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            host_ok |= k.eq_ignore_ascii_case("host") && v.trim() == "local-tailscaled.sock";
        }
    }
    let request_line = request_line.trim().to_owned();
    let path = request_line.split_whitespace().nth(1).unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default().to_owned();
    let answer = {
        let mut s = state.lock().expect("stand-in state");
        s.requests.push(request_line.clone());
        s.answers.get(&path).cloned()
    };
    let mut w = &conn;
    let answer = match (host_ok, answer) {
        (false, _) => Answer::Status(403, "invalid localapi Host header\n".into()),
        (true, None) => Answer::Status(404, format!("no stand-in answer for {path}\n")),
        (true, Some(a)) => a,
    };
    let hold = || {
        let until = std::time::Instant::now() + HOLD;
        while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    match answer {
        Answer::Json(body) => {
            let _ = write!(w, "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{body}");
        }
        Answer::Status(code, body) => {
            let _ = write!(w, "HTTP/1.0 {code} Error\r\nContent-Type: text/plain\r\n\r\n{body}");
        }
        Answer::Hang => hold(),
        Answer::Stream(lines) => {
            let _ = write!(w, "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n");
            for (delay, line) in lines {
                std::thread::sleep(delay);
                if writeln!(w, "{line}").is_err() {
                    return;
                }
            }
            hold();
        }
    }
}
