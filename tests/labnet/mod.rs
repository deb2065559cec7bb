//! meshgate against real interfaces in network namespaces (see `crate::lab`):
//! `explain` over TUN/TAP devices shaped like each mesh, `serve` bound to a
//! WireGuard address and nothing wider, a real wireguard-go tunnel end to end,
//! and following interfaces that come and go.

mod daemons;
mod explain;
mod faults;
mod follow;
mod identity;
mod keepalive;
mod live;
mod peers;
mod reload;
mod serve;
mod services;
mod starvation;
pub(crate) mod tls;
mod wireguard;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::lab::{run_bounded, wait_until, Lab, Proc};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_meshgate");
pub(crate) const TOKEN: &str = "lab-token-0123456789";

/// `meshgate ARGS` inside the lab, bounded in time.
pub(crate) fn meshgate(lab: &Lab, args: &[&str]) -> Output {
    let mut cmd = lab.command(BIN);
    cmd.args(args).env_remove("MESHGATE_BIND").env_remove("MESHGATE_PORT").env_remove("MESHGATE_TOKEN");
    run_bounded(cmd, Duration::from_secs(20))
}

/// `meshgate explain --json ARGS` inside the lab, parsed.
pub(crate) fn explain(lab: &Lab, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["explain", "--json"];
    full.extend_from_slice(args);
    let out = meshgate(lab, &full);
    assert!(
        out.status.success(),
        "explain {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).expect("explain --json prints JSON")
}

/// The (address, provider, interface) of every listener in an explain document.
pub(crate) fn listeners(doc: &serde_json::Value) -> Vec<(String, String, String)> {
    doc["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .map(|l| {
            (
                l["address"].as_str().unwrap().to_owned(),
                l["provider"].as_str().unwrap().to_owned(),
                l["interface"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// Writes the lab token to a file in the lab's private /var/run and returns its path.
pub(crate) fn token_file(lab: &Lab) -> String {
    let path = "/var/run/wireguard/meshgate-token";
    lab.sh_ok(&format!("umask 077; printf '%s\\n' '{TOKEN}' > {path}"));
    path.to_owned()
}

/// Starts `meshgate serve ARGS` in the lab and waits until it printed `lines` lines.
pub(crate) fn serve(lab: &Lab, args: &[&str], lines: usize) -> (Proc, std::sync::mpsc::Receiver<String>) {
    let mut cmd = lab.command(BIN);
    cmd.arg("serve").args(args).env("RUST_LOG", "warn").stdout(Stdio::piped()).stderr(Stdio::null());
    let mut proc = Proc::spawn(&mut cmd);
    let out = proc.child().stdout.take().expect("stdout");
    let rx = crate::lines(out);
    for i in 0..lines {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(_) => {}
            Err(_) => panic!("meshgate serve {args:?} printed only {i} of {lines} lines"),
        }
    }
    (proc, rx)
}

/// `meshgate serve` on the gateway of `pair` in front of `upstream`, bound to
/// WireGuard on `port`, with the token and a config that names the peer's key
/// `laptop` (written to `config`), `laptop` allowed without a token; waits for
/// its first two lines.
pub(crate) fn serve_allowing_laptop(
    pair: &crate::lab::WgPair,
    upstream: &str,
    port: u16,
    config: &str,
) -> (Proc, std::sync::mpsc::Receiver<String>) {
    let token = token_file(&pair.gateway);
    let key = pair.peer_public_key();
    pair.gateway.sh_ok(&format!("printf '[peers]\\nlaptop = \"%s\"\\n' '{key}' > {config}"));
    let port = port.to_string();
    let args = [
        "--bind",
        "wireguard",
        "--port",
        &port,
        "--upstream",
        upstream,
        "--token-file",
        &token,
        "--config",
        config,
        "--allow-peer",
        "laptop",
    ];
    serve(&pair.gateway, &args, 2)
}

/// `curl` inside a lab: (exit code, HTTP status or 0, body).
pub(crate) fn curl(cmd: Command, url: &str, token: Option<&str>) -> (i32, u16, String) {
    let mut cmd = cmd;
    cmd.args(["-sS", "--max-time", "5", "-o", "-", "-w", "\n%{http_code}"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    cmd.arg(url);
    let out = run_bounded(cmd, Duration::from_secs(10));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (out.status.code().unwrap_or(-1), code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Waits (bounded) until a TCP connect to `addr` succeeds (or fails, with `up: false`) from inside `lab`.
pub(crate) fn wait_connect(lab_cmd: impl Fn() -> Command, url: &str, up: bool) -> bool {
    wait_until(Duration::from_secs(10), || {
        let (code, _, _) = curl(lab_cmd(), url, None);
        (code == 0) == up
    })
}
