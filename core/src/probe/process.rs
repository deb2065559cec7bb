//! The process table, for probes whose daemon has no API: which processes of a
//! given name run in *this* network namespace, their command lines, and the
//! TUN/TAP devices they hold open.
//!
//! Only processes whose `/proc/PID/ns/net` is the same as `/proc/self/ns/net`
//! count: a tincd in a container drives that container's interface, not ours
//! (and one we may not inspect counts as not ours). The device a process holds
//! is read from the `iff:` line the kernel writes in the fdinfo of every open
//! `/dev/net/tun`: the kernel's word, not a guess from a name.

use std::path::{Path, PathBuf};

const PROC: &str = "/proc";

/// A daemon found in the process table.
#[derive(Debug, Clone)]
pub(crate) struct Daemon {
    /// Its pid.
    pub(crate) pid: u32,
    /// Its command line, `argv[0]` first.
    pub(crate) args: Vec<String>,
    /// Its working directory, for relative paths on its command line.
    pub(crate) cwd: Option<PathBuf>,
}

/// Every process's name (`comm`), read once for all the probes of one
/// snapshot ([`one_scan`]): two probes that each looked for their daemon
/// read every `/proc/PID/comm` twice.
#[derive(Debug, Default)]
pub(crate) struct ProcScan(std::sync::OnceLock<Vec<(u32, Box<[u8]>)>>);

tokio::task_local! {
    static SCAN: ProcScan;
}

/// Runs `f` (the probes of one snapshot) with one shared process scan: the
/// first [`running`] inside reads the process table, the others reuse it.
/// Scoped to `f`, so no later snapshot sees a process table older than itself.
pub(crate) async fn one_scan<F: std::future::Future>(f: F) -> F::Output {
    SCAN.scope(ProcScan::default(), f).await
}

/// The processes called one of `names` (their `comm`) in this network namespace.
pub(crate) fn running(names: &[&str]) -> Vec<Daemon> {
    let proc = Path::new(PROC);
    let Ok(own_ns) = std::fs::read_link(proc.join("self/ns/net")) else {
        return Vec::new();
    };
    let is_named = |comm: &[u8]| names.iter().any(|n| n.as_bytes() == comm);
    let pids: Vec<u32> = SCAN
        .try_with(|scan| {
            scan.0.get_or_init(all_comms).iter().filter(|(_, comm)| is_named(comm)).map(|(pid, _)| *pid).collect()
        })
        .unwrap_or_else(|_| each_process(|pid, comm| is_named(comm).then_some(pid)));
    let mut out = Vec::new();
    for pid in pids {
        let base = proc.join(pid.to_string());
        // Another namespace's daemon, or one we may not inspect: not ours.
        if std::fs::read_link(base.join("ns/net")).ok().as_ref() != Some(&own_ns) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(base.join("cmdline")) else {
            continue;
        };
        let args = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        out.push(Daemon { pid, args, cwd: std::fs::read_link(base.join("cwd")).ok() });
    }
    out.sort_by_key(|d| d.pid);
    out
}

/// Every process and its name.
fn all_comms() -> Vec<(u32, Box<[u8]>)> {
    each_process(|pid, comm| Some((pid, Box::from(comm))))
}

/// Calls `f` with each process's pid and `comm`, keeping what it returns. The
/// `comm` is at most 16 bytes: read into a buffer on the stack, with no size
/// probe or allocation, as this runs for every process on every snapshot.
fn each_process<T>(mut f: impl FnMut(u32, &[u8]) -> Option<T>) -> Vec<T> {
    use std::io::Read as _;
    let Ok(dir) = std::fs::read_dir(PROC) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut buf = [0u8; 64];
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(n) = std::fs::File::open(entry.path().join("comm")).and_then(|mut file| file.read(&mut buf)) else {
            continue;
        };
        let comm = buf[..n].strip_suffix(b"\n").unwrap_or(&buf[..n]);
        out.extend(f(pid, comm));
    }
    out
}

/// The TUN/TAP devices process `pid` holds open (the `iff:` of each open
/// `/dev/net/tun` in its fdinfo).
pub(crate) fn tun_devices(pid: u32) -> Vec<String> {
    let base = Path::new(PROC).join(pid.to_string());
    let Ok(fds) = std::fs::read_dir(base.join("fd")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for fd in fds.flatten() {
        if std::fs::read_link(fd.path()).ok().as_deref() != Some(Path::new("/dev/net/tun")) {
            continue;
        }
        let Ok(info) = std::fs::read_to_string(base.join("fdinfo").join(fd.file_name())) else {
            continue;
        };
        if let Some(name) = info.lines().find_map(|l| l.strip_prefix("iff:")).map(str::trim) {
            if !name.is_empty() && !out.iter().any(|n| n == name) {
                out.push(name.to_owned());
            }
        }
    }
    out
}

/// The value of an option on a command line: `-n NET`, `-nNET`, `--net=NET`,
/// `--net NET` (any of the given spellings).
pub(crate) fn option<'a>(args: &'a [String], short: Option<&str>, long: &[&str]) -> Option<&'a str> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if let Some(s) = short {
            if a == s {
                return it.next().map(String::as_str);
            }
            if let Some(v) = a.strip_prefix(s).filter(|v| !v.is_empty() && !a.starts_with("--")) {
                return Some(v);
            }
        }
        for l in long {
            if a == l {
                return it.next().map(String::as_str);
            }
            if let Some(v) = a.strip_prefix(l).and_then(|v| v.strip_prefix('=')) {
                return Some(v);
            }
        }
    }
    None
}

/// `path` as the daemon sees it: relative paths are relative to its `base`
/// (its `--cd` directory, else its working directory).
pub(crate) fn resolve(path: &str, base: Option<&Path>) -> PathBuf {
    let p = Path::new(path);
    match base {
        Some(b) if p.is_relative() => b.join(p),
        _ => p.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn options_in_every_spelling() {
        let long = &["--net"];
        assert_eq!(option(&args("tincd -n office -D"), Some("-n"), long), Some("office"));
        assert_eq!(option(&args("tincd -noffice"), Some("-n"), long), Some("office"));
        assert_eq!(option(&args("tincd --net=office"), Some("-n"), long), Some("office"));
        assert_eq!(option(&args("tincd --net office"), Some("-n"), long), Some("office"));
        assert_eq!(option(&args("tincd -D"), Some("-n"), long), None);
        // A long option that starts with the short one is not it.
        assert_eq!(option(&args("tincd --nothing"), Some("-n"), long), None);
        assert_eq!(option(&args("openvpn --dev tun7"), None, &["--dev"]), Some("tun7"));
        assert_eq!(option(&args("openvpn --dev-type tap"), None, &["--dev"]), None);
    }

    /// A `sleep` that is past its exec (its `comm` says so: `spawn` may
    /// return a moment before).
    fn sleeper() -> std::process::Child {
        let child = std::process::Command::new("sleep").arg("30").spawn().expect("sleep runs");
        let comm = format!("/proc/{}/comm", child.id());
        for _ in 0..400 {
            if std::fs::read_to_string(&comm).unwrap_or_default().trim_end() == "sleep" {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child
    }

    /// Inside one snapshot's scope the process table is read once (a process
    /// started after the first look is not seen by the second); outside, every
    /// look reads it afresh.
    #[tokio::test]
    async fn one_scan_is_shared_within_its_scope_only() {
        let (seen_in_scope, mut late) = one_scan(async {
            let _ = running(&["sleep"]);
            let late = sleeper();
            (running(&["sleep"]).iter().any(|d| d.pid == late.id()), late)
        })
        .await;
        assert!(!seen_in_scope, "the second look in one scope read the process table again");
        assert!(running(&["sleep"]).iter().any(|d| d.pid == late.id()), "a look outside a scope reads afresh");
        let _ = late.kill();
        let _ = late.wait();
    }

    #[test]
    fn finds_itself_only_by_its_own_name() {
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        let me = running(&[comm.trim_end()]);
        assert!(me.iter().any(|d| d.pid == std::process::id()), "{me:?}");
        assert!(running(&["no-such-daemon-x"]).is_empty());
        // A prefix of the name is another name.
        let me = comm.trim_end();
        let shorter = running(&[&me[..me.len() - 1]]);
        assert!(!shorter.iter().any(|d| d.pid == std::process::id()), "{shorter:?}");
    }
}
