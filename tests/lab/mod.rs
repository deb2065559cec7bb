//! Network-namespace test lab: throw-away networks for integration tests.
//!
//! # What
//!
//! * [`Lab`]: one private network stack (user + net + mount namespaces) in
//!   which tests create interfaces (held-open TUN/TAP that look like a live
//!   VPN, unheld TUN without carrier, veth) and run processes.
//! * [`WgPair`] (in `wg.rs`): two labs, `gateway` and `peer`, joined by a veth
//!   underlay (192.0.2.1/24 <-> 192.0.2.2/24) and a real WireGuard tunnel
//!   made with userspace `wireguard-go` (10.77.0.1/24, fd77::1/64 on the
//!   gateway; 10.77.0.2/24, fd77::2/64 on the peer). The tunnel can also be
//!   brought up later / torn down for boot-order tests.
//! * [`lab_or_skip`] / [`WgPair::or_skip`]: build one, or print
//!   `SKIPPED <test>: <reason>` and return `None` when the machine cannot
//!   (no user namespaces, missing tools). With `CI=true` they panic instead:
//!   in CI these tests must run.
//!
//! ```ignore
//! // tests/main.rs: `mod lab;`
//! let Some(pair) = lab::WgPair::or_skip("serves_on_wg", "office") else { return };
//! let mut gw = pair.gateway.command(env!("CARGO_BIN_EXE_meshgate"));
//! let _gw = lab::Proc::spawn(gw.args(["--port", "18789"]));
//! let out = pair.peer_sh("curl -sS --max-time 5 http://10.77.0.1:18789/");
//! assert!(out.status.success());
//!
//! let Some(lab) = lab::lab_or_skip("sees_tailscale") else { return };
//! lab.tun("tailscale0", &["100.101.1.2/32", "fd7a:115c:a1e0::2/128"]);
//! let out = lab.command("ip").args(["-o", "addr"]).output().unwrap();
//! ```
//!
//! Nothing touches the host's network: every address used lives only inside
//! namespaces created here, and works the same as root or as a normal user.
//!
//! # How
//!
//! * A *holder* process, `unshare --user --map-root-user --net --mount
//!   --propagation private sh -c '<setup>; exec sleep 600'`, owns the
//!   namespaces. Setup brings `lo` up and mounts a private tmpfs on
//!   `/var/run/wireguard` (on Debian `/var/run` -> `/run`; when that
//!   directory does not exist on the host, a tmpfs goes on `/var/run` itself
//!   and `wireguard/` is created in it, so the host is never written to;
//!   the rest of the host's `/run` is then hidden inside the lab, which the
//!   tools used here do not mind). Both branches are tested.
//! * Everything else runs through `nsenter --target <holder> --user --net
//!   --mount --preserve-credentials --wd=<cwd> -- prog args` ([`Lab::command`]).
//!   nsenter execs `prog` directly (no pid namespace, so no extra fork): the
//!   pid of the spawned `Child` is the pid of the real program.
//! * TUN/TAP interfaces are created by `tunhold.py` (embedded with
//!   `include_str!`, run as `python3 -c`), which keeps the fd open so the
//!   interface has carrier (`LOWER_UP`, state UNKNOWN) like a running VPN.
//!   (No `dummy` helper: the dummy module is often absent, and a user
//!   namespace cannot load it: `Error: Unknown device type.`)
//! * The WireGuard peer lab shares the gateway's user namespace (needed to
//!   move a veth end between the two network namespaces) but has its own
//!   net and mount namespaces, hence its own `/var/run/wireguard`.
//!
//! # Cleanup and bounds
//!
//! Every process started here is owned by a [`Proc`] guard that SIGKILLs and
//! reaps it on drop. Dropping a [`Lab`] also kills any process still inside
//! its network namespace (found via `/proc/*/ns/net`), e.g. children a test
//! spawned through [`Lab::command`] and forgot. Holders and `tunhold.py` exit
//! by themselves after [`MAX_LIFETIME_SECS`] even if the test binary is
//! SIGKILLed. Every wait is a bounded poll; [`Lab::sh`] kills its script
//! after [`SH_TIMEOUT`].
//!
//! # Pitfalls (learned the hard way)
//!
//! * `nsenter --user` without `--preserve-credentials` fails as a normal user
//!   (`setgroups failed: Operation not permitted`: `setgroups` is denied in
//!   a user namespace mapped by an unprivileged process).
//! * `/sys/class/net` is NOT reliable inside the lab: sysfs is the host's
//!   mount. Use `ip -d link` output (e.g. `tun type tap`) instead.
//! * A program that inspects interfaces (meshgate itself) must run INSIDE the
//!   lab (`lab.command(env!("CARGO_BIN_EXE_..."))`), and so must anything that
//!   talks to wireguard-go's control socket (`wg`): the socket is in the
//!   lab's private `/var/run/wireguard`.
//! * `wireguard-go` prints a "kernel has first class support" banner unless
//!   `WG_PROCESS_FOREGROUND=1`; it does not refuse to run. Use `-f` so the pid
//!   we hold is the daemon itself.
//! * IPv6 addresses are added with `nodad` so they are usable at once.
//! * The kernel changes a namespace by itself seconds after setup: a veth's
//!   carrier and state UP arrive up to 1 s late (link watch), and its
//!   automatic IPv6 link-local address ~1.3 s after the link came up (DAD).
//!   Chromium watches netlink in its namespace and fails requests in flight
//!   with `ERR_NETWORK_CHANGED` on such a change (issue #26.2). [`WgPair`]'s
//!   namespaces therefore turn automatic link-local addresses and DAD off
//!   ([`Lab::quiet_ipv6`]) and wait for the veths' state UP: after setup,
//!   nothing in them changes unless a test changes it.
//! * Normal users often lack `/usr/sbin` in `PATH` (where `ip` lives); lab
//!   commands get `/usr/local/sbin:/usr/sbin:/sbin` appended.
//! * nsenter resets the working directory when entering the mount namespace;
//!   [`Lab::command`] passes the test's cwd with `--wd`, so a later
//!   `Command::current_dir` on it has no effect (use `cd` in a script).
//! * A process that a test spawns itself and then `kill()`s is gone at once
//!   (nsenter does not fork), so "port is free again" assertions hold.
//! * Where unprivileged user namespaces are restricted (sysctl
//!   `kernel.unprivileged_userns_clone=0`, Ubuntu's AppArmor
//!   `apparmor_restrict_unprivileged_userns`), [`Lab::new`] fails with the
//!   `unshare`/`mount` error and the tests skip (or panic with `CI=true`).

#[cfg(test)]
mod selftest;
mod wg;

pub(crate) use wg::WgPair;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

/// Seconds after which holders and TUN holders exit on their own.
pub(crate) const MAX_LIFETIME_SECS: u64 = 600;
/// How long [`Lab::sh`] lets a script run before killing it.
pub(crate) const SH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for a holder or a daemon to report it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

const TUNHOLD_PY: &str = include_str!("tunhold.py");
const BASE_TOOLS: &[&str] = &["sh", "ip", "unshare", "nsenter", "python3"];

/// Setup run by every holder before it turns into `sleep`.
fn holder_script() -> String {
    format!(
        "set -e
ip link set lo up
if [ -d /var/run/wireguard ]; then
  mount -t tmpfs -o mode=0755 lab-wireguard /var/run/wireguard
else
  mount -t tmpfs -o mode=0755 lab-run /var/run
  mkdir /var/run/wireguard
fi
echo READY
exec sleep {MAX_LIFETIME_SECS}"
    )
}

/// Build a lab, or skip the test: prints `SKIPPED <test>: <reason>` to
/// stderr and returns `None` when namespaces or tools are unavailable.
/// Panics instead when `CI=true`.
pub(crate) fn lab_or_skip(test: &str) -> Option<Lab> {
    skip_unless(test, Lab::new())
}

/// Turns an environment error into a skip (or a panic in CI).
fn skip_unless<T>(test: &str, made: Result<T, String>) -> Option<T> {
    match made {
        Ok(v) => Some(v),
        Err(why) if in_ci() => panic!("{test}: network lab unavailable in CI: {why}"),
        Err(why) => {
            // Not eprintln!: libtest would swallow it for a passing test.
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
            None
        }
    }
}

pub(crate) fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

/// `PATH` with the sbin directories appended (where `ip` lives).
fn lab_path() -> String {
    let mut path = std::env::var("PATH").unwrap_or_default();
    for dir in ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        if !path.split(':').any(|d| d == dir) {
            if !path.is_empty() {
                path.push(':');
            }
            path.push_str(dir);
        }
    }
    path
}

/// Fails with a readable message when one of `tools` is not in `PATH`.
fn require_tools(tools: &[&str]) -> Result<(), String> {
    let path = lab_path();
    let missing: Vec<&str> =
        tools.iter().copied().filter(|t| !path.split(':').any(|d| std::path::Path::new(d).join(t).is_file())).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("missing tools: {}", missing.join(", ")))
    }
}

/// Reads `r` to the end on a thread; the receiver gets the text.
fn drain(mut r: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Polls `check` every 20 ms until it returns true or `timeout` passes.
pub(crate) fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process that is SIGKILLed and reaped when dropped.
#[derive(Debug)]
pub(crate) struct Proc {
    child: Child,
    what: String,
}

impl Proc {
    /// Spawns `cmd` (e.g. from [`Lab::command`]) under a kill-on-drop guard.
    pub(crate) fn spawn(cmd: &mut Command) -> Proc {
        let what = format!("{cmd:?}");
        match cmd.spawn() {
            Ok(child) => Proc { child, what },
            Err(e) => panic!("lab: cannot spawn {what}: {e}"),
        }
    }

    /// Spawns `cmd` with stdout/stderr piped and waits (bounded) until it
    /// prints `READY` as its first line. Stderr is drained in the background.
    fn spawn_ready(mut cmd: Command, what: &str) -> Result<Proc, String> {
        let what = what.to_string();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot spawn {what}: {e}"))?;
        let stderr = drain(child.stderr.take().expect("piped stderr"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut proc = Proc { child, what };
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) if line.trim() == "READY" => Ok(proc),
            got => {
                proc.kill_now();
                let err = stderr.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
                let err = String::from_utf8_lossy(&err);
                let why = match got {
                    Ok(line) if line.is_empty() => "exited".to_string(),
                    Ok(line) => format!("printed {line:?}"),
                    Err(_) => format!("not ready after {READY_TIMEOUT:?}"),
                };
                Err(format!("{} {why}: {}", proc.what, err.trim()))
            }
        }
    }

    /// The process id (on the host).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process has not exited.
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The underlying child, e.g. to take its pipes or `try_wait` it.
    pub(crate) fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Kills and reaps the process now; returns how it ended.
    pub(crate) fn kill_now(&mut self) -> Option<ExitStatus> {
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// One private network stack (user + net + mount namespaces), torn down
/// (with every process inside) on drop.
#[derive(Debug)]
pub(crate) struct Lab {
    holder: Proc,
    netns: String,
    /// TUN/TAP holders and daemons: (interface name, process).
    held: Mutex<Vec<(String, Proc)>>,
}

impl Lab {
    /// Creates a lab with its own user, network and mount namespaces.
    pub(crate) fn new() -> Result<Lab, String> {
        require_tools(BASE_TOOLS)?;
        let mut cmd = Command::new("unshare");
        cmd.args(["--user", "--map-root-user", "--net", "--mount"])
            .args(["--propagation", "private", "sh", "-c"])
            .arg(holder_script())
            .env("PATH", lab_path());
        Lab::from_holder(cmd)
    }

    /// Creates another lab in the same user namespace as `self` (so links can
    /// be moved between the two), with its own network and mount namespaces.
    pub(crate) fn sibling(&self) -> Result<Lab, String> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.pid()))
            .args(["--user", "--preserve-credentials", "--"])
            .args(["unshare", "--net", "--mount", "--propagation", "private"])
            .args(["sh", "-c"])
            .arg(holder_script())
            .env("PATH", lab_path());
        Lab::from_holder(cmd)
    }

    fn from_holder(cmd: Command) -> Result<Lab, String> {
        let holder =
            Proc::spawn_ready(cmd, "namespace holder").map_err(|e| format!("cannot create namespaces: {e}"))?;
        let link = format!("/proc/{}/ns/net", holder.pid());
        let netns = std::fs::read_link(&link).map_err(|e| format!("{link}: {e}"))?.to_string_lossy().into_owned();
        Ok(Lab { holder, netns, held: Mutex::new(Vec::new()) })
    }

    /// Turns off what the kernel would add or change by itself, seconds
    /// after a link comes up, in links made from now on: the automatic IPv6
    /// link-local address (`addr_gen_mode` 1, none) and duplicate address
    /// detection (`accept_dad` 0, so an address is final when added). Every
    /// address in the lab is then one a test added, and nothing changes after
    /// setup. A browser needs this: Chromium watches netlink in its namespace
    /// and fails requests in flight with `ERR_NETWORK_CHANGED` when an address
    /// appears or changes its flags (a veth's link-local address turned from
    /// tentative to final about 1.3 s after the link came up, while the browser
    /// was loading its first page).
    pub(crate) fn quiet_ipv6(&self) -> Result<(), String> {
        let out = self.sh("set -e
conf=/proc/sys/net/ipv6/conf
if [ -d $conf ]; then
  echo 1 > $conf/default/addr_gen_mode
  echo 0 > $conf/default/accept_dad
  echo 0 > $conf/all/accept_dad
fi");
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("quieting IPv6 autoconfiguration: {}", String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// Every link and address of the lab as `ip` prints them (to tell whether
    /// anything changed between two moments).
    pub(crate) fn links_and_addresses(&self) -> String {
        let out = self.sh("ip -o link; ip -o addr");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Host pid of the holder: `/proc/<pid>/ns/net` is this lab's netns.
    pub(crate) fn pid(&self) -> u32 {
        self.holder.pid()
    }

    /// A `Command` that runs `program` inside the lab (stdin: null).
    pub(crate) fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.pid()))
            .args(["--user", "--net", "--mount", "--preserve-credentials"])
            .arg(format!("--wd={}", cwd.display()))
            .arg("--")
            .arg(program)
            .env("PATH", lab_path())
            .stdin(Stdio::null());
        cmd
    }

    /// Spawns `program args...` inside the lab, output discarded, under a
    /// kill-on-drop guard. For pipes or env, use `Proc::spawn(&mut
    /// lab.command(..))`.
    pub(crate) fn spawn(&self, program: &str, args: &[&str]) -> Proc {
        let mut cmd = self.command(program);
        cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null());
        Proc::spawn(&mut cmd)
    }

    /// Runs `sh -c script` inside the lab; killed after [`SH_TIMEOUT`].
    /// A background job in `script` must redirect its output, or the output
    /// collected here is cut short.
    pub(crate) fn sh(&self, script: &str) -> Output {
        let mut cmd = self.command("sh");
        cmd.arg("-c").arg(script);
        run_bounded(cmd, SH_TIMEOUT)
    }

    /// Like [`Lab::sh`] but panics (with stderr) unless the script succeeds;
    /// returns its stdout.
    pub(crate) fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            panic!(
                "lab: `{script}` failed ({}):\nstderr: {}\nstdout: {stdout}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        stdout
    }

    /// True when an interface called `name` exists in the lab.
    pub(crate) fn has_link(&self, name: &str) -> bool {
        self.sh(&format!("ip link show dev '{name}' >/dev/null 2>&1")).status.success()
    }

    /// `ip -o link show dev NAME` (one line: flags, state, ...).
    pub(crate) fn link_line(&self, name: &str) -> String {
        self.sh_ok(&format!("ip -o link show dev '{name}'"))
    }

    /// `ip -d link show dev NAME` (details: `tun type tap`, `veth`, ...).
    pub(crate) fn link_details(&self, name: &str) -> String {
        self.sh_ok(&format!("ip -d link show dev '{name}'"))
    }

    /// `ip -o addr show` for one interface, or all when `name` is empty.
    pub(crate) fn addrs(&self, name: &str) -> String {
        if name.is_empty() {
            self.sh_ok("ip -o addr show")
        } else {
            self.sh_ok(&format!("ip -o addr show dev '{name}'"))
        }
    }

    /// A TUN interface held open by a process (carrier, like a live VPN),
    /// set up, with `addrs` (CIDR; v6 added `nodad`).
    pub(crate) fn tun(&self, name: &str, addrs: &[&str]) {
        self.hold("tun", name);
        self.up_with(name, addrs);
    }

    /// Like [`Lab::tun`] but a TAP (Ethernet) interface.
    pub(crate) fn tap(&self, name: &str, addrs: &[&str]) {
        self.hold("tap", name);
        self.up_with(name, addrs);
    }

    /// A persistent TUN with no process attached: up, but NO-CARRIER.
    pub(crate) fn tun_unheld(&self, name: &str, addrs: &[&str]) {
        self.sh_ok(&format!("ip tuntap add dev '{name}' mode tun"));
        self.up_with(name, addrs);
    }

    /// A veth pair inside this lab, both ends up, no addresses.
    pub(crate) fn veth(&self, a: &str, b: &str) {
        self.sh_ok(&format!(
            "ip link add '{a}' type veth peer name '{b}' && ip link set '{a}' up && ip link set '{b}' up"
        ));
    }

    /// Kills the process holding TUN/TAP `name` (as if the VPN daemon died):
    /// the interface disappears. Returns false if nothing held it.
    pub(crate) fn release(&self, name: &str) -> bool {
        let proc = {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            let at = held.iter().position(|(n, _)| n == name);
            at.map(|i| held.remove(i).1)
        };
        let Some(mut proc) = proc else { return false };
        proc.kill_now();
        let gone = wait_until(Duration::from_secs(5), || !self.has_link(name));
        assert!(gone, "lab: {name} still exists after its holder was killed");
        true
    }

    /// Keeps `proc` alive as long as the lab (killed on drop), recorded as
    /// owning interface `name` (used by [`Lab::release`]).
    pub(crate) fn adopt(&self, name: &str, proc: Proc) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.push((name.to_string(), proc));
    }

    /// `ip addr add ADDR dev NAME` (v6 with `nodad`).
    pub(crate) fn addr_add(&self, name: &str, addr: &str) {
        let nodad = if addr.contains(':') { " nodad" } else { "" };
        self.sh_ok(&format!("ip addr add '{addr}' dev '{name}'{nodad}"));
    }

    /// `ip addr del ADDR dev NAME`.
    pub(crate) fn addr_del(&self, name: &str, addr: &str) {
        self.sh_ok(&format!("ip addr del '{addr}' dev '{name}'"));
    }

    /// `ip link del NAME`; also kills its holder, if any.
    pub(crate) fn link_del(&self, name: &str) {
        if !self.release(name) {
            self.sh_ok(&format!("ip link del '{name}'"));
        }
    }

    /// `ip link set NAME up|down`.
    pub(crate) fn link_set(&self, name: &str, up: bool) {
        let state = if up { "up" } else { "down" };
        self.sh_ok(&format!("ip link set '{name}' {state}"));
    }

    fn hold(&self, mode: &str, name: &str) {
        let mut cmd = self.command("python3");
        cmd.args(["-c", TUNHOLD_PY, "--max-secs"]).arg(MAX_LIFETIME_SECS.to_string()).arg(format!("{mode}:{name}"));
        match Proc::spawn_ready(cmd, "tunhold.py") {
            Ok(proc) => self.adopt(name, proc),
            Err(e) => panic!("lab: cannot create {mode} {name}: {e}"),
        }
    }

    fn up_with(&self, name: &str, addrs: &[&str]) {
        self.link_set(name, true);
        for addr in addrs {
            self.addr_add(name, addr);
        }
    }

    /// Pids of every process (other than the holder) inside this netns.
    fn stragglers(&self) -> Vec<u32> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| pid != self.pid() && pid != std::process::id())
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/ns/net")).is_ok_and(|l| l.to_string_lossy() == self.netns)
            })
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Guards first (kill + reap our own children), then anything else
        // still inside the namespace, then the holder (its own guard).
        self.held.get_mut().unwrap_or_else(|e| e.into_inner()).clear();
        let left = self.stragglers();
        if !left.is_empty() {
            eprintln!("lab: killing leftover processes {left:?}");
            let pids: Vec<String> = left.iter().map(u32::to_string).collect();
            let _ = Command::new("sh").args(["-c", "kill -KILL \"$@\" 2>/dev/null", "sh"]).args(&pids).status();
        }
    }
}

/// Runs `cmd` to completion with captured output, killing it after
/// `timeout` (then panics: a harness command must not hang).
pub(crate) fn run_bounded(mut cmd: Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("lab: cannot spawn {what}: {e}"));
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("lab: {what} did not finish within {timeout:?}");
            }
        }
    };
    let grace = Duration::from_secs(2);
    Output {
        status,
        stdout: stdout.recv_timeout(grace).unwrap_or_default(),
        stderr: stderr.recv_timeout(grace).unwrap_or_default(),
    }
}
