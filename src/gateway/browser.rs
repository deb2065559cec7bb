//! Browser attacks on the loopback door.
//!
//! A loopback listener asks for no token, and any web page the user visits can
//! make their browser talk to 127.0.0.1: through DNS rebinding (a name the
//! attacker controls, re-pointed at 127.0.0.1, so requests carry the attacker's
//! `Host`) or cross-site WebSocket hijacking (a page on another origin opening a
//! WebSocket to the local port; browsers send its `Origin` but do not apply CORS).
//! These checks close both, and refuse what no browser sends but a confused
//! upstream might misread:
//!
//! - On every listener, a request with more than one `Host` line is refused
//!   with 400 (which one would the upstream believe?).
//! - On loopback listeners, `Host` is parsed as an authority, `host[:port]`:
//!   the host a DNS name (dot-separated labels of letters, digits, `-` and `_`,
//!   none empty, one trailing dot allowed), an IPv4 literal or a bracketed IPv6
//!   literal, the port 1 to 5 digits up to 65535, nothing after. Anything else
//!   is refused with 400. A valid host that is not a loopback name or address
//!   (`localhost`, `127.x.y.z`, `[::1]`) and not on the allow-list is refused
//!   with 421 Misdirected Request. A request with no `Host` (HTTP/1.0 tools) is
//!   not a browser's and passes.
//! - On every listener, any request carrying `Upgrade` (whatever its value,
//!   case or number of lines: `Upgrade: h2c, websocket` included) whose
//!   `Origin` is present, is not the origin the request came to (the
//!   listener's scheme, `http://` or `https://`, + its `Host`), and is not on
//!   the allow-list is refused with 403.
//!
//! Mesh listeners accept any single `Host` (people reach them by MagicDNS or
//! similar names): the token guards them.
//!
//! [`BrowserPolicy::check`] runs on every request to the loopback door: it
//! borrows from the headers and allocates nothing unless it refuses.

use std::net::{Ipv4Addr, Ipv6Addr};

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// Which `Host` and `Origin` values to accept beyond the built-in rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrowserPolicy {
    /// Extra `Host` names (without port) accepted on loopback listeners.
    pub allowed_hosts: Vec<String>,
    /// Extra WebSocket `Origin`s accepted (`https://app.example`), exact match.
    pub allowed_origins: Vec<String>,
}

/// A `Host` value parsed as `host[:port]`, borrowed from the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Authority<'a> {
    /// The host without brackets or the trailing dot, as the allow-list names it.
    host: &'a str,
    /// True for `localhost`, 127.0.0.0/8 and ::1.
    loopback: bool,
}

/// Parses a `Host` value (RFC 9110 7.2: `uri-host [ ":" port ]`), or `None`
/// when it is not one (see the module doc for what is accepted).
fn parse_authority(value: &str) -> Option<Authority<'_>> {
    let (authority, port) = if let Some(rest) = value.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = inside.parse().ok()?;
        (Authority { host: inside, loopback: ip.is_loopback() }, after)
    } else {
        let (host, after) = value.split_at(value.find(':').unwrap_or(value.len()));
        (parse_name(host)?, after)
    };
    if !port.is_empty() {
        let digits = port.strip_prefix(':')?;
        // u16's parser alone would take `+80`.
        if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse::<u16>().ok()?;
    }
    Some(authority)
}

/// A DNS name or an IPv4 literal, with at most one trailing dot.
fn parse_name(host: &str) -> Option<Authority<'_>> {
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    let label_ok = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !name.split('.').all(label_ok) {
        return None;
    }
    // The usual names first (this runs on every request to the loopback door).
    let loopback = name == "127.0.0.1"
        || name.eq_ignore_ascii_case("localhost")
        || (name.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && name.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback()));
    Some(Authority { host: name, loopback })
}

/// True when `origin` is `scheme` + `host` (ASCII case-insensitive).
fn same_origin(origin: &str, scheme: &str, host: &str) -> bool {
    origin.len() == scheme.len() + host.len()
        && origin.get(..scheme.len()).is_some_and(|s| s.eq_ignore_ascii_case(scheme))
        && origin.get(scheme.len()..).is_some_and(|h| h.eq_ignore_ascii_case(host))
}

fn refuse(status: StatusCode, text: &'static str) -> Option<Response> {
    Some((status, text).into_response())
}

impl BrowserPolicy {
    /// The refusal for this request, if it must be refused. `loopback_listener`:
    /// the request came in on a loopback listener (no token there); `tls`: the
    /// listener speaks TLS, so its origin is `https://` + `Host`.
    pub fn check(&self, headers: &HeaderMap, loopback_listener: bool, tls: bool) -> Option<Response> {
        let mut hosts = headers.get_all(header::HOST).iter();
        let host = hosts.next();
        if hosts.next().is_some() {
            tracing::warn!("refused a request with more than one Host header");
            return refuse(StatusCode::BAD_REQUEST, "bad request: more than one Host header; send exactly one\n");
        }
        let host = host.map(|h| h.to_str().map_err(|_| h));
        if loopback_listener {
            match host {
                None => {}
                Some(Ok(h)) => match parse_authority(h) {
                    Some(a) if a.loopback || self.allowed_hosts.iter().any(|n| n.eq_ignore_ascii_case(a.host)) => {}
                    Some(_) => {
                        tracing::warn!(host = %h, "refused a request to the loopback door with a foreign Host (DNS rebinding?)");
                        return refuse(
                            StatusCode::MISDIRECTED_REQUEST,
                            "misdirected request: this loopback listener only answers to localhost, 127.0.0.1 or [::1]; add the name to allowed_hosts to accept it\n",
                        );
                    }
                    None => {
                        tracing::warn!(host = %h, "refused a request to the loopback door with a malformed Host");
                        return refuse(
                            StatusCode::BAD_REQUEST,
                            "bad request: the Host header is not a valid host[:port] (such as localhost:18789 or [::1]:18789)\n",
                        );
                    }
                },
                Some(Err(_)) => {
                    tracing::warn!("refused a request to the loopback door with a Host that is not text");
                    return refuse(StatusCode::BAD_REQUEST, "bad request: the Host header is not text\n");
                }
            }
        }
        // Any Upgrade, whatever its tokens or lines: hyper and the upstream may
        // act on a value this check would not have looked at.
        if headers.contains_key(header::UPGRADE) {
            let scheme = if tls { "https://" } else { "http://" };
            let host = host.and_then(Result::ok);
            for origin in headers.get_all(header::ORIGIN) {
                let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
                let same = host.is_some_and(|h| same_origin(origin, scheme, h));
                if !same && !self.allowed_origins.iter().any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin)) {
                    tracing::warn!(origin, "refused a cross-origin upgrade (WebSocket hijacking?)");
                    return refuse(
                        StatusCode::FORBIDDEN,
                        "forbidden: cross-origin WebSocket; add the origin to allowed_origins to accept it\n",
                    );
                }
            }
        }
        None
    }
}

/// True when `Origin` is present and is exactly the origin the request came
/// to: the listener's scheme and the request's `Host`.
pub(crate) fn request_is_same_origin(headers: &HeaderMap, tls: bool) -> bool {
    let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), headers.get(header::HOST)) else {
        return false;
    };
    let (Ok(origin), Ok(host)) = (origin.to_str(), host.to_str()) else {
        return false;
    };
    same_origin(origin, if tls { "https://" } else { "http://" }, host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    fn status(p: &BrowserPolicy, h: &[(&str, &str)], loopback: bool) -> Option<StatusCode> {
        p.check(&headers(h), loopback, false).map(|r| r.status())
    }

    #[test]
    fn host_is_parsed_as_an_authority() {
        let host = |v| parse_authority(v).map(|a| (a.host, a.loopback));
        assert_eq!(host("LocalHost:18789"), Some(("LocalHost", true)));
        assert_eq!(host("localhost."), Some(("localhost", true)));
        assert_eq!(host("[::1]:18789"), Some(("::1", true)));
        assert_eq!(host("[::1]"), Some(("::1", true)));
        assert_eq!(host("127.0.0.1"), Some(("127.0.0.1", true)));
        assert_eq!(host("127.9.8.7:65535"), Some(("127.9.8.7", true)));
        assert_eq!(host("evil.example."), Some(("evil.example", false)));
        assert_eq!(host("my_host.lan:0"), Some(("my_host.lan", false)));
        // Not an IPv4 address, so a name; and not localhost.
        assert_eq!(host("127.1"), Some(("127.1", false)));
        assert_eq!(host("[fd00::1]:1"), Some(("fd00::1", false)));
        for bad in [
            "",
            ":80",
            "[::1]evil.com:18998",
            "[::1]evil.com",
            "[::1",
            "[::1]:",
            "[::1]:99999",
            "[v1.x]",
            "[fe80::1%eth0]",
            "::1",
            "localhost..",
            ".localhost",
            "a..b",
            "localhost:abc",
            "localhost:",
            "localhost:+80",
            "localhost:65536",
            "localhost:000080",
            "localhost:80:80",
            "local host",
            "evil.example/x",
            "user@localhost",
            "local%68ost",
            "xn--nxasmq6b.example!",
        ] {
            assert_eq!(parse_authority(bad), None, "{bad:?}");
        }
        let long = format!("{}.example", "a".repeat(64));
        assert_eq!(parse_authority(&long), None);
    }

    #[test]
    fn a_repeated_host_is_refused_on_every_listener() {
        let p = BrowserPolicy::default();
        let mut h = HeaderMap::new();
        h.append(header::HOST, "localhost".parse().unwrap());
        h.append(header::HOST, "evil.example".parse().unwrap());
        for loopback in [true, false] {
            assert_eq!(p.check(&h, loopback, false).map(|r| r.status()), Some(StatusCode::BAD_REQUEST));
        }
    }

    #[test]
    fn a_malformed_host_is_400_on_the_loopback_door_only() {
        let p = BrowserPolicy { allowed_hosts: vec!["dev.local".into()], ..Default::default() };
        for bad in ["[::1]evil.com:18998", "[::1", "localhost..", "localhost:abc", "dev.local..", "::1"] {
            assert_eq!(status(&p, &[("host", bad)], true), Some(StatusCode::BAD_REQUEST), "{bad}");
            assert_eq!(status(&p, &[("host", bad)], false), None, "{bad}");
        }
        let mut h = HeaderMap::new();
        h.insert(header::HOST, axum::http::HeaderValue::from_bytes(b"local\xffhost").unwrap());
        assert_eq!(p.check(&h, true, false).map(|r| r.status()), Some(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn loopback_door_accepts_loopback_hosts_only() {
        let p = BrowserPolicy::default();
        for ok in ["localhost", "localhost:18789", "127.0.0.1:18789", "127.0.0.5", "[::1]:18789", "[::1]"] {
            assert_eq!(status(&p, &[("host", ok)], true), None, "{ok}");
        }
        for bad in ["evil.example", "evil.example:18789", "10.8.0.1:18789", "localhost.evil.example", "[fd00::1]:1"] {
            assert_eq!(status(&p, &[("host", bad)], true), Some(StatusCode::MISDIRECTED_REQUEST), "{bad}");
        }
        // No Host at all (HTTP/1.0 tools): not a browser, allowed.
        assert_eq!(status(&p, &[], true), None);
        // Mesh listeners accept any Host: the token guards them.
        assert_eq!(status(&p, &[("host", "gateway.tailnet-123.ts.net")], false), None);
        let p = BrowserPolicy { allowed_hosts: vec!["dev.local".into()], ..Default::default() };
        assert_eq!(status(&p, &[("host", "DEV.local:18789")], true), None);
        // The allow-list is exact: neither a subdomain nor a longer name passes.
        for bad in ["evil.dev.local", "dev.local.evil.example", "dev.locall"] {
            assert_eq!(status(&p, &[("host", bad)], true), Some(StatusCode::MISDIRECTED_REQUEST), "{bad}");
        }
    }

    #[test]
    fn websocket_origin_must_match_or_be_allowed() {
        let p = BrowserPolicy::default();
        let ws = |origin: &str, host: &str| {
            vec![("host", host.to_owned()), ("upgrade", "websocket".to_owned()), ("origin", origin.to_owned())]
        };
        let check = |p: &BrowserPolicy, h: Vec<(&str, String)>, loopback| {
            let pairs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            status(p, &pairs, loopback)
        };
        assert_eq!(check(&p, ws("http://127.0.0.1:18789", "127.0.0.1:18789"), true), None);
        assert_eq!(check(&p, ws("https://evil.example", "127.0.0.1:18789"), true), Some(StatusCode::FORBIDDEN));
        assert_eq!(check(&p, ws("https://evil.example", "10.8.0.1:18789"), false), Some(StatusCode::FORBIDDEN));
        assert_eq!(check(&p, ws("null", "127.0.0.1:18789"), true), Some(StatusCode::FORBIDDEN));
        // No Origin: not a browser.
        assert_eq!(status(&p, &[("host", "127.0.0.1"), ("upgrade", "websocket")], true), None);
        // A plain request with a foreign Origin is not a WebSocket: the Host rule alone applies.
        assert_eq!(status(&p, &[("host", "127.0.0.1"), ("origin", "https://evil.example")], true), None);
        // Another local app (same host, another port) is another origin.
        assert_eq!(check(&p, ws("http://127.0.0.1:3000", "127.0.0.1:18789"), true), Some(StatusCode::FORBIDDEN));
        // The scheme is part of the origin: https:// is not a plain-http listener's, and the reverse.
        assert_eq!(check(&p, ws("https://127.0.0.1:18789", "127.0.0.1:18789"), true), Some(StatusCode::FORBIDDEN));
        let tls = |origin: &str| {
            let h = headers(&[("host", "127.0.0.1:18789"), ("upgrade", "websocket"), ("origin", origin)]);
            p.check(&h, true, true).map(|r| r.status())
        };
        assert_eq!(tls("https://127.0.0.1:18789"), None);
        assert_eq!(tls("HTTPS://127.0.0.1:18789"), None);
        assert_eq!(tls("http://127.0.0.1:18789"), Some(StatusCode::FORBIDDEN));
        let p = BrowserPolicy { allowed_origins: vec!["https://dash.example/".into()], ..Default::default() };
        assert_eq!(check(&p, ws("https://dash.example", "127.0.0.1:18789"), true), None);
        // The allow-list is exact.
        for bad in ["https://dash.example.evil", "http://dash.example", "https://dash.example:8443"] {
            assert_eq!(check(&p, ws(bad, "127.0.0.1:18789"), true), Some(StatusCode::FORBIDDEN), "{bad}");
        }
    }

    #[test]
    fn every_upgrade_form_gets_the_origin_check() {
        let p = BrowserPolicy::default();
        let evil = ("origin", "https://evil.example");
        let host = ("host", "127.0.0.1:18789");
        for upgrade in ["websocket", "WebSocket", "h2c, websocket", "h2c", "", "websocket, h2c"] {
            assert_eq!(status(&p, &[host, ("upgrade", upgrade), evil], true), Some(StatusCode::FORBIDDEN), "{upgrade}");
            assert_eq!(
                status(&p, &[host, ("upgrade", upgrade), evil], false),
                Some(StatusCode::FORBIDDEN),
                "{upgrade}"
            );
        }
        // Repeated Upgrade lines, the first not a WebSocket.
        let mut h = headers(&[host, evil]);
        h.append(header::UPGRADE, "h2c".parse().unwrap());
        h.append(header::UPGRADE, "websocket".parse().unwrap());
        assert_eq!(p.check(&h, true, false).map(|r| r.status()), Some(StatusCode::FORBIDDEN));
        // Repeated Origin lines: each must pass.
        let mut h = headers(&[host, ("upgrade", "websocket")]);
        h.append(header::ORIGIN, "http://127.0.0.1:18789".parse().unwrap());
        h.append(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert_eq!(p.check(&h, true, false).map(|r| r.status()), Some(StatusCode::FORBIDDEN));
    }
}
