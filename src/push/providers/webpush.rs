//! Web Push: RFC 8030 delivery, RFC 8291 `aes128gcm` payload encryption (web-push-native)
//! and RFC 8292 VAPID (an ES256 JWT, signed here with jsonwebtoken).

use std::time::Duration;

use async_trait::async_trait;
use axum::http;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::EncodePrivateKey;
use serde_json::json;
use web_push_native::{Auth, WebPushBuilder};

use super::{body_excerpt, classify, network, Message, Provider, SendError};
use crate::config::PushConfig;
use crate::push::Device;

/// Browsers hand out base64url keys, with or without padding.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
/// Longest endpoint accepted (push services' URLs are a few hundred bytes).
const MAX_ENDPOINT: usize = 2048;
/// Lifetime of a VAPID token (RFC 8292: at most 24 hours).
const VAPID_SECS: u64 = 12 * 3600;

/// The Web Push provider.
pub(super) struct WebPush {
    http: reqwest::Client,
    key: EncodingKey,
    /// `k=`: the uncompressed public key, base64url.
    public: String,
    subject: String,
}

impl WebPush {
    /// `private`: base64url of the raw 32-byte P-256 scalar.
    pub(super) fn new(private: &str, subject: &str, timeout: Duration) -> Result<Self, String> {
        let bad = || "push.vapid_private_key is not a base64url P-256 private key".to_owned();
        let raw = B64.decode(private.trim()).map_err(|_| bad())?;
        let secret = p256::SecretKey::from_slice(&raw).map_err(|_| bad())?;
        let der = secret.to_pkcs8_der().map_err(|_| bad())?;
        let public = B64.encode(secret.public_key().to_encoded_point(false).as_bytes());
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            http,
            key: EncodingKey::from_ec_der(der.as_bytes()),
            public,
            subject: subject.to_owned(),
        })
    }

    /// `Authorization: vapid t=<jwt>, k=<public key>` for the endpoint's origin.
    fn authorization(&self, origin: &str, now_ms: u64) -> Result<String, SendError> {
        let claims = json!({"aud": origin, "exp": now_ms / 1000 + VAPID_SECS, "sub": self.subject});
        let jwt = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.key)
            .map_err(|e| SendError::Rejected(format!("VAPID signing failed: {e}")))?;
        Ok(format!("vapid t={jwt}, k={}", self.public))
    }
}

/// The parts of a subscription, decoded.
fn parts(device: &Device) -> Result<(http::Uri, p256::PublicKey, Auth), String> {
    let Device::WebPush {
        endpoint,
        p256dh,
        auth,
    } = device
    else {
        return Err("not a Web Push subscription".into());
    };
    if endpoint.len() > MAX_ENDPOINT {
        return Err("endpoint is too long".into());
    }
    let uri: http::Uri = endpoint.parse().map_err(|_| "invalid endpoint")?;
    if !matches!(uri.scheme_str(), Some("https" | "http")) || uri.authority().is_none() {
        return Err("endpoint must be an http(s) URL".into());
    }
    let key = B64
        .decode(p256dh)
        .ok()
        .and_then(|k| p256::PublicKey::from_sec1_bytes(&k).ok())
        .ok_or("keys.p256dh is not a base64url P-256 public key")?;
    let auth = B64
        .decode(auth)
        .ok()
        .filter(|a| a.len() == 16)
        .ok_or("keys.auth is not 16 bytes of base64url")?;
    Ok((uri, key, Auth::clone_from_slice(&auth)))
}

/// Checks a subscription: its keys, https (unless `config.webpush_allow_http`, for local test
/// servers) and a host of `config.webpush_hosts`.
pub(super) fn validate(device: &Device, config: &PushConfig) -> Result<(), String> {
    let (uri, _, _) = parts(device)?;
    if uri.scheme_str() == Some("http") && !config.webpush_allow_http {
        return Err("endpoint must be https".into());
    }
    let host = uri.host().unwrap_or("").to_ascii_lowercase();
    let allowed = config.webpush_hosts.is_empty()
        || config.webpush_hosts.iter().any(|h| {
            let h = h.to_ascii_lowercase();
            host == h || host.ends_with(&format!(".{h}"))
        });
    if !allowed {
        return Err(format!(
            "endpoint host {host:?} is not a known push service"
        ));
    }
    Ok(())
}

#[async_trait]
impl Provider for WebPush {
    fn name(&self) -> &'static str {
        "webpush"
    }

    async fn send(&self, device: &Device, msg: &Message, now_ms: u64) -> Result<(), SendError> {
        let (uri, key, auth) = parts(device).map_err(SendError::Gone)?;
        let origin = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or("https"),
            uri.authority().map_or("", |a| a.as_str())
        );
        let payload = json!({
            "title": msg.title, "body": msg.body, "type": msg.kind.as_str(),
            "url": msg.link, "id": &*msg.id,
        });
        let mut req = WebPushBuilder::new(uri, key, auth)
            .with_valid_duration(Duration::from_secs(msg.ttl_secs(now_ms)))
            .build(payload.to_string())
            .map_err(|e| SendError::Rejected(format!("encryption failed: {e}")))?;
        let urgency = if msg.kind.is_urgent() {
            "high"
        } else {
            "normal"
        };
        let headers = req.headers_mut();
        let authz = self.authorization(&origin, now_ms)?;
        headers.insert(
            http::header::AUTHORIZATION,
            authz
                .parse()
                .map_err(|_| SendError::Rejected("bad header".into()))?,
        );
        headers.insert("urgency", http::HeaderValue::from_static(urgency));
        if let Some(topic) = msg.collapse_key() {
            headers.insert("topic", http::HeaderValue::from_static(topic));
        }
        let req = reqwest::Request::try_from(req)
            .map_err(|e| SendError::Rejected(format!("bad request: {e}")))?;
        let r = self.http.execute(req).await.map_err(network)?;
        let (status, headers) = (r.status(), r.headers().clone());
        if status.is_success() {
            return Ok(());
        }
        classify(status, &headers, &body_excerpt(r).await)
    }
}
