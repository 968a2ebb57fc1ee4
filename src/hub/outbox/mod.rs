//! The bounded outbound queue of one connection.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

mod through;

pub use through::Writes;

use super::budget::QueueBudget;
use super::queue::{Direct, Pushed, Queue, Refused};
use crate::frame::{CloseReason, Frame};
use crate::metrics;

/// What a connection's writer sends: a frame, or a close with a wire-specific code after
/// everything queued before it.
#[derive(Debug)]
pub enum Out {
    /// A text frame.
    Frame(Frame),
    /// A transport-level ping (the bus's heartbeat; browsers answer it themselves).
    Ping,
    /// The answer to the client's transport-level ping, with its payload.
    Pong(bytes::Bytes),
    /// Close the connection with this code and reason, then stop.
    Close(u16, &'static str),
    /// Answered once everything queued before it was written to the socket (a catch-up
    /// removes events from a queue only then).
    Written(tokio::sync::oneshot::Sender<()>),
    /// What a write through left of a frame: raw bytes, the frame's tail, to go first.
    Rest(bytes::Bytes),
}

/// The sending half of a connection's outbound queue, shared by the hub and the session.
///
/// Pushing never waits: a full queue means the client does not read fast enough, and the
/// connection is closed as a slow consumer instead of buffering without bound.
#[derive(Clone)]
pub struct Outbox(Arc<Inner>);

struct Inner {
    queue: Queue<Out>,
    /// Cancelled when the connection must end; the session's reader and writer watch it.
    token: CancellationToken,
    /// The first [`CloseReason`] given, as `u8` (0 = none yet).
    reason: AtomicU8,
    /// Event types the connection asked for (bus interest bits); all for Pusher.
    interests: AtomicU8,
    /// While a replay is being sent, live frames wait here (with their stream and id, to
    /// drop the ones the replay already carried). `None` when not holding.
    held: Mutex<Option<Vec<Held>>>,
    holding: AtomicBool,
    /// Bytes of the frames queued or held, charged to `budget`.
    queued: AtomicUsize,
    budget: Arc<QueueBudget>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.budget.close_queue(*self.queued.get_mut());
    }
}

/// A frame held during a replay, with its (stream, id) when it has one, and the interest
/// bit it needs (checked again at release: a connection may hold before it subscribes).
type Held = (Option<(String, Arc<str>)>, Option<u8>, Frame);

/// Live frames held during a replay before the connection is closed as a slow consumer.
const MAX_HELD: usize = 1000;
/// How long a paced send waits for room (the client reading) before the connection counts
/// as a slow consumer.
const PACED_WAIT: Duration = Duration::from_secs(10);
/// Held frames moved to the queue per lock of the held list.
const RELEASE_STEP: usize = 64;

impl Outbox {
    /// A queue of `capacity` items, its bytes charged to `budget`, whose end is signalled
    /// through `token`.
    pub fn new(
        capacity: usize,
        token: CancellationToken,
        budget: Arc<QueueBudget>,
    ) -> (Self, Receiver) {
        budget.open_queue();
        let inner = Inner {
            queue: Queue::new(capacity),
            token,
            reason: AtomicU8::new(0),
            interests: AtomicU8::new(u8::MAX),
            held: Mutex::new(None),
            holding: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            budget,
        };
        let outbox = Self(Arc::new(inner));
        (outbox.clone(), Receiver(outbox))
    }

    /// Queues a frame. Returns `false` if it was not queued (queue full → the connection is
    /// being closed as a slow consumer; or the connection is already gone).
    pub fn push(&self, frame: Frame) -> bool {
        self.push_out(Out::Frame(frame))
    }

    /// Whether live frames are being held for a replay.
    pub fn is_holding(&self) -> bool {
        self.0.holding.load(Ordering::Acquire)
    }

    /// Starts holding live frames (a replay is about to be sent).
    pub fn hold(&self) {
        *self.0.held.lock().expect("outbox lock poisoned") = Some(Vec::new());
        self.0.holding.store(true, Ordering::Release);
    }

    /// Queues a live frame of `event`: held while a replay is in progress, else queued. A
    /// `low` priority event is dropped (and counted) when the queue is more than 80 % full,
    /// so that room stays for the others; a full queue closes the connection as a slow
    /// consumer, so `high` events are never dropped silently.
    /// A first item for an idle writer is listed in `writes` instead of waking it.
    pub fn push_live(
        &self,
        frame: Frame,
        event: &crate::event::Event,
        writes: &mut Writes,
    ) -> bool {
        if event.meta.priority == crate::event::Priority::Low {
            let (free, max) = (self.0.queue.free(), self.0.queue.capacity());
            if free * 5 < max {
                metrics::low_priority_dropped();
                return false;
            }
        }
        if self.is_holding() {
            let mut held = self.0.held.lock().expect("outbox lock poisoned");
            if let Some(list) = held.as_mut() {
                if list.len() >= MAX_HELD {
                    drop(held);
                    if self.kill(CloseReason::SlowConsumer) {
                        metrics::slow_consumer_closed();
                    }
                    return false;
                }
                if !self.charge(frame.len()) {
                    return false;
                }
                let key = crate::event::stream_of(event).zip(event.meta.id.clone());
                let bit = event.kind.interest();
                list.push((key, bit, frame));
                return true;
            }
        }
        self.enqueue(Out::Frame(frame), Some(writes))
    }

    /// Stops holding: queues the held frames, except those `replayed` says were already sent
    /// and those of event types the connection does not want (any more). Paced like
    /// [`Self::send_paced`]: frames that arrive meanwhile are held and follow in order.
    /// Returns `false` when the connection ended first.
    pub async fn release(&self, replayed: &(dyn Fn(&str, &str) -> bool + Sync)) -> bool {
        loop {
            let step: Vec<Held> = {
                let mut held = self.0.held.lock().expect("outbox lock poisoned");
                match held.as_mut() {
                    Some(list) if !list.is_empty() => {
                        list.drain(..list.len().min(RELEASE_STEP)).collect()
                    }
                    _ => {
                        *held = None;
                        self.0.holding.store(false, Ordering::Release);
                        return true;
                    }
                }
            };
            for (key, bit, frame) in step {
                if key.is_some_and(|(s, id)| replayed(&s, &id))
                    || bit.is_some_and(|b| !self.wants(b))
                {
                    self.taken(frame.len());
                    continue;
                }
                // Charged when it was held.
                if !self.enqueue_paced(Out::Frame(frame)).await {
                    return false;
                }
            }
        }
    }

    /// Queues `out`, waiting for room instead of overflowing: for what the session itself
    /// sends in bulk (a catch-up), which must never be what closes its own connection. A
    /// client that reads nothing for [`PACED_WAIT`] is closed as a slow consumer. Returns
    /// `false` when the connection ended (nothing was queued).
    pub async fn send_paced(&self, out: Out) -> bool {
        let len = out.charged();
        self.0.budget.charge_unchecked(len);
        self.0.queued.fetch_add(len, Ordering::AcqRel);
        if self.enqueue_paced(out).await {
            return true;
        }
        self.taken(len);
        false
    }

    /// [`Self::send_paced`] of an item already charged.
    async fn enqueue_paced(&self, out: Out) -> bool {
        let token = &self.0.token;
        let queued = tokio::select! {
            _ = token.cancelled() => return false,
            r = tokio::time::timeout(PACED_WAIT, self.0.queue.push_waiting(out)) => r,
        };
        match queued {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                if self.kill(CloseReason::SlowConsumer) {
                    metrics::slow_consumer_closed();
                }
                false
            }
        }
    }

    /// Waits until everything queued so far was written to the socket. `false` when the
    /// connection ended first (or the client stopped reading for [`PACED_WAIT`]).
    pub async fn written(&self) -> bool {
        let (done, rx) = tokio::sync::oneshot::channel();
        if !self.send_paced(Out::Written(done)).await {
            return false;
        }
        tokio::select! {
            _ = self.0.token.cancelled() => false,
            r = tokio::time::timeout(PACED_WAIT, rx) => match r {
                Ok(r) => r.is_ok(),
                Err(_) => {
                    if self.kill(CloseReason::SlowConsumer) {
                        metrics::slow_consumer_closed();
                    }
                    false
                }
            },
        }
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

    /// Queues any item (a frame is charged to the budgets), never waiting.
    pub fn push_out(&self, out: Out) -> bool {
        self.enqueue(out, None)
    }

    /// Queues a frame of a fan-out: a first item for an idle writer is listed in `writes`.
    pub fn push_deferred(&self, frame: Frame, writes: &mut Writes) -> bool {
        self.enqueue(Out::Frame(frame), Some(writes))
    }

    /// Queues `out`; a first item for an idle writer wakes it, or is listed in `writes`.
    fn enqueue(&self, out: Out, writes: Option<&mut Writes>) -> bool {
        let len = out.charged();
        if len > 0 && !self.charge(len) {
            return false;
        }
        let sent = self.0.queue.push_deferred(out);
        if sent.is_err() {
            self.taken(len);
        }
        match sent {
            Ok(Pushed::Queued) => true,
            Ok(Pushed::Deferred) => {
                match writes {
                    Some(w) => w.add(self.clone()),
                    None => self.0.queue.wake(),
                }
                true
            }
            Err((Refused::Full, _)) => {
                if self.kill(CloseReason::SlowConsumer) {
                    metrics::slow_consumer_closed();
                }
                false
            }
            Err((Refused::Closed, _)) => false,
        }
    }

    /// Lets fan-outs write this connection's frames to `socket` themselves while its writer
    /// is idle (see [`Writes`]).
    pub fn attach(&self, socket: Arc<dyn Direct>) {
        self.0.queue.attach(socket);
    }

    /// Charges a frame of `len` bytes to this queue and the node; over a budget the
    /// connection is closed as a slow consumer (and nothing is charged).
    fn charge(&self, len: usize) -> bool {
        // A killed connection takes nothing more. Its reason is an atomic load; the token's
        // own check takes a lock, once per delivery on the fan-out's hottest path.
        if self.0.reason.load(Ordering::Acquire) != 0 {
            return false;
        }
        let mine = self.0.queued.load(Ordering::Acquire);
        match self.0.budget.charge(mine, len) {
            Ok(()) => {
                self.0.queued.fetch_add(len, Ordering::AcqRel);
                true
            }
            Err(over) => {
                over.count();
                if self.kill(CloseReason::SlowConsumer) {
                    metrics::slow_consumer_closed();
                }
                false
            }
        }
    }

    /// `len` bytes left the queue (written, or dropped): the writer calls this for the
    /// frames it takes.
    pub fn taken(&self, len: usize) {
        if len == 0 {
            return;
        }
        let removed = self
            .0
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                Some(q.saturating_sub(len))
            })
            .map_or(0, |q| q.min(len));
        self.0.budget.release(removed);
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
        // Nothing queued will be written: its bytes go back to the node now.
        self.0
            .budget
            .release(self.0.queued.swap(0, Ordering::AcqRel));
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

/// The writer's end of an outbox.
pub struct Receiver(Outbox);

impl Drop for Receiver {
    /// The writer ended: nothing may write to its socket any more, and the outbox must not
    /// keep the socket open.
    fn drop(&mut self) {
        self.0 .0.queue.detach();
    }
}

impl Receiver {
    /// Waits for queued items and moves up to `max` of them into `out`; 0 once closed.
    pub async fn take(&mut self, out: &mut Vec<Out>, max: usize) -> usize {
        self.0 .0.queue.take(out, max).await
    }

    /// Stops the queue: later pushes are refused, what is queued is dropped. Returns the
    /// tail of a frame a write through began, which must go out before a close.
    pub fn close(&mut self) -> Option<Out> {
        self.0 .0.queue.close(|out| matches!(out, Out::Rest(_)))
    }

    /// The next queued item, if any (tests).
    #[cfg(test)]
    pub fn try_recv(&mut self) -> Option<Out> {
        let mut out = Vec::new();
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match self.0 .0.queue.poll_take(&mut cx, &mut out, 1) {
            std::task::Poll::Ready(1) => out.pop(),
            _ => None,
        }
    }
}

impl Out {
    /// Bytes the item is charged to the budgets for: a frame's; nothing for the rest (a
    /// begun frame's tail left the budget when it was begun).
    pub fn charged(&self) -> usize {
        match self {
            Out::Frame(f) => f.len(),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests;
