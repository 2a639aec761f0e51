//! The embedded store: SQLite in WAL mode behind one narrow interface.
//!
//! Bronze keeps every message as received with its verdict, silver the validated and enriched
//! readings, gold (`telemetry_anomalies`) the anomalies. One writer thread owns the write
//! connection and commits batched transactions ([`writer`]); API reads use their own
//! connection ([`query`]). [`retention`] trims old rows per layer in small steps.

pub mod alert_events;
pub mod checkpoint;
pub mod gold;
pub mod quarantine;
pub mod query;
pub mod retention;
pub mod schema;
pub mod watermark;
pub mod writer;

pub use query::Reader;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use teleguard_core::enrich::Driver;
use teleguard_core::model::Anomaly;

/// The bundled reference data, loaded into the store on first start.
pub const BUNDLED_DRIVERS: &str = include_str!("../../../../data/drivers.json");
pub const BUNDLED_GEOFENCES: &str = teleguard_core::geo::BUNDLED_GEOFENCES;

/// The database file inside the data folder.
pub const DATABASE_FILE: &str = "teleguard.db";

/// A fault of the store itself (disk, database), never of the data.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data folder {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot open store {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("store schema: {0}")]
    Schema(String),
    #[error("store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("reference data: {0}")]
    Reference(String),
    #[error("cannot start the store's {name} thread: {source}")]
    Thread { name: &'static str, source: std::io::Error },
    #[error("the store writer has stopped")]
    WriterStopped,
}

/// How hard commits push to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Survives a killed process (WAL, synchronous=NORMAL); the default.
    #[default]
    Normal,
    /// Also survives power loss: fsync at every commit (synchronous=FULL).
    Full,
}

impl Durability {
    /// The `synchronous` pragma that gives this durability in WAL mode.
    fn synchronous(self) -> &'static str {
        match self {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        }
    }
}

/// Messages as received, with their verdict.
#[derive(Debug, Clone)]
pub struct BronzeRow {
    pub received_at_ms: i64,
    pub source: &'static str,
    pub profile: Arc<str>,
    pub content: BronzeContent,
}

#[derive(Debug, Clone)]
pub enum BronzeContent {
    /// The valid messages of one submission, in order, as one JSON array (see
    /// [`accepted_payload`]); their readings get consecutive ids.
    Accepted { messages: usize, payload: Vec<u8> },
    /// One rejected message: its reason code ([`teleguard_core::validate::Rejection::code`]),
    /// why, as received, the quarantined message it is a replay of (if it is one), and the
    /// anomaly its rejection raises (a spoofed identity), written in the same transaction
    /// with the dead letter's id as its reading id.
    Rejected {
        code: &'static str,
        reason: String,
        payload: Vec<u8>,
        replay_of: Option<i64>,
        finding: Option<Box<GoldRow>>,
    },
}

impl BronzeRow {
    /// How many ids the row takes: one per accepted message, one for a rejected message.
    pub fn ids(&self) -> i64 {
        match &self.content {
            BronzeContent::Accepted { messages, .. } => *messages as i64,
            BronzeContent::Rejected { .. } => 1,
        }
    }
}

/// The bronze payload of accepted messages: a JSON array of them as received.
pub fn accepted_payload<'a>(messages: impl Iterator<Item = &'a [u8]> + Clone) -> Vec<u8> {
    let mut payload = Vec::with_capacity(messages.clone().map(|m| m.len() + 1).sum::<usize>() + 2);
    payload.push(b'[');
    for (index, message) in messages.enumerate() {
        if index > 0 {
            payload.push(b',');
        }
        payload.extend_from_slice(message);
    }
    payload.push(b']');
    payload
}

/// What makes two deliveries the same message: the reading's event time and a stable hash of
/// its profile, entity, event time and payload bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageKey {
    pub event_time_ms: i64,
    pub hash: i64,
}

impl MessageKey {
    pub fn of(profile: &str, entity: &str, event_time_ms: i64, payload: &[u8]) -> MessageKey {
        let hash = teleguard_core::model::stable_hash(&[
            profile.as_bytes(),
            entity.as_bytes(),
            &event_time_ms.to_le_bytes(),
            payload,
        ]);
        MessageKey { event_time_ms, hash: hash as i64 }
    }
}

/// A submission from a source that may deliver a message twice: each valid message is stored
/// as a reading only if no message with the same [`MessageKey`] is stored already; otherwise
/// it is recorded in bronze as a duplicate.
#[derive(Debug, Clone)]
pub struct OnceSubmission {
    pub received_at_ms: i64,
    pub source: &'static str,
    pub profile: Arc<str>,
    /// The valid messages in order, with their keys and the quarantined message each is a
    /// replay of, if it is one.
    pub accepted: Vec<(Vec<u8>, MessageKey, Option<i64>)>,
    /// Rejected messages, each with its reason.
    pub rejected: Vec<BronzeRow>,
}

/// What became of a [`OnceSubmission`] once committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnceOutcome {
    /// The id of the first new reading; new readings are numbered from it in order.
    pub first_id: i64,
    /// Per accepted message: `Some(reading id)` of the stored message it duplicates.
    pub duplicate_of: Vec<Option<i64>>,
    /// How many bronze ids the submission took.
    pub ids: i64,
}

/// The bronze reason of a duplicate delivery.
pub fn duplicate_reason(original_reading: i64) -> String {
    format!("duplicate: same entity, event time and payload as reading {original_reading}, which is stored already")
}

/// One validated, enriched reading; `id` is the bronze id of its message.
#[derive(Debug, Clone)]
pub struct SilverRow {
    pub id: i64,
    pub profile: Arc<str>,
    pub entity: Arc<str>,
    pub timestamp_ms: i64,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    /// JSON object of metric name to value.
    pub metrics: String,
    /// JSON object of attribute name to value.
    pub attributes: String,
    pub driver_name: Option<Arc<str>>,
    pub current_zone: Option<Arc<str>>,
    pub processed_at_ms: i64,
    /// Detectors that flagged this reading.
    pub anomalies: Vec<String>,
    /// When the source received the message, for the end-to-end latency metric.
    pub received: Instant,
}

/// One anomaly with the reading it is about.
#[derive(Debug, Clone)]
pub struct GoldRow {
    pub reading_id: i64,
    pub profile: Arc<str>,
    pub entity: Arc<str>,
    pub timestamp_ms: i64,
    pub anomaly: Anomaly,
    /// The anomaly's features as a JSON object (made by the worker, not the writer).
    pub features_json: String,
    pub detected_at_ms: i64,
}

impl GoldRow {
    pub fn new(
        reading_id: i64,
        profile: Arc<str>,
        entity: Arc<str>,
        timestamp_ms: i64,
        anomaly: Anomaly,
        detected_at_ms: i64,
    ) -> Self {
        let features_json = features_json(&anomaly.features);
        GoldRow { reading_id, profile, entity, timestamp_ms, anomaly, features_json, detected_at_ms }
    }
}

/// The features of an anomaly as a JSON object in their order; a value that is not finite
/// is `null`, as serde_json writes it.
fn features_json(features: &[(Arc<str>, f64)]) -> String {
    let mut json = Vec::with_capacity(16 + 32 * features.len());
    json.push(b'{');
    for (index, (name, value)) in features.iter().enumerate() {
        if index > 0 {
            json.push(b',');
        }
        serde_json::to_writer(&mut json, &**name).expect("a string serialises into memory");
        json.push(b':');
        match value.is_finite() {
            true => json.extend_from_slice(ryu::Buffer::new().format_finite(*value).as_bytes()),
            false => json.extend_from_slice(b"null"),
        }
    }
    json.push(b'}');
    String::from_utf8(json).expect("serde_json and ryu write UTF-8")
}

/// Reference data as the store holds it.
#[derive(Debug, Clone)]
pub struct ReferenceData {
    pub drivers: Vec<Driver>,
    /// A GeoJSON FeatureCollection.
    pub geofences: String,
}

/// Opens (creating if needed) the database in `data_dir` and brings its schema up to date.
pub fn open(data_dir: &Path, durability: Durability) -> Result<Connection, StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::CreateDir { path: data_dir.into(), source })?;
    let path = data_dir.join(DATABASE_FILE);
    let mut connection = Connection::open(&path).map_err(|source| StoreError::Open { path: path.clone(), source })?;
    // Larger pages make appends cheaper; this takes effect only when the file is created.
    connection.pragma_update(None, "page_size", 16384)?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "cache_size", -65536)?;
    connection.pragma_update(None, "synchronous", durability.synchronous())?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    schema::migrate(&mut connection).map_err(StoreError::Schema)?;
    Ok(connection)
}

/// The background checkpoint thread for the store in `data_dir` (see [`checkpoint`]).
pub fn start_checkpointer(data_dir: &Path, durability: Durability) -> Result<checkpoint::Checkpointer, StoreError> {
    let path = data_dir.join(DATABASE_FILE);
    let connection = checkpoint::open_connection(&path, durability.synchronous())
        .map_err(|source| StoreError::Open { path: path.clone(), source })?;
    checkpoint::Checkpointer::spawn(connection).map_err(|source| StoreError::Thread { name: "checkpoint", source })
}

/// A read-only connection for queries, alongside the writer.
pub fn open_reader(data_dir: &Path) -> Result<Connection, StoreError> {
    let path = data_dir.join(DATABASE_FILE);
    let connection =
        Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(|source| StoreError::Open { path, source })?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(connection)
}

/// Loads `drivers` and `geofences` from the given files into empty tables (the `setup_data`
/// step of reference 000), then returns what the tables hold.
pub fn load_reference_data(
    connection: &mut Connection,
    drivers_json: &str,
    geofences_geojson: &str,
) -> Result<ReferenceData, StoreError> {
    let now = teleguard_core::time::now_millis();
    let tx = connection.transaction()?;
    let loaded: Option<i64> =
        tx.query_row("SELECT loaded_at_ms FROM reference_files WHERE name = 'drivers'", [], |r| r.get(0)).optional()?;
    if loaded.is_none() {
        let drivers =
            teleguard_core::enrich::parse_drivers(drivers_json).map_err(|e| StoreError::Reference(e.to_string()))?;
        for d in &drivers {
            let details = serde_json::to_string(&d.extra).unwrap_or_default();
            tx.execute(
                "INSERT OR REPLACE INTO drivers (driver_id, name, vehicle_id, details) VALUES (?1, ?2, ?3, ?4)",
                params![d.driver_id, d.name, d.vehicle_id, details],
            )?;
        }
        tx.execute(
            "INSERT INTO reference_files (name, content, loaded_at_ms) VALUES ('drivers', ?1, ?2)",
            params![drivers_json, now],
        )?;
    }
    let loaded: Option<i64> = tx
        .query_row("SELECT loaded_at_ms FROM reference_files WHERE name = 'geofences'", [], |r| r.get(0))
        .optional()?;
    if loaded.is_none() {
        let collection: serde_json::Value =
            serde_json::from_str(geofences_geojson).map_err(|e| StoreError::Reference(format!("geofences: {e}")))?;
        // Validate the whole file before storing any of it.
        let index = teleguard_core::geo::GeofenceIndex::from_geojson(geofences_geojson)
            .map_err(|e| StoreError::Reference(e.to_string()))?;
        let features = collection["features"].as_array().cloned().unwrap_or_default();
        for (zone, feature) in index.zones().iter().zip(features) {
            tx.execute(
                "INSERT OR REPLACE INTO geofences (zone_id, name, kind, geometry) VALUES (?1, ?2, ?3, ?4)",
                params![zone.zone_id, &*zone.name, zone.kind, feature["geometry"].to_string()],
            )?;
        }
        tx.execute(
            "INSERT INTO reference_files (name, content, loaded_at_ms) VALUES ('geofences', ?1, ?2)",
            params![geofences_geojson, now],
        )?;
    }
    tx.commit()?;
    read_reference_data(connection)
}

fn read_reference_data(connection: &Connection) -> Result<ReferenceData, StoreError> {
    let mut statement =
        connection.prepare("SELECT driver_id, name, vehicle_id, details FROM drivers ORDER BY driver_id")?;
    let drivers = statement
        .query_map([], |row| {
            let details: String = row.get(3)?;
            Ok(Driver {
                driver_id: row.get(0)?,
                name: row.get(1)?,
                vehicle_id: row.get(2)?,
                extra: serde_json::from_str(&details).unwrap_or_default(),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut statement = connection.prepare("SELECT zone_id, name, kind, geometry FROM geofences ORDER BY rowid")?;
    let features = statement
        .query_map([], |row| {
            let geometry: String = row.get(3)?;
            Ok(serde_json::json!({
                "type": "Feature",
                "properties": {"zone_id": row.get::<_, String>(0)?, "name": row.get::<_, String>(1)?, "kind": row.get::<_, String>(2)?},
                "geometry": serde_json::from_str::<serde_json::Value>(&geometry).unwrap_or(serde_json::Value::Null),
            }))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let geofences = serde_json::json!({"type": "FeatureCollection", "features": features}).to_string();
    Ok(ReferenceData { drivers, geofences })
}

/// The next bronze id to hand out: past every id of the last row, whose accepted messages
/// take `messages` ids (its readings' ids). `MAX(id) + 1` handed the ids of that row's later
/// readings out again after a restart, and their silver rows were then ignored as present.
pub fn next_bronze_id(connection: &Connection) -> Result<i64, StoreError> {
    let next = connection
        .query_row("SELECT id + messages FROM bronze ORDER BY id DESC LIMIT 1", [], |r| r.get(0))
        .optional()?;
    Ok(next.unwrap_or(1))
}

/// The checkpoint below which every valid bronze message is known to have its silver row.
pub fn processed_through(connection: &Connection) -> Result<i64, StoreError> {
    Ok(connection
        .query_row("SELECT value FROM meta WHERE key = 'processed_through'", [], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// An accepted message whose reading never reached silver (the process stopped first).
#[derive(Debug, Clone)]
pub struct Unprocessed {
    pub id: i64,
    pub profile: String,
    pub payload: Vec<u8>,
}

/// Accepted messages after the checkpoint that have no silver row, in arrival order.
pub fn unprocessed_bronze(connection: &Connection) -> Result<Vec<Unprocessed>, StoreError> {
    let after = processed_through(connection)?;
    let mut statement = connection.prepare(
        "SELECT b.id, b.profile, b.messages, b.payload FROM bronze b
         WHERE b.id + b.messages - 1 > ?1 AND b.verdict = 'valid'
           AND (SELECT COUNT(*) FROM silver s WHERE s.id >= b.id AND s.id < b.id + b.messages) < b.messages
         ORDER BY b.id",
    )?;
    let mut rows = statement.query([after])?;
    let mut unprocessed = Vec::new();
    while let Some(row) = rows.next()? {
        let (first_id, profile, payload): (i64, String, Vec<u8>) = (row.get(0)?, row.get(1)?, row.get(3)?);
        let messages: Vec<&serde_json::value::RawValue> = serde_json::from_slice(&payload)
            .map_err(|e| StoreError::Schema(format!("bronze row {first_id} is not a JSON array: {e}")))?;
        let mut present = connection.prepare_cached("SELECT 1 FROM silver WHERE id = ?1")?;
        for (offset, message) in messages.iter().enumerate() {
            let id = first_id + offset as i64;
            if !present.exists([id])? {
                unprocessed.push(Unprocessed {
                    id,
                    profile: profile.clone(),
                    payload: message.get().as_bytes().to_vec(),
                });
            }
        }
    }
    Ok(unprocessed)
}

/// Every stored isolation-forest model: (scope label, model JSON).
pub fn stored_models(connection: &Connection) -> Result<Vec<(String, String)>, StoreError> {
    let mut statement = connection.prepare("SELECT scope, model FROM models ORDER BY scope")?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_bronze_id_after_a_restart_skips_every_reading_id_of_the_last_accepted_row() {
        let folder = tempfile::tempdir().unwrap();
        let connection = open(folder.path(), Durability::Normal).unwrap();
        assert_eq!(next_bronze_id(&connection).unwrap(), 1);
        let insert = "INSERT INTO bronze (id, received_at_ms, source, profile, verdict, reason, messages, payload)
                      VALUES (?1, 0, 'mqtt', 'drone', ?2, NULL, ?3, x'5b5d')";
        connection.execute(insert, params![1, "rejected", 1]).unwrap();
        // Three readings, ids 2, 3 and 4: the next id is 5, not 3.
        connection.execute(insert, params![2, "valid", 3]).unwrap();
        assert_eq!(next_bronze_id(&connection).unwrap(), 5);
    }

    #[test]
    fn features_json_agrees_with_serde_json() {
        let features: Vec<(Arc<str>, f64)> = vec![
            ("z".into(), -3.25),
            ("mean \"odd\" name".into(), 1e-7),
            ("gap".into(), f64::NAN),
            ("big".into(), 1e300),
        ];
        let ours: serde_json::Value = serde_json::from_str(&features_json(&features)).expect("valid JSON");
        let theirs: serde_json::Map<String, serde_json::Value> =
            features.iter().map(|(name, value)| (name.to_string(), serde_json::json!(value))).collect();
        assert_eq!(ours, serde_json::Value::Object(theirs));
        assert_eq!(features_json(&[]), "{}");
    }
}
