//! Publishing this node's channel and connection counts to Redis, and reading the other
//! nodes' connection counts for cluster-wide app quotas. Runs off the subscribe path: counts
//! are written every `SYNC_INTERVAL` when they changed, so HTTP answers about other nodes
//! may lag by that much.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hub::Hub;
use crate::ids::AppId;
use crate::lua;
use crate::redis_base::Redis;

const SYNC_INTERVAL: Duration = Duration::from_millis(250);

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

/// Starts the sync task of `hub`'s counts on `tracker`, until `stop`.
pub fn spawn_sync(redis: Arc<Redis>, hub: Hub, tracker: &TaskTracker, stop: CancellationToken) {
    tracker.spawn(async move {
        let script = redis::Script::new(SYNC);
        let mut tick = tokio::time::interval(SYNC_INTERVAL);
        let mut last_generation = u64::MAX;
        let mut rounds = 0u64;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            rounds += 1;
            let generation = hub.generation();
            // Unchanged counts are still rewritten now and then, for other nodes' quotas;
            // the other nodes' connections are read every round, so a quota sees them
            // within a round of their sync.
            let write = generation != last_generation || rounds.is_multiple_of(8);
            let Ok(mut conn) = redis.conn() else { continue };
            let mut inv = script.prepare_invoke();
            inv.arg(&redis.prefix).arg(&redis.node);
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
                    last_generation = generation;
                }
                Err(e) => tracing::warn!(error = %e, "count sync failed"),
            }
        }
    });
}
