//! Hostile input over HTTP: each bad message gets a clear error naming the problem and a
//! dead-letter record in bronze, and nothing crashes or blocks the good messages beside it.

mod common;

use common::{Server, client, get_json, metric, post};
use serde_json::json;

/// A valid vehicle reading whose event time is `offset_secs` from now.
fn vehicle_at(offset_secs: i64) -> String {
    let time = teleguard_core::time::format_millis(teleguard_core::time::now_millis() + offset_secs * 1000);
    json!({"vehicle_id": "V002", "timestamp": time, "latitude": 37.7, "longitude": -122.4, "speed": 40}).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_bad_message_gets_its_error_and_a_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let client = client();

    let good = vehicle_at(-60);
    let future = vehicle_at(3_600);
    let stale = vehicle_at(-40 * 86_400);
    let cases: [(&str, &str, &str); 10] = [
        (&future, "future_timestamp", "field `timestamp`: "),
        (&stale, "stale_timestamp", "field `timestamp`: "),
        (r#"{"vehicle_id": "V002", "timestamp": "#, "malformed_json", "invalid JSON"),
        (
            r#"{"vehicle_id": "V002", "timestamp": "2024-09-04T10:00:00Z", "latitude": 37.7, "longitude": -122.4, "speed": "fast"}"#,
            "schema",
            "field `speed`: expected a number, found string \"fast\"",
        ),
        (
            r#"{"timestamp": "2024-09-04T10:00:00Z", "latitude": 37.7, "longitude": -122.4, "speed": 40}"#,
            "schema",
            "field `vehicle_id`: is required",
        ),
        (
            r#"{"vehicle_id": "V002", "timestamp": "2024-09-04T10:00:00Z", "latitude": 37.7, "longitude": -122.4, "speed": NaN}"#,
            "malformed_json",
            "invalid JSON",
        ),
        (
            r#"{"vehicle_id": "V002", "timestamp": "2024-09-04T10:00:00Z", "latitude": 95.5, "longitude": -122.4, "speed": 40}"#,
            "out_of_range",
            "field `latitude`: 95.5 is out of range [-90, 90]",
        ),
        (
            r#"{"vehicle_id": "V002", "timestamp": "last tuesday", "latitude": 37.7, "longitude": -122.4, "speed": 40}"#,
            "invalid_timestamp",
            "field `timestamp`: \"last tuesday\" is not an ISO 8601 timestamp",
        ),
        (
            r#"{"vehicle_id": ["V002"], "timestamp": "2024-09-04T10:00:00Z", "latitude": 37.7, "longitude": -122.4, "speed": 40}"#,
            "schema",
            "field `vehicle_id`: expected a string id, found an array",
        ),
        ("42", "invalid_message", "expected a JSON object, found number 42"),
    ];
    for (body, code, expected) in cases {
        let (status, answer) = post(&client, &server, "vehicle", body.to_string()).await;
        assert_eq!(status, 422, "{body} -> {answer}");
        assert_eq!((answer["accepted"].as_u64(), answer["rejected"].as_u64()), (Some(0), Some(1)));
        let error = answer["errors"][0]["error"].as_str().unwrap();
        assert!(error.starts_with(expected), "{body}: expected {expected:?}, got {error:?}");
        assert_eq!(answer["errors"][0]["reason"], code, "{body}");
    }
    // The time checks say how far off the time is and which setting allows it.
    let (_, answer) = post(&client, &server, "vehicle", future.clone()).await;
    let error = answer["errors"][0]["error"].as_str().unwrap();
    assert!(error.contains("ahead of its arrival") && error.contains("max_future_secs"), "{error}");
    let (_, answer) = post(&client, &server, "vehicle", stale.clone()).await;
    let error = answer["errors"][0]["error"].as_str().unwrap();
    assert!(error.contains("40.0 days older than its arrival") && error.contains("max_age_secs"), "{error}");

    // Good and bad side by side in NDJSON: the good one is accepted, the bad one named by index.
    let mixed = format!("{good}\n{{not json\n{good}\n");
    let (status, answer) = post(&client, &server, "vehicle", mixed).await;
    assert_eq!(status, 202);
    assert_eq!(answer["accepted"], 2);
    assert_eq!(answer["errors"][0]["index"], 1);

    // A 10 MB body: 413, and a dead letter that keeps its first bytes and says why.
    let huge = format!(r#"[{{"vehicle_id": "{}"}}]"#, "x".repeat(10 * 1024 * 1024));
    let (status, answer) = post(&client, &server, "vehicle", huge).await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("exceeds the 8388608-byte limit"), "{answer}");

    // An unknown profile: 404 naming the known ones, and a dead letter.
    let (status, answer) = post(&client, &server, "submarine", good.clone()).await;
    assert_eq!(status, 404);
    assert!(answer["error"].as_str().unwrap().contains("known profiles: vehicle, drone"), "{answer}");

    // A broken array and an empty body are refused whole, each with a dead letter.
    let (status, answer) = post(&client, &server, "drone", "[{\"drone_id\": 1}, ".to_string()).await;
    assert_eq!(status, 400, "{answer}");
    let (status, _) = post(&client, &server, "drone", "   ".to_string()).await;
    assert_eq!(status, 400);

    let letters = get_json(&client, &server.url("/api/dead-letters?limit=100")).await;
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), cases.len() + 2 + 1 + 1 + 1 + 2, "{letters:#?}");
    let reasons: Vec<&str> = letters.iter().map(|l| l["reason"].as_str().unwrap()).collect();
    for (_, code, expected) in cases {
        assert!(letters.iter().any(|l| l["reason_code"] == code), "no dead letter with code {code}");
        assert!(reasons.iter().any(|r| r.starts_with(expected)), "no dead letter for {expected}");
    }
    let oversized = letters.iter().find(|l| l["reason"].as_str().unwrap().contains("byte limit")).unwrap();
    assert_eq!(oversized["payload"].as_str().unwrap().len(), 1024);
    assert!(letters.iter().any(|l| l["profile"] == "submarine"));

    let metrics = client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&metrics, "teleguard_validation_failed_total{profile=\"vehicle\"}"), 14.0);
    assert_eq!(metric(&metrics, "teleguard_validation_passed_total{profile=\"vehicle\"}"), 2.0);
    // Every discarded message by its reason code, whatever the profile.
    for (reason, count) in [
        ("malformed_json", 5.0),
        ("schema", 3.0),
        ("out_of_range", 1.0),
        ("invalid_timestamp", 1.0),
        ("future_timestamp", 2.0),
        ("stale_timestamp", 2.0),
        ("invalid_message", 1.0),
        ("payload_too_large", 1.0),
        ("unknown_profile", 1.0),
    ] {
        assert_eq!(metric(&metrics, &format!("teleguard_discarded_total{{reason=\"{reason}\"}}")), count, "{reason}");
    }

    // Still alive and well.
    let (status, _) = post(&client, &server, "vehicle", good).await;
    assert_eq!(status, 202);
    assert_eq!(get_json(&client, &server.url("/healthz")).await["status"], "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_query_parameters_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let client = client();
    let response = client.get(server.url("/api/anomalies?since=someday")).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert!(answer["error"].as_str().unwrap().starts_with("since:"), "{answer}");
    let response = client.get(server.url("/api/readings?limit=0")).send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(get_json(&client, &server.url("/api/anomalies?limit=5&order=recent")).await, json!([]));
}
