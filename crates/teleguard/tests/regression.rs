//! Regression tests, each named after what broke.

mod common;

use common::{Server, client, get_json, historical_config, post};

const VALID: &str = r#"{"timestamp": 1725446400000, "drone_id": "d-1", "latitude": 37.77, "longitude": -122.41, "altitude": 120.0, "velocity": 12.0, "acceleration_x": 0.1, "acceleration_y": -0.1, "acceleration_z": 0.0, "battery_level": 80.0, "signal_strength": -60.0}"#;

/// A rejected message before valid ones in one submission shifted the valid readings' ids by
/// its index, so silver ids no longer matched their bronze rows (and a restart's recovery,
/// which numbers readings from bronze, stored them a second time).
#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_message_before_valid_ones_does_not_shift_their_reading_ids() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--config", &historical_config(dir.path(), "")]);
    let http = client();
    let second = VALID.replace("1725446400000", "1725446401000");
    let body = format!("{{\"drone_id\": \"d-1\"}}\n{VALID}\n{second}\n");
    let (status, answer) = post(&http, &server, "drone", body).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!((answer["accepted"].as_u64(), answer["rejected"].as_u64()), (Some(2), Some(1)), "{answer}");
    common::wait_for("both readings", || {
        let url = server.url("/api/readings?entity=d-1");
        let http = http.clone();
        async move { (get_json(&http, &url).await.as_array()?.len() == 2).then_some(()) }
    })
    .await;
    // The valid messages' row comes first (ids 1 and 2), the rejected message's after (id 3).
    let readings = get_json(&http, &server.url("/api/readings?entity=d-1")).await;
    let mut ids: Vec<i64> = readings.as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect();
    ids.sort_unstable();
    let letters = get_json(&http, &server.url("/api/dead-letters")).await;
    assert_eq!(ids, [1, 2], "{readings:#}");
    assert_eq!(letters[0]["id"], 3, "{letters:#}");
}
