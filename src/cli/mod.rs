//! The `meshgate` program: its commands (`serve`, `explain`, `providers`, `status`,
//! `ca`, `completions`, `man`), the log setup, flag
//! parsing and settings precedence, the text and JSON printers, and the map
//! from errors to exit codes. Only `main.rs` uses this module; it uses the
//! library ([`crate::gateway`]) and never the reverse.

mod args;
mod ca;
mod env;
mod error;
mod explain;
mod generate;
mod logging;
mod notify;
mod peers;
mod print;
mod providers;
mod reload;
mod serve;
mod settings;
mod status;
mod values;

pub use args::{
    BindArgs, CaArgs, Cli, Command, CompletionsArgs, ExplainArgs, FallbackArg, LogArgs, LogFormat, ManArgs, PeersArgs,
    ProvidersArgs, ServeArgs, StatusArgs, TlsArgs, TlsMode,
};
pub use ca::ca;
pub use env::apply as apply_env;
pub use error::CliError;
pub use explain::{explain, explain_json, explain_text};
pub use generate::{completions, man_page};
pub use logging::init as init_logging;
pub use peers::peers;
pub use print::{event_line, listening_line, stopped_line};
pub use providers::providers;
pub use serve::run as serve;
pub use settings::{
    browser_policy, load_token, load_token_warned, peer_rules, registry, serve_options, settings, tls_setup,
    ServeOptions, Settings, TlsKind, TlsSetup,
};
pub use status::status;
pub use values::{parse_body_bytes, parse_connections, parse_header_bytes, parse_log_level, parse_seconds};
