//! Pure, synchronous heart of teleguard: no I/O, no async runtime.
//!
//! # Layout
//! - [`model`]: the canonical reading, anomaly and verdict types every stage speaks.
//! - [`profile`]: profiles as data (schema, field mapping, detector settings), built-in and
//!   user-defined, and the registry that holds them.
//! - [`schema`]: a profile's JSON Schema and Avro schema, and Avro messages read as JSON.
//! - [`json`]: reads one JSON message keeping only the fields a profile names.
//! - [`time`]: event-time parsing (epoch seconds or milliseconds, ISO 8601).
//! - [`validate`]: turns one JSON message into a [`model::Reading`] or a rejection that names
//!   the field.
//! - [`geo`]: geofences in an R-tree, point-in-zone lookup, great-circle distance.
//! - [`enrich`]: driver and zone enrichment of readings.
//! - [`hunt`]: threat hunts over stored vehicle tracks, run by the streaming rules themselves.
//! - [`simulate`]: the built-in fleet simulator, in the reference designs' own JSON.
//! - [`detect`]: the [`detect::Detector`] trait and the detectors (rolling z-score first).
//! - [`eval`]: detections scored against labels (our simulator's, or the NAB benchmark's).

pub mod detect;
pub mod enrich;
pub mod eval;
pub mod geo;
pub mod hunt;
pub mod json;
pub mod model;
pub mod profile;
pub mod schema;
pub mod simulate;
pub mod time;
pub mod validate;
