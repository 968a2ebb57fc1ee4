//! The bounded queue under an [`Outbox`](super::Outbox): many producers (the hub's fan-out,
//! the session), one consumer (the connection's writer).
//!
//! Two properties the fan-out relies on, which a general channel does not give: a push into
//! a queue that already holds items wakes nobody (the writer was woken by the first item and
//! takes the rest in the same batch), and an idle queue holds no buffer at all (tokio's
//! bounded channel keeps a block of 32 slots per connection from its creation on). The
//! first item waits in a slot of its own, so the common case (one frame per wake-up)
//! allocates nothing; a burst borrows a buffer and gives it back once drained.

use std::collections::VecDeque;
use std::sync::Mutex;
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
}

impl<T> State<T> {
    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.items.len()
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
        let mut s = self.lock();
        if s.closed {
            return Err((Refused::Closed, item));
        }
        let waker = if s.first.is_none() {
            s.first = Some(item);
            s.waker.take()
        } else if s.len() >= self.capacity {
            return Err((Refused::Full, item));
        } else {
            s.items.push_back(item);
            None
        };
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
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
        let Some(first) = s.first.take() else {
            match &s.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => s.waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        };
        out.push(first);
        let n = s.items.len().min(max.saturating_sub(1));
        out.extend(s.items.drain(..n));
        s.first = s.items.pop_front();
        if s.items.is_empty() && s.items.capacity() > 0 {
            s.items = VecDeque::new();
        }
        let n = n + 1;
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
            (s.first.take(), std::mem::take(&mut s.items))
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
