//! Wire formats. Every type that appears on a socket lives here and nowhere else; the rest
//! of the server speaks [`Event`](crate::event::Event) and the commands decoded here.

pub mod bus;
pub mod pusher;

/// One encoded text frame. Cloning shares the bytes: an event is encoded once per wire
/// format and the same frame is queued for every recipient.
pub type Frame = axum::extract::ws::Utf8Bytes;

/// The wire formats a connection can speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wire {
    /// Pusher Channels protocol v7.
    Pusher,
    /// The native bus protocol.
    Bus,
}

/// Encodes an event for one wire format; `None` when that wire has no frame for it.
pub fn encode(wire: Wire, event: &crate::event::Event) -> Option<Frame> {
    match wire {
        Wire::Pusher => pusher::encode_event(event),
        Wire::Bus => bus::encode_event(event),
    }
}

/// Why the server ends a connection, in protocol-neutral terms. Each codec maps it to its
/// own close code (Pusher: [`pusher::close_code`]).
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

/// What a session's writer task sends: a frame, or a close with a wire-specific code after
/// everything queued before it.
#[derive(Debug)]
pub enum Out {
    /// A text frame.
    Frame(Frame),
    /// A WebSocket-level ping (the bus's heartbeat; browsers answer it themselves).
    Ping,
    /// Close the socket with this code and reason, then stop.
    Close(u16, &'static str),
    /// Answered once everything queued before it was written to the socket (a catch-up
    /// removes events from a queue only then).
    Written(tokio::sync::oneshot::Sender<()>),
}

/// Appends `s` to `buf` as a JSON string literal.
pub(crate) fn push_json_str(buf: &mut String, s: &str) {
    // serde_json's escaping is the reference; writing into a String through it cannot fail.
    buf.push_str(&serde_json::to_string(s).expect("strings serialize"));
}
