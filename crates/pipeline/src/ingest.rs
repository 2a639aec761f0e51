//! The ingest path every source uses: validate, admit, make durable in bronze, dispatch.
//!
//! A message is acknowledged (the returned report) only after its bronze row is committed.
//! Valid readings then go to the worker that owns their entity. In-flight readings are
//! bounded by a semaphore: a source either waits for room or is told the pipeline is busy.

use crate::metrics::{Metrics, ProfileSourceLabels};
use crate::store::writer::StoreWriter;
use crate::store::{
    BronzeContent, BronzeRow, MessageKey, OnceSubmission, StoreError, accepted_payload, duplicate_reason,
};
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
    /// Messages identical to stored ones, recorded as duplicates (only from
    /// [`Ingest::submit_deliveries`]); they are among the rejected.
    #[serde(skip_serializing_if = "is_zero")]
    pub duplicates: usize,
    pub errors: Vec<ItemError>,
}

fn is_zero(count: &usize) -> bool {
    *count == 0
}

/// One message from a source, with the entities its transport allows it to speak for.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub payload: Vec<u8>,
    pub grant: EntityGrant,
}

/// Which entities a transport lets a message speak for; a message naming another is rejected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum EntityGrant {
    /// Any entity (the simulator, HTTP without tokens, MQTT without `entity_from_topic`).
    #[default]
    Any,
    /// Exactly this one, which the transport vouches for (the device's own MQTT topic);
    /// another is rejected as `identity_mismatch`.
    Exactly(Arc<str>),
    /// Entities whose id starts with `prefix`, the grant of the HTTP token named `token`;
    /// another is rejected as `forbidden`.
    Prefixed { token: Arc<str>, prefix: Arc<str> },
}

/// Why one message of a submission was rejected.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ItemError {
    pub index: usize,
    /// A short code for the kind of rejection ([`Rejection::code`]).
    pub reason: &'static str,
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
        self.submit_granted(profile_name, source, items, EntityGrant::Any, admission).await
    }

    /// Like [`Ingest::submit`], for messages that may speak only for the entities of `grant`
    /// (HTTP with a token); the others are rejected.
    pub async fn submit_granted(
        &self,
        profile_name: &str,
        source: &'static str,
        items: Vec<Vec<u8>>,
        grant: EntityGrant,
        admission: Admission,
    ) -> Result<IngestReport, IngestError> {
        let deliveries = items.into_iter().map(|payload| Delivery { payload, grant: grant.clone() }).collect();
        self.submit_inner(profile_name, source, deliveries, admission, Redelivery::Never).await
    }

    /// Like [`Ingest::submit`], for a source that may deliver a message twice: a valid
    /// message identical to a stored one (same profile, entity, event time and payload) is
    /// recorded as a duplicate of it in bronze instead of becoming a second reading.
    pub async fn submit_deliveries(
        &self,
        profile_name: &str,
        source: &'static str,
        deliveries: Vec<Delivery>,
        admission: Admission,
    ) -> Result<IngestReport, IngestError> {
        self.submit_inner(profile_name, source, deliveries, admission, Redelivery::Possible).await
    }

    async fn submit_inner(
        &self,
        profile_name: &str,
        source: &'static str,
        deliveries: Vec<Delivery>,
        admission: Admission,
        redelivery: Redelivery,
    ) -> Result<IngestReport, IngestError> {
        let received = Instant::now();
        let received_at_ms = now_millis();
        let Some(profile) = self.shared.profiles.by_name(profile_name).cloned() else {
            let reason = format!("unknown profile {profile_name:?}");
            let payloads = deliveries.into_iter().map(|d| d.payload).collect();
            self.record_all_rejected(profile_name, source, payloads, "unknown_profile", &reason).await?;
            return Err(self.unknown_profile(profile_name));
        };
        let (deliveries, mut verdicts): (Vec<Delivery>, Vec<Result<Reading, Rejection>>) = deliveries
            .into_iter()
            .map(|delivery| {
                let (payload, verdict) = decode_and_validate(&profile, delivery.payload);
                let verdict = verdict.and_then(|r| check_entity_grant(r, &delivery.grant));
                (Delivery { payload, grant: delivery.grant }, verdict)
            })
            .unzip();
        let valid = verdicts.iter().filter(|v| v.is_ok()).count();
        self.admit(valid, admission).await?;
        let rejected_row = |payload: Vec<u8>, rejection: &Rejection| BronzeRow {
            received_at_ms,
            source,
            profile: profile.name.clone(),
            content: BronzeContent::Rejected { reason: rejection.to_string(), payload },
        };
        let stored = match redelivery {
            Redelivery::Never => {
                let mut rows = Vec::new();
                if valid > 0 {
                    // First, so that the first id answered is the first reading's.
                    let accepted =
                        deliveries.iter().zip(&verdicts).filter(|(_, v)| v.is_ok()).map(|(d, _)| d.payload.as_slice());
                    let content = BronzeContent::Accepted { messages: valid, payload: accepted_payload(accepted) };
                    rows.push(BronzeRow { received_at_ms, source, profile: profile.name.clone(), content });
                }
                for (delivery, verdict) in deliveries.into_iter().zip(&verdicts) {
                    if let Err(rejection) = verdict {
                        rows.push(rejected_row(delivery.payload, rejection));
                    }
                }
                self.shared.store.append_bronze(rows).await
            }
            Redelivery::Possible => {
                let mut submission = OnceSubmission {
                    received_at_ms,
                    source,
                    profile: profile.name.clone(),
                    accepted: Vec::with_capacity(valid),
                    rejected: Vec::new(),
                };
                for (delivery, verdict) in deliveries.into_iter().zip(&verdicts) {
                    match verdict {
                        Ok(r) => {
                            let key = MessageKey::of(&profile.name, &r.entity, r.event_time_ms, &delivery.payload);
                            submission.accepted.push((delivery.payload, key));
                        }
                        Err(rejection) => submission.rejected.push(rejected_row(delivery.payload, rejection)),
                    }
                }
                self.shared.store.append_bronze_once(submission).await.map(|outcome| {
                    // Duplicates become rejections, so only new readings are counted and dispatched.
                    let mut originals = outcome.duplicate_of.into_iter();
                    for verdict in verdicts.iter_mut().filter(|v| v.is_ok()) {
                        if let Some(Some(original)) = originals.next() {
                            *verdict = Err(Rejection::coded("duplicate", duplicate_reason(original)));
                        }
                    }
                    outcome.first_id
                })
            }
        };
        let first_id = match stored {
            Ok(id) => id,
            Err(e) => {
                self.release(valid);
                return Err(e.into());
            }
        };
        let report = self.count(&profile, source, &verdicts);
        self.release(valid - report.accepted);
        // Readings are numbered from the first id in the order of the valid messages.
        let readings = verdicts
            .into_iter()
            .filter_map(Result::ok)
            .enumerate()
            .map(|(offset, reading)| (first_id + offset as i64, reading));
        self.dispatch(readings, received).await;
        Ok(report)
    }

    /// Records a message that could not even be split into items (e.g. an oversized body),
    /// with its reason code (`payload_too_large`) and the reason's text.
    pub async fn record_rejected(
        &self,
        profile_name: &str,
        source: &'static str,
        payload: Vec<u8>,
        code: &'static str,
        reason: &str,
    ) -> Result<(), IngestError> {
        self.record_all_rejected(profile_name, source, vec![payload], code, reason).await
    }

    /// Records messages that are all rejected for the same reason, in one transaction.
    pub async fn record_all_rejected(
        &self,
        profile_name: &str,
        source: &'static str,
        payloads: Vec<Vec<u8>>,
        code: &'static str,
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
        metrics.discard(code, count);
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
                    let reason = rejection.code;
                    self.shared.metrics.discard(reason, 1);
                    if reason == "duplicate" {
                        report.duplicates += 1;
                    }
                    report.errors.push(ItemError {
                        index,
                        reason,
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

/// Whether a source may deliver the same message twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Redelivery {
    Never,
    Possible,
}

/// Rejects a reading whose entity is outside what its transport grants.
fn check_entity_grant(reading: Reading, grant: &EntityGrant) -> Result<Reading, Rejection> {
    match grant {
        EntityGrant::Exactly(vouched) if *reading.entity != **vouched => Err(Rejection::coded(
            "identity_mismatch",
            format!(
                "identity_mismatch: the message names entity {:?} but arrived on the topic of {vouched:?}",
                &*reading.entity
            ),
        )),
        EntityGrant::Prefixed { token, prefix } if !reading.entity.starts_with(&**prefix) => Err(Rejection::coded(
            "forbidden",
            format!(
                "forbidden: token {token:?} may send only entities whose id starts with {prefix:?}, not {:?}",
                &*reading.entity
            ),
        )),
        _ => Ok(reading),
    }
}

/// The worker that owns a reading's entity: a stable hash of (profile, entity).
pub fn shard_of(reading: &Reading, shards: usize) -> usize {
    let hash = teleguard_core::model::stable_hash(&[&reading.profile.to_le_bytes(), reading.entity.as_bytes()]);
    (hash % shards as u64) as usize
}
