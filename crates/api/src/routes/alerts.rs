//! Alerts with a lifecycle: open → acknowledged → resolved.

use crate::AppState;
use crate::error::ApiError;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use teleguard_pipeline::store::gold::{AlertAction, AlertTransition};
use teleguard_pipeline::store::query::{self, AlertRecord};

#[derive(Debug, Deserialize)]
pub struct AlertParams {
    state: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/alerts?state=open|acknowledged|resolved&limit=N`: most recently updated first.
pub async fn list(
    State(state): State<AppState>,
    Query(params): Query<AlertParams>,
) -> Result<Json<Vec<AlertRecord>>, ApiError> {
    let wanted = params.state.filter(|s| !s.is_empty());
    if let Some(s) = &wanted
        && !["open", "acknowledged", "resolved"].contains(&s.as_str())
    {
        return Err(ApiError::bad_request(format!("state {s:?}: use open, acknowledged or resolved")));
    }
    let limit = super::query::limit_of(params.limit)?;
    Ok(Json(state.reader.run(move |c| query::alerts(c, wanted.as_deref(), limit)).await?))
}

/// `POST /api/alerts/{id}/ack`.
pub async fn acknowledge(State(state): State<AppState>, Path(id): Path<i64>) -> Result<Json<AlertRecord>, ApiError> {
    transition(state, id, AlertAction::Acknowledge).await
}

/// `POST /api/alerts/{id}/resolve`.
pub async fn resolve(State(state): State<AppState>, Path(id): Path<i64>) -> Result<Json<AlertRecord>, ApiError> {
    transition(state, id, AlertAction::Resolve).await
}

async fn transition(state: AppState, id: i64, action: AlertAction) -> Result<Json<AlertRecord>, ApiError> {
    match state.store.transition_alert(id, action).await? {
        AlertTransition::Done => {}
        AlertTransition::NotFound => return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no alert {id}"))),
        AlertTransition::AlreadyResolved => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("alert {id} is resolved; it cannot be acknowledged"),
            ));
        }
    }
    match state.reader.run(move |c| query::alert(c, id)).await? {
        Some(alert) => Ok(Json(alert)),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, format!("no alert {id}"))),
    }
}
