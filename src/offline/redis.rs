//! Offline queues in Redis (a cluster), so a user reconnecting to any node finds them.
//!
//! Per user: `{p}:q:{app}:{user}` a sorted set of event ids scored by queue sequence,
//! `{p}:qv:{app}:{user}` a hash id → `"{priority}{live}:{expires_at}:{event json}"`,
//! `{p}:qm:{app}:{user}` a hash with `next`, `bytes`, `dropped`. The three keys expire
//! together after the queue's default ttl without writes. Enqueueing happens inside the
//! broker's publish script ([`ENQUEUE_LUA`]), atomically with the user's connection check.
//!
//! `max_total_events` bounds the queues of the whole cluster: `{p}:qtotal` counts queued
//! events, `{p}:qcount` holds each queue's share and `{p}:qusers` when its keys expire, so
//! the share of a queue that expired unread is given back instead of leaking ([`TOTAL_LUA`]).
//! `{p}` is the user's shard (`redis_base::Shard`): on a Redis Cluster each of the shards
//! keeps its own total, bounded by its share of `max_total_events` (users hash evenly
//! over them), since one script cannot count across hash slots.

use std::sync::{Arc, LazyLock};

use async_trait::async_trait;

use super::{Inbox, InboxError, Pending, Queued};
use crate::event::Event;
use crate::ids::{AppId, UserId};
use crate::lua;
use crate::metrics;
use crate::redis_base::Redis;

/// Lua functions keeping the cluster-wide total (after the `lua!` prelude): `count(base, n)`
/// adds `n` to the total and to the queue's share; `reclaim(base)` gives back the shares of
/// queues whose keys expired (a bounded number per call, and always `base`'s own);
/// `forget(base)` gives back a queue's share when it is deleted.
pub const TOTAL_LUA: &str = r#"
local QU, QC, QT = P .. ':qusers', P .. ':qcount', P .. ':qtotal'
local function forget(m)
  local n = tonumber(redis.call('HGET', QC, m) or '0')
  if n ~= 0 then redis.call('DECRBY', QT, n) end
  redis.call('HDEL', QC, m)
  redis.call('ZREM', QU, m)
end
local function reclaim(base)
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', QU, '-inf', now, 'LIMIT', 0, 100)) do
    forget(m)
  end
  local s = redis.call('ZSCORE', QU, base)
  if s and tonumber(s) <= now then forget(base) end
end
local function count(base, n)
  if n ~= 0 then
    redis.call('INCRBY', QT, n)
    redis.call('HINCRBY', QC, base, n)
  end
end
"#;

/// Lua functions for the broker's publish script (after the `lua!` prelude and
/// [`TOTAL_LUA`]): `connected(app, user)` (a live node counts a connection of the user) and
/// `enqueue(app, user, id, payload, prio, live, expires, max_events, max_bytes, keep_ms,
/// max_total)`, which evicts by the per-user limits (lowest priority, then oldest, first)
/// and refuses (returns 0) an event larger than a queue or beyond the cluster's total.
pub const ENQUEUE_LUA: &str = r#"
local function connected(app, user)
  local all = redis.call('HGETALL', P .. ':st:' .. app .. ':' .. user)
  for i = 1, #all, 2 do
    local f = all[i]
    if string.sub(f, 1, 2) == 'c:' and tonumber(all[i + 1]) > 0 and alive(string.sub(f, 3)) then
      return true
    end
  end
  return false
end
local function enqueue(app, user, id, payload, prio, live, expires, max_events, max_bytes, keep_ms, max_total)
  local base = app .. ':' .. user
  local q, qv, qm = P .. ':q:' .. base, P .. ':qv:' .. base, P .. ':qm:' .. base
  local value = prio .. live .. ':' .. expires .. ':' .. payload
  local size = #value
  reclaim(base)
  if size > max_bytes or tonumber(redis.call('GET', QT) or '0') >= max_total then
    redis.call('HINCRBY', qm, 'dropped', 1)
    redis.call('PEXPIRE', qm, keep_ms)
    return 0
  end
  local bytes = tonumber(redis.call('HGET', qm, 'bytes') or '0')
  if redis.call('ZCARD', q) >= max_events or bytes + size > max_bytes then
    local ids = redis.call('ZRANGE', q, 0, -1)
    local victims = {}
    for i, vid in ipairs(ids) do
      local v = redis.call('HGET', qv, vid)
      local rank = v and tonumber(string.sub(v, 1, 1)) or 0
      victims[#victims + 1] = {rank, i, vid, v and #v or 0}
    end
    table.sort(victims, function(a, b)
      if a[1] ~= b[1] then return a[1] < b[1] end
      return a[2] < b[2]
    end)
    local n = 1
    while (redis.call('ZCARD', q) >= max_events or bytes + size > max_bytes) and victims[n] do
      local v = victims[n]
      count(base, -redis.call('ZREM', q, v[3]))
      redis.call('HDEL', qv, v[3])
      bytes = bytes - v[4]
      redis.call('HINCRBY', qm, 'dropped', 1)
      redis.call('HINCRBY', qm, 'dropped_' .. v[1], 1)
      n = n + 1
    end
  end
  local seq = redis.call('HINCRBY', qm, 'next', 1)
  redis.call('ZADD', q, seq, id)
  redis.call('HSET', qv, id, value)
  redis.call('HSET', qm, 'bytes', bytes + size)
  for _, k in ipairs({q, qv, qm}) do redis.call('PEXPIRE', k, keep_ms) end
  count(base, 1)
  redis.call('ZADD', QU, now + keep_ms, base)
  return 1
end
"#;

/// `{dropped, value, value, ...}` in queue order, ids prefixed: `id\nvalue`.
const PENDING: &str = lua!(
    r#"
local base = ARGV[2] .. ':' .. ARGV[3]
local q, qv, qm = P .. ':q:' .. base, P .. ':qv:' .. base, P .. ':qm:' .. base
local out = {redis.call('HGET', qm, 'dropped') or '0'}
for _, id in ipairs(redis.call('ZRANGE', q, 0, -1)) do
  local v = redis.call('HGET', qv, id)
  if v then out[#out + 1] = id .. '\n' .. v end
end
return out
"#
);

/// Removes ids `ARGV[5..]` with the mode `ARGV[4]`: `settle` (also marks `ARGV` ids after
/// the `--` separator live, drops expired ones, restarts `dropped`) or `ack`.
static UPDATE: LazyLock<String> = LazyLock::new(|| {
    let body = r#"
local base = ARGV[2] .. ':' .. ARGV[3]
local q, qv, qm = P .. ':q:' .. base, P .. ':qv:' .. base, P .. ':qm:' .. base
local mode = ARGV[4]
local removed, marking = 0, false
local function drop(id)
  local v = redis.call('HGET', qv, id)
  if v then
    redis.call('HINCRBY', qm, 'bytes', -#v)
    redis.call('HDEL', qv, id)
    removed = removed + redis.call('ZREM', q, id)
  end
end
for i = 5, #ARGV do
  local id = ARGV[i]
  if id == '--' then marking = true
  elseif marking then
    local v = redis.call('HGET', qv, id)
    if v and string.sub(v, 2, 2) == '0' then
      redis.call('HSET', qv, id, string.sub(v, 1, 1) .. '1' .. string.sub(v, 3))
    end
  else drop(id) end
end
if mode == 'settle' then
  for _, id in ipairs(redis.call('ZRANGE', q, 0, -1)) do
    local v = redis.call('HGET', qv, id)
    local exp = v and tonumber(string.match(v, '^%d%d:(%d+):')) or 0
    if exp < now then drop(id) end
  end
  redis.call('HDEL', qm, 'dropped')
end
count(base, -removed)
if redis.call('ZCARD', q) == 0 then
  redis.call('DEL', q, qv, qm)
  forget(base)
end
return removed
"#;
    format!("{}{TOTAL_LUA}{body}", lua!(""))
});

/// Offline queues shared through Redis.
pub struct RedisInbox {
    redis: Arc<Redis>,
    pending: redis::Script,
    update: redis::Script,
}

impl RedisInbox {
    /// Queues in `redis`.
    pub fn new(redis: Arc<Redis>) -> Self {
        Self {
            redis,
            pending: redis::Script::new(PENDING),
            update: redis::Script::new(&UPDATE),
        }
    }

    async fn run_update(
        &self,
        app: &AppId,
        user: &UserId,
        mode: &str,
        args: Vec<String>,
    ) -> Result<usize, InboxError> {
        let shard = self.redis.user_shard(app.as_str(), user.as_str());
        let mut conn = self
            .redis
            .conn_at(shard)
            .map_err(|e| InboxError(e.to_string()))?;
        let mut inv = self.redis.script(&self.update, shard);
        inv.arg(app.as_str()).arg(user.as_str()).arg(mode);
        for a in args {
            inv.arg(a);
        }
        inv.invoke_async(&mut conn)
            .await
            .map_err(|e| InboxError(e.to_string()))
    }
}

/// Parses `id\n{prio}{live}:{expires}:{json}`.
fn decode(raw: &str, now: u64) -> Option<Queued> {
    let (id, value) = raw.split_once('\n')?;
    let live = value.as_bytes().get(1) == Some(&b'1');
    let (expires, json) = value.get(3..)?.split_once(':')?;
    if expires.parse::<u64>().ok()? < now {
        return None;
    }
    let mut event: Event = serde_json::from_str(json).ok()?;
    event.meta.id = Some(id.into());
    Some(Queued { event, live })
}

#[async_trait]
impl Inbox for RedisInbox {
    async fn pending(&self, app: &AppId, user: &UserId) -> Result<Pending, InboxError> {
        let shard = self.redis.user_shard(app.as_str(), user.as_str());
        let mut conn = self
            .redis
            .conn_at(shard)
            .map_err(|e| InboxError(e.to_string()))?;
        let raw: Vec<String> = self
            .redis
            .script(&self.pending, shard)
            .arg(app.as_str())
            .arg(user.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| InboxError(e.to_string()))?;
        let now = crate::clock::now_ms();
        let dropped = raw.first().and_then(|d| d.parse().ok()).unwrap_or(0);
        let events = raw.iter().skip(1).filter_map(|r| decode(r, now)).collect();
        Ok(Pending { events, dropped })
    }

    async fn settle(
        &self,
        app: &AppId,
        user: &UserId,
        done: Vec<Arc<str>>,
        kept: Vec<Arc<str>>,
    ) -> Result<(), InboxError> {
        let n = done.len() as u64;
        let mut args: Vec<String> = done.iter().map(|s| s.to_string()).collect();
        args.push("--".into());
        args.extend(kept.iter().map(|s| s.to_string()));
        self.run_update(app, user, "settle", args).await?;
        metrics::offline("delivered", n);
        Ok(())
    }

    async fn ack(&self, app: &AppId, user: &UserId, ids: Vec<String>) -> Result<usize, InboxError> {
        let ids = ids.into_iter().filter(|i| i != "--").collect();
        self.run_update(app, user, "ack", ids).await
    }
}
