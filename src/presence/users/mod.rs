//! The user-status store: per user, connection counts (over every node) and the declared
//! status, with the throttle that coalesces announcements. It decides atomically what a
//! change makes watchers see; `status::UserStatus` makes the announcements.

mod memory;
mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use self::redis::RedisStatus;
pub use memory::MemoryStatus;

use crate::event::Status;
use crate::ids::{AppId, UserId};
use crate::presence::PresenceError;

/// What changed about a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A connection opened. A bus session is refused (see [`Update::refused`]) when the user
    /// already has `limit` bus sessions (0 = no limit).
    Connected {
        /// A bus session (can go idle; counts against the limit) or a Pusher connection.
        bus: bool,
        /// Most bus sessions per user.
        limit: usize,
    },
    /// A connection closed.
    Disconnected {
        /// It was a bus session.
        bus: bool,
        /// It was idle when it closed.
        was_idle: bool,
    },
    /// A bus session went idle (`true`) or became active again.
    Idle(bool),
    /// The user declared a status.
    Declared(Status, Option<Arc<str>>),
    /// A throttled announcement is due: re-evaluate.
    Retry,
}

/// What a change requires the caller to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Update {
    /// Announce this to the user's watchers: (status, previous, activity).
    pub announce: Option<(Status, Status, Option<Arc<str>>)>,
    /// Re-evaluate with [`Change::Retry`] after this long (a throttled change is pending and
    /// this caller owns the timer).
    pub retry_in: Option<Duration>,
    /// The connection was refused: the user has the most bus sessions allowed.
    pub refused: bool,
}

/// Per-user status state, memory or shared.
#[async_trait]
pub trait StatusStore: Send + Sync + 'static {
    /// Applies `change` for the connection's node and reports what to announce. Atomic per
    /// user: concurrent changes anywhere in the cluster see each other.
    async fn apply(
        &self,
        app: &AppId,
        user: &UserId,
        change: &Change,
        throttle: Duration,
    ) -> Result<Update, PresenceError>;

    /// What watchers currently see.
    async fn current(
        &self,
        app: &AppId,
        user: &UserId,
    ) -> Result<(Status, Option<Arc<str>>), PresenceError>;
}

/// The state of one user, as both stores keep it: connection counts summed over nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Connections (both protocols).
    pub connections: u64,
    /// Bus sessions.
    pub bus: u64,
    /// Idle bus sessions.
    pub idle: u64,
}

/// The status watchers should see.
pub fn effective(c: &Counts, declared: Status) -> Status {
    if c.connections == 0 {
        Status::Offline
    } else if declared == Status::Online && c.bus > 0 && c.idle >= c.bus {
        Status::Away
    } else {
        declared
    }
}
