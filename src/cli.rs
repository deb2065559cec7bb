//! The command line: clap types, settings precedence, and the `explain` and
//! `providers` commands. `main` only parses, sets up logging and calls in here.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde_json::json;

use meshgate_core::config::{ConfigError, FileConfig, ProviderConfig};
use meshgate_core::registry::{Registry, RegistryError};
use meshgate_core::resolver::{resolve, Fallback, ListenerRole, Resolution, ResolveOptions};
use meshgate_core::selector::{parse_selectors, Selector, SelectorError};
use meshgate_core::source::SourceError;

/// The default port.
pub const DEFAULT_PORT: u16 = 18789;

/// meshgate: a gateway that listens only on the networks you name.
#[derive(Debug, Parser)]
#[command(name = "meshgate", version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `serve`'s options, when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The subcommands.
// Parsed once per process: the size of the `serve` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve on the resolved addresses (the default).
    Serve(ServeArgs),
    /// Show which addresses a bind would use, and why; binds nothing.
    Explain(ExplainArgs),
    /// List the bind modes linked into this program.
    Providers(ProvidersArgs),
}

/// Options that choose addresses (shared by `serve` and `explain`).
#[derive(Debug, Clone, Default, Args)]
pub struct BindArgs {
    /// Where to listen: a mode (loopback, lan, all, tailnet, wireguard, ...), auto,
    /// iface:NAME, cidr:NETWORK, an IP, or custom with --host. Repeat for a union.
    #[arg(long = "bind", env = "MESHGATE_BIND", value_delimiter = ',', value_name = "SELECTOR")]
    pub bind: Vec<String>,
    /// The address for `--bind custom`.
    #[arg(long, value_name = "IP")]
    pub host: Option<String>,
    /// The port [default: 18789].
    #[arg(long, env = "MESHGATE_PORT")]
    pub port: Option<u16>,
    /// A TOML config file.
    #[arg(long, env = "MESHGATE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// When nothing matches: serve on loopback, or fail (exit 69) [default: loopback].
    #[arg(long, value_enum)]
    pub fallback: Option<FallbackArg>,
    /// Do not add the 127.0.0.1/::1 companion listener beside non-loopback ones.
    #[arg(long)]
    pub no_loopback: bool,
}

/// `--fallback`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FallbackArg {
    /// Serve on loopback only, and say so.
    Loopback,
    /// Serve nothing: exit 69.
    Fail,
}

impl From<FallbackArg> for Fallback {
    fn from(f: FallbackArg) -> Self {
        match f {
            FallbackArg::Loopback => Fallback::Loopback,
            FallbackArg::Fail => Fallback::Fail,
        }
    }
}

/// `serve`'s options.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Address selection.
    #[command(flatten)]
    pub bind: BindArgs,
    /// A file holding the bearer token (required for non-loopback listeners).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Resolve once at start; do not follow interface changes.
    #[arg(long)]
    pub no_follow: bool,
    /// At start, wait up to SECONDS for the selectors to match before falling back
    /// (with --fallback fail, an expired wait exits 69).
    #[arg(long, value_name = "SECONDS")]
    pub wait: Option<u64>,
    /// Forward every authorized request to this service: http://HOST:PORT or
    /// unix:/PATH. meshgate's own routes move under /_meshgate/.
    #[arg(long, env = "MESHGATE_UPSTREAM", value_name = "URL", value_parser = crate::gateway::upstream::Upstream::parse)]
    pub upstream: Option<crate::gateway::upstream::Upstream>,
    /// Seconds to open a connection to the upstream before answering 504 [default: 5].
    #[arg(long, value_name = "SECONDS", value_parser = crate::gateway::serve::parse_seconds)]
    pub upstream_connect_timeout: Option<std::time::Duration>,
    /// Seconds to wait for the upstream's response headers before answering 504
    /// [default: 60]. Bodies (downloads, event streams) are not cut off.
    #[arg(long, value_name = "SECONDS", value_parser = crate::gateway::serve::parse_seconds)]
    pub upstream_timeout: Option<std::time::Duration>,
    /// The largest request head (request line and headers) a client may send;
    /// larger gets 431 [default: 65536; at least 8192].
    #[arg(long, value_name = "BYTES", value_parser = crate::gateway::serve::parse_header_bytes)]
    pub max_header_bytes: Option<usize>,
    /// Seconds a client connection may take to send a request head, idle
    /// keep-alive time included, before it is closed [default: 60].
    #[arg(long, value_name = "SECONDS", value_parser = crate::gateway::serve::parse_seconds)]
    pub idle_timeout: Option<std::time::Duration>,
    /// The most client connections open at once, over all listeners; more wait
    /// in the listen queue until one closes [default: 512].
    #[arg(long, value_name = "N", value_parser = crate::gateway::serve::parse_connections)]
    pub max_connections: Option<usize>,
    /// The largest request body meshgate's own routes accept; larger gets 413
    /// [default: 2097152].
    #[arg(long, value_name = "BYTES", value_parser = crate::gateway::serve::parse_body_bytes)]
    pub max_body_bytes: Option<u64>,
    /// The largest request body forwarded to the upstream; larger gets 413
    /// [default: no cap]. Bodies stream either way.
    #[arg(long, value_name = "BYTES", value_parser = crate::gateway::serve::parse_body_bytes)]
    pub upstream_max_body_bytes: Option<u64>,
    /// An extra `Host` name the loopback listeners answer to (besides localhost,
    /// 127.x.y.z and `[::1]`); others get 421. Repeatable.
    #[arg(long = "allow-host", value_name = "NAME")]
    pub allow_host: Vec<String>,
    /// An extra `Origin` a WebSocket upgrade may come from (besides the origin it
    /// is sent to); others get 403. Repeatable.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origin: Vec<String>,
}

/// `explain`'s options.
#[derive(Debug, Clone, Default, Args)]
pub struct ExplainArgs {
    /// Address selection.
    #[command(flatten)]
    pub bind: BindArgs,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `providers`' options.
#[derive(Debug, Clone, Default, Args)]
pub struct ProvidersArgs {
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// A command failed; each variant maps to an exit code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// Bad selector or flag (exit 2).
    #[error(transparent)]
    Usage(#[from] SelectorError),
    /// Refused configuration (exit 78).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Refused configuration with a message (exit 78).
    #[error("{0}")]
    Refused(String),
    /// Nothing matched and `--fallback fail` (exit 69).
    #[error("{0}")]
    NothingMatched(String),
    /// The provider registry is broken (exit 70).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Reading interfaces failed (exit 71).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Anything else at run time (exit 1).
    #[error("{0}")]
    Runtime(String),
}

impl CliError {
    /// The process exit code for this error (DESIGN.md's contract).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::NothingMatched(_) => 69,
            Self::Registry(_) => 70,
            Self::Source(_) => 71,
            Self::Config(_) | Self::Refused(_) => 78,
            Self::Runtime(_) => 1,
        }
    }
}

/// The registry of every linked provider (the built-ins are linked first).
pub fn registry() -> Result<&'static Registry, CliError> {
    crate::builtin::link();
    Ok(Registry::global()?)
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
    let file = match &args.config {
        Some(p) => Some((p.clone(), FileConfig::load(p)?)),
        None => None,
    };
    let f = file.as_ref().map(|(_, f)| f.clone()).unwrap_or_default();
    let names = registry.names();
    let raw = if !args.bind.is_empty() {
        args.bind.clone()
    } else {
        f.bind.clone().unwrap_or_else(|| vec!["loopback".into()])
    };
    let host = args.host.clone().or(f.host.clone());
    let selectors = parse_selectors(&raw, &names, host.as_deref())?;
    let mut provider_configs: BTreeMap<String, ProviderConfig> = BTreeMap::new();
    let mut auto_order = None;
    if let Some((path, f)) = &file {
        provider_configs = f.provider_configs(path, &names)?;
        if let Some(order) = &f.auto {
            for n in order {
                let ok = registry.get(n).is_some_and(|e| e.info().role == meshgate_core::provider::Role::Mesh);
                if !ok {
                    let meshes: Vec<_> = registry
                        .entries()
                        .iter()
                        .filter(|e| e.info().role == meshgate_core::provider::Role::Mesh)
                        .map(|e| e.info().name)
                        .collect();
                    return Err(ConfigError::Value {
                        path: path.clone(),
                        key: "auto".into(),
                        value: n.clone(),
                        detail: format!("not a mesh provider; auto can walk: {}", meshes.join(", ")),
                    }
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

/// Runs `explain`: resolve on this host and print why. Returns the text to print.
pub async fn explain(
    args: &ExplainArgs,
    source: &dyn meshgate_core::source::InterfaceSource,
) -> Result<String, CliError> {
    let registry = registry()?;
    let s = settings(&args.bind, registry)?;
    let snapshot = source.snapshot().await?;
    let res = resolve(registry, &s.selectors, &snapshot, &s.resolve);
    let text = if args.json { explain_json(&res) } else { explain_text(&res) };
    if res.nothing_to_bind() {
        return Err(CliError::NothingMatched(format!("{text}\n{}", res.fallback_reason.clone().unwrap_or_default())));
    }
    Ok(text)
}

/// The `explain --json` document.
pub fn explain_json(res: &Resolution) -> String {
    serde_json::to_string_pretty(res).expect("a resolution always serializes")
}

/// The `explain` text for a person.
pub fn explain_text(res: &Resolution) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "bind {}:", res.selectors.join(" + "));
    if res.listeners.is_empty() {
        let _ = writeln!(out, "  nothing to listen on");
    }
    for l in &res.listeners {
        let via = l.interface.as_deref().map(|i| format!(" via {i}")).unwrap_or_default();
        let role = match l.role {
            ListenerRole::Selected => "",
            ListenerRole::Fallback => " [fallback]",
            ListenerRole::Companion => " [companion]",
        };
        let addr = if l.address.addr.is_ipv6() { format!("[{}]", l.address) } else { l.address.to_string() };
        let _ = writeln!(out, "  {addr}:{}  ({}{via}){role}\n      {}", l.port, l.provider, l.reason);
    }
    if let Some(r) = &res.fallback_reason {
        let _ = writeln!(out, "fallback: {r}");
    }
    for n in &res.notes {
        let _ = writeln!(out, "note: {n}");
    }
    let _ = writeln!(out, "what each provider saw:");
    for p in &res.providers {
        if p.candidates.is_empty() && p.rejected.is_empty() {
            let _ = writeln!(out, "  {:<12} nothing", p.name);
            continue;
        }
        let _ = writeln!(out, "  {}", p.name);
        for c in &p.candidates {
            let _ = writeln!(out, "    + {} on {}: {}", c.address, c.interface, c.reason);
        }
        for r in &p.rejected {
            let what = r.address.map(|a| format!("{a} on {}", r.interface)).unwrap_or_else(|| r.interface.clone());
            let _ = writeln!(out, "    - {what}: {}", r.reason);
        }
    }
    out
}

/// Runs `providers`: the registered bind modes.
pub fn providers(args: &ProvidersArgs) -> Result<String, CliError> {
    let registry = registry()?;
    let none = ProviderConfig::default();
    if args.json {
        let list: Vec<_> = registry
            .entries()
            .iter()
            .map(|e| {
                let i = e.info();
                json!({
                    "name": i.name,
                    "priority": i.priority,
                    "description": i.description,
                    "role": i.role,
                    "auto": i.role == meshgate_core::provider::Role::Mesh,
                    "crate": e.descriptor.crate_name,
                    "matches": e.provider.matches(&none),
                })
            })
            .collect();
        return Ok(serde_json::to_string_pretty(&json!({ "providers": list })).expect("json"));
    }
    let mut out = String::new();
    for e in registry.entries() {
        let i = e.info();
        let m = e.provider.matches(&none);
        let auto = if i.role == meshgate_core::provider::Role::Mesh { "auto" } else { "    " };
        let _ = writeln!(out, "{:<16} {:>4}  {auto}  {}", i.name, i.priority, i.description);
        let mut parts = Vec::new();
        if !m.kinds.is_empty() {
            parts.push(format!("kinds: {}", m.kinds.join(", ")));
        }
        if !m.names.is_empty() {
            parts.push(format!("names: {}", m.names.join(", ")));
        }
        if !m.ranges.is_empty() {
            parts.push(format!("ranges: {}", m.ranges.join(", ")));
        }
        if !parts.is_empty() {
            let _ = writeln!(out, "{:<29}{}", "", parts.join("; "));
        }
        let _ = writeln!(out, "{:<29}crate: {}", "", e.descriptor.crate_name);
    }
    Ok(out)
}
