//! Sign-in of a Pusher connection: the user's registry entry, watchlist and status, and
//! the drain of their offline queue.

use std::collections::HashSet;
use std::sync::Arc;

use super::{Session, SignedIn};
use crate::auth;
use crate::event::Status;
use crate::ids::UserId;
use crate::metrics;
use crate::protocol::pusher::{self as wire, code, user_id_of, UserData};
use crate::status::Change;

/// Most watchlist entries honoured (Pusher: 100; more → error 4302).
const MAX_WATCHLIST: usize = 100;
/// Queued events written (and then removed from the offline queue) at a time.
const DRAIN_PAGE: usize = 100;

impl Session {
    pub(super) async fn signin(&mut self, auth: &str, user_data: &str) {
        if !self.app.user_authentication {
            return self.send(wire::error(
                Some(code::UNAUTHORIZED),
                "User authentication is disabled for this app",
            ));
        }
        if !auth::user_auth_ok(&self.app, self.id, user_data, auth) {
            metrics::client_error("signin");
            return self.send(wire::error(
                Some(code::UNAUTHORIZED),
                "Invalid signin signature",
            ));
        }
        let Ok(data) = serde_json::from_str::<UserData>(user_data) else {
            return self.send(wire::error(
                Some(code::UNAUTHORIZED),
                "user_data must be a JSON object with an id",
            ));
        };
        // A number is an id too: Laravel signs the model's integer key (as Pusher and
        // soketi accept it, and as presence channel_data already is).
        let Some(id) = user_id_of(&data.id) else {
            return self.send(wire::error(
                Some(code::UNAUTHORIZED),
                "user_data.id must be a non-empty string or a number, of at most 128 characters",
            ));
        };
        if let Some(current) = &self.user {
            if current.id != id {
                return self.send(wire::error(
                    Some(code::UNAUTHORIZED),
                    "Already signed in as another user",
                ));
            }
            return self.send(wire::signin_success(user_data));
        }
        let over = data.watchlist.len() > MAX_WATCHLIST;
        let watchlist: Vec<UserId> = data
            .watchlist
            .iter()
            .take(MAX_WATCHLIST)
            .filter_map(user_id_of)
            .collect();
        self.send(wire::signin_success(user_data));
        if over {
            self.send(wire::error(
                Some(code::WATCHLIST_LIMIT),
                "Watchlist is limited to 100 user ids; the first 100 are watched",
            ));
        }
        let app = self.app.id.clone();
        let hub = &self.ctx.hub;
        // Held until the offline queue is sent (registered before counted as connected: a
        // user event is then queued, or held here, or both).
        self.outbox.hold();
        hub.add_user(&app, &id, self.id, self.recipient());
        for w in &watchlist {
            hub.watch(&app, w, self.id, self.recipient());
        }
        // Heard from every node before counted as connected (see broker::routes).
        hub.settled().await;
        let mut online: Vec<&str> = Vec::new();
        for w in &watchlist {
            if self.ctx.status.current(&app, w).await.0 != Status::Offline {
                online.push(w.as_str());
            }
        }
        if !online.is_empty() {
            self.send(wire::watchlist_event(true, online));
        }
        self.user = Some(Box::new(SignedIn {
            id: id.clone(),
            watchlist,
        }));
        self.ctx
            .status
            .apply(
                &app,
                &id,
                Change::Connected {
                    bus: false,
                    limit: 0,
                },
            )
            .await;
        let sent = self.drain_offline(&id).await;
        self.outbox
            .release(&|_, event_id| sent.contains(event_id))
            .await;
    }

    /// Sends the user's offline queue on sign-in, a page at a time. Pusher clients cannot
    /// acknowledge, so what was written to the socket is removed (events already delivered
    /// live are not sent again), and what was not stays queued.
    async fn drain_offline(&self, user: &UserId) -> HashSet<Arc<str>> {
        let mut sent = HashSet::new();
        if !self.ctx.offline.enabled {
            return sent;
        }
        let pending = match self.ctx.inbox.pending(&self.app.id, user).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "offline queue read failed");
                return sent;
            }
        };
        let mut dropped = pending.dropped;
        for page in pending.events.chunks(DRAIN_PAGE) {
            let frames = page
                .iter()
                .filter(|q| !q.live)
                .filter_map(|q| wire::encode_event(&q.event))
                .collect();
            if !crate::session::send_page(&self.outbox, frames).await {
                return sent;
            }
            let done: Vec<Arc<str>> = page
                .iter()
                .filter_map(|q| q.event.meta.id.clone())
                .collect();
            sent.extend(done.iter().cloned());
            self.settle(user, done).await;
            dropped = 0;
        }
        if dropped > 0 {
            self.settle(user, Vec::new()).await;
        }
        sent
    }

    async fn settle(&self, user: &UserId, done: Vec<Arc<str>>) {
        let r = self.ctx.inbox.settle(&self.app.id, user, done, Vec::new());
        if let Err(e) = r.await {
            tracing::warn!(error = %e, "offline queue update failed");
        }
    }

    pub(super) async fn signout(&mut self) {
        let Some(user) = self.user.take() else {
            return;
        };
        let app = self.app.id.clone();
        for w in &user.watchlist {
            self.ctx.hub.unwatch(&app, w, self.id);
        }
        self.ctx.hub.remove_user(&app, &user.id, self.id);
        self.ctx
            .status
            .apply(
                &app,
                &user.id,
                Change::Disconnected {
                    bus: false,
                    was_idle: false,
                },
            )
            .await;
    }
}
