//! The ingest path every source uses: validate, admit, make durable in bronze, dispatch.
//!
//! A message is acknowledged (the returned report) only after its bronze row is committed.
//! Valid readings then go to the worker that owns their entity. In-flight readings are
//! bounded by a semaphore: a source either waits for room or is told the pipeline is busy.

use crate::metrics::{Metrics, ProfileSourceLabels, Stage};
use crate::store::quarantine::{NOT_REPLAYABLE, Quarantined};
use crate::store::writer::StoreWriter;
use crate::store::{
    BronzeContent, BronzeRow, GoldRow, MessageKey, OnceSubmission, StoreError, accepted_payload, duplicate_reason,
};
use crate::worker::{WorkBatch, WorkItem, WorkerQueue};
use std::sync::Arc;
use std::time::{Duration, Instant};
use teleguard_core::detect::identity::spoofed_identity;
use teleguard_core::model::Reading;
use teleguard_core::profile::{Profile, ProfileRegistry};
use teleguard_core::time::now_millis;
use teleguard_core::validate::{Rejection, TimeWindow, decode_and_validate, validate};
use tokio::sync::Semaphore;

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
    /// When the message first arrived, if earlier than now (a quarantined message replayed):
    /// its event time is checked against this.
    pub arrived_at_ms: Option<i64>,
    /// The quarantined message (bronze id) this delivery replays.
    pub replay_of: Option<i64>,
}

impl Delivery {
    /// A message as it arrives, with nothing vouched for.
    pub fn new(payload: Vec<u8>) -> Self {
        Delivery { payload, grant: EntityGrant::Any, arrived_at_ms: None, replay_of: None }
    }
}

/// Which entities a transport lets a message speak for; a message naming another is rejected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum EntityGrant {
    /// Any entity (the simulator, HTTP without tokens, MQTT without `entity_from_topic`).
    #[default]
    Any,
    /// Exactly this one, which the transport vouches for (the device's own MQTT topic);
    /// another is rejected as `identity_mismatch` and raises an `identity` anomaly.
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
    pub shards: Vec<WorkerQueue>,
    /// In-flight readings: taken at admission, given back once stored in silver.
    pub inflight: Arc<Semaphore>,
    pub capacity: usize,
    pub metrics: Arc<Metrics>,
    /// How far from arrival a device's event time may be.
    pub time_window: TimeWindow,
}

/// Sources whose event times come from their own clock rather than a device's: the
/// simulator (which runs at any multiple of real time) and the benchmark. Their readings are
/// not held to the event-time window.
pub const OWN_CLOCK_SOURCES: [&str; 2] = ["simulator", "bench"];

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
        let deliveries =
            items.into_iter().map(|payload| Delivery { grant: grant.clone(), ..Delivery::new(payload) }).collect();
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
            self.record_all_rejected(profile_name, source, deliveries, "unknown_profile", &reason).await?;
            return Err(self.unknown_profile(profile_name));
        };
        let window = self.time_window(source);
        let own_clock = OWN_CLOCK_SOURCES.contains(&source);
        let validating = Instant::now();
        // When each message arrived, for the detectors' clock check (not for own-clock sources).
        let arrivals: Vec<Option<i64>> = deliveries
            .iter()
            .map(|delivery| (!own_clock).then(|| delivery.arrived_at_ms.unwrap_or(received_at_ms)))
            .collect();
        let mut findings: Vec<Option<Box<GoldRow>>> = Vec::new();
        let (deliveries, mut verdicts): (Vec<Delivery>, Vec<Result<Reading, Rejection>>) = deliveries
            .into_iter()
            .map(|mut delivery| {
                let (payload, verdict) = decode_and_validate(&profile, std::mem::take(&mut delivery.payload));
                let mut finding = None;
                let verdict = verdict
                    .and_then(|r| match check_entity_grant(&r, &delivery.grant) {
                        Ok(()) => Ok(r),
                        Err(rejection) => {
                            if let EntityGrant::Exactly(vouched) = &delivery.grant {
                                finding = Some(Box::new(spoofing_finding(&profile, vouched, &r, received_at_ms)));
                            }
                            Err(rejection)
                        }
                    })
                    .and_then(|r| {
                        let arrival = delivery.arrived_at_ms.unwrap_or(received_at_ms);
                        window.check(r.event_time_ms, arrival, &profile.timestamp_field).map(|()| r)
                    });
                findings.push(finding);
                delivery.payload = payload;
                (delivery, verdict)
            })
            .unzip();
        let valid = verdicts.iter().filter(|v| v.is_ok()).count();
        self.shared.metrics.observe_stage(Stage::Validate, validating.elapsed().as_secs_f64());
        self.admit(valid, admission).await?;
        let storing = Instant::now();
        let rejected_row = |delivery: Delivery, rejection: &Rejection, finding: Option<Box<GoldRow>>| BronzeRow {
            received_at_ms,
            source,
            profile: profile.name.clone(),
            content: BronzeContent::Rejected {
                code: rejection.code,
                reason: rejection.to_string(),
                payload: delivery.payload,
                replay_of: delivery.replay_of,
                finding,
            },
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
                for ((delivery, verdict), finding) in deliveries.into_iter().zip(&verdicts).zip(findings) {
                    if let Err(rejection) = verdict {
                        rows.push(rejected_row(delivery, rejection, finding));
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
                for ((delivery, verdict), finding) in deliveries.into_iter().zip(&verdicts).zip(findings) {
                    match verdict {
                        Ok(r) => {
                            let key = MessageKey::of(&profile.name, &r.entity, r.event_time_ms, &delivery.payload);
                            submission.accepted.push((delivery.payload, key, delivery.replay_of));
                        }
                        Err(rejection) => submission.rejected.push(rejected_row(delivery, rejection, finding)),
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
        self.shared.metrics.observe_stage(Stage::Bronze, storing.elapsed().as_secs_f64());
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
            .zip(arrivals)
            .filter_map(|(verdict, arrival)| verdict.ok().map(|reading| (reading, arrival)))
            .enumerate()
            .map(|(offset, (reading, arrival))| (first_id + offset as i64, reading, arrival));
        self.dispatch(readings, received, false).await;
        Ok(report)
    }

    /// Re-submits quarantined messages (e.g. after their profile was fixed in the config),
    /// each under its profile and source and judged against the time it first arrived. Each
    /// ends as a reading or a new dead letter, stored in the same transaction that marks the
    /// original `replayed_as`; a message already stored as a reading becomes a duplicate.
    pub async fn replay_quarantined(&self, letters: Vec<Quarantined>) -> Result<ReplayReport, IngestError> {
        let mut report = ReplayReport::default();
        let mut groups: Vec<((String, &'static str), Vec<Quarantined>)> = Vec::new();
        for letter in letters {
            if let Some(replayed_as) = letter.replayed_as {
                report.skipped.push(Skipped { id: letter.id, why: format!("replayed already, as {replayed_as}") });
                continue;
            }
            if NOT_REPLAYABLE.contains(&letter.reason_code.as_str()) {
                let why =
                    format!("{} messages are not replayed: what vouched for them is not kept", letter.reason_code);
                report.skipped.push(Skipped { id: letter.id, why });
                continue;
            }
            let key = (letter.profile.clone(), known_source(&letter.source));
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, group)) => group.push(letter),
                None => groups.push((key, vec![letter])),
            }
        }
        for ((profile, source), group) in groups {
            let ids: Vec<i64> = group.iter().map(|l| l.id).collect();
            let deliveries = group
                .into_iter()
                .map(|l| Delivery {
                    arrived_at_ms: Some(l.received_at_ms),
                    replay_of: Some(l.id),
                    ..Delivery::new(l.payload)
                })
                .collect();
            let outcome = self.submit_inner(&profile, source, deliveries, Admission::Wait, Redelivery::Possible).await;
            let submitted = match outcome {
                Ok(submitted) => submitted,
                Err(IngestError::UnknownProfile { name, known }) => {
                    let error = format!("unknown profile {name:?}; known profiles: {known}");
                    for id in ids {
                        report.results.push(Replayed::rejected(id, "unknown_profile", error.clone()));
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut errors = submitted.errors.into_iter().peekable();
            for (index, id) in ids.into_iter().enumerate() {
                match errors.next_if(|e| e.index == index) {
                    Some(error) => report.results.push(Replayed::rejected(id, error.reason, error.error)),
                    None => report.results.push(Replayed { id, outcome: "accepted", reason_code: None, error: None }),
                }
            }
        }
        for result in &report.results {
            match result.outcome {
                "accepted" => report.accepted += 1,
                _ if result.reason_code == Some("duplicate") => report.duplicates += 1,
                _ => report.rejected += 1,
            }
        }
        report.replayed = report.results.len();
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
        self.record_all_rejected(profile_name, source, vec![Delivery::new(payload)], code, reason).await
    }

    /// Records messages that are all rejected for the same reason, in one transaction.
    pub async fn record_all_rejected(
        &self,
        profile_name: &str,
        source: &'static str,
        deliveries: Vec<Delivery>,
        code: &'static str,
        reason: &str,
    ) -> Result<(), IngestError> {
        let known = self.shared.profiles.by_name(profile_name).map(|p| p.name.clone());
        let profile =
            known.unwrap_or_else(|| profile_name.chars().take(MAX_UNKNOWN_PROFILE_NAME).collect::<String>().into());
        let label = if self.shared.profiles.by_name(&profile).is_some() { &*profile } else { "unknown" };
        let received_at_ms = now_millis();
        let count = deliveries.len() as u64;
        let rows = deliveries
            .into_iter()
            .map(|delivery| {
                let content = BronzeContent::Rejected {
                    code,
                    reason: reason.into(),
                    payload: delivery.payload,
                    replay_of: delivery.replay_of,
                    finding: None,
                };
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

    /// The event-time window a source's messages are held to: none for sources that keep
    /// their own clock ([`OWN_CLOCK_SOURCES`]), the configured one for the rest.
    fn time_window(&self, source: &str) -> TimeWindow {
        if OWN_CLOCK_SOURCES.contains(&source) { TimeWindow::ANY } else { self.shared.time_window }
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
        // The arrival is in bronze, but a reading re-processed after a crash is not judged by it.
        self.dispatch(std::iter::once((id, reading, None)), Instant::now(), false).await;
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

    /// Feeds readings to the detectors of the workers that own their entities without storing
    /// or judging them (no bronze, no silver, no anomalies): the state rebuild of a Kafka
    /// partition taken over from another process. Messages that do not validate are skipped.
    /// Returns how many readings were fed.
    pub async fn warm_up(&self, profile_name: &str, payloads: Vec<Vec<u8>>) -> usize {
        let Some(profile) = self.shared.profiles.by_name(profile_name).cloned() else { return 0 };
        let readings: Vec<Reading> =
            payloads.into_iter().filter_map(|payload| decode_and_validate(&profile, payload).1.ok()).collect();
        let count = readings.len();
        self.dispatch(readings.into_iter().map(|r| (0, r, None)), Instant::now(), true).await;
        count
    }

    /// Sends readings (with their bronze id and arrival) to the workers that own their
    /// entities, keeping each entity's order.
    async fn dispatch(
        &self,
        readings: impl Iterator<Item = (i64, Reading, Option<i64>)>,
        received: Instant,
        warm_up: bool,
    ) {
        let shards = &self.shared.shards;
        let mut batches: Vec<Vec<WorkItem>> = vec![Vec::new(); shards.len()];
        for (bronze_id, reading, arrived_at_ms) in readings {
            let shard = shard_of(&reading, shards.len());
            batches[shard].push(WorkItem { bronze_id, reading, received, arrived_at_ms, warm_up });
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

/// What a replay of quarantined messages did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReplayReport {
    /// Messages submitted again.
    pub replayed: usize,
    pub accepted: usize,
    /// Rejected again (each with a new dead letter).
    pub rejected: usize,
    /// Already stored as readings (among neither the accepted nor the rejected).
    pub duplicates: usize,
    /// Dead letters asked for but not submitted, and why.
    pub skipped: Vec<Skipped>,
    /// Per replayed dead letter, what it became.
    pub results: Vec<Replayed>,
}

/// A dead letter a replay left as it was.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Skipped {
    pub id: i64,
    pub why: String,
}

/// What one replayed dead letter became.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Replayed {
    pub id: i64,
    /// `accepted` or `rejected`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Replayed {
    fn rejected(id: i64, code: &'static str, error: String) -> Self {
        Replayed { id, outcome: "rejected", reason_code: Some(code), error: Some(error) }
    }
}

/// The source name a replayed message is stored under: its own, where it is one of ours.
fn known_source(source: &str) -> &'static str {
    ["http", "mqtt", "simulator", "bench"].into_iter().find(|known| *known == source).unwrap_or("replay")
}

/// Whether a source may deliver the same message twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Redelivery {
    Never,
    Possible,
}

/// Rejects a reading whose entity is outside what its transport grants.
fn check_entity_grant(reading: &Reading, grant: &EntityGrant) -> Result<(), Rejection> {
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
        _ => Ok(()),
    }
}

/// The security anomaly of a spoofed reading, on the device that sent it; the store gives
/// it the dead letter's id as its reading id.
fn spoofing_finding(profile: &Profile, vouched: &str, reading: &Reading, received_at_ms: i64) -> GoldRow {
    let anomaly = spoofed_identity(&profile.name, vouched, &reading.entity, reading.event_time_ms, "its own topic");
    GoldRow::new(0, profile.name.clone(), Arc::from(vouched), reading.event_time_ms, anomaly, received_at_ms)
}

/// The worker that owns a reading's entity: a stable hash of (profile, entity).
pub fn shard_of(reading: &Reading, shards: usize) -> usize {
    let hash = teleguard_core::model::stable_hash(&[&reading.profile.to_le_bytes(), reading.entity.as_bytes()]);
    (hash % shards as u64) as usize
}
