//! The PROXY protocol version 2 header (haproxy's `proxy-protocol.txt`,
//! section 2.2) that a TCP service with `proxy_protocol = true` sends its
//! upstream before the first byte of the client's: the client's address
//! and port, the address it connected to, and the peer as the mesh names it
//! in TLVs of the custom range (section 2.2.8 reserves 0xE0-0xEF for
//! application use):
//!
//! | type | value |
//! |------|-------|
//! | `0xE0` ([`TLV_PEER_KEY`]) | the WireGuard public key, base64 as `wg` prints it |
//! | `0xE1` ([`TLV_PEER_NAME`]) | its `[peers]` name |
//! | `0xE2` ([`TLV_PEER_LOGIN`]) | a tailnet node's user login |
//! | `0xE3` ([`TLV_PEER_MESH`]) | the mesh that vouches (`wireguard`, `tailscale`) |
//!
//! The values come from the mesh, never from the client, like the
//! `Meshgate-Peer-*` headers of HTTP services.

use std::net::{IpAddr, SocketAddr};

use crate::gateway::identity::PeerIdentity;

/// The 12-byte signature every v2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// TLV: the peer's WireGuard public key (base64).
pub const TLV_PEER_KEY: u8 = 0xE0;
/// TLV: the peer's `[peers]` name.
pub const TLV_PEER_NAME: u8 = 0xE1;
/// TLV: a tailnet node's user login.
pub const TLV_PEER_LOGIN: u8 = 0xE2;
/// TLV: the mesh that vouches for the peer.
pub const TLV_PEER_MESH: u8 = 0xE3;

/// The header for a connection from `client` to `local`, carrying `peer`.
/// Mixed families (an IPv4 client on an IPv6 socket) are sent as IPv6, with
/// the IPv4 address mapped.
pub fn header(client: SocketAddr, local: SocketAddr, peer: Option<&PeerIdentity>) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36 + 64);
    out.extend_from_slice(&SIGNATURE);
    // Version 2, command PROXY.
    out.push(0x21);
    let v6 = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let mut body = Vec::with_capacity(36 + 64);
    match (client.ip(), local.ip()) {
        (IpAddr::V4(c), IpAddr::V4(l)) => {
            out.push(0x11); // AF_INET, STREAM
            body.extend_from_slice(&c.octets());
            body.extend_from_slice(&l.octets());
        }
        (c, l) => {
            out.push(0x21); // AF_INET6, STREAM
            body.extend_from_slice(&v6(c).octets());
            body.extend_from_slice(&v6(l).octets());
        }
    }
    body.extend_from_slice(&client.port().to_be_bytes());
    body.extend_from_slice(&local.port().to_be_bytes());
    if let Some(p) = peer {
        for (kind, value) in [
            (TLV_PEER_KEY, p.key.as_deref()),
            (TLV_PEER_NAME, p.name.as_deref()),
            (TLV_PEER_LOGIN, p.login.as_deref()),
            (TLV_PEER_MESH, Some(p.mesh.as_str())),
        ] {
            // Each value is short (names are capped, keys are 44 bytes); one
            // past a TLV's reach is left out rather than cut.
            if let Some(v) = value.filter(|v| v.len() <= 255) {
                body.push(kind);
                body.extend_from_slice(&(v.len() as u16).to_be_bytes());
                body.extend_from_slice(v.as_bytes());
            }
        }
    }
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_header_is_byte_for_byte_the_spec_and_carries_the_peer() {
        let id = PeerIdentity::allowed_wireguard("wg0", "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=", "laptop");
        let h = header("10.8.0.2:40000".parse().unwrap(), "10.8.0.1:5432".parse().unwrap(), Some(&id));
        assert_eq!(&h[..12], b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a");
        assert_eq!((h[12], h[13]), (0x21, 0x11));
        let len = u16::from_be_bytes([h[14], h[15]]) as usize;
        assert_eq!(h.len(), 16 + len);
        assert_eq!(&h[16..28], &[10, 8, 0, 2, 10, 8, 0, 1, 0x9c, 0x40, 0x15, 0x38]);
        // TLVs: key, name, mesh (no login).
        let mut tlvs = &h[28..];
        let mut seen = Vec::new();
        while !tlvs.is_empty() {
            let (t, l) = (tlvs[0], u16::from_be_bytes([tlvs[1], tlvs[2]]) as usize);
            seen.push((t, String::from_utf8(tlvs[3..3 + l].to_vec()).unwrap()));
            tlvs = &tlvs[3 + l..];
        }
        assert_eq!(
            seen,
            [
                (0xE0, "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=".to_owned()),
                (0xE1, "laptop".to_owned()),
                (0xE3, "wireguard".to_owned())
            ]
        );
    }

    #[test]
    fn mixed_families_go_as_ipv6_and_no_peer_means_no_tlvs() {
        let h = header("10.0.0.2:1".parse().unwrap(), "[fd00::1]:22".parse().unwrap(), None);
        assert_eq!(h[13], 0x21);
        assert_eq!(u16::from_be_bytes([h[14], h[15]]), 36);
        assert_eq!(&h[16..32], &"::ffff:10.0.0.2".parse::<std::net::Ipv6Addr>().unwrap().octets());
    }
}
