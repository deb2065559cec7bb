//! The log on stderr: text (coloured only on a terminal, never with
//! `NO_COLOR`) or one JSON object a line; the level from `--log-level`, else
//! `RUST_LOG`, else `info`; the access log (target `meshgate::access`) only
//! with `--access-log`. The filter can be replaced while serving (SIGHUP).

use std::io::IsTerminal as _;
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, EnvFilter, Registry};

use super::args::{LogArgs, LogFormat};
use super::error::CliError;
use super::values::parse_log_level;
use crate::gateway::metrics::ACCESS_TARGET;

/// The handle that swaps the filter of the installed subscriber.
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// The filter text for a level (or a full filter) and the access-log switch.
/// The level: `--log-level`, else `RUST_LOG`, else the config file's
/// `log_level`, else `info`.
pub(super) fn filter_text(
    level: Option<&str>,
    rust_log: Option<&str>,
    file_level: Option<&str>,
    access_log: bool,
) -> String {
    let base =
        [level, rust_log, file_level].into_iter().flatten().map(str::trim).find(|l| !l.is_empty()).unwrap_or("info");
    let access = if access_log { "info" } else { "off" };
    format!("{base},{ACCESS_TARGET}={access}")
}

/// Parses a filter, naming the value and the fix when it is bad.
pub(super) fn parse_filter(text: &str) -> Result<EnvFilter, CliError> {
    EnvFilter::builder().parse(text).map_err(|e| {
        CliError::BadFlag(format!(
            "log level {text:?}: {e}; use error, warn, info, debug or trace, or a filter such as `info,meshgate=debug`"
        ))
    })
}

/// True when the text log may carry colour: stderr is a terminal and
/// `NO_COLOR` is unset or empty (<https://no-color.org>).
pub(super) fn colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// `RUST_LOG` when it holds a usable filter; a bad one (`bogus`, which
/// tracing would read as a target and so log nothing else) is ignored, with
/// the reason.
pub(super) fn rust_log() -> (Option<String>, Option<String>) {
    match std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty()) {
        None => (None, None),
        Some(v) => match parse_log_level(&v) {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(format!("RUST_LOG={v:?} is ignored: {e}"))),
        },
    }
}

/// Installs the subscriber for `serve`.
pub fn init(args: &LogArgs) -> Result<(), CliError> {
    let (rust_log, bad_rust_log) = rust_log();
    let filter = parse_filter(&filter_text(args.log_level.as_deref(), rust_log.as_deref(), None, args.access_log))?;
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match args.log_format.unwrap_or_default() {
        LogFormat::Text => registry.with(layer).try_init(),
        LogFormat::Json => registry.with(layer.json().flatten_event(true)).try_init(),
    };
    if installed.is_ok() {
        let _ = FILTER.set(handle);
    }
    // Said once, at start, where the log goes; only when RUST_LOG would have
    // been used (no --log-level).
    if let (None, Some(why)) = (&args.log_level, bad_rust_log) {
        if installed.is_ok() {
            tracing::warn!("{why}; the default level is used");
        } else {
            eprintln!("meshgate: warning: {why}; the default level is used");
        }
    }
    Ok(())
}

/// Replaces the level (SIGHUP). Returns false when no subscriber of ours is
/// installed (a library caller's own subscriber is left alone).
pub(super) fn set_filter(filter: EnvFilter) -> bool {
    FILTER.get().is_some_and(|h| h.reload(filter).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_precedence_and_access_switch() {
        assert_eq!(filter_text(None, None, None, false), "info,meshgate::access=off");
        assert_eq!(filter_text(None, Some("debug"), Some("warn"), true), "debug,meshgate::access=info");
        assert_eq!(filter_text(Some("warn"), Some("debug"), None, false), "warn,meshgate::access=off");
        assert_eq!(filter_text(None, None, Some("error"), false), "error,meshgate::access=off");
        assert_eq!(filter_text(Some(""), Some(" "), None, false), "info,meshgate::access=off");
        assert!(parse_filter("warn").is_ok());
        assert!(parse_filter("=[").is_err());
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
    }
}
