//! Configuration: a TOML file, overridden by `SWITCHBOARD_<SECTION>_<KEY>` environment
//! variables. This is the only module that reads files or the environment for settings.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod app;
mod database;
mod idempotency;
mod offline;
mod push;
mod server;
mod streams;
pub use app::{AppConfig, WebhookConfig};
pub use database::DatabaseConfig;
pub use idempotency::IdempotencyConfig;
pub use offline::OfflineConfig;
pub use push::PushConfig;
pub use server::ServerConfig;
pub use streams::{BusConfig, HistoryConfig, HistoryRule, WebhooksConfig};

/// Everything the server can be told. Loaded and validated once at start-up.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listener, timeouts and node-wide limits.
    pub server: ServerConfig,
    /// Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// The default app (`SWITCHBOARD_APP_ID`, `_KEY`, `_SECRET`, ...).
    pub app: AppConfig,
    /// More apps, from the config file.
    pub apps: Vec<AppConfig>,
    /// Redis, for clusters (`SWITCHBOARD_REDIS_URL`).
    pub redis: RedisConfig,
    /// PostgreSQL, for ingest (`SWITCHBOARD_DATABASE_URL`).
    pub database: DatabaseConfig,
    /// The embedded store (`SWITCHBOARD_DATA_DIR`).
    pub data: DataConfig,
    /// The native bus protocol.
    pub bus: BusConfig,
    /// Webhook delivery.
    pub webhooks: WebhooksConfig,
    /// Event history for replay (`since`).
    pub history: HistoryConfig,
    /// Offline queues of user events.
    pub offline: OfflineConfig,
    /// Push notifications for offline users.
    pub push: PushConfig,
    /// Idempotency keys of publishers' retries.
    pub idempotency: IdempotencyConfig,
}

/// Prometheus endpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` at all.
    pub enabled: bool,
    /// Port (`SWITCHBOARD_METRICS_PORT`), on the server's host.
    pub port: u16,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            port: 9601,
        }
    }
}

/// Redis connection for clusters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` URL; unset = single node.
    pub url: Option<String>,
    /// Prefix of every key and channel this cluster uses.
    pub prefix: String,
    /// Seconds a node's lease lasts: a node that dies without notice stops counting, and its
    /// presence is removed, within one lease (plus a quarter, the reaper's period).
    pub lease_secs: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            prefix: "switchboard".into(),
            lease_secs: 10,
        }
    }
}

/// The embedded store.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Directory of the embedded store.
    pub dir: PathBuf,
    /// Writes waiting for the store's writer; beyond it a write is refused (a publish that
    /// needs one answers 503).
    pub write_queue: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("./switchboard-data"),
            write_queue: 10_000,
        }
    }
}

/// A configuration that cannot be used. Fatal at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML (after environment overrides) does not fit the schema.
    #[error("invalid configuration: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Environment variables with a meaning of their own rather than `<SECTION>_<KEY>`.
const SHORTCUTS: &[(&str, &str, &str)] = &[("HOST", "server", "host"), ("PORT", "server", "port")];

impl Config {
    /// Loads the file (if any), applies `SWITCHBOARD_*` overrides from `env`, validates.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut root: toml::Table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                text.parse()?
            }
            None => toml::Table::new(),
        };
        let defaults = toml::Table::try_from(Config::default())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("SWITCHBOARD_") else {
                continue;
            };
            if rest == "CONFIG" {
                continue;
            }
            let (section, key) = match SHORTCUTS.iter().find(|(n, _, _)| *n == rest) {
                Some((_, s, k)) => (s.to_string(), k.to_string()),
                None => match rest.split_once('_') {
                    Some((s, k)) => (s.to_ascii_lowercase(), k.to_ascii_lowercase()),
                    None => continue,
                },
            };
            // Only sections that exist; other SWITCHBOARD_* variables (e.g. test settings)
            // are not ours to judge.
            let Some(toml::Value::Table(default_section)) = defaults.get(&section) else {
                continue;
            };
            let typed = typed_value(default_section.get(&key), &value).ok_or_else(|| {
                ConfigError::Invalid(format!("{name}={value:?} has the wrong type"))
            })?;
            let entry = root
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => {
                    t.insert(key, typed);
                }
                _ => return Err(ConfigError::Invalid(format!("[{section}] is not a table"))),
            }
        }
        let config: Config = toml::Value::Table(root).try_into()?;
        config.validate()?;
        Ok(config)
    }

    /// Every configured app: the default one first.
    pub fn all_apps(&self) -> impl Iterator<Item = &AppConfig> {
        std::iter::once(&self.app).chain(self.apps.iter())
    }

    /// Whether the default app still has the well-known default credentials.
    pub fn uses_default_credentials(&self) -> bool {
        self.all_apps()
            .any(|a| a.key == "app-key" || a.secret == "app-secret")
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.server.activity_timeout == 0 || self.server.pong_timeout == 0 {
            return bad("server.activity_timeout and server.pong_timeout must be > 0".into());
        }
        if self.bus.messages_per_minute == 0 || self.bus.message_burst == 0 {
            return bad("bus.messages_per_minute and bus.message_burst must be > 0".into());
        }
        if self.redis.lease_secs == 0 {
            return bad("redis.lease_secs must be > 0".into());
        }
        if self.bus.idle_timeout == 0 {
            return bad("bus.idle_timeout must be > 0".into());
        }
        if self.server.header_timeout_ms == 0 || self.server.body_timeout_ms == 0 {
            return bad("server.header_timeout_ms and server.body_timeout_ms must be > 0".into());
        }
        if self.server.outbox_capacity == 0 {
            return bad("server.outbox_capacity must be > 0".into());
        }
        self.database.validate().map_err(ConfigError::Invalid)?;
        self.offline.validate().map_err(ConfigError::Invalid)?;
        self.idempotency.validate().map_err(ConfigError::Invalid)?;
        self.history.validate().map_err(ConfigError::Invalid)?;
        self.push.validate().map_err(ConfigError::Invalid)?;
        let mut ids = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        for a in self.all_apps() {
            if a.id.is_empty() || a.key.is_empty() || a.secret.is_empty() {
                return bad("every app needs a non-empty id, key and secret".into());
            }
            if !ids.insert(&a.id) || !keys.insert(&a.key) {
                return bad(format!(
                    "app id {:?} or key {:?} is used twice",
                    a.id, a.key
                ));
            }
        }
        Ok(())
    }
}

/// Parses an environment value with the type of the setting's default.
fn typed_value(default: Option<&toml::Value>, raw: &str) -> Option<toml::Value> {
    Some(match default {
        Some(toml::Value::Integer(_)) => toml::Value::Integer(raw.trim().parse().ok()?),
        Some(toml::Value::Boolean(_)) => toml::Value::Boolean(match raw.trim() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => return None,
        }),
        Some(toml::Value::Float(_)) => toml::Value::Float(raw.trim().parse().ok()?),
        _ => toml::Value::String(raw.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_follow_the_design() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.server.host, "127.0.0.1");
        assert_eq!(c.server.port, 6001);
        assert_eq!(c.metrics.port, 9601);
        assert_eq!(
            (c.app.id.as_str(), c.app.key.as_str(), c.app.secret.as_str()),
            ("app-id", "app-key", "app-secret")
        );
        assert!(c.uses_default_credentials());
        assert!(c.redis.url.is_none());
    }

    #[test]
    fn env_overrides_with_types() {
        let c = Config::load(
            None,
            env(&[
                ("SWITCHBOARD_PORT", "7000"),
                ("SWITCHBOARD_APP_ID", "12345"),
                ("SWITCHBOARD_APP_CLIENT_EVENTS", "false"),
                ("SWITCHBOARD_REDIS_URL", "redis://127.0.0.1:6379"),
                ("SWITCHBOARD_METRICS_PORT", "9999"),
                ("SWITCHBOARD_SERVER_ACTIVITY_TIMEOUT", "5"),
                ("SWITCHBOARD_TEST_SOMETHING", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.port, 7000);
        assert_eq!(c.app.id, "12345");
        assert!(!c.app.client_events);
        assert_eq!(c.redis.url.as_deref(), Some("redis://127.0.0.1:6379"));
        assert_eq!(c.metrics.port, 9999);
        assert_eq!(c.server.activity_timeout, 5);
    }

    #[test]
    fn bad_values_are_fatal() {
        assert!(Config::load(None, env(&[("SWITCHBOARD_PORT", "x")])).is_err());
        assert!(Config::load(None, env(&[("SWITCHBOARD_SERVER_NOPE", "1")])).is_err());
    }

    #[test]
    fn file_with_several_apps() {
        let dir = std::env::temp_dir().join(format!("sb-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "[server]\nport = 7001\n[[apps]]\nid = \"2\"\nkey = \"k2\"\nsecret = \"s2\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&path), env(&[])).unwrap();
        assert_eq!(c.server.port, 7001);
        assert_eq!(c.all_apps().count(), 2);
        std::fs::write(&path, "[server]\nprot = 1\n").unwrap();
        assert!(Config::load(Some(&path), env(&[])).is_err());
    }
}
