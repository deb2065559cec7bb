//! `meshgate peers`: the WireGuard peers of the interfaces a bind resolves to,
//! with their `[peers]` names, keys, allowed-ips, last handshakes, and whether
//! each would be let in without a token.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use meshgate_core::resolver::resolve;
use meshgate_core::source::InterfaceSource;
use meshgate_core::wgpeer::{read_peers, AllowList, PeerNames, ReadLimits, WgKind};
use serde_json::json;

use super::args::PeersArgs;
use super::error::CliError;
use super::settings::{peer_rules, registry, settings};
use crate::gateway::PeerRules;

/// Runs `peers`. Returns the text to print.
pub async fn peers(args: &PeersArgs, source: &dyn InterfaceSource) -> Result<String, CliError> {
    let registry = registry()?;
    let s = settings(&args.bind, registry)?;
    let file = s.file.as_ref().map(|(_, f)| f);
    let PeerRules { names, allow } = peer_rules(&args.allow_peer, file)?;
    let snapshot = source.snapshot().await?;
    let res = resolve(registry, &s.selectors, &snapshot, &s.resolve);
    let wanted: BTreeSet<&str> =
        res.listeners.iter().filter(|l| !l.is_loopback()).filter_map(|l| l.interface.as_deref()).collect();
    let mut found = Vec::new();
    for iface in snapshot.interfaces.iter().filter(|i| wanted.contains(i.name.as_str())) {
        let Some(kind) = WgKind::of(iface) else { continue };
        let how = match kind {
            WgKind::Kernel { .. } => "kernel",
            WgKind::Userspace { .. } => "userspace",
        };
        let peers = read_peers(iface, ReadLimits::default())
            .map_err(|e| CliError::Runtime(format!("read the peers of {}: {e}", iface.name)))?;
        found.push((iface.name.clone(), how, peers));
    }
    if args.json {
        let list: Vec<_> = found
            .iter()
            .map(|(iface, how, peers)| {
                let peers: Vec<_> = peers
                    .iter()
                    .map(|p| {
                        json!({
                            "name": names.name_of(&p.public_key),
                            "key": p.public_key.to_base64(),
                            "allowed_ips": p.allowed_ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
                            "endpoint": p.endpoint.map(|e| e.to_string()),
                            "last_handshake_unix": p.last_handshake.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs()),
                            "allowed": allow.allows(&p.public_key),
                        })
                    })
                    .collect();
                json!({ "interface": iface, "wireguard": how, "peers": peers })
            })
            .collect();
        let mut out = serde_json::to_string_pretty(&json!({ "interfaces": list })).unwrap_or_default();
        out.push('\n');
        return Ok(out);
    }
    Ok(text(&found, &names, &allow))
}

type Found = (String, &'static str, Vec<meshgate_core::wgpeer::Peer>);

fn text(found: &[Found], names: &PeerNames, allow: &AllowList) -> String {
    let mut out = String::new();
    if found.is_empty() {
        let _ = writeln!(out, "no WireGuard interface in this bind (see `meshgate explain`)");
    }
    for (iface, how, peers) in found {
        let _ = writeln!(
            out,
            "{iface} (WireGuard, {how}): {} peer{}",
            peers.len(),
            if peers.len() == 1 { "" } else { "s" }
        );
        for p in peers {
            let name = names.name_of(&p.public_key).unwrap_or("-");
            let ips: Vec<String> = p.allowed_ips.iter().map(ToString::to_string).collect();
            let door = if allow.allows(&p.public_key) { "allowed without a token" } else { "needs the token" };
            let _ = writeln!(
                out,
                "  {name:<16} {}  allowed-ips {}  handshake {}  {door}",
                p.public_key,
                if ips.is_empty() { "(none)".to_owned() } else { ips.join(", ") },
                ago(p.last_handshake),
            );
        }
    }
    out
}

fn ago(t: Option<SystemTime>) -> String {
    match t.and_then(|t| SystemTime::now().duration_since(t).ok()) {
        None => "never".into(),
        Some(d) if d.as_secs() < 120 => format!("{} s ago", d.as_secs()),
        Some(d) if d.as_secs() < 7200 => format!("{} min ago", d.as_secs() / 60),
        Some(d) => format!("{} h ago", d.as_secs() / 3600),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use meshgate_core::wgpeer::{Peer, PublicKey};

    use super::*;

    const A: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
    const B: &str = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=";

    #[test]
    fn the_table_names_keys_and_who_is_allowed() {
        let names = PeerNames::new([("laptop", A)]).unwrap();
        let allow = AllowList::resolve(&names, ["laptop"]).unwrap();
        let peer = |k: &str, ip: &str, h: Option<SystemTime>| Peer {
            public_key: k.parse::<PublicKey>().unwrap(),
            allowed_ips: vec![ip.parse().unwrap()],
            endpoint: None,
            last_handshake: h,
            rx_bytes: 0,
            tx_bytes: 0,
        };
        let found = vec![(
            "wg0".to_owned(),
            "userspace",
            vec![
                peer(A, "10.77.0.2/32", Some(SystemTime::now() - Duration::from_secs(42))),
                peer(B, "10.77.0.3/32", None),
            ],
        )];
        let t = text(&found, &names, &allow);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "wg0 (WireGuard, userspace): 2 peers");
        assert!(lines[1].starts_with("  laptop ") && lines[1].contains(A), "{t}");
        assert!(lines[1].contains("10.77.0.2/32") && lines[1].ends_with("allowed without a token"), "{t}");
        assert!(lines[1].contains("handshake 4"), "{t}");
        assert!(lines[2].starts_with("  - ") && lines[2].contains(B) && lines[2].ends_with("needs the token"), "{t}");
        assert!(lines[2].contains("handshake never"), "{t}");
        assert!(text(&[], &names, &allow).starts_with("no WireGuard interface"));
    }
}
