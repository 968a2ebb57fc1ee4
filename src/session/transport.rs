//! The transport boundary: frames in, frames out, a close with a code. The session core
//! and the protocols see only [`FrameSource`] and [`FrameSink`]; WebSocket implements them
//! here, and an HTTP streaming transport implements the same pair.

use std::future::Future;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};

use crate::frame::Frame;

/// What the client sent.
pub enum Inbound {
    /// A text message.
    Text(Utf8Bytes),
    /// A binary message (neither protocol has any).
    Binary,
    /// A transport-level control message (ping, pong): activity, nothing to handle.
    Control,
    /// The client left: closed, failed, or broke the transport's rules (then the close it
    /// earns, as `(code, reason)`).
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

/// Frames to the client. `feed` may buffer; `flush` writes what is buffered.
pub trait FrameSink: Send + 'static {
    /// Queues a text frame.
    fn feed(&mut self, frame: Frame) -> impl Future<Output = Result<(), Gone>> + Send;
    /// Queues a transport-level ping (the bus heartbeat).
    fn ping(&mut self) -> impl Future<Output = Result<(), Gone>> + Send;
    /// Writes everything queued.
    fn flush(&mut self) -> impl Future<Output = Result<(), Gone>> + Send;
    /// Sends a close with `code` after what is queued, waiting at most `wait`.
    fn close(&mut self, code: u16, reason: &str, wait: Duration)
        -> impl Future<Output = ()> + Send;
}

/// A connection that splits into its two directions.
pub trait Transport {
    /// The writing half.
    type Sink: FrameSink;
    /// The reading half.
    type Source: FrameSource;
    /// Splits the connection.
    fn split(self) -> (Self::Sink, Self::Source);
}

/// The writing half of a WebSocket.
pub struct WsSink(SplitSink<WebSocket, Message>);
/// The reading half of a WebSocket.
pub struct WsSource(SplitStream<WebSocket>);

impl Transport for WebSocket {
    type Sink = WsSink;
    type Source = WsSource;
    fn split(self) -> (WsSink, WsSource) {
        let (sink, stream) = StreamExt::split(self);
        (WsSink(sink), WsSource(stream))
    }
}

impl FrameSource for WsSource {
    async fn next(&mut self) -> Inbound {
        match self.0.next().await {
            Some(Ok(Message::Text(t))) => Inbound::Text(t),
            Some(Ok(Message::Binary(_))) => Inbound::Binary,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Inbound::Control,
            Some(Ok(Message::Close(_))) | None => Inbound::End(None),
            Some(Err(e)) => Inbound::End(violation_close(e)),
        }
    }
}

impl FrameSink for WsSink {
    async fn feed(&mut self, frame: Frame) -> Result<(), Gone> {
        self.0.feed(Message::Text(frame)).await.map_err(|_| Gone)
    }

    async fn ping(&mut self) -> Result<(), Gone> {
        self.0
            .feed(Message::Ping(Default::default()))
            .await
            .map_err(|_| Gone)
    }

    async fn flush(&mut self) -> Result<(), Gone> {
        self.0.flush().await.map_err(|_| Gone)
    }

    /// After the client closed first, the close cannot be sent again: flushing then
    /// writes the echo of the client's close that the codec queued when it read it.
    async fn close(&mut self, code: u16, reason: &str, wait: Duration) {
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: reason.to_owned().into(),
        }));
        let close = async {
            if self.0.send(frame).await.is_err() {
                let _ = self.0.flush().await;
            }
        };
        let _ = tokio::time::timeout(wait, close).await;
    }
}

/// The close a client's protocol violation earns (RFC 6455, 7.4.1): 1002 for framing
/// errors, 1007 for a text message that is not UTF-8, 1009 for a message over the size
/// limit. `None` when the socket itself failed (no close frame can reach the client).
fn violation_close(e: axum::Error) -> Option<(u16, &'static str)> {
    use tokio_tungstenite::tungstenite::error::{CapacityError, Error, ProtocolError};
    let inner = e.into_inner();
    match inner.downcast_ref::<Error>()? {
        Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        // A 64-bit length with its top bit set is a framing error (RFC 6455, 5.2), not size.
        Error::Capacity(CapacityError::MessageTooLong { size, .. }) if *size as u64 >= 1 << 63 => {
            Some((1002, "Protocol error"))
        }
        Error::Protocol(_) => Some((1002, "Protocol error")),
        Error::Utf8(_) => Some((1007, "Invalid UTF-8 in a text message")),
        Error::Capacity(_) => Some((1009, "Message too big")),
        _ => None,
    }
}
