//! A pipeline worker: owns a shard of entities, enriches and analyses their readings in order,
//! and hands silver and gold rows to the store writer.

use crate::metrics::{DetectorLabels, Metrics, Stage};
use crate::store::writer::StoreWriter;
use crate::store::{GoldRow, SilverRow};
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use std::time::Instant;
use teleguard_core::detect::fleet::SharedFixes;
use teleguard_core::detect::isolation_forest::ModelRegistry;
use teleguard_core::detect::isolation_forest::trained::StoredModel;
use teleguard_core::detect::{DetectorSet, Findings, Observation};
use teleguard_core::enrich::Enricher;
use teleguard_core::model::Reading;
use teleguard_core::profile::ProfileRegistry;
use teleguard_core::time::now_millis;
use tokio::sync::mpsc;

/// Readings gathered before one hand-off to the store writer, at most.
const MAX_ITEMS_PER_HANDOFF: usize = 8192;

/// One reading on its way to a worker.
#[derive(Debug, Clone)]
pub struct WorkItem {
    pub bronze_id: i64,
    pub reading: Reading,
    pub received: Instant,
    /// When the message arrived (epoch ms) from a source whose devices keep their own clocks,
    /// for the detectors' clock check; `None` when unknown or meaningless (the simulator).
    pub arrived_at_ms: Option<i64>,
    /// Only for the detectors' state: observed, then forgotten (no rows, no anomalies, no permit).
    pub warm_up: bool,
}

/// Readings of one submission that belong to one worker, in arrival order.
#[derive(Debug)]
pub struct WorkBatch {
    pub items: Vec<WorkItem>,
}

/// The sending end of a worker's queue, with the gauge of the readings waiting in it.
#[derive(Debug, Clone)]
pub struct WorkerQueue {
    pub sender: mpsc::Sender<WorkBatch>,
    pub queued: Gauge,
}

impl WorkerQueue {
    /// Queues `batch`; an error means the worker has stopped.
    pub async fn send(&self, batch: WorkBatch) -> Result<(), mpsc::error::SendError<WorkBatch>> {
        let readings = batch.items.len() as i64;
        self.queued.inc_by(readings);
        let sent = self.sender.send(batch).await;
        if sent.is_err() {
            self.queued.dec_by(readings);
        }
        sent
    }
}

/// What every worker shares.
#[derive(Debug, Clone)]
pub struct WorkerContext {
    pub profiles: Arc<ProfileRegistry>,
    pub enricher: Arc<Enricher>,
    pub store: StoreWriter,
    pub metrics: Arc<Metrics>,
    pub live: Arc<crate::live::LiveView>,
    pub models: Arc<ModelRegistry>,
    /// The fleet's recent fixes, shared by every worker's spoofing check.
    pub fleet: Arc<SharedFixes>,
    /// Whether detectors run; off in a process that only enriches (`--role enrich`).
    pub detect: bool,
}

/// Starts worker `index` on its own thread; it stops when every sender of `batches` is gone.
/// `queued` counts the readings in its queue (see [`WorkerQueue`]).
pub fn spawn(
    index: usize,
    mut batches: mpsc::Receiver<WorkBatch>,
    queued: Gauge,
    context: WorkerContext,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(format!("worker-{index}")).spawn(move || {
        let mut worker = Worker::new(context);
        while let Some(first) = batches.blocking_recv() {
            let mut items = first.items;
            while items.len() < MAX_ITEMS_PER_HANDOFF {
                match batches.try_recv() {
                    Ok(more) => items.extend(more.items),
                    Err(_) => break,
                }
            }
            queued.dec_by(items.len() as i64);
            if let Err(e) = worker.process(items) {
                tracing::error!(
                    "worker {index}: {e}; its remaining readings are replayed from bronze at the next start"
                );
                break;
            }
        }
    })
}

/// The synchronous part of a worker: enrichment and detection over a batch.
pub struct Worker {
    context: WorkerContext,
    detectors: DetectorSet,
    /// JSON-quoted metric and attribute names per profile, computed once.
    quoted_names: Vec<(Vec<String>, Vec<String>)>,
    findings: Findings,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("detectors", &self.detectors).finish()
    }
}

impl Worker {
    pub fn new(context: WorkerContext) -> Self {
        let quote = |name: &Arc<str>| serde_json::to_string(&**name).expect("a string serialises");
        let quoted_names = context
            .profiles
            .iter()
            .map(|p| {
                (
                    p.metrics.iter().map(|m| quote(&m.name)).collect(),
                    p.attributes.iter().map(|a| quote(&a.name)).collect(),
                )
            })
            .collect();
        let detectors = DetectorSet::sharing(context.models.clone(), context.fleet.clone());
        Worker { context, detectors, quoted_names, findings: Findings::default() }
    }

    /// Enriches and analyses `items` in order and queues their rows for the store.
    pub fn process(&mut self, items: Vec<WorkItem>) -> Result<(), crate::store::StoreError> {
        let started = Instant::now();
        let permits = items.iter().filter(|item| !item.warm_up).count();
        let mut silver = Vec::with_capacity(items.len());
        let mut gold = Vec::new();
        let processed_at_ms = now_millis();
        for item in items {
            let profile = self.context.profiles.get(item.reading.profile).clone();
            let enrichment = self.context.enricher.enrich(&profile, &item.reading);
            self.findings.clear();
            if self.context.detect {
                let observation = Observation {
                    profile: &profile,
                    reading: &item.reading,
                    enrichment: &enrichment,
                    arrival_ms: item.arrived_at_ms,
                };
                self.detectors.observe(observation, &mut self.findings);
            }
            if item.warm_up {
                continue;
            }
            let (metric_names, attribute_names) = &self.quoted_names[usize::from(item.reading.profile)];
            let reading = &item.reading;
            let row = SilverRow {
                id: item.bronze_id,
                profile: profile.name.clone(),
                entity: reading.entity.clone(),
                timestamp_ms: reading.event_time_ms,
                latitude: reading.position.map(|p| p.lat),
                longitude: reading.position.map(|p| p.lon),
                metrics: json_object(
                    reading.metrics.iter().map(|(id, v)| (&metric_names[usize::from(*id)], Value::Number(*v))),
                ),
                attributes: json_object(
                    reading.attributes.iter().map(|(id, v)| (&attribute_names[usize::from(*id)], Value::Text(v))),
                ),
                driver_name: enrichment.driver_name,
                current_zone: enrichment.current_zone,
                processed_at_ms,
                anomalies: self.findings.anomalies.iter().map(|a| a.detector.to_string()).collect(),
                received: item.received,
            };
            for anomaly in self.findings.anomalies.drain(..) {
                self.context
                    .metrics
                    .anomalies_detected
                    .get_or_create(&DetectorLabels {
                        profile: profile.name.to_string(),
                        detector: anomaly.detector.into(),
                    })
                    .inc();
                gold.push(GoldRow::new(
                    item.bronze_id,
                    profile.name.clone(),
                    reading.entity.clone(),
                    reading.event_time_ms,
                    anomaly,
                    processed_at_ms,
                ));
            }
            silver.push(Arc::new(row));
        }
        self.context.metrics.messages_consumed.inc_by(permits as u64);
        self.context.metrics.observe_stage(Stage::Analyse, started.elapsed().as_secs_f64());
        // Shown by the API right away: their messages are already durable in bronze.
        self.context.live.push(silver.iter().cloned());
        for (key, model) in self.context.models.take_trained() {
            // Stored with the settings it was trained under, so a restart under others retrains.
            let Some(settings) =
                self.context.profiles.by_name(&key.profile).and_then(|p| p.detectors.isolation_forest.as_ref())
            else {
                continue;
            };
            let stored = StoredModel::new(settings, (*model).clone());
            let json = serde_json::to_string(&stored).expect("a model serialises");
            self.context.store.append_model_blocking(key.label(), json)?;
        }
        if permits == 0 {
            // Only state rebuilt: nothing to store.
            return Ok(());
        }
        self.context.store.append_derived_blocking(silver, gold, permits)
    }
}

enum Value<'a> {
    Number(f64),
    Text(&'a str),
}

/// A JSON object from pre-quoted keys; numbers are finite (validation guarantees it) and
/// written shortest-round-trip by `ryu`, as serde_json does.
fn json_object<'a>(fields: impl Iterator<Item = (&'a String, Value<'a>)>) -> String {
    let mut text = String::with_capacity(96);
    text.push('{');
    for (index, (key, value)) in fields.enumerate() {
        if index > 0 {
            text.push(',');
        }
        text.push_str(key);
        text.push(':');
        match value {
            Value::Number(x) => text.push_str(ryu::Buffer::new().format_finite(x)),
            Value::Text(s) => text.push_str(&serde_json::to_string(s).expect("a string serialises")),
        }
    }
    text.push('}');
    text
}
