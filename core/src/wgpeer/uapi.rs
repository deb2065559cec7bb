//! Userspace WireGuard (wireguard-go, boringtun): the UAPI control socket.
//!
//! The protocol (wireguard.com/xplatform): write `get=1\n\n`, read `key=value`
//! lines up to an empty line. Device keys come first; each `public_key=` (hex)
//! starts a peer, whose `allowed_ip=`, `endpoint=` and `last_handshake_time_*=`
//! follow; `errno=0` ends a good answer. Unknown keys are skipped (newer daemons
//! add some); a known key with a bad value is an error, since identity decisions
//! hang on this text.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;

use super::peer::{Peer, PeerReadError, ReadLimits};
use super::PublicKey;

/// Reads the peers of `name` from its control socket, within `limits`.
pub(crate) fn read_uapi(name: &str, socket: &Path, limits: ReadLimits) -> Result<Vec<Peer>, PeerReadError> {
    let io = |what: String| move |source| PeerReadError::Io { iface: name.to_owned(), what: what.clone(), source };
    let deadline = Instant::now() + limits.timeout;
    let mut stream = connect(socket, limits.timeout).map_err(io(format!("connect to {}", socket.display())))?;
    stream.write_all(b"get=1\n\n").map_err(io(format!("write to {}", socket.display())))?;
    let mut text = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(protocol(
                name,
                format!("no complete answer from {} within {:?}", socket.display(), limits.timeout),
            ));
        }
        // A zero timeout means "block forever" to the OS: `left` is not zero here.
        stream.set_read_timeout(Some(left.max(Duration::from_millis(1)))).map_err(io("set a read timeout".into()))?;
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(format!("read from {}", socket.display()))(e)),
        };
        if n == 0 {
            break; // The daemon closed: parse what came (truncated text is an error there).
        }
        text.extend_from_slice(&buf[..n]);
        if text.len() > limits.max_bytes {
            return Err(protocol(name, format!("answer from {} is over {} bytes", socket.display(), limits.max_bytes)));
        }
        // The answer ends with an empty line; wireguard-go keeps the connection open.
        if text.ends_with(b"\n\n") {
            break;
        }
    }
    let text =
        String::from_utf8(text).map_err(|_| protocol(name, format!("{} answered non-UTF-8 text", socket.display())))?;
    parse_uapi_get(&text).map_err(|detail| protocol(name, format!("{}: {detail}", socket.display())))
}

/// Connects within `timeout`: a daemon that stopped accepting leaves connects
/// queued on a full backlog, where a plain connect would wait for ever (Linux
/// bounds a Unix-socket connect by the socket's send timeout, set first here).
fn connect(path: &Path, timeout: Duration) -> std::io::Result<UnixStream> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_write_timeout(Some(timeout.max(Duration::from_millis(1))))?;
    socket.connect(&SockAddr::unix(path)?)?;
    Ok(UnixStream::from(std::os::fd::OwnedFd::from(socket)))
}

fn protocol(name: &str, detail: String) -> PeerReadError {
    PeerReadError::Protocol { iface: name.to_owned(), detail }
}

/// Parses the answer to `get=1` (up to and including its empty line) into peers.
/// The error says what was wrong, with the line.
pub fn parse_uapi_get(text: &str) -> Result<Vec<Peer>, String> {
    let mut peers: Vec<Peer> = Vec::new();
    let mut errno = None;
    let mut ended = false;
    let (mut secs, mut nsecs) = (0u64, 0u32);
    // Turns the handshake fields of the peer being read into its `last_handshake`.
    let finish = |peers: &mut Vec<Peer>, secs: u64, nsecs: u32| {
        if let Some(p) = peers.last_mut() {
            // 0.0 is "never" in the protocol.
            p.last_handshake = (secs, nsecs)
                .ne(&(0, 0))
                .then(|| SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nsecs)))
                .flatten();
        }
    };
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let n = n + 1;
        let Some(line) = line.strip_suffix('\n') else {
            return Err(format!("truncated answer: line {n} has no end"));
        };
        if line.is_empty() {
            ended = true;
            break;
        }
        if errno.is_some() {
            return Err(format!("line {n}: {line:?} after errno"));
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {n}: {line:?} is not key=value"));
        };
        let bad = |what: &str| format!("line {n}: {key}={value:?} is not {what}");
        let in_peer = !peers.is_empty();
        match key {
            "public_key" => {
                finish(&mut peers, secs, nsecs);
                (secs, nsecs) = (0, 0);
                let public_key = PublicKey::from_hex(value).map_err(|e| format!("line {n}: {e}"))?;
                peers.push(Peer {
                    public_key,
                    allowed_ips: Vec::new(),
                    endpoint: None,
                    last_handshake: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                });
            }
            "allowed_ip" if in_peer => {
                let net: IpNet = value.parse().map_err(|_| bad("an address/prefix"))?;
                peers.last_mut().into_iter().for_each(|p| p.allowed_ips.push(net.trunc()));
            }
            "endpoint" if in_peer => {
                let ep = value.parse().map_err(|_| bad("an address:port"))?;
                peers.last_mut().into_iter().for_each(|p| p.endpoint = Some(ep));
            }
            "last_handshake_time_sec" if in_peer => secs = value.parse().map_err(|_| bad("a number of seconds"))?,
            "last_handshake_time_nsec" if in_peer => {
                nsecs = value.parse().ok().filter(|n| *n < 1_000_000_000).ok_or_else(|| bad("nanoseconds"))?
            }
            "rx_bytes" if in_peer => {
                let b = value.parse().map_err(|_| bad("a number of bytes"))?;
                peers.last_mut().into_iter().for_each(|p| p.rx_bytes = b);
            }
            "tx_bytes" if in_peer => {
                let b = value.parse().map_err(|_| bad("a number of bytes"))?;
                peers.last_mut().into_iter().for_each(|p| p.tx_bytes = b);
            }
            "errno" => errno = Some(value.parse::<i64>().map_err(|_| bad("a number"))?),
            _ => {} // listen_port, rx_bytes, ... and keys newer than this code.
        }
    }
    finish(&mut peers, secs, nsecs);
    match (errno, ended) {
        (Some(0), true) => Ok(peers),
        (Some(e), true) => Err(format!("the daemon answered errno={e}")),
        (None, _) => Err("truncated answer: no errno line".into()),
        (Some(_), false) => Err("truncated answer: no empty line after errno".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> PublicKey {
        PublicKey::from_bytes([b; 32])
    }

    fn dump() -> String {
        format!(
            "private_key={priv}\nlisten_port=51820\nfwmark=0\n\
             public_key={k1}\npreshared_key={zero}\nprotocol_version=1\nendpoint=192.0.2.2:51820\n\
             last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\ntx_bytes=92\nrx_bytes=180\n\
             persistent_keepalive_interval=0\nallowed_ip=10.77.0.2/32\nallowed_ip=fd77::2/128\n\
             public_key={k2}\nendpoint=[fd00::9]:51000\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\n\
             allowed_ip=10.99.0.0/16\nallowed_ip=10.88.1.7/24\nsome_future_key=1\n\
             public_key={k3}\n\
             errno=0\n\n",
            priv = "11".repeat(32),
            k1 = key(1).to_hex(),
            k2 = key(2).to_hex(),
            k3 = key(3).to_hex(),
            zero = "00".repeat(32),
        )
    }

    #[test]
    fn parses_several_peers() {
        let peers = parse_uapi_get(&dump()).unwrap();
        assert_eq!(peers.len(), 3);
        assert_eq!(peers[0].public_key, key(1));
        assert_eq!(peers[0].allowed_ips, ["10.77.0.2/32".parse().unwrap(), "fd77::2/128".parse::<IpNet>().unwrap()]);
        assert_eq!(peers[0].endpoint, Some("192.0.2.2:51820".parse().unwrap()));
        assert_eq!(peers[0].last_handshake, Some(SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 5)));
        assert_eq!(peers[1].public_key, key(2));
        assert_eq!(peers[1].endpoint, Some("[fd00::9]:51000".parse().unwrap()));
        assert_eq!(peers[1].last_handshake, None, "0.0 is never");
        // Host bits are cleared, as WireGuard itself does.
        assert_eq!(peers[1].allowed_ips[1], "10.88.1.0/24".parse::<IpNet>().unwrap());
        assert_eq!(
            peers[2],
            Peer {
                public_key: key(3),
                allowed_ips: vec![],
                endpoint: None,
                last_handshake: None,
                rx_bytes: 0,
                tx_bytes: 0
            }
        );
        assert_eq!((peers[0].rx_bytes, peers[0].tx_bytes), (180, 92));
    }

    #[test]
    fn an_interface_without_peers_is_empty() {
        assert_eq!(parse_uapi_get("private_key=00\nlisten_port=1\nerrno=0\n\n").unwrap(), []);
    }

    #[test]
    fn errors_and_truncation_are_refused() {
        assert!(parse_uapi_get("errno=2\n\n").unwrap_err().contains("errno=2"));
        let full = dump();
        // Cut anywhere before the final empty line: never a (partial) success.
        for cut in 0..full.len() - 1 {
            assert!(parse_uapi_get(&full[..cut]).is_err(), "cut at {cut} accepted");
        }
        let e = parse_uapi_get(&format!("public_key={}\nerrno=0\n\n", "zz".repeat(32))).unwrap_err();
        assert!(e.contains("line 1") && e.contains("hex"), "{e}");
        let e =
            parse_uapi_get(&format!("public_key={}\nallowed_ip=10.0.0.1\nerrno=0\n\n", key(1).to_hex())).unwrap_err();
        assert!(e.contains("line 2") && e.contains("10.0.0.1"), "{e}");
        assert!(parse_uapi_get("garbage\n\n").unwrap_err().contains("key=value"));
        assert!(parse_uapi_get("errno=0\nlisten_port=1\n\n").unwrap_err().contains("after errno"));
    }

    #[test]
    fn reads_a_socket_and_gives_up_in_time() {
        use std::os::unix::net::UnixListener;
        let dir = std::env::temp_dir().join(format!("meshgate-uapi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wgt.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let text = dump();
        let server = std::thread::spawn(move || {
            // First client: a proper answer, connection left open like wireguard-go.
            let (mut c, _) = listener.accept().unwrap();
            let mut req = [0u8; 7];
            c.read_exact(&mut req).unwrap();
            assert_eq!(&req, b"get=1\n\n");
            c.write_all(text.as_bytes()).unwrap();
            // Second client: silence until it gives up.
            let (c2, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_millis(400));
            drop((c, c2));
        });
        let limits = ReadLimits { timeout: Duration::from_millis(200), max_bytes: 1 << 20 };
        assert_eq!(read_uapi("wgt", &path, limits).unwrap().len(), 3);
        let start = Instant::now();
        let e = read_uapi("wgt", &path, limits).unwrap_err().to_string();
        assert!(start.elapsed() < Duration::from_millis(350), "{:?}", start.elapsed());
        assert!(e.contains("wgt") && e.contains("within"), "{e}");
        server.join().unwrap();
        let e = read_uapi("wgt", &dir.join("none.sock"), limits).unwrap_err().to_string();
        assert!(e.contains("connect to") && e.contains("none.sock"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A daemon that stopped accepting: once its backlog is full, connecting
    /// gives up within the timeout instead of waiting for ever.
    #[test]
    fn connecting_to_a_full_backlog_gives_up_in_time() {
        use socket2::{Domain, SockAddr, Socket, Type};
        let dir = std::env::temp_dir().join(format!("meshgate-uapi-full-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("full.sock");
        let _ = std::fs::remove_file(&path);
        let listener = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        listener.bind(&SockAddr::unix(&path).unwrap()).unwrap();
        listener.listen(1).unwrap();
        let mut held = Vec::new();
        let mut refused = None;
        for _ in 0..16 {
            let start = Instant::now();
            match connect(&path, Duration::from_millis(100)) {
                Ok(s) => held.push(s),
                Err(e) => {
                    refused = Some((e, start.elapsed()));
                    break;
                }
            }
        }
        let (e, took) = refused.expect("a backlog of 1 fills up");
        assert!(took < Duration::from_millis(500), "{e}: {took:?}");
        assert!(!held.is_empty());
        drop((held, listener));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_oversized_answer_is_refused() {
        use std::os::unix::net::UnixListener;
        let dir = std::env::temp_dir().join(format!("meshgate-uapi-big-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("big.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let _ = c.write_all(&b"listen_port=1\n".repeat(1000));
        });
        let limits = ReadLimits { timeout: Duration::from_secs(2), max_bytes: 4096 };
        let e = read_uapi("big", &path, limits).unwrap_err().to_string();
        assert!(e.contains("over 4096 bytes"), "{e}");
        server.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
