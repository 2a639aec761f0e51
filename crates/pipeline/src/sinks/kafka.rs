//! The Kafka target: follows the store into topics, readings to their profile's topic and
//! anomalies to the anomalies topic, keyed by entity id, each batch confirmed by the brokers
//! (acks=all) before the sink's cursor moves. A batch produced again after a crash repeats
//! messages whose ids (reading id, stable anomaly id) let a consumer drop the copies.
//! In a process with edge sources (the gateway) it also follows the rejected bronze rows and
//! produces them to the dead-letter topic with the headers the Kafka source gives its own.

use crate::kafka::{KafkaConfig, ensure_topics, producer_config, wire};
use crate::sinks::{AnomalyRecord, DeadLetterRecord, ReadingRecord, Target, TargetError};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use teleguard_core::profile::ProfileRegistry;

/// Where the sink puts what it follows.
#[derive(Debug, Clone)]
pub struct KafkaOutputs {
    /// profile → (topic, whether the readings carry their enrichment).
    pub readings: BTreeMap<String, (String, bool)>,
    pub anomalies: Option<String>,
    /// Rejects of this process's edge sources (HTTP, MQTT, the simulator) go here.
    pub dead_letters: Option<String>,
}

pub struct KafkaTarget {
    config: Arc<KafkaConfig>,
    outputs: KafkaOutputs,
    profiles: Arc<ProfileRegistry>,
    producer: Option<FutureProducer>,
}

impl KafkaTarget {
    pub fn new(config: Arc<KafkaConfig>, outputs: KafkaOutputs, profiles: Arc<ProfileRegistry>) -> Self {
        KafkaTarget { config, outputs, profiles, producer: None }
    }

    pub fn describe(&self) -> String {
        format!("{} topics {}", self.config.brokers, self.topics().join(", "))
    }

    /// Every topic the sink writes, once each.
    fn topics(&self) -> Vec<&str> {
        let mut topics: Vec<&str> = self.outputs.readings.values().map(|(t, _)| t.as_str()).collect();
        topics.extend(self.outputs.anomalies.as_deref());
        topics.extend(self.outputs.dead_letters.as_deref());
        topics.sort_unstable();
        topics.dedup();
        topics
    }

    fn producer(&self) -> Result<&FutureProducer, TargetError> {
        self.producer.as_ref().ok_or_else(|| TargetError("kafka: not connected".into()))
    }
}

/// A producer that waits for every in-sync replica, and keeps the order of each key's messages
/// across retries.
pub fn producer(config: &KafkaConfig) -> Result<FutureProducer, KafkaError> {
    let mut client = producer_config(config);
    for (key, default) in [("linger.ms", "5"), ("message.timeout.ms", "30000")] {
        if !config.producer.iter().chain(&config.client).any(|(k, _)| k == key) {
            client.set(key, default);
        }
    }
    client.set("acks", "all").create()
}

/// Sends `(topic, key, payload, headers)` messages and waits until the brokers have every one.
pub async fn produce_all<'a>(
    producer: &FutureProducer,
    messages: impl Iterator<Item = (&'a str, &'a str, Vec<u8>, Option<OwnedHeaders>)>,
) -> Result<(), KafkaError> {
    let mut pending: Vec<DeliveryFuture> = Vec::new();
    for (topic, key, payload, headers) in messages {
        loop {
            let mut record = FutureRecord::to(topic).key(key).payload(&payload);
            if let Some(headers) = &headers {
                record = record.headers(headers.clone());
            }
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                // librdkafka's queue is full: wait for what is in it, then send again.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    wait_all(&mut pending).await?;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
    wait_all(&mut pending).await
}

async fn wait_all(pending: &mut Vec<DeliveryFuture>) -> Result<(), KafkaError> {
    for delivery in pending.drain(..) {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(e),
            Err(_) => return Err(KafkaError::Canceled),
        }
    }
    Ok(())
}

/// Dead letters the Kafka source produced itself, before committing their offsets, and
/// redeliveries (`duplicate`), which are not faults of the data: the sink skips both.
fn forwarded_by_the_sink(letter: &DeadLetterRecord) -> bool {
    letter.source != "kafka" && letter.reason_code != "duplicate"
}

/// Where a dead letter of the store came from, for the `origin` header: its source and bronze
/// id (`http/bronze/17`), as the Kafka source names topic, partition and offset.
pub fn bronze_origin(letter: &DeadLetterRecord) -> String {
    format!("{}/bronze/{}", letter.source, letter.id)
}

/// A header naming why a message was refused, for dead letters.
pub fn reason_headers(code: &str, error: &str, origin: &str) -> OwnedHeaders {
    OwnedHeaders::new()
        .insert(Header { key: "reason_code", value: Some(code) })
        .insert(Header { key: "error", value: Some(error) })
        .insert(Header { key: "origin", value: Some(origin) })
}

impl Target for KafkaTarget {
    fn name(&self) -> &'static str {
        "kafka"
    }

    /// A role's topic output is the pipeline's next stage, not a copy beside it.
    fn yields_cpu_to_ingest(&self) -> bool {
        false
    }

    async fn connect(&mut self, _store_uid: i64) -> Result<(), TargetError> {
        ensure_topics(&self.config, &self.topics()).await.map_err(TargetError)?;
        let producer = producer(&self.config)
            .map_err(|e| TargetError(format!("kafka {}: cannot make a producer: {e}", self.config.brokers)))?;
        self.producer = Some(producer);
        Ok(())
    }

    async fn write_readings(&mut self, rows: &[ReadingRecord]) -> Result<(), TargetError> {
        if self.outputs.readings.is_empty() {
            return Ok(());
        }
        let producer = self.producer()?;
        let messages = rows.iter().filter_map(|row| {
            let (topic, enriched) = self.outputs.readings.get(&row.profile)?;
            let profile = self.profiles.by_name(&row.profile)?;
            Some((topic.as_str(), row.entity_id.as_str(), wire::reading_payload(profile, row, *enriched), None))
        });
        produce_all(producer, messages)
            .await
            .map_err(|e| TargetError(format!("kafka {}: producing readings: {e}", self.config.brokers)))
    }

    async fn write_anomalies(&mut self, rows: &[AnomalyRecord]) -> Result<(), TargetError> {
        let Some(topic) = &self.outputs.anomalies else { return Ok(()) };
        let producer = self.producer()?;
        let messages =
            rows.iter().map(|row| (topic.as_str(), row.entity_id.as_str(), wire::anomaly_payload(row), None));
        produce_all(producer, messages)
            .await
            .map_err(|e| TargetError(format!("kafka {}: producing anomalies to {topic}: {e}", self.config.brokers)))
    }

    fn follows_dead_letters(&self) -> bool {
        self.outputs.dead_letters.is_some()
    }

    async fn write_dead_letters(&mut self, rows: &[DeadLetterRecord]) -> Result<(), TargetError> {
        let Some(topic) = &self.outputs.dead_letters else { return Ok(()) };
        let producer = self.producer()?;
        let messages = rows.iter().filter(|row| forwarded_by_the_sink(row)).map(|row| {
            let headers = reason_headers(&row.reason_code, &row.reason, &bronze_origin(row));
            (topic.as_str(), row.profile.as_str(), row.payload.clone(), Some(headers))
        });
        produce_all(producer, messages)
            .await
            .map_err(|e| TargetError(format!("kafka {}: producing dead letters to {topic}: {e}", self.config.brokers)))
    }
}
