//! The header rules of forwarding: hop-by-hop headers out, meshgate's own
//! credentials out, look-alikes of meshgate's own headers out (unless the
//! [`HeaderRules`] keep them), `X-Forwarded-*` in. Pure functions on a
//! [`HeaderMap`], so each rule is unit-tested on its own.

use std::net::SocketAddr;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue};

use super::upstream::HeaderRules;
use crate::gateway::auth::bearer_value_matches;
use crate::gateway::token::Token;

/// Headers that describe one connection, not the message (RFC 9110 7.6.1), and
/// `Proxy-Authorization`, which is addressed to meshgate.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Client-IP and forwarding headers meshgate does not set: an upstream that
/// reads them would believe whatever the client wrote.
const CLIENT_IP: [HeaderName; 6] = [
    header::FORWARDED,
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("x-client-ip"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-forwarded-ssl"),
];

pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// True for `Connection: upgrade` + `Upgrade: ...` (a WebSocket handshake).
pub(crate) fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Drops the hop-by-hop headers and every header `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the few names present is cheaper
    // than a removal (a hash and a probe) per hop-by-hop name.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    // `Connection` cannot name meshgate's own identity headers away: a client
    // must not be able to turn a mesh caller into one with no identity.
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .filter(|n| !n.as_str().starts_with("meshgate-peer-"))
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
}

/// Drops what `rules` does not keep: the client-IP look-alikes (`Forwarded`,
/// `X-Real-IP`, `X-Client-IP`, `X-Forwarded-Port`, `X-Forwarded-Prefix`,
/// `X-Forwarded-Ssl`) and every name with an underscore.
pub fn strip_look_alikes(headers: &mut HeaderMap, rules: HeaderRules) {
    let drop = |k: &HeaderName| {
        let name = k.as_str();
        // The look-alikes all start with `f` or `x` (names are lowercase).
        (!rules.keep_client_ip_headers && matches!(name.as_bytes().first(), Some(b'f' | b'x')) && CLIENT_IP.contains(k))
            || (!rules.keep_underscores && name.contains('_'))
    };
    // One pass over the names; no allocation unless one is there.
    if (rules.keep_client_ip_headers && rules.keep_underscores) || !headers.keys().any(drop) {
        return;
    }
    let named: Vec<HeaderName> = headers.keys().filter(|k| drop(k)).cloned().collect();
    for n in named {
        headers.remove(n);
    }
}

/// Removes every `Authorization` value that is `Bearer <token>`, keeping others.
pub fn strip_token(headers: &mut HeaderMap, token: &Token) {
    if !headers.contains_key(header::AUTHORIZATION) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter(|v| !bearer_value_matches(Some(v), token))
        .cloned()
        .collect();
    headers.remove(header::AUTHORIZATION);
    for v in kept {
        headers.append(header::AUTHORIZATION, v);
    }
}

/// A client's address as `X-Forwarded-For` names it, and the scheme it came
/// in with (`X-Forwarded-Proto`), made once per connection.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    ip: std::net::IpAddr,
    value: Option<HeaderValue>,
    tls: bool,
}

impl Peer {
    pub(crate) fn new(addr: SocketAddr, tls: bool) -> Self {
        let ip = addr.ip().to_canonical();
        Self { ip, value: ip_header_value(ip), tls }
    }

    /// `https` when the client's connection was TLS, else `http`.
    pub(crate) fn proto(&self) -> HeaderValue {
        HeaderValue::from_static(if self.tls { "https" } else { "http" })
    }
}

/// Appends the peer's IP to `X-Forwarded-For` (joining earlier values, which
/// the client may have made up: only the last entry is meshgate's).
pub(crate) fn append_forwarded_for(headers: &mut HeaderMap, peer: &Peer) {
    use axum::http::header::Entry;
    match headers.entry(X_FORWARDED_FOR) {
        Entry::Vacant(v) => {
            if let Some(value) = &peer.value {
                v.insert(value.clone());
            }
        }
        Entry::Occupied(mut o) => {
            let earlier: Vec<&str> = o.iter().filter_map(|v| v.to_str().ok()).collect();
            let value = if earlier.is_empty() {
                peer.value.clone()
            } else {
                HeaderValue::try_from(format!("{}, {}", earlier.join(", "), peer.ip)).ok()
            };
            match value {
                Some(v) => {
                    o.insert(v);
                }
                None => {
                    o.remove();
                }
            }
        }
    }
}

/// An IP address as a header value.
fn ip_header_value(ip: std::net::IpAddr) -> Option<HeaderValue> {
    HeaderValue::try_from(ip.to_string()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_cannot_name_the_identity_headers_away() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "meshgate-peer-key, Meshgate-Peer-Name, x-other".parse().unwrap());
        h.insert("meshgate-peer-key", "k".parse().unwrap());
        h.insert("meshgate-peer-name", "laptop".parse().unwrap());
        h.insert("x-other", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h["meshgate-peer-key"], "k");
        assert_eq!(h["meshgate-peer-name"], "laptop");
        assert!(!h.contains_key("x-other") && !h.contains_key(header::CONNECTION), "{h:?}");
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, X-Secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert(header::PROXY_AUTHORIZATION, "Bearer t".parse().unwrap());
        h.insert(header::ACCEPT, "*/*".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::ACCEPT));
    }

    #[test]
    fn only_meshgate_bearer_is_stripped() {
        let t = Token::new("s3cret", "test").unwrap();
        let mut h = HeaderMap::new();
        h.append(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        h.append(header::AUTHORIZATION, "Basic dXNlcjpwdw==".parse().unwrap());
        strip_token(&mut h, &t);
        let left: Vec<_> = h.get_all(header::AUTHORIZATION).iter().collect();
        assert_eq!(left, ["Basic dXNlcjpwdw=="]);
    }

    #[test]
    fn look_alikes_go_unless_kept() {
        let sent = [
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
            ("x-client-ip", "1.2.3.4"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-prefix", "/admin"),
            ("x-forwarded-ssl", "on"),
            ("x_forwarded_for", "1.2.3.4"),
            ("transfer_encoding", "chunked"),
            ("content_length", "5"),
            ("_", "1"),
            ("x-forwarded-for", "5.6.7.8"),
            ("x-forwarded-host", "app"),
            ("accept", "*/*"),
            ("x-request-id", "abc"),
        ];
        let kept_after = |rules: HeaderRules| {
            let mut h = HeaderMap::new();
            for (k, v) in sent {
                h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
            }
            h.append(HeaderName::from_static("x-real-ip"), HeaderValue::from_static("9.9.9.9"));
            strip_look_alikes(&mut h, rules);
            let mut names: Vec<String> = h.keys().map(|k| k.to_string()).collect();
            names.sort();
            names
        };
        let strict = kept_after(HeaderRules::default());
        assert_eq!(strict, ["accept", "x-forwarded-for", "x-forwarded-host", "x-request-id"]);
        let ip = kept_after(HeaderRules::default().with_keep_client_ip_headers(true));
        assert_eq!(ip.len(), strict.len() + CLIENT_IP.len(), "{ip:?}");
        assert!(!ip.iter().any(|n| n.contains('_')), "{ip:?}");
        let under = kept_after(HeaderRules::default().with_keep_underscores(true));
        assert_eq!(under.len(), strict.len() + 4, "{under:?}");
        assert!(!under.contains(&"forwarded".to_owned()), "{under:?}");
        assert_eq!(
            kept_after(HeaderRules::default().with_keep_underscores(true).with_keep_client_ip_headers(true)).len(),
            sent.len()
        );
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, &Peer::new("[::ffff:10.8.0.2]:5000".parse().unwrap(), false));
        assert_eq!(h[X_FORWARDED_FOR], "10.8.0.2");
        append_forwarded_for(&mut h, &Peer::new("10.8.0.3:5000".parse().unwrap(), false));
        assert_eq!(h[X_FORWARDED_FOR], "10.8.0.2, 10.8.0.3");
        append_forwarded_for(&mut h, &Peer::new("[fd7a::5]:5000".parse().unwrap(), false));
        assert_eq!(h[X_FORWARDED_FOR], "10.8.0.2, 10.8.0.3, fd7a::5");
        // Two header lines, one of them not text: the text one is kept.
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, "1.1.1.1".parse().unwrap());
        h.append(X_FORWARDED_FOR, HeaderValue::from_bytes(b"\xff").unwrap());
        append_forwarded_for(&mut h, &Peer::new("10.8.0.3:5000".parse().unwrap(), false));
        assert_eq!(h.get_all(X_FORWARDED_FOR).iter().collect::<Vec<_>>(), ["1.1.1.1, 10.8.0.3"]);
    }
}
