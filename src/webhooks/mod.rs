//! Webhooks as Pusher defines them: `channel_occupied`, `channel_vacated`, `member_added`,
//! `member_removed`, `client_event`, `cache_miss` and `subscription_count`, POSTed as
//! `{"time_ms", "events": [...]}` with `X-Pusher-Key` and `X-Pusher-Signature` (hex
//! HMAC-SHA256 of the body with the app secret).
//!
//! Sessions report what happened locally through [`Webhooks`] without waiting (a bounded
//! queue; when it is full the event is dropped and counted). One worker task decides what to
//! announce. Occupancy is recorded when it changes, not sampled: a node's first subscriber
//! of a channel marks the node as holding it and, atomically, announces `channel_occupied`
//! if the channel was not occupied anywhere (`PresenceStore::hold`); its last subscriber
//! releases it, and after `leave_delay_ms` `channel_vacated` is announced if no live node
//! holds it (`PresenceStore::vacated`), so a visit of any length gives one of each, and a
//! re-occupation within the delay gives neither. `member_removed` also waits the delay and
//! is dropped if the member came back. Subscription counts are read cluster-wide a moment
//! after a change and compared with the last announced value (`PresenceStore::announce`). Events are batched per endpoint (`batch_ms`, `batch_max`) and retried with
//! exponential backoff for `retry_secs`; a request given up is logged and counted.

mod sender;
mod worker;

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::apps::App;
use crate::config::WebhooksConfig;
use crate::ids::{ChannelName, UserId};
use crate::metrics;
use crate::presence::PresenceStore;

/// How a channel's subscribers changed, as the session that changed them saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Occupancy {
    /// This node's first subscriber of the channel.
    First,
    /// This node's last subscriber left.
    Last,
    /// Another subscriber came or went.
    Count,
    /// A dead node's subscribers were dropped (the reaper).
    Gone,
}

/// Something that happened, reported by a session.
pub enum Input {
    /// A channel's subscribers changed.
    Changed(Arc<App>, ChannelName, Occupancy),
    /// A presence member's first connection joined.
    MemberAdded(Arc<App>, ChannelName, UserId),
    /// A presence member's last connection left.
    MemberRemoved(Arc<App>, ChannelName, UserId),
    /// An event to send as it is (client_event, cache_miss).
    Now(Arc<App>, Value),
}

/// The handle sessions use. Cheap to clone; never waits.
#[derive(Clone)]
pub struct Webhooks {
    tx: mpsc::Sender<Input>,
}

impl Webhooks {
    /// The handle, with its worker started on `tracker`: it reads occupancy from
    /// `presence` and stops with `stop` after a last flush.
    pub fn spawn(
        config: &WebhooksConfig,
        presence: Arc<dyn PresenceStore>,
        tracker: &TaskTracker,
        stop: CancellationToken,
        tap: crate::tap::Tap,
    ) -> Self {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let worker =
            worker::Worker::new(config.clone(), presence, (tracker.clone(), stop), rx, tap);
        tracker.spawn(worker.run());
        Self { tx }
    }

    fn send(&self, input: Input) {
        if self.tx.try_send(input).is_err() {
            metrics::webhook_dropped("queue_full");
        }
    }

    /// A subscribe left the channel with `local` subscribers on this node.
    pub fn subscribed(&self, app: &Arc<App>, ch: &ChannelName, local: usize) {
        let how = if local == 1 {
            Occupancy::First
        } else {
            Occupancy::Count
        };
        self.channel_changed(app, ch, how);
    }

    /// An unsubscribe left `local` subscribers on this node (`None`: it was not one).
    pub fn unsubscribed(&self, app: &Arc<App>, ch: &ChannelName, local: Option<usize>) {
        match local {
            Some(0) => self.channel_changed(app, ch, Occupancy::Last),
            Some(_) => self.channel_changed(app, ch, Occupancy::Count),
            None => {}
        }
    }

    /// The channel's subscribers changed as `how` says. Transitions are sent as they
    /// happen, so a visit of any length is announced.
    pub fn channel_changed(&self, app: &Arc<App>, ch: &ChannelName, how: Occupancy) {
        let any = ["channel_occupied", "channel_vacated", "subscription_count"]
            .iter()
            .any(|e| app.wants_webhook(e, ch.as_str()));
        if any {
            self.send(Input::Changed(app.clone(), ch.clone(), how));
        }
    }

    /// A user's first connection joined a presence channel.
    pub fn member_added(&self, app: &Arc<App>, ch: &ChannelName, user: &UserId) {
        if app.wants_webhook("member_added", ch.as_str()) {
            self.send(Input::MemberAdded(app.clone(), ch.clone(), user.clone()));
        }
    }

    /// A user's last connection left a presence channel.
    pub fn member_removed(&self, app: &Arc<App>, ch: &ChannelName, user: &UserId) {
        if app.wants_webhook("member_removed", ch.as_str()) {
            self.send(Input::MemberRemoved(app.clone(), ch.clone(), user.clone()));
        }
    }

    /// A client event was accepted.
    pub fn client_event(
        &self,
        app: &Arc<App>,
        ch: &ChannelName,
        event: &str,
        data: &str,
        socket_id: &str,
        user: Option<&UserId>,
    ) {
        if !app.wants_webhook("client_event", ch.as_str()) {
            return;
        }
        // Pusher sends client event data as a string.
        let data = match serde_json::from_str::<Value>(data) {
            Ok(Value::String(s)) => s,
            _ => data.to_owned(),
        };
        let mut e = serde_json::json!({
            "name": "client_event", "channel": ch.as_str(), "event": event,
            "data": data, "socket_id": socket_id,
        });
        if let Some(u) = user {
            e["user_id"] = u.as_str().into();
        }
        self.send(Input::Now(app.clone(), e));
    }

    /// A cache channel was subscribed with nothing cached.
    pub fn cache_miss(&self, app: &Arc<App>, ch: &ChannelName) {
        if app.wants_webhook("cache_miss", ch.as_str()) {
            let e = serde_json::json!({"name": "cache_miss", "channel": ch.as_str()});
            self.send(Input::Now(app.clone(), e));
        }
    }
}
