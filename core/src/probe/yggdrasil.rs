//! Yggdrasil's admin socket: this node's address (`getself`).
//!
//! The socket is `MESHGATE_YGGDRASIL_SOCKET`, else Debian's
//! `/var/run/yggdrasil/yggdrasil.sock`, else upstream's `/var/run/yggdrasil.sock`
//! (`AdminListen` in yggdrasil.conf). A TCP `AdminListen` is not asked: an
//! address the probe would have to guess. The interface is the snapshot's holder
//! of the address (Yggdrasil's device name is the OS's choice, `tunN`); an
//! admin socket of another namespace names an address no interface here holds,
//! so its word does not count here.

use std::net::IpAddr;
use std::path::PathBuf;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{holder_of, Probe, ProbeError, ProbeInfo};
use crate::fact::{DaemonFact, DaemonState};
use crate::model::Snapshot;

/// The environment variable that names the admin socket.
pub const SOCKET_ENV: &str = "MESHGATE_YGGDRASIL_SOCKET";
const SOCKETS: &[&str] = &["/var/run/yggdrasil/yggdrasil.sock", "/var/run/yggdrasil.sock"];
const SOURCE: &str = "Yggdrasil's admin socket";

/// The node address in a `getself` answer: the `address` field wherever it is
/// nested (0.4 and 0.5 nest it differently), else a key that is the address.
fn address_in(v: &serde_json::Value) -> Option<IpAddr> {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(a) = m.get("address").and_then(|a| a.as_str()).and_then(|a| a.parse().ok()) {
                return Some(a);
            }
            m.iter().find_map(|(k, v)| k.parse().ok().or_else(|| address_in(v)))
        }
        _ => None,
    }
}

#[derive(Debug)]
struct YggdrasilProbe {
    sockets: Vec<PathBuf>,
}

#[async_trait::async_trait]
impl Probe for YggdrasilProbe {
    fn info(&self) -> ProbeInfo {
        ProbeInfo { name: "yggdrasil", source: SOURCE }
    }

    async fn probe(&self, snapshot: &Snapshot) -> Result<Vec<DaemonFact>, ProbeError> {
        let Some(socket) = self.sockets.iter().find(|s| std::fs::symlink_metadata(s).is_ok()) else {
            return Ok(Vec::new());
        };
        let what = format!("{SOURCE} at {}", socket.display());
        let io = |source| ProbeError::Io { what: what.clone(), source };
        let mut stream = tokio::net::UnixStream::connect(socket).await.map_err(io)?;
        stream.write_all(b"{\"request\":\"getself\",\"keepalive\":false}\n").await.map_err(io)?;
        // The answer is one JSON document; the daemon may keep the connection open.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let answer: serde_json::Value = loop {
            let n = stream.read(&mut chunk).await.map_err(io)?;
            buf.extend_from_slice(&chunk[..n]);
            match serde_json::from_slice(&buf) {
                Ok(v) => break v,
                Err(e) if n == 0 || buf.len() > 1 << 20 || !e.is_eof() => {
                    return Err(ProbeError::Protocol { what, detail: format!("getself answer is not JSON: {e}") })
                }
                Err(_) => {}
            }
        };
        let address = answer.get("response").and_then(address_in).ok_or_else(|| ProbeError::Protocol {
            what: what.clone(),
            detail: format!("getself answer has no address: {answer}"),
        })?;
        let mut fact = DaemonFact::new("yggdrasil", SOURCE, DaemonState::Running);
        fact.addresses.push(address);
        match holder_of(snapshot, address) {
            Some(i) => fact.interface = Some(i.name.clone()),
            None => fact.detail = Some(format!("no interface in this namespace holds {address}")),
        }
        Ok(vec![fact])
    }
}

fn build() -> Box<dyn Probe> {
    // Empty is unset, as for every MESHGATE_* variable.
    let sockets = match std::env::var_os(SOCKET_ENV).filter(|s| !s.is_empty()) {
        Some(s) => vec![PathBuf::from(s)],
        None => SOCKETS.iter().map(PathBuf::from).collect(),
    };
    Box::new(YggdrasilProbe { sockets })
}

crate::register_probe!("yggdrasil", build);

#[cfg(test)]
mod tests {
    use super::address_in;

    #[test]
    fn finds_the_address_in_both_shapes() {
        let v05 = serde_json::json!({"address": "200:1234::1", "subnet": "300:1234::/64", "key": "ab"});
        assert_eq!(address_in(&v05), Some("200:1234::1".parse().unwrap()));
        let v04 = serde_json::json!({"self": {"201:5678::2": {"coords": [1], "subnet": "301:5678::/64"}}});
        assert_eq!(address_in(&v04), Some("201:5678::2".parse().unwrap()));
        assert_eq!(address_in(&serde_json::json!({"self": {}})), None);
    }
}
