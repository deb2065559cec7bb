//! tincd: the interface of each running tinc network.
//!
//! For each `tincd` in this network namespace: the TUN/TAP device it holds
//! open (the kernel's word); else `Interface =` in its `tinc.conf` (`-c DIR`,
//! else `/etc/tinc/NET`); else the network's name (`-n NET`), which tinc 1.0
//! names the device after on Linux. Read only when the snapshot has a TUN or TAP.

use std::path::{Path, PathBuf};

use super::process::{option, resolve, running, tun_devices};
use super::{has_tunnel_device, Probe, ProbeError, ProbeInfo};
use crate::fact::{DaemonFact, DaemonState};
use crate::model::Snapshot;

/// The value of `Interface` in a tinc.conf (keys are case-insensitive,
/// `Key = value` or `Key value`).
fn interface_in(conf: &str) -> Option<String> {
    conf.lines().find_map(|l| {
        let l = l.trim();
        let (k, v) = l.split_once(['=', ' ', '\t'])?;
        (k.trim().eq_ignore_ascii_case("interface")).then(|| v.trim().trim_start_matches('=').trim().to_owned())
    })
}

#[derive(Debug)]
struct TincProbe;

#[async_trait::async_trait]
impl Probe for TincProbe {
    fn info(&self) -> ProbeInfo {
        ProbeInfo { name: "tincd", source: "tincd's process" }
    }

    async fn probe(&self, snapshot: &Snapshot) -> Result<Vec<DaemonFact>, ProbeError> {
        if !has_tunnel_device(snapshot) {
            return Ok(Vec::new());
        }
        let mut facts = Vec::new();
        for d in running(&["tincd"]) {
            let net = option(&d.args, Some("-n"), &["--net"]).map(str::to_owned);
            let confdir = match option(&d.args, Some("-c"), &["--config"]) {
                Some(c) => resolve(c, d.cwd.as_deref()),
                None => match &net {
                    Some(n) => Path::new("/etc/tinc").join(n),
                    None => PathBuf::from("/etc/tinc"),
                },
            };
            let held = tun_devices(d.pid);
            let configured = std::fs::read_to_string(confdir.join("tinc.conf")).ok().and_then(|c| interface_in(&c));
            let (iface, source) = if let Some(i) = held.first() {
                (Some(i.clone()), format!("the device tincd (pid {}) holds open", d.pid))
            } else if let Some(i) = configured {
                (Some(i), format!("Interface in {}", confdir.join("tinc.conf").display()))
            } else {
                (net.clone(), format!("tincd's network name (pid {})", d.pid))
            };
            let mut fact = DaemonFact::new("tinc", source, DaemonState::Running);
            fact.network = net;
            if let Some(i) = iface.as_deref().and_then(|i| snapshot.get(i)) {
                fact.addresses = i.addresses.iter().map(|a| a.addr).collect();
                fact.interface = Some(i.name.clone());
            } else {
                fact.detail = Some(match iface {
                    Some(i) => format!("its interface {i} is not in this namespace"),
                    None => "its interface could not be told".into(),
                });
            }
            facts.push(fact);
        }
        Ok(facts)
    }
}

fn build() -> Box<dyn Probe> {
    Box::new(TincProbe)
}

crate::register_probe!("tincd", build);

#[cfg(test)]
mod tests {
    use super::interface_in;

    #[test]
    fn reads_interface_in_every_spelling() {
        assert_eq!(interface_in("Name = a\nInterface = vpn7\n").as_deref(), Some("vpn7"));
        assert_eq!(interface_in("interface=vpn7").as_deref(), Some("vpn7"));
        assert_eq!(interface_in("Interface vpn7").as_deref(), Some("vpn7"));
        assert_eq!(interface_in("Name = a\nMode = switch\n"), None);
        assert_eq!(interface_in("# Interface = x\n"), None);
    }
}
