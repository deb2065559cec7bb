//! Tests of `accept.rs`, in a file of their own: they use the shared test
//! helpers (`testutil.rs`), which themselves use `accept.rs`.

use std::sync::Arc;
use std::time::Duration;

use super::accept::*;
use super::resolver::CertResolver;
use crate::tls::testutil::{client_handshake, Made};
use tokio::io::AsyncWriteExt;

fn acceptor(made: &Made) -> TlsAcceptor {
    TlsAcceptor::new(Arc::new(CertResolver::new(made.certified()))).unwrap()
}

#[tokio::test]
async fn alpn_gives_h2_when_offered_and_http11_otherwise() {
    let made = Made::new(&["gw.example"], None);
    let acc = acceptor(&made);
    for (offer, want) in
        [(&[&b"h2"[..], b"http/1.1"][..], Alpn::H2), (&[&b"http/1.1"[..]][..], Alpn::Http11), (&[][..], Alpn::Http11)]
    {
        let seen = client_handshake(&acc, offer, None).await.unwrap();
        assert_eq!(seen.server_alpn, want, "client offered {offer:?}");
    }
    let stats = acc.stats().snapshot();
    assert_eq!((stats.ok, stats.h2, stats.garbage), (3, 1, 0));
}

#[tokio::test]
async fn tls_1_3_by_default_and_1_2_when_the_client_only_has_1_2() {
    let acc = acceptor(&Made::new(&["gw.example"], None));
    let seen = client_handshake(&acc, &[b"h2"], None).await.unwrap();
    assert_eq!(seen.version, rustls::ProtocolVersion::TLSv1_3);
    let seen = client_handshake(&acc, &[b"h2"], Some(&rustls::version::TLS12)).await.unwrap();
    assert_eq!(seen.version, rustls::ProtocolVersion::TLSv1_2);
    assert_eq!(seen.server_alpn, Alpn::H2);
}

#[tokio::test]
async fn plain_http_instead_of_a_hello_is_garbage() {
    let made = Made::new(&["gw.example"], None);
    let acc = acceptor(&made);
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    client.write_all(b"GET / HTTP/1.1\r\nHost: 10.8.0.1\r\n\r\n").await.unwrap();
    let err = acc.accept(server).await.unwrap_err();
    assert_eq!(err.kind(), HandshakeErrorKind::Garbage, "{err:?}");
    assert!(err.is_noise());
    let stats = acc.stats().snapshot();
    assert_eq!((stats.garbage, stats.ok, stats.failed), (1, 0, 0));
}

#[tokio::test]
async fn a_peer_that_closes_at_once_is_closed_not_garbage() {
    let acc = acceptor(&Made::new(&["gw.example"], None));
    let (client, server) = tokio::io::duplex(1024);
    drop(client);
    let err = acc.accept(server).await.unwrap_err();
    assert_eq!(err.kind(), HandshakeErrorKind::Closed, "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_times_out() {
    let acc = acceptor(&Made::new(&["gw.example"], None)).with_handshake_timeout(Duration::from_secs(3));
    let (_client, server) = tokio::io::duplex(1024);
    let err = acc.accept(server).await.unwrap_err();
    assert_eq!(err.kind(), HandshakeErrorKind::Timeout, "{err:?}");
    assert_eq!(acc.stats().snapshot().timeout, 1);
}

#[tokio::test]
async fn a_tls_client_we_cannot_serve_fails_as_a_tls_client_not_garbage() {
    // Two well-formed TLS 1.2 ClientHellos offering only
    // TLS_RSA_WITH_AES_128_CBC_SHA: one without the signature_algorithms
    // extension (refused while reading the hello), one with it (refused when
    // choosing a cipher suite, after the hello).
    for with_sigalgs in [false, true] {
        let acc = acceptor(&Made::new(&["gw.example"], None));
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let hello = crate::tls::testutil::hello_with_rsa_kx_only(with_sigalgs);
        client.write_all(&hello).await.unwrap();
        let err = acc.accept(server).await.unwrap_err();
        assert_eq!(err.kind(), HandshakeErrorKind::Failed, "{with_sigalgs}: {err:?}");
        assert!(!err.is_noise());
        assert_eq!(acc.stats().snapshot().failed, 1);
    }
}

/// `accept_tcp` over real sockets: plain HTTP gets a redirect, bytes that are
/// neither TLS nor HTTP get nothing at all, a TLS client its handshake; each
/// counted once.
#[tokio::test]
async fn accept_tcp_redirects_http_drops_garbage_and_serves_tls() {
    use tokio::io::AsyncReadExt;
    let made = Made::new(&["gw.example"], None);
    let acc = acceptor(&made).with_handshake_timeout(Duration::from_secs(2));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = {
        let acc = acc.clone();
        tokio::spawn(async move {
            let mut kinds = Vec::new();
            for _ in 0..3 {
                let (s, _) = listener.accept().await.unwrap();
                kinds.push(acc.accept_tcp(s).await.map(|_| ()).map_err(|e| e.kind()));
            }
            kinds
        })
    };
    let exchange = |bytes: &'static [u8]| async move {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(bytes).await.unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got)).await;
        String::from_utf8_lossy(&got).into_owned()
    };
    let reply = exchange(b"GET /a/b?c=d HTTP/1.1\r\nHost: gw.example:9\r\nUser-Agent: t\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 307 "), "{reply}");
    assert!(reply.contains(&format!("\r\nLocation: https://gw.example:{}/a/b?c=d\r\n", addr.port())), "{reply}");
    assert_eq!(exchange(b"\x00\x01\x02\x03\x04\x05\x06\x07").await, "", "garbage gets no answer, not even an alert");
    assert_eq!(exchange(b"hello\r\n\r\n").await, "");
    let kinds = server.await.unwrap();
    assert_eq!(
        kinds,
        vec![Err(HandshakeErrorKind::Redirected), Err(HandshakeErrorKind::Garbage), Err(HandshakeErrorKind::Garbage)]
    );
    let s = acc.stats().snapshot();
    assert_eq!((s.redirected, s.garbage, s.ok), (1, 2, 0));

    // A real TLS client on a socket still gets its handshake.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acc2 = acc.clone();
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        acc2.accept_tcp(s).await.map(|_| ()).map_err(|e| e.kind())
    });
    let connector = tokio_rustls::TlsConnector::from(crate::tls::testutil::client_config(&[b"http/1.1"], None));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("gw.example").unwrap();
    connector.connect(name, tcp).await.unwrap();
    assert_eq!(server.await.unwrap(), Ok(()));
    assert_eq!(acc.stats().snapshot().ok, 1);
}

/// The redirect door refuses what it must: a request head past its bound is
/// dropped as soon as the bound is passed (not read on), a client that sends
/// one byte and stalls is cut at the handshake time limit, and a CR or LF in
/// the path gets no answer (no header can be smuggled into `Location`).
#[tokio::test]
async fn the_redirect_door_bounds_the_head_and_the_time_and_refuses_crlf() {
    use tokio::io::AsyncReadExt;
    let made = Made::new(&["gw.example"], None);
    let acc = acceptor(&made).with_handshake_timeout(Duration::from_secs(2));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = {
        let acc = acc.clone();
        tokio::spawn(async move {
            let mut kinds = Vec::new();
            for _ in 0..4 {
                let (s, _) = listener.accept().await.unwrap();
                let started = std::time::Instant::now();
                let kind = acc.accept_tcp(s).await.map(|_| ()).map_err(|e| e.kind());
                kinds.push((kind, started.elapsed()));
            }
            kinds
        })
    };
    // Sends `bytes`, keeps the socket open, returns what came back.
    let exchange = |bytes: Vec<u8>| async move {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = c.write_all(&bytes).await;
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got)).await;
        String::from_utf8_lossy(&got).into_owned()
    };
    let mut huge = b"GET /".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 4 * super::redirect::MAX_HEAD));
    assert_eq!(exchange(huge).await, "", "a head past the bound gets no answer");
    assert_eq!(exchange(b"G".to_vec()).await, "", "one byte, then nothing");
    assert_eq!(exchange(b"GET /a\rLocation: https://evil.example/ HTTP/1.1\r\n\r\n".to_vec()).await, "");
    assert_eq!(exchange(b"GET /a\nSet-Cookie: x=y HTTP/1.1\r\nHost: gw.example\r\n\r\n".to_vec()).await, "");
    let kinds = server.await.unwrap();
    assert_eq!(kinds[0].0, Err(HandshakeErrorKind::Garbage));
    assert!(kinds[0].1 < Duration::from_secs(1), "dropped at the bound, not at the time limit: {:?}", kinds[0].1);
    assert_eq!(kinds[1].0, Err(HandshakeErrorKind::Timeout));
    assert!(kinds[1].1 >= Duration::from_secs(2) && kinds[1].1 < Duration::from_secs(4), "{:?}", kinds[1].1);
    assert_eq!(kinds[2].0, Err(HandshakeErrorKind::Garbage));
    assert_eq!(kinds[3].0, Err(HandshakeErrorKind::Garbage));
    let s = acc.stats().snapshot();
    assert_eq!((s.redirected, s.garbage, s.timeout), (0, 3, 1));
}
