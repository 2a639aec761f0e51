//! Kafka: the distributed shape's transport (librdkafka through the `rdkafka` crate). The same
//! binary runs in roles whose stages are connected by topics keyed by entity id.
//!
//! # Layout
//! - [`config`]: `[kafka]`: brokers, client settings, the reference topics per profile.
//! - [`roles`]: what each `--role` consumes, runs and produces.
//! - [`wire`]: readings and anomalies as the reference designs put them on a topic.
//! - [`crate::sources::kafka`]: the consumer (offsets committed after bronze), with the state
//!   rebuild of a partition taken over.
//! - [`crate::sources::kafka_anomalies`]: the serving role's consumer of the anomalies topic.
//! - [`crate::sinks::kafka`]: the producer that follows the store into topics (acks=all), the
//!   edge's dead letters included.
//!
//! # Delivery
//! A consumed message's offset is committed only after its bronze row is committed, and what it
//! causes (its enriched reading, its anomalies) reaches the output topics through the store,
//! which a sink follows from a durable cursor; so everything is at least once end to end, and
//! anomaly ids are stable, so a message processed twice raises no second alert downstream.

pub mod config;
pub mod roles;
pub mod wire;

pub use config::{KafkaConfig, RawKafka, Topics};
pub use rdkafka::producer::FutureProducer;
pub use roles::{Role, RolePlan};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// The librdkafka settings every client of `config` shares: brokers and the user's `client`
/// properties (TLS, SASL, timeouts).
pub fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.brokers);
    for (key, value) in &config.client {
        client.set(key, value);
    }
    client
}

/// How long librdkafka waits before fetching a partition again once its prefetch queue was full
/// (`fetch.queue.backoff.ms`), unless the user sets it. With librdkafka's own 1,000 ms, a
/// consumer that works on a batch between reads (validating it, committing it to bronze) drains
/// a partition's queue and then waits for the rest of that second with nothing fetched: through
/// a local broker that held one role at about 130,000 messages/s, against about 180,000 with
/// 10 ms (a full queue is then looked at 100 times a second, which costs nothing measurable).
pub const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// [`client_config`] with the user's `consumer` properties.
pub fn consumer_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = client_config(config);
    if !config.consumer.iter().chain(&config.client).any(|(key, _)| key == "fetch.queue.backoff.ms") {
        client.set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS);
    }
    for (key, value) in &config.consumer {
        client.set(key, value);
    }
    client
}

/// [`client_config`] with the user's `producer` properties.
pub fn producer_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = client_config(config);
    for (key, value) in &config.producer {
        client.set(key, value);
    }
    client
}

/// With TLS or SASL configured, what else to check when the brokers do not answer: a broker
/// may leave a refused SASL exchange unanswered (tansu 0.6 does), and a failed TLS handshake
/// reaches an admin request only as a timeout.
fn security_hint(config: &KafkaConfig) -> String {
    let protocol = config.client.iter().find(|(key, _)| key == "security.protocol").map(|(_, value)| value);
    let Some(protocol) = protocol.filter(|p| !p.eq_ignore_ascii_case("plaintext")) else {
        return String::new();
    };
    const TLS: &str = "ssl.ca.location must hold the CA that signed the brokers' certificates, and \
                       ssl.certificate.location / ssl.key.location a client certificate that they accept if they ask \
                       for one";
    const SASL: &str = "sasl.mechanism, sasl.username and sasl.password must be what the brokers expect";
    let what = match protocol.to_ascii_lowercase().as_str() {
        "ssl" => TLS.to_string(),
        "sasl_plaintext" => SASL.to_string(),
        "sasl_ssl" => format!("{TLS}; {SASL}"),
        _ => "check the ssl.* / sasl.* credentials".to_string(),
    };
    format!(" Are the [kafka.client] security settings right (security.protocol = {protocol:?}: {what})?")
}

/// Creates each of `topics` that does not exist yet (with `kafka.partitions`), unless
/// `kafka.create_topics` is off. An error names the topic, the brokers and what to do.
pub async fn ensure_topics(config: &KafkaConfig, topics: &[&str]) -> Result<(), String> {
    if !config.create_topics || topics.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = client_config(config)
        .create()
        .map_err(|e| format!("cannot make a Kafka admin client for {}: {e}", config.brokers))?;
    let wanted: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|name| NewTopic::new(name, config.partitions, TopicReplication::Fixed(config.replication_factor)))
        .collect();
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(5)));
    let results = admin.create_topics(&wanted, &options).await.map_err(|e| {
        format!(
            "cannot create Kafka topics {topics:?} on {}: {e}; is the broker up?{} Create them yourself and set \
             kafka.create_topics = false if this client may not",
            config.brokers,
            security_hint(config)
        )
    })?;
    for result in results {
        match result {
            Ok(name) => tracing::info!("kafka: created topic {name} ({} partitions)", config.partitions),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(format!(
                    "cannot create Kafka topic {name} on {}: {code}; create it yourself (with the partitions you \
                     want) and set kafka.create_topics = false",
                    config.brokers
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka(consumer: &[(&str, &str)]) -> KafkaConfig {
        let raw = RawKafka {
            brokers: "127.0.0.1:9092".into(),
            consumer: consumer.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        };
        KafkaConfig::validate(raw, None, &mut Vec::new()).expect("a valid [kafka]")
    }

    #[test]
    fn consumers_fetch_again_soon_after_a_full_queue_unless_told_otherwise() {
        assert_eq!(consumer_config(&kafka(&[])).get("fetch.queue.backoff.ms"), Some(FETCH_QUEUE_BACKOFF_MS));
        let told = kafka(&[("fetch.queue.backoff.ms", "500")]);
        assert_eq!(consumer_config(&told).get("fetch.queue.backoff.ms"), Some("500"));
        assert_eq!(producer_config(&told).get("fetch.queue.backoff.ms"), None);
    }
}
