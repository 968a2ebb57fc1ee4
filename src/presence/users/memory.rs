//! Single-node status state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{effective, Change, Counts, StatusStore, Update};
use crate::event::Status;
use crate::ids::{AppId, UserId};
use crate::presence::PresenceError;

struct Entry {
    counts: Counts,
    declared: Status,
    activity: Option<Arc<str>>,
    sent: Status,
    sent_activity: Option<Arc<str>>,
    last_sent: Option<Instant>,
    pending: bool,
}

/// Status state held in this process (`std` mutex: never held across an await).
#[derive(Default)]
pub struct MemoryStatus {
    users: Mutex<HashMap<(AppId, UserId), Entry>>,
}

impl MemoryStatus {
    /// Runs `f` with whether `user` has a connection, under the state's lock: no connection
    /// is counted or uncounted meanwhile.
    pub fn while_counted<R>(&self, app: &AppId, user: &UserId, f: impl FnOnce(bool) -> R) -> R {
        let users = self.users.lock().expect("status lock poisoned");
        let connected = users
            .get(&(app.clone(), user.clone()))
            .is_some_and(|e| e.counts.connections > 0);
        f(connected)
    }
}

#[async_trait]
impl StatusStore for MemoryStatus {
    async fn apply(
        &self,
        app: &AppId,
        user: &UserId,
        change: &Change,
        throttle: Duration,
    ) -> Result<Update, PresenceError> {
        let mut users = self.users.lock().expect("status lock poisoned");
        let key = (app.clone(), user.clone());
        let e = users.entry(key.clone()).or_insert_with(|| Entry {
            counts: Counts::default(),
            declared: Status::Online,
            activity: None,
            sent: Status::Offline,
            sent_activity: None,
            last_sent: None,
            pending: false,
        });
        let mut update = Update::default();
        let c = &mut e.counts;
        match change {
            Change::Connected { bus, limit } => {
                if *bus && *limit > 0 && c.bus >= *limit as u64 {
                    update.refused = true;
                } else {
                    c.connections += 1;
                    c.bus += u64::from(*bus);
                }
            }
            Change::Disconnected { bus, was_idle } => {
                c.connections = c.connections.saturating_sub(1);
                c.bus = c.bus.saturating_sub(u64::from(*bus));
                c.idle = c.idle.saturating_sub(u64::from(*was_idle));
                if c.connections == 0 {
                    // The next connection starts online again.
                    e.declared = Status::Online;
                    e.activity = None;
                }
            }
            Change::Idle(true) => c.idle = (c.idle + 1).min(c.bus),
            Change::Idle(false) => c.idle = c.idle.saturating_sub(1),
            Change::Declared(s, a) => {
                e.declared = *s;
                e.activity = a.clone();
            }
            Change::Retry => {
                e.pending = false;
                e.last_sent = None;
            }
        }
        let status = effective(&e.counts, e.declared);
        let activity = if status == Status::Offline {
            None
        } else {
            e.activity.clone()
        };
        let unchanged = status == e.sent && activity == e.sent_activity;
        if !unchanged && !e.pending {
            let now = Instant::now();
            match e.last_sent {
                Some(t) if now < t + throttle => {
                    e.pending = true;
                    update.retry_in = Some(t + throttle - now);
                }
                _ => {
                    update.announce = Some((status, e.sent, activity.clone()));
                    e.sent = status;
                    e.sent_activity = activity;
                    e.last_sent = Some(now);
                }
            }
        }
        if e.counts.connections == 0 && e.sent == Status::Offline && !e.pending {
            users.remove(&key);
        }
        Ok(update)
    }

    async fn current(
        &self,
        app: &AppId,
        user: &UserId,
    ) -> Result<(Status, Option<Arc<str>>), PresenceError> {
        let users = self.users.lock().expect("status lock poisoned");
        Ok(users
            .get(&(app.clone(), user.clone()))
            .map_or((Status::Offline, None), |e| {
                (e.sent, e.sent_activity.clone())
            }))
    }
}
