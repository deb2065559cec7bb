//! The gateway: the auth matrix without sockets, follow with a mocked watcher,
//! the real process (exit codes, all-or-nothing binding, /ws), the upstream
//! proxy and the library API.

mod auth_matrix;
mod embed;
mod follow_mock;
mod limits;
mod process;
mod upstream;

/// `meshgate serve ARGS` must exit 2 (usage) with `needle` in its message.
pub(crate) fn assert_serve_usage_error(args: &[&str], needle: &str) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .arg("serve")
        .args(args)
        .env_remove("MESHGATE_UPSTREAM")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{args:?}");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains(needle), "{args:?}: {e}");
}
