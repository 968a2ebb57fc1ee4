//! `/admin/apps`: apps as data. A body is the keys of a `[[apps]]` table; an update merges
//! the keys it names into the app's settings, so every setting the file has can be set.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::{Admin, AdminError};
use crate::apps::{Change, Served, Source};
use crate::config::AppConfig;
use crate::metrics;

/// How long a rotated-out secret stays valid unless the update says otherwise.
const DEFAULT_GRACE_SECS: u64 = 24 * 3600;

/// An app as the API shows it: its settings without any secret.
fn view(admin: &Admin, s: &Served) -> Value {
    let mut v = serde_json::to_value(&*s.config).expect("settings serialize");
    let o = v.as_object_mut().expect("settings are an object");
    o.remove("secret");
    let previous = o.remove("previous_secret").is_some_and(|p| !p.is_null());
    if !previous {
        o.insert("previous_secret_expires_at".into(), Value::Null);
    }
    o.insert("has_previous_secret".into(), previous.into());
    o.insert("source".into(), json!(s.source));
    let conns = admin.hub.app_connections(&s.app.id);
    o.insert("connections".into(), conns.into());
    v
}

fn object(body: &[u8]) -> Result<Map<String, Value>, AdminError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(AdminError::new(
            StatusCode::BAD_REQUEST,
            "The body must be a JSON object",
        )),
        Err(e) => Err(AdminError::new(
            StatusCode::BAD_REQUEST,
            format!("Invalid JSON: {e}"),
        )),
    }
}

/// Settings from `base` with `changes` on top; an unknown key or a wrong type names its
/// field, and so does a value [`AppConfig::validate`] refuses.
fn settings(base: &AppConfig, changes: Map<String, Value>) -> Result<AppConfig, AdminError> {
    let mut v = serde_json::to_value(base).expect("settings serialize");
    let o = v.as_object_mut().expect("settings are an object");
    for (k, val) in changes {
        o.insert(k, val);
    }
    let app: AppConfig = serde_path_to_error::deserialize(v).map_err(|e| {
        let inner = e.inner().to_string();
        let field = match e.path().to_string().as_str() {
            "." => inner.split('`').nth(1).unwrap_or("body").to_owned(),
            p => p.split(['.', '[']).next().unwrap_or(p).to_owned(),
        };
        AdminError::field(field, inner)
    })?;
    app.validate()
        .map_err(|e| AdminError::field(e.field, e.to_string()))?;
    Ok(app)
}

fn random_hex(bytes: usize) -> String {
    let raw: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    hex::encode(raw)
}

fn changed(action: Change, id: &str) {
    metrics::admin_change(action.label());
    tracing::info!(app = id, action = action.label(), "admin: app changed");
}

fn found(admin: &Admin, id: &str) -> Result<Served, AdminError> {
    admin
        .apps
        .get(id)
        .ok_or_else(|| AdminError::new(StatusCode::NOT_FOUND, format!("No app {id:?}")))
}

/// `GET /admin/apps`.
pub async fn list(State(admin): State<Arc<Admin>>) -> Json<Value> {
    let apps: Vec<Value> = admin.apps.list().iter().map(|s| view(&admin, s)).collect();
    Json(json!({ "apps": apps }))
}

/// `GET /admin/apps/{id}`.
pub async fn get(
    State(admin): State<Arc<Admin>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AdminError> {
    let s = found(&admin, &id)?;
    Ok(Json(json!({ "app": view(&admin, &s) })))
}

/// `POST /admin/apps`: 201 with the app and, this once, its secret.
pub async fn create(
    State(admin): State<Arc<Admin>>,
    body: axum::body::Bytes,
) -> Result<Response, AdminError> {
    let mut changes = object(&body)?;
    changes.remove("secret_grace_secs");
    let base = AppConfig {
        id: format!("app-{}", random_hex(4)),
        key: random_hex(10),
        secret: random_hex(16),
        ..AppConfig::default()
    };
    let app = settings(&base, changes)?;
    let secret = app.secret.clone();
    let served = admin.apps.create(app).await?;
    changed(Change::Create, &served.config.id);
    let body = json!({ "app": view(&admin, &served), "secret": secret });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `PATCH /admin/apps/{id}`: a new `secret` keeps the old one valid for
/// `secret_grace_secs` (default a day; 0 = not at all).
pub async fn update(
    State(admin): State<Arc<Admin>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, AdminError> {
    let current = found(&admin, &id)?;
    if current.source == Source::Config {
        return Err(crate::apps::WriteError::ReadOnly(id).into());
    }
    let mut changes = object(&body)?;
    if changes
        .get("id")
        .is_some_and(|v| v.as_str() != Some(id.as_str()))
    {
        return Err(AdminError::field("id", "an app's id cannot change"));
    }
    let grace = match changes.remove("secret_grace_secs") {
        None => DEFAULT_GRACE_SECS,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| AdminError::field("secret_grace_secs", "a number of seconds"))?,
    };
    let rotated = changes
        .get("secret")
        .and_then(Value::as_str)
        .is_some_and(|s| s != current.config.secret);
    if rotated && !changes.contains_key("previous_secret") {
        let (old, until) = match grace {
            0 => (Value::Null, Value::Null),
            g => (
                current.config.secret.clone().into(),
                (crate::clock::now_secs() + g).into(),
            ),
        };
        changes.insert("previous_secret".into(), old);
        changes.insert("previous_secret_expires_at".into(), until);
    }
    let app = settings(&current.config, changes)?;
    let served = admin.apps.replace(app).await?;
    changed(Change::Update, &id);
    Ok(Json(json!({ "app": view(&admin, &served) })))
}

/// `DELETE /admin/apps/{id}`: 204; the app's connections are closed (4001).
pub async fn delete(
    State(admin): State<Arc<Admin>>,
    Path(id): Path<String>,
) -> Result<StatusCode, AdminError> {
    found(&admin, &id)?;
    admin.apps.delete(&id).await?;
    changed(Change::Delete, &id);
    Ok(StatusCode::NO_CONTENT)
}
