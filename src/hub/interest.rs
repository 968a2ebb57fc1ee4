//! Which topics this node must hear from the rest of the cluster. The hub knows when a
//! channel, a user or a user's watchers gain their first local member and lose their last,
//! and tells an [`Interest`] (on a cluster: the broker's routes, which subscribe to that
//! topic's pub/sub channel while there is interest). A node without one hears everything
//! it publishes itself, so there is nothing to route.

use std::future::Future;
use std::pin::Pin;

use crate::ids::{AppId, ChannelName, UserId};

/// What a node can have local interest in; one pub/sub channel each on a cluster.
#[derive(Clone, Copy, Debug)]
pub enum Topic<'a> {
    /// A channel's (or room's) subscribers.
    Channel(&'a AppId, &'a ChannelName),
    /// A user's connections.
    User(&'a AppId, &'a UserId),
    /// The connections watching a user.
    Watchers(&'a AppId, &'a UserId),
}

/// Told of interest as it changes.
pub trait Interest: Send + Sync {
    /// `topic` gained its first local member (`wanted`) or lost its last. Called under the
    /// hub's shard lock, which orders the calls for one topic: must not block.
    fn set(&self, topic: Topic<'_>, wanted: bool);

    /// Resolves once every topic wanted before the call is heard: an event published to it
    /// from then on reaches this node. Sessions await it before they answer a subscription
    /// (or count a user as connected), so nothing published after the answer is missed.
    fn settled(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}
