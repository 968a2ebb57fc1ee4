//! Offline queues: user events kept for users who are not connected anywhere, and
//! high-priority user events kept until a client acknowledges them.
//!
//! The broker decides what to queue, atomically with ordering and delivery (see
//! `broker::MemoryBroker` and the Redis publish script): a user event is queued when the
//! user has no connection anywhere, or when it is `high` priority (kept until acked). The
//! check happens before the event is delivered, and sessions register in the hub before they
//! count as connected, so an event is always either delivered live or queued, and both is
//! possible (the session's drain drops what its held live frames already carry).
//!
//! Sessions drain the queue when they start receiving user events (bus: the first subscribe
//! naming user event types; Pusher: sign-in), then [`Inbox::settle`] what they sent.
//!
//! Two implementations: [`EmbeddedInbox`] (the redb store, one node) and [`RedisInbox`]
//! (a cluster; its enqueue half lives in the broker's publish script).

mod embedded;
mod redis;

use std::sync::Arc;

use async_trait::async_trait;

pub use self::redis::{RedisInbox, ENQUEUE_LUA, TOTAL_LUA};
pub use embedded::{EmbeddedInbox, Queueing};

use crate::event::{Event, Priority};
use crate::ids::{AppId, UserId};

/// One queued event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queued {
    /// The event, with its id and timestamp.
    pub event: Event,
    /// It was also delivered live when it was queued (a `high` event waiting for an ack):
    /// a Pusher sign-in, which cannot ack, does not send it again.
    pub live: bool,
}

/// What a user's queue holds.
#[derive(Debug, Default)]
pub struct Pending {
    /// Oldest first; expired events left out.
    pub events: Vec<Queued>,
    /// Events dropped by the per-user limits since the last drain.
    pub dropped: u64,
}

/// The queue could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("offline queue unavailable: {0}")]
pub struct InboxError(pub String);

/// Why an event for an absent user was not queued.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The queues are at `max_total_events`, or the event is larger than a whole queue:
    /// the same event offered again soon would be refused again.
    #[error("the user is offline and the offline queues are full")]
    Full,
    /// The store could not take the write now (its queue full, or closing).
    #[error("offline queue unavailable: {0}")]
    Unavailable(String),
}

/// The read side of the offline queues (the broker writes).
#[async_trait]
pub trait Inbox: Send + Sync + 'static {
    /// The user's queue.
    async fn pending(&self, app: &AppId, user: &UserId) -> Result<Pending, InboxError>;

    /// Records a drain: `done` ids are removed, `kept` ids (high priority, waiting for an
    /// ack) stay and are marked live; the dropped counter restarts.
    async fn settle(
        &self,
        app: &AppId,
        user: &UserId,
        done: Vec<Arc<str>>,
        kept: Vec<Arc<str>>,
    ) -> Result<(), InboxError>;

    /// Removes acknowledged events; returns how many were queued.
    async fn ack(&self, app: &AppId, user: &UserId, ids: Vec<String>) -> Result<usize, InboxError>;
}

/// The priority as stored: `0` low, `1` normal, `2` high (eviction takes the lowest first).
pub(crate) fn priority_rank(p: Priority) -> u8 {
    match p {
        Priority::Low => 0,
        Priority::Normal => 1,
        Priority::High => 2,
    }
}

/// The user a queued event belongs to, for events that are queued at all.
pub fn queue_user(event: &Event) -> Option<&UserId> {
    match &event.target {
        crate::event::Target::User(u) if crate::event::stream_of(event).is_some() => Some(u),
        _ => None,
    }
}
