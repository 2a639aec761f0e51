//! The serving role's source: the anomalies topic into this process's gold table and alerts, so
//! one API and dashboard show what a fleet of detector processes found.
//!
//! Each batch goes through the store writer's gold path (the one the detectors' own stores
//! use): an anomaly already stored changes nothing, the close of an open episode updates its
//! row, a new anomaly opens or updates its alert. Offsets are committed only after that commit,
//! so a crash repeats messages, and repeats change nothing. A message that is not an anomaly
//! becomes a dead letter (bronze, and the dead-letter topic) with the reason, and the rest goes on.

use crate::ingest::Ingest;
use crate::kafka::KafkaConfig;
use crate::kafka::wire::parse_anomaly;
use crate::sinks::kafka::{produce_all, producer, reason_headers};
use crate::sources::kafka::{Consumed, group_consumer, next_batch, wait_for_topics};
use crate::store::writer::StoreWriter;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

/// What the serving process consumes, and in which group.
#[derive(Debug, Clone)]
pub struct AnomalySourceConfig {
    pub kafka: Arc<KafkaConfig>,
    pub topic: String,
    pub group: String,
}

/// A message refused, with its reason code and the reason.
struct Refused<'a> {
    message: &'a Consumed,
    code: &'static str,
    reason: String,
}

/// Consumes until `shutdown`; returns an error that says what failed when it cannot go on
/// (the store refused a batch).
pub async fn run(
    ingest: Ingest,
    store: StoreWriter,
    source: AnomalySourceConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let kafka = &source.kafka;
    let wanted = [source.topic.as_str(), kafka.topics.dead_letters.as_str()];
    if !wait_for_topics(kafka, &wanted, &mut shutdown).await {
        return Ok(());
    }
    let consumer = group_consumer(kafka, &source.group)?;
    consumer
        .subscribe(&[source.topic.as_str()])
        .map_err(|e| format!("cannot subscribe to Kafka topic {}: {e}", source.topic))?;
    let dead_letters =
        producer(kafka).map_err(|e| format!("cannot make a Kafka producer for {}: {e}", kafka.brokers))?;
    tracing::info!("kafka: serving anomalies of {} in group {} from {}", source.topic, source.group, kafka.brokers);
    let from = format!("{} from {}", source.topic, kafka.brokers);
    let mut error_logged = false;
    while let Some(batch) = next_batch(&consumer, kafka, &mut shutdown, &from, &mut error_logged).await {
        store_batch(&ingest, &store, &source, &dead_letters, &batch).await?;
        // Everything up to these offsets is committed to the store: committing them is the
        // acknowledgement.
        let mut last_offsets: BTreeMap<i32, i64> = BTreeMap::new();
        for message in &batch {
            last_offsets.insert(message.partition, message.offset);
        }
        let mut offsets = TopicPartitionList::new();
        for (partition, last) in last_offsets {
            offsets
                .add_partition_offset(&source.topic, partition, Offset::Offset(last + 1))
                .map_err(|e| format!("kafka offset of {}/{partition}: {e}", source.topic))?;
        }
        if let Err(e) = consumer.commit(&offsets, CommitMode::Async) {
            tracing::warn!(
                "kafka: cannot commit offsets of {} ({e}); those anomalies will come again and change nothing",
                source.topic
            );
        }
    }
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!("kafka: final commit: {e}");
    }
    Ok(())
}

/// Stores a batch: its refused messages as dead letters (bronze first, then the dead-letter
/// topic), then its anomalies in one gold append, answered once committed.
async fn store_batch(
    ingest: &Ingest,
    store: &StoreWriter,
    source: &AnomalySourceConfig,
    dead_letters: &rdkafka::producer::FutureProducer,
    batch: &[Consumed],
) -> Result<(), String> {
    let kafka = &source.kafka;
    let profiles = ingest.profiles();
    let mut rows = Vec::with_capacity(batch.len());
    let mut refused = Vec::new();
    for message in batch {
        let origin = format!("{}/{}/{}", source.topic, message.partition, message.offset);
        if message.payload.len() > kafka.max_payload_bytes {
            let reason = format!(
                "payload_too_large: {} bytes at {origin}, more than kafka.max_payload_bytes {}",
                message.payload.len(),
                kafka.max_payload_bytes
            );
            refused.push(Refused { message, code: "payload_too_large", reason });
            continue;
        }
        match parse_anomaly(&message.payload, profiles) {
            Ok(consumed) => rows.push(consumed.row),
            Err(rejection) => {
                let reason = format!("not an anomaly message at {origin}: {rejection}");
                refused.push(Refused { message, code: rejection.code, reason });
            }
        }
    }
    for letter in &refused {
        ingest
            .record_rejected(
                profile_named_in(&letter.message.payload, ingest),
                "kafka",
                letter.message.payload.clone(),
                letter.code,
                &letter.reason,
            )
            .await
            .map_err(|e| format!("kafka: cannot store a dead letter of {}: {e}", source.topic))?;
    }
    if !refused.is_empty() {
        let letters = refused.iter().map(|letter| {
            let origin = format!("{}/{}/{}", source.topic, letter.message.partition, letter.message.offset);
            let headers = reason_headers(letter.code, &letter.reason, &origin);
            let key = profile_named_in(&letter.message.payload, ingest);
            (kafka.topics.dead_letters.as_str(), key, letter.message.payload.clone(), Some(headers))
        });
        produce_all(dead_letters, letters)
            .await
            .map_err(|e| format!("kafka: cannot produce dead letters to {}: {e}", kafka.topics.dead_letters))?;
    }
    if !rows.is_empty() {
        let count = rows.len();
        store
            .append_gold(rows)
            .await
            .map_err(|e| format!("kafka: cannot store {count} anomalies of {}: {e}", source.topic))?;
    }
    Ok(())
}

/// The profile a refused message names, when it is one of this process's, else `unknown`:
/// the dead letter is filed under it.
fn profile_named_in<'a>(payload: &[u8], ingest: &'a Ingest) -> &'a str {
    #[derive(serde::Deserialize)]
    struct Named<'p> {
        #[serde(borrow)]
        profile: Option<std::borrow::Cow<'p, str>>,
    }
    let named = serde_json::from_slice::<Named<'_>>(payload).ok().and_then(|n| n.profile);
    named.and_then(|name| ingest.profiles().by_name(&name)).map_or("unknown", |profile| &profile.name)
}
