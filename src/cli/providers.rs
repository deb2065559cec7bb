//! `meshgate providers`: the bind modes linked into this program.

use std::fmt::Write as _;

use meshgate_core::config::ProviderConfig;
use meshgate_core::provider::Role;
use serde_json::json;

use super::args::ProvidersArgs;
use super::error::CliError;
use super::settings::registry;

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
                    "auto": i.role == Role::Mesh,
                    "crate": e.descriptor.crate_name,
                    "matches": e.provider.matches(&none),
                })
            })
            .collect();
        let mut doc = serde_json::to_string_pretty(&json!({ "providers": list })).unwrap_or_default();
        doc.push('\n');
        return Ok(doc);
    }
    let mut out = String::new();
    for e in registry.entries() {
        let i = e.info();
        let m = e.provider.matches(&none);
        let auto = if i.role == Role::Mesh { "auto" } else { "    " };
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
