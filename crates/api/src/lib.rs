//! teleguard's HTTP surface: ingest, query API, Prometheus metrics and the live dashboard.
//!
//! # Layout
//! - [`app`] builds the router from an [`AppState`]; tests drive it with `oneshot`.
//! - [`routes::ingest`]: `POST /api/ingest/{profile}` (one object, an array, or NDJSON).
//! - [`routes::query`]: anomalies, readings, stats, profiles.
//! - [`routes::quarantine`]: dead letters listed, counted and replayed.
//! - [`routes::alerts`]: alerts and their lifecycle.
//! - [`auth`]: the bearer token of an ingest request, checked against the configured ones.
//! - [`routes::hunts`]: threat hunts (geofence breach, teleport, unusual stops) over the store.
//! - [`routes::fleet`]: the fleet map's data, the geofences, and the live event stream.
//! - [`error`]: the one [`error::ApiError`] every handler returns.

pub mod auth;
pub mod error;
pub mod routes;

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use std::sync::Arc;
use std::time::{Duration, Instant};
use teleguard_pipeline::Pipeline;
use teleguard_pipeline::auth::Tokens;
use teleguard_pipeline::ingest::Ingest;
use teleguard_pipeline::live::LiveView;
use teleguard_pipeline::metrics::Metrics;
use teleguard_pipeline::sinks::SinkStatus;
use teleguard_pipeline::store::Reader;
use teleguard_pipeline::store::writer::StoreWriter;

const DASHBOARD: &str = include_str!("../assets/dashboard.html");
/// The OpenAPI 3.1 description of every route, kept true by a test that calls each one.
const OPENAPI: &str = include_str!("../assets/openapi.json");

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub ingest: Ingest,
    pub reader: Arc<Reader>,
    pub store: StoreWriter,
    pub live: Arc<LiveView>,
    /// The geofences in the store, a GeoJSON FeatureCollection.
    pub geofences: Arc<str>,
    pub metrics: Arc<Metrics>,
    /// The external sinks' status.
    pub sinks: Arc<[Arc<SinkStatus>]>,
    pub max_body_bytes: usize,
    /// The bearer tokens ingest accepts; none configured means ingest needs none.
    pub tokens: Arc<Tokens>,
    pub busy_wait: Duration,
    pub started: Instant,
    /// Held while a replay of dead letters runs.
    pub replay_lock: Arc<tokio::sync::Mutex<()>>,
    /// The configured profiles (the hunts take the vehicle rules' settings from them).
    pub profiles: Arc<teleguard_core::profile::ProfileRegistry>,
    /// The embedded store's folder: a hunt reads it on a connection of its own, so a long
    /// hunt never holds up the dashboard's queries.
    pub data_dir: std::path::PathBuf,
}

impl AppState {
    pub fn from_pipeline(pipeline: &Pipeline) -> Self {
        AppState {
            ingest: pipeline.ingest(),
            reader: pipeline.reader.clone(),
            store: pipeline.store(),
            live: pipeline.live.clone(),
            geofences: pipeline.geofences.clone(),
            metrics: pipeline.metrics.clone(),
            sinks: pipeline.sinks.clone(),
            max_body_bytes: pipeline.config.max_body_bytes.get(),
            tokens: pipeline.config.tokens.clone(),
            busy_wait: pipeline.config.busy_wait,
            started: Instant::now(),
            replay_lock: Arc::default(),
            profiles: pipeline.config.profiles.clone(),
            data_dir: pipeline.config.data_dir.clone(),
        }
    }
}

/// The whole HTTP API.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }))
        .route("/metrics", get(metrics))
        .route("/api/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }))
        .route("/api/ingest/{profile}", post(routes::ingest::ingest))
        .route("/api/anomalies", get(routes::query::anomalies))
        .route("/api/readings", get(routes::query::readings))
        .route("/api/stats", get(routes::query::stats))
        .route("/api/dead-letters", get(routes::quarantine::list))
        .route("/api/dead-letters/counts", get(routes::quarantine::counts))
        .route("/api/dead-letters/replay", post(routes::quarantine::replay))
        .route("/api/profiles", get(routes::query::profiles))
        .route("/api/alerts", get(routes::alerts::list))
        .route("/api/alerts/{id}/ack", post(routes::alerts::acknowledge))
        .route("/api/alerts/{id}/resolve", post(routes::alerts::resolve))
        .route("/api/hunts/{name}", get(routes::hunts::hunt))
        .route("/api/fleet", get(routes::fleet::fleet))
        .route("/api/geofences", get(routes::fleet::geofences))
        .route("/api/events", get(routes::fleet::events))
        .with_state(state)
}

async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD)
}

async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.encode())
}

/// Serves the API on `listener` until `shutdown` resolves, then finishes open requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state)).with_graceful_shutdown(shutdown).await
}
