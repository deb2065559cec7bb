//! The built binary's contract: JSON listings, exit codes, and where `--bind`
//! comes from (flag > env > config file > default). These run on the real host,
//! so they only assert what does not depend on its interfaces.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

/// `meshgate ARGS` with no MESHGATE_* variables inherited from the test's environment.
fn meshgate(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshgate"));
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MESHGATE_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run the meshgate binary")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> Value {
    assert!(o.status.success(), "exit {:?}: {}", o.status.code(), stderr(o));
    serde_json::from_slice(&o.stdout).expect("stdout is one JSON object")
}

/// The selectors `explain --json` says it resolved.
fn selectors(o: &Output) -> Vec<String> {
    json(o)["selectors"]
        .as_array()
        .expect("selectors is an array")
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// A config file unique to this test, removed when dropped.
struct TempConfig(PathBuf);

impl TempConfig {
    fn new(tag: &str, text: &str) -> Self {
        let p = std::env::temp_dir().join(format!("meshgate-test-{}-{tag}.toml", std::process::id()));
        std::fs::write(&p, text).expect("write a temp config");
        Self(p)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn providers_json_lists_every_builtin() {
    let doc = json(&run(&mut meshgate(&["providers", "--json"])));
    let list = doc["providers"].as_array().expect("providers is an array");
    let names: Vec<&str> = list.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, meshgate::builtin::NAMES);
    for p in list {
        assert!(p["priority"].is_u64(), "{p}");
        assert!(p["description"].as_str().is_some_and(|d| !d.is_empty()), "{p}");
        assert_eq!(p["crate"].as_str(), Some(format!("meshgate-provider-{}", p["name"].as_str().unwrap()).as_str()));
        let auto = p["auto"].as_bool().expect("auto is a bool");
        let name = p["name"].as_str().unwrap();
        assert_eq!(auto, !["loopback", "yggdrasil", "lan", "all"].contains(&name), "{p}");
    }
}

#[test]
fn an_unknown_selector_is_exit_2_with_a_suggestion() {
    let o = run(&mut meshgate(&["explain", "--bind", "tailnte"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("did you mean `tailnet`?"), "{err}");
    assert!(o.stdout.is_empty(), "nothing is explained when the selector is bad");
}

#[test]
fn a_bad_cidr_is_exit_2_naming_the_value() {
    let o = run(&mut meshgate(&["explain", "--bind", "cidr:10.8.0.0/40"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("cidr:10.8.0.0/40"), "{}", stderr(&o));
}

#[test]
fn an_unknown_config_key_is_exit_78_naming_file_line_and_key() {
    let cfg = TempConfig::new("unknown-key", "port = 18790\nbnid = [\"wireguard\"]\n");
    let o = run(&mut meshgate(&["explain", "--config", cfg.path()]));
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains(cfg.path()), "{err}");
    assert!(err.contains("line 2"), "{err}");
    assert!(err.contains("bnid"), "{err}");
}

#[test]
fn bind_precedence_is_flag_then_env_then_file() {
    let cfg = TempConfig::new("bind", "bind = [\"cidr:127.0.0.0/8\"]\n");
    // Only the file: its bind is used.
    let o = run(&mut meshgate(&["explain", "--json", "--config", cfg.path()]));
    assert_eq!(selectors(&o), ["cidr:127.0.0.0/8"]);
    // Env beats the file.
    let o = run(meshgate(&["explain", "--json", "--config", cfg.path()]).env("MESHGATE_BIND", "iface:lo"));
    assert_eq!(selectors(&o), ["iface:lo"]);
    // The flag beats both.
    let o =
        run(meshgate(&["explain", "--json", "--config", cfg.path(), "--bind", "loopback"])
            .env("MESHGATE_BIND", "iface:lo"));
    assert_eq!(selectors(&o), ["loopback"]);
    // Nothing at all: loopback.
    let o = run(&mut meshgate(&["explain", "--json"]));
    assert_eq!(selectors(&o), ["loopback"]);
}

#[test]
fn env_bind_is_honoured_and_may_list_several() {
    let o = run(meshgate(&["explain", "--json"]).env("MESHGATE_BIND", "loopback,iface:lo"));
    assert_eq!(selectors(&o), ["loopback", "iface:lo"]);
    // A bad value from the environment is a usage error like a bad flag.
    let o = run(meshgate(&["explain"]).env("MESHGATE_BIND", "wiregaurd"));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// True when this host has anything the wireguard mode could claim. Read from
/// sysfs rather than from meshgate itself, so a misdetection cannot skip the test.
fn host_has_wireguard() -> bool {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return true; // not Linux, or no sysfs: cannot tell, so do not assert
    };
    dir.flatten().any(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let uevent = std::fs::read_to_string(e.path().join("uevent")).unwrap_or_default();
        name.starts_with("wg")
            || name.starts_with("wt")
            || uevent.contains("DEVTYPE=wireguard")
            || std::path::Path::new(&format!("/var/run/wireguard/{name}.sock")).exists()
    })
}

#[test]
fn wireguard_with_fallback_fail_is_exit_69_on_a_host_without_wireguard() {
    if host_has_wireguard() {
        eprintln!("skipped: this host has a WireGuard interface, so `--bind wireguard` matches");
        return;
    }
    let o = run(&mut meshgate(&["explain", "--bind", "wireguard", "--fallback", "fail"]));
    assert_eq!(o.status.code(), Some(69), "{}", stderr(&o));
    assert!(stderr(&o).contains("--fallback is fail"), "{}", stderr(&o));
    // The same without `fail` falls back to loopback and succeeds.
    let doc = json(&run(&mut meshgate(&["explain", "--json", "--bind", "wireguard"])));
    assert_eq!(doc["fallback"], Value::Bool(true));
    assert!(doc["listeners"].as_array().unwrap().iter().all(|l| l["provider"] == "loopback"), "{doc}");
}
