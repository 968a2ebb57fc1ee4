//! The broker orders and fans out events. Every publish in the process goes through
//! [`Broker::publish`], whatever its source, so single-node and cluster share one path.

mod history;
mod memory;
mod redis;
mod routes;
mod snapshot;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use self::redis::RedisBroker;
pub use memory::MemoryBroker;

use crate::event::{Event, EventKind, Target};
use crate::ids::{AppId, ChannelName};

/// Why an event could not be published. The caller must report it (the HTTP API answers
/// an error): an accepted event is never dropped silently.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The backing transport is down.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The event was published (delivered live, kept in history; the receipt says how) but
    /// its user is offline and the offline queues are full (`offline.max_total_events`), so
    /// it was not queued.
    #[error("the user is offline and the offline queues are full: the event was not queued")]
    QueueFull(Receipt),
}

/// An idempotency key to record as published atomically with the publish, so that a publish
/// that went out is known even if its caller never hears back (the answer lost to a timeout,
/// the node killed before it could record the key): `SET {key} d PX {ttl}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    /// The key as the idempotency store names it in Redis.
    pub key: String,
    /// How long the key is kept: the idempotency window.
    pub ttl: Duration,
}

/// Orders and delivers events to every node's hub, this node included. Only the publish
/// entry (`publish::Publisher`) holds it to publish; readers of history hold its
/// [`Streams`] side.
#[async_trait]
pub trait Broker: Streams {
    /// Hands the event to every node's hub. Events published by one caller reach each
    /// channel's subscribers in the order of the calls. Returns once the event is delivered
    /// locally (memory) or accepted by the transport (cluster). `mark` is recorded as
    /// published in the same step by a broker that keeps the idempotency keys itself (Redis:
    /// the publish script sets it); one that does not ignores it, and the caller records the
    /// key afterwards.
    async fn publish(&self, event: Event, mark: Option<Mark>) -> Result<Receipt, BrokerError>;

    /// Called once at shutdown, after the connections closed: keeps what must outlive the
    /// process (the single-node history).
    async fn close(&self) {}
}

/// The read side of what the broker ordered: cache channels, history, stream heads.
#[async_trait]
pub trait Streams: Send + Sync + 'static {
    /// The last event published on a cache channel, if one was published within the cache
    /// TTL. Kept by `publish` itself, so the cache and the stream never disagree on order.
    async fn last_event(&self, app: &AppId, ch: &ChannelName)
        -> Result<Option<Event>, BrokerError>;

    /// Events of `stream` (see [`crate::event::stream_of`]) published after the event with id
    /// `since`. Ids are assigned by `publish`, in stream order, atomically with delivery.
    async fn history(&self, app: &AppId, stream: &str, since: &str)
        -> Result<History, BrokerError>;

    /// The id of the latest event of `stream` still in history, if any.
    async fn head(&self, app: &AppId, stream: &str) -> Result<Option<Arc<str>>, BrokerError>;
}

/// What [`Broker::publish`] did with an event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Receipt {
    /// The id assigned (events kept in history).
    pub id: Option<Arc<str>>,
    /// When the broker accepted it (ms since the epoch).
    pub ts_ms: u64,
    /// A user event whose user had no connection anywhere: it was kept in their offline
    /// queue (and is a candidate for a push notification).
    pub offline: bool,
}

/// Parses an event id `"{a}-{b}"`.
pub(crate) fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (a, b) = id.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Events of a stream after a given id.
#[derive(Debug, Default)]
pub struct History {
    /// In stream order, expired ones (ttl) left out.
    pub events: Vec<Event>,
    /// `false` when history no longer reaches back to `since` (trimmed, expired, or the id
    /// belongs to an earlier server epoch): the client should refetch.
    pub complete: bool,
}

/// The cache channel an event must be remembered for, if any.
pub(crate) fn cache_key(event: &Event) -> Option<&ChannelName> {
    match (&event.target, &event.kind) {
        (Target::Channel(ch), EventKind::Message { .. }) if ch.is_cache() => Some(ch),
        _ => None,
    }
}
