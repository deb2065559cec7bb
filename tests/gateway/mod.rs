//! The gateway: the auth matrix without sockets, follow with a mocked watcher,
//! the real process (exit codes, all-or-nothing binding, /ws), the upstream
//! proxy and the library API.

mod auth_matrix;
mod embed;
mod follow_mock;
mod limits;
mod process;
mod signin;
mod upstream;

/// `meshgate ARGS` with none of meshgate's environment variables set.
pub(crate) fn meshgate(args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_meshgate"));
    c.args(args);
    for var in ["MESHGATE_BIND", "MESHGATE_PORT", "MESHGATE_TOKEN", "MESHGATE_CONFIG", "MESHGATE_UPSTREAM"] {
        c.env_remove(var);
    }
    c.stdin(std::process::Stdio::null());
    c
}

/// Runs to completion, killing it after 10 s (a refused start must be quick;
/// one that wrongly starts serving fails here instead of hanging the test).
pub(crate) fn run(cmd: &mut std::process::Command) -> std::process::Output {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn meshgate");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("meshgate did not exit: {:?}", child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
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
