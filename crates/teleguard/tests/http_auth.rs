//! Bearer tokens on HTTP ingest, through the real binary: tokens made by `teleguard token new`
//! and pasted into a config; 401 without a known token (nothing stored), 403 and a dead letter
//! outside a token's grant, and ingest as before when no token is configured.

mod common;

use common::{Server, client, get_json, metric, post, wait_for};
use std::path::Path;
use std::process::Command;

/// A minute ago, whole seconds: the readings' times (recent, as ingest checks).
fn minute_ago_ms() -> i64 {
    (teleguard_core::time::now_millis() - 60_000) / 1000 * 1000
}

fn vehicle(entity: &str, second: u32) -> String {
    let time = teleguard_core::time::format_millis(minute_ago_ms() + i64::from(second) * 1000);
    format!(
        r#"{{"vehicle_id": "{entity}", "timestamp": "{time}", "latitude": 37.7, "longitude": -122.4, "speed": 40}}"#
    )
}

fn drone(entity: &str) -> String {
    let time = minute_ago_ms();
    format!(
        r#"{{"drone_id": "{entity}", "timestamp": {time}, "latitude": 37.77, "longitude": -122.42, "altitude": 120.5, "velocity": 12.3, "acceleration_x": 0.1, "acceleration_y": -0.2, "acceleration_z": 0.0, "battery_level": 87.5, "signal_strength": -67.0}}"#
    )
}

/// Runs `teleguard token new ARGS`: the token, and the config entry it printed.
fn new_token(args: &[&str]) -> (String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_teleguard")).args(["token", "new"]).args(args).output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "token new {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    let token = stdout.lines().find(|line| line.starts_with("tg_")).expect("a token line").to_string();
    let entry: String =
        stdout.lines().skip_while(|line| *line != "[[server.tokens]]").map(|l| format!("{l}\n")).collect();
    assert!(!entry.contains(&token), "the entry holds no token: {entry}");
    (token, entry)
}

/// Runs `teleguard token hash` with `token` (and a newline, as `echo` sends it) on stdin.
fn hash_of(token: &str) -> String {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["token", "hash"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{token}\n").as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// POSTs `body` to `/api/ingest/{profile}` with `Authorization: Bearer {token}`.
async fn post_as(
    client: &reqwest::Client,
    server: &Server,
    token: &str,
    profile: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, serde_json::Value) {
    let response = client
        .post(server.url(&format!("/api/ingest/{profile}")))
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .expect("POST");
    (response.status().as_u16(), response.json().await.expect("a JSON answer"))
}

fn bronze_rows(data: &Path) -> i64 {
    let connection = rusqlite::Connection::open_with_flags(
        data.join("teleguard.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open the store read-only");
    connection.query_row("SELECT count(*) FROM bronze", [], |row| row.get(0)).expect("count bronze")
}

async fn dead_letter_reasons(client: &reqwest::Client, server: &Server) -> Vec<String> {
    let letters = get_json(client, &server.url("/api/dead-letters?limit=100")).await;
    letters.as_array().unwrap().iter().map(|l| l["reason"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn without_tokens_ingest_needs_no_authorization() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let client = client();
    let (status, answer) = post(&client, &server, "vehicle", vehicle("V1", 0)).await;
    assert_eq!((status, answer["accepted"].as_u64()), (202, Some(1)), "{answer}");
    // A header nobody asked for changes nothing.
    let (status, _) = post_as(&client, &server, "tg_whatever", "vehicle", vehicle("V1", 1)).await;
    assert_eq!(status, 202);
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_guard_ingest_within_their_grants() {
    let dir = tempfile::tempdir().unwrap();
    let (north, north_entry) =
        new_token(&["--name", "fleet-north", "--profiles", "vehicle", "--entity-prefix", "veh-"]);
    let (ops, ops_entry) = new_token(&["--name", "ops"]);
    let config = dir.path().join("teleguard.toml");
    std::fs::write(&config, format!("{north_entry}\n{ops_entry}")).unwrap();
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(!written.contains(&north) && !written.contains(&ops), "the config holds only hashes");
    assert_eq!(written.matches("sha256 = ").count(), 2, "{written}");
    assert!(written.contains(&format!("sha256 = \"{}\"", hash_of(&north))), "`token hash` agrees: {written}");
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", config.to_str().unwrap()]);
    let client = client();

    // No token, a wrong one, another scheme: 401 with a challenge, and nothing in bronze.
    let response = client.post(server.url("/api/ingest/vehicle")).body(vehicle("veh-1", 0)).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer realm=\"teleguard\"");
    let answer: serde_json::Value = response.json().await.unwrap();
    assert!(answer["error"].as_str().unwrap().contains("Authorization: Bearer"), "{answer}");
    let response = client
        .post(server.url("/api/ingest/vehicle"))
        .bearer_auth(format!("{north}x"))
        .body(vehicle("veh-1", 0))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer realm=\"teleguard\", error=\"invalid_token\"");
    let response = client
        .post(server.url("/api/ingest/vehicle"))
        .basic_auth("fleet-north", Some(&north))
        .body(vehicle("veh-1", 0))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let baseline = bronze_rows(&data);
    assert_eq!(baseline, 0, "an unauthenticated request stores nothing");

    // The right token within its grant: accepted, and the reading is served.
    let (status, answer) = post_as(&client, &server, &north, "vehicle", vehicle("veh-1", 0)).await;
    assert_eq!((status, answer["accepted"].as_u64()), (202, Some(1)), "{answer}");
    let readings = wait_for("veh-1's reading", || async {
        let readings = get_json(&client, &server.url("/api/readings?entity=veh-1")).await;
        (!readings.as_array()?.is_empty()).then_some(readings)
    })
    .await;
    assert_eq!(readings[0]["entity"], "veh-1", "{readings}");

    // A profile outside the grant: 403 naming token and profile, every message quarantined.
    let body = format!("{}\n{}\n", drone("drn-1"), drone("drn-2"));
    let (status, answer) = post_as(&client, &server, &north, "drone", body).await;
    assert_eq!(status, 403, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.starts_with("forbidden: token \"fleet-north\" may not send to profile \"drone\""), "{error}");
    let reasons = dead_letter_reasons(&client, &server).await;
    assert_eq!(reasons.iter().filter(|r| r.as_str() == error).count(), 2, "{reasons:#?}");

    // An entity outside the prefix: 403, and a dead letter naming token, entity and prefix.
    let (status, answer) = post_as(&client, &server, &north, "vehicle", vehicle("car-9", 1)).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["errors"][0]["reason"], "forbidden");
    let expected =
        "forbidden: token \"fleet-north\" may send only entities whose id starts with \"veh-\", not \"car-9\"";
    assert_eq!(answer["errors"][0]["error"], expected);
    assert!(dead_letter_reasons(&client, &server).await.iter().any(|r| r == expected));

    // A mixed batch: the allowed message is accepted, the others are named by index.
    let mixed = format!("{}\n{}\n{{not json\n", vehicle("veh-2", 2), vehicle("car-3", 2));
    let (status, answer) = post_as(&client, &server, &north, "vehicle", mixed).await;
    assert_eq!((status, answer["accepted"].as_u64(), answer["rejected"].as_u64()), (202, Some(1), Some(2)), "{answer}");
    assert_eq!(
        (answer["errors"][0]["index"].as_u64(), answer["errors"][0]["reason"].as_str()),
        (Some(1), Some("forbidden"))
    );
    assert_eq!(answer["errors"][1]["reason"], "malformed_json");
    // Nothing accepted, one forbidden among the rejected: 403; none forbidden: 422 as ever.
    let (status, _) = post_as(&client, &server, &north, "vehicle", format!("{}\n{{bad\n", vehicle("car-4", 3))).await;
    assert_eq!(status, 403);
    let (status, _) = post_as(&client, &server, &north, "vehicle", "{bad".to_string()).await;
    assert_eq!(status, 422);

    // A token granted every profile and entity, in JSON and in Avro; Avro outside a grant is
    // quarantined like JSON.
    let (status, answer) = post_as(&client, &server, &ops, "drone", drone("drn-3")).await;
    assert_eq!((status, answer["accepted"].as_u64()), (202, Some(1)), "{answer}");
    let avro = common::reference_sample_single_object("drn-4", minute_ago_ms());
    let (status, answer) = post_as(&client, &server, &ops, "drone", avro.clone()).await;
    assert_eq!((status, answer["accepted"].as_u64()), (202, Some(1)), "{answer}");
    let (status, answer) = post_as(&client, &server, &north, "drone", avro).await;
    assert_eq!(status, 403, "{answer}");

    let metrics = client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&metrics, "teleguard_http_auth_failures_total{reason=\"missing_token\"}"), 2.0);
    assert_eq!(metric(&metrics, "teleguard_http_auth_failures_total{reason=\"unknown_token\"}"), 1.0);
    // 2 of the drone request, car-9, car-3, car-4, the Avro message.
    assert_eq!(metric(&metrics, "teleguard_http_forbidden_total{token=\"fleet-north\"}"), 6.0);
    assert_eq!(metric(&metrics, "teleguard_discarded_total{reason=\"forbidden\"}"), 6.0);
    assert!(!metrics.contains(&north) && !metrics.contains(&ops));
}

#[test]
fn an_invalid_token_entry_stops_the_start_with_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (_, entry) = new_token(&["--name", "good"]);
    let config = dir.path().join("teleguard.toml");
    let bad = "[[server.tokens]]\nname = \"short\"\nsha256 = \"9f86d0\"\n\n\
               [[server.tokens]]\nname = \"lost\"\nsha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\nprofiles = [\"boat\"]\n";
    std::fs::write(&config, format!("{entry}\n{bad}")).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["run", "--simulate", "none", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("[[server.tokens]] #2 (\"short\"): sha256 must be 64 hex digits"), "{stderr}");
    assert!(stderr.contains("[[server.tokens]] #3 (\"lost\"): unknown profile \"boat\""), "{stderr}");
    assert!(!stderr.contains("\"good\""), "the valid entry is not blamed: {stderr}");
}
