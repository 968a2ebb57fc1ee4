//! `[idempotency]`: how long publishers' idempotency keys are remembered (see
//! `crate::idempotency`).

use serde::{Deserialize, Serialize};

/// Idempotency keys of the publishing calls.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdempotencyConfig {
    /// Seconds a key is remembered after its publish (a retry within it publishes nothing).
    pub window_secs: u64,
    /// Keys kept on one node (memory mode); beyond it the oldest are forgotten first.
    pub max_keys: usize,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            window_secs: 120,
            max_keys: 100_000,
        }
    }
}

impl IdempotencyConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.window_secs == 0 || self.max_keys == 0 {
            return Err("idempotency.window_secs and idempotency.max_keys must be > 0".into());
        }
        Ok(())
    }
}
