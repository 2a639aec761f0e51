//! The ingest path every source uses: validate, admit, make durable in bronze, dispatch.
//!
//! A message is acknowledged (the returned report) only after its bronze row is committed.
//! Valid readings then go to the worker that owns their entity. In-flight readings are
//! bounded by a semaphore: a source either waits for room or is told the pipeline is busy.

use crate::metrics::{Metrics, ProfileSourceLabels};
use crate::store::writer::StoreWriter;
use crate::store::{BronzeContent, BronzeRow, StoreError, accepted_payload};
use crate::worker::{WorkBatch, WorkItem};
use std::sync::Arc;
use std::time::{Duration, Instant};
use teleguard_core::model::Reading;
use teleguard_core::profile::{Profile, ProfileRegistry};
use teleguard_core::time::now_millis;
use teleguard_core::validate::{Rejection, decode_and_validate, validate};
use tokio::sync::{Semaphore, mpsc};

/// How a source waits when the pipeline is full.
#[derive(Debug, Clone, Copy)]
pub enum Admission {
    /// Wait as long as it takes (the simulator, replays).
    Wait,
    /// Wait at most this long, then give up with [`IngestError::Busy`] (HTTP).
    Within(Duration),
}

/// What became of each message of a submission.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct IngestReport {
    pub accepted: usize,
    pub rejected: usize,
    pub errors: Vec<ItemError>,
}

/// Why one message of a submission was rejected.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ItemError {
    pub index: usize,
    pub field: Option<String>,
    pub error: String,
}

/// Why a whole submission was refused (nothing of it was acknowledged).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("unknown profile {name:?}; known profiles: {known}")]
    UnknownProfile { name: String, known: String },
    #[error("the pipeline is full ({inflight} readings in flight); retry in {retry_after_secs} s")]
    Busy { inflight: usize, retry_after_secs: u64 },
    #[error("{items} valid readings in one request is more than the {max} the pipeline holds in flight; split it")]
    TooLarge { items: usize, max: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A cloneable handle to the ingest path.
#[derive(Debug, Clone)]
pub struct Ingest {
    shared: Arc<Shared>,
}

/// What every ingest handle shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub profiles: Arc<ProfileRegistry>,
    pub store: StoreWriter,
    /// One bounded queue per worker.
    pub shards: Vec<mpsc::Sender<WorkBatch>>,
    /// In-flight readings: taken at admission, given back once stored in silver.
    pub inflight: Arc<Semaphore>,
    pub capacity: usize,
    pub metrics: Arc<Metrics>,
}

/// The longest profile name recorded for a message addressed to an unknown profile.
const MAX_UNKNOWN_PROFILE_NAME: usize = 64;

impl Ingest {
    pub(crate) fn new(shared: Shared) -> Self {
        Ingest { shared: Arc::new(shared) }
    }

    pub fn profiles(&self) -> &Arc<ProfileRegistry> {
        &self.shared.profiles
    }

    /// Validates, stores and dispatches `items` (one JSON or Avro message each) of `profile_name`.
    pub async fn submit(
        &self,
        profile_name: &str,
        source: &'static str,
        items: Vec<Vec<u8>>,
        admission: Admission,
    ) -> Result<IngestReport, IngestError> {
        let received = Instant::now();
        let received_at_ms = now_millis();
        let Some(profile) = self.shared.profiles.by_name(profile_name).cloned() else {
            let reason = format!("unknown profile {profile_name:?}");
            self.record_all_rejected(profile_name, source, items, &reason).await?;
            return Err(self.unknown_profile(profile_name));
        };
        let (items, verdicts): (Vec<Vec<u8>>, Vec<Result<Reading, Rejection>>) =
            items.into_iter().map(|item| decode_and_validate(&profile, item)).unzip();
        let valid = verdicts.iter().filter(|v| v.is_ok()).count();
        self.admit(valid, admission).await?;
        let mut rows = Vec::new();
        if valid > 0 {
            // First, so that the first id answered is the first reading's.
            let accepted = items.iter().zip(&verdicts).filter(|(_, v)| v.is_ok()).map(|(item, _)| item.as_slice());
            let content = BronzeContent::Accepted { messages: valid, payload: accepted_payload(accepted) };
            rows.push(BronzeRow { received_at_ms, source, profile: profile.name.clone(), content });
        }
        for (payload, verdict) in items.into_iter().zip(&verdicts) {
            if let Err(rejection) = verdict {
                let content = BronzeContent::Rejected { reason: rejection.to_string(), payload };
                rows.push(BronzeRow { received_at_ms, source, profile: profile.name.clone(), content });
            }
        }
        let first_id = match self.shared.store.append_bronze(rows).await {
            Ok(id) => id,
            Err(e) => {
                self.release(valid);
                return Err(e.into());
            }
        };
        let report = self.count(&profile, source, &verdicts);
        let readings = verdicts
            .into_iter()
            .enumerate()
            .filter_map(|(offset, verdict)| verdict.ok().map(|reading| (first_id + offset as i64, reading)));
        self.dispatch(readings, received).await;
        Ok(report)
    }

    /// Records a message that could not even be split into items (e.g. an oversized body).
    pub async fn record_rejected(
        &self,
        profile_name: &str,
        source: &'static str,
        payload: Vec<u8>,
        reason: &str,
    ) -> Result<(), IngestError> {
        self.record_all_rejected(profile_name, source, vec![payload], reason).await
    }

    /// Records messages that are all rejected for the same reason, in one transaction.
    async fn record_all_rejected(
        &self,
        profile_name: &str,
        source: &'static str,
        payloads: Vec<Vec<u8>>,
        reason: &str,
    ) -> Result<(), IngestError> {
        let known = self.shared.profiles.by_name(profile_name).map(|p| p.name.clone());
        let profile =
            known.unwrap_or_else(|| profile_name.chars().take(MAX_UNKNOWN_PROFILE_NAME).collect::<String>().into());
        let label = if self.shared.profiles.by_name(&profile).is_some() { &*profile } else { "unknown" };
        let received_at_ms = now_millis();
        let count = payloads.len() as u64;
        let rows = payloads
            .into_iter()
            .map(|payload| {
                let content = BronzeContent::Rejected { reason: reason.into(), payload };
                BronzeRow { received_at_ms, source, profile: profile.clone(), content }
            })
            .collect();
        self.shared.store.append_bronze(rows).await?;
        let metrics = &self.shared.metrics;
        metrics
            .messages_received
            .get_or_create(&ProfileSourceLabels { profile: label.into(), source: source.into() })
            .inc_by(count);
        metrics.messages_rejected.get_or_create(&Metrics::profile(label)).inc_by(count);
        Ok(())
    }

    pub fn unknown_profile(&self, name: &str) -> IngestError {
        IngestError::UnknownProfile {
            name: name.chars().take(MAX_UNKNOWN_PROFILE_NAME).collect(),
            known: self.shared.profiles.names().join(", "),
        }
    }

    /// Re-dispatches bronze messages whose readings were never stored (start-up recovery).
    pub(crate) async fn replay(&self, id: i64, profile: &Arc<Profile>, payload: &[u8]) -> Result<(), IngestError> {
        let Ok(reading) = validate(profile, payload) else {
            tracing::warn!("bronze message {id} no longer passes profile {}; left as it is", profile.name);
            return Ok(());
        };
        self.admit(1, Admission::Wait).await?;
        self.shared.metrics.recovered_readings.inc();
        self.dispatch(std::iter::once((id, reading)), Instant::now()).await;
        Ok(())
    }

    /// Waits until every admitted reading has been analysed and stored.
    pub async fn wait_idle(&self) {
        let capacity = u32::try_from(self.shared.capacity).unwrap_or(u32::MAX);
        if let Ok(all) = self.shared.inflight.acquire_many(capacity).await {
            drop(all);
        }
    }

    async fn admit(&self, readings: usize, admission: Admission) -> Result<(), IngestError> {
        if readings == 0 {
            return Ok(());
        }
        if readings > self.shared.capacity {
            return Err(IngestError::TooLarge { items: readings, max: self.shared.capacity });
        }
        let wanted = u32::try_from(readings).unwrap_or(u32::MAX);
        let acquired = match admission {
            Admission::Wait => self.shared.inflight.acquire_many(wanted).await.ok(),
            Admission::Within(limit) => {
                tokio::time::timeout(limit, self.shared.inflight.acquire_many(wanted)).await.ok().and_then(Result::ok)
            }
        };
        match acquired {
            Some(permit) => {
                permit.forget();
                Ok(())
            }
            None => {
                self.shared.metrics.backpressure_rejections.inc();
                let inflight = self.shared.capacity - self.shared.inflight.available_permits();
                Err(IngestError::Busy { inflight, retry_after_secs: 1 })
            }
        }
    }

    fn release(&self, readings: usize) {
        if readings > 0 {
            self.shared.inflight.add_permits(readings);
        }
    }

    fn count(&self, profile: &Profile, source: &'static str, verdicts: &[Result<Reading, Rejection>]) -> IngestReport {
        let mut report = IngestReport::default();
        for (index, verdict) in verdicts.iter().enumerate() {
            match verdict {
                Ok(_) => report.accepted += 1,
                Err(rejection) => {
                    report.rejected += 1;
                    report.errors.push(ItemError {
                        index,
                        field: rejection.field.clone(),
                        error: rejection.to_string(),
                    });
                }
            }
        }
        let metrics = &self.shared.metrics;
        let labels = ProfileSourceLabels { profile: profile.name.to_string(), source: source.into() };
        metrics.messages_received.get_or_create(&labels).inc_by(verdicts.len() as u64);
        let profile_label = Metrics::profile(&profile.name);
        if report.accepted > 0 {
            metrics.messages_valid.get_or_create(&profile_label).inc_by(report.accepted as u64);
        }
        if report.rejected > 0 {
            metrics.messages_rejected.get_or_create(&profile_label).inc_by(report.rejected as u64);
        }
        report
    }

    /// Sends readings to the workers that own their entities, keeping each entity's order.
    async fn dispatch(&self, readings: impl Iterator<Item = (i64, Reading)>, received: Instant) {
        let shards = &self.shared.shards;
        let mut batches: Vec<Vec<WorkItem>> = vec![Vec::new(); shards.len()];
        for (bronze_id, reading) in readings {
            let shard = shard_of(&reading, shards.len());
            batches[shard].push(WorkItem { bronze_id, reading, received });
        }
        for (shard, items) in batches.into_iter().enumerate() {
            if items.is_empty() {
                continue;
            }
            if shards[shard].send(WorkBatch { items }).await.is_err() {
                tracing::error!(
                    "worker {shard} has stopped; its readings stay in bronze and are replayed at the next start"
                );
            }
        }
    }
}

/// The worker that owns a reading's entity: a stable hash of (profile, entity).
pub fn shard_of(reading: &Reading, shards: usize) -> usize {
    let hash = teleguard_core::model::stable_hash(&[&reading.profile.to_le_bytes(), reading.entity.as_bytes()]);
    (hash % shards as u64) as usize
}
