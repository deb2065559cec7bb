//! Kernel WireGuard on Linux: `WG_CMD_GET_DEVICE` over generic netlink, as `wg show` does.
//!
//! Two steps on one `NETLINK_GENERIC` socket: resolve the family id of
//! `wireguard` (nlctrl `GETFAMILY`), then dump the device by index. A dump may
//! span several messages, and one peer's allowed-ips may continue in the next
//! message under the same public key: those are merged. Message layouts come
//! from `netlink-packet-generic`/`netlink-packet-wireguard`; only the socket
//! loop is here. The kernel requires CAP_NET_ADMIN (in the interface's network
//! namespace) for the dump.

use std::os::fd::AsRawFd as _;
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::GenlMessage;
use netlink_packet_wireguard::{
    WireguardAllowedIpAttr, WireguardAttribute, WireguardCmd, WireguardMessage, WireguardPeer, WireguardPeerAttribute,
};
use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};

use super::peer::{Peer, PeerReadError, ReadLimits};
use super::PublicKey;

/// Reads the peers of kernel WireGuard interface `name` (index `index`).
pub(crate) fn read_kernel(name: &str, index: u32, limits: ReadLimits) -> Result<Vec<Peer>, PeerReadError> {
    let deadline = Instant::now() + limits.timeout;
    let io = |what: &str| {
        let what = what.to_owned();
        move |source: std::io::Error| PeerReadError::Io { iface: name.to_owned(), what, source }
    };
    let mut socket = Socket::new(NETLINK_GENERIC).map_err(io("open a generic netlink socket"))?;
    socket.bind_auto().map_err(io("bind the netlink socket"))?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(io("connect the netlink socket"))?;
    let mut conn = Conn { socket, name, deadline, limits, received: 0 };

    let family = conn.family_id()?;
    let mut req = GenlMessage::from_payload(WireguardMessage {
        cmd: WireguardCmd::GetDevice,
        attributes: vec![WireguardAttribute::IfIndex(index)],
    });
    req.set_resolved_family_id(family);
    conn.send(req, NLM_F_REQUEST | NLM_F_DUMP, 2)?;
    let mut peers = Vec::new();
    loop {
        let data = conn.recv()?;
        match parse_dump(&data, &mut peers) {
            Ok(true) => return Ok(peers),
            Ok(false) => {}
            Err(Reply::Errno(e)) => {
                let hint = match e.raw_os_error() {
                    Some(libc::EPERM) => " (reading kernel WireGuard peers needs CAP_NET_ADMIN)",
                    Some(libc::ENODEV) => " (no kernel WireGuard interface with that index)",
                    _ => "",
                };
                return Err(io(&format!("WG_CMD_GET_DEVICE for index {index}{hint}"))(e));
            }
            Err(Reply::Malformed(detail)) => return Err(PeerReadError::Protocol { iface: name.to_owned(), detail }),
        }
    }
}

/// A netlink socket with a deadline and a byte budget.
struct Conn<'a> {
    socket: Socket,
    name: &'a str,
    deadline: Instant,
    limits: ReadLimits,
    received: usize,
}

impl Conn<'_> {
    fn send<F>(&self, msg: GenlMessage<F>, flags: u16, seq: u32) -> Result<(), PeerReadError>
    where
        F: netlink_packet_generic::GenlFamily + netlink_packet_core::Emitable + std::fmt::Debug,
    {
        let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
        packet.header.flags = flags;
        packet.header.sequence_number = seq;
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0).map(drop).map_err(|source| PeerReadError::Io {
            iface: self.name.to_owned(),
            what: "send a generic netlink request".into(),
            source,
        })
    }

    /// One datagram, within the deadline and the byte budget.
    fn recv(&mut self) -> Result<Vec<u8>, PeerReadError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let timed_out = || PeerReadError::Protocol {
            iface: self.name.to_owned(),
            detail: format!("no complete netlink answer within {:?}", self.limits.timeout),
        };
        if left.is_zero() {
            return Err(timed_out());
        }
        set_recv_timeout(&self.socket, left).map_err(|source| PeerReadError::Io {
            iface: self.name.to_owned(),
            what: "set a netlink receive timeout".into(),
            source,
        })?;
        let data = match self.socket.recv_from_full() {
            Ok((data, _)) => data,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(timed_out())
            }
            Err(source) => {
                return Err(PeerReadError::Io { iface: self.name.to_owned(), what: "netlink receive".into(), source })
            }
        };
        self.received += data.len();
        if self.received > self.limits.max_bytes {
            return Err(PeerReadError::Protocol {
                iface: self.name.to_owned(),
                detail: format!("netlink answer is over {} bytes", self.limits.max_bytes),
            });
        }
        Ok(data)
    }

    /// The id the kernel gave the `wireguard` generic netlink family.
    fn family_id(&mut self) -> Result<u16, PeerReadError> {
        let req = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName("wireguard".into())],
        });
        self.send(req, NLM_F_REQUEST, 1)?;
        let data = self.recv()?;
        let msg = NetlinkMessage::<GenlMessage<GenlCtrl>>::deserialize(&data).map_err(|e| PeerReadError::Protocol {
            iface: self.name.to_owned(),
            detail: format!("malformed nlctrl answer: {e}"),
        })?;
        match msg.payload {
            NetlinkPayload::InnerMessage(m) => {
                m.payload.nlas.iter().find_map(|a| if let GenlCtrlAttrs::FamilyId(id) = a { Some(*id) } else { None })
            }
            NetlinkPayload::Error(e) if e.code.map(|c| -c.get()) == Some(libc::ENOENT) => {
                return Err(PeerReadError::Unsupported {
                    iface: self.name.to_owned(),
                    what: "this kernel has no WireGuard (no generic netlink family \"wireguard\")",
                })
            }
            NetlinkPayload::Error(e) => {
                return Err(PeerReadError::Io {
                    iface: self.name.to_owned(),
                    what: "resolve the wireguard netlink family".into(),
                    source: std::io::Error::from_raw_os_error(e.code.map_or(libc::EIO, |c| -c.get())),
                })
            }
            _ => None,
        }
        .ok_or_else(|| PeerReadError::Protocol {
            iface: self.name.to_owned(),
            detail: "nlctrl answered without a family id for \"wireguard\"".into(),
        })
    }
}

fn set_recv_timeout(socket: &Socket, t: Duration) -> std::io::Result<()> {
    // A zero timeval means "no timeout": never pass one.
    let t = t.max(Duration::from_millis(1));
    let tv = libc::timeval {
        tv_sec: t.as_secs().try_into().unwrap_or(libc::time_t::MAX),
        tv_usec: t.subsec_micros().into(),
    };
    // SAFETY: a valid fd owned by `socket`, and a pointer to a timeval of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::from_ref(&tv).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// What a reply datagram said besides peers.
#[derive(Debug)]
enum Reply {
    /// The kernel refused the request.
    Errno(std::io::Error),
    /// Not a WireGuard dump.
    Malformed(String),
}

/// Adds the peers in one datagram of a `WG_CMD_GET_DEVICE` dump to `peers`;
/// `Ok(true)` once the dump is done.
fn parse_dump(data: &[u8], peers: &mut Vec<Peer>) -> Result<bool, Reply> {
    let mut offset = 0;
    while offset < data.len() {
        let msg = NetlinkMessage::<GenlMessage<WireguardMessage>>::deserialize(&data[offset..])
            .map_err(|e| Reply::Malformed(format!("malformed WireGuard netlink message: {e}")))?;
        let len = msg.header.length as usize;
        match msg.payload {
            NetlinkPayload::Done(_) => return Ok(true),
            NetlinkPayload::Error(e) => {
                if let Some(code) = e.code {
                    return Err(Reply::Errno(std::io::Error::from_raw_os_error(-code.get())));
                }
            }
            NetlinkPayload::InnerMessage(m) => {
                for attr in m.payload.attributes {
                    if let WireguardAttribute::Peers(list) = attr {
                        list.into_iter().try_for_each(|p| add_peer(p, peers))?;
                    }
                }
            }
            _ => {}
        }
        if len == 0 {
            break;
        }
        // Messages are 4-byte aligned in a datagram.
        offset += (len + 3) & !3;
    }
    Ok(false)
}

/// Adds one peer, or more allowed-ips of the previous one (a peer whose
/// allowed-ips did not fit one message continues under the same key).
fn add_peer(p: WireguardPeer, peers: &mut Vec<Peer>) -> Result<(), Reply> {
    let mut peer = Peer {
        public_key: PublicKey::from_bytes([0; 32]),
        allowed_ips: Vec::new(),
        endpoint: None,
        last_handshake: None,
        rx_bytes: 0,
        tx_bytes: 0,
    };
    let mut has_key = false;
    for attr in p.0 {
        match attr {
            WireguardPeerAttribute::PublicKey(k) => {
                peer.public_key = PublicKey::from_bytes(k);
                has_key = true;
            }
            WireguardPeerAttribute::Endpoint(ep) => peer.endpoint = Some(ep),
            WireguardPeerAttribute::RxBytes(b) => peer.rx_bytes = b,
            WireguardPeerAttribute::TxBytes(b) => peer.tx_bytes = b,
            WireguardPeerAttribute::LastHandshake(t) => {
                peer.last_handshake = match (u64::try_from(t.seconds), u32::try_from(t.nano_seconds)) {
                    (Ok(0), Ok(0)) => None, // never
                    (Ok(s), Ok(ns)) if ns < 1_000_000_000 => SystemTime::UNIX_EPOCH.checked_add(Duration::new(s, ns)),
                    _ => None,
                }
            }
            WireguardPeerAttribute::AllowedIps(ips) => {
                for ip in ips {
                    let (mut addr, mut cidr) = (None, None);
                    for a in ip.0 {
                        match a {
                            WireguardAllowedIpAttr::IpAddr(x) => addr = Some(x),
                            WireguardAllowedIpAttr::Cidr(c) => cidr = Some(c),
                            _ => {}
                        }
                    }
                    let (Some(addr), Some(cidr)) = (addr, cidr) else {
                        return Err(Reply::Malformed("an allowed-ip without address or prefix length".into()));
                    };
                    let net = IpNet::new(addr, cidr)
                        .map_err(|_| Reply::Malformed(format!("allowed-ip {addr}/{cidr}: bad prefix length")))?;
                    peer.allowed_ips.push(net.trunc());
                }
            }
            _ => {}
        }
    }
    if !has_key {
        return Err(Reply::Malformed("a peer without a public key".into()));
    }
    match peers.last_mut() {
        Some(last) if last.public_key == peer.public_key => last.allowed_ips.append(&mut peer.allowed_ips),
        _ => peers.push(peer),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{DoneMessage, NLM_F_MULTIPART};
    use netlink_packet_wireguard::{WireguardAddressFamily, WireguardAllowedIp};

    /// A kernel reply to `wg show` as captured with nlmon (generic netlink header
    /// and attributes; from netlink-packet-wireguard's tests, MIT): interface `cn`,
    /// one peer with endpoint 1.1.1.1:1111 and allowed-ips 0.0.0.0/0.
    const CAPTURED: [u8; 300] = [
        0x00, 0x01, 0x00, 0x00, 0x06, 0x00, 0x06, 0x00, 0x2c, 0x80, 0x00, 0x00, 0x08, 0x00, 0x07, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x08, 0x00, 0x01, 0x00, 0x03, 0x00, 0x00, 0x00, 0x07, 0x00, 0x02, 0x00, 0x63, 0x6e, 0x00, 0x00,
        0x24, 0x00, 0x03, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d,
        0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
        0x24, 0x00, 0x04, 0x00, 0xcc, 0xaf, 0x10, 0xe1, 0xa9, 0xd7, 0xd0, 0x5f, 0xf2, 0xbd, 0xd2, 0xa0, 0xf1, 0x78,
        0x2d, 0x97, 0x46, 0x9a, 0x1c, 0xf7, 0xbe, 0x88, 0x0f, 0x68, 0x75, 0xa7, 0x79, 0x93, 0x5d, 0x1d, 0x21, 0x75,
        0xc0, 0x00, 0x08, 0x80, 0xbc, 0x00, 0x00, 0x80, 0x24, 0x00, 0x01, 0x00, 0x77, 0xdc, 0x9a, 0xc0, 0xb3, 0xf0,
        0xc5, 0xe7, 0x5b, 0xb8, 0xd3, 0x42, 0x2d, 0x88, 0xec, 0x92, 0xd1, 0x3a, 0x34, 0x23, 0x22, 0x90, 0x87, 0x82,
        0x15, 0x51, 0x57, 0x19, 0x69, 0xde, 0xa0, 0x44, 0x24, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x06, 0x00, 0x9a, 0x24, 0x77, 0x69, 0x00, 0x00,
        0x00, 0x00, 0x02, 0x0e, 0xa8, 0x0f, 0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x05, 0x00, 0x19, 0x00, 0x00, 0x00,
        0x0c, 0x00, 0x08, 0x00, 0x80, 0x40, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x07, 0x00, 0x98, 0x44,
        0xd0, 0x01, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x0a, 0x00, 0x01, 0x00, 0x00, 0x00, 0x14, 0x00, 0x04, 0x00,
        0x02, 0x00, 0x04, 0x57, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00,
        0x09, 0x80, 0x1c, 0x00, 0x00, 0x80, 0x05, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x01, 0x00,
        0x02, 0x00, 0x00, 0x00, 0x08, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    const FAMILY: u16 = 0x1d;

    /// A netlink header in front of a generic netlink payload, as the kernel sends it.
    fn framed(payload: &[u8]) -> Vec<u8> {
        let len = 16 + payload.len() as u32;
        let mut out = Vec::new();
        out.extend_from_slice(&len.to_ne_bytes());
        out.extend_from_slice(&FAMILY.to_ne_bytes());
        out.extend_from_slice(&(NLM_F_MULTIPART).to_ne_bytes());
        out.extend_from_slice(&2u32.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn done() -> Vec<u8> {
        let mut m = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::<GenlMessage<WireguardMessage>>::Done(DoneMessage::default()),
        );
        m.finalize();
        let mut buf = vec![0; m.buffer_len()];
        m.serialize(&mut buf);
        buf
    }

    fn emit(peers: Vec<WireguardPeer>) -> Vec<u8> {
        let mut g = GenlMessage::from_payload(WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![WireguardAttribute::IfIndex(3), WireguardAttribute::Peers(peers)],
        });
        g.set_resolved_family_id(FAMILY);
        let mut m = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(g));
        m.header.flags = NLM_F_MULTIPART;
        m.finalize();
        let mut buf = vec![0; m.buffer_len()];
        m.serialize(&mut buf);
        buf
    }

    fn wg_peer(key: u8, ips: &[&str]) -> WireguardPeer {
        let ips = ips
            .iter()
            .map(|s| {
                let n: IpNet = s.parse().unwrap();
                let fam = if n.addr().is_ipv4() { WireguardAddressFamily::Ipv4 } else { WireguardAddressFamily::Ipv6 };
                WireguardAllowedIp(vec![
                    WireguardAllowedIpAttr::Family(fam),
                    WireguardAllowedIpAttr::IpAddr(n.addr()),
                    WireguardAllowedIpAttr::Cidr(n.prefix_len()),
                ])
            })
            .collect();
        WireguardPeer(vec![WireguardPeerAttribute::PublicKey([key; 32]), WireguardPeerAttribute::AllowedIps(ips)])
    }

    #[test]
    fn parses_a_captured_kernel_reply() {
        let mut peers = Vec::new();
        assert!(!parse_dump(&framed(&CAPTURED), &mut peers).unwrap());
        assert!(parse_dump(&done(), &mut peers).unwrap());
        assert_eq!(peers.len(), 1);
        let p = &peers[0];
        assert_eq!(p.public_key.to_base64(), "d9yawLPwxedbuNNCLYjsktE6NCMikIeCFVFXGWneoEQ=");
        assert_eq!(p.allowed_ips, ["0.0.0.0/0".parse::<IpNet>().unwrap()]);
        assert_eq!(p.endpoint, Some("1.1.1.1:1111".parse().unwrap()));
        assert_eq!(p.last_handshake, Some(SystemTime::UNIX_EPOCH + Duration::new(1769415834, 262671874)));
        assert_eq!((p.rx_bytes, p.tx_bytes), (30_426_264, 1_917_056));
    }

    #[test]
    fn merges_a_peer_continued_in_the_next_message() {
        let mut peers = Vec::new();
        // Two messages in one datagram, the second continuing peer 2, then a third message.
        let mut first = emit(vec![wg_peer(1, &["10.0.0.1/32"]), wg_peer(2, &["10.0.0.2/32"])]);
        first.extend(emit(vec![wg_peer(2, &["fd00::2/128"])]));
        assert!(!parse_dump(&first, &mut peers).unwrap());
        let mut second = emit(vec![wg_peer(3, &["10.9.0.0/16"])]);
        second.extend(done());
        assert!(parse_dump(&second, &mut peers).unwrap());
        let got: Vec<_> =
            peers.iter().map(|p| (p.public_key.as_bytes()[0], p.allowed_ips.len(), p.last_handshake)).collect();
        assert_eq!(got, [(1, 1, None), (2, 2, None), (3, 1, None)]);
        assert_eq!(peers[1].allowed_ips[1], "fd00::2/128".parse::<IpNet>().unwrap());
    }

    #[test]
    fn a_refusal_and_garbage_are_errors() {
        let mut m = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::<GenlMessage<WireguardMessage>>::Error({
                let mut e = netlink_packet_core::ErrorMessage::default();
                e.code = std::num::NonZeroI32::new(-libc::EPERM);
                e
            }),
        );
        m.finalize();
        let mut buf = vec![0; m.buffer_len()];
        m.serialize(&mut buf);
        match parse_dump(&buf, &mut Vec::new()) {
            Err(Reply::Errno(e)) => assert_eq!(e.raw_os_error(), Some(libc::EPERM)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse_dump(&[1, 2, 3, 4, 5], &mut Vec::new()), Err(Reply::Malformed(_))));
        let keyless = emit(vec![WireguardPeer(vec![WireguardPeerAttribute::PersistentKeepalive(25)])]);
        assert!(matches!(parse_dump(&keyless, &mut Vec::new()), Err(Reply::Malformed(_))));
    }

    /// This host may have no kernel WireGuard (no module, or no permission):
    /// then the read must fail with a reason, quickly, and never panic.
    #[test]
    fn reading_a_missing_device_fails_with_a_reason() {
        let start = Instant::now();
        let e = read_kernel("nowg", 999_999, ReadLimits::default()).unwrap_err().to_string();
        assert!(start.elapsed() < Duration::from_secs(1));
        // No module: the family is missing; with one: no such index (or no permission).
        assert!(e.contains("nowg") && (e.contains("no generic netlink family") || e.contains("index 999999")), "{e}");
    }
}
