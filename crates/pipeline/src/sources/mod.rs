//! Sources: where messages come from (the simulator, MQTT, Kafka). HTTP ingest lives in the API
//! crate and calls [`crate::ingest::Ingest`] directly; the others run as tasks here.
//! [`kafka_anomalies`] is the serving role's: anomalies of other stores into this one's gold.

pub mod kafka;
pub mod kafka_anomalies;
pub mod mqtt;
pub mod simulator;
