//! The gold layer: anomalies (`telemetry_anomalies`) and the alerts they open or update.

use super::GoldRow;
use rusqlite::{OptionalExtension, Transaction, params};
use std::sync::Arc;

/// Writes anomalies: a new one is inserted and opens or updates its alert; one that closes an
/// episode (a stop, a zone visit) updates the row of the same id. Re-processed anomalies
/// (same id) change nothing. Calls `counted` for each new anomaly; returns how many rows
/// were written.
pub fn write_gold(
    tx: &Transaction<'_>,
    rows: &[GoldRow],
    alert_cooldown_ms: i64,
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
        let features: serde_json::Map<String, serde_json::Value> =
            a.features.iter().map(|(name, value)| (name.to_string(), serde_json::json!(value))).collect();
        let features = serde_json::Value::Object(features).to_string();
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
            raise_alert(tx, row, alert_cooldown_ms)?;
        }
    }
    Ok(written)
}

/// Updates the live alert of the anomaly's (profile, entity, detector) if its last anomaly is
/// within the cooldown (in event time), or opens a new one.
fn raise_alert(tx: &Transaction<'_>, row: &GoldRow, cooldown_ms: i64) -> rusqlite::Result<()> {
    let a = &row.anomaly;
    let mut find = tx.prepare_cached(
        "SELECT id, severity FROM alerts
         WHERE profile = ?1 AND entity_id = ?2 AND detector = ?3 AND state != 'resolved' AND last_event_ms >= ?4
         ORDER BY id DESC LIMIT 1",
    )?;
    let live: Option<(i64, String)> = find
        .query_row(params![&*row.profile, &*row.entity, a.detector, row.timestamp_ms - cooldown_ms], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    match live {
        Some((id, severity)) => {
            let worst = if severity_rank(&severity) >= severity_rank(a.severity.as_str()) {
                severity
            } else {
                a.severity.as_str().to_string()
            };
            tx.prepare_cached(
                "UPDATE alerts SET anomalies = anomalies + 1, last_anomaly_id = ?2, reason = ?3, severity = ?4,
                     last_event_ms = MAX(last_event_ms, ?5), updated_at_ms = ?6
                 WHERE id = ?1",
            )?
            .execute(params![id, a.id, a.reason, worst, row.timestamp_ms, row.detected_at_ms])?;
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
        }
    }
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
            tx.execute(
                "UPDATE alerts SET state = 'resolved', resolved_at_ms = ?2, updated_at_ms = ?2 WHERE id = ?1",
                params![id, now_ms],
            )?;
            Ok(AlertTransition::Done)
        }
    }
}
