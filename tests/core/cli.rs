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

/// `meshgate serve ARGS` on 127.0.0.1, port 0: refused configurations exit at
/// once (a start that wrongly serves is killed at the deadline and fails).
fn serve_refused(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = meshgate(&["serve", "--bind", "127.0.0.1", "--port", "0", "--no-follow"]);
    cmd.args(args).envs(env.iter().copied());
    crate::gateway::run(&mut cmd)
}

#[test]
fn a_log_level_typo_is_a_usage_error_with_the_level_meant() {
    for cmd in ["serve", "explain"] {
        let o = run(&mut meshgate(&[cmd, "--log-level", "warning"]));
        assert_eq!(o.status.code(), Some(2), "{cmd}: {}", stderr(&o));
        assert!(stderr(&o).contains("did you mean `warn`?"), "{}", stderr(&o));
    }
    // A bare word that is no level would be read as a target and silence the log.
    let o = run(&mut meshgate(&["serve", "--log-level", "bogus"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn a_bad_log_level_in_the_config_file_is_78_with_its_line() {
    let cfg = TempConfig::new("log-level", "port = 1\n\nlog_level = \"warning\"\n");
    for cmd in ["serve", "explain"] {
        let o = run(&mut meshgate(&[cmd, "--config", cfg.path()]));
        assert_eq!(o.status.code(), Some(78), "{cmd}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains(&format!("config file {}, line 3: log_level", cfg.path())), "{e}");
        assert!(e.contains("did you mean `warn`?"), "{e}");
    }
}

#[test]
fn a_bad_rust_log_is_warned_about_and_the_default_used() {
    let mut cmd = meshgate(&["serve", "--bind", "127.0.0.1", "--port", "0", "--no-follow"]);
    cmd.env("RUST_LOG", "bogus").stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let out = crate::lines(child.stdout.take().unwrap());
    let err = crate::lines(child.stderr.take().unwrap());
    let first = out.recv_timeout(std::time::Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.is_ok_and(|l| l.starts_with("listening on")), "serve did not start");
    let log: Vec<String> = err.iter().collect();
    let log = log.join("\n");
    assert!(log.contains("RUST_LOG=\"bogus\" is ignored"), "{log}");
    // The default level: info records are logged, not silenced.
    assert!(log.contains("INFO") && log.contains("config file: none"), "{log}");
}

/// Each of these `serve` refuses with 78 before binding; `explain` must
/// refuse it the same way (exit code and message), naming the file and line.
#[test]
fn explain_refuses_what_serve_refuses_with_the_same_message() {
    let cases = [
        ("limits", "port = 1\n[limits]\nmax_connections = 0\n", 3, "limits.max_connections"),
        ("upstream", "upstream = \"127.0.0.1:3000\"\n", 1, "upstream"),
        ("tls-files", "[tls]\ncert = \"missing-cert.pem\"\nkey = \"missing-key.pem\"\n", 2, "tls.cert"),
        ("tls-half", "[tls]\n\nkey = \"k.pem\"\n", 3, "tls.key"),
        ("idle", "[limits]\nidle_timeout = -1\n", 2, "limits.idle_timeout"),
        ("provider", "[providers.wiregard]\n", 1, "providers.wiregard"),
        ("auto", "auto = [\"lan\"]\n", 1, "auto"),
        ("state-dir", "state_dir = \"/dev/null/meshgate\"\n[tls]\nself_signed = true\n", 1, "state_dir"),
    ];
    for (tag, text, line, key) in cases {
        let cfg = TempConfig::new(&format!("preflight-{tag}"), text);
        let served = serve_refused(&["--config", cfg.path()], &[]);
        let explained = run(&mut meshgate(&["explain", "--config", cfg.path()]));
        assert_eq!(served.status.code(), Some(78), "{tag}: serve: {}", stderr(&served));
        assert_eq!(explained.status.code(), Some(78), "{tag}: explain: {}", stderr(&explained));
        assert_eq!(stderr(&explained), stderr(&served).lines().last().unwrap().to_owned() + "\n", "{tag}");
        let e = stderr(&explained);
        assert!(e.contains(&format!("config file {}, line {line}: {key} = ", cfg.path())), "{tag}: {e}");
        assert!(explained.stdout.is_empty(), "{tag}: explain answered a configuration serve refuses");
    }
    // A token file that cannot be read: the same refusal.
    let o = run(&mut meshgate(&["explain", "--token-file", "/nonexistent/meshgate-token"]));
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(stderr(&o).contains("/nonexistent/meshgate-token"), "{}", stderr(&o));
}

#[test]
fn a_bad_environment_variable_is_blamed_on_itself() {
    for cmd in [&["explain"][..], &["serve"], &[]] {
        let o = run(meshgate(cmd).env("MESHGATE_PORT", "abc"));
        assert_eq!(o.status.code(), Some(2), "{cmd:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains("MESHGATE_PORT=\"abc\"") && !e.contains("--port"), "{e}");
    }
    let o = run(meshgate(&["explain"]).env("MESHGATE_LOG_FORMAT", "yaml"));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("MESHGATE_LOG_FORMAT=\"yaml\""), "{}", stderr(&o));
}

#[test]
fn an_empty_environment_variable_is_unset() {
    let empty = [
        ("MESHGATE_PORT", ""),
        ("MESHGATE_CONFIG", ""),
        ("MESHGATE_UPSTREAM", ""),
        ("MESHGATE_LOG_FORMAT", ""),
        ("MESHGATE_STATE_DIR", ""),
        ("MESHGATE_TOKEN", ""),
        ("MESHGATE_BIND", ""),
    ];
    let o = run(meshgate(&["explain", "--json"]).envs(empty));
    let doc = json(&o);
    assert_eq!(doc["listeners"][0]["port"], 18789, "{doc}");
    // serve on loopback starts: no exit 2, no 78 for the empty token.
    let mut cmd = meshgate(&["serve", "--bind", "127.0.0.1", "--port", "0", "--no-follow"]);
    let mut server = crate::gateway::Server::start(cmd.envs(empty));
    assert!(server.wait_lines(1)[0].starts_with("listening on http://127.0.0.1:"));
    assert!(server.terminate().success());
}

#[test]
fn bind_may_be_a_string_or_a_comma_list_in_the_config_file() {
    let one = TempConfig::new("bind-string", "bind = \"loopback\"\n");
    assert_eq!(selectors(&run(&mut meshgate(&["explain", "--json", "--config", one.path()]))), ["loopback"]);
    let two = TempConfig::new("bind-list", "bind = \"loopback, iface:lo\"\n");
    assert_eq!(
        selectors(&run(&mut meshgate(&["explain", "--json", "--config", two.path()]))),
        ["loopback", "iface:lo"]
    );
    let bad = TempConfig::new("bind-number", "port = 1\nbind = 7\n");
    let o = run(&mut meshgate(&["explain", "--config", bad.path()]));
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(stderr(&o).contains("line 2") && stderr(&o).contains("a selector such as \"lan\""), "{}", stderr(&o));
}

#[test]
fn explain_and_serve_say_which_config_file_they_read() {
    let cfg = TempConfig::new("which-file", "port = 0\nbind = [\"127.0.0.1\"]\nfollow = false\n");
    let o = run(&mut meshgate(&["explain", "--config", cfg.path()]));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(text.lines().next(), Some(format!("config file: {}", cfg.path()).as_str()), "{text}");
    let doc = json(&run(&mut meshgate(&["explain", "--json", "--config", cfg.path()])));
    assert_eq!(doc["config"], cfg.path(), "{doc}");
    let doc = json(&run(&mut meshgate(&["explain", "--json"])));
    assert!(doc["config"].is_null(), "{doc}");
    let o = run(&mut meshgate(&["explain"]));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().next(), Some("config file: none"));
    // serve: the first line of its log.
    let mut cmd = meshgate(&["serve", "--config", cfg.path(), "--log-format", "json"]);
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let out = crate::lines(child.stdout.take().unwrap());
    let err = crate::lines(child.stderr.take().unwrap());
    let started = out.recv_timeout(std::time::Duration::from_secs(10)).is_ok();
    let first = err.recv_timeout(std::time::Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();
    assert!(started, "serve did not start");
    let first: Value = serde_json::from_str(&first.expect("a log line")).unwrap();
    assert_eq!(first["message"], format!("config file: {}", cfg.path()), "{first}");
}

#[test]
fn explain_json_members_are_in_the_documented_order() {
    let o = run(&mut meshgate(&["explain", "--json"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    let top: Vec<&str> =
        text.lines().filter_map(|l| l.strip_prefix("  \"").and_then(|r| r.split_once('"')).map(|(k, _)| k)).collect();
    assert_eq!(
        top,
        ["config", "selectors", "listeners", "fallback", "fallback_reason", "notes", "providers", "token_needed"],
        "{text}"
    );
    let listener: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("  \"listeners\""))
        .take_while(|l| *l != "    }," && *l != "    }")
        .filter_map(|l| l.strip_prefix("      \"").and_then(|r| r.split_once('"')).map(|(k, _)| k))
        .collect();
    assert_eq!(listener, ["address", "port", "provider", "interface", "reason", "role", "url"], "{text}");
}

#[test]
fn help_and_version_to_a_full_disk_fail() {
    if !std::path::Path::new("/dev/full").exists() {
        panic!("/dev/full is missing on this Linux host");
    }
    for flag in ["--help", "--version"] {
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let o = run(meshgate(&[flag]).stdout(full));
        assert_eq!(o.status.code(), Some(74), "{flag}: {}", stderr(&o));
        assert!(stderr(&o).contains("No space left on device"), "{flag}: {}", stderr(&o));
    }
}

#[test]
fn help_names_every_kind_of_peer_allow_peer_takes() {
    let o = run(&mut meshgate(&["serve", "--help"]));
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(help.contains("--allow-peer <NAME|KEY|LOGIN|tag:T>"), "{help}");
}

/// explain checks the self-signed key serve would use as serve checks it: a
/// key file serve cannot use is refused with serve's exit code and message;
/// and explain makes nothing (no state directory, no key, no certificate).
#[test]
fn explain_checks_the_self_signed_key_and_makes_none() {
    let root = std::env::temp_dir().join(format!("meshgate-test-{}-selfsigned", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let bad = root.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join(meshgate::tls::KEY_FILE), "not a key\n").unwrap();
    let flags = ["--tls", "self-signed", "--state-dir", bad.to_str().unwrap()];
    let served = serve_refused(&flags, &[]);
    let explained = run(meshgate(&["explain"]).args(flags));
    assert_eq!(served.status.code(), Some(78), "serve: {}", stderr(&served));
    assert_eq!(explained.status.code(), Some(78), "explain: {}", stderr(&explained));
    assert_eq!(stderr(&explained).lines().last(), stderr(&served).lines().last());
    assert!(stderr(&explained).contains("no usable private key"), "{}", stderr(&explained));
    assert!(explained.stdout.is_empty(), "explain answered a key serve refuses");
    // A directory that does not exist yet, and an empty one: nothing is made.
    let new = root.join("new/meshgate");
    let o = run(&mut meshgate(&["explain", "--tls", "self-signed", "--state-dir", new.to_str().unwrap()]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!root.join("new").exists(), "explain made the state directory");
    let empty = root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = run(&mut meshgate(&["explain", "--tls", "self-signed", "--state-dir", empty.to_str().unwrap()]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "explain wrote into the state directory");
    let _ = std::fs::remove_dir_all(&root);
}
