//! `teleguard eval` through the real binary: a tiny hand-made labels document and replay
//! output give hand-computed numbers; a tiny NAB-shaped folder gives NAB's score; broken
//! files are refused with their name and line.

use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Output};

fn teleguard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_teleguard")).args(args).env("RUST_LOG", "warn").output().expect("run teleguard")
}

fn json_of(output: &Output) -> Value {
    assert!(output.status.success(), "teleguard failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("stdout is JSON")
}

/// `teleguard eval --labels LABELS --anomalies ANOMALIES --json`, parsed.
fn eval_json(labels: &Path, anomalies: &Path) -> Value {
    json_of(&teleguard(&[
        "eval",
        "--labels",
        labels.to_str().unwrap(),
        "--anomalies",
        anomalies.to_str().unwrap(),
        "--json",
    ]))
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn replay_line(entity: &str, timestamp: &str, detector: &str, score: f64, is_anomaly: bool) -> String {
    json!({"entity": entity, "timestamp": timestamp, "detector": detector, "metric": null,
           "score": score, "threshold": 3.0, "is_anomaly": is_anomaly})
    .to_string()
}

#[test]
fn hand_made_labels_and_detections_give_hand_computed_scores() {
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels.json");
    // Two vehicles over 2 hours (4 entity-hours); a teleport on V1, a spike on V2.
    write(
        &labels,
        &json!({"generator": "teleguard simulate", "seed": 7,
                "start": "2024-09-04T00:00:00.000Z", "end": "2024-09-04T02:00:00.000Z",
                "entities": [{"profile": "vehicle", "entity": "V1"}, {"profile": "vehicle", "entity": "V2"}],
                "labels": [
                    {"type": "teleport", "profile": "vehicle", "entity": "V1", "start": "2024-09-04T00:10:00.000Z",
                     "end": "2024-09-04T00:10:05.000Z", "detectors": ["teleport"], "metric": null},
                    {"type": "spike", "profile": "vehicle", "entity": "V2", "start": "2024-09-04T01:00:00.000Z",
                     "end": "2024-09-04T01:01:00.000Z", "detectors": ["zscore"], "metric": "speed"}]})
        .to_string(),
    );
    let anomalies = dir.path().join("anomalies.ndjson");
    let lines = [
        replay_line("V1", "2024-09-04T00:10:05.000Z", "teleport", 900.0, true), // teleport, 5 s late
        replay_line("V1", "2024-09-04T00:11:00.000Z", "teleport", 900.0, true), // 55 s after: within grace
        replay_line("V2", "2024-09-04T01:00:20.000Z", "zscore", 4.0, true),     // spike, 20 s late
        replay_line("V2", "2024-09-04T01:30:00.000Z", "zscore", 3.5, true),     // false
        replay_line("V1", "2024-09-04T01:30:00.000Z", "zscore", 1.0, false),    // a score, not a detection
    ];
    write(&anomalies, &lines.join("\n"));
    let report = eval_json(&labels, &anomalies);
    assert_eq!(report["grace_ms"], 60_000);
    assert_eq!(report["entity_hours"], 4.0);
    let spike = &report["by_type"][0];
    assert_eq!(spike["type"], "spike");
    assert_eq!((spike["recall"].as_f64(), spike["precision"].as_f64()), (Some(1.0), Some(0.5)));
    assert_eq!(spike["median_delay_ms"], 20_000.0);
    assert_eq!(spike["false_alarms_per_entity_hour"], 0.25);
    let teleport = &report["by_type"][1];
    assert_eq!((teleport["true_detections"].as_u64(), teleport["false_detections"].as_u64()), (Some(2), Some(0)));
    assert_eq!((teleport["recall"].as_f64(), teleport["f1"].as_f64()), (Some(1.0), Some(1.0)));
    let overall = &report["overall"];
    assert_eq!((overall["labels"].as_u64(), overall["detected_labels"].as_u64()), (Some(2), Some(2)));
    assert_eq!(overall["precision"], 0.75);
    // Delays 5 s and 20 s: median 12.5 s, p95 5 + 0.95 × 15 = 19.25 s.
    assert_eq!(overall["median_delay_ms"], 12_500.0);
    assert!((overall["p95_delay_ms"].as_f64().unwrap() - 19_250.0).abs() < 1e-9);
    assert!(report.get("nab").is_none());

    // A 30 s grace loses the late teleport detection: a false alarm now.
    let strict = json_of(&teleguard(&[
        "eval",
        "--labels",
        labels.to_str().unwrap(),
        "--anomalies",
        anomalies.to_str().unwrap(),
        "--grace",
        "30",
        "--json",
    ]));
    assert_eq!(strict["overall"]["false_detections"], 2);
}

/// A NAB-shaped folder: one file of `rows` one-minute rows with a window over the four rows
/// from `window_start`.
fn tiny_nab(dir: &Path, rows: usize, window_start: usize) -> Vec<String> {
    let timestamps: Vec<String> = (0..rows).map(|i| format!("2014-04-01 {:02}:{:02}:00", i / 60, i % 60)).collect();
    let mut csv = String::from("timestamp,value\n");
    for (i, t) in timestamps.iter().enumerate() {
        let value = if (window_start..window_start + 4).contains(&i) { 50.0 } else { 10.0 + (i % 3) as f64 };
        csv.push_str(&format!("{t},{value}\n"));
    }
    write(&dir.join("data/cat/x.csv"), &csv);
    write(
        &dir.join("labels/combined_windows.json"),
        &json!({"cat/x.csv": [[
            format!("{}.000000", timestamps[window_start]),
            format!("{}.000000", timestamps[window_start + 3])
        ]]})
        .to_string(),
    );
    write(
        &dir.join("config/profiles.json"),
        r#"{"standard": {"CostMatrix": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11, "tnWeight": 1.0}}}"#,
    );
    timestamps
}

#[test]
fn nab_labels_give_nab_score_next_to_precision_and_recall() {
    let dir = tempfile::tempdir().unwrap();
    let timestamps = tiny_nab(dir.path(), 40, 20);
    let iso = |row: usize| format!("{}Z", timestamps[row].replace(' ', "T"));
    // Detections (score 6, i.e. 6 / (6 + 3) = 2/3 in [0, 1]) at rows 21 and 30; a weaker
    // score (1.5 → 1/3) at row 15 stays below the best threshold.
    let lines = [
        replay_line("cat/x.csv", &iso(21), "zscore", 6.0, true),
        replay_line("cat/x.csv", &iso(30), "zscore", 6.0, true),
        replay_line("cat/x.csv", &iso(15), "zscore", 1.5, false),
    ];
    let anomalies = dir.path().join("scores.ndjson");
    write(&anomalies, &lines.join("\n"));
    let labels = dir.path().join("labels/combined_windows.json");
    let report = eval_json(&labels, &anomalies);
    let overall = &report["overall"];
    assert_eq!((overall["recall"].as_f64(), overall["precision"].as_f64()), (Some(1.0), Some(0.5)));
    assert_eq!(report["by_type"][0]["type"], "cat");
    let nab = &report["nab"][0];
    assert_eq!((nab["detector"].as_str(), nab["profile"].as_str()), (Some("zscore"), Some("standard")));
    // Row 21: σs(−0.75) / σs(−1); row 30, 7 rows past the window of 4: 0.11 × σs(7/3).
    let flipped_sigmoid = |x: f64| 2.0 / (1.0 + (5.0 * x).exp()) - 1.0;
    let raw = flipped_sigmoid(-0.75) / flipped_sigmoid(-1.0) + 0.11 * flipped_sigmoid(7.0 / 3.0);
    assert!((nab["raw_score"].as_f64().unwrap() - raw).abs() < 1e-12, "{nab}");
    assert!((nab["score"].as_f64().unwrap() - 50.0 * (raw + 1.0)).abs() < 1e-9, "{nab}");
    assert!((nab["threshold"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-12);
}

#[test]
fn nab_run_scores_our_detector_and_its_scores_score_the_same_again() {
    let dir = tempfile::tempdir().unwrap();
    // Long enough for the z-score's window (120 rows) to fill before the anomaly.
    tiny_nab(dir.path(), 160, 140);
    let scores = dir.path().join("scores.ndjson");
    let run = json_of(&teleguard(&[
        "eval",
        "--nab",
        dir.path().to_str().unwrap(),
        "--scores-out",
        scores.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(run["overall"]["detected_labels"], 1, "{run}");
    assert!(run["nab"][0]["score"].as_f64().unwrap() > 50.0, "{run}");
    let labels = dir.path().join("labels/combined_windows.json");
    let again = eval_json(&labels, &scores);
    assert_eq!(again, run);
}

#[test]
fn broken_files_are_refused_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels.json");
    write(&labels, "{\"generator\": \"x\",\n\"labels\": [}\n");
    let anomalies = dir.path().join("anomalies.ndjson");
    write(
        &anomalies,
        &format!(
            "{}\n{{\"entity\": \"V1\", \"detector\": \"zscore\"}}\n",
            replay_line("V1", "2024-09-04T00:00:00Z", "zscore", 4.0, true)
        ),
    );
    let output = teleguard(&["eval", "--labels", labels.to_str().unwrap(), "--anomalies", anomalies.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("anomalies file {}", anomalies.display())), "{stderr}");
    assert!(stderr.contains("line 2: missing field `timestamp`"), "{stderr}");

    let good_anomalies = dir.path().join("good.ndjson");
    write(&good_anomalies, &replay_line("V1", "2024-09-04T00:00:00Z", "zscore", 4.0, true));
    let output =
        teleguard(&["eval", "--labels", labels.to_str().unwrap(), "--anomalies", good_anomalies.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("labels file {}: line 2, column", labels.display())), "{stderr}");
}

/// A NAB-shaped folder with one file of 2,000 five-minute rows repeating 10, 11, 12, 11 and a
/// jump to 40 at row 1,500, inside a window over rows 1,450-1,549.
fn nab_with_one_spike(dir: &Path) {
    // From 2014-04-01 00:00, five minutes apart: 2,000 rows end on April 7th.
    let timestamp = |row: i64| {
        let minutes = row * 5;
        format!("2014-04-{:02} {:02}:{:02}:00", 1 + minutes / 1440, minutes % 1440 / 60, minutes % 60)
    };
    let mut csv = String::from("timestamp,value\n");
    for row in 0..2000 {
        let value = if row == 1500 { 40.0 } else { [10.0, 11.0, 12.0, 11.0][row as usize % 4] };
        csv.push_str(&format!("{},{value}\n", timestamp(row)));
    }
    write(&dir.join("data/cat/spike.csv"), &csv);
    let window = [format!("{}.000000", timestamp(1450)), format!("{}.000000", timestamp(1549))];
    write(&dir.join("labels/combined_windows.json"), &json!({ "cat/spike.csv": [window] }).to_string());
    write(
        &dir.join("config/profiles.json"),
        r#"{"standard": {"CostMatrix": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11, "tnWeight": 1.0}}}"#,
    );
}

#[test]
fn nab_run_of_sequence_novelty_finds_the_spike_and_writes_the_scores_nab_uses() {
    let dir = tempfile::tempdir().unwrap();
    nab_with_one_spike(dir.path());
    let scores = dir.path().join("scores.ndjson");
    let run = json_of(&teleguard(&[
        "eval",
        "--nab",
        dir.path().to_str().unwrap(),
        "--detector",
        "novelty",
        "--scores-out",
        scores.to_str().unwrap(),
        "--json",
    ]));
    let overall = &run["overall"];
    assert_eq!(
        (overall["detected_labels"].as_u64(), overall["false_detections"].as_u64()),
        (Some(1), Some(0)),
        "{run}"
    );
    let nab = &run["nab"][0];
    assert_eq!(nab["detector"], "novelty");
    assert!(nab["score"].as_f64().unwrap() > 80.0, "detected early in its window: {nab}");
    // At the detector's own threshold (0.2 by default) the same window, no false positive.
    let own = &nab["at_own_threshold"];
    assert_eq!((own["threshold"].as_f64(), own["detected_windows"].as_u64()), (Some(0.2), Some(1)), "{nab}");
    assert_eq!(own["false_positive_rows"], 0);

    // The learning period's 300 rows have no score; the others their [0, 1] score as NAB's.
    let lines: Vec<Value> =
        std::fs::read_to_string(&scores).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2000 - 300);
    for line in &lines {
        let score = line["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score), "{line}");
        assert_eq!(line["nab_score"].as_f64(), Some(score), "{line}");
        assert_eq!(line["is_anomaly"].as_bool(), Some(score >= 0.2), "{line}");
    }
    let flagged: Vec<&Value> = lines.iter().filter(|l| l["is_anomaly"] == true).collect();
    assert_eq!(flagged.len(), 1, "{flagged:?}");
    let labels = dir.path().join("labels/combined_windows.json");
    assert_eq!(eval_json(&labels, &scores), run, "its scores score the same again");
}
