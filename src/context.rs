//! The handles every component shares, built once by `server::run`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::apps::AppStore;
use crate::broker::{Broker, BrokerError, Receipt};
use crate::config::Config;
use crate::contacts::Contacts;
use crate::event::Event;
use crate::hub::Hub;
use crate::idempotency::{Claimed, Idempotency, StoreDown};
use crate::offline::Inbox;
use crate::presence::PresenceStore;
use crate::push::Push;
use crate::status::{StatusStore, UserStatus};
use crate::store::Store;
use crate::webhooks::{Input as WebhookInput, Webhooks};

/// Shared state of one server process.
pub struct Context {
    /// Validated configuration.
    pub config: Config,
    /// This node's connection registry.
    pub hub: Hub,
    /// The one publish path.
    pub broker: Arc<dyn Broker>,
    /// Presence membership.
    pub presence: Arc<dyn PresenceStore>,
    /// Applications.
    pub apps: Arc<dyn AppStore>,
    /// User status (online/away/busy/offline) and its announcements.
    pub status: UserStatus,
    /// Contacts set through the API.
    pub contacts: Contacts,
    /// Webhook events, reported without waiting.
    pub webhooks: Webhooks,
    /// The webhook worker's queue, taken by `server::run` when it starts the worker.
    pub webhook_queue: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<WebhookInput>>>,
    /// Offline queues: what sessions drain and acknowledge.
    pub inbox: Arc<dyn Inbox>,
    /// The embedded store (`data.dir`): durable state of a single node.
    pub store: Store,
    /// Push notifications for users who are offline.
    pub push: Push,
    /// Idempotency keys of publishers' retries.
    pub idempotency: Idempotency,
    /// This node's number: the first half of every socket id it hands out.
    pub node: u32,
    /// Cancelled on shutdown; every connection's token is a child of it.
    pub shutdown: CancellationToken,
    /// Tracks every task and connection, so shutdown can wait for them.
    pub tracker: TaskTracker,
    draining: AtomicBool,
    /// The Redis handle in cluster mode, for the graceful departure.
    pub redis: std::sync::Mutex<Option<Arc<crate::redis_base::Redis>>>,
}

impl Context {
    /// Assembles the shared state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node: u32,
        config: Config,
        hub: Hub,
        broker: Arc<dyn Broker>,
        presence: Arc<dyn PresenceStore>,
        status_store: Arc<dyn StatusStore>,
        apps: Arc<dyn AppStore>,
        store: Store,
        inbox: Arc<dyn Inbox>,
        push: Push,
        idempotency: Idempotency,
    ) -> Self {
        let tracker = TaskTracker::new();
        let throttle = std::time::Duration::from_millis(config.bus.presence_throttle_ms);
        let (webhooks, webhook_rx) = Webhooks::channel(config.webhooks.queue_capacity);
        let status = UserStatus::new(status_store, broker.clone(), tracker.clone(), throttle);
        Self {
            config,
            hub,
            broker,
            presence,
            apps,
            status,
            contacts: Contacts::default(),
            webhooks,
            webhook_queue: std::sync::Mutex::new(Some(webhook_rx)),
            node,
            store,
            inbox,
            push,
            idempotency,
            shutdown: CancellationToken::new(),
            tracker,
            draining: AtomicBool::new(false),
            redis: std::sync::Mutex::new(None),
        }
    }

    /// Publishes an event through the broker: the entry point for application events (HTTP
    /// API, bus API, ingest), where what follows a publish (push notifications for users
    /// who were offline) hangs.
    pub async fn publish(&self, event: Event) -> Result<Receipt, BrokerError> {
        // A copy only for events that could become a push (cheap: the fields are `Arc`s).
        let push = self.push.wants(&event).then(|| event.clone());
        let result = self.broker.publish(event).await;
        // An event the full offline queues could not keep was still published: for an
        // absent user a push is then the only way it reaches them.
        let (Ok(receipt) | Err(BrokerError::QueueFull(receipt))) = &result else {
            return result;
        };
        if let Some(mut event) = push {
            event.meta.id = receipt.id.clone();
            event.meta.ts_ms = receipt.ts_ms;
            self.push.offer(event, receipt.offline);
        }
        result
    }

    /// [`Self::publish`] at most once per idempotency `key` (of the event's app) within the
    /// window: `Ok(None)` when an earlier call with the key already published. A failed
    /// publish gives the key back; one that went out but could not be queued
    /// (`QueueFull`) keeps it, since a retry would deliver it twice.
    pub async fn publish_once(
        &self,
        event: Event,
        key: Option<&str>,
    ) -> Result<Option<Receipt>, PublishError> {
        let Some(key) = key else {
            return self
                .publish(event)
                .await
                .map(Some)
                .map_err(PublishError::Broker);
        };
        let claim = match self.idempotency.claim(&event.app, key).await {
            Ok(Ok(claim)) => claim,
            Ok(Err(Claimed::Done)) => {
                crate::metrics::idempotent_repeat();
                return Ok(None);
            }
            Ok(Err(_)) => return Err(PublishError::InFlight),
            Err(e) => return Err(PublishError::Store(e)),
        };
        let result = self.publish(event).await;
        match &result {
            Ok(_) | Err(BrokerError::QueueFull(_)) => self.idempotency.done(claim).await,
            Err(_) => self.idempotency.release(claim).await,
        }
        result.map(Some).map_err(PublishError::Broker)
    }

    /// Whether the node is shutting down (health check answers 503).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Marks the node as draining.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}

/// Why [`Context::publish_once`] did not publish.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The broker refused or failed.
    #[error(transparent)]
    Broker(BrokerError),
    /// A publish with the same idempotency key is still in progress.
    #[error("a publish with this idempotency_key is in progress; retry later")]
    InFlight,
    /// The idempotency keys could not be read.
    #[error(transparent)]
    Store(StoreDown),
}
