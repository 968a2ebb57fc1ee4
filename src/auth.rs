//! HMAC-SHA256 signatures, as Pusher defines them. Every comparison is constant-time.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::apps::{App, Secret};
use crate::ids::SocketId;

type HmacSha256 = Hmac<Sha256>;

/// Hex HMAC-SHA256 of `msg` under `secret`.
pub fn sign(secret: &Secret, msg: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.expose()).expect("HMAC takes any key length");
    mac.update(msg);
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `signature` (hex) is the HMAC of `msg`, compared in constant time.
pub fn verify(secret: &Secret, msg: &[u8], signature: &str) -> bool {
    let expected = sign(secret, msg);
    // Lower-case hex is what every SDK sends; comparing the hex strings keeps the check
    // constant-time without a decode step that could fail early on odd input.
    expected.as_bytes().ct_eq(signature.as_bytes()).into()
}

/// Whether `signature` is the HMAC of `msg` under any secret `app` accepts now (its secret,
/// and the one before a rotation during its grace period). Every secret is checked, so the
/// time taken does not tell which one matched.
pub fn verify_app(app: &App, msg: &[u8], signature: &str) -> bool {
    app.secrets()
        .iter()
        .fold(false, |ok, secret| verify(secret, msg, signature) | ok)
}

/// Splits `"<app_key>:<signature>"` and checks the key belongs to `app`.
fn split_auth<'a>(app: &App, auth: &'a str) -> Option<&'a str> {
    let (key, sig) = auth.split_once(':')?;
    (key == app.key).then_some(sig)
}

/// Checks a private or presence channel `auth`. For presence, `channel_data` must be the
/// exact string the client sent: it is what the app's backend signed.
pub fn channel_auth_ok(
    app: &App,
    socket: SocketId,
    channel: &str,
    channel_data: Option<&str>,
    auth: &str,
) -> bool {
    let Some(sig) = split_auth(app, auth) else {
        return false;
    };
    let msg = match channel_data {
        Some(data) => format!("{socket}:{channel}:{data}"),
        None => format!("{socket}:{channel}"),
    };
    verify_app(app, msg.as_bytes(), sig)
}

/// Checks a `pusher:signin` `auth` over `socket_id::user::user_data`.
pub fn user_auth_ok(app: &App, socket: SocketId, user_data: &str, auth: &str) -> bool {
    let Some(sig) = split_auth(app, auth) else {
        return false;
    };
    verify_app(app, format!("{socket}::user::{user_data}").as_bytes(), sig)
}

/// The string the HTTP API signs: `METHOD\npath\nk=v&...`, with keys lower-cased and sorted,
/// values not URL-escaped, and `auth_signature` left out.
pub fn api_string_to_sign(method: &str, path: &str, params: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, &str)> = params
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .filter(|(k, _)| k != "auth_signature")
        .collect();
    pairs.sort();
    let query = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!("{method}\n{path}\n{query}")
}

/// The claims of a bus token (HS256 JWT signed with the app secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BusClaims {
    /// The app key.
    pub iss: String,
    /// The user id.
    pub sub: String,
    /// Expiry, Unix seconds. Required.
    pub exp: u64,
    /// Users whose presence this user may see.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watchlist: Vec<String>,
    /// Glob patterns of the rooms this user may join.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
}

/// The `iss` of a token, read before its signature is checked: it names the app whose
/// secret verifies it. Nothing else of an unverified token is used.
pub fn bus_token_issuer(token: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: String,
    }
    jsonwebtoken::dangerous::insecure_decode::<Iss>(token)
        .ok()
        .map(|t| t.claims.iss)
}

/// Verifies a bus token against `app`: HS256 only, signature, `iss` = app key, `exp` present
/// and in the future, non-empty `sub`.
pub fn verify_bus_token(app: &App, token: &str) -> Result<BusClaims, String> {
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.set_required_spec_claims(&["exp", "iss", "sub"]);
    v.set_issuer(&[app.key.as_str()]);
    v.leeway = 0;
    // A token signed before a rotation stays valid for the grace period.
    let mut result = Err(String::new());
    for secret in &app.secrets() {
        let key = jsonwebtoken::DecodingKey::from_secret(secret.expose());
        result = jsonwebtoken::decode::<BusClaims>(token, &key, &v).map_err(|e| e.to_string());
        if result.is_ok() {
            break;
        }
    }
    let data = result?;
    crate::ids::UserId::parse(&data.claims.sub).map_err(|e| format!("sub: {e}"))?;
    Ok(data.claims)
}

/// Signs bus claims with the app secret.
pub fn mint_bus_token(app: &App, claims: &BusClaims) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(app.secret().expose());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), claims, &key)
        .expect("HS256 signing with an HMAC key cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pusher_docs_worked_example() {
        // From Pusher's HTTP API reference (auth signature example).
        let secret = Secret::new("7ad3773142a6692b25b8");
        let params: Vec<(String, String)> = [
            ("auth_key", "278d425bdf160c739803"),
            ("auth_timestamp", "1353088179"),
            ("auth_version", "1.0"),
            ("body_md5", "ec365a775a4cd0599faeb73354201b6f"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let s = api_string_to_sign("POST", "/apps/3/events", &params);
        assert_eq!(
            sign(&secret, s.as_bytes()),
            "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
    }

    #[test]
    fn verify_rejects_near_misses() {
        let secret = Secret::new("s");
        let good = sign(&secret, b"m");
        assert!(verify(&secret, b"m", &good));
        assert!(!verify(&secret, b"m", &good[1..]));
        assert!(!verify(&secret, b"m", &good.to_uppercase()));
        assert!(!verify(&secret, b"n", &good));
    }
}
