//! Single-node history: a bounded ring of events per stream.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{parse_id, History};
use crate::config::HistoryConfig;
use crate::event::Event;
use crate::ids::AppId;

struct Stream {
    events: VecDeque<(u64, Event)>,
    /// The highest sequence dropped from this stream (0: none).
    trimmed_upto: u64,
    last_used: u64,
}

/// Every stream's recent events. Ids are `"{epoch}-{seq}"`: `seq` counts every stored event
/// of the process, so it orders events within a stream; `epoch` changes with each process,
/// so an id from before a restart is recognised as out of reach.
/// One shard of the streams (a stream always lives in the same shard, so its ids are
/// assigned in delivery order); `epoch` and `next` are shared by all shards.
pub(super) struct Shard {
    epoch: u64,
    next: Arc<AtomicU64>,
    streams: HashMap<(AppId, String), Stream>,
    config: HistoryConfig,
}

impl Shard {
    pub(super) fn new(config: HistoryConfig, epoch: u64, next: Arc<AtomicU64>) -> Self {
        Self {
            epoch,
            next,
            streams: HashMap::new(),
            config,
        }
    }

    /// Assigns the event's id and stores it.
    pub(super) fn append(&mut self, app: &AppId, stream: String, event: &mut Event, now_ms: u64) {
        let seq = self.next.fetch_add(1, Ordering::AcqRel) + 1;
        event.meta.id = Some(format!("{}-{seq}", self.epoch).into());
        let (size, ttl_secs) = self.config.limits(app.as_str(), &stream);
        let key = (app.clone(), stream);
        if !self.streams.contains_key(&key) && self.streams.len() >= self.config.max_streams.max(1)
        {
            let oldest = self
                .streams
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.streams.remove(&k);
            }
        }
        let s = self.streams.entry(key).or_insert_with(|| Stream {
            events: VecDeque::new(),
            trimmed_upto: 0,
            last_used: seq,
        });
        s.last_used = seq;
        s.events.push_back((seq, event.clone()));
        let ttl_ms = ttl_secs * 1000;
        while s.events.len() > size.max(1)
            || s.events
                .front()
                .is_some_and(|(_, e)| e.meta.ts_ms + ttl_ms < now_ms)
        {
            if let Some((dropped, _)) = s.events.pop_front() {
                s.trimmed_upto = dropped;
            }
        }
    }

    /// Every stream, for a snapshot.
    pub(super) fn dump(&self) -> Vec<super::snapshot::StreamDump> {
        self.streams
            .iter()
            .map(|(k, s)| {
                (
                    k.clone(),
                    s.trimmed_upto,
                    s.events.iter().cloned().collect(),
                )
            })
            .collect()
    }

    /// Puts back a stream from a snapshot.
    pub(super) fn restore(&mut self, stream: super::snapshot::StreamDump) {
        let (key, trimmed_upto, events) = stream;
        let last_used = events.last().map_or(trimmed_upto, |(q, _)| *q);
        let events = events.into_iter().collect();
        self.streams.insert(
            key,
            Stream {
                events,
                trimmed_upto,
                last_used,
            },
        );
    }

    /// The id of the stream's latest event.
    pub(super) fn head(&self, app: &AppId, stream: &str) -> Option<Arc<str>> {
        let s = self.streams.get(&(app.clone(), stream.to_owned()))?;
        s.events.back().and_then(|(_, e)| e.meta.id.clone())
    }

    pub(super) fn read(&self, app: &AppId, stream: &str, since: &str, now_ms: u64) -> History {
        let key = (app.clone(), stream.to_owned());
        let Some(s) = self.streams.get(&key) else {
            // Nothing kept: either nothing was published after `since`, or it expired. Say
            // "incomplete" unless the id is the latest this process assigned.
            let complete = parse_id(since) == Some((self.epoch, self.next.load(Ordering::Acquire)));
            return History {
                events: Vec::new(),
                complete,
            };
        };
        let ttl_ms = self.config.limits(app.as_str(), stream).1 * 1000;
        // Aged out of history: the replay is incomplete. Past its own ttl: left out by design.
        let kept = |e: &Event| e.meta.ts_ms + ttl_ms >= now_ms;
        let live = |e: &Event| kept(e) && !e.meta.expired(now_ms);
        match parse_id(since) {
            Some((epoch, seq)) if epoch == self.epoch => {
                // Anything at or before `seq` that aged out does not matter; anything after it
                // that is gone makes the replay incomplete.
                let aged_out = s
                    .events
                    .iter()
                    .filter(|(q, e)| *q > seq && !kept(e))
                    .count();
                History {
                    events: s
                        .events
                        .iter()
                        .filter(|(q, e)| *q > seq && live(e))
                        .map(|(_, e)| e.clone())
                        .collect(),
                    complete: s.trimmed_upto <= seq && aged_out == 0,
                }
            }
            _ => History {
                events: s
                    .events
                    .iter()
                    .filter(|(_, e)| live(e))
                    .map(|(_, e)| e.clone())
                    .collect(),
                complete: false,
            },
        }
    }
}
