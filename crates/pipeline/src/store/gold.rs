//! The gold layer: anomalies (`telemetry_anomalies`) and the alerts they open or update.

use super::GoldRow;
use rusqlite::{OptionalExtension, Transaction, params};
use std::collections::HashMap;
use std::sync::Arc;

/// The live alert of each (profile, entity, detector) the writer has touched, so raising an
/// alert needs no look-up query. Only the writer changes alerts, so the cache stays true; it
/// is emptied when an alert is resolved and when it grows past [`MAX_CACHED_ALERTS`].
#[derive(Debug, Default)]
pub struct AlertCache {
    live: HashMap<(Arc<str>, Arc<str>, &'static str), LiveAlert>,
}

#[derive(Debug, Clone)]
struct LiveAlert {
    id: i64,
    last_event_ms: i64,
    severity: String,
}

const MAX_CACHED_ALERTS: usize = 100_000;

impl AlertCache {
    /// Forgets everything (after a rolled-back transaction).
    pub fn clear(&mut self) {
        self.live.clear();
    }
}

/// Writes anomalies: a new one is inserted and opens or updates its alert; one that closes an
/// episode (a stop, a zone visit) updates the row of the same id. Re-processed anomalies
/// (same id) change nothing. Calls `counted` for each new anomaly; returns how many rows
/// were written.
pub fn write_gold(
    tx: &Transaction<'_>,
    rows: &[GoldRow],
    alert_cooldown_ms: i64,
    alerts: &mut AlertCache,
    counted: &mut dyn FnMut(&Arc<str>),
) -> rusqlite::Result<usize> {
    let mut insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO telemetry_anomalies (id, reading_id, profile, entity_id, timestamp_ms, detector, metric, value,
             anomaly_score, threshold, model_label, model_is_anomaly, severity, reason, features, detected_at_ms,
             episode_start_ms, episode_end_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, -1, 1, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?;
    let mut close = tx.prepare_cached(
        "UPDATE telemetry_anomalies SET anomaly_score = ?2, value = ?3, severity = ?4, reason = ?5, features = ?6,
             episode_end_ms = ?7
         WHERE id = ?1 AND episode_end_ms IS NULL",
    )?;
    let mut written = 0;
    for row in rows {
        let a = &row.anomaly;
        let features = &row.features_json;
        let episode_end = a.episode.and_then(|e| e.end_ms);
        if episode_end.is_some() {
            let closed =
                close.execute(params![a.id, a.score, a.value, a.severity.as_str(), a.reason, features, episode_end])?;
            if closed > 0 {
                written += 1;
                continue;
            }
        }
        let inserted = insert.execute(params![
            a.id,
            row.reading_id,
            &*row.profile,
            &*row.entity,
            row.timestamp_ms,
            a.detector,
            a.metric.as_deref(),
            a.value,
            a.score,
            a.threshold,
            a.severity.as_str(),
            a.reason,
            features,
            row.detected_at_ms,
            a.episode.map(|e| e.start_ms),
            episode_end
        ])?;
        if inserted > 0 {
            written += 1;
            counted(&row.profile);
            raise_alert(tx, row, alert_cooldown_ms, alerts)?;
        }
    }
    Ok(written)
}

/// Updates the live alert of the anomaly's (profile, entity, detector) if its last anomaly is
/// within the cooldown (in event time), or opens a new one.
fn raise_alert(tx: &Transaction<'_>, row: &GoldRow, cooldown_ms: i64, cache: &mut AlertCache) -> rusqlite::Result<()> {
    let a = &row.anomaly;
    let key = (row.profile.clone(), row.entity.clone(), a.detector);
    let live = match cache.live.get(&key) {
        Some(live) => Some(live.clone()),
        None => tx
            .prepare_cached(
                "SELECT id, severity, last_event_ms FROM alerts
                 WHERE profile = ?1 AND entity_id = ?2 AND detector = ?3 AND state != 'resolved'
                 ORDER BY id DESC LIMIT 1",
            )?
            .query_row(params![&*row.profile, &*row.entity, a.detector], |r| {
                Ok(LiveAlert { id: r.get(0)?, severity: r.get(1)?, last_event_ms: r.get(2)? })
            })
            .optional()?,
    };
    let live = live.filter(|l| l.last_event_ms >= row.timestamp_ms - cooldown_ms);
    let updated = match live {
        Some(mut live) => {
            if severity_rank(a.severity.as_str()) > severity_rank(&live.severity) {
                live.severity = a.severity.as_str().to_string();
            }
            live.last_event_ms = live.last_event_ms.max(row.timestamp_ms);
            tx.prepare_cached(
                "UPDATE alerts SET anomalies = anomalies + 1, last_anomaly_id = ?2, reason = ?3, severity = ?4,
                     last_event_ms = ?5, updated_at_ms = ?6
                 WHERE id = ?1",
            )?
            .execute(params![
                live.id,
                a.id,
                a.reason,
                live.severity,
                live.last_event_ms,
                row.detected_at_ms
            ])?;
            live
        }
        None => {
            tx.prepare_cached(
                "INSERT INTO alerts (profile, entity_id, detector, state, severity, reason, first_anomaly_id,
                     last_anomaly_id, anomalies, first_event_ms, last_event_ms, opened_at_ms, updated_at_ms)
                 VALUES (?1, ?2, ?3, 'open', ?4, ?5, ?6, ?6, 1, ?7, ?7, ?8, ?8)",
            )?
            .execute(params![
                &*row.profile,
                &*row.entity,
                a.detector,
                a.severity.as_str(),
                a.reason,
                a.id,
                row.timestamp_ms,
                row.detected_at_ms
            ])?;
            LiveAlert {
                id: tx.last_insert_rowid(),
                last_event_ms: row.timestamp_ms,
                severity: a.severity.as_str().to_string(),
            }
        }
    };
    if cache.live.len() >= MAX_CACHED_ALERTS {
        cache.live.clear();
    }
    cache.live.insert(key, updated);
    Ok(())
}

fn severity_rank(severity: &str) -> u8 {
    match severity {
        "critical" => 3,
        "major" => 2,
        _ => 1,
    }
}

/// What an operator can do to an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertAction {
    Acknowledge,
    Resolve,
}

/// The outcome of an operator's action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertTransition {
    Done,
    NotFound,
    /// The alert is resolved; it cannot be acknowledged any more.
    AlreadyResolved,
}

/// Acknowledges or resolves alert `id`; resolving twice is fine, acknowledging a resolved one is not.
pub fn transition_alert(
    tx: &Transaction<'_>,
    id: i64,
    action: AlertAction,
    now_ms: i64,
    cache: &mut AlertCache,
) -> rusqlite::Result<AlertTransition> {
    let state: Option<String> =
        tx.query_row("SELECT state FROM alerts WHERE id = ?1", [id], |r| r.get(0)).optional()?;
    let Some(state) = state else { return Ok(AlertTransition::NotFound) };
    match (action, state.as_str()) {
        (AlertAction::Acknowledge, "resolved") => Ok(AlertTransition::AlreadyResolved),
        (AlertAction::Acknowledge, _) => {
            tx.execute(
                "UPDATE alerts SET state = 'acknowledged', acknowledged_at_ms = COALESCE(acknowledged_at_ms, ?2),
                     updated_at_ms = ?2 WHERE id = ?1",
                params![id, now_ms],
            )?;
            Ok(AlertTransition::Done)
        }
        (AlertAction::Resolve, "resolved") => Ok(AlertTransition::Done),
        (AlertAction::Resolve, _) => {
            cache.live.clear();
            tx.execute(
                "UPDATE alerts SET state = 'resolved', resolved_at_ms = ?2, updated_at_ms = ?2 WHERE id = ?1",
                params![id, now_ms],
            )?;
            Ok(AlertTransition::Done)
        }
    }
}
