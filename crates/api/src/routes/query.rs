//! Read endpoints: anomalies, readings, stats, dead letters and profiles.

use crate::AppState;
use crate::error::ApiError;
use crate::routes::quarantine::time_param;
use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::Arc;
use teleguard_core::time::format_millis;
use teleguard_pipeline::sinks::runner::SinkView;
use teleguard_pipeline::store::SilverRow;
use teleguard_pipeline::store::query::{self, AnomalyFilter, AnomalyOrder, AnomalyRecord, ProfileCounts};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;
// The store lists at most this many of the most anomalous in order.
const _: () = assert!(MAX_LIMIT <= teleguard_pipeline::store::gold::RANKED_ANOMALIES);

pub(crate) fn limit_of(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        0 => Err(ApiError::bad_request("limit must be at least 1")),
        n => Ok(n.min(MAX_LIMIT)),
    }
}

#[derive(Debug, Deserialize)]
pub struct AnomalyParams {
    limit: Option<usize>,
    profile: Option<String>,
    entity: Option<String>,
    detector: Option<String>,
    /// Event time lower bound: ISO 8601 or epoch seconds / milliseconds.
    since: Option<String>,
    #[serde(default)]
    order: AnomalyOrder,
}

/// `GET /api/anomalies?limit=N`: most anomalous first (or newest first with `order=recent`).
pub async fn anomalies(
    State(state): State<AppState>,
    Query(params): Query<AnomalyParams>,
) -> Result<Json<Vec<AnomalyRecord>>, ApiError> {
    let since_ms = time_param("since", params.since.as_deref())?;
    let filter = AnomalyFilter {
        limit: limit_of(params.limit)?,
        profile: params.profile,
        entity: params.entity,
        detector: params.detector,
        since_ms,
        order: params.order,
    };
    Ok(Json(state.reader.run(move |c| query::anomalies(c, &filter)).await?))
}

#[derive(Debug, Deserialize)]
pub struct ReadingParams {
    entity: Option<String>,
    limit: Option<usize>,
}

/// One reading as the API shows it.
#[derive(Debug, Serialize)]
pub struct ReadingView {
    id: i64,
    profile: String,
    entity: String,
    timestamp: String,
    latitude: Option<f64>,
    longitude: Option<f64>,
    metrics: Box<RawValue>,
    attributes: Box<RawValue>,
    driver_name: Option<String>,
    current_zone: Option<String>,
    anomalous: bool,
    anomalies: Vec<String>,
}

impl From<&SilverRow> for ReadingView {
    fn from(row: &SilverRow) -> Self {
        let raw = |text: &str| {
            RawValue::from_string(text.to_string())
                .unwrap_or_else(|_| RawValue::from_string("{}".into()).expect("valid JSON"))
        };
        ReadingView {
            id: row.id,
            profile: row.profile.to_string(),
            entity: row.entity.to_string(),
            timestamp: format_millis(row.timestamp_ms),
            latitude: row.latitude,
            longitude: row.longitude,
            metrics: raw(&row.metrics),
            attributes: raw(&row.attributes),
            driver_name: row.driver_name.as_deref().map(str::to_string),
            current_zone: row.current_zone.as_deref().map(str::to_string),
            anomalous: !row.anomalies.is_empty(),
            anomalies: row.anomalies.clone(),
        }
    }
}

/// `GET /api/readings?entity=&limit=`: newest first, from memory, or from the store for an
/// entity not seen since start-up.
pub async fn readings(
    State(state): State<AppState>,
    Query(params): Query<ReadingParams>,
) -> Result<Json<Vec<ReadingView>>, ApiError> {
    let limit = limit_of(params.limit)?;
    let entity = params.entity.filter(|e| !e.is_empty());
    let live: Vec<Arc<SilverRow>> = state.live.latest(entity.as_deref(), limit);
    if !live.is_empty() || entity.is_none() {
        return Ok(Json(live.iter().map(|row| ReadingView::from(&**row)).collect()));
    }
    let stored = state.reader.run(move |c| query::latest_readings(c, entity.as_deref(), limit)).await?;
    Ok(Json(stored.iter().map(ReadingView::from).collect()))
}

#[derive(Debug, Serialize)]
pub struct Stats {
    profiles: Vec<ProfileCounts>,
    totals: Totals,
    uptime_secs: f64,
    /// Each external sink: reachable or not, and how far behind the store (rows, seconds).
    sinks: Vec<SinkView>,
}

#[derive(Debug, Serialize, Default)]
pub struct Totals {
    received: i64,
    valid: i64,
    rejected: i64,
    analysed: i64,
    anomalies: i64,
}

/// `GET /api/stats`: counts per profile since the data folder was created.
pub async fn stats(State(state): State<AppState>) -> Result<Json<Stats>, ApiError> {
    let stored = state.reader.run(query::profile_counts).await?;
    let mut profiles: Vec<ProfileCounts> = state
        .ingest
        .profiles()
        .iter()
        .map(|p| {
            stored
                .iter()
                .find(|s| s.profile == *p.name)
                .cloned()
                .unwrap_or_else(|| ProfileCounts { profile: p.name.to_string(), ..Default::default() })
        })
        .collect();
    profiles.extend(stored.into_iter().filter(|s| state.ingest.profiles().by_name(&s.profile).is_none()));
    let mut totals = Totals::default();
    for p in &profiles {
        totals.received += p.received;
        totals.valid += p.valid;
        totals.rejected += p.rejected;
        totals.analysed += p.analysed;
        totals.anomalies += p.anomalies;
    }
    let sinks = state.sinks.iter().map(|sink| sink.view()).collect();
    Ok(Json(Stats { profiles, totals, uptime_secs: state.started.elapsed().as_secs_f64(), sinks }))
}

/// `GET /api/profiles`: what each profile expects.
pub async fn profiles(State(state): State<AppState>) -> Json<serde_json::Value> {
    let profiles: Vec<serde_json::Value> = state
        .ingest
        .profiles()
        .iter()
        .map(|p| {
            serde_json::json!({
                "name": &*p.name,
                "description": p.description,
                "entity_field": p.entity_field,
                "timestamp_field": p.timestamp_field,
                "position": p.position.as_ref().map(|f| serde_json::json!({"latitude": f.latitude, "longitude": f.longitude})),
                "metrics": p.metrics.iter().map(|m| serde_json::json!({"field": &*m.name, "unit": m.unit, "min": m.min, "max": m.max, "required": m.required})).collect::<Vec<_>>(),
                "attributes": p.attributes.iter().map(|a| serde_json::json!({"field": &*a.name, "values": a.values, "required": a.required})).collect::<Vec<_>>(),
                "detectors": detectors_of(p),
            })
        })
        .collect();
    Json(serde_json::Value::Array(profiles))
}

/// The detectors a profile runs, with their main settings.
fn detectors_of(p: &teleguard_core::profile::Profile) -> serde_json::Value {
    let d = &p.detectors;
    serde_json::json!({
        "zscore": d.zscore.as_ref().map(|z| serde_json::json!({
            "window": z.window.get(), "threshold": z.threshold, "min_history": z.min_history,
            "metrics": z.signals.iter().map(|s| s.name.to_string()).collect::<Vec<_>>(),
        })),
        "isolation_forest": d.isolation_forest.as_ref().map(|f| serde_json::json!({
            "features": f.feature_names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            "training_size": f.training_size, "holdout": f.holdout, "contamination": f.contamination, "trees": f.trees,
            "scope": if f.scope == teleguard_core::detect::settings::ModelScope::Entity { "entity" } else { "profile" },
        })),
        "teleport": d.teleport.as_ref().map(|t| serde_json::json!({"max_speed_kmh": t.max_speed_kmh})),
        "geofence_breach": d.geofence_breach.as_ref().map(|g| serde_json::json!({
            "zones": g.zones, "allowed_from": g.allowed_from.format("%H:%M").to_string(),
            "allowed_until": g.allowed_until.format("%H:%M").to_string(), "time_zone": g.time_zone.name(),
        })),
        "unusual_stop": d.unusual_stop.as_ref().map(|u| serde_json::json!({
            "speed_below_kmh": u.speed_below_kmh, "min_duration_secs": u.min_duration_ms / 1000, "safe_zones": u.safe_zones,
        })),
    })
}
