//! Configuration: a TOML file, overridden by `SWITCHBOARD_<SECTION>_<KEY>` environment
//! variables. This is the only module that reads files or the environment for settings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod database;
mod idempotency;
mod offline;
mod push;
pub use database::DatabaseConfig;
pub use idempotency::IdempotencyConfig;
pub use offline::OfflineConfig;
pub use push::PushConfig;

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

/// Event history per stream (a channel, or a user's events), for replay on reconnect.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Events kept per stream.
    pub size: usize,
    /// Seconds an event stays in history.
    pub ttl_secs: u64,
    /// Streams kept per node (memory mode); beyond it the least recently used is dropped.
    pub max_streams: usize,
    /// Other bounds for some streams, by app and channel prefix; the first match wins.
    pub rules: Vec<HistoryRule>,
}

/// History bounds for the streams of matching channels (or of users' events).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryRule {
    /// Only this app (any when unset).
    #[serde(default)]
    pub app: Option<String>,
    /// Channels whose name starts with this (`""`: every channel).
    #[serde(default)]
    pub prefix: String,
    /// Match users' own event streams instead of channels.
    #[serde(default)]
    pub users: bool,
    /// Events kept per stream.
    pub size: usize,
    /// Seconds an event stays.
    pub ttl_secs: u64,
}

impl HistoryConfig {
    /// `(size, ttl_secs)` for `stream` (`c:{channel}` or `u:{user}`) of `app`.
    pub fn limits(&self, app: &str, stream: &str) -> (usize, u64) {
        let (users, name) = match stream.split_once(':') {
            Some(("u", rest)) => (true, rest),
            Some((_, rest)) => (false, rest),
            None => (false, stream),
        };
        self.rules
            .iter()
            .find(|r| {
                r.app.as_deref().is_none_or(|a| a == app)
                    && r.users == users
                    && (users || name.starts_with(&r.prefix))
            })
            .map_or((self.size, self.ttl_secs), |r| (r.size, r.ttl_secs))
    }

    fn validate(&self) -> Result<(), String> {
        let ok = |size: usize, ttl: u64| (1..=100_000).contains(&size) && ttl > 0;
        if !ok(self.size, self.ttl_secs) || self.rules.iter().any(|r| !ok(r.size, r.ttl_secs)) {
            return Err("history size must be 1 to 100000 and ttl_secs > 0".into());
        }
        Ok(())
    }
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            size: 100,
            ttl_secs: 300,
            max_streams: 100_000,
            rules: Vec::new(),
        }
    }
}

/// Webhook delivery, for every app.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Events collected into one request for this long (ms).
    pub batch_ms: u64,
    /// Most events in one request.
    pub batch_max: usize,
    /// Events waiting to be sent; when full, new ones are dropped and counted.
    pub queue_capacity: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Seconds a failing request is retried before it is given up (counted and logged).
    pub retry_secs: u64,
    /// First retry delay (ms); doubles up to `backoff_max_ms`.
    pub backoff_initial_ms: u64,
    /// Longest retry delay (ms).
    pub backoff_max_ms: u64,
    /// `channel_vacated` and `member_removed` wait this long (ms) and are dropped if the
    /// channel or member came back meanwhile (Pusher: up to 3 s).
    pub leave_delay_ms: u64,
    /// Timeout of one request (ms).
    pub timeout_ms: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            batch_ms: 50,
            batch_max: 100,
            queue_capacity: 10_000,
            concurrency: 16,
            retry_secs: 300,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 60_000,
            leave_delay_ms: 3_000,
            timeout_ms: 5_000,
        }
    }
}

/// The native bus protocol (`/ws/bus`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// Bus connections per user (per node). Breach: `E-WS-PERMISSION`, close 4003.
    pub max_connections_per_user: usize,
    /// Seconds without client activity before the user's presence becomes `away`.
    pub idle_timeout: u64,
    /// Milliseconds between two presence announcements for one user (coalesced).
    pub presence_throttle_ms: u64,
    /// Milliseconds between two typing indicators for one recipient and conversation.
    pub typing_throttle_ms: u64,
    /// Client messages per minute per connection. Breach: `E-WS-RATE`.
    pub messages_per_minute: u32,
    /// Burst allowance of `messages_per_minute`.
    pub message_burst: u32,
    /// Rooms per connection.
    pub max_rooms_per_connection: usize,
    /// Users watched per connection (token watchlist plus contacts).
    pub max_watchlist: usize,
    /// Longest lifetime of a token minted by the API, in seconds.
    pub max_token_ttl: u64,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            max_connections_per_user: 5,
            idle_timeout: 300,
            presence_throttle_ms: 1000,
            typing_throttle_ms: 1000,
            messages_per_minute: 100,
            message_burst: 20,
            max_rooms_per_connection: 100,
            max_watchlist: 1000,
            max_token_ttl: 86_400,
        }
    }
}

/// Listener, timeouts and node-wide limits.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to bind (`SWITCHBOARD_HOST`).
    pub host: String,
    /// Port to bind (`SWITCHBOARD_PORT`).
    pub port: u16,
    /// Seconds of client silence before the server pings (advertised to Pusher clients).
    pub activity_timeout: u64,
    /// Seconds to wait for a pong before closing with 4201.
    pub pong_timeout: u64,
    /// Connections on this node. Breach: Pusher 4100, bus 503.
    pub max_connections: usize,
    /// Frames queued per connection before it is closed as a slow consumer.
    pub outbox_capacity: usize,
    /// Bytes queued per connection before it is closed as a slow consumer (0 = no bound).
    pub outbox_max_bytes: usize,
    /// Bytes queued for all connections of the node; past it, connections holding more
    /// than their share are closed as slow consumers (0 = no bound).
    pub outbox_total_bytes: usize,
    /// Largest WebSocket message accepted from a client, in bytes.
    pub max_message_bytes: usize,
    /// Largest HTTP API request body, in bytes.
    pub max_body_bytes: usize,
    /// Seconds to wait for connections to close on shutdown.
    pub shutdown_grace: u64,
    /// Seconds a cache channel keeps its last event (Pusher's maximum: 30 minutes).
    pub cache_ttl_secs: u64,
    /// Cache channels remembered per node (memory mode); beyond it the oldest is replaced.
    pub cache_max_channels: usize,
    /// Per-connection read buffer of the WebSocket codec, in bytes.
    pub ws_read_buffer: usize,
    /// Per-connection write buffer threshold of the WebSocket codec, in bytes.
    pub ws_write_buffer: usize,
    /// Milliseconds a client has to send a request's headers (and, on a keep-alive
    /// connection, the next request) before the socket is closed.
    pub header_timeout_ms: u64,
    /// Milliseconds a client has to send a request's body; past it: 408.
    pub body_timeout_ms: u64,
    /// Largest request head (request line and headers), in bytes; past it: 431.
    pub max_header_bytes: usize,
    /// Sockets one client address may hold open (0 = no limit); past it: 429.
    pub max_connections_per_ip: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 6001,
            activity_timeout: 120,
            pong_timeout: 30,
            max_connections: 10_000,
            outbox_capacity: 1_000,
            outbox_max_bytes: 4 * 1024 * 1024,
            outbox_total_bytes: 1024 * 1024 * 1024,
            max_message_bytes: 64 * 1024,
            max_body_bytes: 1024 * 1024,
            shutdown_grace: 10,
            cache_ttl_secs: 1800,
            cache_max_channels: 100_000,
            ws_read_buffer: 1024,
            ws_write_buffer: 8 * 1024,
            header_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            max_header_bytes: 64 * 1024,
            max_connections_per_ip: 1000,
        }
    }
}

impl ServerConfig {
    /// `activity_timeout` as a duration.
    pub fn activity_timeout(&self) -> Duration {
        Duration::from_secs(self.activity_timeout)
    }
    /// `pong_timeout` as a duration.
    pub fn pong_timeout(&self) -> Duration {
        Duration::from_secs(self.pong_timeout)
    }
    /// `body_timeout_ms` as a duration.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }
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

/// One application's credentials, switches and limits.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppConfig {
    /// App id.
    pub id: String,
    /// Public key.
    pub key: String,
    /// Secret.
    pub secret: String,
    /// Disabled apps refuse connections (4003) and API calls.
    pub enabled: bool,
    /// Accept `client-` events.
    pub client_events: bool,
    /// Accept `pusher:signin`.
    pub user_authentication: bool,
    /// Connections for this app; 0 = unlimited.
    pub max_connections: usize,
    /// Bytes of event data (Pusher: 10 KB).
    pub max_event_bytes: usize,
    /// Channels per trigger (Pusher: 100).
    pub max_channels_per_event: usize,
    /// Events per batch (Pusher: 10).
    pub max_batch_size: usize,
    /// Users per presence channel (Pusher: 100).
    pub presence_max_members: usize,
    /// Bytes of `user_info` (Pusher: 1 KB).
    pub presence_max_member_bytes: usize,
    /// Client events per second per connection (Pusher: 10).
    pub client_events_per_second: u32,
    /// Channels per connection.
    pub max_channels_per_connection: usize,
    /// Webhook endpoints (`[[app.webhooks]]` / `[[apps.webhooks]]`).
    pub webhooks: Vec<WebhookConfig>,
}

/// One webhook endpoint of an app.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST.
    pub url: String,
    /// Event names to send (`channel_occupied`, `channel_vacated`, `member_added`,
    /// `member_removed`, `client_event`, `cache_miss`, `subscription_count`); empty = all.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Only channels starting with this prefix.
    #[serde(default)]
    pub channel_prefix: Option<String>,
}

impl WebhookConfig {
    /// Whether this endpoint wants `event` for `channel`.
    pub fn wants(&self, event: &str, channel: &str) -> bool {
        (self.event_types.is_empty() || self.event_types.iter().any(|e| e == event))
            && self
                .channel_prefix
                .as_deref()
                .is_none_or(|p| channel.starts_with(p))
    }
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            id: "app-id".into(),
            key: "app-key".into(),
            secret: "app-secret".into(),
            enabled: true,
            client_events: true,
            user_authentication: true,
            max_connections: 0,
            max_event_bytes: 10 * 1024,
            max_channels_per_event: 100,
            max_batch_size: 10,
            presence_max_members: 100,
            presence_max_member_bytes: 1024,
            client_events_per_second: 10,
            max_channels_per_connection: 500,
            webhooks: Vec::new(),
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
