//! Threat hunts through the real binary: on tracks where each of reference 000's three queries
//! goes wrong, `teleguard hunt` gives the right episodes from the embedded store, ClickHouse and
//! PostgreSQL alike (and `GET /api/hunts/{name}` from the embedded store); and on a simulated
//! fleet (a day; a week with TELEGUARD_HUNTS_FLEET=7d) the hunts find exactly the episodes the streaming rules raised.
//!
//! The ClickHouse and PostgreSQL parts are skipped (with a message) only when the server is not
//! installed and `CI` is unset; `scripts/test` installs both.

mod common;

use common::clickhouse::{ClickHouse, clickhouse_or_skip};
use common::postgres::{Postgres, postgres_or_skip};
use common::{Server, client, free_port, get_json, historical_config, sink_stats, wait_for, wait_success};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use teleguard_core::time::format_millis;

const MINUTE: i64 = 60_000;
/// 2026-03-02 00:00:00 UTC, a Monday.
const DAY0: i64 = 1_772_409_600_000;
/// Inside the bundled `Restricted Area` zone Z01 (south of San Francisco).
const RESTRICTED: (f64, f64) = (37.6174, -122.3919);
/// In no bundled zone.
const OPEN_ROAD: (f64, f64) = (37.7749, -122.4194);
/// Los Angeles, 550 km from the open road above.
const FAR_AWAY: (f64, f64) = (34.0522, -118.2437);

/// The built-in vehicle profile with the fleet's own time zone for the geofence rule.
const VEHICLE_IN_LOS_ANGELES: &str = r#"
[profiles.vehicle]
entity_field = "vehicle_id"
timestamp_field = "timestamp"
latitude_field = "latitude"
longitude_field = "longitude"
enrich = ["drivers", "geofences"]
metrics = [{ field = "speed", unit = "km/h", min = 0, max = 400 }]
attributes = [{ field = "engine_status", values = ["on", "off", "idle"], required = false }]
detectors.zscore = { enabled = false }
detectors.teleport = { max_speed_kmh = 400 }
detectors.geofence_breach = { zones = ["Restricted Area"], allowed_from = "09:00", allowed_until = "17:00", time_zone = "America/Los_Angeles" }
detectors.unusual_stop = { speed_below_kmh = 5, min_duration_secs = 1800, safe_zones = ["Warehouse", "Rest Area", "Service Center"] }
"#;

fn reading(vehicle: &str, at_ms: i64, (lat, lon): (f64, f64), speed: f64) -> Value {
    json!({
        "vehicle_id": vehicle,
        "timestamp": format_millis(at_ms),
        "latitude": lat,
        "longitude": lon,
        "speed": speed,
        "engine_status": "on",
    })
}

/// Tracks on which reference 000's queries go wrong, in arrival order.
fn tracks() -> Vec<Value> {
    let mut readings = Vec::new();
    // Teleport: V001 and V002 drive slowly 550 km apart, their readings interleaved; V002's
    // sixth reading jumps 100 km north and the next is back. `neighbor()` over the whole
    // result compares the two vehicles' readings with each other.
    for i in 0..12_i64 {
        let drift = i as f64 * 1e-4;
        readings.push(reading("V001", DAY0 + i * 5_000, (OPEN_ROAD.0 + drift, OPEN_ROAD.1), 40.0));
        let v2 = if i == 5 { (FAR_AWAY.0 + 0.9, FAR_AWAY.1) } else { (FAR_AWAY.0 + drift, FAR_AWAY.1) };
        readings.push(reading("V002", DAY0 + i * 5_000 + 1_000, v2, 40.0));
    }
    // Unusual stops: V003 stops 10 minutes every hour for 5 hours, and once 40 minutes (120 to
    // 160). Grouping the whole history, the reference reports one stop from minute 0 to 299.
    for minute in 0..300_i64 {
        let stopped = minute % 60 < 10 || (120..160).contains(&minute);
        readings.push(reading("V003", DAY0 + minute * MINUTE, OPEN_ROAD, if stopped { 0.0 } else { 50.0 }));
    }
    // Geofence breach, Los Angeles time (UTC-8 in March): V004 is in the restricted zone at
    // 16:50 (in hours), 17:30 and 17:45 (out of hours), then leaves at 17:50; the next day at
    // 10:30 (in hours) it is back briefly. The reference's server-zone (UTC) hours flag 16:50
    // and 10:30, and its `toHour() > 17` would call 17:30 in hours in UTC.
    let local = |day: i64, hour: i64, minute: i64| DAY0 + day * 86_400_000 + ((hour + 8) * 60 + minute) * MINUTE;
    for (at, place) in [
        (local(0, 16, 50), RESTRICTED),
        (local(0, 17, 30), RESTRICTED),
        (local(0, 17, 45), RESTRICTED),
        (local(0, 17, 50), OPEN_ROAD),
        (local(1, 10, 30), RESTRICTED),
        (local(1, 10, 35), OPEN_ROAD),
    ] {
        readings.push(reading("V004", at, place, 20.0));
    }
    readings
}

/// The episodes a hunt's JSON lists: (vehicle, start, end).
fn episodes(report: &Value) -> Vec<(String, i64, Option<i64>)> {
    report["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings in {report}"))
        .iter()
        .map(|f| (f["vehicle_id"].as_str().unwrap().to_string(), f["start_ms"].as_i64().unwrap(), f["end_ms"].as_i64()))
        .collect()
}

fn run_hunt(config: &str, data_dir: &Path, hunt: &str, store: &str, extra: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["hunt", hunt, "--store", store, "--format", "json", "--config", config, "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .output()
        .expect("run teleguard hunt");
    assert!(
        output.status.success(),
        "teleguard hunt {hunt} --store {store}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

fn expected(hunt: &str) -> Vec<(String, i64, Option<i64>)> {
    let local = |day: i64, hour: i64, minute: i64| DAY0 + day * 86_400_000 + ((hour + 8) * 60 + minute) * MINUTE;
    match hunt {
        "teleport" => vec![
            ("V002".into(), DAY0 + 4 * 5_000 + 1_000, Some(DAY0 + 5 * 5_000 + 1_000)),
            ("V002".into(), DAY0 + 5 * 5_000 + 1_000, Some(DAY0 + 6 * 5_000 + 1_000)),
        ],
        "unusual-stops" => vec![("V003".into(), DAY0 + 120 * MINUTE, Some(DAY0 + 160 * MINUTE))],
        "geofence-breach" => vec![("V004".into(), local(0, 17, 30), Some(local(0, 17, 50)))],
        other => panic!("no such hunt {other}"),
    }
}

fn silver_count(data_dir: &Path) -> i64 {
    let connection = rusqlite::Connection::open(data_dir.join("teleguard.db")).expect("open the store");
    connection.query_row("SELECT count(*) FROM silver", [], |r| r.get(0)).expect("count silver")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_hunt_is_right_where_reference_000s_query_is_wrong_in_every_store() {
    let folder = tempfile::tempdir().unwrap();
    let data_dir = folder.path().join("data");
    let clickhouse_binary = clickhouse_or_skip("the ClickHouse part of the hunts test");
    let postgres_bin = postgres_or_skip("the PostgreSQL part of the hunts test");
    let mut clickhouse = clickhouse_binary.map(|binary| ClickHouse::new(binary, &folder.path().join("clickhouse")));
    if let Some(clickhouse) = &mut clickhouse {
        clickhouse.start().await;
    }
    let postgres = postgres_bin.map(|bin| Postgres::new(bin, free_port()));
    if let Some(postgres) = &postgres {
        postgres.start();
    }
    let mut sinks = String::new();
    if let Some(clickhouse) = &clickhouse {
        sinks.push_str(&format!("[sinks.clickhouse]\nurl = \"{}\"\nbatch_ms = 50\n", clickhouse.url()));
    }
    if let Some(postgres) = &postgres {
        sinks.push_str(&format!("[sinks.postgres]\nurl = \"{}\"\nbatch_ms = 50\n", postgres.url()));
    }
    let config = historical_config(folder.path(), &format!("{VEHICLE_IN_LOS_ANGELES}\n{sinks}"));
    let server = Server::start(&data_dir, &["--config", &config]);
    let http = client();
    let readings = tracks();
    for chunk in readings.chunks(50) {
        let body: String = chunk.iter().map(|r| format!("{r}\n")).collect();
        let response = http.post(server.url("/api/ingest/vehicle")).body(body).send().await.expect("POST");
        assert!(response.status().is_success(), "ingest: {}", response.status());
    }
    wait_for("every reading in silver", || async { (silver_count(&data_dir) == readings.len() as i64).then_some(()) })
        .await;
    let stored = readings.len() as i64;
    for (sink, present) in [("clickhouse", clickhouse.is_some()), ("postgres", postgres.is_some())] {
        if present {
            wait_for("the sink to write every reading", || async {
                let stats = sink_stats(&http, &server, sink).await;
                (stats["written_readings"] == stored).then_some(())
            })
            .await;
        }
    }

    let mut stores = vec!["embedded"];
    stores.extend(clickhouse.as_ref().map(|_| "clickhouse"));
    stores.extend(postgres.as_ref().map(|_| "postgres"));
    for hunt in ["teleport", "unusual-stops", "geofence-breach"] {
        for store in &stores {
            let report = run_hunt(&config, &data_dir, hunt, store, &[]);
            assert_eq!(report["store"], *store, "{report}");
            assert_eq!(report["readings"], stored, "{store} {hunt} ran over every vehicle reading: {report}");
            assert_eq!(episodes(&report), expected(hunt), "{store} {hunt}: {report}");
        }
        let api = get_json(&http, &server.url(&format!("/api/hunts/{hunt}"))).await;
        assert_eq!(episodes(&api), expected(hunt), "GET /api/hunts/{hunt}: {api}");
    }
    // The geofence breach names its zone, the stop its length, the teleport its speed.
    let breach = get_json(&http, &server.url("/api/hunts/geofence-breach")).await;
    assert_eq!(breach["findings"][0]["zone"], "Restricted Area", "{breach}");
    assert_eq!(breach["findings"][0]["value"], 20.0, "{breach}");
    let stop = get_json(&http, &server.url("/api/hunts/unusual-stops?vehicle=V003")).await;
    assert_eq!(stop["findings"][0]["value"], 40.0, "{stop}");
    let teleport = run_hunt(&config, &data_dir, "teleport", "embedded", &["--vehicle", "V001"]);
    assert_eq!(episodes(&teleport), vec![], "V001 never jumps: {teleport}");
    // --from / --to bound the event times: V002's jump back is after 00:00:30.
    let window = run_hunt(&config, &data_dir, "teleport", "embedded", &["--to", "2026-03-02T00:00:30Z"]);
    assert_eq!(episodes(&window), expected("teleport")[..1].to_vec(), "{window}");
    let csv = http.get(server.url("/api/hunts/unusual-stops?format=csv")).send().await.unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = csv.text().await.unwrap();
    assert!(csv.starts_with("vehicle_id,driver_name,start,end,zone,minutes,reason\nV003,"), "{csv}");
    let unknown = http.get(server.url("/api/hunts/speeding")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    assert!(unknown.text().await.unwrap().contains("geofence-breach, teleport, unusual-stops"));

    // Reference 000's own queries, where the server runs them, give the wrong answers the
    // hunts above do not (18.16 has no neighbor() or geoDistance, so its teleport query fails).
    if let Some(clickhouse) = &clickhouse {
        let reference_stops = clickhouse
            .query(
                "SELECT vehicle_id, duration_minutes FROM (
                     SELECT vehicle_id, min(timestamp) AS stop_start, max(timestamp) AS stop_end,
                            (toUnixTimestamp(max(timestamp)) - toUnixTimestamp(min(timestamp))) / 60 AS duration_minutes
                     FROM teleguard.enriched_telemetry_history FINAL
                     -- ifNull: on the open road the zone is NULL, which NOT IN would drop.
                     WHERE speed < 5 AND ifNull(current_zone, '') NOT IN ('Warehouse', 'Rest Area', 'Service Center')
                     GROUP BY vehicle_id
                 ) WHERE duration_minutes > 30 FORMAT TabSeparated",
            )
            .await;
        assert_eq!(reference_stops.trim(), "V003\t249", "the reference makes one 249-minute stop of V003's day");
        let reference_breaches = clickhouse
            .query(
                "SELECT count() FROM teleguard.enriched_telemetry_history FINAL
                 WHERE current_zone = 'Restricted Area' AND (toHour(timestamp) < 9 OR toHour(timestamp) > 17)
                 FORMAT TabSeparated",
            )
            .await;
        assert_eq!(reference_breaches.trim(), "4", "in UTC every restricted reading of V004 is out of hours");
    }
    drop(server);
    if let Some(clickhouse) = &mut clickhouse {
        clickhouse.stop();
    }
}

/// The streaming rules' episodes in the store: (vehicle, start, end) per detector.
fn rule_episodes(data_dir: &Path, detector: &str) -> BTreeSet<(String, i64, Option<i64>)> {
    let connection = rusqlite::Connection::open(data_dir.join("teleguard.db")).expect("open the store");
    let mut statement = connection
        .prepare(
            "SELECT entity_id, timestamp_ms, episode_start_ms, episode_end_ms, features FROM telemetry_anomalies
             WHERE profile = 'vehicle' AND detector = ?1",
        )
        .unwrap();
    let rows = statement
        .query_map([detector], |r| {
            let entity: String = r.get(0)?;
            let at: i64 = r.get(1)?;
            let start: Option<i64> = r.get(2)?;
            let end: Option<i64> = r.get(3)?;
            let features: String = r.get(4)?;
            Ok((entity, at, start, end, features))
        })
        .unwrap();
    rows.map(|row| {
        let (entity, at, start, end, features) = row.unwrap();
        match start {
            Some(start) => (entity, start, end),
            None => {
                // A teleport: from the previous reading to this one.
                let features: Value = serde_json::from_str(&features).unwrap();
                let elapsed_ms = (features["elapsed_s"].as_f64().unwrap() * 1000.0).round() as i64;
                (entity, at - elapsed_ms, Some(at))
            }
        }
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hunts_find_the_episodes_the_streaming_rules_raised_on_a_simulated_fleet() {
    let folder = tempfile::tempdir().unwrap();
    let data_dir = folder.path().join("data");
    let config = historical_config(folder.path(), "");
    let server = Server::start(&data_dir, &["--config", &config]);
    let http = client();
    // A day by default (15 s in a debug build); TELEGUARD_HUNTS_FLEET=7d runs the week (about
    // 2.5 min of simulation in a debug build).
    let duration = std::env::var("TELEGUARD_HUNTS_FLEET").unwrap_or_else(|_| "24h".into());
    let simulator = Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["simulate", "--profile", "vehicle", "--seed", "7", "--anomaly-rate", "1"])
        .args(["--start", "2026-03-02T00:00:00Z", "--duration", &duration, "--speed", "max", "--to", &server.base])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start teleguard simulate");
    wait_success(simulator, "teleguard simulate of a vehicle fleet");
    common::wait_until_analysed(&http, &server).await;
    // A debug build sorts and replays a week (1.8 M readings) in well over 30 s.
    let patient = reqwest::Client::builder().timeout(Duration::from_secs(900)).build().unwrap();
    let mut compared = 0;
    for (hunt, detector) in
        [("teleport", "teleport"), ("unusual-stops", "unusual_stop"), ("geofence-breach", "geofence_breach")]
    {
        let rules = rule_episodes(&data_dir, detector);
        let report = get_json(&patient, &server.url(&format!("/api/hunts/{hunt}"))).await;
        let hunted: BTreeSet<_> = episodes(&report).into_iter().collect();
        assert_eq!(hunted.len(), episodes(&report).len(), "{hunt}: an episode reported twice");
        assert!(!rules.is_empty(), "the simulated fleet has injected {detector} anomalies");
        assert_eq!(hunted, rules, "{hunt} over the store against the {detector} rule's live episodes");
        eprintln!("{hunt}: the hunt and the {detector} rule agree on {} episodes", rules.len());
        compared += rules.len();
    }
    assert!(compared >= 10, "only {compared} episodes compared");
}
