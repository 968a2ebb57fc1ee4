//! The bounded outbound queue of one connection.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics;
use crate::protocol::{CloseReason, Frame, Out};

/// The sending half of a connection's outbound queue, shared by the hub and the session.
///
/// Pushing never waits: a full queue means the client does not read fast enough, and the
/// connection is closed as a slow consumer instead of buffering without bound.
#[derive(Clone)]
pub struct Outbox(Arc<Inner>);

struct Inner {
    tx: mpsc::Sender<Out>,
    /// Cancelled when the connection must end; the session's reader and writer watch it.
    token: CancellationToken,
    /// The first [`CloseReason`] given, as `u8` (0 = none yet).
    reason: AtomicU8,
    /// Event types the connection asked for (bus interest bits); all for Pusher.
    interests: AtomicU8,
}

impl Outbox {
    /// A queue of `capacity` items whose end is signalled through `token`.
    pub fn new(capacity: usize, token: CancellationToken) -> (Self, mpsc::Receiver<Out>) {
        let (tx, rx) = mpsc::channel(capacity);
        let inner = Inner {
            tx,
            token,
            reason: AtomicU8::new(0),
            interests: AtomicU8::new(u8::MAX),
        };
        (Self(Arc::new(inner)), rx)
    }

    /// Queues a frame. Returns `false` if it was not queued (queue full → the connection is
    /// being closed as a slow consumer; or the connection is already gone).
    pub fn push(&self, frame: Frame) -> bool {
        self.push_out(Out::Frame(frame))
    }

    /// Queues a WebSocket-level ping.
    pub fn push_ping(&self) -> bool {
        self.push_out(Out::Ping)
    }

    /// Queues a close after everything queued so far.
    pub fn push_close(&self, code: u16, reason: &'static str) {
        if !self.push_out(Out::Close(code, reason)) {
            self.0.token.cancel();
        }
    }

    fn push_out(&self, out: Out) -> bool {
        match self.0.tx.try_send(out) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.kill(CloseReason::SlowConsumer) {
                    metrics::slow_consumer_closed();
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Ends the connection now, dropping whatever is queued. The first reason wins; returns
    /// whether this call set it.
    pub fn kill(&self, reason: CloseReason) -> bool {
        let first = self
            .0
            .reason
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        self.0.token.cancel();
        first
    }

    /// Why the connection was killed, if it was.
    pub fn close_reason(&self) -> Option<CloseReason> {
        CloseReason::from_u8(self.0.reason.load(Ordering::Acquire))
    }

    /// Sets the event types the connection receives (bus interest bits).
    pub fn set_interests(&self, mask: u8) {
        self.0.interests.store(mask, Ordering::Release);
    }

    /// Whether the connection asked for events needing `bit`.
    pub fn wants(&self, bit: u8) -> bool {
        self.0.interests.load(Ordering::Acquire) & bit != 0
    }

    /// The token cancelled when the connection must end.
    pub fn token(&self) -> &CancellationToken {
        &self.0.token
    }
}
