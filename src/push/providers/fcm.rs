//! FCM HTTP v1: an OAuth2 access token from the service account (a JWT assertion signed
//! with its RSA key, RFC 7523), then `POST {endpoint}/v1/projects/{project}/messages:send`.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;
use serde_json::json;

use super::{body_excerpt, classify, excerpt, network, Message, Provider, SendError};
use crate::push::Device;

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// A cached access token is renewed this long before it expires.
const RENEW_MS: u64 = 60_000;

#[derive(Deserialize)]
struct ServiceAccount {
    project_id: String,
    client_email: String,
    private_key: String,
    #[serde(default = "default_token_uri")]
    token_uri: String,
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".into()
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: u64,
}

/// The FCM provider.
pub(super) struct Fcm {
    http: reqwest::Client,
    send_url: String,
    client_email: String,
    token_uri: String,
    key: EncodingKey,
    /// The access token and when it expires (ms). A std mutex: never held across `.await`.
    cached: Mutex<Option<(String, u64)>>,
}

impl Fcm {
    /// From the service account JSON at `file`; `endpoint` is the FCM base URL.
    pub(super) fn new(file: &str, endpoint: &str, timeout: Duration) -> Result<Self, String> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("push.fcm_credentials_file {file}: {e}"))?;
        let sa: ServiceAccount = serde_json::from_str(&text)
            .map_err(|e| format!("push.fcm_credentials_file {file}: {e}"))?;
        let key = EncodingKey::from_rsa_pem(sa.private_key.as_bytes()).map_err(|_| {
            format!("push.fcm_credentials_file {file}: private_key is not an RSA PEM key")
        })?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            http,
            send_url: format!(
                "{}/v1/projects/{}/messages:send",
                endpoint.trim_end_matches('/'),
                sa.project_id
            ),
            client_email: sa.client_email,
            token_uri: sa.token_uri,
            key,
            cached: Mutex::new(None),
        })
    }

    /// A valid access token: the cached one, or a new one from the token endpoint.
    async fn access_token(&self, now_ms: u64) -> Result<String, SendError> {
        if let Some((t, exp)) = self.cached.lock().expect("fcm token").as_ref() {
            if *exp > now_ms + RENEW_MS {
                return Ok(t.clone());
            }
        }
        let iat = now_ms / 1000;
        let claims = json!({
            "iss": self.client_email, "scope": SCOPE, "aud": self.token_uri,
            "iat": iat, "exp": iat + 3600,
        });
        let assertion = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map_err(|e| SendError::Rejected(format!("FCM assertion signing failed: {e}")))?;
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
            .append_pair("assertion", &assertion)
            .finish();
        let r = self
            .http
            .post(&self.token_uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .map_err(network)?;
        let (status, headers) = (r.status(), r.headers().clone());
        if !status.is_success() {
            let detail = format!("token endpoint: {}", body_excerpt(r).await);
            classify(status, &headers, &detail).map_err(|e| match e {
                // A refused grant is a configuration problem, not a gone device.
                SendError::Gone(m) => SendError::Rejected(m),
                other => other,
            })?;
            return Err(SendError::Rejected("token endpoint refused".into()));
        }
        let answer: TokenAnswer = r.json().await.map_err(|e| SendError::Transient {
            reason: format!("token endpoint answer: {}", e.without_url()),
            retry_after: None,
        })?;
        let exp = now_ms + answer.expires_in.max(60) * 1000;
        *self.cached.lock().expect("fcm token") = Some((answer.access_token.clone(), exp));
        Ok(answer.access_token)
    }
}

#[async_trait]
impl Provider for Fcm {
    fn name(&self) -> &'static str {
        "fcm"
    }

    async fn send(&self, device: &Device, msg: &Message, now_ms: u64) -> Result<(), SendError> {
        let Device::Token(token) = device else {
            return Err(SendError::Gone("not an FCM token".into()));
        };
        let access = self.access_token(now_ms).await?;
        let mut android = json!({"ttl": format!("{}s", msg.ttl_secs(now_ms)), "priority": "HIGH"});
        if let Some(key) = msg.collapse_key() {
            android["collapse_key"] = key.into();
            android["notification"] = json!({"tag": key});
        }
        let body = json!({"message": {
            "token": token,
            "notification": {"title": msg.title, "body": msg.body},
            "data": msg.data(),
            "android": android,
        }});
        let r = self
            .http
            .post(&self.send_url)
            .bearer_auth(access)
            .json(&body)
            .send()
            .await
            .map_err(network)?;
        let (status, headers) = (r.status(), r.headers().clone());
        if status.is_success() {
            return Ok(());
        }
        if status == reqwest::StatusCode::UNAUTHORIZED {
            // The access token was revoked or expired early: fetch a new one on the retry.
            *self.cached.lock().expect("fcm token") = None;
            return Err(SendError::Transient {
                reason: "HTTP 401 (access token refused)".into(),
                retry_after: None,
            });
        }
        let body = r.text().await.unwrap_or_default();
        let detail = excerpt(&body);
        if token_gone(status.as_u16(), &body) {
            return Err(SendError::Gone(format!("HTTP {status} {detail}")));
        }
        classify(status, &headers, &detail)
    }
}

/// Whether FCM's error answer says the token will never work again, per Firebase's
/// guidance on stale tokens: `UNREGISTERED`, `SENDER_ID_MISMATCH` (the token belongs to
/// another project), or `INVALID_ARGUMENT` about the registration token itself. Any other
/// `INVALID_ARGUMENT` is about our message and must not cost the user their device.
fn token_gone(status: u16, body: &str) -> bool {
    #[derive(Deserialize)]
    struct Answer {
        error: Refusal,
    }
    #[derive(Deserialize)]
    struct Refusal {
        #[serde(default)]
        message: String,
        #[serde(default)]
        details: Vec<Detail>,
    }
    #[derive(Deserialize)]
    struct Detail {
        #[serde(default, rename = "errorCode")]
        error_code: String,
    }
    let Ok(Answer { error }) = serde_json::from_str::<Answer>(body) else {
        return false;
    };
    error.details.iter().any(|d| match d.error_code.as_str() {
        "UNREGISTERED" | "SENDER_ID_MISMATCH" => true,
        "INVALID_ARGUMENT" => status == 400 && error.message.contains("registration token"),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::token_gone;

    fn answer(code: &str, message: &str) -> String {
        serde_json::json!({"error": {"message": message, "details": [
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}
        ]}})
        .to_string()
    }

    #[test]
    fn stale_tokens_are_told_apart_from_refused_messages() {
        let invalid = "The registration token is not a valid FCM registration token";
        assert!(token_gone(404, &answer("UNREGISTERED", "not found")));
        assert!(token_gone(
            403,
            &answer("SENDER_ID_MISMATCH", "SenderId mismatch")
        ));
        assert!(token_gone(400, &answer("INVALID_ARGUMENT", invalid)));
        let bad_ttl = "Invalid value at 'message.android.ttl'";
        assert!(!token_gone(400, &answer("INVALID_ARGUMENT", bad_ttl)));
        assert!(!token_gone(401, &answer("THIRD_PARTY_AUTH_ERROR", invalid)));
        assert!(!token_gone(503, &answer("UNAVAILABLE", "try later")));
        assert!(!token_gone(400, "<html>bad gateway</html>"));
    }
}
