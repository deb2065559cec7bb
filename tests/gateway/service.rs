//! `serve` as a system service (issue #17): systemd's notify protocol read
//! from our own datagram socket, `/metrics`, the access log and JSON logs read
//! from a stderr file, and SIGHUP re-reading the configuration. Every process
//! binds 127.0.0.1 on a port of its own, and is killed on drop.

use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use super::{http_get, meshgate, PROCESS_DEADLINE};

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("meshgate-service-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    fn file(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A serving meshgate whose stderr goes to a file (to read the log as a
/// journal would get it: no terminal).
struct Service {
    child: Child,
    lines: Receiver<String>,
    stderr: std::path::PathBuf,
    addr: SocketAddr,
}

impl Service {
    fn start(cmd: &mut Command, stderr: std::path::PathBuf) -> Self {
        let err = std::fs::File::create(&stderr).unwrap();
        let mut child = cmd.stdout(Stdio::piped()).stderr(err).spawn().expect("spawn meshgate");
        let out = child.stdout.take().unwrap();
        let lines = crate::lines(out);
        let mut s = Self { child, lines, stderr, addr: "127.0.0.1:1".parse().unwrap() };
        let first =
            s.lines.recv_timeout(PROCESS_DEADLINE).unwrap_or_else(|e| panic!("no listening line: {e}; {}", s.log()));
        let url = first.strip_prefix("listening on http://").and_then(|r| r.split(' ').next()).expect(&first);
        s.addr = url.parse().unwrap();
        s
    }

    /// `serve --config DIR/m.toml EXTRA...` with `toml` in that file; the
    /// file's path too, for a reload to rewrite.
    fn with_config(dir: &TempDir, toml: &str, extra: &[&str]) -> (std::path::PathBuf, Self) {
        let cfg = dir.file("m.toml");
        std::fs::write(&cfg, toml).unwrap();
        let mut cmd = serve(&["--config", cfg.to_str().unwrap()]);
        cmd.args(extra);
        let svc = Self::start(&mut cmd, dir.file("stderr"));
        (cfg, svc)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until the log holds `needle`.
    fn wait_log(&self, needle: &str) -> String {
        self.wait_log_times(needle, 1)
    }

    /// Waits until the log holds `needle` `times` times.
    fn wait_log_times(&self, needle: &str, times: usize) -> String {
        let deadline = Instant::now() + PROCESS_DEADLINE;
        loop {
            let log = self.log();
            if log.matches(needle).count() >= times {
                return log;
            }
            assert!(Instant::now() < deadline, "not {times} {needle:?} in the log within {PROCESS_DEADLINE:?}: {log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    }

    /// SIGTERM, then the exit status within the deadline.
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        self.signal("-TERM");
        let deadline = Instant::now() + PROCESS_DEADLINE;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return (s, self.log());
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(extra: &[&str]) -> Command {
    let mut c = meshgate(&["serve", "--bind", "127.0.0.1", "--port", "0", "--no-follow"]);
    c.args(extra);
    c
}

#[test]
fn notify_says_ready_with_the_listeners_then_stopping() {
    let dir = TempDir::new("notify");
    let sock = UnixDatagram::bind(dir.file("notify.sock")).unwrap();
    sock.set_read_timeout(Some(PROCESS_DEADLINE)).unwrap();
    let svc = Service::start(serve(&["--wait", "2"]).env("NOTIFY_SOCKET", dir.file("notify.sock")), dir.file("stderr"));
    let mut buf = [0u8; 4096];
    // Before the first bind: a status that says why it may take a while.
    let n = sock.recv(&mut buf).expect("a notify message");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert_eq!(msg.trim_end(), "STATUS=starting: waiting up to 2 s for the bind to match");
    let n = sock.recv(&mut buf).expect("a notify message");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}");
    assert!(msg.lines().any(|l| l == format!("STATUS=listening on http://{}", svc.addr)), "{msg:?}");
    let (status, log) = svc.stop();
    assert!(status.success(), "{status}: {log}");
    let n = sock.recv(&mut buf).expect("STOPPING=1");
    assert!(String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "STOPPING=1"));
}

#[test]
fn metrics_count_requests_by_listener_and_class() {
    let dir = TempDir::new("metrics");
    let svc = Service::start(&mut serve(&[]), dir.file("stderr"));
    assert!(http_get(svc.addr, "/healthz", None).starts_with("HTTP/1.1 200"));
    assert!(http_get(svc.addr, "/nope", None).starts_with("HTTP/1.1 404"));
    let r = http_get(svc.addr, "/metrics", None);
    assert!(r.starts_with("HTTP/1.1 200") && r.contains("text/plain; version=0.0.4"), "{r}");
    for line in [
        format!("meshgate_requests_total{{service=\"meshgate\",listener=\"{}\",class=\"2xx\"}} 1", svc.addr),
        format!("meshgate_requests_total{{service=\"meshgate\",listener=\"{}\",class=\"4xx\"}} 1", svc.addr),
        "meshgate_listener_attaches_total 1".to_owned(),
        "meshgate_listeners 1".to_owned(),
        "meshgate_fallback 0".to_owned(),
        "meshgate_refusals_total{status=\"401\"} 0".to_owned(),
    ] {
        assert!(r.lines().any(|l| l == line), "no {line:?} in {r}");
    }
    // At least this scrape's own (the earlier ones may still be closing).
    let open: i64 = r
        .lines()
        .find_map(|l| l.strip_prefix("meshgate_open_connections "))
        .and_then(|v| v.parse().ok())
        .expect("meshgate_open_connections");
    assert!((1..=3).contains(&open), "{r}");
}

#[test]
fn metrics_move_under_meshgate_in_front_of_an_upstream() {
    // In front of an upstream the route moves under /_meshgate/; on loopback
    // it is open like /status, and a token opens it anywhere.
    let dir = TempDir::new("metrics-up");
    let svc = Service::start(&mut serve(&["--upstream", "http://127.0.0.1:9"]), dir.file("stderr"));
    let r = http_get(svc.addr, "/_meshgate/metrics", None);
    assert!(r.starts_with("HTTP/1.1 200") && r.contains("meshgate_requests_total"), "{r}");
}

/// A keep-alive upstream on a port of its own: every request gets `200 ok`;
/// it serves until the test process ends.
fn keep_alive_upstream() -> SocketAddr {
    upstream_answering_after(Duration::ZERO).0
}

/// [`keep_alive_upstream`], answering each request after `delay`; the
/// receiver hears of each request as its head arrives.
fn upstream_answering_after(delay: Duration) -> (SocketAddr, Receiver<()>) {
    let (arrived, heard) = std::sync::mpsc::channel();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming().map_while(Result::ok) {
            let arrived = arrived.clone();
            std::thread::spawn(move || {
                let mut out = conn.try_clone().unwrap();
                let mut r = std::io::BufReader::new(conn);
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        let _ = arrived.send(());
                        std::thread::sleep(delay);
                        if out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").is_err() {
                            break;
                        }
                    }
                    line.clear();
                }
            });
        }
    });
    (addr, heard)
}

#[test]
fn metrics_show_the_upstream_pool_idle_connections() {
    let dir = TempDir::new("metrics-idle");
    let upstream = format!("http://{}", keep_alive_upstream());
    let svc = Service::start(&mut serve(&["--upstream", &upstream]), dir.file("stderr"));
    let idle = || {
        let r = http_get(svc.addr, "/_meshgate/metrics", None);
        r.lines().find_map(|l| l.strip_prefix("meshgate_upstream_idle_connections ")).map(str::to_owned)
    };
    assert_eq!(idle().as_deref(), Some("0"));
    let r = http_get(svc.addr, "/app", None);
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("ok"), "{r}");
    // The upstream connection went back to the pool once the response ended.
    let deadline = Instant::now() + PROCESS_DEADLINE;
    while idle().as_deref() != Some("1") {
        assert!(Instant::now() < deadline, "no idle upstream connection counted: {:?}", idle());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn access_log_is_json_and_carries_no_secret() {
    let dir = TempDir::new("access");
    let svc = Service::start(&mut serve(&["--access-log", "--log-format", "json"]), dir.file("stderr"));
    let mut s = std::net::TcpStream::connect(svc.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /healthz?token=hunter2secret HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer tok3nvalue\r\nCookie: meshgate_session=c00kie\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let log = svc.wait_log("meshgate::access");
    let (status, log2) = svc.stop();
    assert!(status.success());
    for line in log2.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    let access: serde_json::Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["target"] == "meshgate::access")
        .expect("an access line");
    assert_eq!(access["path"], "/healthz", "{access}");
    assert_eq!(access["status"], 200, "{access}");
    assert_eq!(access["method"], "GET", "{access}");
    assert!(svc_addr(&access).starts_with("127.0.0.1:"), "{access}");
    // Numbers a collector can sum, not strings.
    assert!(access["bytes"].is_u64(), "bytes: {access}");
    assert!(access["duration_ms"].is_f64() || access["duration_ms"].is_u64(), "duration_ms: {access}");
    for secret in ["hunter2secret", "tok3nvalue", "c00kie"] {
        assert!(!log2.contains(secret), "{secret} in the log: {log2}");
    }
}

fn svc_addr(v: &serde_json::Value) -> String {
    v["listener"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn no_access_log_by_default_and_no_colour_off_a_terminal() {
    let dir = TempDir::new("noaccess");
    let svc = Service::start(serve(&[]).env("RUST_LOG", "debug"), dir.file("stderr"));
    assert!(http_get(svc.addr, "/healthz", None).starts_with("HTTP/1.1 200"));
    let (_, log) = svc.stop();
    assert!(!log.contains("meshgate::access") && !log.contains("path=/healthz"), "{log}");
    assert!(!log.contains('\u{1b}'), "ANSI codes in a file: {log:?}");
    assert!(log.contains("listening on"), "{log}");
}

#[test]
fn sighup_rereads_the_config_refuses_a_bad_one_and_keeps_serving() {
    let dir = TempDir::new("hup");
    let (cfg, svc) = Service::with_config(&dir, "log_level = \"info\"\n", &[]);
    std::fs::write(&cfg, "log_level = \"info\"\naccess_log = true\n").unwrap();
    svc.signal("-HUP");
    svc.wait_log("log filter");
    // The access log is on now.
    assert!(http_get(svc.addr, "/healthz", None).starts_with("HTTP/1.1 200"));
    svc.wait_log("path=/healthz");
    std::fs::write(&cfg, "log_level = \"info\"\nno_such_key = 1\n").unwrap();
    svc.signal("-HUP");
    svc.wait_log("the new configuration is refused");
    assert!(http_get(svc.addr, "/healthz", None).starts_with("HTTP/1.1 200"));
    let (status, log) = svc.stop();
    assert!(status.success(), "{status}: {log}");
}

/// With JSON logs, the error that ends `serve` at start is a JSON record too
/// (a journal collector parses every line), with the exit code.
#[test]
fn a_fatal_error_is_a_json_record_with_json_logs() {
    let out = super::run(&mut serve(&["--log-format", "json", "--token-file", "/nonexistent/meshgate-token"]));
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    // Every line is JSON (the first says which config file was read); the
    // last is the error.
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines.len() <= 2, "{err}");
    for l in &lines {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {err}"));
    }
    let v: serde_json::Value = serde_json::from_str(lines[lines.len() - 1]).unwrap();
    assert_eq!(v["level"], "ERROR");
    assert_eq!(v["exit_code"], 78);
    assert!(v["message"].as_str().unwrap().contains("/nonexistent/meshgate-token"), "{v}");
    // Not through the log filter: logging off does not silence it.
    let out = super::run(&mut serve(&[
        "--log-format",
        "json",
        "--log-level",
        "off",
        "--token-file",
        "/nonexistent/meshgate-token",
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    let v: serde_json::Value = serde_json::from_str(err.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {err}"));
    assert_eq!(v["exit_code"], 78, "{v}");
    // Text logs keep the plain line.
    let out = super::run(&mut serve(&["--token-file", "/nonexistent/meshgate-token"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.lines().last().is_some_and(|l| l.starts_with("meshgate: read token file")), "{err}");
}

/// What a reload cannot apply is named, and none of it is half-applied: a new
/// upstream's limits wait with it, and a later reload names it again.
#[test]
fn sighup_names_what_needs_a_restart_and_applies_none_of_it() {
    let dir = TempDir::new("hup-restart");
    let (cfg, svc) =
        Service::with_config(&dir, "upstream = \"http://127.0.0.1:9\"\n[limits]\nupstream_max_body_bytes = 10\n", &[]);
    let post = "POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\nConnection: close\r\n\r\n";
    std::fs::write(
        &cfg,
        "upstream = \"http://127.0.0.1:10\"\nallowed_hosts = [\"dev.local\"]\n[limits]\nupstream_max_body_bytes = 1000\n",
    )
    .unwrap();
    svc.signal("-HUP");
    let log = svc.wait_log("allowed_hosts or allowed_origins changed: takes effect at the next restart");
    assert!(log.contains("the upstream changed: takes effect at the next restart"), "{log}");
    assert!(!log.contains("upstream limits changed"), "{log}");
    // The old upstream keeps its own body cap.
    let line = status_line(svc.addr, post, PROCESS_DEADLINE).unwrap();
    assert!(line.starts_with("HTTP/1.1 413"), "{line}");
    // Still pending at the next reload.
    svc.signal("-HUP");
    // The pending upstream change is named again.
    svc.wait_log_times("the upstream changed", 2);
    let (status, log) = svc.stop();
    assert!(status.success(), "{status}: {log}");
}

/// systemd copies a credential when the service starts and never renews it:
/// a reload says so instead of a silent "nothing changed".
#[test]
fn sighup_says_a_credential_token_needs_a_restart() {
    let dir = TempDir::new("hup-credential");
    let token = dir.file("token");
    std::fs::write(&token, "a-token-from-a-credential-0123\n").unwrap();
    let mut cmd = serve(&["--token-file", token.to_str().unwrap()]);
    cmd.env("CREDENTIALS_DIRECTORY", &dir.0);
    let svc = Service::start(&mut cmd, dir.file("stderr"));
    svc.signal("-HUP");
    let log = svc.wait_log("SIGHUP: the token is a systemd credential");
    assert!(log.contains("systemctl restart meshgate"), "{log}");
    let (status, log) = svc.stop();
    assert!(status.success(), "{status}: {log}");

    // A token file outside the credentials directory is no credential.
    let elsewhere = TempDir::new("hup-credential-elsewhere");
    let mut cmd = serve(&["--token-file", token.to_str().unwrap()]);
    cmd.env("CREDENTIALS_DIRECTORY", &elsewhere.0);
    let svc = Service::start(&mut cmd, elsewhere.file("stderr"));
    svc.signal("-HUP");
    let log = svc.wait_log("SIGHUP: configuration re-read; nothing changed");
    assert!(!log.contains("systemd credential"), "{log}");
}

/// A raw request on a fresh connection; the status line, or what went wrong
/// within `wait`.
fn status_line(addr: SocketAddr, request: &str, wait: Duration) -> Result<String, std::io::Error> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(wait))?;
    s.write_all(request.as_bytes())?;
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line)?;
    Ok(line.trim_end().to_owned())
}

#[test]
fn sighup_applies_new_connection_and_upstream_limits_without_rebinding() {
    let dir = TempDir::new("hup-limits");
    let limits = |cap: u32, body: u32| format!("[limits]\nmax_connections = {cap}\nupstream_max_body_bytes = {body}\n");
    // Nothing listens on port 9: a forwarded request gets 502, a refused one 413.
    let (cfg, svc) = Service::with_config(&dir, &limits(1, 10), &["--upstream", "http://127.0.0.1:9"]);
    let post = "POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\nConnection: close\r\n\r\n";
    let line = status_line(svc.addr, post, PROCESS_DEADLINE).unwrap();
    assert!(line.starts_with("HTTP/1.1 413"), "{line}");

    // One connection held open takes the loopback door's only place: the next waits unserved.
    let mut held = std::net::TcpStream::connect(svc.addr).unwrap();
    held.write_all(b"GET /_meshgate/healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut first = [0u8; 12];
    held.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let get = "GET /_meshgate/healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    assert!(status_line(svc.addr, get, Duration::from_millis(500)).is_err(), "served past a cap of one");

    std::fs::write(&cfg, limits(2, 1000)).unwrap();
    svc.signal("-HUP");
    let log = svc.wait_log("the upstream limits changed: applied");
    assert!(log.contains("the connection limits changed"), "{log}");
    let line = status_line(svc.addr, get, PROCESS_DEADLINE).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "the larger cap did not apply: {line}");
    let line = status_line(svc.addr, post, PROCESS_DEADLINE).unwrap();
    assert!(line.starts_with("HTTP/1.1 502"), "the larger body cap did not apply: {line}");
    drop(held);
    let (status, log) = svc.stop();
    assert!(status.success(), "{status}: {log}");
    assert_eq!(log.matches("listening on").count(), 1, "a reload re-bound: {log}");
}

/// The names of a process's threads (Linux keeps 15 bytes of each).
fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn connections_are_served_on_as_many_threads_as_asked() {
    let dir = TempDir::new("workers");
    let mut cmd = serve(&[]);
    cmd.env("TOKIO_WORKER_THREADS", "3");
    let svc = Service::start(&mut cmd, dir.file("stderr"));
    let workers: Vec<String> = thread_names(svc.child.id()).into_iter().filter(|n| n.starts_with("mg-conn-")).collect();
    assert_eq!(workers, ["mg-conn-0", "mg-conn-1", "mg-conn-2"]);
    // Five connections, one request each, all answered (the threads accept from one socket).
    for _ in 0..5 {
        let answer = http_get(svc.addr, "/healthz", None);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}

/// SIGTERM while a request is in flight on a connection thread: its answer
/// still comes, then the process exits 0.
#[test]
fn sigterm_lets_a_request_in_flight_on_a_connection_thread_finish() {
    let dir = TempDir::new("drain-workers");
    let (upstream, heard) = upstream_answering_after(Duration::from_millis(700));
    let upstream = format!("http://{upstream}");
    let mut cmd = serve(&["--upstream", &upstream]);
    cmd.env("TOKIO_WORKER_THREADS", "2");
    let svc = Service::start(&mut cmd, dir.file("stderr"));
    let addr = svc.addr;
    let client = std::thread::spawn(move || {
        let t0 = Instant::now();
        (http_get(addr, "/slow", None), t0.elapsed())
    });
    // SIGTERM once the request is with the upstream: in flight for sure.
    heard.recv_timeout(PROCESS_DEADLINE).expect("the request reached the upstream");
    let (status, log) = svc.stop();
    let (answer, took) = client.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"), "{answer}\n{log}");
    assert!(took >= Duration::from_millis(650), "answered after {took:?}: not by the slow upstream");
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("shutting down"), "{log}");
}

/// The soft limit on open files is raised to the hard one (and no further).
#[test]
fn serve_raises_the_open_files_soft_limit_to_the_hard_one() {
    let dir = TempDir::new("nofile");
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=256:4096", env!("CARGO_BIN_EXE_meshgate")]);
    cmd.args(["serve", "--bind", "127.0.0.1", "--port", "0", "--no-follow"]);
    let svc = Service::start(&mut cmd, dir.file("stderr"));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", svc.child.id())).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("a line for open files");
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, ["4096", "4096"], "{line}");
}

#[test]
fn a_bad_worker_thread_count_is_refused_by_name() {
    for bad in ["0", "many"] {
        let mut cmd = serve(&[]);
        cmd.env("TOKIO_WORKER_THREADS", bad);
        let o = super::run(&mut cmd);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains(&format!("TOKIO_WORKER_THREADS={bad}: not a number of threads")), "{err}");
        assert!(o.stdout.is_empty(), "{bad}: served anyway");
    }
}

/// The completions and the man page shipped in dist/ (and the .deb) are what
/// the binary prints: regenerate them with `meshgate completions SHELL` and
/// `meshgate man` when a flag changes.
#[test]
fn dist_completions_and_man_page_are_current() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (args, file) in [
        (&["completions", "bash"][..], "dist/completions/meshgate.bash"),
        (&["completions", "zsh"][..], "dist/completions/_meshgate"),
        (&["completions", "fish"][..], "dist/completions/meshgate.fish"),
        (&["man"][..], "dist/meshgate.1"),
    ] {
        let o = super::run(&mut meshgate(args));
        assert!(o.status.success(), "{args:?}");
        let shipped = std::fs::read(root.join(file)).unwrap();
        assert!(o.stdout == shipped, "{file} is stale: run `meshgate {}` > {file}", args.join(" "));
    }
}

#[test]
fn help_groups_flags_and_names_every_environment_variable() {
    let o = super::run(&mut meshgate(&["serve", "--help"]));
    let help = String::from_utf8_lossy(&o.stdout);
    for heading in ["Binding:", "Auth:", "Upstream:", "Limits:", "Browser guard:", "HTTPS:", "Logging:"] {
        assert!(help.contains(heading), "no {heading} in {help}");
    }
    for var in [
        "MESHGATE_BIND",
        "MESHGATE_TOKEN",
        "MESHGATE_CONFIG",
        "MESHGATE_UPSTREAM",
        "RUST_LOG",
        "NO_COLOR",
        "TOKIO_WORKER_THREADS",
    ] {
        assert!(help.contains(var), "no {var} in {help}");
    }
    let o = super::run(&mut meshgate(&["--version"]));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with(concat!("meshgate ", env!("CARGO_PKG_VERSION"))));
}

/// A GET with extra header lines; the whole response.
fn get_with(addr: SocketAddr, path: &str, headers: &str) -> String {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    r
}

/// `promtool ARGS` with `input` on stdin (Debian's `prometheus` package; .ci/run
/// installs it). `None` outside CI when it is not installed.
fn promtool(args: &[&str], input: &str) -> Option<std::process::Output> {
    let spawned =
        Command::new("promtool").args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) if crate::lab::in_ci() => panic!("promtool is needed in CI (apt-get install prometheus): {e}"),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "SKIPPED: promtool: {e}");
            return None;
        }
    };
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    Some(child.wait_with_output().expect("wait for promtool"))
}

/// Issue #30 part 5: two HTTP services sharing a port by path, from the
/// config file. `/metrics` counts each one's responses under its own
/// `service` label (and the top-level service's as `meshgate`), the access
/// log names the service of each request, `/status` gives each service's
/// count, and the exposition still passes `promtool check metrics`.
#[test]
fn http_services_are_counted_and_logged_by_name() {
    let dir = TempDir::new("svc-metrics");
    let up = |name: &'static str| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                std::thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut head = Vec::new();
                    let mut b = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match s.read(&mut b) {
                            Ok(1) => head.push(b[0]),
                            _ => return,
                        }
                    }
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                        name.len()
                    );
                });
            }
        });
        at
    };
    let (dash, grafana) = (up("dash"), up("grafana"));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let toml = format!(
        "[[service]]\nname = \"dash\"\nport = {port}\nupstream = \"http://{dash}\"\nbind = [\"127.0.0.1\"]\n\n[[service]]\nname = \"grafana\"\nport = {port}\npath = \"/grafana\"\nupstream = \"http://{grafana}\"\nbind = [\"127.0.0.1\"]\n"
    );
    let (_, svc) = Service::with_config(&dir, &toml, &["--access-log", "--log-format", "json"]);
    let shared: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + PROCESS_DEADLINE;
    while std::net::TcpStream::connect(shared).is_err() {
        assert!(Instant::now() < deadline, "the services never listened: {}", svc.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    for (path, want) in [("/grafana/d/x", "grafana"), ("/app", "dash"), ("/grafana", "grafana"), ("/", "dash")] {
        let r = http_get(shared, path, None);
        assert!(r.starts_with("HTTP/1.1 200") && r.ends_with(want), "{path}: {r}");
    }
    assert!(http_get(svc.addr, "/healthz", None).starts_with("HTTP/1.1 200"));
    let r = http_get(svc.addr, "/metrics", None);
    let text = r.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    for line in [
        format!("meshgate_requests_total{{service=\"dash\",listener=\"{shared}\",class=\"2xx\"}} 2"),
        format!("meshgate_requests_total{{service=\"grafana\",listener=\"{shared}\",class=\"2xx\"}} 2"),
        format!("meshgate_requests_total{{service=\"meshgate\",listener=\"{}\",class=\"2xx\"}} 1", svc.addr),
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in {text}");
    }
    // /status: each service's own count.
    let status = http_get(svc.addr, "/status", None);
    let body = status.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let doc: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {status}"));
    let count = |name: &str| {
        let services = doc["services"].as_array().cloned().unwrap_or_default();
        services.iter().find(|s| s["name"] == name).map(|s| s["requests"].clone())
    };
    assert_eq!((count("dash"), count("grafana")), (Some(2.into()), Some(2.into())), "{doc}");
    // The access log: one line per request, naming its service.
    let log = svc.wait_log_times("meshgate::access", 5);
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "meshgate::access")
        .collect();
    for (path, service) in [
        ("/grafana/d/x", "grafana"),
        ("/app", "dash"),
        ("/grafana", "grafana"),
        ("/", "dash"),
        ("/healthz", "meshgate"),
    ] {
        let line =
            lines.iter().find(|v| v["path"] == path).unwrap_or_else(|| panic!("no access line for {path}: {log}"));
        assert_eq!(line["service"], service, "{line}");
    }
    if let Some(o) = promtool(&["check", "metrics"], &text) {
        assert!(
            o.status.success(),
            "promtool check metrics: {}{}\n{text}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// `/metrics` passes Prometheus' own checkers: the Prometheus text format by
/// default (`promtool check metrics`: `# HELP`/`# TYPE` name the samples,
/// no `# EOF`), and OpenMetrics when the scraper's `Accept` asks for it
/// (promtool's OpenMetrics parser, which insists on `# EOF`; it backfills,
/// so each sample gets a timestamp first).
#[test]
fn metrics_pass_promtool_as_prometheus_text_and_as_openmetrics() {
    let dir = TempDir::new("promtool");
    let svc = Service::start(&mut serve(&[]), dir.file("stderr"));
    let _ = get_with(svc.addr, "/healthz", "");
    let body = |r: &str| r.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    let plain = get_with(svc.addr, "/metrics", "");
    assert!(plain.contains("content-type: text/plain; version=0.0.4"), "{plain}");
    let text = body(&plain);
    assert!(text.contains("# TYPE meshgate_requests_total counter") && !text.contains("# EOF"), "{text}");
    // Prometheus 2.x's own Accept header.
    let accept = "Accept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n";
    let open = get_with(svc.addr, "/metrics", accept);
    assert!(open.contains("content-type: application/openmetrics-text; version=1.0.0"), "{open}");
    let om = body(&open);
    assert!(om.ends_with("# EOF\n") && om.contains("# TYPE meshgate_requests counter"), "{om}");
    let Some(o) = promtool(&["check", "metrics"], &text) else { return };
    assert!(
        o.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let stamped: String = om
        .lines()
        .map(|l| if l.starts_with('#') || l.is_empty() { format!("{l}\n") } else { format!("{l} 1700000000\n") })
        .collect();
    let input = dir.file("metrics.om");
    std::fs::write(&input, &stamped).unwrap();
    let blocks = dir.file("blocks");
    let o =
        promtool(&["tsdb", "create-blocks-from", "openmetrics", input.to_str().unwrap(), blocks.to_str().unwrap()], "")
            .expect("promtool ran once already");
    assert!(
        o.status.success(),
        "promtool's OpenMetrics parser: {}{}\n{om}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // The same parser refuses the Prometheus text (no `# EOF`): it checks.
    std::fs::write(
        &input,
        text.lines()
            .map(|l| if l.starts_with('#') { format!("{l}\n") } else { format!("{l} 1700000000\n") })
            .collect::<String>(),
    )
    .unwrap();
    let o =
        promtool(&["tsdb", "create-blocks-from", "openmetrics", input.to_str().unwrap(), blocks.to_str().unwrap()], "")
            .unwrap();
    assert!(!o.status.success(), "the OpenMetrics check accepts anything");
}
