//! The MQTT connection loop and the submitter it feeds: QoS 1, manual acknowledgements after
//! the bronze commit, reconnects with capped exponential backoff, bounded buffering.

use super::config::{MQTT_MAX_PACKET_BYTES, MqttSourceConfig, last_level};
use crate::ingest::{Admission, Delivery, EntityGrant, Ingest, IngestError};
use crate::metrics::{Metrics, ReasonLabels};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS, SubscribeFilter};
use rumqttc::{SubscribeReasonCode, TlsConfiguration, Transport};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// The `source` recorded in bronze for MQTT messages.
pub const SOURCE: &str = "mqtt";
/// How long a clean stop waits for the last acknowledgements and the DISCONNECT to go out.
const FINAL_FLUSH: Duration = Duration::from_secs(2);
/// How soon acknowledgements that found the client's request channel full are tried again.
const ACK_RETRY: Duration = Duration::from_millis(2);

/// Runs one MQTT source until `shutdown` turns true.
pub async fn run(
    ingest: Ingest,
    metrics: Arc<Metrics>,
    config: MqttSourceConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    // Received messages wait here for the submitter; when it is full the connection loop stops
    // polling, so nothing more is read from the socket.
    let queue_capacity = config.max_batch.get() * 4;
    // The connection loop reads up to 10 packets per turn but sends one request (an
    // acknowledgement) per turn, so acknowledgements can pile up; the submitter keeps those
    // that do not fit and never waits for room (waiting deadlocked against the full queue).
    let request_capacity = queue_capacity * 4 + 1024;
    let (client, mut eventloop) = AsyncClient::new(mqtt_options(&config), request_capacity);
    let (queue, received) = mpsc::channel(queue_capacity);
    let submitter = Submitter { ingest, metrics: metrics.clone(), config: config.clone(), client: client.clone() };
    let submitting = tokio::spawn(submitter.run(received, shutdown.clone()));
    connection_loop(&mut eventloop, &client, &config, &metrics, queue, shutdown).await;
    submitting.await.map_err(|e| format!("mqtt {}: the submitter stopped: {e}", config.broker))?;
    // Send the acknowledgements of what was stored, then say goodbye; what was not acknowledged
    // stays with the broker for the next run.
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(FINAL_FLUSH, async {
        while let Ok(event) = eventloop.poll().await {
            if matches!(event, Event::Outgoing(Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
    tracing::info!("mqtt {}: stopped", config.broker);
    Ok(())
}

fn mqtt_options(config: &MqttSourceConfig) -> MqttOptions {
    let mut options = MqttOptions::new(&config.client_id, &config.broker.host, config.broker.port);
    options
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(config.keep_alive)
        .set_max_packet_size(MQTT_MAX_PACKET_BYTES, MQTT_MAX_PACKET_BYTES);
    if let Some(tls) = &config.tls {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls.clone())));
    }
    if let Some((username, password)) = &config.credentials {
        options.set_credentials(username, password);
    }
    options
}

/// Polls the broker connection: queues publishes for the submitter, subscribes after each
/// connect, and reconnects with capped exponential backoff. Returns on shutdown.
async fn connection_loop(
    eventloop: &mut EventLoop,
    client: &AsyncClient,
    config: &MqttSourceConfig,
    metrics: &Metrics,
    queue: mpsc::Sender<Publish>,
    mut shutdown: watch::Receiver<bool>,
) {
    let broker = &config.broker;
    let mut backoff = config.reconnect_min;
    let mut connected = false;
    let mut connections = 0_u64;
    loop {
        let event = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => return,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                metrics.gateway_messages_received.inc();
                if queue.send(publish).await.is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                metrics.mqtt_connections.inc();
                if connections > 0 {
                    metrics.mqtt_reconnects.inc();
                }
                connections += 1;
                connected = true;
                backoff = config.reconnect_min;
                tracing::info!(
                    "mqtt {broker}: connected as {:?} (session present: {}); subscribing to {}",
                    config.client_id,
                    connack.session_present,
                    config.subscriptions.join(", ")
                );
                let filters = config.subscriptions.iter().map(|t| SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
                if let Err(e) = client.try_subscribe_many(filters) {
                    tracing::error!("mqtt {broker}: cannot queue the subscription: {e}");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(suback))) => {
                for (topic, code) in config.subscriptions.iter().zip(&suback.return_codes) {
                    if *code == SubscribeReasonCode::Failure {
                        tracing::error!(
                            "mqtt {broker}: the broker refused the subscription to {topic:?}; check its ACL for user {:?}",
                            config.credentials.as_ref().map_or(config.client_id.as_str(), |(user, _)| user.as_str())
                        );
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                if connected {
                    metrics.mqtt_disconnects.inc();
                    tracing::warn!("mqtt {broker}: connection lost: {e}; reconnecting in {backoff:?}");
                } else {
                    tracing::warn!("mqtt {broker}: cannot connect: {e}; retrying in {backoff:?}");
                }
                connected = false;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                backoff = (backoff * 2).min(config.reconnect_max);
            }
        }
    }
}

/// Takes the queued messages in batches, submits each batch, and acknowledges it once stored.
struct Submitter {
    ingest: Ingest,
    metrics: Arc<Metrics>,
    config: MqttSourceConfig,
    client: AsyncClient,
}

impl Submitter {
    async fn run(self, mut received: mpsc::Receiver<Publish>, mut shutdown: watch::Receiver<bool>) {
        let max_batch = self.config.max_batch.get();
        let mut batch = Vec::with_capacity(max_batch);
        // Stored messages whose acknowledgement is not in the client's channel yet (headers only).
        let mut unsent_acks = VecDeque::new();
        loop {
            self.send_acks(&mut unsent_acks);
            let count = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => return,
                count = received.recv_many(&mut batch, max_batch) => count,
                _ = tokio::time::sleep(ACK_RETRY), if !unsent_acks.is_empty() => continue,
            };
            if count == 0 {
                return;
            }
            let started = Instant::now();
            let mut retry_in = self.config.reconnect_min;
            while let Err(e) = self.submit(&batch).await {
                tracing::error!(
                    "mqtt {}: {} messages could not be stored ({e}); they stay unacknowledged, retrying in {retry_in:?}",
                    self.config.broker,
                    batch.len()
                );
                tokio::select! {
                    _ = tokio::time::sleep(retry_in) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                retry_in = (retry_in * 2).min(self.config.reconnect_max);
            }
            self.metrics.gateway_process_duration.observe(started.elapsed().as_secs_f64());
            unsent_acks.extend(batch.drain(..).map(|mut publish| {
                publish.payload = Default::default();
                publish
            }));
        }
    }

    /// Hands acknowledgements to the client, in order, while its request channel has room.
    fn send_acks(&self, unsent: &mut VecDeque<Publish>) {
        while let Some(publish) = unsent.front() {
            if self.client.try_ack(publish).is_err() {
                return;
            }
            unsent.pop_front();
        }
    }

    /// Stores every message of `batch` in bronze: one submission per profile, in order.
    async fn submit(&self, batch: &[Publish]) -> Result<(), IngestError> {
        let mut groups: Vec<(Arc<str>, Vec<Delivery>)> = Vec::new();
        let limit = self.config.max_payload_bytes.get();
        for publish in batch {
            let profile = self.config.profile_of(&publish.topic);
            if publish.payload.len() > limit {
                let reason = format!(
                    "payload_too_large: {} bytes on topic {:?}, more than max_payload_bytes {limit}",
                    publish.payload.len(),
                    publish.topic
                );
                self.ingest
                    .record_rejected(profile, SOURCE, publish.payload.to_vec(), "payload_too_large", &reason)
                    .await?;
                self.count_error("payload_too_large");
                continue;
            }
            let delivery = Delivery {
                grant: if self.config.entity_from_topic {
                    EntityGrant::Exactly(Arc::from(last_level(&publish.topic)))
                } else {
                    EntityGrant::Any
                },
                ..Delivery::new(publish.payload.to_vec())
            };
            match groups.iter_mut().find(|(name, _)| name == profile) {
                Some((_, deliveries)) => deliveries.push(delivery),
                None => groups.push((profile.clone(), vec![delivery])),
            }
        }
        for (profile, deliveries) in groups {
            let report = self.ingest.submit_deliveries(&profile, SOURCE, deliveries, Admission::Wait).await?;
            self.metrics.gateway_validation_success.inc_by(report.accepted as u64);
            for error in &report.errors {
                self.count_error(error.reason);
            }
        }
        Ok(())
    }

    fn count_error(&self, reason: &str) {
        self.metrics.gateway_validation_errors.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }
}
