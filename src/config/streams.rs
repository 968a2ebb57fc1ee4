//! `[history]`, `[webhooks]` and `[bus]`: event history for replay, webhook delivery, and
//! the native bus protocol's limits.

use serde::{Deserialize, Serialize};

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

    pub(super) fn validate(&self) -> Result<(), String> {
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
