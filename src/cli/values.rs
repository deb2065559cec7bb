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
