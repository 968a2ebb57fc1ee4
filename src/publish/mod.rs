//! The one way to publish. Every publisher — the HTTP and bus APIs, client events, ingest
//! rows, presence and status announcements, the reaper — hands its event to
//! [`Publisher::publish`] (or [`Publisher::publish_once`] with an idempotency key), which
//! orders and delivers it through the broker and then offers what it published to push
//! notifications for users who were offline. [`input`] validates what publishers send, for
//! the HTTP API and ingest alike.

pub mod input;

use std::sync::Arc;

use crate::broker::{Broker, BrokerError, Mark, Receipt};
use crate::event::Event;
use crate::idempotency::{Claimed, Idempotency, StoreDown};
use crate::metrics;
use crate::push::Push;

/// The publish entry point. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    broker: Arc<dyn Broker>,
    push: Push,
    idempotency: Idempotency,
}

/// Why [`Publisher::publish_once`] did not publish.
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

impl Publisher {
    /// Publishes through `broker`, offers user events to `push`, remembers keys in
    /// `idempotency`.
    pub fn new(broker: Arc<dyn Broker>, push: Push, idempotency: Idempotency) -> Self {
        Self {
            broker,
            push,
            idempotency,
        }
    }

    /// Publishes `event`: ordered and delivered by the broker (every node's hub, history,
    /// offline queues); then, for a user with no connection anywhere, offered to push
    /// without waiting.
    pub async fn publish(&self, event: Event) -> Result<Receipt, BrokerError> {
        self.publish_marked(event, None).await
    }

    async fn publish_marked(
        &self,
        event: Event,
        mark: Option<Mark>,
    ) -> Result<Receipt, BrokerError> {
        // A copy only for events that could become a push (cheap: the fields are `Arc`s).
        let push = self.push.wants(&event).then(|| event.clone());
        let result = self.broker.publish(event, mark).await;
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
    /// (`QueueFull`) keeps it, since a retry would deliver it twice. On a cluster the broker
    /// marks the key done in the step that publishes, so a publish that went out keeps its
    /// key even when this call fails afterwards or never returns.
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
        let owner = event.target.owner();
        let claim = match self.idempotency.claim(&event.app, key, owner).await {
            Ok(Ok(claim)) => claim,
            Ok(Err(Claimed::Done)) => {
                metrics::idempotent_repeat();
                return Ok(None);
            }
            Ok(Err(_)) => return Err(PublishError::InFlight),
            Err(e) => return Err(PublishError::Store(e)),
        };
        // Where the broker can, it marks the key done in the step that publishes: a publish
        // that went out is then never given back (the release below leaves a done key) nor
        // left to lapse, whatever becomes of this call.
        let mark = self
            .idempotency
            .mark(&claim)
            .map(|(key, ttl)| Mark { key, ttl });
        let result = self.publish_marked(event, mark).await;
        match &result {
            Ok(_) | Err(BrokerError::QueueFull(_)) => self.idempotency.done(claim).await,
            Err(_) => self.idempotency.release(claim).await,
        }
        result.map(Some).map_err(PublishError::Broker)
    }
}
