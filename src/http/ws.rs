//! WebSocket upgrade endpoints.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::stream::{ReadHalf, WriteHalf};
use super::Api;
use super::ApiError;
use crate::session::pusher::{self, Handshake};
use crate::session::ws::{Limits, WebSocket};
use crate::session::Deps;

/// A WebSocket upgrade request, checked as RFC 6455 (4.2.1) wants before anything is
/// answered: `Upgrade: websocket`, `Connection: upgrade`, version 13, and a
/// `Sec-WebSocket-Key` that is the base64 of 16 bytes. Every refusal is a JSON error.
pub struct WsUpgrade {
    on_upgrade: hyper::upgrade::OnUpgrade,
    accept: HeaderValue,
}

impl<S: Send + Sync> FromRequestParts<S> for WsUpgrade {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let h = &parts.headers;
        let has_token = |name: header::HeaderName, token: &str| {
            h.get_all(name).iter().any(|v| {
                v.to_str()
                    .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            })
        };
        if !has_token(header::CONNECTION, "upgrade") {
            return Err(ApiError::BadRequest(
                "Connection header did not include 'upgrade'".into(),
            ));
        }
        if !has_token(header::UPGRADE, "websocket") {
            return Err(ApiError::BadRequest(
                "`Upgrade` header did not include 'websocket'".into(),
            ));
        }
        if h.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
            return Err(ApiError::BadRequest(
                "`Sec-WebSocket-Version` header did not include '13'".into(),
            ));
        }
        let key = check_key(h)?;
        let on_upgrade = parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .ok_or_else(|| ApiError::UpgradeRequired("WebSocket upgrade not possible".into()))?;
        let accept = derive_accept_key(key.as_bytes());
        let accept = HeaderValue::from_str(&accept).expect("base64 is a valid header value");
        Ok(Self { on_upgrade, accept })
    }
}

impl WsUpgrade {
    /// Answers 101 and runs `session` on the upgraded socket with the sessions' handles, in
    /// a task of its own that shutdown waits for.
    pub fn run<F, Fut>(self, api: &Api, session: F) -> Response
    where
        F: FnOnce(WebSocket<ReadHalf, WriteHalf>, Arc<Deps>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        let limits = Limits {
            max_message: api.server.max_message_bytes,
            read_size: api.server.ws_read_buffer,
            write_size: api.server.ws_write_buffer,
        };
        let deps = api.sessions.clone();
        api.sessions.tracker.spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let Ok((stream, guard, pre)) = super::serve::upgraded_socket(upgraded) else {
                tracing::error!("an upgraded connection that is not a socket of the door");
                return;
            };
            let (read, write) = stream.split();
            let socket = WebSocket {
                direct: write.direct(),
                read,
                write,
                pre,
                guard,
                limits,
            };
            session(socket, deps).await;
        });
        let mut res = Response::new(axum::body::Body::empty());
        *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = res.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept);
        res
    }
}

/// The `Sec-WebSocket-Key` of an upgrade, refused unless it is what RFC 6455 (4.1)
/// requires: the base64 encoding of 16 bytes.
fn check_key(headers: &HeaderMap) -> Result<&HeaderValue, ApiError> {
    use base64::Engine as _;
    let refused =
        || ApiError::BadRequest("Sec-WebSocket-Key must be the base64 of 16 bytes".into());
    let key = headers.get(header::SEC_WEBSOCKET_KEY).ok_or_else(refused)?;
    match base64::engine::general_purpose::STANDARD.decode(key.as_bytes()) {
        Ok(nonce) if nonce.len() == 16 => Ok(key),
        _ => Err(refused()),
    }
}

/// `GET /app/{key}`: a Pusher protocol connection. Refusals that Pusher defines as close
/// codes (unknown app, protocol, quota) happen after the upgrade, as the protocol requires.
pub async fn pusher(
    ws: WsUpgrade,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    State(ctx): State<Arc<Api>>,
) -> Response {
    let hs = match handshake(&ctx, &key, &query).await {
        Ok(hs) => hs,
        Err(e) => return e.into_response(),
    };
    ws.run(&ctx, move |socket, deps| pusher::run(socket, deps, hs))
}

/// What a Pusher session starts from, whatever its transport: refused with 503 while the node
/// drains or when the app store cannot answer; an unknown app or protocol version is the
/// session's to refuse, with its close code.
pub(super) async fn handshake(
    ctx: &Api,
    key: &str,
    query: &HashMap<String, String>,
) -> Result<Handshake, ApiError> {
    if ctx.health.is_draining() {
        return Err(ApiError::Unavailable("Server is shutting down".into()));
    }
    let app = ctx
        .apps
        .by_key(key)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let protocol = query
        .get("protocol")
        .map(|p| p.parse::<u8>().map_err(|_| ()));
    Ok(Handshake { app, protocol })
}
