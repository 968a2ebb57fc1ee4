//! A push service of your own: each push is POSTed as JSON with
//! `X-Switchboard-Signature` = hex HMAC-SHA256 of the body with `push.webhook_secret`
//! (like Pusher webhooks). Answers are read like every provider's: 2xx sent, 404/410 the
//! device is gone, 408/429/5xx retried, anything else refused.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use super::{body_excerpt, classify, network, Message, Provider, SendError};
use crate::apps::Secret;
use crate::auth;
use crate::push::Device;

/// The webhook provider.
pub(super) struct Webhook {
    http: reqwest::Client,
    url: String,
    secret: Secret,
}

impl Webhook {
    pub(super) fn new(url: &str, secret: &str, timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            http,
            url: url.to_owned(),
            secret: Secret::new(secret),
        })
    }
}

#[async_trait]
impl Provider for Webhook {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn send(&self, device: &Device, msg: &Message, now_ms: u64) -> Result<(), SendError> {
        let device = match device {
            Device::Token(t) => json!({"token": t}),
            Device::WebPush {
                endpoint,
                p256dh,
                auth,
            } => {
                json!({"subscription": {"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}}})
            }
        };
        let body = json!({
            "app_id": msg.app.as_str(), "user_id": msg.user.as_str(), "device": device,
            "notification": {"title": msg.title, "body": msg.body, "type": msg.kind.as_str(),
                             "url": msg.link, "id": &*msg.id,
                             "collapse_key": msg.collapse_key()},
            "ttl": msg.ttl_secs(now_ms), "expires_at_ms": msg.expires_ms,
        })
        .to_string();
        let signature = auth::sign(&self.secret, body.as_bytes());
        let r = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-switchboard-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(network)?;
        let (status, headers) = (r.status(), r.headers().clone());
        if status.is_success() {
            return Ok(());
        }
        classify(status, &headers, &body_excerpt(r).await)
    }
}
