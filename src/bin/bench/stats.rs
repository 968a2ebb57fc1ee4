//! Latency percentiles and exact delivery accounting.

use serde_json::{json, Map, Value};

/// Microsecond latencies, percentiles computed exactly by sorting.
#[derive(Default)]
pub struct Latencies(pub Vec<u32>);

impl Latencies {
    /// Adds another set.
    pub fn merge(&mut self, other: Vec<u32>) {
        self.0.extend(other);
    }

    /// `p50/p99/p999/max` in milliseconds into `out` with `prefix`.
    pub fn report(&mut self, prefix: &str, out: &mut Map<String, Value>) {
        self.0.sort_unstable();
        let n = self.0.len();
        let at = |q: f64| -> f64 {
            if n == 0 {
                return 0.0;
            }
            let i = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
            f64::from(self.0[i]) / 1000.0
        };
        out.insert(format!("{prefix}_p50_ms"), json!(round(at(0.50))));
        out.insert(format!("{prefix}_p99_ms"), json!(round(at(0.99))));
        out.insert(format!("{prefix}_p999_ms"), json!(round(at(0.999))));
        out.insert(format!("{prefix}_max_ms"), json!(round(at(1.0))));
        out.insert(format!("{prefix}_samples"), json!(n));
    }
}

/// Rounds to 3 decimals for readable output.
pub fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Which sequence numbers one subscriber saw: a bitmap, so loss and duplicates are exact.
#[derive(Default)]
pub struct Seen {
    bits: Vec<u64>,
    /// Frames whose sequence number was already set.
    pub duplicates: u64,
    /// Frames received.
    pub received: u64,
}

impl Seen {
    /// Records `seq`.
    pub fn mark(&mut self, seq: u64) {
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if self.bits.len() <= w {
            self.bits.resize(w + 1, 0);
        }
        if self.bits[w] & (1 << b) != 0 {
            self.duplicates += 1;
        } else {
            self.bits[w] |= 1 << b;
        }
        self.received += 1;
    }

    /// Distinct sequence numbers below `limit` that were seen.
    pub fn distinct_below(&self, limit: u64) -> u64 {
        (0..limit)
            .filter(|s| {
                let (w, b) = ((s / 64) as usize, s % 64);
                self.bits.get(w).is_some_and(|x| x & (1 << b) != 0)
            })
            .count() as u64
    }
}

/// Payloads received, in a slot per receiver: one shared counter was a cache line that
/// every reader of the load generator fought over, a million times a second at 1000 × 1000.
#[derive(Clone)]
pub struct Counts(std::sync::Arc<[Slot]>);

/// A receiver's count, alone on its cache line.
#[repr(align(64))]
struct Slot(std::sync::atomic::AtomicU64);

/// One receiver's slot of [`Counts`]: only that receiver writes it.
pub struct Count(Counts, usize);

impl Counts {
    /// Slots for `n` receivers.
    pub fn new(n: usize) -> Self {
        Self(
            (0..n.max(1))
                .map(|_| Slot(std::sync::atomic::AtomicU64::new(0)))
                .collect(),
        )
    }

    /// Receiver `i`'s slot.
    pub fn slot(&self, i: usize) -> Count {
        Count(self.clone(), i % self.0.len())
    }

    /// Everything counted so far.
    pub fn sum(&self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        self.0.iter().map(|s| s.0.load(Relaxed)).sum()
    }
}

impl Count {
    /// One more payload. A load and a store, not a locked add: the slot has one writer.
    pub fn add(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let slot = &(self.0).0[self.1].0;
        slot.store(slot.load(Relaxed) + 1, Relaxed);
    }
}

/// Where a payload's `LG|seq|send_ns|` marker starts, found with a searcher built once
/// (`str::split` builds one per message and searches slower).
pub fn markers(text: &str) -> impl Iterator<Item = &str> {
    static FINDER: std::sync::OnceLock<memchr::memmem::Finder<'static>> =
        std::sync::OnceLock::new();
    let finder = FINDER.get_or_init(|| memchr::memmem::Finder::new("LG|"));
    finder
        .find_iter(text.as_bytes())
        .map(move |at| &text[at + 3..])
}

/// The (seq, send time in ns) at the start of what follows a marker.
pub fn marker_fields(rest: &str) -> Option<(u64, u64)> {
    let mut parts = rest.splitn(3, '|');
    let seq = parts.next()?.parse().ok()?;
    let sent = parts.next()?.parse().ok()?;
    Some((seq, sent))
}
