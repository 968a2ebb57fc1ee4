//! What the HTTP layer uses: the handles its handlers call, and the sessions' own handles
//! for the connections it upgrades.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::apps::AppStore;
use crate::config::{BusConfig, ServerConfig};
use crate::contacts::Contacts;
use crate::hub::Hub;
use crate::presence::PresenceStore;
use crate::publish::Publisher;
use crate::push::Push;
use crate::redis_base::Redis;
use crate::session;

/// The router's state.
pub struct Api {
    /// `[server]`: limits of the door and of the API.
    pub server: ServerConfig,
    /// `[bus]`: token lifetimes.
    pub bus: BusConfig,
    /// Apps by id (signed calls) and key (upgrades, tokens).
    pub apps: Arc<dyn AppStore>,
    /// Where the API publishes.
    pub publisher: Publisher,
    /// Channel occupancy and presence members, for the channel queries.
    pub presence: Arc<dyn PresenceStore>,
    /// Contacts set through the API.
    pub contacts: Arc<Contacts>,
    /// Push registrations and preferences.
    pub push: Push,
    /// Connection admission of bus upgrades (node and app limits).
    pub hub: Hub,
    /// Whether the node is draining.
    pub health: Health,
    /// The cluster's Redis, for `/up`.
    pub redis: Option<Arc<Redis>>,
    /// What the upgraded connections' sessions use.
    pub sessions: Arc<session::Deps>,
    /// The bus sessions streaming over SSE, for their POSTs.
    pub sse: super::sse::SseSessions,
    /// The Pusher sessions over pusher-js's HTTP transports, for their requests.
    pub xhr: super::xhr::XhrSessions,
}

/// Whether the node still accepts traffic; set once, at shutdown.
#[derive(Clone, Default)]
pub struct Health(Arc<AtomicBool>);

impl Health {
    /// Whether the node is shutting down (`/up` answers 503).
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Marks the node as draining.
    pub fn start_draining(&self) {
        self.0.store(true, Ordering::Release);
    }
}
