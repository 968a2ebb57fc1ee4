//! Interest-based routing over Redis pub/sub: each channel, user and user's watchers has a
//! pub/sub channel of its own (`{shard}:c:{app}:{channel}`, `:u:`, `:w:`), every publish
//! goes to its topic's one, and a node subscribes only while it has local members there. So
//! a node hears only what it delivers; one Redis server still orders every topic's events.
//!
//! Why nothing published after a subscription's answer is missed: the hub tells the routes
//! of a topic's first member under its shard lock, the session then awaits
//! [`Interest::settled`], which resolves once the link task's `SUBSCRIBE` for every topic
//! wanted so far is confirmed by Redis, and only then answers the client (or, for a user,
//! counts them connected). Redis delivers whatever is published after a confirmed
//! subscription.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::event::Target;
use crate::hub::{Hub, Interest, Topic, Writes};
use crate::ids::AppId;
use crate::metrics;
use crate::protocol::node;
use crate::redis_base::{Redis, Shard, Subscriber};

/// Names per SUBSCRIBE command.
const BATCH: usize = 500;
/// How long a session waits for a subscription to be confirmed before it answers anyway
/// (Redis is then too slow to deliver in time whatever we do).
const SETTLE_MAX: Duration = Duration::from_secs(3);

/// Why a link ended when the Sentinels named a new primary (see [`Routes::spawn`]).
const NEW_PRIMARY: &str = "a new primary";
const CLOSED: &str = "pub/sub connection closed";
/// Messages from the cluster delivered together when they are already there.
const RECEIVE_BATCH: usize = 32;

/// The pub/sub channel of `target`'s events.
pub fn channel_of(redis: &Redis, app: &AppId, target: &Target) -> String {
    let topic = match target {
        Target::Channel(ch) => Topic::Channel(app, ch),
        Target::User(u) => Topic::User(app, u),
        Target::Watchers(u) => Topic::Watchers(app, u),
    };
    topic_channel(redis, topic).1
}

/// A topic's pub/sub channel, in the shard of its channel's or user's keys (a user's
/// watchers too), so the publish script that stores an event also publishes it.
fn topic_channel(redis: &Redis, topic: Topic<'_>) -> (Shard, String) {
    let (kind, app, owner) = match topic {
        Topic::Channel(app, ch) => ("c", app, ("c", ch.as_str())),
        Topic::User(app, u) => ("u", app, ("u", u.as_str())),
        Topic::Watchers(app, u) => ("w", app, ("u", u.as_str())),
    };
    let shard = redis.shard(app.as_str(), owner);
    (shard, redis.key_at(shard, &[kind, app.as_str(), owner.1]))
}

/// The topics this node wants, and one link per shard that subscribes to them: on a Redis
/// Cluster a primary's failure restarts only the links of its shards, so the channels of the
/// others go on being heard.
pub struct Routes {
    redis: Arc<Redis>,
    links: Vec<Link>,
}

/// One shard's topics and the state of its link.
struct Link {
    shard: Shard,
    state: Mutex<State>,
    wake: Notify,
    /// Bumped by every topic wanted.
    wanted_seq: AtomicU64,
    /// The `wanted_seq` up to which every wanted topic is subscribed; `u64::MAX` after the
    /// link failed (nothing is heard then, so there is nothing to wait for).
    heard: watch::Sender<u64>,
    up: AtomicBool,
}

#[derive(Default)]
struct State {
    wanted: HashSet<String>,
    /// Changed since the link task last looked.
    dirty: HashSet<String>,
}

impl Routes {
    /// Routes on `redis`; nothing is heard until [`Routes::spawn`].
    pub fn new(redis: Arc<Redis>) -> Arc<Self> {
        let links = redis
            .shards()
            .map(|shard| Link {
                shard,
                state: Mutex::default(),
                wake: Notify::new(),
                wanted_seq: AtomicU64::new(0),
                heard: watch::Sender::new(0),
                up: AtomicBool::new(false),
            })
            .collect();
        Arc::new(Self { redis, links })
    }

    /// Starts the link tasks: each subscribes to what is wanted in its shard, delivers what
    /// arrives into `hub`, and after a lost link (or a new primary) starts over with backoff.
    pub fn spawn(self: &Arc<Self>, hub: Hub, tracker: &TaskTracker, stop: CancellationToken) {
        for i in 0..self.links.len() {
            let (this, hub, stop) = (self.clone(), hub.clone(), stop.clone());
            tracker.spawn(async move { this.run_link(i, hub, stop).await });
        }
    }

    async fn run_link(&self, i: usize, hub: Hub, stop: CancellationToken) {
        let link = &self.links[i];
        let mut delay = Duration::from_millis(100);
        let mut primary = self.redis.watch_primary();
        loop {
            let started = std::time::Instant::now();
            let why = tokio::select! {
                _ = stop.cancelled() => return,
                why = self.link(link, &hub, &mut primary) => why,
            };
            link.heard.send_replace(u64::MAX);
            self.set_up(link, false);
            tracing::warn!(error = %why, "redis subscription lost; reconnecting");
            if started.elapsed() > Duration::from_secs(30) {
                delay = Duration::from_millis(100);
            }
            if why == NEW_PRIMARY {
                delay = Duration::from_millis(100);
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
                // Behind Sentinels the failed attempts went to the dead primary and
                // built up the backoff; a new primary is where the next one succeeds,
                // and every moment unsubscribed there loses its events: go at once.
                _ = self.redis.primary_changed(&mut primary) => {
                    delay = Duration::from_millis(100);
                    continue;
                }
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Records a link's state; Redis counts as up (`/up`, the metric) while every link is.
    fn set_up(&self, link: &Link, up: bool) {
        link.up.store(up, Ordering::Release);
        let all = self.links.iter().all(|l| l.up.load(Ordering::Acquire));
        self.redis.set_up(all);
    }

    /// One link's life; returns why it ended.
    async fn link(&self, link: &Link, hub: &Hub, primary: &mut watch::Receiver<u64>) -> String {
        let (mut sub, mut messages) = match self.redis.pubsub_at(link.shard).await {
            Ok(l) => l,
            Err(e) => return e.to_string(),
        };
        // Sessions wait again, now for this link's subscriptions.
        link.heard.send_replace(0);
        primary.borrow_and_update();
        let mut active: HashSet<String> = HashSet::new();
        // Everything wanted so far, then whatever changes.
        {
            let mut st = link.state.lock().expect("routes lock poisoned");
            let all: Vec<String> = st.wanted.iter().cloned().collect();
            st.dirty.extend(all);
        }
        link.wake.notify_one();
        let mut first = true;
        let mut writes = Writes::default();
        loop {
            tokio::select! {
                m = messages.next() => match m {
                    Some(payload) => {
                        // What else has arrived is delivered with it: a connection is written
                        // to once for all of them.
                        received(&self.redis, hub, &payload, &mut writes);
                        for _ in 1..RECEIVE_BATCH {
                            match messages.next().now_or_never() {
                                Some(Some(p)) => received(&self.redis, hub, &p, &mut writes),
                                Some(None) => return CLOSED.into(),
                                None => break,
                            }
                        }
                        writes.finish_in_turns().await;
                    }
                    None => return CLOSED.into(),
                },
                _ = link.wake.notified() => {
                    if let Err(e) = reconcile(link, &mut sub, &mut active).await {
                        return e.to_string();
                    }
                    if first {
                        first = false;
                        self.set_up(link, true);
                    }
                }
                _ = self.redis.primary_changed(primary) => return NEW_PRIMARY.into(),
            }
        }
    }
}

/// Brings a link's subscriptions to what is wanted, then records what is heard.
async fn reconcile(
    link: &Link,
    sub: &mut Subscriber,
    active: &mut HashSet<String>,
) -> Result<(), redis::RedisError> {
    let seq = link.wanted_seq.load(Ordering::Acquire);
    let (add, remove): (Vec<String>, Vec<String>) = {
        let mut st = link.state.lock().expect("routes lock poisoned");
        let dirty = std::mem::take(&mut st.dirty);
        let mut add = Vec::new();
        let mut remove = Vec::new();
        for name in dirty {
            match (st.wanted.contains(&name), active.contains(&name)) {
                (true, false) => add.push(name),
                (false, true) => remove.push(name),
                _ => {}
            }
        }
        (add, remove)
    };
    for chunk in add.chunks(BATCH) {
        sub.subscribe(chunk).await?;
    }
    active.extend(add);
    for chunk in remove.chunks(BATCH) {
        sub.unsubscribe(chunk).await?;
    }
    for name in &remove {
        active.remove(name);
    }
    link.heard.send_replace(seq);
    Ok(())
}

impl Interest for Routes {
    fn set(&self, topic: Topic<'_>, wanted: bool) {
        let (shard, name) = topic_channel(&self.redis, topic);
        let link = &self.links[shard.index()];
        let mut st = link.state.lock().expect("routes lock poisoned");
        if wanted {
            st.wanted.insert(name.clone());
            link.wanted_seq.fetch_add(1, Ordering::AcqRel);
        } else {
            st.wanted.remove(&name);
        }
        st.dirty.insert(name);
        drop(st);
        link.wake.notify_one();
    }

    fn settled(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let waits: Vec<_> = self
            .links
            .iter()
            .filter_map(|l| {
                let want = l.wanted_seq.load(Ordering::Acquire);
                (*l.heard.borrow() < want).then(|| (want, l.heard.subscribe()))
            })
            .collect();
        Box::pin(async move {
            let all = futures_util::future::join_all(waits.into_iter().map(
                |(want, mut heard)| async move {
                    let _ = heard.wait_for(|h| *h >= want).await;
                },
            ));
            if tokio::time::timeout(SETTLE_MAX, all).await.is_err() {
                tracing::warn!("a redis subscription was not confirmed within 3 s");
            }
        })
    }
}

/// Counts and queues one message from the cluster for delivery (see [`Hub::deliver_into`]).
fn received(redis: &Redis, hub: &Hub, payload: &[u8], writes: &mut Writes) {
    metrics::cluster_message(&redis.received);
    match node::decode(payload) {
        Ok(event) => {
            hub.deliver_into(&event, writes);
        }
        Err(e) => super::redis::dropped(&e),
    }
}
