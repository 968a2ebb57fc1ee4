//! WebSocket upgrade endpoints.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::Api;
use super::ApiError;
use crate::config::ServerConfig;
use crate::session::pusher::{self, Handshake};

/// Refuses an upgrade whose `Sec-WebSocket-Key` is not what RFC 6455 (4.1) requires: the
/// base64 encoding of 16 bytes. The upgrade extractor only checks that the header exists.
pub(super) fn check_key(headers: &HeaderMap) -> Result<(), ApiError> {
    use base64::Engine as _;
    let key = headers
        .get("sec-websocket-key")
        .map(|k| k.as_bytes())
        .unwrap_or_default();
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(nonce) if nonce.len() == 16 => Ok(()),
        _ => Err(ApiError::BadRequest(
            "Sec-WebSocket-Key must be the base64 of 16 bytes".into(),
        )),
    }
}

/// Applies the codec limits and buffer sizes to an upgrade.
pub(super) fn configure(ws: WebSocketUpgrade, c: &ServerConfig) -> WebSocketUpgrade {
    ws.read_buffer_size(c.ws_read_buffer)
        .write_buffer_size(c.ws_write_buffer)
        .max_message_size(c.max_message_bytes)
        .max_frame_size(c.max_message_bytes)
}

/// `GET /app/{key}`: a Pusher protocol connection. Refusals that Pusher defines as close
/// codes (unknown app, protocol, quota) happen after the upgrade, as the protocol requires.
pub async fn pusher(
    headers: HeaderMap,
    ws: WebSocketUpgrade,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    State(ctx): State<Arc<Api>>,
) -> Response {
    if let Err(e) = check_key(&headers) {
        return e.into_response();
    }
    if ctx.health.is_draining() {
        return ApiError::Unavailable("Server is shutting down".into()).into_response();
    }
    let app = match ctx.apps.by_key(&key).await {
        Ok(app) => app,
        Err(e) => return ApiError::Unavailable(e.to_string()).into_response(),
    };
    let protocol = query
        .get("protocol")
        .map(|p| p.parse::<u8>().map_err(|_| ()));
    // axum spawns the upgraded connection itself; the tracker token makes shutdown wait for it.
    let guard = ctx.sessions.tracker.token();
    configure(ws, &ctx.server).on_upgrade(move |socket| async move {
        pusher::run(socket, ctx.sessions.clone(), Handshake { app, protocol }).await;
        drop(guard);
    })
}
