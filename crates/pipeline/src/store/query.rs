//! Read queries behind the API: anomalies, counts per profile, dead letters, readings.

use super::gold::RANKED_ANOMALIES;
use super::{SilverRow, StoreError};
use rusqlite::{Connection, Row, ToSql};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use teleguard_core::time::format_millis;

/// How anomalies are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnomalyOrder {
    /// Most anomalous first: by how far the score passes its threshold.
    #[default]
    Score,
    /// Newest first.
    Recent,
}

/// Filters of `GET /api/anomalies`.
#[derive(Debug, Clone, Default)]
pub struct AnomalyFilter {
    pub limit: usize,
    pub profile: Option<String>,
    pub entity: Option<String>,
    pub detector: Option<String>,
    pub since_ms: Option<i64>,
    pub order: AnomalyOrder,
}

/// One anomaly as the API shows it (the `telemetry_anomalies` row).
#[derive(Debug, Clone, Serialize)]
pub struct AnomalyRecord {
    pub id: String,
    pub reading_id: i64,
    pub profile: String,
    pub entity: String,
    pub timestamp: String,
    pub detector: String,
    pub metric: Option<String>,
    pub value: Option<f64>,
    pub anomaly_score: f64,
    pub threshold: f64,
    pub model_label: i64,
    pub model_is_anomaly: i64,
    pub severity: String,
    pub reason: String,
    pub features: serde_json::Value,
    pub detected_at: String,
}

pub fn anomalies(connection: &Connection, filter: &AnomalyFilter) -> Result<Vec<AnomalyRecord>, StoreError> {
    let mut sql = String::from(
        "SELECT id, reading_id, profile, entity_id, timestamp_ms, detector, metric, value, anomaly_score, threshold,
                model_label, model_is_anomaly, severity, reason, features, detected_at_ms
         FROM telemetry_anomalies WHERE 1 = 1",
    );
    let mut args: Vec<&dyn ToSql> = Vec::new();
    let conditions: [(&str, Option<&dyn ToSql>); 4] = [
        (" AND profile = ?", filter.profile.as_ref().map(|v| v as &dyn ToSql)),
        (" AND entity_id = ?", filter.entity.as_ref().map(|v| v as &dyn ToSql)),
        (" AND detector = ?", filter.detector.as_ref().map(|v| v as &dyn ToSql)),
        (" AND timestamp_ms >= ?", filter.since_ms.as_ref().map(|v| v as &dyn ToSql)),
    ];
    let unfiltered = conditions.iter().all(|(_, value)| value.is_none());
    for (condition, value) in conditions {
        if let Some(value) = value {
            sql.push_str(condition);
            args.push(value);
        }
    }
    // The most anomalous of all are always among the leaders, which have an index of their
    // own (see `gold::Leaderboard`); a filtered list looks at every anomaly.
    if unfiltered && filter.order == AnomalyOrder::Score && filter.limit <= RANKED_ANOMALIES {
        sql.push_str(" AND leader = 1");
    }
    sql.push_str(match filter.order {
        AnomalyOrder::Score => " ORDER BY anomaly_score / threshold DESC, id",
        AnomalyOrder::Recent => " ORDER BY detected_at_ms DESC, timestamp_ms DESC, id",
    });
    let limit = filter.limit as i64;
    sql.push_str(" LIMIT ?");
    args.push(&limit);
    let mut statement = connection.prepare_cached(&sql)?;
    let rows = statement.query_map(args.as_slice(), anomaly_record)?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

fn anomaly_record(row: &Row<'_>) -> rusqlite::Result<AnomalyRecord> {
    let features: String = row.get(14)?;
    Ok(AnomalyRecord {
        id: row.get(0)?,
        reading_id: row.get(1)?,
        profile: row.get(2)?,
        entity: row.get(3)?,
        timestamp: format_millis(row.get(4)?),
        detector: row.get(5)?,
        metric: row.get(6)?,
        value: row.get(7)?,
        anomaly_score: row.get(8)?,
        threshold: row.get(9)?,
        model_label: row.get(10)?,
        model_is_anomaly: row.get(11)?,
        severity: row.get(12)?,
        reason: row.get(13)?,
        features: serde_json::from_str(&features).unwrap_or(serde_json::Value::Null),
        detected_at: format_millis(row.get(15)?),
    })
}

/// Counts of one profile since the data folder was created.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ProfileCounts {
    pub profile: String,
    pub received: i64,
    pub valid: i64,
    pub rejected: i64,
    /// Valid readings enriched, analysed and stored in silver.
    pub analysed: i64,
    pub anomalies: i64,
    pub entities: i64,
    pub last_seen: Option<String>,
}

pub fn profile_counts(connection: &Connection) -> Result<Vec<ProfileCounts>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT p.profile, p.received, p.valid, p.rejected, p.analysed, p.anomalies, p.last_seen_ms,
                (SELECT COUNT(*) FROM entities e WHERE e.profile = p.profile)
         FROM profile_counts p ORDER BY p.profile",
    )?;
    let rows = statement
        .query_map([], |row| {
            Ok(ProfileCounts {
                profile: row.get(0)?,
                received: row.get(1)?,
                valid: row.get(2)?,
                rejected: row.get(3)?,
                analysed: row.get(4)?,
                anomalies: row.get(5)?,
                last_seen: row.get::<_, Option<i64>>(6)?.map(format_millis),
                entities: row.get(7)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// One alert as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AlertRecord {
    pub id: i64,
    pub profile: String,
    pub entity: String,
    pub detector: String,
    /// `open` (active, unacknowledged), `acknowledged` (active) or `resolved` (cleared,
    /// acknowledged or not).
    pub state: String,
    /// ThingsBoard's four alarm states: `active_unack`, `active_ack`, `cleared_unack`,
    /// `cleared_ack`.
    pub status: &'static str,
    pub severity: String,
    pub reason: String,
    pub anomalies: i64,
    pub first_anomaly_id: String,
    pub last_anomaly_id: String,
    pub first_event: String,
    pub last_event: String,
    pub opened_at: String,
    pub updated_at: String,
    pub acknowledged_at: Option<String>,
    pub resolved_at: Option<String>,
}

const ALERT_COLUMNS: &str = "id, profile, entity_id, detector, state, severity, reason, anomalies, first_anomaly_id,
    last_anomaly_id, first_event_ms, last_event_ms, opened_at_ms, updated_at_ms, acknowledged_at_ms, resolved_at_ms";

fn alert_record(row: &Row<'_>) -> rusqlite::Result<AlertRecord> {
    let state: String = row.get(4)?;
    let acknowledged_at_ms: Option<i64> = row.get(14)?;
    Ok(AlertRecord {
        id: row.get(0)?,
        profile: row.get(1)?,
        entity: row.get(2)?,
        detector: row.get(3)?,
        status: AlertStatus::of(&state, acknowledged_at_ms.is_some()).as_str(),
        state,
        severity: row.get(5)?,
        reason: row.get(6)?,
        anomalies: row.get(7)?,
        first_anomaly_id: row.get(8)?,
        last_anomaly_id: row.get(9)?,
        first_event: format_millis(row.get(10)?),
        last_event: format_millis(row.get(11)?),
        opened_at: format_millis(row.get(12)?),
        updated_at: format_millis(row.get(13)?),
        acknowledged_at: acknowledged_at_ms.map(format_millis),
        resolved_at: row.get::<_, Option<i64>>(15)?.map(format_millis),
    })
}

/// ThingsBoard's alarm states: active or cleared, and acknowledged or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertStatus {
    ActiveUnacknowledged,
    ActiveAcknowledged,
    ClearedUnacknowledged,
    ClearedAcknowledged,
}

impl AlertStatus {
    pub const ALL: [AlertStatus; 4] = [
        AlertStatus::ActiveUnacknowledged,
        AlertStatus::ActiveAcknowledged,
        AlertStatus::ClearedUnacknowledged,
        AlertStatus::ClearedAcknowledged,
    ];

    fn of(state: &str, acknowledged: bool) -> Self {
        match (state == "resolved", acknowledged) {
            (false, false) => AlertStatus::ActiveUnacknowledged,
            (false, true) => AlertStatus::ActiveAcknowledged,
            (true, false) => AlertStatus::ClearedUnacknowledged,
            (true, true) => AlertStatus::ClearedAcknowledged,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::ActiveUnacknowledged => "active_unack",
            AlertStatus::ActiveAcknowledged => "active_ack",
            AlertStatus::ClearedUnacknowledged => "cleared_unack",
            AlertStatus::ClearedAcknowledged => "cleared_ack",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        AlertStatus::ALL.into_iter().find(|status| status.as_str() == text)
    }

    /// The SQL condition on `alerts` that selects this status.
    fn condition(self) -> &'static str {
        match self {
            AlertStatus::ActiveUnacknowledged => "state != 'resolved' AND acknowledged_at_ms IS NULL",
            AlertStatus::ActiveAcknowledged => "state != 'resolved' AND acknowledged_at_ms IS NOT NULL",
            AlertStatus::ClearedUnacknowledged => "state = 'resolved' AND acknowledged_at_ms IS NULL",
            AlertStatus::ClearedAcknowledged => "state = 'resolved' AND acknowledged_at_ms IS NOT NULL",
        }
    }
}

/// Which alerts a listing wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertSelection {
    All,
    /// By the `state` column: `open`, `acknowledged` or `resolved`.
    State(&'static str),
    Status(AlertStatus),
    /// Active, acknowledged or not.
    Active,
}

/// Alerts, most recently updated first.
pub fn alerts(
    connection: &Connection,
    selection: AlertSelection,
    limit: usize,
) -> Result<Vec<AlertRecord>, StoreError> {
    let limit = limit as i64;
    let (condition, state) = match selection {
        AlertSelection::All => ("1", None),
        AlertSelection::State(state) => ("state = ?2", Some(state)),
        AlertSelection::Status(status) => (status.condition(), None),
        AlertSelection::Active => ("state != 'resolved'", None),
    };
    let sql =
        format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE {condition} ORDER BY updated_at_ms DESC, id DESC LIMIT ?1");
    let mut values: Vec<&dyn rusqlite::ToSql> = vec![&limit];
    if let Some(state) = &state {
        values.push(state);
    }
    let mut statement = connection.prepare_cached(&sql)?;
    let rows = statement.query_map(rusqlite::params_from_iter(values), alert_record)?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The (profile, entity) of every alert not yet resolved.
pub fn entities_with_open_alerts(connection: &Connection) -> Result<Vec<(String, String)>, StoreError> {
    let mut statement =
        connection.prepare_cached("SELECT DISTINCT profile, entity_id FROM alerts WHERE state != 'resolved'")?;
    let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// One alert by id.
pub fn alert(connection: &Connection, id: i64) -> Result<Option<AlertRecord>, StoreError> {
    use rusqlite::OptionalExtension;
    let sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?1");
    Ok(connection.prepare_cached(&sql)?.query_row([id], alert_record).optional()?)
}

/// Silver rows scanned at most when looking up an entity that is not in memory.
const ENTITY_SCAN_ROWS: i64 = 1_000_000;

/// The newest silver readings, of one entity (looked for among the last million) or of all,
/// newest first, each with the detectors that flagged it.
pub fn latest_readings(
    connection: &Connection,
    entity: Option<&str>,
    limit: usize,
) -> Result<Vec<SilverRow>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT s.id, s.profile, s.entity_id, s.timestamp_ms, s.latitude, s.longitude, s.metrics, s.attributes,
                s.driver_name, s.current_zone, s.processed_at_ms,
                (SELECT group_concat(detector) FROM telemetry_anomalies a WHERE a.reading_id = s.id)
         FROM silver s
         WHERE ?1 IS NULL OR (s.entity_id = ?1 AND s.id > (SELECT COALESCE(MAX(id), 0) FROM silver) - ?3)
         ORDER BY s.id DESC LIMIT ?2",
    )?;
    let received = Instant::now();
    let rows = statement
        .query_map(rusqlite::params![entity, limit as i64, ENTITY_SCAN_ROWS], |row| {
            let detectors: Option<String> = row.get(11)?;
            Ok(SilverRow {
                id: row.get(0)?,
                profile: Arc::from(row.get::<_, String>(1)?),
                entity: Arc::from(row.get::<_, String>(2)?),
                timestamp_ms: row.get(3)?,
                latitude: row.get(4)?,
                longitude: row.get(5)?,
                metrics: row.get(6)?,
                attributes: row.get(7)?,
                driver_name: row.get::<_, Option<String>>(8)?.map(Arc::from),
                current_zone: row.get::<_, Option<String>>(9)?.map(Arc::from),
                processed_at_ms: row.get(10)?,
                anomalies: detectors.map(|d| d.split(',').map(str::to_string).collect()).unwrap_or_default(),
                received,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// A read connection shared by API handlers; queries run on the blocking pool.
#[derive(Debug)]
pub struct Reader {
    connection: Arc<Mutex<Connection>>,
}

impl Reader {
    pub fn new(connection: Connection) -> Self {
        Reader { connection: Arc::new(Mutex::new(connection)) }
    }

    /// Runs `query` on the read connection without blocking the async runtime.
    pub async fn run<T, F>(&self, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || {
            let connection = connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            query(&connection)
        })
        .await
        .map_err(|e| StoreError::Schema(format!("query task failed: {e}")))?
    }
}
