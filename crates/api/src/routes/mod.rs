//! The API's handlers, by concern.

pub mod ingest;
pub mod query;
