//! `[push]`: push notifications for users who are offline (see `crate::push`). Off unless a
//! provider is configured.

use serde::{Deserialize, Serialize};

/// Push notification settings. Keys are flat so every one has an environment override
/// (`SWITCHBOARD_PUSH_VAPID_PRIVATE_KEY`, ...).
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// Pushes per user per hour; beyond it, pushes are skipped (throttled) until the oldest
    /// one is an hour old. 0: no limit.
    pub max_per_hour: u32,
    /// Registrations kept per user; registering one more replaces the oldest.
    pub max_registrations: usize,
    /// Events waiting for a decision; when full, new ones are dropped and counted.
    pub queue_capacity: usize,
    /// Provider requests in flight at once.
    pub concurrency: usize,
    /// Seconds a transiently failing push is retried (never past the event's ttl).
    pub retry_secs: u64,
    /// First retry delay (ms); doubles up to `backoff_max_ms`.
    pub backoff_initial_ms: u64,
    /// Longest retry delay (ms), also the cap on a provider's `Retry-After`.
    pub backoff_max_ms: u64,
    /// Timeout of one provider request (ms).
    pub timeout_ms: u64,
    /// Lifetime of a push for events published without a `ttl` (seconds); also the maximum.
    pub default_ttl_secs: u64,
    /// Reactions to one user within this window become one push (seconds).
    pub react_group_secs: u64,
    /// Prefix of generated deep links (`https://app.example.com`); links are paths without it.
    pub deep_link_base: String,
    /// Web Push: the VAPID private key, base64url of the raw 32-byte P-256 scalar.
    pub vapid_private_key: Option<String>,
    /// Web Push: accept subscriptions with plain-http endpoints (local test servers only;
    /// browsers' push services are https).
    pub webpush_allow_http: bool,
    /// Web Push: hosts a subscription's endpoint may name (a host, or any subdomain of it);
    /// empty = any. The default lists the browsers' push services, so a client cannot make
    /// the server POST to an address of its choosing.
    pub webpush_hosts: Vec<String>,
    /// Web Push: the VAPID `sub` claim, a `mailto:` or `https:` contact.
    pub vapid_subject: String,
    /// FCM HTTP v1: path of the service account JSON (`project_id`, `client_email`,
    /// `private_key`, `token_uri`).
    pub fcm_credentials_file: Option<String>,
    /// FCM HTTP v1 base URL.
    pub fcm_endpoint: String,
    /// APNs: path of the `.p8` signing key (PKCS#8 PEM).
    pub apns_key_file: Option<String>,
    /// APNs: the key's id (`kid`).
    pub apns_key_id: String,
    /// APNs: the team id (`iss`).
    pub apns_team_id: String,
    /// APNs: the app's bundle id (`apns-topic`).
    pub apns_topic: String,
    /// APNs base URL (`https://api.sandbox.push.apple.com` for development builds).
    pub apns_endpoint: String,
    /// A push service of your own: pushes for platforms without a provider above are POSTed
    /// here, signed with `webhook_secret`.
    pub webhook_url: Option<String>,
    /// Secret of `webhook_url`'s HMAC-SHA256 signature.
    pub webhook_secret: Option<String>,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            max_per_hour: 20,
            max_registrations: 10,
            queue_capacity: 10_000,
            concurrency: 16,
            retry_secs: 300,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 60_000,
            timeout_ms: 10_000,
            default_ttl_secs: 86_400,
            react_group_secs: 60,
            deep_link_base: String::new(),
            vapid_private_key: None,
            webpush_allow_http: false,
            webpush_hosts: [
                "fcm.googleapis.com",
                "push.services.mozilla.com",
                "notify.windows.com",
                "push.apple.com",
            ]
            .map(String::from)
            .to_vec(),
            vapid_subject: "mailto:admin@localhost".into(),
            fcm_credentials_file: None,
            fcm_endpoint: "https://fcm.googleapis.com".into(),
            apns_key_file: None,
            apns_key_id: String::new(),
            apns_team_id: String::new(),
            apns_topic: String::new(),
            apns_endpoint: "https://api.push.apple.com".into(),
            webhook_url: None,
            webhook_secret: None,
        }
    }
}

// Secrets stay out of `{:?}` (configs are sometimes logged when debugging).
impl std::fmt::Debug for PushConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushConfig")
            .field("enabled", &self.enabled())
            .field("max_per_hour", &self.max_per_hour)
            .field("webhook_url", &self.webhook_url)
            .finish_non_exhaustive()
    }
}

impl PushConfig {
    /// Whether any provider is configured (otherwise push is off).
    pub fn enabled(&self) -> bool {
        self.vapid_private_key.is_some()
            || self.fcm_credentials_file.is_some()
            || self.apns_key_file.is_some()
            || self.webhook_url.is_some()
    }

    /// Checks the ranges; the message names the bad key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_registrations == 0 || self.max_registrations > 100 {
            return Err("push.max_registrations must be 1 to 100".into());
        }
        if self.queue_capacity == 0 || self.concurrency == 0 {
            return Err("push.queue_capacity and push.concurrency must be > 0".into());
        }
        if self.timeout_ms == 0 || self.backoff_initial_ms == 0 || self.default_ttl_secs == 0 {
            return Err(
                "push.timeout_ms, push.backoff_initial_ms and push.default_ttl_secs must be > 0"
                    .into(),
            );
        }
        if self.webhook_url.is_some() != self.webhook_secret.is_some() {
            return Err("push.webhook_url and push.webhook_secret go together".into());
        }
        if self.apns_key_file.is_some()
            && [&self.apns_key_id, &self.apns_team_id, &self.apns_topic]
                .iter()
                .any(|s| s.is_empty())
        {
            return Err("push.apns_key_file needs apns_key_id, apns_team_id and apns_topic".into());
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
    fn push_is_off_by_default_and_configured_from_the_environment() {
        assert!(!load(&[]).unwrap().push.enabled());
        let c = load(&[
            ("SWITCHBOARD_PUSH_WEBHOOK_URL", "http://127.0.0.1:1/push"),
            ("SWITCHBOARD_PUSH_WEBHOOK_SECRET", "s"),
            ("SWITCHBOARD_PUSH_MAX_PER_HOUR", "3"),
        ])
        .unwrap();
        assert!(c.push.enabled());
        assert_eq!(c.push.max_per_hour, 3);
        assert!(!format!("{:?}", c.push).contains("\"s\""));
        assert!(load(&[("SWITCHBOARD_PUSH_WEBHOOK_URL", "http://x")]).is_err());
        assert!(load(&[("SWITCHBOARD_PUSH_MAX_REGISTRATIONS", "0")]).is_err());
        assert!(load(&[("SWITCHBOARD_PUSH_APNS_KEY_FILE", "/k.p8")]).is_err());
    }
}
