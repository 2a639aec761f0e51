//! The store reads a sink makes: silver, gold and dead-letter rows after its cursors, the cursors,
//! and its lag.

use rusqlite::{Connection, OptionalExtension, params};

/// The two layers a sink follows, as named in `sink_cursors`.
pub const SILVER: &str = "silver";
pub const GOLD: &str = "gold";
/// The rejected bronze rows a sink that forwards dead letters follows, by bronze id.
pub const DEAD_LETTERS: &str = "dead_letters";

/// One silver row as a sink copies it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadingRecord {
    pub id: i64,
    pub profile: String,
    pub entity_id: String,
    pub timestamp_ms: i64,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    /// JSON object of metric name to value.
    pub metrics: String,
    /// JSON object of attribute name to value.
    pub attributes: String,
    pub driver_name: Option<String>,
    pub current_zone: Option<String>,
    pub processed_at_ms: i64,
}

/// One change of a gold row (its insert, or its episode's close) as a sink copies it.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyRecord {
    /// The change's place in gold's change order; the row's version on the target.
    pub change_seq: i64,
    pub id: String,
    pub reading_id: i64,
    pub profile: String,
    pub entity_id: String,
    pub timestamp_ms: i64,
    pub detector: String,
    pub metric: Option<String>,
    pub value: Option<f64>,
    pub anomaly_score: f64,
    pub threshold: f64,
    pub severity: String,
    pub reason: String,
    /// JSON object of feature name to value.
    pub features: String,
    pub detected_at_ms: i64,
    pub episode_start_ms: Option<i64>,
    pub episode_end_ms: Option<i64>,
}

/// One rejected message (a bronze row of verdict `rejected`) as a sink forwards it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterRecord {
    /// The bronze id: the sink's position in [`DEAD_LETTERS`].
    pub id: i64,
    /// The source that received it (`http`, `mqtt`, `simulator`, `kafka`, ...).
    pub source: String,
    pub profile: String,
    /// The reason code, as in metrics (`schema`, `malformed_json`, `duplicate`, ...).
    pub reason_code: String,
    pub reason: String,
    /// The message as received.
    pub payload: Vec<u8>,
}

/// Where `sink` has got to in `layer` (0 before its first write).
pub fn cursor(connection: &Connection, sink: &str, layer: &str) -> rusqlite::Result<i64> {
    Ok(connection
        .query_row("SELECT position FROM sink_cursors WHERE sink = ?1 AND layer = ?2", params![sink, layer], |row| {
            row.get(0)
        })
        .optional()?
        .unwrap_or(0))
}

/// The random id that names this store to its targets (schema migration 5).
pub fn store_uid(connection: &Connection) -> rusqlite::Result<i64> {
    connection.query_row("SELECT value FROM meta WHERE key = 'store_uid'", [], |row| row.get(0))
}

/// Silver rows with `after < id < below`, in id order, at most `limit`.
pub fn readings_after(
    connection: &Connection,
    after: i64,
    below: i64,
    limit: usize,
) -> rusqlite::Result<Vec<ReadingRecord>> {
    let mut statement = connection.prepare_cached(
        "SELECT id, profile, entity_id, timestamp_ms, latitude, longitude, metrics, attributes, driver_name,
                current_zone, processed_at_ms
         FROM silver WHERE id > ?1 AND id < ?2 ORDER BY id LIMIT ?3",
    )?;
    let rows = statement.query_map(params![after, below, limit as i64], |row| {
        Ok(ReadingRecord {
            id: row.get(0)?,
            profile: row.get(1)?,
            entity_id: row.get(2)?,
            timestamp_ms: row.get(3)?,
            latitude: row.get(4)?,
            longitude: row.get(5)?,
            metrics: row.get(6)?,
            attributes: row.get(7)?,
            driver_name: row.get(8)?,
            current_zone: row.get(9)?,
            processed_at_ms: row.get(10)?,
        })
    })?;
    rows.collect()
}

/// Gold changes with `change_seq > after`, in change order, at most `limit`.
pub fn anomalies_after(connection: &Connection, after: i64, limit: usize) -> rusqlite::Result<Vec<AnomalyRecord>> {
    let mut statement = connection.prepare_cached(
        "SELECT change_seq, id, reading_id, profile, entity_id, timestamp_ms, detector, metric, value, anomaly_score,
                threshold, severity, reason, features, detected_at_ms, episode_start_ms, episode_end_ms
         FROM telemetry_anomalies WHERE change_seq > ?1 ORDER BY change_seq LIMIT ?2",
    )?;
    let rows = statement.query_map(params![after, limit as i64], |row| {
        Ok(AnomalyRecord {
            change_seq: row.get(0)?,
            id: row.get(1)?,
            reading_id: row.get(2)?,
            profile: row.get(3)?,
            entity_id: row.get(4)?,
            timestamp_ms: row.get(5)?,
            detector: row.get(6)?,
            metric: row.get(7)?,
            value: row.get(8)?,
            anomaly_score: row.get(9)?,
            threshold: row.get(10)?,
            severity: row.get(11)?,
            reason: row.get(12)?,
            features: row.get(13)?,
            detected_at_ms: row.get(14)?,
            episode_start_ms: row.get(15)?,
            episode_end_ms: row.get(16)?,
        })
    })?;
    rows.collect()
}

/// Rejected bronze rows with `id > after`, in id order, at most `limit` (through the partial
/// index over rejected rows, so valid rows cost nothing).
pub fn dead_letters_after(
    connection: &Connection,
    after: i64,
    limit: usize,
) -> rusqlite::Result<Vec<DeadLetterRecord>> {
    let mut statement = connection.prepare_cached(
        "SELECT id, source, profile, coalesce(reason_code, 'invalid_message'), coalesce(reason, ''), payload
         FROM bronze WHERE verdict = 'rejected' AND id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = statement.query_map(params![after, limit as i64], |row| {
        Ok(DeadLetterRecord {
            id: row.get(0)?,
            source: row.get(1)?,
            profile: row.get(2)?,
            reason_code: row.get(3)?,
            reason: row.get(4)?,
            payload: row.get(5)?,
        })
    })?;
    rows.collect()
}

/// Rows of each layer in the store that the target has not confirmed: (silver, gold).
pub fn lag_rows(connection: &Connection, silver_cursor: i64, gold_cursor: i64) -> rusqlite::Result<(i64, i64)> {
    let silver = connection
        .prepare_cached("SELECT count(*) FROM silver WHERE id > ?1")?
        .query_row([silver_cursor], |r| r.get(0))?;
    let gold = connection
        .prepare_cached("SELECT count(*) FROM telemetry_anomalies WHERE change_seq > ?1")?
        .query_row([gold_cursor], |r| r.get(0))?;
    Ok((silver, gold))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{self, Durability};

    #[test]
    fn readings_stop_below_the_watermark_and_anomaly_changes_come_in_change_order() {
        let folder = tempfile::tempdir().unwrap();
        let connection = store::open(folder.path(), Durability::Normal).unwrap();
        for id in [1, 2, 4, 5] {
            connection
                .execute(
                    "INSERT INTO silver (id, profile, entity_id, timestamp_ms, metrics, attributes, processed_at_ms)
                     VALUES (?1, 'drone', 'd1', ?1, '{}', '{}', ?1)",
                    [id],
                )
                .unwrap();
        }
        let ids = |after, below| -> Vec<i64> {
            readings_after(&connection, after, below, 10).unwrap().iter().map(|r| r.id).collect()
        };
        assert_eq!(ids(0, 5), vec![1, 2, 4]);
        assert_eq!(ids(2, 100), vec![4, 5]);
        for (id, seq) in [("a", 3), ("b", 1), ("c", 2)] {
            connection
                .execute(
                    "INSERT INTO telemetry_anomalies (id, reading_id, profile, entity_id, timestamp_ms, detector,
                         anomaly_score, threshold, model_label, model_is_anomaly, severity, reason, features,
                         detected_at_ms, change_seq)
                     VALUES (?1, 1, 'drone', 'd1', 1, 'zscore', 4.0, 3.0, -1, 1, 'minor', '', '{}', 1, ?2)",
                    params![id, seq],
                )
                .unwrap();
        }
        let changes: Vec<String> = anomalies_after(&connection, 1, 10).unwrap().into_iter().map(|a| a.id).collect();
        assert_eq!(changes, vec!["c", "a"]);
        assert_eq!(lag_rows(&connection, 2, 1).unwrap(), (2, 2));
        assert_eq!(cursor(&connection, "postgres", SILVER).unwrap(), 0);
    }

    #[test]
    fn dead_letters_are_the_rejected_bronze_rows_in_id_order() {
        let folder = tempfile::tempdir().unwrap();
        let connection = store::open(folder.path(), Durability::Normal).unwrap();
        for (id, verdict, code) in
            [(1, "valid", None), (3, "rejected", Some("schema")), (4, "rejected", None), (5, "valid", None)]
        {
            connection
                .execute(
                    "INSERT INTO bronze (id, received_at_ms, source, profile, verdict, reason_code, reason, messages, payload)
                     VALUES (?1, 0, 'http', 'drone', ?2, ?3, 'why', 1, x'7b7d')",
                    params![id, verdict, code],
                )
                .unwrap();
        }
        let letters = dead_letters_after(&connection, 0, 10).unwrap();
        let seen: Vec<(i64, &str)> = letters.iter().map(|l| (l.id, l.reason_code.as_str())).collect();
        assert_eq!(seen, [(3, "schema"), (4, "invalid_message")]);
        assert_eq!(letters[0].payload, b"{}");
        assert_eq!(dead_letters_after(&connection, 3, 10).unwrap().len(), 1);
        assert!(dead_letters_after(&connection, 4, 10).unwrap().is_empty());
    }
}
