//! The real `meshgate` process on this host's loopback: refused configurations
//! and their exit codes, all-or-nothing binding, defaults, /ws, graceful stop.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Output;
use std::time::Duration;

use super::{meshgate, run, Server};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn token_file(body: &str, mode: u32) -> tempfile_path::TempPath {
    use std::os::unix::fs::PermissionsExt;
    let p = tempfile_path::TempPath::new("token");
    std::fs::write(&p.0, body).unwrap();
    std::fs::set_permissions(&p.0, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// A file removed on drop (std only).
mod tempfile_path {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    pub(crate) struct TempPath(pub(crate) std::path::PathBuf);
    impl TempPath {
        pub(crate) fn new(tag: &str) -> Self {
            let n = N.fetch_add(1, Ordering::Relaxed);
            Self(std::env::temp_dir().join(format!("meshgate-test-{}-{tag}-{n}", std::process::id())))
        }
        pub(crate) fn as_str(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

fn nothing_listens(addr: &str) -> bool {
    TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(300)).is_err()
}

use super::http_get;

#[test]
fn non_loopback_without_a_token_is_refused_with_78() {
    for bind in ["all", "wireguard", "lan", "auto", "cidr:10.0.0.0/8"] {
        let o = run(&mut meshgate(&["serve", "--bind", bind, "--port", "1"]));
        assert_eq!(o.status.code(), Some(78), "--bind {bind}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains("without a token") && e.contains("--token-file"), "{e}");
        assert!(e.contains("--bind loopback needs none"), "{e}");
    }
}

#[test]
fn bad_token_files_are_refused_with_78() {
    let missing = run(&mut meshgate(&["serve", "--bind", "all", "--token-file", "/nonexistent/meshgate-token"]));
    assert_eq!(missing.status.code(), Some(78));
    assert!(stderr(&missing).contains("/nonexistent/meshgate-token"), "{}", stderr(&missing));
    let empty = token_file("\n", 0o600);
    let o = run(&mut meshgate(&["serve", "--bind", "all", "--token-file", empty.as_str()]));
    assert_eq!(o.status.code(), Some(78));
    assert!(stderr(&o).contains("is empty"), "{}", stderr(&o));
    let o = run(meshgate(&["serve", "--bind", "all"]).env("MESHGATE_TOKEN", "  "));
    assert_eq!(o.status.code(), Some(78));
    assert!(stderr(&o).contains("MESHGATE_TOKEN"), "{}", stderr(&o));
}

#[test]
fn an_ip_not_on_this_host_fails_and_leaves_nothing_listening() {
    let port = free_port();
    let tok = token_file("t0ken", 0o600);
    let p = port.to_string();
    let o = run(&mut meshgate(&["serve", "--bind", "203.0.113.77", "--port", &p, "--token-file", tok.as_str()]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("203.0.113.77") && e.contains("not on this host"), "{e}");
    assert!(nothing_listens(&format!("127.0.0.1:{port}")));
}

#[test]
fn a_taken_port_fails_the_whole_set() {
    // Take the port on ::1 (or on 127.0.0.1 where the host has no IPv6) so the
    // other address binds first and must be let go again.
    let (taken, other) = match TcpListener::bind("[::1]:0") {
        Ok(l) => (l, "127.0.0.1"),
        Err(_) => (TcpListener::bind("127.0.0.1:0").unwrap(), "::1"),
    };
    let port = taken.local_addr().unwrap().port();
    let o = run(&mut meshgate(&["serve", "--port", &port.to_string(), "--no-follow"]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("already in use"), "{}", stderr(&o));
    if other == "127.0.0.1" {
        assert!(nothing_listens(&format!("127.0.0.1:{port}")), "127.0.0.1 was left listening");
    }
}

#[test]
fn nothing_matched_with_fallback_fail_exits_69() {
    let snap = meshgate::core::source::system();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    if rt.block_on(snap.snapshot()).unwrap().interfaces.iter().any(|i| i.name.starts_with("wg")) {
        eprintln!("SKIPPED nothing_matched_with_fallback_fail_exits_69: this host has a wg interface");
        return;
    }
    let tok = token_file("t0ken", 0o600);
    let o = run(&mut meshgate(&["serve", "--bind", "wireguard", "--fallback", "fail", "--token-file", tok.as_str()]));
    assert_eq!(o.status.code(), Some(69), "{}", stderr(&o));
    assert!(stderr(&o).contains("matched nothing"), "{}", stderr(&o));
}

#[test]
fn no_subcommand_serves_loopback_and_stops_gracefully() {
    let port = free_port();
    let mut server = Server::start(meshgate(&[]).env("MESHGATE_PORT", port.to_string()));
    let first = server.wait_lines(1);
    assert_eq!(first[0], format!("listening on http://127.0.0.1:{port} (loopback via lo)"));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let r = http_get(addr, "/healthz", None);
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("ok\n"), "{r}");
    let r = http_get(addr, "/status", None);
    assert!(r.contains("\"provider\":\"loopback\""), "{r}");
    // SIGTERM: a clean exit.
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(nothing_listens(&format!("127.0.0.1:{port}")));
}

#[tokio::test]
async fn ws_sends_the_listener_set_on_connect() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let port = free_port();
    let server = Server::start(&mut meshgate(&["serve", "--port", &port.to_string(), "--no-follow"]));
    server.wait_lines(1);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws")).await.expect("ws connect");
    let first = match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => t.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    };
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v["event"], "listeners");
    let addrs: Vec<&str> = v["listeners"].as_array().unwrap().iter().map(|l| l["address"].as_str().unwrap()).collect();
    assert!(addrs.contains(&"127.0.0.1"), "{v}");
    drop(server);
}

/// The first-run advice works as written on a host without the token's
/// directory: it creates the directory too.
#[test]
fn the_token_advice_creates_the_directory_it_writes_into() {
    let root = tempfile_path::TempPath::new("advice");
    let o = run(&mut meshgate(&["serve", "--bind", "all", "--port", "1"]));
    assert_eq!(o.status.code(), Some(78));
    let e = stderr(&o);
    let advice = e.split('`').find(|s| s.contains("/dev/urandom")).unwrap_or_else(|| panic!("no advice: {e}"));
    assert!(advice.contains("/etc/meshgate/token"), "{advice}");
    // Run it with /etc/meshgate moved under a directory of ours.
    let dir = root.0.join("etc/meshgate");
    let advice = advice.replace("/etc/meshgate", dir.to_str().unwrap());
    let sh = std::process::Command::new("sh").args(["-c", &advice]).output().unwrap();
    assert!(sh.status.success(), "{advice}: {}", String::from_utf8_lossy(&sh.stderr));
    let token = std::fs::read_to_string(dir.join("token")).unwrap();
    assert!(token.trim().len() >= 40, "{token}");
    let _ = std::fs::remove_dir_all(&root.0);
    // The same for a --token-file that does not exist yet.
    let missing = root.0.join("deeper/token");
    let o = run(&mut meshgate(&["serve", "--bind", "all", "--token-file", missing.to_str().unwrap()]));
    assert_eq!(o.status.code(), Some(78));
    let e = stderr(&o);
    let advice = e.split('`').find(|s| s.contains("/dev/urandom")).unwrap_or_else(|| panic!("no advice: {e}"));
    let sh = std::process::Command::new("sh").args(["-c", advice]).output().unwrap();
    assert!(sh.status.success() && missing.is_file(), "{advice}: {}", String::from_utf8_lossy(&sh.stderr));
    let _ = std::fs::remove_dir_all(&root.0);
}

/// Issue #25 part 5, the wiring: `meshgate serve --state-dir D` keeps a logout
/// in `D/revoked-sessions` (what the next start reads: see the unit test
/// `a_logout_is_kept_in_the_state_directory`), never the token or the cookie.
#[test]
fn a_logout_is_written_to_the_state_directory() {
    use std::io::{Read as _, Write as _};
    let port = free_port();
    let token = token_file("s3cret-token-for-logout-test\n", 0o600);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let server = Server::start(&mut meshgate(&[
        "serve",
        "--port",
        &port.to_string(),
        "--no-follow",
        "--token-file",
        token.as_str(),
        "--state-dir",
        state.to_str().unwrap(),
    ]));
    server.wait_lines(1);
    let origin = format!("http://127.0.0.1:{port}");
    let post = |path: &str, body: &str, cookie: Option<&str>| -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let cookie = cookie.map(|c| format!("Cookie: {c}\r\n")).unwrap_or_default();
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: {origin}\r\n{cookie}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    let signed_in = post("/login", "token=s3cret-token-for-logout-test&next=%2F", None);
    let cookie = signed_in
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
        .and_then(|v| v.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie: {signed_in}"))
        .to_owned();
    assert!(!state.join("revoked-sessions").exists(), "written before any logout");
    let out = post("/logout", "", Some(&cookie));
    assert!(out.starts_with("HTTP/1.1 303"), "{out}");
    let kept = std::fs::read_to_string(state.join("revoked-sessions")).expect("the logout is kept");
    assert_eq!(kept.lines().count(), 1, "{kept}");
    let value = cookie.split_once('=').unwrap().1;
    assert!(!kept.contains("s3cret") && !kept.contains(value), "{kept}");
    drop(server);
}
