//! The resolver: selectors + snapshot → [`Resolution`].
//!
//! It runs every provider (so `explain` can say what each one saw), settles
//! conflicts in shared address space (a name or kind claim beats another
//! provider's range-only claim on the same interface), applies the selectors,
//! and adds the fallback and the loopback companion. It never widens: the only
//! wildcard it ever emits is the `all` provider's, and only when named.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Serialize, Serializer};

use crate::config::ProviderConfig;
use crate::fact::{DaemonFact, DaemonState};
pub use crate::fallback::Fallback;
use crate::model::{is_link_local, Snapshot};
use crate::provider::{Candidate, Claims, Rejection, Role, Specificity};
use crate::registry::Registry;
use crate::selector::Selector;

/// Everything besides selectors and snapshot that shapes a resolution.
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    /// The port every listener uses.
    pub port: u16,
    /// What to do when nothing matches.
    pub fallback: Fallback,
    /// Add 127.0.0.1 (and ::1) beside non-loopback listeners.
    pub loopback_companion: bool,
    /// The order `auto` walks mesh providers in; `None`: registry priority order.
    pub auto_order: Option<Vec<String>>,
    /// Per-provider extra names and ranges.
    pub provider_configs: BTreeMap<String, ProviderConfig>,
}

/// Why a listener is in the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListenerRole {
    /// A selector chose it.
    Selected,
    /// Nothing matched; loopback stands in.
    Fallback,
    /// The loopback door beside non-loopback listeners.
    Companion,
}

/// One address to listen on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Listener {
    /// The address, with `%scope` for scoped IPv6, as a string in JSON.
    #[serde(serialize_with = "ser_address")]
    pub address: ScopedAddr,
    /// The port.
    pub port: u16,
    /// The provider (or `iface`, `cidr`, `ip` for the other selectors).
    pub provider: String,
    /// The interface that holds the address, when known.
    pub interface: Option<String>,
    /// Why, for a person.
    pub reason: String,
    /// Selected, fallback or companion.
    pub role: ListenerRole,
}

impl Listener {
    /// The socket address to bind.
    pub fn socket_addr(&self) -> std::net::SocketAddr {
        match self.address.addr {
            IpAddr::V4(a) => std::net::SocketAddr::from((a, self.port)),
            IpAddr::V6(a) => std::net::SocketAddrV6::new(a, self.port, 0, self.address.scope_id.unwrap_or(0)).into(),
        }
    }

    /// True for 127.0.0.0/8 and ::1.
    pub fn is_loopback(&self) -> bool {
        self.address.addr.is_loopback()
    }
}

/// An address with an optional IPv6 scope (index and, when known, interface name).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScopedAddr {
    /// The address.
    pub addr: IpAddr,
    /// The scope id (interface index) for link-local IPv6.
    pub scope_id: Option<u32>,
    /// The scope as written or found (`wg0`).
    pub scope_name: Option<String>,
}

impl ScopedAddr {
    fn plain(addr: IpAddr) -> Self {
        Self { addr, scope_id: None, scope_name: None }
    }
}

impl std::fmt::Display for ScopedAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.scope_name, self.scope_id) {
            (Some(n), _) => write!(f, "{}%{n}", self.addr),
            (None, Some(i)) => write!(f, "{}%{i}", self.addr),
            (None, None) => write!(f, "{}", self.addr),
        }
    }
}

fn ser_address<S: Serializer>(a: &ScopedAddr, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(a)
}

/// What one provider said about the snapshot, after conflicts were settled.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderReport {
    /// The provider.
    pub name: String,
    /// Its priority.
    pub priority: u16,
    /// Its role.
    pub role: Role,
    /// Addresses it claims.
    pub candidates: Vec<Candidate>,
    /// What it turned down, or lost to a more specific claim.
    pub rejected: Vec<Rejection>,
}

/// The outcome: what to bind, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Resolution {
    /// The selectors, as given.
    pub selectors: Vec<String>,
    /// The addresses to bind.
    pub listeners: Vec<Listener>,
    /// True when nothing matched and loopback stands in.
    pub fallback: bool,
    /// Why the fallback was taken, or why nothing is bound (`--fallback fail`).
    pub fallback_reason: Option<String>,
    /// Notes about the selectors themselves (`auto` chose X; `iface:wg*` skipped wg1...).
    pub notes: Vec<String>,
    /// What every provider said.
    pub providers: Vec<ProviderReport>,
    /// What the mesh daemons said (each fact names its source).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub daemons: Vec<DaemonFact>,
}

impl Resolution {
    /// True when `--fallback fail` left nothing to bind (exit 69).
    pub fn nothing_to_bind(&self) -> bool {
        self.listeners.is_empty()
    }

    /// The first daemon still coming up (tailscaled's `Starting`): `--wait`
    /// keeps waiting while there is one, whatever else matched.
    pub fn daemon_starting(&self) -> Option<&DaemonFact> {
        self.daemons.iter().find(|f| f.state == DaemonState::Starting)
    }

    /// The first daemon waiting for a person to log in (tailscaled's
    /// `NeedsLogin`): waiting will not help; say so and stop waiting.
    pub fn daemon_needs_login(&self) -> Option<&DaemonFact> {
        self.daemons.iter().find(|f| f.state == DaemonState::NeedsLogin)
    }
}

/// Resolves selectors over a snapshot. Pure: no I/O.
pub fn resolve(registry: &Registry, selectors: &[Selector], snapshot: &Snapshot, opts: &ResolveOptions) -> Resolution {
    let empty = ProviderConfig::default();
    let mut reports: Vec<ProviderReport> = registry
        .entries()
        .iter()
        .map(|e| {
            let info = e.info();
            let cfg = opts.provider_configs.get(info.name).unwrap_or(&empty);
            let Claims { candidates, rejected } = e.provider.claim(snapshot, cfg);
            ProviderReport { name: info.name.into(), priority: info.priority, role: info.role, candidates, rejected }
        })
        .collect();
    refuse_wildcards(&mut reports);
    settle_shared_space(&mut reports);

    let mut out = Resolution {
        selectors: selectors.iter().map(|s| s.to_string()).collect(),
        listeners: Vec::new(),
        fallback: false,
        fallback_reason: None,
        notes: Vec::new(),
        providers: Vec::new(),
        daemons: snapshot.facts.clone(),
    };
    // Which daemon said what comes first: it is the evidence the rest cites.
    for f in &snapshot.facts {
        out.notes.push(f.summary());
        match f.state {
            DaemonState::NeedsLogin => out.notes.push(format!(
                "{} needs a login before it has addresses: run `tailscale up` (or log in in its app); \
                 waiting will not help",
                f.mesh
            )),
            DaemonState::Starting => {
                out.notes.push(format!("{} is still starting: `--wait SECONDS` waits for its addresses", f.mesh))
            }
            _ => {}
        }
    }
    out.notes.extend(snapshot.probe_notes.iter().cloned());
    let mut seen: HashMap<(IpAddr, Option<u32>), ()> = HashMap::new();
    let mut push = |out: &mut Resolution, l: Listener| {
        if seen.insert((l.address.addr, l.address.scope_id), ()).is_none() {
            out.listeners.push(l);
        }
    };
    let from_candidate = |provider: &str, c: &Candidate, reason: String| Listener {
        address: ScopedAddr::plain(c.address),
        port: opts.port,
        provider: provider.into(),
        interface: (c.interface != "*").then(|| c.interface.clone()),
        reason,
        role: ListenerRole::Selected,
    };

    for sel in selectors {
        match sel {
            Selector::Provider(name) => {
                if let Some(r) = reports.iter().find(|r| &r.name == name) {
                    if r.candidates.is_empty() {
                        out.notes.push(format!("`{name}` matched nothing on this host"));
                    }
                    for c in &r.candidates {
                        push(&mut out, from_candidate(name, c, c.reason.clone()));
                    }
                }
            }
            Selector::Auto => {
                let order: Vec<String> = match &opts.auto_order {
                    Some(o) => o.clone(),
                    None => reports.iter().filter(|r| r.role == Role::Mesh).map(|r| r.name.clone()).collect(),
                };
                match order.iter().find_map(|n| reports.iter().find(|r| &r.name == n && !r.candidates.is_empty())) {
                    Some(r) => {
                        out.notes.push(format!(
                            "auto: `{}` is the first match in the order {}",
                            r.name,
                            order.join(", ")
                        ));
                        for c in &r.candidates {
                            push(&mut out, from_candidate(&r.name, c, format!("auto chose {}: {}", r.name, c.reason)));
                        }
                    }
                    None => out.notes.push(format!("auto: no mesh matched (tried {})", order.join(", "))),
                }
            }
            Selector::Iface(pat) => {
                let mut any = false;
                for iface in snapshot.interfaces.iter().filter(|i| pat.matches(&i.name)) {
                    any = true;
                    if let Some(why) = iface.unusable() {
                        out.notes.push(format!("iface:{}: skipped {why}", pat.as_str()));
                        continue;
                    }
                    for a in &iface.addresses {
                        if let Some(what) = never_bound(a.addr, &iface.name, false) {
                            out.notes.push(format!("iface:{}: skipped {what}", pat.as_str()));
                            continue;
                        }
                        let reason = format!("{} matches iface:{}", iface.name, pat.as_str());
                        push(&mut out, listener(opts, a.addr, "iface", Some(&iface.name), reason));
                    }
                }
                if !any {
                    out.notes.push(format!("iface:{}: no interface of that name", pat.as_str()));
                }
            }
            Selector::Cidr(net) => {
                let net_is_link_local = is_link_local(net.network()) && is_link_local(net.broadcast());
                for iface in &snapshot.interfaces {
                    for a in iface.addresses.iter().filter(|a| net.contains(&a.addr)) {
                        if let Some(why) = iface.unusable() {
                            out.notes.push(format!("cidr:{net}: skipped {} because {why}", a.addr));
                        } else if let Some(what) = never_bound(a.addr, &iface.name, net_is_link_local) {
                            out.notes.push(format!("cidr:{net}: skipped {what}"));
                        } else {
                            let reason = format!("{} on {} is in cidr:{net}", a.addr, iface.name);
                            let mut l = listener(opts, a.addr, "cidr", Some(&iface.name), reason);
                            // Only `cidr:fe80::/..` gets here with a link-local address: it
                            // needs its link's scope to bind, and fe80::1 on two links is two listeners.
                            if a.addr.is_ipv6() && is_link_local(a.addr) {
                                l.address.scope_id = Some(iface.index);
                                l.address.scope_name = Some(iface.name.clone());
                            }
                            push(&mut out, l);
                        }
                    }
                }
            }
            Selector::Ip(lit) => {
                let holds = |i: &&crate::model::Interface| i.addresses.iter().any(|a| a.addr == lit.addr);
                let mut holder = snapshot.interfaces.iter().find(holds);
                let mut addr = ScopedAddr::plain(lit.addr);
                if let Some(scope) = &lit.scope {
                    let scoped = match scope.parse::<u32>() {
                        Ok(idx) => {
                            addr.scope_id = Some(idx);
                            let iface = snapshot.interfaces.iter().find(|i| i.index == idx);
                            addr.scope_name = iface.map(|i| i.name.clone());
                            iface
                        }
                        Err(_) => {
                            let iface = snapshot.get(scope);
                            addr.scope_id = iface.map(|i| i.index);
                            addr.scope_name = Some(scope.clone());
                            iface
                        }
                    };
                    // The same link-local address often sits on several links
                    // (fe80::1); a scoped literal is held by its scope or by nobody.
                    holder = scoped.filter(holds);
                } else if let (IpAddr::V6(_), true, Some(h)) = (lit.addr, is_link_local(lit.addr), holder) {
                    addr.scope_id = Some(h.index);
                    addr.scope_name = Some(h.name.clone());
                }
                let reason = match holder {
                    Some(h) => format!("named on the command line; held by {}", h.name),
                    None => "named on the command line; no interface holds it, so binding will fail".to_owned(),
                };
                push(
                    &mut out,
                    Listener {
                        address: addr,
                        port: opts.port,
                        provider: "ip".into(),
                        interface: holder.map(|h| h.name.clone()),
                        reason,
                        role: ListenerRole::Selected,
                    },
                );
            }
        }
    }

    // A wildcard covers every specific address of its family: binding both collides.
    for (wild, v4) in [(IpAddr::V4(Ipv4Addr::UNSPECIFIED), true), (IpAddr::V6(Ipv6Addr::UNSPECIFIED), false)] {
        if out.listeners.iter().any(|l| l.address.addr == wild) {
            out.listeners.retain(|l| {
                let covered = l.address.addr != wild && l.address.addr.is_ipv4() == v4;
                if covered {
                    out.notes.push(format!("{} is covered by the wildcard {wild}", l.address));
                }
                !covered
            });
        }
    }

    let loopback = reports.iter().find(|r| r.role == Role::Loopback);
    if out.listeners.is_empty() {
        let what = if selectors.is_empty() { "no selector".to_owned() } else { out.selectors.join(", ") };
        match opts.fallback {
            Fallback::Loopback => {
                out.fallback = true;
                out.fallback_reason = Some(format!("{what} matched nothing on this host; serving on loopback only"));
                for c in loopback.map(|r| r.candidates.as_slice()).unwrap_or_default() {
                    let reason = format!("fallback: {what} matched nothing; {}", c.reason);
                    push(&mut out, Listener { role: ListenerRole::Fallback, ..from_candidate("loopback", c, reason) });
                }
            }
            Fallback::Fail => {
                out.fallback_reason = Some(format!("{what} matched nothing on this host and --fallback is fail"));
            }
        }
    } else if opts.loopback_companion && out.listeners.iter().any(|l| !l.is_loopback()) {
        let wild_v4 = out.listeners.iter().any(|l| l.address.addr == IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let wild_v6 = out.listeners.iter().any(|l| l.address.addr == IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        for c in loopback.map(|r| r.candidates.as_slice()).unwrap_or_default() {
            if (c.address.is_ipv4() && wild_v4) || (c.address.is_ipv6() && wild_v6) {
                continue;
            }
            let reason = "loopback companion: local tools always have a door (--no-loopback turns it off)".to_owned();
            push(&mut out, Listener { role: ListenerRole::Companion, ..from_candidate("loopback", c, reason) });
        }
    }
    reports.sort_by_key(|r| (r.priority, r.name.clone()));
    out.providers = reports;
    out
}

fn listener(opts: &ResolveOptions, addr: IpAddr, provider: &str, iface: Option<&str>, reason: String) -> Listener {
    Listener {
        address: ScopedAddr::plain(addr),
        port: opts.port,
        provider: provider.into(),
        interface: iface.map(str::to_owned),
        reason,
        role: ListenerRole::Selected,
    }
}

/// What an `iface:` or `cidr:` selector never binds: a wildcard (only `all`
/// does), or a link-local address unless the selector names link-local space.
/// Says which, for the note.
fn never_bound(addr: IpAddr, iface: &str, link_local_named: bool) -> Option<String> {
    if addr.is_unspecified() {
        Some(format!("the wildcard {addr} on {iface} (only `all` binds wildcards)"))
    } else if is_link_local(addr) && !link_local_named {
        Some(format!("link-local {addr} on {iface}"))
    } else {
        None
    }
}

/// Rule 1 kept in one place for every provider, built-in or not: a wildcard
/// address (`0.0.0.0`, `::`) claimed by any provider but the wildcard one
/// (`all`) is moved to its rejections. An OS can list one on a half-configured
/// link, and a configured range such as `0.0.0.0/0` contains it.
fn refuse_wildcards(reports: &mut [ProviderReport]) {
    for r in reports.iter_mut().filter(|r| r.role != Role::Wildcard) {
        let (wild, keep): (Vec<_>, Vec<_>) =
            std::mem::take(&mut r.candidates).into_iter().partition(|c| c.address.is_unspecified());
        r.candidates = keep;
        for c in wild {
            r.rejected.push(Rejection {
                reason: format!("{} on {} is a wildcard address: only the `all` mode binds it", c.address, c.interface),
                interface: c.interface,
                address: Some(c.address),
            });
        }
    }
}

/// Shared address space is not proof: a range-only claim on an interface that
/// another provider claims by name, kind or a daemon's word is moved to that
/// provider's rejections.
/// The reason names every provider with a name or kind claim on the interface, in
/// priority order: NetBird's kernel-WireGuard `wt0` is claimed by `netbird` (name)
/// and by `wireguard` (kind), and the message must not hide the mesh behind the
/// transport.
fn settle_shared_space(reports: &mut [ProviderReport]) {
    // interface → every (provider, reason) with a name or kind claim on it, by priority.
    let mut owners: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for r in reports.iter().filter(|r| matches!(r.role, Role::Mesh | Role::Lan | Role::Public)) {
        for c in r
            .candidates
            .iter()
            .filter(|c| matches!(c.specificity, Specificity::Name | Specificity::Kind | Specificity::Daemon))
        {
            let claimants = owners.entry(c.interface.clone()).or_default();
            if !claimants.iter().any(|(n, _)| n == &r.name) {
                claimants.push((r.name.clone(), c.reason.clone()));
            }
        }
    }
    for r in reports.iter_mut() {
        let name = r.name.clone();
        let (keep, lost): (Vec<_>, Vec<_>) = std::mem::take(&mut r.candidates).into_iter().partition(|c| {
            c.specificity != Specificity::Range
                || owners.get(&c.interface).is_none_or(|o| o.iter().any(|(owner, _)| owner == &name))
        });
        r.candidates = keep;
        for c in lost {
            let owned_by: Vec<String> =
                owners[&c.interface].iter().map(|(owner, why)| format!("`{owner}` ({why})")).collect();
            r.rejected.push(Rejection {
                interface: c.interface.clone(),
                address: Some(c.address),
                reason: format!(
                    "{} is in {name}'s range, but {} belongs to {}; a range match alone is not proof",
                    c.address,
                    c.interface,
                    owned_by.join(" and ")
                ),
            });
        }
    }
}
