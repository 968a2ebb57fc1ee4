//! Stored apps in Redis (a cluster without PostgreSQL): a hash of id → JSON and one of
//! key → id, changed only by scripts that check both and publish the change notice in the
//! same step, so a notice never precedes its write.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::{conflict, decode, encode, relink, AppRecords, Notice, WriteError};
use crate::apps::AppStoreError;
use crate::config::AppConfig;
use crate::redis_base::Redis;

/// KEYS: apps, keys. ARGV: id, key, json, channel, publish command. 0 = id or key taken.
const CREATE: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call(ARGV[5], ARGV[4], ARGV[1])
return 1";

/// KEYS: apps, keys. ARGV: id, key, json, channel, publish command. -1 = no such app, 0 = key taken.
const REPLACE: &str = r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return -1 end
local old_key = cjson.decode(old)['key']
if old_key ~= ARGV[2] then
  if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return 0 end
  redis.call('HDEL', KEYS[2], old_key)
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call(ARGV[5], ARGV[4], ARGV[1])
return 1";

/// KEYS: apps, keys. ARGV: id, channel, publish command. -1 = no such app.
const DELETE: &str = r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return -1 end
redis.call('HDEL', KEYS[2], cjson.decode(old)['key'])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call(ARGV[3], ARGV[2], ARGV[1])
return 1";

/// Apps in the cluster's Redis.
pub struct RedisRecords {
    redis: Arc<Redis>,
    scripts: [redis::Script; 3],
}

impl RedisRecords {
    /// Apps kept in `redis`.
    pub fn new(redis: Arc<Redis>) -> Self {
        Self {
            redis,
            scripts: [CREATE, REPLACE, DELETE].map(redis::Script::new),
        }
    }

    fn keys(&self) -> [String; 2] {
        [self.redis.key(&["apps"]), self.redis.key(&["apps", "keys"])]
    }

    fn channel(&self) -> String {
        self.redis.key(&["apps", "changed"])
    }

    /// The command connection; right after start it may still be being made, so a call then
    /// waits for it (briefly) instead of failing.
    async fn conn(&self) -> Result<crate::redis_base::Conn, AppStoreError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            match self.redis.conn() {
                Ok(c) => return Ok(c),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(AppStoreError::unavailable(e))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    async fn script(&self, i: usize, args: &[&str]) -> Result<i64, AppStoreError> {
        let mut conn = self.conn().await?;
        let mut call = self.scripts[i].prepare_invoke();
        for k in self.keys() {
            call.key(k);
        }
        for a in args {
            call.arg(*a);
        }
        call.arg(self.redis.publish_command());
        call.invoke_async(&mut conn)
            .await
            .map_err(AppStoreError::unavailable)
    }
}

#[async_trait]
impl AppRecords for RedisRecords {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn all(&self) -> Result<Vec<AppConfig>, AppStoreError> {
        let mut conn = self.conn().await?;
        let all: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(&self.keys()[0])
            .query_async(&mut conn)
            .await
            .map_err(AppStoreError::unavailable)?;
        Ok(all.iter().filter_map(|(id, j)| decode(id, j)).collect())
    }

    async fn get(&self, id: &str) -> Result<Option<AppConfig>, AppStoreError> {
        let mut conn = self.conn().await?;
        let json: Option<String> = redis::cmd("HGET")
            .arg(&self.keys()[0])
            .arg(id)
            .query_async(&mut conn)
            .await
            .map_err(AppStoreError::unavailable)?;
        Ok(json.and_then(|j| decode(id, &j)))
    }

    async fn create(&self, app: &AppConfig) -> Result<(), WriteError> {
        let (json, channel) = (encode(app), self.channel());
        match self
            .script(0, &[&app.id, &app.key, &json, &channel])
            .await?
        {
            1 => Ok(()),
            _ => Err(conflict(app)),
        }
    }

    async fn replace(&self, app: &AppConfig) -> Result<(), WriteError> {
        let (json, channel) = (encode(app), self.channel());
        match self
            .script(1, &[&app.id, &app.key, &json, &channel])
            .await?
        {
            1 => Ok(()),
            -1 => Err(WriteError::NotFound),
            _ => Err(conflict(app)),
        }
    }

    async fn delete(&self, id: &str) -> Result<(), WriteError> {
        match self.script(2, &[id, &self.channel()]).await? {
            1 => Ok(()),
            _ => Err(WriteError::NotFound),
        }
    }

    /// The scripts publish in the step that writes.
    async fn announce(&self, _id: &str) {}

    async fn watch(&self, tx: tokio::sync::mpsc::Sender<Notice>, stop: CancellationToken) {
        relink("Redis notice subscription", &stop, || self.listen(&tx)).await;
    }
}

impl RedisRecords {
    /// One subscription's life: forwards notices; returns why it ended.
    async fn listen(&self, tx: &tokio::sync::mpsc::Sender<Notice>) -> String {
        let (mut sub, mut messages) = match self.redis.pubsub().await {
            Ok(p) => p,
            Err(e) => return e.to_string(),
        };
        if let Err(e) = sub.subscribe(&[self.channel()]).await {
            return e.to_string();
        }
        if tx.send(Notice::All).await.is_err() {
            return "stopped".into();
        }
        while let Some(payload) = messages.next().await {
            crate::metrics::cluster_message(&self.redis.received);
            let Ok(id) = String::from_utf8(payload) else {
                continue;
            };
            if tx.send(Notice::App(id)).await.is_err() {
                return "stopped".into();
            }
        }
        "pub/sub connection closed".into()
    }
}
