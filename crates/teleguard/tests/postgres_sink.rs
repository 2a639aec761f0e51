//! The PostgreSQL sink against a real PostgreSQL on a loopback port, through the real binary:
//! a simulated fleet arrives exactly once although the server is stopped mid-stream while
//! ingest goes on; a server that is not there at start is waited for; a bad URL stops the start;
//! a batch written again after a crash is merged, and every value arrives exact.
//!
//! Skipped (with a message) only when PostgreSQL is not installed and `CI` is unset;
//! `scripts/test` installs Debian's postgresql.

mod common;

use common::postgres::{Postgres, postgres_or_skip};
use common::{
    HISTORICAL, Server, client, free_port, metric, simulate_to, sink_stats, wait_for, wait_success, wait_until_analysed,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use teleguard_pipeline::sinks::ReadingRecord;
use teleguard_pipeline::sinks::Target;
use teleguard_pipeline::sinks::postgres::{PostgresSinkConfig, PostgresTarget, RawPostgresSink};

fn write_config(dir: &Path, url: &str) -> PathBuf {
    let path = dir.join("teleguard.toml");
    let config = format!("{HISTORICAL}[sinks.postgres]\nurl = \"{url}\"\nbatch_rows = 2000\nbatch_ms = 100\n");
    std::fs::write(&path, config).unwrap();
    path
}

/// (id, change_seq, episode end) of every anomaly in the embedded store.
fn store_anomalies(data_dir: &Path) -> Vec<(String, i64, Option<i64>)> {
    let connection = rusqlite::Connection::open_with_flags(
        data_dir.join("teleguard.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut statement =
        connection.prepare("SELECT id, change_seq, episode_end_ms FROM telemetry_anomalies ORDER BY id").unwrap();
    statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().collect::<Result<_, _>>().unwrap()
}

fn store_count(data_dir: &Path, sql: &str) -> i64 {
    let connection = rusqlite::Connection::open_with_flags(
        data_dir.join("teleguard.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    connection.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reading_and_anomaly_arrives_once_although_postgres_stops_mid_stream() {
    let Some(bin) = postgres_or_skip("every_reading_and_anomaly_arrives_once_although_postgres_stops_mid_stream")
    else {
        return;
    };
    let folder = tempfile::tempdir().unwrap();
    let postgres = Postgres::new(bin, free_port());
    postgres.start();
    let config = write_config(folder.path(), &postgres.url());
    let data_dir = folder.path().join("data");
    let server = Server::start(&data_dir, &["--config", config.to_str().unwrap()]);
    let http = client();

    // An hour of the fleet at 360x real time; PostgreSQL stops while it streams in.
    let first_hour = simulate_to(&server, 5, "2024-09-04T08:00:00Z", "1h", "360");
    wait_for("the first readings in PostgreSQL", || async {
        (postgres.count_if_there("SELECT count(*) FROM readings").await? > 1000).then_some(())
    })
    .await;
    postgres.stop();
    let stopped_at = Instant::now();
    wait_success(first_hour, "the first hour");
    // Ingest goes on while the target is down: another 30 minutes, as fast as it goes.
    wait_success(simulate_to(&server, 5, "2024-09-04T09:00:00Z", "30m", "max"), "the next half hour");
    // Acknowledged means in bronze; the sink follows silver, so the lag shows once analysis caught up.
    wait_until_analysed(&http, &server).await;
    let analysed = store_count(&data_dir, "SELECT count(*) FROM silver");
    assert!(analysed > 50_000, "a fleet's 90 minutes are stored: {analysed}");
    // The lag is measured between retries (at most a backoff, 5 s, apart).
    let down = wait_for("the sink to report its lag while PostgreSQL is down", || async {
        let sink = sink_stats(&http, &server, "postgres").await;
        (sink["lag_readings"].as_i64().unwrap() > 0).then_some(sink)
    })
    .await;
    assert_eq!(down["up"], false, "{down}");
    let lag_text = http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metric(&lag_text, r#"teleguard_sink_lag_rows{sink="postgres",layer="silver"}"#) > 0.0);
    assert_eq!(metric(&lag_text, r#"teleguard_sink_up{sink="postgres"}"#), 0.0);
    eprintln!("ingest went on for {:.1} s with PostgreSQL down: {down}", stopped_at.elapsed().as_secs_f64());

    postgres.start();
    wait_until_analysed(&http, &server).await;
    let caught_up = wait_for("the sink to catch up", || async {
        let sink = sink_stats(&http, &server, "postgres").await;
        (sink["up"] == true && sink["lag_readings"] == 0 && sink["lag_anomalies"] == 0).then_some(sink)
    })
    .await;
    assert_eq!(caught_up["lag_seconds"], 0.0, "{caught_up}");
    let text = http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&text, r#"teleguard_sink_lag_rows{sink="postgres",layer="silver"}"#), 0.0);
    assert_eq!(metric(&text, r#"teleguard_sink_lag_rows{sink="postgres",layer="gold"}"#), 0.0);
    assert_eq!(metric(&text, r#"teleguard_sink_up{sink="postgres"}"#), 1.0);

    // Every reading exactly once (ids are the primary key, and the same ids as silver).
    let silver = store_count(&data_dir, "SELECT count(*) FROM silver");
    let silver_id_sum = store_count(&data_dir, "SELECT sum(id) FROM silver");
    assert_eq!(postgres.count("SELECT count(*) FROM readings").await, silver);
    assert_eq!(postgres.count("SELECT sum(id)::bigint FROM readings").await, silver_id_sum);
    // Every anomaly once, each in its latest state (closed episodes with their end).
    let stored = store_anomalies(&data_dir);
    assert!(!stored.is_empty(), "the injected faults were detected");
    let client = postgres.client().await;
    let rows = client
        .query(
            "SELECT id, change_seq, (extract(epoch FROM episode_end) * 1000)::bigint FROM anomalies ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let copied: Vec<(String, i64, Option<i64>)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(copied.len(), stored.len());
    assert!(copied == stored, "PostgreSQL holds every anomaly of the store in its latest state");
    let closed = stored.iter().filter(|a| a.2.is_some()).count();
    eprintln!("{silver} readings and {} anomalies ({closed} closed episodes) arrived exactly once", stored.len());

    // The cursors survive a restart: nothing is written again.
    assert!(server.terminate().success());
    let server = Server::start(&data_dir, &["--config", config.to_str().unwrap()]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after_restart = sink_stats(&http, &server, "postgres").await;
    assert_eq!(after_restart["written_readings"], 0, "{after_restart}");
    assert_eq!(after_restart["lag_readings"], 0, "{after_restart}");
    assert_eq!(postgres.count("SELECT count(*) FROM readings").await, silver);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_not_there_at_start_is_waited_for_and_then_caught_up() {
    let Some(bin) = postgres_or_skip("a_server_that_is_not_there_at_start_is_waited_for_and_then_caught_up") else {
        return;
    };
    let folder = tempfile::tempdir().unwrap();
    let postgres = Postgres::new(bin, free_port());
    let config = write_config(folder.path(), &postgres.url());
    let log_path = folder.path().join("teleguard.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let data_dir = folder.path().join("data");
    let server = Server::start_with_stderr(&data_dir, &["--config", config.to_str().unwrap()], log);
    let http = client();
    wait_success(simulate_to(&server, 5, "2024-09-04T08:00:00Z", "10m", "max"), "ten minutes of the fleet");
    wait_until_analysed(&http, &server).await;
    let stored = store_count(&data_dir, "SELECT count(*) FROM silver");
    assert!(stored > 1000, "ingest works with the target down: {stored}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log_text = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(log_text.matches("sink postgres: target down").count(), 1, "logged once:\n{log_text}");
    assert!(log_text.contains(&format!("127.0.0.1:{}", postgres.port)), "names the server:\n{log_text}");

    postgres.start();
    wait_until_analysed(&http, &server).await;
    let stored = store_count(&data_dir, "SELECT count(*) FROM silver");
    wait_for("the sink to catch up", || async {
        let sink = sink_stats(&http, &server, "postgres").await;
        (sink["up"] == true && sink["lag_readings"] == 0 && sink["written_readings"] == stored).then_some(())
    })
    .await;
    // The database did not exist: the sink made it, and its tables.
    assert_eq!(postgres.count("SELECT count(*) FROM readings").await, stored);
    drop(server);
    let log_text = std::fs::read_to_string(&log_path).unwrap();
    assert!(!log_text.contains("panicked"), "{log_text}");

    // Another data folder's readings are numbered from 1 again: the database refuses them
    // instead of taking them for copies of what it holds.
    let other_log_path = folder.path().join("other.log");
    let other_log = std::fs::File::create(&other_log_path).unwrap();
    let other =
        Server::start_with_stderr(&folder.path().join("other"), &["--config", config.to_str().unwrap()], other_log);
    wait_success(simulate_to(&other, 5, "2024-09-05T08:00:00Z", "2m", "max"), "another store's readings");
    wait_for("the refusal in the log", || async {
        let text = std::fs::read_to_string(&other_log_path).unwrap();
        text.contains("holds the rows of another teleguard store").then_some(())
    })
    .await;
    assert_eq!(sink_stats(&http, &other, "postgres").await["up"], false);
    assert_eq!(postgres.count("SELECT count(*) FROM readings").await, stored);
}

#[test]
fn a_bad_url_stops_the_start_and_names_the_key() {
    let folder = tempfile::tempdir().unwrap();
    let config = write_config(folder.path(), "postgresql://postgres:hunter2@127.0.0.1:notaport/teleguard");
    let output = Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["run", "--simulate", "none", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(folder.path().join("data"))
        .output()
        .expect("run teleguard");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("sinks.postgres.url"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "the password is not printed: {stderr}");
}

/// A reading as the sink copies it, at `timestamp_ms`.
fn record(id: i64, timestamp_ms: i64) -> ReadingRecord {
    ReadingRecord {
        id,
        profile: "vehicle".into(),
        entity_id: format!("V{:03}", id % 3),
        timestamp_ms,
        latitude: Some(51.5 + id as f64 * 1e-4),
        longitude: None,
        metrics: format!(r#"{{"speed_kmh":{id}.5,"engine_temp_c":90}}"#),
        attributes: r#"{"note":"quote \" and é"}"#.into(),
        driver_name: (id % 2 == 0).then(|| "Alice".to_string()),
        current_zone: None,
        processed_at_ms: timestamp_ms + 7,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_written_again_after_a_crash_is_merged_and_every_value_arrives_exact() {
    let Some(bin) = postgres_or_skip("a_batch_written_again_after_a_crash_is_merged_and_every_value_arrives_exact")
    else {
        return;
    };
    let postgres = Postgres::new(bin, free_port());
    postgres.start();
    let mut errors = Vec::new();
    let raw = RawPostgresSink { url: postgres.url(), batch_rows: None, batch_ms: None, connect_timeout_ms: None };
    let config = PostgresSinkConfig::validate(raw, &mut errors).expect("a valid sink config");
    let mut target = PostgresTarget::new(config);
    target.connect(42).await.unwrap();

    // Millisecond times either side of the Unix and PostgreSQL epochs, one before both.
    let times = [1_725_436_800_123, 946_684_799_999, -1_500, 0, 1_725_436_801_000];
    let first: Vec<ReadingRecord> = (1..=3).map(|id| record(id, times[id as usize - 1])).collect();
    target.write_readings(&first).await.unwrap();
    // The sink crashed after the server's confirmation and before its cursor's commit: the
    // next batch starts again inside the first.
    let again: Vec<ReadingRecord> = (2..=5).map(|id| record(id, times[id as usize - 1])).collect();
    target.write_readings(&again).await.unwrap();

    let client = postgres.client().await;
    let rows = client
        .query(
            r#"SELECT id, entity_id, (extract(epoch FROM "timestamp") * 1000)::bigint,
                      (extract(epoch FROM processed_at) * 1000)::bigint, latitude, longitude,
                      metrics->>'speed_kmh', attributes->>'note', driver_name, current_zone
               FROM readings ORDER BY id"#,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 5, "every reading once");
    for (row, id) in rows.iter().zip(1i64..) {
        let want = record(id, times[id as usize - 1]);
        assert_eq!(row.get::<_, i64>(0), id);
        assert_eq!(row.get::<_, String>(1), want.entity_id);
        assert_eq!(row.get::<_, i64>(2), want.timestamp_ms, "timestamp of reading {id}");
        assert_eq!(row.get::<_, i64>(3), want.processed_at_ms, "processed_at of reading {id}");
        assert_eq!(row.get::<_, Option<f64>>(4), want.latitude);
        assert_eq!(row.get::<_, Option<f64>>(5), None);
        assert_eq!(row.get::<_, String>(6), format!("{id}.5"));
        assert_eq!(row.get::<_, String>(7), "quote \" and é");
        assert_eq!(row.get::<_, Option<String>>(8), want.driver_name);
        assert_eq!(row.get::<_, Option<String>>(9), None);
    }

    // A document the server cannot take fails the batch with the server's reason, and the
    // connection is made again for the next batch.
    let mut broken = record(6, times[0]);
    broken.metrics = "{not json".into();
    let error = target.write_readings(&[broken]).await.unwrap_err().to_string();
    assert!(error.contains("copy readings") && error.contains("json"), "{error}");
    target.connect(42).await.unwrap();
    target.write_readings(&[record(6, times[0])]).await.unwrap();
    assert_eq!(postgres.count("SELECT count(*) FROM readings").await, 6);
}
