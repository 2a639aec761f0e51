//! ClickHouse DDL: reference 000's raw tables, and the tables the sink fills. One SQL path for
//! every server: no `LowCardinality`, `DateTime64`, TTL or window functions, which 18.16 lacks.

use super::sink::Http;
use super::{ClickHouseSinkConfig, KafkaIngest};
use crate::sinks::TargetError;

/// What [`Schema::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// `SELECT version()`.
    pub server_version: String,
    /// The tables and views it made sure of, in order.
    pub objects: Vec<String>,
}

/// The schema of one database.
#[derive(Debug, Clone)]
pub struct Schema<'a> {
    database: &'a str,
}

impl<'a> Schema<'a> {
    pub fn new(config: &'a ClickHouseSinkConfig) -> Self {
        Schema { database: &config.database }
    }

    /// The tables the sink writes, each `(name, CREATE ... IF NOT EXISTS)`.
    pub fn sink_tables(&self) -> Vec<(String, String)> {
        let db = self.database;
        vec![
            // The embedded store these rows come from (its `store_uid`).
            (
                "teleguard_store".into(),
                format!("CREATE TABLE IF NOT EXISTS {db}.teleguard_store (uid Int64) ENGINE = TinyLog"),
            ),
            // Reference 000's history of enriched vehicle readings, with the reading id (the
            // dedupe key) and the event time to the millisecond beside its DateTime.
            (
                "enriched_telemetry_history".into(),
                format!(
                    "CREATE TABLE IF NOT EXISTS {db}.enriched_telemetry_history (
                        id UInt64, vehicle_id String, timestamp DateTime('UTC'), timestamp_ms Int64,
                        latitude Nullable(Float64), longitude Nullable(Float64), speed Nullable(Float64),
                        engine_status Nullable(String), driver_name Nullable(String), current_zone Nullable(String)
                    ) ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(timestamp)
                    ORDER BY (vehicle_id, timestamp, id)"
                ),
            ),
            // Every other profile's readings; metrics and attributes as JSON text
            // (`JSONExtractFloat(metrics, 'temperature')` on current servers,
            // `visitParamExtractFloat` on 18.16).
            (
                "telemetry_history".into(),
                format!(
                    "CREATE TABLE IF NOT EXISTS {db}.telemetry_history (
                        id UInt64, profile String, entity_id String, timestamp DateTime('UTC'), timestamp_ms Int64,
                        latitude Nullable(Float64), longitude Nullable(Float64), metrics String, attributes String,
                        driver_name Nullable(String), current_zone Nullable(String), processed_at DateTime('UTC')
                    ) ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(timestamp)
                    ORDER BY (profile, entity_id, timestamp, id)"
                ),
            ),
            // Anomalies; a closed episode is a newer version (change_seq) of the same id.
            (
                "telemetry_anomalies".into(),
                format!(
                    "CREATE TABLE IF NOT EXISTS {db}.telemetry_anomalies (
                        id String, change_seq UInt64, reading_id UInt64, profile String, entity_id String,
                        timestamp DateTime('UTC'), timestamp_ms Int64, detector String, metric Nullable(String),
                        value Nullable(Float64), anomaly_score Float64, threshold Float64, severity String,
                        reason String, features String, detected_at DateTime('UTC'),
                        episode_start_ms Nullable(Int64), episode_end_ms Nullable(Int64)
                    ) ENGINE = ReplacingMergeTree(change_seq) PARTITION BY toYYYYMM(timestamp)
                    ORDER BY (profile, entity_id, id)"
                ),
            ),
        ]
    }

    /// Reference 000's raw ingestion: `live_telemetry_queue`, and with Kafka configured the
    /// Kafka-engine table `live_telemetry_stream` and `telemetry_consumer_mv` into the queue.
    pub fn raw_tables(&self, kafka: Option<&KafkaIngest>) -> Vec<(String, String)> {
        let db = self.database;
        let columns = "vehicle_id String, timestamp DateTime, latitude Float64, longitude Float64, speed UInt8";
        let mut tables = vec![(
            "live_telemetry_queue".to_string(),
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.live_telemetry_queue ({columns})
                 ENGINE = MergeTree() PARTITION BY toYYYYMM(timestamp) ORDER BY (vehicle_id, timestamp)"
            ),
        )];
        if let Some(kafka) = kafka {
            tables.push((
                "live_telemetry_stream".into(),
                format!(
                    "CREATE TABLE IF NOT EXISTS {db}.live_telemetry_stream ({columns}) ENGINE = Kafka()
                     SETTINGS kafka_broker_list = '{}', kafka_topic_list = '{}', kafka_group_name = '{}',
                              kafka_format = 'JSONEachRow'",
                    kafka.brokers, kafka.topic, kafka.group
                ),
            ));
            tables.push((
                "telemetry_consumer_mv".into(),
                format!(
                    "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.telemetry_consumer_mv TO {db}.live_telemetry_queue AS
                     SELECT vehicle_id, timestamp, latitude, longitude, speed FROM {db}.live_telemetry_stream"
                ),
            ));
        }
        tables
    }

    /// Creates the database and `tables` where missing.
    pub async fn apply(&self, http: &Http, tables: &[(String, String)]) -> Result<Applied, TargetError> {
        let server_version = http.query("SELECT version()").await?.trim().to_string();
        http.query(&format!("CREATE DATABASE IF NOT EXISTS {}", self.database)).await?;
        let mut objects = Vec::new();
        for (name, sql) in tables {
            http.query(sql).await.map_err(|e| TargetError(format!("create {}.{name}: {e}", self.database)))?;
            objects.push(format!("{}.{name}", self.database));
        }
        Ok(Applied { server_version, objects })
    }
}
