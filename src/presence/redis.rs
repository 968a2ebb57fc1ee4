//! Cluster presence in Redis, in each channel's shard (`redis_base::Shard`; the `{p}:nc:`
//! and `{p}:wn:` lists are per shard too, the counts of `OCCUPANCY` in the home shard).
//! Each node keeps its own entries per channel:
//! `{p}:pm:{app}:{ch}:{node}` (socket → member JSON) and `{p}:pu:{app}:{ch}:{node}`
//! (user → that node's sockets), listed in `{p}:pn:{app}:{ch}` (nodes with members) and
//! `{p}:nc:{node}` (the node's channels, for the reaper). Scripts count only nodes whose
//! lease is alive, so a crashed node's members vanish with its lease.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;

use super::{Joined, Left, Member, PresenceError, PresenceStore};
use crate::hub::Hub;
use crate::ids::{AppId, ChannelName, SocketId, UserId};
use crate::lua;
use crate::redis_base::{Redis, Shard};

const JOIN: &str = lua!(
    r#"
local app, ch, node, sock, user, member, max = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8])
local base = P .. ':pu:' .. app .. ':' .. ch .. ':'
local pn = P .. ':pn:' .. app .. ':' .. ch
local total = 0
local users = {}
for _, n in ipairs(redis.call('SMEMBERS', pn)) do
  if n == node or alive(n) then
    local c = redis.call('HGET', base .. n, user)
    if c then total = total + tonumber(c) end
    if max > 0 then
      for _, u in ipairs(redis.call('HKEYS', base .. n)) do users[u] = true end
    end
  end
end
if total == 0 and max > 0 then
  local k = 0
  for _ in pairs(users) do k = k + 1 end
  if k >= max then return -1 end
end
redis.call('HSET', P .. ':pm:' .. app .. ':' .. ch .. ':' .. node, sock, member)
redis.call('HINCRBY', base .. node, user, 1)
redis.call('SADD', pn, node)
redis.call('SADD', P .. ':nc:' .. node, app .. '\n' .. ch)
if total == 0 then return 1 end
return 0
"#
);

const LEAVE: &str = lua!(
    r#"
local app, ch, node, sock = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local pm = P .. ':pm:' .. app .. ':' .. ch .. ':' .. node
local member = redis.call('HGET', pm, sock)
if not member then return false end
redis.call('HDEL', pm, sock)
local user = cjson.decode(member)['u']
local base = P .. ':pu:' .. app .. ':' .. ch .. ':'
local pn = P .. ':pn:' .. app .. ':' .. ch
if redis.call('HINCRBY', base .. node, user, -1) <= 0 then redis.call('HDEL', base .. node, user) end
if redis.call('HLEN', pm) == 0 then
  redis.call('SREM', pn, node)
  redis.call('SREM', P .. ':nc:' .. node, app .. '\n' .. ch)
end
local total = 0
for _, n in ipairs(redis.call('SMEMBERS', pn)) do
  if n == node or alive(n) then
    local c = redis.call('HGET', base .. n, user)
    if c then total = total + tonumber(c) end
  end
end
if total <= 0 then return {1, user} end
return {0, user}
"#
);

const MEMBERS: &str = lua!(
    r#"
local app, ch, node = ARGV[2], ARGV[3], ARGV[4]
local out = {}
for _, n in ipairs(redis.call('SMEMBERS', P .. ':pn:' .. app .. ':' .. ch)) do
  if n == node or alive(n) then
    for _, m in ipairs(redis.call('HVALS', P .. ':pm:' .. app .. ':' .. ch .. ':' .. n)) do
      out[#out + 1] = m
    end
  end
end
return out
"#
);

const OCCUPANCY: &str = lua!(
    r#"
local app, node, only = ARGV[2], ARGV[3], ARGV[4]
local out = {}
for _, n in ipairs(redis.call('ZRANGEBYSCORE', P .. ':nodes', now, '+inf')) do
  if n ~= node then
    local key = P .. ':occ:' .. app .. ':' .. n
    if only ~= '' then
      local c = redis.call('HGET', key, only)
      if c then out[#out + 1] = only; out[#out + 1] = c end
    else
      local all = redis.call('HGETALL', key)
      for i = 1, #all do out[#out + 1] = all[i] end
    end
  end
end
return out
"#
);

const ANNOUNCE: &str = lua!(
    r#"
local k = P .. ':ann:' .. ARGV[2] .. ':' .. ARGV[3] .. ':' .. ARGV[4]
local v = ARGV[5]
local old = redis.call('GET', k) or '0'
if old == v then return 0 end
if v == '0' then redis.call('DEL', k) else redis.call('SET', k, v, 'EX', 86400) end
return 1
"#
);

/// This node holds the channel: `{p}:wo:{app}:{ch}` (nodes holding it) and `{p}:wn:{node}`
/// (what the node holds, for the reaper); 1 when the channel was not announced occupied.
const HOLD: &str = lua!(
    r#"
local app, ch, node = ARGV[2], ARGV[3], ARGV[4]
redis.call('SADD', P .. ':wo:' .. app .. ':' .. ch, node)
redis.call('SADD', P .. ':wn:' .. node, app .. '\n' .. ch)
local k = P .. ':ann:' .. app .. ':' .. ch .. ':occupied'
if redis.call('GET', k) == '1' then return 0 end
redis.call('SET', k, '1')
return 1
"#
);

const RELEASE: &str = lua!(
    r#"
local app, ch, node = ARGV[2], ARGV[3], ARGV[4]
redis.call('SREM', P .. ':wo:' .. app .. ':' .. ch, node)
redis.call('SREM', P .. ':wn:' .. node, app .. '\n' .. ch)
return 0
"#
);

/// 1 when no live node holds the channel and it was announced occupied (then it is not any
/// more). Dead nodes found holding it are dropped from the set.
const VACATED: &str = lua!(
    r#"
local app, ch, node = ARGV[2], ARGV[3], ARGV[4]
local wo = P .. ':wo:' .. app .. ':' .. ch
for _, n in ipairs(redis.call('SMEMBERS', wo)) do
  if n == node or alive(n) then return 0 end
  redis.call('SREM', wo, n)
end
local k = P .. ':ann:' .. app .. ':' .. ch .. ':occupied'
if redis.call('GET', k) ~= '1' then return 0 end
redis.call('DEL', k)
return 1
"#
);

/// Presence shared through Redis; occupancy combines this node's hub with the other nodes'
/// synced counts.
pub struct RedisPresence {
    redis: Arc<Redis>,
    hub: Hub,
    join: redis::Script,
    leave: redis::Script,
    members: redis::Script,
    occupancy: redis::Script,
    announce: redis::Script,
    hold_lua: redis::Script,
    release_lua: redis::Script,
    vacated_lua: redis::Script,
}

impl RedisPresence {
    /// Presence on `redis`; `hub` is this node's.
    pub fn new(redis: Arc<Redis>, hub: Hub) -> Self {
        Self {
            redis,
            hub,
            join: redis::Script::new(JOIN),
            leave: redis::Script::new(LEAVE),
            members: redis::Script::new(MEMBERS),
            occupancy: redis::Script::new(OCCUPANCY),
            announce: redis::Script::new(ANNOUNCE),
            hold_lua: redis::Script::new(HOLD),
            release_lua: redis::Script::new(RELEASE),
            vacated_lua: redis::Script::new(VACATED),
        }
    }
}

fn down(e: impl std::fmt::Display) -> PresenceError {
    PresenceError::Unavailable(e.to_string())
}

impl RedisPresence {
    /// Runs one of the occupancy scripts for this node and `ch`.
    async fn occupancy_step(
        &self,
        script: &redis::Script,
        app: &AppId,
        ch: &ChannelName,
    ) -> Result<bool, PresenceError> {
        let shard = self.redis.channel_shard(app.as_str(), ch.as_str());
        let mut conn = self.redis.conn_at(shard).map_err(down)?;
        let r: i64 = self
            .redis
            .script(script, shard)
            .arg(app.as_str())
            .arg(ch.as_str())
            .arg(&self.redis.node)
            .invoke_async(&mut conn)
            .await
            .map_err(down)?;
        Ok(r == 1)
    }
}

#[async_trait]
impl PresenceStore for RedisPresence {
    async fn join(
        &self,
        app: &AppId,
        ch: &ChannelName,
        socket: SocketId,
        member: Member,
        max_members: usize,
    ) -> Result<Joined, PresenceError> {
        let shard = self.redis.channel_shard(app.as_str(), ch.as_str());
        let mut conn = self.redis.conn_at(shard).map_err(down)?;
        let json = serde_json::json!({ "u": member.user_id.as_str(), "i": serde_json::value::RawValue::from_string(member.user_info.to_string()).map_err(down)? });
        let r: i64 = self
            .redis
            .script(&self.join, shard)
            .arg(app.as_str())
            .arg(ch.as_str())
            .arg(&self.redis.node)
            .arg(socket.to_string())
            .arg(member.user_id.as_str())
            .arg(json.to_string())
            .arg(max_members)
            .invoke_async(&mut conn)
            .await
            .map_err(down)?;
        match r {
            -1 => Err(PresenceError::Full),
            1 => Ok(Joined::First),
            _ => Ok(Joined::Again),
        }
    }

    async fn leave(
        &self,
        app: &AppId,
        ch: &ChannelName,
        socket: SocketId,
    ) -> Result<Option<Left>, PresenceError> {
        let shard = self.redis.channel_shard(app.as_str(), ch.as_str());
        let mut conn = self.redis.conn_at(shard).map_err(down)?;
        let r: Option<(i64, String)> = self
            .redis
            .script(&self.leave, shard)
            .arg(app.as_str())
            .arg(ch.as_str())
            .arg(&self.redis.node)
            .arg(socket.to_string())
            .invoke_async(&mut conn)
            .await
            .map_err(down)?;
        Ok(r.map(|(last, user)| {
            if last == 1 {
                Left::Last(UserId::new(user))
            } else {
                Left::StillPresent
            }
        }))
    }

    async fn members(&self, app: &AppId, ch: &ChannelName) -> Result<Vec<Member>, PresenceError> {
        let shard = self.redis.channel_shard(app.as_str(), ch.as_str());
        let mut conn = self.redis.conn_at(shard).map_err(down)?;
        let raw: Vec<String> = self
            .redis
            .script(&self.members, shard)
            .arg(app.as_str())
            .arg(ch.as_str())
            .arg(&self.redis.node)
            .invoke_async(&mut conn)
            .await
            .map_err(down)?;
        #[derive(serde::Deserialize)]
        struct Stored<'a> {
            u: String,
            #[serde(borrow)]
            i: &'a serde_json::value::RawValue,
        }
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for m in &raw {
            let Ok(s) = serde_json::from_str::<Stored<'_>>(m) else {
                continue;
            };
            if seen.insert(s.u.clone()) {
                out.push(Member {
                    user_id: UserId::new(s.u),
                    user_info: s.i.get().into(),
                });
            }
        }
        out.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        Ok(out)
    }

    async fn hold(&self, app: &AppId, ch: &ChannelName) -> Result<bool, PresenceError> {
        self.occupancy_step(&self.hold_lua, app, ch).await
    }

    async fn release(&self, app: &AppId, ch: &ChannelName) -> Result<(), PresenceError> {
        self.occupancy_step(&self.release_lua, app, ch)
            .await
            .map(drop)
    }

    async fn vacated(&self, app: &AppId, ch: &ChannelName) -> Result<bool, PresenceError> {
        self.occupancy_step(&self.vacated_lua, app, ch).await
    }

    async fn announce(
        &self,
        app: &AppId,
        ch: &ChannelName,
        field: &'static str,
        value: &str,
    ) -> Result<bool, PresenceError> {
        let shard = self.redis.channel_shard(app.as_str(), ch.as_str());
        let mut conn = self.redis.conn_at(shard).map_err(down)?;
        let changed: i64 = self
            .redis
            .script(&self.announce, shard)
            .arg(app.as_str())
            .arg(ch.as_str())
            .arg(field)
            .arg(value)
            .invoke_async(&mut conn)
            .await
            .map_err(down)?;
        Ok(changed == 1)
    }

    async fn occupancy(
        &self,
        app: &AppId,
        only: Option<&ChannelName>,
    ) -> Result<Vec<(ChannelName, usize)>, PresenceError> {
        let mut conn = self.redis.conn().map_err(down)?;
        let raw: Vec<String> = self
            .redis
            .script(&self.occupancy, Shard::HOME)
            .arg(app.as_str())
            .arg(&self.redis.node)
            .arg(only.map_or("", |c| c.as_str()))
            .invoke_async(&mut conn)
            .await
            .map_err(down)?;
        let mut counts: std::collections::HashMap<ChannelName, usize> = match only {
            Some(ch) => [(ch.clone(), self.hub.subscription_count(app, ch))].into(),
            None => self.hub.channels(app).into_iter().collect(),
        };
        for pair in raw.chunks(2) {
            if let [ch, n] = pair {
                *counts.entry(ChannelName::new(ch.as_str())).or_default() +=
                    n.parse::<usize>().unwrap_or(0);
            }
        }
        Ok(counts.into_iter().filter(|(_, n)| *n > 0).collect())
    }
}
