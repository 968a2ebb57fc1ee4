//! Sessions: one per client connection. [`connection`] is what every connection has (the bounded
//! outbox and its writer, the heartbeat, the close with its code); a protocol (`pusher`,
//! `bus`) is a command handler over it; a transport ([`transport`]; WebSocket in [`ws`]) is the
//! boundary that carries frames in and out.

pub mod bus;
mod connection;
pub mod pusher;
pub mod sse;
pub mod transport;
pub mod ws;
pub mod xhr;

use std::sync::Arc;

pub use self::connection::{admit, Admitted};
pub(crate) use self::connection::{run, send_page, Protocol};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Streams;
use crate::cluster::Counts;
use crate::config::{BusConfig, OfflineConfig, ServerConfig};
use crate::contacts::Contacts;
use crate::hub::Hub;
use crate::offline::Inbox;
use crate::presence::PresenceStore;
use crate::publish::Publisher;
use crate::push::Push;
use crate::status::UserStatus;
use crate::webhooks::Webhooks;

/// What sessions use: the handles of the node's components.
pub struct Deps {
    /// `[server]`: outbox, heartbeat, limits.
    pub server: ServerConfig,
    /// `[bus]`: per-user and per-connection limits, throttles.
    pub bus: BusConfig,
    /// `[offline]`: whether queues are drained.
    pub offline: OfflineConfig,
    /// This node's number (the first half of its socket ids).
    pub node: u32,
    /// This node's connections, channels, users and watchers.
    pub hub: Hub,
    /// Where client events, typing, presence and member changes are published.
    pub publisher: Publisher,
    /// History, stream heads and cache channels.
    pub streams: Arc<dyn Streams>,
    /// Presence-channel membership.
    pub presence: Arc<dyn PresenceStore>,
    /// User status and its announcements.
    pub status: UserStatus,
    /// Who may see whose presence.
    pub contacts: Arc<Contacts>,
    /// Webhook events, reported without waiting.
    pub webhooks: Webhooks,
    /// Offline queues: drained and acknowledged by sessions.
    pub inbox: Arc<dyn Inbox>,
    /// Push registrations made over the bus.
    pub push: Push,
    /// Cluster mode: this node's counts in Redis (subscription fence, app quotas).
    pub counts: Option<Arc<Counts>>,
    /// Cancelled on shutdown; every connection's token is a child of it.
    pub shutdown: CancellationToken,
    /// Tracks every connection, so shutdown can wait for them.
    pub tracker: TaskTracker,
}
