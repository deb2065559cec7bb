//! What SIGHUP re-reads: the config file and the token, checked exactly as at
//! start. A bad new configuration is refused (the caller logs it and keeps the
//! old one). A good one is applied where that needs no re-binding: the log
//! filter, the token, the peer names and allow-list, the connection and
//! upstream limits. Each change is named, saying whether it took effect; what
//! needs a restart (the bind, the upstream, setting or removing the token, the
//! own routes' body cap) is left as it runs and named again at the next reload.

use std::sync::Arc;

use tracing_subscriber::EnvFilter;

use super::args::ServeArgs;
use super::error::CliError;
use super::logging::{filter_text, parse_filter, rust_log};
use super::settings::{
    browser_policy, load_token_warned, peer_rules, registry, serve_options, settings, token_path, ServeOptions,
};
use super::values::parse_log_level;
use crate::gateway::auth::token_value_matches;
use crate::gateway::{Controls, PeerRules, SharedPeerRules, Token};

const RESTART: &str = "takes effect at the next restart (the running gateway keeps the old one)";

/// One reading of the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    /// The selectors, port and fallback as `explain` names them.
    bind: String,
    /// Settings read once at start, each named with how it reads now: a
    /// change is reported as needing a restart.
    restart_only: Vec<(&'static str, String)>,
    token: Option<Token>,
    /// True when the token file is a systemd credential: a copy made when
    /// the service started, which a reload does not renew.
    token_is_credential: bool,
    pub(crate) options: ServeOptions,
    pub(crate) peers: PeerRules,
    /// The log filter after precedence.
    pub(crate) filter_text: String,
}

/// What a reload can change in the running gateway.
#[derive(Debug, Clone)]
pub(crate) struct Live {
    /// The gateway's limits, upstream limits and token.
    pub(crate) controls: Controls,
    /// The rules both peer lookups read.
    pub(crate) rules: SharedPeerRules,
}

impl Loaded {
    /// Reads and checks everything `serve` reads at start (the token once, so
    /// a warning about it is logged once per reading).
    pub(crate) fn read(args: &ServeArgs) -> Result<Self, CliError> {
        let registry = registry()?;
        let s = settings(&args.bind, registry)?;
        let file = s.file.as_ref().map(|(p, f)| (p.as_path(), f));
        let env_token = super::env::var("MESHGATE_TOKEN");
        let token_is_credential = is_credential(token_path(args, env_token.is_some(), file).as_deref());
        let token = load_token_warned(args, env_token, file)?;
        let options = serve_options(args, file)?;
        let f = file.map(|(_, f)| f);
        let peers = peer_rules(&args.allow_peer, f)?;
        // A bad log_level is refused with its line: tracing would read it as
        // a target name and log nothing else.
        if let (Some((path, f)), Some(level)) = (file, f.and_then(|f| f.log_level.as_deref())) {
            parse_log_level(level).map_err(|e| CliError::from(f.value_error(path, "log_level", level, e)))?;
        }
        let filter_text = filter_text(
            args.log.log_level.as_deref(),
            rust_log().0.as_deref(),
            f.and_then(|f| f.log_level.as_deref()),
            args.log.access_log || f.and_then(|f| f.access_log).unwrap_or(false),
        );
        parse_filter(&filter_text)?;
        let selectors: Vec<String> = s.selectors.iter().map(ToString::to_string).collect();
        // The port and fallback are in `bind` already.
        let mut resolve = s.resolve.clone();
        (resolve.port, resolve.fallback) = (0, Default::default());
        let restart_only = vec![
            (
                "the provider settings ([providers], auto, loopback_companion, host)",
                format!("{resolve:?} {:?}", f.map(|f| &f.host)),
            ),
            ("allowed_hosts or allowed_origins", format!("{:?}", browser_policy(args, f))),
            ("[tls] or state_dir", format!("{:?} {:?}", f.map(|f| &f.tls), f.map(|f| &f.state_dir))),
            ("follow", format!("{:?}", f.and_then(|f| f.follow))),
        ];
        Ok(Self {
            bind: format!("{} port {} fallback {:?}", selectors.join(","), s.resolve.port, s.resolve.fallback),
            restart_only,
            token,
            token_is_credential,
            options,
            peers,
            filter_text,
        })
    }

    /// The token read.
    pub(crate) fn token(&self) -> Option<&Token> {
        self.token.as_ref()
    }

    /// The log filter (checked in [`read`](Self::read)).
    pub(crate) fn filter(&self) -> EnvFilter {
        parse_filter(&self.filter_text).unwrap_or_else(|_| EnvFilter::new("info"))
    }

    /// Puts what differs in `new` in force through `live` (all but the log
    /// filter, which the caller sets), one line per change saying whether it
    /// applied. Returns the lines and what is in force now: `new`, with the
    /// old value of each change that needs a restart.
    pub(crate) fn apply(&self, new: &Loaded, live: &Live) -> (Vec<String>, Loaded) {
        let mut out = Vec::new();
        let mut now = new.clone();
        if self.filter_text != new.filter_text {
            out.push(format!("log filter {:?} -> {:?}: applied", self.filter_text, new.filter_text));
        }
        // Compared in constant time, like every comparison with the token.
        let same_token = match (&self.token, &new.token) {
            (Some(old), Some(new)) => token_value_matches(old.expose(), new),
            (old, new) => old.is_none() && new.is_none(),
        };
        match (&self.token, &new.token) {
            _ if same_token && new.token_is_credential => out.push(
                "the token is a systemd credential, copied when the service started and not renewed by a reload: \
                 after changing the token file, `systemctl restart meshgate`"
                    .to_owned(),
            ),
            _ if same_token => {}
            (Some(_), Some(token)) => match live.controls.set_token(token.clone()) {
                Ok(()) => out.push(
                    "the token changed: applied; requests need the new one, browser sessions signed with the old one ended, and open connections off loopback were closed after their request in flight"
                        .to_owned(),
                ),
                Err(e) => {
                    out.push(format!("the token changed: {e}"));
                    now.token = self.token.clone();
                }
            },
            (None, _) => {
                out.push(format!("a token is now set: {RESTART}"));
                now.token = None;
            }
            (Some(_), _) => {
                out.push(format!("the token was removed: {RESTART}"));
                now.token = self.token.clone();
            }
        }
        if self.peers != new.peers {
            live.rules.store(Arc::new(new.peers.clone()));
            // Identity and names are found once per connection: open ones go.
            live.controls.revoke_connections();
            out.push(
                "the peer names or allow-list changed: applied to every request from now on (open connections off loopback were closed after their request in flight)"
                    .to_owned(),
            );
        }
        let (old_o, new_o) = (&self.options, &new.options);
        let upstream_moved = old_o.upstream != new_o.upstream;
        if upstream_moved {
            // Its limits and header rules were meant for the new one: both wait.
            out.push(format!("the upstream changed: {RESTART}"));
            now.options.upstream = old_o.upstream.clone();
            now.options.upstream_limits = old_o.upstream_limits;
        }
        let mut limits = new_o.server_limits;
        if old_o.server_limits.max_body_bytes != limits.max_body_bytes {
            out.push(format!("max_body_bytes (meshgate's own routes) changed: {RESTART}"));
            limits.max_body_bytes = old_o.server_limits.max_body_bytes;
            now.options.server_limits.max_body_bytes = limits.max_body_bytes;
        }
        if old_o.server_limits != limits {
            live.controls.set_limits(limits);
            out.push(format!(
                "the connection limits changed ({}): applied to connections from now on",
                limits_text(&limits)
            ));
        }
        if old_o.upstream_limits != new_o.upstream_limits && !upstream_moved {
            if live.controls.set_upstream_limits(new_o.upstream_limits) {
                out.push("the upstream limits changed: applied to requests from now on".to_owned());
            } else {
                // No upstream is served: nothing reads them.
                now.options.upstream_limits = old_o.upstream_limits;
            }
        }
        if self.bind != new.bind {
            out.push(format!("the bind changed ({} -> {}): {RESTART}", self.bind, new.bind));
            now.bind = self.bind.clone();
        }
        for ((name, old), (_, new)) in self.restart_only.iter().zip(&new.restart_only) {
            if old != new {
                out.push(format!("{name} changed: {RESTART}"));
            }
        }
        now.restart_only = self.restart_only.clone();
        if out.is_empty() {
            out.push("configuration re-read; nothing changed".to_owned());
        }
        (out, now)
    }
}

/// True when `path` is in systemd's credentials directory (`LoadCredential=`).
fn is_credential(path: Option<&std::path::Path>) -> bool {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty());
    matches!((path, dir), (Some(p), Some(d)) if p.starts_with(&d))
}

/// The limits as the flags name them, for the log line.
fn limits_text(l: &crate::gateway::ServerLimits) -> String {
    format!(
        "max_connections {}, per address {} ({} before credentials), idle_timeout {} s, max_header_bytes {}",
        l.max_connections,
        l.max_connections_per_address,
        l.max_unauthenticated_per_address.min(l.max_connections_per_address),
        l.idle_timeout.as_secs_f64(),
        l.max_header_bytes
    )
}
