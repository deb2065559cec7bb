//! Plain HTTP at a TLS port: answered with a redirect to the same URL over
//! https instead of a dropped connection.
//!
//! [`super::TlsAcceptor::accept_tcp`] peeks at the first byte: a TLS record
//! starts with 0x16 (handshake); an HTTP/1 request starts with its method's
//! first letter. For the latter, [`answer`] reads the request head (at most
//! [`MAX_HEAD`] bytes, within the handshake time limit), and if it parses as
//! an HTTP/1 request in origin form, writes a `307` whose `Location` is
//! `https://` + the `Host` it named (or the listener's address) + the port it
//! came in on + the path and query. Anything else is not answered: the caller
//! counts it and closes. Nothing here logs, and nothing of the request but its
//! host and path is used (a token in the query goes only back to the same
//! client, for the same host).

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The largest request head read before giving up on it.
pub(super) const MAX_HEAD: usize = 8 * 1024;

/// True when `first` may start an HTTP/1 request line (a method: `GET`,
/// `POST`, `HEAD`...; methods are upper-case tokens by custom).
pub(super) fn may_be_http(first: u8) -> bool {
    first.is_ascii_uppercase()
}

/// Reads a request head from `stream` and answers it with a redirect to
/// https; `Err` when it is not a request this answers (the caller counts it
/// as garbage).
pub(super) async fn answer(mut stream: TcpStream) -> io::Result<()> {
    let local = stream.local_addr()?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break;
        }
        if head.len() >= MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "request head too large"));
        }
    }
    let location = location(&head, local).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not HTTP/1"))?;
    let body = "This port speaks HTTPS.\n";
    let reply = format!(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}

/// Where a request head `head` that came in on `local` should go over https,
/// or `None` when it is not an HTTP/1 request in origin form.
pub(super) fn location(head: &[u8], local: SocketAddr) -> Option<String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return None,
    }
    let target = req.path?;
    if !target.starts_with('/') {
        return None;
    }
    let host = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.trim().parse::<hyper::http::uri::Authority>().ok())
        .filter(|a| !a.as_str().contains('@') && !a.host().is_empty())
        .map(|a| a.host().to_owned());
    let host = host.unwrap_or_else(|| match local {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    });
    Some(format!("https://{host}:{}{target}", local.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_location_keeps_host_path_and_query_and_takes_the_listeners_port() {
        let local: SocketAddr = "10.8.0.1:8443".parse().unwrap();
        let at = |head: &str| location(head.as_bytes(), local);
        assert_eq!(
            at("GET /x?a=1 HTTP/1.1\r\nHost: 10.8.0.1:8443\r\n\r\n").as_deref(),
            Some("https://10.8.0.1:8443/x?a=1")
        );
        assert_eq!(at("GET / HTTP/1.1\r\nHost: gw.example\r\n\r\n").as_deref(), Some("https://gw.example:8443/"));
        assert_eq!(at("HEAD /y HTTP/1.0\r\n\r\n").as_deref(), Some("https://10.8.0.1:8443/y"), "no Host: the address");
        assert_eq!(at("GET / HTTP/1.1\r\nHost: [fd00::1]:1\r\n\r\n").as_deref(), Some("https://[fd00::1]:8443/"),);
        // Not answered: not a request, not origin form, a Host that is not one.
        assert_eq!(at("SSH-2.0-OpenSSH_9.2\r\n\r\n"), None);
        assert_eq!(at("GET http://elsewhere/ HTTP/1.1\r\nHost: x\r\n\r\n"), None);
        assert_eq!(at("GET / HTTP/1.1\r\nHost: a@b\r\n\r\n").as_deref(), Some("https://10.8.0.1:8443/"));
        assert_eq!(at("GET / HTTP/1.1\r\nHost: evil.example/x\r\n\r\n").as_deref(), Some("https://10.8.0.1:8443/"));
        let v6: SocketAddr = "[fd00::1]:443".parse().unwrap();
        assert_eq!(location(b"GET / HTTP/1.1\r\n\r\n", v6).as_deref(), Some("https://[fd00::1]:443/"));
        assert!(may_be_http(b'G') && !may_be_http(0x16) && !may_be_http(b'\0'));
    }
}
