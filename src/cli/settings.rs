//! Settings after precedence (flag > environment > config file > default):
//! the bind settings shared by `serve` and `explain`, and `serve`'s token,
//! upstream, limits and browser policy. Every bad value is refused here, with
//! the file and key it came from.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meshgate_core::config::{ConfigError, FileConfig, ProviderConfig};
use meshgate_core::provider::Role;
use meshgate_core::registry::Registry;
use meshgate_core::resolver::{Fallback, ResolveOptions};
use meshgate_core::selector::{parse_selectors, Selector, SelectorError};
use meshgate_core::wgpeer::AllowList;
use std::sync::Arc;

use crate::tls::{default_state_dir, running_as_root, Reloader, SelfSigned, TlsAcceptor};

use super::args::{BindArgs, ServeArgs, TlsArgs, TlsMode};
use super::error::CliError;
use super::values::{body_bytes, connections, header_bytes, seconds};
use crate::gateway::identity::PeerRules;
use crate::gateway::limits::{DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS};
use crate::gateway::proxy::{HeaderRules, DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT};
use crate::gateway::{
    BrowserPolicy, Https, ServerLimits, Token, TokenError, Upstream, UpstreamLimits, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HEADER_BYTES, DEFAULT_PORT,
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
    /// public key's SHA-256 for pinning.
    pub summary: String,
    /// The own certificate's reloader (none for self-signed).
    pub reloader: Option<Arc<Reloader>>,
}

/// What HTTPS the flags and `[tls]` ask for, before any file is opened.
enum TlsPlan<'a> {
    /// Plain HTTP.
    Off,
    /// Own files; `from` is the config file they were named in, if any.
    Own { cert: PathBuf, key: PathBuf, from: Option<(&'a Path, &'a FileConfig)> },
    /// A self-signed certificate over a key kept in `dir`.
    SelfSigned {
        dir: PathBuf,
        names: Vec<String>,
        /// The config file the directory came from (`state_dir`), if it did.
        dir_from: Option<(&'a Path, &'a FileConfig)>,
        /// The config file the names came from (`[tls] names`), if they did.
        names_from: Option<(&'a Path, &'a FileConfig)>,
    },
}

/// The state directory: `--state-dir`, else the config file's `state_dir`
/// (relative to the file), else the default (`None` when there is none).
pub(super) fn state_dir(args: &TlsArgs, file: Option<(&Path, &FileConfig)>) -> Option<PathBuf> {
    if let Some(d) = &args.state_dir {
        return Some(d.clone());
    }
    match file.and_then(|(p, f)| f.state_dir.as_deref().map(|d| (p, d))) {
        Some((p, d)) if d.is_relative() => Some(p.parent().map_or_else(|| d.to_path_buf(), |dir| dir.join(d))),
        Some((_, d)) => Some(d.to_path_buf()),
        None => default_state_dir().ok(),
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
    let own = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone(), None)),
        _ if args.tls.is_some() => None,
        _ => match (&cfg.cert, &cfg.key, file) {
            (Some(c), Some(k), Some((p, f))) => Some((near(c), near(k), Some((p, f)))),
            (Some(_), None, Some((p, f))) | (None, Some(_), Some((p, f))) => {
                let key = if cfg.cert.is_some() { "tls.cert" } else { "tls.key" };
                return Err(f
                    .value_error(p, key, "cert/key", "set both tls.cert and tls.key, or self_signed = true")
                    .into());
            }
            _ => None,
        },
    };
    if let Some((cert, key, from)) = own {
        return Ok((TlsPlan::Own { cert, key, from }, loopback));
    }
    if !(args.tls == Some(TlsMode::SelfSigned) || cfg.self_signed) {
        return Ok((TlsPlan::Off, loopback));
    }
    let (dir, dir_from) = match (&args.state_dir, f.and_then(|f| f.state_dir.as_deref())) {
        (Some(d), _) => (d.clone(), None),
        (None, Some(d)) => (near(d), file),
        (None, None) => (default_state_dir().map_err(refused)?, None),
    };
    let (names, names_from) =
        if args.tls_name.is_empty() { (cfg.names.clone(), file) } else { (args.tls_name.clone(), None) };
    Ok((TlsPlan::SelfSigned { dir, names, dir_from, names_from }, loopback))
}

/// Reads an own certificate pair; a pair named in the config file that
/// cannot be used names the file and the line of `tls.cert`.
fn own_pair(cert: &Path, key: &Path, from: Option<(&Path, &FileConfig)>) -> Result<Reloader, CliError> {
    Reloader::new(cert, key).map_err(|e| match from {
        Some((path, f)) => f.value_error(path, "tls.cert", cert.display().to_string(), e.to_string()).into(),
        None => CliError::Refused(e.to_string()),
    })
}

/// A self-signed certificate that cannot be made: a bad name is blamed on
/// `[tls] names`, anything else on `state_dir`, with the line, when the
/// config file gave them.
fn self_signed_error(
    e: crate::tls::TlsError,
    dir_from: Option<(&Path, &FileConfig)>,
    names_from: Option<(&Path, &FileConfig)>,
) -> CliError {
    let (from, key, value) = match &e {
        crate::tls::TlsError::BadName { name, .. } => (names_from, "tls.names", name.clone()),
        _ => (
            dir_from,
            "state_dir",
            dir_from.and_then(|(_, f)| f.state_dir.as_ref()).map(|d| d.display().to_string()).unwrap_or_default(),
        ),
    };
    match from {
        Some((path, f)) => f.value_error(path, key, value, e.to_string()).into(),
        None => CliError::Refused(e.to_string()),
    }
}

/// Checks what [`tls_setup`] would use without writing anything (for
/// `explain`): an own pair is read and checked; a self-signed key's
/// directory is resolved, and the names checked, but no key is made.
pub(crate) fn tls_check(args: &TlsArgs, file: Option<(&Path, &FileConfig)>) -> Result<(), CliError> {
    match tls_plan(args, file)?.0 {
        TlsPlan::Off => Ok(()),
        TlsPlan::Own { cert, key, from } => own_pair(&cert, &key, from).map(drop),
        // The names as SelfSigned::open checks them; the key is not made.
        TlsPlan::SelfSigned { dir, names, dir_from, names_from } => {
            names.iter().filter(|n| n.parse::<std::net::IpAddr>().is_err()).try_for_each(|n| {
                rcgen::CertificateParams::new(vec![n.clone()]).map(drop).map_err(|e| {
                    let e = crate::tls::TlsError::BadName { name: n.clone(), detail: e.to_string() };
                    self_signed_error(e, dir_from, names_from)
                })
            })?;
            state_dir_usable(&dir).map_err(|e| self_signed_error(e, dir_from, names_from))
        }
    }
}

/// Whether the self-signed key could be kept in `dir`, judged without
/// writing: the directory (or, when it does not exist yet, the nearest
/// existing parent that would hold it) is a writable directory, and a key
/// already there can be used. The errors are those `SelfSigned::open` gives.
fn state_dir_usable(dir: &Path) -> Result<(), crate::tls::TlsError> {
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
    // A key already there is read and loaded, as serve would: a corrupt
    // one is refused here too.
    crate::tls::check_key(dir).map(drop)
}

/// Applies precedence to the TLS flags and the config's `[tls]` (relative
/// paths there are relative to the file), and opens what they name.
pub fn tls_setup(args: &TlsArgs, file: Option<(&Path, &FileConfig)>) -> Result<Option<TlsSetup>, CliError> {
    let refused = |e: crate::tls::TlsError| CliError::Refused(e.to_string());
    let (plan, loopback) = tls_plan(args, file)?;
    match plan {
        TlsPlan::Off => Ok(None),
        TlsPlan::Own { cert, key, from } => {
            let reloader = Arc::new(own_pair(&cert, &key, from)?);
            let acceptor = TlsAcceptor::new(reloader.resolver()).map_err(refused)?;
            let pin = reloader.spki_sha256_base64();
            Ok(Some(TlsSetup {
                https: Https { acceptor: Arc::new(acceptor), self_signed: None, loopback },
                summary: format!("tls: certificate {}; public key sha256//{pin}", cert.display()),
                reloader: Some(reloader),
            }))
        }
        TlsPlan::SelfSigned { dir, names, dir_from, names_from } => {
            let loopback_addrs: Vec<std::net::IpAddr> =
                if loopback { vec![[127, 0, 0, 1].into(), std::net::Ipv6Addr::LOCALHOST.into()] } else { Vec::new() };
            let cert = Arc::new(
                SelfSigned::open(&dir, &names, &loopback_addrs)
                    .map_err(|e| self_signed_error(e, dir_from, names_from))?,
            );
            let acceptor = TlsAcceptor::new(cert.resolver()).map_err(refused)?;
            let pin = cert.spki_sha256_base64().to_owned();
            Ok(Some(TlsSetup {
                https: Https { acceptor: Arc::new(acceptor), self_signed: Some(cert), loopback },
                summary: format!(
                    "tls: self-signed certificate (key in {}); public key sha256//{pin} (curl --pinnedpubkey sha256//{pin})",
                    dir.display()
                ),
                reloader: None,
            }))
        }
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
        .map_err(|e| bad("upstream", upstream.into(), e.to_string()))?;
        if c.protocol == ServiceProtocol::Tls {
            match &tls {
                ServiceTls::Serve(Some(https)) => s = s.with_tls(no_alpn(https)),
                ServiceTls::Serve(None) | ServiceTls::Explain(false) => {
                    return Err(bad(
                        "protocol",
                        "tls".into(),
                        "a tls service terminates TLS with the top level's certificate: set [tls] cert and key (or self_signed = true), or --tls-cert/--tls-key".into(),
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
