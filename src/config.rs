//! Configuration: a TOML file, overridden by `SWITCHBOARD_<SECTION>_<KEY>` environment
//! variables. This is the only module that reads files or the environment for settings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod app;
mod database;
mod idempotency;
pub mod keys;
mod load;
mod offline;
mod print;
mod push;
mod server;
mod streams;
pub use app::{AppConfig, AppInvalid, WebhookConfig};
pub use database::DatabaseConfig;
pub use idempotency::IdempotencyConfig;
pub use load::{Origin, Origins};
pub use offline::OfflineConfig;
pub use push::PushConfig;
pub use server::{ServerConfig, TlsConfig};
pub use streams::{BusConfig, HistoryConfig, HistoryRule, WebhooksConfig};

/// Everything the server can be told. Loaded and validated once at start-up.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Log lines as text or JSON (`SWITCHBOARD_LOG_FORMAT`).
    pub log_format: LogFormat,
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
    /// The admin API and console (`SWITCHBOARD_ADMIN_TOKEN`).
    pub admin: AdminConfig,
}

/// The admin API and the console, on the metrics listener.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer token of `/admin/*` and the console; unset = both off (404).
    pub token: Option<String>,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines; colours only on a terminal.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
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
    /// `redis://` or `rediss://` URL (any node of a Redis Cluster, detected by itself), or
    /// `redis+sentinel://h1:p1,h2:p2/master`; unset = single node.
    pub url: Option<String>,
    /// Speak Redis Cluster even when the node named by `url` cannot be asked at start.
    pub cluster: bool,
    /// More Redis Cluster nodes to start from.
    pub cluster_urls: Vec<String>,
    /// Sentinels (`host:port`) watching the primary `master_name`.
    pub sentinels: Vec<String>,
    /// The primary's name at the Sentinels.
    pub master_name: Option<String>,
    /// Prefix of every key and channel this cluster uses.
    pub prefix: String,
    /// Seconds a node's lease lasts: a node that dies without notice stops counting, and its
    /// presence is removed, within one lease (plus a quarter, the reaper's period).
    pub lease_secs: u64,
}

impl RedisConfig {
    /// Whether the node runs in a cluster (any Redis is set).
    pub fn enabled(&self) -> bool {
        self.url.is_some() || !self.cluster_urls.is_empty() || !self.sentinels.is_empty()
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            cluster: false,
            cluster_urls: Vec::new(),
            sentinels: Vec::new(),
            master_name: None,
            prefix: "switchboard".into(),
            lease_secs: 10,
        }
    }
}

/// The embedded store.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Directory of the embedded store (offline queues, history across restarts) of a node
    /// without Redis (`SWITCHBOARD_DATA_DIR`). One process per directory: a second one fails
    /// with a lock error.
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
    #[error("invalid configuration{}: {message}", file.as_ref().map(|f| format!(" in {}", f.display())).unwrap_or_default())]
    Parse {
        /// The file, when the error is in it.
        file: Option<PathBuf>,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
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
        if self.server.tls.cert_file.is_some() != self.server.tls.key_file.is_some() {
            return bad("server.tls needs both cert_file and key_file".into());
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

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
    fn a_variable_that_names_no_key_is_fatal_with_a_suggestion() {
        for (typo, meant) in [
            ("SWITCHBOARD_METRIC_PORT", Some("SWITCHBOARD_METRICS_PORT")),
            ("SWITCHBOARD_REDISURL", Some("SWITCHBOARD_REDIS_URL")),
            (
                "SWITCHBOARD_SERVER_TLS_CERTFILE",
                Some("SWITCHBOARD_SERVER_TLS_CERT_FILE"),
            ),
            ("SWITCHBOARD_BOGUS_KEY", None),
        ] {
            let err = Config::load(None, env(&[(typo, "1")]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(typo), "{err}");
            match meant {
                Some(m) => assert!(err.contains(&format!("did you mean {m}?")), "{err}"),
                None => assert!(!err.contains("did you mean"), "{err}"),
            }
        }
        // The positive control: the right names load, and variables that are not settings
        // are left alone.
        let c = Config::load(
            None,
            env(&[
                ("SWITCHBOARD_METRICS_PORT", "9700"),
                ("SWITCHBOARD_SERVER_TLS_CERT_FILE", "/c.pem"),
                ("SWITCHBOARD_SERVER_TLS_KEY_FILE", "/k.pem"),
                ("SWITCHBOARD_LOG_FORMAT", "json"),
                ("SWITCHBOARD_PUSH_WEBPUSH_HOSTS", "a.example, b.example"),
                ("SWITCHBOARD_TEST_REDIS_URL", "redis://x"),
                ("SWITCHBOARD_CONFIG", "/nowhere.toml"),
            ]),
        )
        .unwrap();
        assert_eq!(c.metrics.port, 9700);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.server.tls.cert_file.as_deref(), Some(Path::new("/c.pem")));
        assert_eq!(c.push.webpush_hosts, ["a.example", "b.example"]);
    }

    #[test]
    fn the_example_file_shows_every_key_with_its_default() {
        // Its settings are the defaults.
        let example: Config = toml::from_str(keys::EXAMPLE).unwrap();
        assert_eq!(
            serde_json::to_value(&example).unwrap(),
            serde_json::to_value(Config::default()).unwrap()
        );
        // Its commented-out settings (unset by default) are settings too.
        let uncommented: String = keys::EXAMPLE
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.starts_with('[')
                        || rest.split_once(" = ").is_some_and(|(k, _)| {
                            k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                        }) =>
                {
                    rest
                }
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let all: Config = toml::from_str(&uncommented).unwrap();
        assert_eq!(all.apps.len(), 1);
        // Every field of every table (None ones included: JSON keeps them) is in it, and
        // nothing else is.
        fn leaves(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
            for (k, v) in v.as_object().unwrap() {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match v {
                    serde_json::Value::Object(_) => leaves(&path, v, out),
                    serde_json::Value::Array(a) if a.iter().any(|x| x.is_object()) => {}
                    _ if matches!(path.as_str(), "apps" | "app.webhooks" | "history.rules") => {}
                    _ => out.push(path),
                }
            }
        }
        let mut fields = Vec::new();
        leaves(
            "",
            &serde_json::to_value(Config::default()).unwrap(),
            &mut fields,
        );
        fields.sort();
        let documented: Vec<String> = keys::all().keys().cloned().collect();
        assert_eq!(fields, documented);
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
        let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(
            err.contains("server.prot") && err.contains("did you mean server.port?"),
            "{err}"
        );
        assert!(err.contains(&path.display().to_string()), "{err}");
        // A value of the wrong type names its key, from the file and from the environment.
        std::fs::write(&path, "[server]\nport = \"x\"\n").unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(err.contains("server.port"), "{err}");
        let err = Config::load(None, env(&[("SWITCHBOARD_SERVER_PORT", "70000")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.port"), "{err}");
    }
}
