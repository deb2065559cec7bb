//! Checking flag and config values: each parser names the value, what was
//! expected and an example. Used by clap for flags and by `settings.rs` for
//! the same keys in the config file.

use std::time::Duration;

use crate::gateway::MIN_HEADER_BYTES;

/// The longest timeout a flag or the config file may set (one day).
pub(crate) const MAX_SECONDS: f64 = 86_400.0;
/// The largest `--max-header-bytes` (16 MiB).
pub(crate) const MAX_HEADER_BYTES: usize = 16 << 20;

/// The largest `--max-connections` (a million).
pub(crate) const MAX_CONNECTIONS: usize = 1_000_000;
/// The largest body cap (1 TiB: effectively none, but still a number).
pub(crate) const MAX_BODY_BYTES: u64 = 1 << 40;

/// Parses a connection cap: 1 to a million.
pub fn parse_connections(value: &str) -> Result<usize, String> {
    let v: u64 =
        value.trim().parse().map_err(|_| format!("{value:?} is not a number of connections; write e.g. 512"))?;
    connections(v).map_err(|d| format!("{value:?}: {d}"))
}

pub(crate) fn connections(v: u64) -> Result<usize, String> {
    match usize::try_from(v) {
        Ok(n) if (1..=MAX_CONNECTIONS).contains(&n) => Ok(n),
        _ => Err(format!("expected a number of connections from 1 to {MAX_CONNECTIONS} (e.g. 512)")),
    }
}

/// Parses a request body cap in bytes: 0 (no body at all) to 1 TiB.
pub fn parse_body_bytes(value: &str) -> Result<u64, String> {
    let v: u64 = value.trim().parse().map_err(|_| format!("{value:?} is not a number of bytes; write e.g. 1048576"))?;
    body_bytes(v).map_err(|d| format!("{value:?}: {d}"))
}

pub(crate) fn body_bytes(v: u64) -> Result<u64, String> {
    if v > MAX_BODY_BYTES {
        return Err(format!("expected bytes from 0 to {MAX_BODY_BYTES} (e.g. 1048576)"));
    }
    Ok(v)
}

/// Parses a timeout in seconds (`5`, `0.25`): positive, at most a day.
pub fn parse_seconds(value: &str) -> Result<Duration, String> {
    let v: f64 =
        value.trim().parse().map_err(|_| format!("{value:?} is not a number of seconds; write e.g. 5 or 0.5"))?;
    seconds(v).map_err(|d| format!("{value:?}: {d}"))
}

pub(crate) fn seconds(v: f64) -> Result<Duration, String> {
    if !v.is_finite() || v <= 0.0 || v > MAX_SECONDS {
        return Err(format!("expected seconds above 0 and at most {MAX_SECONDS} (e.g. 5 or 0.5)"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Parses a request-head size cap in bytes: at least 8192 (hyper's minimum).
pub fn parse_header_bytes(value: &str) -> Result<usize, String> {
    let v: u64 = value.trim().parse().map_err(|_| format!("{value:?} is not a number of bytes; write e.g. 65536"))?;
    header_bytes(v).map_err(|d| format!("{value:?}: {d}"))
}

pub(crate) fn header_bytes(v: u64) -> Result<usize, String> {
    match usize::try_from(v) {
        Ok(b) if (MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&b) => Ok(b),
        _ => Err(format!("expected bytes from {MIN_HEADER_BYTES} to {MAX_HEADER_BYTES} (e.g. 65536)")),
    }
}

/// The levels a log filter directive may name.
const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];

/// Checks a log level or filter (`warn`, `info,meshgate=debug`): every
/// directive is a level or `TARGET=LEVEL`. A bare word that is no level is
/// refused: tracing would read it as a target name and log nothing else,
/// security warnings included. The error says what was meant, when it can
/// tell (`warning`: `warn`).
pub fn parse_log_level(value: &str) -> Result<String, String> {
    let is_level = |l: &str| l.parse::<tracing_subscriber::filter::LevelFilter>().is_ok();
    let hint = |word: &str| match suggest_level(word) {
        Some(s) => format!("did you mean `{s}`? "),
        None => String::new(),
    };
    if !value.trim().is_empty() && value.split(',').all(|d| d.trim().is_empty()) {
        return Err(format!(
            "{value:?} names no log level; use error, warn, info, debug, trace or off, or TARGET=LEVEL such as meshgate=debug"
        ));
    }
    for d in value.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = d.rsplit_once('=').map_or(d, |(_, l)| l.trim());
        if !is_level(level) {
            return Err(format!(
                "{level:?} is not a log level; {}use error, warn, info, debug, trace or off, or TARGET=LEVEL such as meshgate=debug",
                hint(level)
            ));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(value)
        .map_err(|e| format!("{e}; write a level (warn) or a filter such as `info,meshgate=debug`"))?;
    Ok(value.trim().to_owned())
}

/// The level `word` was most likely meant to be: one it starts with or that
/// starts with it (`warning`, `err`), else one a typo or two away.
fn suggest_level(word: &str) -> Option<&'static str> {
    let w = word.to_ascii_lowercase();
    if w.len() >= 3 {
        if let Some(l) = LEVELS.iter().find(|l| w.starts_with(**l) || l.starts_with(w.as_str())) {
            return Some(l);
        }
    }
    LEVELS.iter().map(|l| (edit_distance(&w, l), *l)).filter(|(d, _)| *d <= 2).min_by_key(|(d, _)| *d).map(|(_, l)| l)
}

/// Levenshtein distance (the words are a few letters long).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(row[j + 1] + 1);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_level_typo_is_refused_with_the_level_meant() {
        for ok in ["warn", "INFO", "off", "info,meshgate=debug", "meshgate::access=trace", " debug "] {
            assert!(parse_log_level(ok).is_ok(), "{ok}");
        }
        let e = parse_log_level("warning").unwrap_err();
        assert!(e.starts_with("\"warning\" is not a log level; did you mean `warn`?"), "{e}");
        assert!(parse_log_level("infp").unwrap_err().contains("did you mean `info`?"));
        assert!(parse_log_level("meshgate=dbug").unwrap_err().contains("did you mean `debug`?"));
        let e = parse_log_level("bogus").unwrap_err();
        assert!(!e.contains("did you mean") && e.contains("use error, warn, info"), "{e}");
        assert!(parse_log_level("meshgate").is_err(), "a bare target silences everything else");
        // Commas and no level: tracing would take it as a filter that lets
        // nothing but errors through. (Empty is unset: the default level.)
        for empty in [",", " , ", ",,"] {
            let e = parse_log_level(empty).unwrap_err();
            assert!(e.contains("no log level"), "{empty:?}: {e}");
        }
        assert_eq!(parse_log_level("").as_deref(), Ok(""));
    }
}

/// `--bind`'s values: any text (the selectors are parsed in settings.rs,
/// where a bad one can say where it came from), offered to shell completion
/// as the built-in provider names and the other selector forms.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SelectorNames;

impl clap::builder::TypedValueParser for SelectorNames {
    type Value = String;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        value.to_str().map(str::to_owned).ok_or_else(|| clap::Error::new(clap::error::ErrorKind::InvalidUtf8))
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        const FORMS: [&str; 4] = ["auto", "custom", "iface:", "cidr:"];
        Some(Box::new(crate::builtin::NAMES.iter().chain(FORMS.iter()).map(|n| clap::builder::PossibleValue::new(*n))))
    }
}
