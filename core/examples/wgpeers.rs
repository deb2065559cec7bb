//! Prints the WireGuard peers of one interface, as `wg show` reads them, as JSON
//! lines; or, with `--serve`, answers peer lookups through a [`PeerCache`] on
//! stdin/stdout. The namespace lab test (`tests/labnet/peers.rs`) runs it inside
//! its gateway namespace.
//!
//! ```text
//! wgpeers IFACE                                     one JSON line per peer
//! wgpeers IFACE --serve [--max-age-ms N] [--refresh-ms N]
//!     stdin: `lookup IP` -> {"ip": "...", "peer": "<base64 key>" | null}
//!            `invalidate` -> {"invalidated": "IFACE"}
//! ```

use std::io::BufRead as _;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use meshgate_core::wgpeer::{read_peers, PeerCache, PeerCacheConfig, ReadLimits};
use meshgate_core::Interface;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wgpeers: {e}");
            ExitCode::FAILURE
        }
    }
}

fn interface(name: &str) -> Result<Interface, String> {
    #[cfg(target_os = "linux")]
    let snapshot = meshgate_core::source::NetlinkSource::default().read().map_err(|e| e.to_string())?;
    #[cfg(not(target_os = "linux"))]
    let snapshot = {
        let rt = tokio::runtime::Builder::new_current_thread().build().map_err(|e| e.to_string())?;
        rt.block_on(meshgate_core::source::system().snapshot()).map_err(|e| e.to_string())?
    };
    snapshot.get(name).cloned().ok_or_else(|| format!("no interface {name:?}"))
}

fn millis(args: &[String], flag: &str, default: Duration) -> Result<Duration, String> {
    match args.iter().position(|a| a == flag) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
            .ok_or_else(|| format!("{flag} needs a number of milliseconds")),
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let name = args.first().ok_or("usage: wgpeers IFACE [--serve [--max-age-ms N] [--refresh-ms N]]")?;
    let iface = interface(name)?;
    if !args.iter().any(|a| a == "--serve") {
        for p in read_peers(&iface, ReadLimits::default()).map_err(|e| e.to_string())? {
            let line = serde_json::json!({
                "interface": iface.name,
                "public_key": p.public_key,
                "allowed_ips": p.allowed_ips,
                "endpoint": p.endpoint,
                "last_handshake_unix": p.last_handshake.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs()),
            });
            println!("{line}");
        }
        return Ok(());
    }
    let defaults = PeerCacheConfig::default();
    let config = PeerCacheConfig {
        max_age: millis(args, "--max-age-ms", defaults.max_age)?,
        refresh_interval: millis(args, "--refresh-ms", defaults.refresh_interval)?,
        ..defaults
    };
    let cache = PeerCache::new(config);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    println!("{}", serde_json::json!({ "ready": iface.name }));
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let out = match line.split_whitespace().collect::<Vec<_>>()[..] {
            ["lookup", ip] => {
                let ip: IpAddr = ip.parse().map_err(|_| format!("{ip:?} is not an IP address"))?;
                let peer = rt.block_on(cache.lookup(&iface, ip));
                serde_json::json!({ "ip": ip, "peer": peer })
            }
            ["invalidate"] => {
                cache.invalidate(&iface.name, iface.index);
                serde_json::json!({ "invalidated": iface.name })
            }
            _ => return Err(format!("unknown command {line:?}: expected `lookup IP` or `invalidate`")),
        };
        println!("{out}");
    }
    Ok(())
}
