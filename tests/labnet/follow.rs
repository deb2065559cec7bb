//! Boot order through a real tunnel: `serve --bind wireguard` starts before the
//! WireGuard interface exists, attaches it when it comes up, detaches it when it
//! goes, and the loopback door serves throughout without a single failure.

use std::time::Duration;

use super::{curl, serve, token_file, wait_connect, TOKEN};
use crate::lab::{Proc, WgPair};

/// A client on one keep-alive connection to loopback, one request every 20 ms
/// until the stop file appears (bounded to 60 s); makes the ready file after
/// its first answer; prints `ok=N failed=M conns=C`.
const HAMMER: &str = r#"
import http.client, os, sys, time
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
ok = failed = 0
socks = set()
end = time.time() + 60
while not os.path.exists(sys.argv[2]) and time.time() < end:
    try:
        c.request("GET", "/healthz")
        r = c.getresponse(); r.read()
        socks.add(c.sock.getsockname())
        ok += r.status == 200
        failed += r.status != 200
        if ok == 1:
            open(sys.argv[3], "w").close()
    except Exception as e:
        failed += 1
        print("error:", e, file=sys.stderr)
        c.close()
    time.sleep(0.02)
print(f"ok={ok} failed={failed} conns={len(socks)}", flush=True)
"#;

#[test]
fn wireguard_listener_follows_the_tunnel() {
    let Some(mut pair) = WgPair::underlay_or_skip("wireguard_listener_follows_the_tunnel") else {
        return;
    };
    let token = token_file(&pair.gateway);
    let (_gw, lines) = serve(&pair.gateway, &["--bind", "wireguard", "--port", "18789", "--token-file", &token], 2);
    let stop = "/var/run/wireguard/stop-hammer";
    let ready = "/var/run/wireguard/hammer-ready";
    let mut cmd = pair.gateway.command("python3");
    cmd.args(["-c", HAMMER, "18789", stop, ready]).stdout(std::process::Stdio::piped());
    let mut hammer = Proc::spawn(&mut cmd);
    // The client is hammering before the tunnel moves (a slow start under
    // load once let the whole flap pass before its first request).
    let started = crate::lab::wait_until(Duration::from_secs(20), || {
        pair.gateway.sh(&format!("test -e {ready}")).status.success()
    });
    assert!(started, "the loopback client never got its first answer");

    pair.bring_up_tunnel("wg0");
    let wg = pair.gateway_wg_addr();
    let url = format!("http://{wg}:18789/healthz");
    assert!(wait_connect(|| pair.peer_command("curl"), &url, true), "the WireGuard listener never attached");
    let attached = lines.recv_timeout(Duration::from_secs(5)).expect("a listening line");
    assert_eq!(attached, format!("listening on http://{wg}:18789 (wireguard via wg0)"));
    let (_, status, _) = curl(pair.peer_command("curl"), &format!("http://{wg}:18789/status"), Some(TOKEN));
    assert_eq!(status, 200);

    pair.tear_down_tunnel();
    let gone = pair.gateway.sh_ok("ss -Hltn 'sport = :18789' | awk '{print $4}'");
    assert!(!gone.contains("10.77.0.1"), "{gone}");

    pair.gateway.sh_ok(&format!("touch {stop}"));
    let out = hammer.child().wait_with_output_bounded();
    assert!(out.contains("failed=0") && out.contains("conns=1"), "loopback client saw errors: {out}");
    assert!(!out.contains("ok=0 "), "{out}");
}

trait WaitOutput {
    fn wait_with_output_bounded(&mut self) -> String;
}

impl WaitOutput for std::process::Child {
    fn wait_with_output_bounded(&mut self) -> String {
        use std::io::Read;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.try_wait().unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "the loopback client did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut s = String::new();
        self.stdout.take().unwrap().read_to_string(&mut s).unwrap();
        s
    }
}

/// `--wait` with `--fallback fail`: start-up waits for the WireGuard address, then serves on it.
#[test]
fn wait_holds_start_up_until_the_tunnel_is_there() {
    let Some(lab) = crate::lab::lab_or_skip("wait_holds_start_up_until_the_tunnel_is_there") else {
        return;
    };
    let token = token_file(&lab);
    let args = ["--bind", "wireguard", "--fallback", "fail", "--wait", "20", "--port", "18789", "--token-file", &token];
    let (mut gw, rx) = super::serve(&lab, &args, 0);
    // Nothing is printed (nothing listens) while it waits.
    assert!(rx.recv_timeout(Duration::from_millis(500)).is_err(), "serve started before the tunnel");
    assert!(gw.is_running(), "serve gave up instead of waiting");
    lab.tun("wg0", &["10.8.0.1/24"]);
    let first = rx.recv_timeout(Duration::from_secs(10)).expect("serve started once wg0 came up");
    assert_eq!(first, "listening on http://10.8.0.1:18789 (wireguard via wg0)");
}

#[test]
fn an_expired_wait_with_fallback_fail_exits_69() {
    let Some(lab) = crate::lab::lab_or_skip("an_expired_wait_with_fallback_fail_exits_69") else {
        return;
    };
    let token = token_file(&lab);
    let started = std::time::Instant::now();
    let out = super::meshgate(
        &lab,
        &["serve", "--bind", "wireguard", "--fallback", "fail", "--wait", "1", "--token-file", &token],
    );
    assert_eq!(out.status.code(), Some(69), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() >= Duration::from_secs(1), "it did not wait");
    assert!(out.stdout.is_empty(), "nothing may have listened: {}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn no_follow_resolves_once() {
    let Some(lab) = crate::lab::lab_or_skip("no_follow_resolves_once") else {
        return;
    };
    let token = token_file(&lab);
    let (_gw, lines) =
        serve(&lab, &["--bind", "wireguard", "--no-follow", "--port", "18789", "--token-file", &token], 1);
    lab.tun("wg0", &["10.8.0.1/24"]);
    // A following gateway attaches within milliseconds; give this one a full second.
    assert!(lines.recv_timeout(Duration::from_secs(1)).map_or(true, |l| !l.contains("10.8.0.1")));
    let listening = lab.sh_ok("ss -Hltn 'sport = :18789' | awk '{print $4}'");
    assert!(!listening.contains("10.8.0.1"), "--no-follow attached wg0: {listening}");
}
