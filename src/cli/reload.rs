//! What SIGHUP re-reads: the config file and the token, checked exactly as at
//! start. A bad new configuration is refused (the caller logs it and keeps the
//! old one); a good one yields the log filter to apply and the list of what
//! changed, each change saying whether it took effect.

use tracing_subscriber::EnvFilter;

use super::args::ServeArgs;
use super::error::CliError;
use super::logging::{filter_text, parse_filter};
use super::settings::{load_token_warned, registry, serve_options, settings, wireguard_peers, ServeOptions};
use crate::gateway::Token;

/// One reading of the configuration.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The selectors, port and fallback as `explain` names them.
    bind: String,
    /// SHA-256 of the token, to tell a change without keeping a second copy.
    token: Option<Vec<u8>>,
    options: ServeOptions,
    peers: String,
    /// The log filter after precedence.
    pub(crate) filter_text: String,
}

impl Loaded {
    /// Reads and checks everything `serve` reads at start; returns the token
    /// too (read once, so a warning about it is logged once per reading).
    pub(crate) fn read(args: &ServeArgs) -> Result<(Self, Option<Token>), CliError> {
        let registry = registry()?;
        let s = settings(&args.bind, registry)?;
        let file = s.file.as_ref().map(|(p, f)| (p.as_path(), f));
        let token = load_token_warned(args, std::env::var("MESHGATE_TOKEN").ok(), file)?;
        let options = serve_options(args, file)?;
        wireguard_peers(args, file.map(|(_, f)| f))?;
        let f = file.map(|(_, f)| f);
        let peers = format!("{:?} {:?} {:?}", args.allow_peer, f.map(|f| &f.peer_names), f.map(|f| &f.allow_list));
        let filter_text = filter_text(
            args.log.log_level.as_deref(),
            std::env::var("RUST_LOG").ok().as_deref(),
            f.and_then(|f| f.log_level.as_deref()),
            args.log.access_log || f.and_then(|f| f.access_log).unwrap_or(false),
        );
        parse_filter(&filter_text)?;
        let selectors: Vec<String> = s.selectors.iter().map(ToString::to_string).collect();
        let loaded = Self {
            bind: format!("{} port {} fallback {:?}", selectors.join(","), s.resolve.port, s.resolve.fallback),
            token: token.as_ref().map(|t| ring::digest::digest(&ring::digest::SHA256, t.expose()).as_ref().to_vec()),
            options,
            peers,
            filter_text,
        };
        Ok((loaded, token))
    }

    /// The log filter (checked in [`read`](Self::read)).
    pub(crate) fn filter(&self) -> EnvFilter {
        parse_filter(&self.filter_text).unwrap_or_else(|_| EnvFilter::new("info"))
    }

    /// What differs in `new`, one line each, saying whether it applies now.
    pub(crate) fn changes(&self, new: &Loaded) -> Vec<String> {
        let restart = "takes effect at the next restart (the running gateway keeps the old one)";
        let mut out = Vec::new();
        if self.filter_text != new.filter_text {
            out.push(format!("log filter {:?} -> {:?}: applied", self.filter_text, new.filter_text));
        }
        if self.token != new.token {
            out.push(format!("the token changed: {restart}"));
        }
        if self.peers != new.peers {
            out.push(format!("the WireGuard peers or allow-list changed: {restart}"));
        }
        if self.options != new.options {
            out.push(format!("the upstream or limits changed: {restart}"));
        }
        if self.bind != new.bind {
            out.push(format!("the bind changed ({} -> {}): {restart}", self.bind, new.bind));
        }
        if out.is_empty() {
            out.push("configuration re-read; nothing changed".to_owned());
        }
        out
    }
}
