//! Single-node broker: delivery straight into the local hub.

use async_trait::async_trait;

use super::{Broker, BrokerError};
use crate::event::Event;
use crate::hub::Hub;

/// Delivers into this node's hub. Publishing is synchronous under the hood, so the order
/// of `publish` calls is the delivery order.
pub struct MemoryBroker {
    hub: Hub,
}

impl MemoryBroker {
    /// A broker delivering into `hub`.
    pub fn new(hub: Hub) -> Self {
        Self { hub }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, event: Event) -> Result<(), BrokerError> {
        self.hub.deliver(&event);
        Ok(())
    }
}
