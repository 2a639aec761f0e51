//! The API's handlers, by concern.

pub mod alerts;
pub mod fleet;
pub mod hunts;
pub mod ingest;
pub mod quarantine;
pub mod query;
