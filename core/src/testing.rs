//! The provider conformance kit: the contract every [`BindProvider`] keeps, as
//! checks a provider's own tests run (behind the `testing` feature).
//!
//! A provider author adds one test:
//!
//! ```
//! use meshgate_core::testing::{fixtures, Kit};
//! use meshgate_core::{InterfaceKind, MeshProvider, MeshSpec, ProviderInfo, Role};
//!
//! let provider = MeshProvider::new(
//!     ProviderInfo { name: "example", priority: 170, description: "Example mesh address (ex*)", role: Role::Mesh },
//!     MeshSpec { mesh: "Example", names: &["ex*"], weak_names: &[], exclude_names: &[], kinds: &[], ranges: &[] },
//! );
//! // `sample`: how the mesh shows up on a host. The kit mixes it into its
//! // fixtures, and fails if the provider does not claim it.
//! Kit::new(&provider).sample(fixtures::iface("ex0", 60, InterfaceKind::Tun, &["10.77.0.1/24"])).check();
//! ```
//!
//! [`check_provider`] is the same without samples: enough for a provider whose
//! interfaces are already in the kit's [`fixtures::zoo`] (every mesh in the
//! repository's `docs/meshes.md`).
//!
//! # What is checked ([`Check`])
//!
//! Over realistic hosts (a busy Linux host, a macOS host, a Linux host whose
//! mesh daemons answered, every fixture interface alone beside `lo`, your
//! samples) and odd ones (empty, no addresses, only
//! link-local addresses, duplicate names, unicode and empty names, index 0,
//! everything down, loopback and wildcard addresses on ordinary interfaces, and
//! 5,000 interfaces):
//!
//! - **no panic** in `info`, `matches` or `claim`;
//! - **deterministic**: the same snapshot gives the same claims in the same order,
//!   and reversing the interfaces only reorders them (candidates compared as a set);
//! - **say why**: every candidate and every rejection has a non-empty reason;
//! - **never widen, no surprises**: wildcards only from a `Role::Wildcard`
//!   provider, loopback interfaces only from `Role::Loopback` (which claims
//!   nothing but loopback addresses), link-local addresses never. A 127.x
//!   address an ordinary interface happens to carry is allowed: it only narrows;
//! - **real addresses**: a mesh or LAN candidate is an address that an interface
//!   of that name holds in the snapshot, and that interface is up with carrier; a
//!   claimed interface that goes down (or loses carrier) is dropped *and* named in
//!   a rejection;
//! - **specific claims are really specific**: a `Name` claim needs a name
//!   pattern that [`BindProvider::matches`] advertises, and weakens or vanishes
//!   when the interface is renamed; a `Kind` claim needs an advertised kind, and
//!   weakens or vanishes when the kind is unknown; a `Range` claim is inside an
//!   advertised range, and a mesh's range-only claim never lands on a loopback,
//!   physical, bridge or veth interface (shared address space is not proof);
//!   a `Daemon` claim is backed by a [`DaemonFact`](crate::DaemonFact) in the
//!   snapshot naming that interface (and address); `Exact` is for loopback and
//!   wildcard providers;
//! - **coverage**: the provider claimed something somewhere (otherwise every
//!   check above passed vacuously), and every sample is claimed.
//!
//! A failure panics with every violation: the provider, the check, the snapshot
//! and the interface involved, and what was wrong.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};

use ipnet::IpNet;

use crate::config::ProviderConfig;
use crate::model::{is_link_local, Interface, InterfaceKind, Snapshot};
use crate::provider::{BindProvider, Candidate, Claims, MatchSummary, ProviderInfo, Role, Specificity};

/// The contract clauses the kit checks; every [`Violation`] names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Check {
    /// `info()`: a selector name of `[a-z0-9-]`, not `auto` or `custom`, and a
    /// one-line description.
    Info,
    /// `matches()`: says something, says the same each time, and every range is
    /// an address or a CIDR.
    Summary,
    /// `info`, `matches` and `claim` never panic.
    NoPanic,
    /// The same snapshot gives the same claims, in the same order.
    Deterministic,
    /// Reversing the interfaces reorders the claims and changes nothing else.
    OrderIndependent,
    /// Every candidate and rejection has a reason a person can read.
    Reason,
    /// Loopback interfaces belong to `Role::Loopback` providers, which claim
    /// only loopback addresses.
    Loopback,
    /// 0.0.0.0 and `::` belong to `Role::Wildcard` providers.
    Wildcard,
    /// Link-local addresses are never claimed.
    LinkLocal,
    /// A down or carrier-less interface is skipped, with a reason.
    Down,
    /// A claimed (or rejected) address is on the named interface in the snapshot.
    Held,
    /// `Name`, `Kind`, `Range` and `Exact` say what really decided the claim.
    Specificity,
    /// A mesh's range-only claim never lands on loopback, physical, bridge or veth.
    SharedSpace,
    /// The provider claimed something, and claimed every sample.
    Coverage,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Info => "info",
            Self::Summary => "summary",
            Self::NoPanic => "no-panic",
            Self::Deterministic => "deterministic",
            Self::OrderIndependent => "order-independent",
            Self::Reason => "reason",
            Self::Loopback => "loopback",
            Self::Wildcard => "wildcard",
            Self::LinkLocal => "link-local",
            Self::Down => "down",
            Self::Held => "held",
            Self::Specificity => "specificity",
            Self::SharedSpace => "shared-space",
            Self::Coverage => "coverage",
        })
    }
}

/// One broken rule: which, where, and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The provider's name.
    pub provider: String,
    /// The rule.
    pub check: Check,
    /// The fixture snapshot (`busy Linux host, wg0 down`).
    pub snapshot: String,
    /// The interface involved, when there is one.
    pub interface: Option<String>,
    /// What was wrong, and what the contract expects.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] provider `{}`, snapshot `{}`", self.check, self.provider, self.snapshot)?;
        if let Some(i) = &self.interface {
            write!(f, ", interface `{}`", i.escape_debug())?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// What a kit run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The provider's name.
    pub provider: String,
    /// Every broken rule, in the order found.
    pub violations: Vec<Violation>,
    /// How many snapshots the provider was run on.
    pub snapshots: usize,
    /// How many candidates it returned over the realistic snapshots.
    pub candidates: usize,
}

/// Violations shown per check in a panic message (a bug repeats on every fixture).
const SHOWN_PER_CHECK: usize = 6;

impl Report {
    /// True when no rule was broken.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// The violations of one rule.
    pub fn of(&self, check: Check) -> impl Iterator<Item = &Violation> {
        self.violations.iter().filter(move |v| v.check == check)
    }

    /// Panics with every violation (at most a few per rule), if there is any.
    ///
    /// # Panics
    /// When a rule was broken: that is the point.
    #[track_caller]
    pub fn assert_ok(&self) {
        if self.is_ok() {
            return;
        }
        panic!("{self}");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_ok() {
            return write!(
                f,
                "conformance kit: provider `{}` keeps the contract ({} snapshots, {} candidates)",
                self.provider, self.snapshots, self.candidates
            );
        }
        let mut by_check: BTreeMap<Check, Vec<&Violation>> = BTreeMap::new();
        for v in &self.violations {
            by_check.entry(v.check).or_default().push(v);
        }
        writeln!(
            f,
            "conformance kit: provider `{}` breaks {} rule(s) of the BindProvider contract \
             ({} violations over {} snapshots):",
            self.provider,
            by_check.len(),
            self.violations.len(),
            self.snapshots
        )?;
        for vs in by_check.values() {
            for v in vs.iter().take(SHOWN_PER_CHECK) {
                writeln!(f, "  {v}")?;
            }
            if vs.len() > SHOWN_PER_CHECK {
                writeln!(f, "  ... and {} more [{}] violations", vs.len() - SHOWN_PER_CHECK, vs[0].check)?;
            }
        }
        write!(f, "(each rule is described in meshgate_core::testing::Check and docs/writing-a-provider.md)")
    }
}

/// Runs the kit over `provider` with no config and no samples, and panics with
/// every violation.
///
/// # Panics
/// When the provider breaks a rule; the message names the provider, the rule,
/// the snapshot and the interface.
#[track_caller]
pub fn check_provider(provider: &dyn BindProvider) {
    Kit::new(provider).check();
}

/// The kit, configured for one provider: `Kit::new(&p).sample(iface).check()`.
pub struct Kit<'p> {
    provider: &'p dyn BindProvider,
    config: ProviderConfig,
    samples: Vec<Interface>,
    extra: Vec<(String, Snapshot)>,
    huge: usize,
}

impl fmt::Debug for Kit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kit")
            .field("provider", &self.provider.info().name)
            .field("samples", &self.samples.len())
            .field("extra", &self.extra.len())
            .field("huge", &self.huge)
            .finish()
    }
}

impl<'p> Kit<'p> {
    /// A kit for this provider, with the default config and the built-in fixtures.
    pub fn new(provider: &'p dyn BindProvider) -> Self {
        Self { provider, config: ProviderConfig::default(), samples: Vec::new(), extra: Vec::new(), huge: 5_000 }
    }

    /// Runs the provider with this `[providers.NAME]` config.
    pub fn config(mut self, config: ProviderConfig) -> Self {
        self.config = config;
        self
    }

    /// An interface as your mesh puts it on a host. The kit adds it to its
    /// realistic snapshots, and fails if the provider does not claim it beside
    /// `lo`. Call it once per shape (Linux name, macOS `utunN`, ...).
    pub fn sample(mut self, iface: Interface) -> Self {
        self.samples.push(iface);
        self
    }

    /// One more realistic snapshot to run every check over.
    pub fn snapshot(mut self, label: &str, snapshot: Snapshot) -> Self {
        self.extra.push((label.to_owned(), snapshot));
        self
    }

    /// The size of the huge snapshot (default 5,000 interfaces).
    pub fn huge(mut self, interfaces: usize) -> Self {
        self.huge = interfaces;
        self
    }

    /// Runs every check and panics with every violation.
    ///
    /// # Panics
    /// When the provider breaks a rule.
    #[track_caller]
    pub fn check(&self) {
        self.run().assert_ok();
    }

    /// Runs every check and returns what it found (for testing the kit itself,
    /// or to assert on one rule).
    pub fn run(&self) -> Report {
        let mut run = Run::new(self);
        run.all();
        run.report
    }
}

// ---- the run ---------------------------------------------------------------

struct Run<'k, 'p> {
    kit: &'k Kit<'p>,
    info: Option<ProviderInfo>,
    names: Vec<glob::Pattern>,
    kinds: Vec<String>,
    ranges: Vec<IpNet>,
    report: Report,
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_owned())
}

/// The part of a summary entry before its annotation: `utun* (with an address in range)` → `utun*`.
fn head(entry: &str) -> &str {
    entry.split(" (").next().unwrap_or(entry).trim()
}

fn candidate_key(c: &Candidate) -> (String, IpAddr, Specificity, String) {
    (c.interface.clone(), c.address, c.specificity, c.reason.clone())
}

impl<'k, 'p> Run<'k, 'p> {
    fn new(kit: &'k Kit<'p>) -> Self {
        Self { kit, info: None, names: Vec::new(), kinds: Vec::new(), ranges: Vec::new(), report: Report::default() }
    }

    fn role(&self) -> Role {
        self.info.map(|i| i.role).unwrap_or(Role::Mesh)
    }

    fn violation(&mut self, check: Check, snapshot: &str, interface: Option<&str>, detail: String) {
        self.report.violations.push(Violation {
            provider: self.report.provider.clone(),
            check,
            snapshot: snapshot.to_owned(),
            interface: interface.map(str::to_owned),
            detail,
        });
    }

    fn claim(&mut self, label: &str, snapshot: &Snapshot) -> Option<Claims> {
        self.report.snapshots += 1;
        let provider = self.kit.provider;
        let config = &self.kit.config;
        match catch_unwind(AssertUnwindSafe(|| provider.claim(snapshot, config))) {
            Ok(c) => Some(c),
            Err(p) => {
                let msg = panic_message(p.as_ref());
                self.violation(
                    Check::NoPanic,
                    label,
                    None,
                    format!("claim() panicked: {msg}; a provider must return claims for any snapshot the OS can give"),
                );
                None
            }
        }
    }

    fn all(&mut self) {
        if !self.info() {
            return;
        }
        self.summary();

        let mut realistic = vec![
            ("busy Linux host".to_owned(), fixtures::busy_host()),
            ("macOS host".to_owned(), fixtures::macos_host()),
            ("Linux host whose mesh daemons answered".to_owned(), fixtures::daemon_host()),
        ];
        for i in fixtures::zoo() {
            realistic.push((format!("lo + {}", i.name), fixtures::with_lo(vec![i])));
        }
        if !self.kit.samples.is_empty() {
            realistic.push(("lo + samples".to_owned(), fixtures::with_lo(self.kit.samples.clone())));
            let mut busy = fixtures::busy_host();
            fixtures::append(&mut busy, self.kit.samples.clone());
            realistic.push(("busy Linux host + samples".to_owned(), busy));
        }
        realistic.extend(self.kit.extra.iter().cloned());

        for (label, snap) in &realistic {
            let Some(claims) = self.claim(label, snap) else { continue };
            self.report.candidates += claims.candidates.len();
            self.inspect(label, snap, &claims);
            self.determinism(label, snap, &claims);
            self.order(label, snap, &claims);
            self.counterfactuals(label, snap, &claims);
        }
        let mut odd = fixtures::odd_snapshots();
        odd.push((format!("huge: {} interfaces", self.kit.huge), fixtures::huge(self.kit.huge)));
        for (label, snap) in &odd {
            let Some(claims) = self.claim(label, snap) else { continue };
            self.inspect(label, snap, &claims);
            self.determinism(label, snap, &claims);
            if label.starts_with("huge") {
                self.order(label, snap, &claims);
            }
        }
        self.coverage();
    }

    fn info(&mut self) -> bool {
        let provider = self.kit.provider;
        let info = match catch_unwind(AssertUnwindSafe(|| provider.info())) {
            Ok(i) => i,
            Err(p) => {
                self.report.provider = "<unknown>".into();
                let msg = panic_message(p.as_ref());
                self.violation(Check::NoPanic, "-", None, format!("info() panicked: {msg}"));
                return false;
            }
        };
        self.report.provider = info.name.to_owned();
        self.info = Some(info);
        let n = info.name;
        let well_formed = !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !n.starts_with('-')
            && !n.ends_with('-');
        if !well_formed {
            self.violation(
                Check::Info,
                "-",
                None,
                format!("the name {n:?} is not a selector: use lowercase letters, digits and inner dashes (`my-mesh`)"),
            );
        }
        if ["auto", "custom"].contains(&n) {
            self.violation(Check::Info, "-", None, format!("the name `{n}` is a selector keyword; choose another"));
        }
        let d = info.description;
        if d.trim().is_empty() || d.contains('\n') {
            self.violation(
                Check::Info,
                "-",
                None,
                format!("the description {d:?} must be one non-empty line (`meshgate providers` prints it)"),
            );
        }
        true
    }

    fn summary(&mut self) {
        let provider = self.kit.provider;
        let config = &self.kit.config;
        let got = catch_unwind(AssertUnwindSafe(|| (provider.matches(config), provider.matches(config))));
        let (m, again): (MatchSummary, MatchSummary) = match got {
            Ok(pair) => pair,
            Err(p) => {
                let msg = panic_message(p.as_ref());
                self.violation(Check::NoPanic, "-", None, format!("matches() panicked: {msg}"));
                return;
            }
        };
        if m != again {
            self.violation(
                Check::Summary,
                "-",
                None,
                format!("matches() answered {m:?} then {again:?}; it must not change between calls"),
            );
        }
        if m.names.is_empty() && m.ranges.is_empty() && m.kinds.is_empty() {
            self.violation(
                Check::Summary,
                "-",
                None,
                "matches() is empty: `meshgate providers` would show nothing about what it claims".into(),
            );
        }
        for entry in &m.names {
            match glob::Pattern::new(head(entry)) {
                Ok(p) => self.names.push(p),
                Err(e) => self.violation(
                    Check::Summary,
                    "-",
                    None,
                    format!("the names entry {entry:?} is not a glob ({e}); write the pattern, then any note in parentheses"),
                ),
            }
        }
        for entry in &m.ranges {
            let h = head(entry);
            match h.parse::<IpNet>().or_else(|_| h.parse::<IpAddr>().map(IpNet::from)) {
                Ok(n) => self.ranges.push(n),
                Err(_) => self.violation(
                    Check::Summary,
                    "-",
                    None,
                    format!("the ranges entry {entry:?} is neither an address nor a CIDR"),
                ),
            }
        }
        self.kinds = m.kinds.iter().map(|k| head(k).to_owned()).collect();
    }

    /// The per-claim rules, on one snapshot.
    fn inspect(&mut self, label: &str, snap: &Snapshot, claims: &Claims) {
        let role = self.role();
        let mut by_name: BTreeMap<&str, Vec<&Interface>> = BTreeMap::new();
        for i in &snap.interfaces {
            by_name.entry(i.name.as_str()).or_default().push(i);
        }
        for c in &claims.candidates {
            let at = Some(c.interface.as_str());
            let a = c.address;
            if c.reason.trim().is_empty() {
                self.violation(Check::Reason, label, at, format!("the candidate {a} has no reason"));
            }
            if is_link_local(a) {
                self.violation(
                    Check::LinkLocal,
                    label,
                    at,
                    format!("claims the link-local {a}: providers never choose link-local addresses (rule 5)"),
                );
                continue;
            }
            match role {
                Role::Wildcard => {
                    if !a.is_unspecified() {
                        self.violation(
                            Check::Wildcard,
                            label,
                            at,
                            format!("a wildcard provider claims the specific address {a}"),
                        );
                    }
                    continue;
                }
                Role::Loopback => {
                    if !a.is_loopback() {
                        self.violation(
                            Check::Loopback,
                            label,
                            at,
                            format!("a loopback provider claims {a}, which is not a loopback address"),
                        );
                    }
                    continue;
                }
                Role::Mesh | Role::Lan | Role::Public => {}
            }
            if a.is_unspecified() {
                self.violation(
                    Check::Wildcard,
                    label,
                    at,
                    format!("claims the wildcard {a}: only `all` binds wildcards (rule 1, never widen)"),
                );
                continue;
            }
            let holders: Vec<&Interface> = by_name
                .get(c.interface.as_str())
                .map(|v| v.iter().copied().filter(|i| i.addresses.iter().any(|x| x.addr == a)).collect())
                .unwrap_or_default();
            if holders.is_empty() {
                let why = if by_name.contains_key(c.interface.as_str()) {
                    format!("the snapshot gives {} no address {a}", c.interface)
                } else {
                    format!("the snapshot has no interface {:?}", c.interface)
                };
                self.violation(Check::Held, label, at, format!("claims {a}, but {why}; binding it would fail"));
                continue;
            }
            if holders.iter().any(|i| i.is_loopback()) {
                self.violation(
                    Check::Loopback,
                    label,
                    at,
                    format!("claims {a} on a loopback interface: only the `loopback` mode claims loopback"),
                );
            }
            if let Some(why) = holders.iter().all(|i| i.unusable().is_some()).then(|| holders[0].unusable()).flatten() {
                self.violation(
                    Check::Down,
                    label,
                    at,
                    format!("claims {a}, but {why}: skip it and say so in a rejection (Interface::unusable gives the reason)"),
                );
            }
            match c.specificity {
                Specificity::Exact => self.violation(
                    Check::Specificity,
                    label,
                    at,
                    format!(
                        "claims {a} as Exact: that is for loopback and wildcard providers; a mesh says Name, Kind or Range"
                    ),
                ),
                Specificity::Daemon => {
                    let backed = snap.facts.iter().any(|f| {
                        f.interface.as_deref() == Some(c.interface.as_str())
                            && (f.addresses.is_empty() || f.addresses.contains(&a))
                    });
                    if !backed {
                        self.violation(
                            Check::Specificity,
                            label,
                            at,
                            format!(
                                "claims {a} on {} by a daemon's word, but no DaemonFact in the snapshot names that \
                                 interface and address: only a probe's fact is a daemon's word",
                                c.interface
                            ),
                        );
                    }
                }
                Specificity::Name => {
                    if !self.names.iter().any(|p| p.matches(&c.interface)) {
                        let shown: Vec<&str> = self.names.iter().map(|p| p.as_str()).collect();
                        self.violation(
                            Check::Specificity,
                            label,
                            at,
                            format!(
                                "claims {a} by name, but no pattern matches() advertises covers {:?} (names: {shown:?}): \
                                 `meshgate providers` would not tell the truth",
                                c.interface
                            ),
                        );
                    }
                }
                Specificity::Kind => {
                    if !holders.iter().any(|i| self.kinds.iter().any(|k| k == head(&i.kind.to_string()))) {
                        self.violation(
                            Check::Specificity,
                            label,
                            at,
                            format!(
                                "claims {a} by kind, but the interface is {} and matches() advertises kinds {:?}",
                                holders[0].kind, self.kinds
                            ),
                        );
                    }
                }
                Specificity::Range => {
                    if !self.ranges.iter().any(|n| n.contains(&a)) {
                        self.violation(
                            Check::Specificity,
                            label,
                            at,
                            format!(
                                "claims {a} by range, but it is in none of the ranges matches() advertises ({:?})",
                                self.ranges.iter().map(|n| n.to_string()).collect::<Vec<_>>()
                            ),
                        );
                    }
                    if matches!(role, Role::Mesh | Role::Public) {
                        if let Some(i) = holders.iter().find(|i| i.kind.rules_out_mesh()) {
                            self.violation(
                                Check::SharedSpace,
                                label,
                                at,
                                format!(
                                    "claims {a} on a {} by range alone: a range is shared space, not proof of a mesh \
                                     (rule 4); refuse range-only claims on loopback, physical, bridge and veth links",
                                    i.kind
                                ),
                            );
                        }
                    }
                }
            }
        }
        for r in &claims.rejected {
            let at = Some(r.interface.as_str());
            if r.reason.trim().is_empty() {
                self.violation(Check::Reason, label, at, "a rejection has no reason".into());
            }
            if r.interface == "*" {
                continue;
            }
            match (by_name.get(r.interface.as_str()), r.address) {
                (None, _) => self.violation(
                    Check::Held,
                    label,
                    at,
                    format!("rejects {:?}, which is not an interface of the snapshot", r.interface),
                ),
                (Some(is), Some(a)) if !is.iter().any(|i| i.addresses.iter().any(|x| x.addr == a)) => self.violation(
                    Check::Held,
                    label,
                    at,
                    format!("rejects {a} on {}, which does not hold it", r.interface),
                ),
                _ => {}
            }
        }
    }

    fn determinism(&mut self, label: &str, snap: &Snapshot, claims: &Claims) {
        let copy = snap.clone();
        let Some(again) = self.claim(label, &copy) else { return };
        if &again != claims {
            let first = claims
                .candidates
                .iter()
                .zip(&again.candidates)
                .find(|(x, y)| x != y)
                .map(|(x, y)| format!("first difference: {x:?} then {y:?}"))
                .unwrap_or_else(|| {
                    format!(
                        "{} then {} candidates, {} then {} rejections",
                        claims.candidates.len(),
                        again.candidates.len(),
                        claims.rejected.len(),
                        again.rejected.len()
                    )
                });
            let at = claims.candidates.first().map(|c| c.interface.clone());
            self.violation(
                Check::Deterministic,
                label,
                at.as_deref(),
                format!("two runs over the same snapshot disagree ({first}); claim() must be pure"),
            );
        }
    }

    fn order(&mut self, label: &str, snap: &Snapshot, claims: &Claims) {
        let mut reversed = snap.clone();
        reversed.interfaces.reverse();
        let label_r = format!("{label}, interfaces reversed");
        let Some(other) = self.claim(&label_r, &reversed) else { return };
        // For loopback and wildcard providers the interface is a label (127.0.0.1 is
        // claimed even with no loopback interface listed, `*` for wildcards), and
        // which of several loopback interfaces holding 127.0.0.1 gets named is not
        // part of the contract: compare the addresses and specificities.
        let addresses_only = matches!(self.role(), Role::Loopback | Role::Wildcard);
        let set = |c: &Claims| -> BTreeMap<(String, IpAddr, Specificity, String), usize> {
            let mut m = BTreeMap::new();
            for k in c.candidates.iter().map(|c| {
                if addresses_only {
                    (String::new(), c.address, c.specificity, String::new())
                } else {
                    candidate_key(c)
                }
            }) {
                *m.entry(k).or_insert(0) += 1;
            }
            m
        };
        let (a, b) = (set(claims), set(&other));
        if a != b {
            let only_a = a.keys().find(|k| !b.contains_key(*k));
            let only_b = b.keys().find(|k| !a.contains_key(*k));
            let (iface, what) = match (only_a, only_b) {
                (Some(k), _) => (k.0.clone(), format!("{} on {:?} is claimed only in the original order", k.1, k.0)),
                (None, Some(k)) => (k.0.clone(), format!("{} on {:?} is claimed only in reverse order", k.1, k.0)),
                (None, None) => (String::new(), "the same candidates, a different number of times".to_owned()),
            };
            self.violation(
                Check::OrderIndependent,
                &label_r,
                (!iface.is_empty()).then_some(iface.as_str()),
                format!("{what}: the interface order the OS happens to list must not change what is claimed"),
            );
        }
        let rej = |c: &Claims| -> BTreeSet<(String, Option<IpAddr>)> {
            c.rejected.iter().map(|r| (r.interface.clone(), r.address)).collect()
        };
        let (ra, rb) = (rej(claims), rej(&other));
        if let Some(k) = ra.symmetric_difference(&rb).next() {
            self.violation(
                Check::OrderIndependent,
                &label_r,
                Some(&k.0),
                format!("the rejection of {} on {} depends on the interface order", fmt_opt(k.1), k.0),
            );
        }
    }

    /// Change one claimed interface and see that the claim follows the change.
    fn counterfactuals(&mut self, label: &str, snap: &Snapshot, claims: &Claims) {
        if !matches!(self.role(), Role::Mesh | Role::Lan) {
            return;
        }
        let claimed: BTreeSet<&str> = claims.candidates.iter().map(|c| c.interface.as_str()).collect();
        for name in claimed {
            if !snap.interfaces.iter().any(|i| i.name == name) {
                continue; // already reported by `inspect`
            }
            let best =
                |c: &Claims, n: &str| c.candidates.iter().filter(|c| c.interface == n).map(|c| c.specificity).max();
            let strongest = best(claims, name);

            for (what, change) in [
                ("down", (|i: &mut Interface| i.flags.up = false) as fn(&mut Interface)),
                ("without carrier", |i: &mut Interface| i.flags.carrier = Some(false)),
            ] {
                let l = format!("{label}, {name} {what}");
                let Some(after) = self.claim(&l, &modified(snap, name, change)) else { continue };
                if let Some(c) = after.candidates.iter().find(|c| c.interface == name) {
                    self.violation(
                        Check::Down,
                        &l,
                        Some(name),
                        format!("still claims {} on {name} when it is {what}; skip it and say why", c.address),
                    );
                } else if !after.rejected.iter().any(|r| r.interface == name) {
                    self.violation(
                        Check::Down,
                        &l,
                        Some(name),
                        format!(
                            "drops {name} when it is {what} but gives no rejection: `explain` must say why \
                             (Interface::unusable gives the reason)"
                        ),
                    );
                }
            }

            if claims.candidates.iter().any(|c| c.interface == name && c.specificity == Specificity::Name) {
                let renamed = "kit-renamed";
                let l = format!("{label}, {name} renamed {renamed}");
                let Some(after) = self.claim(&l, &modified(snap, name, |i| i.name = "kit-renamed".into())) else {
                    continue;
                };
                if let Some(s) = best(&after, renamed).filter(|s| *s >= Specificity::Name) {
                    self.violation(
                        Check::Specificity,
                        &l,
                        Some(name),
                        format!(
                            "claims {name} by Name, but renamed {renamed} it is still claimed as {s:?}: the name is \
                             not what decided, so the claim overstates its evidence"
                        ),
                    );
                }
            }
            if strongest == Some(Specificity::Kind) {
                let l = format!("{label}, {name} of unknown kind");
                let Some(after) = self.claim(&l, &modified(snap, name, |i| i.kind = InterfaceKind::Unknown)) else {
                    continue;
                };
                if let Some(s) = best(&after, name).filter(|s| *s >= Specificity::Kind) {
                    self.violation(
                        Check::Specificity,
                        &l,
                        Some(name),
                        format!(
                            "claims {name} by Kind, but with its kind unknown it is still claimed as {s:?}: the kind \
                             is not what decided"
                        ),
                    );
                }
            }
        }
    }

    fn coverage(&mut self) {
        if self.report.candidates == 0 {
            self.violation(
                Check::Coverage,
                "every realistic snapshot",
                None,
                "claimed nothing anywhere, so every other check passed vacuously: add how your mesh shows up \
                 with Kit::sample(Interface)"
                    .into(),
            );
        }
        for s in self.kit.samples.clone() {
            let label = format!("lo + sample {}", s.name);
            let snap = fixtures::with_lo(vec![s.clone()]);
            let Some(claims) = self.claim(&label, &snap) else { continue };
            if !claims.candidates.iter().any(|c| c.interface == s.name) {
                let said: Vec<&str> =
                    claims.rejected.iter().filter(|r| r.interface == s.name).map(|r| r.reason.as_str()).collect();
                self.violation(
                    Check::Coverage,
                    &label,
                    Some(&s.name),
                    format!("the sample is not claimed (its rejections: {said:?}); a sample is an interface the provider must claim"),
                );
            }
        }
    }
}

fn fmt_opt(a: Option<IpAddr>) -> String {
    a.map(|a| a.to_string()).unwrap_or_else(|| "the interface".into())
}

/// A copy of `snap` with `change` applied to every interface called `name`.
fn modified(snap: &Snapshot, name: &str, change: impl Fn(&mut Interface)) -> Snapshot {
    let mut s = snap.clone();
    s.interfaces.iter_mut().filter(|i| i.name == name).for_each(change);
    s
}

// ---- fixtures --------------------------------------------------------------

/// Fixture interfaces and snapshots: what the kit runs providers over, public so
/// provider tests can build their tables from the same pieces.
///
/// The interfaces follow the repository's `docs/meshes.md`: each mesh as it shows up on
/// Linux (with the kind the OS reports) and on macOS (`utunN`, no kind), beside
/// the ordinary links a host has (NICs, bridges, veths, a dummy).
pub mod fixtures {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use crate::model::{IfAddr, Interface, InterfaceKind as K, Snapshot};
    use crate::provider::Claims;

    /// `ADDRESS@interface Specificity` for every candidate: a compact form for
    /// table tests (`assert_eq!(chosen(&c), ["10.8.0.1@wg0 Kind"])`).
    pub fn chosen(c: &Claims) -> Vec<String> {
        c.candidates.iter().map(|c| format!("{}@{} {:?}", c.address, c.interface, c.specificity)).collect()
    }

    /// The reasons a claim turned `iface` (or its addresses) down.
    pub fn refused(c: &Claims, iface: &str) -> Vec<String> {
        c.rejected.iter().filter(|r| r.interface == iface).map(|r| r.reason.clone()).collect()
    }

    /// An interface that is up with carrier, holding `addrs` (`IP/PREFIX`).
    ///
    /// # Panics
    /// On a malformed address literal (fixtures are constants).
    pub fn iface(name: &str, index: u32, kind: K, addrs: &[&str]) -> Interface {
        addrs.iter().fold(Interface::new(name, index, kind), |i, a| i.with_addr(a))
    }

    /// `lo`: 127.0.0.1/8 and ::1/128.
    pub fn lo() -> Interface {
        iface("lo", 1, K::Loopback, &["127.0.0.1/8", "::1/128"])
    }

    /// `eth0`: a physical NIC with a private v4, a public v6 and a link-local v6.
    pub fn eth0() -> Interface {
        iface("eth0", 2, K::Physical, &["192.168.1.10/24", "2001:db8::10/64", "fe80::10/64"])
    }

    /// Every interface shape the kit knows on Linux, `lo` and `eth0` excluded:
    /// each mesh of `docs/meshes.md` with its kind, plus ordinary and tricky links
    /// (carrier NAT on a NIC, container bridges and veths, NetworkManager's
    /// `nm-bridge`, an OpenVPN TUN, a down WireGuard, a TUN with no carrier).
    pub fn zoo() -> Vec<Interface> {
        vec![
            iface("eth1", 3, K::Physical, &["100.72.5.5/10"]),
            iface("wlan0", 4, K::Physical, &["10.0.0.23/24", "fe80::23/64"]),
            iface("docker0", 5, K::Bridge, &["172.17.0.1/16"]),
            iface("br0", 6, K::Bridge, &["192.168.50.2/24"]),
            iface("virbr0", 7, K::Bridge, &["192.168.122.1/24"]),
            iface("veth1a2b3c", 8, K::Veth, &["10.200.0.1/30", "fe80::a/64"]),
            iface("dummy0", 9, K::Virtual("dummy".into()), &["10.254.0.1/32"]),
            iface("wg0", 10, K::WireGuard, &["10.8.0.1/24", "fe80::8/64"]),
            iface("office", 11, K::WireGuard, &["10.9.0.1/24"]),
            iface("mesh", 12, K::WireGuardUserspace, &["10.10.0.1/24", "fd10::1/64"]),
            iface("tailscale0", 13, K::Tun, &["100.101.2.3/32", "fd7a:115c:a1e0::3/128", "fe80::3/64"]),
            iface("wt0", 14, K::WireGuard, &["100.72.1.2/16"]),
            iface("tun-firezone", 15, K::Tun, &["100.80.12.34/32", "fd00:2021:1111::a/128"]),
            iface("ztmjfnbvsk", 16, K::Tap, &["10.147.17.5/24", "fd80:56c2:e21c:3d4b:c99:93ab:2f1d:c2f1/88"]),
            iface("nebula1", 17, K::Tun, &["192.168.100.7/24"]),
            iface("netmaker", 18, K::WireGuard, &["10.101.0.5/16"]),
            iface("nm-office", 19, K::WireGuard, &["10.102.0.5/16"]),
            iface("nm-bridge", 20, K::Bridge, &["10.42.0.1/24"]),
            iface("CloudflareWARP", 21, K::Tun, &["172.16.0.2/32", "2606:4700:110:8a36:df92:102a:9602:fa18/128"]),
            iface("tun0", 22, K::Tun, &["10.8.8.6/24"]),
            iface("tap0", 23, K::Tap, &["192.168.77.2/24"]),
            iface("wg1", 24, K::WireGuard, &["10.8.1.1/24"]).down(),
            iface("tun1", 25, K::Tun, &["100.90.1.1/32"]).carrier(Some(false)),
            iface("nebula2", 26, K::Tun, &["192.168.101.7/24"]).carrier(None),
        ]
    }

    /// `lo`, `eth0` and the whole [`zoo`].
    pub fn busy_host() -> Snapshot {
        let mut s = Snapshot::new(vec![lo(), eth0()]);
        s.interfaces.extend(zoo());
        s
    }

    /// [`busy_host`] with the overlays it lacks (Husarnet's `hnet0`, a
    /// Yggdrasil `tun9`), where the daemons answered: tailscaled's local API
    /// for `tailscale0`, an openvpn process for `tun0`, a tincd for `tap0`,
    /// Yggdrasil's admin socket for `tun9`.
    pub fn daemon_host() -> Snapshot {
        use crate::fact::{DaemonFact, DaemonState};
        let mut host = busy_host();
        append(
            &mut host,
            vec![
                iface("hnet0", 40, K::Tun, &["fc94:b01d:1803:8dd8:b293:5c7d:7639:932a/16", "fe80::40/64"]),
                iface("tun9", 41, K::Tun, &["201:5b1c:aa7e:8d2b::1/7", "fe80::41/64"]),
            ],
        );
        host.with_fact(
            DaemonFact::new("yggdrasil", "Yggdrasil's admin socket", DaemonState::Running)
                .on("tun9")
                .with_addr("201:5b1c:aa7e:8d2b::1"),
        )
        .with_fact(
            DaemonFact::new("tailscale", "tailscaled's local API", DaemonState::Running)
                .on("tailscale0")
                .with_addr("100.101.2.3")
                .with_addr("fd7a:115c:a1e0::3"),
        )
        .with_fact(
            DaemonFact::new("openvpn", "the device openvpn (pid 41) holds open", DaemonState::Running).on("tun0"),
        )
        .with_fact(DaemonFact::new("tinc", "the device tincd (pid 42) holds open", DaemonState::Running).on("tap0"))
    }

    /// A macOS-like host as the portable source sees it: no kinds, every VPN on
    /// a point-to-point `utunN` (Tailscale, Cloudflare WARP, Firezone,
    /// WireGuard, and the system's link-local-only utuns).
    pub fn macos_host() -> Snapshot {
        let mut lo0 = iface("lo0", 1, K::Loopback, &["127.0.0.1/8", "::1/128", "fe80::1/64"]);
        lo0.flags.loopback = true;
        let utun = |name: &str, index: u32, addrs: &[&str]| {
            let mut i = iface(name, index, K::Unknown, addrs);
            i.flags.point_to_point = true;
            i.flags.carrier = None;
            i
        };
        let plain = |name: &str, index: u32, addrs: &[&str]| {
            let mut i = iface(name, index, K::Unknown, addrs);
            i.flags.carrier = None;
            i
        };
        Snapshot::new(vec![
            lo0,
            plain("en0", 4, &["192.168.1.20/24", "fe80::1c:2/64"]),
            plain("awdl0", 9, &["fe80::a0:1/64"]),
            plain("bridge0", 10, &[]),
            utun("utun0", 11, &["fe80::c:1/64"]),
            utun("utun3", 14, &["100.101.2.3/32", "fd7a:115c:a1e0::3/128"]),
            utun("utun4", 15, &["172.16.0.2/32", "2606:4700:110:8a36:df92:102a:9602:fa18/128"]),
            utun("utun5", 16, &["100.80.12.34/32"]),
            utun("utun6", 17, &["10.8.0.2/32"]),
        ])
    }

    /// `lo` and these interfaces (their indexes kept).
    pub fn with_lo(ifaces: Vec<Interface>) -> Snapshot {
        let mut s = Snapshot::new(vec![lo()]);
        s.interfaces.extend(ifaces);
        s
    }

    /// Appends interfaces, renumbering them after the snapshot's highest index.
    pub fn append(snapshot: &mut Snapshot, ifaces: Vec<Interface>) {
        let mut next = snapshot.interfaces.iter().map(|i| i.index).max().unwrap_or(0);
        for mut i in ifaces {
            next += 1;
            i.index = next;
            snapshot.interfaces.push(i);
        }
    }

    /// `n` interfaces with distinct names and indexes, cycling through `lo`,
    /// `eth0` and the [`zoo`] (`wg0` becomes `wg0-17`, and so on).
    pub fn huge(n: usize) -> Snapshot {
        let mut templates = vec![lo(), eth0()];
        templates.extend(zoo());
        let interfaces = (0..n)
            .map(|k| {
                let mut i = templates[k % templates.len()].clone();
                i.name = format!("{}-{k}", i.name);
                i.index = u32::try_from(k).unwrap_or(u32::MAX).saturating_add(1);
                i
            })
            .collect();
        Snapshot::new(interfaces)
    }

    /// Snapshots no sane OS gives, but a provider must survive, each with a label.
    pub fn odd_snapshots() -> Vec<(String, Snapshot)> {
        let busy = busy_host();
        let map = |f: &dyn Fn(&mut Interface)| {
            let mut s = busy.clone();
            s.interfaces.iter_mut().for_each(f);
            s
        };
        let mut out: Vec<(String, Snapshot)> = vec![
            ("empty".into(), Snapshot::default()),
            ("loopback only".into(), Snapshot::new(vec![lo()])),
            ("no addresses anywhere".into(), map(&|i| i.addresses.clear())),
            (
                "only link-local addresses".into(),
                map(&|i| {
                    let n = u16::try_from(i.index % 250).unwrap_or(0) + 1;
                    i.addresses = vec![
                        IfAddr { addr: IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, n)), prefix_len: 64 },
                        IfAddr { addr: IpAddr::V4(Ipv4Addr::new(169, 254, n as u8, 1)), prefix_len: 16 },
                    ];
                }),
            ),
            ("everything down".into(), map(&|i| i.flags.up = false)),
            ("no carrier anywhere".into(), map(&|i| i.flags.carrier = Some(false))),
            ("carrier unknown everywhere".into(), map(&|i| i.flags.carrier = None)),
            ("every index 0".into(), map(&|i| i.index = 0)),
            ("every kind unknown".into(), map(&|i| i.kind = K::Unknown)),
        ];
        let mut dup = busy.clone();
        dup.interfaces.extend(busy.interfaces.iter().cloned().map(|mut i| {
            i.index += 1000;
            i
        }));
        out.push(("duplicate names".into(), dup));
        let mut dup_down = busy.clone();
        dup_down.interfaces.extend(busy.interfaces.iter().cloned().map(|mut i| {
            i.index += 1000;
            i.flags.up = false;
            i
        }));
        out.push(("duplicate names, second copies down".into(), dup_down));
        out.push((
            "unicode names".into(),
            with_lo(vec![
                iface("тун0", 30, K::Tun, &["10.60.0.1/24"]),
                iface("网卡0", 31, K::Physical, &["192.168.9.9/24"]),
                iface("🦀mesh", 32, K::WireGuard, &["10.61.0.1/24"]),
                iface("wg-ñ", 33, K::WireGuard, &["10.62.0.1/24"]),
                iface("nm-é", 34, K::WireGuard, &["10.63.0.1/24"]),
                iface("CloudflareWARP\u{200b}", 35, K::Tun, &["172.16.0.2/32"]),
                iface("tailscale\u{0660}", 36, K::Tun, &["100.100.9.9/32"]),
                iface("utun٣", 37, K::Unknown, &["100.100.9.8/32"]),
            ]),
        ));
        out.push((
            "empty names".into(),
            Snapshot::new(vec![
                iface("", 0, K::Loopback, &["127.0.0.1/8"]),
                iface("", 1, K::WireGuard, &["10.8.0.1/24"]),
                iface("", 2, K::Tun, &["100.101.2.3/32"]),
                iface("", 3, K::Physical, &["192.168.1.10/24"]),
            ]),
        ));
        out.push((
            "loopback-flagged interface holding ordinary addresses".into(),
            Snapshot::new(vec![iface(
                "lo",
                1,
                K::Loopback,
                &["127.0.0.1/8", "::1/128", "10.0.0.1/32", "100.101.2.3/32", "fd7a:115c:a1e0::9/128"],
            )]),
        ));
        out.push((
            "loopback addresses on ordinary interfaces".into(),
            with_lo(vec![
                iface("wg0", 10, K::WireGuard, &["127.0.0.2/8", "::1/128"]),
                iface("tailscale0", 13, K::Tun, &["127.0.0.53/8"]),
                iface("eth0", 2, K::Physical, &["127.0.1.1/8"]),
            ]),
        ));
        out.push((
            "wildcard addresses on ordinary interfaces".into(),
            with_lo(vec![
                iface("wg9", 40, K::WireGuard, &["0.0.0.0/0", "::/0"]),
                iface("tailscale0", 13, K::Tun, &["0.0.0.0/32"]),
                iface("CloudflareWARP", 21, K::Tun, &["::/128"]),
                iface("eth0", 2, K::Physical, &["0.0.0.0/8"]),
            ]),
        ));
        out.push((
            "many addresses on one interface".into(),
            with_lo(vec![Interface {
                addresses: (0..2000u32)
                    .map(|n| IfAddr { addr: IpAddr::V4(Ipv4Addr::from(0x0a08_0000 | n)), prefix_len: 16 })
                    .collect(),
                ..iface("wg0", 10, K::WireGuard, &[])
            }]),
        ));
        out
    }
}
