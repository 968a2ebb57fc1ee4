//! Which counts changed since the cluster sync last wrote them. Off (and free) on a single
//! node; in cluster mode the sync task is woken by each change and writes just those
//! counts, so another node's answer (`subscription_count`, an app's quota) is right as soon
//! as the change is written, not a sync period later.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::ids::{AppId, ChannelName};

/// The changed keys, taken by the sync.
#[derive(Default)]
pub struct Changed {
    /// Channels whose local subscriber count changed.
    pub channels: HashSet<(AppId, ChannelName)>,
    /// Apps whose local connection count changed.
    pub apps: HashSet<AppId>,
}

#[derive(Default)]
pub(super) struct Changes {
    on: AtomicBool,
    keys: Mutex<Changed>,
    notify: Notify,
}

impl Changes {
    pub(super) fn enable(&self) {
        self.on.store(true, Ordering::Release);
    }

    /// Records a change, after the count itself changed.
    pub(super) fn channel(&self, app: &AppId, ch: &ChannelName) {
        if self.on.load(Ordering::Acquire) {
            let mut k = self.keys.lock().expect("hub changes lock poisoned");
            k.channels.insert((app.clone(), ch.clone()));
            drop(k);
            self.notify.notify_one();
        }
    }

    pub(super) fn app(&self, app: &AppId) {
        if self.on.load(Ordering::Acquire) {
            let mut k = self.keys.lock().expect("hub changes lock poisoned");
            k.apps.insert(app.clone());
            drop(k);
            self.notify.notify_one();
        }
    }

    pub(super) fn take(&self) -> Changed {
        std::mem::take(&mut *self.keys.lock().expect("hub changes lock poisoned"))
    }

    pub(super) async fn wait(&self) {
        self.notify.notified().await;
    }
}
