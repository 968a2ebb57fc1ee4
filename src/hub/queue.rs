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
//! ([`Queue::lend`]): the socket has one writer at a time, so the queue says who that is.
//! While the consumer waits for items, nothing is in flight on the socket and the front may
//! be lent (and what was not written given back, in front); while it is busy between a take
//! and its next poll, a push wakes nobody and it finds the item itself.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
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

/// Who may write to the socket now.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// The consumer waits for items: nothing of this queue is in flight.
    Idle,
    /// The consumer took items and has not polled since: it is writing them.
    Consumer,
    /// [`Queue::lend`] gave the front to a direct write.
    Lent,
}

/// What a push asks of its caller.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Nothing: the consumer is busy, or already has items to find.
    Queued,
    /// The item is the first for an idle consumer: the caller, holding no lock, writes it
    /// through ([`Queue::lend`]) or wakes the consumer ([`Queue::wake`]).
    Deferred,
}

pub(crate) struct Queue<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    /// Woken when items are taken or the queue closes (producers waiting for room).
    room: Notify,
}

struct State<T> {
    /// The oldest item, when there is one.
    first: Option<T>,
    /// The items after it.
    items: VecDeque<T>,
    /// The consumer, waiting for the first item.
    waker: Option<Waker>,
    closed: bool,
    owner: Owner,
    /// The socket, for writes through; dropped when the queue closes or its consumer ends.
    direct: Option<Arc<dyn Direct>>,
}

impl<T> State<T> {
    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.items.len()
    }

    /// Moves the first item and those after it that `take` accepts, at most `max` in all,
    /// into `out` (the first one always: callers check it); gives back a drained buffer.
    fn move_front(&mut self, out: &mut Vec<T>, max: usize, take: impl Fn(&T) -> bool) -> usize {
        let before = out.len();
        out.extend(self.first.take());
        while out.len() - before < max && self.items.front().is_some_and(&take) {
            out.extend(self.items.pop_front());
        }
        self.first = self.items.pop_front();
        if self.items.is_empty() && self.items.capacity() > 0 {
            self.items = VecDeque::new();
        }
        out.len() - before
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
                owner: Owner::Idle,
                direct: None,
            }),
            capacity: capacity.max(1),
            room: Notify::new(),
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
            return Ok(if s.owner == Owner::Idle {
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

    /// Lets the socket be written from here: [`Self::lend`] gives it out.
    pub fn attach(&self, direct: Arc<dyn Direct>) {
        self.lock().direct = Some(direct);
    }

    /// Drops the socket (its consumer ended), so that the queue does not keep it open.
    pub fn detach(&self) {
        let direct = self.lock().direct.take();
        drop(direct);
    }

    /// When the consumer is idle and the queue has a socket: moves the leading items that
    /// `lendable` accepts (at most `max`) into `out` and returns the socket; the caller writes
    /// them and must then [`Self::give_back`] what it did not write. Otherwise wakes the
    /// consumer if it has items to find, and returns `None`.
    pub fn lend(
        &self,
        out: &mut Vec<T>,
        max: usize,
        lendable: impl Fn(&T) -> bool,
    ) -> Option<Arc<dyn Direct>> {
        let mut s = self.lock();
        if s.closed || s.owner != Owner::Idle || s.first.is_none() {
            return None;
        }
        let direct = match (&s.direct, &s.first) {
            (Some(d), Some(first)) if lendable(first) => d.clone(),
            _ => {
                wake_unlocked(s);
                return None;
            }
        };
        s.move_front(out, max, lendable);
        s.owner = Owner::Lent;
        drop(s);
        self.room.notify_waiters();
        Some(direct)
    }

    /// Ends a [`Self::lend`]: `rest` (what was not written, in order) goes back in front, and
    /// the consumer is woken if anything is queued. On a queue closed meanwhile only the
    /// first item is kept (it may be a frame's tail: [`Self::settle`] hands it to the closing
    /// consumer, which writes it before its close).
    pub fn give_back(&self, rest: impl DoubleEndedIterator<Item = T>) {
        let mut s = self.lock();
        s.owner = Owner::Idle;
        if s.closed {
            let mut rest = rest;
            s.first = rest.next();
        } else {
            for item in rest.rev() {
                if let Some(first) = s.first.replace(item) {
                    s.items.push_front(first);
                }
            }
        }
        if s.first.is_some() || s.closed {
            wake_unlocked(s);
        }
    }

    /// For a consumer that closed the queue: waits until no lend is in progress, then takes
    /// the item the lend gave back, if any.
    pub async fn settle(&self) -> Option<T> {
        std::future::poll_fn(|cx| {
            let mut s = self.lock();
            if s.owner == Owner::Lent {
                s.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Poll::Ready(s.first.take())
        })
        .await
    }

    /// Queues `item`, waiting for room. `Err` when the queue is closed.
    pub async fn push_waiting(&self, mut item: T) -> Result<(), T> {
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
        if s.first.is_none() || s.owner == Owner::Lent {
            // Nothing to take, or a write through holds the front (it wakes us after).
            if s.owner == Owner::Consumer {
                s.owner = Owner::Idle;
            }
            match &s.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => s.waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        s.owner = Owner::Consumer;
        let n = s.move_front(out, max, |_| true);
        drop(s);
        self.room.notify_waiters();
        Poll::Ready(n)
    }

    /// Waits for items and moves up to `max` of them into `out`; 0 once closed.
    pub async fn take(&self, out: &mut Vec<T>, max: usize) -> usize {
        std::future::poll_fn(|cx| self.poll_take(cx, out, max)).await
    }

    /// Closes the queue: pushes are refused, what is queued is dropped.
    pub fn close(&self) {
        let items = {
            let mut s = self.lock();
            s.closed = true;
            s.waker = None;
            (
                s.first.take(),
                std::mem::take(&mut s.items),
                s.direct.take(),
            )
        };
        drop(items);
        self.room.notify_waiters();
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
        q.close();
        assert_eq!(q.try_push(1), Err((Refused::Closed, 1)));
        assert_eq!(q.poll_take(&mut cx, &mut out, 64), Poll::Ready(0));
    }

    struct NoSocket;
    impl Direct for NoSocket {
        fn try_write_vectored(&self, _: &[IoSlice<'_>]) -> io::Result<usize> {
            unreachable!("the queue never writes itself")
        }
    }

    #[test]
    fn the_front_is_lent_only_while_the_consumer_waits_and_its_rest_goes_first() {
        let q = Queue::new(10);
        q.attach(Arc::new(NoSocket));
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        assert!(q.poll_take(&mut cx, &mut out, 64).is_pending(), "waiting");
        assert_eq!(q.push_deferred(1), Ok(Pushed::Deferred));
        assert_eq!(q.push_deferred(2), Ok(Pushed::Queued));
        let mut lent = Vec::new();
        assert!(q.lend(&mut lent, 64, |_| true).is_some());
        assert_eq!(lent, [1, 2]);
        // While lent, a push asks nothing and the consumer cannot take.
        assert_eq!(q.push_deferred(3), Ok(Pushed::Queued));
        assert!(q.poll_take(&mut cx, &mut out, 64).is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "nobody woken yet");
        // 1 was written, 2 was not: it goes back in front of 3, and the consumer is woken.
        lent.remove(0);
        q.give_back(lent.drain(..));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(q.poll_take(&mut cx, &mut out, 64), Poll::Ready(2));
        assert_eq!(out, [2, 3]);
        // The consumer is busy writing them: a push wakes nobody and nothing is lent.
        assert_eq!(q.push_deferred(4), Ok(Pushed::Queued));
        assert!(q.lend(&mut lent, 64, |_| true).is_none());
        assert!(lent.is_empty());
        // Positive control: once it waits again, a first push is the caller's to write.
        assert_eq!(q.poll_take(&mut cx, &mut out, 64), Poll::Ready(1));
        assert!(q.poll_take(&mut cx, &mut out, 64).is_pending());
        assert_eq!(q.push_deferred(5), Ok(Pushed::Deferred));
        // A front that cannot be lent wakes the consumer instead.
        assert!(q.lend(&mut lent, 64, |i| *i != 5).is_none());
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        // No socket, no lending; closed, no socket kept.
        q.close();
        assert!(q.lock().direct.is_none());
    }

    #[tokio::test]
    async fn a_close_during_a_lend_waits_for_it_and_keeps_what_was_begun() {
        let q = Arc::new(Queue::new(10));
        q.attach(Arc::new(NoSocket));
        q.try_push(1).unwrap();
        q.try_push(2).unwrap();
        let mut lent = Vec::new();
        assert!(q.lend(&mut lent, 64, |_| true).is_some());
        q.close();
        let settle = tokio::spawn({
            let q = q.clone();
            async move { q.settle().await }
        });
        tokio::task::yield_now().await;
        assert!(!settle.is_finished(), "the lend is still writing");
        q.give_back(lent.drain(..));
        let kept = tokio::time::timeout(std::time::Duration::from_secs(5), settle)
            .await
            .expect("settled once given back")
            .unwrap();
        assert_eq!(
            kept,
            Some(1),
            "the front (a frame's tail) is kept, the rest dropped"
        );
        // Positive control: with no lend in progress, a closed queue settles at once, empty.
        assert_eq!(q.settle().await, None);
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
    }
}
