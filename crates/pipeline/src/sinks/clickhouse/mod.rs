//! The ClickHouse sink: reference 000's schema (`teleguard clickhouse init`), filled over HTTP with
//! RowBinary: vehicle readings in `enriched_telemetry_history`, every other profile's in
//! `telemetry_history`, anomalies in `telemetry_anomalies`.

mod row_binary;
mod schema;
mod sink;

pub use schema::{Applied, Schema};
pub use sink::{ClickHouseTarget, Http};

use super::Batching;
use serde::Deserialize;
use std::time::Duration;

/// Rows per insert unless `batch_rows` says otherwise. ClickHouse makes a part of every insert
/// and merges them in the background: a few large inserts a second cost it far less than many
/// small ones (its documentation asks for at least 1,000 rows, better 10,000-100,000).
pub const DEFAULT_BATCH_ROWS: usize = 50_000;

/// `[sinks.clickhouse]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClickHouseSink {
    /// The HTTP interface, `http://HOST:PORT` (8123 by default in ClickHouse).
    pub url: String,
    pub database: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub batch_rows: Option<usize>,
    pub batch_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    /// The Kafka brokers of `live_telemetry_stream` (reference 000's Kafka-engine table),
    /// `HOST:PORT[,HOST:PORT]`; without it `clickhouse init` creates no Kafka table.
    pub kafka_brokers: Option<String>,
    pub kafka_topic: Option<String>,
    pub kafka_group: Option<String>,
}

/// `[sinks.clickhouse]`, validated.
#[derive(Debug, Clone)]
pub struct ClickHouseSinkConfig {
    /// `http://HOST:PORT/`, without credentials.
    pub url: reqwest::Url,
    pub database: String,
    pub user: String,
    pub password: Option<String>,
    pub batching: Batching,
    pub timeout: Duration,
    pub kafka: Option<KafkaIngest>,
}

/// Reference 000's raw ingestion inside ClickHouse: a Kafka-engine table and a materialized
/// view into `live_telemetry_queue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaIngest {
    pub brokers: String,
    pub topic: String,
    pub group: String,
}

impl ClickHouseSinkConfig {
    pub fn validate(raw: RawClickHouseSink, errors: &mut Vec<String>) -> Option<ClickHouseSinkConfig> {
        let batching = super::batching("sinks.clickhouse", raw.batch_rows, DEFAULT_BATCH_ROWS, raw.batch_ms, errors);
        let url = match reqwest::Url::parse(&raw.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => url,
            Ok(_) => {
                errors.push(format!(
                    "sinks.clickhouse.url {:?}: expected ClickHouse's HTTP interface, http://HOST:PORT",
                    raw.url
                ));
                return None;
            }
            Err(e) => {
                errors.push(format!("sinks.clickhouse.url {:?}: {e} (expected http://HOST:PORT)", raw.url));
                return None;
            }
        };
        let database = raw.database.unwrap_or_else(|| "teleguard".into());
        let identifier = |name: &str| !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !identifier(&database) {
            errors.push(format!("sinks.clickhouse.database {database:?}: use letters, digits and _ only"));
        }
        let quotable = |text: &str| !text.contains('\'') && !text.contains('\\');
        let kafka = raw.kafka_brokers.map(|brokers| KafkaIngest {
            brokers,
            topic: raw.kafka_topic.unwrap_or_else(|| "vehicle_telemetry_raw".into()),
            group: raw.kafka_group.unwrap_or_else(|| "clickhouse_telemetry_consumer".into()),
        });
        if let Some(kafka) = &kafka
            && ![&kafka.brokers, &kafka.topic, &kafka.group].iter().all(|text| quotable(text))
        {
            errors.push("sinks.clickhouse.kafka_*: quotes and backslashes are not allowed".into());
        }
        Some(ClickHouseSinkConfig {
            url,
            database,
            user: raw.user.unwrap_or_else(|| "default".into()),
            password: raw.password,
            batching,
            timeout: Duration::from_millis(raw.timeout_ms.unwrap_or(30_000).max(1)),
            kafka,
        })
    }

    /// `host:port/database`, for logs.
    pub fn describe(&self) -> String {
        format!(
            "{}:{}/{}",
            self.url.host_str().unwrap_or_default(),
            self.url.port_or_known_default().unwrap_or(8123),
            self.database
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(url: &str) -> RawClickHouseSink {
        RawClickHouseSink {
            url: url.into(),
            database: None,
            user: None,
            password: None,
            batch_rows: None,
            batch_ms: None,
            timeout_ms: None,
            kafka_brokers: None,
            kafka_topic: None,
            kafka_group: None,
        }
    }

    #[test]
    fn defaults_are_reference_000s_names() {
        let mut errors = Vec::new();
        let config = ClickHouseSinkConfig::validate(
            RawClickHouseSink { kafka_brokers: Some("kafka:9092".into()), ..raw("http://127.0.0.1:8123") },
            &mut errors,
        )
        .unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(config.describe(), "127.0.0.1:8123/teleguard");
        let kafka = config.kafka.unwrap();
        assert_eq!(
            (kafka.topic.as_str(), kafka.group.as_str()),
            ("vehicle_telemetry_raw", "clickhouse_telemetry_consumer")
        );
    }

    #[test]
    fn a_url_that_is_not_http_is_refused_with_the_key() {
        for url in ["tcp://127.0.0.1:9000", "127.0.0.1:8123", "http://"] {
            let mut errors = Vec::new();
            assert!(ClickHouseSinkConfig::validate(raw(url), &mut errors).is_none(), "{url}");
            assert!(errors[0].contains("sinks.clickhouse.url"), "{errors:?}");
        }
    }
}
