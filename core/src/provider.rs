//! The [`BindProvider`] trait: what a bind mode is, and the data it returns.
//!
//! A provider looks at a [`Snapshot`] (never at the OS) and says which addresses it
//! claims, how sure it is ([`Specificity`]) and why. Most mesh providers are a
//! declarative [`MeshSpec`] run through [`MeshMatcher`]; a provider with odd rules
//! implements [`BindProvider::claim`] by hand.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::config::ProviderConfig;
use crate::fact::DaemonState;
use crate::model::{is_link_local, Interface, InterfaceKind, Snapshot};

/// How a provider takes part in resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Role {
    /// A mesh VPN: walked by `auto` in priority order.
    Mesh,
    /// Loopback: the fallback and the companion listener.
    Loopback,
    /// Local network addresses: only when named, never by `auto`.
    Lan,
    /// The wildcards: only when named, never by `auto`, never as a fallback.
    Wildcard,
    /// A public overlay (Yggdrasil): anyone on it can connect, so it is only
    /// used when named, never by `auto`.
    Public,
}

/// The constant facts about a provider: what `meshgate providers` lists.
#[derive(Debug, Clone, Copy)]
pub struct ProviderInfo {
    /// The selector name (`wireguard`, `tailnet`); lowercase, `[a-z0-9-]`.
    pub name: &'static str,
    /// Lower comes first, in `auto` and in listings.
    pub priority: u16,
    /// One line for `meshgate providers`.
    pub description: &'static str,
    /// How it takes part in resolution.
    pub role: Role,
}

/// How specific a claim is. A more specific claim on an interface beats a
/// range-only claim by another provider (shared CGNAT space is not proof).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Specificity {
    /// The address is in one of the provider's ranges, nothing more.
    Range,
    /// The interface name matches one of the provider's patterns.
    Name,
    /// The OS says the interface is of the provider's kind.
    Kind,
    /// The mesh's own daemon says so (its local API, its admin socket, the
    /// device on its command line): the strongest evidence a mesh has.
    Daemon,
    /// A provider whose claim is exact by definition (loopback, wildcards).
    Exact,
}

/// One address a provider claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// The interface that holds the address (`*` for wildcards).
    pub interface: String,
    /// The address.
    pub address: IpAddr,
    /// How sure the provider is.
    pub specificity: Specificity,
    /// Why, for a person.
    pub reason: String,
}

/// Something a provider looked at and turned down, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// The interface.
    pub interface: String,
    /// The address, when the rejection is about one address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// Why, for a person.
    pub reason: String,
}

/// A provider's answer for one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Claims {
    /// Addresses claimed.
    pub candidates: Vec<Candidate>,
    /// Addresses and interfaces turned down.
    pub rejected: Vec<Rejection>,
}

impl Claims {
    fn reject(&mut self, iface: &Interface, address: Option<IpAddr>, reason: String) {
        self.rejected.push(Rejection { interface: iface.name.clone(), address, reason });
    }
}

/// What a provider matches, for `meshgate providers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MatchSummary {
    /// Interface name patterns.
    pub names: Vec<String>,
    /// Address ranges.
    pub ranges: Vec<String>,
    /// OS interface kinds.
    pub kinds: Vec<String>,
}

/// A bind mode.
///
/// `claim` must be pure: the same snapshot and config give the same claims, in the
/// same order, without I/O. That keeps providers table-testable and lets the
/// resolver run them on every network change.
pub trait BindProvider: Send + Sync {
    /// The constant facts.
    fn info(&self) -> ProviderInfo;
    /// What it matches, with the user's config applied.
    fn matches(&self, config: &ProviderConfig) -> MatchSummary;
    /// The addresses it claims in this snapshot, and what it turned down.
    fn claim(&self, snapshot: &Snapshot, config: &ProviderConfig) -> Claims;
}

impl fmt::Debug for dyn BindProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BindProvider").field("name", &self.info().name).finish()
    }
}

/// A declarative description of how one mesh VPN shows up on a host.
#[derive(Debug, Clone, Copy)]
pub struct MeshSpec {
    /// The product name, for reasons (`Tailscale`, `NetBird`).
    pub mesh: &'static str,
    /// Name patterns (globs) that identify the mesh's interfaces on their own.
    pub names: &'static [&'static str],
    /// Name patterns that count only together with an address in `ranges`
    /// (macOS puts every VPN on `utunN`).
    pub weak_names: &'static [&'static str],
    /// Name patterns that belong to another mode and are never claimed.
    pub exclude_names: &'static [(&'static str, &'static str)],
    /// OS kinds that identify the mesh's interfaces on their own.
    pub kinds: &'static [InterfaceKind],
    /// Address ranges the mesh uses (may be shared with others: range-only claims
    /// are the weakest).
    pub ranges: &'static [&'static str],
}

/// Runs a [`MeshSpec`] over a snapshot. Build it once (it parses the patterns).
#[derive(Debug, Clone)]
pub struct MeshMatcher {
    spec: MeshSpec,
    names: Vec<glob::Pattern>,
    weak_names: Vec<glob::Pattern>,
    exclude: Vec<(glob::Pattern, &'static str)>,
    ranges: Vec<IpNet>,
}

fn pattern(p: &str) -> glob::Pattern {
    glob::Pattern::new(p).unwrap_or_else(|e| panic!("built-in name pattern {p:?} is invalid: {e}"))
}

impl MeshMatcher {
    /// Parses the spec's patterns and ranges.
    ///
    /// # Panics
    /// On a malformed built-in pattern or range: those are constants, and the
    /// conformance kit builds every provider, so a typo fails the tests.
    pub fn new(spec: MeshSpec) -> Self {
        Self {
            names: spec.names.iter().map(|p| pattern(p)).collect(),
            weak_names: spec.weak_names.iter().map(|p| pattern(p)).collect(),
            exclude: spec.exclude_names.iter().map(|(p, mode)| (pattern(p), *mode)).collect(),
            ranges: spec
                .ranges
                .iter()
                .map(|r| r.parse().unwrap_or_else(|e| panic!("built-in range {r:?} is invalid: {e}")))
                .collect(),
            spec,
        }
    }

    /// The summary for `meshgate providers`.
    pub fn summary(&self, config: &ProviderConfig) -> MatchSummary {
        let mut names: Vec<String> = self.spec.names.iter().map(|s| s.to_string()).collect();
        names.extend(self.spec.weak_names.iter().map(|s| format!("{s} (with an address in range)")));
        names.extend(config.names.iter().map(|p| format!("{} (config)", p.as_str())));
        let mut ranges: Vec<String> = self.ranges.iter().map(|r| r.to_string()).collect();
        ranges.extend(config.cidrs.iter().map(|r| format!("{r} (config)")));
        MatchSummary { names, ranges, kinds: self.spec.kinds.iter().map(|k| k.to_string()).collect() }
    }

    /// The claims of this mesh in a snapshot.
    pub fn claim(&self, snapshot: &Snapshot, config: &ProviderConfig) -> Claims {
        let mut claims = Claims::default();
        for iface in &snapshot.interfaces {
            self.claim_interface(iface, config, &mut claims);
        }
        claims
    }

    /// [`claim`](Self::claim) for one interface, adding to `claims`: for a
    /// provider that decides some interfaces itself and hands the rest here.
    pub fn claim_interface(&self, iface: &Interface, config: &ProviderConfig, claims: &mut Claims) {
        let mesh = self.spec.mesh;
        let in_range = |a: IpAddr| -> Option<IpNet> {
            self.ranges.iter().chain(config.cidrs.iter()).find(|n| n.contains(&a)).copied()
        };
        if iface.is_loopback() {
            return;
        }
        let any_in_range = iface.addresses.iter().any(|a| in_range(a.addr).is_some());
        let kind_hit = self.spec.kinds.contains(&iface.kind);
        let name_hit = self.names.iter().chain(config.names.iter()).find(|p| p.matches(&iface.name));
        if let Some((p, mode)) = self.exclude.iter().find(|(p, _)| p.matches(&iface.name)) {
            // Said even when nothing else matched: people expect `wireguard` to
            // cover Tailscale (it runs WireGuard), and should learn why not.
            claims.reject(
                iface,
                None,
                format!("{} matches {}: it belongs to the `{mode}` mode", iface.name, p.as_str()),
            );
            return;
        }
        let weak_hit = self.weak_names.iter().find(|p| p.matches(&iface.name));
        // What proves this interface is the mesh's, strongest first.
        let (specificity, why, only_in_range) = if kind_hit {
            (Specificity::Kind, format!("{} is {} ({mesh})", iface.name, iface.kind), false)
        } else if let Some(p) = name_hit {
            (Specificity::Name, format!("{} matches {} ({mesh})", iface.name, p.as_str()), false)
        } else if let (Some(p), true) = (weak_hit, any_in_range) {
            let why = format!("{} matches {} and carries a {mesh} range address", iface.name, p.as_str());
            (Specificity::Name, why, true)
        } else if any_in_range {
            if iface.kind.rules_out_mesh() {
                for a in iface.addresses.iter().filter(|a| in_range(a.addr).is_some()) {
                    claims.reject(
                        iface,
                        Some(a.addr),
                        format!(
                            "{} is in a {mesh} range, but {} is a {}: shared address space, not {mesh}",
                            a.addr, iface.name, iface.kind
                        ),
                    );
                }
                return;
            }
            (Specificity::Range, String::new(), true)
        } else {
            return;
        };
        if let Some(why_not) = iface.unusable() {
            claims.reject(iface, None, why_not);
            return;
        }
        for a in &iface.addresses {
            let net = in_range(a.addr);
            // An OS can list 0.0.0.0 or `::` on a half-configured link; a mesh
            // claim on it would bind a wildcard without anyone naming `all`
            // (rule 1). A 127.x address on an ordinary link is left alone: it
            // only narrows (nothing off the host reaches it).
            if a.addr.is_unspecified() {
                claims.reject(
                    iface,
                    Some(a.addr),
                    format!("{} on {} is a wildcard address: only the `all` mode binds it", a.addr, iface.name),
                );
                continue;
            }
            if is_link_local(a.addr) {
                claims.reject(
                    iface,
                    Some(a.addr),
                    format!(
                        "{} is link-local: never chosen by a provider (name it as an IP literal to bind it)",
                        a.addr
                    ),
                );
                continue;
            }
            if only_in_range && net.is_none() {
                continue;
            }
            let reason = match (specificity, net) {
                (Specificity::Range, Some(net)) => format!(
                    "{} on {} is in {net} ({mesh} range only: weaker than a name or kind claim)",
                    a.addr, iface.name
                ),
                _ => why.clone(),
            };
            claims.candidates.push(Candidate { interface: iface.name.clone(), address: a.addr, specificity, reason });
        }
    }
}

/// A provider made of a [`ProviderInfo`] and a [`MeshSpec`]: all most mesh crates need.
#[derive(Debug, Clone)]
pub struct MeshProvider {
    info: ProviderInfo,
    matcher: MeshMatcher,
}

impl MeshProvider {
    /// Builds the provider (parses the spec once).
    pub fn new(info: ProviderInfo, spec: MeshSpec) -> Self {
        Self { info, matcher: MeshMatcher::new(spec) }
    }
}

impl BindProvider for MeshProvider {
    fn info(&self) -> ProviderInfo {
        self.info
    }
    fn matches(&self, config: &ProviderConfig) -> MatchSummary {
        self.matcher.summary(config)
    }
    fn claim(&self, snapshot: &Snapshot, config: &ProviderConfig) -> Claims {
        self.matcher.claim(snapshot, config)
    }
}

/// The `interface` of a rejection about a daemon that names none.
pub const NO_INTERFACE: &str = "(no interface)";

/// Claims what the daemons of `mesh` say (their [`DaemonFact`](crate::DaemonFact)s
/// in the snapshot), as [`Specificity::Daemon`]: the addresses a fact names on
/// the interface it names (every address of that interface when the fact names
/// none), skipping those `keep` refuses. A daemon that is not running, names no
/// interface here, or drives a down interface is a rejection that says so.
///
/// Returns the interfaces the facts covered, so the caller can leave them out
/// of any weaker matching it does next.
pub fn claim_facts(snapshot: &Snapshot, mesh: &str, keep: impl Fn(IpAddr) -> bool, claims: &mut Claims) -> Vec<String> {
    let mut covered = Vec::new();
    for f in snapshot.facts_of(mesh) {
        let reject = |claims: &mut Claims, interface: &str, address: Option<IpAddr>, reason: String| {
            claims.rejected.push(Rejection { interface: interface.to_owned(), address, reason })
        };
        let Some(iface) = f.interface.as_deref().and_then(|n| snapshot.get(n)) else {
            let why = if f.userspace && f.state == DaemonState::Running {
                "it carries the mesh without an OS interface, so nothing on this host can listen on its addresses"
                    .to_owned()
            } else {
                f.detail.clone().unwrap_or_else(|| "it names no interface here".into())
            };
            reject(claims, f.interface.as_deref().unwrap_or(NO_INTERFACE), None, format!("{}: {why}", f.summary()));
            continue;
        };
        covered.push(iface.name.clone());
        if f.state != DaemonState::Running {
            reject(claims, &iface.name, None, format!("{}: nothing to listen on until it runs", f.summary()));
            continue;
        }
        if let Some(why) = iface.unusable() {
            reject(claims, &iface.name, None, why);
            continue;
        }
        let net = f.network.as_deref().map(|n| format!(" (network {n})")).unwrap_or_default();
        for a in iface.addresses.iter().map(|a| a.addr) {
            if !f.addresses.is_empty() && !f.addresses.contains(&a) {
                reject(
                    claims,
                    &iface.name,
                    Some(a),
                    format!("{a} is on {}, but {} does not list it", iface.name, f.source),
                );
            } else if a.is_unspecified() || is_link_local(a) {
                reject(
                    claims,
                    &iface.name,
                    Some(a),
                    format!("{a} is link-local or a wildcard: never chosen by a provider"),
                );
            } else if !keep(a) {
                continue;
            } else {
                let dns = f.dns_name.as_deref().map(|d| format!(", named {d}")).unwrap_or_default();
                claims.candidates.push(Candidate {
                    interface: iface.name.clone(),
                    address: a,
                    specificity: Specificity::Daemon,
                    reason: format!("from {}: {} is {mesh}'s interface{net}{dns}", f.source, iface.name),
                });
            }
        }
    }
    covered
}
