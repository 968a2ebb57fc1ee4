//! What was published and what each consumer saw: one clock, one record per published
//! event, and per consumer a bitmap per stream (seen, seen twice, seen late).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// Milliseconds since the run started: the one clock of publishers, consumers and faults.
pub fn now_ms() -> u64 {
    static T0: OnceLock<Instant> = OnceLock::new();
    T0.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Highest sequence number accepted from a frame: bounds the bitmaps whatever arrives.
pub const MAX_SEQ: u64 = 4_000_000;

/// Not acknowledged (yet).
pub const NOT_ACKED: u32 = u32::MAX;
/// A retry followed an attempt whose outcome was unknown (timeout, reset, 5xx, 409).
pub const AMBIGUOUS: u8 = 1;
/// Given up: the deadline passed without an acknowledgement.
pub const GAVE_UP: u8 = 2;
/// Refused with a 4xx other than 408/409/429 (a bug in the driver or the server).
pub const REFUSED: u8 = 4;

/// One published event.
#[derive(Clone, Copy, Debug)]
pub struct Rec {
    /// When its first attempt started (ms).
    pub sent: u32,
    /// When it was acknowledged (ms), or [`NOT_ACKED`].
    pub acked: u32,
    /// Attempts made.
    pub attempts: u16,
    /// [`AMBIGUOUS`], [`GAVE_UP`], [`REFUSED`].
    pub flags: u8,
}

/// How a stream publishes, and to whom.
#[derive(Clone, Debug)]
pub enum Kind {
    /// `POST /apps/{id}/events` on a channel.
    Http(String),
    /// `POST /apps/{id}/bus/notifications` to every bus user.
    Notify,
    /// An outbox row on a channel.
    OutboxChannel(String),
    /// Outbox rows (one per bus user, one transaction) of kind `notification`.
    OutboxUser,
}

/// One publisher: its events are numbered 0, 1, 2... and published one after the other.
pub struct Stream {
    pub name: String,
    pub kind: Kind,
    /// Bytes of padding after the token in each event's data.
    pub pad: usize,
    recs: Mutex<Vec<Rec>>,
    next: AtomicU64,
}

impl Stream {
    pub fn new(name: String, kind: Kind, pad: usize) -> Self {
        Self {
            name,
            kind,
            pad,
            recs: Mutex::new(Vec::new()),
            next: AtomicU64::new(0),
        }
    }

    /// The channel its events go to (`None`: user events).
    pub fn channel(&self) -> Option<&str> {
        match &self.kind {
            Kind::Http(c) | Kind::OutboxChannel(c) => Some(c),
            Kind::Notify | Kind::OutboxUser => None,
        }
    }

    /// Starts the next event: its sequence number.
    pub fn begin(&self) -> u64 {
        let mut recs = self.recs.lock().expect("ledger lock");
        recs.push(Rec {
            sent: now_ms() as u32,
            acked: NOT_ACKED,
            attempts: 0,
            flags: 0,
        });
        let seq = recs.len() as u64 - 1;
        self.next.store(seq + 1, Ordering::Release);
        seq
    }

    /// Records how event `seq` ended.
    pub fn finish(&self, seq: u64, acked: bool, attempts: u16, flags: u8) {
        let mut recs = self.recs.lock().expect("ledger lock");
        if let Some(r) = recs.get_mut(seq as usize) {
            r.acked = if acked { now_ms() as u32 } else { NOT_ACKED };
            r.attempts = attempts;
            r.flags = flags;
        }
    }

    /// Events started so far.
    pub fn started(&self) -> u64 {
        self.next.load(Ordering::Acquire)
    }

    /// A copy of every record.
    pub fn records(&self) -> Vec<Rec> {
        self.recs.lock().expect("ledger lock").clone()
    }
}

/// The token carried in an event's data: `cx|{stream}|{seq}|`, then `pad` bytes.
pub fn token(stream: usize, seq: u64, pad: usize) -> String {
    format!("cx|{stream}|{seq}|{}", "x".repeat(pad))
}

/// Parses [`token`].
pub fn parse_token(s: &str) -> Option<(usize, u64)> {
    let mut it = s.strip_prefix("cx|")?.split('|');
    let stream = it.next()?.parse().ok()?;
    let seq = it.next()?.parse().ok()?;
    (seq < MAX_SEQ).then_some((stream, seq))
}

/// Which sequence numbers of one stream a consumer received.
#[derive(Default, Clone)]
pub struct Seen {
    once: Vec<u64>,
    twice: Vec<u64>,
    late: Vec<u64>,
    max: Option<u64>,
}

fn get(bits: &[u64], s: u64) -> bool {
    bits.get((s / 64) as usize)
        .is_some_and(|w| w & (1 << (s % 64)) != 0)
}

fn set(bits: &mut Vec<u64>, s: u64) {
    let w = (s / 64) as usize;
    if bits.len() <= w {
        bits.resize(w + 1, 0);
    }
    bits[w] |= 1 << (s % 64);
}

impl Seen {
    /// Records `seq`: a repeat is a duplicate; a first arrival below the highest seen so
    /// far is late (reordered).
    pub fn mark(&mut self, seq: u64) {
        if get(&self.once, seq) {
            set(&mut self.twice, seq);
            return;
        }
        set(&mut self.once, seq);
        if self.max.is_some_and(|m| m > seq) {
            set(&mut self.late, seq);
        }
        self.max = Some(self.max.map_or(seq, |m| m.max(seq)));
    }

    pub fn has(&self, seq: u64) -> bool {
        get(&self.once, seq)
    }

    pub fn dup(&self, seq: u64) -> bool {
        get(&self.twice, seq)
    }

    pub fn late(&self, seq: u64) -> bool {
        get(&self.late, seq)
    }
}
