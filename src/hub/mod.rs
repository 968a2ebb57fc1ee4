//! The hub: which connections are in which channel, which belong to which user, who watches
//! whom, and how many connections each app has. Local to this node; it never awaits.
//!
//! State is split into shards by key hash. Each shard keeps its maps under one
//! `std::sync::Mutex`: no operation awaits while holding it, so a blocking mutex is both
//! correct and cheaper than an async one.

mod budget;
mod changes;
mod delta;
mod interest;
mod outbox;
mod queue;
mod roster;
mod users;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use indexmap::IndexMap;

pub use budget::QueueBudget;
pub use changes::Changed;
pub use delta::DeltaSeen;
pub use interest::{Interest, Topic};
pub use outbox::{Out, Outbox, Receiver, Writes};
pub use queue::Direct;
pub use roster::{ConnectionInfo, Listed};

use delta::ChannelDeltas;

use crate::event::{Event, EventKind, Target};
use crate::filter::{Filter, Tags};
use crate::frame::{CloseReason, Encoder, Frame, FORMATS};
use crate::ids::{AppId, ChannelName, SocketId, UserId};
use crate::metrics;

const SHARDS: usize = 64;

static EMPTY_TAGS: Tags = Tags::new();

/// A connection as the hub sees it: where to queue frames and in which wire format.
#[derive(Clone)]
pub struct Recipient {
    /// How the connection's wire format encodes events.
    pub encoder: &'static Encoder,
    /// Its outbound queue.
    pub outbox: Outbox,
    /// For a channel subscription: only events whose tags match (an extension).
    pub filter: Option<Arc<Filter>>,
    /// For delta-compression connections: what they last received (an extension).
    pub delta: Option<DeltaSeen>,
}

type Members = IndexMap<SocketId, Recipient>;

/// An app's local counts: (app, connections, channels with their subscriber counts).
pub type AppCounts = (AppId, usize, Vec<(ChannelName, usize)>);
type Key<T> = (AppId, T);

#[derive(Default)]
struct Shard {
    channels: HashMap<Key<ChannelName>, Members>,
    users: HashMap<Key<UserId>, Members>,
    watchers: HashMap<Key<UserId>, Members>,
    /// Channels with delta-compression subscribers.
    deltas: HashMap<Key<ChannelName>, ChannelDeltas>,
}

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    hasher: std::collections::hash_map::RandomState,
    connections: AtomicUsize,
    per_app: Mutex<HashMap<AppId, usize>>,
    /// Other nodes' connections per app (cluster mode), for app quotas.
    remote: Mutex<HashMap<AppId, usize>>,
    /// Bumped on every subscription or connection change, so syncs can skip idle rounds.
    generation: AtomicU64,
    /// Bytes queued for this node's connections.
    budget: Arc<QueueBudget>,
    /// Counts changed since the cluster sync wrote them (cluster mode).
    changes: changes::Changes,
    /// Frames delivered, per app.
    out: metrics::MessagesOut,
    /// Every open connection, per app.
    roster: roster::Roster,
    /// The live console's copy of what is delivered.
    tap: crate::tap::Tap,
    /// Told when topics gain or lose local interest (cluster mode).
    interest: std::sync::OnceLock<Arc<dyn Interest>>,
}

/// Cheap-to-clone handle to the node's connection registry.
#[derive(Clone)]
pub struct Hub(Arc<Inner>);

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The node has `server.max_connections`.
    NodeFull,
    /// The app has its `max_connections`.
    AppQuota,
}

/// A counted connection; dropping it releases the slot.
pub struct Admission {
    hub: Hub,
    app: AppId,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.hub.bump();
        self.hub.0.connections.fetch_sub(1, Ordering::AcqRel);
        let mut per_app = self.hub.0.per_app.lock().expect("hub lock poisoned");
        if let Some(n) = per_app.get_mut(&self.app) {
            *n -= 1;
            if *n == 0 {
                per_app.remove(&self.app);
            }
        }
        drop(per_app);
        self.hub.0.changes.app(&self.app);
    }
}

impl Admission {
    /// The app whose connection this is.
    pub fn app(&self) -> &AppId {
        &self.app
    }
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::with_budget(QueueBudget::unlimited(), Default::default())
    }

    /// An empty hub whose connections' queues share `budget`, counting deliveries on `out`.
    pub fn with_budget(budget: QueueBudget, out: metrics::MessagesOut) -> Self {
        Self(Arc::new(Inner {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: Default::default(),
            connections: AtomicUsize::new(0),
            per_app: Mutex::default(),
            remote: Mutex::default(),
            generation: AtomicU64::new(0),
            budget: Arc::new(budget),
            changes: Default::default(),
            out,
            roster: Default::default(),
            tap: Default::default(),
            interest: Default::default(),
        }))
    }

    /// A connection's outbound queue of `capacity` frames, under this node's byte budget.
    pub fn outbox(
        &self,
        capacity: usize,
        token: tokio_util::sync::CancellationToken,
    ) -> (Outbox, Receiver) {
        Outbox::new(capacity, token, self.0.budget.clone())
    }

    fn shard<K: Hash>(&self, key: &K) -> MutexGuard<'_, Shard> {
        let i = (self.0.hasher.hash_one(key) as usize) % SHARDS;
        self.0.shards[i].lock().expect("hub lock poisoned")
    }

    /// Counts a new connection against the node and app limits (0 = unlimited).
    pub fn admit(
        &self,
        app: &AppId,
        app_limit: usize,
        node_limit: usize,
    ) -> Result<Admission, Refusal> {
        let prev = self.0.connections.fetch_add(1, Ordering::AcqRel);
        if node_limit > 0 && prev >= node_limit {
            self.0.connections.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::NodeFull);
        }
        let remote = self
            .0
            .remote
            .lock()
            .expect("hub lock poisoned")
            .get(app)
            .copied()
            .unwrap_or(0);
        let mut per_app = self.0.per_app.lock().expect("hub lock poisoned");
        let n = per_app.entry(app.clone()).or_insert(0);
        if app_limit > 0 && *n + remote >= app_limit {
            drop(per_app);
            self.0.connections.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::AppQuota);
        }
        *n += 1;
        drop(per_app);
        self.0.changes.app(app);
        self.bump();
        Ok(Admission {
            hub: self.clone(),
            app: app.clone(),
        })
    }

    /// Starts recording which counts change (the cluster sync takes them).
    pub fn track_changes(&self) {
        self.0.changes.enable();
    }

    /// The counts changed since the last call.
    pub fn take_changes(&self) -> Changed {
        self.0.changes.take()
    }

    /// Resolves at the next change (or at once if one happened since the last wait).
    pub async fn changed(&self) {
        self.0.changes.wait().await;
    }

    /// This node's connections of `app`.
    pub fn app_connections(&self, app: &AppId) -> usize {
        let per_app = self.0.per_app.lock().expect("hub lock poisoned");
        per_app.get(app).copied().unwrap_or(0)
    }

    /// Other nodes' connections of `app`, as last synced.
    pub fn remote_connections(&self, app: &AppId) -> usize {
        let remote = self.0.remote.lock().expect("hub lock poisoned");
        remote.get(app).copied().unwrap_or(0)
    }

    /// Connections open on this node.
    pub fn connections(&self) -> usize {
        self.0.connections.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.0.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Changes whenever subscriptions or connections change.
    pub fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::Relaxed)
    }

    /// Every app with connections or subscriptions here: (app, connections, channels with
    /// their local subscriber counts).
    pub fn snapshot(&self) -> Vec<AppCounts> {
        let mut apps: HashMap<AppId, (usize, Vec<(ChannelName, usize)>)> = self
            .0
            .per_app
            .lock()
            .expect("hub lock poisoned")
            .iter()
            .map(|(a, n)| (a.clone(), (*n, Vec::new())))
            .collect();
        for shard in self.0.shards.iter() {
            let shard = shard.lock().expect("hub lock poisoned");
            for ((app, ch), set) in &shard.channels {
                apps.entry(app.clone())
                    .or_default()
                    .1
                    .push((ch.clone(), set.len()));
            }
        }
        apps.into_iter().map(|(a, (n, c))| (a, n, c)).collect()
    }

    /// Other nodes' connections per app, as last synced.
    pub fn set_remote_connections(&self, remote: HashMap<AppId, usize>) {
        *self.0.remote.lock().expect("hub lock poisoned") = remote;
    }

    /// Adds a subscriber; returns the channel's local subscriber count afterwards.
    pub fn subscribe(&self, app: &AppId, ch: &ChannelName, id: SocketId, r: Recipient) -> usize {
        let key = (app.clone(), ch.clone());
        let mut shard = self.shard(&key);
        let delta = i64::from(r.delta.is_some());
        // Most channels have one subscriber per node: no room reserved for more.
        let set = shard.channels.entry(key.clone()).or_insert_with(|| {
            self.interest(Topic::Channel(app, ch), true);
            Members::with_capacity_and_hasher(1, Default::default())
        });
        let old = set.insert(id, r);
        let n = set.len();
        let change = delta - old.map_or(0, |o| i64::from(o.delta.is_some()));
        if change != 0 {
            let d = shard.deltas.entry(key.clone()).or_default();
            d.recipients = (d.recipients as i64 + change).max(0) as usize;
            if d.recipients == 0 {
                shard.deltas.remove(&key);
            }
        }
        drop(shard);
        self.0.changes.channel(app, ch);
        self.bump();
        n
    }

    /// Removes a subscriber; returns the remaining local count, or `None` if it was not there.
    pub fn unsubscribe(&self, app: &AppId, ch: &ChannelName, id: SocketId) -> Option<usize> {
        let key = (app.clone(), ch.clone());
        let mut shard = self.shard(&key);
        let set = shard.channels.get_mut(&key)?;
        let removed = set.swap_remove(&id)?;
        let left = set.len();
        if left == 0 {
            shard.channels.remove(&key);
            self.interest(Topic::Channel(app, ch), false);
        }
        if removed.delta.is_some() {
            if let Some(d) = shard.deltas.get_mut(&key) {
                d.recipients = d.recipients.saturating_sub(1);
                if d.recipients == 0 {
                    shard.deltas.remove(&key);
                }
            }
        }
        drop(shard);
        self.0.changes.channel(app, ch);
        self.bump();
        Some(left)
    }

    /// Local subscribers of a channel.
    pub fn subscription_count(&self, app: &AppId, ch: &ChannelName) -> usize {
        let key = (app.clone(), ch.clone());
        self.shard(&key).channels.get(&key).map_or(0, |s| s.len())
    }

    /// Closes every connection that is in a channel or registered as a user, with `reason`;
    /// returns how many were asked to close.
    pub fn kill_subscribed(&self, reason: CloseReason) -> usize {
        let mut seen = std::collections::HashSet::new();
        for shard in self.0.shards.iter() {
            let shard = shard.lock().expect("hub lock poisoned");
            for set in shard.channels.values().chain(shard.users.values()) {
                for (id, r) in set {
                    if seen.insert(*id) {
                        r.outbox.kill(reason);
                    }
                }
            }
        }
        seen.len()
    }

    /// Every locally occupied channel of an app with its subscriber count.
    pub fn channels(&self, app: &AppId) -> Vec<(ChannelName, usize)> {
        let mut out = Vec::new();
        for shard in self.0.shards.iter() {
            let shard = shard.lock().expect("hub lock poisoned");
            out.extend(
                shard
                    .channels
                    .iter()
                    .filter(|((a, _), _)| a == app)
                    .map(|((_, c), s)| (c.clone(), s.len())),
            );
        }
        out
    }

    /// Queues an event for every local recipient and writes it out (see
    /// [`Self::deliver_into`]). Returns the frames queued.
    pub fn deliver(&self, event: &Event) -> usize {
        let mut writes = Writes::default();
        let n = self.deliver_into(event, &mut writes);
        writes.finish();
        n
    }

    /// Queues an event for every local recipient. Encodes it at most once per wire format;
    /// never waits (a full queue closes that connection). Connections whose writer is idle
    /// are listed in `writes` instead of being woken under the shard's lock: the caller
    /// finishes it once it has queued what it has (several events: one write per
    /// connection). Returns the frames queued.
    pub fn deliver_into(&self, event: &Event, writes: &mut Writes) -> usize {
        let app = event.app.clone();
        let delivered = match &event.target {
            Target::Channel(ch) => {
                let key = (app, ch.clone());
                let mut shard = self.shard(&key);
                let Shard {
                    channels, deltas, ..
                } = &mut *shard;
                let mut frames = deltas.get_mut(&key).and_then(|d| d.advance(ch, event));
                channels
                    .get(&key)
                    .map_or(0, |s| fan_out(s, event, frames.as_mut(), writes))
            }
            Target::User(user) => {
                let key = (app, user.clone());
                let shard = self.shard(&key);
                match (&event.kind, shard.users.get(&key)) {
                    (EventKind::Terminate, Some(set)) => {
                        for r in set.values() {
                            r.outbox.kill(CloseReason::Terminated);
                        }
                        0
                    }
                    (_, Some(set)) => fan_out(set, event, None, writes),
                    (_, None) => 0,
                }
            }
            Target::Watchers(user) => {
                let key = (app, user.clone());
                let shard = self.shard(&key);
                shard
                    .watchers
                    .get(&key)
                    .map_or(0, |s| fan_out(s, event, None, writes))
            }
        };
        self.0.out.add(&event.app, delivered);
        if self.0.tap.active() {
            self.0.tap.delivered(event, delivered);
        }
        delivered
    }
}

/// Queues `event` to every member but the excluded one, encoding lazily once per wire.
fn fan_out(
    set: &Members,
    event: &Event,
    mut deltas: Option<&mut delta::DeltaFrames<'_>>,
    writes: &mut Writes,
) -> usize {
    let mut frames: [Option<Option<Frame>>; FORMATS] = Default::default();
    let interest = event.kind.interest();
    let mut n = 0;
    for (id, r) in set {
        if event.exclude == Some(*id) {
            continue;
        }
        if let (Some(f), EventKind::Message { tags, .. }) = (&r.filter, &event.kind) {
            if !f.matches(tags.as_deref().unwrap_or(&EMPTY_TAGS)) {
                continue;
            }
        }
        if let (Some(seen), Some(d), Some(enc)) =
            (&r.delta, deltas.as_deref_mut(), &r.encoder.delta)
        {
            if let Some(f) = d.frame_for(seen, enc) {
                if r.outbox.push_deferred(f, writes) {
                    n += 1;
                }
            }
            continue;
        }
        if interest.is_some_and(|bit| !r.outbox.wants(bit)) {
            continue;
        }
        let encoder = r.encoder;
        let frame = frames[encoder.slot].get_or_insert_with(|| (encoder.encode)(event));
        if let Some(f) = frame {
            if r.outbox.push_live(f.clone(), event, writes) {
                n += 1;
            }
        }
    }
    n
}
