//! Bytes queued for clients, bounded per connection and per node.
//!
//! `server.outbox_capacity` bounds frames, but frames differ in size: 1000 frames of 10 KB
//! on each of 10k slow connections would be 100 GB. Each connection therefore also has a
//! byte budget (`server.outbox_max_bytes`), and the node one for all its queues together
//! (`server.outbox_total_bytes`). When the node's budget is spent, a connection that holds
//! more than its fair share (the node budget divided by the connections) is closed as a
//! slow consumer when it is given more: the slowest readers hold the most, so they go
//! first, while connections that keep up hold little and are never touched.
//!
//! A frame shared by many recipients is counted once per recipient: the count is what
//! each queue pins, an upper bound of the memory.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::metrics;

/// The node's byte budget for queued frames; shared by every [`Outbox`](super::Outbox).
#[derive(Debug)]
pub struct QueueBudget {
    per_connection: usize,
    node: usize,
    used: AtomicUsize,
    queues: AtomicUsize,
}

/// Why a frame was refused by the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OverBudget {
    /// The connection's own budget.
    Connection,
    /// The node's, and this connection holds more than its share.
    Node,
}

impl QueueBudget {
    /// A budget of `per_connection` bytes per queue and `node` bytes in all (0 = no bound).
    pub fn new(per_connection: usize, node: usize) -> Self {
        Self {
            per_connection: if per_connection == 0 {
                usize::MAX
            } else {
                per_connection
            },
            node: if node == 0 { usize::MAX } else { node },
            used: AtomicUsize::new(0),
            queues: AtomicUsize::new(0),
        }
    }

    /// No bounds (tests of the queue itself).
    pub fn unlimited() -> Self {
        Self::new(0, 0)
    }

    /// Bytes queued on the node now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub(super) fn open_queue(&self) {
        self.queues.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn close_queue(&self, left: usize) {
        self.queues.fetch_sub(1, Ordering::Relaxed);
        self.release(left);
    }

    /// Charges `len` bytes to a queue that held `mine` before; refuses (charging nothing)
    /// when a bound is crossed.
    pub(super) fn charge(&self, mine: usize, len: usize) -> Result<(), OverBudget> {
        if mine + len > self.per_connection {
            return Err(OverBudget::Connection);
        }
        let total = self.used.fetch_add(len, Ordering::AcqRel) + len;
        if total > self.node {
            let share = self.node / self.queues.load(Ordering::Relaxed).max(1);
            if mine + len > share {
                self.release(len);
                return Err(OverBudget::Node);
            }
        }
        Ok(())
    }

    /// Charges without a bound: frames the session sends itself, paced and bounded by page.
    pub(super) fn charge_unchecked(&self, len: usize) {
        self.used.fetch_add(len, Ordering::AcqRel);
    }

    pub(super) fn release(&self, len: usize) {
        if len > 0 {
            self.used.fetch_sub(len, Ordering::AcqRel);
        }
    }
}

impl OverBudget {
    pub(super) fn count(self) {
        metrics::outbox_over_budget(match self {
            Self::Connection => "connection",
            Self::Node => "node",
        });
    }
}
