//! Idempotent publishing: a publisher that retries after a timeout or a 503 sends the same
//! `idempotency_key`, and the retry publishes nothing a second time.
//!
//! A key is claimed before the publish and kept for `idempotency.window_secs` once the
//! publish went out; a publish that failed gives the key back, so its retry goes through.
//! A retry while the first attempt is still running is answered 409. A claim nobody settles
//! (the node was killed mid-publish, the call was cancelled, or Redis went away before the
//! key could be given back) lapses after [`CLAIM_TTL`], not the whole window, so the retry
//! is held back for seconds rather than minutes. In Redis the broker marks the key done in
//! the script that publishes ([`Idempotency::mark`]), so a publish that went out is never
//! given back or left to lapse, even when its node dies or its answer is lost. Keys are per
//! app.
//! Two stores: memory (one node; bounded, oldest evicted first) and Redis (a cluster:
//! `SET NX PX`, so two nodes taking the same retry agree).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::ids::AppId;
use crate::redis_base::{Redis, Shard};

/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 128;

/// How long a claim lives before its publish settles it (`done` keeps it for the window,
/// `release` drops it): longer than any publish takes (a cluster publish is bounded by the
/// Redis response timeout, 2 s), short enough that a publisher that vanished mid-publish
/// holds its retry back for seconds only.
pub const CLAIM_TTL: Duration = Duration::from_secs(10);

/// What a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// The key is new: publish, then [`Idempotency::done`] (or [`Idempotency::release`]).
    New,
    /// A publish with this key is in progress.
    InFlight,
    /// A publish with this key went out within the window.
    Done,
}

/// The store could not be asked.
#[derive(Debug, thiserror::Error)]
#[error("idempotency store unavailable: {0}")]
pub struct StoreDown(pub String);

/// A key as a store keeps it.
pub struct StoreKey {
    /// Unique per app and key.
    pub name: String,
    /// The app of the event it guards.
    pub app: AppId,
    /// Whose keys the event is stored with (`Target::owner`): a store that lives where the
    /// broker does keeps the key beside them, where the publish script can mark it.
    pub owner: (&'static str, String),
}

/// Where keys are kept.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Claims `key` for `ttl` unless it is held.
    async fn claim(&self, key: &StoreKey, ttl: Duration) -> Result<Claimed, StoreDown>;
    /// Marks a claimed key as published, for `ttl`.
    async fn done(&self, key: &StoreKey, ttl: Duration) -> Result<(), StoreDown>;
    /// Gives a claimed key back (unless it was marked done meanwhile).
    async fn release(&self, key: &StoreKey) -> Result<(), StoreDown>;
    /// The key as the broker can set it done in the step that publishes (see
    /// [`Idempotency::mark`]): `Some` for a store that lives where the broker does (Redis).
    fn broker_key(&self, key: &StoreKey) -> Option<String> {
        let _ = key;
        None
    }
}

/// The idempotency keys of every app.
#[derive(Clone)]
pub struct Idempotency {
    store: Arc<dyn KeyStore>,
    window: Duration,
}

/// A key claimed for one publish, until [`Idempotency::done`] or [`Idempotency::release`]
/// (or, if neither comes, [`CLAIM_TTL`]).
pub struct Claim {
    key: StoreKey,
}

impl Idempotency {
    /// Keys kept in `store` for `window` after their publish.
    pub fn new(store: Arc<dyn KeyStore>, window: Duration) -> Self {
        Self { store, window }
    }

    /// Validates a key as it arrives (1 to [`MAX_KEY_LEN`] printable bytes).
    pub fn check_key(key: &str) -> Result<(), String> {
        if key.is_empty() || key.len() > MAX_KEY_LEN || key.chars().any(char::is_control) {
            return Err(format!(
                "idempotency_key must be 1 to {MAX_KEY_LEN} bytes without control characters"
            ));
        }
        Ok(())
    }

    /// Claims `key` of `app` before publishing an event to `owner`'s channel or user
    /// (`Target::owner`). `Ok(Ok(claim))`: publish, then [`Self::done`] or
    /// [`Self::release`]; `Ok(Err(state))` when it is a repeat.
    pub async fn claim(
        &self,
        app: &AppId,
        key: &str,
        owner: (&'static str, &str),
    ) -> Result<Result<Claim, Claimed>, StoreDown> {
        // The app's length first: app "a:b" with key "c" is not app "a" with key "b:c".
        let key = StoreKey {
            name: format!("{}:{}:{key}", app.as_str().len(), app.as_str()),
            app: app.clone(),
            owner: (owner.0, owner.1.to_owned()),
        };
        // A claim nobody settles lapses after CLAIM_TTL (never later than the window).
        match self.store.claim(&key, CLAIM_TTL.min(self.window)).await? {
            Claimed::New => Ok(Ok(Claim { key })),
            other => Ok(Err(other)),
        }
    }

    /// What the broker records in the step that publishes, so that a publish that went out
    /// is known as done even if this node never hears back (its answer lost, the node
    /// killed): `(store key, window)`, for a store the broker can write (Redis). Then
    /// [`Self::release`] after a failed call leaves a key the broker marked done.
    pub fn mark(&self, claim: &Claim) -> Option<(String, Duration)> {
        self.store
            .broker_key(&claim.key)
            .map(|key| (key, self.window))
    }

    /// The publish of `claim` went out: repeats within the window are answered as done.
    pub async fn done(&self, claim: Claim) {
        if let Err(e) = self.store.done(&claim.key, self.window).await {
            tracing::warn!(error = %e, "idempotency key not recorded");
        }
    }

    /// The publish of `claim` failed: a retry may publish.
    pub async fn release(&self, claim: Claim) {
        if let Err(e) = self.store.release(&claim.key).await {
            tracing::warn!(error = %e, "idempotency key not released");
        }
    }
}

/// Keys of one node, in memory: at most `max` (the oldest go first).
pub struct MemoryKeys {
    max: usize,
    inner: Mutex<Keys>,
}

#[derive(Default)]
struct Keys {
    map: HashMap<String, (Instant, bool)>,
    order: VecDeque<(Instant, String)>,
}

impl MemoryKeys {
    /// Holds at most `max` keys.
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            inner: Mutex::default(),
        }
    }
}

impl Keys {
    /// Drops expired keys and, past `max`, the oldest ones.
    fn prune(&mut self, now: Instant, max: usize) {
        while let Some((at, key)) = self.order.front() {
            let current = self.map.get(key).map(|(exp, _)| *exp);
            let stale = current != Some(*at);
            if !(stale || *at <= now || self.map.len() >= max) {
                break;
            }
            if !stale {
                self.map.remove(key);
            }
            self.order.pop_front();
        }
    }

    fn set(&mut self, key: &str, until: Instant, done: bool) {
        self.map.insert(key.to_owned(), (until, done));
        self.order.push_back((until, key.to_owned()));
    }
}

#[async_trait]
impl KeyStore for MemoryKeys {
    async fn claim(&self, key: &StoreKey, ttl: Duration) -> Result<Claimed, StoreDown> {
        let now = Instant::now();
        let mut keys = self.inner.lock().expect("idempotency lock poisoned");
        keys.prune(now, self.max);
        match keys.map.get(&key.name) {
            Some((until, done)) if *until > now => Ok(if *done {
                Claimed::Done
            } else {
                Claimed::InFlight
            }),
            _ => {
                keys.set(&key.name, now + ttl, false);
                Ok(Claimed::New)
            }
        }
    }

    async fn done(&self, key: &StoreKey, ttl: Duration) -> Result<(), StoreDown> {
        let mut keys = self.inner.lock().expect("idempotency lock poisoned");
        keys.set(&key.name, Instant::now() + ttl, true);
        Ok(())
    }

    async fn release(&self, key: &StoreKey) -> Result<(), StoreDown> {
        self.inner
            .lock()
            .expect("idempotency lock poisoned")
            .map
            .remove(&key.name);
        Ok(())
    }
}

/// Keys of a cluster, in its Redis: `{shard}:idem:{len}{app}:{key}` = `p` (in flight) or
/// `d` (done), with a TTL; in the shard of the event's channel or user, where the publish
/// script marks it done.
pub struct RedisKeys {
    redis: Arc<Redis>,
}

impl RedisKeys {
    /// Over the cluster's Redis.
    pub fn new(redis: Arc<Redis>) -> Self {
        Self { redis }
    }

    /// The key's shard (its event's owner's: see [`StoreKey::owner`]) and name there.
    fn name(&self, key: &StoreKey) -> (Shard, String) {
        let owner = (key.owner.0, key.owner.1.as_str());
        let shard = self.redis.shard(key.app.as_str(), owner);
        (shard, self.redis.key_at(shard, &["idem", &key.name]))
    }

    fn conn(&self, shard: Shard) -> Result<crate::redis_base::Conn, StoreDown> {
        self.redis
            .conn_at(shard)
            .map_err(|e| StoreDown(e.to_string()))
    }
}

fn down(e: redis::RedisError) -> StoreDown {
    StoreDown(format!("redis: {e}"))
}

#[async_trait]
impl KeyStore for RedisKeys {
    async fn claim(&self, key: &StoreKey, ttl: Duration) -> Result<Claimed, StoreDown> {
        let (shard, key) = self.name(key);
        let mut conn = self.conn(shard)?;
        let (set, held): (Option<String>, Option<String>) = redis::pipe()
            .cmd("SET")
            .arg(&key)
            .arg("p")
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .map_err(down)?;
        Ok(match (set, held.as_deref()) {
            (Some(_), _) => Claimed::New,
            (None, Some("d")) => Claimed::Done,
            _ => Claimed::InFlight,
        })
    }

    async fn done(&self, key: &StoreKey, ttl: Duration) -> Result<(), StoreDown> {
        let (shard, key) = self.name(key);
        let mut conn = self.conn(shard)?;
        let _: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg("d")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut conn)
            .await
            .map_err(down)?;
        Ok(())
    }

    async fn release(&self, key: &StoreKey) -> Result<(), StoreDown> {
        // Only a claim still in flight: a publish whose answer was lost may have marked it
        // done (see `Idempotency::mark`), and then the event is out.
        static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
            redis::Script::new(
                "if redis.call('GET', KEYS[1]) == 'p' then return redis.call('DEL', KEYS[1]) end return 0",
            )
        });
        let (shard, key) = self.name(key);
        let mut conn = self.conn(shard)?;
        let _: i64 = RELEASE
            .key(&key)
            .invoke_async(&mut conn)
            .await
            .map_err(down)?;
        Ok(())
    }

    fn broker_key(&self, key: &StoreKey) -> Option<String> {
        Some(self.name(key).1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(max: usize) -> Idempotency {
        Idempotency::new(Arc::new(MemoryKeys::new(max)), Duration::from_secs(60))
    }

    #[tokio::test]
    async fn a_key_is_new_then_in_flight_then_done_and_per_app() {
        let idem = ids(100);
        let (a, b) = (AppId::new("a"), AppId::new("b"));
        let claim = idem
            .claim(&a, "k", ("c", "ch"))
            .await
            .unwrap()
            .ok()
            .unwrap();
        assert_eq!(
            idem.claim(&a, "k", ("c", "ch")).await.unwrap().err(),
            Some(Claimed::InFlight)
        );
        assert!(
            idem.claim(&b, "k", ("c", "ch")).await.unwrap().is_ok(),
            "keys are per app"
        );
        idem.done(claim).await;
        assert_eq!(
            idem.claim(&a, "k", ("c", "ch")).await.unwrap().err(),
            Some(Claimed::Done)
        );
    }

    #[tokio::test]
    async fn a_released_key_can_be_claimed_again() {
        let idem = ids(100);
        let a = AppId::new("a");
        let claim = idem
            .claim(&a, "k", ("c", "ch"))
            .await
            .unwrap()
            .ok()
            .unwrap();
        idem.release(claim).await;
        assert!(idem.claim(&a, "k", ("c", "ch")).await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn the_memory_store_keeps_at_most_max_keys() {
        let idem = ids(3);
        let a = AppId::new("a");
        for k in ["1", "2", "3", "4"] {
            let c = idem.claim(&a, k, ("c", "ch")).await.unwrap().ok().unwrap();
            idem.done(c).await;
        }
        assert!(
            idem.claim(&a, "1", ("c", "ch")).await.unwrap().is_ok(),
            "the oldest was evicted"
        );
        assert_eq!(
            idem.claim(&a, "4", ("c", "ch")).await.unwrap().err(),
            Some(Claimed::Done)
        );
    }
}
