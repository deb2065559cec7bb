//! Where forwarded requests go ([`Upstream`]: `--upstream http://HOST:PORT` or
//! `unix:/PATH`) and the limits towards it ([`UpstreamLimits`], which carries
//! the [`HeaderRules`] too: what the client may tell the upstream).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use axum::http::uri::Authority;
use axum::http::Uri;

/// Default for [`UpstreamLimits::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for [`UpstreamLimits::response_timeout`].
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Where requests are forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Upstream {
    /// `http://HOST[:PORT]` (port 80 when omitted).
    Http {
        /// `HOST:PORT`.
        authority: Authority,
    },
    /// `unix:/PATH`: a unix domain socket.
    Unix {
        /// The socket's path.
        path: PathBuf,
    },
}

/// An `--upstream` value that cannot be used (exit 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upstream {value:?}: {detail}")]
pub struct UpstreamError {
    /// The value given.
    pub value: String,
    /// What was expected instead.
    pub detail: String,
}

impl Upstream {
    /// Parses `http://HOST[:PORT]`, `unix:/PATH` or `unix:///PATH`.
    pub fn parse(value: &str) -> Result<Self, UpstreamError> {
        let bad = |detail: &str| UpstreamError { value: value.to_owned(), detail: detail.to_owned() };
        let v = value.trim();
        if let Some(rest) = v.strip_prefix("unix:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if !path.starts_with('/') {
                return Err(bad("expected an absolute socket path such as unix:/run/app.sock"));
            }
            if !cfg!(unix) {
                return Err(bad("unix sockets are not available on this platform; use http://HOST:PORT"));
            }
            return Ok(Self::Unix { path: PathBuf::from(path) });
        }
        if !v.contains("://") {
            return Err(bad(&format!(
                "expected http://HOST:PORT or unix:/PATH (e.g. http://{} or unix:/run/app.sock)",
                if v.is_empty() { "127.0.0.1:3000" } else { v }
            )));
        }
        let uri: Uri =
            v.parse().map_err(|_| bad("not a URL; expected http://HOST:PORT such as http://127.0.0.1:3000"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad(
                    "meshgate speaks plain HTTP/1.1 to its upstream; point it at the service's plain-HTTP port on loopback or a unix socket",
                ))
            }
            _ => return Err(bad("expected an http:// URL or unix:/PATH")),
        }
        let Some(authority) = uri.authority() else {
            return Err(bad("no host; expected http://HOST:PORT such as http://127.0.0.1:3000"));
        };
        if authority.as_str().contains('@') {
            return Err(bad("credentials in the URL are not supported; give only http://HOST:PORT"));
        }
        if authority.host().is_empty() {
            return Err(bad("no host; expected http://HOST:PORT such as http://127.0.0.1:3000"));
        }
        if uri.path_and_query().is_some_and(|pq| pq.as_str() != "/" && !pq.as_str().is_empty()) {
            return Err(bad(
                "a path or query is not supported (requests keep their own path); give only http://HOST:PORT",
            ));
        }
        let authority = match authority.port_u16() {
            Some(_) => authority.clone(),
            None => format!("{}:80", authority.host()).parse().map_err(|_| bad("bad host"))?,
        };
        Ok(Self::Http { authority })
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http { authority } => write!(f, "http://{authority}"),
            Self::Unix { path } => write!(f, "unix:{}", path.display()),
        }
    }
}

impl std::str::FromStr for Upstream {
    type Err = UpstreamError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Timeouts towards the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpstreamLimits {
    /// Opening a connection (TCP connect or unix socket connect); past it: 504.
    pub connect_timeout: Duration,
    /// From sending the request to receiving the response headers; past it: 504.
    /// Response bodies are not cut off (downloads and event streams may run long).
    pub response_timeout: Duration,
    /// The largest request body forwarded; `None` (the default): no cap, the
    /// upstream decides. With a cap, a larger `Content-Length` is answered 413
    /// without contacting the upstream, and a chunked body that runs past it
    /// is cut off (the client gets 413 if the upstream has not answered yet).
    /// Bodies stream either way.
    pub max_body_bytes: Option<u64>,
    /// Which client headers that look like meshgate's own may pass (default:
    /// none of them).
    pub headers: HeaderRules,
}

/// Client headers an upstream could mistake for meshgate's word, and whether
/// they pass. The default is strict: both kinds are dropped before forwarding
/// (`[headers]` in the config file turns each back on).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeaderRules {
    /// Forward header names that contain `_` (`X_Forwarded_For`,
    /// `Content_Length`). CGI- and WSGI-style servers turn `-` into `_`, so
    /// they read such a name as its dashed twin, which meshgate set or checked;
    /// dropped by default, as nginx's `underscores_in_headers off` does.
    pub keep_underscores: bool,
    /// Forward `Forwarded`, `X-Real-IP`, `X-Client-IP`, `X-Forwarded-Port`,
    /// `X-Forwarded-Prefix` and `X-Forwarded-Ssl` as the client sent them.
    /// Dropped by default: meshgate sets none of them, so an upstream reading
    /// them would believe the client; `X-Forwarded-For` (the peer appended),
    /// `X-Forwarded-Proto` and `X-Forwarded-Host` are meshgate's.
    pub keep_client_ip_headers: bool,
}

impl HeaderRules {
    /// These rules, forwarding names with `_` or not.
    pub fn with_keep_underscores(mut self, on: bool) -> Self {
        self.keep_underscores = on;
        self
    }

    /// These rules, forwarding the client-IP look-alikes or not.
    pub fn with_keep_client_ip_headers(mut self, on: bool) -> Self {
        self.keep_client_ip_headers = on;
        self
    }
}

impl Default for UpstreamLimits {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            max_body_bytes: None,
            headers: HeaderRules::default(),
        }
    }
}

impl UpstreamLimits {
    /// These limits with another connect timeout.
    pub fn with_connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// These limits with another response-header timeout.
    pub fn with_response_timeout(mut self, d: Duration) -> Self {
        self.response_timeout = d;
        self
    }

    /// These limits with a cap on forwarded request bodies (`None`: no cap).
    pub fn with_max_body_bytes(mut self, bytes: Option<u64>) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// These limits with other [`HeaderRules`].
    pub fn with_header_rules(mut self, rules: HeaderRules) -> Self {
        self.headers = rules;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upstreams() {
        assert_eq!(Upstream::parse("http://127.0.0.1:3000").unwrap().to_string(), "http://127.0.0.1:3000");
        assert_eq!(Upstream::parse("http://localhost/").unwrap().to_string(), "http://localhost:80");
        assert_eq!(Upstream::parse("http://[::1]:8080").unwrap().to_string(), "http://[::1]:8080");
        assert_eq!(Upstream::parse("unix:/run/app.sock").unwrap().to_string(), "unix:/run/app.sock");
        assert_eq!(Upstream::parse("unix:///run/app.sock").unwrap().to_string(), "unix:/run/app.sock");
        for (bad, hint) in [
            ("127.0.0.1:3000", "http://127.0.0.1:3000"),
            ("https://127.0.0.1:3000", "plain HTTP"),
            ("http://127.0.0.1:3000/app", "path"),
            ("http://u:p@127.0.0.1:3000", "credentials"),
            ("unix:run/app.sock", "absolute"),
            ("ftp://x", "http://"),
            ("", "http://127.0.0.1:3000"),
        ] {
            let e = Upstream::parse(bad).unwrap_err().to_string();
            assert!(e.contains(hint), "{bad}: {e}");
        }
    }
}
