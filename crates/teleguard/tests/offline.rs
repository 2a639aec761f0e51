//! Offline alerts through the real binary: an entity silent past its profile's threshold gets
//! an `offline` alert, one that keeps reporting does not, and the silent one's next reading
//! resolves it; the live event stream tells a watching dashboard of each step.

mod common;

use common::events::EventStream;
use common::{Server, client, get_json, post, wait_for};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use teleguard_core::time::{format_millis, now_millis};

const TRACKERS: &str = r#"
[profiles.tracker]
entity_field = "tracker_id"
timestamp_field = "ts"
metrics = [{ field = "battery", min = 0, max = 100 }]
offline_after_secs = 2
"#;

fn reading(tracker: &str) -> String {
    json!({"tracker_id": tracker, "ts": format_millis(now_millis()), "battery": 80.0}).to_string()
}

fn offline_alerts(alerts: &Value, tracker: &str) -> Vec<Value> {
    alerts
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["detector"] == "offline" && a["entity"] == tracker)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_entity_goes_offline_and_its_next_reading_brings_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("trackers.toml");
    std::fs::write(&config, TRACKERS).unwrap();
    let server = Server::start(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let http = client();
    let mut events = EventStream::open(&server);
    assert_eq!(post(&http, &server, "tracker", format!("{}\n{}", reading("T1"), reading("T2"))).await.0, 202);

    // T2 keeps reporting; T1 falls silent past its 2 s.
    let started = Instant::now();
    let alert = loop {
        assert_eq!(post(&http, &server, "tracker", reading("T2")).await.0, 202);
        let alerts = get_json(&http, &server.url("/api/alerts?state=open")).await;
        assert!(offline_alerts(&alerts, "T2").is_empty(), "T2 reports: {alerts:#}");
        if let Some(alert) = offline_alerts(&alerts, "T1").pop() {
            break alert;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "no offline alert for T1: {alerts:#}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(started.elapsed() >= Duration::from_secs(2), "offline before its threshold");
    assert_eq!(alert["severity"], "minor");
    let reason = alert["reason"].as_str().unwrap();
    assert!(reason.starts_with("no reading for ") && reason.contains("(offline after 2 s"), "{reason}");
    // A dashboard following the live stream hears of it without polling.
    let went = tokio::task::block_in_place(|| events.next("anomaly"));
    assert_eq!((&went["detector"], &went["entity"]), (&json!("offline"), &json!("T1")), "{went}");
    let opened = tokio::task::block_in_place(|| events.next("alert"));
    assert_eq!(opened, json!({"kind": "alert", "id": alert["id"], "event": "opened"}));
    let fleet = get_json(&http, &server.url("/api/fleet")).await;
    let t1 = fleet["entities"].as_array().unwrap().iter().find(|e| e["entity"] == "T1").unwrap().clone();
    assert_eq!(t1["online"], false, "{t1:#}");
    // Still silent: no second alert.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let open = get_json(&http, &server.url("/api/alerts?state=open")).await;
    assert_eq!(offline_alerts(&open, "T1").len(), 1);

    // T1 reports again: its offline alert is resolved.
    assert_eq!(post(&http, &server, "tracker", reading("T1")).await.0, 202);
    let id = alert["id"].as_i64().unwrap();
    wait_for("T1's offline alert to be resolved", || async {
        let resolved = get_json(&http, &server.url("/api/alerts?state=resolved")).await;
        resolved.as_array().unwrap().iter().any(|a| a["id"] == id).then_some(())
    })
    .await;
    let back = tokio::task::block_in_place(|| events.next("alert"));
    assert_eq!(back, json!({"kind": "alert", "id": id, "event": "resolved"}));
    let cleared = get_json(&http, &server.url("/api/alerts?state=cleared_unack")).await;
    assert!(
        cleared.as_array().unwrap().iter().any(|a| a["id"] == id),
        "cleared by the pipeline, unacknowledged: {cleared:#}"
    );
    let anomalies = get_json(&http, &server.url("/api/anomalies?detector=offline")).await;
    assert_eq!(anomalies.as_array().unwrap().len(), 1, "{anomalies:#}");
    assert_eq!(anomalies[0]["entity"], "T1");
}
