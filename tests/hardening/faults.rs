//! Start-up faults: each a clear message, the right exit code, nothing left listening.

use std::process::Output;

use crate::gateway::{meshgate, run as run_cmd};

fn run(args: &[&str]) -> Output {
    run_cmd(&mut meshgate(args))
}

fn temp(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("meshgate-fault-{}-{tag}", std::process::id()))
}

#[test]
fn an_unreadable_token_file_is_refused() {
    // A directory cannot be read as a file, even by root.
    let dir = temp("tokdir");
    std::fs::create_dir_all(&dir).unwrap();
    let o = run(&["serve", "--bind", "all", "--token-file", dir.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(o.status.code(), Some(78));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains(dir.to_str().unwrap()) && e.contains("read token file"), "{e}");
}

#[test]
fn a_token_file_others_can_read_is_warned_about_not_refused() {
    use std::os::unix::fs::PermissionsExt;
    let f = temp("tok0444");
    std::fs::write(&f, "s3cret-token-value\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o444)).unwrap();
    // --fallback fail on a name no host has: it loads the token, warns, then exits 69
    // without binding anything.
    let o = run(&[
        "serve",
        "--bind",
        "iface:meshgate-no-such-if",
        "--fallback",
        "fail",
        "--token-file",
        f.to_str().unwrap(),
    ]);
    std::fs::remove_file(&f).unwrap();
    assert_eq!(o.status.code(), Some(69), "{}", String::from_utf8_lossy(&o.stderr));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("readable by other users") && e.contains("chmod 600"), "{e}");
    assert!(!e.contains("s3cret-token-value"), "the token leaked into the log");
}

#[test]
fn a_bad_config_value_names_file_line_and_key() {
    let f = temp("bad.toml");
    std::fs::write(&f, "port = 18789\nfallback = \"widen\"\n").unwrap();
    let o = run(&["explain", "--config", f.to_str().unwrap()]);
    std::fs::remove_file(&f).unwrap();
    assert_eq!(o.status.code(), Some(78));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains(f.to_str().unwrap()) && e.contains("line 2") && e.contains("widen"), "{e}");
}
