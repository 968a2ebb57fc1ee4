//! User status: online/away/busy/offline per user, across both protocols, announced to the
//! user's watchers.
//!
//! A user is online while they have a connection anywhere (a bus session, or a Pusher
//! connection signed in as them), unless they declared another status; `online` shows as
//! `away` while every one of their bus sessions is idle. Announcements are throttled per user
//! (at most one per `throttle` interval); changes inside the interval are coalesced and the
//! last one wins. The state lives in a [`StatusStore`] (`presence::users`: memory, or Redis
//! on a cluster), which decides atomically what to announce, so each change is announced
//! once cluster-wide.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

pub use crate::presence::users::{Change, StatusStore, Update};

use crate::event::{Event, EventKind, Status, Target};
use crate::ids::{AppId, UserId};
use crate::metrics;
use crate::publish::Publisher;

/// The status tracker: applies changes to the store and makes the announcements.
#[derive(Clone)]
pub struct UserStatus(Arc<Inner>);

struct Inner {
    store: Arc<dyn StatusStore>,
    publisher: Publisher,
    tracker: TaskTracker,
    throttle: Duration,
}

impl UserStatus {
    /// A tracker over `store`, announcing through `publisher`; delayed announcements run on
    /// `tracker` (one timer per throttled user at most).
    pub fn new(
        store: Arc<dyn StatusStore>,
        publisher: Publisher,
        tracker: TaskTracker,
        throttle: Duration,
    ) -> Self {
        Self(Arc::new(Inner {
            store,
            publisher,
            tracker,
            throttle,
        }))
    }

    /// What watchers currently see for `user` (offline when the store cannot say).
    pub async fn current(&self, app: &AppId, user: &UserId) -> (Status, Option<Arc<str>>) {
        self.0
            .store
            .current(app, user)
            .await
            .unwrap_or((Status::Offline, None))
    }

    /// Applies a change; announces or schedules what it requires. Returns `false` when a new
    /// bus session was refused by the per-user limit.
    pub async fn apply(&self, app: &AppId, user: &UserId, change: Change) -> bool {
        let update = self.store_apply(app, user, &change).await;
        self.announce(app, user, update.announce).await;
        if let Some(delay) = update.retry_in {
            self.retry_later(app.clone(), user.clone(), delay);
        }
        !update.refused
    }

    async fn store_apply(&self, app: &AppId, user: &UserId, change: &Change) -> Update {
        match self.0.store.apply(app, user, change, self.0.throttle).await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "user status update failed");
                Update::default()
            }
        }
    }

    /// The one timer of a throttled user: re-evaluates until nothing is pending.
    fn retry_later(&self, app: AppId, user: UserId, mut delay: Duration) {
        let this = self.clone();
        self.0.tracker.spawn(async move {
            loop {
                tokio::time::sleep(delay).await;
                let update = this.store_apply(&app, &user, &Change::Retry).await;
                this.announce(&app, &user, update.announce).await;
                match update.retry_in {
                    Some(d) => delay = d,
                    None => break,
                }
            }
        });
    }

    async fn announce(
        &self,
        app: &AppId,
        user: &UserId,
        announce: Option<(Status, Status, Option<Arc<str>>)>,
    ) {
        let Some((status, previous, activity)) = announce else {
            return;
        };
        let event = Event {
            app: app.clone(),
            target: Target::Watchers(user.clone()),
            kind: EventKind::Presence {
                user_id: user.clone(),
                status,
                previous,
                activity,
            },
            exclude: None,
            meta: Default::default(),
        };
        metrics::published("internal");
        if let Err(e) = self.0.publisher.publish(event).await {
            tracing::warn!(error = %e, "presence announcement failed");
        }
    }
}
