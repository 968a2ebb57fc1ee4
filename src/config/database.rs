//! `[database]`: PostgreSQL ingest of the `switchboard.outbox` table (see `crate::ingest`).

use serde::{Deserialize, Serialize};

/// PostgreSQL ingest. Unset `url` = no ingest.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://` URL (`SWITCHBOARD_DATABASE_URL`) of PostgreSQL itself or of a
    /// session-mode pool: transaction pooling cannot carry LISTEN or the ingest lock.
    pub url: Option<String>,
    /// Milliseconds between two reads of the outbox when no NOTIFY woke the ingester: the
    /// fallback that bounds delivery delay when notifications are lost.
    pub poll_interval_ms: u64,
    /// Rows read, published and marked per round trip (bounds the ingester's memory).
    pub batch_size: usize,
    /// Seconds a processed row is kept before it is deleted; 0 = keep forever.
    pub retention_secs: u64,
    /// Seconds between two retention passes (each deletes in chunks, for at most a second).
    pub cleanup_interval_secs: u64,
    /// Milliseconds between two attempts of a standby node to take the ingest lock: the
    /// takeover delay after the ingesting node dies.
    pub lock_retry_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            poll_interval_ms: 1_000,
            batch_size: 500,
            retention_secs: 86_400,
            cleanup_interval_secs: 60,
            lock_retry_ms: 2_000,
        }
    }
}

impl DatabaseConfig {
    /// Checks the ranges; the message names the bad key.
    pub fn validate(&self) -> Result<(), String> {
        if self.poll_interval_ms == 0 || self.lock_retry_ms == 0 {
            return Err("database.poll_interval_ms and database.lock_retry_ms must be > 0".into());
        }
        if !(1..=10_000).contains(&self.batch_size) {
            return Err("database.batch_size must be 1 to 10000".into());
        }
        if self.cleanup_interval_secs == 0 {
            return Err("database.cleanup_interval_secs must be > 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, crate::config::ConfigError> {
        Config::load(
            None,
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn database_keys_come_from_the_environment_and_are_checked() {
        let c = load(&[
            ("SWITCHBOARD_DATABASE_URL", "postgres://u@h/db"),
            ("SWITCHBOARD_DATABASE_POLL_INTERVAL_MS", "250"),
            ("SWITCHBOARD_DATABASE_RETENTION_SECS", "0"),
        ])
        .unwrap();
        assert_eq!(c.database.url.as_deref(), Some("postgres://u@h/db"));
        assert_eq!(c.database.poll_interval_ms, 250);
        assert_eq!(c.database.retention_secs, 0);
        assert_eq!(c.database.batch_size, 500);
        assert!(load(&[("SWITCHBOARD_DATABASE_BATCH_SIZE", "0")]).is_err());
        assert!(load(&[("SWITCHBOARD_DATABASE_POLL_INTERVAL_MS", "0")]).is_err());
    }
}
