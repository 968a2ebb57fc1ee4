//! The Redis base of a cluster: one node's connection to the shared Redis, whatever its
//! topology (one server, a Redis Cluster, a primary behind Sentinels: [`Topology`]):
//! commands on one auto-reconnecting multiplexed connection ([`Conn`]), pub/sub links of
//! their own, key naming and the Lua prelude every script starts with. The Redis implementations of the seams (broker,
//! presence, status, offline queues, push store, idempotency keys) import it; the cluster
//! tasks (leases, reaper, count sync) live in `cluster`.

mod lua;
mod pubsub;
mod shard;
mod topology;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::sentinel::{SentinelClient, SentinelServerType};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics;

pub use pubsub::{Messages, Subscriber};
pub use shard::{Shard, CLUSTER_SHARDS};
pub use topology::{is_cluster_node, Conn, Topology};

/// A node's handle to Redis. Commands go through one multiplexed, auto-reconnecting
/// connection ([`Conn`]); pub/sub uses links of its own ([`Redis::pubsub`]).
pub struct Redis {
    target: Target,
    conn: RwLock<Option<Conn>>,
    /// Each shard's prefix and hash slot ([`Shard`]); one on a server or behind Sentinels.
    shards: Vec<(String, u16)>,
    /// This node's id in keys and leases.
    pub node: String,
    /// Lease period.
    pub lease: Duration,
    up: AtomicBool,
    /// Set once this node's first lease is in Redis.
    leased: tokio::sync::watch::Sender<bool>,
    /// Bumped when the Sentinels name a new primary: pub/sub links start over on it.
    primary: tokio::sync::watch::Sender<u64>,
    /// The URL whose topology could not be asked at start (it was taken for one server).
    undetected: Option<String>,
    /// Messages this node received from pub/sub (`switchboard_cluster_messages_received_total`).
    pub received: Arc<std::sync::atomic::AtomicU64>,
}

enum Target {
    Single(redis::Client),
    Cluster(ClusterClient, Vec<String>),
    Sentinel {
        sentinels: tokio::sync::Mutex<SentinelClient>,
        /// The primary's client, once found.
        current: RwLock<Option<(String, redis::Client)>>,
    },
}

/// Why Redis could not be used.
#[derive(Debug, thiserror::Error)]
#[error("redis unavailable: {0}")]
pub struct RedisDown(pub String);

impl From<redis::RedisError> for RedisDown {
    fn from(e: redis::RedisError) -> Self {
        Self(e.to_string())
    }
}

impl Redis {
    /// A handle on `topology`; connects later, in the background ([`Redis::spawn_connector`]).
    /// A URL that may be a Redis Cluster node is asked now (2 s at most; unreachable: one
    /// server, which `redis.cluster = true` overrides).
    pub async fn open(
        topology: Topology,
        prefix: &str,
        node: String,
        lease: Duration,
    ) -> Result<Arc<Self>, RedisDown> {
        let mut undetected = None;
        let topology = match topology {
            Topology::Detect(url) => match is_cluster_node(&url, Duration::from_secs(2)).await {
                Some(true) => Topology::Cluster(vec![url]),
                Some(false) => Topology::Single(url),
                None => {
                    tracing::warn!(
                        "redis did not answer at start; assuming one server (set redis.cluster = true for a Redis Cluster)"
                    );
                    undetected = Some(url.clone());
                    Topology::Single(url)
                }
            },
            t => t,
        };
        let (target, shards) = match topology {
            Topology::Single(url) | Topology::Detect(url) => (
                Target::Single(redis::Client::open(url)?),
                vec![(prefix.to_owned(), 0)],
            ),
            Topology::Cluster(urls) => {
                let client = cluster_builder(&urls).build()?;
                let shards = shard::prefixes(prefix, CLUSTER_SHARDS);
                (Target::Cluster(client, urls), shards)
            }
            Topology::Sentinel { sentinels, master } => {
                let client =
                    SentinelClient::build(sentinels, master, None, SentinelServerType::Master)?;
                let target = Target::Sentinel {
                    sentinels: tokio::sync::Mutex::new(client),
                    current: RwLock::new(None),
                };
                (target, vec![(prefix.to_owned(), 0)])
            }
        };
        Ok(Arc::new(Self {
            target,
            conn: RwLock::new(None),
            shards,
            node,
            lease,
            up: AtomicBool::new(false),
            leased: tokio::sync::watch::Sender::new(false),
            primary: tokio::sync::watch::Sender::new(0),
            undetected,
            received: Arc::default(),
        }))
    }

    /// Which kind of Redis this is, for the start-up line.
    pub fn kind(&self) -> &'static str {
        match self.target {
            Target::Single(_) => "server",
            Target::Cluster(..) => "cluster",
            Target::Sentinel { .. } => "sentinel",
        }
    }

    /// `SPUBLISH` on a Redis Cluster (sharded pub/sub: only the slot's nodes carry it),
    /// `PUBLISH` elsewhere; scripts take it as an argument.
    pub fn publish_command(&self) -> &'static str {
        match self.target {
            Target::Cluster(..) => "SPUBLISH",
            _ => "PUBLISH",
        }
    }

    /// A new pub/sub link for the home shard's channels.
    pub async fn pubsub(&self) -> Result<(Subscriber, Messages), RedisDown> {
        self.pubsub_at(Shard::HOME).await
    }

    /// A new pub/sub link for `shard`'s channels. On a Redis Cluster it ends only when that
    /// shard's primary is lost, not when another node's connection drops.
    pub async fn pubsub_at(&self, shard: Shard) -> Result<(Subscriber, Messages), RedisDown> {
        match &self.target {
            Target::Single(client) => split(client).await,
            Target::Sentinel { .. } => split(&self.primary_client().await?).await,
            Target::Cluster(_, urls) => {
                // Seeded with the nodes alive now as well as the configured ones: the node
                // named in the settings may be the one that died.
                let slot = self.shards[usize::from(shard.0)].1;
                let (mut seeds, owner) = self.live_nodes(slot).await;
                seeds.extend(urls.iter().cloned());
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let client = cluster_builder(&seeds)
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .push_sender(tx)
                    .build()?;
                let conn = client.get_async_connection().await?;
                let messages =
                    Messages::cluster(rx, conn.clone(), slot, owner, self.cluster_base());
                Ok((Subscriber::Cluster(conn), messages))
            }
        }
    }

    /// The Redis Cluster's nodes not marked failed, as `CLUSTER NODES` on the command
    /// connection lists them (empty when it cannot be asked), and the one among them that
    /// is the primary of `slot`.
    async fn live_nodes(&self, slot: u16) -> (Vec<String>, Option<String>) {
        let Ok(mut conn) = self.conn() else {
            return (Vec::new(), None);
        };
        let nodes: String = match redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut conn)
            .await
        {
            Ok(n) => n,
            Err(_) => return (Vec::new(), None),
        };
        topology::parse_nodes(&nodes, slot, &self.cluster_base())
    }

    /// `scheme://[userinfo@]` of the configured Redis Cluster URLs, for URLs of its nodes.
    fn cluster_base(&self) -> String {
        let Target::Cluster(_, urls) = &self.target else {
            return "redis://".into();
        };
        let scheme = if urls.iter().any(|u| u.starts_with("rediss://")) {
            "rediss"
        } else {
            "redis"
        };
        let userinfo = urls
            .first()
            .and_then(|u| {
                let rest = u.split_once("://")?.1;
                rest.split_once('@').map(|(auth, _)| format!("{auth}@"))
            })
            .unwrap_or_default();
        format!("{scheme}://{userinfo}")
    }

    /// Resolves when the Sentinels name a new primary (never on other topologies).
    pub async fn primary_changed(&self, seen: &mut tokio::sync::watch::Receiver<u64>) {
        if seen.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Watches for a new primary ([`Redis::primary_changed`]).
    pub fn watch_primary(&self) -> tokio::sync::watch::Receiver<u64> {
        self.primary.subscribe()
    }

    /// The Sentinels' current primary (asked again when `fresh`).
    async fn primary(&self, fresh: bool) -> Result<(String, redis::Client), RedisDown> {
        let Target::Sentinel { sentinels, current } = &self.target else {
            return Err(RedisDown("not behind sentinels".into()));
        };
        if !fresh {
            if let Some(c) = current.read().expect("redis lock poisoned").clone() {
                return Ok(c);
            }
        }
        let ask = async { sentinels.lock().await.async_get_client().await };
        let client = tokio::time::timeout(Duration::from_secs(2), ask)
            .await
            .map_err(|_| RedisDown("sentinels did not answer".into()))??;
        let addr = client.get_connection_info().addr().to_string();
        let found = (addr, client);
        *current.write().expect("redis lock poisoned") = Some(found.clone());
        Ok(found)
    }

    async fn primary_client(&self) -> Result<redis::Client, RedisDown> {
        Ok(self.primary(false).await?.1)
    }

    /// Records that this node's lease is in Redis.
    pub fn set_leased(&self) {
        self.leased.send_replace(true);
    }

    /// Waits (at most `max`) until this node's lease is in Redis: until then the other nodes
    /// ignore what it records, so its users would look offline. `false` on timeout.
    pub async fn wait_leased(&self, max: Duration) -> bool {
        let mut rx = self.leased.subscribe();
        tokio::time::timeout(max, rx.wait_for(|l| *l))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The command connection, or an error while it has never been established. After the
    /// first connection, it reconnects by itself and failed commands report errors.
    pub fn conn(&self) -> Result<Conn, RedisDown> {
        self.conn_at(Shard::HOME)
    }

    /// The command connection, its commands going to `shard`'s primary.
    pub fn conn_at(&self, shard: Shard) -> Result<Conn, RedisDown> {
        let conn = self
            .conn
            .read()
            .expect("redis lock poisoned")
            .clone()
            .ok_or_else(|| RedisDown("not connected yet".into()))?;
        Ok(conn.at(self.shards[usize::from(shard.0)].1))
    }

    /// Whether the pub/sub link is up (cross-node delivery flowing).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire) && self.conn.read().expect("redis lock poisoned").is_some()
    }

    /// Records the link state for `/metrics` and logs transitions.
    pub fn set_up(&self, up: bool) {
        if self.up.swap(up, Ordering::AcqRel) != up {
            if up {
                tracing::info!("redis connected");
            } else {
                tracing::warn!("redis unreachable: cross-node delivery paused, publishing refused");
            }
        }
        metrics::redis_up(up);
    }

    /// Establishes the command connection, retrying with backoff until it succeeds or
    /// shutdown; a node starts serving its own clients meanwhile. Behind Sentinels it then
    /// asks them every second who the primary is, and moves to a new one.
    pub fn spawn_connector(self: &Arc<Self>, tracker: &TaskTracker, stop: CancellationToken) {
        let this = self.clone();
        tracker.spawn(async move {
            let mut delay = Duration::from_millis(100);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    r = this.connect(false) => match r {
                        Ok(c) => {
                            *this.conn.write().expect("redis lock poisoned") = Some(c);
                            this.check_guess().await;
                            break;
                        }
                        Err(e) => tracing::warn!(error = %e, "redis connection failed; retrying"),
                    },
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            if matches!(this.target, Target::Sentinel { .. }) {
                this.follow_primary(&stop).await;
            }
        });
    }

    /// Says so, loudly, when the server taken for one Redis at start turns out to be a Redis
    /// Cluster node: its commands would fail with MOVED until the node is restarted.
    async fn check_guess(&self) {
        let Some(url) = &self.undetected else { return };
        if is_cluster_node(url, Duration::from_secs(2)).await == Some(true) {
            tracing::error!(
                url = %url,
                "this redis is a Redis Cluster node, but it did not answer at start, so this node speaks to it as one server and its commands fail; restart the node (or set redis.cluster = true)"
            );
        }
    }

    async fn connect(&self, fresh: bool) -> Result<Conn, RedisDown> {
        match &self.target {
            Target::Single(client) => Ok(Conn::Single(manager(client.clone()).await?)),
            Target::Sentinel { .. } => {
                let (_, client) = self.primary(fresh).await?;
                Ok(Conn::Single(manager(client).await?))
            }
            Target::Cluster(client, _) => {
                let conn = client.get_async_connection().await?;
                Ok(Conn::Cluster(conn, self.shards[0].1))
            }
        }
    }

    /// Every second (every 100 ms while the pub/sub link is down): the primary the
    /// Sentinels name; when it is a new one, pub/sub links and commands move to it.
    async fn follow_primary(&self, stop: &CancellationToken) {
        let mut known = self.primary(false).await.ok().map(|(a, _)| a);
        loop {
            // Each node follows on its own, so from the moment the first node publishes on
            // a new primary until this one's links are subscribed there, what is published
            // is lost to this node's clients (tests/redis_failover.rs). A lost link means
            // the primary is likely gone: look often then, to keep that window short.
            let every = if self.up.load(Ordering::Acquire) {
                Duration::from_secs(1)
            } else {
                Duration::from_millis(100)
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let Ok((addr, _)) = self.primary(true).await else {
                continue;
            };
            if known.as_deref() == Some(addr.as_str()) {
                continue;
            }
            match self.connect(false).await {
                Ok(c) => {
                    tracing::warn!(primary = %addr, "sentinels named a new redis primary; following it");
                    // The links first: they resubscribe while this node's commands move.
                    self.primary.send_modify(|n| *n += 1);
                    *self.conn.write().expect("redis lock poisoned") = Some(c);
                    known = Some(addr);
                }
                Err(e) => tracing::warn!(error = %e, "the new redis primary is not reachable yet"),
            }
        }
    }
}

fn cluster_builder(urls: &[String]) -> ClusterClientBuilder {
    ClusterClientBuilder::new(urls.to_vec())
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
        .retries(3)
}

async fn split(client: &redis::Client) -> Result<(Subscriber, Messages), RedisDown> {
    let (sink, stream) = client.get_async_pubsub().await?.split();
    Ok((Subscriber::Single(sink), Messages::Single(stream)))
}

async fn manager(client: redis::Client) -> Result<ConnectionManager, RedisDown> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_max_delay(Duration::from_secs(2))
        // One connection attempt per failed command, no retry loop: while Redis is
        // down a command fails at once (a publish is refused, a connection's reader
        // is not held for the default ~7 s of backoff); the next command tries again.
        .set_number_of_retries(0);
    Ok(ConnectionManager::new_with_config(client, config).await?)
}
