//! `[offline]`: the per-user offline queue (see `crate::offline`).

use serde::{Deserialize, Serialize};

/// Events kept for users who are not connected, and high-priority events waiting for an ack.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OfflineConfig {
    /// Keep user events for users with no connection (`false`: live delivery only).
    pub enabled: bool,
    /// Events kept per user; beyond it the oldest low-priority one is dropped first.
    pub max_events: usize,
    /// Bytes of events kept per user (same overflow rule).
    pub max_bytes: usize,
    /// Seconds an event without its own `ttl` stays queued.
    pub ttl_secs: u64,
    /// Events queued in all: on this node (embedded store), or in the whole cluster (Redis;
    /// on a Redis Cluster each shard holds its share); beyond it new ones are refused (503,
    /// counted), so a flood to many absent users cannot fill the disk or Redis.
    pub max_total_events: u64,
}

impl Default for OfflineConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_events: 1_000,
            max_bytes: 1024 * 1024,
            ttl_secs: 7 * 86_400,
            max_total_events: 1_000_000,
        }
    }
}

impl OfflineConfig {
    /// Checks the ranges; the message names the bad key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_events == 0 || self.max_bytes < 1024 {
            return Err("offline.max_events must be > 0 and offline.max_bytes >= 1024".into());
        }
        if self.ttl_secs == 0 {
            return Err("offline.ttl_secs must be > 0".into());
        }
        Ok(())
    }
}
