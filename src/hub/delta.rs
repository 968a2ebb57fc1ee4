//! Delta compression (an extension): connections that sent `pusher:enable_delta_compression`
//! get each channel event as a fossil delta against the previous event of the same channel
//! and name, when they received that one, else in full. Both forms carry sequence numbers
//! (`sequence`, or `base_seq`/`target_seq`) so a client detects a gap and asks for a full
//! message with `pusher:delta_sync_error`. Each form is encoded once per event and shared.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;

use crate::event::{Event, EventKind};
use crate::frame::{DeltaEncoder, Frame};
use crate::ids::ChannelName;

/// Event names remembered per channel, and (channel, event) pairs per connection.
const MAX_NAMES: usize = 64;
const MAX_SEEN: usize = 256;

/// What one connection last received, per (channel, event name).
pub type DeltaSeen = Arc<Mutex<HashMap<(ChannelName, Arc<str>), u64>>>;

/// Per channel with delta subscribers: the last data and sequence per event name.
#[derive(Default)]
pub(crate) struct ChannelDeltas {
    /// Delta-enabled subscribers of the channel (the state is dropped at 0).
    pub recipients: usize,
    last: HashMap<Arc<str>, (u64, Arc<str>)>,
}

/// The frames of one event for delta subscribers, built on first use.
pub(crate) struct DeltaFrames<'a> {
    event: &'a Event,
    channel: &'a ChannelName,
    name: Arc<str>,
    seq: u64,
    prev: Option<(u64, Arc<str>)>,
    full: Option<Frame>,
    delta: Option<Option<Frame>>,
}

impl ChannelDeltas {
    /// Advances the channel's sequence for this event; `None` for events that are not
    /// channel messages.
    pub(crate) fn advance<'a>(
        &mut self,
        channel: &'a ChannelName,
        event: &'a Event,
    ) -> Option<DeltaFrames<'a>> {
        let EventKind::Message { name, data, .. } = &event.kind else {
            return None;
        };
        let prev = self.last.get(name).cloned();
        let seq = prev.as_ref().map_or(1, |(s, _)| s + 1);
        if self.last.len() >= MAX_NAMES && !self.last.contains_key(name) {
            self.last.clear();
        }
        self.last.insert(name.clone(), (seq, data.clone()));
        Some(DeltaFrames {
            event,
            channel,
            name: name.clone(),
            seq,
            prev,
            full: None,
            delta: None,
        })
    }
}

impl DeltaFrames<'_> {
    /// The frame for a connection that last saw `seen`'s entry; records this sequence.
    pub(crate) fn frame_for(&mut self, seen: &DeltaSeen, enc: &DeltaEncoder) -> Option<Frame> {
        let key = (self.channel.clone(), self.name.clone());
        let last = {
            let mut map = seen.lock().expect("delta lock poisoned");
            if map.len() >= MAX_SEEN && !map.contains_key(&key) {
                map.clear();
            }
            map.insert(key, self.seq)
        };
        if let (Some(base), Some((prev_seq, _))) = (last, &self.prev) {
            if base == *prev_seq {
                if let Some(f) = self.delta(enc) {
                    return Some(f);
                }
            }
        }
        if self.full.is_none() {
            self.full = (enc.sequenced)(self.event, self.seq);
        }
        self.full.clone()
    }

    /// The delta frame, if it is smaller than sending the data again.
    fn delta(&mut self, enc: &DeltaEncoder) -> Option<Frame> {
        if self.delta.is_none() {
            let built = self.prev.as_ref().and_then(|(prev_seq, prev)| {
                let EventKind::Message { data, .. } = &self.event.kind else {
                    return None;
                };
                // `fossil_delta::delta(target, source)` turns `source` into `target`.
                let d = fossil_delta::delta(data.as_bytes(), prev.as_bytes());
                let b64 = base64::engine::general_purpose::STANDARD.encode(d);
                (b64.len() < data.len()).then(|| {
                    (enc.delta)(self.channel.as_str(), &self.name, &b64, *prev_seq, self.seq)
                })
            });
            self.delta = Some(built);
        }
        self.delta.clone().flatten()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fossil_delta_direction() {
        let (prev, next) = (
            b"{\"price\":100,\"sym\":\"ABC\"}",
            b"{\"price\":101,\"sym\":\"ABC\"}",
        );
        let d = fossil_delta::delta(next, prev);
        assert_eq!(fossil_delta::apply(prev, &d).unwrap(), next);
    }
}
