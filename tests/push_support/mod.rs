//! Local push services for the push tests: one axum server (HTTP/1.1 and h2c) that plays a
//! browser's push service, FCM (OAuth token endpoint + messages:send) and APNs, checking
//! credentials itself and recording every request; plus RFC 8291 decryption done by hand
//! (p256 ECDH, HKDF-SHA256, AES-128-GCM) and VAPID verification, independent of the
//! server's crates.
#![allow(dead_code)]

pub mod flow;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes128Gcm, Nonce};
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hkdf::Hkdf;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::mpsc;

/// The test-only RSA key of the fake FCM service account.
pub const FCM_KEY: &str = include_str!("fcm_test_key.pem");
pub const FCM_PUB: &str = include_str!("fcm_test_pub.pem");
pub const FCM_TOKEN: &str = "at-test-1";
pub const APNS_KEY_ID: &str = "KEY123ABCD";
pub const APNS_TEAM: &str = "TEAM456XYZ";
pub const APNS_TOPIC: &str = "com.example.app";

/// A fresh P-256 key pair: (secret, uncompressed public key).
pub fn p256_pair() -> (p256::SecretKey, Vec<u8>) {
    loop {
        if let Ok(s) = p256::SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
            let public = s.public_key().to_encoded_point(false).as_bytes().to_vec();
            return (s, public);
        }
    }
}

/// A browser's push subscription: the keys stay here, the JSON goes to the server.
pub struct Browser {
    pub secret: p256::SecretKey,
    pub public: Vec<u8>,
    pub auth: [u8; 16],
    pub endpoint: String,
}

impl Browser {
    pub fn new(endpoint: String) -> Self {
        let (secret, public) = p256_pair();
        Self {
            secret,
            public,
            auth: rand::random(),
            endpoint,
        }
    }

    /// `PushSubscription.toJSON()`.
    pub fn subscription(&self) -> Value {
        json!({"endpoint": self.endpoint, "expirationTime": null,
               "keys": {"p256dh": B64.encode(&self.public), "auth": B64.encode(self.auth)}})
    }

    /// RFC 8291 / RFC 8188 decryption of an `aes128gcm` body, step by step.
    pub fn decrypt(&self, body: &[u8]) -> Vec<u8> {
        let salt = &body[..16];
        let rs = u32::from_be_bytes(body[16..20].try_into().unwrap()) as usize;
        let idlen = body[20] as usize;
        let as_public = &body[21..21 + idlen];
        let ciphertext = &body[21 + idlen..];
        assert_eq!(idlen, 65, "keyid is the sender's uncompressed public key");
        assert!(ciphertext.len() <= rs, "one record");
        let sender = p256::PublicKey::from_sec1_bytes(as_public).expect("sender key");
        let shared =
            p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), sender.as_affine());
        let mut info = b"WebPush: info\0".to_vec();
        info.extend_from_slice(&self.public);
        info.extend_from_slice(as_public);
        let mut ikm = [0u8; 32];
        Hkdf::<Sha256>::new(Some(&self.auth), shared.raw_secret_bytes())
            .expand(&info, &mut ikm)
            .unwrap();
        let prk = Hkdf::<Sha256>::new(Some(salt), &ikm);
        let (mut cek, mut nonce) = ([0u8; 16], [0u8; 12]);
        prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
            .unwrap();
        prk.expand(b"Content-Encoding: nonce\0", &mut nonce)
            .unwrap();
        let mut plain = Aes128Gcm::new_from_slice(&cek)
            .unwrap()
            .decrypt(Nonce::from_slice(&nonce), ciphertext)
            .expect("the payload decrypts with the subscription's keys");
        while plain.last() == Some(&0) {
            plain.pop();
        }
        assert_eq!(plain.pop(), Some(2), "last-record delimiter");
        plain
    }
}

/// The VAPID key pair configured on the server.
pub struct Vapid {
    pub private_b64: String,
    pub public: Vec<u8>,
}

impl Vapid {
    pub fn new() -> Self {
        let (s, public) = p256_pair();
        Self {
            private_b64: B64.encode(s.to_bytes()),
            public,
        }
    }

    /// Checks `Authorization: vapid t=<jwt>, k=<key>`: the key is ours, the ES256 signature
    /// verifies, `aud` is the endpoint's origin, `exp` within 24 h, `sub` the contact.
    pub fn verify(&self, authorization: &str, origin: &str, subject: &str) {
        let rest = authorization
            .strip_prefix("vapid ")
            .unwrap_or_else(|| panic!("not a vapid authorization: {authorization}"));
        let mut t = None;
        let mut k = None;
        for part in rest.split(',') {
            let part = part.trim();
            if let Some(v) = part.strip_prefix("t=") {
                t = Some(v);
            } else if let Some(v) = part.strip_prefix("k=") {
                k = Some(v);
            }
        }
        assert_eq!(
            B64.decode(k.expect("k=")).unwrap(),
            self.public,
            "k is the VAPID key"
        );
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&[origin]);
        v.set_required_spec_claims(&["exp", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<Value>(
            t.expect("t="),
            &DecodingKey::from_ec_der(&self.public),
            &v,
        )
        .expect("VAPID JWT verifies")
        .claims;
        assert_eq!(claims["sub"], subject);
        let exp = claims["exp"].as_u64().unwrap();
        assert!(
            exp <= crate::support::now() + 24 * 3600,
            "exp within 24 h: {claims}"
        );
    }
}

/// One request the fake services received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_else(|| panic!("no {name} header in {self:?}"))
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

struct State {
    seen: mpsc::UnboundedSender<Seen>,
    /// Failures still to answer per path (transient-failure tests).
    failures: Mutex<HashMap<String, u32>>,
    apns_key: Vec<u8>,
    /// The token endpoint's own URL: the audience its assertions must name.
    token_aud: String,
}

/// The fake push services.
pub struct Services {
    pub base: String,
    rx: mpsc::UnboundedReceiver<Seen>,
    state: Arc<State>,
}

impl Services {
    /// Starts on 127.0.0.1:0. `apns_public`: the public key of the APNs signing key.
    pub async fn start(apns_public: Vec<u8>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(State {
            seen: tx,
            failures: Mutex::new(HashMap::new()),
            apns_key: apns_public,
            token_aud: format!("{base}/token"),
        });
        let s = state.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, version: Version, headers: HeaderMap, body: Bytes| {
                let s = s.clone();
                async move { handle(&s, method, uri, version, headers, body) }
            },
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { base, rx, state }
    }

    /// The next `n` requests to `path` answer 503 with `Retry-After: 0`.
    pub fn fail(&self, path: &str, n: u32) {
        self.state
            .failures
            .lock()
            .unwrap()
            .insert(path.to_owned(), n);
    }

    /// The next request (any path); panics after 10 s.
    pub async fn next(&mut self) -> Seen {
        tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .expect("a push request within 10 s")
            .expect("server running")
    }

    /// Whether a request is already waiting (no wait).
    pub fn pending(&mut self) -> Option<Seen> {
        self.rx.try_recv().ok()
    }
}

fn reply(status: u16, body: Value) -> Response {
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

fn handle(
    s: &State,
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let seen = Seen {
        method,
        path: path.clone(),
        version,
        headers: headers.clone(),
        body: body.clone(),
    };
    let _ = s.seen.send(seen);
    {
        let mut f = s.failures.lock().unwrap();
        if let Some(n) = f.get_mut(&path).filter(|n| **n > 0) {
            *n -= 1;
            return ([("retry-after", "0")], StatusCode::SERVICE_UNAVAILABLE).into_response();
        }
    }
    let last = path.rsplit('/').next().unwrap_or_default().to_owned();
    if path == "/token" {
        return fcm_token(s, &body);
    }
    if path.ends_with("/messages:send") {
        let bearer = headers.get("authorization").and_then(|v| v.to_str().ok());
        if bearer != Some(&format!("Bearer {FCM_TOKEN}")) {
            return reply(401, json!({"error": {"status": "UNAUTHENTICATED"}}));
        }
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        let token = v["message"]["token"].as_str().unwrap_or_default();
        if let Some((_, code, status, error_code, message)) =
            FCM_REFUSALS.iter().find(|r| token.starts_with(r.0))
        {
            return reply(
                *code,
                json!({"error": {"code": code, "status": status, "message": message,
                "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                             "errorCode": error_code}]}}),
            );
        }
        return reply(200, json!({"name": "projects/p/messages/1"}));
    }
    if path.starts_with("/3/device/") {
        if let Err(reason) = apns_auth(s, &headers) {
            return reply(403, json!({"reason": reason}));
        }
        if last.starts_with("gone") {
            return reply(410, json!({"reason": "Unregistered", "timestamp": 1}));
        }
        return (StatusCode::OK, "").into_response();
    }
    match last.as_str() {
        l if l.starts_with("gone") => reply(410, json!({})),
        l if l.starts_with("bad") => reply(400, json!({})),
        _ => (StatusCode::CREATED, "").into_response(),
    }
}

/// FCM's answers, by token prefix: (prefix, HTTP status, status, errorCode, message) for a
/// stale token, an invalid one, another project's, and a message FCM refuses.
const FCM_REFUSALS: [(&str, u16, &str, &str, &str); 4] = [
    (
        "gone",
        404,
        "NOT_FOUND",
        "UNREGISTERED",
        "Requested entity was not found.",
    ),
    (
        "invalid",
        400,
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
        "The registration token is not a valid FCM registration token",
    ),
    (
        "mismatch",
        403,
        "PERMISSION_DENIED",
        "SENDER_ID_MISMATCH",
        "SenderId mismatch",
    ),
    (
        "badarg",
        400,
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
        "Invalid value at 'message.android.ttl'",
    ),
];

/// The OAuth2 token endpoint: only a correctly signed JWT-bearer assertion gets a token.
fn fcm_token(s: &State, body: &[u8]) -> Response {
    let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return reply(400, json!({"error": "unsupported_grant_type"}));
    }
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[s.token_aud.as_str()]);
    v.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
    let key = DecodingKey::from_rsa_pem(FCM_PUB.as_bytes()).unwrap();
    let claims = match jsonwebtoken::decode::<Value>(
        form.get("assertion").map_or("", String::as_str),
        &key,
        &v,
    ) {
        Ok(d) => d.claims,
        Err(_) => return reply(400, json!({"error": "invalid_grant"})),
    };
    if claims["iss"] != "push@test.iam.gserviceaccount.com"
        || claims["scope"] != "https://www.googleapis.com/auth/firebase.messaging"
    {
        return reply(400, json!({"error": "invalid_scope"}));
    }
    reply(
        200,
        json!({"access_token": FCM_TOKEN, "expires_in": 3599, "token_type": "Bearer"}),
    )
}

fn apns_auth(s: &State, headers: &HeaderMap) -> Result<(), &'static str> {
    verify_apns(headers, &s.apns_key)
}

/// APNs provider token check: `bearer <ES256 JWT>` with our `kid` and `iss`, recent `iat`.
pub fn verify_apns(headers: &HeaderMap, key: &[u8]) -> Result<(), &'static str> {
    let jwt = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bearer "))
        .ok_or("MissingProviderToken")?;
    let header = jsonwebtoken::decode_header(jwt).map_err(|_| "InvalidProviderToken")?;
    if header.kid.as_deref() != Some(APNS_KEY_ID) || header.alg != Algorithm::ES256 {
        return Err("InvalidProviderToken");
    }
    let mut v = Validation::new(Algorithm::ES256);
    v.set_required_spec_claims(&["iss"]);
    v.validate_exp = false;
    let claims = jsonwebtoken::decode::<Value>(jwt, &DecodingKey::from_ec_der(key), &v)
        .map_err(|_| "InvalidProviderToken")?
        .claims;
    let iat = claims["iat"].as_u64().unwrap_or(0);
    if claims["iss"] != APNS_TEAM || iat.abs_diff(crate::support::now()) > 3600 {
        return Err("ExpiredProviderToken");
    }
    Ok(())
}
