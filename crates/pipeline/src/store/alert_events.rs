//! The alert events the notification routes follow: each with its alert and the anomaly that
//! opened it, read in id order after a route's cursor.

use super::StoreError;
use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

/// One alert event with what a notification says about it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AlertEventRecord {
    pub event_id: i64,
    /// `opened`, `escalated` or `resolved`.
    pub event: String,
    /// The alert's severity after the event.
    pub severity: String,
    pub at_ms: i64,
    pub alert_id: i64,
    pub profile: String,
    pub entity: String,
    pub detector: String,
    pub state: String,
    pub reason: String,
    pub anomalies: i64,
    pub first_event_ms: i64,
    pub last_event_ms: i64,
    /// The anomaly that opened the alert (absent if it was removed).
    pub metric: Option<String>,
    pub value: Option<f64>,
    pub score: Option<f64>,
    pub threshold: Option<f64>,
}

/// Events after `after_id`, oldest first, at most `limit`.
pub fn after(connection: &Connection, after_id: i64, limit: usize) -> Result<Vec<AlertEventRecord>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT e.id, e.event, e.severity, e.at_ms, a.id, a.profile, a.entity_id, a.detector, a.state, a.reason,
                a.anomalies, a.first_event_ms, a.last_event_ms, t.metric, t.value, t.anomaly_score, t.threshold
         FROM alert_events e JOIN alerts a ON a.id = e.alert_id
         LEFT JOIN telemetry_anomalies t ON t.id = a.first_anomaly_id
         WHERE e.id > ?1 ORDER BY e.id LIMIT ?2",
    )?;
    let rows = statement
        .query_map(rusqlite::params![after_id, limit as i64], |r| {
            Ok(AlertEventRecord {
                event_id: r.get(0)?,
                event: r.get(1)?,
                severity: r.get(2)?,
                at_ms: r.get(3)?,
                alert_id: r.get(4)?,
                profile: r.get(5)?,
                entity: r.get(6)?,
                detector: r.get(7)?,
                state: r.get(8)?,
                reason: r.get(9)?,
                anomalies: r.get(10)?,
                first_event_ms: r.get(11)?,
                last_event_ms: r.get(12)?,
                metric: r.get(13)?,
                value: r.get(14)?,
                score: r.get(15)?,
                threshold: r.get(16)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Where `route` stands: the last event it delivered, or `None` for a route never run.
pub fn cursor(connection: &Connection, route: &str) -> Result<Option<i64>, StoreError> {
    Ok(connection
        .prepare_cached("SELECT last_event_id FROM notification_cursors WHERE route = ?1")?
        .query_row([route], |r| r.get(0))
        .optional()?)
}

/// The newest event's id (0 when there is none).
pub fn latest(connection: &Connection) -> Result<i64, StoreError> {
    Ok(connection.query_row("SELECT COALESCE(MAX(id), 0) FROM alert_events", [], |r| r.get(0))?)
}
