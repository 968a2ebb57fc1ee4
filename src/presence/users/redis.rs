//! Cluster status state in Redis: one hash per user, `{p}:st:{app}:{user}`, with per-node
//! counters (`c:{node}` connections, `b:{node}` bus sessions, `i:{node}` idle sessions) and
//! the shared fields `declared`, `activity`, `sent`, `sent_activity`, `last_sent`,
//! `pending_until`. One script applies a change and decides the announcement atomically, so
//! each transition is announced once cluster-wide; counters of nodes whose lease expired are
//! ignored (and deleted by the reaper).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{Change, StatusStore, Update};
use crate::event::Status;
use crate::ids::{AppId, UserId};
use crate::lua;
use crate::presence::PresenceError;
use crate::redis_base::Redis;

const APPLY: &str = lua!(
    r#"
local app, user, node, kind, a, b, throttle = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8])
local key = P .. ':st:' .. app .. ':' .. user
local function sum(prefix)
  local total = 0
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    local f = all[i]
    if string.sub(f, 1, 2) == prefix then
      local n = string.sub(f, 3)
      if n == node or alive(n) then total = total + tonumber(all[i + 1]) end
    end
  end
  return total
end
local function dec(field)
  if redis.call('HINCRBY', key, field, -1) <= 0 then redis.call('HDEL', key, field) end
end
local refused = 0
if kind == 'conn' then
  local limit = tonumber(b)
  if a == '1' and limit > 0 and sum('b:') >= limit then
    refused = 1
  else
    redis.call('HINCRBY', key, 'c:' .. node, 1)
    if a == '1' then redis.call('HINCRBY', key, 'b:' .. node, 1) end
    redis.call('SADD', P .. ':nu:' .. node, app .. '\n' .. user)
  end
elseif kind == 'disc' then
  dec('c:' .. node)
  if a == '1' then dec('b:' .. node) end
  if b == '1' then dec('i:' .. node) end
elseif kind == 'idle' then
  if a == '1' then
    local bus = tonumber(redis.call('HGET', key, 'b:' .. node) or '0')
    local idle = tonumber(redis.call('HGET', key, 'i:' .. node) or '0')
    if idle < bus then redis.call('HINCRBY', key, 'i:' .. node, 1) end
  else
    dec('i:' .. node)
  end
elseif kind == 'decl' then
  redis.call('HSET', key, 'declared', a)
  if b == '' then redis.call('HDEL', key, 'activity') else redis.call('HSET', key, 'activity', b) end
elseif kind == 'retry' then
  redis.call('HDEL', key, 'pending_until', 'last_sent')
end
local conns, bus, idle = sum('c:'), sum('b:'), sum('i:')
if conns == 0 then redis.call('HDEL', key, 'declared', 'activity') end
local declared = redis.call('HGET', key, 'declared') or 'online'
local status = declared
if conns == 0 then status = 'offline'
elseif declared == 'online' and bus > 0 and idle >= bus then status = 'away' end
local activity = ''
if status ~= 'offline' then activity = redis.call('HGET', key, 'activity') or '' end
local sent = redis.call('HGET', key, 'sent') or 'offline'
local sent_activity = redis.call('HGET', key, 'sent_activity') or ''
local result = {refused, '', '', '', 0}
if status ~= sent or activity ~= sent_activity then
  local pending = tonumber(redis.call('HGET', key, 'pending_until') or '0')
  local last = tonumber(redis.call('HGET', key, 'last_sent') or '0')
  if pending > now then
    -- another caller owns the timer; it will announce the latest state
  elseif last > 0 and now < last + throttle then
    redis.call('HSET', key, 'pending_until', last + throttle + 2000)
    result = {refused, '', '', '', last + throttle - now}
  else
    redis.call('HSET', key, 'sent', status, 'sent_activity', activity, 'last_sent', now)
    redis.call('HDEL', key, 'pending_until')
    result = {refused, status, sent, activity, 0}
  end
end
if conns == 0 then redis.call('SREM', P .. ':nu:' .. node, app .. '\n' .. user) end
if conns == 0 and (redis.call('HGET', key, 'sent') or 'offline') == 'offline'
    and not redis.call('HGET', key, 'pending_until') then
  redis.call('DEL', key)
else
  redis.call('PEXPIRE', key, 86400000)
end
return result
"#
);

const CURRENT: &str = lua!(
    r#"
local key = P .. ':st:' .. ARGV[2] .. ':' .. ARGV[3]
return {redis.call('HGET', key, 'sent') or 'offline', redis.call('HGET', key, 'sent_activity') or ''}
"#
);

/// Status state shared through Redis.
pub struct RedisStatus {
    redis: Arc<Redis>,
    apply: redis::Script,
    current: redis::Script,
}

impl RedisStatus {
    /// Status on `redis`.
    pub fn new(redis: Arc<Redis>) -> Self {
        Self {
            redis,
            apply: redis::Script::new(APPLY),
            current: redis::Script::new(CURRENT),
        }
    }
}

fn parse_status(s: &str) -> Option<Status> {
    Some(match s {
        "online" => Status::Online,
        "away" => Status::Away,
        "busy" => Status::Busy,
        "offline" => Status::Offline,
        _ => return None,
    })
}

fn activity(s: String) -> Option<Arc<str>> {
    (!s.is_empty()).then(|| Arc::from(s))
}

fn down(e: impl std::fmt::Display) -> PresenceError {
    PresenceError::Unavailable(e.to_string())
}

#[async_trait]
impl StatusStore for RedisStatus {
    async fn apply(
        &self,
        app: &AppId,
        user: &UserId,
        change: &Change,
        throttle: Duration,
    ) -> Result<Update, PresenceError> {
        let flag = |b: bool| if b { "1" } else { "0" }.to_owned();
        let (kind, a, b) = match change {
            Change::Connected { bus, limit } => ("conn", flag(*bus), limit.to_string()),
            Change::Disconnected { bus, was_idle } => ("disc", flag(*bus), flag(*was_idle)),
            Change::Idle(idle) => ("idle", flag(*idle), String::new()),
            Change::Declared(s, act) => (
                "decl",
                s.as_str().to_owned(),
                act.as_deref().unwrap_or("").to_owned(),
            ),
            Change::Retry => ("retry", String::new(), String::new()),
        };
        let shard = self.redis.user_shard(app.as_str(), user.as_str());
        let mut conn = self.redis.conn_at(shard).map_err(down)?;
        let (refused, status, previous, act, retry_ms): (i64, String, String, String, i64) = self
            .redis
            .script(&self.apply, shard)
            .arg(app.as_str())
            .arg(user.as_str())
            .arg(&self.redis.node)
            .arg(kind)
            .arg(a)
            .arg(b)
            .arg(throttle.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(down)?;
        let announce = match (parse_status(&status), parse_status(&previous)) {
            (Some(s), Some(p)) => Some((s, p, activity(act))),
            _ => None,
        };
        Ok(Update {
            announce,
            retry_in: (retry_ms > 0).then(|| Duration::from_millis(retry_ms as u64)),
            refused: refused == 1,
        })
    }

    async fn current(
        &self,
        app: &AppId,
        user: &UserId,
    ) -> Result<(Status, Option<Arc<str>>), PresenceError> {
        let shard = self.redis.user_shard(app.as_str(), user.as_str());
        let mut conn = self.redis.conn_at(shard).map_err(down)?;
        let (status, act): (String, String) = self
            .redis
            .script(&self.current, shard)
            .arg(app.as_str())
            .arg(user.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(down)?;
        Ok((
            parse_status(&status).unwrap_or(Status::Offline),
            activity(act),
        ))
    }
}
