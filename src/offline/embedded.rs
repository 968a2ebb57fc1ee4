//! Offline queues in the embedded store (one node).
//!
//! Tables: `offline_events` maps `(app, user, seq)` to a record
//! `[priority][live][expires_at: u64 BE][event json]`; `offline_users` maps `(app, user)` to
//! `(next seq, events, bytes, dropped)`; `offline_totals` counts events node-wide. Records of
//! one user are adjacent and in queue order, so a drain is one range read.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redb::{ReadableTable, TableDefinition, TableError, WriteTransaction};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{priority_rank, Inbox, InboxError, Pending, Queued, Refusal};
use crate::config::OfflineConfig;
use crate::event::Event;
use crate::ids::{AppId, UserId};
use crate::metrics;
use crate::store::{Store, StoreError};

type Key<'a> = (&'a str, &'a str, u64);
const EVENTS: TableDefinition<Key, &[u8]> = TableDefinition::new("offline_events");
const USERS: TableDefinition<(&str, &str), (u64, u64, u64, u64)> =
    TableDefinition::new("offline_users");
const TOTALS: TableDefinition<&str, u64> = TableDefinition::new("offline_totals");
const HEADER: usize = 10;
/// Records removed per sweep transaction.
const SWEEP_CHUNK: usize = 10_000;

/// A queued write: await [`Queueing::done`] (outside any lock).
#[must_use]
pub enum Queueing {
    /// Nothing to queue.
    Nothing,
    /// In flight in the store's writer.
    Pending(tokio::sync::oneshot::Receiver<Result<(), Refusal>>),
    /// The store did not take it.
    Refused(Refusal),
}

impl Queueing {
    /// Waits until the event is on disk; an error (counted, logged) means it is not.
    pub async fn done(self) -> Result<(), Refusal> {
        let r = match self {
            Self::Nothing => return Ok(()),
            Self::Pending(rx) => rx
                .await
                .unwrap_or_else(|_| Err(Refusal::Unavailable("store closed".into()))),
            Self::Refused(e) => Err(e),
        };
        if let Err(e) = &r {
            metrics::offline("refused", 1);
            tracing::error!(error = %e, "user event not queued for an absent user");
        }
        r
    }
}

/// Offline queues in the embedded store.
pub struct EmbeddedInbox {
    store: Store,
    config: OfflineConfig,
}

impl From<StoreError> for InboxError {
    fn from(e: StoreError) -> Self {
        Self(e.to_string())
    }
}

/// A user's counters: next sequence, events, bytes, dropped since the last drain.
#[derive(Clone, Copy, Default)]
struct UserRow {
    next: u64,
    count: u64,
    bytes: u64,
    dropped: u64,
}

impl UserRow {
    fn tuple(self) -> (u64, u64, u64, u64) {
        (self.next, self.count, self.bytes, self.dropped)
    }
}

fn record(event: &Event, live: bool, expires: u64) -> Vec<u8> {
    let json = serde_json::to_vec(event).expect("an event always serializes");
    let mut v = Vec::with_capacity(HEADER + json.len());
    v.push(priority_rank(event.meta.priority));
    v.push(u8::from(live));
    v.extend_from_slice(&expires.to_be_bytes());
    v.extend_from_slice(&json);
    v
}

fn expires_of(rec: &[u8]) -> u64 {
    rec.get(2..HEADER)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

fn decode(rec: &[u8]) -> Option<Queued> {
    let event = serde_json::from_slice(rec.get(HEADER..)?).ok()?;
    Some(Queued {
        event,
        live: rec.get(1) == Some(&1),
    })
}

impl EmbeddedInbox {
    /// Queues in `store` under `config`'s limits.
    pub fn new(store: Store, config: OfflineConfig) -> Self {
        Self { store, config }
    }

    /// Queues `event` (already carrying its id) for `user` without waiting: the write is
    /// ordered before any later [`Inbox`] call. `live`: it was also delivered live. The
    /// returned [`Queueing`] resolves once the event is on disk, or with why it is not (the
    /// store's write queue is full, the node-wide limit, a disk error): the publisher must
    /// learn that, since the user will not get the event.
    pub fn submit(&self, user: &UserId, event: &Event, live: bool) -> Queueing {
        let (app, user) = (event.app.to_string(), user.to_string());
        let rec = record(event, live, event.meta.expires_at(self.config.ttl_secs));
        let config = self.config.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let write = move |txn: &WriteTransaction| push(txn, &app, &user, rec, &config);
        let done = move |r: Result<bool, StoreError>| {
            let r = match r {
                Ok(true) => {
                    metrics::offline("queued", 1);
                    Ok(())
                }
                Ok(false) => Err(Refusal::Full),
                Err(e) => Err(Refusal::Unavailable(e.to_string())),
            };
            let _ = tx.send(r);
        };
        match self.store.submit(write, done) {
            Ok(()) => Queueing::Pending(rx),
            Err(e) => Queueing::Refused(Refusal::Unavailable(e.to_string())),
        }
    }

    /// Removes expired events every `every`, until `stop`.
    pub fn spawn_sweeper(self: &Arc<Self>, tracker: &TaskTracker, stop: CancellationToken) {
        let this = self.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let now = crate::clock::now_ms();
                match this.store.write(move |txn| sweep(txn, now)).await {
                    Ok(n) if n > 0 => metrics::offline("expired", n as u64),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "offline queue sweep failed"),
                }
            }
        });
    }
}

/// Appends one record, evicting by the per-user limits. `Ok(false)`: refused (node-wide
/// limit, or a single event larger than the per-user byte limit).
fn push(
    txn: &WriteTransaction,
    app: &str,
    user: &str,
    rec: Vec<u8>,
    config: &OfflineConfig,
) -> Result<bool, StoreError> {
    let mut users = txn.open_table(USERS)?;
    let mut events = txn.open_table(EVENTS)?;
    let mut totals = txn.open_table(TOTALS)?;
    let mut row = users
        .get((app, user))?
        .map(|g| {
            let (next, count, bytes, dropped) = g.value();
            UserRow {
                next,
                count,
                bytes,
                dropped,
            }
        })
        .unwrap_or_default();
    let mut total = totals.get("events")?.map_or(0, |g| g.value());
    let size = rec.len() as u64;
    if total >= config.max_total_events || size > config.max_bytes as u64 {
        row.dropped += 1;
        users.insert((app, user), row.tuple())?;
        return Ok(false);
    }
    if row.count >= config.max_events as u64 || row.bytes + size > config.max_bytes as u64 {
        // Victims: lowest priority first, oldest first within a priority.
        let mut candidates: Vec<(u8, u64, u64)> = Vec::new();
        for item in events.range((app, user, 0)..=(app, user, u64::MAX))? {
            let (k, v) = item?;
            let v = v.value();
            candidates.push((v[0], k.value().2, v.len() as u64));
        }
        candidates.sort_unstable();
        let mut victims = candidates.into_iter();
        while row.count >= config.max_events as u64 || row.bytes + size > config.max_bytes as u64 {
            let Some((rank, seq, len)) = victims.next() else {
                break;
            };
            events.remove((app, user, seq))?;
            row.count -= 1;
            row.bytes = row.bytes.saturating_sub(len);
            row.dropped += 1;
            total = total.saturating_sub(1);
            metrics::offline_dropped(rank);
        }
    }
    events.insert((app, user, row.next), rec.as_slice())?;
    row.next += 1;
    row.count += 1;
    row.bytes += size;
    total += 1;
    users.insert((app, user), row.tuple())?;
    totals.insert("events", total)?;
    Ok(true)
}

/// Removes the records of `user` that `remove` selects, marks live those `mark` selects,
/// and optionally restarts the dropped counter. Returns how many were removed.
fn update(
    txn: &WriteTransaction,
    app: &str,
    user: &str,
    remove: impl Fn(&Queued, u64) -> bool,
    mark: impl Fn(&Queued) -> bool,
    reset_dropped: bool,
) -> Result<usize, StoreError> {
    let mut users = txn.open_table(USERS)?;
    let mut events = txn.open_table(EVENTS)?;
    let mut totals = txn.open_table(TOTALS)?;
    let Some((next, mut count, mut bytes, mut dropped)) =
        users.get((app, user))?.map(|g| g.value())
    else {
        return Ok(0);
    };
    let mut removed = Vec::new();
    let mut marked = Vec::new();
    for item in events.range((app, user, 0)..=(app, user, u64::MAX))? {
        let (k, v) = item?;
        let (seq, rec) = (k.value().2, v.value());
        let Some(q) = decode(rec) else {
            removed.push((seq, rec.len() as u64));
            continue;
        };
        if remove(&q, expires_of(rec)) {
            removed.push((seq, rec.len() as u64));
        } else if !q.live && mark(&q) {
            let mut r = rec.to_vec();
            r[1] = 1;
            marked.push((seq, r));
        }
    }
    for (seq, len) in &removed {
        events.remove((app, user, *seq))?;
        count = count.saturating_sub(1);
        bytes = bytes.saturating_sub(*len);
    }
    for (seq, r) in &marked {
        events.insert((app, user, *seq), r.as_slice())?;
    }
    if reset_dropped {
        dropped = 0;
    }
    if count == 0 && dropped == 0 {
        users.remove((app, user))?;
    } else {
        users.insert((app, user), (next, count, bytes, dropped))?;
    }
    let total = totals.get("events")?.map_or(0, |g| g.value());
    totals.insert("events", total.saturating_sub(removed.len() as u64))?;
    Ok(removed.len())
}

/// Removes up to [`SWEEP_CHUNK`] expired records node-wide.
fn sweep(txn: &WriteTransaction, now: u64) -> Result<usize, StoreError> {
    let mut expired: Vec<(String, String)> = Vec::new();
    {
        let events = txn.open_table(EVENTS)?;
        let mut seen = HashSet::new();
        for item in events.iter()? {
            let (k, v) = item?;
            if expires_of(v.value()) < now {
                let (app, user, _) = k.value();
                if seen.insert((app.to_owned(), user.to_owned())) {
                    expired.push((app.to_owned(), user.to_owned()));
                }
                if seen.len() >= SWEEP_CHUNK {
                    break;
                }
            }
        }
    }
    let mut n = 0;
    for (app, user) in expired {
        n += update(txn, &app, &user, |_, exp| exp < now, |_| false, false)?;
    }
    Ok(n)
}

#[async_trait]
impl Inbox for EmbeddedInbox {
    async fn pending(&self, app: &AppId, user: &UserId) -> Result<Pending, InboxError> {
        let (app, user) = (app.to_string(), user.to_string());
        let now = crate::clock::now_ms();
        // Ordered after every write submitted before (by the broker): they are visible.
        let p = self
            .store
            .read_after_writes(move |txn| {
                let (users, events) = match (txn.open_table(USERS), txn.open_table(EVENTS)) {
                    (Ok(u), Ok(e)) => (u, e),
                    // Nothing was ever queued on this store.
                    (Err(TableError::TableDoesNotExist(_)), _)
                    | (_, Err(TableError::TableDoesNotExist(_))) => return Ok(Pending::default()),
                    (Err(e), _) | (_, Err(e)) => return Err(e.into()),
                };
                let dropped = users.get((&*app, &*user))?.map_or(0, |g| g.value().3);
                let mut out = Vec::new();
                for item in events.range((&*app, &*user, 0)..=(&*app, &*user, u64::MAX))? {
                    let (_, v) = item?;
                    let rec = v.value();
                    if expires_of(rec) >= now {
                        out.extend(decode(rec));
                    }
                }
                Ok(Pending {
                    events: out,
                    dropped,
                })
            })
            .await?;
        Ok(p)
    }

    async fn settle(
        &self,
        app: &AppId,
        user: &UserId,
        done: Vec<Arc<str>>,
        kept: Vec<Arc<str>>,
    ) -> Result<(), InboxError> {
        let (app, user) = (app.to_string(), user.to_string());
        let now = crate::clock::now_ms();
        let n = done.len();
        let done: HashSet<Arc<str>> = done.into_iter().collect();
        let kept: HashSet<Arc<str>> = kept.into_iter().collect();
        let has = |set: &HashSet<Arc<str>>, q: &Queued| {
            q.event.meta.id.as_ref().is_some_and(|i| set.contains(i))
        };
        self.store
            .write(move |txn| {
                update(
                    txn,
                    &app,
                    &user,
                    |q, exp| exp < now || has(&done, q),
                    |q| has(&kept, q),
                    true,
                )
            })
            .await?;
        metrics::offline("delivered", n as u64);
        Ok(())
    }

    async fn ack(&self, app: &AppId, user: &UserId, ids: Vec<String>) -> Result<usize, InboxError> {
        let (app, user) = (app.to_string(), user.to_string());
        let ids: HashSet<String> = ids.into_iter().collect();
        let n = self
            .store
            .write(move |txn| {
                update(
                    txn,
                    &app,
                    &user,
                    |q, _| q.event.meta.id.as_ref().is_some_and(|i| ids.contains(&**i)),
                    |_| false,
                    false,
                )
            })
            .await?;
        Ok(n)
    }
}
