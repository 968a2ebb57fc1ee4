//! What goes out on a connection, in protocol-neutral terms: an encoded [`Frame`], how a
//! wire format encodes events ([`Encoder`]; each protocol provides one), and why the server
//! ends a connection ([`CloseReason`]). The hub and the sessions' core speak these; only
//! `protocol/` knows what a frame says.

use bytes::Bytes;

use crate::event::Event;

/// One encoded text message, kept as the complete WebSocket frame (header and payload) that
/// carries it. Server frames are unmasked, so these bytes are the same for every recipient:
/// an event is encoded and framed once per wire format, and cloning shares the bytes.
/// Transports other than WebSocket take [`Frame::payload`].
#[derive(Clone, PartialEq, Eq)]
pub struct Frame(Bytes);

impl Frame {
    /// Frames `text` (a final text frame, opcode 1).
    pub fn new(text: &str) -> Self {
        let mut wire = Vec::with_capacity(text.len() + 10);
        header(&mut wire, 0x81, text.len());
        wire.extend_from_slice(text.as_bytes());
        Self(Bytes::from(wire))
    }

    /// The message as text.
    pub fn as_str(&self) -> &str {
        // Built from a `&str` in `new`: always UTF-8.
        std::str::from_utf8(self.payload()).expect("a frame's payload is UTF-8")
    }

    /// The message's bytes (without the WebSocket header).
    pub fn payload(&self) -> &[u8] {
        &self.0[head_len(self.0[1])..]
    }

    /// The message's length in bytes.
    pub fn len(&self) -> usize {
        self.0.len() - head_len(self.0[1])
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The complete WebSocket frame, shared.
    pub fn wire(&self) -> &Bytes {
        &self.0
    }
}

impl From<String> for Frame {
    fn from(s: String) -> Self {
        Self::new(&s)
    }
}

impl From<&str> for Frame {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Appends the header of an unmasked final frame: `first` is the FIN bit and opcode.
pub fn header(out: &mut Vec<u8>, first: u8, len: usize) {
    out.push(first);
    match len {
        0..=125 => out.push(len as u8),
        126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// Header length of an unmasked frame from its second byte.
fn head_len(second: u8) -> usize {
    match second & 0x7F {
        126 => 4,
        127 => 10,
        _ => 2,
    }
}

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
    /// The app was disabled while the connection was open.
    AppDisabled = 4,
    /// The app was deleted while the connection was open.
    AppDeleted = 5,
}

impl CloseReason {
    /// Inverse of `as u8`, for the atomic the outbox keeps.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Shutdown),
            2 => Some(Self::SlowConsumer),
            3 => Some(Self::Terminated),
            4 => Some(Self::AppDisabled),
            5 => Some(Self::AppDeleted),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Frame;

    #[test]
    fn frames_carry_their_websocket_header() {
        for n in [0usize, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let text = "a".repeat(n);
            let f = Frame::new(&text);
            assert_eq!(f.as_str(), text, "{n}");
            assert_eq!(f.len(), n);
            let wire = f.wire();
            assert_eq!(wire[0], 0x81);
            let (len, head) = match wire[1] {
                126 => (u16::from_be_bytes([wire[2], wire[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(wire[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                l => (l as usize, 2),
            };
            assert_eq!((len, wire.len()), (n, n + head), "{n}");
            assert!(wire[1] & 0x80 == 0, "server frames are unmasked");
        }
    }
}
