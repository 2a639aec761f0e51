//! `[kafka]` as written and validated: the brokers, the librdkafka client settings, the topics
//! of the reference designs per profile, and how topics are created.

use crate::sinks::Batching;
use serde::Deserialize;
use std::collections::BTreeMap;
use teleguard_core::profile::ProfileRegistry;

/// The topics a profile's readings travel on, by default: the reference designs' names where
/// one names it (000 vehicles, 001 drones, 003 environment sensors).
pub const DEFAULT_RAW_TOPICS: [(&str, &str); 5] = [
    ("vehicle", "vehicle_telemetry_raw"),
    ("drone", "telemetry-validated"),
    ("environment", "iot-data-stream"),
    ("aircraft", "aircraft-telemetry"),
    ("vibration", "vibration-telemetry"),
];
/// Enriched readings: reference 000's topic for vehicles.
pub const DEFAULT_ENRICHED_TOPICS: [(&str, &str); 1] = [("vehicle", "vehicle_events_enriched")];
pub const DEFAULT_ANOMALIES_TOPIC: &str = "telemetry-anomalies";
pub const DEFAULT_DEAD_LETTER_TOPIC: &str = "telemetry-dead-letters";

/// `[kafka]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafka {
    /// Bootstrap brokers, `HOST:PORT[,HOST:PORT...]`.
    pub brokers: String,
    /// Consumer groups are named `PREFIX-ROLE` (default `teleguard`).
    pub group_prefix: Option<String>,
    /// Partitions of the topics teleguard creates (default 6).
    pub partitions: Option<i32>,
    pub replication_factor: Option<i32>,
    /// Create missing topics at start (default true).
    pub create_topics: Option<bool>,
    /// Messages per partition re-read to rebuild detector state when a partition is taken
    /// over (default 10,000; 0 never rebuilds).
    pub rebuild_messages: Option<i64>,
    /// Messages a consumer submits together, at most (default 5,000).
    pub consume_batch: Option<usize>,
    /// A consumed message larger than this is a `payload_too_large` dead letter (default 1 MiB).
    pub max_payload_bytes: Option<usize>,
    pub batch_rows: Option<usize>,
    pub batch_ms: Option<u64>,
    /// Any librdkafka client property, e.g. `"security.protocol" = "ssl"`,
    /// `"ssl.ca.location"`, `"sasl.mechanism"`, `"sasl.username"`.
    #[serde(default)]
    pub client: BTreeMap<String, String>,
    /// librdkafka properties of consumers only (e.g. `"fetch.wait.max.ms"`).
    #[serde(default)]
    pub consumer: BTreeMap<String, String>,
    /// librdkafka properties of producers only (e.g. `"compression.type"`, `"linger.ms"`).
    #[serde(default)]
    pub producer: BTreeMap<String, String>,
    #[serde(default)]
    pub topics: RawTopics,
}

/// `[kafka.topics]` as written; each map is profile → topic and replaces the default map.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTopics {
    pub raw: Option<BTreeMap<String, String>>,
    pub enriched: Option<BTreeMap<String, String>>,
    pub anomalies: Option<String>,
    pub dead_letters: Option<String>,
}

/// The topics, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Validated readings as the device sent them, per profile.
    pub raw: BTreeMap<String, String>,
    /// Enriched readings (the device's fields plus `driver_name`, `current_zone`), per profile.
    pub enriched: BTreeMap<String, String>,
    pub anomalies: String,
    pub dead_letters: String,
}

impl Topics {
    /// Where a consumer that detects (or writes history) reads `profile`: its enriched topic
    /// when it has one, else its raw one.
    pub fn analysed_input(&self, profile: &str) -> Option<&String> {
        self.enriched.get(profile).or_else(|| self.raw.get(profile))
    }
}

/// `[kafka]`, validated.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: String,
    pub group_prefix: String,
    pub partitions: i32,
    pub replication_factor: i32,
    pub create_topics: bool,
    pub rebuild_messages: i64,
    pub consume_batch: usize,
    pub max_payload_bytes: usize,
    pub batching: Batching,
    pub client: Vec<(String, String)>,
    pub consumer: Vec<(String, String)>,
    pub producer: Vec<(String, String)>,
    pub topics: Topics,
}

impl KafkaConfig {
    pub fn validate(
        raw: RawKafka,
        profiles: Option<&ProfileRegistry>,
        errors: &mut Vec<String>,
    ) -> Option<KafkaConfig> {
        let before = errors.len();
        if raw.brokers.trim().is_empty() || raw.brokers.contains("://") {
            errors.push(format!(
                "kafka.brokers {:?}: expected HOST:PORT[,HOST:PORT...] (no scheme), e.g. \"127.0.0.1:9092\"",
                raw.brokers
            ));
        }
        let partitions = raw.partitions.unwrap_or(6);
        if partitions < 1 {
            errors.push(format!("kafka.partitions {partitions}: must be at least 1"));
        }
        let replication_factor = raw.replication_factor.unwrap_or(1);
        if replication_factor < 1 {
            errors.push(format!("kafka.replication_factor {replication_factor}: must be at least 1"));
        }
        let rebuild_messages = raw.rebuild_messages.unwrap_or(10_000);
        if rebuild_messages < 0 {
            errors.push(format!("kafka.rebuild_messages {rebuild_messages}: must be 0 or more"));
        }
        let consume_batch = raw.consume_batch.unwrap_or(5000);
        if consume_batch == 0 {
            errors.push("kafka.consume_batch must be at least 1".into());
        }
        for (section, map) in [("client", &raw.client), ("consumer", &raw.consumer), ("producer", &raw.producer)] {
            for key in map.keys().filter(|key| OWN_CLIENT_KEYS.contains(&key.as_str())) {
                errors.push(format!(
                    "kafka.{section}.\"{key}\": teleguard sets this itself (it decides when offsets are committed and what is acknowledged)"
                ));
            }
        }
        let map = |written: Option<BTreeMap<String, String>>, default: &[(&str, &str)]| {
            written.unwrap_or_else(|| default.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect())
        };
        let topics = Topics {
            raw: map(raw.topics.raw, &DEFAULT_RAW_TOPICS),
            enriched: map(raw.topics.enriched, &DEFAULT_ENRICHED_TOPICS),
            anomalies: raw.topics.anomalies.unwrap_or_else(|| DEFAULT_ANOMALIES_TOPIC.into()),
            dead_letters: raw.topics.dead_letters.unwrap_or_else(|| DEFAULT_DEAD_LETTER_TOPIC.into()),
        };
        let names =
            topics.raw.values().chain(topics.enriched.values()).chain([&topics.anomalies, &topics.dead_letters]);
        for name in names {
            if !valid_topic_name(name) {
                errors.push(format!("kafka topic {name:?}: a topic name is 1-249 letters, digits, '.', '_' or '-'"));
            }
        }
        if let Some(profiles) = profiles {
            for (section, map) in [("raw", &topics.raw), ("enriched", &topics.enriched)] {
                for profile in map.keys() {
                    if profiles.by_name(profile).is_none() {
                        errors.push(format!(
                            "kafka.topics.{section}: unknown profile {profile:?}; known profiles: {}",
                            profiles.names().join(", ")
                        ));
                    }
                }
            }
        }
        let batching =
            crate::sinks::batching("kafka", raw.batch_rows, crate::sinks::DEFAULT_BATCH_ROWS, raw.batch_ms, errors);
        (errors.len() == before).then(|| KafkaConfig {
            brokers: raw.brokers,
            group_prefix: raw.group_prefix.unwrap_or_else(|| "teleguard".into()),
            partitions,
            replication_factor,
            create_topics: raw.create_topics.unwrap_or(true),
            rebuild_messages,
            consume_batch,
            max_payload_bytes: raw.max_payload_bytes.unwrap_or(1 << 20).max(1),
            batching,
            client: raw.client.into_iter().collect(),
            consumer: raw.consumer.into_iter().collect(),
            producer: raw.producer.into_iter().collect(),
            topics,
        })
    }
}

/// Client properties teleguard decides: delivery and commit semantics.
const OWN_CLIENT_KEYS: [&str; 5] =
    ["enable.auto.commit", "enable.auto.offset.store", "acks", "group.id", "bootstrap.servers"];

/// Kafka's rule for topic names.
pub fn valid_topic_name(name: &str) -> bool {
    (1..=249).contains(&name.len())
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(brokers: &str) -> RawKafka {
        RawKafka { brokers: brokers.into(), ..RawKafka::default() }
    }

    #[test]
    fn defaults_are_the_reference_topics() {
        let profiles = ProfileRegistry::with_builtins(BTreeMap::new()).unwrap();
        let config = KafkaConfig::validate(raw("127.0.0.1:9092"), Some(&profiles), &mut Vec::new()).unwrap();
        assert_eq!(config.topics.raw["vehicle"], "vehicle_telemetry_raw");
        assert_eq!(config.topics.analysed_input("vehicle").unwrap(), "vehicle_events_enriched");
        assert_eq!(config.topics.analysed_input("drone").unwrap(), "telemetry-validated");
        assert_eq!(config.topics.analysed_input("environment").unwrap(), "iot-data-stream");
        assert_eq!(config.partitions, 6);
    }

    #[test]
    fn bad_values_are_all_named() {
        let mut written = raw("kafka://x:1");
        written.partitions = Some(0);
        written.client.insert("enable.auto.commit".into(), "true".into());
        written.topics.raw = Some([("boat".to_string(), "bad topic".to_string())].into());
        let mut errors = Vec::new();
        assert!(
            KafkaConfig::validate(
                written,
                Some(&ProfileRegistry::with_builtins(BTreeMap::new()).unwrap()),
                &mut errors
            )
            .is_none()
        );
        let text = errors.join("\n");
        for expected in ["kafka.brokers", "kafka.partitions", "enable.auto.commit", "\"bad topic\"", "\"boat\""] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
    }
}
