//! Push providers behind one small trait: Web Push (RFC 8030/8291/8292), FCM HTTP v1, APNs
//! (HTTP/2, token auth) and a signed webhook for a push service of your own.

mod apns;
mod fcm;
mod webhook;
mod webpush;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use super::{decide::Kind, Device, Platform};
use crate::config::PushConfig;
use crate::ids::{AppId, UserId};

/// One push, ready for any provider.
#[derive(Clone, Debug)]
pub struct Message {
    /// The app.
    pub app: AppId,
    /// The recipient.
    pub user: UserId,
    /// The push type.
    pub kind: Kind,
    /// Short title.
    pub title: String,
    /// The text ("bob sent you a message").
    pub body: String,
    /// Deep link.
    pub link: String,
    /// The event id (or the last one of a reaction group): lets clients drop a duplicate.
    pub id: Arc<str>,
    /// When the push stops being worth delivering (ms since the epoch): the event's ttl.
    pub expires_ms: u64,
}

impl Message {
    /// Whole seconds left before `expires_ms` (0: expired).
    pub fn ttl_secs(&self, now_ms: u64) -> u64 {
        self.expires_ms.saturating_sub(now_ms) / 1000
    }

    /// A key under which a newer push replaces an older one not yet shown or still on
    /// screen: reaction groups, so a phone shows one "bob and 2 others reacted", updated,
    /// not one per window. (Web Push `Topic`, APNs `apns-collapse-id`, FCM `collapse_key`
    /// and notification `tag`.)
    pub fn collapse_key(&self) -> Option<&'static str> {
        (self.kind == Kind::React).then_some("reactions")
    }

    /// The data every provider carries besides title and body.
    pub(crate) fn data(&self) -> serde_json::Value {
        json!({"type": self.kind.as_str(), "url": self.link, "id": &*self.id})
    }
}

/// How a send failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth retrying (5xx, 429, network); `retry_after` when the provider said so.
    #[error("transient: {reason}")]
    Transient {
        /// For logs (no secrets).
        reason: String,
        /// The provider's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// The device is gone (404/410, unregistered token): remove its registration.
    #[error("gone: {0}")]
    Gone(String),
    /// Refused for good (400/403...): retrying would not help.
    #[error("rejected: {0}")]
    Rejected(String),
}

/// A push service.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Label in metrics and logs.
    fn name(&self) -> &'static str;

    /// Sends one push to one device. `now_ms` is when the attempt starts (for the ttl).
    async fn send(&self, device: &Device, msg: &Message, now_ms: u64) -> Result<(), SendError>;
}

/// The provider of each platform.
pub struct Providers {
    web: Option<Arc<dyn Provider>>,
    android: Option<Arc<dyn Provider>>,
    ios: Option<Arc<dyn Provider>>,
}

impl Providers {
    /// Builds what `config` configures: each platform's own provider, else the webhook.
    pub fn from_config(config: &PushConfig) -> Result<Self, String> {
        let timeout = Duration::from_millis(config.timeout_ms);
        let hook: Option<Arc<dyn Provider>> = match (&config.webhook_url, &config.webhook_secret) {
            (Some(url), Some(secret)) => {
                Some(Arc::new(webhook::Webhook::new(url, secret, timeout)?))
            }
            _ => None,
        };
        let web: Option<Arc<dyn Provider>> = match &config.vapid_private_key {
            Some(k) => Some(Arc::new(webpush::WebPush::new(
                k,
                &config.vapid_subject,
                timeout,
            )?)),
            None => hook.clone(),
        };
        let android: Option<Arc<dyn Provider>> = match &config.fcm_credentials_file {
            Some(f) => Some(Arc::new(fcm::Fcm::new(f, &config.fcm_endpoint, timeout)?)),
            None => hook.clone(),
        };
        let ios: Option<Arc<dyn Provider>> = match &config.apns_key_file {
            Some(f) => Some(Arc::new(apns::Apns::new(f, config, timeout)?)),
            None => hook,
        };
        Ok(Self { web, android, ios })
    }

    /// The provider for `platform`.
    pub fn get(&self, platform: Platform) -> Option<&Arc<dyn Provider>> {
        match platform {
            Platform::Web => self.web.as_ref(),
            Platform::Android => self.android.as_ref(),
            Platform::Ios => self.ios.as_ref(),
        }
    }

    /// Whether `platform` has a provider.
    pub fn supports(&self, platform: Platform) -> bool {
        self.get(platform).is_some()
    }
}

/// Longest token accepted (FCM tokens are ~160 characters, APNs 64 hex digits).
const MAX_TOKEN: usize = 4096;

/// Checks a device before it is stored: a Web Push subscription for `web` (`allow_http`:
/// plain-http endpoints admitted), a token otherwise.
pub fn validate(
    platform: Platform,
    device: &Device,
    config: &crate::config::PushConfig,
) -> Result<(), String> {
    match (platform, device) {
        (Platform::Web, Device::WebPush { .. }) => webpush::validate(device, config),
        (Platform::Web, Device::Token(_)) => {
            Err("platform web needs the browser's subscription {endpoint, keys}".into())
        }
        (_, Device::Token(t)) => {
            // FCM tokens are `[A-Za-z0-9_:-]`, APNs tokens hex: nothing that needs escaping
            // in a URL path (APNs puts the token there) or a log line.
            let ok = |b: u8| b.is_ascii_alphanumeric() || b"_:-.~".contains(&b);
            if t.is_empty() || t.len() > MAX_TOKEN || !t.bytes().all(ok) {
                Err("invalid token".into())
            } else {
                Ok(())
            }
        }
        (_, Device::WebPush { .. }) => Err("a subscription object is for platform web only".into()),
    }
}

/// Classifies an HTTP answer by the rules every provider shares: 2xx sent, 404/410 gone,
/// 408/429/5xx transient (with `Retry-After` seconds), any other status refused for good.
pub(crate) fn classify(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    detail: &str,
) -> Result<(), SendError> {
    let code = status.as_u16();
    match code {
        200..=299 => Ok(()),
        404 | 410 => Err(SendError::Gone(format!("HTTP {code} {detail}"))),
        408 | 429 | 500..=599 => Err(SendError::Transient {
            reason: format!("HTTP {code} {detail}"),
            retry_after: retry_after(headers),
        }),
        _ => Err(SendError::Rejected(format!("HTTP {code} {detail}"))),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is treated as absent).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// A network failure: always transient.
pub(crate) fn network(e: reqwest::Error) -> SendError {
    SendError::Transient {
        reason: format!("network: {}", e.without_url()),
        retry_after: None,
    }
}

/// The first 200 characters of an error body, for logs.
pub(crate) async fn body_excerpt(r: reqwest::Response) -> String {
    excerpt(&r.text().await.unwrap_or_default())
}

/// The first 200 characters of `text`, for logs.
pub(crate) fn excerpt(text: &str) -> String {
    text.chars().take(200).collect()
}
