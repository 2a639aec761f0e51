//! The MQTT source: subscribes to a broker with QoS 1 and a persistent session, and
//! acknowledges each message only once its bronze row is committed.
//!
//! # Layout
//! - [`config`]: `[[sources.mqtt]]` as written and validated; broker URLs and topic filters.
//! - [`tls`]: rustls client configurations from PEM files (CA, client certificate and key).
//! - [`source`]: the connection loop: batches, submits, acknowledges, reconnects.
//!
//! A broker redelivers every message it has not seen acknowledged, after a crash or a
//! reconnect; such a message reaches [`crate::ingest::Ingest::submit_deliveries`] again and is
//! recorded as a duplicate of the stored one, so none is lost and none is counted twice.

pub mod config;
pub mod source;
pub mod tls;

pub use config::{BrokerUrl, MqttSourceConfig, RawMqttSource, TopicFilter};
pub use source::run;
