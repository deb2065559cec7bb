//! Settings after precedence (flag > environment > config file > default):
//! the bind settings shared by `serve` and `explain`, and `serve`'s token,
//! upstream, limits and browser policy. Every bad value is refused here, with
//! the file and key it came from.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meshgate_core::config::{ConfigError, FileConfig, ProviderConfig, TlsModeConfig};
use meshgate_core::provider::Role;
use meshgate_core::registry::Registry;
use meshgate_core::resolver::{Fallback, ResolveOptions};
use meshgate_core::selector::{parse_selectors, Selector, SelectorError};
use meshgate_core::wgpeer::AllowList;
use std::sync::Arc;

use crate::tls::{
    default_state_dir, leaf_lifetime_from, running_as_root, CertResolver, Internal, LocalCa, Reloader, SelfSigned,
    TailnetCert, TlsAcceptor, LEAF_LIFETIME_ENV,
};

use super::args::{BindArgs, ServeArgs, TlsArgs, TlsMode};
use super::error::CliError;
use super::values::{body_bytes, connections, header_bytes, seconds};
use crate::gateway::identity::PeerRules;
use crate::gateway::limits::{DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS};
use crate::gateway::proxy::{HeaderRules, DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT};
use crate::gateway::{
    BrowserPolicy, Https, ServerLimits, ServiceError, Token, TokenError, Upstream, UpstreamLimits,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HEADER_BYTES, DEFAULT_PORT,
};

/// The registry of every linked provider (the built-ins are linked first).
pub fn registry() -> Result<&'static Registry, CliError> {
    crate::builtin::link();
    Ok(Registry::global()?)
}

/// Where the config file is looked for without `--config`: root's
/// `/etc/meshgate/meshgate.toml`, another user's
/// `$XDG_CONFIG_HOME/meshgate/meshgate.toml` (`~/.config/...` without it).
/// Used only when the file exists.
pub(crate) fn default_config_path(root: bool, env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    if root {
        return Some(PathBuf::from("/etc/meshgate/meshgate.toml"));
    }
    let base = env("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| env("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("meshgate").join("meshgate.toml"))
}

/// The line that says which config file was read (`serve` logs it first,
/// `explain` prints it first): after `dpkg -i`, /etc/meshgate/meshgate.toml
/// is read without a `--config`.
pub(crate) fn config_line(config: Option<&Path>) -> String {
    match config {
        Some(p) => format!("config file: {}", p.display()),
        None => "config file: none".to_owned(),
    }
}

/// The variable that sets how many connection threads serve (tokio's own name
/// for its worker count, which the benches and containers already set).
pub(super) const WORKERS_ENV: &str = "TOKIO_WORKER_THREADS";

/// Each thread is a runtime with three file descriptors of its own; more
/// threads than this is a typo, not a plan.
const MAX_WORKERS: usize = 1024;

/// How many connection threads: `TOKIO_WORKER_THREADS` when set, else one per
/// CPU this process may run on (its affinity and cgroup quota counted).
pub(super) fn worker_threads(set: Option<&std::ffi::OsStr>) -> Result<NonZeroUsize, CliError> {
    let Some(raw) = set else {
        return Ok(std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN));
    };
    raw.to_str().and_then(|s| s.trim().parse::<NonZeroUsize>().ok()).filter(|n| n.get() <= MAX_WORKERS).ok_or_else(
        || {
            CliError::BadFlag(format!(
                "{WORKERS_ENV}={}: not a number of threads; set a whole number from 1 to {MAX_WORKERS}, or unset it \
                 for one per CPU",
                raw.to_string_lossy()
            ))
        },
    )
}

/// Bind settings after precedence (flag > env > file > default) is applied.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The parsed selectors.
    pub selectors: Vec<Selector>,
    /// Resolver options (port, fallback, companion, auto order, provider configs).
    pub resolve: ResolveOptions,
    /// The config file, if one was read.
    pub file: Option<(PathBuf, FileConfig)>,
}

/// Applies precedence and validates every value.
pub fn settings(args: &BindArgs, registry: &Registry) -> Result<Settings, CliError> {
    let path = args
        .config
        .clone()
        .or_else(|| default_config_path(running_as_root(), |k| std::env::var_os(k)).filter(|p| p.is_file()));
    let file = match &path {
        Some(p) => Some((p.clone(), FileConfig::load(p)?)),
        None => None,
    };
    let f = file.as_ref().map(|(_, f)| f.clone()).unwrap_or_default();
    let names = registry.names();
    let env_bind = super::env::var("MESHGATE_BIND").filter(|v| !v.trim().is_empty());
    let host = args.host.clone().or(f.host.clone());
    let parse = |raw: &[String]| parse_selectors(raw, &names, host.as_deref()).map_err(|e| with_case_hint(e, &names));
    let selectors = if !args.bind.is_empty() {
        parse(&args.bind)?
    } else if let Some(v) = &env_bind {
        let raw: Vec<String> = v.split(',').map(|s| s.trim().to_owned()).collect();
        parse(&raw).map_err(|e| CliError::BadFlag(format!("MESHGATE_BIND={v:?}: {e}")))?
    } else if let (Some(raw), Some((path, _))) = (&f.bind, &file) {
        parse(raw).map_err(|e| config_bind_error(path, &f, raw, &e))?
    } else {
        parse(&["loopback".to_owned()])?
    };
    let mut provider_configs: BTreeMap<String, ProviderConfig> = BTreeMap::new();
    let mut auto_order = None;
    if let Some((path, f)) = &file {
        provider_configs = f.provider_configs(path, &names)?;
        if let Some(order) = &f.auto {
            for n in order {
                let ok = registry.get(n).is_some_and(|e| e.info().role == Role::Mesh);
                if !ok {
                    let meshes: Vec<_> = registry
                        .entries()
                        .iter()
                        .filter(|e| e.info().role == Role::Mesh)
                        .map(|e| e.info().name)
                        .collect();
                    return Err(f
                        .value_error(
                            path,
                            "auto",
                            n.clone(),
                            format!("not a mesh provider; auto can walk: {}", meshes.join(", ")),
                        )
                        .into());
                }
            }
            auto_order = Some(order.clone());
        }
    }
    Ok(Settings {
        selectors,
        resolve: ResolveOptions {
            port: args.port.or(f.port).unwrap_or(DEFAULT_PORT),
            fallback: args.fallback.map(Fallback::from).or(f.fallback).unwrap_or_default(),
            loopback_companion: !args.no_loopback && f.loopback_companion.unwrap_or(true),
            auto_order,
            provider_configs,
        },
        file,
    })
}

/// An unknown selector that differs from a valid one only by case gets the
/// "did you mean" the edit distance does not give (`LAN`: `lan`).
fn with_case_hint(mut e: SelectorError, names: &[&str]) -> SelectorError {
    if let SelectorError::Unknown { value, suggestion, .. } = &mut e {
        if suggestion.is_none() {
            let lower = value.trim().to_ascii_lowercase();
            let keywords = ["auto", "custom"];
            if names.contains(&lower.as_str()) || keywords.contains(&lower.as_str()) {
                *suggestion = Some(lower);
            }
        }
    }
    e
}

/// A bad selector in the config file's `bind`: exit 78, naming the file and
/// the line.
fn config_bind_error(path: &Path, f: &FileConfig, raw: &[String], e: &SelectorError) -> CliError {
    f.value_error(path, "bind", raw.join(","), e.to_string()).into()
}

/// Tokens shorter than this are accepted with a warning: guessable.
pub(super) const SHORT_TOKEN: usize = 16;

/// The token, by precedence: `--token-file` > `MESHGATE_TOKEN` > config
/// `token_file` > config `token`.
pub fn load_token(
    args: &ServeArgs,
    env_token: Option<String>,
    file: Option<(&Path, &FileConfig)>,
) -> Result<Option<Token>, CliError> {
    let refused = |e: TokenError| CliError::Refused(e.to_string());
    let from_file = |p: &std::path::Path| -> Result<Option<Token>, CliError> {
        check_token_path(p)?;
        let (t, warning) = Token::from_file(p).map_err(refused)?;
        if let Some(w) = warning {
            tracing::warn!("{w}");
        }
        Ok(Some(t))
    };
    if let Some(p) = &args.token_file {
        return from_file(p);
    }
    if let Some(v) = env_token {
        return Token::new(&v, "MESHGATE_TOKEN").map(Some).map_err(refused);
    }
    // From the config file: the error names the file and the line too.
    if let Some((path, f)) = file {
        if let Some(p) = f.token_file.as_deref() {
            // Relative to the config file, like every path in it.
            let p = relative_to(path, p);
            return from_file(&p)
                .map_err(|e| f.value_error(path, "token_file", p.display().to_string(), e.to_string()).into());
        }
        if let Some(v) = f.token.as_deref() {
            return Token::new(v, "the config file's `token`")
                .map(Some)
                .map_err(|e| f.value_error(path, "token", "(hidden)", e.to_string()).into());
        }
    }
    Ok(None)
}

/// The file the token is read from, by the precedence of [`load_token`]
/// (none when it comes from `MESHGATE_TOKEN` or the config's `token`).
pub(crate) fn token_path(args: &ServeArgs, env_token: bool, file: Option<(&Path, &FileConfig)>) -> Option<PathBuf> {
    if let Some(p) = &args.token_file {
        return Some(p.clone());
    }
    if env_token {
        return None;
    }
    file.and_then(|(path, f)| f.token_file.as_deref().map(|p| relative_to(path, p)))
}

/// The token, with a warning when it is short enough to guess.
pub fn load_token_warned(
    args: &ServeArgs,
    env_token: Option<String>,
    file: Option<(&Path, &FileConfig)>,
) -> Result<Option<Token>, CliError> {
    let token = load_token(args, env_token, file)?;
    if let Some(t) = &token {
        if t.expose().len() < SHORT_TOKEN {
            tracing::warn!("{}", short_token_warning(t.expose().len()));
        }
    }
    Ok(token)
}

/// The warning for a token of `len` characters (fewer than [`SHORT_TOKEN`]).
fn short_token_warning(len: usize) -> String {
    let unit = if len == 1 { "character" } else { "characters" };
    format!(
        "the token is {len} {unit} long, short enough to guess; use at least {SHORT_TOKEN} random ones (e.g. `head -c 32 /dev/urandom | base64`)"
    )
}

/// `p` as read from the config file at `config`: a relative path is relative
/// to the file's directory.
pub(crate) fn relative_to(config: &Path, p: &Path) -> PathBuf {
    match config.parent() {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p.to_path_buf(),
    }
}

/// A token path that exists but is no regular file (a directory, a device)
/// gets its own message: the "create it with" advice would overwrite it.
fn check_token_path(p: &Path) -> Result<(), CliError> {
    match std::fs::metadata(p) {
        Ok(m) if !m.is_file() => Err(CliError::Refused(format!(
            "read token file {}: not a regular file ({}); name the file that holds the token, not {}",
            p.display(),
            if m.is_dir() { "a directory" } else { "a special file" },
            if m.is_dir() { "its directory" } else { "this path" }
        ))),
        _ => Ok(()),
    }
}

/// What `serve` forwards to and the limits it applies, after precedence
/// (flag > environment > config file > default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeOptions {
    /// `--upstream`.
    pub upstream: Option<Upstream>,
    /// `--upstream-connect-timeout`, `--upstream-timeout`, `--upstream-max-body-bytes`,
    /// and the config file's `[headers]` (no flags).
    pub upstream_limits: UpstreamLimits,
    /// `--max-header-bytes`, `--idle-timeout`, `--max-connections`, `--max-body-bytes`.
    pub server_limits: ServerLimits,
}

/// Applies precedence to the upstream and the limits; a bad config value is
/// exit 78 naming the file and the key.
pub fn serve_options(args: &ServeArgs, file: Option<(&Path, &FileConfig)>) -> Result<ServeOptions, CliError> {
    let mut out = ServeOptions::default();
    let (path, f) = match file {
        Some((p, f)) => (Some(p), Some(f)),
        None => (None, None),
    };
    let bad = |path: &Path, key: &str, value: String, detail: String| -> CliError {
        match f {
            Some(f) => f.value_error(path, key, value, detail).into(),
            None => ConfigError::Value { path: path.into(), key: key.into(), value, detail }.into(),
        }
    };
    out.upstream = match (&args.upstream, f.and_then(|f| f.upstream.as_deref()), path) {
        (Some(u), _, _) => Some(u.clone()),
        (None, Some(v), Some(p)) => Some(Upstream::parse(v).map_err(|e| bad(p, "upstream", v.into(), e.detail))?),
        _ => None,
    };
    let limits = f.map(|f| f.limits.clone()).unwrap_or_default();
    let secs = |flag: Option<Duration>, key: &str, v: Option<f64>, default: Duration| -> Result<Duration, CliError> {
        match (flag, v, path) {
            (Some(d), _, _) => Ok(d),
            (None, Some(v), Some(p)) => seconds(v).map_err(|d| bad(p, &format!("limits.{key}"), v.to_string(), d)),
            _ => Ok(default),
        }
    };
    out.upstream_limits = UpstreamLimits::default()
        .with_connect_timeout(secs(
            args.upstream_connect_timeout,
            "upstream_connect_timeout",
            limits.upstream_connect_timeout,
            DEFAULT_CONNECT_TIMEOUT,
        )?)
        .with_response_timeout(secs(
            args.upstream_timeout,
            "upstream_timeout",
            limits.upstream_timeout,
            DEFAULT_RESPONSE_TIMEOUT,
        )?);
    let header = match (args.max_header_bytes, limits.max_header_bytes, path) {
        (Some(b), _, _) => b,
        (None, Some(v), Some(p)) => header_bytes(v).map_err(|d| bad(p, "limits.max_header_bytes", v.to_string(), d))?,
        _ => DEFAULT_MAX_HEADER_BYTES,
    };
    let idle = secs(args.idle_timeout, "idle_timeout", limits.idle_timeout, DEFAULT_IDLE_TIMEOUT)?;
    let max_connections = match (args.max_connections, limits.max_connections, path) {
        (Some(n), _, _) => n,
        (None, Some(v), Some(p)) => connections(v).map_err(|d| bad(p, "limits.max_connections", v.to_string(), d))?,
        _ => DEFAULT_MAX_CONNECTIONS,
    };
    let body = |flag: Option<u64>, key: &str, v: Option<u64>| -> Result<Option<u64>, CliError> {
        match (flag, v, path) {
            (Some(b), _, _) => Ok(Some(b)),
            (None, Some(v), Some(p)) => {
                body_bytes(v).map(Some).map_err(|d| bad(p, &format!("limits.{key}"), v.to_string(), d))
            }
            _ => Ok(None),
        }
    };
    let max_body = body(args.max_body_bytes, "max_body_bytes", limits.max_body_bytes)?
        .map_or(DEFAULT_MAX_BODY_BYTES, |b| usize::try_from(b).unwrap_or(usize::MAX));
    out.upstream_limits = out.upstream_limits.with_max_body_bytes(body(
        args.upstream_max_body_bytes,
        "upstream_max_body_bytes",
        limits.upstream_max_body_bytes,
    )?);
    let share = |flag: Option<usize>, key: &str, v: Option<u64>, default: usize| -> Result<usize, CliError> {
        match (flag, v, path) {
            (Some(n), _, _) => Ok(n),
            (None, Some(v), Some(p)) => connections(v).map_err(|d| bad(p, &format!("limits.{key}"), v.to_string(), d)),
            _ => Ok(default),
        }
    };
    let per_address = share(
        args.max_connections_per_address,
        "max_connections_per_address",
        limits.max_connections_per_address,
        DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
    )?;
    let unauthenticated = share(
        args.max_unauthenticated_per_address,
        "max_unauthenticated_per_address",
        limits.max_unauthenticated_per_address,
        DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS,
    )?;
    let headers = f.map(|f| f.headers.clone()).unwrap_or_default();
    out.upstream_limits = out.upstream_limits.with_header_rules(
        HeaderRules::default()
            .with_keep_underscores(headers.keep_underscores.unwrap_or(false))
            .with_keep_client_ip_headers(headers.keep_client_ip_headers.unwrap_or(false)),
    );
    out.server_limits = ServerLimits::default()
        .with_max_header_bytes(header)
        .with_idle_timeout(idle)
        .with_max_connections(max_connections)
        .with_max_body_bytes(max_body)
        .with_per_address(per_address, unauthenticated);
    Ok(out)
}

/// What the peer lookups go by: `[peers]` names from the config file, and the
/// peers let in without a token (`allow_peer`: `--allow-peer`, else the
/// file's `allow_peers`).
pub fn peer_rules(allow_peer: &[String], file: Option<&FileConfig>) -> Result<PeerRules, CliError> {
    let names = file.map(|f| f.peer_names.clone()).unwrap_or_default();
    let allow = if allow_peer.is_empty() {
        file.map(|f| f.allow_list.clone()).unwrap_or_default()
    } else {
        AllowList::resolve(&names, allow_peer.iter().map(String::as_str))
            .map_err(|e| CliError::BadFlag(format!("--allow-peer: {e}")))?
    };
    Ok(PeerRules { names, allow })
}

/// HTTPS, when asked for: the listener setup, what to print at start, and the
/// reloader of an own certificate (for SIGHUP). A certificate, key or state
/// directory that cannot be used is exit 78, naming the file.
pub struct TlsSetup {
    /// For the gateway builder.
    pub https: Https,
    /// The line printed at start: where the certificate comes from and the
    /// public key's SHA-256 for pinning (or the local CA's fingerprint).
    pub summary: String,
    /// The own certificate's reloader (none for the other modes).
    pub reloader: Option<Arc<Reloader>>,
    /// Where the certificate comes from (for the status page).
    pub kind: TlsKind,
    /// The certificate served now (a reload or renewal shows through it).
    pub resolver: Arc<CertResolver>,
}

/// Which kind of certificate is served, after precedence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsKind {
    /// Own certificate files (`--tls-cert`, `[tls] cert`).
    Own,
    /// Self-signed over a key in the state directory.
    SelfSigned,
    /// From the local CA whose certificate is at `ca_cert`.
    Internal {
        /// The CA's certificate file.
        ca_cert: PathBuf,
    },
    /// tailscaled's certificate for `domain`.
    Tailscale {
        /// This node's tailnet name.
        domain: String,
    },
}

/// What HTTPS the flags and `[tls]` ask for, before any file is opened.
enum TlsPlan<'a> {
    /// Plain HTTP.
    Off,
    /// Own files; `from` is the config file they were named in, if any.
    Own { cert: PathBuf, key: PathBuf, from: Option<(&'a Path, &'a FileConfig)> },
    /// A self-signed certificate over a key kept in `dir`.
    SelfSigned { dir: PathBuf, names: Vec<String>, from: Sources<'a> },
    /// Short-lived certificates from the local CA kept in `dir`; a new CA
    /// permits `ranges` (the default private ranges when empty), the DNS
    /// names in `names` and the suffixes in `suffixes`.
    Internal { dir: PathBuf, names: Vec<String>, ranges: Vec<ipnet::IpNet>, suffixes: Vec<String>, from: Sources<'a> },
    /// tailscaled's certificate for this node (asked at start).
    Tailscale,
}

/// The config file a state directory and a list of names came from, when
/// they did (for errors naming the file and the line).
#[derive(Clone, Copy, Default)]
struct Sources<'a> {
    /// `state_dir`.
    dir: Option<(&'a Path, &'a FileConfig)>,
    /// `[tls] names`.
    names: Option<(&'a Path, &'a FileConfig)>,
}

/// Where the certificate comes from, after precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    SelfSigned,
    Internal,
    Tailscale,
}

impl From<TlsModeConfig> for Mode {
    fn from(m: TlsModeConfig) -> Self {
        match m {
            TlsModeConfig::SelfSigned => Mode::SelfSigned,
            TlsModeConfig::Internal => Mode::Internal,
            TlsModeConfig::Tailscale => Mode::Tailscale,
        }
    }
}

impl From<TlsMode> for Mode {
    fn from(m: TlsMode) -> Self {
        match m {
            TlsMode::SelfSigned => Mode::SelfSigned,
            TlsMode::Internal => Mode::Internal,
            TlsMode::Tailscale => Mode::Tailscale,
        }
    }
}

/// The state directory: `--state-dir`/`MESHGATE_STATE_DIR`, else the config
/// file's `state_dir` (relative to the file), else the default (`None` when
/// there is none).
pub(super) fn state_dir(args: &TlsArgs, file: Option<(&Path, &FileConfig)>) -> Option<PathBuf> {
    state_dir_of(args.state_dir.as_ref(), file).ok()
}

/// The state directory as [`state_dir`] finds it, from the flag alone (for
/// `meshgate ca`); no default is an error saying why.
pub(crate) fn state_dir_of(flag: Option<&PathBuf>, file: Option<(&Path, &FileConfig)>) -> Result<PathBuf, CliError> {
    if let Some(d) = flag {
        return Ok(d.clone());
    }
    match file.and_then(|(p, f)| f.state_dir.as_deref().map(|d| (p, d))) {
        Some((p, d)) if d.is_relative() => Ok(p.parent().map_or_else(|| d.to_path_buf(), |dir| dir.join(d))),
        Some((_, d)) => Ok(d.to_path_buf()),
        None => default_state_dir().map_err(|e| CliError::Refused(e.to_string())),
    }
}

/// Applies precedence to the TLS flags and the config's `[tls]` (relative
/// paths there are relative to the file). Opens nothing.
fn tls_plan<'a>(args: &TlsArgs, file: Option<(&'a Path, &'a FileConfig)>) -> Result<(TlsPlan<'a>, bool), CliError> {
    let refused = |e: crate::tls::TlsError| CliError::Refused(e.to_string());
    let (path, f) = match file {
        Some((p, f)) => (Some(p), Some(f)),
        None => (None, None),
    };
    let cfg = f.map(|f| f.tls.clone()).unwrap_or_default();
    let near = |p: &Path| -> PathBuf {
        match path.and_then(Path::parent) {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        }
    };
    let loopback = args.tls_loopback || cfg.loopback;
    let cfg_mode = match (cfg.mode, cfg.self_signed, file) {
        (Some(m), false, _) => Some(Mode::from(m)),
        (None, true, _) | (Some(TlsModeConfig::SelfSigned), true, _) => Some(Mode::SelfSigned),
        (Some(m), true, Some((p, f))) => {
            return Err(f
                .value_error(p, "tls.mode", format!("{m:?}"), "set either mode or self_signed = true, not both")
                .into())
        }
        (Some(m), true, None) => Some(Mode::from(m)),
        (None, false, _) => None,
    };
    let own = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone(), None)),
        _ if args.tls.is_some() => None,
        _ => match (&cfg.cert, &cfg.key, file) {
            (Some(c), _, Some((p, f))) | (_, Some(c), Some((p, f))) if cfg_mode.is_some() => {
                return Err(f
                    .value_error(
                        p,
                        if cfg.cert.is_some() { "tls.cert" } else { "tls.key" },
                        c.display().to_string(),
                        "set either cert and key, or a mode (internal, tailscale, self-signed), not both",
                    )
                    .into())
            }
            (Some(c), Some(k), Some((p, f))) => Some((near(c), near(k), Some((p, f)))),
            (Some(_), None, Some((p, f))) | (None, Some(_), Some((p, f))) => {
                let key = if cfg.cert.is_some() { "tls.cert" } else { "tls.key" };
                return Err(f
                    .value_error(p, key, "cert/key", "set both tls.cert and tls.key, or mode = \"internal\"")
                    .into());
            }
            _ => None,
        },
    };
    if let Some((cert, key, from)) = own {
        return Ok((TlsPlan::Own { cert, key, from }, loopback));
    }
    let Some(mode) = args.tls.map(Mode::from).or(cfg_mode) else {
        return Ok((TlsPlan::Off, loopback));
    };
    if mode == Mode::Tailscale {
        return Ok((TlsPlan::Tailscale, loopback));
    }
    let (dir, dir_from) = match (&args.state_dir, f.and_then(|f| f.state_dir.as_deref())) {
        (Some(d), _) => (d.clone(), None),
        (None, Some(d)) => (near(d), file),
        (None, None) => (default_state_dir().map_err(refused)?, None),
    };
    let (names, names_from) =
        if args.tls_name.is_empty() { (cfg.names.clone(), file) } else { (args.tls_name.clone(), None) };
    let from = Sources { dir: dir_from, names: names_from };
    Ok((
        match mode {
            Mode::SelfSigned => TlsPlan::SelfSigned { dir, names, from },
            _ => TlsPlan::Internal {
                dir,
                names,
                ranges: ca_ranges(&cfg.ca_ranges, file)?,
                suffixes: ca_names(&cfg.ca_names, file)?,
                from,
            },
        },
        loopback,
    ))
}

/// Reads an own certificate pair; a pair named in the config file that
/// cannot be used names the file and the line of `tls.cert`.
fn own_pair(cert: &Path, key: &Path, from: Option<(&Path, &FileConfig)>) -> Result<Reloader, CliError> {
    Reloader::new(cert, key).map_err(|e| match from {
        Some((path, f)) => f.value_error(path, "tls.cert", cert.display().to_string(), e.to_string()).into(),
        None => CliError::Refused(e.to_string()),
    })
}

/// A self-signed certificate or local CA that cannot be used: a bad name
/// (or one the CA may not sign) is blamed on `[tls] names`, anything else on
/// `state_dir`, with the line, when the config file gave them.
fn state_error(e: crate::tls::TlsError, from: Sources<'_>) -> CliError {
    use crate::tls::TlsError;
    let (source, key, value) = match &e {
        TlsError::BadName { name, .. } | TlsError::OutsideConstraints { name, .. } => {
            (from.names, "tls.names", name.trim_start_matches("--tls-name ").to_owned())
        }
        _ => (
            from.dir,
            "state_dir",
            from.dir.and_then(|(_, f)| f.state_dir.as_ref()).map(|d| d.display().to_string()).unwrap_or_default(),
        ),
    };
    match source {
        Some((path, f)) => f.value_error(path, key, value, e.to_string()).into(),
        None => CliError::Refused(e.to_string()),
    }
}

/// The DNS names in `names` as a certificate may carry them (IP literals
/// pass): the check `SelfSigned::open` and `Internal::open` make first.
fn check_names(names: &[String]) -> Result<(), crate::tls::TlsError> {
    names.iter().filter(|n| n.parse::<std::net::IpAddr>().is_err()).try_for_each(|n| {
        rcgen::CertificateParams::new(vec![n.clone()])
            .map(drop)
            .map_err(|e| crate::tls::TlsError::BadName { name: n.clone(), detail: e.to_string() })
    })
}

/// Checks what [`tls_setup`] would use without writing anything (for
/// `explain`): an own pair is read and checked; a self-signed key's
/// directory is resolved, and the names checked, but no key is made; the
/// local CA's directory is checked, an existing CA read (never made) and
/// the names checked against its constraints; tailscaled is not asked
/// (`serve` asks it at start). Returns a line for `explain` to print about
/// the local CA or tailscaled, if there is one to say.
pub(crate) fn tls_check(args: &TlsArgs, file: Option<(&Path, &FileConfig)>) -> Result<Option<String>, CliError> {
    match tls_plan(args, file)?.0 {
        TlsPlan::Off => Ok(None),
        TlsPlan::Tailscale => Ok(Some(
            "tls: tailscale: serve asks tailscaled for this node's certificate at start (explain does not ask it)"
                .into(),
        )),
        TlsPlan::Own { cert, key, from } => own_pair(&cert, &key, from).map(|_| None),
        TlsPlan::SelfSigned { dir, names, from } => {
            check_names(&names).map_err(|e| state_error(e, from))?;
            dir_writable(&dir).map_err(|e| state_error(e, from))?;
            // A key already there is read and loaded, as serve would: a
            // corrupt one is refused here too.
            crate::tls::check_key(&dir).map_err(|e| state_error(e, from))?;
            Ok(None)
        }
        TlsPlan::Internal { dir, names, from, .. } => {
            leaf_lifetime_from(std::env::var_os(LEAF_LIFETIME_ENV)).map_err(CliError::BadFlag)?;
            check_names(&names).map_err(|e| state_error(e, from))?;
            dir_writable(&dir).map_err(|e| state_error(e, from))?;
            let ca = match LocalCa::load(&dir) {
                Ok(ca) => ca,
                // serve would make one now, permitting these names.
                Err(crate::tls::TlsError::NoCa { .. }) => return Ok(Some(new_ca_note(&dir))),
                Err(e) => return Err(state_error(e, from)),
            };
            let c = ca.constraints();
            for name in &names {
                let permitted = match name.parse::<std::net::IpAddr>() {
                    Ok(ip) => c.permits_ip(ip),
                    Err(_) => c.permits_dns(name),
                };
                if !permitted {
                    let e = crate::tls::TlsError::OutsideConstraints {
                        name: format!("--tls-name {name}"),
                        permitted: c.describe(),
                        dir: dir.clone(),
                    };
                    return Err(state_error(e, from));
                }
            }
            Ok(Some(format!(
                "tls: internal: certificates from the local CA {} (SHA-256 {})",
                ca.cert_path().display(),
                ca.fingerprint_sha256()
            )))
        }
    }
}

/// What `explain` says when `serve` would make the local CA.
fn new_ca_note(dir: &Path) -> String {
    format!(
        "tls: internal: serve would make a local CA in {} (permitting the mesh's ranges and these names)",
        dir.display()
    )
}

/// Whether a key or a CA could be kept in `dir`, judged without writing:
/// the directory (or, when it does not exist yet, the nearest existing
/// parent that would hold it) is a writable directory. The errors are those
/// a write at start would give.
fn dir_writable(dir: &Path) -> Result<(), crate::tls::TlsError> {
    use std::io::Error;
    let write = |source: Error| crate::tls::TlsError::Write { path: dir.to_path_buf(), source };
    let mut at = dir;
    while !at.exists() {
        at = at.parent().ok_or_else(|| write(Error::from_raw_os_error(libc::ENOENT)))?;
    }
    if !at.is_dir() {
        // The OS's own words, as the write serve attempts would get them.
        return Err(write(Error::from_raw_os_error(libc::ENOTDIR)));
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt as _;
        let c = std::ffi::CString::new(at.as_os_str().as_bytes()).map_err(|e| write(Error::other(e)))?;
        // SAFETY: access only reads the NUL-terminated path it is given.
        if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
            return Err(write(Error::last_os_error()));
        }
    }
    Ok(())
}

/// Applies precedence to the TLS flags and the config's `[tls]` (relative
/// paths there are relative to the file), and opens what they name. Starts
/// what keeps a certificate current (the local CA's renewals, tailscaled
/// polls): call it in a runtime.
pub async fn tls_setup(args: &TlsArgs, file: Option<(&Path, &FileConfig)>) -> Result<Option<TlsSetup>, CliError> {
    let refused = |e: crate::tls::TlsError| CliError::Refused(e.to_string());
    let (plan, loopback) = tls_plan(args, file)?;
    let loopback_addrs: Vec<std::net::IpAddr> =
        if loopback { vec![[127, 0, 0, 1].into(), std::net::Ipv6Addr::LOCALHOST.into()] } else { Vec::new() };
    match plan {
        TlsPlan::Off => Ok(None),
        TlsPlan::Own { cert, key, from } => {
            let reloader = Arc::new(own_pair(&cert, &key, from)?);
            let acceptor = TlsAcceptor::new(reloader.resolver()).map_err(refused)?;
            let pin = reloader.spki_sha256_base64();
            Ok(Some(TlsSetup {
                https: Https {
                    acceptor: Arc::new(acceptor),
                    address_names: None,
                    ca_pem: None,
                    dns_names: Vec::new(),
                    loopback,
                },
                summary: format!("tls: certificate {}; public key sha256//{pin}", cert.display()),
                kind: TlsKind::Own,
                resolver: reloader.resolver(),
                reloader: Some(reloader),
            }))
        }
        TlsPlan::SelfSigned { dir, names, from } => {
            let cert = Arc::new(SelfSigned::open(&dir, &names, &loopback_addrs).map_err(|e| state_error(e, from))?);
            let acceptor = TlsAcceptor::new(cert.resolver()).map_err(refused)?;
            let pin = cert.spki_sha256_base64().to_owned();
            Ok(Some(TlsSetup {
                https: Https {
                    acceptor: Arc::new(acceptor),
                    address_names: Some(cert.clone()),
                    ca_pem: None,
                    dns_names: cert.names().0,
                    loopback,
                },
                summary: format!(
                    "tls: self-signed certificate (key in {}); public key sha256//{pin} (curl --pinnedpubkey sha256//{pin})",
                    dir.display()
                ),
                kind: TlsKind::SelfSigned,
                resolver: cert.resolver(),
                reloader: None,
            }))
        }
        TlsPlan::Internal { dir, names, ranges, suffixes, from } => {
            let lifetime = leaf_lifetime_from(std::env::var_os(LEAF_LIFETIME_ENV)).map_err(CliError::BadFlag)?;
            let mut names = names;
            if let Some(tailnet) = tailnet_name(&dir, &names).await {
                names.push(tailnet);
            }
            let cert = Arc::new(
                Internal::open(&dir, &names, &loopback_addrs, (&ranges, &suffixes), lifetime)
                    .map_err(|e| state_error(e, from))?,
            );
            cert.spawn_renewal();
            let acceptor = TlsAcceptor::new(cert.resolver()).map_err(refused)?;
            let ca = cert.ca();
            let made = if cert.made_now() { "a local CA made now" } else { "the local CA" };
            let summary = format!(
                "tls: certificates from {made}, {} (SHA-256 {}); trust it once on each device: `meshgate ca` prints it",
                ca.cert_path().display(),
                ca.fingerprint_sha256()
            );
            let ca_pem: Arc<str> = ca.cert_pem().into();
            Ok(Some(TlsSetup {
                https: Https {
                    acceptor: Arc::new(acceptor),
                    address_names: Some(cert.clone()),
                    ca_pem: Some(ca_pem),
                    dns_names: cert.names().0,
                    loopback,
                },
                summary,
                kind: TlsKind::Internal { ca_cert: ca.cert_path() },
                resolver: cert.resolver(),
                reloader: None,
            }))
        }
        TlsPlan::Tailscale => {
            let socket = meshgate_core::probe::tailscale::socket_path();
            let cert = Arc::new(TailnetCert::open(&socket).await.map_err(refused)?);
            cert.spawn_refresh();
            let acceptor = TlsAcceptor::new(cert.resolver()).map_err(refused)?;
            Ok(Some(TlsSetup {
                https: Https {
                    acceptor: Arc::new(acceptor),
                    address_names: None,
                    ca_pem: None,
                    dns_names: vec![cert.domain().to_owned()],
                    loopback,
                },
                summary: format!(
                    "tls: tailscaled's certificate for {} (renewed by tailscaled, picked up while serving); open https://{}:PORT/",
                    cert.domain(),
                    cert.domain()
                ),
                kind: TlsKind::Tailscale { domain: cert.domain().to_owned() },
                resolver: cert.resolver(),
                reloader: None,
            }))
        }
    }
}

/// `[tls] ca_ranges`, checked: none wider than a /8 (IPv4) or a /7 (IPv6),
/// the widest mesh ranges there are (`10.0.0.0/8`; ULA `fc00::/7`,
/// Yggdrasil's `200::/7`). A wider one (`0.0.0.0/0`, a typo'd prefix) would
/// let the CA vouch for much of the internet, the one thing it must not do.
fn ca_ranges(raw: &[ipnet::IpNet], file: Option<(&Path, &FileConfig)>) -> Result<Vec<ipnet::IpNet>, CliError> {
    raw.iter()
        .map(|n| {
            let widest = if n.addr().is_ipv4() { 8 } else { 7 };
            if n.prefix_len() >= widest {
                return Ok(*n);
            }
            let detail = format!(
                "wider than a /{widest}: the local CA could then vouch for addresses far outside the mesh; \
                 name the mesh's own ranges (such as \"10.8.0.0/24\" or \"fd7a:115c:a1e0::/48\")"
            );
            Err(match file {
                Some((p, f)) => f.value_error(p, "tls.ca_ranges", n.to_string(), &detail),
                None => ConfigError::Value {
                    path: PathBuf::new(),
                    key: "tls.ca_ranges".into(),
                    value: n.to_string(),
                    detail,
                },
            }
            .into())
        })
        .collect()
}

/// `[tls] ca_names`, checked: DNS names (a leading dot is dropped), not IP
/// addresses, not wildcards. A bad one names the file and its line.
fn ca_names(raw: &[String], file: Option<(&Path, &FileConfig)>) -> Result<Vec<String>, CliError> {
    raw.iter()
        .map(|n| {
            let name = n.trim().trim_start_matches('.').to_ascii_lowercase();
            let ok = !name.is_empty()
                && name.parse::<std::net::IpAddr>().is_err()
                && name.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
            if ok {
                return Ok(name);
            }
            let detail =
                "expected a DNS name such as \"home.arpa\" (it permits the names below it); IP ranges go in ca_ranges";
            Err(match file {
                Some((p, f)) => f.value_error(p, "tls.ca_names", n.clone(), detail),
                None => ConfigError::Value {
                    path: PathBuf::new(),
                    key: "tls.ca_names".into(),
                    value: n.clone(),
                    detail: detail.into(),
                },
            }
            .into())
        })
        .collect()
}

/// This node's tailnet DNS name, when tailscaled reports one and the local
/// CA in `dir` may sign for it (or is yet to be made): the leaf names it too.
async fn tailnet_name(dir: &Path, names: &[String]) -> Option<String> {
    use meshgate_core::probe::tailscale::{cert_domains_at, socket_path};
    let socket = socket_path();
    std::fs::symlink_metadata(&socket).ok()?;
    let info = cert_domains_at(&socket, std::time::Duration::from_secs(1)).await.ok()?;
    let name = info.dns_name?;
    if names.iter().any(|n| n.eq_ignore_ascii_case(&name)) {
        return None;
    }
    match LocalCa::load(dir) {
        Ok(ca) if !ca.constraints().permits_dns(&name) => {
            tracing::info!(
                name = %name,
                "the local CA was made without the tailnet name; its certificates name the addresses only"
            );
            None
        }
        _ => Some(name),
    }
}

/// `--allow-host`/`--allow-origin` if given, else the config file's lists.
pub fn browser_policy(args: &ServeArgs, file: Option<&meshgate_core::config::FileConfig>) -> BrowserPolicy {
    let pick = |flag: &Vec<String>, file: Option<&Vec<String>>| {
        if flag.is_empty() {
            file.cloned().unwrap_or_default()
        } else {
            flag.clone()
        }
    };
    BrowserPolicy {
        allowed_hosts: pick(&args.allow_host, file.map(|f| &f.allowed_hosts)),
        allowed_origins: pick(&args.allow_origin, file.map(|f| &f.allowed_origins)),
    }
}

/// Where `tls` services get their acceptor: `serve` passes the top level's
/// TLS (none: a `tls` service is refused), `explain` opens no key.
pub(crate) enum ServiceTls<'a> {
    /// `serve`: the top level's HTTPS, if configured.
    Serve(Option<&'a Https>),
    /// `explain`: no acceptor is made; true when the flags or the file
    /// configure TLS (a `tls` service needs it).
    Explain(bool),
}

/// The services `serve` runs besides the top-level one: `--tcp PORT=UPSTREAM`
/// flags (named `tcp-PORT`, the top level's bind and allow-list) and the
/// config file's `[[service]]` tables. A bad value is exit 78 naming the
/// file, line and key.
pub(crate) fn services(
    args: &ServeArgs,
    file: Option<(&Path, &FileConfig)>,
    upstream_limits: UpstreamLimits,
    tls: ServiceTls<'_>,
) -> Result<Vec<crate::gateway::Service>, CliError> {
    use crate::gateway::{PeerAccess, Protocol, Service};
    use meshgate_core::config::ServiceProtocol;
    let mut out = Vec::new();
    for (port, upstream) in &args.tcp {
        let name = format!("tcp-{port}");
        let s = Service::tcp(&name, *port, upstream)
            .map_err(|e| CliError::BadFlag(format!("--tcp {port}={upstream}: {e}")))?;
        out.push(s);
    }
    let Some((path, f)) = file else { return Ok(out) };
    let no_alpn = |https: &Https| {
        // A TLS-terminated TCP service speaks whatever the client speaks
        // inside: no HTTP ALPN, or a client offering its own (mqtt) is refused.
        let mut config = (**https.acceptor.config()).clone();
        config.alpn_protocols.clear();
        Arc::new(TlsAcceptor::from_config(Arc::new(config)))
    };
    let registry = registry()?;
    let names = registry.names();
    for spanned in &f.services {
        let c = spanned.get_ref();
        let name = c.name.get_ref().as_str();
        let bad = |key: &str, value: String, detail: String| -> CliError {
            ConfigError::ValueAt {
                path: path.into(),
                line: c.line_of(key),
                key: format!("service.{name}.{key}"),
                value,
                detail,
            }
            .into()
        };
        let upstream = c.upstream.get_ref().as_str();
        let mut s = match c.protocol {
            ServiceProtocol::Http => {
                let u = Upstream::parse(upstream).map_err(|e| bad("upstream", upstream.into(), e.detail))?;
                let mut limits = upstream_limits;
                if let Some(t) = c.connect_timeout {
                    limits = limits.with_connect_timeout(Duration::from_secs_f64(t));
                }
                Service::http(name, *c.port.get_ref(), u).map(|s| s.upstream_limits(limits))
            }
            ServiceProtocol::Tcp | ServiceProtocol::Tls => Service::tcp(name, *c.port.get_ref(), upstream),
        }
        .map_err(|e| match e {
            ServiceError::Name(_) | ServiceError::Reserved(_) => bad("name", name.into(), e.to_string()),
            e => bad("upstream", upstream.into(), e.to_string()),
        })?;
        if c.protocol == ServiceProtocol::Tls {
            match &tls {
                ServiceTls::Serve(Some(https)) => s = s.with_tls(no_alpn(https)),
                ServiceTls::Serve(None) | ServiceTls::Explain(false) => {
                    return Err(bad(
                        "protocol",
                        "tls".into(),
                        "a tls service terminates TLS with the top level's certificate: set [tls] mode = \"internal\" (or cert and key, or self_signed = true), or --tls internal or --tls-cert/--tls-key".into(),
                    ))
                }
                ServiceTls::Explain(true) => {}
            }
            s.protocol = Protocol::Tls;
        }
        if c.protocol == ServiceProtocol::Http && c.tls == Some(false) {
            s = s.without_tls();
        }
        if c.protocol != ServiceProtocol::Http && c.tls.is_some() {
            return Err(bad(
                "tls",
                format!("{:?}", c.tls),
                "tls is for HTTP services; a tcp service is plain TCP and a tls service always speaks TLS".into(),
            ));
        }
        if c.protocol == ServiceProtocol::Http && c.tls == Some(true) {
            match &tls {
                ServiceTls::Serve(Some(https)) => s = s.with_tls(https.acceptor.clone()),
                ServiceTls::Serve(None) | ServiceTls::Explain(false) => {
                    return Err(bad(
                        "tls",
                        "true".into(),
                        "set [tls] cert and key (or self_signed = true) for the certificate it serves".into(),
                    ))
                }
                ServiceTls::Explain(true) => {}
            }
        }
        if let Some(raw) = &c.bind {
            let host = f.host.as_deref();
            parse_selectors(raw, &names, host).map_err(|e| bad("bind", raw.join(","), e.to_string()))?;
            s = s.bind(raw.iter().cloned());
        }
        if c.allow_any_peer {
            s = s.access(PeerAccess::AnyPeer);
        } else if let Some(list) = &c.allow_list {
            s = s.access(PeerAccess::Peers(list.clone()));
        }
        if let Some(p) = &c.path {
            s = s.path(p.get_ref().clone());
        }
        s = s.proxy_protocol(c.proxy_protocol);
        if let Some(t) = c.connect_timeout {
            s = s.connect_timeout(Duration::from_secs_f64(t));
        }
        if let Some(t) = c.idle_timeout {
            s = s.idle_timeout(Duration::from_secs_f64(t));
        }
        if let Some(n) = c.max_connections {
            s = s.max_connections(usize::try_from(n).unwrap_or(usize::MAX));
        }
        if let Some(clash) = out[..args.tcp.len()]
            .iter()
            .find(|o: &&Service| o.port() == s.port() && o.bind_selectors().is_none() && c.bind.is_none())
        {
            return Err(bad(
                "port",
                s.port().to_string(),
                format!(
                    "services {:?} (--tcp) and {name:?} both listen on port {}; give one another port",
                    clash.name(),
                    s.port()
                ),
            ));
        }
        out.push(s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::ffi::{OsStr, OsString};

    use super::*;

    fn file(text: &str) -> (PathBuf, FileConfig) {
        let path = PathBuf::from("/etc/meshgate/meshgate.toml");
        let f = FileConfig::parse(text, &path).unwrap_or_else(|e| panic!("{text}: {e}"));
        (path, f)
    }

    #[tokio::test]
    async fn tls_mode_from_the_config_file_and_its_conflicts() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().display().to_string();
        // `mode = "internal"` makes the local CA in the state dir; the flag's
        // state dir wins over the file's.
        let (p, f) = file(&format!("state_dir = \"{dir}/from-file\"\n[tls]\nmode = \"internal\"\n"));
        let args = TlsArgs { state_dir: Some(tmp.path().join("from-flag")), ..TlsArgs::default() };
        let setup = tls_setup(&args, Some((&p, &f))).await.unwrap().expect("TLS on");
        assert!(setup.https.ca_pem.is_some() && setup.https.address_names.is_some());
        assert!(setup.summary.contains("from-flag/ca.crt") && setup.summary.contains("SHA-256 "), "{}", setup.summary);
        assert!(tmp.path().join("from-flag/ca-key.pem").is_file() && !tmp.path().join("from-file").exists());
        // The configured mesh ranges and suffixes make the new CA's constraints.
        let (p, f) = file(
            "[tls]\nmode = \"internal\"\nca_ranges = [\"10.8.0.0/24\"]\nca_names = [\".home.arpa\"]\nnames = [\"gw.example\"]\n",
        );
        let args = TlsArgs { state_dir: Some(tmp.path().join("ranges")), ..TlsArgs::default() };
        tls_setup(&args, Some((&p, &f))).await.unwrap().expect("TLS on");
        let ca = LocalCa::load(&tmp.path().join("ranges")).unwrap();
        let c = ca.constraints();
        assert!(c.permits_dns("nas.home.arpa") && c.permits_dns("gw.example") && !c.permits_dns("example.com"));
        assert!(c.permits_ip("10.8.0.7".parse().unwrap()) && !c.permits_ip("10.9.0.1".parse().unwrap()));
        assert!(!c.permits_ip("192.168.1.1".parse().unwrap()), "the configured ranges replace the default ones");
        for bad in ["10.0.0.0/8", "*.home.arpa", ""] {
            let (p, f) = file(&format!("[tls]\nmode = \"internal\"\nca_names = [\"{bad}\"]\n"));
            let args = TlsArgs { state_dir: Some(tmp.path().join("bad")), ..TlsArgs::default() };
            let err = tls_setup(&args, Some((&p, &f))).await.err().expect("refused").to_string();
            assert!(err.contains("ca_names") && err.contains("ca_ranges"), "{bad}: {err}");
        }
        // A range that would open the CA to much of the internet is refused,
        // naming the line; the widest mesh ranges are taken.
        for bad in ["0.0.0.0/0", "::/0", "8.0.0.0/6", "2000::/3"] {
            let (p, f) = file(&format!("[tls]\nmode = \"internal\"\nca_ranges = [\"{bad}\"]\n"));
            let args = TlsArgs { state_dir: Some(tmp.path().join("bad")), ..TlsArgs::default() };
            let err = tls_setup(&args, Some((&p, &f))).await.err().expect("refused").to_string();
            assert!(err.contains("ca_ranges") && err.contains("line 3") && err.contains(bad), "{bad}: {err}");
        }
        let (p, f) = file("[tls]\nmode = \"internal\"\nca_ranges = [\"10.0.0.0/8\", \"200::/7\"]\n");
        let args = TlsArgs { state_dir: Some(tmp.path().join("widest")), ..TlsArgs::default() };
        tls_setup(&args, Some((&p, &f))).await.unwrap().expect("TLS on");
        assert!(!tmp.path().join("bad").exists(), "no CA made from a bad config");
        // A typo in the mode is the file's error, naming the choices.
        let err = FileConfig::parse("[tls]\nmode = \"interal\"\n", &p).unwrap_err().to_string();
        assert!(err.contains("interal") && err.contains("internal"), "{err}");
        // Two sources of a certificate in one file: refused, naming both.
        let (p, f) = file("[tls]\nmode = \"internal\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n");
        let err = tls_setup(&TlsArgs::default(), Some((&p, &f))).await.err().expect("refused").to_string();
        assert!(err.contains("cert and key, or a mode"), "{err}");
        let (p, f) = file("[tls]\nmode = \"tailscale\"\nself_signed = true\n");
        let err = tls_setup(&TlsArgs::default(), Some((&p, &f))).await.err().expect("refused").to_string();
        assert!(err.contains("either mode or self_signed"), "{err}");
        // The flag beats the file's mode.
        let (p, f) = file("[tls]\nmode = \"tailscale\"\n");
        let args =
            TlsArgs { tls: Some(TlsMode::SelfSigned), state_dir: Some(tmp.path().join("ss")), ..TlsArgs::default() };
        let setup = tls_setup(&args, Some((&p, &f))).await.unwrap().expect("TLS on");
        assert!(setup.summary.starts_with("tls: self-signed certificate"), "{}", setup.summary);
        assert!(setup.https.ca_pem.is_none());
    }

    #[tokio::test]
    async fn explain_checks_internal_and_tailscale_without_writing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let internal = |names: &[&str]| TlsArgs {
            tls: Some(TlsMode::Internal),
            state_dir: Some(dir.clone()),
            tls_name: names.iter().map(|n| (*n).to_owned()).collect(),
            ..TlsArgs::default()
        };
        // No CA yet: the directory could hold one; nothing is made.
        let note = tls_check(&internal(&["gw.example"]), None).unwrap().expect("a note");
        assert!(note.contains("would make a local CA"), "{note}");
        assert!(!dir.exists(), "explain made the state directory");
        // A bad name is refused before anything else.
        let err = tls_check(&internal(&["bäd.example"]), None).unwrap_err().to_string();
        assert!(err.contains("bäd.example"), "{err}");
        // An existing CA: a name within its constraints passes, one outside is refused.
        let setup = tls_setup(&internal(&["gw.example"]), None).await.unwrap().expect("TLS on");
        // The leaf's names are names of the listeners (the ambient-credential Host check).
        assert_eq!(setup.https.dns_names, ["gw.example"]);
        let note = tls_check(&internal(&["gw.example"]), None).unwrap().expect("a note");
        assert!(note.contains("ca.crt") && note.contains("SHA-256"), "{note}");
        let err = tls_check(&internal(&["other.example"]), None).unwrap_err();
        assert_eq!(err.exit_code(), 78);
        assert!(err.to_string().contains("other.example"), "{err}");
        // The same name from the config file names the file and its line.
        let (p, f) = file(&format!(
            "state_dir = \"{}\"\n[tls]\nmode = \"internal\"\nnames = [\"other.example\"]\n",
            dir.display()
        ));
        let err = tls_check(&TlsArgs::default(), Some((&p, &f))).unwrap_err().to_string();
        assert!(err.contains("meshgate.toml") && err.contains("line 4") && err.contains("other.example"), "{err}");
        // A damaged CA is refused as serve would refuse it.
        std::fs::write(dir.join(crate::tls::CA_KEY_FILE), "not a key").unwrap();
        assert!(tls_check(&internal(&[]), None).is_err());
        // A bad ca_names in the file names its line, before anything is read.
        let (p, f) = file("[tls]\nmode = \"internal\"\nca_names = [\"10.0.0.0/8\"]\n");
        let err = tls_check(&TlsArgs::default(), Some((&p, &f))).unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("ca_ranges"), "{err}");
        // tailscale: tailscaled is not asked; explain says serve asks at start.
        let args = TlsArgs { tls: Some(TlsMode::Tailscale), ..TlsArgs::default() };
        let note = tls_check(&args, None).unwrap().expect("a note");
        assert!(note.contains("serve asks tailscaled") && note.contains("at start"), "{note}");
    }

    #[test]
    fn worker_threads_takes_a_whole_number_or_one_per_cpu() {
        assert_eq!(worker_threads(Some(OsStr::new("3"))).unwrap().get(), 3);
        assert_eq!(worker_threads(Some(OsStr::new(" 1 "))).unwrap().get(), 1);
        let cpus = std::thread::available_parallelism().unwrap();
        assert_eq!(worker_threads(None).unwrap(), cpus);
        assert_eq!(worker_threads(Some(OsStr::new("1024"))).unwrap().get(), 1024);
        for bad in ["0", "-1", "two", "", "1.5", "1025"] {
            let e = worker_threads(Some(OsStr::new(bad))).unwrap_err();
            assert!(matches!(e, CliError::BadFlag(_)), "{bad}: {e:?}");
            let text = e.to_string();
            assert!(text.starts_with(&format!("TOKIO_WORKER_THREADS={bad}:")), "{text}");
            assert!(text.contains("whole number from 1 to 1024"), "{text}");
        }
    }

    #[test]
    fn one_character_is_singular() {
        assert!(short_token_warning(1).starts_with("the token is 1 character long,"), "{}", short_token_warning(1));
        assert!(short_token_warning(5).starts_with("the token is 5 characters long,"));
    }

    #[test]
    fn the_default_config_file_depends_on_who_runs() {
        let none = |_: &str| None::<OsString>;
        assert_eq!(default_config_path(true, none), Some("/etc/meshgate/meshgate.toml".into()));
        let xdg = |k: &str| (k == "XDG_CONFIG_HOME").then(|| OsString::from("/home/ana/.cfg"));
        assert_eq!(default_config_path(false, xdg), Some("/home/ana/.cfg/meshgate/meshgate.toml".into()));
        let home = |k: &str| (k == "HOME").then(|| OsString::from("/home/ana"));
        assert_eq!(default_config_path(false, home), Some("/home/ana/.config/meshgate/meshgate.toml".into()));
        assert_eq!(default_config_path(false, none), None);
    }
}
