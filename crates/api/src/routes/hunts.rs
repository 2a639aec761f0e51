//! `GET /api/hunts/{name}`: reference 000's threat hunts over the embedded store.

use crate::AppState;
use crate::error::ApiError;
use crate::routes::quarantine::time_param;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use teleguard_core::hunt::Hunt;
use teleguard_pipeline::hunts::{self, HuntFormat, HuntQuery};
use teleguard_pipeline::store::{self, StoreError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HuntParams {
    /// Event times from (inclusive) and until (exclusive): ISO 8601 or epoch seconds / ms.
    from: Option<String>,
    to: Option<String>,
    vehicle: Option<String>,
    /// `json` (default), `csv` or `table`.
    format: Option<String>,
}

/// Runs the hunt `name` over the embedded store's silver layer, on a read connection of its own.
pub async fn hunt(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<HuntParams>,
) -> Result<Response, ApiError> {
    let hunt = Hunt::parse(&name).map_err(|e| ApiError::new(StatusCode::NOT_FOUND, e))?;
    let format = match params.format.as_deref() {
        None | Some("") => HuntFormat::Json,
        Some(text) => HuntFormat::parse(text).map_err(ApiError::bad_request)?,
    };
    let query = HuntQuery {
        hunt,
        from_ms: time_param("from", params.from.as_deref())?,
        to_ms: time_param("to", params.to.as_deref())?,
        vehicle: params.vehicle,
    };
    let profile = state
        .profiles
        .by_name(hunts::VEHICLE)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no `vehicle` profile is configured"))?
        .clone();
    let data_dir = state.data_dir.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let connection = store::open_reader(&data_dir)?;
        Ok::<_, StoreError>(hunts::embedded(&connection, profile, &query))
    })
    .await
    .map_err(|e| {
        tracing::error!("api: hunt {name}: the hunt's thread failed: {e}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the hunt failed")
    })??;
    let report = outcome.map_err(|e| {
        tracing::error!("api: hunt {name}: {e}");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the hunt could not read the store; retry shortly")
    })?;
    let content_type = match format {
        HuntFormat::Json => "application/json",
        HuntFormat::Csv => "text/csv; charset=utf-8",
        HuntFormat::Table => "text/plain; charset=utf-8",
    };
    Ok(([(header::CONTENT_TYPE, content_type)], report.render(format)).into_response())
}
