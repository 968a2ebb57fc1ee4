//! A pub/sub link to the cluster's Redis: classic pub/sub on one server (or the Sentinels'
//! primary), sharded pub/sub (`SSUBSCRIBE`, Redis 7) on a Redis Cluster. A link is one
//! connection for one shard's channels (`Redis::pubsub_at`: on a Redis Cluster they share
//! a slot, as one `SSUBSCRIBE` needs); a subscription is confirmed when its call returns,
//! so anything published after that reaches the link.

use std::time::Duration;

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
    Cluster(ClusterMessages),
}

/// A Redis Cluster link's pushes, and what tells whether it still hears its shard.
pub struct ClusterMessages {
    rx: UnboundedReceiver<redis::PushInfo>,
    conn: ClusterConnection,
    /// The slot of the link's shard: every channel it subscribes is there.
    slot: u16,
    /// The primary of that slot when the link was made (its subscriptions are there), once
    /// known.
    owner: Option<String>,
    /// `scheme://[userinfo@]` for a node's URL.
    base: String,
    /// Some node's connection dropped, and whether it was the shard's is not known yet.
    suspect: bool,
}

/// How long the shard's primary has to answer after some node's connection dropped.
const CHECK_WAIT: Duration = Duration::from_millis(500);

impl Messages {
    pub(super) fn cluster(
        rx: UnboundedReceiver<redis::PushInfo>,
        conn: ClusterConnection,
        slot: u16,
        owner: Option<String>,
        base: String,
    ) -> Self {
        Self::Cluster(ClusterMessages {
            rx,
            conn,
            slot,
            owner,
            base,
            suspect: false,
        })
    }
}

impl ClusterMessages {
    /// Whether the shard's primary, where this link's subscriptions are, still answers. The
    /// push that reports a dropped connection does not say whose it was, and the cluster
    /// client is connected to every primary: it is often another shard's, whose loss this
    /// link's channels never feel. Asked on a connection of its own (the cluster client
    /// would answer from another node); a primary that cannot be named counts as lost.
    async fn shard_alive(&mut self) -> bool {
        let check = async {
            if self.owner.is_none() {
                let nodes: String = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query_async(&mut self.conn)
                    .await
                    .ok()?;
                self.owner = super::topology::parse_nodes(&nodes, self.slot, &self.base).1;
            }
            let client = redis::Client::open(self.owner.as_deref()?).ok()?;
            let mut c = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING").query_async::<String>(&mut c).await.ok()
        };
        matches!(tokio::time::timeout(CHECK_WAIT, check).await, Ok(Some(_)))
    }
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
            Self::Cluster(m) => loop {
                // Cancel-safe: a check cut short by the caller is done again on the next call.
                if m.suspect {
                    if !m.shard_alive().await {
                        return None;
                    }
                    m.suspect = false;
                }
                let push = m.rx.recv().await?;
                match push.kind {
                    PushKind::SMessage | PushKind::Message => {
                        if let Some(Value::BulkString(b)) = push.data.into_iter().nth(1) {
                            return Some(b);
                        }
                    }
                    // A node's connection dropped. If it was the shard's primary, what was
                    // published meanwhile is lost to this link, so the caller treats the
                    // link as lost and starts over; another node's loss changes nothing here.
                    PushKind::Disconnection => m.suspect = true,
                    _ => {}
                }
            },
        }
    }
}
