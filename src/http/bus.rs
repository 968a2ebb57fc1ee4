//! The bus over HTTP: the `/ws/bus` upgrade (token checked before it), and the signed API
//! that publishes notifications, messages and actions, mints tokens and sets contacts.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::error::ApiError;
use super::signed::Signed;
use super::ws::WsUpgrade;
use super::Api;
use crate::apps::App;
use crate::auth::{self, BusClaims};
use crate::clock::now_secs;
use crate::contacts::MAX_CONTACTS;
use crate::event::{Event, EventKind, Meta, Origin, Priority, Target};
use crate::hub::Refusal;
use crate::idempotency::Idempotency;
use crate::ids::{SocketId, UserId};
use crate::metrics;
use crate::protocol::bus::Since;
use crate::publish::input;
use crate::session;
use crate::session::bus::{self, Handshake};

/// Most recipients of one API call.
const MAX_RECIPIENTS: usize = 100;

/// `GET /ws/bus?token=JWT` (or `Authorization: Bearer JWT`). Every refusal happens before the
/// upgrade: 401 for a bad token, 503 when the node is full, 429 when the app is.
pub async fn upgrade(
    ws: WsUpgrade,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    State(ctx): State<Arc<Api>>,
) -> Result<Response, ApiError> {
    let hs = handshake(&ctx, &query, &headers, None).await?;
    Ok(ws.run(&ctx, move |socket, deps| bus::run(socket, deps, hs)))
}

/// Everything a bus session needs before it starts, whatever its transport: the node is not
/// draining (503), the token is valid (401, 403), the node and app have room (503, 429).
pub(super) async fn handshake(
    ctx: &Api,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    resume: Option<Box<Since>>,
) -> Result<Handshake, ApiError> {
    if ctx.health.is_draining() {
        return Err(ApiError::Unavailable("Server is shutting down".into()));
    }
    let (app, claims) = bus_login(ctx, query, headers).await?;
    let admission = admit(ctx, &app).await?;
    Ok(Handshake {
        app,
        claims,
        admission,
        id: SocketId::next(ctx.sessions.node),
        resume,
    })
}

/// The app and verified claims of a bus client's token (`?token=` or `Bearer`): 401 for a
/// missing, unreadable, unknown or expired token, 403 for a disabled app.
pub(super) async fn bus_login(
    ctx: &Api,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<(Arc<App>, BusClaims), ApiError> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    let token = query
        .get("token")
        .map(String::as_str)
        .or(bearer)
        .ok_or_else(|| ApiError::Unauthorized("Missing token".into()))?;
    let refused = |m: &str| ApiError::Unauthorized(format!("Invalid token: {m}"));
    let iss = auth::bus_token_issuer(token).ok_or_else(|| refused("unreadable"))?;
    let app = ctx
        .apps
        .by_key(&iss)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .ok_or_else(|| refused("unknown issuer"))?;
    let claims = auth::verify_bus_token(&app, token).map_err(|e| refused(&e))?;
    if !app.enabled {
        return Err(ApiError::Forbidden("App is disabled".into()));
    }
    Ok((app, claims))
}

/// The connection's slot under the node and app limits: 503 when the node is full, 429
/// when the app is.
async fn admit(ctx: &Api, app: &App) -> Result<session::Admitted, ApiError> {
    let counts = ctx.sessions.counts.as_deref();
    match session::admit(&ctx.hub, counts, app, ctx.server.max_connections).await {
        Ok(a) => Ok(a),
        Err(Refusal::NodeFull) => Err(ApiError::Unavailable("Server over capacity".into())),
        Err(Refusal::AppQuota) => Err(ApiError::TooManyRequests(
            "App over connection quota".into(),
        )),
    }
}

pub(super) fn user_id(s: &str, what: &str) -> Result<UserId, ApiError> {
    input::user(s).map_err(|e| ApiError::BadRequest(format!("{what}: {e}")))
}

fn recipients(list: &[String], what: &str) -> Result<Vec<UserId>, ApiError> {
    if list.is_empty() || list.len() > MAX_RECIPIENTS {
        return Err(ApiError::BadRequest(format!(
            "{what} needs 1 to {MAX_RECIPIENTS} user ids"
        )));
    }
    let mut out: Vec<UserId> = Vec::with_capacity(list.len());
    for u in list {
        let id = user_id(u, what)?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

/// Publishes one event per recipient user; answers with the recipients.
async fn to_users(
    ctx: &Api,
    app: &App,
    users: Vec<UserId>,
    kind: EventKind,
    (priority, ttl): (Priority, Option<u32>),
    key: Option<&str>,
) -> Result<Json<Value>, ApiError> {
    if let Some(k) = key {
        Idempotency::check_key(k).map_err(ApiError::BadRequest)?;
    }
    input::bus_size(&kind, app.limits.max_event_bytes)?;
    for u in &users {
        let event = Event {
            app: app.id.clone(),
            target: Target::User(u.clone()),
            kind: kind.clone(),
            exclude: None,
            meta: Meta {
                priority,
                ttl,
                origin: Origin::Api,
                ..Meta::default()
            },
        };
        metrics::published("api");
        let key = key.map(|k| format!("{k}|{u}"));
        ctx.publisher.publish_once(event, key.as_deref()).await?;
    }
    let ids: Vec<&str> = users.iter().map(|u| u.as_str()).collect();
    Ok(Json(json!({ "recipients": ids })))
}

#[derive(Deserialize)]
struct NotificationReq {
    #[serde(default)]
    priority: Priority,
    #[serde(default)]
    ttl: Option<u32>,
    /// A retry with the same key publishes nothing twice (per recipient).
    #[serde(default)]
    idempotency_key: Option<String>,
    to: Vec<String>,
    notification_type: String,
    #[serde(default)]
    from: Option<String>,
    message: String,
    #[serde(default)]
    action_url: Option<String>,
}

/// `POST /apps/{id}/bus/notifications`: a notification to each user of `to`.
pub async fn notifications(
    State(ctx): State<Arc<Api>>,
    req: Signed,
) -> Result<Json<Value>, ApiError> {
    let n: NotificationReq = input::json(&req.body)?;
    let envelope = (n.priority, n.ttl);
    let users = recipients(&n.to, "to")?;
    let kind = input::notification(n.notification_type, n.from, n.message, n.action_url);
    let key = n.idempotency_key.as_deref();
    to_users(&ctx, &req.app, users, kind, envelope, key).await
}

#[derive(Deserialize)]
struct MessageReq {
    #[serde(default)]
    priority: Priority,
    #[serde(default)]
    ttl: Option<u32>,
    /// A retry with the same key publishes nothing twice (per recipient).
    #[serde(default)]
    idempotency_key: Option<String>,
    message_id: String,
    sender: String,
    participants: Vec<String>,
    content: String,
    #[serde(default)]
    conversation_id: Option<String>,
}

/// `POST /apps/{id}/bus/messages`: a direct-message notification to every participant, with
/// a preview of the first 100 characters.
pub async fn messages(State(ctx): State<Arc<Api>>, req: Signed) -> Result<Json<Value>, ApiError> {
    let m: MessageReq = input::json(&req.body)?;
    let envelope = (m.priority, m.ttl);
    let users = recipients(&m.participants, "participants")?;
    let kind = input::direct_message(m.message_id, m.sender, &m.content, m.conversation_id);
    let key = m.idempotency_key.as_deref();
    to_users(&ctx, &req.app, users, kind, envelope, key).await
}

#[derive(Deserialize)]
struct ActionReq<'a> {
    #[serde(default)]
    priority: Priority,
    #[serde(default)]
    ttl: Option<u32>,
    /// A retry with the same key publishes nothing twice (per recipient).
    #[serde(default)]
    idempotency_key: Option<String>,
    action_type: String,
    action_id: String,
    issuer: String,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    participants: Vec<String>,
    #[serde(default)]
    parent_owner: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    to: Vec<String>,
}

/// Who receives an action, by the seed's rules: federated → every session of the target
/// tenant; POST → the creator; MSG → every participant; CMNT/REACT → the parent's owner;
/// any other type → the users listed in `to`.
fn action_audience(a: &ActionReq<'_>, federated: bool) -> Result<Vec<UserId>, ApiError> {
    let need = |field: &Option<String>, name: &str| {
        field
            .as_deref()
            .ok_or_else(|| ApiError::BadRequest(format!("{name} is required for this action")))
            .and_then(|u| user_id(u, name))
            .map(|u| vec![u])
    };
    if federated {
        return need(&a.tenant, "tenant");
    }
    match a.action_type.as_str() {
        "POST" => Ok(vec![user_id(&a.issuer, "issuer")?]),
        "MSG" => recipients(&a.participants, "participants"),
        "CMNT" | "REACT" => need(&a.parent_owner, "parent_owner"),
        _ => recipients(&a.to, "to"),
    }
}

/// `POST /apps/{id}/bus/actions`.
pub async fn actions(State(ctx): State<Arc<Api>>, req: Signed) -> Result<Json<Value>, ApiError> {
    let a: ActionReq<'_> = input::json(&req.body)?;
    let envelope = (a.priority, a.ttl);
    let kind = input::action(
        &a.action_type,
        a.action_id.clone(),
        a.issuer.clone(),
        a.content.map(|c| c.get()),
        a.source.as_deref(),
    )?;
    let federated = a.source.as_deref() == Some("federated");
    let users = action_audience(&a, federated)?;
    let key = a.idempotency_key.as_deref();
    to_users(&ctx, &req.app, users, kind, envelope, key).await
}

#[derive(Deserialize)]
struct TokenReq {
    user_id: String,
    #[serde(default)]
    ttl: Option<u64>,
    #[serde(default)]
    watchlist: Vec<String>,
    #[serde(default)]
    channels: Vec<String>,
}

/// `POST /apps/{id}/bus/tokens`: mints a bus token, for backends without a JWT library.
pub async fn tokens(State(ctx): State<Arc<Api>>, req: Signed) -> Result<Json<Value>, ApiError> {
    let t: TokenReq = input::json(&req.body)?;
    user_id(&t.user_id, "user_id")?;
    let max = ctx.bus.max_token_ttl;
    let ttl = t.ttl.unwrap_or(3600);
    if ttl == 0 || ttl > max {
        return Err(ApiError::BadRequest(format!(
            "ttl must be 1 to {max} seconds"
        )));
    }
    let claims = BusClaims {
        iss: req.app.key.clone(),
        sub: t.user_id,
        exp: now_secs() + ttl,
        watchlist: t.watchlist,
        channels: t.channels,
    };
    let token = auth::mint_bus_token(&req.app, &claims);
    Ok(Json(json!({ "token": token, "expires_at": claims.exp })))
}

#[derive(Deserialize)]
struct ContactsReq {
    contacts: Vec<String>,
}

/// `PUT /apps/{id}/users/{user_id}/contacts`: the users whose presence `user_id` may see,
/// applied to the user's next bus connections.
pub async fn set_contacts(
    State(ctx): State<Arc<Api>>,
    Path((_, user)): Path<(String, String)>,
    req: Signed,
) -> Result<Json<Value>, ApiError> {
    let user = user_id(&user, "user id")?;
    let c: ContactsReq = input::json(&req.body)?;
    if c.contacts.len() > MAX_CONTACTS {
        return Err(ApiError::BadRequest(format!(
            "At most {MAX_CONTACTS} contacts"
        )));
    }
    let list = c
        .contacts
        .iter()
        .map(|u| user_id(u, "contact"))
        .collect::<Result<Vec<_>, _>>()?;
    ctx.contacts.set(&req.app.id, &user, list);
    Ok(Json(json!({})))
}

/// `GET /apps/{id}/users/{user_id}/contacts`.
pub async fn get_contacts(
    State(ctx): State<Arc<Api>>,
    Path((_, user)): Path<(String, String)>,
    req: Signed,
) -> Result<Json<Value>, ApiError> {
    let user = user_id(&user, "user id")?;
    let list: Vec<String> = ctx
        .contacts
        .get(&req.app.id, &user)
        .iter()
        .map(|u| u.to_string())
        .collect();
    Ok(Json(json!({ "contacts": list })))
}
