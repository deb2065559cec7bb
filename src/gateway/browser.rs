//! Browser attacks on the loopback door.
//!
//! A loopback listener asks for no token, and any web page the user visits can
//! make their browser talk to 127.0.0.1: through DNS rebinding (a name the
//! attacker controls, re-pointed at 127.0.0.1, so requests carry the attacker's
//! `Host`) or cross-site WebSocket hijacking (a page on another origin opening a
//! WebSocket to the local port; browsers send its `Origin` but do not apply CORS).
//! Two checks close both:
//!
//! - On loopback listeners, a request whose `Host` is not a loopback name or
//!   address (`localhost`, `127.x.y.z`, `[::1]`, with or without a port) and not
//!   on the allow-list is refused with 421 Misdirected Request.
//! - On every listener, a WebSocket upgrade whose `Origin` is present, is not the
//!   origin the request came to (`http://` + its `Host`), and is not on the
//!   allow-list is refused with 403.
//!
//! Mesh listeners accept any `Host` (people reach them by MagicDNS or similar
//! names): the token guards them.

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

/// The host part of a `Host` header value, without port, brackets or a trailing
/// dot. Borrowed: this runs on every request to the loopback door.
fn host_name(value: &str) -> &str {
    let v = value.trim();
    let host = if let Some(rest) = v.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        match v.rsplit_once(':') {
            // One colon: name:port. More than one without brackets: a bare v6 address.
            Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => v,
        }
    };
    host.trim_end_matches('.')
}

/// True for `localhost`, 127.0.0.0/8 and ::1.
fn is_loopback_host(name: &str) -> bool {
    // The usual names first, then parsed as the one family it can be (this
    // runs on every request to the loopback door).
    matches!(name, "127.0.0.1" | "::1")
        || name.eq_ignore_ascii_case("localhost")
        || if name.contains(':') {
            name.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback())
        } else {
            name.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
        }
}

impl BrowserPolicy {
    /// The refusal for this request, if it must be refused.
    pub fn check(&self, headers: &HeaderMap, loopback_listener: bool) -> Option<Response> {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if loopback_listener {
            if let Some(h) = host {
                let name = host_name(h);
                if !is_loopback_host(name) && !self.allowed_hosts.iter().any(|a| a.eq_ignore_ascii_case(name)) {
                    tracing::warn!(host = %h, "refused a request to the loopback door with a foreign Host (DNS rebinding?)");
                    return Some(
                        (
                            StatusCode::MISDIRECTED_REQUEST,
                            "misdirected request: this loopback listener only answers to localhost, 127.0.0.1 or [::1]; add the name to allowed_hosts to accept it\n",
                        )
                            .into_response(),
                    );
                }
            } else if headers.get(header::HOST).is_some() {
                return Some((StatusCode::BAD_REQUEST, "bad Host header\n").into_response());
            }
        }
        let upgrade = headers
            .get(header::UPGRADE)
            .and_then(|u| u.to_str().ok())
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
        if upgrade {
            if let Some(origin) = headers.get(header::ORIGIN) {
                let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
                let same = host.is_some_and(|h| {
                    origin
                        .strip_prefix("http://")
                        .or_else(|| origin.strip_prefix("https://"))
                        .is_some_and(|o| o.eq_ignore_ascii_case(h))
                });
                if !same && !self.allowed_origins.iter().any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin)) {
                    tracing::warn!(origin, "refused a cross-origin WebSocket upgrade");
                    return Some(
                        (
                            StatusCode::FORBIDDEN,
                            "forbidden: cross-origin WebSocket; add the origin to allowed_origins to accept it\n",
                        )
                            .into_response(),
                    );
                }
            }
        }
        None
    }
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
        p.check(&headers(h), loopback).map(|r| r.status())
    }

    #[test]
    fn host_names_are_parsed() {
        assert_eq!(host_name("LocalHost:18789"), "LocalHost");
        assert!(is_loopback_host(host_name("LocalHost:18789")));
        assert_eq!(host_name("[::1]:18789"), "::1");
        assert_eq!(host_name("::1"), "::1");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        assert_eq!(host_name("evil.example."), "evil.example");
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
        let p = BrowserPolicy { allowed_origins: vec!["https://dash.example/".into()], ..Default::default() };
        assert_eq!(check(&p, ws("https://dash.example", "127.0.0.1:18789"), true), None);
        // The allow-list is exact.
        for bad in ["https://dash.example.evil", "http://dash.example", "https://dash.example:8443"] {
            assert_eq!(check(&p, ws(bad, "127.0.0.1:18789"), true), Some(StatusCode::FORBIDDEN), "{bad}");
        }
    }
}
