//! `[app]` and `[[apps]]`: one application's credentials, switches, limits and webhooks.

use serde::{Deserialize, Serialize};

/// One application's credentials, switches and limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppConfig {
    /// App id.
    pub id: String,
    /// Public key.
    pub key: String,
    /// Secret.
    pub secret: String,
    /// The secret before the last rotation, still accepted (never used to sign) until
    /// `previous_secret_expires_at`, so publishers can switch without failures.
    pub previous_secret: Option<String>,
    /// Unix seconds after which `previous_secret` is no longer accepted; unset = until it
    /// is removed.
    pub previous_secret_expires_at: Option<u64>,
    /// Disabled apps refuse connections (4003) and API calls.
    pub enabled: bool,
    /// Accept `client-` events.
    pub client_events: bool,
    /// Accept `pusher:signin`.
    pub user_authentication: bool,
    /// Seconds a Pusher connection has to sign in before it is closed with 4009 (Pusher's
    /// "authorized connections", soketi's `userAuthenticationTimeout`); 0 = no deadline.
    pub require_signin_secs: u64,
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
            previous_secret: None,
            previous_secret_expires_at: None,
            enabled: true,
            client_events: true,
            user_authentication: true,
            require_signin_secs: 0,
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

/// Why an app's settings are unusable: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppInvalid {
    /// The offending key, as in `[[apps]]`.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for AppInvalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl AppConfig {
    /// Checks an app made through the admin API: ids and keys are URL path segments, limits
    /// are usable, webhooks are URLs. (The file's apps keep the looser rules they always
    /// had, so an upgrade never refuses a configuration that worked.)
    pub fn validate(&self) -> Result<(), AppInvalid> {
        let bad = |field, message: &str| {
            Err(AppInvalid {
                field,
                message: message.to_owned(),
            })
        };
        let segment = |s: &str| {
            !s.is_empty()
                && s.len() <= 100
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        if !segment(&self.id) {
            return bad("id", "1 to 100 characters of A-Z a-z 0-9 - _ .");
        }
        if !segment(&self.key) {
            return bad("key", "1 to 100 characters of A-Z a-z 0-9 - _ .");
        }
        if self.secret.is_empty() || self.secret.len() > 256 {
            return bad("secret", "1 to 256 bytes");
        }
        if self
            .previous_secret
            .as_deref()
            .is_some_and(|s| s.is_empty() || s.len() > 256)
        {
            return bad("previous_secret", "1 to 256 bytes");
        }
        if self.max_event_bytes == 0 || self.max_event_bytes > 10 * 1024 * 1024 {
            return bad("max_event_bytes", "1 byte to 10 MiB");
        }
        for (field, v) in [
            ("max_channels_per_event", self.max_channels_per_event),
            ("max_batch_size", self.max_batch_size),
            ("presence_max_members", self.presence_max_members),
            ("presence_max_member_bytes", self.presence_max_member_bytes),
            (
                "max_channels_per_connection",
                self.max_channels_per_connection,
            ),
        ] {
            if v == 0 {
                return bad(field, "must be > 0");
            }
        }
        for w in &self.webhooks {
            let scheme = w.url.split_once("://").map(|(s, _)| s);
            if !matches!(scheme, Some("http" | "https")) || w.url.len() > 2048 {
                return bad("webhooks", "every url must be http:// or https://");
            }
        }
        Ok(())
    }
}
