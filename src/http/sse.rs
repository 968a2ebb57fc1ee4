//! The bus over Server-Sent Events, for clients whose network breaks WebSocket upgrades:
//! `GET /ws/bus/sse` is the stream (the same frames as `/ws/bus`), `POST /ws/bus/send` brings
//! the client's messages to it. The same token authenticates both; a session answers only
//! POSTs of the user who opened it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::bus::{bus_login, handshake};
use super::error::ApiError;
use super::Api;
use crate::ids::AppId;
use crate::protocol::bus::Since;
use crate::session::bus;
use crate::session::sse::{Sse, BODY_CHUNKS, INBOUND, KEEP_ALIVE};

/// Most client messages in one POST.
const MAX_MESSAGES: usize = 20;

/// The open SSE sessions of this node, by `session_id`: where their POSTs go.
#[derive(Default)]
pub struct SseSessions(Mutex<HashMap<String, Entry>>);

struct Entry {
    app: AppId,
    user: String,
    inbound: mpsc::Sender<String>,
}

/// A session's registration; dropping it (with the session) removes it.
struct Registered {
    sessions: Arc<Api>,
    id: String,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.sessions
            .sse
            .0
            .lock()
            .expect("sse lock poisoned")
            .remove(&self.id);
    }
}

/// `GET /ws/bus/sse?token=JWT` (or `Authorization: Bearer`): the bus as `text/event-stream`.
/// Refused as the upgrade is (401, 403, 429, 503), before anything is created.
/// `Last-Event-ID` makes the first subscribe without `since` resume from that id.
pub async fn stream(
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    State(ctx): State<Arc<Api>>,
) -> Result<Response, ApiError> {
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64)
        .map(|v| Box::new(Since::All(v.to_owned())));
    let hs = handshake(&ctx, &query, &headers, resume).await?;
    let id = hs.id;
    let (body_tx, body_rx) = mpsc::channel::<Bytes>(BODY_CHUNKS);
    let (in_tx, in_rx) = mpsc::channel::<String>(INBOUND);
    ctx.sse.0.lock().expect("sse lock poisoned").insert(
        id.to_string(),
        Entry {
            app: hs.app.id.clone(),
            user: hs.claims.sub.clone(),
            inbound: in_tx,
        },
    );
    let guard = Registered {
        sessions: ctx.clone(),
        id: id.to_string(),
    };
    let cut = CancellationToken::new();
    let transport = Sse {
        body: body_tx,
        inbound: in_rx,
        cut: cut.clone(),
        guard: Box::new(guard),
        write_size: ctx.server.ws_write_buffer,
    };
    let deps = ctx.sessions.clone();
    ctx.sessions.tracker.spawn(bus::run(transport, deps, hs));
    Ok(event_stream(body_rx, cut))
}

/// The response: the session's chunks, with a keep-alive comment when the stream has been
/// quiet; dropping it (the client left) cuts the session.
fn event_stream(chunks: mpsc::Receiver<Bytes>, cut: CancellationToken) -> Response {
    let guard = cut.drop_guard();
    let chunks = futures_util::stream::unfold((chunks, guard), |(mut rx, guard)| async move {
        let next = match tokio::time::timeout(KEEP_ALIVE, rx.recv()).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return None,
            Err(_) => Bytes::from_static(b": keep-alive\n\n"),
        };
        Some((Ok::<_, std::convert::Infallible>(next), (rx, guard)))
    });
    let mut res = Response::new(Body::from_stream(chunks.boxed()));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx would otherwise buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    super::xhr::cors(&mut res);
    res
}

/// `POST /ws/bus/send?session=ID` with the stream's token: one client message or an array of
/// them, handed to the session in order; 204 once queued (answers arrive on the stream), 404
/// for a session that is not open here or not this user's, 429 when it has too many waiting.
pub async fn send(
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    State(ctx): State<Arc<Api>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (app, claims) = bus_login(&ctx, &query, &headers).await?;
    let unknown = || ApiError::NotFound("No such session".into());
    let session = query.get("session").ok_or_else(unknown)?;
    let inbound = {
        let sessions = ctx.sse.0.lock().expect("sse lock poisoned");
        let entry = sessions.get(session).ok_or_else(unknown)?;
        if entry.app != app.id || entry.user != claims.sub {
            return Err(unknown());
        }
        entry.inbound.clone()
    };
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("Body is not JSON: {e}")))?;
    let messages = match value {
        Value::Array(items) if items.len() <= MAX_MESSAGES => items,
        Value::Array(_) => {
            return Err(ApiError::BadRequest(format!(
                "At most {MAX_MESSAGES} messages per request"
            )))
        }
        one => vec![one],
    };
    let max = ctx.server.max_message_bytes;
    let texts: Vec<String> = messages.iter().map(Value::to_string).collect();
    if texts.iter().any(|t| t.len() > max) {
        return Err(ApiError::PayloadTooLarge(format!(
            "A message is over {max} bytes"
        )));
    }
    if inbound.capacity() < texts.len() {
        return Err(ApiError::TooManyRequests(
            "Too many messages waiting for this session".into(),
        ));
    }
    for text in texts {
        // A POST racing another for the last room may still find it full: 429 for the rest.
        match inbound.try_send(text) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(ApiError::TooManyRequests(
                    "Too many messages waiting for this session".into(),
                ))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(unknown()),
        }
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    super::xhr::cors(&mut res);
    Ok(res)
}
