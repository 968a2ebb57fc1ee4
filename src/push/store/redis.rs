//! Push state in Redis (a cluster), shared by every node. Keys under the cluster prefix:
//! `push:reg:{app}:{user}` (hash: device → registration JSON) with `push:regt:{app}:{user}`
//! (sorted set: device by registration time, for replacing the oldest),
//! `push:prefs:{app}:{user}` (JSON), `push:quota:{app}:{user}` (sorted set of send times,
//! expiring after an hour) and `push:sent:{app}:{key}:{registration}` (`SET NX PX`).

use std::sync::Arc;

use async_trait::async_trait;
use redis::AsyncCommands;

use super::{PushStore, StoreFailure, HOUR_MS};
use crate::ids::{AppId, UserId};
use crate::push::decide::Prefs;
use crate::push::{Registration, RegistrationId};
use crate::redis_base::Redis;

/// KEYS: hash, zset. ARGV: device, json, created, max.
const REGISTER: &str = r#"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local n = redis.call('ZCARD', KEYS[2])
local max = tonumber(ARGV[4])
if n > max then
  for _, old in ipairs(redis.call('ZRANGE', KEYS[2], 0, n - max - 1)) do
    redis.call('HDEL', KEYS[1], old)
    redis.call('ZREM', KEYS[2], old)
  end
end
return n
"#;

/// KEYS: hash, zset. ARGV: registration id. Returns 1 when removed.
const REMOVE: &str = r#"
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local ok, reg = pcall(cjson.decode, all[i + 1])
  if ok and reg['id'] == ARGV[1] then
    redis.call('HDEL', KEYS[1], all[i])
    redis.call('ZREM', KEYS[2], all[i])
    return 1
  end
end
return 0
"#;

/// KEYS: quota zset. ARGV: now, max, window, member. Returns 1 when counted.
const QUOTA: &str = r#"
local now, max, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= max then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], window)
return 1
"#;

/// Push state in Redis.
pub struct RedisPushStore {
    redis: Arc<Redis>,
    register: redis::Script,
    remove: redis::Script,
    quota: redis::Script,
}

impl RedisPushStore {
    /// Over the cluster's Redis.
    pub fn new(redis: Arc<Redis>) -> Self {
        Self {
            redis,
            register: redis::Script::new(REGISTER),
            remove: redis::Script::new(REMOVE),
            quota: redis::Script::new(QUOTA),
        }
    }

    fn keys(&self, kind: &str, app: &AppId, user: &UserId) -> String {
        self.redis.key(&["push", kind, app.as_str(), user.as_str()])
    }

    fn conn(&self) -> Result<crate::redis_base::Conn, StoreFailure> {
        self.redis.conn().map_err(|e| StoreFailure(e.to_string()))
    }
}

fn failed(e: redis::RedisError) -> StoreFailure {
    StoreFailure(format!("redis: {e}"))
}

#[async_trait]
impl PushStore for RedisPushStore {
    async fn register(
        &self,
        app: &AppId,
        user: &UserId,
        reg: Registration,
        max: usize,
    ) -> Result<(), StoreFailure> {
        let json = serde_json::to_string(&reg).expect("registration serializes");
        let mut conn = self.conn()?;
        let _: i64 = self
            .register
            .key(self.keys("reg", app, user))
            .key(self.keys("regt", app, user))
            .arg(reg.device.identity())
            .arg(json)
            .arg(reg.created_ms)
            .arg(max)
            .invoke_async(&mut conn)
            .await
            .map_err(failed)?;
        Ok(())
    }

    async fn registrations(
        &self,
        app: &AppId,
        user: &UserId,
    ) -> Result<Vec<Registration>, StoreFailure> {
        let mut conn = self.conn()?;
        let all: Vec<(String, String)> = conn
            .hgetall(self.keys("reg", app, user))
            .await
            .map_err(failed)?;
        let mut list: Vec<Registration> = all
            .iter()
            .filter_map(|(_, v)| serde_json::from_str(v).ok())
            .collect();
        list.sort_by_key(|r| r.created_ms);
        Ok(list)
    }

    async fn remove(
        &self,
        app: &AppId,
        user: &UserId,
        id: &RegistrationId,
    ) -> Result<bool, StoreFailure> {
        let mut conn = self.conn()?;
        let n: i64 = self
            .remove
            .key(self.keys("reg", app, user))
            .key(self.keys("regt", app, user))
            .arg(id.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(failed)?;
        Ok(n == 1)
    }

    async fn prefs(&self, app: &AppId, user: &UserId) -> Result<Prefs, StoreFailure> {
        let mut conn = self.conn()?;
        let v: Option<String> = conn
            .get(self.keys("prefs", app, user))
            .await
            .map_err(failed)?;
        Ok(v.and_then(|v| serde_json::from_str(&v).ok())
            .unwrap_or_default())
    }

    async fn set_prefs(
        &self,
        app: &AppId,
        user: &UserId,
        prefs: &Prefs,
    ) -> Result<(), StoreFailure> {
        let json = serde_json::to_string(prefs).expect("preferences serialize");
        let mut conn = self.conn()?;
        let _: () = conn
            .set(self.keys("prefs", app, user), json)
            .await
            .map_err(failed)?;
        Ok(())
    }

    async fn take_quota(
        &self,
        app: &AppId,
        user: &UserId,
        max: u32,
        now_ms: u64,
    ) -> Result<bool, StoreFailure> {
        let mut conn = self.conn()?;
        let member = format!("{now_ms}-{}", rand::random::<u32>());
        let n: i64 = self
            .quota
            .key(self.keys("quota", app, user))
            .arg(now_ms)
            .arg(max)
            .arg(HOUR_MS)
            .arg(member)
            .invoke_async(&mut conn)
            .await
            .map_err(failed)?;
        Ok(n == 1)
    }

    async fn claim(
        &self,
        app: &AppId,
        key: &str,
        id: &RegistrationId,
        expires_ms: u64,
    ) -> Result<bool, StoreFailure> {
        let ttl = expires_ms.saturating_sub(crate::clock::now_ms()).max(1);
        let k = self
            .redis
            .key(&["push", "sent", app.as_str(), key, id.as_str()]);
        let mut conn = self.conn()?;
        let set: Option<String> = redis::cmd("SET")
            .arg(k)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl)
            .query_async(&mut conn)
            .await
            .map_err(failed)?;
        Ok(set.is_some())
    }
}
