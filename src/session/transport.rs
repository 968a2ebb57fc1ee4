//! The transport boundary: frames in, frames out, a close with a code. The session core
//! and the protocols see only [`FrameSource`] and [`FrameSink`]; WebSocket implements them
//! (in `ws`), and an HTTP streaming transport implements the same pair.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::frame::Frame;
use crate::hub::Direct;

/// What the client sent.
pub enum Inbound {
    /// A text message.
    Text(String),
    /// A binary message (neither protocol has any).
    Binary,
    /// A transport-level control message (a pong): activity, nothing to handle.
    Control,
    /// A transport-level ping: answered with a pong carrying `payload`.
    Ping(Bytes),
    /// The client left: closed (then the close to echo), failed (`None`), or broke the
    /// transport's rules (then the close it earns), as `(code, reason)`.
    End(Option<(u16, &'static str)>),
}

/// The client is gone: nothing more can be written.
#[derive(Debug)]
pub struct Gone;

/// Messages from the client.
pub trait FrameSource: Send + 'static {
    /// The next message; [`Inbound::End`] once the client left.
    fn next(&mut self) -> impl Future<Output = Inbound> + Send;
}

/// Frames to the client: queued without waiting, written by `flush`.
pub trait FrameSink: Send + 'static {
    /// Queues a text frame.
    fn feed(&mut self, frame: Frame);
    /// Queues a transport-level ping (the bus heartbeat).
    fn ping(&mut self);
    /// Queues the answer to the client's transport-level ping.
    fn pong(&mut self, payload: Bytes);
    /// Whether enough is queued that it should be written before more is fed.
    fn full(&self) -> bool;
    /// Writes everything queued.
    fn flush(&mut self) -> impl Future<Output = Result<(), Gone>> + Send;
    /// Sends a close with `code` after what is queued, waiting at most `wait`.
    fn close(&mut self, code: u16, reason: &str, wait: Duration)
        -> impl Future<Output = ()> + Send;
    /// Queues the tail of a frame a fan-out began writing through the socket
    /// ([`Transport::direct`]): raw bytes, written before anything fed after them.
    fn rest(&mut self, bytes: Bytes) {
        let _ = bytes;
        unreachable!("only a transport with a direct socket is given a frame's rest");
    }
}

/// A connection that splits into its two directions.
pub trait Transport {
    /// The transport's label (`ws`, `xhr`, `sse`) in the admin API.
    const NAME: &'static str;
    /// The writing half.
    type Sink: FrameSink;
    /// The reading half.
    type Source: FrameSource;
    /// The socket, when fan-outs may write whole frames to it themselves while the sink is
    /// idle (plain TCP WebSocket); its sink then takes [`FrameSink::rest`].
    fn direct(&self) -> Option<Arc<dyn Direct>> {
        None
    }
    /// Splits the connection.
    fn split(self) -> (Self::Sink, Self::Source);
}
