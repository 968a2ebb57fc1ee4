//! Lease renewal and the reaper of dead nodes.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::apps::AppStore;
use crate::event::{Event, EventKind, Target};
use crate::frame::CloseReason;
use crate::hub::Hub;
use crate::ids::{AppId, ChannelName, UserId};
use crate::lua;
use crate::metrics;
use crate::publish::Publisher;
use crate::redis_base::{Redis, RedisDown, Shard};
use crate::status::Change;
use crate::status::UserStatus;
use crate::webhooks::{Occupancy, Webhooks};

const RENEW: &str = lua!(
    r#"
-- 1 when the lease had to be created: the node was reaped or Redis lost its data.
return redis.call('ZADD', P .. ':nodes', now + tonumber(ARGV[3]), ARGV[2])
"#
);

/// Gives up this node's lease now (graceful departure): the reaper of another node cleans
/// whatever the node left.
const RESIGN: &str = lua!(
    r#"
redis.call('ZADD', P .. ':nodes', 0, ARGV[2])
return 1
"#
);

/// Claims one dead node (ZREM decides who), deletes its entries and returns what its death
/// changed: `{ {app, ch, user, ...} (users gone from a presence channel), {app, user, ...}
/// (users whose status must be re-evaluated) }`.
const REAP: &str = lua!(
    r#"
local dead = redis.call('ZRANGEBYSCORE', P .. ':nodes', '-inf', now, 'LIMIT', 0, 1)
if #dead == 0 then return {} end
local n = dead[1]
if redis.call('ZREM', P .. ':nodes', n) == 0 then return {} end
local function split(s)
  local i = string.find(s, '\n', 1, true)
  return string.sub(s, 1, i - 1), string.sub(s, i + 1)
end
local removed = {}
for _, ac in ipairs(redis.call('SMEMBERS', P .. ':nc:' .. n)) do
  local app, ch = split(ac)
  local base = P .. ':pu:' .. app .. ':' .. ch .. ':'
  local pn = P .. ':pn:' .. app .. ':' .. ch
  local users = redis.call('HKEYS', base .. n)
  redis.call('DEL', base .. n, P .. ':pm:' .. app .. ':' .. ch .. ':' .. n)
  redis.call('SREM', pn, n)
  for _, u in ipairs(users) do
    local total = 0
    for _, m in ipairs(redis.call('SMEMBERS', pn)) do
      if alive(m) then total = total + tonumber(redis.call('HGET', base .. m, u) or '0') end
    end
    if total == 0 then
      removed[#removed + 1] = app; removed[#removed + 1] = ch; removed[#removed + 1] = u
    end
  end
end
redis.call('DEL', P .. ':nc:' .. n)
local users = {}
for _, au in ipairs(redis.call('SMEMBERS', P .. ':nu:' .. n)) do
  local app, u = split(au)
  redis.call('HDEL', P .. ':st:' .. app .. ':' .. u, 'c:' .. n, 'b:' .. n, 'i:' .. n)
  users[#users + 1] = app; users[#users + 1] = u
end
redis.call('DEL', P .. ':nu:' .. n)
for _, app in ipairs(redis.call('SMEMBERS', P .. ':napps:' .. n)) do
  redis.call('DEL', P .. ':occ:' .. app .. ':' .. n)
end
redis.call('DEL', P .. ':napps:' .. n, P .. ':conns:' .. n)
for _, app in ipairs(redis.call('SMEMBERS', P .. ':aqn:' .. n)) do
  redis.call('HDEL', P .. ':aq:' .. app, n)
end
redis.call('DEL', P .. ':aqn:' .. n)
local held = {}
for _, ac in ipairs(redis.call('SMEMBERS', P .. ':wn:' .. n)) do
  local app, ch = split(ac)
  redis.call('SREM', P .. ':wo:' .. app .. ':' .. ch, n)
  held[#held + 1] = app; held[#held + 1] = ch
end
redis.call('DEL', P .. ':wn:' .. n)
return {removed, users, held}
"#
);

/// What the reaper uses: it announces what a dead node took with it and, when this node's
/// own lease was lost, asks its clients to reconnect.
pub struct Reaper {
    /// Where `member_removed` is published.
    pub publisher: Publisher,
    /// Whose `offline` is re-evaluated.
    pub status: UserStatus,
    /// Webhooks of the removed members.
    pub webhooks: Webhooks,
    /// Apps by id (for their webhooks).
    pub apps: Arc<dyn AppStore>,
    /// This node's connections.
    pub hub: Hub,
}

/// Renews this node's lease every `lease/3`, and reaps dead nodes every `lease/4`, on
/// `tracker` until `stop`.
pub fn spawn_reaper(
    redis: Arc<Redis>,
    ctx: Reaper,
    tracker: &TaskTracker,
    stop: CancellationToken,
) {
    tracker.spawn(async move {
        let renew = redis::Script::new(RENEW);
        let reap = redis::Script::new(REAP);
        // Renew quickly until the first renewal lands, so a new node counts at once.
        let mut renew_tick = tokio::time::interval(Duration::from_millis(100));
        let mut renewed = false;
        let mut reap_tick = tokio::time::interval(redis.lease / 4);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = renew_tick.tick() => match renew_all(&redis, &renew).await {
                    Ok(_) if !renewed => {
                        renewed = true;
                        redis.set_leased();
                        renew_tick = tokio::time::interval(redis.lease / 3);
                        renew_tick.tick().await;
                    }
                    Ok(true) => lease_lost(&ctx),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
                },
                _ = reap_tick.tick() => reap_all(&redis, &reap, &ctx).await,
            }
        }
    });
}

/// Renews the lease in every shard (each shard's scripts read the leases beside its own
/// keys); `true` when some shard had lost it. Every shard is tried even when one fails.
async fn renew_all(redis: &Redis, renew: &redis::Script) -> Result<bool, RedisDown> {
    let shards = redis.shards().map(|shard| async move {
        let mut conn = redis.conn_at(shard)?;
        let created: i64 = redis
            .script(renew, shard)
            .arg(&redis.node)
            .arg(redis.lease.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok::<_, RedisDown>(created == 1)
    });
    let mut lost = false;
    let mut failed = None;
    for r in futures_util::future::join_all(shards).await {
        match r {
            Ok(created) => lost |= created,
            Err(e) => failed = Some(e),
        }
    }
    failed.map_or(Ok(lost), Err)
}

/// The node's lease had expired (cut off from Redis longer than the lease, so it was
/// reaped) or Redis lost its data: the cluster no longer knows this node's presence members
/// and user connections. Rather than serve an inconsistent view, the node asks every client
/// holding shared state to reconnect now (Pusher 4200, bus 4200); they re-register on arrival.
fn lease_lost(ctx: &Reaper) {
    let n = ctx.hub.kill_subscribed(CloseReason::Shutdown);
    metrics::lease_lost();
    tracing::warn!(
        connections = n,
        "this node's lease was lost (reaped, or Redis restarted empty); clients asked to reconnect"
    );
}

/// Gives up the lease at shutdown, after this node's connections are gone.
pub async fn resign(redis: &Redis) {
    let script = redis::Script::new(RESIGN);
    for shard in redis.shards() {
        let Ok(mut conn) = redis.conn_at(shard) else {
            return;
        };
        let r: Result<i64, _> = redis
            .script(&script, shard)
            .arg(&redis.node)
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not give up the lease");
        }
    }
}

/// Reaps in every shard: each holds its part of a dead node's entries (and its copy of the
/// lease), and the home shard the node's counts.
async fn reap_all(redis: &Redis, reap: &redis::Script, ctx: &Reaper) {
    for shard in redis.shards() {
        reap_shard(redis, shard, reap, ctx).await;
    }
}

async fn reap_shard(redis: &Redis, shard: Shard, reap: &redis::Script, ctx: &Reaper) {
    // Bounded: a burst of dead nodes is handled over several ticks.
    for _ in 0..16 {
        let Ok(mut conn) = redis.conn_at(shard) else {
            return;
        };
        let r: Result<Vec<Vec<String>>, _> =
            redis.script(reap, shard).invoke_async(&mut conn).await;
        let lists = match r {
            Ok(l) if l.len() == 3 => l,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "reaping dead nodes failed");
                return;
            }
        };
        // Every shard reaps a dead node; the home shard counts it, once.
        if shard == Shard::HOME {
            metrics::node_reaped();
        }
        if shard == Shard::HOME || lists.iter().any(|l| !l.is_empty()) {
            tracing::info!(
                members = lists[0].len() / 3,
                users = lists[1].len() / 2,
                "reaped a dead node (its entries in one shard)"
            );
        }
        for t in lists[0].chunks(3) {
            if let [app, ch, user] = t {
                if let Ok(Some(a)) = ctx.apps.by_id(app).await {
                    let (ch, user) = (ChannelName::new(ch.as_str()), UserId::new(user.as_str()));
                    ctx.webhooks.member_removed(&a, &ch, &user);
                    ctx.webhooks.channel_changed(&a, &ch, Occupancy::Count);
                }
                let event = Event {
                    app: AppId::new(app.as_str()),
                    target: Target::Channel(ChannelName::new(ch.as_str())),
                    kind: EventKind::MemberRemoved {
                        user_id: UserId::new(user.as_str()),
                    },
                    exclude: None,
                    meta: Default::default(),
                };
                metrics::published("internal");
                if let Err(e) = ctx.publisher.publish(event).await {
                    tracing::warn!(error = %e, "member_removed of a dead node not published");
                }
            }
        }
        // Channels the dead node held: vacated, after the leave delay, if no node holds them.
        for t in lists[2].chunks(2) {
            if let [app, ch] = t {
                if let Ok(Some(a)) = ctx.apps.by_id(app).await {
                    let ch = ChannelName::new(ch.as_str());
                    ctx.webhooks.channel_changed(&a, &ch, Occupancy::Gone);
                }
            }
        }
        for t in lists[1].chunks(2) {
            if let [app, user] = t {
                ctx.status
                    .apply(
                        &AppId::new(app.as_str()),
                        &UserId::new(user.as_str()),
                        Change::Retry,
                    )
                    .await;
            }
        }
    }
}
