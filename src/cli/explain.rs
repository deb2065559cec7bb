//! `meshgate explain`: resolve on this host and say why, as text for a person
//! or one JSON document. It takes every `serve` flag, so that `serve` can be
//! swapped for `explain` in a command line, and says when the bind would need
//! a token that is not set.

use std::fmt::Write as _;

use meshgate_core::resolver::{resolve, ListenerRole, Resolution};
use meshgate_core::source::InterfaceSource;
use serde_json::json;

use super::args::ExplainArgs;
use super::error::CliError;
use super::settings::{load_token, registry, settings, wireguard_peers};
use crate::gateway::check_auth;

/// Runs `explain`: resolve on this host and print why. Returns the text to
/// print; with nothing to bind (exit 69) the answer still goes to stdout
/// ([`CliError::WithAnswer`]).
pub async fn explain(args: &ExplainArgs, source: &dyn InterfaceSource) -> Result<String, CliError> {
    let registry = registry()?;
    let s = settings(&args.serve.bind, registry)?;
    let file = s.file.as_ref().map(|(p, f)| (p.as_path(), f));
    // A token that cannot be read is part of the answer, not a failure of it.
    let (token, token_error) = match load_token(&args.serve, std::env::var("MESHGATE_TOKEN").ok(), file) {
        Ok(t) => (t, None),
        Err(e) => (None, Some(e.to_string())),
    };
    let peers = wireguard_peers(&args.serve, file.map(|(_, f)| f))?;
    let snapshot = source.snapshot().await?;
    let res = resolve(registry, &s.selectors, &snapshot, &s.resolve);
    let needs_token =
        check_auth(&s.selectors, &res, token.as_ref(), peers.allows_any()).err().map(|e| match &token_error {
            Some(t) => format!("{e} (the token given cannot be used: {t})"),
            None => e.to_string(),
        });
    let text = if args.json {
        explain_json_with(&res, needs_token.as_deref())
    } else {
        let mut t = explain_text(&res);
        if let Some(why) = &needs_token {
            let _ = writeln!(t, "token: needed; serve would stop here: {why}");
        }
        t
    };
    if res.nothing_to_bind() {
        let error = CliError::NothingMatched(res.fallback_reason.clone().unwrap_or_else(|| "nothing to bind".into()));
        return Err(CliError::WithAnswer { answer: text, error: Box::new(error) });
    }
    Ok(text)
}

/// The `explain --json` document (one object and a newline).
pub fn explain_json(res: &Resolution) -> String {
    explain_json_with(res, None)
}

/// The document with its `token_needed` member: the refusal `serve` would
/// give for want of a token, or null.
fn explain_json_with(res: &Resolution, needs_token: Option<&str>) -> String {
    let mut doc = serde_json::to_value(res).unwrap_or_else(|e| json!({ "error": e.to_string() }));
    if let Some(map) = doc.as_object_mut() {
        map.insert("token_needed".into(), json!(needs_token));
    }
    let mut out = serde_json::to_string_pretty(&doc).unwrap_or_default();
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
