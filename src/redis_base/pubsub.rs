//! A pub/sub link to the cluster's Redis: classic pub/sub on one server (or the Sentinels'
//! primary), sharded pub/sub (`SSUBSCRIBE`, Redis 7) on a Redis Cluster. A link is one
//! connection; a subscription is confirmed when its call returns, so anything published
//! after that reaches the link.

use futures_util::StreamExt as _;
use redis::aio::{PubSubSink, PubSubStream};
use redis::cluster_async::ClusterConnection;
use redis::{PushKind, RedisResult, Value};
use tokio::sync::mpsc::UnboundedReceiver;

/// Subscribes and unsubscribes while [`Messages`] are read.
#[derive(Clone)]
pub enum Subscriber {
    /// Classic pub/sub.
    Single(PubSubSink),
    /// Sharded pub/sub on a Redis Cluster.
    Cluster(ClusterConnection),
}

/// What arrives on a link; `None` from [`Messages::next`] means the link is gone.
pub enum Messages {
    /// Classic pub/sub.
    Single(PubSubStream),
    /// Pushes from the cluster's nodes.
    Cluster(UnboundedReceiver<redis::PushInfo>),
}

impl Subscriber {
    /// Subscribes to `names`; returns once Redis confirmed them.
    pub async fn subscribe(&mut self, names: &[String]) -> RedisResult<()> {
        if names.is_empty() {
            return Ok(());
        }
        match self {
            Self::Single(s) => s.subscribe(names).await,
            Self::Cluster(c) => c.ssubscribe(names).await,
        }
    }

    /// Unsubscribes from `names`.
    pub async fn unsubscribe(&mut self, names: &[String]) -> RedisResult<()> {
        if names.is_empty() {
            return Ok(());
        }
        match self {
            Self::Single(s) => s.unsubscribe(names).await,
            Self::Cluster(c) => c.sunsubscribe(names).await,
        }
    }
}

impl Messages {
    /// The next message's payload; `None` once the link is lost.
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        match self {
            Self::Single(s) => s.next().await.map(|m| m.get_payload_bytes().to_vec()),
            Self::Cluster(rx) => loop {
                let push = rx.recv().await?;
                match push.kind {
                    PushKind::SMessage | PushKind::Message => {
                        if let Some(Value::BulkString(b)) = push.data.into_iter().nth(1) {
                            return Some(b);
                        }
                    }
                    // A node's connection dropped: what was published meanwhile is lost to
                    // this link, so the caller treats it as lost and starts over.
                    PushKind::Disconnection => return None,
                    _ => {}
                }
            },
        }
    }
}
