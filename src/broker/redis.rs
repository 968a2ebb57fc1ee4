//! Cluster broker over Redis: one script orders, stores and publishes each event to its
//! topic's pub/sub channel ([`routes`](super::routes)); every node with local interest, the
//! publisher included, receives it from Redis and delivers it, so each channel has one order
//! cluster-wide.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::routes::{channel_of, Routes};
use super::{cache_key, parse_id, Broker, BrokerError, History, Mark, Receipt, Streams};
use crate::config::{HistoryConfig, OfflineConfig};
use crate::event::{stream_of, Event};
use crate::hub::Hub;
use crate::ids::{AppId, ChannelName};
use crate::metrics;
use crate::offline::{priority_rank, queue_user, ENQUEUE_LUA, TOTAL_LUA};
use crate::protocol::node;
use crate::redis_base::Redis;

/// Publishes each event to its topic's pub/sub channel; cache-channel events are also
/// stored (`{prefix}:cache:{app}:{channel}`, expiring) in the same script.
pub struct RedisBroker {
    redis: Arc<Redis>,
    routes: Arc<Routes>,
    cache_ttl: Duration,
    history: HistoryConfig,
    offline: OfflineConfig,
    publish_script: redis::Script,
    history_script: redis::Script,
}

/// Stores (history stream, cache), queues a user event for an absent user, and publishes,
/// in one step, so ids follow the publish order and an event is queued or delivered live.
/// The pub/sub payload is the inter-node envelope ([`node`]: version line, id, event json;
/// empty id: no history); with a [`Mark`], the publisher's idempotency key is set done in
/// the same step. Returns `{id, offline, queued}`.
fn publish_script() -> String {
    let body = r#"
local channel, payload, cache, cache_ttl, stream, maxlen, stream_ttl =
  ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local app, user, prio, expires = ARGV[9], ARGV[10], ARGV[11], ARGV[12]
local max_events, max_bytes, keep_ms, queueing, max_total =
  tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15]), ARGV[16] == '1', tonumber(ARGV[17])
local header, mark, mark_ttl = ARGV[18], ARGV[19], ARGV[20]
local id = ''
if stream ~= '' then
  id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'e', payload)
  redis.call('PEXPIRE', stream, stream_ttl)
end
if cache ~= '' then redis.call('SET', cache, payload, 'PX', cache_ttl) end
local offline, queued = 0, -1
if user ~= '' and id ~= '' then
  local on = connected(app, user)
  if not on then offline = 1 end
  if queueing and (not on or prio == '2') then
    local live = '0'
    if on then live = '1' end
    queued = enqueue(app, user, id, payload, prio, live, expires, max_events, max_bytes, keep_ms,
      max_total)
  end
end
-- The idempotency key is done in the step that publishes: no window in which the event is
-- out but its key could still be given back or lapse.
if mark ~= '' then redis.call('SET', mark, 'd', 'PX', mark_ttl) end
redis.call(ARGV[21], channel, header .. id .. '\n' .. payload)
return {id, offline, queued}
"#;
    format!("{}{TOTAL_LUA}{ENQUEUE_LUA}{body}", crate::lua!(""))
}

/// `{complete, id, json, id, json, ...}` after `since`. Complete when the stream exists and
/// nothing after `since` was trimmed (`max-deleted-entry-id`, Redis 7).
const HISTORY: &str = r#"
local key, since = ARGV[1], ARGV[2]
local info = redis.pcall('XINFO', 'STREAM', key)
if type(info) ~= 'table' or info.err then return {'0'} end
local maxdel = '0-0'
for i = 1, #info, 2 do
  if info[i] == 'max-deleted-entry-id' then maxdel = info[i + 1] end
end
local function parts(id)
  local a, b = string.match(id, '(%d+)-(%d+)')
  return tonumber(a), tonumber(b)
end
local s1, s2 = parts(since)
local m1, m2 = parts(maxdel)
local complete = '0'
if s1 > m1 or (s1 == m1 and s2 >= m2) then complete = '1' end
local out = {complete}
for _, e in ipairs(redis.call('XRANGE', key, '(' .. since, '+')) do
  out[#out + 1] = e[1]
  out[#out + 1] = e[2][2]
end
return out
"#;

impl RedisBroker {
    /// A broker on `redis`, keeping cache-channel events for `cache_ttl` and history per
    /// `history`.
    pub fn new(
        redis: Arc<Redis>,
        cache_ttl: Duration,
        history: HistoryConfig,
        offline: OfflineConfig,
    ) -> Self {
        Self {
            routes: Routes::new(redis.clone()),
            redis,
            cache_ttl,
            history,
            offline,
            publish_script: redis::Script::new(&publish_script()),
            history_script: redis::Script::new(HISTORY),
        }
    }

    /// Starts routing: the hub reports local interest to the routes, whose link task
    /// subscribes to it and delivers what arrives into `hub` (see [`Routes`]).
    pub fn spawn_subscriber(&self, hub: Hub, tracker: &TaskTracker, stop: CancellationToken) {
        hub.route_interest(self.routes.clone());
        self.routes.spawn(hub, tracker, stop);
    }
}

/// Counts an envelope this node cannot read and logs it, at most once per 10 s: a newer
/// node in a rolling upgrade can send many.
pub(super) fn dropped(e: &node::EnvelopeError) {
    static LAST_LOG_MS: AtomicU64 = AtomicU64::new(0);
    metrics::envelope_dropped(e.reason());
    let now = crate::clock::now_ms();
    let last = LAST_LOG_MS.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 10_000
        && LAST_LOG_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::error!(error = %e, "dropped an inter-node envelope from redis (counted in switchboard_node_envelopes_dropped_total)");
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, mut event: Event, mark: Option<Mark>) -> Result<Receipt, BrokerError> {
        let unavailable = |e: String| BrokerError::Unavailable(e);
        // Everything the script touches is in the shard of the event's channel or user.
        let shard = self.redis.shard(event.app.as_str(), event.target.owner());
        let mut conn = self
            .redis
            .conn_at(shard)
            .map_err(|e| unavailable(e.to_string()))?;
        event.meta.ts_ms = crate::clock::now_ms();
        let payload = serde_json::to_vec(&event).map_err(|e| unavailable(e.to_string()))?;
        let cache = cache_key(&event)
            .map(|ch| {
                self.redis
                    .key_at(shard, &["cache", event.app.as_str(), ch.as_str()])
            })
            .unwrap_or_default();
        let stream_name = stream_of(&event);
        let (size, ttl_secs) = stream_name
            .as_deref()
            .map_or((1, 1), |s| self.history.limits(event.app.as_str(), s));
        let stream = stream_name
            .map(|s| self.redis.key_at(shard, &["h", event.app.as_str(), &s]))
            .unwrap_or_default();
        let user = queue_user(&event).map_or("", |u| u.as_str());
        let (id, offline, queued): (String, u8, i8) = self
            .redis
            .script(&self.publish_script, shard)
            .arg(channel_of(&self.redis, &event.app, &event.target))
            .arg(payload)
            .arg(cache)
            .arg(self.cache_ttl.as_millis() as u64)
            .arg(stream)
            .arg(size.max(1))
            .arg(ttl_secs * 1000 * 2)
            .arg(event.app.as_str())
            .arg(user)
            .arg(priority_rank(event.meta.priority))
            .arg(event.meta.expires_at(self.offline.ttl_secs))
            .arg(self.offline.max_events)
            .arg(self.offline.max_bytes)
            .arg(self.offline.ttl_secs * 1000)
            .arg(if self.offline.enabled { "1" } else { "0" })
            .arg(
                self.offline
                    .max_total_events
                    .div_ceil(self.redis.shard_count()),
            )
            .arg(node::HEADER)
            .arg(mark.as_ref().map_or("", |m| m.key.as_str()))
            .arg(mark.as_ref().map_or(0, |m| m.ttl.as_millis() as u64))
            .arg(self.redis.publish_command())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let receipt = Receipt {
            id: (!id.is_empty()).then(|| id.into()),
            ts_ms: event.meta.ts_ms,
            offline: offline == 1,
        };
        match queued {
            1 => metrics::offline("queued", 1),
            0 => {
                // As on one node: the publisher hears it (the user's next drain says
                // `dropped`), rather than an accepted event silently not kept.
                metrics::offline("refused", 1);
                return Err(BrokerError::QueueFull(receipt));
            }
            _ => {}
        }
        Ok(receipt)
    }
}

#[async_trait]
impl Streams for RedisBroker {
    async fn head(&self, app: &AppId, stream: &str) -> Result<Option<Arc<str>>, BrokerError> {
        let shard = self.redis.stream_shard(app.as_str(), stream);
        let mut conn = self
            .redis
            .conn_at(shard)
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let key = self.redis.key_at(shard, &["h", app.as_str(), stream]);
        let last: Vec<(String, Vec<String>)> = redis::cmd("XREVRANGE")
            .arg(key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        Ok(last.first().map(|(id, _)| Arc::from(id.as_str())))
    }

    async fn history(
        &self,
        app: &AppId,
        stream: &str,
        since: &str,
    ) -> Result<History, BrokerError> {
        if parse_id(since).is_none() {
            return Ok(History::default());
        }
        let shard = self.redis.stream_shard(app.as_str(), stream);
        let mut conn = self
            .redis
            .conn_at(shard)
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let key = self.redis.key_at(shard, &["h", app.as_str(), stream]);
        let raw: Vec<redis::Value> = self
            .history_script
            .key(&key)
            .arg(&key)
            .arg(since)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let strings: Vec<String> = raw
            .iter()
            .map(|v| redis::from_redis_value_ref::<String>(v).unwrap_or_default())
            .collect();
        let now = crate::clock::now_ms();
        let ttl_ms = self.history.limits(app.as_str(), stream).1 * 1000;
        let mut h = History {
            events: Vec::new(),
            complete: strings.first().is_some_and(|c| c == "1"),
        };
        for pair in strings.get(1..).unwrap_or_default().chunks(2) {
            let [id, json] = pair else { continue };
            let Ok(mut e) = serde_json::from_str::<Event>(json) else {
                continue;
            };
            if e.meta.ts_ms + ttl_ms < now {
                h.complete = false;
                continue;
            }
            if e.meta.expired(now) {
                continue;
            }
            e.meta.id = Some(id.as_str().into());
            h.events.push(e);
        }
        Ok(h)
    }

    async fn last_event(
        &self,
        app: &AppId,
        ch: &ChannelName,
    ) -> Result<Option<Event>, BrokerError> {
        let shard = self.redis.channel_shard(app.as_str(), ch.as_str());
        let mut conn = self
            .redis
            .conn_at(shard)
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let key = self
            .redis
            .key_at(shard, &["cache", app.as_str(), ch.as_str()]);
        let raw: Option<Vec<u8>> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        Ok(raw.and_then(|r| serde_json::from_slice(&r).ok()))
    }
}
