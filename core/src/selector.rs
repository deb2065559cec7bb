//! Bind selectors: what `--bind` accepts.
//!
//! A selector is a provider name, `auto`, `iface:GLOB`, `cidr:NETWORK`, an IP
//! literal, or `custom` (with `--host IP`). Parsing checks everything it can
//! without looking at the host; unknown names get a "did you mean".

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// One parsed `--bind` value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Selector {
    /// A registered provider, by name.
    Provider(String),
    /// The mesh providers in priority order; the first that matches wins.
    Auto,
    /// Every usable address of interfaces whose name matches.
    Iface(glob::Pattern),
    /// Every usable address inside a network.
    Cidr(IpNet),
    /// Exactly this address (link-local allowed, with its scope).
    Ip(IpLiteral),
}

/// An IP literal as the user wrote it, with an optional IPv6 scope (`%wg0` or `%3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpLiteral {
    /// The address.
    pub addr: IpAddr,
    /// The scope after `%`, if any.
    pub scope: Option<String>,
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Provider(n) => f.write_str(n),
            Self::Auto => f.write_str("auto"),
            Self::Iface(p) => write!(f, "iface:{}", p.as_str()),
            Self::Cidr(n) => write!(f, "cidr:{n}"),
            Self::Ip(ip) => match &ip.scope {
                Some(s) => write!(f, "{}%{s}", ip.addr),
                None => write!(f, "{}", ip.addr),
            },
        }
    }
}

/// A `--bind` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorError {
    /// Not a provider, keyword or literal.
    #[error("unknown bind selector `{value}`{}; valid selectors: {}, auto, custom (with --host IP), iface:NAME, cidr:NETWORK, or an IP address",
        suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default(),
        valid.join(", "))]
    Unknown {
        /// What the user wrote.
        value: String,
        /// The closest valid name, if one is close.
        suggestion: Option<String>,
        /// The registered provider names.
        valid: Vec<String>,
    },
    /// `cidr:` with a malformed network.
    #[error("bad bind selector `{value}`: {detail}; expected cidr:NETWORK/PREFIX such as cidr:10.8.0.0/24 or cidr:fd7a:115c:a1e0::/48")]
    BadCidr {
        /// What the user wrote.
        value: String,
        /// What was wrong.
        detail: String,
    },
    /// `iface:` with a malformed or empty pattern.
    #[error("bad bind selector `{value}`: {detail}; expected iface:NAME with an optional glob such as iface:wg0 or iface:wg*")]
    BadGlob {
        /// What the user wrote.
        value: String,
        /// What was wrong.
        detail: String,
    },
    /// Something that looks like an IP address but is not one.
    #[error(
        "bad bind selector `{value}`: not a valid IP address; expected e.g. 10.8.0.1, fd7a:115c:a1e0::1 or fe80::1%wg0"
    )]
    BadIp {
        /// What the user wrote.
        value: String,
    },
    /// `0.0.0.0` or `::` named as an address: the wildcard, which only `all` binds.
    #[error("bind selector `{value}` is the wildcard (every address of this host, public ones included); if that is really what you want, say `--bind all`; otherwise name the network: --bind wireguard, --bind tailnet, --bind cidr:10.8.0.0/24")]
    Wildcard {
        /// What the user wrote.
        value: String,
    },
    /// `custom` without `--host`.
    #[error("`--bind custom` needs `--host IP` (e.g. --bind custom --host 10.8.0.1)")]
    CustomWithoutHost,
    /// `--host` without `custom`.
    #[error("`--host {0}` only goes with `--bind custom`; or pass the address itself: --bind {0}")]
    HostWithoutCustom(String),
}

/// Parses one `--bind` value. `providers` are the registered names, for lookups
/// and suggestions; `host` is `--host`, used by `custom`.
pub fn parse_selector(value: &str, providers: &[&str], host: Option<&str>) -> Result<Selector, SelectorError> {
    let value = value.trim();
    if let Some(pat) = value.strip_prefix("iface:") {
        if pat.is_empty() {
            return Err(SelectorError::BadGlob { value: value.into(), detail: "the name is empty".into() });
        }
        return glob::Pattern::new(pat)
            .map(Selector::Iface)
            .map_err(|e| SelectorError::BadGlob { value: value.into(), detail: e.msg.to_string() });
    }
    if let Some(net) = value.strip_prefix("cidr:") {
        return net.parse::<IpNet>().map(|n| Selector::Cidr(n.trunc())).map_err(|_| SelectorError::BadCidr {
            value: value.into(),
            detail: if net.contains('/') {
                format!("`{net}` is not a network")
            } else {
                format!("`{net}` has no /PREFIX")
            },
        });
    }
    if value == "auto" {
        return Ok(Selector::Auto);
    }
    if value == "custom" {
        let host = host.ok_or(SelectorError::CustomWithoutHost)?;
        return parse_ip(host).map(Selector::Ip);
    }
    if providers.contains(&value) {
        return Ok(Selector::Provider(value.to_owned()));
    }
    if looks_like_ip(value) {
        return parse_ip(value).map(Selector::Ip);
    }
    let mut valid: Vec<String> = providers.iter().map(|s| s.to_string()).collect();
    let suggestion = providers
        .iter()
        .copied()
        .chain(["auto", "custom"])
        .map(|p| (strsim::jaro_winkler(value, p), p))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, p)| p.to_owned())
        .or_else(|| {
            // `iface`-shaped typos: `wg0` is an interface, not a mode.
            (value.chars().any(|c| c.is_ascii_digit())
                && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
            .then(|| format!("iface:{value}"))
        });
    valid.sort();
    Err(SelectorError::Unknown { value: value.into(), suggestion, valid })
}

/// Parses every `--bind` value (union), checking `custom`/`--host` pairing.
pub fn parse_selectors(
    values: &[String],
    providers: &[&str],
    host: Option<&str>,
) -> Result<Vec<Selector>, SelectorError> {
    if let Some(h) = host {
        if !values.iter().any(|v| v.trim() == "custom") {
            return Err(SelectorError::HostWithoutCustom(h.to_owned()));
        }
    }
    values.iter().map(|v| parse_selector(v, providers, host)).collect()
}

fn looks_like_ip(s: &str) -> bool {
    let addr = s.split_once('%').map_or(s, |(a, _)| a);
    addr.contains(':') || (addr.contains('.') && addr.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

fn parse_ip(s: &str) -> Result<IpLiteral, SelectorError> {
    let bad = || SelectorError::BadIp { value: s.into() };
    let unbracketed = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(s);
    let (addr, scope) = match unbracketed.split_once('%') {
        // A scope is an interface name or index: no spaces, slashes or another `%`.
        Some((a, scope))
            if !scope.is_empty()
                && !scope.chars().any(|c| c.is_whitespace() || c.is_control() || "/%[]".contains(c)) =>
        {
            (a, Some(scope.to_owned()))
        }
        Some(_) => return Err(bad()),
        None => (unbracketed, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    if addr.is_unspecified() {
        return Err(SelectorError::Wildcard { value: s.into() });
    }
    if scope.is_some() && !addr.is_ipv6() {
        return Err(bad());
    }
    Ok(IpLiteral { addr, scope })
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &[&str] = &["loopback", "lan", "all", "tailnet", "wireguard"];

    #[test]
    fn parses_every_form() {
        assert_eq!(parse_selector("wireguard", P, None), Ok(Selector::Provider("wireguard".into())));
        assert_eq!(parse_selector("auto", P, None), Ok(Selector::Auto));
        assert!(matches!(parse_selector("iface:wg*", P, None), Ok(Selector::Iface(p)) if p.matches("wg7")));
        assert_eq!(parse_selector("cidr:10.8.0.9/24", P, None), Ok(Selector::Cidr("10.8.0.0/24".parse().unwrap())));
        let ip = parse_selector("fe80::1%wg0", P, None).unwrap();
        assert_eq!(ip.to_string(), "fe80::1%wg0");
        assert_eq!(parse_selector("[fd7a:115c:a1e0::1]", P, None).unwrap().to_string(), "fd7a:115c:a1e0::1");
        assert_eq!(parse_selector("custom", P, Some("10.8.0.1")).unwrap().to_string(), "10.8.0.1");
    }

    #[test]
    fn rejects_with_a_fix() {
        let e = parse_selector("wiregaurd", P, None).unwrap_err();
        assert!(e.to_string().contains("did you mean `wireguard`?"), "{e}");
        assert!(e.to_string().contains("tailnet"), "{e}");
        let e = parse_selector("wg0", P, None).unwrap_err();
        assert!(e.to_string().contains("did you mean `iface:wg0`?"), "{e}");
        let e = parse_selector("cidr:10.8.0.0", P, None).unwrap_err();
        assert!(e.to_string().contains("`10.8.0.0` has no /PREFIX"), "{e}");
        let e = parse_selector("cidr:10.8.0.0/33", P, None).unwrap_err();
        assert!(e.to_string().contains("cidr:10.8.0.0/33"), "{e}");
        assert!(matches!(parse_selector("iface:[wg", P, None), Err(SelectorError::BadGlob { .. })));
        assert!(matches!(parse_selector("iface:", P, None), Err(SelectorError::BadGlob { .. })));
        assert!(matches!(parse_selector("10.8.0.300", P, None), Err(SelectorError::BadIp { .. })));
        assert!(matches!(parse_selector("10.8.0.1%wg0", P, None), Err(SelectorError::BadIp { .. })));
        // Found by fuzzing: a scope with a space printed back as something else.
        assert!(matches!(parse_selector("[fd1::1%gw ]", P, None), Err(SelectorError::BadIp { .. })));
        assert!(matches!(parse_selector("fe80::1%wg/0", P, None), Err(SelectorError::BadIp { .. })));
        assert_eq!(parse_selector("custom", P, None), Err(SelectorError::CustomWithoutHost));
        // Never widen: the wildcard is `all`, not an address.
        for w in ["0.0.0.0", "::", "[::]", "0:0::0"] {
            let e = parse_selector(w, P, None).unwrap_err();
            assert!(matches!(e, SelectorError::Wildcard { .. }) && e.to_string().contains("--bind all"), "{w}: {e}");
        }
        assert!(matches!(parse_selector("custom", P, Some("0.0.0.0")), Err(SelectorError::Wildcard { .. })));
        assert_eq!(
            parse_selectors(&["wireguard".into()], P, Some("10.0.0.1")),
            Err(SelectorError::HostWithoutCustom("10.0.0.1".into()))
        );
    }
}
