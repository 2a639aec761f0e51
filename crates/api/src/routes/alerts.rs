//! Alerts with ThingsBoard's lifecycle: active or cleared (resolved), and acknowledged or not,
//! each changed by an operator from the page or the API.

use crate::AppState;
use crate::error::ApiError;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use teleguard_pipeline::store::gold::{AlertAction, AlertTransition};
use teleguard_pipeline::store::query::{self, AlertRecord, AlertSelection, AlertStatus};

#[derive(Debug, Deserialize)]
pub struct AlertParams {
    state: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/alerts?state=...&limit=N`: most recently updated first. `state` is one of the
/// four statuses (`active_unack`, `active_ack`, `cleared_unack`, `cleared_ack`), `active`, or
/// a stored state (`open`, `acknowledged`, `resolved`); none lists every alert.
pub async fn list(
    State(state): State<AppState>,
    Query(params): Query<AlertParams>,
) -> Result<Json<Vec<AlertRecord>>, ApiError> {
    let selection = match params.state.as_deref().filter(|s| !s.is_empty()) {
        None => AlertSelection::All,
        Some("active") => AlertSelection::Active,
        Some("open") => AlertSelection::State("open"),
        Some("acknowledged") => AlertSelection::State("acknowledged"),
        Some("resolved") => AlertSelection::State("resolved"),
        Some(other) => AlertSelection::Status(AlertStatus::parse(other).ok_or_else(|| {
            ApiError::bad_request(format!(
                "state {other:?}: use active_unack, active_ack, cleared_unack, cleared_ack, active, open, acknowledged \
                 or resolved"
            ))
        })?),
    };
    let limit = super::query::limit_of(params.limit)?;
    Ok(Json(state.reader.run(move |c| query::alerts(c, selection, limit)).await?))
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
        AlertTransition::Done | AlertTransition::Unchanged => {}
        AlertTransition::NotFound => return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no alert {id}"))),
    }
    match state.reader.run(move |c| query::alert(c, id)).await? {
        Some(alert) => Ok(Json(alert)),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, format!("no alert {id}"))),
    }
}
