//! `[app]` and `[[apps]]`: one application's credentials, switches, limits and webhooks.

use serde::{Deserialize, Serialize};

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
