//! APNs over HTTP/2 with token authentication: an ES256 provider token (`kid` = key id,
//! `iss` = team id), reused for 50 minutes (Apple refuses tokens older than an hour and
//! throttles refreshes), `POST {endpoint}/3/device/{token}` with `apns-topic`,
//! `apns-push-type`, `apns-expiration` (the event's ttl) and `apns-priority`.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;
use serde_json::json;

use super::{classify, network, Message, Provider, SendError};
use crate::config::PushConfig;
use crate::push::Device;

/// A provider token is reused this long.
const TOKEN_REUSE_MS: u64 = 50 * 60_000;

/// The APNs provider.
pub(super) struct Apns {
    http: reqwest::Client,
    endpoint: String,
    topic: String,
    team: String,
    key_id: String,
    key: EncodingKey,
    /// The provider token and when it was issued (ms). Never held across `.await`.
    cached: Mutex<Option<(String, u64)>>,
}

#[derive(Deserialize)]
struct Refusal {
    #[serde(default)]
    reason: String,
}

impl Apns {
    pub(super) fn new(file: &str, config: &PushConfig, timeout: Duration) -> Result<Self, String> {
        let pem = std::fs::read(file).map_err(|e| format!("push.apns_key_file {file}: {e}"))?;
        let key = EncodingKey::from_ec_pem(&pem)
            .map_err(|_| format!("push.apns_key_file {file}: not a PKCS#8 P-256 PEM key"))?;
        // APNs speaks HTTP/2 only: over TLS, ALPN offers just h2; over plain http (a local
        // test server), prior knowledge.
        let http = reqwest::Client::builder()
            .http2_prior_knowledge()
            .timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            http,
            endpoint: config.apns_endpoint.trim_end_matches('/').to_owned(),
            topic: config.apns_topic.clone(),
            team: config.apns_team_id.clone(),
            key_id: config.apns_key_id.clone(),
            key,
            cached: Mutex::new(None),
        })
    }

    fn provider_token(&self, now_ms: u64) -> Result<String, SendError> {
        let mut cached = self.cached.lock().expect("apns token");
        if let Some((t, issued)) = cached.as_ref() {
            if now_ms < issued + TOKEN_REUSE_MS {
                return Ok(t.clone());
            }
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let claims = json!({"iss": self.team, "iat": now_ms / 1000});
        let t = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| SendError::Rejected(format!("APNs token signing failed: {e}")))?;
        *cached = Some((t.clone(), now_ms));
        Ok(t)
    }
}

#[async_trait]
impl Provider for Apns {
    fn name(&self) -> &'static str {
        "apns"
    }

    async fn send(&self, device: &Device, msg: &Message, now_ms: u64) -> Result<(), SendError> {
        let Device::Token(token) = device else {
            return Err(SendError::Gone("not an APNs token".into()));
        };
        let jwt = self.provider_token(now_ms)?;
        let mut body = msg.data();
        body["aps"] = json!({"alert": {"title": msg.title, "body": msg.body}, "sound": "default"});
        let priority = if msg.kind.is_urgent() { "10" } else { "5" };
        let mut req = self
            .http
            .post(format!("{}/3/device/{}", self.endpoint, token))
            .header("authorization", format!("bearer {jwt}"))
            .header("apns-topic", &self.topic)
            .header("apns-push-type", "alert")
            .header("apns-expiration", (msg.expires_ms / 1000).to_string())
            .header("apns-priority", priority);
        if let Some(key) = msg.collapse_key() {
            req = req.header("apns-collapse-id", key);
        }
        let r = req.json(&body).send().await.map_err(network)?;
        let (status, headers) = (r.status(), r.headers().clone());
        if status.is_success() {
            return Ok(());
        }
        let reason = r
            .json::<Refusal>()
            .await
            .map(|r| r.reason)
            .unwrap_or_default();
        match (status.as_u16(), reason.as_str()) {
            (400, "BadDeviceToken" | "DeviceTokenNotForTopic") | (410, _) => {
                Err(SendError::Gone(format!("HTTP {status} {reason}")))
            }
            // 404 from APNs is a bad path (configuration), not a gone device.
            (404, _) => Err(SendError::Rejected(format!("HTTP 404 {reason}"))),
            (403, "ExpiredProviderToken" | "InvalidProviderToken") => {
                *self.cached.lock().expect("apns token") = None;
                Err(SendError::Transient {
                    reason: format!("HTTP 403 {reason}"),
                    retry_after: None,
                })
            }
            _ => classify(status, &headers, &reason),
        }
    }
}
