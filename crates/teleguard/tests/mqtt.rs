//! The MQTT source against a real Mosquitto on loopback ports, through the real binary:
//! reference 001's sample over TLS, quarantined bad messages, device identity under mutual
//! TLS, and no message lost or doubled across a kill -9 of teleguard or a broker restart.
//!
//! Skipped (with a message) only when mosquitto is not installed and `CI` is unset;
//! `scripts/test` installs it.

mod common;

use common::{HISTORICAL, Server, client, free_port, get_json, installed_or_skip, metric, wait_for};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Reference 001's sample message, as its README publishes it.
const REFERENCE_SAMPLE: &str = r#"{
        "timestamp": 1725446400000,
        "drone_id": "dev",
        "latitude": 37.7749,
        "longitude": -122.4194,
        "altitude": 120.5,
        "velocity": 12.3,
        "acceleration_x": 0.1,
        "acceleration_y": -0.2,
        "acceleration_z": 0.0,
        "battery_level": 87.5,
        "signal_strength": -67.0
      }"#;

fn drone_message(entity: &str, timestamp_ms: i64) -> String {
    format!(
        r#"{{"timestamp": {timestamp_ms}, "drone_id": "{entity}", "latitude": 37.77, "longitude": -122.41, "altitude": 120.0, "velocity": 12.0, "acceleration_x": 0.1, "acceleration_y": -0.1, "acceleration_z": 0.0, "battery_level": 80.0, "signal_strength": -60.0}}"#
    )
}

fn mosquitto_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join("mosquitto")).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path.into_iter().chain([PathBuf::from("/usr/sbin/mosquitto")]).find(|path| path.is_file())
}

/// The broker, or `None` (test skipped) when it is not installed outside CI.
fn mosquitto_or_skip(test: &str) -> Option<PathBuf> {
    installed_or_skip(mosquitto_binary(), test, "mosquitto", "mosquitto and mosquitto-clients")
}

fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(output.status.success(), "{command:?} failed: {}", String::from_utf8_lossy(&output.stderr));
}

/// A dev CA, a server certificate for localhost / 127.0.0.1, and a client certificate per
/// name, made by `teleguard certs`; a second run reuses the CA.
fn make_certificates(dir: &Path, clients: &[&str]) {
    let (first, rest) = clients.split_at(1);
    for names in [first, rest] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_teleguard"));
        command.args(["certs", "--out"]).arg(dir);
        for name in names {
            command.args(["--client", name]);
        }
        run(&mut command);
    }
    let ca = std::fs::read(dir.join("ca.crt")).unwrap();
    assert!(ca.starts_with(b"-----BEGIN CERTIFICATE-----"), "ca.crt is not PEM");
}

/// Mosquitto in a temporary folder: a plain listener, a TLS one, and one requiring client
/// certificates whose name becomes the user name the ACL binds to `iot/telemetry/<name>`.
struct Broker {
    binary: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
    plain: u16,
    tls: u16,
    mutual: u16,
}

impl Broker {
    fn start(binary: PathBuf, dir: &Path) -> Broker {
        make_certificates(dir, &["teleguard", "drone-7"]);
        let (plain, tls, mutual) = (free_port(), free_port(), free_port());
        let d = dir.display();
        let config = format!(
            "user root\npersistence true\npersistence_location {d}/\nmax_queued_messages 0\nmax_inflight_messages 1000\n\
             per_listener_settings false\nallow_anonymous true\nacl_file {d}/acl\n\
             listener {plain} 127.0.0.1\n\
             listener {tls} 127.0.0.1\ncafile {d}/ca.crt\ncertfile {d}/server.crt\nkeyfile {d}/server.key\n\
             listener {mutual} 127.0.0.1\ncafile {d}/ca.crt\ncertfile {d}/server.crt\nkeyfile {d}/server.key\n\
             require_certificate true\nuse_identity_as_username true\n"
        );
        std::fs::write(dir.join("mosquitto.conf"), config).unwrap();
        let acl = "topic readwrite #\n\nuser teleguard\ntopic read iot/telemetry/#\n\npattern write iot/telemetry/%u\n";
        std::fs::write(dir.join("acl"), acl).unwrap();
        let mut broker = Broker { binary, dir: dir.to_path_buf(), child: None, plain, tls, mutual };
        broker.launch();
        broker
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("mosquitto.log")).unwrap();
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.mutual)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not listen within 10 s: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM: mosquitto saves its persistent sessions and queues, then exits.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// `mosquitto_pub` with QoS 1 on the plain listener, then `extra` arguments.
    fn publish(&self, extra: &[&str]) -> std::process::Output {
        self.publish_on(self.plain, &[], extra)
    }

    fn publish_on(&self, port: u16, tls: &[&str], extra: &[&str]) -> std::process::Output {
        Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
            .args(tls)
            .args(extra)
            .output()
            .expect("mosquitto_pub (Debian's mosquitto-clients) runs")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Writes a teleguard config with one `[[sources.mqtt]]` table holding `source`.
fn teleguard_config(dir: &Path, source: &str) -> PathBuf {
    let path = dir.join("teleguard.toml");
    let text = format!("{HISTORICAL}[[sources.mqtt]]\nreconnect_min_ms = 50\nreconnect_max_ms = 500\n{source}\n");
    std::fs::write(&path, text).unwrap();
    path
}

fn start_teleguard(data: &Path, config: &Path) -> Server {
    Server::start(data, &["--config", config.to_str().unwrap()])
}

/// Publishes readings of `entity` until one shows up, so the subscription is known to be in place.
async fn wait_until_subscribed(server: &Server, entity: &str, publish_probe: impl Fn(&str)) {
    let http = client();
    let mut attempt = 0;
    wait_for("the MQTT source to subscribe", || {
        attempt += 1;
        publish_probe(&drone_message(entity, 1_725_446_000_000 + attempt * 1000));
        let url = server.url(&format!("/api/readings?entity={entity}"));
        let http = http.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let readings = get_json(&http, &url).await;
            (!readings.as_array()?.is_empty()).then_some(())
        }
    })
    .await;
}

async fn dead_letter_reasons(server: &Server) -> Vec<String> {
    let letters = get_json(&client(), &server.url("/api/dead-letters?limit=100")).await;
    letters.as_array().unwrap().iter().map(|l| l["reason"].as_str().unwrap().to_string()).collect()
}

/// (total rows, distinct (entity, event time)) of silver, probes left out.
fn silver_counts(data: &Path) -> (i64, i64) {
    let connection = rusqlite::Connection::open_with_flags(
        data.join("teleguard.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open the store read-only");
    connection
        .query_row(
            "SELECT count(*), count(DISTINCT entity_id || '/' || timestamp_ms) FROM silver WHERE entity_id NOT LIKE 'probe-%'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("count silver")
}

/// Waits (up to `limit`) until silver holds `expected` distinct readings and stays there.
async fn wait_for_silver(data: &Path, expected: i64, limit: Duration) -> (i64, i64) {
    let deadline = Instant::now() + limit;
    loop {
        let counts = silver_counts(data);
        if counts.1 >= expected {
            // Anything doubled would arrive with the redeliveries: give them a moment.
            tokio::time::sleep(Duration::from_millis(500)).await;
            return silver_counts(data);
        }
        assert!(Instant::now() < deadline, "silver holds {counts:?} after {limit:?}, expected {expected} readings");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_sample_over_tls_is_stored_and_bad_messages_are_quarantined_with_their_reason() {
    let Some(mosquitto) = mosquitto_or_skip("mqtt over TLS") else { return };
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(mosquitto, dir.path());
    let source = format!(
        "url = \"mqtts://127.0.0.1:{}\"\nca_file = \"{}\"\nclient_id = \"teleguard-tls\"\nmax_payload_bytes = 65536",
        broker.tls,
        broker.file("ca.crt")
    );
    let config = teleguard_config(dir.path(), &source);
    let server = start_teleguard(&dir.path().join("data"), &config);
    let tls = ["--cafile".to_string(), broker.file("ca.crt")];
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    let publish = |message: &str| {
        let output = broker.publish_on(broker.tls, &tls, &["-t", "iot/telemetry", "-m", message]);
        assert!(output.status.success(), "mosquitto_pub: {}", String::from_utf8_lossy(&output.stderr));
    };
    wait_until_subscribed(&server, "probe-0", |probe| publish(probe)).await;

    publish(REFERENCE_SAMPLE);
    // The same message again (as a device resending it would): recorded as a duplicate.
    publish(REFERENCE_SAMPLE);
    publish("{\"timestamp\": 1725446400000, \"drone_id\": ");
    publish(&drone_message("d-bad", 1_725_446_400_000).replace("\"velocity\": 12.0", "\"velocity\": \"fast\""));
    let huge = dir.path().join("huge.json");
    let padding = "x".repeat(1024 * 1024);
    std::fs::write(&huge, format!("{{\"drone_id\": \"d-huge\", \"padding\": \"{padding}\"}}")).unwrap();
    let output = broker.publish_on(broker.tls, &tls, &["-t", "iot/telemetry", "-f", huge.to_str().unwrap()]);
    assert!(output.status.success(), "mosquitto_pub -f: {}", String::from_utf8_lossy(&output.stderr));
    // The same reading as an Avro single-object message, written with the shipped schema.
    let avro = dir.path().join("sample.avro");
    std::fs::write(&avro, common::reference_sample_single_object("avro-dev", 1_725_446_400_000)).unwrap();
    let output = broker.publish_on(broker.tls, &tls, &["-t", "iot/telemetry", "-f", avro.to_str().unwrap()]);
    assert!(output.status.success(), "mosquitto_pub -f (Avro): {}", String::from_utf8_lossy(&output.stderr));
    // A reading from a clock ten days fast.
    publish(&drone_message("d-future", teleguard_core::time::now_millis() + 10 * 86_400_000));
    // The connection survives the oversized message: a reading after it still arrives.
    publish(&drone_message("d-after", 1_725_446_401_000));

    let http = client();
    wait_for("the reading after the 1 MB payload", || {
        let url = server.url("/api/readings?entity=d-after");
        let http = http.clone();
        async move { get_json(&http, &url).await.as_array().filter(|r| !r.is_empty()).map(|_| ()) }
    })
    .await;
    let sample = get_json(&http, &server.url("/api/readings?entity=dev")).await;
    let sample = &sample[0];
    assert_eq!(sample["profile"], "drone");
    assert_eq!(sample["timestamp"], "2024-09-04T10:40:00.000Z");
    assert_eq!(sample["metrics"]["battery_level"], 87.5);
    assert_eq!(sample["metrics"]["signal_strength"], -67.0);
    let from_avro = get_json(&http, &server.url("/api/readings?entity=avro-dev")).await;
    assert_eq!(from_avro[0]["metrics"], sample["metrics"], "{from_avro:#}");
    assert_eq!(from_avro[0]["timestamp"], sample["timestamp"]);

    let reasons = dead_letter_reasons(&server).await;
    assert_eq!(reasons.len(), 5, "{reasons:#?}");
    assert!(reasons.iter().any(|r| r.contains("ahead of its arrival")), "{reasons:#?}");
    assert!(
        reasons.iter().any(|r| r.starts_with("duplicate: same entity, event time and payload as reading")),
        "{reasons:#?}"
    );
    let dev = get_json(&http, &server.url("/api/readings?entity=dev&limit=10")).await;
    assert_eq!(dev.as_array().unwrap().len(), 1, "the resent sample became a second reading: {dev:#}");
    assert!(reasons.iter().any(|r| r.starts_with("invalid JSON")), "{reasons:#?}");
    assert!(reasons.iter().any(|r| r.contains("`velocity`") && r.contains("expected a number")), "{reasons:#?}");
    assert!(reasons.iter().any(|r| r.starts_with("payload_too_large: 1048") && r.contains("65536")), "{reasons:#?}");
    let letters = get_json(&http, &server.url("/api/dead-letters")).await;
    assert!(letters.as_array().unwrap().iter().all(|l| l["source"] == "mqtt"), "{letters:#}");

    let metrics = http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for reason in ["malformed_json", "schema", "payload_too_large", "duplicate", "future_timestamp"] {
        assert_eq!(
            metric(&metrics, &format!("gateway_validation_errors_total{{reason=\"{reason}\"}}")),
            1.0,
            "{reason}"
        );
    }
    assert!(metric(&metrics, "gateway_validation_success_total") >= 2.0);
    assert!(metric(&metrics, "gateway_mqtt_messages_received_total") >= 7.0);
    assert_eq!(metric(&metrics, "gateway_mqtt_connections_total"), 1.0);
    assert!(metric(&metrics, "gateway_process_duration_seconds_count") >= 1.0);
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_binds_devices_to_their_topic_and_a_spoofed_id_is_quarantined() {
    let Some(mosquitto) = mosquitto_or_skip("mqtt mutual TLS") else { return };
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(mosquitto, dir.path());
    let source = format!(
        "url = \"mqtts://127.0.0.1:{}\"\nca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n\
         client_id = \"teleguard-mtls\"\ntopics = [\"iot/telemetry/+\"]\nentity_from_topic = true",
        broker.mutual,
        broker.file("ca.crt"),
        broker.file("teleguard.crt"),
        broker.file("teleguard.key")
    );
    let config = teleguard_config(dir.path(), &source);
    let server = start_teleguard(&dir.path().join("data"), &config);
    let device = [
        "--cafile".to_string(),
        broker.file("ca.crt"),
        "--cert".into(),
        broker.file("drone-7.crt"),
        "--key".into(),
        broker.file("drone-7.key"),
    ];
    let device: Vec<&str> = device.iter().map(String::as_str).collect();
    let publish = |topic: &str, message: &str| {
        let output = broker.publish_on(broker.mutual, &device, &["-t", topic, "-m", message]);
        assert!(output.status.success(), "mosquitto_pub as drone-7: {}", String::from_utf8_lossy(&output.stderr));
    };
    // The probes name drone-7 itself on its own topic, so they pass the identity check.
    wait_until_subscribed(&server, "drone-7", |probe| publish("iot/telemetry/drone-7", probe)).await;

    // A spoofed id on the device's own topic is quarantined, naming both ids.
    publish("iot/telemetry/drone-7", &drone_message("drone-9", 1_725_446_400_000));
    // Another device's topic is refused by the broker's ACL: it never reaches teleguard.
    publish("iot/telemetry/drone-9", &drone_message("drone-9", 1_725_446_401_000));
    publish("iot/telemetry/drone-7", &drone_message("drone-7", 1_725_446_402_000));
    let http = client();
    wait_for("drone-7's last reading", || {
        let url = server.url("/api/readings?entity=drone-7&limit=1000");
        let http = http.clone();
        async move {
            let readings = get_json(&http, &url).await;
            readings.as_array()?.iter().any(|r| r["timestamp"] == "2024-09-04T10:40:02.000Z").then_some(())
        }
    })
    .await;
    let reasons = dead_letter_reasons(&server).await;
    assert_eq!(reasons.len(), 1, "{reasons:#?}");
    assert!(
        reasons[0].starts_with("identity_mismatch:")
            && reasons[0].contains("\"drone-9\"")
            && reasons[0].contains("\"drone-7\""),
        "{reasons:#?}"
    );
    let spoofed = get_json(&http, &server.url("/api/readings?entity=drone-9")).await;
    assert_eq!(spoofed.as_array().unwrap().len(), 0, "{spoofed:#}");
    let metrics = http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&metrics, "gateway_validation_errors_total{reason=\"identity_mismatch\"}"), 1.0);
    // ... and raises a critical security anomaly on the device that sent it, with an alert.
    let found = get_json(&http, &server.url("/api/anomalies?detector=identity")).await;
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!((found[0]["entity"].as_str(), found[0]["severity"].as_str()), (Some("drone-7"), Some("critical")));
    let reason = found[0]["reason"].as_str().unwrap();
    assert!(reason.contains("\"drone-7\"") && reason.contains("\"drone-9\""), "{reason}");
    let alerts = get_json(&http, &server.url("/api/alerts?state=open")).await;
    assert!(
        alerts.as_array().unwrap().iter().any(|a| a["detector"] == "identity" && a["entity"] == "drone-7"),
        "{alerts:#}"
    );
    // A replay cannot launder it: what vouched for the device is not kept with the message.
    let replay: serde_json::Value = http
        .post(server.url("/api/dead-letters/replay"))
        .json(&serde_json::json!({"reason": "identity_mismatch"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(replay["replayed"], 0, "{replay:#}");
    assert_eq!(get_json(&http, &server.url("/api/readings?entity=drone-9")).await, serde_json::json!([]));

    // Without a client certificate the mutual-TLS listener refuses the connection.
    let tls_only = ["--cafile".to_string(), broker.file("ca.crt")];
    let tls_only: Vec<&str> = tls_only.iter().map(String::as_str).collect();
    let refused = broker.publish_on(broker.mutual, &tls_only, &["-t", "iot/telemetry/drone-7", "-m", "{}"]);
    assert!(!refused.status.success(), "a client without a certificate was let in");
}

/// Streams `messages` distinct drone readings with `mosquitto_pub -l` (QoS 1) in the background.
fn stream_with_mosquitto_pub(broker: &Broker, dir: &Path, messages: i64) -> Child {
    let path = dir.join("stream.ndjson");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for i in 0..messages {
        writeln!(file, "{}", drone_message(&format!("d-{}", i % 20), 1_767_225_600_000 + (i / 20) * 1000)).unwrap();
    }
    file.flush().unwrap();
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.plain.to_string(), "-q", "1", "-t", "iot/telemetry", "-l"])
        .args(["-i", "stream-publisher"])
        .stdin(std::fs::File::open(&path).unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub -l")
}

async fn wait_until_silver_reaches(data: &Path, at_least: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while silver_counts(data).1 < at_least {
        assert!(Instant::now() < deadline, "silver did not reach {at_least} readings in 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_mosquitto_pub_streams_10000_messages_loses_none_and_doubles_none() {
    let Some(mosquitto) = mosquitto_or_skip("mqtt kill -9") else { return };
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(mosquitto, dir.path());
    let source = format!("url = \"mqtt://127.0.0.1:{}\"\nclient_id = \"teleguard-crash\"", broker.plain);
    let config = teleguard_config(dir.path(), &source);
    let data = dir.path().join("data");
    let server = start_teleguard(&data, &config);
    wait_until_subscribed(&server, "probe-0", |probe| {
        assert!(broker.publish(&["-t", "iot/telemetry", "-m", probe]).status.success());
    })
    .await;

    let messages = 10_000;
    let mut publisher = stream_with_mosquitto_pub(&broker, dir.path(), messages);
    wait_until_silver_reaches(&data, 1_500).await;
    server.kill_hard();
    let at_kill = silver_counts(&data);
    assert!(at_kill.1 < messages, "the stream ended before the kill ({at_kill:?}); the test proves nothing");
    let server = start_teleguard(&data, &config);
    let status = publisher.wait().expect("mosquitto_pub");
    assert!(status.success(), "mosquitto_pub failed: {}", broker.log());
    let (total, distinct) = wait_for_silver(&data, messages, Duration::from_secs(90)).await;
    assert_eq!((total, distinct), (messages, messages), "killed at {at_kill:?}");
    let stats = get_json(&client(), &server.url("/api/stats")).await;
    let drone = stats["profiles"].as_array().unwrap().iter().find(|p| p["profile"] == "drone").unwrap();
    assert!(drone["analysed"].as_i64().unwrap() >= messages, "{drone:#}");
    eprintln!("killed with {} of {messages} in silver; after the restart {total} rows, {distinct} distinct", at_kill.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_none_and_doubles_none() {
    let Some(mosquitto) = mosquitto_or_skip("mqtt broker restart") else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(mosquitto, dir.path());
    let source = format!("url = \"mqtt://127.0.0.1:{}\"\nclient_id = \"teleguard-restart\"", broker.plain);
    let config = teleguard_config(dir.path(), &source);
    let data = dir.path().join("data");
    let server = start_teleguard(&data, &config);
    wait_until_subscribed(&server, "probe-0", |probe| {
        assert!(broker.publish(&["-t", "iot/telemetry", "-m", probe]).status.success());
    })
    .await;

    // 50 drones for 200 simulated seconds at 40x: 10,000 messages over about 5 s.
    let publisher = Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["simulate", "--profile", "drone", "--entities", "50", "--duration", "200s", "--speed", "40"])
        .args(["--anomaly-rate", "0", "--start", "2026-01-01T00:00:00Z", "--client-id", "restart-publisher"])
        .arg("--to")
        .arg(format!("mqtt://127.0.0.1:{}/iot/telemetry", broker.plain))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("teleguard simulate --to mqtt");
    wait_until_silver_reaches(&data, 2_000).await;
    broker.stop();
    let at_stop = silver_counts(&data);
    tokio::time::sleep(Duration::from_millis(700)).await;
    broker.launch();
    let output = publisher.wait_with_output().expect("teleguard simulate");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "teleguard simulate failed: {stderr}");
    let acknowledged: i64 = stderr
        .lines()
        .find_map(|line| line.strip_prefix("the broker acknowledged all ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no acknowledgement count in {stderr}"));
    assert_eq!(acknowledged, 10_000);
    assert!(at_stop.1 < acknowledged, "the stream ended before the broker stopped ({at_stop:?})");
    let (total, distinct) = wait_for_silver(&data, acknowledged, Duration::from_secs(90)).await;
    assert_eq!((total, distinct), (acknowledged, acknowledged), "broker stopped at {at_stop:?}");
    let metrics = client().get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metric(&metrics, "gateway_mqtt_reconnects_total") >= 1.0, "{metrics}");
    assert!(metric(&metrics, "gateway_mqtt_disconnects_total") >= 1.0);
}
