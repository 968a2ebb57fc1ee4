//! User status: online/away/busy/offline per user, across both protocols, announced to the
//! user's watchers through the broker.
//!
//! A user is online while they have a connection (a bus session, or a Pusher connection signed
//! in as them), unless they declared another status; `online` becomes `away` while every one
//! of their bus sessions is idle. Announcements are throttled per user (at most one per
//! `throttle` interval); changes inside the interval are coalesced and the last one wins.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::event::{Event, EventKind, Status, Target};
use crate::ids::{AppId, UserId};
use crate::metrics;

type Key = (AppId, UserId);

struct Entry {
    /// Connections of the user on this node.
    connections: u32,
    /// Of those, bus sessions currently idle.
    idle: u32,
    /// Bus sessions (only they can be idle).
    bus: u32,
    /// What the user declared (`online` unless told otherwise).
    declared: Status,
    activity: Option<Arc<str>>,
    /// What watchers were last told.
    sent: Status,
    sent_activity: Option<Arc<str>>,
    last_sent: Option<Instant>,
    /// A delayed announcement is scheduled.
    pending: bool,
}

impl Entry {
    fn effective(&self) -> Status {
        if self.connections == 0 {
            Status::Offline
        } else if self.declared == Status::Online && self.bus > 0 && self.idle == self.bus {
            Status::Away
        } else {
            self.declared
        }
    }
}

/// The status tracker. Cheap to clone.
#[derive(Clone)]
pub struct UserStatus(Arc<Inner>);

struct Inner {
    /// `std` mutex: never held across an await.
    users: Mutex<HashMap<Key, Entry>>,
    broker: Arc<dyn Broker>,
    tracker: TaskTracker,
    throttle: Duration,
}

/// What changed about a connection.
pub enum Change {
    /// A connection of the user opened (`bus`: it is a bus session).
    Connected {
        /// Bus session (can go idle) or Pusher connection.
        bus: bool,
    },
    /// A connection closed.
    Disconnected {
        /// Bus session.
        bus: bool,
        /// It was idle when it closed.
        was_idle: bool,
    },
    /// A bus session went idle (`true`) or became active again.
    Idle(bool),
    /// The user declared a status.
    Declared(Status, Option<Arc<str>>),
}

impl UserStatus {
    /// A tracker announcing through `broker`; delayed announcements run on `tracker`.
    pub fn new(broker: Arc<dyn Broker>, tracker: TaskTracker, throttle: Duration) -> Self {
        Self(Arc::new(Inner {
            users: Mutex::default(),
            broker,
            tracker,
            throttle,
        }))
    }

    /// What watchers currently see for `user`.
    pub fn current(&self, app: &AppId, user: &UserId) -> (Status, Option<Arc<str>>) {
        let users = self.0.users.lock().expect("status lock poisoned");
        users
            .get(&(app.clone(), user.clone()))
            .map_or((Status::Offline, None), |e| (e.sent, e.sent_activity.clone()))
    }

    /// Applies a change and announces the new status if it differs from what watchers saw.
    pub async fn apply(&self, app: &AppId, user: &UserId, change: Change) {
        let key = (app.clone(), user.clone());
        let event = {
            let mut users = self.0.users.lock().expect("status lock poisoned");
            let e = users.entry(key.clone()).or_insert_with(|| Entry {
                connections: 0,
                idle: 0,
                bus: 0,
                declared: Status::Online,
                activity: None,
                sent: Status::Offline,
                sent_activity: None,
                last_sent: None,
                pending: false,
            });
            match change {
                Change::Connected { bus } => {
                    e.connections += 1;
                    e.bus += u32::from(bus);
                }
                Change::Disconnected { bus, was_idle } => {
                    e.connections = e.connections.saturating_sub(1);
                    e.bus = e.bus.saturating_sub(u32::from(bus));
                    e.idle = e.idle.saturating_sub(u32::from(was_idle));
                    if e.connections == 0 {
                        // The next connection starts online again.
                        e.declared = Status::Online;
                        e.activity = None;
                    }
                }
                Change::Idle(true) => e.idle = (e.idle + 1).min(e.bus),
                Change::Idle(false) => e.idle = e.idle.saturating_sub(1),
                Change::Declared(s, a) => {
                    e.declared = s;
                    e.activity = a;
                }
            }
            self.due(&mut users, &key)
        };
        if let Some(event) = event {
            self.announce(event).await;
        }
    }

    /// The announcement to make now, if any; schedules a delayed one when throttled.
    /// Drops the entry of a user who is offline with nothing pending.
    fn due(&self, users: &mut HashMap<Key, Entry>, key: &Key) -> Option<Event> {
        let e = users.get_mut(key)?;
        let status = e.effective();
        let activity = if status == Status::Offline { None } else { e.activity.clone() };
        let unchanged = status == e.sent && activity == e.sent_activity;
        let event = if unchanged || e.pending {
            None
        } else {
            let now = Instant::now();
            match e.last_sent {
                Some(t) if now < t + self.0.throttle => {
                    e.pending = true;
                    self.schedule(key.clone(), t + self.0.throttle);
                    None
                }
                _ => {
                    let previous = e.sent;
                    e.sent = status;
                    e.sent_activity = activity.clone();
                    e.last_sent = Some(now);
                    Some(Event {
                        app: key.0.clone(),
                        target: Target::Watchers(key.1.clone()),
                        kind: EventKind::Presence {
                            user_id: key.1.clone(),
                            status,
                            previous,
                            activity,
                        },
                        exclude: None,
                    })
                }
            }
        };
        if e.connections == 0 && e.sent == Status::Offline && !e.pending {
            users.remove(key);
        }
        event
    }

    /// One delayed task per throttled user at most (`pending` guards it).
    fn schedule(&self, key: Key, at: Instant) {
        let this = self.clone();
        self.0.tracker.spawn(async move {
            tokio::time::sleep_until(at).await;
            let event = {
                let mut users = this.0.users.lock().expect("status lock poisoned");
                if let Some(e) = users.get_mut(&key) {
                    e.pending = false;
                    e.last_sent = None;
                }
                this.due(&mut users, &key)
            };
            if let Some(event) = event {
                this.announce(event).await;
            }
        });
    }

    async fn announce(&self, event: Event) {
        metrics::published("internal");
        if let Err(e) = self.0.broker.publish(event).await {
            tracing::warn!(error = %e, "presence announcement failed");
        }
    }
}
