//! Daemon state changes count as network changes: a [`DaemonWatcher`] wraps
//! the OS watcher and also resolves when tailscaled's state changes
//! (`Starting` → `Running`, `NeedsLogin`, `Stopped`), or tailscaled appears or
//! goes away.
//!
//! It follows tailscaled's IPN bus (`GET /localapi/v0/watch-ipn-bus`, one JSON
//! notification a line) rather than polling the status, so a state change
//! arrives as fast as tailscaled says it. Only notifications that carry a
//! `State` different from the last one count: network-map updates (peers
//! coming and going) are not a reason to re-resolve. Without a socket the
//! watcher checks for one once a second: one failed `stat`.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{WatchError, Watcher};

/// How often a missing tailscaled socket is looked for again.
const LOOK_AGAIN: Duration = Duration::from_secs(1);
/// How long to wait before asking again when tailscaled refused the watch.
const REFUSED_AGAIN: Duration = Duration::from_secs(60);
/// `NotifyInitialState` (the first notification carries the current state) |
/// `NotifyNoPrivateKeys` (without it, tailscaled refuses a watcher that is not
/// root or its operator). Not `NotifyRateLimit`: it could delay a state change.
const MASK: u32 = (1 << 1) | (1 << 4);

/// The OS watcher, plus tailscaled's state changes.
#[derive(Debug)]
pub struct DaemonWatcher {
    inner: Box<dyn Watcher>,
    rx: mpsc::Receiver<()>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for dyn Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watcher")
    }
}

impl DaemonWatcher {
    /// Wraps `inner`, following the tailscaled at `socket`. Must run inside a tokio runtime.
    pub fn new(inner: Box<dyn Watcher>, socket: PathBuf) -> Self {
        let (tx, rx) = mpsc::channel(1);
        let task = tokio::spawn(follow_tailscaled(socket, tx));
        Self { inner, rx, task }
    }
}

impl Drop for DaemonWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[async_trait::async_trait]
impl Watcher for DaemonWatcher {
    async fn changed(&mut self) -> Result<(), WatchError> {
        tokio::select! {
            r = self.inner.changed() => r,
            Some(()) = self.rx.recv() => Ok(()),
        }
    }
}

/// The `State` of one IPN bus notification, if it has one.
fn state_of(line: &str) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    v.get("State")?.as_i64()
}

async fn follow_tailscaled(socket: PathBuf, tx: mpsc::Sender<()>) {
    // `None`: not known (no tailscaled yet). A change from a known state counts.
    let mut last: Option<Option<i64>> = None;
    let report = |now: Option<i64>, last: &mut Option<Option<i64>>| {
        if last.is_some_and(|l| l != now) {
            let _ = tx.try_send(());
        }
        *last = Some(now);
    };
    loop {
        if std::fs::symlink_metadata(&socket).is_err() {
            report(None, &mut last);
            tokio::time::sleep(LOOK_AGAIN).await;
            continue;
        }
        let Ok(mut stream) = tokio::net::UnixStream::connect(&socket).await else {
            report(None, &mut last);
            tokio::time::sleep(LOOK_AGAIN).await;
            continue;
        };
        let req = format!("GET /localapi/v0/watch-ipn-bus?mask={MASK} HTTP/1.0\r\nHost: local-tailscaled.sock\r\n\r\n");
        if stream.write_all(req.as_bytes()).await.is_err() {
            tokio::time::sleep(LOOK_AGAIN).await;
            continue;
        }
        let mut lines = BufReader::new(stream).lines();
        let status = lines.next_line().await.ok().flatten().unwrap_or_default();
        if status.split_whitespace().nth(1) != Some("200") {
            // Refused (an old tailscaled, no permission): the OS watcher still
            // sees the addresses come and go; ask again much later.
            tokio::time::sleep(REFUSED_AGAIN).await;
            continue;
        }
        let mut in_body = false;
        while let Ok(Some(line)) = lines.next_line().await {
            if !in_body {
                in_body = line.trim().is_empty();
                continue;
            }
            if let Some(state) = state_of(&line) {
                report(Some(state), &mut last);
            }
        }
        // The bus ended: tailscaled restarted or went away.
        report(None, &mut last);
        tokio::time::sleep(LOOK_AGAIN).await;
    }
}
