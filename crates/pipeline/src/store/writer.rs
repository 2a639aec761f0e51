//! The single store writer: one thread, one connection, batched transactions.
//!
//! Commands queue on a bounded channel; the thread takes everything waiting (up to a row
//! budget), writes it in one transaction, commits, and only then answers: a bronze append is
//! acknowledged once it is on disk, and the readings a derived append carries release their
//! in-flight permits once their silver rows are.

use super::checkpoint::{self, Checkpointer};
use super::gold::{AlertAction, AlertTransition, Gold};
use super::retention::{self, RetentionPolicy, Trimmed};
use super::watermark::{PendingReadings, SilverWatermark};
use super::{
    BronzeContent, BronzeRow, GoldRow, OnceOutcome, OnceSubmission, SilverRow, StoreError, accepted_payload,
    duplicate_reason,
};
use crate::by_name;
use crate::live::LiveEvent;
use crate::metrics::{LayerLabels, Metrics};
use rusqlite::{Connection, Transaction, params};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use teleguard_core::time::now_millis;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Rows gathered into one transaction at most.
const MAX_ROWS_PER_TRANSACTION: usize = 20_000;

/// A request to the writer.
#[derive(Debug)]
pub enum WriteCommand {
    /// Append messages to bronze; answered with the first id (each row takes [`BronzeRow::ids`]).
    Bronze { rows: Vec<BronzeRow>, reply: oneshot::Sender<Result<i64, String>> },
    /// Append a submission whose valid messages may have been stored before (see
    /// [`OnceSubmission`]); answered with what became of each.
    BronzeOnce { submission: OnceSubmission, reply: oneshot::Sender<Result<OnceOutcome, String>> },
    /// Append analysed readings and their anomalies; frees `permits` in-flight slots after.
    Derived { silver: Vec<Arc<SilverRow>>, gold: Vec<GoldRow>, permits: usize },
    /// Append anomalies another process's store produced (the serving role reads them from the
    /// anomalies topic), through the same gold path as `Derived`'s; answered after the commit.
    Gold { rows: Vec<GoldRow>, reply: oneshot::Sender<Result<(), String>> },
    /// Store a trained isolation-forest model under its scope label.
    Model { scope: String, json: String },
    /// Acknowledge or resolve an alert; answered after the commit.
    Alert { id: i64, action: AlertAction, reply: oneshot::Sender<Result<AlertTransition, String>> },
    /// Answered once everything queued before it is committed.
    Flush { reply: oneshot::Sender<()> },
    /// Raise the severity of alerts left open and unacknowledged too long.
    Escalate { now_ms: i64, after_ms: i64 },
    /// Clear the active alerts whose episode is over (see [`Gold::clear_finished`]).
    ClearFinished { now_ms: i64 },
    /// Entities that went silent (their `offline` anomalies) and entities back whose open
    /// `offline` alerts are to be resolved.
    Offline { went: Vec<GoldRow>, came_back: Vec<(Arc<str>, Arc<str>)> },
    /// A notification route delivered everything through `event_id`; answered after the commit.
    NotificationCursor { route: String, event_id: i64, reply: oneshot::Sender<Result<(), String>> },
    /// Record how far a sink's target has confirmed a layer (see `crate::sinks`).
    SinkCursor { sink: Arc<str>, layer: &'static str, position: i64 },
    /// Delete one bounded batch of expired rows per layer (see [`super::retention`]); answered
    /// with what went once committed.
    Retain { now_ms: i64, reply: oneshot::Sender<Result<Trimmed, String>> },
}

impl WriteCommand {
    /// What a command weighs against [`MAX_ROWS_PER_TRANSACTION`]. A bronze row carries a
    /// whole submission's payload, so it counts as several rows.
    fn rows(&self) -> usize {
        match self {
            WriteCommand::Bronze { rows, .. } => rows.len() * 8,
            WriteCommand::BronzeOnce { submission, .. } => {
                (1 + submission.rejected.len()) * 8 + submission.accepted.len()
            }
            WriteCommand::Derived { silver, gold, .. } => silver.len() + gold.len(),
            WriteCommand::Gold { rows, .. } => rows.len(),
            WriteCommand::Model { .. }
            | WriteCommand::Alert { .. }
            | WriteCommand::Flush { .. }
            | WriteCommand::Escalate { .. }
            | WriteCommand::ClearFinished { .. }
            | WriteCommand::Offline { .. }
            | WriteCommand::NotificationCursor { .. }
            | WriteCommand::SinkCursor { .. } => 1,
            WriteCommand::Retain { .. } => 1,
        }
    }
}

/// A cloneable handle to the writer thread.
#[derive(Debug, Clone)]
pub struct StoreWriter {
    commands: mpsc::Sender<WriteCommand>,
}

impl StoreWriter {
    /// Appends bronze rows and waits until they are committed; returns their first id.
    pub async fn append_bronze(&self, rows: Vec<BronzeRow>) -> Result<i64, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(WriteCommand::Bronze { rows, reply }).await.map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?.map_err(StoreError::Schema)
    }

    /// Appends a submission that may repeat stored messages, and waits until it is committed.
    pub async fn append_bronze_once(&self, submission: OnceSubmission) -> Result<OnceOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(WriteCommand::BronzeOnce { submission, reply })
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?.map_err(StoreError::Schema)
    }

    /// Queues analysed readings (from a worker thread, blocking while the queue is full).
    pub fn append_derived_blocking(
        &self,
        silver: Vec<Arc<SilverRow>>,
        gold: Vec<GoldRow>,
        permits: usize,
    ) -> Result<(), StoreError> {
        self.commands
            .blocking_send(WriteCommand::Derived { silver, gold, permits })
            .map_err(|_| StoreError::WriterStopped)
    }

    /// Appends anomalies read from another store's topic and waits until they are committed.
    /// An anomaly already stored (same id) changes nothing, the close of an open episode
    /// updates it, and a new one opens or updates its alert, as the detecting store does.
    pub async fn append_gold(&self, rows: Vec<GoldRow>) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(WriteCommand::Gold { rows, reply }).await.map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?.map_err(StoreError::Schema)
    }

    /// Queues a trained model for storage (from a worker thread).
    pub fn append_model_blocking(&self, scope: String, json: String) -> Result<(), StoreError> {
        self.commands.blocking_send(WriteCommand::Model { scope, json }).map_err(|_| StoreError::WriterStopped)
    }

    /// Stores a model (a [`StoredModel`](teleguard_core::detect::isolation_forest::trained::StoredModel)
    /// as JSON) from async code.
    pub async fn append_model(&self, scope: String, json: String) -> Result<(), StoreError> {
        self.commands.send(WriteCommand::Model { scope, json }).await.map_err(|_| StoreError::WriterStopped)
    }

    /// Acknowledges or resolves an alert once the change is committed.
    pub async fn transition_alert(&self, id: i64, action: AlertAction) -> Result<AlertTransition, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(WriteCommand::Alert { id, action, reply }).await.map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?.map_err(StoreError::Schema)
    }

    /// Raises the `offline` anomalies of entities that went silent and resolves the `offline`
    /// alerts of entities that are back (queued, not waited for).
    pub async fn offline_changes(
        &self,
        went: Vec<GoldRow>,
        came_back: Vec<(Arc<str>, Arc<str>)>,
    ) -> Result<(), StoreError> {
        self.commands.send(WriteCommand::Offline { went, came_back }).await.map_err(|_| StoreError::WriterStopped)
    }

    /// Clears the active alerts whose episode is over (queued, not waited for).
    pub async fn clear_finished_alerts(&self, now_ms: i64) -> Result<(), StoreError> {
        self.commands.send(WriteCommand::ClearFinished { now_ms }).await.map_err(|_| StoreError::WriterStopped)
    }

    /// Escalates alerts open and unacknowledged for `after_ms` (queued, not waited for).
    pub async fn escalate(&self, now_ms: i64, after_ms: i64) -> Result<(), StoreError> {
        self.commands.send(WriteCommand::Escalate { now_ms, after_ms }).await.map_err(|_| StoreError::WriterStopped)
    }

    /// Records that notification `route` delivered every event through `event_id`; returns
    /// once that is committed.
    pub async fn advance_notification_cursor(&self, route: &str, event_id: i64) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(WriteCommand::NotificationCursor { route: route.to_string(), event_id, reply })
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?.map_err(StoreError::Schema)
    }

    /// Records that `sink`'s target confirmed `layer` up to `position` (committed with the
    /// next transaction; not waited for).
    pub async fn record_sink_cursor(
        &self,
        sink: Arc<str>,
        layer: &'static str,
        position: i64,
    ) -> Result<(), StoreError> {
        self.commands
            .send(WriteCommand::SinkCursor { sink, layer, position })
            .await
            .map_err(|_| StoreError::WriterStopped)
    }

    /// Deletes one bounded batch of expired rows per layer; returns what went once committed.
    pub async fn retain(&self, now_ms: i64) -> Result<Trimmed, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(WriteCommand::Retain { now_ms, reply }).await.map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?.map_err(StoreError::Schema)
    }

    /// Waits until everything queued so far is committed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(WriteCommand::Flush { reply }).await.map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)
    }
}

/// What the writer thread shares with the rest of the pipeline.
#[derive(Debug, Clone)]
pub struct WriterContext {
    pub metrics: Arc<Metrics>,
    pub inflight: Arc<Semaphore>,
    pub inflight_capacity: usize,
    /// Anomalies this close (in event time) to an alert's last one update it.
    pub alert_cooldown_ms: i64,
    /// Published after every commit, for sinks that follow silver.
    pub silver_watermark: SilverWatermark,
    /// Told of each committed anomaly and operator action on an alert.
    pub live: Arc<crate::live::LiveView>,
    /// How long each layer keeps its rows.
    pub retention: RetentionPolicy,
}

/// Starts the writer thread on `connection`; `checkpointer` copies its commits into the
/// database file, so the connection's own automatic checkpoints are turned off. `replayed`
/// are the ids of bronze readings about to be analysed again (they hold the watermark back).
pub fn spawn(
    connection: Connection,
    checkpointer: Checkpointer,
    next_bronze_id: i64,
    replayed: &[i64],
    context: WriterContext,
) -> Result<(StoreWriter, std::thread::JoinHandle<()>), StoreError> {
    connection.pragma_update(None, "wal_autocheckpoint", 0)?;
    let (commands, receiver) = mpsc::channel(256);
    let mut pending = PendingReadings::default();
    for id in replayed {
        pending.accepted(*id, 1);
    }
    pending.publish(&context.silver_watermark, next_bronze_id, false);
    let writer = Writer {
        connection,
        checkpointer,
        next_bronze_id,
        context,
        gold: Gold::default(),
        pending,
        accepted: Vec::new(),
        trimmed: None,
        unannounced: Vec::new(),
    };
    let handle = std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || writer.run(receiver))
        .map_err(|source| StoreError::Thread { name: "writer", source })?;
    Ok((StoreWriter { commands }, handle))
}

struct Writer {
    connection: Connection,
    checkpointer: Checkpointer,
    next_bronze_id: i64,
    context: WriterContext,
    gold: Gold,
    /// Readings in bronze without their silver row yet, for the silver watermark.
    pending: PendingReadings,
    /// The accepted bronze ranges (first id, readings) of the transaction being written.
    accepted: Vec<(i64, i64)>,
    /// What the retention step of the transaction being written deleted.
    trimmed: Option<Trimmed>,
    /// Anomalies of the transaction being written that no `Derived` command carries (offline
    /// entities, findings of rejected messages), for the live stream once it commits.
    unannounced: Vec<LiveEvent>,
}

/// First and last event time of each entity seen in a transaction, per profile.
type EntitySightings = HashMap<Arc<str>, HashMap<Arc<str>, (i64, i64)>>;

#[derive(Default)]
struct ProfileDelta {
    received: i64,
    valid: i64,
    rejected: i64,
    analysed: i64,
    anomalies: i64,
    last_seen_ms: Option<i64>,
}

impl Writer {
    fn run(mut self, mut receiver: mpsc::Receiver<WriteCommand>) {
        let queued = self.context.metrics.queue("store");
        while let Some(first) = receiver.blocking_recv() {
            let mut rows = first.rows();
            let mut batch = vec![first];
            while rows < MAX_ROWS_PER_TRANSACTION {
                match receiver.try_recv() {
                    Ok(command) => {
                        rows += command.rows();
                        batch.push(command);
                    }
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
            queued.set(receiver.len() as i64);
        }
        self.mark_processed_if_idle();
        self.checkpointer.stop();
        if let Err(e) = self.connection.pragma_update(None, "wal_checkpoint", "TRUNCATE") {
            tracing::warn!("store: final WAL checkpoint failed: {e}");
        }
    }

    fn commit_batch(&mut self, batch: Vec<WriteCommand>) {
        let started = Instant::now();
        let first_id = self.next_bronze_id;
        let result = self.write(&batch);
        let metrics = &self.context.metrics;
        metrics.store_commit_seconds.observe(started.elapsed().as_secs_f64());
        let (committed, mut transitions, mut outcomes) = match result {
            Ok((transitions, outcomes)) => (true, transitions.into_iter(), outcomes.into_iter()),
            Err(e) => {
                metrics.store_errors.inc();
                tracing::error!(
                    "store: transaction of {} commands failed, nothing in it was acknowledged: {e}",
                    batch.len()
                );
                self.next_bronze_id = first_id;
                self.accepted.clear();
                self.unannounced.clear();
                // The gold state may describe changes that were rolled back.
                self.gold.forget();
                (false, Vec::new().into_iter(), Vec::new().into_iter())
            }
        };
        for (first, count) in self.accepted.drain(..) {
            self.pending.accepted(first, count);
        }
        let mut next_id = first_id;
        let mut released = 0;
        for command in batch {
            match command {
                WriteCommand::Bronze { rows, reply } => {
                    let answer =
                        if committed { Ok(next_id) } else { Err("the store could not commit; retry".to_string()) };
                    if committed {
                        next_id += rows.iter().map(BronzeRow::ids).sum::<i64>();
                    }
                    let _ = reply.send(answer);
                }
                WriteCommand::BronzeOnce { reply, .. } => {
                    let answer = match outcomes.next() {
                        Some(outcome) => {
                            next_id += outcome.ids;
                            Ok(outcome)
                        }
                        None => Err("the store could not commit; retry".to_string()),
                    };
                    let _ = reply.send(answer);
                }
                WriteCommand::Derived { silver, gold, permits } => {
                    released += permits;
                    if committed {
                        for row in &silver {
                            self.pending.stored(row.id);
                        }
                        let now = Instant::now();
                        metrics
                            .observe_latencies(silver.iter().map(|row| now.duration_since(row.received).as_secs_f64()));
                        for row in gold {
                            self.context.live.announce(anomaly_event(row));
                        }
                    }
                }
                WriteCommand::Gold { rows, reply } => {
                    let answer = if committed { Ok(()) } else { Err("the store could not commit; retry".to_string()) };
                    if committed {
                        for row in rows {
                            self.context.live.announce(anomaly_event(row));
                        }
                    }
                    let _ = reply.send(answer);
                }
                WriteCommand::Alert { reply, .. } => {
                    let answer = transitions.next().ok_or_else(|| "the store could not commit; retry".to_string());
                    let _ = reply.send(answer);
                }
                WriteCommand::Model { .. }
                | WriteCommand::Escalate { .. }
                | WriteCommand::ClearFinished { .. }
                | WriteCommand::Offline { .. }
                | WriteCommand::SinkCursor { .. } => {}
                WriteCommand::Flush { reply } => {
                    let _ = reply.send(());
                }
                WriteCommand::NotificationCursor { reply, .. } => {
                    let answer = if committed { Ok(()) } else { Err("the store could not commit; retry".to_string()) };
                    let _ = reply.send(answer);
                }
                WriteCommand::Retain { reply, .. } => {
                    let answer = match (committed, self.trimmed.take()) {
                        (true, Some(trimmed)) => {
                            for (layer, count) in
                                [("bronze", trimmed.bronze), ("silver", trimmed.silver), ("gold", trimmed.gold)]
                            {
                                if count > 0 {
                                    metrics
                                        .retention_deleted_rows
                                        .get_or_create(&LayerLabels { layer: layer.into() })
                                        .inc_by(count as u64);
                                }
                            }
                            Ok(trimmed)
                        }
                        _ => Err("the store could not commit; retry".to_string()),
                    };
                    let _ = reply.send(answer);
                }
            }
        }
        if released > 0 {
            self.context.inflight.add_permits(released);
            let inflight = self.context.inflight_capacity - self.context.inflight.available_permits();
            metrics.inflight_readings.set(inflight as i64);
        }
        if committed {
            for event in self.unannounced.drain(..) {
                self.context.live.announce(event);
            }
            for (id, event) in self.gold.take_changes() {
                self.context.live.announce(LiveEvent::Alert { id, event });
            }
            let idle = self.context.inflight.available_permits() == self.context.inflight_capacity;
            self.pending.publish(&self.context.silver_watermark, self.next_bronze_id, idle);
            self.mark_processed_if_idle();
            self.checkpointer.nudge();
            if self.checkpointer.wants_rewind() {
                self.rewind_wal();
            }
        }
    }

    /// Catches the checkpoint up between two transactions, so the next one starts the WAL
    /// from its beginning instead of growing it.
    fn rewind_wal(&mut self) {
        match checkpoint::passive_checkpoint(&self.connection) {
            Ok(_) => self.checkpointer.rewound(),
            Err(e) => tracing::warn!("store: WAL checkpoint failed (retried after the next commit): {e}"),
        }
    }

    /// When nothing is in flight, every valid bronze message so far has its silver row.
    fn mark_processed_if_idle(&mut self) {
        if self.context.inflight.available_permits() != self.context.inflight_capacity {
            return;
        }
        let through = self.next_bronze_id - 1;
        let result = self.connection.execute(
            "INSERT INTO meta (key, value) VALUES ('processed_through', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value WHERE excluded.value > meta.value",
            [through],
        );
        if let Err(e) = result {
            tracing::warn!("store: cannot record the processed checkpoint: {e}");
        }
    }

    /// Writes a batch in one transaction; answers each alert command's and each once-only
    /// bronze append's outcome, in order.
    fn write(&mut self, batch: &[WriteCommand]) -> rusqlite::Result<(Vec<AlertTransition>, Vec<OnceOutcome>)> {
        self.trimmed = None;
        let tx = self.connection.transaction()?;
        let mut profiles: HashMap<Arc<str>, ProfileDelta> = HashMap::new();
        let mut entities = EntitySightings::new();
        let (mut bronze_rows, mut silver_rows, mut gold_rows) = (0, 0, 0);
        let mut transitions = Vec::new();
        let mut outcomes = Vec::new();
        let mut findings = Vec::new();
        for command in batch {
            match command {
                WriteCommand::Bronze { rows, .. } => {
                    bronze_rows += rows.len();
                    write_bronze(
                        &tx,
                        &mut self.next_bronze_id,
                        rows,
                        &mut profiles,
                        &mut findings,
                        &mut self.accepted,
                    )?;
                }
                WriteCommand::BronzeOnce { submission, .. } => {
                    bronze_rows += submission.accepted.len().min(1) + submission.rejected.len();
                    let outcome = write_bronze_once(
                        &tx,
                        &mut self.next_bronze_id,
                        submission,
                        &mut profiles,
                        &mut findings,
                        &mut self.accepted,
                    )?;
                    outcomes.push(outcome);
                }
                WriteCommand::Derived { silver, gold, .. } => {
                    silver_rows += silver.len();
                    write_silver(&tx, silver, &mut profiles, &mut entities)?;
                    gold_rows += self.gold.write(&tx, gold, self.context.alert_cooldown_ms, &mut |profile| {
                        by_name(&mut profiles, profile, ProfileDelta::default).anomalies += 1;
                    })?;
                }
                WriteCommand::Gold { rows, .. } => {
                    gold_rows += self.gold.write(&tx, rows, self.context.alert_cooldown_ms, &mut |profile| {
                        by_name(&mut profiles, profile, ProfileDelta::default).anomalies += 1;
                    })?;
                }
                WriteCommand::Model { scope, json } => {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO models (scope, detector, model, trained_at_ms) VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![
                        scope,
                        teleguard_core::detect::isolation_forest::NAME,
                        json,
                        now_millis()
                    ])?;
                }
                WriteCommand::Alert { id, action, .. } => {
                    transitions.push(self.gold.transition_alert(&tx, *id, *action, now_millis())?);
                }
                WriteCommand::SinkCursor { sink, layer, position } => {
                    tx.prepare_cached(
                        "INSERT INTO sink_cursors (sink, layer, position, updated_at_ms) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (sink, layer) DO UPDATE SET position = excluded.position,
                             updated_at_ms = excluded.updated_at_ms",
                    )?
                    .execute(params![&**sink, layer, position, now_millis()])?;
                }
                WriteCommand::Flush { .. } => {}
                WriteCommand::Offline { went, came_back } => {
                    gold_rows += self.gold.write(&tx, went, self.context.alert_cooldown_ms, &mut |profile| {
                        by_name(&mut profiles, profile, ProfileDelta::default).anomalies += 1;
                    })?;
                    self.unannounced.extend(went.iter().cloned().map(anomaly_event));
                    for (profile, entity) in came_back {
                        let open: Vec<i64> = tx
                            .prepare_cached(
                                "SELECT id FROM alerts WHERE profile = ?1 AND entity_id = ?2 AND detector = ?3
                                 AND state != 'resolved'",
                            )?
                            .query_map(params![&**profile, &**entity, crate::fleet_watch::OFFLINE], |r| r.get(0))?
                            .collect::<Result<_, _>>()?;
                        for id in open {
                            self.gold.transition_alert(&tx, id, AlertAction::Resolve, now_millis())?;
                        }
                    }
                }
                WriteCommand::ClearFinished { now_ms } => {
                    let cleared = self.gold.clear_finished(&tx, *now_ms, self.context.alert_cooldown_ms)?;
                    if cleared > 0 {
                        tracing::debug!("alerts: {cleared} whose episode is over cleared");
                    }
                }
                WriteCommand::Escalate { now_ms, after_ms } => {
                    let escalated = self.gold.escalate(&tx, *now_ms, *after_ms)?;
                    if escalated > 0 {
                        tracing::info!("alerts: {escalated} open and unacknowledged for {after_ms} ms escalated");
                    }
                }
                WriteCommand::Retain { now_ms, .. } => {
                    // One step per transaction: a second request in the same batch finds the
                    // same rows gone, so it is answered with the first one's outcome.
                    if self.trimmed.is_none() {
                        let watermark = self.context.silver_watermark.get();
                        self.trimmed = Some(retention::step(&tx, &self.context.retention, *now_ms, watermark)?);
                    }
                }
                WriteCommand::NotificationCursor { route, event_id, .. } => {
                    tx.prepare_cached(
                        "INSERT INTO notification_cursors (route, last_event_id, updated_at_ms) VALUES (?1, ?2, ?3)
                         ON CONFLICT (route) DO UPDATE SET last_event_id = MAX(last_event_id, excluded.last_event_id),
                             updated_at_ms = excluded.updated_at_ms",
                    )?
                    .execute(params![route, event_id, now_millis()])?;
                }
            }
        }
        if !findings.is_empty() {
            gold_rows += self.gold.write(&tx, &findings, self.context.alert_cooldown_ms, &mut |profile| {
                by_name(&mut profiles, profile, ProfileDelta::default).anomalies += 1;
            })?;
            self.unannounced.extend(findings.into_iter().map(anomaly_event));
        }
        self.gold.write_alerts(&tx)?;
        write_counts(&tx, &profiles, &entities)?;
        tx.commit()?;
        let metrics = &self.context.metrics;
        for (layer, count) in [("bronze", bronze_rows), ("silver", silver_rows), ("gold", gold_rows)] {
            if count > 0 {
                metrics.store_rows_written.get_or_create(&LayerLabels { layer: layer.into() }).inc_by(count as u64);
            }
        }
        Ok((transitions, outcomes))
    }
}

fn anomaly_event(row: GoldRow) -> LiveEvent {
    LiveEvent::Anomaly {
        id: row.anomaly.id,
        profile: row.profile,
        entity: row.entity,
        timestamp_ms: row.timestamp_ms,
        detector: row.anomaly.detector,
        metric: row.anomaly.metric,
        value: row.anomaly.value,
        score: row.anomaly.score,
        severity: row.anomaly.severity.as_str(),
        reason: row.anomaly.reason,
    }
}

fn write_bronze(
    tx: &Transaction<'_>,
    next_id: &mut i64,
    rows: &[BronzeRow],
    profiles: &mut HashMap<Arc<str>, ProfileDelta>,
    findings: &mut Vec<GoldRow>,
    accepted: &mut Vec<(i64, i64)>,
) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO bronze (id, received_at_ms, source, profile, verdict, reason_code, reason, messages, payload)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for row in rows {
        let delta = by_name(profiles, &row.profile, ProfileDelta::default);
        let count = row.ids();
        delta.received += count;
        let (verdict, code, reason, payload) = match &row.content {
            BronzeContent::Accepted { payload, .. } => {
                delta.valid += count;
                accepted.push((*next_id, count));
                ("valid", None, None, payload.as_slice())
            }
            BronzeContent::Rejected { code, reason, payload, replay_of, finding } => {
                delta.rejected += 1;
                if let Some(original) = replay_of {
                    mark_replayed(tx, *original, *next_id)?;
                }
                if let Some(finding) = finding {
                    findings.push(GoldRow { reading_id: *next_id, ..(**finding).clone() });
                }
                ("rejected", Some(*code), Some(reason.as_str()), payload.as_slice())
            }
        };
        insert.execute(params![
            *next_id,
            row.received_at_ms,
            row.source,
            &*row.profile,
            verdict,
            code,
            reason,
            count,
            payload
        ])?;
        *next_id += count;
    }
    Ok(())
}

/// Records that the quarantined message `original` was replayed and became `outcome` (a
/// reading id, or the id of its new dead letter), so it is not replayed again.
fn mark_replayed(tx: &Transaction<'_>, original: i64, outcome: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE bronze SET replayed_as = ?2 WHERE id = ?1 AND verdict = 'rejected'")?
        .execute(params![original, outcome])?;
    Ok(())
}

/// Writes a submission's new messages as one accepted row and each message already stored
/// (by its key, in the store or earlier in the same submission) as a duplicate.
fn write_bronze_once(
    tx: &Transaction<'_>,
    next_id: &mut i64,
    submission: &OnceSubmission,
    profiles: &mut HashMap<Arc<str>, ProfileDelta>,
    findings: &mut Vec<GoldRow>,
    accepted: &mut Vec<(i64, i64)>,
) -> rusqlite::Result<OnceOutcome> {
    let mut find = tx.prepare_cached("SELECT reading_id FROM message_keys WHERE event_time_ms = ?1 AND hash = ?2")?;
    let mut remember =
        tx.prepare_cached("INSERT OR IGNORE INTO message_keys (event_time_ms, hash, reading_id) VALUES (?1, ?2, ?3)")?;
    let first_id = *next_id;
    let mut fresh = Vec::new();
    let mut duplicate_of = Vec::with_capacity(submission.accepted.len());
    for (payload, key, replay_of) in &submission.accepted {
        // One statement for a new message (the common case); a look-up only for a duplicate.
        let reading_id = first_id + fresh.len() as i64;
        let inserted = remember.execute(params![key.event_time_ms, key.hash, reading_id])?;
        let stored = if inserted == 1 {
            fresh.push(payload.as_slice());
            if let Some(original) = replay_of {
                mark_replayed(tx, *original, reading_id)?;
            }
            None
        } else {
            Some(find.query_row(params![key.event_time_ms, key.hash], |row| row.get::<_, i64>(0))?)
        };
        duplicate_of.push(stored);
    }
    let row = |content| BronzeRow {
        received_at_ms: submission.received_at_ms,
        source: submission.source,
        profile: submission.profile.clone(),
        content,
    };
    let mut rows = Vec::with_capacity(1 + submission.rejected.len());
    if !fresh.is_empty() {
        rows.push(row(BronzeContent::Accepted {
            messages: fresh.len(),
            payload: accepted_payload(fresh.iter().copied()),
        }));
    }
    for ((payload, _, replay_of), original) in submission.accepted.iter().zip(&duplicate_of) {
        if let Some(original) = original {
            rows.push(row(BronzeContent::Rejected {
                code: "duplicate",
                reason: duplicate_reason(*original),
                payload: payload.clone(),
                replay_of: *replay_of,
                finding: None,
            }));
        }
    }
    rows.extend(submission.rejected.iter().cloned());
    write_bronze(tx, next_id, &rows, profiles, findings, accepted)?;
    Ok(OnceOutcome { first_id, duplicate_of, ids: *next_id - first_id })
}

fn write_silver(
    tx: &Transaction<'_>,
    rows: &[Arc<SilverRow>],
    profiles: &mut HashMap<Arc<str>, ProfileDelta>,
    entities: &mut EntitySightings,
) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO silver (id, profile, entity_id, timestamp_ms, latitude, longitude, metrics, attributes,
                                       driver_name, current_zone, processed_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for row in rows {
        let inserted = insert.execute(params![
            row.id,
            &*row.profile,
            &*row.entity,
            row.timestamp_ms,
            row.latitude,
            row.longitude,
            row.metrics,
            row.attributes,
            row.driver_name.as_deref(),
            row.current_zone.as_deref(),
            row.processed_at_ms
        ])?;
        let delta = by_name(profiles, &row.profile, ProfileDelta::default);
        delta.analysed += inserted as i64;
        delta.last_seen_ms = delta.last_seen_ms.max(Some(row.timestamp_ms));
        let of_profile = by_name(entities, &row.profile, HashMap::new);
        let seen = by_name(of_profile, &row.entity, || (row.timestamp_ms, row.timestamp_ms));
        *seen = (seen.0.min(row.timestamp_ms), seen.1.max(row.timestamp_ms));
    }
    Ok(())
}

fn write_counts(
    tx: &Transaction<'_>,
    profiles: &HashMap<Arc<str>, ProfileDelta>,
    entities: &EntitySightings,
) -> rusqlite::Result<()> {
    let mut upsert = tx.prepare_cached(
        "INSERT INTO profile_counts (profile, received, valid, rejected, analysed, anomalies, last_seen_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (profile) DO UPDATE SET received = received + excluded.received, valid = valid + excluded.valid,
             rejected = rejected + excluded.rejected, analysed = analysed + excluded.analysed,
             anomalies = anomalies + excluded.anomalies,
             last_seen_ms = MAX(COALESCE(last_seen_ms, excluded.last_seen_ms), COALESCE(excluded.last_seen_ms, last_seen_ms))",
    )?;
    for (profile, d) in profiles {
        upsert.execute(params![
            &**profile,
            d.received,
            d.valid,
            d.rejected,
            d.analysed,
            d.anomalies,
            d.last_seen_ms
        ])?;
    }
    let mut seen = tx.prepare_cached(
        "INSERT INTO entities (profile, entity_id, first_seen_ms, last_seen_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (profile, entity_id) DO UPDATE SET first_seen_ms = MIN(first_seen_ms, excluded.first_seen_ms),
             last_seen_ms = MAX(last_seen_ms, excluded.last_seen_ms)",
    )?;
    for (profile, entity, (first, last)) in
        entities.iter().flat_map(|(profile, seen)| seen.iter().map(move |(entity, times)| (profile, entity, times)))
    {
        seen.execute(params![&**profile, &**entity, first, last])?;
    }
    Ok(())
}
