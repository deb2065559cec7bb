//! The portable source: `getifaddrs` through `if-addrs`.
//!
//! It knows names, indexes, addresses, loopback and point-to-point, but not link
//! kinds, so providers fall back to names and ranges (what macOS and the BSDs
//! get). It is compiled everywhere, so it is tested on Linux too.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::model::{Flags, IfAddr, Interface, InterfaceKind, Snapshot};

use super::{InterfaceSource, SourceError};

/// Interfaces from `getifaddrs`. Only interfaces with at least one address appear.
#[derive(Debug, Default, Clone)]
pub struct IfAddrsSource;

impl IfAddrsSource {
    /// A snapshot, synchronously.
    pub fn read(&self) -> Result<Snapshot, SourceError> {
        let raw = if_addrs::get_if_addrs().map_err(|source| SourceError::Io { what: "getifaddrs", source })?;
        let mut by_name: BTreeMap<String, Interface> = BTreeMap::new();
        for i in raw {
            let (addr, prefix_len): (IpAddr, u8) = match &i.addr {
                if_addrs::IfAddr::V4(a) => (a.ip.into(), a.prefixlen),
                if_addrs::IfAddr::V6(a) => (a.ip.into(), a.prefixlen),
            };
            let loopback = i.is_loopback();
            let entry = by_name.entry(i.name.clone()).or_insert_with(|| Interface {
                name: i.name.clone(),
                index: i.index.unwrap_or(0),
                flags: Flags {
                    // getifaddrs lists interfaces that are down too; oper status is the best hint.
                    up: true,
                    loopback,
                    point_to_point: i.is_p2p(),
                    carrier: None,
                },
                kind: if loopback { InterfaceKind::Loopback } else { InterfaceKind::Unknown },
                addresses: Vec::new(),
            });
            if !matches!(i.oper_status, if_addrs::IfOperStatus::Up | if_addrs::IfOperStatus::Unknown) && !loopback {
                entry.flags.carrier = Some(false);
            }
            entry.addresses.push(IfAddr { addr, prefix_len });
        }
        Ok(Snapshot::new(by_name.into_values().collect()))
    }
}

#[async_trait::async_trait]
impl InterfaceSource for IfAddrsSource {
    async fn snapshot(&self) -> Result<Snapshot, SourceError> {
        self.read()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The portable source runs on Linux too, so what macOS and the BSDs get is tested here.
    #[test]
    fn reads_this_hosts_loopback_without_kinds() {
        let snap = IfAddrsSource.read().expect("getifaddrs");
        let lo = snap.interfaces.iter().find(|i| i.flags.loopback).expect("a loopback interface");
        assert_eq!(lo.kind, InterfaceKind::Loopback);
        assert!(lo.addresses.iter().any(|a| a.addr == IpAddr::from([127, 0, 0, 1])), "{lo:?}");
        // No kinds beyond loopback: providers fall back to names and ranges.
        assert!(snap.interfaces.iter().filter(|i| !i.flags.loopback).all(|i| i.kind == InterfaceKind::Unknown));
    }
}
