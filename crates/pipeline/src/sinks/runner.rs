//! The loop every sink runs: read after the cursors, batch, write, confirm, retry while down.
//! A target that forwards dead letters follows the rejected bronze rows as a third layer.
//! While the target takes one batch of readings the next is read from the store (on the
//! blocking pool), so reading and writing overlap; the cursor still moves only after the
//! target confirmed each batch.

use super::follow::{self, DEAD_LETTERS, GOLD, SILVER};
use super::{AnomalyRecord, Batching, DeadLetterRecord, ReadingRecord, Target, TargetError};
use crate::metrics::{Metrics, SinkLabels, SinkLayerLabels};
use crate::store::watermark::SilverWatermark;
use crate::store::writer::StoreWriter;
use crate::store::{self, Reader, StoreError};
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
/// How often lag (a count over the store) is measured, at most...
const LAG_EVERY: Duration = Duration::from_secs(1);
/// ...and at most this share of the sink's time: counting a lag of millions of rows takes a
/// good part of a second, which a sink catching up should spend writing.
const LAG_SHARE: u32 = 20;
/// How long a stopping sink keeps writing what the store still holds.
const FINAL_DRAIN: Duration = Duration::from_secs(10);
/// The niceness of an analytics sink's threads (its loop and its store reads), above the
/// pipeline's 0: when the cores are busy the scheduler gives a pipeline thread about ten times
/// the share of a sink thread, so a sink slows by lagging rather than ingest by waiting for a
/// core; with cores to spare it changes nothing.
pub const SINK_NICENESS: i32 = 10;

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
    /// The confirmed cursors: the last silver id and gold `change_seq` the target has.
    confirmed_silver: AtomicI64,
    confirmed_gold: AtomicI64,
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
            confirmed_silver: AtomicI64::new(0),
            confirmed_gold: AtomicI64::new(0),
        }
    }

    /// The last silver id and gold `change_seq` the target confirmed.
    pub fn confirmed(&self) -> (i64, i64) {
        (self.confirmed_silver.load(Ordering::Relaxed), self.confirmed_gold.load(Ordering::Relaxed))
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
    let readings = Pending::new(follow::cursor(&connection, name, SILVER)?);
    let anomalies = Pending::new(follow::cursor(&connection, name, GOLD)?);
    let dead_letters = match target.follows_dead_letters() {
        true => Some(Pending::new(follow::cursor(&connection, name, DEAD_LETTERS)?)),
        false => None,
    };
    let store_uid = follow::store_uid(&connection)?;
    let status = Arc::new(SinkStatus::new(name));
    status.confirmed_silver.store(readings.confirmed, Ordering::Relaxed);
    status.confirmed_gold.store(anomalies.confirmed, Ordering::Relaxed);
    let (stop, stopped) = watch::channel(false);
    let runner = Runner {
        target,
        reader: Arc::new(Reader::new(connection)),
        context,
        status: status.clone(),
        stopped,
        readings,
        anomalies,
        dead_letters,
        connected: false,
        down_since: None,
        backoff: FIRST_BACKOFF,
        caught_up_at: Instant::now(),
        next_lag: None,
        name: Arc::from(name),
        store_uid,
    };
    let yields = runner.target.yields_cpu_to_ingest();
    let thread = std::thread::Builder::new()
        .name(format!("sink-{name}"))
        .spawn(move || {
            let lower_priority = move || {
                if yields {
                    yield_cpu_to_ingest(name);
                }
            };
            lower_priority();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name(format!("sink-{name}-read"))
                .on_thread_start(lower_priority)
                .build();
            match runtime {
                Ok(runtime) => runtime.block_on(runner.run()),
                Err(e) => tracing::error!("sink {name}: cannot start its runtime: {e}"),
            }
        })
        .map_err(|source| StoreError::Thread { name: "sink", source })?;
    Ok(SinkHandle { status, stop, thread })
}

/// Lowers the calling thread's CPU priority to [`SINK_NICENESS`] (on Linux a niceness is a
/// thread's own). Where that fails the sink runs at the pipeline's priority (logged at debug).
fn yield_cpu_to_ingest(name: &str) {
    if let Err(e) = rustix::process::setpriority_process(None, SINK_NICENESS) {
        tracing::debug!("sink {name}: cannot lower its CPU priority (it runs at the pipeline's): {e}");
    }
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
    /// The sink's own read connection; reads run on the blocking pool.
    reader: Arc<Reader>,
    context: SinkContext,
    status: Arc<SinkStatus>,
    stopped: watch::Receiver<bool>,
    readings: Pending<ReadingRecord>,
    anomalies: Pending<AnomalyRecord>,
    /// Only for a target that [follows dead letters](Target::follows_dead_letters).
    dead_letters: Option<Pending<DeadLetterRecord>>,
    connected: bool,
    down_since: Option<Instant>,
    backoff: Duration,
    caught_up_at: Instant,
    /// When lag is measured next (at once when `None`).
    next_lag: Option<Instant>,
    name: Arc<str>,
    store_uid: i64,
}

impl<T: Target> Runner<T> {
    async fn run(mut self) {
        self.measure_lag(true).await;
        let mut was_writing = false;
        while !*self.stopped.borrow() {
            if !self.connected && !self.connect().await {
                self.measure_lag(false).await;
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
            // Caught up (nothing to write after writing): the lag is small and shown at once.
            self.measure_lag(was_writing && !wrote).await;
            was_writing = wrote;
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
        self.measure_lag(true).await;
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
            self.readings.extend(self.read_readings(after, room).await?);
        }
        let room = self.anomalies.room(&batching);
        if room > 0 {
            let after = self.anomalies.rows.last().map_or(self.anomalies.confirmed, |r| r.change_seq);
            let rows = self.reader.run(move |c| Ok(follow::anomalies_after(c, after, room)?)).await?;
            self.anomalies.extend(rows);
        }
        let mut wrote = false;
        if !self.readings.rows.is_empty() && (flush || self.readings.due(&batching)) {
            self.write_readings_reading_ahead().await?;
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
        if self.dead_letters.is_some() {
            wrote |= self.step_dead_letters(flush).await?;
        }
        Ok(wrote)
    }

    /// [`Runner::step`] for the dead letters: read what fits, write the batch when it is due.
    async fn step_dead_letters(&mut self, flush: bool) -> Result<bool, Fault> {
        let batching = self.context.batching;
        let Some(pending) = &mut self.dead_letters else { return Ok(false) };
        let room = pending.room(&batching);
        if room > 0 {
            let after = pending.rows.last().map_or(pending.confirmed, |r| r.id);
            pending.extend(self.reader.run(move |c| Ok(follow::dead_letters_after(c, after, room)?)).await?);
        }
        if pending.rows.is_empty() || !(flush || pending.due(&batching)) {
            return Ok(false);
        }
        self.target.write_dead_letters(&pending.rows).await?;
        let last = pending.rows.last().map_or(pending.confirmed, |r| r.id);
        let count = pending.rows.len();
        *pending = Pending::new(last);
        self.confirmed(DEAD_LETTERS, last, count).await;
        Ok(true)
    }

    /// Silver rows after `after` below the watermark, at most `limit`, read on the blocking pool.
    fn read_readings(
        &self,
        after: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ReadingRecord>, StoreError>> + use<T> {
        let reader = self.reader.clone();
        let below = self.context.watermark.get();
        async move { reader.run(move |c| Ok(follow::readings_after(c, after, below, limit)?)).await }
    }

    /// Writes the pending readings and, while the target takes them, reads the batch after
    /// them. The cursor moves once the target confirmed; if it did not, the batch stays pending
    /// and what was read ahead is dropped (it is read again).
    async fn write_readings_reading_ahead(&mut self) -> Result<(), Fault> {
        let batch = std::mem::take(&mut self.readings.rows);
        let last = batch.last().map_or(self.readings.confirmed, |r| r.id);
        let read_ahead = self.read_readings(last, self.context.batching.rows.get());
        let (written, next) = tokio::join!(self.target.write_readings(&batch), read_ahead);
        if let Err(e) = written {
            self.readings.rows = batch;
            return Err(e.into());
        }
        self.readings = Pending::new(last);
        self.confirmed(SILVER, last, batch.len()).await;
        drop(batch);
        match next {
            Ok(rows) => self.readings.extend(rows),
            Err(e) => tracing::debug!("sink {}: reading ahead failed (read again next step): {e}", self.name),
        }
        Ok(())
    }

    async fn confirmed(&mut self, layer: &'static str, position: i64, rows: usize) {
        let labels = SinkLayerLabels { sink: self.name.to_string(), layer: layer.into() };
        self.context.metrics.sink_rows_written.get_or_create(&labels).inc_by(rows as u64);
        let counters = match layer {
            SILVER => Some((&self.status.written_readings, &self.status.confirmed_silver)),
            GOLD => Some((&self.status.written_anomalies, &self.status.confirmed_gold)),
            _ => None,
        };
        if let Some((written, cursor)) = counters {
            written.fetch_add(rows as u64, Ordering::Relaxed);
            cursor.store(position, Ordering::Relaxed);
        }
        if let Err(e) = self.context.store.record_sink_cursor(self.name.clone(), layer, position).await {
            // Only while the pipeline stops; the rows are written again after the next start.
            tracing::warn!("sink {}: cannot record its {layer} cursor {position}: {e}", self.name);
        }
    }

    /// Counts the rows the target lacks, at most once per [`LAG_EVERY`] and within
    /// [`LAG_SHARE`] of the time, unless `now`.
    async fn measure_lag(&mut self, now: bool) {
        if !now && self.next_lag.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let started = Instant::now();
        let (silver_cursor, gold_cursor) = (self.readings.confirmed, self.anomalies.confirmed);
        let counted = self.reader.run(move |c| Ok(follow::lag_rows(c, silver_cursor, gold_cursor)?)).await;
        self.next_lag = Some(Instant::now() + LAG_EVERY.max(started.elapsed() * LAG_SHARE));
        let (readings, anomalies) = match counted {
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
    Store(StoreError),
}

impl From<TargetError> for Fault {
    fn from(e: TargetError) -> Self {
        Fault::Target(e)
    }
}

impl From<StoreError> for Fault {
    fn from(e: StoreError) -> Self {
        Fault::Store(e)
    }
}
