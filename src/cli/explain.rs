//! `meshgate explain`: resolve on this host and say why, as text for a person
//! or one JSON document.

use std::fmt::Write as _;

use meshgate_core::resolver::{resolve, ListenerRole, Resolution};
use meshgate_core::source::InterfaceSource;

use super::args::ExplainArgs;
use super::error::CliError;
use super::settings::{registry, settings};

/// Runs `explain`: resolve on this host and print why. Returns the text to print.
pub async fn explain(args: &ExplainArgs, source: &dyn InterfaceSource) -> Result<String, CliError> {
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
