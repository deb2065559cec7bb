//! Browser attacks on the loopback door, and on ambient credentials.
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
//! similar names) from a request with the token. A request that only ambient
//! credentials let in (an allowed peer's identity, a session cookie: what a
//! browser attaches by itself, whichever page asked) gets
//! [`BrowserPolicy::check_ambient`]: `Host` must name the listener (421), and
//! the request must not be cross-site by `Origin` or Fetch Metadata (403).
//!
//! [`BrowserPolicy::check`] runs on every request to the loopback door: it
//! borrows from the headers and allocates nothing unless it refuses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::http::{header, HeaderMap, Method, StatusCode};
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
    /// The port, when the value names one.
    port: Option<u16>,
}

/// Parses a `Host` value (RFC 9110 7.2: `uri-host [ ":" port ]`), or `None`
/// when it is not one (see the module doc for what is accepted).
fn parse_authority(value: &str) -> Option<Authority<'_>> {
    let (authority, port) = if let Some(rest) = value.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = inside.parse().ok()?;
        (Authority { host: inside, loopback: ip.is_loopback(), port: None }, after)
    } else {
        let (host, after) = value.split_at(value.find(':').unwrap_or(value.len()));
        (parse_name(host)?, after)
    };
    let mut authority = authority;
    if !port.is_empty() {
        let digits = port.strip_prefix(':')?;
        // u16's parser alone would take `+80`.
        if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        authority.port = Some(digits.parse::<u16>().ok()?);
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
    Some(Authority { host: name, loopback, port: None })
}

/// True when `origin` is `scheme` + `host` (ASCII case-insensitive).
fn same_origin(origin: &str, scheme: &str, host: &str) -> bool {
    origin.len() == scheme.len() + host.len()
        && origin.get(..scheme.len()).is_some_and(|s| s.eq_ignore_ascii_case(scheme))
        && origin.get(scheme.len()..).is_some_and(|h| h.eq_ignore_ascii_case(host))
}

/// Why [`BrowserPolicy::guard`] refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum GuardRefusal {
    /// More than one `Host` line (400, any listener).
    RepeatedHost,
    /// A well-formed `Host` the loopback door does not answer to (421).
    LoopbackHost,
    /// A `Host` that is not `host[:port]` (400, loopback door).
    MalformedHost,
    /// A `Host` that is not text (400, loopback door).
    HostNotText,
    /// An upgrade whose `Origin` is neither the listener's nor allowed (403).
    CrossOriginUpgrade,
}

impl GuardRefusal {
    /// The answer.
    pub fn response(self) -> Response {
        let (status, text) = match self {
            Self::RepeatedHost => {
                (StatusCode::BAD_REQUEST, "bad request: more than one Host header; send exactly one\n")
            }
            Self::LoopbackHost => (
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected request: this loopback listener only answers to localhost, 127.0.0.1 or [::1]; add the name to allowed_hosts to accept it\n",
            ),
            Self::MalformedHost => (
                StatusCode::BAD_REQUEST,
                "bad request: the Host header is not a valid host[:port] (such as localhost:18789 or [::1]:18789)\n",
            ),
            Self::HostNotText => (StatusCode::BAD_REQUEST, "bad request: the Host header is not text\n"),
            Self::CrossOriginUpgrade => (
                StatusCode::FORBIDDEN,
                "forbidden: cross-origin WebSocket; add the origin to allowed_origins to accept it\n",
            ),
        };
        (status, text).into_response()
    }
}

impl BrowserPolicy {
    /// The refusal for this request, if it must be refused. `loopback_listener`:
    /// the request came in on a loopback listener (no token there); `tls`: the
    /// listener speaks TLS, so its origin is `https://` + `Host`.
    pub fn check(&self, headers: &HeaderMap, loopback_listener: bool, tls: bool) -> Option<Response> {
        self.guard(headers, loopback_listener, tls).map(GuardRefusal::response)
    }

    /// [`check`](Self::check), saying why rather than answering (the caller
    /// logs it, through the refusal log: a flood writes a few lines).
    pub fn guard(&self, headers: &HeaderMap, loopback_listener: bool, tls: bool) -> Option<GuardRefusal> {
        let mut hosts = headers.get_all(header::HOST).iter();
        let host = hosts.next();
        if hosts.next().is_some() {
            return Some(GuardRefusal::RepeatedHost);
        }
        let host = host.map(|h| h.to_str().map_err(|_| h));
        if loopback_listener {
            match host {
                None => {}
                Some(Ok(h)) => match parse_authority(h) {
                    Some(a) if a.loopback || self.allowed_hosts.iter().any(|n| n.eq_ignore_ascii_case(a.host)) => {}
                    Some(_) => return Some(GuardRefusal::LoopbackHost),
                    None => return Some(GuardRefusal::MalformedHost),
                },
                Some(Err(_)) => return Some(GuardRefusal::HostNotText),
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
                    return Some(GuardRefusal::CrossOriginUpgrade);
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

/// The names a listener answers to, besides its address literal, under
/// ambient credentials: the self-signed certificate's (`--tls-name`) and what
/// the mesh daemons report for this node (tailscaled's DNS name). Stored
/// lowercase, without a trailing dot. (`allowed_hosts` lives in the
/// [`BrowserPolicy`].)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostNames {
    /// The names the TLS certificate carries (`--tls-name`).
    pub tls: Vec<String>,
    /// The names the mesh daemons report for this node, each with its first
    /// label too (a MagicDNS short name resolves only through the tailnet's
    /// search domain).
    pub mesh: Vec<String>,
}

impl HostNames {
    /// `names` as [`HostNames::tls`] holds them.
    pub fn normalize<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut out: Vec<String> =
            names.into_iter().map(|n| n.trim_end_matches('.').to_ascii_lowercase()).filter(|n| !n.is_empty()).collect();
        out.sort();
        out.dedup();
        out
    }

    /// `names` (daemons' DNS names) as [`HostNames::mesh`] holds them: each,
    /// and its first label.
    pub fn mesh_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let full = Self::normalize(names);
        let short = full.iter().filter_map(|n| n.split_once('.').map(|(first, _)| first.to_owned()));
        let all: Vec<String> = full.iter().cloned().chain(short).collect();
        Self::normalize(all.iter().map(String::as_str))
    }

    /// True when `host` (without port, brackets or trailing dot) is one of them.
    fn contains(&self, host: &str) -> bool {
        self.tls.iter().chain(&self.mesh).any(|n| n.eq_ignore_ascii_case(host))
    }
}

/// Why a request that only ambient credentials (an allowed peer's identity,
/// a session cookie) let in was refused. See `docs/security.md`, "Ambient
/// credentials".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum AmbientRefusal {
    /// `Host` does not name this listener (DNS rebinding?): 421.
    ForeignHost,
    /// A cross-site or same-site request that is not a top-level `GET`
    /// navigation, or one whose `Origin` is not the listener's: 403.
    CrossSite,
    /// An upgrade (a WebSocket) whose `Origin` is not the listener's: 403.
    CrossOriginUpgrade,
}

impl AmbientRefusal {
    /// The answer: nothing is forwarded, and an HTTP/1.1 connection closes.
    /// An HTTP/2 connection stays open (its `Connection: close` is dropped):
    /// a browser may share it with the service's own tabs, and a page must
    /// not be able to end those by sending a refused request.
    pub fn response(self) -> Response {
        let (status, text) = match self {
            Self::ForeignHost => (
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected request: a request admitted by its peer identity or session must name this listener in Host (its address and port, a --tls-name, the tailnet name, or allowed_hosts); send the token to use another name\n",
            ),
            Self::CrossSite => (
                StatusCode::FORBIDDEN,
                "forbidden: a request from another site cannot use this peer's identity or session (Fetch Metadata); send the token\n",
            ),
            Self::CrossOriginUpgrade => (
                StatusCode::FORBIDDEN,
                "forbidden: a cross-origin upgrade cannot use this peer's identity or session; add the origin to allowed_origins, or send the token\n",
            ),
        };
        (status, [(header::CONNECTION, "close")], text).into_response()
    }
}

/// The one value of a header, `Err` when it is repeated, `Ok(None)` when absent.
fn single<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h [u8]>, ()> {
    let mut all = headers.get_all(name).iter();
    match (all.next(), all.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => Ok(Some(v.as_bytes())),
        _ => Err(()),
    }
}

impl BrowserPolicy {
    /// The checks a request gets when only ambient credentials let it in
    /// (an allowed peer's identity, a session cookie: what a browser attaches
    /// by itself, whichever page asked). `local` is the listener's address
    /// (`None`: unknown, only names pass), `tls` whether it speaks TLS,
    /// `names` what else it answers to. In order:
    ///
    /// 1. `Host` must name the listener: its address literal (any literal on
    ///    a wildcard listener) or one of `names` or `allowed_hosts`, with the
    ///    listener's port (or none, where that is the scheme's default).
    ///    Without `Host` (not a browser) this passes.
    /// 2. Every `Origin` must be the listener's own (`scheme://Host`); an
    ///    upgrade's may instead be on `allowed_origins`.
    /// 3. Fetch Metadata's resource isolation policy: a request whose
    ///    `Sec-Fetch-Site` is absent, `same-origin` or `none` passes; any other
    ///    (`cross-site`, `same-site`, repeated, unknown) passes only as a
    ///    top-level navigation (`Sec-Fetch-Mode: navigate`,
    ///    `Sec-Fetch-Dest: document`) by `GET` or `HEAD`.
    ///
    /// A bearer token needs none of this: no page can make a browser attach it.
    pub fn check_ambient(
        &self,
        method: &Method,
        headers: &HeaderMap,
        local: Option<SocketAddr>,
        tls: bool,
        names: &HostNames,
    ) -> Result<(), AmbientRefusal> {
        let host = match single(headers, header::HOST.as_str()) {
            Ok(None) => None,
            Ok(Some(h)) => {
                let h = std::str::from_utf8(h).map_err(|_| AmbientRefusal::ForeignHost)?;
                let a = parse_authority(h).ok_or(AmbientRefusal::ForeignHost)?;
                if !self.names_listener(&a, local, tls, names) {
                    return Err(AmbientRefusal::ForeignHost);
                }
                Some(h)
            }
            Err(()) => return Err(AmbientRefusal::ForeignHost),
        };
        let upgrade = headers.contains_key(header::UPGRADE);
        let scheme = if tls { "https://" } else { "http://" };
        for origin in headers.get_all(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
            if host.is_some_and(|h| same_origin(origin, scheme, h)) {
                continue;
            }
            if !upgrade {
                return Err(AmbientRefusal::CrossSite);
            }
            if !self.allowed_origins.iter().any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin)) {
                return Err(AmbientRefusal::CrossOriginUpgrade);
            }
        }
        let site = match single(headers, "sec-fetch-site") {
            Ok(None) => return Ok(()),
            Ok(Some(s)) => s,
            Err(()) => return Err(AmbientRefusal::CrossSite),
        };
        if site.eq_ignore_ascii_case(b"same-origin") || site.eq_ignore_ascii_case(b"none") {
            return Ok(());
        }
        // An upgrade whose Origin passed above came from an allowed origin.
        if upgrade && headers.contains_key(header::ORIGIN) {
            return Ok(());
        }
        let navigate = matches!(single(headers, "sec-fetch-mode"), Ok(Some(m)) if m.eq_ignore_ascii_case(b"navigate"));
        // A frame is a navigation too, but not a top-level one (clickjacking).
        let top_level = match single(headers, "sec-fetch-dest") {
            Ok(None) => true,
            Ok(Some(d)) => d.eq_ignore_ascii_case(b"document"),
            Err(()) => false,
        };
        if navigate && top_level && (*method == Method::GET || *method == Method::HEAD) {
            return Ok(());
        }
        Err(AmbientRefusal::CrossSite)
    }

    /// True when `a` names the listener at `local` (see [`check_ambient`](Self::check_ambient)).
    fn names_listener(&self, a: &Authority<'_>, local: Option<SocketAddr>, tls: bool, names: &HostNames) -> bool {
        if let Some(local) = local {
            let default = if tls { 443 } else { 80 };
            if a.port.unwrap_or(default) != local.port() {
                return false;
            }
        }
        if let Ok(ip) = a.host.parse::<IpAddr>() {
            return local.is_some_and(|l| l.ip().is_unspecified() || l.ip() == ip);
        }
        names.contains(a.host)
            || self.allowed_hosts.iter().any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(a.host))
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

    /// One row of the ambient-credential table: method, headers, listener, expected.
    fn ambient(
        p: &BrowserPolicy,
        method: &str,
        h: &[(&str, &str)],
        local: &str,
        tls: bool,
    ) -> Result<(), AmbientRefusal> {
        let names = HostNames {
            tls: HostNames::normalize(["gw.example"]),
            mesh: HostNames::mesh_names(["laptop-gw.tail1234.ts.net."]),
        };
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        p.check_ambient(&method, &headers(h), Some(local.parse().unwrap()), tls, &names)
    }

    #[test]
    fn ambient_credentials_need_a_host_that_names_the_listener() {
        use AmbientRefusal::ForeignHost;
        let p = BrowserPolicy { allowed_hosts: vec!["dash.lan".into()], ..Default::default() };
        let l = "10.77.0.1:18789";
        for (host, want) in [
            ("10.77.0.1:18789", Ok(())),
            ("gw.example:18789", Ok(())),
            ("GW.example.:18789", Ok(())),
            ("laptop-gw.tail1234.ts.net:18789", Ok(())),
            ("laptop-gw:18789", Ok(())),
            ("dash.lan:18789", Ok(())),
            // DNS rebinding: the attacker's name, re-pointed at the mesh address.
            ("attacker.example:18789", Err(ForeignHost)),
            ("gw.example.attacker.example:18789", Err(ForeignHost)),
            ("tail1234.ts.net:18789", Err(ForeignHost)),
            // Another address, another port, no port on a non-default one.
            ("10.77.0.2:18789", Err(ForeignHost)),
            ("10.77.0.1:18790", Err(ForeignHost)),
            ("10.77.0.1", Err(ForeignHost)),
            ("gw.example", Err(ForeignHost)),
            ("[fd77::1]:18789", Err(ForeignHost)),
            ("localhost:18789", Err(ForeignHost)),
            ("10.77.0.1:18789/x", Err(ForeignHost)),
        ] {
            assert_eq!(ambient(&p, "GET", &[("host", host)], l, false), want, "{host}");
        }
        // No Host: no browser sent it (HTTP/1.0 tools).
        assert_eq!(ambient(&p, "GET", &[], l, false), Ok(()));
        // IPv6, the scheme's default port, a wildcard listener.
        assert_eq!(ambient(&p, "GET", &[("host", "[fd77::1]:443")], "[fd77::1]:443", true), Ok(()));
        assert_eq!(ambient(&p, "GET", &[("host", "[fd77::1]")], "[fd77::1]:443", true), Ok(()));
        assert_eq!(ambient(&p, "GET", &[("host", "gw.example")], "10.77.0.1:80", false), Ok(()));
        assert_eq!(ambient(&p, "GET", &[("host", "gw.example")], "10.77.0.1:80", true), Err(ForeignHost));
        assert_eq!(ambient(&p, "GET", &[("host", "192.0.2.9:18789")], "0.0.0.0:18789", false), Ok(()));
        assert_eq!(ambient(&p, "GET", &[("host", "evil.example:18789")], "0.0.0.0:18789", false), Err(ForeignHost));
        // An unknown listener: names only.
        let names = HostNames { tls: vec!["gw.example".into()], mesh: vec![] };
        let h = headers(&[("host", "10.77.0.1:18789")]);
        assert_eq!(p.check_ambient(&Method::GET, &h, None, false, &names), Err(ForeignHost));
        let h = headers(&[("host", "gw.example:1")]);
        assert_eq!(p.check_ambient(&Method::GET, &h, None, false, &names), Ok(()));
    }

    #[test]
    fn ambient_credentials_refuse_cross_site_requests_as_fetch_metadata_says() {
        use AmbientRefusal::{CrossOriginUpgrade, CrossSite};
        let p = BrowserPolicy { allowed_origins: vec!["https://dash.example".into()], ..Default::default() };
        let l = "10.77.0.1:18789";
        let host = ("host", "10.77.0.1:18789");
        let own = ("origin", "http://10.77.0.1:18789");
        let evil = ("origin", "http://evil.example");
        let site = |v| ("sec-fetch-site", v);
        let mode = |v| ("sec-fetch-mode", v);
        let dest = |v| ("sec-fetch-dest", v);
        type Row<'a> = (&'a str, &'a [(&'a str, &'a str)], Result<(), AmbientRefusal>);
        let rows: &[Row<'_>] = &[
            // curl and scripts: neither header.
            ("GET", &[host], Ok(())),
            ("POST", &[host], Ok(())),
            ("DELETE", &[host], Ok(())),
            // The service's own page.
            ("POST", &[host, own, site("same-origin"), mode("cors"), dest("empty")], Ok(())),
            ("POST", &[host, own, site("same-origin"), mode("navigate"), dest("document")], Ok(())),
            ("GET", &[host, site("same-origin"), mode("no-cors"), dest("image")], Ok(())),
            // Typed in the address bar, a bookmark.
            ("GET", &[host, site("none"), mode("navigate"), dest("document")], Ok(())),
            // A link from another site: a top-level GET navigation.
            ("GET", &[host, site("cross-site"), mode("navigate"), dest("document")], Ok(())),
            ("HEAD", &[host, site("same-site"), mode("navigate"), dest("document")], Ok(())),
            // An auto-submitted form from another site: a top-level POST navigation.
            ("POST", &[host, evil, site("cross-site"), mode("navigate"), dest("document")], Err(CrossSite)),
            // The same, from a sandboxed frame or after a cross-site redirect.
            (
                "POST",
                &[host, ("origin", "null"), site("cross-site"), mode("navigate"), dest("document")],
                Err(CrossSite),
            ),
            // A form into a hidden iframe, a frame at all.
            ("POST", &[host, evil, site("cross-site"), mode("navigate"), dest("iframe")], Err(CrossSite)),
            ("GET", &[host, site("cross-site"), mode("navigate"), dest("iframe")], Err(CrossSite)),
            // no-cors fetch, img, script from another site, or another port of this host.
            ("POST", &[host, evil, site("cross-site"), mode("no-cors"), dest("empty")], Err(CrossSite)),
            ("GET", &[host, site("cross-site"), mode("no-cors"), dest("image")], Err(CrossSite)),
            ("GET", &[host, site("same-site"), mode("no-cors"), dest("script")], Err(CrossSite)),
            ("GET", &[host, ("origin", "http://10.77.0.1:3000"), site("same-site"), mode("cors")], Err(CrossSite)),
            // An Origin not the listener's, without Fetch Metadata (older browsers).
            ("POST", &[host, evil], Err(CrossSite)),
            ("GET", &[host, evil], Err(CrossSite)),
            ("POST", &[host, ("origin", "https://10.77.0.1:18789")], Err(CrossSite)),
            // Unknown or repeated values are cross-site.
            ("GET", &[host, site("cross-origin"), mode("no-cors")], Err(CrossSite)),
            // WebSockets: own origin, an allowed one, another.
            ("GET", &[host, own, ("upgrade", "websocket"), site("same-origin"), mode("websocket")], Ok(())),
            ("GET", &[host, ("upgrade", "websocket")], Ok(())),
            (
                "GET",
                &[
                    host,
                    ("origin", "https://dash.example"),
                    ("upgrade", "websocket"),
                    site("cross-site"),
                    mode("websocket"),
                ],
                Ok(()),
            ),
            (
                "GET",
                &[host, evil, ("upgrade", "websocket"), site("cross-site"), mode("websocket")],
                Err(CrossOriginUpgrade),
            ),
            ("GET", &[host, ("upgrade", "websocket"), site("cross-site"), mode("websocket")], Err(CrossSite)),
            // An allowed origin is for upgrades only.
            ("POST", &[host, ("origin", "https://dash.example"), site("cross-site"), mode("cors")], Err(CrossSite)),
        ];
        for (method, h, want) in rows {
            assert_eq!(ambient(&p, method, h, l, false), *want, "{method} {h:?}");
        }
        let mut h = headers(&[host, ("sec-fetch-mode", "navigate"), ("sec-fetch-dest", "document")]);
        h.append("sec-fetch-site", "none".parse().unwrap());
        h.append("sec-fetch-site", "cross-site".parse().unwrap());
        assert_eq!(
            p.check_ambient(&Method::POST, &h, Some(l.parse().unwrap()), false, &HostNames::default()),
            Err(CrossSite)
        );
        // Over TLS the own origin is https://.
        let h = [("host", "gw.example:18789"), ("origin", "https://gw.example:18789"), site("same-origin")];
        assert_eq!(ambient(&p, "POST", &h, l, true), Ok(()));
        let h = [("host", "gw.example:18789"), ("origin", "http://gw.example:18789"), site("same-site")];
        assert_eq!(ambient(&p, "POST", &h, l, true), Err(CrossSite));
    }

    #[test]
    fn mesh_names_are_normalised_with_their_short_name() {
        assert_eq!(
            HostNames::mesh_names(["Laptop-GW.tail1234.ts.net.", "", "laptop-gw.tail1234.ts.net"]),
            vec!["laptop-gw".to_owned(), "laptop-gw.tail1234.ts.net".to_owned()]
        );
    }
}
