//! The `Signed` extractor: resolves the app of `/apps/{id}/...` (or, on a route without
//! the app in its path, the app of the signed `auth_key`) and verifies Pusher's request
//! signature before any handler runs.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::Api;
use crate::apps::App;
use crate::auth;

/// How far `auth_timestamp` may be from the server's clock, in seconds.
const MAX_SKEW_SECS: i64 = 600;

/// A request whose signature has been verified.
pub struct Signed {
    /// The app named in the path, or else the one whose key signed the request.
    pub app: Arc<App>,
    /// Decoded query parameters.
    pub params: Vec<(String, String)>,
    /// The raw body (what `body_md5` covered).
    pub body: Bytes,
}

impl Signed {
    /// The first value of a query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl FromRequest<Arc<Api>> for Signed {
    type Rejection = ApiError;

    async fn from_request(req: Request, ctx: &Arc<Api>) -> Result<Self, ApiError> {
        let method = req.method().as_str().to_owned();
        // Verify against the path as the client signed it (no proxy prefix rewriting).
        let path = req.uri().path().to_owned();
        let params: Vec<(String, String)> = req
            .uri()
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let app_id = path
            .strip_prefix("/apps/")
            .and_then(|rest| rest.split('/').next())
            .map(percent_decode);
        let body = Bytes::from_request(req, &())
            .await
            .map_err(|e| ApiError::PayloadTooLarge(format!("Request body refused: {e}")))?;
        let found = match &app_id {
            Some(id) => ctx.apps.by_id(id).await,
            // Routes Pusher's SDKs address without `/apps/{id}` (the Python SDK's
            // `terminate_user_connections`): the app is the one whose key signed the request.
            None => match params.iter().find(|(k, _)| k == "auth_key") {
                Some((_, key)) => ctx.apps.by_key(key).await,
                None => return Err(ApiError::Unauthorized("Missing auth_key".into())),
            },
        };
        let app = found
            .map_err(|e| ApiError::Unavailable(e.to_string()))?
            .ok_or_else(|| match &app_id {
                Some(id) => ApiError::NotFound(format!("Unknown app {id:?}")),
                None => ApiError::Unauthorized("Invalid auth_key".into()),
            })?;
        verify(&app, &method, &path, &params, &body)?;
        if !app.enabled {
            return Err(ApiError::Forbidden("App is disabled".into()));
        }
        Ok(Signed { app, params, body })
    }
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Checks `auth_key`, `auth_timestamp` (±600 s), `auth_version`, `body_md5` and
/// `auth_signature`, all in the way Pusher's server SDKs produce them.
fn verify(
    app: &App,
    method: &str,
    path: &str,
    params: &[(String, String)],
    body: &[u8],
) -> Result<(), ApiError> {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let unauthorized = |m: &str| Err(ApiError::Unauthorized(m.to_owned()));
    let Some(key) = get("auth_key") else {
        return unauthorized("Missing auth_key");
    };
    if key != app.key {
        return unauthorized("Invalid auth_key");
    }
    let Some(ts) = get("auth_timestamp").and_then(|t| t.parse::<i64>().ok()) else {
        return unauthorized("Missing or invalid auth_timestamp");
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if (now - ts).abs() > MAX_SKEW_SECS {
        return unauthorized("auth_timestamp is more than 600 s from the server's clock");
    }
    if get("auth_version").is_some_and(|v| v != "1.0") {
        return unauthorized("Unsupported auth_version");
    }
    if !body.is_empty() {
        let md5 = hex::encode(Md5::digest(body));
        match get("body_md5") {
            Some(given) if bool::from(md5.as_bytes().ct_eq(given.as_bytes())) => {}
            Some(_) => return unauthorized("body_md5 does not match the body"),
            None => return unauthorized("Missing body_md5"),
        }
    }
    let Some(signature) = get("auth_signature") else {
        return unauthorized("Missing auth_signature");
    };
    let to_sign = auth::api_string_to_sign(method, path, params);
    if !auth::verify_app(app, to_sign.as_bytes(), signature) {
        return unauthorized("Invalid signature");
    }
    Ok(())
}
