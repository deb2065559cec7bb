//! [`ProbingSource`]: an [`InterfaceSource`] that runs the probes after every
//! snapshot, so every caller of the system source gets the daemons' facts.

use std::time::Duration;

use crate::model::Snapshot;
use crate::source::{InterfaceSource, SourceError};

use super::plugin::{Probes, PROBE_BOUND};

/// An [`InterfaceSource`] that runs the probes after every snapshot.
pub struct ProbingSource {
    inner: Box<dyn InterfaceSource>,
    probes: Option<Probes>,
    bound: Duration,
}

impl std::fmt::Debug for ProbingSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbingSource").field("probes", &self.probes).field("bound", &self.bound).finish()
    }
}

impl ProbingSource {
    /// `inner`'s snapshots, with the facts of every registered probe.
    pub fn new(inner: Box<dyn InterfaceSource>) -> Self {
        Self { inner, probes: None, bound: PROBE_BOUND }
    }

    /// `inner`'s snapshots, with the facts of these probes only (tests).
    pub fn with_probes(inner: Box<dyn InterfaceSource>, probes: Probes) -> Self {
        Self { inner, probes: Some(probes), bound: PROBE_BOUND }
    }

    /// Changes the bound of each probe (tests).
    pub fn bound(mut self, bound: Duration) -> Self {
        self.bound = bound;
        self
    }
}

#[async_trait::async_trait]
impl InterfaceSource for ProbingSource {
    async fn snapshot(&self) -> Result<Snapshot, SourceError> {
        let mut snapshot = self.inner.snapshot().await?;
        let probes = match &self.probes {
            Some(p) => p,
            None => Probes::global().map_err(SourceError::Probes)?,
        };
        probes.run(&mut snapshot, self.bound).await;
        Ok(snapshot)
    }
}
