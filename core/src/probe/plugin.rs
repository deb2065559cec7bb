//! The [`Probe`] plugin: its trait, its `inventory` descriptor, and
//! [`Probes`], every registered probe run concurrently under [`PROBE_BOUND`].

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use crate::fact::DaemonFact;
use crate::model::Snapshot;
use crate::registry::RegistryError;

/// How long one probe may take before it is skipped.
pub const PROBE_BOUND: Duration = Duration::from_millis(200);

/// The constant facts about a probe.
#[derive(Debug, Clone, Copy)]
pub struct ProbeInfo {
    /// A short name (`tailscaled`, `tincd`).
    pub name: &'static str,
    /// Where its facts come from, for reasons and notes ("tailscaled's local API").
    pub source: &'static str,
}

/// A probe could not get an answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// Talking to the daemon failed.
    #[error("ask {what}: {source}")]
    Io {
        /// What was asked (`tailscaled's local API at /var/run/tailscale/tailscaled.sock`).
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The daemon answered with something this probe cannot read.
    #[error("read the answer of {what}: {detail}")]
    Protocol {
        /// Who answered.
        what: String,
        /// What was wrong with it.
        detail: String,
    },
}

/// Something that asks one kind of mesh daemon for facts.
///
/// `probe` must be cheap when the daemon is absent: check for its socket with
/// one `stat` (or for a TUN/TAP device in the snapshot) before anything else.
#[async_trait::async_trait]
pub trait Probe: Send + Sync {
    /// The constant facts.
    fn info(&self) -> ProbeInfo;
    /// The daemon's facts; empty when no daemon of this kind runs here.
    async fn probe(&self, snapshot: &Snapshot) -> Result<Vec<DaemonFact>, ProbeError>;
}

/// What a probe registers: its name and a plain constructor.
#[derive(Debug)]
pub struct ProbeDescriptor {
    /// The probe's name (the same its `info().name` returns).
    pub name: &'static str,
    /// The crate that registered it (filled in by the macro).
    pub crate_name: &'static str,
    /// Builds the probe.
    pub build: fn() -> Box<dyn Probe>,
}

inventory::collect!(ProbeDescriptor);

/// Registers a probe. Use once per probe, at the top level of its crate or module:
///
/// ```ignore
/// meshgate_core::register_probe!("mydaemon", build);
/// fn build() -> Box<dyn meshgate_core::probe::Probe> { Box::new(MyProbe) }
/// ```
///
/// As with providers, a crate that registers a probe must be referenced by the
/// final binary or the linker drops it.
#[macro_export]
macro_rules! register_probe {
    ($name:expr, $build:path) => {
        $crate::inventory::submit! {
            $crate::probe::ProbeDescriptor {
                name: $name,
                crate_name: env!("CARGO_PKG_NAME"),
                build: $build,
            }
        }
    };
}

/// Every probe, sorted by name.
pub struct Probes {
    probes: Vec<Box<dyn Probe>>,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Probes {
    /// The probes linked into this program (built once, on first use).
    pub fn global() -> Result<&'static Probes, RegistryError> {
        static GLOBAL: OnceLock<Result<Probes, RegistryError>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| Probes::from_descriptors(inventory::iter::<ProbeDescriptor>()))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The probes of these descriptors; two with one name are an error naming both crates.
    pub fn from_descriptors(
        descriptors: impl IntoIterator<Item = &'static ProbeDescriptor>,
    ) -> Result<Probes, RegistryError> {
        let mut by_name: BTreeMap<&'static str, &'static ProbeDescriptor> = BTreeMap::new();
        for d in descriptors {
            if let Some(first) = by_name.insert(d.name, d) {
                let (a, b) = if first.crate_name <= d.crate_name {
                    (first.crate_name, d.crate_name)
                } else {
                    (d.crate_name, first.crate_name)
                };
                return Err(RegistryError::Duplicate { name: d.name.into(), first: a.into(), second: b.into() });
            }
        }
        Ok(Probes::new(by_name.into_values().map(|d| (d.build)()).collect()))
    }

    /// These probes (tests build their own).
    pub fn new(mut probes: Vec<Box<dyn Probe>>) -> Self {
        probes.sort_by_key(|p| p.info().name);
        Self { probes }
    }

    /// The probes' names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.probes.iter().map(|p| p.info().name).collect()
    }

    /// Runs every probe concurrently, each within `bound`, and adds their facts
    /// (and notes for the ones that failed or were skipped) to the snapshot.
    pub async fn run(&self, snapshot: &mut Snapshot, bound: Duration) {
        let view: &Snapshot = snapshot;
        // One read of the process table for every probe that looks there.
        let answers = super::process::one_scan(futures_util::future::join_all(
            self.probes.iter().map(|p| async move { (p.info(), tokio::time::timeout(bound, p.probe(view)).await) }),
        ))
        .await;
        for (info, answer) in answers {
            match answer {
                Ok(Ok(facts)) => snapshot.facts.extend(facts),
                Ok(Err(e)) => snapshot.probe_notes.push(format!("{}: {e}; skipped", info.source)),
                Err(_) => snapshot.probe_notes.push(format!(
                    "{} did not answer within {} ms: skipped",
                    info.source,
                    bound.as_millis()
                )),
            }
        }
    }
}

/// The interface of the snapshot that holds `addr`, if any.
pub(crate) fn holder_of(snapshot: &Snapshot, addr: std::net::IpAddr) -> Option<&crate::model::Interface> {
    snapshot.interfaces.iter().find(|i| i.addresses.iter().any(|a| a.addr == addr))
}

/// True when the snapshot has a device a process-table probe could explain:
/// a TUN or TAP, or a kernel data-channel-offload link. Without one, the
/// process probes read nothing at all.
pub(crate) fn has_tunnel_device(snapshot: &Snapshot) -> bool {
    use crate::model::InterfaceKind as K;
    snapshot.interfaces.iter().any(|i| match &i.kind {
        K::Tun | K::Tap => true,
        K::Virtual(k) => k == "ovpn-dco",
        _ => false,
    })
}
