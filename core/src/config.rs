//! Configuration: the TOML file, and the per-provider settings it carries.
//!
//! The file is strict (`deny_unknown_fields`): a typo is an error naming the file,
//! line and key, never a silent default. Precedence (flag > env > file > default)
//! is applied by the CLI layer; this module only reads and validates the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

/// Extra patterns and ranges a user gives one provider (`[providers.NAME]`).
#[derive(Debug, Clone, Default)]
pub struct ProviderConfig {
    /// Extra interface name globs (a wg-quick interface called `office`).
    pub names: Vec<glob::Pattern>,
    /// Extra address ranges (a NetBird network with a custom range).
    pub cidrs: Vec<IpNet>,
}

/// The config file, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `bind = ["wireguard", "cidr:10.8.0.0/24"]`.
    pub bind: Option<Vec<String>>,
    /// `host = "10.8.0.1"` (with `bind = ["custom"]`).
    pub host: Option<String>,
    /// `port = 18789`.
    pub port: Option<u16>,
    /// `token_file = "/etc/meshgate/token"`.
    pub token_file: Option<PathBuf>,
    /// `token = "..."` (prefer `token_file`).
    pub token: Option<String>,
    /// `fallback = "loopback" | "fail"`.
    pub fallback: Option<crate::fallback::Fallback>,
    /// `loopback_companion = false` is `--no-loopback`.
    pub loopback_companion: Option<bool>,
    /// `follow = false` is `--no-follow`.
    pub follow: Option<bool>,
    /// The order `auto` walks the mesh providers in.
    pub auto: Option<Vec<String>>,
    /// `allowed_hosts = ["dev.local"]`: extra `Host` names the loopback listeners
    /// answer to (besides localhost, 127.x.y.z and `[::1]`).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// `allowed_origins = ["https://dash.example"]`: extra `Origin`s a WebSocket
    /// upgrade may come from (besides the origin it is sent to).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// `upstream = "http://127.0.0.1:3000"` or `"unix:/run/app.sock"`: forward
    /// every authorized request there (`--upstream`).
    pub upstream: Option<String>,
    /// `[limits]`: timeouts and sizes (each one also a `serve` flag).
    #[serde(default)]
    pub limits: LimitsConfig,
    /// `[headers]`: which client headers may reach the upstream.
    #[serde(default)]
    pub headers: HeadersConfig,
    /// `[providers.NAME]` tables.
    #[serde(default)]
    pub providers: BTreeMap<String, RawProviderConfig>,
}

/// `[limits]` as written; every value optional (the flags' defaults apply).
/// Durations are seconds (`0.5` or `5`); the CLI layer validates the values.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// `upstream_connect_timeout = 5`: seconds to open a connection to the upstream.
    pub upstream_connect_timeout: Option<f64>,
    /// `upstream_timeout = 60`: seconds to wait for the upstream's response headers.
    pub upstream_timeout: Option<f64>,
    /// `max_header_bytes = 65536`: the largest request head a client may send.
    pub max_header_bytes: Option<u64>,
    /// `idle_timeout = 60`: seconds a client connection may take to send a request
    /// head, idle keep-alive time included.
    pub idle_timeout: Option<f64>,
    /// `max_connections = 512`: client connections open at once (all listeners);
    /// more wait in the listen queue.
    pub max_connections: Option<u64>,
    /// `max_body_bytes = 2097152`: the largest request body meshgate's own
    /// routes accept (413 past it).
    pub max_body_bytes: Option<u64>,
    /// `upstream_max_body_bytes = 104857600`: the largest request body forwarded
    /// to the upstream (413 past it); unset: no cap.
    pub upstream_max_body_bytes: Option<u64>,
}

/// `[headers]` as written: client headers meshgate drops before forwarding
/// unless told to keep them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadersConfig {
    /// `keep_underscores = true`: forward header names with `_`
    /// (`X_Forwarded_For`), which CGI- and WSGI-style servers read as their
    /// dashed twins; dropped by default.
    pub keep_underscores: Option<bool>,
    /// `keep_client_ip_headers = true`: forward the client's `Forwarded`,
    /// `X-Real-IP`, `X-Client-IP`, `X-Forwarded-Port`, `X-Forwarded-Prefix` and
    /// `X-Forwarded-Ssl`; dropped by default.
    pub keep_client_ip_headers: Option<bool>,
}

/// `[providers.NAME]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProviderConfig {
    /// Extra interface name globs.
    #[serde(default)]
    pub names: Vec<String>,
    /// Extra CIDRs.
    #[serde(default)]
    pub cidrs: Vec<String>,
}

/// A config file that cannot be used (exit 78).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has an unknown key or a bad value.
    #[error("parse config file {path}: {detail}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, with line and column.
        detail: String,
    },
    /// A value that parses as TOML but means nothing here.
    #[error("config file {path}: {key} = {value:?}: {detail}")]
    Value {
        /// The file.
        path: PathBuf,
        /// The key (`providers.wireguard.cidrs`).
        key: String,
        /// The value.
        value: String,
        /// What was expected.
        detail: String,
    },
}

impl FileConfig {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::parse(&text, path)
    }

    /// Parses config text; `path` is only for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.into(), detail: e.to_string().trim_end().to_owned() })
    }

    /// Validates the `[providers.*]` tables against the registered names.
    pub fn provider_configs(
        &self,
        path: &Path,
        known: &[&str],
    ) -> Result<BTreeMap<String, ProviderConfig>, ConfigError> {
        let mut out = BTreeMap::new();
        for (name, raw) in &self.providers {
            if !known.contains(&name.as_str()) {
                return Err(ConfigError::Value {
                    path: path.into(),
                    key: format!("providers.{name}"),
                    value: name.clone(),
                    detail: format!("no such provider; known: {}", known.join(", ")),
                });
            }
            let bad = |key: &str, value: &str, detail: String| ConfigError::Value {
                path: path.into(),
                key: format!("providers.{name}.{key}"),
                value: value.into(),
                detail,
            };
            let names = raw
                .names
                .iter()
                .map(|n| {
                    if n.is_empty() {
                        return Err(bad(
                            "names",
                            n,
                            "an empty pattern; expected an interface name or glob such as office or wg*".into(),
                        ));
                    }
                    glob::Pattern::new(n).map_err(|e| {
                        bad("names", n, format!("{}; expected an interface name or glob such as office or wg*", e.msg))
                    })
                })
                .collect::<Result<_, _>>()?;
            let cidrs = raw
                .cidrs
                .iter()
                .map(|c| {
                    c.parse::<IpNet>()
                        .map(|n| n.trunc())
                        .map_err(|_| bad("cidrs", c, "expected NETWORK/PREFIX such as 10.8.0.0/24".into()))
                })
                .collect::<Result<_, _>>()?;
            out.insert(name.clone(), ProviderConfig { names, cidrs });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = FileConfig::parse("port = 1\nbnid = [\"x\"]\n", Path::new("/etc/m.toml")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("/etc/m.toml"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
        assert!(msg.contains("bnid"), "{msg}");
    }

    #[test]
    fn provider_tables_are_validated() {
        let c =
            FileConfig::parse("[providers.wireguard]\nnames=[\"office\"]\ncidrs=[\"10.8.0.7/24\"]\n", Path::new("c"))
                .unwrap();
        let p = c.provider_configs(Path::new("c"), &["wireguard"]).unwrap();
        assert!(p["wireguard"].names[0].matches("office"));
        assert_eq!(p["wireguard"].cidrs[0].to_string(), "10.8.0.0/24");
        let c = FileConfig::parse("[providers.wiregard]\n", Path::new("c")).unwrap();
        assert!(c
            .provider_configs(Path::new("c"), &["wireguard"])
            .unwrap_err()
            .to_string()
            .contains("providers.wiregard"));
        let c = FileConfig::parse("[providers.wireguard]\ncidrs=[\"10.8.0.0\"]\n", Path::new("c")).unwrap();
        let e = c.provider_configs(Path::new("c"), &["wireguard"]).unwrap_err().to_string();
        assert!(e.contains("providers.wireguard.cidrs") && e.contains("10.8.0.0"), "{e}");
        let e = FileConfig::parse("fallback = \"wide\"\n", Path::new("c")).unwrap_err().to_string();
        assert!(e.contains("wide") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn upstream_and_limits_parse_and_typos_are_refused() {
        let c = FileConfig::parse(
            "upstream = \"http://127.0.0.1:3000\"\n[limits]\nupstream_timeout = 5\nidle_timeout = 0.5\n",
            Path::new("c"),
        )
        .unwrap();
        assert_eq!(c.upstream.as_deref(), Some("http://127.0.0.1:3000"));
        assert_eq!(c.limits.upstream_timeout, Some(5.0));
        assert_eq!(c.limits.idle_timeout, Some(0.5));
        let c = FileConfig::parse(
            "[limits]\nmax_connections = 8\nmax_body_bytes = 1024\nupstream_max_body_bytes = 4096\n",
            Path::new("c"),
        )
        .unwrap();
        assert_eq!(
            (c.limits.max_connections, c.limits.max_body_bytes, c.limits.upstream_max_body_bytes),
            (Some(8), Some(1024), Some(4096))
        );
        let e = FileConfig::parse("[limits]\nidle_timeot = 1\n", Path::new("c")).unwrap_err().to_string();
        assert!(e.contains("idle_timeot") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn header_keys_parse_and_typos_are_refused() {
        let c = FileConfig::parse("", Path::new("c")).unwrap();
        assert_eq!(c.headers, HeadersConfig::default());
        let c =
            FileConfig::parse("[headers]\nkeep_underscores = true\nkeep_client_ip_headers = false\n", Path::new("c"))
                .unwrap();
        assert_eq!((c.headers.keep_underscores, c.headers.keep_client_ip_headers), (Some(true), Some(false)));
        let e = FileConfig::parse("[headers]\nkeep_underscore = true\n", Path::new("c")).unwrap_err().to_string();
        assert!(e.contains("keep_underscore") && e.contains("line 2"), "{e}");
        let e = FileConfig::parse("[headers]\nkeep_underscores = \"yes\"\n", Path::new("c")).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
