//! Publishing this node's channel and connection counts to Redis, and reading the other
//! nodes' connection counts for cluster-wide app quotas.
//!
//! Each change wakes the sync task, which writes just the changed counts (absolute values
//! read from the hub, by one task, so a later write is never older than an earlier one);
//! every `SYNC_INTERVAL` it also rewrites the whole snapshot when anything changed (and
//! every 2 s regardless) and reads the other nodes' connections. [`Counts::fence`] waits
//! until what this node's hub holds now is in Redis: a subscription answers only then, so
//! `subscription_count` asked of any node right after `subscription_succeeded` counts it.
//! App quotas are [`super::quota`]'s.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::quota::Quota;
use crate::hub::Hub;
use crate::ids::AppId;
use crate::lua;
use crate::redis_base::{Redis, Shard};

const SYNC_INTERVAL: Duration = Duration::from_millis(250);
/// Longest a subscription waits for its count to be written (Redis slow or just lost).
const FENCE_WAIT: Duration = Duration::from_secs(1);

/// Writes changed counts: ARGV = prefix, node, n_channels, (app, channel, count)...,
/// n_apps, (app, connections)...; a count of 0 removes the entry.
const DELTA: &str = lua!(
    r#"
local node = ARGV[2]
local i = 4
for _ = 1, tonumber(ARGV[3]) do
  local app, ch, n = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  i = i + 3
  local key = P .. ':occ:' .. app .. ':' .. node
  if n == '0' then redis.call('HDEL', key, ch) else
    redis.call('HSET', key, ch, n)
    redis.call('SADD', P .. ':napps:' .. node, app)
  end
end
local napps = tonumber(ARGV[i])
i = i + 1
for _ = 1, napps do
  local app, n = ARGV[i], ARGV[i + 1]
  i = i + 2
  if n == '0' then redis.call('HDEL', P .. ':conns:' .. node, app) else
    redis.call('HSET', P .. ':conns:' .. node, app, n)
    redis.call('SADD', P .. ':napps:' .. node, app)
  end
end
return 0
"#
);

/// This node's counts in Redis: a fence for subscriptions, and the app quotas.
pub struct Counts {
    redis: Arc<Redis>,
    hub: Hub,
    /// The hub generation whose counts are all in Redis.
    flushed: watch::Receiver<u64>,
    /// App connection quotas across the cluster.
    pub quota: Arc<Quota>,
}

impl Counts {
    /// Waits until the counts this node's hub holds now are in Redis (at most
    /// `FENCE_WAIT`, and not at all while Redis is down: then the answer may lag).
    pub async fn fence(&self) {
        if !self.redis.is_up() {
            return;
        }
        let generation = self.hub.generation();
        let mut rx = self.flushed.clone();
        let _ = tokio::time::timeout(FENCE_WAIT, rx.wait_for(|g| *g >= generation)).await;
    }
}

/// Replaces this node's counts: ARGV = prefix, node, n_apps, then per app: app, conns,
/// n_channels, channel, count, ...; n_apps = -1 leaves them as they are. Returns the other
/// alive nodes' connections per app.
const SYNC: &str = lua!(
    r#"
local node = ARGV[2]
local napps = tonumber(ARGV[3])
local i = 4
if napps >= 0 then
  redis.call('DEL', P .. ':conns:' .. node)
  for _, app in ipairs(redis.call('SMEMBERS', P .. ':napps:' .. node)) do
    redis.call('DEL', P .. ':occ:' .. app .. ':' .. node)
  end
  redis.call('DEL', P .. ':napps:' .. node)
end
for _ = 1, napps do
  local app, conns, nch = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  i = i + 3
  redis.call('SADD', P .. ':napps:' .. node, app)
  redis.call('HSET', P .. ':conns:' .. node, app, conns)
  for _ = 1, nch do
    redis.call('HSET', P .. ':occ:' .. app .. ':' .. node, ARGV[i], ARGV[i + 1])
    i = i + 2
  end
end
local out = {}
for _, n in ipairs(redis.call('ZRANGEBYSCORE', P .. ':nodes', now, '+inf')) do
  if n ~= node then
    local all = redis.call('HGETALL', P .. ':conns:' .. n)
    for j = 1, #all do out[#out + 1] = all[j] end
  end
end
return out
"#
);

/// Starts the sync task of `hub`'s counts on `tracker`, until `stop`; returns the handle
/// sessions use to wait for their counts and to check app quotas.
pub fn spawn_sync(
    redis: Arc<Redis>,
    hub: Hub,
    tracker: &TaskTracker,
    stop: CancellationToken,
) -> Arc<Counts> {
    let (flushed_tx, flushed) = watch::channel(0u64);
    hub.track_changes();
    let counts = Arc::new(Counts {
        redis: redis.clone(),
        hub: hub.clone(),
        flushed,
        quota: Quota::spawn(redis.clone(), tracker, stop.clone()),
    });
    tracker.spawn(async move {
        let (full, delta) = (redis::Script::new(SYNC), redis::Script::new(DELTA));
        let mut tick = tokio::time::interval(SYNC_INTERVAL);
        let mut last_generation = u64::MAX;
        let mut rounds = 0u64;
        let flushed = |g: u64| flushed_tx.send_if_modified(|f| std::mem::replace(f, g.max(*f)) < g);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = hub.changed() => {
                    let generation = hub.generation();
                    if write_changes(&redis, &hub, &delta).await {
                        flushed(generation);
                    }
                    continue;
                }
                _ = tick.tick() => {}
            }
            rounds += 1;
            let generation = hub.generation();
            // Unchanged counts are still rewritten now and then, for other nodes' quotas;
            // the other nodes' connections are read every round, so a quota sees them
            // within a round of their sync.
            let write = generation != last_generation || rounds.is_multiple_of(8);
            let Ok(mut conn) = redis.conn() else { continue };
            let mut inv = redis.script(&full, Shard::HOME);
            inv.arg(&redis.node);
            if write {
                let apps = hub.snapshot();
                inv.arg(apps.len());
                for (app, conns, channels) in &apps {
                    inv.arg(app.as_str()).arg(*conns).arg(channels.len());
                    for (ch, n) in channels {
                        inv.arg(ch.as_str()).arg(*n);
                    }
                }
            } else {
                inv.arg(-1);
            }
            match inv.invoke_async::<Vec<String>>(&mut conn).await {
                Ok(others) => {
                    let mut remote: HashMap<AppId, usize> = HashMap::new();
                    for pair in others.chunks(2) {
                        if let [app, n] = pair {
                            *remote.entry(AppId::new(app.as_str())).or_default() +=
                                n.parse::<usize>().unwrap_or(0);
                        }
                    }
                    hub.set_remote_connections(remote);
                    if write {
                        flushed(generation);
                    }
                    last_generation = generation;
                }
                Err(e) => tracing::warn!(error = %e, "count sync failed"),
            }
        }
    });
    counts
}

/// Writes the counts that changed since the last write; `false` if Redis did not take
/// them (the next full round rewrites everything).
async fn write_changes(redis: &Redis, hub: &Hub, delta: &redis::Script) -> bool {
    let changed = hub.take_changes();
    if changed.channels.is_empty() && changed.apps.is_empty() {
        return true;
    }
    let Ok(mut conn) = redis.conn() else {
        return false;
    };
    let mut inv = redis.script(delta, Shard::HOME);
    inv.arg(&redis.node);
    inv.arg(changed.channels.len());
    for (app, ch) in &changed.channels {
        inv.arg(app.as_str())
            .arg(ch.as_str())
            .arg(hub.subscription_count(app, ch));
    }
    inv.arg(changed.apps.len());
    for app in &changed.apps {
        inv.arg(app.as_str()).arg(hub.app_connections(app));
    }
    match inv.invoke_async::<i64>(&mut conn).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "count update failed; the next sync round rewrites them");
            false
        }
    }
}
