//! The signed push API: a user's registrations (listed without their secrets, deleted one
//! by one) and notification preferences.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use super::bus::user_id;
use super::error::ApiError;
use super::signed::Signed;
use super::Api;
use crate::publish::input;
use crate::push::decide::Prefs;
use crate::push::store::{PushStore, StoreFailure};
use crate::push::RegistrationId;

fn store(ctx: &Api) -> Result<&Arc<dyn PushStore>, ApiError> {
    ctx.push
        .store()
        .ok_or_else(|| ApiError::NotFound("Push notifications are not configured".into()))
}

fn unavailable(e: StoreFailure) -> ApiError {
    ApiError::Unavailable(format!("Push store unavailable: {e}"))
}

/// `GET /apps/{id}/users/{user_id}/push`: the user's registrations, oldest first; tokens are
/// shortened and subscriptions reduced to their push service's origin.
pub async fn list(
    State(ctx): State<Arc<Api>>,
    Path((_, user)): Path<(String, String)>,
    req: Signed,
) -> Result<Json<Value>, ApiError> {
    let user = user_id(&user, "user id")?;
    let regs = store(&ctx)?
        .registrations(&req.app.id, &user)
        .await
        .map_err(unavailable)?;
    let list: Vec<Value> = regs
        .iter()
        .map(|r| {
            json!({"id": r.id.as_str(), "platform": r.platform.as_str(),
                   "device": r.device.redacted(), "created_at_ms": r.created_ms})
        })
        .collect();
    Ok(Json(json!({ "registrations": list })))
}

/// `DELETE /apps/{id}/users/{user_id}/push/{registration_id}`: 404 when it does not exist.
pub async fn delete(
    State(ctx): State<Arc<Api>>,
    Path((_, user, id)): Path<(String, String, String)>,
    req: Signed,
) -> Result<Json<Value>, ApiError> {
    let user = user_id(&user, "user id")?;
    let missing = || ApiError::NotFound("No such registration".into());
    let id = RegistrationId::parse(&id).ok_or_else(missing)?;
    let removed = store(&ctx)?
        .remove(&req.app.id, &user, &id)
        .await
        .map_err(unavailable)?;
    if !removed {
        return Err(missing());
    }
    Ok(Json(json!({})))
}

/// `GET /apps/{id}/users/{user_id}/push/preferences`.
pub async fn get_prefs(
    State(ctx): State<Arc<Api>>,
    Path((_, user)): Path<(String, String)>,
    req: Signed,
) -> Result<Json<Prefs>, ApiError> {
    let user = user_id(&user, "user id")?;
    let prefs = store(&ctx)?
        .prefs(&req.app.id, &user)
        .await
        .map_err(unavailable)?;
    Ok(Json(prefs))
}

/// `PUT /apps/{id}/users/{user_id}/push/preferences` with `{"enabled":true,"types":{"REACT":false}}`.
pub async fn set_prefs(
    State(ctx): State<Arc<Api>>,
    Path((_, user)): Path<(String, String)>,
    req: Signed,
) -> Result<Json<Prefs>, ApiError> {
    let user = user_id(&user, "user id")?;
    let prefs: Prefs = input::json(&req.body)?;
    prefs.validate().map_err(ApiError::BadRequest)?;
    store(&ctx)?
        .set_prefs(&req.app.id, &user, &prefs)
        .await
        .map_err(unavailable)?;
    Ok(Json(prefs))
}
