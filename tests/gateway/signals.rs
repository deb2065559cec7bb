//! Signals `serve` handles: SIGHUP (logrotate, `systemctl reload`) never ends
//! the gateway, whatever it serves; SIGTERM ends it cleanly.

use std::time::Duration;

use super::{meshgate, Server};

fn alive_after_hup(args: &[&str], lines: usize) {
    let mut server = Server::start(&mut meshgate(args));
    let printed = server.wait_lines(lines);
    let pid = server.pid().to_string();
    let sent = std::process::Command::new("kill").args(["-HUP", &pid]).status().expect("run kill");
    assert!(sent.success());
    std::thread::sleep(Duration::from_millis(300));
    // Alive, and not a zombie waiting to be reaped (`kill -0` would pass that).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next().unwrap_or('?')).unwrap_or('?');
    assert!(!matches!(state, 'Z' | 'X' | '?'), "{args:?} died of SIGHUP (state {state}; printed {printed:?})");
    let status = server.terminate();
    assert!(status.success(), "{args:?}: SIGTERM gave {status}");
}

#[test]
fn sighup_never_ends_the_gateway() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    alive_after_hup(&["serve", "--bind", "127.0.0.1", "--port", &port, "--no-follow"], 1);
    // Self-signed TLS has no files to reload: SIGHUP must still be handled.
    let state = std::env::temp_dir().join(format!("meshgate-hup-{}", std::process::id()));
    let state = state.to_str().unwrap();
    let args = [
        "serve",
        "--bind",
        "127.0.0.1",
        "--port",
        &port,
        "--no-follow",
        "--tls",
        "self-signed",
        "--tls-loopback",
        "--state-dir",
        state,
    ];
    alive_after_hup(&args, 2);
    let _ = std::fs::remove_dir_all(state);
}
