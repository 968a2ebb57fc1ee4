//! Single-node broker: delivery straight into the local hub.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::history::Shard;
use super::snapshot::{self, Snapshot};
use super::{cache_key, Broker, BrokerError, History, Mark, Receipt, Streams};
use crate::config::HistoryConfig;
use crate::event::{stream_of, Event, Priority};
use crate::hub::{Hub, Writes};
use crate::ids::{AppId, ChannelName};
use crate::offline::{queue_user, EmbeddedInbox, Queueing, Refusal};
use crate::presence::users::MemoryStatus;
use crate::store::Store;

type Cache = HashMap<(AppId, ChannelName), (Event, Instant)>;

/// Delivers into this node's hub. An event is appended to its history and handed to the
/// delivery lane under its stream's shard lock, and the lane delivers in the order it was
/// handed events, so the order of `publish` calls is the delivery order (across channels
/// too: a batch reaches a client of several of its channels in the batch's order) and ids
/// reach every subscriber in order. The publisher is answered once its event is in the
/// lane: it does not wait for the fan-out to every subscriber. One lane: it queues what
/// waits (up to 32 events) into the outboxes (~0.2 µs each), then writes each idle
/// connection's frames to its socket itself, once for all of them ([`Writes`]).
pub struct MemoryBroker {
    /// Events accepted and not yet delivered, at most `LANE_EVENTS`; a full lane makes
    /// publishers wait (backpressure), it drops nothing.
    lane: mpsc::Sender<Event>,
    /// Who is connected: decides, under its lock, whether a user event is queued.
    status: Arc<MemoryStatus>,
    /// Offline queues (`None`: disabled).
    inbox: Option<Arc<EmbeddedInbox>>,
    /// Last event per cache channel, with its expiry. Bounded by `cache_max`; written by the
    /// lane just before it delivers, as a subscriber reads it after it joins the hub.
    cache: Arc<Mutex<Cache>>,
    /// History per stream, sharded by stream.
    streams: Box<[Mutex<Shard>]>,
    /// Id parts shared by the shards, saved with the history at shutdown.
    epoch: u64,
    next: Arc<std::sync::atomic::AtomicU64>,
    /// Where the history goes at shutdown.
    store: Store,
    hasher: std::collections::hash_map::RandomState,
}

const HISTORY_SHARDS: usize = 16;
/// Events waiting in the delivery lane at most (each at most the event size limit).
const LANE_EVENTS: usize = 1024;
/// Events the lane queues before it writes to the sockets.
const LANE_BATCH: usize = 32;

/// The delivery lane's far end: one task, so deliveries keep the lane's order.
struct Lane {
    hub: Hub,
    cache: Arc<Mutex<Cache>>,
    cache_ttl: Duration,
    cache_max: usize,
}

impl Lane {
    /// Delivers what is waiting, a batch at a time: a connection written to once per batch
    /// (one system call for all its frames) however many of the batch's events it gets.
    async fn run(self, mut events: mpsc::Receiver<Event>) {
        let mut batch = Vec::with_capacity(LANE_BATCH);
        let mut writes = Writes::default();
        while events.recv_many(&mut batch, LANE_BATCH).await > 0 {
            for event in batch.drain(..) {
                self.remember(&event);
                self.hub.deliver_into(&event, &mut writes);
            }
            writes.finish_in_turns().await;
        }
    }

    fn remember(&self, event: &Event) {
        let Some(ch) = cache_key(event) else { return };
        let mut cache = self.cache.lock().expect("cache lock poisoned");
        let now = Instant::now();
        let key = (event.app.clone(), ch.clone());
        if cache.len() >= self.cache_max && !cache.contains_key(&key) {
            cache.retain(|_, (_, exp)| *exp > now);
            if cache.len() >= self.cache_max {
                let oldest = cache
                    .iter()
                    .min_by_key(|(_, (_, e))| *e)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    cache.remove(&k);
                }
            }
        }
        cache.insert(key, (event.clone(), now + self.cache_ttl));
    }
}

impl MemoryBroker {
    /// A broker delivering into `hub`, keeping cache-channel events for `cache_ttl`, for at
    /// most `cache_max` channels (beyond that the entry closest to expiry is replaced).
    /// User events are queued in `inbox` for users `status` does not count as connected.
    /// History is restored from `store` if the previous process saved it at shutdown.
    pub fn new(
        hub: Hub,
        status: Arc<MemoryStatus>,
        inbox: Option<Arc<EmbeddedInbox>>,
        cache: (Duration, usize),
        history: HistoryConfig,
        store: Store,
    ) -> Self {
        let (cache_ttl, cache_max) = cache;
        let snap = snapshot::take(&store).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "saved history unreadable; starting without it");
            None
        });
        let restored = snap.is_some();
        let snap = snap.unwrap_or_else(|| Snapshot {
            epoch: u64::from(rand::random::<u32>()),
            ..Snapshot::default()
        });
        let next = Arc::new(std::sync::atomic::AtomicU64::new(snap.next));
        let per_shard = HistoryConfig {
            max_streams: (history.max_streams / HISTORY_SHARDS).max(1),
            ..history
        };
        let cache = Arc::new(Mutex::default());
        let (lane, events) = mpsc::channel(LANE_EVENTS);
        let far = Lane {
            hub,
            cache: Arc::clone(&cache),
            cache_ttl,
            cache_max: cache_max.max(1),
        };
        // Ends when the broker (the lane's only sender) is dropped.
        tokio::spawn(far.run(events));
        let this = Self {
            lane,
            status,
            inbox,
            store,
            cache,
            streams: (0..HISTORY_SHARDS)
                .map(|_| Mutex::new(Shard::new(per_shard.clone(), snap.epoch, next.clone())))
                .collect(),
            epoch: snap.epoch,
            next,
            hasher: Default::default(),
        };
        let n = snap.streams.len();
        for stream in snap.streams {
            this.shard(&stream.0 .0, &stream.0 .1).restore(stream);
        }
        if restored {
            tracing::info!(streams = n, "history restored from the last shutdown");
        }
        this
    }
}

impl MemoryBroker {
    /// Queues a user event when its user has no connection (or it is `high`, kept until
    /// acked); returns whether the user had no connection, and the write to wait for.
    fn queue_if_absent(&self, event: &Event) -> (bool, Queueing) {
        let Some(user) = queue_user(event) else {
            return (false, Queueing::Nothing);
        };
        self.status.while_counted(&event.app, user, |connected| {
            let write = match &self.inbox {
                Some(inbox) if !connected || event.meta.priority == Priority::High => {
                    inbox.submit(user, event, connected)
                }
                _ => Queueing::Nothing,
            };
            (!connected, write)
        })
    }

    fn shard(&self, app: &AppId, stream: &str) -> std::sync::MutexGuard<'_, Shard> {
        use std::hash::BuildHasher;
        let i = (self.hasher.hash_one((app, stream)) as usize) % HISTORY_SHARDS;
        self.streams[i].lock().expect("history lock poisoned")
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    /// The memory key store records the key itself, after the publish: no `mark` here.
    async fn publish(&self, mut event: Event, _: Option<Mark>) -> Result<Receipt, BrokerError> {
        // A place in the lane first: nothing is awaited under a shard lock.
        let place = self.lane.reserve().await.map_err(|_| {
            BrokerError::Unavailable("the delivery lane is closed (shutting down)".into())
        })?;
        let ts_ms = crate::clock::now_ms();
        event.meta.ts_ms = ts_ms;
        let (id, offline, queued) = match stream_of(&event) {
            Some(stream) => {
                let mut streams = self.shard(&event.app, &stream);
                streams.append(&event.app.clone(), stream, &mut event, ts_ms);
                // Queue before delivering: a session registers in the hub before it counts
                // as connected, so the event is either queued or reaches it live.
                let (offline, queued) = self.queue_if_absent(&event);
                let id = event.meta.id.clone();
                // Into the lane under the same lock: ids are delivered in the order assigned.
                place.send(event);
                (id, offline, queued)
            }
            // No id to keep in order: into the lane as it comes.
            None => {
                place.send(event);
                (None, false, Queueing::Nothing)
            }
        };
        let receipt = Receipt { id, ts_ms, offline };
        // On disk before the publisher hears "accepted" (backpressure, not silent loss).
        match queued.done().await {
            Ok(()) => Ok(receipt),
            Err(Refusal::Full) => Err(BrokerError::QueueFull(receipt)),
            Err(Refusal::Unavailable(e)) => Err(BrokerError::Unavailable(e)),
        }
    }

    async fn close(&self) {
        // Every shard is read under its lock; publishing has stopped by now.
        let mut streams = Vec::new();
        for shard in self.streams.iter() {
            streams.extend(shard.lock().expect("history lock poisoned").dump());
        }
        let snap = Snapshot {
            epoch: self.epoch,
            next: self.next.load(std::sync::atomic::Ordering::Acquire),
            streams,
        };
        match snapshot::save(&self.store, snap).await {
            Ok(n) => tracing::info!(events = n, "history saved for the next start"),
            Err(e) => tracing::warn!(error = %e, "history not saved"),
        }
    }
}

#[async_trait]
impl Streams for MemoryBroker {
    async fn head(&self, app: &AppId, stream: &str) -> Result<Option<Arc<str>>, BrokerError> {
        Ok(self.shard(app, stream).head(app, stream))
    }

    async fn history(
        &self,
        app: &AppId,
        stream: &str,
        since: &str,
    ) -> Result<History, BrokerError> {
        let streams = self.shard(app, stream);
        Ok(streams.read(app, stream, since, crate::clock::now_ms()))
    }

    async fn last_event(
        &self,
        app: &AppId,
        ch: &ChannelName,
    ) -> Result<Option<Event>, BrokerError> {
        let mut cache = self.cache.lock().expect("cache lock poisoned");
        let key = (app.clone(), ch.clone());
        match cache.get(&key) {
            Some((e, exp)) if *exp > Instant::now() => Ok(Some(e.clone())),
            Some(_) => {
                cache.remove(&key);
                Ok(None)
            }
            None => Ok(None),
        }
    }
}
