//! The broker orders and fans out events. Every publish in the process goes through
//! [`Broker::publish`], whatever its source, so single-node and cluster share one path.

mod memory;
mod redis;

use async_trait::async_trait;

pub use self::redis::RedisBroker;
pub use memory::MemoryBroker;

use crate::event::Event;

/// Why an event could not be published. The caller must report it (the HTTP API answers
/// an error): an accepted event is never dropped silently.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The backing transport is down.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// Orders and delivers events to every node's hub, this node included.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Hands the event to every node's hub. Events published by one caller reach each
    /// channel's subscribers in the order of the calls. Returns once the event is delivered
    /// locally (memory) or accepted by the transport (cluster).
    async fn publish(&self, event: Event) -> Result<(), BrokerError>;
}
