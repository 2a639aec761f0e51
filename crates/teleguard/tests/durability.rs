//! What is acknowledged stays: kill -9 right after the answers, restart on the same data
//! folder, and every accepted reading is there; a full pipeline says 503, not "queued".

mod common;

use common::{Server, client, get_json, post, wait_for};
use serde_json::json;

/// An hour ago, the same for every reading of a test run: readings start there, a second apart.
static START_MS: std::sync::LazyLock<u64> =
    std::sync::LazyLock::new(|| (teleguard_core::time::now_millis() - 3_600_000) as u64 / 1000 * 1000);

fn drone(entity: &str, i: usize) -> serde_json::Value {
    json!({"timestamp": *START_MS + i as u64 * 1000, "drone_id": entity, "latitude": 37.77, "longitude": -122.42,
           "altitude": 120.0 + (i % 5) as f64, "velocity": 12.0, "acceleration_x": 0.1, "acceleration_y": -0.2,
           "acceleration_z": 0.0, "battery_level": 90.0 - i as f64 * 0.01, "signal_strength": -67.0})
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_and_restart_loses_no_accepted_reading() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let client = client();
    let entities = ["d-1", "d-2", "d-3", "d-4"];
    let per_entity = 60;
    let mut accepted = 0;
    for batch in 0..6 {
        let body: Vec<serde_json::Value> =
            entities.iter().flat_map(|e| (0..10).map(move |i| drone(e, batch * 10 + i))).collect();
        let (status, answer) = post(&client, &server, "drone", serde_json::to_vec(&body).unwrap()).await;
        assert_eq!(status, 202, "{answer}");
        accepted += answer["accepted"].as_u64().unwrap();
    }
    assert_eq!(accepted, (entities.len() * per_entity) as u64);
    server.kill_hard();

    let server = Server::start(dir.path(), &[]);
    let stats = get_json(&client, &server.url("/api/stats")).await;
    assert_eq!(stats["totals"]["valid"], accepted, "{stats}");
    for entity in entities {
        let url = server.url(&format!("/api/readings?entity={entity}&limit=1000"));
        let readings = wait_for("every reading back in silver", || async {
            let readings = get_json(&client, &url).await;
            (readings.as_array().unwrap().len() == per_entity).then_some(readings)
        })
        .await;
        let mut ids: Vec<u64> = readings.as_array().unwrap().iter().map(|r| r["id"].as_u64().unwrap()).collect();
        ids.dedup();
        assert_eq!(ids.len(), per_entity, "no reading twice for {entity}");
    }
    // A clean stop after the recovery, then a third start: still exactly the same.
    assert!(server.terminate().success());
    let server = Server::start(dir.path(), &[]);
    let stats = get_json(&client, &server.url("/api/stats")).await;
    assert_eq!(stats["totals"]["valid"], accepted);
    let readings = get_json(&client, &server.url("/api/readings?entity=d-3&limit=1000")).await;
    assert_eq!(readings.as_array().unwrap().len(), per_entity);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_while_readings_stream_in_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let client = client();
    let url = server.url("/api/ingest/drone");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for sender in 0..2 {
        let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for batch in 0.. {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let entities: Vec<String> = (0..10).map(|j| format!("s{sender}-b{batch}-e{j}")).collect();
                let body: Vec<serde_json::Value> =
                    entities.iter().flat_map(|e| (0..50).map(move |i| drone(e, i))).collect();
                match client.post(&url).body(serde_json::to_vec(&body).unwrap()).send().await {
                    Ok(response) if response.status() == 202 => acknowledged.extend(entities),
                    _ => break,
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    server.kill_hard();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut acknowledged = Vec::new();
    for sender in senders {
        acknowledged.extend(sender.await.unwrap());
    }
    assert!(acknowledged.len() >= 20, "the senders got going before the kill");

    let server = Server::start(dir.path(), &[]);
    let stats = get_json(&client, &server.url("/api/stats")).await;
    assert!(stats["totals"]["valid"].as_u64().unwrap() >= acknowledged.len() as u64 * 50, "{stats}");
    wait_for("every valid reading analysed and in silver", || async {
        let totals = get_json(&client, &server.url("/api/stats")).await["totals"].clone();
        (totals["analysed"] == totals["valid"]).then_some(())
    })
    .await;
    // Spot-check entities across the run, in memory or looked up in the store.
    for entity in acknowledged.iter().step_by(37) {
        let url = server.url(&format!("/api/readings?entity={entity}&limit=100"));
        assert_eq!(get_json(&client, &url).await.as_array().unwrap().len(), 50, "{entity}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_pipeline_answers_503_with_retry_after_and_keeps_what_it_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("teleguard.toml");
    std::fs::write(&config, "[pipeline]\ninflight_readings = 4\nbusy_wait_ms = 0\n").unwrap();
    let server = Server::start(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let client = client();
    let mut requests = Vec::new();
    for r in 0..60 {
        let client = client.clone();
        let url = server.url("/api/ingest/drone");
        let body = serde_json::to_vec(&[drone(&format!("d-{r}"), 0), drone(&format!("d-{r}"), 1)]).unwrap();
        requests.push(tokio::spawn(async move { client.post(url).body(body).send().await.unwrap() }));
    }
    let (mut ok, mut busy) = (0, 0);
    for request in requests {
        let response = request.await.unwrap();
        match response.status().as_u16() {
            202 => ok += 1,
            503 => {
                assert_eq!(response.headers()["retry-after"], "1");
                let answer: serde_json::Value = response.json().await.unwrap();
                assert!(answer["error"].as_str().unwrap().contains("the pipeline is full"), "{answer}");
                busy += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(busy > 0, "60 concurrent requests into room for 4 readings: some must be refused");
    assert!(ok > 0);
    let stats = get_json(&client, &server.url("/api/stats")).await;
    assert_eq!(stats["totals"]["valid"], ok * 2, "exactly the accepted readings are kept");
    // More than the pipeline ever holds in one request is refused outright.
    let body: Vec<serde_json::Value> = (0..5).map(|i| drone("big", i)).collect();
    let (status, answer) = post(&client, &server, "drone", serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(status, 413, "{answer}");
}
