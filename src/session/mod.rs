//! One task pair per WebSocket: the reader loop (in the upgrade task) and a writer task fed
//! by the connection's bounded [`Outbox`](crate::hub::Outbox).

pub mod bus;
pub mod pusher;

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use tokio::sync::mpsc;

use crate::hub::Outbox;
use crate::protocol::{CloseReason, Frame, Out};

/// Frames written per flush: queued frames are coalesced into one socket write.
const MAX_BATCH: usize = 64;
/// How long a close frame may take to go out before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

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

fn close_message(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
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
                let (code, reason) = close_code(outbox.close_reason().unwrap_or(CloseReason::Shutdown));
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(close_message(code, reason))).await;
                break;
            }
            n = rx.recv_many(&mut batch, MAX_BATCH) => {
                if n == 0 {
                    break;
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
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(close_message(code, reason)))
                    .await;
                return true;
            }
        }
    }
    sink.flush().await.is_err()
}
