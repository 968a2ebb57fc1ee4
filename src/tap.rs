//! What the live console sees: a copy of each event this node delivers and of each webhook
//! it sends, and per-app counts, but only while a console watches. Without a watcher the
//! delivery path pays one atomic load; with one, a bounded broadcast that never waits: a
//! console that falls behind loses its stream, delivery never slows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::event::{Event, EventKind, Target};
use crate::ids::AppId;

/// Entries a watcher may lag behind before it is dropped.
const BACKLOG: usize = 1024;
/// Bytes of an event's data kept in its log entry.
const MAX_DATA: usize = 4096;

/// One line of the console's event log.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Entry {
    /// When this node saw it (ms since the epoch).
    pub time_ms: u64,
    /// The app.
    pub app: AppId,
    /// The channel, or `user:{id}` / `watchers:{id}` for user events.
    pub channel: String,
    /// The event name (webhooks: the names of the events sent).
    pub event: String,
    /// The data, cut at [`MAX_DATA`] bytes.
    pub data: String,
    /// `api`, `client`, `ingest`, `console`, `internal`, or `webhook`.
    pub source: &'static str,
    /// Webhooks: the answer and the URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Events delivered and frames queued, per app, since the node started watching.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Events this node delivered.
    pub events: u64,
    /// Frames those events queued to connections.
    pub deliveries: u64,
}

struct Inner {
    tx: broadcast::Sender<Arc<Entry>>,
    watchers: AtomicUsize,
    counts: Mutex<HashMap<AppId, Counts>>,
}

/// The node's tap. Cheap to clone.
#[derive(Clone)]
pub struct Tap(Arc<Inner>);

impl Default for Tap {
    fn default() -> Self {
        Self(Arc::new(Inner {
            tx: broadcast::channel(BACKLOG).0,
            watchers: AtomicUsize::new(0),
            counts: Mutex::default(),
        }))
    }
}

/// A console's subscription; dropping it stops the copying once no one else watches.
pub struct Watch {
    tap: Tap,
    /// The entries, in order; `Lagged` means this watcher fell behind.
    pub rx: broadcast::Receiver<Arc<Entry>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.tap.0.watchers.fetch_sub(1, Ordering::AcqRel);
    }
}

fn cut(s: &str) -> String {
    let mut end = s.len().min(MAX_DATA);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl Tap {
    /// Whether any console watches.
    pub fn active(&self) -> bool {
        self.0.watchers.load(Ordering::Acquire) > 0
    }

    /// How many consoles watch.
    pub fn watchers(&self) -> usize {
        self.0.watchers.load(Ordering::Acquire)
    }

    /// Starts watching.
    pub fn watch(&self) -> Watch {
        self.0.watchers.fetch_add(1, Ordering::AcqRel);
        Watch {
            tap: self.clone(),
            rx: self.0.tx.subscribe(),
        }
    }

    /// The counts so far of every app seen.
    pub fn counts(&self) -> HashMap<AppId, Counts> {
        self.0.counts.lock().expect("tap lock poisoned").clone()
    }

    /// An event was delivered here to `frames` connections (call only when [`Self::active`]).
    pub fn delivered(&self, event: &Event, frames: usize) {
        {
            let mut counts = self.0.counts.lock().expect("tap lock poisoned");
            let c = counts.entry(event.app.clone()).or_default();
            c.events += 1;
            c.deliveries += frames as u64;
        }
        let (event_name, data) = match &event.kind {
            EventKind::Message { name, data, .. } => (name.to_string(), cut(data)),
            EventKind::MemberAdded { user_id, .. } => {
                ("pusher_internal:member_added".into(), user_id.to_string())
            }
            EventKind::MemberRemoved { user_id } => {
                ("pusher_internal:member_removed".into(), user_id.to_string())
            }
            _ => return,
        };
        let channel = match &event.target {
            Target::Channel(ch) => ch.to_string(),
            Target::User(u) => format!("user:{u}"),
            Target::Watchers(u) => format!("watchers:{u}"),
        };
        self.send(Entry {
            time_ms: crate::clock::now_ms(),
            app: event.app.clone(),
            channel,
            event: event_name,
            data,
            source: event.meta.origin.label(),
            detail: None,
        });
    }

    /// A webhook POST of `events` for `app` was answered with `status` (0: no answer).
    pub fn webhook(&self, app: &AppId, url: &str, events: &str, status: u16) {
        if !self.active() {
            return;
        }
        self.send(Entry {
            time_ms: crate::clock::now_ms(),
            app: app.clone(),
            channel: String::new(),
            event: events.to_owned(),
            data: String::new(),
            source: "webhook",
            detail: Some(format!("{status} {url}")),
        });
    }

    fn send(&self, entry: Entry) {
        // No receiver is fine: the last console just left.
        let _ = self.0.tx.send(Arc::new(entry));
    }
}
