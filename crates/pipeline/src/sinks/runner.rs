//! The loop every sink runs: read after the cursors, batch, write, confirm, retry while down.

use super::follow::{self, GOLD, SILVER};
use super::{AnomalyRecord, Batching, ReadingRecord, Target, TargetError};
use crate::metrics::{Metrics, SinkLabels, SinkLayerLabels};
use crate::store::watermark::SilverWatermark;
use crate::store::writer::StoreWriter;
use crate::store::{self, StoreError};
use rusqlite::Connection;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The first pause after a failure; it doubles on each further failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often lag (a count over the store) is measured.
const LAG_EVERY: Duration = Duration::from_secs(1);
/// How long a stopping sink keeps writing what the store still holds.
const FINAL_DRAIN: Duration = Duration::from_secs(10);

/// What the pipeline gives a sink.
#[derive(Debug, Clone)]
pub struct SinkContext {
    pub data_dir: PathBuf,
    pub store: StoreWriter,
    pub watermark: SilverWatermark,
    pub metrics: Arc<Metrics>,
    pub batching: Batching,
}

/// A sink's state as `/api/stats` shows it.
#[derive(Debug)]
pub struct SinkStatus {
    pub name: &'static str,
    up: AtomicBool,
    lag_readings: AtomicI64,
    lag_anomalies: AtomicI64,
    lag_ms: AtomicI64,
    written_readings: AtomicU64,
    written_anomalies: AtomicU64,
}

/// A snapshot of [`SinkStatus`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SinkView {
    pub sink: &'static str,
    /// Whether the last attempt to reach the target succeeded.
    pub up: bool,
    /// Rows in the store the target has not confirmed yet.
    pub lag_readings: i64,
    pub lag_anomalies: i64,
    /// How long the target has been behind the store (0 when caught up).
    pub lag_seconds: f64,
    /// Rows the target confirmed since start.
    pub written_readings: u64,
    pub written_anomalies: u64,
}

impl SinkStatus {
    fn new(name: &'static str) -> Self {
        SinkStatus {
            name,
            up: AtomicBool::new(false),
            lag_readings: AtomicI64::new(0),
            lag_anomalies: AtomicI64::new(0),
            lag_ms: AtomicI64::new(0),
            written_readings: AtomicU64::new(0),
            written_anomalies: AtomicU64::new(0),
        }
    }

    pub fn view(&self) -> SinkView {
        SinkView {
            sink: self.name,
            up: self.up.load(Ordering::Relaxed),
            lag_readings: self.lag_readings.load(Ordering::Relaxed),
            lag_anomalies: self.lag_anomalies.load(Ordering::Relaxed),
            lag_seconds: self.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            written_readings: self.written_readings.load(Ordering::Relaxed),
            written_anomalies: self.written_anomalies.load(Ordering::Relaxed),
        }
    }
}

/// A running sink: its status and how to stop it.
#[derive(Debug)]
pub struct SinkHandle {
    pub status: Arc<SinkStatus>,
    stop: watch::Sender<bool>,
    thread: JoinHandle<()>,
}

impl SinkHandle {
    /// Asks the sink to write what the store holds (for a few seconds at most) and stop.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits for the thread after [`SinkHandle::stop`].
    pub fn join(self) -> anyhow::Result<()> {
        self.thread.join().map_err(|_| anyhow::anyhow!("sink {} panicked", self.status.name))
    }
}

/// Starts `target`'s sink on a thread of its own with a read connection of its own.
pub fn spawn<T: Target + Send + 'static>(target: T, context: SinkContext) -> Result<SinkHandle, StoreError> {
    let name = target.name();
    let connection = store::open_reader(&context.data_dir)?;
    let status = Arc::new(SinkStatus::new(name));
    let (stop, stopped) = watch::channel(false);
    let runner = Runner::new(target, connection, context, status.clone(), stopped)?;
    let thread = std::thread::Builder::new()
        .name(format!("sink-{name}"))
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            match runtime {
                Ok(runtime) => runtime.block_on(runner.run()),
                Err(e) => tracing::error!("sink {name}: cannot start its runtime: {e}"),
            }
        })
        .map_err(|source| StoreError::Thread { name: "sink", source })?;
    Ok(SinkHandle { status, stop, thread })
}

/// The rows of one layer read after the confirmed cursor and not yet confirmed.
struct Pending<R> {
    confirmed: i64,
    rows: Vec<R>,
    first_read: Option<Instant>,
}

impl<R> Pending<R> {
    fn new(confirmed: i64) -> Self {
        Pending { confirmed, rows: Vec::new(), first_read: None }
    }

    fn due(&self, batching: &Batching) -> bool {
        !self.rows.is_empty()
            && (self.rows.len() >= batching.rows.get()
                || self.first_read.is_some_and(|at| at.elapsed() >= batching.max_wait))
    }

    fn room(&self, batching: &Batching) -> usize {
        batching.rows.get().saturating_sub(self.rows.len())
    }

    fn extend(&mut self, rows: Vec<R>) {
        if !rows.is_empty() && self.rows.is_empty() {
            self.first_read = Some(Instant::now());
        }
        self.rows.extend(rows);
    }
}

struct Runner<T> {
    target: T,
    connection: Connection,
    context: SinkContext,
    status: Arc<SinkStatus>,
    stopped: watch::Receiver<bool>,
    readings: Pending<ReadingRecord>,
    anomalies: Pending<AnomalyRecord>,
    connected: bool,
    down_since: Option<Instant>,
    backoff: Duration,
    caught_up_at: Instant,
    lag_measured: Option<Instant>,
    name: Arc<str>,
    store_uid: i64,
}

impl<T: Target> Runner<T> {
    fn new(
        target: T,
        connection: Connection,
        context: SinkContext,
        status: Arc<SinkStatus>,
        stopped: watch::Receiver<bool>,
    ) -> Result<Self, StoreError> {
        let name = target.name();
        let readings = Pending::new(follow::cursor(&connection, name, SILVER)?);
        let anomalies = Pending::new(follow::cursor(&connection, name, GOLD)?);
        let store_uid = follow::store_uid(&connection)?;
        Ok(Runner {
            target,
            connection,
            context,
            status,
            stopped,
            readings,
            anomalies,
            connected: false,
            down_since: None,
            backoff: FIRST_BACKOFF,
            caught_up_at: Instant::now(),
            lag_measured: None,
            name: Arc::from(name),
            store_uid,
        })
    }

    async fn run(mut self) {
        self.measure_lag(true);
        while !*self.stopped.borrow() {
            if !self.connected && !self.connect().await {
                self.measure_lag(false);
                self.pause(self.backoff).await;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            let wrote = match self.step(false).await {
                Ok(wrote) => wrote,
                Err(Fault::Target(e)) => {
                    self.went_down(&e);
                    continue;
                }
                Err(Fault::Store(e)) => {
                    tracing::warn!("sink {}: cannot read the store (retrying): {e}", self.name);
                    false
                }
            };
            self.measure_lag(false);
            if !wrote {
                self.pause(self.poll_interval()).await;
            }
        }
        self.drain().await;
    }

    /// After the stop signal: writes whatever the store holds while the target takes it.
    async fn drain(&mut self) {
        let deadline = Instant::now() + FINAL_DRAIN;
        while self.connected && Instant::now() < deadline {
            match self.step(true).await {
                Ok(true) => {}
                Ok(false) => break,
                Err(Fault::Target(e)) => {
                    tracing::warn!("sink {}: stopping with rows left for the next start: {e}", self.name);
                    break;
                }
                Err(Fault::Store(e)) => {
                    tracing::warn!("sink {}: stopping, cannot read the store: {e}", self.name);
                    break;
                }
            }
        }
        self.measure_lag(true);
    }

    fn poll_interval(&self) -> Duration {
        (self.context.batching.max_wait / 4).clamp(Duration::from_millis(5), Duration::from_millis(50))
    }

    /// Sleeps, waking early when the sink is asked to stop.
    async fn pause(&mut self, duration: Duration) {
        tokio::select! {
            () = tokio::time::sleep(duration) => {}
            _ = self.stopped.changed() => {}
        }
    }

    async fn connect(&mut self) -> bool {
        match self.target.connect(self.store_uid).await {
            Ok(()) => {
                self.connected = true;
                self.backoff = FIRST_BACKOFF;
                self.set_up(true);
                match self.down_since.take() {
                    Some(since) => tracing::info!(
                        "sink {}: target reachable again after {:.1} s; catching up from the store",
                        self.name,
                        since.elapsed().as_secs_f64()
                    ),
                    None => tracing::info!("sink {}: connected", self.name),
                }
                true
            }
            Err(e) => {
                self.went_down(&e);
                false
            }
        }
    }

    fn went_down(&mut self, error: &TargetError) {
        self.connected = false;
        self.set_up(false);
        self.context.metrics.sink_errors.get_or_create(&SinkLabels { sink: self.name.to_string() }).inc();
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
            tracing::warn!(
                "sink {}: target down ({error}); retrying with backoff up to {} s, ingest goes on and rows wait in the store",
                self.name,
                MAX_BACKOFF.as_secs()
            );
        } else {
            tracing::debug!("sink {}: still down: {error}", self.name);
        }
    }

    fn set_up(&self, up: bool) {
        self.status.up.store(up, Ordering::Relaxed);
        self.context.metrics.sink_up.get_or_create(&SinkLabels { sink: self.name.to_string() }).set(i64::from(up));
    }

    /// Reads what fits in the batches and writes each batch that is due (every non-empty one
    /// when `flush`); says whether anything was written.
    async fn step(&mut self, flush: bool) -> Result<bool, Fault> {
        let batching = self.context.batching;
        let room = self.readings.room(&batching);
        if room > 0 {
            let after = self.readings.rows.last().map_or(self.readings.confirmed, |r| r.id);
            let below = self.context.watermark.get();
            self.readings.extend(follow::readings_after(&self.connection, after, below, room)?);
        }
        let room = self.anomalies.room(&batching);
        if room > 0 {
            let after = self.anomalies.rows.last().map_or(self.anomalies.confirmed, |r| r.change_seq);
            self.anomalies.extend(follow::anomalies_after(&self.connection, after, room)?);
        }
        let mut wrote = false;
        if !self.readings.rows.is_empty() && (flush || self.readings.due(&batching)) {
            self.target.write_readings(&self.readings.rows).await?;
            let last = self.readings.rows.last().map_or(self.readings.confirmed, |r| r.id);
            let count = self.readings.rows.len();
            self.readings = Pending::new(last);
            self.confirmed(SILVER, last, count).await;
            wrote = true;
        }
        if !self.anomalies.rows.is_empty() && (flush || self.anomalies.due(&batching)) {
            self.target.write_anomalies(&self.anomalies.rows).await?;
            let last = self.anomalies.rows.last().map_or(self.anomalies.confirmed, |r| r.change_seq);
            let count = self.anomalies.rows.len();
            self.anomalies = Pending::new(last);
            self.confirmed(GOLD, last, count).await;
            wrote = true;
        }
        Ok(wrote)
    }

    async fn confirmed(&mut self, layer: &'static str, position: i64, rows: usize) {
        let labels = SinkLayerLabels { sink: self.name.to_string(), layer: layer.into() };
        self.context.metrics.sink_rows_written.get_or_create(&labels).inc_by(rows as u64);
        let written = if layer == SILVER { &self.status.written_readings } else { &self.status.written_anomalies };
        written.fetch_add(rows as u64, Ordering::Relaxed);
        if let Err(e) = self.context.store.record_sink_cursor(self.name.clone(), layer, position).await {
            // Only while the pipeline stops; the rows are written again after the next start.
            tracing::warn!("sink {}: cannot record its {layer} cursor {position}: {e}", self.name);
        }
    }

    /// Counts the rows the target lacks, at most once per [`LAG_EVERY`] unless `now`.
    fn measure_lag(&mut self, now: bool) {
        if !now && self.lag_measured.is_some_and(|at| at.elapsed() < LAG_EVERY) {
            return;
        }
        self.lag_measured = Some(Instant::now());
        let (readings, anomalies) =
            match follow::lag_rows(&self.connection, self.readings.confirmed, self.anomalies.confirmed) {
                Ok(lag) => lag,
                Err(e) => {
                    tracing::debug!("sink {}: cannot measure lag: {e}", self.name);
                    return;
                }
            };
        let behind = if readings == 0 && anomalies == 0 {
            self.caught_up_at = Instant::now();
            Duration::ZERO
        } else {
            self.caught_up_at.elapsed()
        };
        self.status.lag_readings.store(readings, Ordering::Relaxed);
        self.status.lag_anomalies.store(anomalies, Ordering::Relaxed);
        self.status.lag_ms.store(behind.as_millis() as i64, Ordering::Relaxed);
        let metrics = &self.context.metrics;
        for (layer, rows) in [(SILVER, readings), (GOLD, anomalies)] {
            let labels = SinkLayerLabels { sink: self.name.to_string(), layer: layer.into() };
            metrics.sink_lag_rows.get_or_create(&labels).set(rows);
        }
        metrics.sink_lag_seconds.get_or_create(&SinkLabels { sink: self.name.to_string() }).set(behind.as_secs_f64());
    }
}

enum Fault {
    Target(TargetError),
    Store(rusqlite::Error),
}

impl From<TargetError> for Fault {
    fn from(e: TargetError) -> Self {
        Fault::Target(e)
    }
}

impl From<rusqlite::Error> for Fault {
    fn from(e: rusqlite::Error) -> Self {
        Fault::Store(e)
    }
}
