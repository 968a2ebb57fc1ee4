//! Pusher's HTTP API: trigger, batch trigger, channel queries, terminate connections.
//! Handlers parse, call the broker or the hub, and map the result.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::signed::Signed;
use super::Api;
use crate::apps::App;
use crate::event::{Event, EventKind, Meta, Origin, Priority, Target};
use crate::filter::{parse_tags, Tags};
use crate::idempotency::Idempotency;
use crate::ids::{AppId, ChannelKind, ChannelName, SocketId, UserId};
use crate::metrics;
use crate::publish::input;

#[derive(Deserialize)]
struct Trigger<'a> {
    name: String,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    socket_id: Option<String>,
    #[serde(default)]
    info: Option<String>,
    #[serde(default)]
    tags: Option<Value>,
    #[serde(default)]
    priority: Priority,
    #[serde(default)]
    ttl: Option<u32>,
    /// A retry with the same key publishes nothing twice (per channel).
    #[serde(default)]
    idempotency_key: Option<String>,
}

#[derive(Deserialize)]
struct Batch<'a> {
    #[serde(borrow)]
    batch: Vec<Trigger<'a>>,
}

/// A validated trigger, ready to publish.
struct Checked {
    tags: Option<Arc<Tags>>,
    meta: Meta,
    name: String,
    data: Arc<str>,
    channels: Vec<ChannelName>,
    exclude: Option<SocketId>,
    info: Vec<String>,
    key: Option<String>,
}

fn check(app: &App, t: Trigger<'_>) -> Result<Checked, ApiError> {
    if let Some(k) = &t.idempotency_key {
        Idempotency::check_key(k).map_err(ApiError::BadRequest)?;
    }
    input::event_name(&t.name)?;
    let names = match (t.channels, t.channel) {
        (Some(list), None) => list,
        (None, Some(one)) => vec![one],
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "Give either channels or channel, not both".into(),
            ))
        }
        (None, None) => return Err(ApiError::BadRequest("Missing channels".into())),
    };
    if names.is_empty() || names.len() > app.limits.max_channels_per_event {
        return Err(ApiError::BadRequest(format!(
            "Between 1 and {} channels per event",
            app.limits.max_channels_per_event
        )));
    }
    let channels = names
        .iter()
        .map(|n| input::channel(n))
        .collect::<Result<Vec<_>, _>>()?;
    let data = input::pusher_data(t.data.get(), app.limits.max_event_bytes)?;
    let exclude = match t.socket_id {
        None => None,
        Some(s) => Some(
            SocketId::parse(&s)
                .ok_or_else(|| ApiError::BadRequest(format!("Invalid socket_id {s:?}")))?,
        ),
    };
    let info: Vec<String> = t
        .info
        .map(|i| i.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    // Refuse before publishing: an error answer must mean nothing was sent.
    if info.iter().any(|i| i == "user_count")
        && channels.iter().any(|c| c.kind() != ChannelKind::Presence)
    {
        return Err(ApiError::BadRequest(
            "user_count is only available for presence channels".into(),
        ));
    }
    let tags = match &t.tags {
        None => None,
        Some(v) => {
            Some(Arc::new(parse_tags(v).map_err(|e| {
                ApiError::BadRequest(format!("Invalid tags: {e}"))
            })?))
        }
    };
    Ok(Checked {
        tags,
        meta: Meta {
            priority: t.priority,
            ttl: t.ttl,
            ..Meta::default()
        },
        name: t.name,
        data,
        channels,
        exclude,
        info,
        key: t.idempotency_key,
    })
}

async fn publish(ctx: &Api, app: &AppId, c: &Checked) -> Result<(), ApiError> {
    for ch in &c.channels {
        let target = match ch.server_to_user() {
            Some(user) => Target::User(UserId::new(user)),
            None => Target::Channel(ch.clone()),
        };
        let event = Event {
            app: app.clone(),
            target,
            kind: EventKind::Message {
                name: c.name.as_str().into(),
                data: c.data.clone(),
                user_id: None,
                tags: c.tags.clone(),
            },
            exclude: c.exclude,
            meta: Meta {
                origin: Origin::Api,
                ..c.meta.clone()
            },
        };
        metrics::published("api");
        let key = c.key.as_ref().map(|k| format!("{k}|{ch}"));
        ctx.publisher.publish_once(event, key.as_deref()).await?;
    }
    Ok(())
}

/// Cluster-wide subscribers of one channel.
async fn subscription_count(ctx: &Api, app: &AppId, ch: &ChannelName) -> Result<usize, ApiError> {
    let counts = ctx
        .presence
        .occupancy(app, Some(ch))
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(counts.first().map_or(0, |(_, n)| *n))
}

/// Channel attributes requested through `info`.
async fn channel_info(
    ctx: &Api,
    app: &AppId,
    ch: &ChannelName,
    info: &[String],
) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    if info.iter().any(|i| i == "subscription_count") {
        out.insert(
            "subscription_count".into(),
            subscription_count(ctx, app, ch).await?.into(),
        );
    }
    if info.iter().any(|i| i == "user_count") {
        if ch.kind() != ChannelKind::Presence {
            return Err(ApiError::BadRequest(
                "user_count is only available for presence channels".into(),
            ));
        }
        let members = ctx
            .presence
            .members(app, ch)
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        out.insert("user_count".into(), members.len().into());
    }
    Ok(out)
}

/// `POST /apps/{id}/events`.
pub async fn events(State(ctx): State<Arc<Api>>, req: Signed) -> Result<Json<Value>, ApiError> {
    let t: Trigger<'_> = input::json(&req.body)?;
    let c = check(&req.app, t)?;
    publish(&ctx, &req.app.id, &c).await?;
    if c.info.is_empty() {
        return Ok(Json(json!({})));
    }
    let mut channels = Map::new();
    for ch in &c.channels {
        let attrs = channel_info(&ctx, &req.app.id, ch, &c.info).await?;
        channels.insert(ch.to_string(), Value::Object(attrs));
    }
    Ok(Json(json!({ "channels": channels })))
}

/// `POST /apps/{id}/batch_events`.
pub async fn batch_events(
    State(ctx): State<Arc<Api>>,
    req: Signed,
) -> Result<Json<Value>, ApiError> {
    let b: Batch<'_> = input::json(&req.body)?;
    if b.batch.len() > req.app.limits.max_batch_size {
        return Err(ApiError::BadRequest(format!(
            "At most {} events per batch",
            req.app.limits.max_batch_size
        )));
    }
    // Validate the whole batch before publishing any of it.
    let checked = b
        .batch
        .into_iter()
        .map(|t| {
            let c = check(&req.app, t)?;
            if c.channels.len() != 1 {
                return Err(ApiError::BadRequest(
                    "Each batch event takes one channel".into(),
                ));
            }
            Ok(c)
        })
        .collect::<Result<Vec<_>, _>>()?;
    for c in &checked {
        publish(&ctx, &req.app.id, c).await?;
    }
    if checked.iter().all(|c| c.info.is_empty()) {
        return Ok(Json(json!({})));
    }
    let mut out = Vec::with_capacity(checked.len());
    for c in &checked {
        out.push(Value::Object(
            channel_info(&ctx, &req.app.id, &c.channels[0], &c.info).await?,
        ));
    }
    Ok(Json(json!({ "batch": out })))
}

fn info_param(req: &Signed) -> Vec<String> {
    req.param("info")
        .map(|i| i.split(',').map(str::to_owned).collect())
        .unwrap_or_default()
}

/// `GET /apps/{id}/channels`.
pub async fn channels(State(ctx): State<Arc<Api>>, req: Signed) -> Result<Json<Value>, ApiError> {
    let prefix = req.param("filter_by_prefix").unwrap_or("");
    let info = info_param(&req);
    if info.iter().any(|i| i == "user_count") && !prefix.starts_with("presence-") {
        return Err(ApiError::BadRequest(
            "info=user_count requires filter_by_prefix=presence-".into(),
        ));
    }
    let mut list = ctx
        .presence
        .occupancy(&req.app.id, None)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    list.retain(|(c, _)| c.as_str().starts_with(prefix));
    list.sort_by(|a, b| a.0.cmp(&b.0));
    let mut channels = Map::new();
    for (ch, _) in list {
        let attrs = channel_info(&ctx, &req.app.id, &ch, &info).await?;
        channels.insert(ch.to_string(), Value::Object(attrs));
    }
    Ok(Json(json!({ "channels": channels })))
}

fn channel_path(name: &str) -> Result<ChannelName, ApiError> {
    ChannelName::parse(name).map_err(|e| ApiError::BadRequest(format!("Invalid channel name: {e}")))
}

/// `GET /apps/{id}/channels/{name}`.
pub async fn channel(
    State(ctx): State<Arc<Api>>,
    Path((_, name)): Path<(String, String)>,
    req: Signed,
) -> Result<Json<Value>, ApiError> {
    let ch = channel_path(&name)?;
    let mut attrs = channel_info(&ctx, &req.app.id, &ch, &info_param(&req)).await?;
    let occupied = subscription_count(&ctx, &req.app.id, &ch).await? > 0;
    attrs.insert("occupied".into(), occupied.into());
    Ok(Json(Value::Object(attrs)))
}

/// `GET /apps/{id}/channels/{name}/users`.
pub async fn users(
    State(ctx): State<Arc<Api>>,
    Path((_, name)): Path<(String, String)>,
    req: Signed,
) -> Result<Json<Value>, ApiError> {
    let ch = channel_path(&name)?;
    if ch.kind() != ChannelKind::Presence {
        return Err(ApiError::BadRequest(
            "Users are only available for presence channels".into(),
        ));
    }
    let members = ctx
        .presence
        .members(&req.app.id, &ch)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let users: Vec<Value> = members
        .iter()
        .map(|m| json!({ "id": m.user_id.as_str() }))
        .collect();
    Ok(Json(json!({ "users": users })))
}

/// The user of a `.../users/{user_id}/...` route, with or without `/apps/{app_id}` before it.
#[derive(Deserialize)]
pub struct UserPath {
    user_id: String,
}

/// `POST /apps/{id}/users/{user_id}/terminate_connections`, and
/// `POST /users/{user_id}/terminate_connections` (the app of the signing `auth_key`), which is
/// what Pusher's Python SDK calls.
pub async fn terminate(
    State(ctx): State<Arc<Api>>,
    Path(UserPath { user_id: user }): Path<UserPath>,
    req: Signed,
) -> Result<Json<Value>, ApiError> {
    let user =
        UserId::parse(&user).map_err(|e| ApiError::BadRequest(format!("Invalid user id: {e}")))?;
    let event = Event {
        app: req.app.id.clone(),
        target: Target::User(user),
        kind: EventKind::Terminate,
        exclude: None,
        meta: Default::default(),
    };
    metrics::published("api");
    ctx.publisher
        .publish(event)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(Json(json!({})))
}
