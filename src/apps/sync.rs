//! Keeps every node's [`Registry`] in step with the store: each change notice re-reads that
//! app, a (re)connected notice link or [`RESYNC`] re-reads all, and a store that cannot be
//! reached changes nothing (the node keeps serving the apps it has).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::records::Notice;
use super::Registry;

/// How often every stored app is re-read, in case a notice was lost.
pub const RESYNC: Duration = Duration::from_secs(30);

/// Notices waiting to be handled; beyond it the watcher waits (a burst of changes).
const QUEUE: usize = 256;

/// Loads the stored apps once, waiting at most `wait`: a node that starts while the store
/// is down serves the file's apps and picks the others up when it comes back.
pub async fn load(registry: &Registry, wait: Duration) {
    let Some(records) = registry.records() else {
        return;
    };
    match tokio::time::timeout(wait, records.all()).await {
        Ok(Ok(all)) => registry.apply_all(all),
        Ok(Err(e)) => tracing::warn!(error = %e, "apps: store unavailable at start; retrying"),
        Err(_) => tracing::warn!("apps: store did not answer at start; retrying"),
    }
}

/// Runs the watcher and the resync until `stop`.
pub fn spawn(registry: Arc<Registry>, tracker: &TaskTracker, stop: CancellationToken) {
    let Some(records) = registry.records().cloned() else {
        return;
    };
    let (tx, mut rx) = mpsc::channel(QUEUE);
    {
        let (records, stop) = (records.clone(), stop.clone());
        tracker.spawn(async move { records.watch(tx, stop).await });
    }
    tracker.spawn(async move {
        let mut resync = tokio::time::interval(RESYNC);
        resync.reset();
        loop {
            let notice = tokio::select! {
                _ = stop.cancelled() => return,
                _ = resync.tick() => Notice::All,
                n = rx.recv() => match n {
                    Some(n) => n,
                    None => return,
                },
            };
            let result = match &notice {
                Notice::All => records.all().await.map(|all| registry.apply_all(all)),
                Notice::App(id) => records.get(id).await.map(|app| registry.apply(id, app)),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "apps: store unavailable; serving the apps already known");
            }
        }
    });
}
