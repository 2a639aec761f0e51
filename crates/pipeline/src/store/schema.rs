//! Versioned schema migrations of the embedded store, applied in order at open.

use rusqlite::Connection;

/// Each entry upgrades the schema from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the medallion layers, reference data and bookkeeping.
    r#"
    -- A rejected message has a row of its own (messages = 1, payload as received). The valid
    -- messages of one submission share a row: payload is a JSON array of them as received, and
    -- their readings have ids id .. id + messages - 1.
    CREATE TABLE bronze (
        id INTEGER PRIMARY KEY,
        received_at_ms INTEGER NOT NULL,
        source TEXT NOT NULL,
        profile TEXT NOT NULL,
        verdict TEXT NOT NULL CHECK (verdict IN ('valid', 'rejected')),
        reason TEXT,
        messages INTEGER NOT NULL,
        payload BLOB NOT NULL
    );
    CREATE VIEW dead_letters AS
        SELECT id, received_at_ms, source, profile, reason, payload FROM bronze WHERE verdict = 'rejected';

    -- silver.id is the reading id given by its bronze row.
    CREATE TABLE silver (
        id INTEGER PRIMARY KEY,
        profile TEXT NOT NULL,
        entity_id TEXT NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        latitude REAL,
        longitude REAL,
        metrics TEXT NOT NULL,
        attributes TEXT NOT NULL,
        driver_name TEXT,
        current_zone TEXT,
        processed_at_ms INTEGER NOT NULL
    );
    CREATE VIEW enriched_telemetry_history AS
        SELECT entity_id AS vehicle_id,
               strftime('%Y-%m-%d %H:%M:%f', timestamp_ms / 1000.0, 'unixepoch') AS timestamp,
               latitude, longitude,
               json_extract(metrics, '$.speed') AS speed,
               json_extract(attributes, '$.engine_status') AS engine_status,
               driver_name, current_zone
        FROM silver WHERE profile = 'vehicle';

    CREATE TABLE telemetry_anomalies (
        id TEXT PRIMARY KEY,
        reading_id INTEGER NOT NULL,
        profile TEXT NOT NULL,
        entity_id TEXT NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        detector TEXT NOT NULL,
        metric TEXT,
        value REAL,
        anomaly_score REAL NOT NULL,
        threshold REAL NOT NULL,
        model_label INTEGER NOT NULL,
        model_is_anomaly INTEGER NOT NULL,
        severity TEXT NOT NULL,
        reason TEXT NOT NULL,
        features TEXT NOT NULL,
        detected_at_ms INTEGER NOT NULL,
        -- Findings that last (a stop, a zone visit): when they began and ended.
        episode_start_ms INTEGER,
        episode_end_ms INTEGER
    );
    CREATE INDEX telemetry_anomalies_by_excess ON telemetry_anomalies (anomaly_score / threshold DESC);
    CREATE INDEX telemetry_anomalies_by_time ON telemetry_anomalies (detected_at_ms DESC);

    -- An alert per (profile, entity, detector) episode: anomalies within the cooldown of the
    -- alert's last one update it instead of opening another.
    CREATE TABLE alerts (
        id INTEGER PRIMARY KEY,
        profile TEXT NOT NULL,
        entity_id TEXT NOT NULL,
        detector TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
        severity TEXT NOT NULL,
        reason TEXT NOT NULL,
        first_anomaly_id TEXT NOT NULL,
        last_anomaly_id TEXT NOT NULL,
        anomalies INTEGER NOT NULL,
        first_event_ms INTEGER NOT NULL,
        last_event_ms INTEGER NOT NULL,
        opened_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        acknowledged_at_ms INTEGER,
        resolved_at_ms INTEGER
    );
    CREATE INDEX alerts_by_key ON alerts (profile, entity_id, detector, state);
    CREATE INDEX alerts_by_update ON alerts (updated_at_ms DESC);

    CREATE TABLE models (
        scope TEXT PRIMARY KEY,
        detector TEXT NOT NULL,
        model TEXT NOT NULL,
        trained_at_ms INTEGER NOT NULL
    );

    CREATE TABLE profile_counts (
        profile TEXT PRIMARY KEY,
        received INTEGER NOT NULL DEFAULT 0,
        valid INTEGER NOT NULL DEFAULT 0,
        rejected INTEGER NOT NULL DEFAULT 0,
        analysed INTEGER NOT NULL DEFAULT 0,
        anomalies INTEGER NOT NULL DEFAULT 0,
        last_seen_ms INTEGER
    );
    CREATE TABLE entities (
        profile TEXT NOT NULL,
        entity_id TEXT NOT NULL,
        first_seen_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        PRIMARY KEY (profile, entity_id)
    ) WITHOUT ROWID;

    CREATE TABLE drivers (
        driver_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        vehicle_id TEXT NOT NULL,
        details TEXT NOT NULL
    );
    CREATE TABLE geofences (
        zone_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        geometry TEXT NOT NULL
    );
    CREATE TABLE reference_files (
        name TEXT PRIMARY KEY,
        content TEXT NOT NULL,
        loaded_at_ms INTEGER NOT NULL
    );
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    "#,
    // 2: an index per anomaly keyed by excess (score / threshold) touched a random page for
    // every anomaly written, the store's largest cost; only the anomalies that entered the top
    // 10,000 when written (`leader`, see `gold::Leaderboard`) are indexed by excess now. An
    // index by reading serves the readings list's "which detectors flagged it".
    r#"
    ALTER TABLE telemetry_anomalies ADD COLUMN leader INTEGER NOT NULL DEFAULT 0;
    UPDATE telemetry_anomalies SET leader = 1 WHERE rowid IN
        (SELECT rowid FROM telemetry_anomalies ORDER BY anomaly_score / threshold DESC LIMIT 10000);
    DROP INDEX telemetry_anomalies_by_excess;
    CREATE INDEX telemetry_anomalies_leaders ON telemetry_anomalies (anomaly_score / threshold DESC) WHERE leader = 1;
    CREATE INDEX telemetry_anomalies_by_reading ON telemetry_anomalies (reading_id);
    "#,
    // 3: the readings of sources that may deliver a message twice (MQTT QoS 1 after a crash or a
    // reconnect), keyed by event time and a hash of (profile, entity, event time, payload), so
    // that a second delivery is recorded as a duplicate instead of becoming a second reading.
    // Led by event time, so inserts land near the end of the key's index.
    r#"
    CREATE TABLE message_keys (
        event_time_ms INTEGER NOT NULL,
        hash INTEGER NOT NULL,
        reading_id INTEGER NOT NULL,
        PRIMARY KEY (event_time_ms, hash)
    ) WITHOUT ROWID;
    "#,
    // 4: quarantine. A rejected message keeps its reason code beside the text (older rows get
    // the code their text begins with), and `replayed_as` once it was replayed: the id of the
    // reading or of the new dead letter it became. Rejected rows are few, so a partial index
    // over them serves the dead-letter filters without costing valid rows anything.
    r#"
    ALTER TABLE bronze ADD COLUMN reason_code TEXT;
    ALTER TABLE bronze ADD COLUMN replayed_as INTEGER;
    UPDATE bronze SET reason_code = CASE
            WHEN reason LIKE 'invalid JSON%' THEN 'malformed_json'
            WHEN reason LIKE 'empty body%' THEN 'malformed_json'
            WHEN reason LIKE 'duplicate:%' THEN 'duplicate'
            WHEN reason LIKE 'identity_mismatch:%' THEN 'identity_mismatch'
            WHEN reason LIKE 'payload_too_large:%' OR reason LIKE 'request body of%' THEN 'payload_too_large'
            WHEN reason LIKE 'unknown profile%' THEN 'unknown_profile'
            WHEN reason LIKE 'field `%' AND reason LIKE '%is out of range%' THEN 'out_of_range'
            WHEN reason LIKE 'field `%' AND reason LIKE '%is not a finite number%' THEN 'not_finite'
            WHEN reason LIKE 'field `%' THEN 'schema'
            ELSE 'invalid_message'
        END
        WHERE verdict = 'rejected';
    CREATE INDEX bronze_quarantine ON bronze (id) WHERE verdict = 'rejected';
    DROP VIEW dead_letters;
    CREATE VIEW dead_letters AS
        SELECT id, received_at_ms, source, profile, reason_code, reason, replayed_as, payload
        FROM bronze WHERE verdict = 'rejected';
    "#,
    // 5: notifications. Every alert opened, escalated or resolved appends an event in the
    // transaction that changed it; each notification route (Slack, webhook) follows the events
    // in id order from its own cursor, advanced only after its endpoint confirmed a delivery.
    r#"
    CREATE TABLE alert_events (
        id INTEGER PRIMARY KEY,
        alert_id INTEGER NOT NULL,
        event TEXT NOT NULL CHECK (event IN ('opened', 'escalated', 'resolved')),
        severity TEXT NOT NULL,
        at_ms INTEGER NOT NULL
    );
    CREATE TABLE notification_cursors (
        route TEXT PRIMARY KEY,
        last_event_id INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL
    );
    ALTER TABLE alerts ADD COLUMN escalated_at_ms INTEGER;
    "#,
    // 6: what external sinks need to follow the store. Each sink keeps a cursor per layer it
    // follows: the last silver id, and the last gold change it has written and its target has
    // confirmed. An anomaly changes after its insert when its episode closes (an end and a
    // final score), so every insert and every close takes the next `change_seq`, in commit
    // order; a sink follows gold by it and sees each change of a row once.
    r#"
    CREATE TABLE sink_cursors (
        sink TEXT NOT NULL,
        layer TEXT NOT NULL CHECK (layer IN ('silver', 'gold')),
        position INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        PRIMARY KEY (sink, layer)
    ) WITHOUT ROWID;
    ALTER TABLE telemetry_anomalies ADD COLUMN change_seq INTEGER;
    UPDATE telemetry_anomalies SET change_seq = rowid;
    CREATE INDEX telemetry_anomalies_by_change ON telemetry_anomalies (change_seq);
    -- Names this store to the targets it fills: reading ids start at 1 in every new store, so a
    -- target that already holds another store's ids would take new readings for copies.
    INSERT OR IGNORE INTO meta (key, value) VALUES ('store_uid', abs(random()));
    "#,
    // 7: the active alerts, found every few seconds to clear those whose episode is over and
    // by the fleet map, without a scan of every alert ever raised.
    r#"
    CREATE INDEX alerts_active ON alerts (profile, entity_id) WHERE state != 'resolved';
    "#,
    // 8: a sink that forwards dead letters (the gateway's Kafka sink) keeps a cursor over the
    // rejected bronze rows too; SQLite cannot change a CHECK, so the table is made again.
    r#"
    CREATE TABLE sink_cursors_new (
        sink TEXT NOT NULL,
        layer TEXT NOT NULL CHECK (layer IN ('silver', 'gold', 'dead_letters')),
        position INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        PRIMARY KEY (sink, layer)
    ) WITHOUT ROWID;
    INSERT INTO sink_cursors_new SELECT sink, layer, position, updated_at_ms FROM sink_cursors;
    DROP TABLE sink_cursors;
    ALTER TABLE sink_cursors_new RENAME TO sink_cursors;
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Brings the database to [`SCHEMA_VERSION`], each step in its own transaction.
pub fn migrate(connection: &mut Connection) -> Result<(), String> {
    let current: usize = connection
        .query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0))
        .map_err(|e| e.to_string())? as usize;
    if current > SCHEMA_VERSION {
        return Err(format!(
            "the data folder has schema version {current}, newer than this build's {SCHEMA_VERSION}: \
             upgrade teleguard or use another --data-dir"
        ));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = connection.transaction().map_err(|e| e.to_string())?;
        tx.execute_batch(sql).map_err(|e| format!("migration {}: {e}", index + 1))?;
        tx.pragma_update(None, "user_version", (index + 1) as i64).map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_store_keeps_its_most_anomalous_listable_after_the_leader_migration() {
        let mut connection = Connection::open_in_memory().expect("database");
        connection.execute_batch(MIGRATIONS[0]).expect("version 1");
        connection.pragma_update(None, "user_version", 1).expect("version");
        for i in 0..20_050_i64 {
            connection
                .execute(
                    "INSERT INTO telemetry_anomalies (id, reading_id, profile, entity_id, timestamp_ms, detector,
                         anomaly_score, threshold, model_label, model_is_anomaly, severity, reason, features,
                         detected_at_ms)
                     VALUES (printf('%028x', ?1), ?1, 'drone', 'd1', ?1, 'zscore', ?2, 3.0, -1, 1, 'minor', '', '{}', ?1)",
                    rusqlite::params![i, 3.0 + ((i * 7919) % 20_050) as f64],
                )
                .expect("anomaly");
        }
        migrate(&mut connection).expect("migrations");
        let version: i64 = connection.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("version");
        assert_eq!(version as usize, SCHEMA_VERSION);
        let (leaders, lowest): (i64, f64) = connection
            .query_row("SELECT count(*), min(anomaly_score) FROM telemetry_anomalies WHERE leader = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("leaders");
        assert_eq!(leaders, 10_000);
        assert_eq!(lowest, 3.0 + 10_050.0, "the 10,000 highest of scores 3 .. 20,052 are leaders");
        let plan: String = connection
            .query_row(
                "EXPLAIN QUERY PLAN SELECT id FROM telemetry_anomalies WHERE leader = 1
                 ORDER BY anomaly_score / threshold DESC LIMIT 10",
                [],
                |r| r.get(3),
            )
            .expect("plan");
        assert!(plan.contains("telemetry_anomalies_leaders"), "{plan}");
    }
}
