//! Configuration: the TOML file, and the per-provider settings it carries.
//!
//! The file is strict (`deny_unknown_fields`): a typo is an error naming the file,
//! line and key, never a silent default. Precedence (flag > env > file > default)
//! is applied by the CLI layer; this module only reads and validates the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::wgpeer::{AllowList, PeerNames, PublicKey};

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
    /// `bind = ["wireguard", "cidr:10.8.0.0/24"]`, or one string: `bind = "lan"`
    /// or `bind = "wireguard,lan"` (as `MESHGATE_BIND` is written).
    #[serde(default, deserialize_with = "selectors")]
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
    /// `[tls]`: HTTPS on the non-loopback listeners.
    #[serde(default)]
    pub tls: TlsConfig,
    /// `state_dir = "/var/lib/meshgate"`: where the self-signed key lives.
    pub state_dir: Option<PathBuf>,
    /// `log_level = "info"` (or a filter such as `"info,meshgate=debug"`):
    /// below `--log-level` and `RUST_LOG`; re-read on SIGHUP.
    pub log_level: Option<String>,
    /// `access_log = true` is `--access-log`; re-read on SIGHUP.
    pub access_log: Option<bool>,
    /// `[peers]` as written: `laptop = "<base64 public key>"`. Validated into
    /// [`peer_names`](Self::peer_names) by [`parse`](Self::parse).
    #[serde(default)]
    pub peers: BTreeMap<String, Spanned<String>>,
    /// `allow_peers = ["laptop", "<base64 key>"]` as written: peers let in
    /// without a token on WireGuard listeners. Validated into
    /// [`allow_list`](Self::allow_list) by [`parse`](Self::parse).
    #[serde(default)]
    pub allow_peers: Vec<Spanned<String>>,
    /// `[peers]`, validated (not a file key).
    #[serde(skip)]
    pub peer_names: PeerNames,
    /// `allow_peers`, resolved through `[peers]` (not a file key).
    #[serde(skip)]
    pub allow_list: AllowList,
    /// `[[service]]` tables as written, each with its span (for its line).
    /// Checked by [`parse`](Self::parse); see [`ServiceConfig`].
    #[serde(default, rename = "service")]
    pub services: Vec<Spanned<ServiceConfig>>,
    /// The line of every key written, by dotted name (`limits.max_connections`),
    /// so that a value refused after parsing is blamed on its line.
    #[serde(skip)]
    pub key_lines: BTreeMap<String, usize>,
}

/// What a `[[service]]` speaks towards its clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceProtocol {
    /// HTTP (the default): token, session or allowed peer; forwarded to an
    /// `http://` or `unix:` upstream.
    #[default]
    Http,
    /// Plain TCP, admitted by peer identity only, forwarded byte for byte.
    Tcp,
    /// TLS terminated here, then plain TCP to the upstream; admitted by peer
    /// identity only.
    Tls,
}

impl ServiceProtocol {
    /// `http`, `tcp` or `tls`, as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }
}

/// One `[[service]]` table as written: a port, an upstream and who may use it.
/// Unset keys take the top level's value (`bind`, `allow_peers`, `[tls]`,
/// `[limits]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// `name = "postgres"`: how logs, metrics and `explain` call it (unique).
    pub name: Spanned<String>,
    /// `port = 5432`: the port it listens on.
    pub port: Spanned<u16>,
    /// `protocol = "http" | "tcp" | "tls"` (default `http`).
    #[serde(default)]
    pub protocol: ServiceProtocol,
    /// `upstream = "tcp://127.0.0.1:5432"`, `"http://127.0.0.1:3000"` or
    /// `"unix:/run/app.sock"`.
    pub upstream: Spanned<String>,
    /// `bind = ["wireguard"]` or `bind = "wireguard,lan"`; unset: the
    /// top-level `bind`.
    #[serde(default, deserialize_with = "selectors")]
    pub bind: Option<Vec<String>>,
    /// `allow_peers = ["laptop"]` (names, keys, logins, tags), or `["*"]` for
    /// every peer of the mesh; unset: the top-level list.
    pub allow_peers: Option<Vec<Spanned<String>>>,
    /// `path = "/grafana"` (HTTP only): several HTTP services share a port,
    /// the longest prefix wins.
    pub path: Option<Spanned<String>>,
    /// `proxy_protocol = true` (TCP and TLS only): a PROXY protocol v2 header
    /// towards the upstream.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// `tls = true | false`: TLS on this service's mesh listeners (HTTP; a
    /// `tls` service always terminates TLS); unset: as the top level.
    pub tls: Option<bool>,
    /// `connect_timeout = 5`: seconds to open a connection to the upstream.
    pub connect_timeout: Option<f64>,
    /// `idle_timeout = 3600`: seconds a TCP connection may carry nothing
    /// either way before it is closed.
    pub idle_timeout: Option<f64>,
    /// `max_connections = 512`: this service's cap on open connections.
    pub max_connections: Option<u64>,
    /// The allow-list resolved through `[peers]`, when `allow_peers` is set
    /// and is not `["*"]` (not a file key).
    #[serde(skip)]
    pub allow_list: Option<AllowList>,
    /// `allow_peers = ["*"]`: every peer of the mesh (not a file key).
    #[serde(skip)]
    pub allow_any_peer: bool,
    /// The line its `[[service]]` table starts on (not a file key), for
    /// errors found after parsing.
    #[serde(skip)]
    pub line: usize,
    /// The line of each key written in the table (not a file key).
    #[serde(skip)]
    pub key_lines: BTreeMap<String, usize>,
}

impl ServiceConfig {
    /// The line `key` is written on in this table, else the table's own line:
    /// what an error about that key names.
    pub fn line_of(&self, key: &str) -> usize {
        self.key_lines.get(key).copied().unwrap_or(self.line)
    }
}

/// The keys of a table written between byte `start` and `end` of `text`,
/// each with its 1-based line (`key = ...` at the start of a line).
fn table_key_lines(text: &str, start: usize, end: usize) -> BTreeMap<String, usize> {
    let first = line_at(text, start);
    let body = text.get(start..end.min(text.len())).unwrap_or("");
    let mut out = BTreeMap::new();
    for (i, l) in body.lines().enumerate() {
        if let Some((k, _)) = l.split_once('=') {
            let k = k.trim().trim_matches('"');
            if !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                out.entry(k.to_owned()).or_insert(first + i);
            }
        }
    }
    out
}

/// Reads a list of selectors: a TOML array of strings, or one string holding
/// one selector or several separated by commas (`"wireguard,lan"`), as the
/// `MESHGATE_BIND` variable is written. Public so that every table with a
/// `bind` reads it the same way (`#[serde(default, deserialize_with = ...)]`).
pub fn selectors<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    struct Visit;
    impl<'de> serde::de::Visitor<'de> for Visit {
        type Value = Option<Vec<String>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a selector such as \"lan\", several separated by commas, or a list of them")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.split(',').map(|s| s.trim().to_owned()).collect()))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                out.push(s);
            }
            Ok(Some(out))
        }
    }
    d.deserialize_any(Visit)
}

/// The 1-based line of byte `offset` in `text`.
fn line_at(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count() + 1)
}

/// Every key of `text` with the line it is written on, by dotted name; the
/// first of an array of tables names the array. Empty when the text does not
/// parse (serde's error, which names its line, is reported instead).
fn key_lines(text: &str) -> BTreeMap<String, usize> {
    fn walk(t: &dyn toml_edit::TableLike, prefix: &str, text: &str, out: &mut BTreeMap<String, usize>) {
        for (k, item) in t.iter() {
            let name = if prefix.is_empty() { k.to_owned() } else { format!("{prefix}.{k}") };
            let span = t.get_key_value(k).and_then(|(key, _)| key.span()).or_else(|| item.span());
            if let Some(s) = span {
                out.entry(name.clone()).or_insert_with(|| line_at(text, s.start));
            }
            if let Some(sub) = item.as_table_like() {
                walk(sub, &name, text, out);
            } else if let Some(first) = item.as_array_of_tables().and_then(|a| a.iter().next()) {
                walk(first, &name, text, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Ok(doc) = toml_edit::ImDocument::parse(text) {
        walk(doc.as_table(), "", text, &mut out);
    }
    out
}

/// `[tls]` as written. Relative paths are relative to the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// `cert = "/etc/meshgate/cert.pem"`: a PEM certificate chain (with `key`).
    pub cert: Option<PathBuf>,
    /// `key = "/etc/meshgate/key.pem"`: its PEM private key.
    pub key: Option<PathBuf>,
    /// `self_signed = true`: a self-signed certificate over a kept key.
    #[serde(default)]
    pub self_signed: bool,
    /// `names = ["host.tailnet.ts.net"]`: DNS names a self-signed certificate names.
    #[serde(default)]
    pub names: Vec<String>,
    /// `loopback = true`: HTTPS on the loopback listeners too.
    #[serde(default)]
    pub loopback: bool,
    /// `mode = "internal"` (a local CA), `"tailscale"` (the node's `*.ts.net`
    /// certificate) or `"self-signed"`: `--tls`.
    pub mode: Option<TlsModeConfig>,
    /// `ca_ranges = ["10.8.0.0/24"]`: the IP ranges a new local CA may sign
    /// for, instead of the private, CGNAT and ULA ranges (loopback always).
    #[serde(default)]
    pub ca_ranges: Vec<ipnet::IpNet>,
    /// `ca_names = ["home.arpa"]`: DNS names (each with every name below it)
    /// a new local CA may sign for besides the `names`, without naming them.
    #[serde(default)]
    pub ca_names: Vec<String>,
}

/// `[tls] mode` as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsModeConfig {
    /// A self-signed certificate over a kept key.
    SelfSigned,
    /// Leaves from a local CA with name constraints.
    Internal,
    /// The node's certificate from tailscaled.
    Tailscale,
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
    /// `max_connections_per_address = 64`: connections one address may hold
    /// open on non-loopback listeners.
    pub max_connections_per_address: Option<u64>,
    /// `max_unauthenticated_per_address = 16`: of those, how many before a
    /// request on them passed with credentials.
    pub max_unauthenticated_per_address: Option<u64>,
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

/// What to do about a config file that exists but cannot be read.
fn read_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            "; make it readable by the user meshgate runs as (a systemd service with DynamicUser= needs it world-readable, e.g. `chmod 644` on the file and `chmod 755` on its directory; keep the token in a separate file)"
        }
        _ => "",
    }
}

/// A config file that cannot be used (exit 78).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("read config file {path}: {source}{hint}", hint = read_hint(source))]
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
    /// A value that parses as TOML but means nothing here, at a known line.
    #[error("config file {path}, line {line}: {key} = {value:?}: {detail}")]
    ValueAt {
        /// The file.
        path: PathBuf,
        /// The line (1-based).
        line: usize,
        /// The key (`peers.laptop`, `allow_peers`).
        key: String,
        /// The value.
        value: String,
        /// What is wrong and what is expected.
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
        let mut config: Self = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.into(), detail: e.to_string().trim_end().to_owned() })?;
        config.key_lines = key_lines(text);
        config.validate_peers(text, path)?;
        config.validate_services(text, path)?;
        Ok(config)
    }

    /// The line `key` (dotted: `limits.max_connections`) is written on, if
    /// it is in the file; a key not written there falls back to its table's.
    pub fn line_of(&self, key: &str) -> Option<usize> {
        let mut k = key;
        loop {
            if let Some(l) = self.key_lines.get(k) {
                return Some(*l);
            }
            k = k.rsplit_once('.')?.0;
        }
    }

    /// A value of this file that cannot be used (exit 78), naming the file
    /// and, when the key is written in it, the line.
    pub fn value_error(
        &self,
        path: &Path,
        key: &str,
        value: impl Into<String>,
        detail: impl Into<String>,
    ) -> ConfigError {
        let (path, key, value, detail) = (path.into(), key.to_owned(), value.into(), detail.into());
        match self.line_of(&key) {
            Some(line) => ConfigError::ValueAt { path, line, key, value, detail },
            None => ConfigError::Value { path, key, value, detail },
        }
    }

    /// Fills [`peer_names`](Self::peer_names) and [`allow_list`](Self::allow_list)
    /// from `peers` and `allow_peers`, whose spans point into `text`.
    fn validate_peers(&mut self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let line = |v: &Spanned<String>| line_at(text, v.span().start);
        let err = |key: String, v: &Spanned<String>, detail: String| ConfigError::ValueAt {
            path: path.into(),
            line: line(v),
            key,
            value: v.get_ref().clone(),
            detail,
        };
        // File order, so that "duplicate" blames the second one written.
        let mut entries: Vec<_> = self.peers.iter().collect();
        entries.sort_by_key(|(_, v)| v.span().start);
        let mut names = PeerNames::default();
        let mut first: BTreeMap<PublicKey, (&str, usize)> = BTreeMap::new();
        for (name, v) in entries {
            let key = format!("peers.{name}");
            let k = PublicKey::from_base64(v.get_ref()).map_err(|e| err(key.clone(), v, e.detail))?;
            if let Some((other, at)) = first.get(&k) {
                return Err(err(
                    key,
                    v,
                    format!("duplicate: the same key is named {other:?} on line {at}; give each peer one name"),
                ));
            }
            names.insert(name, k).map_err(|e| {
                let detail = match e {
                    crate::wgpeer::PeerNameError::BadName { .. } => format!(
                        "bad name {name:?}: use 1 to {} letters, digits, '.', '_', '-' or '@' (names are sent in a header)",
                        crate::wgpeer::MAX_NAME_LEN
                    ),
                    other => other.to_string(),
                };
                err(key.clone(), v, detail)
            })?;
            first.insert(k, (name, line(v)));
        }
        let mut allow = AllowList::default();
        for v in &self.allow_peers {
            let one = AllowList::resolve(&names, [v.get_ref().as_str()]).map_err(|e| {
                let detail = match e {
                    crate::wgpeer::PeerNameError::UnknownPeer { known, .. } => {
                        format!("not a [peers] name, a 44-character base64 WireGuard key, a tailnet login (user@example.com) nor a tag (tag:NAME); {known}")
                    }
                    other => other.to_string(),
                };
                err("allow_peers".into(), v, detail)
            })?;
            allow.extend(&one);
        }
        self.peer_names = names;
        self.allow_list = allow;
        Ok(())
    }

    /// Checks every `[[service]]` (names, upstreams, keys that fit the
    /// protocol, two services on one port) and resolves its `allow_peers`.
    fn validate_services(&mut self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let line_at = |at: usize| text.get(..at).map_or(0, |t| t.matches('\n').count() + 1);
        let err = |at: usize, key: String, value: String, detail: String| ConfigError::ValueAt {
            path: path.into(),
            line: line_at(at),
            key,
            value,
            detail,
        };
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for i in 0..self.services.len() {
            let table_at = self.services[i].span().start;
            let keys = table_key_lines(text, table_at, self.services[i].span().end);
            let s = self.services[i].get_ref().clone();
            // A key's own line, else the table's.
            let at_key = |k: &str| keys.get(k).copied().unwrap_or_else(|| line_at(table_at));
            let err_at = |k: &str, key: String, value: String, detail: String| ConfigError::ValueAt {
                path: path.into(),
                line: at_key(k),
                key,
                value,
                detail,
            };
            let name = s.name.get_ref().clone();
            let key = |k: &str| format!("service.{name}.{k}");
            let name_ok = !name.is_empty()
                && name.len() <= 63
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
            if !name_ok {
                return Err(err(
                    s.name.span().start,
                    "service.name".into(),
                    name,
                    "expected 1 to 63 letters, digits, '.', '_' or '-' (the name is a metric label)".into(),
                ));
            }
            if let Some(first) = seen.insert(name.clone(), line_at(table_at)) {
                return Err(err(
                    s.name.span().start,
                    "service.name".into(),
                    name,
                    format!("duplicate: a service of that name is on line {first}; give each service its own name"),
                ));
            }
            if *s.port.get_ref() == 0 {
                return Err(err(
                    s.port.span().start,
                    key("port"),
                    "0".into(),
                    "expected a port from 1 to 65535".into(),
                ));
            }
            let up = s.upstream.get_ref();
            let scheme_ok = match s.protocol {
                ServiceProtocol::Http => up.starts_with("http://") || up.starts_with("unix:"),
                ServiceProtocol::Tcp | ServiceProtocol::Tls => up.starts_with("tcp://") || up.starts_with("unix:"),
            };
            if !scheme_ok {
                let want = match s.protocol {
                    ServiceProtocol::Http => "http://HOST:PORT or unix:/PATH",
                    _ => "tcp://HOST:PORT or unix:/PATH",
                };
                return Err(err(
                    s.upstream.span().start,
                    key("upstream"),
                    up.clone(),
                    format!(
                        "{} {} service forwards to {want}",
                        if s.protocol == ServiceProtocol::Http { "an" } else { "a" },
                        s.protocol.as_str()
                    ),
                ));
            }
            if let Some(p) = &s.path {
                if s.protocol != ServiceProtocol::Http {
                    return Err(err(
                        p.span().start,
                        key("path"),
                        p.get_ref().clone(),
                        format!("path is for HTTP services; a {} service has a port of its own", s.protocol.as_str()),
                    ));
                }
                if !p.get_ref().starts_with('/') || p.get_ref().contains(['?', '#', ' ']) {
                    return Err(err(
                        p.span().start,
                        key("path"),
                        p.get_ref().clone(),
                        "expected a path prefix such as /grafana".into(),
                    ));
                }
            }
            if s.proxy_protocol && s.protocol == ServiceProtocol::Http {
                return Err(err_at(
                    "proxy_protocol",
                    key("proxy_protocol"),
                    "true".into(),
                    "proxy_protocol is for tcp and tls services; an HTTP upstream gets X-Forwarded-For and Meshgate-Peer-* headers".into(),
                ));
            }
            for (k, v) in [("connect_timeout", s.connect_timeout), ("idle_timeout", s.idle_timeout)] {
                if let Some(v) = v.filter(|v| !(v.is_finite() && *v > 0.0 && *v <= 31_536_000.0)) {
                    return Err(err_at(
                        k,
                        key(k),
                        v.to_string(),
                        "expected seconds, more than 0 (e.g. 5 or 0.5)".into(),
                    ));
                }
            }
            if s.max_connections == Some(0) {
                return Err(err_at(
                    "max_connections",
                    key("max_connections"),
                    "0".into(),
                    "expected at least 1".into(),
                ));
            }
            let mut allow_list = None;
            let mut allow_any = false;
            if let Some(entries) = &s.allow_peers {
                if entries.iter().any(|e| e.get_ref() == "*") {
                    if entries.len() > 1 {
                        let e = entries.iter().find(|e| e.get_ref() != "*").unwrap_or(&entries[0]);
                        return Err(err(
                            e.span().start,
                            key("allow_peers"),
                            e.get_ref().clone(),
                            "\"*\" admits every peer of the mesh and stands alone; list peers or write [\"*\"]".into(),
                        ));
                    }
                    allow_any = true;
                } else {
                    let mut list = AllowList::default();
                    for e in entries {
                        let one = AllowList::resolve(&self.peer_names, [e.get_ref().as_str()]).map_err(|x| {
                            let detail = match x {
                                crate::wgpeer::PeerNameError::UnknownPeer { known, .. } => format!(
                                    "not a [peers] name, a 44-character base64 WireGuard key, a tailnet login (user@example.com), a tag (tag:NAME) nor \"*\"; {known}"
                                ),
                                other => other.to_string(),
                            };
                            err(e.span().start, key("allow_peers"), e.get_ref().clone(), detail)
                        })?;
                        list.extend(&one);
                    }
                    allow_list = Some(list);
                }
            }
            let slot = self.services[i].get_mut();
            slot.allow_list = allow_list;
            slot.allow_any_peer = allow_any;
            slot.line = line_at(table_at);
            slot.key_lines = keys;
        }
        // Two services on one port and the same bind: one socket cannot be both,
        // unless both are HTTP with different paths.
        for (i, a) in self.services.iter().enumerate() {
            for b in &self.services[..i] {
                let (a, b) = (a.get_ref(), b.get_ref());
                if a.port.get_ref() != b.port.get_ref()
                    || a.bind.as_ref().unwrap_or(&Vec::new()) != b.bind.as_ref().unwrap_or(&Vec::new())
                {
                    continue;
                }
                let paths = (a.path.as_ref().map(|p| p.get_ref()), b.path.as_ref().map(|p| p.get_ref()));
                let shareable =
                    a.protocol == ServiceProtocol::Http && b.protocol == ServiceProtocol::Http && paths.0 != paths.1;
                if !shareable {
                    return Err(err(
                        a.port.span().start,
                        format!("service.{}.port", a.name.get_ref()),
                        a.port.get_ref().to_string(),
                        format!(
                            "services {:?} and {:?} both listen on port {} on the same bind; give one another port (only HTTP services with different paths share one)",
                            b.name.get_ref(),
                            a.name.get_ref(),
                            a.port.get_ref()
                        ),
                    ));
                }
            }
        }
        Ok(())
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
                return Err(self.value_error(
                    path,
                    &format!("providers.{name}"),
                    name.clone(),
                    format!("no such provider; known: {}", known.join(", ")),
                ));
            }
            let bad = |key: &str, value: &str, detail: String| {
                self.value_error(path, &format!("providers.{name}.{key}"), value, detail)
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
    fn an_unreadable_file_says_who_must_read_it() {
        let denied = ConfigError::Read {
            path: "/etc/meshgate/meshgate.toml".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        let text = denied.to_string();
        assert!(text.starts_with("read config file /etc/meshgate/meshgate.toml: permission denied"), "{text}");
        assert!(text.contains("DynamicUser=") && text.contains("chmod 644"), "{text}");
        let missing =
            ConfigError::Read { path: "/x.toml".into(), source: std::io::Error::from(std::io::ErrorKind::NotFound) };
        assert_eq!(missing.to_string(), "read config file /x.toml: entity not found");
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = FileConfig::parse("port = 1\nbnid = [\"x\"]\n", Path::new("/etc/m.toml")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("/etc/m.toml"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
        assert!(msg.contains("bnid"), "{msg}");
    }

    #[test]
    fn every_key_has_its_line_however_it_is_written() {
        let text = "port = 1\n\n[limits]\n# comment\nmax_connections = 0\n[tls]\ncert = \"c\"\n";
        let c = FileConfig::parse(text, Path::new("c")).unwrap();
        assert_eq!(c.line_of("limits.max_connections"), Some(5));
        assert_eq!(c.line_of("tls.cert"), Some(7));
        assert_eq!(c.line_of("tls.key"), Some(6), "a key not written falls back to its table");
        assert_eq!(c.line_of("upstream"), None);
        let c = FileConfig::parse("port = 1\nlimits.max_connections = 0\n", Path::new("c")).unwrap();
        assert_eq!(c.line_of("limits.max_connections"), Some(2));
        let c = FileConfig::parse("\nlimits = { idle_timeout = 1, max_connections = 0 }\n", Path::new("c")).unwrap();
        assert_eq!(c.line_of("limits.max_connections"), Some(2));
        let e = c.value_error(Path::new("/m.toml"), "limits.max_connections", "0", "expected 1 or more").to_string();
        assert_eq!(e, "config file /m.toml, line 2: limits.max_connections = \"0\": expected 1 or more");
    }

    #[test]
    fn bind_is_a_list_or_a_string() {
        let c = FileConfig::parse("bind = \"lan\"\n", Path::new("c")).unwrap();
        assert_eq!(c.bind, Some(vec!["lan".to_owned()]));
        let c = FileConfig::parse("bind = \"wireguard, lan\"\n", Path::new("c")).unwrap();
        assert_eq!(c.bind, Some(vec!["wireguard".to_owned(), "lan".to_owned()]));
        let c = FileConfig::parse("bind = [\"wireguard\", \"lan\"]\n", Path::new("c")).unwrap();
        assert_eq!(c.bind, Some(vec!["wireguard".to_owned(), "lan".to_owned()]));
        assert_eq!(FileConfig::parse("", Path::new("c")).unwrap().bind, None);
        let e = FileConfig::parse("port = 1\nbind = 7\n", Path::new("c")).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("a selector such as \"lan\""), "{e}");
        let e = FileConfig::parse("bind = [7]\n", Path::new("c")).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
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

    const LAPTOP: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
    const PHONE: &str = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=";
    const OTHER: &str = "mHTSkbvrIvHEdTJRgS6xCqCSw4p0jrEj+0E8BFl6iG8=";

    #[test]
    fn peers_and_allow_peers_parse() {
        let text = format!(
            "port = 1\nallow_peers = [\"laptop\", \"{OTHER}\"]\n[peers]\nlaptop = \"{LAPTOP}\"\n\"phone.ana\" = \"{PHONE}\"\n"
        );
        let c = FileConfig::parse(&text, Path::new("c")).unwrap();
        let laptop: PublicKey = LAPTOP.parse().unwrap();
        assert_eq!(c.peer_names.name_of(&laptop), Some("laptop"));
        assert_eq!(c.peer_names.key_of("phone.ana"), Some(PHONE.parse().unwrap()));
        assert!(c.allow_list.allows(&laptop));
        assert!(c.allow_list.allows(&OTHER.parse().unwrap()));
        assert!(!c.allow_list.allows(&PHONE.parse().unwrap()));
        assert_eq!(c.allow_list.len(), 2);
        let c = FileConfig::parse("port = 1\n", Path::new("c")).unwrap();
        assert!(c.peer_names.is_empty() && c.allow_list.is_empty());
    }

    /// Every peer error names the file, the line and the key.
    #[test]
    fn peer_errors_name_file_line_and_key() {
        let cases = [
            // Not 32 bytes of base64.
            (format!("[peers]\nlaptop = \"{LAPTOP}\"\nphone = \"c2hvcnQ=\"\n"), 3, "peers.phone", "5 bytes"),
            (format!("[peers]\n\nlaptop = \"{}\"\n", &LAPTOP[..43]), 3, "peers.laptop", "44 characters"),
            // The same key under two names: the second one written is blamed.
            (
                format!("[peers]\nzed = \"{LAPTOP}\"\nalpha = \"{LAPTOP}\"\n"),
                3,
                "peers.alpha",
                "duplicate: the same key is named \"zed\" on line 2",
            ),
            // A name that cannot go in a header, or that looks like a key.
            (format!("[peers]\n\"my laptop\" = \"{LAPTOP}\"\n"), 2, "peers.my laptop", "bad name"),
            // An allow-list entry that is neither.
            (
                format!("allow_peers = [\n  \"laptop\",\n  \"lapotp\",\n]\n[peers]\nlaptop = \"{LAPTOP}\"\n"),
                3,
                "allow_peers",
                "not a [peers] name, a 44-character base64 WireGuard key, a tailnet login (user@example.com) nor a tag (tag:NAME); names known: laptop",
            ),
            ("allow_peers = [\"laptop\"]\n".to_owned(), 1, "allow_peers", "no [peers] names are configured"),
        ];
        for (text, line, key, detail) in cases {
            let e = FileConfig::parse(&text, Path::new("/etc/m.toml")).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(&e, ConfigError::ValueAt { line: l, .. } if *l == line), "{text:?}: {msg}");
            assert!(msg.starts_with(&format!("config file /etc/m.toml, line {line}: {key} = ")), "{msg}");
            assert!(msg.contains(detail), "{msg}");
        }
        // A name written twice is toml's own error, with its line.
        let e = FileConfig::parse(&format!("[peers]\na = \"{LAPTOP}\"\na = \"{PHONE}\"\n"), Path::new("c"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("duplicate key"), "{e}");
        // Typos stay errors.
        let e = FileConfig::parse("allow_peer = []\n", Path::new("c")).unwrap_err().to_string();
        assert!(e.contains("allow_peer") && e.contains("line 1"), "{e}");
        let e = FileConfig::parse("peer_names = 1\n", Path::new("c")).unwrap_err().to_string();
        assert!(e.contains("peer_names"), "{e}");
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

    #[test]
    fn services_parse_with_their_defaults_and_allow_lists() {
        let text = format!(
            "bind = [\"wireguard\"]\n[peers]\nlaptop = \"{LAPTOP}\"\n\n[[service]]\nname = \"postgres\"\nport = 5432\nprotocol = \"tcp\"\nupstream = \"tcp://127.0.0.1:5432\"\nallow_peers = [\"laptop\"]\nproxy_protocol = true\n\n[[service]]\nname = \"mqtt\"\nport = 8883\nprotocol = \"tls\"\nupstream = \"tcp://127.0.0.1:1883\"\nallow_peers = [\"*\"]\n\n[[service]]\nname = \"grafana\"\nport = 80\npath = \"/grafana\"\nupstream = \"http://127.0.0.1:3000\"\n\n[[service]]\nname = \"dash\"\nport = 80\nupstream = \"unix:/run/dash.sock\"\n"
        );
        let c = FileConfig::parse(&text, Path::new("c")).unwrap();
        assert_eq!(c.services.len(), 4);
        let pg = c.services[0].get_ref();
        assert_eq!(
            (pg.name.get_ref().as_str(), *pg.port.get_ref(), pg.protocol),
            ("postgres", 5432, ServiceProtocol::Tcp)
        );
        assert!(pg.proxy_protocol && !pg.allow_any_peer);
        assert!(pg.allow_list.as_ref().unwrap().allows(&LAPTOP.parse().unwrap()));
        let mqtt = c.services[1].get_ref();
        assert!(mqtt.allow_any_peer && mqtt.allow_list.is_none() && mqtt.protocol == ServiceProtocol::Tls);
        let grafana = c.services[2].get_ref();
        assert_eq!(grafana.protocol, ServiceProtocol::Http);
        assert!(grafana.allow_peers.is_none() && grafana.bind.is_none());
    }

    /// Every service error names the file, the line and the service's key.
    #[test]
    fn service_errors_name_file_line_and_key() {
        let svc = |body: &str| format!("port = 1\n\n[[service]]\n{body}");
        let cases = [
            (svc("name = \"pg\"\nport = 5432\nprotocol = \"tcp\"\nupstream = \"http://127.0.0.1:5432\"\n"), 7, "service.pg.upstream", "a tcp service forwards to tcp://HOST:PORT"),
            (svc("name = \"web\"\nport = 80\nupstream = \"tcp://127.0.0.1:3000\"\n"), 6, "service.web.upstream", "an http"),
            (svc("name = \"pg\"\nport = 5432\nprotocol = \"tcp\"\npath = \"/x\"\nupstream = \"tcp://h:1\"\n"), 7, "service.pg.path", "path is for HTTP services"),
            (svc("name = \"pg sql\"\nport = 5432\nupstream = \"http://h:1\"\n"), 4, "service.name", "letters, digits"),
            (svc("name = \"pg\"\nport = 0\nupstream = \"http://h:1\"\n"), 5, "service.pg.port", "from 1 to 65535"),
            (svc("name = \"pg\"\nport = 5432\nprotocol = \"tcp\"\nupstream = \"tcp://h:1\"\nallow_peers = [\"lapotp\"]\n"), 8, "service.pg.allow_peers", "nor \"*\""),
            (svc("name = \"pg\"\nport = 5432\nprotocol = \"tcp\"\nupstream = \"tcp://h:1\"\nallow_peers = [\"*\", \"tag:x\"]\n"), 8, "service.pg.allow_peers", "stands alone"),
            (svc("name = \"a\"\nport = 22\nprotocol = \"tcp\"\nupstream = \"tcp://h:1\"\n[[service]]\nname = \"a\"\nport = 23\nprotocol = \"tcp\"\nupstream = \"tcp://h:1\"\n"), 9, "service.name", "duplicate: a service of that name is on line 3"),
            (svc("name = \"ssh\"\nport = 22\nprotocol = \"tcp\"\nupstream = \"tcp://h:1\"\n[[service]]\nname = \"web\"\nport = 22\nupstream = \"http://h:1\"\n"), 10, "service.web.port", "services \"ssh\" and \"web\" both listen on port 22"),
            (svc("name = \"a\"\nport = 80\nupstream = \"http://h:1\"\n[[service]]\nname = \"b\"\nport = 80\nupstream = \"http://h:2\"\n"), 9, "service.b.port", "only HTTP services with different paths"),
            // Keys checked as a whole: the key's own line, in a later table too.
            (svc("name = \"a\"\nport = 80\nupstream = \"http://h:1\"\n\n[[service]]\nname = \"b\"\nport = 81\nprotocol = \"tcp\"\nupstream = \"tcp://h:2\"\nconnect_timeout = -1\n"), 13, "service.b.connect_timeout", "more than 0"),
            (svc("name = \"pg\"\nport = 5432\nprotocol = \"tcp\"\nupstream = \"tcp://h:1\"\nmax_connections = 0\n"), 8, "service.pg.max_connections", "at least 1"),
            (svc("name = \"web\"\nport = 80\nupstream = \"http://h:1\"\n\nproxy_protocol = true\n"), 8, "service.web.proxy_protocol", "for tcp and tls"),
        ];
        for (text, line, key, detail) in cases {
            let e = FileConfig::parse(&text, Path::new("/etc/m.toml")).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(&e, ConfigError::ValueAt { line: l, .. } if *l == line), "{text:?}: {msg}");
            assert!(msg.starts_with(&format!("config file /etc/m.toml, line {line}: {key} = ")), "{msg}");
            assert!(msg.contains(detail), "{msg}");
        }
        // Two HTTP services on one port with different paths share it.
        let ok = svc("name = \"a\"\nport = 80\nupstream = \"http://h:1\"\n[[service]]\nname = \"b\"\nport = 80\npath = \"/b\"\nupstream = \"http://h:2\"\n");
        FileConfig::parse(&ok, Path::new("c")).unwrap();
        // Typos and unknown protocols are toml's errors, with their line.
        let e = FileConfig::parse(
            &svc("name = \"a\"\nport = 1\nupstream = \"http://h:1\"\nallow_peer = []\n"),
            Path::new("c"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("allow_peer") && e.contains("line 7"), "{e}");
        let e = FileConfig::parse(
            &svc("name = \"a\"\nport = 1\nprotocol = \"udp\"\nupstream = \"tcp://h:1\"\n"),
            Path::new("c"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("udp") && e.contains("line 6"), "{e}");
    }
}
