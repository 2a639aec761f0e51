//! The fleet as the map shows it (from memory), the geofences, and the live event stream.

use crate::AppState;
use crate::error::ApiError;
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::time::Duration;
use teleguard_core::time::{format_millis, now_millis};
use teleguard_pipeline::live::LiveEvent;
use teleguard_pipeline::store::query;
use tokio::sync::broadcast::error::RecvError;

/// Positions kept in each entity's trail.
const TRAIL_POSITIONS: usize = 20;

/// One entity on the map.
#[derive(Debug, Serialize)]
pub struct FleetEntity {
    entity: String,
    profile: String,
    latitude: Option<f64>,
    longitude: Option<f64>,
    /// Its last positions, oldest first, as `[latitude, longitude]`.
    trail: Vec<[f64; 2]>,
    /// Event time of its newest reading.
    last_event: String,
    /// When teleguard analysed its newest reading.
    last_arrival: String,
    usual_interval_ms: Option<i64>,
    silence_threshold_secs: f64,
    online: bool,
    open_alert: bool,
    /// Detectors that flagged its newest reading.
    anomalies: Vec<String>,
    driver_name: Option<String>,
    current_zone: Option<String>,
}

/// Online and offline entities of one profile.
#[derive(Debug, Default, Serialize)]
pub struct ProfileFleet {
    profile: String,
    entities: usize,
    online: usize,
    offline: usize,
    with_open_alert: usize,
}

#[derive(Debug, Serialize)]
pub struct Fleet {
    generated_at: String,
    entities: Vec<FleetEntity>,
    profiles: Vec<ProfileFleet>,
}

/// `GET /api/fleet`: every entity's latest position and trail, online or offline against its
/// profile's silence threshold, and whether it has an open alert.
pub async fn fleet(State(state): State<AppState>) -> Result<Json<Fleet>, ApiError> {
    let open: HashSet<(String, String)> =
        state.reader.run(query::entities_with_open_alerts).await?.into_iter().collect();
    let now_ms = now_millis();
    let profiles = state.ingest.profiles();
    let mut entities: Vec<FleetEntity> = state
        .live
        .fleet(TRAIL_POSITIONS)
        .into_iter()
        .map(|snapshot| {
            let row = &snapshot.latest;
            let usual = snapshot.usual_interval_ms.map(|ms| Duration::from_millis(ms as u64));
            let threshold = match profiles.by_name(&row.profile) {
                Some(profile) => profile.silence_threshold(usual),
                None => teleguard_core::profile::SILENCE_FLOOR,
            };
            let silent_ms = now_ms.saturating_sub(row.processed_at_ms).max(0);
            FleetEntity {
                open_alert: open.contains(&(row.profile.to_string(), row.entity.to_string())),
                entity: row.entity.to_string(),
                profile: row.profile.to_string(),
                latitude: row.latitude,
                longitude: row.longitude,
                trail: snapshot.trail.iter().map(|&(lat, lon)| [lat, lon]).collect(),
                last_event: format_millis(row.timestamp_ms),
                last_arrival: format_millis(row.processed_at_ms),
                usual_interval_ms: snapshot.usual_interval_ms,
                silence_threshold_secs: threshold.as_secs_f64(),
                online: (silent_ms as u128) <= threshold.as_millis(),
                anomalies: row.anomalies.clone(),
                driver_name: row.driver_name.as_deref().map(str::to_string),
                current_zone: row.current_zone.as_deref().map(str::to_string),
            }
        })
        .collect();
    entities.sort_unstable_by(|a, b| (&a.profile, &a.entity).cmp(&(&b.profile, &b.entity)));
    let mut by_profile: BTreeMap<&str, ProfileFleet> = BTreeMap::new();
    for entity in &entities {
        let counts = by_profile
            .entry(&entity.profile)
            .or_insert_with(|| ProfileFleet { profile: entity.profile.clone(), ..ProfileFleet::default() });
        counts.entities += 1;
        if entity.online {
            counts.online += 1;
        } else {
            counts.offline += 1;
        }
        counts.with_open_alert += usize::from(entity.open_alert);
    }
    let profiles = by_profile.into_values().collect();
    Ok(Json(Fleet { generated_at: format_millis(now_ms), entities, profiles }))
}

/// `GET /api/geofences`: the geofences in the store, as the GeoJSON FeatureCollection loaded.
pub async fn geofences(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/geo+json")], state.geofences.to_string())
}

/// `GET /api/events`: Server-Sent Events, one `anomaly` per committed anomaly (offline ones
/// and findings of rejected messages included) and one `alert` per committed alert change
/// (opened, escalated, acknowledged, resolved). A client that falls behind gets a `lagged` event saying
/// how many it missed; the pipeline never waits for it.
pub async fn events(State(state): State<AppState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.live.subscribe();
    let events = stream::unfold(receiver, |mut receiver| async move {
        let event = match receiver.recv().await {
            Ok(event) => live_event(&event),
            Err(RecvError::Lagged(missed)) => Event::default().event("lagged").data(missed.to_string()),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), receiver))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

fn live_event(event: &LiveEvent) -> Event {
    let name = match event {
        LiveEvent::Anomaly { .. } => "anomaly",
        LiveEvent::Alert { .. } => "alert",
    };
    let data = serde_json::to_string(event).expect("a live event serialises");
    Event::default().event(name).data(data)
}
