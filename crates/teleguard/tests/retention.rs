//! Retention through the real binary: rows older than their layer's window leave the store
//! (bronze, dead letters included, and silver, each by when it arrived: readings with event
//! times ten days back stay their window), a sink that has not confirmed silver rows holds them
//! back, and under a steady simulated fleet the store file stops growing once retention keeps
//! pace (freed pages are reused).

mod common;

use common::{HISTORICAL, Server, client, free_port, get_json, metric, post, wait_for};
use serde_json::json;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use teleguard_core::time::{format_millis, now_millis};

const DAY_MS: i64 = 86_400_000;
const BATCH: usize = 50;
const FIRST: usize = 500;
const SECOND: usize = 50;
/// Bronze keeps rows 2 s, silver 10 s.
const BRONZE_SECS: f64 = 2.0;
const SILVER_SECS: f64 = 10.0;

fn count(data_dir: &Path, sql: &str) -> i64 {
    let connection = rusqlite::Connection::open_with_flags(
        data_dir.join("teleguard.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the store");
    connection.busy_timeout(Duration::from_secs(5)).unwrap();
    connection.query_row(sql, [], |r| r.get(0)).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Retention keeps bronze [`BRONZE_SECS`] and silver [`SILVER_SECS`], 100 rows a step.
fn config(dir: &Path, extra: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("teleguard.toml");
    let (bronze_days, silver_days) = (BRONZE_SECS / 86_400.0, SILVER_SECS / 86_400.0);
    let text = format!(
        "{HISTORICAL}[store.retention]\nbronze_days = {bronze_days}\nsilver_days = {silver_days}\n\
         interval_secs = 0.2\nbatch_rows = 100\n{extra}"
    );
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// `readings` vehicle readings with event times ten days back, in submissions of [`BATCH`].
async fn send(http: &reqwest::Client, server: &Server, readings: usize) {
    let ten_days_ago = now_millis() - 10 * DAY_MS;
    for batch in 0..readings / BATCH {
        let body: Vec<_> = (0..BATCH)
            .map(|i| {
                let at = ten_days_ago + ((batch * BATCH + i) as i64) * 5_000;
                json!({"vehicle_id": format!("V{:03}", i % 7), "timestamp": format_millis(at), "latitude": 37.7749,
                       "longitude": -122.4194, "speed": 40.0, "engine_status": "on"})
            })
            .collect();
        assert_eq!(post(http, server, "vehicle", serde_json::to_vec(&body).unwrap()).await.0, 202);
    }
}

async fn retention_metric(http: &reqwest::Client, server: &Server, layer: &str) -> f64 {
    let text = http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    metric(&text, &format!("teleguard_store_retention_deleted_rows_total{{layer=\"{layer}\"}}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_older_than_their_window_leave_and_a_sink_behind_holds_silver_back() {
    let folder = tempfile::tempdir().unwrap();
    let http = client();

    // No sink. Bronze (with a dead letter) leaves after 2 s while silver keeps its readings,
    // ten-day-old event times and all; after 10 s they leave silver too, and the readings
    // that came later stay.
    let trimmed_dir = folder.path().join("trimmed");
    let server = Server::start(&trimmed_dir, &["--config", &config(&folder.path().join("trimmed-config"), "")]);
    send(&http, &server, FIRST).await;
    assert_eq!(post(&http, &server, "vehicle", r#"{"vehicle_id": "V1"}"#.to_string()).await.0, 422);
    let first_sent = Instant::now();
    wait_for("bronze rows, the dead letter too, to leave 2 s after arrival", || async {
        (count(&trimmed_dir, "SELECT count(*) FROM bronze") == 0).then_some(())
    })
    .await;
    assert!(first_sent.elapsed() < Duration::from_secs_f64(SILVER_SECS), "the test ran too slowly to tell");
    assert_eq!(count(&trimmed_dir, "SELECT count(*) FROM silver"), FIRST as i64, "silver keeps them for 10 s");
    tokio::time::sleep(Duration::from_secs(3)).await;
    send(&http, &server, SECOND).await;
    wait_for("the first readings to leave silver", || async {
        (count(&trimmed_dir, "SELECT count(*) FROM silver") == SECOND as i64).then_some(())
    })
    .await;
    let first_rows = (FIRST / BATCH + 1) as f64;
    assert_eq!(retention_metric(&http, &server, "silver").await, FIRST as f64);
    assert!(retention_metric(&http, &server, "bronze").await >= first_rows, "bronze rows of the first sending");
    assert_eq!(retention_metric(&http, &server, "gold").await, 0.0, "gold is kept by default");
    let stats = get_json(&http, &server.url("/api/stats")).await;
    assert_eq!(stats["totals"]["valid"], (FIRST + SECOND) as i64, "counts survive retention: {stats}");
    drop(server);

    // A PostgreSQL sink whose server is not there confirms nothing: past both windows silver
    // keeps every row, while bronze, which sinks do not read, is trimmed all the same.
    let held_dir = folder.path().join("held");
    let sink = format!("[sinks.postgres]\nurl = \"postgresql://postgres@127.0.0.1:{}/teleguard\"\n", free_port());
    let server = Server::start(&held_dir, &["--config", &config(&folder.path().join("held-config"), &sink)]);
    send(&http, &server, FIRST).await;
    wait_for("bronze to be trimmed", || async { (count(&held_dir, "SELECT count(*) FROM bronze") == 0).then_some(()) })
        .await;
    tokio::time::sleep(Duration::from_secs_f64(SILVER_SECS + 1.0)).await;
    assert_eq!(count(&held_dir, "SELECT count(*) FROM silver"), FIRST as i64);
    assert_eq!(retention_metric(&http, &server, "silver").await, 0.0);
}

/// Pages in use (page_count - freelist_count) and the database file's pages.
fn pages(data_dir: &Path) -> (i64, i64) {
    let total = count(data_dir, "PRAGMA page_count");
    let free = count(data_dir, "PRAGMA freelist_count");
    (total - free, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_file_stops_growing_once_retention_keeps_pace_with_a_steady_fleet() {
    let folder = tempfile::tempdir().unwrap();
    let data_dir = folder.path().join("data");
    // 10 s of bronze and silver; the simulator runs in real time, so event time ~ arrival.
    let window_days = 10.0 / 86_400.0;
    let path = folder.path().join("teleguard.toml");
    std::fs::write(
        &path,
        format!(
            "[store.retention]\nbronze_days = {window_days}\nsilver_days = {window_days}\ninterval_secs = 0.5\nbatch_rows = 2000\n"
        ),
    )
    .unwrap();
    let server = Server::start(&data_dir, &["--config", path.to_str().unwrap()]);
    let run_secs = 60;
    let mut simulator = Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["simulate", "--profile", "vehicle", "--entities", "1000", "--anomaly-rate", "0"])
        .args(["--duration", &format!("{run_secs}s"), "--speed", "1", "--to", &server.base])
        .stdout(Stdio::null())
        .spawn()
        .expect("start teleguard simulate");
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(run_secs - 2) {
        tokio::time::sleep(Duration::from_secs(4)).await;
        let (used, total) = pages(&data_dir);
        let silver = count(&data_dir, "SELECT count(*) FROM silver");
        eprintln!(
            "after {:>2} s: {used} pages used of {total} in the file, {silver} silver rows",
            started.elapsed().as_secs()
        );
        samples.push((used, total, silver));
    }
    assert!(simulator.wait().unwrap().success(), "teleguard simulate failed");
    let http = client();
    let text = http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let deleted = metric(&text, "teleguard_store_retention_deleted_rows_total{layer=\"silver\"}");
    assert!(deleted > 0.0, "retention deleted silver rows");
    // 1000 vehicles every 5 s for 10 s is about 2,000 silver rows kept, whatever the run's length.
    let (_, _, last_silver) = *samples.last().unwrap();
    assert!(last_silver < 4_000, "silver holds about a 10 s window, not {last_silver} rows");
    // Past the first windows the file grows no more: its pages in the second half of the run
    // stay within a fifth of the first third's.
    let third = samples.len() / 3;
    let early = samples[..=third].iter().map(|s| s.1).max().unwrap();
    let late = samples[samples.len() / 2..].iter().map(|s| s.1).max().unwrap();
    assert!(late as f64 <= early as f64 * 1.2, "the file kept growing: {early} pages early, {late} late ({samples:?})");
}
