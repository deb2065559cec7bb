//! The gateway: the auth matrix without sockets, follow with a mocked watcher,
//! the real process (exit codes, all-or-nothing binding, /ws), the upstream
//! proxy and the library API.

mod auth_matrix;
mod defects;
mod embed;
mod follow_mock;
mod limits;
mod process;
mod service;
mod signals;
mod signin;
mod status;
mod tailnet;
mod upstream;

/// `meshgate ARGS` with none of meshgate's environment variables set.
pub(crate) fn meshgate(args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_meshgate"));
    c.args(args);
    for var in [
        "MESHGATE_BIND",
        "MESHGATE_PORT",
        "MESHGATE_TOKEN",
        "MESHGATE_CONFIG",
        "MESHGATE_UPSTREAM",
        "MESHGATE_LOG_FORMAT",
        "MESHGATE_STATE_DIR",
        "NOTIFY_SOCKET",
        "RUST_LOG",
    ] {
        c.env_remove(var);
    }
    c.stdin(std::process::Stdio::null());
    c
}

/// How long a process test waits for a process to exit or to print a line.
pub(crate) const PROCESS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads `pipe` to its end on a thread, so a child never blocks on a full pipe
/// while the test waits for it.
fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

/// Runs to completion, killing it after [`PROCESS_DEADLINE`] (a refused start
/// must be quick; one that wrongly starts serving fails here instead of hanging
/// the test). Both pipes are read while it runs.
pub(crate) fn run(cmd: &mut std::process::Command) -> std::process::Output {
    use std::process::Stdio;
    use std::time::Instant;
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn meshgate");
    let (out, err) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let deadline = Instant::now() + PROCESS_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for meshgate") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let status = child.wait().expect("reap meshgate");
            let (out, err) = (out.join().unwrap(), err.join().unwrap());
            panic!(
                "meshgate did not exit within {PROCESS_DEADLINE:?} ({status}); stdout: {:?}; stderr: {:?}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    std::process::Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

/// A process that serves until stopped (meshgate, or an example built on the
/// library): killed and reaped on drop, so a failed assertion leaves nothing
/// running. Its stdout is read line by line on a thread, so it never blocks on
/// a full pipe; every wait has a deadline. Stderr goes nowhere.
pub(crate) struct Server {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Server {
    /// Starts `cmd` (stdin null, stdout read here, stderr null).
    pub(crate) fn start(cmd: &mut std::process::Command) -> Server {
        use std::process::Stdio;
        let mut child =
            cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn the server");
        let out = child.stdout.take().expect("stdout is piped");
        let lines = crate::lines(out);
        Server { child, lines }
    }

    /// The first `n` lines it prints, within [`PROCESS_DEADLINE`].
    pub(crate) fn wait_lines(&self, n: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + PROCESS_DEADLINE;
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => got.push(l),
                Err(e) => panic!("wanted {n} lines within {PROCESS_DEADLINE:?}, got {got:?} ({e})"),
            }
        }
        got
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit, within [`PROCESS_DEADLINE`].
    pub(crate) fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.pid().to_string();
        let sent = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(sent.success(), "kill -TERM {pid}: {sent}");
        let deadline = std::time::Instant::now() + PROCESS_DEADLINE;
        loop {
            if let Some(s) = self.child.try_wait().expect("wait for the server") {
                return s;
            }
            assert!(std::time::Instant::now() < deadline, "no exit within {PROCESS_DEADLINE:?} after SIGTERM");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Kills and reaps it, then returns every stdout line not yet taken by
    /// [`wait_lines`](Self::wait_lines), up to the end of the pipe.
    pub(crate) fn kill_and_rest(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let deadline = std::time::Instant::now() + PROCESS_DEADLINE;
        let mut rest = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => rest.push(l),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return rest,
                Err(e) => panic!("stdout still open {PROCESS_DEADLINE:?} after the kill ({e}); read so far: {rest:?}"),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `meshgate serve ARGS` must exit 2 (usage) with `needle` in its message.
pub(crate) fn assert_serve_usage_error(args: &[&str], needle: &str) {
    let o = run(meshgate(&["serve"]).args(args));
    assert_eq!(o.status.code(), Some(2), "{args:?}");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains(needle), "{args:?}: {e}");
}

/// `meshgate serve --config FILE` with `toml` as the file: (exit code, stderr).
pub(crate) fn serve_with_config(tag: &str, toml: &str) -> (Option<i32>, String) {
    let dir = std::env::temp_dir().join(format!("meshgate-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("m.toml");
    std::fs::write(&cfg, toml).unwrap();
    let o = run(&mut meshgate(&["serve", "--config", cfg.to_str().unwrap()]));
    let _ = std::fs::remove_dir_all(&dir);
    (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// One `GET` on a kept-alive connection; the response, as [`read_response`].
pub(crate) async fn keep_alive_get(s: &mut tokio::net::TcpStream, path: &str) -> String {
    use tokio::io::AsyncWriteExt;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes()).await.unwrap();
    read_response(s).await
}

/// Reads exactly one response (head and its Content-Length body) within 10 s,
/// leaving the connection open; returns it as text.
pub(crate) async fn read_response(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let read = async {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).await.unwrap(), 1, "connection closed mid-head: {buf:?}");
            buf.push(byte[0]);
        }
        let head = String::from_utf8(buf).unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
            .expect("a Content-Length");
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.unwrap();
        head + &String::from_utf8_lossy(&body)
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read).await.expect("a response within 10 s")
}

/// A blocking `GET` over a fresh connection (`Connection: close`); the raw response.
pub(crate) fn http_get(addr: std::net::SocketAddr, path: &str, auth: Option<&str>) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let auth = auth.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    r
}
