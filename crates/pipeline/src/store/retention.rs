//! Retention per medallion layer: old rows leave the store in small steps, never before the
//! pipeline and every configured sink are done with them.
//!
//! A task sends the writer a [`WriteCommand::Retain`](super::writer::WriteCommand) now and
//! then; the writer deletes at most [`RetentionPolicy::batch_rows`] rows per layer in the
//! transaction it is writing anyway (one writer, so ingestion never waits on a second one),
//! and answers whether a layer had more to delete, in which case the task asks again at once.
//! Each step takes the lowest ids first and deletes those among them that are expired:
//!
//! - bronze (and the dedup keys of `message_keys`) by arrival time, `received_at_ms`, and only
//!   rows whose every reading has its silver row (below the silver watermark), so a restart
//!   can still re-process what it acknowledged. Quarantined messages are bronze rows too: they
//!   are kept by the same age rule, so a dead letter is replayable for `bronze_days`, and not
//!   before every sink that forwards dead letters (the gateway's Kafka sink) has them.
//! - silver by the time it was stored, `processed_at_ms`, and only ids every configured sink
//!   has confirmed.
//! - gold by the time it was detected, `detected_at_ms`, only closed episodes and changes every
//!   configured sink confirmed.
//!
//! Every layer ages by when its rows arrived, not by their event time: that time grows with
//! the id, so the lowest ids are the oldest and a step's id range is exactly what expired; the
//! store then holds the rows of one window whatever the devices' clocks say; and history
//! replayed from files (event times months back) stays for a window instead of vanishing on
//! arrival. SQLite reuses the pages the deleted rows free, so at steady state the file stops
//! growing.

use crate::sinks::follow;
use rusqlite::{Transaction, params};
use serde::Deserialize;
use std::num::NonZeroUsize;
use std::time::Duration;

/// Default `store.retention.bronze_days`.
pub const DEFAULT_BRONZE_DAYS: f64 = 7.0;
/// Default `store.retention.silver_days`.
pub const DEFAULT_SILVER_DAYS: f64 = 90.0;
/// Default `store.retention.interval_secs`.
pub const DEFAULT_INTERVAL_SECS: f64 = 60.0;
/// Default `store.retention.batch_rows`.
pub const DEFAULT_BATCH_ROWS: usize = 5_000;

const DAY_MS: f64 = 86_400_000.0;

/// `[store.retention]` as written; 0 days means keep forever.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    pub bronze_days: Option<f64>,
    pub silver_days: Option<f64>,
    pub gold_days: Option<f64>,
    pub interval_secs: Option<f64>,
    pub batch_rows: Option<usize>,
}

/// How long each layer keeps rows, and how retention paces itself.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionPolicy {
    /// `None` keeps the layer's rows forever.
    pub bronze_ms: Option<i64>,
    pub silver_ms: Option<i64>,
    pub gold_ms: Option<i64>,
    /// How often a step runs when the last one had nothing more to do.
    pub interval: Duration,
    /// Rows deleted per layer and step, at most.
    pub batch_rows: NonZeroUsize,
    /// The sinks whose cursors hold silver and gold rows back (their names in `sink_cursors`).
    pub sinks: Vec<&'static str>,
    /// The sinks whose dead-letter cursors hold rejected bronze rows back.
    pub dead_letter_sinks: Vec<&'static str>,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RawRetention::default().validate(Vec::new(), &mut Vec::new())
    }
}

impl RawRetention {
    /// Validates the section, pushing each problem to `errors`; `sinks` are the configured
    /// sinks' names.
    pub fn validate(self, sinks: Vec<&'static str>, errors: &mut Vec<String>) -> RetentionPolicy {
        let mut days = |name: &str, value: Option<f64>, default: Option<f64>| -> Option<i64> {
            match value.or(default) {
                Some(days) if !days.is_finite() || days < 0.0 => {
                    errors.push(format!(
                        "store.retention.{name} = {days} must be a number of days, 0 or more (0 keeps the rows)"
                    ));
                    None
                }
                Some(days) if days > 0.0 => Some(((days * DAY_MS) as i64).max(1)),
                _ => None,
            }
        };
        let bronze_ms = days("bronze_days", self.bronze_days, Some(DEFAULT_BRONZE_DAYS));
        let silver_ms = days("silver_days", self.silver_days, Some(DEFAULT_SILVER_DAYS));
        let gold_ms = days("gold_days", self.gold_days, None);
        let interval_secs = self.interval_secs.unwrap_or(DEFAULT_INTERVAL_SECS);
        let interval = if interval_secs.is_finite() && interval_secs > 0.0 {
            Duration::from_secs_f64(interval_secs)
        } else {
            errors.push(format!("store.retention.interval_secs = {interval_secs} must be above 0"));
            Duration::from_secs(60)
        };
        let batch_rows = NonZeroUsize::new(self.batch_rows.unwrap_or(DEFAULT_BATCH_ROWS)).unwrap_or_else(|| {
            errors.push("store.retention.batch_rows must be at least 1".to_string());
            NonZeroUsize::MIN
        });
        RetentionPolicy { bronze_ms, silver_ms, gold_ms, interval, batch_rows, sinks, dead_letter_sinks: Vec::new() }
    }
}

impl RetentionPolicy {
    /// Whether any layer expires at all.
    pub fn trims_anything(&self) -> bool {
        self.bronze_ms.is_some() || self.silver_ms.is_some() || self.gold_ms.is_some()
    }
}

/// What one step deleted, per layer, and whether a layer was left with more to delete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    pub bronze: usize,
    pub silver: usize,
    pub gold: usize,
    pub more: bool,
}

/// Deletes at most `policy.batch_rows` expired rows per layer, lowest ids first. Every reading
/// with an id below `silver_watermark` has its silver row.
pub fn step(
    tx: &Transaction<'_>,
    policy: &RetentionPolicy,
    now_ms: i64,
    silver_watermark: i64,
) -> rusqlite::Result<Trimmed> {
    let batch = policy.batch_rows.get() as i64;
    let mut trimmed = Trimmed::default();
    if let Some(keep_ms) = policy.bronze_ms {
        let cutoff = now_ms.saturating_sub(keep_ms);
        let forwarded = sink_hold(tx, &policy.dead_letter_sinks, follow::DEAD_LETTERS)?;
        // A row's readings take ids id .. id + messages - 1; all of them must be in silver. A
        // rejected row stays until the sinks that forward dead letters are past it.
        trimmed.bronze = tx
            .prepare_cached(
                "DELETE FROM bronze WHERE id IN (SELECT id FROM bronze WHERE id + messages <= ?1
                   AND (verdict != 'rejected' OR id <= ?4) ORDER BY id LIMIT ?2)
               AND received_at_ms < ?3",
            )?
            .execute(params![silver_watermark, batch, cutoff, forwarded])?;
        // A dedup key goes only with its bronze row: keys are by event time, which says nothing
        // about arrival (a device replaying last month's readings), so the bound is the first
        // bronze id still kept.
        let first_kept: i64 = tx
            .prepare_cached("SELECT coalesce(min(id), ?1) FROM bronze")?
            .query_row(params![silver_watermark], |row| row.get(0))?;
        let keys = tx
            .prepare_cached(
                "DELETE FROM message_keys WHERE (event_time_ms, hash) IN
                   (SELECT event_time_ms, hash FROM message_keys WHERE reading_id < ?1 ORDER BY event_time_ms LIMIT ?2)",
            )?
            .execute(params![first_kept.min(silver_watermark), batch])?;
        trimmed.more |= trimmed.bronze as i64 == batch || keys as i64 == batch;
    }
    if let Some(keep_ms) = policy.silver_ms {
        let hold = sink_hold(tx, &policy.sinks, follow::SILVER)?;
        trimmed.silver = tx
            .prepare_cached(
                "DELETE FROM silver WHERE id IN (SELECT id FROM silver WHERE id <= ?1 ORDER BY id LIMIT ?2)
                   AND processed_at_ms < ?3",
            )?
            .execute(params![hold, batch, now_ms.saturating_sub(keep_ms)])?;
        trimmed.more |= trimmed.silver as i64 == batch;
    }
    if let Some(keep_ms) = policy.gold_ms {
        let hold = sink_hold(tx, &policy.sinks, follow::GOLD)?;
        // An open episode's row is updated when it closes: it stays until then.
        trimmed.gold = tx
            .prepare_cached(
                "DELETE FROM telemetry_anomalies WHERE rowid IN
                   (SELECT rowid FROM telemetry_anomalies ORDER BY rowid LIMIT ?1)
                   AND detected_at_ms < ?2 AND change_seq <= ?3
                   AND (episode_start_ms IS NULL OR episode_end_ms IS NOT NULL)",
            )?
            .execute(params![batch, now_ms.saturating_sub(keep_ms), hold])?;
        trimmed.more |= trimmed.gold as i64 == batch;
    }
    Ok(trimmed)
}

/// The highest position of `layer` every sink in `sinks` has confirmed (a sink that has not
/// written yet holds everything back); no sinks, no hold.
fn sink_hold(tx: &Transaction<'_>, sinks: &[&'static str], layer: &str) -> rusqlite::Result<i64> {
    let mut hold = i64::MAX;
    for sink in sinks {
        hold = hold.min(follow::cursor(tx, sink, layer)?);
    }
    Ok(hold)
}

/// Asks the writer for a step every `policy.interval`, at once again while a layer has more
/// to delete; returns when the writer has stopped.
pub async fn run(store: super::writer::StoreWriter, policy: RetentionPolicy) {
    loop {
        match store.retain(teleguard_core::time::now_millis()).await {
            Ok(trimmed) if trimmed.more => tokio::task::yield_now().await,
            Ok(_) => tokio::time::sleep(policy.interval).await,
            Err(super::StoreError::WriterStopped) => return,
            // The transaction failed (the writer logged why); the next step retries.
            Err(_) => tokio::time::sleep(policy.interval).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{self, Durability};

    fn policy(bronze_days: f64, silver_days: f64, gold_days: f64, sinks: Vec<&'static str>) -> RetentionPolicy {
        let raw = RawRetention {
            bronze_days: Some(bronze_days),
            silver_days: Some(silver_days),
            gold_days: Some(gold_days),
            interval_secs: None,
            batch_rows: Some(3),
        };
        let mut errors = Vec::new();
        let policy = raw.validate(sinks, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        policy
    }

    #[test]
    fn defaults_keep_bronze_a_week_silver_ninety_days_and_gold_forever() {
        let policy = RetentionPolicy::default();
        assert_eq!(policy.bronze_ms, Some(7 * 86_400_000));
        assert_eq!(policy.silver_ms, Some(90 * 86_400_000));
        assert_eq!(policy.gold_ms, None);
        let mut errors = Vec::new();
        RawRetention { bronze_days: Some(-1.0), batch_rows: Some(0), ..RawRetention::default() }
            .validate(Vec::new(), &mut errors);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("store.retention.bronze_days = -1"), "{errors:?}");
    }

    #[test]
    fn a_dedup_key_of_an_old_event_time_stays_while_its_bronze_row_does() {
        let folder = tempfile::tempdir().unwrap();
        let mut connection = store::open(folder.path(), Durability::Normal).unwrap();
        let day = 86_400_000_i64;
        let now = 100 * day;
        // Reading 1 arrived ten days ago, reading 2 just now; both carry event times of a year ago
        // (a device replaying its history), so only the first one's key may go.
        for (id, arrived) in [(1_i64, now - 10 * day), (2, now - 1000)] {
            connection
                .execute(
                    "INSERT INTO bronze (id, received_at_ms, source, profile, verdict, messages, payload)
                     VALUES (?1, ?2, 'mqtt', 'drone', 'valid', 1, x'5b5d')",
                    params![id, arrived],
                )
                .unwrap();
            connection
                .execute(
                    "INSERT INTO message_keys (event_time_ms, hash, reading_id) VALUES (?1, ?2, ?2)",
                    params![now - 365 * day, id],
                )
                .unwrap();
        }
        let policy = policy(7.0, 0.0, 0.0, Vec::new());
        let tx = connection.transaction().unwrap();
        step(&tx, &policy, now, 3).unwrap();
        tx.commit().unwrap();
        let keys: Vec<i64> = connection
            .prepare("SELECT reading_id FROM message_keys")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(keys, [2], "the fresh message's key is kept, so its redelivery is still a duplicate");
    }

    #[test]
    fn a_step_deletes_a_bounded_batch_of_expired_rows_and_keeps_what_the_pipeline_or_a_sink_still_needs() {
        let folder = tempfile::tempdir().unwrap();
        let mut connection = store::open(folder.path(), Durability::Normal).unwrap();
        let day = 86_400_000_i64;
        let now = 100 * day;
        // Readings 1..=10, ten days old; 11 and 12 fresh. Bronze row 9 is quarantined.
        for id in 1..=12_i64 {
            let at = if id <= 10 { now - 10 * day } else { now - 1000 };
            let verdict = if id == 9 { "rejected" } else { "valid" };
            connection
                .execute(
                    "INSERT INTO bronze (id, received_at_ms, source, profile, verdict, messages, payload)
                     VALUES (?1, ?2, 'http', 'vehicle', ?3, 1, x'5b5d')",
                    params![id, at, verdict],
                )
                .unwrap();
            connection
                .execute(
                    "INSERT INTO silver (id, profile, entity_id, timestamp_ms, metrics, attributes, processed_at_ms)
                     VALUES (?1, 'vehicle', 'v1', ?2, '{}', '{}', ?2)",
                    params![id, at],
                )
                .unwrap();
        }
        connection
            .execute(
                "INSERT INTO sink_cursors (sink, layer, position, updated_at_ms) VALUES ('postgres', 'silver', 5, 0)",
                [],
            )
            .unwrap();
        let policy = policy(7.0, 7.0, 0.0, vec!["postgres"]);
        let ids = |connection: &rusqlite::Connection, table: &str| -> Vec<i64> {
            let mut statement = connection.prepare(&format!("SELECT id FROM {table} ORDER BY id")).unwrap();
            statement.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
        };
        let mut run_step = |watermark: i64| {
            let tx = connection.transaction().unwrap();
            let trimmed = step(&tx, &policy, now, watermark).unwrap();
            tx.commit().unwrap();
            trimmed
        };
        // Bronze: readings 7 and up have no silver row yet (watermark 7).
        assert_eq!(run_step(7), Trimmed { bronze: 3, silver: 3, gold: 0, more: true });
        assert_eq!(run_step(7), Trimmed { bronze: 3, silver: 2, gold: 0, more: true });
        assert_eq!(run_step(7), Trimmed { bronze: 0, silver: 0, gold: 0, more: false });
        assert_eq!(ids(&connection, "bronze"), vec![7, 8, 9, 10, 11, 12]);
        assert_eq!(ids(&connection, "silver"), vec![6, 7, 8, 9, 10, 11, 12], "the sink confirmed silver through 5");
        // The pipeline catches up and the sink confirms everything: only the fresh rows stay,
        // the quarantined row 9 leaves with its contemporaries.
        connection.execute("UPDATE sink_cursors SET position = 12", []).unwrap();
        let mut run_step = |watermark: i64| {
            let tx = connection.transaction().unwrap();
            let trimmed = step(&tx, &policy, now, watermark).unwrap();
            tx.commit().unwrap();
            trimmed
        };
        run_step(13);
        run_step(13);
        assert_eq!(ids(&connection, "bronze"), vec![11, 12]);
        assert_eq!(ids(&connection, "silver"), vec![11, 12]);
    }

    #[test]
    fn an_expired_dead_letter_stays_until_the_sink_that_forwards_dead_letters_is_past_it() {
        let folder = tempfile::tempdir().unwrap();
        let mut connection = store::open(folder.path(), Durability::Normal).unwrap();
        let day = 86_400_000_i64;
        let now = 100 * day;
        // Ten days old: 1, 3 and 5 are rejected, the rest valid (with their silver rows).
        for id in 1..=6_i64 {
            let verdict = if id % 2 == 1 { "rejected" } else { "valid" };
            connection
                .execute(
                    "INSERT INTO bronze (id, received_at_ms, source, profile, verdict, messages, payload)
                     VALUES (?1, ?2, 'http', 'drone', ?3, 1, x'7b7d')",
                    params![id, now - 10 * day, verdict],
                )
                .unwrap();
        }
        connection
            .execute(
                "INSERT INTO sink_cursors (sink, layer, position, updated_at_ms) VALUES ('kafka', 'dead_letters', 3, 0)",
                [],
            )
            .unwrap();
        let mut policy = policy(7.0, 0.0, 0.0, vec!["kafka"]);
        policy.dead_letter_sinks = vec!["kafka"];
        let ids = |connection: &rusqlite::Connection| -> Vec<i64> {
            let mut statement = connection.prepare("SELECT id FROM bronze ORDER BY id").unwrap();
            statement.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
        };
        for _ in 0..3 {
            let tx = connection.transaction().unwrap();
            step(&tx, &policy, now, 7).unwrap();
            tx.commit().unwrap();
        }
        assert_eq!(ids(&connection), [5], "the dead letter the sink has not produced yet stays");
        connection.execute("UPDATE sink_cursors SET position = 5", []).unwrap();
        let tx = connection.transaction().unwrap();
        step(&tx, &policy, now, 7).unwrap();
        tx.commit().unwrap();
        assert!(ids(&connection).is_empty());
    }
}
