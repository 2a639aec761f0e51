//! The PostgreSQL target: schema migrations at connect; readings by binary COPY straight into
//! `readings` (timestamps and JSONB in their binary forms), and a batch the table already holds
//! part of (written again after a crash) through a temporary table and `INSERT ... ON CONFLICT`,
//! as every anomaly batch, so a batch written twice changes nothing.

use super::PostgresSinkConfig;
use crate::sinks::error_chain;
use crate::sinks::{AnomalyRecord, ReadingRecord, Target, TargetError};
use futures_util::pin_mut;
use std::error::Error;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, NoTls};

/// The target's schema, version by version; `teleguard_schema` records the version applied.
pub const MIGRATIONS: &[&str] = &[
    // 1: reference 003's readings and anomalies, keyed by the embedded store's ids. Metrics,
    // attributes and features are JSONB objects (each profile names its own).
    r#"
    CREATE TABLE readings (
        id BIGINT PRIMARY KEY,
        profile TEXT NOT NULL,
        entity_id TEXT NOT NULL,
        "timestamp" TIMESTAMPTZ NOT NULL,
        latitude DOUBLE PRECISION,
        longitude DOUBLE PRECISION,
        metrics JSONB NOT NULL,
        attributes JSONB NOT NULL,
        driver_name TEXT,
        current_zone TEXT,
        processed_at TIMESTAMPTZ NOT NULL
    );
    CREATE INDEX readings_by_entity_time ON readings (profile, entity_id, "timestamp");
    CREATE TABLE anomalies (
        id TEXT PRIMARY KEY,
        change_seq BIGINT NOT NULL,
        reading_id BIGINT NOT NULL,
        profile TEXT NOT NULL,
        entity_id TEXT NOT NULL,
        "timestamp" TIMESTAMPTZ NOT NULL,
        detector TEXT NOT NULL,
        metric TEXT,
        value DOUBLE PRECISION,
        anomaly_score DOUBLE PRECISION NOT NULL,
        threshold DOUBLE PRECISION NOT NULL,
        severity TEXT NOT NULL,
        reason TEXT NOT NULL,
        features JSONB NOT NULL,
        detected_at TIMESTAMPTZ NOT NULL,
        episode_start TIMESTAMPTZ,
        episode_end TIMESTAMPTZ
    );
    CREATE INDEX anomalies_by_time ON anomalies (detected_at DESC);
    CREATE INDEX anomalies_by_reading ON anomalies (reading_id);
    "#,
    // 2: the embedded store these rows come from (its `store_uid`); another store's ids collide.
    "CREATE TABLE teleguard_store (uid BIGINT NOT NULL)",
];

/// Staging tables of one session; COPY fills them, the INSERT empties them.
const STAGING: &str = r#"
    CREATE TEMPORARY TABLE readings_incoming (
        id BIGINT, profile TEXT, entity_id TEXT, timestamp_ms BIGINT, latitude DOUBLE PRECISION,
        longitude DOUBLE PRECISION, metrics TEXT, attributes TEXT, driver_name TEXT, current_zone TEXT,
        processed_at_ms BIGINT
    ) ON COMMIT DELETE ROWS;
    CREATE TEMPORARY TABLE anomalies_incoming (
        change_seq BIGINT, id TEXT, reading_id BIGINT, profile TEXT, entity_id TEXT, timestamp_ms BIGINT,
        detector TEXT, metric TEXT, value DOUBLE PRECISION, anomaly_score DOUBLE PRECISION,
        threshold DOUBLE PRECISION, severity TEXT, reason TEXT, features TEXT, detected_at_ms BIGINT,
        episode_start_ms BIGINT, episode_end_ms BIGINT
    ) ON COMMIT DELETE ROWS;
"#;

const READING_TYPES: &[Type] = &[
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
];

const ANOMALY_TYPES: &[Type] = &[
    Type::INT8,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::INT8,
];

/// The columns of `readings` in [`COPY_READINGS`]' order, in their binary wire types.
const READING_COLUMN_TYPES: &[Type] = &[
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::JSONB,
    Type::JSONB,
    Type::TEXT,
    Type::TEXT,
    Type::TIMESTAMPTZ,
];

const COPY_READINGS: &str = r#"
    COPY readings (id, profile, entity_id, "timestamp", latitude, longitude, metrics, attributes, driver_name,
                   current_zone, processed_at)
    FROM STDIN (FORMAT binary)
"#;

/// The SQLSTATE of a unique violation: the batch holds rows the table has.
const UNIQUE_VIOLATION: &str = "23505";

const INSERT_READINGS: &str = r#"
    INSERT INTO readings (id, profile, entity_id, "timestamp", latitude, longitude, metrics, attributes,
                          driver_name, current_zone, processed_at)
    SELECT id, profile, entity_id, to_timestamp(timestamp_ms / 1000.0), latitude, longitude, metrics::jsonb,
           attributes::jsonb, driver_name, current_zone, to_timestamp(processed_at_ms / 1000.0)
    FROM readings_incoming
    ON CONFLICT (id) DO NOTHING
"#;

/// The newest change of each anomaly in the batch replaces an older one on the target.
const UPSERT_ANOMALIES: &str = r#"
    INSERT INTO anomalies (id, change_seq, reading_id, profile, entity_id, "timestamp", detector, metric, value,
                           anomaly_score, threshold, severity, reason, features, detected_at, episode_start,
                           episode_end)
    SELECT DISTINCT ON (id) id, change_seq, reading_id, profile, entity_id, to_timestamp(timestamp_ms / 1000.0),
           detector, metric, value, anomaly_score, threshold, severity, reason, features::jsonb,
           to_timestamp(detected_at_ms / 1000.0), to_timestamp(episode_start_ms / 1000.0),
           to_timestamp(episode_end_ms / 1000.0)
    FROM anomalies_incoming
    ORDER BY id, change_seq DESC
    ON CONFLICT (id) DO UPDATE SET
        change_seq = excluded.change_seq, value = excluded.value, anomaly_score = excluded.anomaly_score,
        severity = excluded.severity, reason = excluded.reason, features = excluded.features,
        episode_end = excluded.episode_end
    WHERE anomalies.change_seq < excluded.change_seq
"#;

/// The SQLSTATE of "database does not exist".
const UNKNOWN_DATABASE: &str = "3D000";

/// Writes to one PostgreSQL database.
pub struct PostgresTarget {
    config: PostgresSinkConfig,
    client: Option<Client>,
}

impl std::fmt::Debug for PostgresTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresTarget").field("server", &self.config.describe).finish()
    }
}

impl PostgresTarget {
    pub fn new(config: PostgresSinkConfig) -> Self {
        PostgresTarget { config, client: None }
    }

    fn error(&self, what: &str, error: tokio_postgres::Error) -> TargetError {
        TargetError(format!("postgresql {} {what}: {}", self.config.describe, error_text(&error)))
    }

    async fn open(&self, config: &tokio_postgres::Config) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = config.connect(NoTls).await?;
        let describe = self.config.describe.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("postgresql {describe}: connection closed: {e}");
            }
        });
        Ok(client)
    }

    /// Creates the configured database through the `postgres` maintenance database.
    async fn create_database(&self) -> Result<(), TargetError> {
        let name = self.config.connection.get_dbname().unwrap_or_default().to_string();
        let mut maintenance = self.config.connection.clone();
        maintenance.dbname("postgres");
        let client = self.open(&maintenance).await.map_err(|e| self.error("connect to create the database", e))?;
        let statement = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        match client.batch_execute(&statement).await {
            Ok(()) => {
                tracing::info!("postgresql {}: created database {name:?}", self.config.describe);
                Ok(())
            }
            // Another process created it meanwhile.
            Err(e) if e.code().is_some_and(|c| c.code() == "42P04") => Ok(()),
            Err(e) => Err(self.error("create database", e)),
        }
    }

    async fn migrate(&self, client: &mut Client) -> Result<(), TargetError> {
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS teleguard_schema (version INTEGER NOT NULL)")
            .await
            .map_err(|e| self.error("create teleguard_schema", e))?;
        let tx = client.transaction().await.map_err(|e| self.error("begin migration", e))?;
        // One migrating process at a time.
        tx.batch_execute("LOCK TABLE teleguard_schema IN EXCLUSIVE MODE")
            .await
            .map_err(|e| self.error("lock teleguard_schema", e))?;
        let current: i32 = tx
            .query_opt("SELECT version FROM teleguard_schema", &[])
            .await
            .map_err(|e| self.error("read the schema version", e))?
            .map_or(0, |row| row.get(0));
        let current = usize::try_from(current).unwrap_or(0);
        if current > MIGRATIONS.len() {
            return Err(TargetError(format!(
                "postgresql {} has teleguard schema version {current}, newer than this build's {}: upgrade teleguard",
                self.config.describe,
                MIGRATIONS.len()
            )));
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
            tx.batch_execute(sql).await.map_err(|e| self.error(&format!("migration {}", index + 1), e))?;
        }
        if current < MIGRATIONS.len() {
            tx.execute("DELETE FROM teleguard_schema", &[]).await.map_err(|e| self.error("record the version", e))?;
            let version = MIGRATIONS.len() as i32;
            tx.execute("INSERT INTO teleguard_schema (version) VALUES ($1)", &[&version])
                .await
                .map_err(|e| self.error("record the version", e))?;
        }
        tx.commit().await.map_err(|e| self.error("commit migrations", e))?;
        Ok(())
    }

    /// Records `store_uid` as the store this database follows, or refuses another store.
    async fn claim(&self, client: &Client, store_uid: i64) -> Result<(), TargetError> {
        let held: Option<i64> = client
            .query_opt("SELECT uid FROM teleguard_store LIMIT 1", &[])
            .await
            .map_err(|e| self.error("read teleguard_store", e))?
            .map(|row| row.get(0));
        match held {
            Some(uid) if uid == store_uid => Ok(()),
            Some(_) => Err(TargetError(format!(
                "postgresql {} holds the rows of another teleguard store (a different data folder), whose ids \
                 would collide with this one's: point sinks.postgres.url at a new database, or empty this one",
                self.config.describe
            ))),
            None => client
                .execute("INSERT INTO teleguard_store (uid) VALUES ($1)", &[&store_uid])
                .await
                .map(drop)
                .map_err(|e| self.error("record the store", e)),
        }
    }

    fn client(&mut self) -> Result<&mut Client, TargetError> {
        self.client.as_mut().ok_or_else(|| TargetError("postgresql: not connected".into()))
    }

    /// COPYs `rows` into `staging` and runs `merge` in the same transaction.
    async fn copy_and_merge<R>(
        &mut self,
        rows: &[R],
        staging: &str,
        types: &[Type],
        merge: &str,
        values: impl Fn(&R) -> Vec<&(dyn ToSql + Sync)>,
    ) -> Result<(), TargetError> {
        let describe = self.config.describe.clone();
        let fail = |what: &str, e: tokio_postgres::Error| {
            TargetError(format!("postgresql {describe} {what}: {}", error_text(&e)))
        };
        let client = self.client()?;
        let result = async {
            let tx = client.transaction().await.map_err(|e| fail("begin", e))?;
            let copy =
                tx.copy_in(&format!("COPY {staging} FROM STDIN (FORMAT binary)")).await.map_err(|e| fail("copy", e))?;
            let writer = BinaryCopyInWriter::new(copy, types);
            pin_mut!(writer);
            for row in rows {
                writer.as_mut().write(&values(row)).await.map_err(|e| fail("copy", e))?;
            }
            writer.finish().await.map_err(|e| fail("copy", e))?;
            tx.execute(merge, &[]).await.map_err(|e| fail("insert", e))?;
            tx.commit().await.map_err(|e| fail("commit", e))
        }
        .await;
        if result.is_err() {
            // A broken connection is replaced at the next connect.
            self.client = None;
        }
        result
    }
}

impl PostgresTarget {
    /// COPYs `rows` straight into `readings` in one transaction; a row the table holds already
    /// fails the whole COPY with [`CopyFailure::AlreadyHeld`] and leaves the table as it was.
    async fn copy_readings(&mut self, rows: &[ReadingRecord]) -> Result<(), CopyFailure> {
        let describe = self.config.describe.clone();
        let fail = |what: &str, e: tokio_postgres::Error| {
            if e.code().is_some_and(|c| c.code() == UNIQUE_VIOLATION) {
                return CopyFailure::AlreadyHeld;
            }
            CopyFailure::Failed(TargetError(format!("postgresql {describe} {what}: {}", error_text(&e))))
        };
        let client = self.client().map_err(CopyFailure::Failed)?;
        let result = async {
            let tx = client.transaction().await.map_err(|e| fail("begin", e))?;
            let copy = tx.copy_in(COPY_READINGS).await.map_err(|e| fail("copy readings", e))?;
            let writer = BinaryCopyInWriter::new(copy, READING_COLUMN_TYPES);
            pin_mut!(writer);
            for r in rows {
                let (timestamp, processed_at) = (EpochMs(r.timestamp_ms), EpochMs(r.processed_at_ms));
                let (metrics, attributes) = (JsonText(&r.metrics), JsonText(&r.attributes));
                let values: [&(dyn ToSql + Sync); 11] = [
                    &r.id,
                    &r.profile,
                    &r.entity_id,
                    &timestamp,
                    &r.latitude,
                    &r.longitude,
                    &metrics,
                    &attributes,
                    &r.driver_name,
                    &r.current_zone,
                    &processed_at,
                ];
                writer.as_mut().write(&values).await.map_err(|e| fail("copy readings", e))?;
            }
            writer.finish().await.map_err(|e| fail("copy readings", e))?;
            tx.commit().await.map_err(|e| fail("commit", e))
        }
        .await;
        if matches!(result, Err(CopyFailure::Failed(_))) {
            // A broken connection is replaced at the next connect.
            self.client = None;
        }
        result
    }
}

/// Why [`PostgresTarget::copy_readings`] wrote nothing.
enum CopyFailure {
    /// Some row's id is in `readings` already; the batch goes through the merge instead.
    AlreadyHeld,
    Failed(TargetError),
}

/// Milliseconds since the Unix epoch, sent as a binary `timestamptz` (microseconds since
/// 2000-01-01 UTC), so the server does no conversion.
#[derive(Debug)]
struct EpochMs(i64);

/// Microseconds from the Unix epoch to PostgreSQL's, 2000-01-01T00:00:00Z.
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

impl ToSql for EpochMs {
    fn to_sql(&self, _: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        let micros = self.0.checked_mul(1000).and_then(|us| us.checked_sub(POSTGRES_EPOCH_MICROS));
        let micros = micros.ok_or_else(|| format!("timestamp {} ms is out of PostgreSQL's range", self.0))?;
        bytes::BufMut::put_i64(out, micros);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }

    to_sql_checked!();
}

/// A JSON document the store holds as text, sent as binary `jsonb` (format version 1, then
/// the text) without parsing it here.
#[derive(Debug)]
struct JsonText<'a>(&'a str);

impl ToSql for JsonText<'_> {
    fn to_sql(&self, _: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        bytes::BufMut::put_u8(out, 1);
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }

    to_sql_checked!();
}

impl Target for PostgresTarget {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn connect(&mut self, store_uid: i64) -> Result<(), TargetError> {
        self.client = None;
        let mut client = match self.open(&self.config.connection).await {
            Ok(client) => client,
            Err(e) if e.code().is_some_and(|c| c.code() == UNKNOWN_DATABASE) => {
                self.create_database().await?;
                self.open(&self.config.connection).await.map_err(|e| self.error("connect", e))?
            }
            Err(e) => return Err(self.error("connect", e)),
        };
        self.migrate(&mut client).await?;
        self.claim(&client, store_uid).await?;
        client.batch_execute(STAGING).await.map_err(|e| self.error("create staging tables", e))?;
        self.client = Some(client);
        Ok(())
    }

    async fn write_readings(&mut self, rows: &[ReadingRecord]) -> Result<(), TargetError> {
        match self.copy_readings(rows).await {
            Err(CopyFailure::AlreadyHeld) => {}
            Err(CopyFailure::Failed(e)) => return Err(e),
            Ok(()) => return Ok(()),
        }
        tracing::debug!(
            "postgresql {}: readings {}..{} are partly there already (written before a restart); merging",
            self.config.describe,
            rows.first().map_or(0, |r| r.id),
            rows.last().map_or(0, |r| r.id)
        );
        self.copy_and_merge(rows, "readings_incoming", READING_TYPES, INSERT_READINGS, |r| {
            vec![
                &r.id,
                &r.profile,
                &r.entity_id,
                &r.timestamp_ms,
                &r.latitude,
                &r.longitude,
                &r.metrics,
                &r.attributes,
                &r.driver_name,
                &r.current_zone,
                &r.processed_at_ms,
            ]
        })
        .await
    }

    async fn write_anomalies(&mut self, rows: &[AnomalyRecord]) -> Result<(), TargetError> {
        self.copy_and_merge(rows, "anomalies_incoming", ANOMALY_TYPES, UPSERT_ANOMALIES, |a| {
            vec![
                &a.change_seq,
                &a.id,
                &a.reading_id,
                &a.profile,
                &a.entity_id,
                &a.timestamp_ms,
                &a.detector,
                &a.metric,
                &a.value,
                &a.anomaly_score,
                &a.threshold,
                &a.severity,
                &a.reason,
                &a.features,
                &a.detected_at_ms,
                &a.episode_start_ms,
                &a.episode_end_ms,
            ]
        })
        .await
    }
}

/// The server's message when there is one (the client's `db error` alone says nothing).
fn error_text(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error_chain(error),
    }
}
