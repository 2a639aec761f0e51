//! `GET /api/openapi.json` is true: it documents every route the API serves, and every
//! documented route, called on a running teleguard, answers a documented status with a body
//! that its schema accepts.

mod common;

use common::{Server, client, get_json, post, wait_for};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use teleguard_core::time::{format_millis, now_millis};

/// The routes the router serves, read from its source (`.route("PATH", ...)`).
fn served_routes() -> BTreeSet<String> {
    let source = include_str!("../../api/src/lib.rs");
    source.split(".route(\"").skip(1).map(|rest| rest.split('"').next().unwrap().to_string()).collect()
}

/// Checks `body` against the schema of `status` for `method path` in `document`.
fn check_response(document: &Value, path: &str, method: &str, status: u16, body: &Value) {
    let responses = &document["paths"][path][method]["responses"];
    let response = &responses[status.to_string()];
    assert!(response.is_object(), "{method} {path} answered {status}, which is not documented: {body}");
    let Some(schema) = response["content"]["application/json"]["schema"].as_object() else { return };
    let mut rooted = document.clone();
    rooted.as_object_mut().unwrap().remove("paths");
    rooted["allOf"] = json!([Value::Object(schema.clone())]);
    let validator = jsonschema::validator_for(&rooted).unwrap_or_else(|e| panic!("{method} {path}: bad schema: {e}"));
    let errors: Vec<String> = validator.iter_errors(body).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "{method} {path} {status}: the body breaks its schema: {errors:#?}\n{body:#}");
}

fn reading(vehicle: &str, seconds_ago: i64, lat: f64) -> Value {
    json!({"vehicle_id": vehicle, "timestamp": format_millis(now_millis() - seconds_ago * 1000), "latitude": lat,
           "longitude": -122.45, "speed": 40.0, "engine_status": "on"})
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_is_documented_and_answers_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let http = client();
    let document = get_json(&http, &server.url("/api/openapi.json")).await;
    assert_eq!(document["openapi"], "3.1.0");
    let documented: BTreeSet<String> = document["paths"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(documented, served_routes(), "the routes served and the routes documented differ");

    // Something to list: a teleport (an anomaly and an alert) and a dead letter.
    let track = [reading("V1", 30, 37.76), reading("V1", 20, 37.7601), reading("V1", 10, 38.5)];
    assert_eq!(post(&http, &server, "vehicle", serde_json::to_vec(&track).unwrap()).await.0, 202);
    assert_eq!(post(&http, &server, "vehicle", r#"{"vehicle_id": "V2"}"#.to_string()).await.0, 422);
    let alert = wait_for("the teleport's alert", || async {
        let alerts = get_json(&http, &server.url("/api/alerts")).await;
        alerts.as_array().unwrap().first().and_then(|a| a["id"].as_i64())
    })
    .await;
    let dead_letter = get_json(&http, &server.url("/api/dead-letters")).await[0]["id"].as_i64().unwrap();

    let mut called = 0;
    // Acknowledge before resolve: the order the lifecycle allows.
    let mut calls: Vec<(String, String)> = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            calls.push((path.clone(), method.clone()));
        }
    }
    calls.sort_by_key(|(path, _)| path.ends_with("/resolve"));
    for (path, method) in calls {
        let operation = &document["paths"][&path][&method];
        let mut url =
            path.replace("{profile}", "vehicle").replace("{id}", &alert.to_string()).replace("{name}", "teleport");
        let examples: Vec<String> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "query" && p.get("example").is_some())
            .map(|p| {
                let example = &p["example"];
                let text = example.as_str().map_or_else(|| example.to_string(), str::to_string);
                format!("{}={text}", p["name"].as_str().unwrap())
            })
            .collect();
        if !examples.is_empty() {
            url = format!("{url}?{}", examples.join("&"));
        }
        let request = match method.as_str() {
            "get" => http.get(server.url(&url)),
            "post" if path == "/api/ingest/{profile}" => {
                http.post(server.url(&url)).body(reading("V3", 5, 37.7).to_string())
            }
            "post" if path == "/api/dead-letters/replay" => {
                http.post(server.url(&url)).json(&json!({ "ids": [dead_letter] }))
            }
            "post" => http.post(server.url(&url)),
            other => panic!("{other} {path}: no call for this method"),
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let media_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
        if media_type.as_deref() == Some("text/event-stream") {
            // An endless stream: its media type is checked, its body is not waited for.
            let documented = &document["paths"][&path][&method]["responses"][status.to_string()]["content"];
            assert!(
                documented.get("text/event-stream").is_some(),
                "{method} {path}: the event stream is not documented"
            );
            called += 1;
            continue;
        }
        let text = response.text().await.unwrap();
        assert!((200..300).contains(&status), "{method} {path} answered {status}: {text}");
        match media_type.as_deref() {
            Some(t) if t.starts_with("application/json") => {
                check_response(&document, &path, &method, status, &serde_json::from_str(&text).unwrap())
            }
            other => {
                let documented = document["paths"][&path][&method]["responses"][status.to_string()]["content"]
                    .as_object()
                    .map(|c| c.keys().cloned().collect::<Vec<_>>())
                    .unwrap_or_default();
                let served = other.unwrap_or("").split(';').next().unwrap().to_string();
                assert!(documented.contains(&served), "{method} {path}: {served:?} is not among {documented:?}");
            }
        }
        called += 1;
    }
    assert_eq!(called, 19, "every documented route was called");
    // Error bodies have their documented shape too.
    let response = http.get(server.url("/api/anomalies?since=someday")).send().await.unwrap();
    let status = response.status().as_u16();
    check_response(&document, "/api/anomalies", "get", status, &response.json().await.unwrap());
    let response = http.post(server.url("/api/alerts/999999/ack")).send().await.unwrap();
    let status = response.status().as_u16();
    check_response(&document, "/api/alerts/{id}/ack", "post", status, &response.json().await.unwrap());
}
