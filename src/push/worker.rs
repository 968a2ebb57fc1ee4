//! The push worker: takes offers in order, walks the decision tree, groups reactions, and
//! hands deliveries to a bounded pool of tasks that retry transient failures.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::time::DelayQueue;

use super::decide::{self, Kind};
use super::providers::{Message, Provider, Providers, SendError};
use super::store::PushStore;
use super::{Offer, Registration};
use crate::clock::now_ms;
use crate::config::PushConfig;
use crate::event::Event;
use crate::ids::{AppId, UserId};
use crate::metrics;

/// Users with reactions waiting to be grouped; beyond it, reactions are dropped (counted).
const MAX_GROUPS: usize = 100_000;
/// Distinct reactors remembered per group (more are only counted).
const MAX_REACTORS: usize = 100;

/// Reactions to one user within the grouping window.
struct Group {
    reactors: Vec<Arc<str>>,
    extra: usize,
    last_id: Arc<str>,
    link: String,
    expires_ms: u64,
}

pub(super) struct Worker {
    config: PushConfig,
    store: Arc<dyn PushStore>,
    providers: Arc<Providers>,
    rx: mpsc::Receiver<Offer>,
    tracker: TaskTracker,
    stop: CancellationToken,
    permits: Arc<Semaphore>,
    groups: HashMap<(AppId, UserId), Group>,
    due: DelayQueue<(AppId, UserId)>,
}

impl Worker {
    pub(super) fn new(
        config: PushConfig,
        store: Arc<dyn PushStore>,
        providers: Arc<Providers>,
        rx: mpsc::Receiver<Offer>,
        tracker: TaskTracker,
        stop: CancellationToken,
    ) -> Self {
        let permits = Arc::new(Semaphore::new(config.concurrency));
        Self {
            config,
            store,
            providers,
            rx,
            tracker,
            stop,
            permits,
            groups: HashMap::new(),
            due: DelayQueue::new(),
        }
    }

    pub(super) async fn run(mut self) {
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                offer = self.rx.recv() => match offer {
                    Some(o) => self.decide(o).await,
                    None => break,
                },
                Some(due) = self.due.next(), if !self.due.is_empty() => {
                    self.flush(due.into_inner()).await;
                }
            }
        }
        // Undecided offers and grouped reactions are not worth holding shutdown for: a
        // restart loses them, visibly.
        let mut lost = self.groups.len();
        while self.rx.try_recv().is_ok() {
            lost += 1;
        }
        if lost > 0 {
            tracing::info!(events = lost, "push: undecided events dropped at shutdown");
            metrics::push_dropped_n("shutdown", lost as u64);
        }
    }

    /// The decision tree for one offered event (the user was offline).
    async fn decide(&mut self, offer: Offer) {
        let Offer { user, event } = offer;
        let Some(c) = decide::candidate(&event, &self.config.deep_link_base) else {
            return metrics::push_decision("ineligible");
        };
        let now = now_ms();
        let expires_ms = expiry(&event, self.config.default_ttl_secs, now);
        if expires_ms <= now {
            return metrics::push_decision("expired");
        }
        let prefs = match self.store.prefs(&event.app, &user).await {
            Ok(p) => p,
            Err(e) => return store_failed(&e),
        };
        if !prefs.allows(c.kind) {
            return metrics::push_decision("preference_off");
        }
        let id: Arc<str> = event
            .meta
            .id
            .clone()
            .unwrap_or_else(|| hex::encode(rand::random::<[u8; 8]>()).into());
        if c.kind == Kind::React {
            return self.group(event.app, user, c, id, expires_ms);
        }
        let msg = Message {
            app: event.app,
            user,
            kind: c.kind,
            title: c.kind.title().to_owned(),
            body: decide::text(c.kind, &c.sender, 0),
            link: c.link,
            id,
            expires_ms,
        };
        self.schedule(msg).await;
    }

    fn group(&mut self, app: AppId, user: UserId, c: decide::Candidate, id: Arc<str>, exp: u64) {
        let key = (app, user);
        if let Some(g) = self.groups.get_mut(&key) {
            if !g.reactors.contains(&c.sender) {
                if g.reactors.len() < MAX_REACTORS {
                    g.reactors.push(c.sender);
                } else {
                    g.extra += 1;
                }
            }
            (g.last_id, g.link, g.expires_ms) = (id, c.link, g.expires_ms.max(exp));
            return metrics::push_decision("grouped");
        }
        if self.groups.len() >= MAX_GROUPS {
            return metrics::push_dropped("groups_full");
        }
        let window = Duration::from_secs(self.config.react_group_secs);
        self.due.insert(key.clone(), window);
        let g = Group {
            reactors: vec![c.sender],
            extra: 0,
            last_id: id,
            link: c.link,
            expires_ms: exp,
        };
        self.groups.insert(key, g);
        metrics::push_decision("grouped");
    }

    /// One push for a user's reactions of the window.
    async fn flush(&mut self, key: (AppId, UserId)) {
        let Some(g) = self.groups.remove(&key) else {
            return;
        };
        let (app, user) = key;
        let others = g.reactors.len() - 1 + g.extra;
        let msg = Message {
            app,
            user,
            kind: Kind::React,
            title: Kind::React.title().to_owned(),
            body: decide::text(Kind::React, &g.reactors[0], others),
            link: g.link,
            id: g.last_id,
            expires_ms: g.expires_ms,
        };
        self.schedule(msg).await;
    }

    /// Devices, each claimed once for this push, then the throttle, then one delivery per
    /// claimed device. Claiming first means an event offered twice costs no quota.
    async fn schedule(&mut self, msg: Message) {
        let regs = match self.store.registrations(&msg.app, &msg.user).await {
            Ok(r) if r.is_empty() => return metrics::push_decision("no_device"),
            Ok(r) => r,
            Err(e) => return store_failed(&e),
        };
        let key = format!("{}/{}", msg.user, msg.id);
        let mut claimed = Vec::new();
        for reg in regs {
            let Some(provider) = self.providers.get(reg.platform).cloned() else {
                continue;
            };
            match self
                .store
                .claim(&msg.app, &key, &reg.id, msg.expires_ms)
                .await
            {
                Ok(true) => claimed.push((provider, reg)),
                Ok(false) => metrics::push_sent(provider.name(), "duplicate"),
                Err(e) => store_failed(&e),
            }
        }
        if claimed.is_empty() {
            return;
        }
        let max = self.config.max_per_hour;
        if max > 0 {
            match self
                .store
                .take_quota(&msg.app, &msg.user, max, now_ms())
                .await
            {
                Ok(true) => {}
                Ok(false) => return metrics::push_decision("throttled"),
                Err(e) => return store_failed(&e),
            }
        }
        metrics::push_decision("scheduled");
        let msg = Arc::new(msg);
        for (provider, reg) in claimed {
            // Waiting for a permit bounds requests in flight; meanwhile offers queue up and
            // overflow is dropped and counted.
            let permit = tokio::select! {
                p = self.permits.clone().acquire_owned() => p.expect("semaphore never closed"),
                _ = self.stop.cancelled() => return,
            };
            let d = Delivery {
                provider,
                store: self.store.clone(),
                reg,
                msg: msg.clone(),
                config: self.config.clone(),
                stop: self.stop.clone(),
            };
            self.tracker.spawn(async move {
                d.run().await;
                drop(permit);
            });
        }
    }
}

fn store_failed(e: &super::store::StoreFailure) {
    metrics::push_decision("store_error");
    tracing::warn!(error = %e, "push: store unavailable, event not pushed");
}

/// When the push stops being worth delivering: the event's ttl, capped by
/// `default_ttl_secs` (which also applies to events without one).
fn expiry(event: &Event, default_ttl: u64, now: u64) -> u64 {
    let base = if event.meta.ts_ms > 0 {
        event.meta.ts_ms
    } else {
        now
    };
    let ttl = event
        .meta
        .ttl
        .map_or(default_ttl, |t| u64::from(t).min(default_ttl));
    base + ttl * 1000
}

/// One push to one device, retried while it fails transiently.
struct Delivery {
    provider: Arc<dyn Provider>,
    store: Arc<dyn PushStore>,
    reg: Registration,
    msg: Arc<Message>,
    config: PushConfig,
    stop: CancellationToken,
}

impl Delivery {
    async fn run(self) {
        let name = self.provider.name();
        let started = Instant::now();
        let max_delay = Duration::from_millis(self.config.backoff_max_ms);
        let mut delay = Duration::from_millis(self.config.backoff_initial_ms);
        let (app, user, id) = (&self.msg.app, &self.msg.user, &self.reg.id);
        loop {
            let now = now_ms();
            if self.msg.expires_ms <= now {
                return metrics::push_sent(name, "expired");
            }
            let wait = match self.provider.send(&self.reg.device, &self.msg, now).await {
                Ok(()) => return metrics::push_sent(name, "ok"),
                Err(SendError::Gone(reason)) => {
                    metrics::push_sent(name, "gone");
                    tracing::info!(provider = name, %app, %user, registration = %id, %reason, "push: device gone, registration removed");
                    if let Err(e) = self.store.remove(app, user, id).await {
                        tracing::warn!(error = %e, "push: could not remove a gone registration");
                    }
                    return;
                }
                Err(SendError::Rejected(reason)) => {
                    metrics::push_sent(name, "rejected");
                    tracing::warn!(provider = name, %app, %user, registration = %id, %reason, "push refused by the provider");
                    return;
                }
                Err(SendError::Transient {
                    reason,
                    retry_after,
                }) => {
                    let wait = retry_after.unwrap_or(delay).min(max_delay);
                    let out_of_time = started.elapsed() + wait
                        > Duration::from_secs(self.config.retry_secs)
                        || now + wait.as_millis() as u64 >= self.msg.expires_ms;
                    if out_of_time || self.stop.is_cancelled() {
                        metrics::push_sent(name, "failed");
                        tracing::warn!(provider = name, %app, %user, registration = %id, %reason, "push given up");
                        return;
                    }
                    metrics::push_retry(name);
                    tracing::debug!(provider = name, %reason, retry_in_ms = wait.as_millis() as u64, "push failed; retrying");
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop.cancelled() => {}
            }
            delay = (delay * 2).min(max_delay);
        }
    }
}
