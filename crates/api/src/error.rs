//! The one error type of the HTTP API: a status and a message, never internals.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use teleguard_pipeline::ingest::IngestError;
use teleguard_pipeline::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub retry_after_secs: Option<u64>,
    /// The `WWW-Authenticate` challenge of a 401.
    pub challenge: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), retry_after_secs: None, challenge: None }
    }

    /// A 401 that asks for a bearer token with `challenge` (RFC 6750's `WWW-Authenticate`).
    pub fn unauthorized(challenge: &'static str, message: impl Into<String>) -> Self {
        ApiError { challenge: Some(challenge), ..Self::new(StatusCode::UNAUTHORIZED, message) }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(serde_json::json!({ "error": self.message }))).into_response();
        if let Some(seconds) = self.retry_after_secs {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        tracing::error!("api: {error}");
        let mut api = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable; retry shortly");
        api.retry_after_secs = Some(5);
        api
    }
}

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        match error {
            IngestError::UnknownProfile { .. } => ApiError::new(StatusCode::NOT_FOUND, error.to_string()),
            IngestError::Busy { retry_after_secs, .. } => {
                let mut api = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string());
                api.retry_after_secs = Some(retry_after_secs);
                api
            }
            IngestError::TooLarge { .. } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, error.to_string()),
            IngestError::Store(store) => store.into(),
        }
    }
}
