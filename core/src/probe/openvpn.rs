//! openvpn: the device of each running OpenVPN.
//!
//! For each `openvpn` in this network namespace: the TUN/TAP device it holds
//! open (the kernel's word); else `--dev NAME` on its command line or the `dev`
//! line of its `--config` file. A generic `dev tun` (the kernel picks `tunN`) is
//! only known through the open device. With data channel offload there is no
//! TUN: the link kind `ovpn-dco` is the OS's word, which the `openvpn` provider
//! reads itself. A `tun0` alone proves nothing: many tools make `tunN`.

use super::process::{option, resolve, running, tun_devices};
use super::{has_tunnel_device, Probe, ProbeError, ProbeInfo};
use crate::fact::{DaemonFact, DaemonState};
use crate::model::Snapshot;

/// The `dev` of an OpenVPN config file.
fn dev_in(conf: &str) -> Option<String> {
    conf.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some("dev")).then(|| w.next().map(str::to_owned)).flatten()
    })
}

/// A `dev` that names a device rather than asking the kernel for one.
fn specific(dev: &str) -> bool {
    !matches!(dev, "tun" | "tap" | "null")
}

#[derive(Debug)]
struct OpenVpnProbe;

#[async_trait::async_trait]
impl Probe for OpenVpnProbe {
    fn info(&self) -> ProbeInfo {
        ProbeInfo { name: "openvpn", source: "openvpn's process" }
    }

    async fn probe(&self, snapshot: &Snapshot) -> Result<Vec<DaemonFact>, ProbeError> {
        if !has_tunnel_device(snapshot) {
            return Ok(Vec::new());
        }
        let mut facts = Vec::new();
        for d in running(&["openvpn"]) {
            let base = option(&d.args, None, &["--cd"]).map(|c| resolve(c, d.cwd.as_deref())).or(d.cwd.clone());
            // `openvpn FILE` is `openvpn --config FILE`.
            let config = option(&d.args, None, &["--config"])
                .or_else(|| (d.args.len() == 2 && !d.args[1].starts_with('-')).then(|| d.args[1].as_str()))
                .map(|c| resolve(c, base.as_deref()));
            let held = tun_devices(d.pid);
            let on_cmdline = option(&d.args, None, &["--dev"]).map(str::to_owned);
            let in_config = config.as_ref().and_then(|c| std::fs::read_to_string(c).ok()).and_then(|c| dev_in(&c));
            let (dev, source) = if let Some(i) = held.first() {
                (Some(i.clone()), format!("the device openvpn (pid {}) holds open", d.pid))
            } else if let Some(i) = on_cmdline.filter(|d| specific(d)) {
                (Some(i), format!("openvpn's --dev (pid {})", d.pid))
            } else if let (Some(i), Some(c)) = (in_config.filter(|d| specific(d)), &config) {
                (Some(i), format!("the dev line of {}", c.display()))
            } else {
                (None, format!("openvpn's process (pid {})", d.pid))
            };
            let mut fact = DaemonFact::new("openvpn", source, DaemonState::Running);
            if let Some(i) = dev.as_deref().and_then(|i| snapshot.get(i)) {
                fact.addresses = i.addresses.iter().map(|a| a.addr).collect();
                fact.interface = Some(i.name.clone());
            } else {
                fact.detail = Some(match dev {
                    Some(i) => format!("its device {i} is not in this namespace"),
                    None => "its device could not be told (a generic `dev tun`, not open yet)".into(),
                });
            }
            facts.push(fact);
        }
        Ok(facts)
    }
}

fn build() -> Box<dyn Probe> {
    Box::new(OpenVpnProbe)
}

crate::register_probe!("openvpn", build);

#[cfg(test)]
mod tests {
    use super::{dev_in, specific};

    #[test]
    fn reads_the_dev_line() {
        assert_eq!(dev_in("remote x\ndev ovpn7\n").as_deref(), Some("ovpn7"));
        assert_eq!(dev_in("dev-type tun\ndev office\n").as_deref(), Some("office"));
        assert_eq!(dev_in("remote x\n"), None);
        assert!(!specific("tun") && !specific("tap") && specific("tun0") && specific("office"));
    }
}
