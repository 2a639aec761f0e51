//! WAL checkpoints on a thread and connection of their own, so the store writer never stops to
//! copy pages into the database file.
//!
//! The writer turns SQLite's automatic checkpoint off and nudges this thread after every
//! commit. The thread copies committed WAL frames into the database with a PASSIVE checkpoint
//! (which never blocks the writer), at most every [`MIN_INTERVAL`] so that pages every commit
//! touches (counters, index roots) are copied once per interval rather than once per commit,
//! and publishes how long the log is. A log is only rewound to
//! its start when a transaction begins with every frame copied, which a busy writer rarely
//! sees; so once the log passes [`WAL_REWIND_FRAMES`] the writer runs one checkpoint itself,
//! between two transactions, to catch up the last few frames and let the next one rewind.

use rusqlite::Connection;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// WAL frames (pages; 16 KiB each) after which the writer makes the log rewind.
pub const WAL_REWIND_FRAMES: u64 = 8192;
/// Checkpoints are at least this far apart.
const MIN_INTERVAL: Duration = Duration::from_millis(500);
/// A checkpoint runs at least this often, nudged or not.
const IDLE_INTERVAL: Duration = Duration::from_secs(2);

/// The writer's handle to the checkpoint thread.
#[derive(Debug)]
pub struct Checkpointer {
    nudge: Option<SyncSender<()>>,
    wal_frames: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the checkpoint thread on `connection`, a second read-write connection to the
    /// writer's database.
    pub fn spawn(connection: Connection) -> std::io::Result<Checkpointer> {
        let (nudge, nudged) = std::sync::mpsc::sync_channel(1);
        let wal_frames = Arc::new(AtomicU64::new(0));
        let published = wal_frames.clone();
        let thread = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || run(&connection, &nudged, &published))?;
        Ok(Checkpointer { nudge: Some(nudge), wal_frames, thread: Some(thread) })
    }

    /// Asks for a checkpoint soon (after a commit); never waits.
    pub fn nudge(&self) {
        if let Some(nudge) = &self.nudge {
            // Full: a nudge is already waiting. Disconnected: the thread has stopped.
            let _ = nudge.try_send(());
        }
    }

    /// Whether the log has grown long enough that the writer should let it rewind.
    pub fn wants_rewind(&self) -> bool {
        self.wal_frames.load(Ordering::Relaxed) >= WAL_REWIND_FRAMES
    }

    /// Records that the writer caught the log up, so the next transaction rewinds it.
    pub fn rewound(&self) {
        self.wal_frames.store(0, Ordering::Relaxed);
    }

    /// Stops the thread after its current checkpoint.
    pub fn stop(&mut self) {
        self.nudge = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("store: the checkpoint thread panicked");
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(connection: &Connection, nudged: &Receiver<()>, wal_frames: &AtomicU64) {
    let mut due = false;
    loop {
        if !due {
            match nudged.recv_timeout(IDLE_INTERVAL) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        match passive_checkpoint(connection) {
            Ok(frames) => wal_frames.store(frames, Ordering::Relaxed),
            Err(e) => tracing::warn!("store: background WAL checkpoint failed (retried in a moment): {e}"),
        }
        match rest(nudged, MIN_INTERVAL) {
            Some(nudged_meanwhile) => due = nudged_meanwhile,
            None => return,
        }
    }
}

/// Waits `interval`; says whether a nudge came meanwhile, or `None` once the writer has gone.
fn rest(nudged: &Receiver<()>, interval: Duration) -> Option<bool> {
    let until = Instant::now() + interval;
    let mut nudged_meanwhile = false;
    loop {
        match nudged.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(()) => nudged_meanwhile = true,
            Err(RecvTimeoutError::Timeout) => return Some(nudged_meanwhile),
            Err(RecvTimeoutError::Disconnected) => return None,
        }
    }
}

/// Copies what it can of the WAL into the database without waiting for anyone; returns the
/// log's length in frames.
pub fn passive_checkpoint(connection: &Connection) -> rusqlite::Result<u64> {
    connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        let frames: i64 = row.get(1)?;
        Ok(frames.max(0) as u64)
    })
}

/// Opens the checkpoint thread's connection to the database at `path`.
pub fn open_connection(path: &Path, synchronous: &str) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    connection.pragma_update(None, "synchronous", synchronous)?;
    connection.busy_timeout(Duration::from_secs(5))?;
    Ok(connection)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_frames(connection: &Connection) -> u64 {
        passive_checkpoint(connection).expect("checkpoint")
    }

    #[test]
    fn background_checkpoints_copy_the_log_and_a_caught_up_writer_rewinds_it() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join("test.db");
        let writer = Connection::open(&path).expect("open");
        writer.pragma_update(None, "journal_mode", "WAL").expect("wal");
        writer.pragma_update(None, "wal_autocheckpoint", 0).expect("no automatic checkpoints");
        writer.execute_batch("CREATE TABLE t (x BLOB)").expect("table");
        let checkpointer = Checkpointer::spawn(open_connection(&path, "NORMAL").expect("open")).expect("thread");
        let insert_megabytes = || {
            writer.execute("INSERT INTO t (x) VALUES (zeroblob(1048576))", []).expect("insert");
        };
        for _ in 0..8 {
            insert_megabytes();
            checkpointer.nudge();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while checkpointer.wal_frames.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "the checkpoint thread published no log length");
            std::thread::sleep(Duration::from_millis(20));
        }
        let grown = log_frames(&writer);
        assert!(grown >= 8 * 256, "8 MiB in 4 KiB pages is at least 2048 frames, the log has {grown}");

        // Caught up between transactions, the next transaction starts the log afresh.
        passive_checkpoint(&writer).expect("checkpoint");
        insert_megabytes();
        let rewound = log_frames(&writer);
        assert!(rewound < grown / 4, "the log should restart after a full checkpoint: {rewound} of {grown} frames");
        let rows: i64 = writer.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).expect("count");
        assert_eq!(rows, 9);
    }

    #[test]
    fn stopping_joins_the_thread_promptly() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join("test.db");
        let writer = Connection::open(&path).expect("open");
        writer.pragma_update(None, "journal_mode", "WAL").expect("wal");
        let mut checkpointer = Checkpointer::spawn(open_connection(&path, "NORMAL").expect("open")).expect("thread");
        checkpointer.nudge();
        let started = Instant::now();
        checkpointer.stop();
        assert!(started.elapsed() < IDLE_INTERVAL, "stop waited {:?}", started.elapsed());
    }
}
