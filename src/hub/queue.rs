//! The bounded queue under an [`Outbox`](super::Outbox): many producers (the hub's fan-out,
//! the session), one consumer (the connection's writer).
//!
//! Two properties the fan-out relies on, which a general channel does not give: a push into
//! a queue that already holds items wakes nobody (the writer was woken by the first item and
//! takes the rest in the same batch), and an idle queue holds no buffer at all (tokio's
//! bounded channel keeps a block of 32 slots per connection from its creation on). The
//! first item waits in a slot of its own, so the common case (one frame per wake-up)
//! allocates nothing; a burst borrows a buffer and gives it back once drained.
//!
//! A fan-out may also write a connection's frames itself instead of waking its writer
//! ([`Queue::write_idle`]): the socket has one writer at a time, so the queue says who that
//! is. While the consumer waits for items, nothing is in flight on the socket and the front
//! may be written under the queue's lock (what was not written stays in front); while it is
//! busy between a take and its next poll, a push wakes nobody and it finds the item itself.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

/// Why an item was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The queue holds its capacity.
    Full,
    /// The consumer closed the queue.
    Closed,
}

/// A socket that can take a vectored write without waiting (never blocking: `WouldBlock`
/// when it has no room), from any thread, while its own writer is idle.
pub trait Direct: Send + Sync {
    /// Writes what the socket takes of `bufs` now.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

/// What a write through did with the front (see [`Queue::write_idle`]).
pub struct Wrote<T> {
    /// Leading items written whole: they leave the queue.
    pub whole: usize,
    /// What is left of the next item when it was begun: it replaces that item in front.
    pub tail: Option<T>,
}

/// What a push asks of its caller.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Nothing: the consumer is busy, or already has items to find.
    Queued,
    /// The item is the first for an idle consumer: the caller, holding no lock, writes it
    /// through ([`Queue::write_idle`]) or wakes the consumer ([`Queue::wake`]).
    Deferred,
}

pub(crate) struct Queue<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    /// Woken when items are taken or the queue closes (producers waiting for room).
    room: Notify,
    /// Producers waiting for room: a take notifies `room` only when there are some (its
    /// lock and atomic would otherwise be paid on every take).
    waiting: AtomicUsize,
}

struct State<T> {
    /// The oldest item, when there is one.
    first: Option<T>,
    /// The items after it.
    items: VecDeque<T>,
    /// The consumer, waiting for the first item.
    waker: Option<Waker>,
    closed: bool,
    /// The consumer took items and has not polled since: it is writing them, and nobody else
    /// may write to the socket.
    busy: bool,
    /// The socket, for writes through; dropped when the queue closes or its consumer ends.
    direct: Option<Arc<dyn Direct>>,
}

impl<T> State<T> {
    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.items.len()
    }

    /// Moves the first `max` items (at least the first, which callers check is there) into
    /// `out`; returns how many.
    fn move_front(&mut self, out: &mut Vec<T>, max: usize) -> usize {
        out.extend(self.first.take());
        let n = self.items.len().min(max.saturating_sub(1));
        out.extend(self.items.drain(..n));
        self.refill();
        n + 1
    }

    /// After the first item left: the next one takes its slot, and a drained buffer is
    /// given back (an idle queue holds none).
    fn refill(&mut self) {
        self.first = self.items.pop_front();
        if self.items.is_empty() && self.items.capacity() > 0 {
            self.items = VecDeque::new();
        }
    }
}

/// Releases the lock, then wakes the consumer if it waits.
fn wake_unlocked<T>(mut s: std::sync::MutexGuard<'_, State<T>>) {
    let waker = s.waker.take();
    drop(s);
    if let Some(w) = waker {
        w.wake();
    }
}

impl<T> Queue<T> {
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                first: None,
                items: VecDeque::new(),
                waker: None,
                closed: false,
                busy: false,
                direct: None,
            }),
            capacity: capacity.max(1),
            room: Notify::new(),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Tells producers waiting for room that items left.
    fn made_room(&self) {
        // SeqCst pairs with `push_waiting`'s count: a producer counted after this load
        // checked the queue after our take (both under the lock), so it saw the room.
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.room.notify_waiters();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().expect("queue lock poisoned")
    }

    /// Queues `item` without waiting; wakes the consumer only if the queue was empty.
    pub fn try_push(&self, item: T) -> Result<(), (Refused, T)> {
        if self.push_deferred(item)? == Pushed::Deferred {
            self.wake();
        }
        Ok(())
    }

    /// Queues `item` without waiting and without waking anyone: [`Pushed::Deferred`] hands
    /// that to the caller, so that a fan-out wakes (or writes) only after its locks are
    /// released, once per connection however many events it queued.
    pub fn push_deferred(&self, item: T) -> Result<Pushed, (Refused, T)> {
        let mut s = self.lock();
        if s.closed {
            return Err((Refused::Closed, item));
        }
        if s.first.is_none() {
            s.first = Some(item);
            return Ok(if !s.busy {
                Pushed::Deferred
            } else {
                Pushed::Queued
            });
        }
        if s.len() >= self.capacity {
            return Err((Refused::Full, item));
        }
        s.items.push_back(item);
        Ok(Pushed::Queued)
    }

    /// Wakes the consumer if it waits (after a deferred push).
    pub fn wake(&self) {
        wake_unlocked(self.lock());
    }

    /// Lets the socket be written from here ([`Self::write_idle`]).
    pub fn attach(&self, direct: Arc<dyn Direct>) {
        self.lock().direct = Some(direct);
    }

    /// Drops the socket (its consumer ended), so that the queue does not keep it open.
    pub fn detach(&self) {
        let direct = self.lock().direct.take();
        drop(direct);
    }

    /// When the consumer is idle and the queue has a socket: `write` writes the leading items
    /// to it, under the queue's lock, and says what it wrote; that leaves the queue, and a
    /// begun item's tail takes its place in front. Then, or when the front cannot be written
    /// here, the consumer is woken if it has items to find. `None` when `write` was not
    /// called. The lock is held for one system call that never waits (the socket's
    /// `try_write`), which saves the hand-over a lend of the front would need (two more
    /// locks and a reference to the socket per write).
    pub fn write_idle<R>(
        &self,
        write: impl FnOnce(&dyn Direct, &mut dyn Iterator<Item = &T>) -> (Wrote<T>, R),
    ) -> Option<R> {
        let mut s = self.lock();
        if s.closed || s.busy || s.first.is_none() {
            return None;
        }
        let Some(direct) = s.direct.as_deref() else {
            wake_unlocked(s);
            return None;
        };
        let (wrote, r) = write(direct, &mut s.first.iter().chain(s.items.iter()));
        if wrote.whole > 0 {
            // Dropped here: a written frame is a shared reference, its release one atomic.
            s.items.drain(..wrote.whole - 1);
            s.refill();
        }
        if let Some(tail) = wrote.tail {
            s.first = Some(tail);
        }
        if s.first.is_some() {
            wake_unlocked(s);
        } else {
            drop(s);
        }
        if wrote.whole > 0 {
            self.made_room();
        }
        Some(r)
    }

    /// Queues `item`, waiting for room. `Err` when the queue is closed.
    pub async fn push_waiting(&self, mut item: T) -> Result<(), T> {
        /// Counts this producer among those waiting, until it is done (or dropped).
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            // Registered before the check, so a take in between is not missed.
            notified.as_mut().enable();
            match self.try_push(item) {
                Ok(()) => return Ok(()),
                Err((Refused::Closed, back)) => return Err(back),
                Err((Refused::Full, back)) => item = back,
            }
            notified.await;
        }
    }

    /// Free slots.
    pub fn free(&self) -> usize {
        self.capacity.saturating_sub(self.lock().len())
    }

    /// The capacity the queue was made with.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Moves up to `max` items into `out`. `Ready(0)` once the queue is closed.
    pub fn poll_take(&self, cx: &mut Context<'_>, out: &mut Vec<T>, max: usize) -> Poll<usize> {
        let mut s = self.lock();
        if s.closed {
            return Poll::Ready(0);
        }
        if s.first.is_none() {
            s.busy = false;
            match &s.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => s.waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        s.busy = true;
        let n = s.move_front(out, max);
        drop(s);
        self.made_room();
        Poll::Ready(n)
    }

    /// Waits for items and moves up to `max` of them into `out`; 0 once closed.
    pub async fn take(&self, out: &mut Vec<T>, max: usize) -> usize {
        std::future::poll_fn(|cx| self.poll_take(cx, out, max)).await
    }

    /// Closes the queue: pushes are refused, what is queued is dropped, except a front
    /// that `begun` says was partly written (a frame's tail, which the consumer must write
    /// before anything else): that is returned.
    pub fn close(&self, begun: impl Fn(&T) -> bool) -> Option<T> {
        let (kept, items) = {
            let mut s = self.lock();
            s.closed = true;
            s.waker = None;
            let first = s.first.take();
            let (kept, first) = match first {
                Some(f) if begun(&f) => (Some(f), None),
                other => (None, other),
            };
            (kept, (first, std::mem::take(&mut s.items), s.direct.take()))
        };
        drop(items);
        self.room.notify_waiters();
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn only_the_first_item_of_a_batch_wakes_the_consumer() {
        let q = Queue::new(10);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        assert!(q.poll_take(&mut cx, &mut out, 64).is_pending());
        for i in 0..5 {
            q.try_push(i).unwrap();
        }
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "one wake for five pushes"
        );
        assert_eq!(q.poll_take(&mut cx, &mut out, 64), Poll::Ready(5));
        assert_eq!(out, vec![0, 1, 2, 3, 4]);
        // Positive control: the next push into the drained queue wakes again.
        assert!(q.poll_take(&mut cx, &mut out, 64).is_pending());
        q.try_push(5).unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_full_queue_refuses_and_a_drained_one_gives_its_buffer_back() {
        let q = Queue::new(100);
        for i in 0..100 {
            q.try_push(i).unwrap();
        }
        assert_eq!(q.try_push(100), Err((Refused::Full, 100)));
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut out = Vec::new();
        assert_eq!(q.poll_take(&mut cx, &mut out, 64), Poll::Ready(64));
        assert_eq!(q.poll_take(&mut cx, &mut out, 64), Poll::Ready(36));
        assert_eq!(q.lock().items.capacity(), 0, "no buffer held while empty");
        assert!(q.lock().first.is_none());
        q.close(|_| false);
        assert_eq!(q.try_push(1), Err((Refused::Closed, 1)));
        assert_eq!(q.poll_take(&mut cx, &mut out, 64), Poll::Ready(0));
    }

    struct NoSocket;
    impl Direct for NoSocket {
        fn try_write_vectored(&self, _: &[IoSlice<'_>]) -> io::Result<usize> {
            unreachable!("the queue never writes itself")
        }
    }

    /// A write through that writes `whole` leading items and leaves `tail` of the next,
    /// recording the items it was shown.
    fn writes(
        whole: usize,
        tail: Option<i32>,
        seen: &mut Vec<i32>,
    ) -> impl FnOnce(&dyn Direct, &mut dyn Iterator<Item = &i32>) -> (Wrote<i32>, ()) + '_ {
        move |_, front| {
            seen.extend(front.copied());
            (Wrote { whole, tail }, ())
        }
    }

    #[test]
    fn the_front_is_written_only_while_the_consumer_waits_and_its_tail_goes_first() {
        let q = Queue::new(10);
        q.attach(Arc::new(NoSocket));
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        assert!(q.poll_take(&mut cx, &mut out, 64).is_pending(), "waiting");
        assert_eq!(q.push_deferred(1), Ok(Pushed::Deferred));
        assert_eq!(q.push_deferred(2), Ok(Pushed::Queued));
        assert_eq!(q.push_deferred(3), Ok(Pushed::Queued));
        // 1 was written, 2 begun: its tail (20) goes in front of 3, and the consumer is woken.
        let mut seen = Vec::new();
        assert!(q.write_idle(writes(1, Some(20), &mut seen)).is_some());
        assert_eq!(seen, [1, 2, 3], "the whole front was offered");
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(q.poll_take(&mut cx, &mut out, 64), Poll::Ready(2));
        assert_eq!(out, [20, 3]);
        // The consumer is busy writing them: a push wakes nobody and nothing is written here.
        assert_eq!(q.push_deferred(4), Ok(Pushed::Queued));
        assert!(q.write_idle(writes(1, None, &mut seen)).is_none());
        // Positive control: once it waits again, a first push is the caller's to write, and
        // a write of everything leaves the consumer asleep and the queue without a buffer.
        assert_eq!(q.poll_take(&mut cx, &mut out, 64), Poll::Ready(1));
        assert!(q.poll_take(&mut cx, &mut out, 64).is_pending());
        assert_eq!(q.push_deferred(5), Ok(Pushed::Deferred));
        assert_eq!(q.push_deferred(6), Ok(Pushed::Queued));
        seen.clear();
        assert!(q.write_idle(writes(2, None, &mut seen)).is_some());
        assert_eq!(seen, [5, 6]);
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "nobody woken for a full write"
        );
        assert!(q.lock().first.is_none() && q.lock().items.capacity() == 0);
        // A front the write could not take (nothing written) wakes the consumer instead.
        assert_eq!(q.push_deferred(7), Ok(Pushed::Deferred));
        assert!(q.write_idle(writes(0, None, &mut seen)).is_some());
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        // No socket, no writing; closed, no socket kept.
        q.detach();
        assert!(q.write_idle(writes(1, None, &mut seen)).is_none());
        q.close(|_| false);
        assert!(q.lock().direct.is_none());
    }

    #[test]
    fn a_close_keeps_a_begun_front_and_drops_the_rest() {
        let q = Queue::new(10);
        q.attach(Arc::new(NoSocket));
        for i in 1..=3 {
            q.try_push(i).unwrap();
        }
        let mut seen = Vec::new();
        q.write_idle(writes(1, Some(20), &mut seen)).unwrap();
        assert_eq!(
            q.close(|i| *i >= 10),
            Some(20),
            "the front (a frame's tail) is kept, the rest dropped"
        );
        assert_eq!(q.try_push(4), Err((Refused::Closed, 4)));
        // Positive control: a front that was not begun is dropped with the rest.
        let q = Queue::new(10);
        q.try_push(1).unwrap();
        assert_eq!(q.close(|i| *i >= 10), None);
    }

    #[tokio::test]
    async fn a_waiting_push_gets_in_once_room_is_made() {
        let q = Arc::new(Queue::new(1));
        q.try_push(0).unwrap();
        let pusher = tokio::spawn({
            let q = q.clone();
            async move { q.push_waiting(1).await }
        });
        tokio::task::yield_now().await;
        assert!(!pusher.is_finished());
        let mut out = Vec::new();
        assert_eq!(q.take(&mut out, 8).await, 1);
        tokio::time::timeout(std::time::Duration::from_secs(5), pusher)
            .await
            .expect("the push got in")
            .unwrap()
            .unwrap();
        assert_eq!(q.take(&mut out, 8).await, 1);
        assert_eq!(out, vec![0, 1]);
        assert_eq!(q.waiting.load(Ordering::SeqCst), 0, "no producer counted");

        // A write through makes room too; the take above left the consumer busy, so it
        // polls (idle) first.
        let waker = Waker::noop();
        assert!(q
            .poll_take(&mut Context::from_waker(waker), &mut out, 8)
            .is_pending());
        q.attach(Arc::new(NoSocket));
        q.try_push(2).unwrap();
        let pusher = tokio::spawn({
            let q = q.clone();
            async move { q.push_waiting(3).await }
        });
        tokio::task::yield_now().await;
        assert!(!pusher.is_finished(), "the queue is full");
        let mut seen = Vec::new();
        q.write_idle(writes(1, None, &mut seen)).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), pusher)
            .await
            .expect("the push got in after the write through")
            .unwrap()
            .unwrap();
        assert_eq!(seen, [2]);
    }
}
