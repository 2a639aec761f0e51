//! Quarantine through the real binary: rejected messages are listed and counted by reason,
//! and replayed after the profile that rejected them was fixed; each replayed message ends
//! as a reading or as a new dead letter, none is lost, none is taken twice.

mod common;

use common::{Server, client, get_json, metric, post, wait_for};
use serde_json::{Value, json};
use std::path::Path;
use teleguard_core::time::{format_millis, now_millis};

/// A pump profile whose flow range is too narrow for the real pumps (max 100 l/min).
const NARROW: &str = r#"
[profiles.pump]
entity_field = "pump_id"
timestamp_field = "ts"
metrics = [{ field = "flow_lpm", min = 0, max = 100 }, { field = "pressure_bar", min = 0, max = 40 }]
"#;

fn config(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn pump(id: &str, seconds_ago: i64, flow: f64) -> Value {
    json!({"pump_id": id, "ts": format_millis(now_millis() - seconds_ago * 1000), "flow_lpm": flow, "pressure_bar": 3.5})
}

async fn replay(http: &reqwest::Client, server: &Server, body: Value) -> Value {
    let response = http.post(server.url("/api/dead-letters/replay")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_quarantined_by_a_wrong_profile_are_replayed_once_it_is_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let narrow = config(dir.path(), "narrow.toml", NARROW);
    let server = Server::start(&data, &["--config", &narrow]);
    let http = client();

    // 30 real pump readings (flow 150-179 l/min) break the narrow profile; one is broken JSON,
    // one names an unknown field type; two readings are fine.
    let mut body: Vec<String> =
        (0..30).map(|i| pump(&format!("p-{}", i % 3), 300 - i, 150.0 + i as f64).to_string()).collect();
    body.push("{\"pump_id\": \"p-0\", ".into());
    body.push(pump("p-1", 10, 50.0).to_string());
    body.push(pump("p-2", 10, 60.0).to_string());
    let (status, answer) = post(&http, &server, "pump", body.join("\n")).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!((answer["accepted"].as_u64(), answer["rejected"].as_u64()), (Some(2), Some(31)));
    // A profile that does not exist yet.
    let tank = json!({"tank_id": "t-1", "ts": format_millis(now_millis()), "level_pct": 40.0}).to_string();
    let (status, _) = post(&http, &server, "tank", tank).await;
    assert_eq!(status, 404);

    let counts = get_json(&http, &server.url("/api/dead-letters/counts")).await;
    assert_eq!(counts["total"], 32, "{counts:#}");
    assert_eq!(counts["open"], 32);
    assert_eq!(counts["by_reason"]["out_of_range"], 30);
    assert_eq!(counts["by_reason"]["malformed_json"], 1);
    assert_eq!(counts["by_reason"]["unknown_profile"], 1);
    assert_eq!(counts["by_profile"]["pump"], 31);
    assert_eq!(counts["by_source"]["http"], 32);
    let listed = get_json(&http, &server.url("/api/dead-letters?reason=out_of_range&limit=5")).await;
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 5);
    assert!(listed.windows(2).all(|w| w[0]["id"].as_i64() > w[1]["id"].as_i64()), "newest first");
    assert!(listed.iter().all(|l| l["reason_code"] == "out_of_range" && l["replayed_as"].is_null()));
    assert!(listed[0]["reason"].as_str().unwrap().starts_with("field `flow_lpm`: 179 is out of range [0, 100]"));
    let older = listed[4]["id"].as_i64().unwrap();
    let page = get_json(&http, &server.url(&format!("/api/dead-letters?reason=out_of_range&before_id={older}"))).await;
    assert_eq!(page.as_array().unwrap().len(), 25);
    // Bad filters are refused with what to do.
    let response = http.get(server.url("/api/dead-letters?reason=typo")).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert!(error["error"].as_str().unwrap().contains("use one of schema, out_of_range"), "{error}");
    let response = http.get(server.url("/api/dead-letters?reasons=schema")).send().await.unwrap();
    assert_eq!(response.status(), 400, "an unknown parameter is not ignored");

    // Replaying before the fix: each is judged again and quarantined again, pointing to the new dead letter.
    let first_id = listed[4]["id"].as_i64().unwrap();
    let again = replay(&http, &server, json!({"ids": [first_id]})).await;
    assert_eq!((again["replayed"].as_u64(), again["rejected"].as_u64()), (Some(1), Some(1)), "{again:#}");
    let letters = get_json(&http, &server.url("/api/dead-letters?reason=out_of_range&limit=100")).await;
    let original = letters.as_array().unwrap().iter().find(|l| l["id"] == first_id).unwrap();
    let new_id = original["replayed_as"].as_i64().expect("the original points to its replay");
    let copy = letters.as_array().unwrap().iter().find(|l| l["id"] == new_id).expect("the new dead letter");
    assert_eq!(copy["payload"], original["payload"]);
    assert!(copy["replayed_as"].is_null());
    assert!(server.terminate().success());

    // The profile is fixed (and the tank profile added); a replay by filter brings them in.
    let wide = NARROW.replace("max = 100", "max = 5000")
        + "\n[profiles.tank]\nentity_field = \"tank_id\"\ntimestamp_field = \"ts\"\nmetrics = [{ field = \"level_pct\", min = 0, max = 100 }]\n";
    let wide = config(dir.path(), "wide.toml", &wide);
    let server = Server::start(&data, &["--config", &wide]);
    let report = replay(&http, &server, json!({"profile": "pump", "reason": "out_of_range"})).await;
    assert_eq!(report["replayed"], 30, "the open ones only: {report:#}");
    assert_eq!((report["accepted"].as_u64(), report["rejected"].as_u64()), (Some(30), Some(0)), "{report:#}");
    // Every replayed reading is analysed like any other: 2 accepted at first, 30 replayed.
    wait_for("the replayed readings in the stats", || async {
        let stats = get_json(&http, &server.url("/api/stats")).await;
        let pump = stats["profiles"].as_array()?.iter().find(|p| p["profile"] == "pump")?.clone();
        (pump["analysed"] == 32).then_some(())
    })
    .await;
    let tank = replay(&http, &server, json!({"reason": "unknown_profile"})).await;
    assert_eq!(tank["accepted"], 1, "{tank:#}");

    // Nothing is taken twice: a second replay finds no open message to replay, and naming
    // replayed ones skips them with the reason.
    let second = replay(&http, &server, json!({"profile": "pump", "reason": "out_of_range"})).await;
    assert_eq!(second["replayed"], 0, "{second:#}");
    let named = replay(&http, &server, json!({"ids": [first_id, new_id]})).await;
    assert_eq!(named["replayed"], 0, "{named:#}");
    assert_eq!(named["skipped"].as_array().unwrap().len(), 2);
    assert!(named["skipped"][0]["why"].as_str().unwrap().starts_with("replayed already, as"), "{named:#}");
    let counts = get_json(&http, &server.url("/api/dead-letters/counts?state=open")).await;
    assert_eq!(counts["total"], 1, "only the broken JSON is still open: {counts:#}");
    assert_eq!(counts["by_reason"]["malformed_json"], 1);
    let broken = replay(&http, &server, json!({})).await;
    assert_eq!((broken["replayed"].as_u64(), broken["rejected"].as_u64()), (Some(1), Some(1)), "{broken:#}");
    assert_eq!(broken["results"][0]["reason_code"], "malformed_json");

    // Since this start: 30 pumps and a tank accepted, the broken JSON rejected again.
    let metrics = http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&metrics, "teleguard_dead_letters_replayed_total{outcome=\"accepted\"}"), 31.0);
    assert_eq!(metric(&metrics, "teleguard_dead_letters_replayed_total{outcome=\"rejected\"}"), 1.0);
}
