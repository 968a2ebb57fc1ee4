//! The webhook worker: debounces, decides against cluster-wide state, batches, sends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::time::{delay_queue, DelayQueue};

use super::{sender, Input, Occupancy};
use crate::apps::App;
use crate::config::WebhooksConfig;
use crate::ids::{AppId, ChannelName, UserId};
use crate::metrics;
use crate::presence::PresenceStore;
use crate::tap::Tap;

/// How long a changed channel waits before its cluster-wide subscription count is read:
/// other nodes' counts sync every 250 ms.
const SETTLE: Duration = Duration::from_millis(300);
/// Channels over this many subscribers get `subscription_count` at most every
/// `BIG_CHANNEL_INTERVAL` (Pusher's rule).
const BIG_CHANNEL: usize = 100;
const BIG_CHANNEL_INTERVAL: Duration = Duration::from_secs(5);

enum Due {
    /// Re-read the channel's count; `confirm`: it was empty once already (leave delay).
    Channel(Arc<App>, ChannelName, bool),
    /// Announce `channel_vacated` unless a node holds the channel again.
    Vacate(Arc<App>, ChannelName),
    /// Announce `member_removed` unless the member came back.
    Removed(Arc<App>, ChannelName, UserId),
}

type Batch = (Arc<App>, Vec<Value>);

pub(super) struct Worker {
    config: WebhooksConfig,
    presence: Arc<dyn PresenceStore>,
    tracker: TaskTracker,
    stop: CancellationToken,
    rx: mpsc::Receiver<Input>,
    http: reqwest::Client,
    delays: DelayQueue<Due>,
    channels: HashMap<(AppId, ChannelName), delay_queue::Key>,
    removed: HashMap<(AppId, ChannelName, UserId), delay_queue::Key>,
    vacate: HashMap<(AppId, ChannelName), delay_queue::Key>,
    batches: HashMap<(AppId, String), Batch>,
    permits: Arc<Semaphore>,
    /// When `subscription_count` was last sent for channels over `BIG_CHANNEL`.
    count_sent: HashMap<(AppId, ChannelName), Instant>,
    /// Where the console sees the webhooks sent.
    tap: Tap,
}

impl Worker {
    pub(super) fn new(
        config: WebhooksConfig,
        presence: Arc<dyn PresenceStore>,
        (tracker, stop): (TaskTracker, CancellationToken),
        rx: mpsc::Receiver<Input>,
        tap: Tap,
    ) -> Self {
        let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
        Self {
            config,
            presence,
            tracker,
            stop,
            rx,
            http: reqwest::Client::new(),
            delays: DelayQueue::new(),
            channels: HashMap::new(),
            removed: HashMap::new(),
            vacate: HashMap::new(),
            batches: HashMap::new(),
            permits,
            count_sent: HashMap::new(),
            tap,
        }
    }

    pub(super) async fn run(mut self) {
        let stop = self.stop.clone();
        let mut flush = tokio::time::interval(Duration::from_millis(self.config.batch_ms.max(1)));
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                input = self.rx.recv() => match input {
                    Some(i) => self.handle(i).await,
                    None => break,
                },
                Some(due) = self.delays.next(), if !self.delays.is_empty() => {
                    self.due(due.into_inner()).await;
                }
                _ = flush.tick() => self.flush_all().await,
            }
        }
        self.flush_all().await;
    }

    async fn handle(&mut self, input: Input) {
        match input {
            Input::Changed(app, ch, how) => {
                self.occupancy(&app, &ch, how).await;
                let key = (app.id.clone(), ch.clone());
                if app.wants_webhook("subscription_count", ch.as_str())
                    && !self.channels.contains_key(&key)
                {
                    let k = self.delays.insert(Due::Channel(app, ch, false), SETTLE);
                    self.channels.insert(key, k);
                }
            }
            Input::MemberAdded(app, ch, user) => {
                // A member who left and came back within the delay: neither is announced.
                let key = (app.id.clone(), ch.clone(), user.clone());
                if let Some(k) = self.removed.remove(&key) {
                    self.delays.remove(&k);
                    return;
                }
                let e = json!({"name": "member_added", "channel": ch.as_str(), "user_id": user.as_str()});
                self.enqueue(&app, e);
            }
            Input::MemberRemoved(app, ch, user) => {
                let key = (app.id.clone(), ch.clone(), user.clone());
                if !self.removed.contains_key(&key) {
                    let delay = self.leave_delay();
                    let k = self.delays.insert(Due::Removed(app, ch, user), delay);
                    self.removed.insert(key, k);
                }
            }
            Input::Now(app, e) => self.enqueue(&app, e),
        }
    }

    /// Records an occupancy transition as it happens: `channel_occupied` at once if the
    /// channel was empty everywhere, `channel_vacated` after the leave delay if it stays so.
    async fn occupancy(&mut self, app: &Arc<App>, ch: &ChannelName, how: Occupancy) {
        let key = (app.id.clone(), ch.clone());
        match how {
            Occupancy::First => match self.presence.hold(&app.id, ch).await {
                Ok(true) => self.enqueue(
                    app,
                    json!({"name": "channel_occupied", "channel": ch.as_str()}),
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "occupancy update for a webhook failed"),
            },
            Occupancy::Last | Occupancy::Gone => {
                if how == Occupancy::Last {
                    if let Err(e) = self.presence.release(&app.id, ch).await {
                        tracing::warn!(error = %e, "occupancy update for a webhook failed");
                    }
                }
                // The delay runs from the last leave.
                let delay = self.leave_delay();
                match self.vacate.get(&key) {
                    Some(k) => self.delays.reset(k, delay),
                    None => {
                        let k = self
                            .delays
                            .insert(Due::Vacate(app.clone(), ch.clone()), delay);
                        self.vacate.insert(key, k);
                    }
                }
            }
            Occupancy::Count => {}
        }
    }

    fn leave_delay(&self) -> Duration {
        Duration::from_millis(self.config.leave_delay_ms)
    }

    async fn due(&mut self, due: Due) {
        match due {
            Due::Channel(app, ch, confirm) => {
                self.channels.remove(&(app.id.clone(), ch.clone()));
                self.channel(app, ch, confirm).await;
            }
            Due::Vacate(app, ch) => {
                self.vacate.remove(&(app.id.clone(), ch.clone()));
                match self.presence.vacated(&app.id, &ch).await {
                    Ok(true) => {
                        let e = json!({"name": "channel_vacated", "channel": ch.as_str()});
                        self.enqueue(&app, e);
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "occupancy read for a webhook failed"),
                }
            }
            Due::Removed(app, ch, user) => {
                self.removed
                    .remove(&(app.id.clone(), ch.clone(), user.clone()));
                let back = match self.presence.members(&app.id, &ch).await {
                    Ok(m) => m.iter().any(|m| m.user_id == user),
                    Err(e) => {
                        tracing::warn!(error = %e, "member check for a webhook failed");
                        false
                    }
                };
                if !back {
                    let e = json!({"name": "member_removed", "channel": ch.as_str(), "user_id": user.as_str()});
                    self.enqueue(&app, e);
                }
            }
        }
    }

    /// Reads the channel's cluster-wide count and announces `subscription_count` if it
    /// changed since the last announcement anywhere in the cluster; a count of 0 only once
    /// it stayed 0 for the leave delay.
    async fn channel(&mut self, app: Arc<App>, ch: ChannelName, confirm: bool) {
        let presence = self.presence.clone();
        let n = match presence.occupancy(&app.id, Some(&ch)).await {
            Ok(c) => c.first().map_or(0, |(_, n)| *n),
            Err(e) => {
                tracing::warn!(error = %e, "occupancy read for a webhook failed");
                return;
            }
        };
        if n == 0 && !confirm {
            let key = (app.id.clone(), ch.clone());
            let delay = self.leave_delay();
            let k = self
                .delays
                .insert(Due::Channel(app.clone(), ch.clone(), true), delay);
            self.channels.insert(key, k);
            return;
        }
        if !app.wants_webhook("subscription_count", ch.as_str()) {
            return;
        }
        // Pusher: on every change, but at most every 5 s for channels over 100 subscribers.
        let key = (app.id.clone(), ch.clone());
        if n > BIG_CHANNEL {
            if let Some(wait) = self
                .count_sent
                .get(&key)
                .and_then(|t| BIG_CHANNEL_INTERVAL.checked_sub(t.elapsed()))
            {
                if !self.channels.contains_key(&key) {
                    let k = self.delays.insert(Due::Channel(app, ch, false), wait);
                    self.channels.insert(key, k);
                }
                return;
            }
        }
        let value = n.to_string();
        if presence
            .announce(&app.id, &ch, "subscription_count", &value)
            .await
            == Ok(true)
        {
            let e = json!({"name": "subscription_count", "channel": ch.as_str(), "subscription_count": n});
            self.enqueue(&app, e);
            if n > BIG_CHANNEL {
                self.count_sent.insert(key, Instant::now());
            } else {
                self.count_sent.remove(&key);
            }
        }
    }

    /// Adds an event to the batch of every endpoint of the app that wants it.
    fn enqueue(&mut self, app: &Arc<App>, event: Value) {
        let name = event["name"].as_str().unwrap_or_default().to_owned();
        let channel = event["channel"].as_str().unwrap_or_default().to_owned();
        for w in &app.webhooks {
            let wants = w.wants(&name, &channel);
            if wants {
                self.batches
                    .entry((app.id.clone(), w.url.clone()))
                    .or_insert_with(|| (app.clone(), Vec::new()))
                    .1
                    .push(event.clone());
            }
        }
    }

    async fn flush_all(&mut self) {
        let max = self.config.batch_max.max(1);
        let batches: Vec<((AppId, String), Batch)> = self.batches.drain().collect();
        for ((_, url), (app, events)) in batches {
            for chunk in events.chunks(max) {
                // Waiting for a permit bounds requests in flight; meanwhile the input queue
                // fills and overflow is dropped and counted, so memory stays bounded.
                let Ok(permit) = self.permits.clone().acquire_owned().await else {
                    return;
                };
                metrics::webhook_queued(chunk.len());
                let (http, app, url) = (self.http.clone(), app.clone(), url.clone());
                let (config, stop) = (self.config.clone(), self.stop.clone());
                let (chunk, tap) = (chunk.to_vec(), self.tap.clone());
                self.tracker.spawn(async move {
                    sender::deliver(http, app, url, chunk, (config, tap), stop).await;
                    drop(permit);
                });
            }
        }
    }
}
