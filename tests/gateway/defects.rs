//! The rough edges issue #17 found, one test each: each failed before its fix.
//! They run the real binary through the bounded runner of `mod.rs`, and bind
//! nothing (a selector that matches nothing with `--fallback fail` is exit 69
//! before any socket is opened).

use std::process::Stdio;

use serde_json::Value;

use super::{meshgate, run, PROCESS_DEADLINE};

/// A network no host of ours has an address in (TEST-NET-2).
const NOWHERE: &str = "cidr:198.51.100.0/24";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("meshgate-defects-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits for a child whose stdout is not piped, within the deadline.
fn wait_bounded(mut child: std::process::Child) -> (Option<i32>, String) {
    let err = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = err {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
        s
    });
    let deadline = std::time::Instant::now() + PROCESS_DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code(), reader.join().unwrap());
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no exit within {PROCESS_DEADLINE:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn explain_json_with_nothing_to_bind_is_on_stdout() {
    let o = run(&mut meshgate(&["explain", "--bind", NOWHERE, "--fallback", "fail", "--json"]));
    assert_eq!(o.status.code(), Some(69), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {out:?}"));
    assert_eq!(doc["listeners"], Value::Array(vec![]));
    assert!(out.ends_with("}\n"), "{out:?}");
    let err = text(&o.stderr);
    assert!(err.contains("--fallback is fail") && !err.contains('{'), "{err}");
}

#[test]
fn json_documents_end_with_a_newline() {
    for args in [&["providers", "--json"][..], &["explain", "--json"][..]] {
        let o = run(&mut meshgate(args));
        assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
        assert!(text(&o.stdout).ends_with("}\n"), "{args:?}");
    }
}

#[test]
fn a_token_path_that_is_a_directory_gets_no_advice_to_overwrite_it() {
    let dir = TempDir::new("tokdir");
    let o = run(&mut meshgate(&["serve", "--bind", NOWHERE, "--token-file", dir.0.to_str().unwrap()]));
    assert_eq!(o.status.code(), Some(78));
    let err = text(&o.stderr);
    assert!(err.contains("not a regular file") && err.contains("a directory"), "{err}");
    assert!(!err.contains("> "), "advice to write over it: {err}");
}

#[test]
fn a_full_stdout_is_an_error_not_a_panic() {
    let full = std::fs::File::options().write(true).open("/dev/full").expect("/dev/full");
    let child = meshgate(&["providers"]).stdout(full).stderr(Stdio::piped()).spawn().unwrap();
    let (code, err) = wait_bounded(child);
    assert_eq!(code, Some(74), "{err}");
    assert!(err.contains("write to stdout") && !err.contains("panicked"), "{err}");
}

#[test]
fn a_closed_stdout_ends_quietly() {
    use std::os::fd::{FromRawFd, OwnedFd};
    // A pipe whose read end is closed before meshgate writes: EPIPE for certain.
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just made by pipe() and are owned here only.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    let child = meshgate(&["explain"]).stdout(Stdio::from(write)).stderr(Stdio::piped()).spawn().unwrap();
    let (code, err) = wait_bounded(child);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_bad_bind_in_the_config_file_is_78_naming_file_and_line() {
    let dir = TempDir::new("cfgbind");
    let cfg = dir.0.join("m.toml");
    std::fs::write(&cfg, "# meshgate\nbind = [\"wiregard\"]\n").unwrap();
    let o = run(&mut meshgate(&["explain", "--config", cfg.to_str().unwrap()]));
    assert_eq!(o.status.code(), Some(78));
    let err = text(&o.stderr);
    assert!(err.contains(&format!("{}, line 2", cfg.display())) && err.contains("did you mean"), "{err}");
}

#[test]
fn meshgate_bind_names_itself_and_empty_is_unset() {
    let o = run(meshgate(&["explain"]).env("MESHGATE_BIND", "wiregard"));
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("MESHGATE_BIND"), "{}", text(&o.stderr));
    let o = run(meshgate(&["explain", "--json"]).env("MESHGATE_BIND", ""));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["selectors"], serde_json::json!(["loopback"]));
}

#[test]
fn wait_takes_fractions_like_every_other_duration() {
    let o = run(&mut meshgate(&["serve", "--bind", NOWHERE, "--fallback", "fail", "--wait", "0.5"]));
    assert_eq!(o.status.code(), Some(69), "{}", text(&o.stderr));
}

#[test]
fn a_mode_in_capitals_gets_did_you_mean() {
    let o = run(&mut meshgate(&["explain", "--bind", "LAN"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("did you mean `lan`?"), "{}", text(&o.stderr));
}

#[test]
fn a_relative_token_file_is_relative_to_the_config_file() {
    let dir = TempDir::new("reltok");
    std::fs::write(dir.0.join("token"), "0123456789abcdef0123456789abcdef\n").unwrap();
    let cfg = dir.0.join("m.toml");
    std::fs::write(&cfg, format!("bind = [\"{NOWHERE}\"]\nfallback = \"fail\"\ntoken_file = \"token\"\n")).unwrap();
    // From another directory: the token is found beside the file, and the run
    // gets as far as "nothing matched".
    let o = run(meshgate(&["serve", "--config", cfg.to_str().unwrap()]).current_dir("/"));
    assert_eq!(o.status.code(), Some(69), "{}", text(&o.stderr));
}

#[test]
fn a_short_token_is_warned_about() {
    let o = run(meshgate(&["serve", "--bind", NOWHERE, "--fallback", "fail"]).env("MESHGATE_TOKEN", "x"));
    assert_eq!(o.status.code(), Some(69));
    assert!(text(&o.stderr).contains("short enough to guess"), "{}", text(&o.stderr));
    let o = run(meshgate(&["serve", "--bind", NOWHERE, "--fallback", "fail"])
        .env("MESHGATE_TOKEN", "0123456789abcdef0123456789abcdef"));
    assert!(!text(&o.stderr).contains("short enough"), "{}", text(&o.stderr));
}

#[test]
fn explain_takes_serve_flags_and_says_when_a_token_is_needed() {
    // (A token file that cannot be read is refused, as serve refuses it:
    // core::cli::explain_refuses_what_serve_refuses_with_the_same_message.)
    let serve_flags = ["--upstream", "http://127.0.0.1:9", "--wait", "1", "--max-connections", "5", "--access-log"];
    let o = run(meshgate(&["explain", "--json"]).args(serve_flags));
    assert!(o.status.success(), "{}", text(&o.stderr));
    // `all` is the wildcards: non-loopback on every host.
    let o = run(&mut meshgate(&["explain", "--bind", "all", "--json"]));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(doc["token_needed"].as_str().is_some_and(|s| s.contains("without a token")), "{doc}");
    let o = run(meshgate(&["explain", "--bind", "all"]).env("MESHGATE_TOKEN", "0123456789abcdef0123456789abcdef"));
    let doc = text(&o.stdout);
    assert!(!doc.contains("token: needed"), "{doc}");
    let o = run(&mut meshgate(&["explain", "--bind", "all"]));
    assert!(text(&o.stdout).contains("token: needed"), "{}", text(&o.stdout));
}

#[test]
fn text_listings_are_in_line() {
    let o = run(&mut meshgate(&["providers"]));
    assert!(!text(&o.stdout).contains(":: :"), "{}", text(&o.stdout));
    let o = run(&mut meshgate(&["explain"]));
    let out = text(&o.stdout);
    let columns: Vec<usize> = out.lines().filter(|l| l.ends_with(" nothing")).map(|l| l.len()).collect();
    assert!(columns.len() > 1, "{out}");
    assert!(columns.iter().all(|&c| c == columns[0]), "{out}");
}
