//! The MQTT target of `teleguard simulate`: publishes with QoS 1 and counts the broker's
//! PUBACKs, with a bounded window of unacknowledged messages, through reconnects.

use anyhow::{Context as _, bail};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use teleguard_pipeline::sources::mqtt::BrokerUrl;
use teleguard_pipeline::sources::mqtt::tls::{ClientIdentity, client_config};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The topic published to when the URL names none (reference 001's).
const DEFAULT_TOPIC: &str = "iot/telemetry";
/// Give up when the broker cannot be reached for this long.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// TLS files for `mqtts://`.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// A connection publishing simulated messages.
pub struct Publisher {
    broker: BrokerUrl,
    client: AsyncClient,
    /// The topic, with `{profile}` replaced per message.
    topic: String,
    published: u64,
    progress: Arc<Progress>,
    driver: JoinHandle<anyhow::Result<()>>,
}

/// What the event-loop task has seen, shared with the publisher.
#[derive(Default)]
struct Progress {
    acknowledged: AtomicU64,
    changed: Notify,
}

impl Publisher {
    /// Connects to `url` (`mqtt://HOST:PORT/TOPIC` or `mqtts://...`), allowing `inflight`
    /// unacknowledged messages.
    pub fn connect(url: &str, tls: &TlsFiles, client_id: &str, inflight: u16) -> anyhow::Result<Publisher> {
        let broker = BrokerUrl::parse(url).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
        let topic = broker.topic.clone().unwrap_or_else(|| DEFAULT_TOPIC.to_string());
        let mut options = MqttOptions::new(client_id, &broker.host, broker.port);
        // A persistent session: after a broker restart, what it had not acknowledged is sent again.
        options
            .set_clean_session(false)
            .set_inflight(inflight.max(1))
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(1 << 28, 1 << 28);
        match (broker.tls, &tls.ca) {
            (true, Some(ca)) => {
                let identity = match (&tls.cert, &tls.key) {
                    (Some(cert_file), Some(key_file)) => Some(ClientIdentity { cert_file, key_file }),
                    (None, None) => None,
                    _ => bail!("--cert and --key go together (mutual TLS)"),
                };
                let config = client_config(ca, identity)?;
                options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
            }
            (true, None) => bail!("--to {url}: mqtts:// needs --ca, the CA that signed the broker's certificate"),
            (false, _) if tls.ca.is_some() || tls.cert.is_some() => {
                bail!("--ca/--cert/--key need an mqtts:// URL")
            }
            (false, _) => {}
        }
        let (client, eventloop) = AsyncClient::new(options, usize::from(inflight.max(1)) * 2 + 16);
        let progress = Arc::new(Progress::default());
        let driver = tokio::spawn(drive(eventloop, broker.clone(), progress.clone()));
        Ok(Publisher { broker, client, topic, published: 0, progress, driver })
    }

    /// Publishes one message; waits while the window of unacknowledged ones is full.
    pub async fn publish(&mut self, profile: &str, payload: Vec<u8>) -> anyhow::Result<()> {
        let topic = self.topic.replace("{profile}", profile);
        if self.driver.is_finished() {
            return self.stopped().await;
        }
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .with_context(|| format!("cannot publish to {}", self.broker))?;
        self.published += 1;
        Ok(())
    }

    /// Waits until the broker acknowledged every message published, then disconnects.
    pub async fn finish(mut self) -> anyhow::Result<u64> {
        let progress = self.progress.clone();
        loop {
            let waiting = progress.changed.notified();
            if progress.acknowledged.load(Ordering::Acquire) >= self.published {
                break;
            }
            if self.driver.is_finished() {
                return self.stopped().await.map(|()| 0);
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), waiting).await;
        }
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.driver).await;
        Ok(self.published)
    }

    async fn stopped(&mut self) -> anyhow::Result<()> {
        match (&mut self.driver).await {
            Ok(Ok(())) => bail!("the connection to {} closed before every message was acknowledged", self.broker),
            Ok(Err(e)) => Err(e),
            Err(e) => bail!("the MQTT connection task failed: {e}"),
        }
    }
}

/// Polls the connection, counting PUBACKs and reconnecting with backoff until the client
/// disconnects, or the broker stays unreachable for [`GIVE_UP_AFTER`].
async fn drive(mut eventloop: EventLoop, broker: BrokerUrl, progress: Arc<Progress>) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(100);
    let mut unreachable_since: Option<Instant> = None;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                progress.acknowledged.fetch_add(1, Ordering::AcqRel);
                progress.changed.notify_waiters();
            }
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                unreachable_since = None;
                backoff = Duration::from_millis(100);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return Ok(()),
            Ok(_) => {}
            Err(e) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > GIVE_UP_AFTER {
                    bail!("cannot reach {broker} for {} s: {e}", GIVE_UP_AFTER.as_secs());
                }
                tracing::warn!("mqtt {broker}: {e}; reconnecting in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
