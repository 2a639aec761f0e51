//! teleguard's I/O and wiring around the pure core.
//!
//! # Layout
//! - [`auth`]: bearer tokens for HTTP ingest (hashes in the config, constant-time matching).
//! - [`config`]: the TOML config file, command-line overrides, validation.
//! - [`ingest`]: the path every source uses: validate, admit, bronze, dispatch to a worker.
//! - [`worker`]: per-shard enrichment and detection on its own thread.
//! - [`store`]: the embedded SQLite store (schema, single writer, queries).
//! - [`live`]: the latest readings in memory for the API.
//! - [`metrics`]: Prometheus metrics.
//! - [`models`]: trained isolation forests in model files (`teleguard train`) and in the store.
//! - [`sources`]: the simulator and MQTT sources (HTTP ingest is served by the API crate).
//! - [`notify`]: alert notifications to Slack and webhooks, and alert escalation.
//! - [`hunts`]: threat hunts over the embedded store, ClickHouse or PostgreSQL.
//! - [`fleet_watch`]: `offline` alerts for entities gone silent, resolved when they are back.
//! - [`sinks`]: external stores (PostgreSQL, ClickHouse, Kafka topics) that follow the embedded store.
//! - [`kafka`]: `[kafka]`, the roles of the distributed shape, and the topics' message shapes.
//! - [`Pipeline`]: starts all of the above and stops it in order.

pub mod auth;
pub mod config;
pub mod fleet_watch;
pub mod hunts;
pub mod ingest;
pub mod kafka;
pub mod live;
pub mod metrics;
pub mod models;
pub mod notify;
pub mod sinks;
pub mod sources;
pub mod store;
pub mod worker;

use crate::config::Config;
use crate::ingest::Ingest;
use crate::live::LiveView;
use crate::metrics::Metrics;
use crate::sinks::runner::SinkContext;
use crate::sinks::{SinkHandle, SinkStatus};
use crate::store::Reader;
use crate::store::watermark::SilverWatermark;
use crate::store::writer::{StoreWriter, WriterContext};
use anyhow::Context as _;
use std::sync::Arc;
use std::thread::JoinHandle;
use teleguard_core::detect::isolation_forest::ModelRegistry;
use teleguard_core::detect::isolation_forest::trained::StoredModel;
use teleguard_core::enrich::Enricher;
use teleguard_core::geo::GeofenceIndex;
use tokio::sync::{Semaphore, mpsc};

/// Batches queued per worker, at most; the in-flight semaphore bounds readings overall.
const WORKER_QUEUE_BATCHES: usize = 1024;
/// Readings loaded into the live view at start-up.
const LIVE_WARM_ROWS: usize = 10_000;

/// The value of `name` in `map`, made by `make` if it has none. The lookup is by `&str`, so
/// the name is cloned only the first time: a clone per reading would bounce the shared
/// name's reference count between the worker and store-writer threads.
pub(crate) fn by_name<'a, V, S: std::hash::BuildHasher>(
    map: &'a mut std::collections::HashMap<Arc<str>, V, S>,
    name: &Arc<str>,
    make: impl FnOnce() -> V,
) -> &'a mut V {
    if !map.contains_key(&**name) {
        map.insert(name.clone(), make());
    }
    map.get_mut(&**name).expect("inserted above")
}

/// A running pipeline: store writer, workers, and the handles sources and the API use.
#[derive(Debug)]
pub struct Pipeline {
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub live: Arc<LiveView>,
    /// The geofences in the store, a GeoJSON FeatureCollection.
    pub geofences: Arc<str>,
    pub reader: Arc<Reader>,
    /// The status of each running sink, for `/api/stats`.
    pub sinks: Arc<[Arc<SinkStatus>]>,
    sink_handles: Vec<SinkHandle>,
    ingest: Ingest,
    store: StoreWriter,
    writer_thread: JoinHandle<()>,
    worker_threads: Vec<JoinHandle<()>>,
    /// The task that asks the writer to trim expired rows, if any layer expires.
    retention: Option<tokio::task::JoinHandle<()>>,
}

impl Pipeline {
    /// Opens the store, loads reference data, starts the writer and workers, and re-processes
    /// any message the previous run acknowledged but did not finish.
    pub async fn start(config: Config) -> anyhow::Result<Pipeline> {
        let metrics = Arc::new(Metrics::new());
        let live = Arc::new(LiveView::default());
        let data_dir = config.data_dir.clone();
        let mut connection = store::open(&data_dir, config.durability)?;
        let reference = store::load_reference_data(&mut connection, &config.drivers_json, &config.geofences_geojson)?;
        let geofences = GeofenceIndex::from_geojson(&reference.geofences).context("geofences in the store")?;
        let enricher = Arc::new(Enricher::new(&reference.drivers, geofences));
        let next_bronze_id = store::next_bronze_id(&connection)?;
        let unprocessed = store::unprocessed_bronze(&connection)?;
        let reader = Arc::new(Reader::new(store::open_reader(&data_dir)?));
        let warm = reader.run(|c| store::query::latest_readings(c, None, LIVE_WARM_ROWS)).await?;
        live.push(warm.into_iter().rev().map(Arc::new));

        let capacity = config.inflight_readings.get();
        let inflight = Arc::new(Semaphore::new(capacity));
        let models = Arc::new(ModelRegistry::default());
        let (stored, dropped) = models::from_store_rows(store::stored_models(&connection)?, &config.profiles);
        for reason in dropped {
            tracing::warn!("stored model not used, it is trained again from live readings: {reason}");
        }
        for (key, model) in stored {
            models.install(key, model);
        }
        // Models trained ahead of time (`models = ...`) take the place of the store's, and are
        // stored so that a restart without them keeps them.
        let trained_ahead = match &config.models {
            Some(path) => models::load_all(path, &config.profiles)
                .with_context(|| format!("cannot load the models configured at {}", path.display()))?,
            None => Vec::new(),
        };
        let mut rows_of_trained_ahead = Vec::new();
        for (key, model) in trained_ahead {
            let settings = config.profiles.by_name(&key.profile).and_then(|p| p.detectors.isolation_forest.as_ref());
            if let Some(settings) = settings {
                let stored = StoredModel::new(settings, model.clone());
                rows_of_trained_ahead.push((key.label(), serde_json::to_string(&stored)?));
            }
            tracing::info!("isolation forest {} loaded (trained on {} readings)", key.label(), model.trained_on);
            models.install(key, model);
        }
        let silver_watermark = SilverWatermark::new(next_bronze_id);
        let writer_context = WriterContext {
            silver_watermark: silver_watermark.clone(),
            alert_cooldown_ms: config.alert_cooldown.as_millis() as i64,
            metrics: metrics.clone(),
            inflight: inflight.clone(),
            inflight_capacity: capacity,
            live: live.clone(),
            retention: config.retention.clone(),
        };
        let checkpointer = store::start_checkpointer(&data_dir, config.durability)?;
        let replayed: Vec<i64> = unprocessed.iter().map(|m| m.id).collect();
        let (store, writer_thread) =
            store::writer::spawn(connection, checkpointer, next_bronze_id, &replayed, writer_context)?;
        for (scope, json) in rows_of_trained_ahead {
            store.append_model(scope, json).await?;
        }
        let mut sink_handles = Vec::new();
        let sink_context = |batching| SinkContext {
            data_dir: data_dir.clone(),
            store: store.clone(),
            watermark: silver_watermark.clone(),
            metrics: metrics.clone(),
            batching,
        };
        let external_sinks = config.plan.external_sinks;
        if let Some(postgres) = config.sinks.postgres.as_ref().filter(|_| external_sinks) {
            tracing::info!("sink postgres: following the store into {}", postgres.describe);
            let target = sinks::postgres::PostgresTarget::new(postgres.clone());
            sink_handles.push(sinks::runner::spawn(target, sink_context(postgres.batching))?);
        }
        if let Some(clickhouse) = config.sinks.clickhouse.as_ref().filter(|_| external_sinks) {
            tracing::info!("sink clickhouse: following the store into {}", clickhouse.describe());
            let target = sinks::clickhouse::ClickHouseTarget::new(clickhouse.clone());
            sink_handles.push(sinks::runner::spawn(target, sink_context(clickhouse.batching))?);
        }
        if let Some(kafka) = &config.kafka {
            let plan = &config.plan;
            if plan.produces() {
                let readings = plan
                    .produce_readings
                    .iter()
                    .map(|(profile, topic)| {
                        let enriched = kafka.topics.enriched.get(profile) == Some(topic);
                        (profile.clone(), (topic.clone(), enriched))
                    })
                    .collect();
                let outputs = sinks::kafka::KafkaOutputs {
                    readings,
                    anomalies: plan.produce_anomalies.clone(),
                    dead_letters: plan.produce_dead_letters.clone(),
                };
                let target = sinks::kafka::KafkaTarget::new(kafka.clone(), outputs, config.profiles.clone());
                tracing::info!("sink kafka: following the store into {}", target.describe());
                sink_handles.push(sinks::runner::spawn(target, sink_context(kafka.batching))?);
            }
        }
        let retention = config
            .retention
            .trims_anything()
            .then(|| tokio::spawn(store::retention::run(store.clone(), config.retention.clone())));
        let sinks: Arc<[Arc<SinkStatus>]> = sink_handles.iter().map(|h| h.status.clone()).collect();
        let worker_context = worker::WorkerContext {
            profiles: config.profiles.clone(),
            enricher,
            store: store.clone(),
            metrics: metrics.clone(),
            live: live.clone(),
            models,
            fleet: Arc::new(teleguard_core::detect::fleet::SharedFixes::default()),
            detect: config.plan.detect,
        };
        let mut shards = Vec::new();
        let mut worker_threads = Vec::new();
        for index in 0..config.workers.get() {
            let (sender, receiver) = mpsc::channel(WORKER_QUEUE_BATCHES);
            let queued = metrics.queue(&format!("worker-{index}"));
            shards.push(worker::WorkerQueue { sender, queued: queued.clone() });
            worker_threads.push(worker::spawn(index, receiver, queued, worker_context.clone())?);
        }
        let ingest = Ingest::new(ingest::Shared {
            profiles: config.profiles.clone(),
            store: store.clone(),
            shards,
            inflight,
            capacity,
            metrics: metrics.clone(),
            time_window: config.time_window,
        });
        if !unprocessed.is_empty() {
            tracing::info!("re-processing {} acknowledged messages the previous run did not finish", unprocessed.len());
        }
        for message in unprocessed {
            match config.profiles.by_name(&message.profile) {
                Some(profile) => ingest.replay(message.id, profile, &message.payload).await?,
                None => tracing::warn!(
                    "bronze message {} has profile {:?}, which is no longer configured",
                    message.id,
                    message.profile
                ),
            }
        }
        Ok(Pipeline {
            config,
            metrics,
            live,
            geofences: Arc::from(reference.geofences),
            reader,
            sinks,
            sink_handles,
            ingest,
            store,
            writer_thread,
            worker_threads,
            retention,
        })
    }

    /// The store writer, for operator actions (alerts).
    pub fn store(&self) -> StoreWriter {
        self.store.clone()
    }

    /// The handle sources use to submit messages.
    pub fn ingest(&self) -> Ingest {
        self.ingest.clone()
    }

    /// Waits until everything queued so far is committed.
    pub async fn flush(&self) -> anyhow::Result<()> {
        self.ingest.wait_idle().await;
        Ok(self.store.flush().await?)
    }

    /// Drains and stops. Every other [`Ingest`] handle must have been dropped (sources
    /// stopped) first, or this waits for them.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let Pipeline { ingest, store, writer_thread, worker_threads, sink_handles, retention, .. } = self;
        drop(ingest);
        if let Some(retention) = retention {
            // Its handle to the writer must go for the writer to stop.
            retention.abort();
            let _ = retention.await;
        }
        tokio::task::spawn_blocking(move || {
            for thread in worker_threads {
                thread.join().map_err(|_| anyhow::anyhow!("a worker thread panicked"))?;
            }
            // Every reading is analysed and queued: the sinks write what they can of it, then
            // let go of the writer.
            for sink in &sink_handles {
                sink.stop();
            }
            for sink in sink_handles {
                sink.join()?;
            }
            drop(store);
            writer_thread.join().map_err(|_| anyhow::anyhow!("the store writer thread panicked"))
        })
        .await??;
        Ok(())
    }
}
