//! What an app has: this node's connections, the cluster's channels and members, channel
//! history; and the console's actions (a test event, terminating a user's connections).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Admin, AdminError};
use crate::apps::App;
use crate::event::{Event, EventKind, Meta, Origin, Target};
use crate::ids::{ChannelKind, ChannelName, UserId};
use crate::publish::input;

/// Connections listed at most.
const MAX_LISTED: usize = 1000;
/// History events returned at most.
const MAX_HISTORY: usize = 500;

fn app(admin: &Admin, id: &str) -> Result<Arc<App>, AdminError> {
    admin
        .apps
        .get(id)
        .map(|s| s.app)
        .ok_or_else(|| AdminError::new(StatusCode::NOT_FOUND, format!("No app {id:?}")))
}

fn channel(name: &str) -> Result<ChannelName, AdminError> {
    ChannelName::parse(name).map_err(|e| AdminError::field("channel", e.to_string()))
}

fn down(e: impl std::fmt::Display) -> AdminError {
    AdminError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

/// `GET /admin/apps/{id}/connections`: this node's.
pub async fn connections(
    State(admin): State<Arc<Admin>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AdminError> {
    let app = app(&admin, &id)?;
    let (count, list) = admin.hub.roster(&app.id, MAX_LISTED);
    Ok(Json(json!({ "count": count, "connections": list })))
}

/// `GET /admin/apps/{id}/channels`: occupied channels with cluster-wide counts.
pub async fn channels(
    State(admin): State<Arc<Admin>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AdminError> {
    let app = app(&admin, &id)?;
    let mut list = admin
        .presence
        .occupancy(&app.id, None)
        .await
        .map_err(down)?;
    list.sort_by(|a, b| a.0.cmp(&b.0));
    let channels: Vec<Value> = list
        .iter()
        .map(|(c, n)| json!({ "name": c.as_str(), "subscription_count": n }))
        .collect();
    Ok(Json(json!({ "channels": channels })))
}

/// `GET /admin/apps/{id}/channels/{channel}/members`.
pub async fn members(
    State(admin): State<Arc<Admin>>,
    Path((id, name)): Path<(String, String)>,
) -> Result<Json<Value>, AdminError> {
    let app = app(&admin, &id)?;
    let ch = channel(&name)?;
    if ch.kind() != ChannelKind::Presence {
        return Err(AdminError::field(
            "channel",
            "only presence channels have members",
        ));
    }
    let members = admin.presence.members(&app.id, &ch).await.map_err(down)?;
    let members: Vec<Value> = members
        .iter()
        .map(|m| {
            let info: Value = serde_json::from_str(&m.user_info).unwrap_or(Value::Null);
            json!({ "id": m.user_id.as_str(), "info": info })
        })
        .collect();
    Ok(Json(json!({ "members": members })))
}

#[derive(Deserialize)]
pub struct Limit {
    limit: Option<usize>,
}

/// `GET /admin/apps/{id}/channels/{channel}/history?limit=`: the last events kept, oldest
/// first.
pub async fn history(
    State(admin): State<Arc<Admin>>,
    Path((id, name)): Path<(String, String)>,
    Query(q): Query<Limit>,
) -> Result<Json<Value>, AdminError> {
    let app = app(&admin, &id)?;
    let ch = channel(&name)?;
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_HISTORY);
    let stream = format!("c:{ch}");
    // "0-0" precedes every id: the whole of what is kept.
    let h = admin
        .streams
        .history(&app.id, &stream, "0-0")
        .await
        .map_err(down)?;
    let skip = h.events.len().saturating_sub(limit);
    let events: Vec<Value> = h.events[skip..]
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Message { name, data, .. } => Some(json!({
                "id": e.meta.id.as_deref(),
                "event": &**name,
                "data": &**data,
                "ts_ms": e.meta.ts_ms,
                "source": e.meta.origin.label(),
            })),
            _ => None,
        })
        .collect();
    Ok(Json(json!({ "events": events })))
}

/// `POST /admin/apps/{id}/users/{user_id}/terminate`.
pub async fn terminate(
    State(admin): State<Arc<Admin>>,
    Path((id, user)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), AdminError> {
    let app = app(&admin, &id)?;
    let user = UserId::parse(&user).map_err(|e| AdminError::field("user_id", e.to_string()))?;
    let event = Event {
        app: app.id.clone(),
        target: Target::User(user),
        kind: EventKind::Terminate,
        exclude: None,
        meta: Meta::default(),
    };
    admin.publisher.publish(event).await.map_err(down)?;
    Ok((StatusCode::ACCEPTED, Json(json!({}))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestEvent {
    channel: String,
    event: String,
    data: Value,
}

/// `POST /admin/apps/{id}/events`: the console's test event, published as the HTTP API
/// would (`data` a string, or JSON sent as its text).
pub async fn send_event(
    State(admin): State<Arc<Admin>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, AdminError> {
    let app = app(&admin, &id)?;
    let t: TestEvent = serde_json::from_slice(&body)
        .map_err(|e| AdminError::new(StatusCode::BAD_REQUEST, format!("Invalid body: {e}")))?;
    let ch = channel(&t.channel)?;
    input::event_name(&t.event).map_err(|e| AdminError::field("event", e.to_string()))?;
    let text = match t.data {
        Value::String(s) => s,
        other => other.to_string(),
    };
    if text.len() > app.limits.max_event_bytes {
        return Err(AdminError::field(
            "data",
            format!("over {} bytes", app.limits.max_event_bytes),
        ));
    }
    let event = Event {
        app: app.id.clone(),
        target: Target::Channel(ch),
        kind: EventKind::Message {
            name: t.event.as_str().into(),
            data: Value::String(text).to_string().into(),
            user_id: None,
            tags: None,
        },
        exclude: None,
        meta: Meta {
            origin: Origin::Console,
            ..Meta::default()
        },
    };
    crate::metrics::published("console");
    admin.publisher.publish(event).await.map_err(down)?;
    Ok(Json(json!({})))
}
