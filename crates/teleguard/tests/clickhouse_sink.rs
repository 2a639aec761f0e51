//! The ClickHouse sink against a real ClickHouse on loopback ports, through the real binary:
//! `teleguard clickhouse init` applies reference 000's schema; a simulated fleet arrives exactly
//! once by id although the server is stopped mid-stream while ingest goes on; a server that is
//! not there at start is waited for; a URL that is not HTTP stops the start.
//!
//! Skipped (with a message) only when clickhouse-server is not installed and `CI` is unset;
//! `scripts/test` installs Debian's clickhouse-server and clickhouse-client.

mod common;

use common::clickhouse::{ClickHouse, clickhouse_or_skip};
use common::{
    HISTORICAL, Server, client, metric, simulate_to, sink_stats, wait_for, wait_success, wait_until_analysed,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn write_config(dir: &Path, url: &str) -> PathBuf {
    let path = dir.join("teleguard.toml");
    let config = format!(
        "{HISTORICAL}[sinks.clickhouse]\nurl = \"{url}\"\nbatch_rows = 5000\nbatch_ms = 100\nkafka_brokers = \"127.0.0.1:9092\"\n"
    );
    std::fs::write(&path, config).unwrap();
    path
}

fn store(data_dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(data_dir.join("teleguard.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap()
}

fn store_count(data_dir: &Path, sql: &str) -> i64 {
    store(data_dir).query_row(sql, [], |r| r.get(0)).unwrap()
}

/// `id \t change_seq \t episode_end_ms` lines of every anomaly in the store, by id.
fn store_anomalies(data_dir: &Path) -> String {
    let connection = store(data_dir);
    let mut statement =
        connection.prepare("SELECT id, change_seq, episode_end_ms FROM telemetry_anomalies ORDER BY id").unwrap();
    let rows = statement
        .query_map([], |r| {
            let end: Option<i64> = r.get(2)?;
            Ok(format!(
                "{}\t{}\t{}\n",
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                end.map_or("\\N".to_string(), |e| e.to_string())
            ))
        })
        .unwrap();
    rows.collect::<Result<String, _>>().unwrap()
}

fn init(config: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["clickhouse", "init", "--config"])
        .arg(config)
        .output()
        .expect("run teleguard clickhouse init");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reading_and_anomaly_arrives_once_by_id_although_clickhouse_stops_mid_stream() {
    let test = "every_reading_and_anomaly_arrives_once_by_id_although_clickhouse_stops_mid_stream";
    let Some(binary) = clickhouse_or_skip(test) else { return };
    let folder = tempfile::tempdir().unwrap();
    let mut clickhouse = ClickHouse::new(binary, &folder.path().join("clickhouse"));
    clickhouse.start().await;
    let config = write_config(folder.path(), &clickhouse.url());

    // Reference 000's schema, twice (the second run changes nothing).
    let printed = init(&config);
    assert!(printed.contains("server 18.") || printed.contains("server 2"), "names the server version: {printed}");
    assert_eq!(init(&config), printed);
    let tables =
        clickhouse.query("SELECT name, engine FROM system.tables WHERE database = 'teleguard' ORDER BY name").await;
    for (table, engine) in [
        ("enriched_telemetry_history", "ReplacingMergeTree"),
        ("live_telemetry_queue", "MergeTree"),
        ("live_telemetry_stream", "Kafka"),
        ("telemetry_anomalies", "ReplacingMergeTree"),
        ("telemetry_consumer_mv", "MaterializedView"),
        ("telemetry_history", "ReplacingMergeTree"),
    ] {
        assert!(tables.contains(&format!("{table}\t{engine}\n")), "{table} ({engine}) in:\n{tables}");
    }
    let queue = clickhouse.query("SHOW CREATE TABLE teleguard.live_telemetry_queue").await;
    assert!(queue.contains("PARTITION BY toYYYYMM(timestamp) ORDER BY (vehicle_id, timestamp)"), "{queue}");

    let data_dir = folder.path().join("data");
    let server = Server::start(&data_dir, &["--config", config.to_str().unwrap()]);
    let http = client();
    let first_hour = simulate_to(&server, 9, "2024-09-04T08:00:00Z", "1h", "360");
    wait_for("the first readings in ClickHouse", || async {
        (clickhouse.number("SELECT count() FROM teleguard.telemetry_history").await > 1000).then_some(())
    })
    .await;
    clickhouse.stop();
    wait_success(first_hour, "the first hour");
    wait_success(simulate_to(&server, 9, "2024-09-04T09:00:00Z", "30m", "max"), "the next half hour");
    // Acknowledged means in bronze; the sink follows silver, so the lag shows once analysis caught up.
    wait_until_analysed(&http, &server).await;
    // The lag is measured between retries (at most a backoff, 5 s, apart).
    let down = wait_for("the sink to report its lag while ClickHouse is down", || async {
        let sink = sink_stats(&http, &server, "clickhouse").await;
        (sink["lag_readings"].as_i64().unwrap() > 0).then_some(sink)
    })
    .await;
    assert_eq!(down["up"], false, "{down}");
    let text = http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metric(&text, r#"teleguard_sink_lag_rows{sink="clickhouse",layer="silver"}"#) > 0.0);

    clickhouse.start().await;
    wait_until_analysed(&http, &server).await;
    wait_for("the sink to catch up", || async {
        let sink = sink_stats(&http, &server, "clickhouse").await;
        (sink["up"] == true && sink["lag_readings"] == 0 && sink["lag_anomalies"] == 0).then_some(sink)
    })
    .await;
    let silver = store_count(&data_dir, "SELECT count(*) FROM silver");
    let text = http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&text, r#"teleguard_sink_lag_rows{sink="clickhouse",layer="silver"}"#), 0.0);
    assert_eq!(metric(&text, r#"teleguard_sink_lag_seconds{sink="clickhouse"}"#), 0.0);

    // Every reading by id: vehicles in enriched_telemetry_history, the rest in telemetry_history.
    let vehicles = store_count(&data_dir, "SELECT count(*) FROM silver WHERE profile = 'vehicle'");
    assert!(vehicles > 0 && vehicles < silver);
    let (history, enriched) = ("teleguard.telemetry_history", "teleguard.enriched_telemetry_history");
    assert_eq!(clickhouse.number(&format!("SELECT uniqExact(id) FROM {enriched}")).await, vehicles);
    assert_eq!(clickhouse.number(&format!("SELECT uniqExact(id) FROM {history}")).await, silver - vehicles);
    let id_sum = store_count(&data_dir, "SELECT sum(id) FROM silver");
    let distinct_sum =
        format!("SELECT sum(id) FROM (SELECT DISTINCT id FROM {enriched} UNION ALL SELECT DISTINCT id FROM {history})");
    assert_eq!(clickhouse.number(&distinct_sum).await, id_sum);
    // Every anomaly by id, in its latest version.
    let stored = store_anomalies(&data_dir);
    assert!(!stored.is_empty());
    let copied = clickhouse
        .query(
            "SELECT id, max(change_seq), argMax(episode_end_ms, change_seq) FROM teleguard.telemetry_anomalies
             GROUP BY id ORDER BY id FORMAT TabSeparated",
        )
        .await;
    assert!(copied == stored, "ClickHouse holds every anomaly of the store in its latest version");
    let rows = clickhouse.number(&format!("SELECT count() FROM {history}")).await
        + clickhouse.number(&format!("SELECT count() FROM {enriched}")).await;
    eprintln!("{silver} readings ({rows} rows before merges) and {} anomalies arrived by id", stored.lines().count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clickhouse_that_is_not_there_at_start_is_waited_for() {
    let Some(binary) = clickhouse_or_skip("a_clickhouse_that_is_not_there_at_start_is_waited_for") else { return };
    let folder = tempfile::tempdir().unwrap();
    let mut clickhouse = ClickHouse::new(binary, &folder.path().join("clickhouse"));
    let config = write_config(folder.path(), &clickhouse.url());
    let log_path = folder.path().join("teleguard.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let data_dir = folder.path().join("data");
    let server = Server::start_with_stderr(&data_dir, &["--config", config.to_str().unwrap()], log);
    let http = client();
    wait_success(simulate_to(&server, 9, "2024-09-04T08:00:00Z", "10m", "max"), "ten minutes of the fleet");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log_text = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(log_text.matches("sink clickhouse: target down").count(), 1, "logged once:\n{log_text}");
    assert!(log_text.contains(&format!("127.0.0.1:{}", clickhouse.http_port)), "names the server:\n{log_text}");

    clickhouse.start().await;
    wait_until_analysed(&http, &server).await;
    let stored = store_count(&data_dir, "SELECT count(*) FROM silver");
    wait_for("the sink to catch up", || async {
        let sink = sink_stats(&http, &server, "clickhouse").await;
        (sink["up"] == true && sink["written_readings"] == stored).then_some(())
    })
    .await;
    // The sink made its own tables (no `clickhouse init` ran).
    let written = clickhouse.number("SELECT uniqExact(id) FROM teleguard.telemetry_history").await
        + clickhouse.number("SELECT uniqExact(id) FROM teleguard.enriched_telemetry_history").await;
    assert_eq!(written, stored);
}

#[test]
fn a_url_that_is_not_http_stops_the_start_and_names_the_key() {
    let folder = tempfile::tempdir().unwrap();
    let config = write_config(folder.path(), "tcp://127.0.0.1:9000");
    let output = Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["run", "--simulate", "none", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(folder.path().join("data"))
        .output()
        .expect("run teleguard");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("sinks.clickhouse.url") && stderr.contains("http://HOST:PORT"), "{stderr}");
}
