//! App connection quotas across the cluster, decided atomically in Redis at connect:
//! `{p}:aq:{app}` holds each node's admitted connections of the app (written only here:
//! +1 by an admission, −n by the releases of closed connections, batched), so two nodes
//! cannot both take an app's last slot. A dead node's entries do not count (its lease) and
//! are removed by the reaper.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ids::AppId;
use crate::lua;
use crate::redis_base::{Redis, Shard};

/// ARGV = prefix, node, app, limit: 1 (and this connection counted) when every live
/// node's admitted connections of the app stay within the limit, else 0.
const ADMIT: &str = lua!(
    r#"
local node, app, limit = ARGV[2], ARGV[3], tonumber(ARGV[4])
local key = P .. ':aq:' .. app
local total = 1
local all = redis.call('HGETALL', key)
for j = 1, #all, 2 do
  if all[j] == node or alive(all[j]) then total = total + tonumber(all[j + 1]) end
end
if total > limit then return 0 end
redis.call('HINCRBY', key, node, 1)
redis.call('SADD', P .. ':aqn:' .. node, app)
return 1
"#
);

/// ARGV = prefix, node, then (app, n)...: this node's admitted connections go down by n.
const RELEASE: &str = lua!(
    r#"
local node = ARGV[2]
for i = 3, #ARGV, 2 do
  local key = P .. ':aq:' .. ARGV[i]
  if redis.call('HINCRBY', key, node, -tonumber(ARGV[i + 1])) <= 0 then redis.call('HDEL', key, node) end
end
return 0
"#
);

/// The outcome of [`Quota::admit`].
pub enum Admit {
    /// Admitted and counted; dropping the slot gives it back.
    Counted(Slot),
    /// Redis could not answer: the synced counts the hub checked decide.
    Uncounted,
    /// The app has its quota across the cluster.
    Refused,
}

/// The quota handle of this node.
pub struct Quota {
    redis: Arc<Redis>,
    admit: redis::Script,
    /// Slots given back and not yet written, per app (bounded by the number of apps).
    released: Mutex<HashMap<AppId, u64>>,
    wake: Notify,
}

/// A connection counted in the cluster quota of its app.
pub struct Slot {
    quota: Arc<Quota>,
    app: AppId,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut r = self.quota.released.lock().expect("quota lock poisoned");
        *r.entry(self.app.clone()).or_default() += 1;
        drop(r);
        self.quota.wake.notify_one();
    }
}

impl Quota {
    /// The quota handle, with the task that writes released slots on `tracker`.
    pub fn spawn(redis: Arc<Redis>, tracker: &TaskTracker, stop: CancellationToken) -> Arc<Self> {
        let quota = Arc::new(Self {
            redis,
            admit: redis::Script::new(ADMIT),
            released: Mutex::default(),
            wake: Notify::new(),
        });
        let q = quota.clone();
        tracker.spawn(async move {
            let release = redis::Script::new(RELEASE);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = q.wake.notified() => {}
                }
                if !q.write_released(&release).await {
                    // Kept; retried shortly (Redis down or restarting).
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    q.wake.notify_one();
                }
            }
            // Connections closed by the shutdown give their slots back.
            q.write_released(&release).await;
        });
        quota
    }

    /// Admits one more connection of `app` if the cluster holds fewer than `limit`.
    pub async fn admit(self: &Arc<Self>, app: &AppId, limit: usize) -> Admit {
        let Ok(mut conn) = self.redis.conn() else {
            return Admit::Uncounted;
        };
        let r: Result<i64, _> = self
            .redis
            .script(&self.admit, Shard::HOME)
            .arg(&self.redis.node)
            .arg(app.as_str())
            .arg(limit)
            .invoke_async(&mut conn)
            .await;
        match r {
            Ok(1) => Admit::Counted(Slot {
                quota: self.clone(),
                app: app.clone(),
            }),
            Ok(_) => Admit::Refused,
            Err(e) => {
                tracing::warn!(error = %e, "cluster quota check failed; the synced counts decide");
                Admit::Uncounted
            }
        }
    }

    /// Writes the released slots; `false` (and kept) if Redis did not take them.
    async fn write_released(&self, release: &redis::Script) -> bool {
        let taken = std::mem::take(&mut *self.released.lock().expect("quota lock poisoned"));
        if taken.is_empty() {
            return true;
        }
        let done = match self.redis.conn() {
            Ok(mut conn) => {
                let mut inv = self.redis.script(release, Shard::HOME);
                inv.arg(&self.redis.node);
                for (app, n) in &taken {
                    inv.arg(app.as_str()).arg(*n);
                }
                inv.invoke_async::<i64>(&mut conn).await.is_ok()
            }
            Err(_) => false,
        };
        if !done {
            let mut r = self.released.lock().expect("quota lock poisoned");
            for (app, n) in taken {
                *r.entry(app).or_default() += n;
            }
        }
        done
    }
}
