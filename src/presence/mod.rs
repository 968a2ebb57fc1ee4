//! Presence: which users are members of which presence channel, and how many connections
//! subscribe to each channel. Membership is keyed by user
//! id, not socket: a user's first connection joins, their last one leaves. And, in
//! [`users`], which users are connected at all, with their declared status.

mod memory;
mod redis;
pub mod users;

use std::sync::Arc;

use async_trait::async_trait;

pub use self::redis::RedisPresence;
pub use memory::MemoryPresence;

use crate::ids::{AppId, ChannelName, SocketId, UserId};

/// The announcement field of a channel's occupancy (`"1"` once `channel_occupied` was sent).
const OCCUPIED: &str = "occupied";

/// A presence member as the channel sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// User id (always a string, whatever type the app sent).
    pub user_id: UserId,
    /// `user_info` as JSON text; `null` when absent. The first connection's value stays until
    /// the user's last connection leaves.
    pub user_info: Arc<str>,
}

/// The transition a join caused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// The user's first connection in the channel: announce `member_added`.
    First,
    /// The user was already present through another connection: announce nothing.
    Again,
}

/// The transition a leave caused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Left {
    /// The user's last connection left: announce `member_removed`.
    Last(UserId),
    /// The user is still present through another connection.
    StillPresent,
}

/// Why a presence operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PresenceError {
    /// The channel has its maximum number of distinct users.
    #[error("presence channel is full")]
    Full,
    /// The backing store could not be reached.
    #[error("presence store unavailable: {0}")]
    Unavailable(String),
}

/// Membership of presence channels. Each call reports the transition it caused, atomically,
/// so exactly one caller announces each `member_added` / `member_removed`.
#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Adds connection `socket` as `member`. A new user is refused with
    /// [`PresenceError::Full`] when the channel has `max_members` users.
    async fn join(
        &self,
        app: &AppId,
        ch: &ChannelName,
        socket: SocketId,
        member: Member,
        max_members: usize,
    ) -> Result<Joined, PresenceError>;

    /// Removes connection `socket`; `Ok(None)` if it was not a member.
    async fn leave(
        &self,
        app: &AppId,
        ch: &ChannelName,
        socket: SocketId,
    ) -> Result<Option<Left>, PresenceError>;

    /// One entry per user.
    async fn members(&self, app: &AppId, ch: &ChannelName) -> Result<Vec<Member>, PresenceError>;

    /// Subscriber counts of the app's occupied channels across the cluster (`only`: just that
    /// channel, if occupied). Other nodes' counts may lag by one sync interval.
    async fn occupancy(
        &self,
        app: &AppId,
        only: Option<&ChannelName>,
    ) -> Result<Vec<(ChannelName, usize)>, PresenceError>;

    /// This node now has subscribers of `ch` (its first). Records it and reports whether
    /// the channel just became occupied cluster-wide, atomically with every node's calls,
    /// so exactly one node announces `channel_occupied` for each transition however short
    /// the visit.
    async fn hold(&self, app: &AppId, ch: &ChannelName) -> Result<bool, PresenceError>;

    /// This node has no subscriber of `ch` any more (its last left).
    async fn release(&self, app: &AppId, ch: &ChannelName) -> Result<(), PresenceError>;

    /// Whether `ch` is now vacated: no node (whose lease is alive) holds it and the last
    /// announcement was `channel_occupied`; if so it is recorded, once cluster-wide.
    async fn vacated(&self, app: &AppId, ch: &ChannelName) -> Result<bool, PresenceError>;

    /// Records `value` as the last announced `field` of a channel (webhook state such as
    /// occupancy or subscription count; absent = `"0"`) and reports whether it changed.
    /// Atomic cluster-wide, so each transition is announced by one node only.
    async fn announce(
        &self,
        app: &AppId,
        ch: &ChannelName,
        field: &'static str,
        value: &str,
    ) -> Result<bool, PresenceError>;
}
