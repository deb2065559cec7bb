//! The portable watcher: take a snapshot every interval, report when it differs.

use std::time::Duration;

use crate::model::Snapshot;
use crate::source::InterfaceSource;

use super::{WatchError, Watcher};

/// Polls an [`InterfaceSource`]; reports a change when the snapshot differs.
pub struct PollWatcher {
    source: Box<dyn InterfaceSource>,
    interval: Duration,
    last: Option<Snapshot>,
}

impl std::fmt::Debug for PollWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollWatcher").field("interval", &self.interval).finish()
    }
}

impl PollWatcher {
    /// Polls `source` every `interval`.
    pub fn new(source: Box<dyn InterfaceSource>, interval: Duration) -> Self {
        Self { source, interval, last: None }
    }
}

#[async_trait::async_trait]
impl Watcher for PollWatcher {
    async fn changed(&mut self) -> Result<(), WatchError> {
        if self.last.is_none() {
            self.last = Some(self.source.snapshot().await?);
        }
        loop {
            tokio::time::sleep(self.interval).await;
            let now = self.source.snapshot().await?;
            if self.last.as_ref() != Some(&now) {
                self.last = Some(now);
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Interface, InterfaceKind};
    use crate::source::MockInterfaceSource;

    #[tokio::test(start_paused = true)]
    async fn reports_only_real_changes() {
        let lo = Snapshot::new(vec![Interface::new("lo", 1, InterfaceKind::Loopback).with_addr("127.0.0.1/8")]);
        let mut with_wg = lo.clone();
        with_wg.interfaces.push(Interface::new("wg0", 2, InterfaceKind::WireGuard).with_addr("10.8.0.1/24"));
        let mut seq = vec![lo.clone(), lo.clone(), lo.clone(), with_wg].into_iter();
        let mut source = MockInterfaceSource::new();
        source.expect_snapshot().times(4).returning(move || Ok(seq.next().expect("four snapshots")));
        let mut w = PollWatcher::new(Box::new(source), Duration::from_millis(100));
        let start = tokio::time::Instant::now();
        w.changed().await.unwrap();
        // Two identical polls passed silently; the third poll saw wg0.
        assert_eq!(start.elapsed(), Duration::from_millis(300));
    }
}
