//! Presence on a bus connection: the users it watches and their status, the status the
//! user declares, and typing indicators.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Session, MAX_FIELD_LEN, MAX_TYPING_TARGETS};
use crate::event::{Event, EventKind, Status, Target};
use crate::ids::UserId;
use crate::metrics;
use crate::protocol::bus as wire;
use crate::status::Change;

impl Session {
    /// Watches the token's watchlist and the user's contacts.
    pub(super) fn watch(&mut self, watchlist: &[String]) {
        let max = self.ctx.bus.max_watchlist;
        let contacts = self.ctx.contacts.get(&self.app.id, &self.user);
        let mut seen = HashSet::new();
        let ids = watchlist
            .iter()
            .filter_map(|w| UserId::parse(w).ok())
            .chain(contacts.iter().cloned());
        for w in ids {
            if self.watching.len() >= max {
                break;
            }
            if w != self.user && seen.insert(w.clone()) {
                self.ctx
                    .hub
                    .watch(&self.app.id, &w, self.id, self.recipient());
                self.watching.push(w);
            }
        }
    }

    /// The current status of every watched user who is not offline.
    pub(super) async fn presence_snapshot(&self) {
        for w in &self.watching {
            let (status, activity) = self.ctx.status.current(&self.app.id, w).await;
            if status == Status::Offline {
                continue;
            }
            let event = Event {
                app: self.app.id.clone(),
                target: Target::Watchers(w.clone()),
                kind: EventKind::Presence {
                    user_id: w.clone(),
                    status,
                    previous: status,
                    activity,
                },
                exclude: None,
                meta: Default::default(),
            };
            if let Some(f) = wire::encode_event(&event) {
                self.send(f);
            }
        }
    }

    pub(super) async fn declare(&mut self, status: Status, activity: Option<String>) {
        if activity.as_ref().is_some_and(|a| a.len() > MAX_FIELD_LEN) {
            return self.invalid("activity is too long");
        }
        let change = Change::Declared(status, activity.map(Arc::from));
        self.ctx
            .status
            .apply(&self.app.id, &self.user, change)
            .await;
    }

    pub(super) async fn typing(&mut self, recipient: String, conversation_id: String) {
        let Ok(recipient) = UserId::parse(&recipient) else {
            return self.invalid("invalid recipient");
        };
        if conversation_id.is_empty() || conversation_id.len() > MAX_FIELD_LEN {
            return self.invalid("invalid conversation_id");
        }
        let now = Instant::now();
        let throttle = Duration::from_millis(self.ctx.bus.typing_throttle_ms);
        let key = (recipient, Arc::<str>::from(conversation_id));
        if self.typing.get(&key).is_some_and(|t| now < *t + throttle) {
            return; // repeated indicator inside the throttle window: nothing new to say
        }
        if self.typing.len() >= MAX_TYPING_TARGETS {
            if let Some(oldest) = self
                .typing
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(k, _)| k.clone())
            {
                self.typing.remove(&oldest);
            }
        }
        self.typing.insert(key.clone(), now);
        let event = Event {
            app: self.app.id.clone(),
            target: Target::User(key.0),
            kind: EventKind::Typing {
                user_id: self.user.clone(),
                conversation_id: key.1,
                sent_at_ms: crate::clock::now_ms(),
            },
            exclude: None,
            meta: Default::default(),
        };
        metrics::published("client");
        if let Err(e) = self.ctx.publisher.publish(event).await {
            tracing::warn!(error = %e, "typing indicator not published");
        }
    }
}
