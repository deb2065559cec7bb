//! `meshgate explain`: resolve on this host and say why, as text for a person
//! or one JSON document. It takes every `serve` flag, so that `serve` can be
//! swapped for `explain` in a command line, and says when the bind would need
//! a token that is not set.

use std::fmt::Write as _;

use std::path::Path;

use meshgate_core::config::FileConfig;
use meshgate_core::fact::DaemonFact;
use meshgate_core::resolver::{resolve, Listener, ListenerRole, ProviderReport, Resolution};
use meshgate_core::source::InterfaceSource;
use serde::Serialize;
use serde_json::json;

use super::args::{ExplainArgs, TlsArgs};
use super::error::CliError;
use super::reload::Loaded;
use super::settings::{
    config_line, peer_rules, registry, services, settings, tls_check, worker_threads, ServiceTls, WORKERS_ENV,
};
use crate::gateway::{check_auth, PeerAccess, Service, UpstreamLimits};

/// Runs `explain`: resolve on this host and print why. Returns the text to
/// print; with nothing to bind (exit 69) the answer still goes to stdout
/// ([`CliError::WithAnswer`]).
pub async fn explain(args: &ExplainArgs, source: &dyn InterfaceSource) -> Result<String, CliError> {
    let registry = registry()?;
    let s = settings(&args.serve.bind, registry)?;
    let file = s.file.as_ref().map(|(p, f)| (p.as_path(), f));
    // Everything serve checks before it binds, in the same order and with
    // the same errors: the config's values, the token, the limits, the
    // upstream, the log level, the TLS files, the thread count. Nothing is
    // bound and no key is made.
    let loaded = Loaded::read(&args.serve)?;
    let tls_note = tls_check(&args.serve.tls, file)?;
    // Only a set TOKIO_WORKER_THREADS can be wrong; unset, the count (one per
    // CPU, from the cgroup's quota: a dozen reads) is not part of the answer.
    if let Some(set) = std::env::var_os(WORKERS_ENV) {
        worker_threads(Some(&set))?;
    }
    let token = loaded.token();
    let peers = peer_rules(&args.serve.allow_peer, file.map(|(_, f)| f))?;
    let snapshot = source.snapshot().await?;
    let res = resolve(registry, &s.selectors, &snapshot, &s.resolve);
    let needs_token = check_auth(&s.selectors, &res, token, !peers.allow.is_empty()).err().map(|e| e.to_string());
    let tls = Tls::of(&args.serve.tls, file.map(|(_, f)| f));
    // Each service: where it would listen, who may use it, why it would be refused.
    let mut seen = Vec::new();
    let mut refused_service = None;
    for svc in services(&args.serve, file, UpstreamLimits::default(), ServiceTls::Explain(tls.on))? {
        let selectors = match svc.bind_selectors() {
            Some(raw) => meshgate_core::parse_selectors(
                raw,
                &registry.names(),
                s.file.as_ref().and_then(|(_, f)| f.host.as_deref()),
            )?,
            None => s.selectors.clone(),
        };
        let options = svc.resolve_options(&s.resolve);
        let r = svc.settle(resolve(registry, &selectors, &snapshot, &options));
        let refused = svc.check_exposure(&selectors, !peers.allow.is_empty()).err();
        if refused_service.is_none() {
            refused_service = refused.clone();
        }
        seen.push(ServiceView { service: svc, res: r, refused });
    }
    let config = file.map(|(p, _)| p);
    let text = if args.json {
        let services = seen.iter().map(ServiceView::json).collect();
        explain_json_with(&res, config, needs_token.as_deref(), tls, services)
    } else {
        let mut t = format!("{}\n", config_line(config));
        t.push_str(&explain_text(&res));
        for l in res.listeners.iter().filter(|l| tls.covers(l)) {
            let _ = writeln!(t, "https: {} speaks TLS (HTTP/2 or HTTP/1.1)", tls.url(l));
        }
        if let Some(note) = &tls_note {
            let _ = writeln!(t, "{note}");
        }
        if let Some(why) = &needs_token {
            let _ = writeln!(t, "token: needed; serve would stop here: {why}");
        }
        for v in &seen {
            v.text(&mut t);
        }
        t
    };
    if let Some(why) = refused_service {
        return Err(CliError::WithAnswer { answer: text, error: Box::new(CliError::Refused(why)) });
    }
    if res.nothing_to_bind() {
        let error = CliError::NothingMatched(res.fallback_reason.clone().unwrap_or_else(|| "nothing to bind".into()));
        return Err(CliError::WithAnswer { answer: text, error: Box::new(error) });
    }
    Ok(text)
}

/// One service as `explain` shows it.
struct ServiceView {
    service: Service,
    res: Resolution,
    refused: Option<String>,
}

impl ServiceView {
    fn access(&self) -> String {
        match self.service.peer_access() {
            PeerAccess::Inherit => "the top-level allow-list".into(),
            PeerAccess::AnyPeer => {
                "every peer of the mesh (allow_peers = [\"*\"]: no per-peer identity is checked)".into()
            }
            PeerAccess::Peers(list) => {
                format!("its own allow-list ({} WireGuard key(s), and tailnet logins/tags)", list.len())
            }
        }
    }

    fn urls(&self) -> Vec<String> {
        self.res
            .listeners
            .iter()
            .map(|l| {
                let addr = if l.address.addr.is_ipv6() { format!("[{}]", l.address) } else { l.address.to_string() };
                format!("{}://{addr}:{}", self.service.protocol(), l.port)
            })
            .collect()
    }

    fn json(&self) -> serde_json::Value {
        let s = &self.service;
        json!({
            "name": s.name(),
            "protocol": s.protocol().as_str(),
            "port": s.port(),
            "upstream": s.upstream_text(),
            "path": s.path_prefix(),
            "proxy_protocol": s.sends_proxy_protocol(),
            "bind": self.res.selectors,
            "access": self.access(),
            "any_peer": *s.peer_access() == PeerAccess::AnyPeer,
            "listeners": self.urls(),
            "fallback": self.res.fallback_reason,
            "refused": self.refused,
        })
    }

    fn text(&self, out: &mut String) {
        let s = &self.service;
        let _ = writeln!(out, "service {} ({}, port {}) -> {}:", s.name(), s.protocol(), s.port(), s.upstream_text());
        let _ = writeln!(out, "  bind {}; who: {}", self.res.selectors.join(" + "), self.access());
        for (u, l) in self.urls().iter().zip(&self.res.listeners) {
            let _ = writeln!(out, "  {u}  ({}): {}", l.provider, l.reason);
        }
        if let Some(r) = &self.res.fallback_reason {
            let _ = writeln!(out, "  fallback: {r}");
        }
        if let Some(why) = &self.refused {
            let _ = writeln!(out, "  refused; serve would stop here: {why}");
        }
    }
}

/// The `explain --json` document (one object and a newline).
pub fn explain_json(res: &Resolution) -> String {
    explain_json_with(res, None, None, Tls { on: false, loopback: false }, Vec::new())
}

/// The document with its `token_needed` member: the refusal `serve` would
/// give for want of a token, or null.
/// Which listeners `serve` with these flags would serve over TLS (read from
/// the flags and the config's `[tls]` alone: explain opens no key).
#[derive(Debug, Clone, Copy)]
struct Tls {
    on: bool,
    loopback: bool,
}

impl Tls {
    fn of(args: &TlsArgs, file: Option<&FileConfig>) -> Self {
        let cfg = file.map(|f| f.tls.clone()).unwrap_or_default();
        let on = args.tls_cert.is_some()
            || args.tls.is_some()
            || cfg.cert.is_some()
            || cfg.self_signed
            || cfg.mode.is_some();
        Self { on, loopback: on && (args.tls_loopback || cfg.loopback) }
    }

    fn covers(self, l: &Listener) -> bool {
        self.on && (!l.is_loopback() || self.loopback)
    }

    fn url(self, l: &Listener) -> String {
        let addr = if l.address.addr.is_ipv6() { format!("[{}]", l.address) } else { l.address.to_string() };
        format!("{}://{addr}:{}", if self.covers(l) { "https" } else { "http" }, l.port)
    }
}

/// The `explain --json` document, members in the order docs/cli.md shows.
#[derive(Serialize)]
struct Doc<'a> {
    config: Option<&'a Path>,
    selectors: &'a [String],
    listeners: Vec<ListenerDoc<'a>>,
    fallback: bool,
    fallback_reason: Option<&'a str>,
    notes: &'a [String],
    providers: &'a [ProviderReport],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    daemons: &'a [DaemonFact],
    token_needed: Option<&'a str>,
    /// Each `[[service]]` and `--tcp` (absent when there is none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    services: Vec<serde_json::Value>,
}

/// A listener and the URL `serve` would answer on.
#[derive(Serialize)]
struct ListenerDoc<'a> {
    #[serde(flatten)]
    listener: &'a Listener,
    url: String,
}

fn explain_json_with(
    res: &Resolution,
    config: Option<&Path>,
    needs_token: Option<&str>,
    tls: Tls,
    services: Vec<serde_json::Value>,
) -> String {
    let doc = Doc {
        config,
        selectors: &res.selectors,
        listeners: res.listeners.iter().map(|l| ListenerDoc { listener: l, url: tls.url(l) }).collect(),
        fallback: res.fallback,
        fallback_reason: res.fallback_reason.as_deref(),
        notes: &res.notes,
        providers: &res.providers,
        daemons: &res.daemons,
        token_needed: needs_token,
        services,
    };
    let mut out = serde_json::to_string_pretty(&doc).unwrap_or_else(|e| json!({ "error": e.to_string() }).to_string());
    out.push('\n');
    out
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
    // One column for every name, however long (cloudflare-warp).
    let width = res.providers.iter().map(|p| p.name.len()).max().unwrap_or(0);
    for p in &res.providers {
        if p.candidates.is_empty() && p.rejected.is_empty() {
            let _ = writeln!(out, "  {:<width$}  nothing", p.name);
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

#[cfg(test)]
mod tests {
    use meshgate_core::resolver::ScopedAddr;

    use super::*;

    fn listener(addr: &str) -> Listener {
        Listener {
            address: ScopedAddr { addr: addr.parse().unwrap(), scope_id: None, scope_name: None },
            port: 18789,
            provider: "p".into(),
            interface: None,
            reason: "r".into(),
            role: ListenerRole::Selected,
        }
    }

    #[test]
    fn https_where_serve_would_speak_tls() {
        let mesh = listener("10.8.0.1");
        let lo = listener("127.0.0.1");
        let six = listener("fd77::1");
        let off = Tls::of(&TlsArgs::default(), None);
        assert_eq!(off.url(&mesh), "http://10.8.0.1:18789");
        let on = Tls::of(&TlsArgs { tls: Some(super::super::args::TlsMode::SelfSigned), ..TlsArgs::default() }, None);
        assert_eq!(on.url(&mesh), "https://10.8.0.1:18789");
        assert_eq!(on.url(&six), "https://[fd77::1]:18789");
        assert_eq!(on.url(&lo), "http://127.0.0.1:18789", "loopback stays plain without --tls-loopback");
        let both = Tls::of(
            &TlsArgs {
                tls_cert: Some("c".into()),
                tls_key: Some("k".into()),
                tls_loopback: true,
                ..TlsArgs::default()
            },
            None,
        );
        assert_eq!(both.url(&lo), "https://127.0.0.1:18789");
        // `[tls] mode = "internal"` in the config file alone turns it on.
        let f = FileConfig::parse("[tls]\nmode = \"internal\"\n", std::path::Path::new("m.toml")).unwrap();
        assert_eq!(Tls::of(&TlsArgs::default(), Some(&f)).url(&mesh), "https://10.8.0.1:18789");
    }
}
