//! The Kafka source: a consumer group member that submits what it consumes and commits each
//! partition's offset only after the messages before it are committed to bronze. Rejected
//! messages also go to the dead-letter topic, with their reason code in a header, before the
//! offset moves.
//!
//! # State on takeover
//! Detector state lives per entity in the process that owns the entity's partition. When a
//! partition arrives that this process has not been following up to the next offset (at start,
//! or taken over from a process that left the group), the messages before it (at most
//! `kafka.rebuild_messages`, and none this process already saw) are re-read with a separate,
//! group-less consumer and fed to the detectors as a warm-up (state only: nothing stored,
//! nothing judged) before the first new message is submitted. So a teleport that spans the
//! handover is found by the new owner, and the new owner does not take a departure for a spike.

use crate::ingest::{Admission, Delivery, Ingest};
use crate::kafka::{KafkaConfig, consumer_config, ensure_topics};
use crate::metrics::Metrics;
use crate::sinks::kafka::{produce_all, producer, reason_headers};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a batch waits for more messages once it has one.
const BATCH_LINGER: Duration = Duration::from_millis(5);
/// How often the start waits for brokers that do not answer.
const START_RETRY: Duration = Duration::from_secs(2);
/// How long a state rebuild reads a partition at most.
const REBUILD_DEADLINE: Duration = Duration::from_secs(60);

/// A Kafka source of one process: its group, its topics and what they carry.
#[derive(Debug, Clone)]
pub struct KafkaSourceConfig {
    pub kafka: Arc<KafkaConfig>,
    pub group: String,
    /// topic → profile of its messages.
    pub topics: Vec<(String, String)>,
    /// Rebuild detector state of partitions taken over (when this process detects).
    pub rebuild_state: bool,
}

/// One consumed message, owned.
pub(crate) struct Consumed {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) payload: Vec<u8>,
}

/// Consumes until `shutdown`; returns an error that says what failed when it cannot go on.
pub async fn run(
    ingest: Ingest,
    metrics: Arc<Metrics>,
    source: KafkaSourceConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let kafka = &source.kafka;
    let mut wanted: Vec<&str> = source.topics.iter().map(|(t, _)| t.as_str()).collect();
    wanted.push(&kafka.topics.dead_letters);
    if !wait_for_topics(kafka, &wanted, &mut shutdown).await {
        return Ok(());
    }
    let consumer = group_consumer(kafka, &source.group)?;
    let topics: Vec<&str> = source.topics.iter().map(|(t, _)| t.as_str()).collect();
    consumer.subscribe(&topics).map_err(|e| format!("cannot subscribe to Kafka topics {topics:?}: {e}"))?;
    let dead_letters =
        producer(kafka).map_err(|e| format!("cannot make a Kafka producer for {}: {e}", kafka.brokers))?;
    tracing::info!("kafka: consuming {} in group {} from {}", topics.join(", "), source.group, kafka.brokers);
    let profile_of: HashMap<&str, &str> = source.topics.iter().map(|(t, p)| (t.as_str(), p.as_str())).collect();
    let mut consumer_state = ConsumerState { followed: HashMap::new(), error_logged: false };
    let from = format!("from {}", kafka.brokers);
    while let Some(batch) = next_batch(&consumer, kafka, &mut shutdown, &from, &mut consumer_state.error_logged).await {
        if source.rebuild_state && kafka.rebuild_messages > 0 {
            consumer_state.rebuild(&ingest, kafka, &profile_of, &batch).await;
        }
        submit(&ingest, &metrics, kafka, &dead_letters, &profile_of, &batch).await?;
        // Each partition's first and last offset in the batch (a partition's messages come in order).
        let mut spans: HashMap<(&str, i32), (i64, i64)> = HashMap::new();
        for message in &batch {
            spans
                .entry((message.topic.as_str(), message.partition))
                .and_modify(|(_, last)| *last = message.offset)
                .or_insert((message.offset, message.offset));
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), (first, last)) in spans {
            tracing::debug!("kafka: submitted {topic}/{partition} offsets {first}..={last}");
            consumer_state.followed.insert((topic.to_string(), partition), last);
            offsets
                .add_partition_offset(topic, partition, Offset::Offset(last + 1))
                .map_err(|e| format!("kafka offset of {topic}/{partition}: {e}"))?;
        }
        // Everything before these offsets is in bronze: committing them is the acknowledgement.
        if let Err(e) = consumer.commit(&offsets, CommitMode::Async) {
            tracing::warn!(
                "kafka: cannot commit offsets ({e}); those messages will come again and be recorded as duplicates"
            );
        }
    }
    // The last batch was submitted and its offsets handed to librdkafka: commit them for sure.
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!("kafka: final commit: {e}");
    }
    Ok(())
}

/// Makes sure `wanted` exist, waiting for brokers that are not up yet and saying so once;
/// false when `shutdown` came first.
pub(crate) async fn wait_for_topics(
    kafka: &KafkaConfig,
    wanted: &[&str],
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let mut waiting = false;
    loop {
        match ensure_topics(kafka, wanted).await {
            Ok(()) => break,
            Err(e) if !waiting => {
                tracing::warn!("{e}; retrying every {} s", START_RETRY.as_secs());
                waiting = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            () = tokio::time::sleep(START_RETRY) => {}
            _ = shutdown.wait_for(|stop| *stop) => return false,
        }
    }
    if waiting {
        tracing::info!("kafka: brokers {} answered; topics ready", kafka.brokers);
    }
    true
}

/// A consumer of `group` that commits only what it is told to, from the earliest offset when
/// the group has none.
pub(crate) fn group_consumer(kafka: &KafkaConfig, group: &str) -> Result<StreamConsumer, String> {
    consumer_config(kafka)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|e| format!("cannot make a Kafka consumer for {}: {e}", kafka.brokers))
}

/// The next batch: a message, and the ones that follow within [`BATCH_LINGER`], up to
/// `consume_batch`; `None` once `shutdown` comes. A consume error is logged once until a
/// message arrives again (`from` says what is consumed) and retried.
pub(crate) async fn next_batch(
    consumer: &StreamConsumer,
    kafka: &KafkaConfig,
    shutdown: &mut watch::Receiver<bool>,
    from: &str,
    error_logged: &mut bool,
) -> Option<Vec<Consumed>> {
    loop {
        let first = tokio::select! {
            message = consumer.recv() => message,
            _ = shutdown.wait_for(|stop| *stop) => return None,
        };
        let mut batch = match first {
            Ok(message) => vec![owned(&message)],
            Err(e) => {
                if !*error_logged {
                    tracing::warn!("kafka: consuming {from}: {e}; retrying");
                    *error_logged = true;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        *error_logged = false;
        while batch.len() < kafka.consume_batch {
            match tokio::time::timeout(BATCH_LINGER, consumer.recv()).await {
                Ok(Ok(message)) => batch.push(owned(&message)),
                _ => break,
            }
        }
        return Some(batch);
    }
}

fn owned(message: &rdkafka::message::BorrowedMessage<'_>) -> Consumed {
    Consumed {
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
    }
}

/// Submits a batch per profile, in order, and sends its rejects to the dead-letter topic.
async fn submit(
    ingest: &Ingest,
    metrics: &Metrics,
    kafka: &KafkaConfig,
    dead_letters: &FutureProducer,
    profile_of: &HashMap<&str, &str>,
    batch: &[Consumed],
) -> Result<(), String> {
    let mut per_profile: Vec<(&str, Vec<&Consumed>)> = Vec::new();
    for message in batch {
        let profile = profile_of.get(message.topic.as_str()).copied().unwrap_or_default();
        match per_profile.iter_mut().find(|(p, _)| *p == profile) {
            Some((_, messages)) => messages.push(message),
            None => per_profile.push((profile, vec![message])),
        }
    }
    for (profile, all) in per_profile {
        let started = Instant::now();
        let limit = kafka.max_payload_bytes;
        let (oversize, messages): (Vec<&Consumed>, Vec<&Consumed>) =
            all.into_iter().partition(|m| m.payload.len() > limit);
        let mut rejects: Vec<(&Consumed, &'static str, String)> = Vec::new();
        for message in oversize {
            let reason = format!(
                "payload_too_large: {} bytes at {}/{}/{}, more than kafka.max_payload_bytes {limit}",
                message.payload.len(),
                message.topic,
                message.partition,
                message.offset
            );
            ingest
                .record_rejected(profile, "kafka", message.payload.clone(), "payload_too_large", &reason)
                .await
                .map_err(|e| format!("kafka: cannot store a rejected {profile} message: {e}"))?;
            rejects.push((message, "payload_too_large", reason));
        }
        let deliveries = messages.iter().map(|m| Delivery::new(m.payload.clone())).collect();
        let report = ingest
            .submit_deliveries(profile, "kafka", deliveries, Admission::Wait)
            .await
            .map_err(|e| format!("kafka: cannot store {} {profile} messages: {e}", messages.len()))?;
        metrics.gateway_process_duration.observe(started.elapsed().as_secs_f64());
        rejects.extend(
            report
                .errors
                .into_iter()
                .filter(|e| e.reason != "duplicate")
                .map(|e| (messages[e.index], e.reason, e.error)),
        );
        if rejects.is_empty() {
            continue;
        }
        let letters = rejects.iter().map(|(message, code, error)| {
            let origin = format!("{}/{}/{}", message.topic, message.partition, message.offset);
            let headers = reason_headers(code, error, &origin);
            (kafka.topics.dead_letters.as_str(), profile, message.payload.clone(), Some(headers))
        });
        produce_all(dead_letters, letters)
            .await
            .map_err(|e| format!("kafka: cannot produce dead letters to {}: {e}", kafka.topics.dead_letters))?;
    }
    Ok(())
}

/// What the consumer remembers between batches.
struct ConsumerState {
    /// The last offset submitted per (topic, partition) by this process.
    followed: HashMap<(String, i32), i64>,
    error_logged: bool,
}

impl ConsumerState {
    /// Rebuilds detector state for every partition of `batch` this process has not followed up
    /// to the batch's first message of it.
    async fn rebuild(
        &mut self,
        ingest: &Ingest,
        kafka: &Arc<KafkaConfig>,
        profile_of: &HashMap<&str, &str>,
        batch: &[Consumed],
    ) {
        let mut seen: Vec<(&str, i32)> = Vec::new();
        for message in batch {
            let key = (message.topic.as_str(), message.partition);
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            let followed = self.followed.get(&(message.topic.clone(), message.partition)).copied();
            if followed == Some(message.offset - 1) {
                continue;
            }
            let mut start = (message.offset - kafka.rebuild_messages).max(0);
            if let Some(followed) = followed {
                start = start.max(followed + 1);
            }
            if start >= message.offset {
                continue;
            }
            let (topic, partition, end) = (message.topic.clone(), message.partition, message.offset);
            let config = kafka.clone();
            let read = tokio::task::spawn_blocking(move || read_range(&config, &topic, partition, start, end)).await;
            let profile = profile_of.get(message.topic.as_str()).copied().unwrap_or_default();
            match read {
                Ok(Ok(payloads)) => {
                    let read = payloads.len();
                    let fed = ingest.warm_up(profile, payloads).await;
                    tracing::info!(
                        "kafka: {}/{} taken at offset {}: detector state rebuilt from {read} earlier messages ({fed} readings)",
                        message.topic,
                        message.partition,
                        message.offset
                    );
                }
                Ok(Err(e)) => tracing::warn!(
                    "kafka: cannot re-read {}/{} offsets {start}..{end} to rebuild detector state ({e}); its entities start from empty state",
                    message.topic,
                    message.partition
                ),
                Err(e) => tracing::warn!("kafka: state rebuild task failed: {e}"),
            }
        }
    }
}

/// The payloads of `topic`/`partition` with `start <= offset < end`, read without a group.
fn read_range(
    config: &KafkaConfig,
    topic: &str,
    partition: i32,
    start: i64,
    end: i64,
) -> Result<Vec<Vec<u8>>, KafkaError> {
    let consumer: BaseConsumer = consumer_config(config)
        .set("group.id", format!("{}-rebuild", config.group_prefix))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(start))?;
    consumer.assign(&assignment)?;
    let mut payloads = Vec::with_capacity((end - start).clamp(0, 100_000) as usize);
    let deadline = Instant::now() + REBUILD_DEADLINE;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                if message.offset() >= end {
                    break;
                }
                payloads.push(message.payload().map(<[u8]>::to_vec).unwrap_or_default());
                if message.offset() + 1 >= end {
                    break;
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    Ok(payloads)
}
