//! What goes out on a connection, in protocol-neutral terms: an encoded [`Frame`], how a
//! wire format encodes events ([`Encoder`]; each protocol provides one), and why the server
//! ends a connection ([`CloseReason`]). The hub and the sessions' core speak these; only
//! `protocol/` knows what a frame says.

use crate::event::Event;

/// One encoded text frame. Cloning shares the bytes: an event is encoded once per wire
/// format and the same frame is queued for every recipient.
pub type Frame = axum::extract::ws::Utf8Bytes;

/// How many wire formats a fan-out caches frames for (each [`Encoder::slot`] is below).
pub const FORMATS: usize = 2;

/// How one wire format encodes events. A `static` per protocol; the hub calls it at most
/// once per event and format.
pub struct Encoder {
    /// This format's index in a fan-out's cache: distinct per format, below [`FORMATS`].
    pub slot: usize,
    /// The frame of an event; `None` when the format has none for it.
    pub encode: fn(&Event) -> Option<Frame>,
    /// Delta compression (an extension), for formats that have it.
    pub delta: Option<DeltaEncoder>,
}

/// The two frames of delta compression: an event in full with its sequence, and a delta.
pub struct DeltaEncoder {
    /// The full frame of a channel event, with its `sequence`.
    pub sequenced: fn(&Event, u64) -> Option<Frame>,
    /// `(channel, event name, base64 delta, base sequence, target sequence)` as a frame.
    pub delta: fn(&str, &str, &str, u64, u64) -> Frame,
}

/// Why the server ends a connection. Each codec maps it to its own close code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    /// The server is shutting down: reconnect elsewhere, now.
    Shutdown = 1,
    /// The outbound queue overflowed: the client does not read fast enough.
    SlowConsumer = 2,
    /// The app terminated the user's connections.
    Terminated = 3,
}

impl CloseReason {
    /// Inverse of `as u8`, for the atomic the outbox keeps.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Shutdown),
            2 => Some(Self::SlowConsumer),
            3 => Some(Self::Terminated),
            _ => None,
        }
    }
}
