//! The Redis base of a cluster: one node's connection to the shared Redis (commands on one
//! auto-reconnecting multiplexed connection; pub/sub on its own), key naming and the Lua
//! prelude every script starts with. The Redis implementations of the seams (broker,
//! presence, status, offline queues, push store, idempotency keys) import it; the cluster
//! tasks (leases, reaper, count sync) live in `cluster`.

mod lua;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics;

/// A node's handle to Redis. Commands go through one multiplexed, auto-reconnecting
/// connection; pub/sub uses its own connections (see `broker::redis`).
pub struct Redis {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    /// Key prefix shared by the cluster.
    pub prefix: String,
    /// This node's id in keys and leases.
    pub node: String,
    /// Lease period.
    pub lease: Duration,
    up: AtomicBool,
    /// Set once this node's first lease is in Redis.
    leased: tokio::sync::watch::Sender<bool>,
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
    /// Parses the URL (`redis://` or `rediss://`); connects later, in the background.
    pub fn new(
        url: &str,
        prefix: &str,
        node: String,
        lease: Duration,
    ) -> Result<Arc<Self>, RedisDown> {
        Ok(Arc::new(Self {
            client: redis::Client::open(url)?,
            conn: OnceCell::new(),
            prefix: prefix.to_owned(),
            node,
            lease,
            up: AtomicBool::new(false),
            leased: tokio::sync::watch::Sender::new(false),
        }))
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

    /// The client, for pub/sub connections.
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The command connection, or an error while it has never been established. After the
    /// first connection, the manager reconnects by itself and failed commands report errors.
    pub fn conn(&self) -> Result<ConnectionManager, RedisDown> {
        self.conn
            .get()
            .cloned()
            .ok_or_else(|| RedisDown("not connected yet".into()))
    }

    /// `{prefix}:{part}:{part}...`
    pub fn key(&self, parts: &[&str]) -> String {
        let mut k = self.prefix.clone();
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    /// Whether the pub/sub link is up (cross-node delivery flowing).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire) && self.conn.initialized()
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
    /// shutdown; a node starts serving its own clients meanwhile.
    pub fn spawn_connector(self: &Arc<Self>, tracker: &TaskTracker, stop: CancellationToken) {
        let this = self.clone();
        tracker.spawn(async move {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(2)))
                .set_max_delay(Duration::from_secs(2))
                // One connection attempt per failed command, no retry loop: while Redis is
                // down a command fails at once (a publish is refused, a connection's reader
                // is not held for the default ~7 s of backoff); the next command tries again.
                .set_number_of_retries(0);
            let mut delay = Duration::from_millis(100);
            loop {
                let attempt =
                    ConnectionManager::new_with_config(this.client.clone(), config.clone());
                tokio::select! {
                    _ = stop.cancelled() => return,
                    r = attempt => match r {
                        Ok(c) => {
                            let _ = this.conn.set(c);
                            return;
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
        });
    }
}
