//! Alert notifications through the real binary to a local HTTP receiver: Slack Block Kit and
//! signed webhooks, filters per route, retries until the endpoint takes an event, each event
//! delivered once, and what was pending when teleguard was killed delivered after the restart.

mod common;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use common::{Server, client, get_json, metric, post, wait_for};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use teleguard_core::time::{format_millis, now_millis};

/// One request the receiver answered.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Value,
    raw: Bytes,
    status: u16,
}

/// A local endpoint that records every request and answers 500 while it is told to fail.
#[derive(Default)]
struct Receiver {
    received: Mutex<Vec<Received>>,
    /// Requests to `/hook` still to fail with 500.
    fail_next: AtomicUsize,
    /// Fail every request while set.
    down: AtomicBool,
}

impl Receiver {
    async fn start() -> (Arc<Receiver>, String) {
        let receiver = Arc::new(Receiver::default());
        let app = Router::new().route("/{path}", axum::routing::post(receive)).with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, base)
    }

    /// What `path` accepted (answered 200), in order.
    fn accepted(&self, path: &str) -> Vec<Received> {
        let received = self.received.lock().unwrap();
        received.iter().filter(|r| r.path == path && r.status == 200).cloned().collect()
    }

    fn attempts(&self, path: &str) -> usize {
        self.received.lock().unwrap().iter().filter(|r| r.path == path).count()
    }
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> StatusCode {
    let failing = receiver.down.load(Ordering::SeqCst)
        || (path == "hook"
            && receiver.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok());
    let status = if failing { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    receiver.received.lock().unwrap().push(Received { path, headers, body, raw, status: status.as_u16() });
    status
}

fn config(dir: &Path, base: &str) -> String {
    let text = format!(
        r#"
[alerts]
escalate_after_secs = 0

[[alerts.webhook]]
name = "ops"
url = "{base}/hook"
secret = "s3cret"
detectors = ["teleport"]

[[alerts.slack]]
webhook_url = "{base}/slack"
min_severity = "major"
detectors = ["teleport"]

[[alerts.webhook]]
name = "zones-only"
url = "{base}/zones"
detectors = ["geofence_breach"]
"#
    );
    let path = dir.join("teleguard.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// A teleport of `vehicle`: two fixes 80 km apart, ten seconds apart.
fn teleport(vehicle: &str) -> Vec<u8> {
    let at = |seconds_ago: i64, lat: f64| {
        json!({"vehicle_id": vehicle, "timestamp": format_millis(now_millis() - seconds_ago * 1000), "latitude": lat,
               "longitude": -122.45, "speed": 40.0, "engine_status": "on"})
    };
    serde_json::to_vec(&[at(30, 37.76), at(20, 37.7601), at(10, 38.5)]).unwrap()
}

fn event_ids(received: &[Received]) -> Vec<i64> {
    received.iter().map(|r| r.headers["x-teleguard-event-id"].to_str().unwrap().parse().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_reach_slack_and_a_signed_webhook_once_each_after_the_endpoint_recovers() {
    let (receiver, base) = Receiver::start().await;
    receiver.fail_next.store(2, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--config", &config(dir.path(), &base)]);
    let http = client();
    assert_eq!(post(&http, &server, "vehicle", teleport("V1")).await.0, 202);

    let opened = wait_for("the webhook and Slack to take the alert", || async {
        let hook = receiver.accepted("hook");
        (!hook.is_empty() && !receiver.accepted("slack").is_empty()).then_some(hook)
    })
    .await;
    let event = &opened[0];
    assert_eq!(event.body["event"], "opened");
    assert_eq!(event.body["alert"]["entity"], "V1");
    assert_eq!(event.body["alert"]["detector"], "teleport");
    assert_eq!(event.body["alert"]["severity"], "critical");
    assert_eq!(event.headers["x-teleguard-event"], "opened");
    let signature = event.headers["x-teleguard-signature"].to_str().unwrap();
    assert_eq!(signature, teleguard_pipeline::notify::signature(b"s3cret", &event.raw), "the HMAC of the body");
    // Slack, a route of its own, was not held back by the failing webhook.
    let slack = receiver.accepted("slack");
    assert_eq!((slack.len(), receiver.attempts("slack")), (1, 1));
    let blocks = &slack[0].body["blocks"];
    assert_eq!(blocks[0]["type"], "header");
    assert!(blocks[0]["text"]["text"].as_str().unwrap().contains("teleport on V1"), "{blocks:#}");
    assert_eq!(blocks[1]["fields"][0]["text"], "*Entity*\nV1");
    assert!(blocks[2]["text"]["text"].as_str().unwrap().starts_with("*Reason*\n"), "{blocks:#}");

    // The operator resolves it: one more event, to both routes.
    let alerts = get_json(&http, &server.url("/api/alerts?state=open")).await;
    let teleport = alerts.as_array().unwrap().iter().find(|a| a["detector"] == "teleport").unwrap();
    let id = teleport["id"].as_i64().unwrap();
    let response = http.post(server.url(&format!("/api/alerts/{id}/resolve"))).send().await.unwrap();
    assert!(response.status().is_success());
    wait_for("the resolution at both routes", || async {
        (receiver.accepted("hook").len() == 2 && receiver.accepted("slack").len() == 2).then_some(())
    })
    .await;
    let hook = receiver.accepted("hook");
    assert_eq!(hook[1].body["event"], "resolved");
    assert_eq!(receiver.attempts("hook"), 4, "2 failed, then each event once");
    let ids = event_ids(&hook);
    assert!(ids[0] < ids[1], "{ids:?}");
    // The zones-only route wants geofence breaches: it gets nothing.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(receiver.attempts("zones"), 0);

    let metrics = http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let count = |route: &str, outcome: &str| {
        metric(&metrics, &format!("teleguard_notifications_total{{route=\"{route}\",outcome=\"{outcome}\"}}"))
    };
    assert_eq!(count("ops", "failed"), 2.0);
    assert_eq!(count("ops", "delivered"), 2.0);
    assert_eq!(count("slack-1", "delivered"), 2.0);
    // The teleport's two events, and the opening of the spoofing alert the same jump raised.
    assert_eq!(count("zones-only", "filtered"), 3.0);
    assert_eq!(count("ops", "filtered"), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn notifications_pending_when_teleguard_is_killed_are_delivered_after_the_restart() {
    let (receiver, base) = Receiver::start().await;
    receiver.down.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = config(dir.path(), &base);
    let server = Server::start(&data, &["--config", &config]);
    let http = client();
    for vehicle in ["V1", "V2", "V3"] {
        assert_eq!(post(&http, &server, "vehicle", teleport(vehicle)).await.0, 202);
    }
    wait_for("three open teleport alerts", || async {
        let alerts = get_json(&http, &server.url("/api/alerts?state=open")).await;
        (alerts.as_array().unwrap().iter().filter(|a| a["detector"] == "teleport").count() == 3).then_some(())
    })
    .await;
    wait_for("the endpoint to be tried", || async { (receiver.attempts("hook") >= 2).then_some(()) }).await;
    server.kill_hard();

    receiver.down.store(false, Ordering::SeqCst);
    let server = Server::start(&data, &["--config", &config]);
    let delivered = wait_for("the three pending alerts", || async {
        let hook = receiver.accepted("hook");
        (hook.len() >= 3).then_some(hook)
    })
    .await;
    // Give a second delivery the chance to show itself.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let delivered =
        if receiver.accepted("hook").len() > delivered.len() { receiver.accepted("hook") } else { delivered };
    let mut entities: Vec<String> =
        delivered.iter().map(|r| r.body["alert"]["entity"].as_str().unwrap().to_string()).collect();
    entities.sort();
    assert_eq!(entities, ["V1", "V2", "V3"], "each pending alert exactly once");
    let mut ids = event_ids(&delivered);
    ids.dedup();
    assert_eq!(ids.len(), 3);
    assert!(server.terminate().success());
}
