//! Cluster broker over Redis pub/sub: every node, the publisher included, receives each event
//! from Redis and delivers it locally, so each channel has one order cluster-wide.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{cache_key, Broker, BrokerError};
use crate::cluster::Redis;
use crate::event::Event;
use crate::hub::Hub;
use crate::ids::{AppId, ChannelName};
use crate::metrics;

/// Publishes to one cluster-wide Redis channel (`{prefix}:events`); cache-channel events are
/// also stored (`{prefix}:cache:{app}:{channel}`, expiring) in the same transaction.
pub struct RedisBroker {
    redis: Arc<Redis>,
    channel: String,
    cache_ttl: Duration,
}

impl RedisBroker {
    /// A broker on `redis`, keeping cache-channel events for `cache_ttl`.
    pub fn new(redis: Arc<Redis>, cache_ttl: Duration) -> Self {
        let channel = redis.key(&["events"]);
        Self {
            redis,
            channel,
            cache_ttl,
        }
    }

    /// Starts the subscriber task: receives every event and delivers it into `hub`;
    /// reconnects and resubscribes with backoff after any failure.
    pub fn spawn_subscriber(&self, hub: Hub, tracker: &TaskTracker, stop: CancellationToken) {
        let (redis, channel) = (self.redis.clone(), self.channel.clone());
        tracker.spawn(async move {
            let mut delay = Duration::from_millis(100);
            loop {
                match subscribe_once(&redis, &channel, &hub, &stop, &mut delay).await {
                    Ok(()) => return,
                    Err(e) => tracing::warn!(error = %e, "redis subscription lost; reconnecting"),
                }
                redis.set_up(false);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        });
    }
}

/// Runs one subscription until it fails (`Err`) or shutdown (`Ok`).
async fn subscribe_once(
    redis: &Redis,
    channel: &str,
    hub: &Hub,
    stop: &CancellationToken,
    delay: &mut Duration,
) -> Result<(), redis::RedisError> {
    let mut pubsub = redis.client().get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    redis.set_up(true);
    *delay = Duration::from_millis(100);
    let mut messages = pubsub.on_message();
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            m = messages.next() => m,
        };
        let Some(msg) = msg else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "pub/sub connection closed",
            )));
        };
        match serde_json::from_slice::<Event>(msg.get_payload_bytes()) {
            Ok(event) => {
                hub.deliver(&event);
            }
            Err(e) => {
                metrics::client_error("redis_bad_envelope");
                tracing::error!(error = %e, "undecodable event from redis");
            }
        }
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, event: Event) -> Result<(), BrokerError> {
        let unavailable = |e: String| BrokerError::Unavailable(e);
        let mut conn = self.redis.conn().map_err(|e| unavailable(e.to_string()))?;
        let payload = serde_json::to_vec(&event).map_err(|e| unavailable(e.to_string()))?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        if let Some(ch) = cache_key(&event) {
            let key = self.redis.key(&["cache", event.app.as_str(), ch.as_str()]);
            pipe.cmd("SET")
                .arg(key)
                .arg(&payload)
                .arg("PX")
                .arg(self.cache_ttl.as_millis() as u64)
                .ignore();
        }
        pipe.cmd("PUBLISH").arg(&self.channel).arg(payload).ignore();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        Ok(())
    }

    async fn last_event(
        &self,
        app: &AppId,
        ch: &ChannelName,
    ) -> Result<Option<Event>, BrokerError> {
        let mut conn = self
            .redis
            .conn()
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let key = self.redis.key(&["cache", app.as_str(), ch.as_str()]);
        let raw: Option<Vec<u8>> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        Ok(raw.and_then(|r| serde_json::from_slice(&r).ok()))
    }
}
