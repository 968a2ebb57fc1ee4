//! WebSocket upgrade endpoints.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::config::ServerConfig;
use crate::context::Context;
use crate::session::pusher::{self, Handshake};

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
    ws: WebSocketUpgrade,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    State(ctx): State<Arc<Context>>,
) -> Response {
    if ctx.is_draining() {
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
    let guard = ctx.tracker.token();
    configure(ws, &ctx.config.server).on_upgrade(move |socket| async move {
        pusher::run(socket, ctx, Handshake { app, protocol }).await;
        drop(guard);
    })
}
