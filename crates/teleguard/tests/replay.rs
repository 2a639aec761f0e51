//! `teleguard replay` over a simulated fleet day with injected teleports, an out-of-hours
//! restricted-zone visit, a long stop, a spoofer holding three vehicles at one fix and a clock
//! set back: every injected rule anomaly is found, and nothing else fires a rule (in
//! particular, no teleport between two vehicles).

use serde_json::{Value, json};
use std::io::Write;
use std::process::Command;
use teleguard_core::geo::GeofenceIndex;
use teleguard_core::model::GeoPoint;

const DAY_START_MS: i64 = 1_725_408_000_000; // 2024-09-04T00:00:00Z
const STEP_MS: i64 = 30_000;
/// Where a spoofer puts three moving vehicles, between their loops and outside every zone.
const SPOOFED_FIX: GeoPoint = GeoPoint { lat: 37.761_234, lon: -122.470_123 };

fn geofences() -> GeofenceIndex {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/geofences.geojson")).unwrap();
    GeofenceIndex::from_geojson(&text).unwrap()
}

/// The average of a zone's outer ring: inside it for the bundled (convex-ish) zones.
fn centre_of(index: &GeofenceIndex, name: &str) -> GeoPoint {
    let zone = index.zones().iter().find(|z| &*z.name == name).unwrap();
    let ring = &zone.shape.0[0].exterior().0;
    let n = (ring.len() - 1) as f64;
    GeoPoint {
        lat: ring[..ring.len() - 1].iter().map(|c| c.y).sum::<f64>() / n,
        lon: ring[..ring.len() - 1].iter().map(|c| c.x).sum::<f64>() / n,
    }
}

/// A vehicle circling `centre` at 40 km/h on a loop of `radius_deg`.
fn on_loop(centre: GeoPoint, radius_deg: f64, t_ms: i64, phase: f64) -> GeoPoint {
    let radius_km = radius_deg * 111.2;
    let angle = phase + 40.0 / radius_km * (t_ms as f64 / 3_600_000.0);
    GeoPoint {
        lat: centre.lat + radius_deg * angle.cos(),
        lon: centre.lon + radius_deg * angle.sin() / centre.lat.to_radians().cos(),
    }
}

fn at(minutes: i64) -> i64 {
    DAY_START_MS + minutes * 60_000
}

#[test]
fn a_fleet_day_replayed_finds_every_injected_rule_anomaly_and_nothing_else() {
    let zones = geofences();
    let restricted = centre_of(&zones, "Restricted Area");
    let mut lines = Vec::new();
    let mut t = DAY_START_MS;
    while t < DAY_START_MS + 86_400_000 {
        for v in 1..=15 {
            // Loops spread over San Francisco, away from every zone; V005's passes 1.7 km from a restricted one.
            let centre = if v == 5 {
                GeoPoint { lat: restricted.lat + 0.015, lon: restricted.lon }
            } else {
                GeoPoint { lat: 37.745 + 0.006 * f64::from(v % 5), lon: -122.49 + 0.012 * f64::from(v / 5) }
            };
            let mut position = on_loop(centre, 0.005, t, f64::from(v));
            let mut speed = 40.0 + f64::from((t / STEP_MS % 7) as i32) * 0.5;
            if v == 3 && t == at(12 * 60) {
                position.lat += 0.5; // one spoofed fix 55 km away, then back
            }
            if v == 5 && (at(22 * 60)..at(22 * 60 + 30)).contains(&t) {
                position = restricted;
                speed = 8.0;
            }
            if v == 7 && (at(14 * 60)..at(14 * 60 + 50)).contains(&t) {
                position = on_loop(centre, 0.005, at(14 * 60), 7.0);
                speed = 0.0;
            }
            if [9, 11, 13].contains(&v) && (at(16 * 60)..at(16 * 60 + 1)).contains(&t) {
                position = SPOOFED_FIX; // a spoofer holds three moving vehicles for two readings
            }
            if !(v == 5 && (at(22 * 60)..at(22 * 60 + 30)).contains(&t)) {
                assert!(zones.zone_at(position).is_none(), "V{v:03}'s own track enters a zone at {t}");
            }
            // V014's clock reads ten minutes behind for two minutes (four readings).
            let clock_ms = if v == 14 && (at(18 * 60)..at(18 * 60 + 2)).contains(&t) { t - 600_000 } else { t };
            let timestamp = teleguard_core::time::format_millis(clock_ms);
            lines.push(json!({"vehicle_id": format!("V{v:03}"), "timestamp": timestamp, "latitude": position.lat,
                              "longitude": position.lon, "speed": speed, "engine_status": if speed > 0.0 { "on" } else { "idle" }}));
        }
        t += STEP_MS;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("fleet-day.ndjson");
    let mut file = std::fs::File::create(&input).unwrap();
    for line in &lines {
        writeln!(file, "{line}").unwrap();
    }
    let output = dir.path().join("anomalies.ndjson");
    let status = Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["replay", input.to_str().unwrap(), "--profile", "vehicle", "--out", output.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    let anomalies: Vec<Value> =
        std::fs::read_to_string(&output).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // The spoofing rule also flags this synthetic day's jumps: the spoofed fix, and the moments
    // V005 and V007 are moved (within a reading, at 8 and 0 km/h) to the zone and the stop.
    let spoofed: Vec<String> = anomalies
        .iter()
        .filter(|a| a["detector"] == "spoofing")
        .map(|a| format!("{} {}", a["entity"].as_str().unwrap(), a["timestamp"].as_str().unwrap()))
        .collect();
    assert!(spoofed.contains(&"V003 2024-09-04T12:00:00.000Z".to_string()), "{spoofed:?}");
    let spoofers = ["V003", "V005", "V007", "V009", "V011", "V013", "V014"];
    assert!(spoofed.iter().all(|s| spoofers.contains(&&s[..4])), "{spoofed:?}");
    let with_reason = |prefix: &str| -> Vec<String> {
        anomalies
            .iter()
            .filter(|a| a["detector"] == "spoofing" && a["reason"].as_str().unwrap().starts_with(prefix))
            .map(|a| format!("{} {}", a["entity"].as_str().unwrap(), a["timestamp"].as_str().unwrap()))
            .collect()
    };
    // V009 reports first at every step: it meets the others at its second report of the fix.
    assert_eq!(
        with_reason("reported exactly 37.761234,-122.470123 "),
        ["V011 2024-09-04T16:00:00.000Z", "V013 2024-09-04T16:00:00.000Z", "V009 2024-09-04T16:00:30.000Z"]
    );
    assert_eq!(with_reason("event time 2024-09-04T17:50:00.000Z is 570 s behind"), ["V014 2024-09-04T17:50:00.000Z"]);
    assert_eq!(
        anomalies.iter().filter(|a| a["reason"].as_str().unwrap().starts_with("event time")).count(),
        1,
        "one clock anomaly for the episode"
    );
    let rules: Vec<&Value> =
        anomalies.iter().filter(|a| a["detector"] != "zscore" && a["detector"] != "spoofing").collect();
    let summary: Vec<String> =
        rules.iter().map(|a| format!("{} {} {}", a["detector"], a["entity"], a["timestamp"])).collect();

    let teleports: Vec<&&Value> = rules.iter().filter(|a| a["detector"] == "teleport").collect();
    assert_eq!(teleports.len(), 2, "out and back, and no other: {summary:#?}");
    assert!(teleports.iter().all(|a| a["entity"] == "V003"));
    assert_eq!(teleports[0]["timestamp"], "2024-09-04T12:00:00.000Z");
    assert!(teleports[0]["reason"].as_str().unwrap().contains(" km/h over 55.8"), "{}", teleports[0]["reason"]);

    let breaches: Vec<&&Value> = rules.iter().filter(|a| a["detector"] == "geofence_breach").collect();
    assert_eq!(breaches.len(), 2, "opened, then closed: {summary:#?}");
    assert!(breaches.iter().all(|a| a["entity"] == "V005"));
    assert_eq!(breaches[0]["episode_start"], "2024-09-04T22:00:00.000Z");
    assert_eq!(breaches[1]["episode_end"], "2024-09-04T22:30:00.000Z");

    let stops: Vec<&&Value> = rules.iter().filter(|a| a["detector"] == "unusual_stop").collect();
    assert_eq!(stops.len(), 2, "raised past 30 min, then closed: {summary:#?}");
    assert!(stops.iter().all(|a| a["entity"] == "V007"));
    assert_eq!(stops[0]["timestamp"], "2024-09-04T14:30:30.000Z");
    assert_eq!(stops[1]["episode_end"], "2024-09-04T14:50:00.000Z");
    assert!(stops[1]["reason"].as_str().unwrap().contains("for 50 min"), "{}", stops[1]["reason"]);
    assert_eq!(rules.len(), 6, "{summary:#?}");

    // With --all-scores: one line per reading and detector, in input order.
    let scores = Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["replay", input.to_str().unwrap(), "--profile", "vehicle", "--all-scores"])
        .output()
        .unwrap();
    assert!(scores.status.success());
    let records: Vec<u64> = String::from_utf8(scores.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["record"].as_u64().unwrap())
        .collect();
    assert!(records.windows(2).all(|w| w[0] <= w[1]), "input order");
    // Vehicle speed has no z-score: a line per reading from each of the three rules (but for
    // a vehicle's first reading, which some rules only remember).
    assert!(records.len() > lines.len() * 2, "{} score lines for {} readings", records.len(), lines.len());
}

#[test]
fn csv_input_with_a_header_row_is_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("sensor.csv");
    let mut csv = String::from("timestamp,sensor_id,metric_type,value\n");
    // A full window of 120 readings, then the spike at row 140.
    for i in 0..150 {
        let value = if i == 140 { 95.0 } else { 21.0 + f64::from(i % 3) * 0.2 };
        csv.push_str(&format!("2024-09-04T10:{:02}:{:02}Z,env-1,temperature,{value}\n", i / 60, i % 60));
    }
    csv.push_str("2024-09-04T11:00:00Z,env-1,temperature,hot\n");
    std::fs::write(&input, csv).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["replay", input.to_str().unwrap(), "--profile", "environment"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("record 151: field `value`: expected a number, found string \"hot\""), "{stderr}");
    let anomalies: Vec<Value> =
        String::from_utf8(output.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // One episode: opened at the spike, sent again with its end once the value is back.
    assert_eq!(anomalies.len(), 2, "{anomalies:#?}");
    assert_eq!(anomalies[0]["id"], anomalies[1]["id"]);
    assert_eq!(anomalies[0]["timestamp"], "2024-09-04T10:02:20.000Z");
    assert_eq!(anomalies[1]["episode_end"], "2024-09-04T10:02:23.000Z");
    assert_eq!(anomalies[0]["metric"], "temperature");
    let refused = Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["replay", "nowhere.csv", "--profile", "boat"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown profile \"boat\""));
}

#[test]
fn a_folder_of_files_is_replayed_file_by_file_with_a_combined_verdict_per_reading() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("series");
    std::fs::create_dir(&folder).unwrap();
    // Two sensors' files; the second spikes. Each file is judged by its own detectors.
    for (name, spike) in [("a.csv", None), ("b.csv", Some(140))] {
        let mut csv = String::from("timestamp,sensor_id,metric_type,value\n");
        for i in 0..150 {
            let value = if Some(i) == spike { 95.0 } else { 21.0 + f64::from(i % 3) * 0.2 };
            csv.push_str(&format!("2024-09-04T10:{:02}:{:02}Z,env-1,temperature,{value}\n", i / 60, i % 60));
        }
        std::fs::write(folder.join(name), csv).unwrap();
    }
    std::fs::write(folder.join("notes.txt"), "not data").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["replay", folder.to_str().unwrap(), "--profile", "environment", "--all-scores"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<Value> =
        String::from_utf8(output.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let verdicts: Vec<&Value> = lines.iter().filter(|l| l["detector"] == "any").collect();
    assert_eq!(verdicts.len(), 300, "one combined line per reading of both files");
    let flagged: Vec<&&Value> = verdicts.iter().filter(|l| l["is_anomaly"] == true).collect();
    assert!(
        !flagged.is_empty() && flagged.iter().all(|l| l["file"].as_str().unwrap().ends_with("b.csv")),
        "{flagged:#?}"
    );
    assert!(
        flagged.iter().any(|l| l["record"] == 141 && l["detectors"] == serde_json::json!(["zscore"])),
        "{flagged:#?}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("a.csv: 150 readings replayed, 0 flagged"), "{stderr}");
    assert!(stderr.contains("300 readings replayed, "), "{stderr}");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["replay", empty.to_str().unwrap(), "--profile", "environment"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("holds no .csv, .ndjson, .jsonl or .json file"));
}

/// A config with a test-rig profile (`rig`: metrics `a`, `b`) whose only detector is an
/// isolation forest over both, trained on 1,000 readings, with `trees` trees.
fn rig_config(dir: &std::path::Path, trees: usize) -> std::path::PathBuf {
    let path = dir.join(format!("rig-{trees}.toml"));
    let text = format!(
        "[profiles.rig]\nentity_field = \"rig_id\"\nmetrics = [{{ field = \"a\" }}, {{ field = \"b\" }}]\n\
         [profiles.rig.detectors.zscore]\nenabled = false\n\
         [profiles.rig.detectors.isolation_forest]\nfeatures = [\"a\", \"b\"]\ntraining_size = 1000\ntrees = {trees}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `n` readings of rig R1 a second, scattered normally (a around 10 with σ 1, b around 5 with
/// σ 0.5; Box-Muller over a fixed low-discrepancy sequence); reading `i` is in another regime
/// (a around 50, b around 20) when `abnormal(i)`.
fn rig_csv(path: &std::path::Path, n: usize, abnormal: impl Fn(usize) -> bool) {
    let mut csv = String::from("timestamp,rig_id,a,b\n");
    for i in 0..n {
        let (u, v) = (((i + 1) as f64 * 0.618_034).fract(), ((i + 1) as f64 * 0.414_214).fract());
        let radius = (-2.0 * u.ln()).sqrt();
        let (z1, z2) = (radius * (std::f64::consts::TAU * v).cos(), radius * (std::f64::consts::TAU * v).sin());
        let (a, b) = if abnormal(i) { (50.0 + z1, 20.0 + 0.5 * z2) } else { (10.0 + z1, 5.0 + 0.5 * z2) };
        let timestamp = teleguard_core::time::format_millis(1_725_444_000_000 + i as i64 * 1000);
        csv.push_str(&format!("{timestamp},R1,{a:.4},{b:.4}\n"));
    }
    std::fs::write(path, csv).unwrap();
}

/// Per record (from 1): the isolation forest's verdict, when it judged the reading.
fn forest_verdicts(stdout: &[u8]) -> std::collections::BTreeMap<u64, bool> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["detector"] == "isolation_forest")
        .map(|l| (l["record"].as_u64().unwrap(), l["is_anomaly"].as_bool().unwrap()))
        .collect()
}

#[test]
fn a_trained_model_judges_a_file_whose_head_is_abnormal() {
    let dir = tempfile::tempdir().unwrap();
    let config = rig_config(dir.path(), 50);
    let normal = dir.path().join("normal.csv");
    rig_csv(&normal, 2000, |_| false);
    let judged = dir.path().join("judged.csv");
    rig_csv(&judged, 3000, |i| i < 1200);
    let models = dir.path().join("models");
    let trained = Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["train", normal.to_str().unwrap(), "--profile", "rig", "--config", config.to_str().unwrap()])
        .args(["--models", models.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&trained.stderr);
    assert!(trained.status.success(), "{stderr}");
    assert!(stderr.contains("trained 1 isolation forest of profile rig on 2,000 readings"), "{stderr}");
    let file: Value = serde_json::from_str(&std::fs::read_to_string(models.join("rig.model.json")).unwrap()).unwrap();
    assert_eq!(
        (&file["format"], &file["version"], &file["profile"]),
        (&json!("teleguard-models"), &json!(1), &json!("rig"))
    );
    assert_eq!(file["isolation_forest"]["settings"]["features"], json!(["a", "b"]));
    assert_eq!(file["isolation_forest"]["models"][0]["readings"], 2000);

    let replay = |extra: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_teleguard"))
            .args(["replay", judged.to_str().unwrap(), "--profile", "rig", "--config", config.to_str().unwrap()])
            .arg("--all-scores")
            .args(extra)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        forest_verdicts(&output.stdout)
    };
    // With the stored model every reading is judged, the abnormal head as abnormal.
    let stored = replay(&["--models", models.to_str().unwrap()]);
    assert_eq!(stored.len(), 3000, "judged from the first reading");
    assert!((1..=1200).all(|r| stored[&r]), "the abnormal head is flagged");
    let false_alarms = (1201..=3000).filter(|r| stored[r]).count();
    assert!(false_alarms <= 18, "{false_alarms} of 1,800 normal readings flagged");
    // Trained on the head, the forest learns the abnormal regime as normal: it judges nothing
    // of the first 1,000, passes the rest of the abnormal head, and flags the normal readings.
    let headed = replay(&[]);
    assert!((1..=1000).all(|r| !headed.contains_key(&r)));
    let passed = (1001..=1200).filter(|r| !headed[r]).count();
    assert!(passed >= 196, "the rest of the abnormal head looks normal to it: {passed} of 200 passed");
    let flagged = (1201..=3000).filter(|r| headed[r]).count();
    assert!(flagged > 1700, "the normal readings look abnormal to it: {flagged} of 1,800 flagged");
    // A folder without this profile's model says what to do.
    let elsewhere = dir.path().join("empty-models");
    std::fs::create_dir(&elsewhere).unwrap();
    let missing = Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["replay", judged.to_str().unwrap(), "--profile", "rig", "--config", config.to_str().unwrap()])
        .args(["--models", elsewhere.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("holds no model of profile \"rig\"") && stderr.contains("teleguard train"), "{stderr}");
}

#[test]
fn a_model_trained_under_other_settings_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let normal = dir.path().join("normal.csv");
    rig_csv(&normal, 500, |_| false);
    let models = dir.path().join("models");
    let trained = Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["train", normal.to_str().unwrap(), "--profile", "rig"])
        .args(["--config", rig_config(dir.path(), 50).to_str().unwrap(), "--models", models.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(trained.status.success(), "{}", String::from_utf8_lossy(&trained.stderr));
    let refused = Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["replay", normal.to_str().unwrap(), "--profile", "rig"])
        .args(["--config", rig_config(dir.path(), 60).to_str().unwrap(), "--models", models.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("rig.model.json: was trained under other isolation-forest settings"), "{stderr}");
    assert!(stderr.contains("trees: trained with 50, configured 60"), "{stderr}");
    // The profile without a forest has nothing to train.
    let nothing = Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["train", normal.to_str().unwrap(), "--profile", "environment", "--models", models.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!nothing.status.success());
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("has no isolation forest to train"));
}

#[test]
fn nanosecond_timestamps_keep_their_precision_and_their_order() {
    // A 2 kHz position sensor (two readings in every millisecond), exported newest first. The
    // z-score watches the change per reading: a steady ramp, then one step at reading 300.
    // Ordered by millisecond, the two readings of each millisecond would stay newest first, and
    // the step would be found one reading late, on another row, at a time no row has.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shaker.toml");
    std::fs::write(
        &config,
        "[profiles.shaker]\nentity_field = \"sensor\"\nmetrics = [{ field = \"position\" }]\n\
         [profiles.shaker.detectors.zscore]\nmetrics = [\"position_diff\"]\nwindow = 40\nmin_history = 20\n",
    )
    .unwrap();
    let n = 600;
    let stamp = |i: usize| {
        let ns = i as u64 * 500_000 + 123;
        format!("2024-09-04T10:00:{:02}.{:09}Z", ns / 1_000_000_000, ns % 1_000_000_000)
    };
    let mut lines = String::new();
    for i in (0..n).rev() {
        let position = i as f64 * 0.001 + if i >= 300 { 0.01 } else { 0.0 };
        lines.push_str(&format!("{}\n", json!({"sensor": "S1", "timestamp": stamp(i), "position": position})));
    }
    let input = dir.path().join("shaker.ndjson");
    std::fs::write(&input, lines).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["replay", input.to_str().unwrap(), "--profile", "shaker", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let anomalies: Vec<Value> =
        String::from_utf8(output.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(anomalies.len(), 2, "the step opens one episode, which then closes: {anomalies:#?}");
    let (opened, closed) = (&anomalies[0], &anomalies[1]);
    assert_eq!(opened["timestamp"], stamp(300));
    assert_eq!(opened["record"], n - 300, "the row of reading 300 (newest first)");
    assert_eq!(opened["episode_start"], stamp(300));
    assert_eq!(closed["episode_start"], stamp(300), "the episode's start as precise as its reading");
    let end = closed["episode_end"].as_str().unwrap();
    assert_eq!(closed["timestamp"], end);
    assert_eq!(end.len(), "2024-09-04T10:00:00.000000123Z".len(), "{end}");
}
