//! One task pair per WebSocket: the reader loop (in the upgrade task) and a writer task fed
//! by the connection's bounded [`Outbox`](crate::hub::Outbox).

pub mod bus;
pub mod pusher;

use std::sync::Arc;

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use tokio::sync::mpsc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Streams;
use crate::config::{BusConfig, OfflineConfig, ServerConfig};
use crate::contacts::Contacts;
use crate::frame::{CloseReason, Frame};
use crate::hub::Out;
use crate::hub::{Hub, Outbox};
use crate::offline::Inbox;
use crate::presence::PresenceStore;
use crate::publish::Publisher;
use crate::push::Push;
use crate::status::UserStatus;
use crate::webhooks::Webhooks;

/// What sessions use: the handles of the node's components.
pub struct Deps {
    /// `[server]`: outbox, heartbeat, limits.
    pub server: ServerConfig,
    /// `[bus]`: per-user and per-connection limits, throttles.
    pub bus: BusConfig,
    /// `[offline]`: whether queues are drained.
    pub offline: OfflineConfig,
    /// This node's number (the first half of its socket ids).
    pub node: u32,
    /// This node's connections, channels, users and watchers.
    pub hub: Hub,
    /// Where client events, typing, presence and member changes are published.
    pub publisher: Publisher,
    /// History, stream heads and cache channels.
    pub streams: Arc<dyn Streams>,
    /// Presence-channel membership.
    pub presence: Arc<dyn PresenceStore>,
    /// User status and its announcements.
    pub status: UserStatus,
    /// Who may see whose presence.
    pub contacts: Arc<Contacts>,
    /// Webhook events, reported without waiting.
    pub webhooks: Webhooks,
    /// Offline queues: drained and acknowledged by sessions.
    pub inbox: Arc<dyn Inbox>,
    /// Push registrations made over the bus.
    pub push: Push,
    /// Cancelled on shutdown; every connection's token is a child of it.
    pub shutdown: CancellationToken,
    /// Tracks every connection, so shutdown can wait for them.
    pub tracker: TaskTracker,
}

/// Frames written per flush: queued frames are coalesced into one socket write.
const MAX_BATCH: usize = 64;
/// How long a close frame may take to go out before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the close frame of a slow consumer waits for the client to read again: it goes
/// after what the socket already holds, so the client sees it (4100: back off) once it
/// catches up, instead of a bare TCP close.
const SLOW_CLOSE_WAIT: Duration = Duration::from_secs(30);

/// The close a client's protocol violation earns (RFC 6455, 7.4.1): 1002 for framing
/// errors, 1007 for a text message that is not UTF-8, 1009 for a message over the size
/// limit. `None` when the socket itself failed (no close frame can reach the client).
pub(crate) fn violation_close(e: axum::Error) -> Option<(u16, &'static str)> {
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

/// Sends a close frame, waiting at most `wait`. After the client closed first, the close
/// cannot be sent again: flushing then writes the echo of the client's close that the
/// codec queued when it read it.
async fn send_close(
    sink: &mut SplitSink<WebSocket, Message>,
    code: u16,
    reason: &str,
    wait: Duration,
) {
    let close = async {
        if sink.send(close_message(code, reason)).await.is_err() {
            let _ = sink.flush().await;
        }
    };
    let _ = tokio::time::timeout(wait, close).await;
}

/// Queues `frames` paced by the outbox (never overflowing it) and waits until they were
/// written to the socket. `false` when the connection ended first.
pub(crate) async fn send_page(outbox: &Outbox, frames: Vec<Frame>) -> bool {
    for f in frames {
        if !outbox.send_paced(Out::Frame(f)).await {
            return false;
        }
    }
    outbox.written().await
}

fn close_message(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.to_owned().into(),
    }))
}

/// Writes queued frames until the queue ends, a close is queued, the socket fails or the
/// connection's token is cancelled (then a close with the kill reason's code is sent).
/// Cancels the token on exit, so the reader stops too.
pub(crate) async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Out>,
    outbox: Outbox,
    close_code: fn(CloseReason) -> (u16, &'static str),
) {
    let token = outbox.token().clone();
    let mut batch: Vec<Out> = Vec::new();
    loop {
        tokio::select! {
            biased;
            _ = token.cancelled() => {
                // What is still queued is dropped; the close follows what the socket took.
                rx.close();
                let reason = outbox.close_reason().unwrap_or(CloseReason::Shutdown);
                let wait = if reason == CloseReason::SlowConsumer { SLOW_CLOSE_WAIT } else { CLOSE_TIMEOUT };
                let (code, text) = close_code(reason);
                send_close(&mut sink, code, text, wait).await;
                break;
            }
            n = rx.recv_many(&mut batch, MAX_BATCH) => {
                if n == 0 {
                    break;
                }
                for out in &batch {
                    if let Out::Frame(f) = out {
                        outbox.taken(f.len());
                    }
                }
                let done = tokio::select! {
                    biased;
                    // A stuck client must not keep the writer alive past a kill.
                    _ = token.cancelled() => continue,
                    done = write_batch(&mut sink, &mut batch) => done,
                };
                if done {
                    break;
                }
            }
        }
    }
    token.cancel();
}

/// Writes a batch with one flush. Returns `true` when the connection is finished.
async fn write_batch(sink: &mut SplitSink<WebSocket, Message>, batch: &mut Vec<Out>) -> bool {
    for out in batch.drain(..) {
        match out {
            Out::Frame(f) => {
                if sink.feed(Message::Text(f)).await.is_err() {
                    return true;
                }
            }
            Out::Ping => {
                if sink.feed(Message::Ping(Default::default())).await.is_err() {
                    return true;
                }
            }
            Out::Written(done) => {
                if sink.flush().await.is_err() {
                    return true;
                }
                let _ = done.send(());
            }
            Out::Close(code, reason) => {
                send_close(sink, code, reason, CLOSE_TIMEOUT).await;
                return true;
            }
        }
    }
    sink.flush().await.is_err()
}
