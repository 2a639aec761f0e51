//! Sources: where messages come from (the simulator, MQTT, Kafka). HTTP ingest lives in the API
//! crate and calls [`crate::ingest::Ingest`] directly; the others run as tasks here.

pub mod kafka;
pub mod mqtt;
pub mod simulator;
