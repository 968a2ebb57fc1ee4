//! The admin API on the metrics listener: apps as data (create, read, update, disable,
//! delete), what an app has on this node (connections, channels, members, history), and the
//! live console ([`console`]). Off unless `[admin] token` is set; every call carries it as
//! a bearer token, compared in constant time. Separate from the Pusher-signed API: an admin
//! token is the operator's, an app secret the tenant's.

mod apps;
mod console;
mod inspect;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::apps::{Registry, WriteError};
use crate::broker::Broker;
use crate::hub::Hub;
use crate::presence::PresenceStore;
use crate::publish::Publisher;

/// Largest admin request body.
const MAX_BODY: usize = 64 * 1024;

/// What the admin API uses.
pub struct Admin {
    /// SHA-256 of the token: comparing digests keeps the check constant-time whatever the
    /// length of what a caller sends.
    token: [u8; 32],
    /// The apps.
    pub apps: Arc<Registry>,
    /// This node's connections and the console's tap.
    pub hub: Hub,
    /// Channel occupancy and members.
    pub presence: Arc<dyn PresenceStore>,
    /// Test events and terminations.
    pub publisher: Publisher,
    /// Channel history.
    pub streams: Arc<dyn Broker>,
}

impl Admin {
    /// The admin API behind `token`.
    pub fn new(
        token: &str,
        apps: Arc<Registry>,
        hub: Hub,
        presence: Arc<dyn PresenceStore>,
        publisher: Publisher,
        streams: Arc<dyn Broker>,
    ) -> Self {
        Self {
            token: Sha256::digest(token.as_bytes()).into(),
            apps,
            hub,
            presence,
            publisher,
            streams,
        }
    }

    fn allows(&self, given: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        digest.ct_eq(&self.token).into()
    }
}

/// An admin API error: the status, the message and, for invalid settings, the field.
#[derive(Debug)]
pub struct AdminError {
    status: StatusCode,
    message: String,
    field: Option<String>,
}

impl AdminError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            field: None,
        }
    }

    fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::new(StatusCode::BAD_REQUEST, message)
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.message, "code": self.status.as_u16() });
        if let Some(f) = self.field {
            body["field"] = f.into();
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<WriteError> for AdminError {
    fn from(e: WriteError) -> Self {
        let status = match &e {
            WriteError::Conflict(_) => StatusCode::CONFLICT,
            WriteError::NotFound => StatusCode::NOT_FOUND,
            WriteError::ReadOnly(_) => StatusCode::FORBIDDEN,
            WriteError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, e.to_string())
    }
}

/// The admin routes and the console page, for the metrics listener.
pub fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/admin/apps", get(apps::list).post(apps::create))
        .route(
            "/admin/apps/{id}",
            get(apps::get).patch(apps::update).delete(apps::delete),
        )
        .route("/admin/apps/{id}/connections", get(inspect::connections))
        .route("/admin/apps/{id}/channels", get(inspect::channels))
        .route(
            "/admin/apps/{id}/channels/{channel}/members",
            get(inspect::members),
        )
        .route(
            "/admin/apps/{id}/channels/{channel}/history",
            get(inspect::history),
        )
        .route(
            "/admin/apps/{id}/users/{user_id}/terminate",
            post(inspect::terminate),
        )
        .route("/admin/apps/{id}/events", post(inspect::send_event))
        .route("/admin/stream", get(console::stream))
        .route("/admin/{*rest}", axum::routing::any(no_such_route))
        .layer(middleware::from_fn_with_state(admin.clone(), authorize))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .route("/console", get(console::page))
        .with_state(admin)
}

async fn no_such_route() -> AdminError {
    AdminError::new(StatusCode::NOT_FOUND, "No such admin endpoint")
}

/// Lets a request through only with the right bearer token; nothing runs before this.
async fn authorize(State(admin): State<Arc<Admin>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if admin.allows(t.trim()) => next.run(req).await,
        Some(_) => {
            crate::metrics::client_error("admin_token");
            AdminError::new(StatusCode::UNAUTHORIZED, "Wrong admin token").into_response()
        }
        None => AdminError::new(
            StatusCode::UNAUTHORIZED,
            "Authorization: Bearer {admin token} required",
        )
        .into_response(),
    }
}
