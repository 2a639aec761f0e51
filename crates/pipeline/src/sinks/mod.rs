//! External store sinks: each follows the embedded store's silver and gold tables and copies them
//! to its target (PostgreSQL, ClickHouse), so that a target being down never slows ingest and
//! never loses a row.
//!
//! # The one shape
//! A sink runs on its own thread with its own read-only store connection. It reads silver in id
//! order below the [`SilverWatermark`](crate::store::watermark::SilverWatermark) (readings still
//! being analysed are not skipped) and gold in `change_seq` order (an anomaly's insert and its
//! episode's close are two changes), from cursors it keeps in the store's `sink_cursors` table.
//! It writes batches bounded by rows (`batch_rows`) and by time (`batch_ms`), and moves a cursor
//! only after the target confirmed the batch. While the target is down it keeps at most one
//! batch per layer in memory, retries with capped exponential backoff, and logs once that the
//! target is down and once that it is back. An analytics sink's threads run at a lower CPU
//! priority than the pipeline's, so that on a busy machine ingest and detection go first and
//! the sink's lag grows instead (it catches up when the load falls).
//!
//! # Delivery
//! At least once from the store, exactly once on the target: rows carry their store ids as keys
//! (readings by id, anomalies by id with `change_seq` as the version), so a batch written again
//! after a crash between the target's confirmation and the cursor's commit changes nothing.
//!
//! # Layout
//! - [`follow`]: the store reads (records, cursors, lag).
//! - [`runner`]: the loop every sink runs around its [`Target`].
//! - [`postgres`]: the PostgreSQL target (reference 003's `readings` and `anomalies`).
//! - [`clickhouse`]: the ClickHouse target (reference 000's schema) and `clickhouse init`.
//! - [`kafka`]: the Kafka target (readings and anomalies topics, acks=all).

pub mod clickhouse;
pub mod follow;
pub mod kafka;
pub mod postgres;
pub mod runner;

pub use follow::{AnomalyRecord, DeadLetterRecord, ReadingRecord};
pub use runner::{SinkHandle, SinkStatus};

use std::num::NonZeroUsize;
use std::time::Duration;

/// A fault of a target (unreachable, refused a statement): the sink retries.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TargetError(pub String);

impl TargetError {
    pub fn new(what: &str, error: impl std::fmt::Display) -> Self {
        TargetError(format!("{what}: {error}"))
    }
}

/// An external store a sink writes to. Each write must be idempotent by the rows' ids.
pub trait Target {
    /// The sink's name in logs, metrics and the cursor table.
    fn name(&self) -> &'static str;
    /// Connects (again) and brings the target's schema up to date. A target records the
    /// `store_uid` of the store it follows and refuses another store's rows (their ids would
    /// collide).
    fn connect(&mut self, store_uid: i64) -> impl Future<Output = Result<(), TargetError>>;
    /// Writes readings; returns once the target has them.
    fn write_readings(&mut self, rows: &[ReadingRecord]) -> impl Future<Output = Result<(), TargetError>>;
    /// Writes anomaly changes (a later change of the same id replaces an earlier one).
    fn write_anomalies(&mut self, rows: &[AnomalyRecord]) -> impl Future<Output = Result<(), TargetError>>;
    /// Whether the sink's threads run below the pipeline's CPU priority (see
    /// [`runner::SINK_NICENESS`]): true for a copy to an analytics store, false for a target
    /// that is the next stage of the pipeline itself (a role's Kafka output).
    fn yields_cpu_to_ingest(&self) -> bool {
        true
    }
    /// Whether the sink also follows the rejected bronze rows (the gateway's dead letters).
    fn follows_dead_letters(&self) -> bool {
        false
    }
    /// Forwards dead letters (it may skip some, e.g. those its source forwarded itself); the
    /// cursor moves past every row given once this returns.
    fn write_dead_letters(&mut self, _rows: &[DeadLetterRecord]) -> impl Future<Output = Result<(), TargetError>> {
        async { Ok(()) }
    }
}

/// How a sink batches, common to every target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// A batch is written once it has this many rows...
    pub rows: NonZeroUsize,
    /// ...or once its first row has waited this long.
    pub max_wait: Duration,
}

/// Rows per batch unless a sink's section says otherwise.
pub const DEFAULT_BATCH_ROWS: usize = 5000;

/// The raw `batch_rows` (`default_rows` when absent) and `batch_ms` of a sink's config
/// section, validated.
pub fn batching(
    section: &str,
    rows: Option<usize>,
    default_rows: usize,
    ms: Option<u64>,
    errors: &mut Vec<String>,
) -> Batching {
    let rows = NonZeroUsize::new(rows.unwrap_or(default_rows)).unwrap_or_else(|| {
        errors.push(format!("{section}.batch_rows must be at least 1"));
        NonZeroUsize::MIN
    });
    let ms = ms.unwrap_or(500);
    if ms == 0 {
        errors.push(format!("{section}.batch_ms must be at least 1"));
    }
    Batching { rows, max_wait: Duration::from_millis(ms.max(1)) }
}

/// An error with every cause under it, `: `-separated (a client's top error alone often says
/// only "error sending request").
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
