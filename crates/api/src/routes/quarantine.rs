//! Quarantine endpoints: rejected messages (dead letters) listed and counted with filters,
//! and replayed after what rejected them was fixed.
//!
//! - `GET /api/dead-letters?profile=&reason=&source=&since=&until=&state=&before_id=&limit=`
//! - `GET /api/dead-letters/counts` with the same filters: totals per reason, profile, source.
//! - `POST /api/dead-letters/replay` with `{"ids": [...]}` or a filter object: re-submits
//!   them, each ending as a reading or a new dead letter, never lost.

use crate::AppState;
use crate::error::ApiError;
use crate::routes::query::limit_of;
use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use teleguard_core::json::Scalar;
use teleguard_core::time::{TimeFormat, parse_timestamp};
use teleguard_core::validate::REJECTION_CODES;
use teleguard_pipeline::ingest::ReplayReport;
use teleguard_pipeline::store::quarantine::{self, DeadLetter, QuarantineCounts, QuarantineFilter, ReplayState};

/// Dead letters one replay takes at most; a caller with more sends the same filter again.
pub const MAX_REPLAY: usize = 10_000;
const DEFAULT_REPLAY: usize = 1_000;

/// A time parameter: ISO 8601, or epoch seconds or milliseconds.
pub(crate) fn time_param(name: &str, text: Option<&str>) -> Result<Option<i64>, ApiError> {
    match text {
        None | Some("") => Ok(None),
        Some(text) => {
            let value = text.parse::<f64>().map(Scalar::Float).unwrap_or_else(|_| Scalar::Str(text.into()));
            let ms =
                parse_timestamp(&value, TimeFormat::Auto).map_err(|e| ApiError::bad_request(format!("{name}: {e}")))?;
            Ok(Some(ms))
        }
    }
}

/// The filters every quarantine endpoint takes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterParams {
    profile: Option<String>,
    /// A reason code, e.g. `schema` or `malformed_json`.
    reason: Option<String>,
    source: Option<String>,
    /// Arrival time from (inclusive) and until (exclusive).
    since: Option<String>,
    until: Option<String>,
    /// `open` (not replayed), `replayed` or `all` (the default).
    #[serde(default)]
    state: ReplayState,
    before_id: Option<i64>,
    /// How many to list (not used by the counts).
    limit: Option<usize>,
}

impl FilterParams {
    fn filter(self) -> Result<QuarantineFilter, ApiError> {
        if let Some(reason) = &self.reason
            && !REJECTION_CODES.contains(&reason.as_str())
        {
            return Err(ApiError::bad_request(format!(
                "reason: {reason:?} is not a reason code; use one of {}",
                REJECTION_CODES.join(", ")
            )));
        }
        Ok(QuarantineFilter {
            since_ms: time_param("since", self.since.as_deref())?,
            until_ms: time_param("until", self.until.as_deref())?,
            profile: self.profile.filter(|p| !p.is_empty()),
            reason: self.reason,
            source: self.source.filter(|s| !s.is_empty()),
            state: self.state,
            before_id: self.before_id,
        })
    }
}

/// `GET /api/dead-letters`: rejected messages with their reason codes and reasons, newest first.
pub async fn list(
    State(state): State<AppState>,
    Query(params): Query<FilterParams>,
) -> Result<Json<Vec<DeadLetter>>, ApiError> {
    let limit = limit_of(params.limit)?;
    let filter = params.filter()?;
    Ok(Json(state.reader.run(move |c| quarantine::list(c, &filter, limit)).await?))
}

/// `GET /api/dead-letters/counts`: how many match, per reason code, profile and source.
pub async fn counts(
    State(state): State<AppState>,
    Query(params): Query<FilterParams>,
) -> Result<Json<QuarantineCounts>, ApiError> {
    let filter = params.filter()?;
    Ok(Json(state.reader.run(move |c| quarantine::counts(c, &filter)).await?))
}

/// What to replay: the dead letters of `ids`, or the open ones matching the filter (the
/// filter fields of the list, sent as JSON), at most `limit` (1,000 by default).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    ids: Option<Vec<i64>>,
    limit: Option<usize>,
    profile: Option<String>,
    reason: Option<String>,
    source: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

/// `POST /api/dead-letters/replay`: re-submits quarantined messages; 200 with what each became.
pub async fn replay(
    State(state): State<AppState>,
    body: Option<Json<ReplayRequest>>,
) -> Result<Json<ReplayReport>, ApiError> {
    let request = body.map(|Json(r)| r).unwrap_or_default();
    // One replay at a time, so that two cannot both take the same open dead letters.
    let _one_at_a_time = state.replay_lock.lock().await;
    let letters = match request.ids {
        Some(ids) => {
            if ids.len() > MAX_REPLAY {
                return Err(ApiError::bad_request(format!(
                    "{} ids in one replay is more than {MAX_REPLAY}; split them",
                    ids.len()
                )));
            }
            state.reader.run(move |c| quarantine::by_ids(c, &ids)).await?
        }
        None => {
            let limit = request.limit.unwrap_or(DEFAULT_REPLAY).clamp(1, MAX_REPLAY);
            let filter = FilterParams {
                profile: request.profile,
                reason: request.reason,
                source: request.source,
                since: request.since,
                until: request.until,
                ..FilterParams::default()
            }
            .filter()?;
            state.reader.run(move |c| quarantine::replayable(c, &filter, limit)).await?
        }
    };
    let report = state.ingest.replay_quarantined(letters).await?;
    state.metrics.record_replay(report.accepted as u64, report.rejected as u64, report.duplicates as u64);
    Ok(Json(report))
}
