//! HTTP surface: the router with the WebSocket endpoints, the signed API and health.

pub mod admin;
mod api;
mod bus;
mod error;
mod probes;
mod push;
mod serve;
mod signed;
mod sse;
mod state;
pub mod stream;
mod ws;
mod xhr;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

pub use admin::Admin;
pub use error::ApiError;
pub use serve::{serve, Closing, DoorLimits};
pub use state::{Api, Health};

use crate::metrics;

/// The whole HTTP application. Tests drive this same router.
pub fn router(ctx: Arc<Api>) -> Router {
    let body_limit = ctx.server.max_body_bytes;
    Router::new()
        .route("/app/{key}", get(ws::pusher))
        .route("/apps/{app_id}/events", post(api::events))
        .route("/apps/{app_id}/batch_events", post(api::batch_events))
        .route("/apps/{app_id}/channels", get(api::channels))
        .route("/apps/{app_id}/channels/{channel}", get(api::channel))
        .route("/apps/{app_id}/channels/{channel}/users", get(api::users))
        .route(
            "/apps/{app_id}/users/{user_id}/terminate_connections",
            post(api::terminate),
        )
        .route(
            "/users/{user_id}/terminate_connections",
            post(api::terminate),
        )
        .route(
            "/pusher/app/{key}/{server}/{session}/{kind}",
            post(xhr::request).options(xhr::preflight),
        )
        .route("/ws/bus", get(bus::upgrade))
        .route("/ws/bus/sse", get(sse::stream).options(xhr::preflight))
        .route("/ws/bus/send", post(sse::send).options(xhr::preflight))
        .route("/apps/{app_id}/bus/notifications", post(bus::notifications))
        .route("/apps/{app_id}/bus/messages", post(bus::messages))
        .route("/apps/{app_id}/bus/actions", post(bus::actions))
        .route("/apps/{app_id}/bus/tokens", post(bus::tokens))
        .route(
            "/apps/{app_id}/users/{user_id}/contacts",
            axum::routing::put(bus::set_contacts).get(bus::get_contacts),
        )
        .route("/apps/{app_id}/users/{user_id}/push", get(push::list))
        .route(
            "/apps/{app_id}/users/{user_id}/push/preferences",
            get(push::get_prefs).put(push::set_prefs),
        )
        .route(
            "/apps/{app_id}/users/{user_id}/push/{registration_id}",
            axum::routing::delete(push::delete),
        )
        .route("/up", get(probes::up))
        .route("/", get(probes::root))
        .route("/ready", get(probes::ready))
        .route("/accept-traffic", get(probes::accept_traffic))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(ctx.clone(), bounded_body))
        .layer(middleware::from_fn(record))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(ctx)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("No such endpoint".into())
}

/// Reads a request's body before the handler runs: within `server.body_timeout_ms`
/// (408 after), within `server.max_body_bytes` (413), and only JSON (415), which is all
/// this API takes. A body that trickles in cannot hold a handler, or its socket, forever.
async fn bounded_body(State(ctx): State<Arc<Api>>, req: Request, next: Next) -> Response {
    use axum::http::{header, Method};
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let limit = ctx.server.max_body_bytes;
    let (parts, body) = req.into_parts();
    if let Some(kind) = parts.headers.get(header::CONTENT_TYPE) {
        if !is_json(kind.to_str().unwrap_or("")) {
            return ApiError::UnsupportedMediaType("The body must be application/json".into())
                .into_response();
        }
    }
    let read = axum::body::to_bytes(body, limit);
    let bytes = match tokio::time::timeout(ctx.server.body_timeout(), read).await {
        Err(_) => {
            metrics::client_error("body_timeout");
            return ApiError::RequestTimeout("Request body not received in time".into())
                .into_response();
        }
        Ok(Err(_)) => {
            return ApiError::PayloadTooLarge(format!("Request body over {limit} bytes"))
                .into_response()
        }
        Ok(Ok(bytes)) => bytes,
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// `application/json`, `application/*+json`, parameters (charset) allowed.
fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence
            .split_once('/')
            .is_some_and(|(t, sub)| t.eq_ignore_ascii_case("application") && sub.ends_with("+json"))
}

/// Counts every API call by route template and status.
async fn record(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(req).await;
    if !route.starts_with("/app/") && route != "/ws/bus" {
        metrics::http_request(route, response.status().as_u16(), started.elapsed());
    }
    response
}
