//! The one mapping from API failures to HTTP responses: a status and a JSON body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Why an HTTP API call failed. Messages are for the caller; they never carry secrets or
/// internal details.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed or invalid request.
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong signature, key or timestamp.
    #[error("{0}")]
    Unauthorized(String),
    /// The app is disabled.
    #[error("{0}")]
    Forbidden(String),
    /// Unknown app, channel kind or route.
    #[error("{0}")]
    NotFound(String),
    /// The request body did not arrive in time.
    #[error("{0}")]
    RequestTimeout(String),
    /// The body is not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Body or event data over the limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A request with the same idempotency key is still in progress.
    #[error("{0}")]
    Conflict(String),
    /// A quota is exhausted.
    #[error("{0}")]
    TooManyRequests(String),
    /// A backing service (broker, presence, app store) is down: nothing was accepted.
    #[error("{0}")]
    Unavailable(String),
    /// A WebSocket endpoint was asked for without an upgrade this connection can make.
    #[error("{0}")]
    UpgradeRequired(String),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpgradeRequired(_) => StatusCode::UPGRADE_REQUIRED,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(%status, error = %self, "API call failed");
        } else {
            tracing::debug!(%status, error = %self, "API call refused");
        }
        (
            status,
            // `code` repeats the status: soketi's clients read it from the body.
            Json(serde_json::json!({ "error": self.to_string(), "code": status.as_u16() })),
        )
            .into_response()
    }
}

impl From<crate::publish::PublishError> for ApiError {
    fn from(e: crate::publish::PublishError) -> Self {
        match e {
            crate::publish::PublishError::InFlight => Self::Conflict(e.to_string()),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

impl From<crate::publish::input::InputError> for ApiError {
    fn from(e: crate::publish::input::InputError) -> Self {
        use crate::publish::input::InputError;
        match e {
            InputError::TooLarge { .. } => Self::PayloadTooLarge(e.to_string()),
            other => Self::BadRequest(other.to_string()),
        }
    }
}
