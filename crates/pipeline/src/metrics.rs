//! Prometheus metrics, with the names the reference designs use.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProfileSourceLabels {
    pub profile: String,
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProfileLabels {
    pub profile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DetectorLabels {
    pub profile: String,
    pub detector: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteOutcomeLabels {
    pub route: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub token: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LayerLabels {
    pub layer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: String,
}

/// A histogram per label set, all with the same buckets.
pub type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The pipeline's stages, as `teleguard_stage_seconds` names them.
#[derive(Debug, Clone, Copy)]
pub enum Stage {
    /// Decoding and validating one submission's messages.
    Validate,
    /// Waiting for a submission's bronze commit, before its source is acknowledged.
    Bronze,
    /// Enriching and analysing one worker batch.
    Analyse,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::Validate => "validate",
            Stage::Bronze => "bronze",
            Stage::Analyse => "analyse",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLayerLabels {
    pub sink: String,
    pub layer: String,
}

/// Every metric the pipeline exports. Counters are exposed with the `_total` suffix.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub messages_received: Family<ProfileSourceLabels, Counter>,
    pub messages_valid: Family<ProfileLabels, Counter>,
    pub messages_rejected: Family<ProfileLabels, Counter>,
    pub messages_consumed: Counter,
    pub anomalies_detected: Family<DetectorLabels, Counter>,
    pub end_to_end_latency: Histogram,
    pub store_rows_written: Family<LayerLabels, Counter>,
    pub retention_deleted_rows: Family<LayerLabels, Counter>,
    pub store_commit_seconds: Histogram,
    pub store_errors: Counter,
    /// Time one batch spends in each stage (see [`Stage`]).
    pub stage_seconds: HistogramFamily<StageLabels>,
    /// Readings waiting for each worker (`worker-N`) and commands waiting for the store writer
    /// (`store`).
    pub queue_depth: Family<QueueLabels, Gauge>,
    pub backpressure_rejections: Counter,
    pub inflight_readings: Gauge,
    pub recovered_readings: Counter,
    /// Every message that became no reading, from any source, by reason code.
    pub discarded: Family<ReasonLabels, Counter>,
    /// Alert notifications per route: `delivered`, `failed` (an attempt), `filtered`.
    pub notifications: Family<RouteOutcomeLabels, Counter>,
    /// Dead letters replayed, by what they became (`accepted`, `rejected`, `duplicate`).
    pub dead_letters_replayed: Family<OutcomeLabels, Counter>,
    /// HTTP ingest requests refused with 401 (nothing of them stored), by reason
    /// (`missing_token`, `unknown_token`).
    pub http_auth_failures: Family<ReasonLabels, Counter>,
    /// HTTP messages refused because their token's grant does not cover their profile or
    /// entity, by token name (each is also a `forbidden` discard with a dead letter).
    pub http_forbidden: Family<TokenLabels, Counter>,
    /// The MQTT gateway's (reference 001's names): messages, verdicts by reason code, the
    /// time from a batch's arrival to its acknowledgement, and the broker connections.
    pub gateway_messages_received: Counter,
    pub gateway_validation_success: Counter,
    pub gateway_validation_errors: Family<ReasonLabels, Counter>,
    pub gateway_process_duration: Histogram,
    pub mqtt_connections: Counter,
    pub mqtt_disconnects: Counter,
    pub mqtt_reconnects: Counter,
    /// External sinks (see `crate::sinks`): rows of each layer in the store their target has
    /// not confirmed, how long it has been behind, rows confirmed, whether it is reachable,
    /// and failed attempts.
    pub sink_lag_rows: Family<SinkLayerLabels, Gauge>,
    pub sink_lag_seconds: Family<SinkLabels, Gauge<f64, AtomicU64>>,
    pub sink_rows_written: Family<SinkLayerLabels, Counter>,
    pub sink_up: Family<SinkLabels, Gauge>,
    pub sink_errors: Family<SinkLabels, Counter>,
    /// Exact end-to-end latencies in seconds, kept only while a benchmark asks for them.
    latency_samples: std::sync::Mutex<Option<Vec<f32>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Counts `count` messages discarded for `reason` (a reason code).
    pub fn discard(&self, reason: &str, count: u64) {
        self.discarded.get_or_create(&ReasonLabels { reason: reason.into() }).inc_by(count);
    }

    /// Counts one notification outcome of `route`.
    pub fn notification(&self, route: &str, outcome: &str) {
        self.notifications.get_or_create(&RouteOutcomeLabels { route: route.into(), outcome: outcome.into() }).inc();
    }

    /// Counts the outcomes of one replay of dead letters.
    pub fn record_replay(&self, accepted: u64, rejected: u64, duplicates: u64) {
        for (outcome, count) in [("accepted", accepted), ("rejected", rejected), ("duplicate", duplicates)] {
            if count > 0 {
                self.dead_letters_replayed.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc_by(count);
            }
        }
    }

    pub fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = Metrics {
            messages_received: Family::default(),
            messages_valid: Family::default(),
            messages_rejected: Family::default(),
            messages_consumed: Counter::default(),
            anomalies_detected: Family::default(),
            end_to_end_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 17)),
            store_rows_written: Family::default(),
            retention_deleted_rows: Family::default(),
            store_commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            store_errors: Counter::default(),
            stage_seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.00001, 2.0, 20))),
            queue_depth: Family::default(),
            backpressure_rejections: Counter::default(),
            inflight_readings: Gauge::default(),
            recovered_readings: Counter::default(),
            discarded: Family::default(),
            dead_letters_replayed: Family::default(),
            notifications: Family::default(),
            http_auth_failures: Family::default(),
            http_forbidden: Family::default(),
            gateway_messages_received: Counter::default(),
            gateway_validation_success: Counter::default(),
            gateway_validation_errors: Family::default(),
            gateway_process_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
            mqtt_connections: Counter::default(),
            mqtt_disconnects: Counter::default(),
            mqtt_reconnects: Counter::default(),
            sink_lag_rows: Family::default(),
            sink_lag_seconds: Family::default(),
            sink_rows_written: Family::default(),
            sink_up: Family::default(),
            sink_errors: Family::default(),
            latency_samples: std::sync::Mutex::new(None),
            registry: Registry::default(),
        };
        registry.register(
            "pipeline_end_to_end_latency_seconds",
            "Time from a message's arrival to its reading being analysed and stored",
            metrics.end_to_end_latency.clone(),
        );
        registry.register(
            "anomaly_detector_messages_consumed",
            "Readings analysed by the detectors",
            metrics.messages_consumed.clone(),
        );
        registry.register(
            "anomaly_detector_anomalies_detected",
            "Anomalies raised, by profile and detector",
            metrics.anomalies_detected.clone(),
        );
        registry.register(
            "teleguard_messages_received",
            "Messages received, valid or not, by profile and source",
            metrics.messages_received.clone(),
        );
        registry.register(
            "teleguard_validation_passed",
            "Messages that passed schema validation",
            metrics.messages_valid.clone(),
        );
        registry.register(
            "teleguard_validation_failed",
            "Messages rejected by validation (each has a dead-letter record in bronze)",
            metrics.messages_rejected.clone(),
        );
        registry.register(
            "teleguard_store_rows_written",
            "Rows committed to the embedded store, by layer",
            metrics.store_rows_written.clone(),
        );
        registry.register(
            "teleguard_store_retention_deleted_rows",
            "Rows retention deleted from the embedded store, by layer (bronze, silver, gold)",
            metrics.retention_deleted_rows.clone(),
        );
        registry.register(
            "teleguard_store_commit_seconds",
            "Duration of one store transaction",
            metrics.store_commit_seconds.clone(),
        );
        registry.register("teleguard_store_errors", "Store transactions that failed", metrics.store_errors.clone());
        registry.register(
            "teleguard_stage_seconds",
            "Time one batch spends in a stage: validate (decode and check a submission), bronze (wait for its durable \
             commit before the source is acknowledged), analyse (enrich and detect a worker batch)",
            metrics.stage_seconds.clone(),
        );
        registry.register(
            "teleguard_queue_depth",
            "Readings waiting for each worker (queue worker-N) and commands waiting for the store writer (queue store)",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "teleguard_ingest_backpressure_rejections",
            "Ingest requests refused with 503 because the pipeline was full",
            metrics.backpressure_rejections.clone(),
        );
        registry.register(
            "teleguard_inflight_readings",
            "Readings accepted but not yet analysed and stored",
            metrics.inflight_readings.clone(),
        );
        registry.register(
            "teleguard_recovered_readings",
            "Readings re-processed at start-up because the previous run stopped before storing them",
            metrics.recovered_readings.clone(),
        );
        registry.register(
            "teleguard_discarded",
            "Messages from any source that became no reading, by reason code (each has a dead-letter record in bronze)",
            metrics.discarded.clone(),
        );
        registry.register(
            "teleguard_notifications",
            "Alert notifications per route: delivered, failed (each failed attempt) and filtered out",
            metrics.notifications.clone(),
        );
        registry.register(
            "teleguard_dead_letters_replayed",
            "Quarantined messages replayed (POST /api/dead-letters/replay), by what they became",
            metrics.dead_letters_replayed.clone(),
        );
        registry.register(
            "teleguard_http_auth_failures",
            "HTTP ingest requests refused with 401, by reason (missing_token, unknown_token); nothing of them is stored",
            metrics.http_auth_failures.clone(),
        );
        registry.register(
            "teleguard_http_forbidden",
            "HTTP messages outside their token's grant (profile or entity prefix), by token name",
            metrics.http_forbidden.clone(),
        );
        registry.register(
            "gateway_mqtt_messages_received",
            "MQTT messages received from the broker (redeliveries included)",
            metrics.gateway_messages_received.clone(),
        );
        registry.register(
            "gateway_validation_success",
            "MQTT messages that passed validation and became readings",
            metrics.gateway_validation_success.clone(),
        );
        registry.register(
            "gateway_validation_errors",
            "MQTT messages rejected, by reason code (each has a dead-letter record in bronze)",
            metrics.gateway_validation_errors.clone(),
        );
        registry.register(
            "gateway_process_duration_seconds",
            "Time from an MQTT batch's arrival to its bronze commit, before the acknowledgements",
            metrics.gateway_process_duration.clone(),
        );
        registry.register(
            "gateway_mqtt_connections",
            "Successful connections to an MQTT broker",
            metrics.mqtt_connections.clone(),
        );
        registry.register(
            "gateway_mqtt_disconnects",
            "MQTT connections that were lost",
            metrics.mqtt_disconnects.clone(),
        );
        registry.register(
            "gateway_mqtt_reconnects",
            "Successful MQTT connections after a lost one",
            metrics.mqtt_reconnects.clone(),
        );
        registry.register(
            "teleguard_sink_lag_rows",
            "Rows of a layer in the embedded store that a sink's target has not confirmed, by sink and layer",
            metrics.sink_lag_rows.clone(),
        );
        registry.register(
            "teleguard_sink_lag_seconds",
            "How long a sink's target has been behind the embedded store (0 when caught up)",
            metrics.sink_lag_seconds.clone(),
        );
        registry.register(
            "teleguard_sink_rows_written",
            "Rows a sink's target confirmed, by sink and layer",
            metrics.sink_rows_written.clone(),
        );
        registry.register(
            "teleguard_sink_up",
            "1 while a sink's target answers, 0 while it is down",
            metrics.sink_up.clone(),
        );
        registry.register(
            "teleguard_sink_errors",
            "Failed attempts of a sink to reach or write to its target",
            metrics.sink_errors.clone(),
        );
        Metrics { registry, ..metrics }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    /// Starts keeping every end-to-end latency (for `teleguard bench`).
    pub fn keep_latency_samples(&self) {
        *self.latency_samples.lock().expect("latency samples lock") = Some(Vec::new());
    }

    /// The latencies kept since [`Metrics::keep_latency_samples`], in seconds.
    pub fn take_latency_samples(&self) -> Vec<f32> {
        self.latency_samples.lock().expect("latency samples lock").take().unwrap_or_default()
    }

    /// Records end-to-end latencies: the histogram always, the samples when kept.
    pub fn observe_latencies(&self, seconds: impl Iterator<Item = f64>) {
        let mut samples = self.latency_samples.lock().expect("latency samples lock");
        for latency in seconds {
            self.end_to_end_latency.observe(latency);
            if let Some(samples) = samples.as_mut() {
                samples.push(latency as f32);
            }
        }
    }

    /// Records that one batch spent `seconds` in `stage`.
    pub fn observe_stage(&self, stage: Stage, seconds: f64) {
        self.stage_seconds.get_or_create(&StageLabels { stage: stage.as_str().into() }).observe(seconds);
    }

    /// The depth gauge of `queue`.
    pub fn queue(&self, queue: &str) -> Gauge {
        self.queue_depth.get_or_create(&QueueLabels { queue: queue.into() }).clone()
    }

    pub fn profile(profile: &str) -> ProfileLabels {
        ProfileLabels { profile: profile.to_string() }
    }
}
