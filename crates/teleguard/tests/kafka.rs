//! The distributed shape against a real Kafka-protocol broker (tansu, started on a free loopback
//! port in a temporary folder): reference 000's chain across processes with kafka-python at both
//! ends, two detectors sharing a group when one of them is killed, the serving role, the
//! gateway's dead letters, SASL (SCRAM) authentication and mutual TLS (through socat in front of
//! tansu, which cannot serve TLS itself).

mod common;

use common::{HISTORICAL, Server, client, free_port, get_json, installed_or_skip, sink_stats, wait_for, wait_success};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A tansu broker of its own.
struct Tansu {
    binary: PathBuf,
    folder: PathBuf,
    port: u16,
    /// `memory://tansu/`, or `sqlite://tansu.db` (in `folder`) to survive a restart.
    storage: &'static str,
    /// `--authentication`: clients must authenticate (SASL), `tansu topic list` included.
    authentication: bool,
    /// The port it tells clients to connect to: `port`, or a TLS terminator's in front of it.
    advertised: u16,
    child: Option<Child>,
}

impl Tansu {
    fn binary() -> Option<PathBuf> {
        let path = std::env::var_os("TELEGUARD_TANSU").map(PathBuf::from).or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/tansu-0.6.0/bin/tansu"))
        })?;
        path.is_file().then_some(path)
    }

    fn start(binary: PathBuf, folder: &Path) -> Tansu {
        Tansu::start_with(binary, folder, "memory://tansu/")
    }

    fn start_with(binary: PathBuf, folder: &Path, storage: &'static str) -> Tansu {
        let mut tansu = Tansu::stopped(binary, folder, storage);
        tansu.launch();
        tansu
    }

    /// A broker on a port of its own, not started yet.
    fn stopped(binary: PathBuf, folder: &Path, storage: &'static str) -> Tansu {
        std::fs::create_dir_all(folder).unwrap();
        let port = free_port();
        Tansu {
            binary,
            folder: folder.to_path_buf(),
            port,
            storage,
            authentication: false,
            advertised: port,
            child: None,
        }
    }

    /// kill -9, then the same broker again on the same port and storage.
    fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        self.launch();
    }

    /// What clients bootstrap from: the advertised address.
    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.advertised)
    }

    fn launch(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised);
        let log = std::fs::File::create(self.folder.join("tansu.log")).unwrap();
        let child = Command::new(&self.binary)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &advertised])
            .args(["--storage-engine", self.storage])
            .args(self.authentication.then_some("--authentication"))
            .current_dir(&self.folder)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        if self.authentication {
            // `tansu topic list` cannot authenticate: ready once it accepts connections.
            for _ in 0..100 {
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    std::thread::sleep(Duration::from_millis(300));
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            panic!("tansu did not listen on {url}; its log: {}", self.folder.join("tansu.log").display());
        }
        for _ in 0..100 {
            let listed = Command::new(&self.binary)
                .args(["topic", "list", "--broker", &url])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if listed {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("tansu did not answer on {url}; its log: {}", self.folder.join("tansu.log").display());
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn tansu_or_skip(test: &str) -> Option<PathBuf> {
    installed_or_skip(Tansu::binary(), test, "tansu", "the cargo crate tansu 0.6.0")
}

/// Python with kafka-python (scripts/test puts it in the tests' venv).
fn python_or_skip(test: &str) -> Option<PathBuf> {
    let python = std::env::var_os("TELEGUARD_PYTHON").map(PathBuf::from);
    let usable = python.filter(|p| {
        Command::new(p).args(["-c", "import kafka"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    });
    installed_or_skip(usable, test, "kafka-python", "the PyPI package kafka-python")
}

/// A config with `[kafka]` on `tansu`, for data of 2024 (no event-time age limit).
fn write_config(folder: &Path, tansu: &Tansu, extra_client: &str) -> String {
    let path = folder.join("teleguard.toml");
    let text = format!(
        "{HISTORICAL}\n[kafka]\nbrokers = \"{}\"\npartitions = 2\nbatch_ms = 50\n\n[kafka.consumer]\n\
         \"fetch.wait.max.ms\" = \"100\"\n{extra_client}\n",
        tansu.brokers()
    );
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn role(folder: &Path, name: &str, config: &str) -> Server {
    Server::start(&folder.join(name), &["--config", config, "--role", name])
}

/// kafka-python reads `topic` from the beginning until it has `expected` messages or the topic
/// stays quiet for `idle_secs`; one JSON line `{"key":..,"value":..,"headers":{..}}` per message
/// (`value` parsed when it is JSON, else the text).
fn python_consume(
    python: &Path,
    brokers: &str,
    topic: &str,
    expected: usize,
    idle_secs: u64,
) -> Vec<serde_json::Value> {
    const CONSUMER: &str = r#"
import json, sys
from kafka import KafkaConsumer
brokers, topic, expected, idle = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
consumer = KafkaConsumer(topic, bootstrap_servers=brokers, group_id=None, auto_offset_reset="earliest",
                         enable_auto_commit=False, consumer_timeout_ms=idle * 1000, fetch_max_wait_ms=100)
count = 0
for message in consumer:
    try:
        value = json.loads(message.value)
        json.dumps(value, allow_nan=False)
    except ValueError:
        value = message.value.decode(errors="replace")
    print(json.dumps({"key": message.key.decode() if message.key else None, "value": value,
                      "headers": {k: v.decode() for k, v in message.headers or []}}))
    count += 1
    if count >= expected:
        break
"#;
    let output = Command::new(python)
        .args(["-c", CONSUMER, brokers, topic, &expected.to_string(), &idle_secs.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .expect("run the kafka-python consumer");
    assert!(output.status.success(), "kafka-python consumer of {topic} failed");
    String::from_utf8(output.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// kafka-python produces each line of `file` to `topic` as it is, keyed by its `vehicle_id` when
/// it has one, acks=all.
fn python_produce(python: &Path, brokers: &str, topic: &str, file: &Path) {
    const PRODUCER: &str = r#"
import json, sys
from kafka import KafkaProducer
brokers, topic, path = sys.argv[1], sys.argv[2], sys.argv[3]
producer = KafkaProducer(bootstrap_servers=brokers, acks="all", linger_ms=5)
def key(line):
    try:
        return json.loads(line)["vehicle_id"].encode()
    except Exception:
        return None
with open(path, "rb") as lines:
    for line in lines:
        producer.send(topic, key=key(line), value=line.rstrip(b"\n"))
producer.flush()
"#;
    let status = Command::new(python)
        .args(["-c", PRODUCER, brokers, topic, file.to_str().unwrap()])
        .status()
        .expect("run the kafka-python producer");
    assert!(status.success(), "kafka-python producer failed");
}

/// `teleguard simulate` of `profile` into the NDJSON file `out` (with `extra` flags).
fn simulate_file(profile: &str, seed: u64, start: &str, duration: &str, extra: &[&str], out: &Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["simulate", "--profile", profile, "--seed", &seed.to_string(), "--start", start])
        .args(["--duration", duration])
        .args(extra)
        .arg("--to")
        .arg(format!("file:{}", out.display()))
        .stderr(Stdio::inherit())
        .status()
        .expect("run teleguard simulate");
    assert!(status.success(), "simulate {profile} into {}", out.display());
}

fn store_rows(data_dir: &Path, sql: &str) -> Vec<String> {
    let connection = rusqlite::Connection::open_with_flags(
        data_dir.join("teleguard.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut statement = connection.prepare(sql).unwrap();
    statement.query_map([], |row| row.get::<_, String>(0)).unwrap().map(Result::unwrap).collect()
}

async fn analysed(http: &reqwest::Client, server: &Server) -> i64 {
    get_json(http, &server.url("/api/stats")).await["totals"]["analysed"].as_i64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_000_runs_as_processes_with_kafka_python_at_both_ends() {
    let test = "reference_000_runs_as_processes_with_kafka_python_at_both_ends";
    let (Some(binary), Some(python)) = (tansu_or_skip(test), python_or_skip(test)) else { return };
    let folder = tempfile::tempdir().unwrap();
    let tansu = Tansu::start(binary, &folder.path().join("tansu"));
    let config = write_config(folder.path(), &tansu, "");
    let enrich = role(folder.path(), "enrich", &config);
    let detect = role(folder.path(), "detect", &config);

    // Reference 000's producer: kafka-python sends a simulated night of vehicles to the raw topic.
    let night = folder.path().join("night.ndjson");
    let labels_path = folder.path().join("labels.json");
    let labels_arg = labels_path.to_str().unwrap();
    simulate_file("vehicle", 5, "2024-09-04T00:00:00Z", "1h", &["--anomaly-rate", "3", "--labels", labels_arg], &night);
    let sent: Vec<serde_json::Value> =
        std::fs::read_to_string(&night).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    python_produce(&python, &tansu.brokers(), "vehicle_telemetry_raw", &night);

    // Every raw message comes out enriched, keyed by its vehicle.
    let enriched = python_consume(&python, &tansu.brokers(), "vehicle_events_enriched", sent.len(), 60);
    let key =
        |v: &serde_json::Value| format!("{}@{}", v["vehicle_id"].as_str().unwrap(), v["timestamp"].as_str().unwrap());
    let sent_keys: BTreeSet<String> = sent.iter().map(key).collect();
    let enriched_keys: BTreeSet<String> = enriched.iter().map(|m| key(&m["value"])).collect();
    assert_eq!(enriched_keys, sent_keys, "every raw reading comes out enriched");
    for message in &enriched {
        let value = &message["value"];
        assert_eq!(message["key"], value["vehicle_id"], "keyed by entity: {message}");
        assert!(value["driver_name"].is_string(), "a driver for every known vehicle: {value}");
        assert!(value.get("current_zone").is_some(), "{value}");
    }
    assert!(enriched.iter().any(|m| m["value"]["current_zone"].is_string()), "some readings are in a zone");

    // The detector finds the injected teleports of the night, and says so on the anomalies topic.
    let http = client();
    wait_for("the detector to analyse the night", || async {
        (analysed(&http, &detect).await >= sent.len() as i64).then_some(())
    })
    .await;
    wait_for("the anomalies to be produced", || async {
        let sink = sink_stats(&http, &detect, "kafka").await;
        (sink["up"] == true && sink["lag_anomalies"] == 0).then_some(())
    })
    .await;
    let anomalies = python_consume(&python, &tansu.brokers(), "telemetry-anomalies", usize::MAX, 5);
    let labels: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&labels_path).unwrap()).unwrap();
    let teleports: Vec<&serde_json::Value> =
        labels["labels"].as_array().unwrap().iter().filter(|l| l["type"] == "teleport").collect();
    assert!(!teleports.is_empty(), "the night has teleports to find");
    for label in teleports {
        let found = anomalies.iter().any(|a| {
            let value = &a["value"];
            value["detector"] == "teleport"
                && value["entity_id"] == label["entity"]
                && value["timestamp"].as_str() >= label["start"].as_str()
                && value["timestamp"].as_str() <= label["end"].as_str()
        });
        assert!(found, "teleport {label} is on the anomalies topic");
    }
    let ids: BTreeSet<&str> = anomalies.iter().map(|a| a["value"]["id"].as_str().unwrap()).collect();
    let stored = store_rows(&folder.path().join("detect"), "SELECT id FROM telemetry_anomalies");
    assert_eq!(ids, stored.iter().map(String::as_str).collect(), "the topic holds the detector's anomalies");
    drop(enrich);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_detectors_share_a_group_and_the_survivor_of_a_kill_finds_the_teleport_across_it() {
    let test = "two_detectors_share_a_group_and_the_survivor_of_a_kill_finds_the_teleport_across_it";
    let (Some(binary), Some(python)) = (tansu_or_skip(test), python_or_skip(test)) else { return };
    let folder = tempfile::tempdir().unwrap();
    let tansu = Tansu::start(binary, &folder.path().join("tansu"));
    // A member that stops heartbeating loses its partitions after 6 s.
    let config =
        write_config(folder.path(), &tansu, "\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"");
    let (first_dir, second_dir) = (folder.path().join("first"), folder.path().join("second"));
    let first = Server::start(&first_dir, &["--config", &config, "--role", "detect"]);
    let second = Server::start(&second_dir, &["--config", &config, "--role", "detect"]);
    let http = client();

    // Ten clean minutes of eight vehicles on the detectors' input topic.
    let topic = format!("kafka://{}/vehicle_events_enriched", tansu.brokers());
    let produce = |start: &str, duration: &str| {
        Command::new(env!("CARGO_BIN_EXE_teleguard"))
            .args(["simulate", "--profile", "vehicle", "--entities", "8", "--seed", "9", "--anomaly-rate", "0"])
            .args(["--start", start, "--duration", duration, "--to", &topic])
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    };
    wait_success(produce("2024-09-04T10:00:00Z", "10m"), "the first ten minutes");
    let first_part = 8 * 120;
    wait_for("both detectors to analyse the first part", || async {
        (analysed(&http, &first).await + analysed(&http, &second).await >= first_part).then_some(())
    })
    .await;

    // The owner of V001 (the one holding its latest reading) is killed; V001's next reading is
    // 300 km from its last, 2.5 s later.
    let vehicle = "V001";
    let latest = |dir: &Path| {
        store_rows(
            dir,
            &format!(
                "SELECT timestamp_ms || ',' || latitude || ',' || longitude FROM silver WHERE entity_id = '{vehicle}' \
                 ORDER BY timestamp_ms DESC LIMIT 1"
            ),
        )
        .first()
        .map(|row| row.split(',').map(|f| f.parse::<f64>().unwrap()).collect::<Vec<f64>>())
    };
    let (in_first, in_second) = (latest(&first_dir), latest(&second_dir));
    let first_owns = match (&in_first, &in_second) {
        (Some(a), Some(b)) => a[0] > b[0],
        (owned, _) => owned.is_some(),
    };
    let (owner, survivor, owner_dir) =
        if first_owns { (first, second, first_dir.clone()) } else { (second, first, second_dir.clone()) };
    let last = if first_owns { in_first } else { in_second }.expect("V001 was analysed");
    owner.kill_hard();
    let jump_ms = last[0] as i64 + 2500; // between two of its 5 s readings
    let jump = serde_json::json!({
        "vehicle_id": vehicle,
        "timestamp": jump_ms, // epoch milliseconds, which the vehicle profile accepts too
        "latitude": last[1] + 2.7,
        "longitude": last[2],
        "speed": 50.0,
        "engine_status": "on",
    });
    let jump_file = folder.path().join("jump.ndjson");
    std::fs::write(&jump_file, format!("{jump}\n")).unwrap();
    python_produce(&python, &tansu.brokers(), "vehicle_events_enriched", &jump_file);
    wait_success(produce("2024-09-04T10:10:00Z", "5m"), "five more minutes");
    // Restarted as a supervisor would: it joins as a new member, the group rebalances, and
    // whoever gets V001's partition rebuilds its state from the topic before judging the jump.
    // (tansu 0.6 evicts a member that stopped heartbeating but does not reassign its partitions
    // until a member joins, so the restart is what moves them here; and a member joining before
    // the dead one's session expired is given nothing in the rebalance that follows the
    // eviction, so the restart waits out the 6 s session.)
    tokio::time::sleep(Duration::from_secs(8)).await;
    let restarted = Server::start(&owner_dir, &["--config", &config, "--role", "detect"]);

    let readings = |dir: &Path| -> BTreeSet<String> {
        store_rows(dir, "SELECT entity_id || '@' || timestamp_ms FROM silver").into_iter().collect()
    };
    let expected = 8 * 120 + 8 * 60 + 1;
    // A rebalance with tansu takes a few join rounds: up to a minute.
    let all = settle(
        || async { readings(&first_dir).union(&readings(&second_dir)).cloned().collect::<BTreeSet<String>>() },
        |all| all.len() >= expected,
    )
    .await;
    assert_eq!(all.len(), expected);
    let teleport_sql = format!(
        "SELECT id FROM telemetry_anomalies WHERE detector = 'teleport' AND entity_id = '{vehicle}' \
         AND timestamp_ms = {jump_ms}"
    );
    let found: Vec<String> = [&first_dir, &second_dir].iter().flat_map(|dir| store_rows(dir, &teleport_sql)).collect();
    assert_eq!(found.len(), 1, "the jump is found once, by one detector: {found:?}");
    for server in [&survivor, &restarted] {
        wait_for("the anomalies to be produced", || async {
            (sink_stats(&http, server, "kafka").await["lag_anomalies"] == 0).then_some(())
        })
        .await;
    }
    let anomalies = python_consume(&python, &tansu.brokers(), "telemetry-anomalies", usize::MAX, 5);
    let mut per_id: BTreeMap<String, usize> = BTreeMap::new();
    for anomaly in &anomalies {
        let value = &anomaly["value"];
        if value["detector"] == "teleport" && value["entity_id"] == vehicle && value["timestamp_ms"] == jump_ms {
            *per_id.entry(value["id"].as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    assert_eq!(per_id.len(), 1, "one teleport anomaly (by id) for the jump: {per_id:?}");
    let alert_sql =
        format!("SELECT CAST(id AS TEXT) FROM alerts WHERE entity_id = '{vehicle}' AND detector = 'teleport'");
    let alerts: Vec<String> = [&first_dir, &second_dir].iter().flat_map(|dir| store_rows(dir, &alert_sql)).collect();
    assert_eq!(alerts.len(), 1, "one alert for it: {alerts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_and_restarted_mid_stream_loses_nothing() {
    let test = "a_broker_killed_and_restarted_mid_stream_loses_nothing";
    let (Some(binary), Some(python)) = (tansu_or_skip(test), python_or_skip(test)) else { return };
    let folder = tempfile::tempdir().unwrap();
    let mut tansu = Tansu::start_with(binary, &folder.path().join("tansu"), "sqlite://tansu.db");
    let config = write_config(folder.path(), &tansu, "");
    let enrich = role(folder.path(), "enrich", &config);
    let http = client();
    let raw = format!("kafka://{}/vehicle_telemetry_raw", tansu.brokers());
    let produce = |start: &str, speed: &str| {
        Command::new(env!("CARGO_BIN_EXE_teleguard"))
            .args(["simulate", "--profile", "vehicle", "--seed", "3", "--start", start, "--duration", "20m"])
            .args(["--speed", speed, "--to", &raw])
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    };
    wait_success(produce("2024-09-04T08:00:00Z", "max"), "the first 20 minutes");
    let first_part = 15 * 240;
    wait_for("the first part to be enriched", || async {
        (analysed(&http, &enrich).await >= first_part).then_some(())
    })
    .await;

    // The broker dies while the producer sends the next 20 minutes (over 4 s) and the enricher
    // consumes and produces them, and comes back; the clients retry until it does.
    let second_part = produce("2024-09-04T08:20:00Z", "300");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tansu.restart();
    wait_success(second_part, "the next 20 minutes, across the restart");
    let total = 2 * first_part as usize;
    let analysed_now = settle(|| analysed(&http, &enrich), |n| *n >= total as i64).await;
    assert_eq!(analysed_now, total as i64, "every raw message is consumed once");
    let enriched = python_consume(&python, &tansu.brokers(), "vehicle_events_enriched", total, 30);
    let keys: BTreeSet<String> = enriched
        .iter()
        .map(|m| {
            format!("{}@{}", m["value"]["vehicle_id"].as_str().unwrap(), m["value"]["timestamp"].as_str().unwrap())
        })
        .collect();
    assert_eq!(keys.len(), total, "every reading reaches the enriched topic");
    let duplicates = store_rows(&folder.path().join("enrich"), "SELECT CAST(count(*) AS TEXT) FROM dead_letters");
    eprintln!("{} enriched messages for {total} readings; dead letters (redeliveries): {duplicates:?}", enriched.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_on_a_topic_become_dead_letters_with_their_reason_and_the_rest_goes_on() {
    let test = "hostile_messages_on_a_topic_become_dead_letters_with_their_reason_and_the_rest_goes_on";
    let (Some(binary), Some(python)) = (tansu_or_skip(test), python_or_skip(test)) else { return };
    let folder = tempfile::tempdir().unwrap();
    let tansu = Tansu::start(binary, &folder.path().join("tansu"));
    let config = write_config(folder.path(), &tansu, "");
    // Messages over 4 KiB are refused (the default is 1 MiB).
    let text =
        std::fs::read_to_string(&config).unwrap().replace("partitions = 2", "partitions = 2\nmax_payload_bytes = 4096");
    std::fs::write(&config, text).unwrap();
    let enrich = role(folder.path(), "enrich", &config);
    let valid = |vehicle: &str, second: u32| {
        format!(
            r#"{{"vehicle_id":"{vehicle}","timestamp":"2024-09-04T08:00:{second:02}Z","latitude":40.7,"longitude":-74.0,"speed":30,"engine_status":"on"}}"#
        )
    };
    let hostile = [
        valid("V001", 0),
        r#"{"vehicle_id": "V001", "timestamp": "#.to_string(),
        r#"{"vehicle_id":"V002","timestamp":"2024-09-04T08:00:05Z","latitude":40.7,"longitude":-74.0,"speed":"fast"}"#
            .to_string(),
        // Infinity: JSON has no such number, so it is malformed (the parser says "out of range").
        r#"{"vehicle_id":"V003","timestamp":"2024-09-04T08:00:05Z","latitude":40.7,"longitude":-74.0,"speed":1e999}"#
            .to_string(),
        r#"{"vehicle_id":"V004","timestamp":"2024-09-04T08:00:05Z","latitude":95.0,"longitude":-74.0,"speed":3}"#
            .to_string(),
        format!(r#"{{"vehicle_id":"V005","padding":"{}"}}"#, "x".repeat(6000)),
        "\u{1}\u{2} not json at all".to_string(),
        valid("UNKNOWN-DEVICE", 10),
        valid("V001", 0),
        valid("V001", 20),
        valid("V001", 15),
    ];
    let file = folder.path().join("hostile.ndjson");
    std::fs::write(&file, hostile.join("\n") + "\n").unwrap();
    python_produce(&python, &tansu.brokers(), "vehicle_telemetry_raw", &file);

    let letters = python_consume(&python, &tansu.brokers(), "telemetry-dead-letters", 6, 30);
    let codes: BTreeSet<String> =
        letters.iter().map(|l| l["headers"]["reason_code"].as_str().unwrap().to_string()).collect();
    let expected: BTreeSet<String> =
        ["malformed_json", "schema", "out_of_range", "payload_too_large"].map(String::from).into();
    assert_eq!(codes, expected, "each hostile message is a dead letter with its reason: {letters:?}");
    assert_eq!(letters.len(), 6, "{letters:?}");
    assert!(letters.iter().any(|l| l["headers"]["error"].as_str().unwrap().contains("number out of range")));
    for letter in &letters {
        assert!(letter["headers"]["origin"].as_str().unwrap().starts_with("vehicle_telemetry_raw/"), "{letter}");
        assert!(!letter["headers"]["error"].as_str().unwrap().is_empty(), "{letter}");
    }
    // Valid messages go on, the repeated one once; the store keeps every rejected one.
    let enriched = python_consume(&python, &tansu.brokers(), "vehicle_events_enriched", 4, 30);
    let keys: BTreeSet<String> =
        enriched.iter().map(|m| format!("{}@{}", m["value"]["vehicle_id"], m["value"]["timestamp"])).collect();
    assert_eq!(keys.len(), 4, "four distinct valid readings: {keys:?}");
    assert_eq!(enriched.len(), 4, "the repeated message is not enriched twice");
    let http = client();
    let counts = get_json(&http, &enrich.url("/api/dead-letters/counts")).await;
    let text = counts.to_string();
    for code in expected.iter().chain([&"duplicate".to_string()]) {
        assert!(text.contains(code.as_str()), "{code} counted in bronze: {text}");
    }
    assert_eq!(get_json(&http, &enrich.url("/healthz")).await["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_001_gateway_forwards_validated_drone_readings_to_the_detector() {
    let test = "reference_001_gateway_forwards_validated_drone_readings_to_the_detector";
    let (Some(binary), Some(python)) = (tansu_or_skip(test), python_or_skip(test)) else { return };
    let folder = tempfile::tempdir().unwrap();
    let tansu = Tansu::start(binary, &folder.path().join("tansu"));
    let config = write_config(folder.path(), &tansu, "");
    let gateway = role(folder.path(), "gateway", &config);
    let detect = role(folder.path(), "detect", &config);

    // Drones post to the gateway (as they would publish over MQTT); one message is invalid.
    let drones = folder.path().join("drones.ndjson");
    simulate_file("drone", 4, "2024-09-04T10:00:00Z", "2m", &[], &drones);
    let mut body = std::fs::read_to_string(&drones).unwrap();
    let sent = body.lines().count();
    body.push_str("{\"drone_id\": \"D-x\", \"timestamp\": \"yesterday\"}\n");
    let http = client();
    let (status, report) = common::post(&http, &gateway, "drone", body).await;
    assert_eq!(status, 202, "{report}");
    assert_eq!(report["accepted"], sent as u64, "{report}");
    assert_eq!(report["errors"][0]["reason"], "invalid_timestamp", "{report}");

    // telemetry-validated carries reference 001's drone messages, epoch-millisecond timestamps.
    let validated = python_consume(&python, &tansu.brokers(), "telemetry-validated", sent, 30);
    assert_eq!(validated.len(), sent);
    for message in &validated {
        let value = &message["value"];
        assert!(value["timestamp"].is_i64(), "{value}");
        assert_eq!(message["key"], value["drone_id"]);
        for field in ["latitude", "longitude", "altitude", "velocity", "battery_level", "signal_strength"] {
            assert!(value[field].is_number(), "{field} in {value}");
        }
        assert!(value.get("driver_name").is_none(), "drones are not enriched: {value}");
    }
    wait_for("the detector to analyse every drone reading", || async {
        (analysed(&http, &detect).await == sent as i64).then_some(())
    })
    .await;
    let stats = get_json(&http, &gateway.url("/api/stats")).await;
    assert_eq!(stats["totals"]["rejected"], 1, "the invalid one stays in the gateway's quarantine: {stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_started_before_its_broker_says_so_and_waits_for_it() {
    let test = "a_role_started_before_its_broker_says_so_and_waits_for_it";
    let (Some(binary), Some(python)) = (tansu_or_skip(test), python_or_skip(test)) else { return };
    let folder = tempfile::tempdir().unwrap();
    let mut tansu = Tansu::stopped(binary, &folder.path().join("tansu"), "memory://tansu/");
    let config = write_config(folder.path(), &tansu, "");
    let log_path = folder.path().join("enrich.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let enrich =
        Server::start_with_stderr(&folder.path().join("enrich"), &["--config", &config, "--role", "enrich"], log);
    let said = wait_for_log(&log_path, "is the broker up?").await;
    assert!(said.contains(&tansu.brokers()), "the warning names the brokers: {said}");

    tansu.launch();
    let night = folder.path().join("night.ndjson");
    simulate_file("vehicle", 8, "2024-09-04T01:00:00Z", "5m", &[], &night);
    python_produce(&python, &tansu.brokers(), "vehicle_telemetry_raw", &night);
    let sent = std::fs::read_to_string(&night).unwrap().lines().count();
    let enriched = python_consume(&python, &tansu.brokers(), "vehicle_events_enriched", sent, 60);
    assert_eq!(enriched.len(), sent, "once the broker is up, everything flows");
    drop(enrich);
}

/// Probes every 100 ms until `done` holds of the probe's value or a minute passes; the last value,
/// for the caller's assertion to show.
async fn settle<T, Fut: std::future::Future<Output = T>>(
    mut probe: impl FnMut() -> Fut,
    done: impl Fn(&T) -> bool,
) -> T {
    for _ in 0..600 {
        let value = probe().await;
        if done(&value) {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    probe().await
}

/// Waits (up to 30 s) for a line containing `needle` in the log at `path`; the line.
async fn wait_for_log(path: &Path, needle: &str) -> String {
    for _ in 0..300 {
        if let Some(line) = std::fs::read_to_string(path).unwrap_or_default().lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no {needle:?} in {}: {}", path.display(), std::fs::read_to_string(path).unwrap_or_default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_role_writes_the_enriched_topic_to_clickhouse() {
    let test = "the_history_role_writes_the_enriched_topic_to_clickhouse";
    let Some(binary) = tansu_or_skip(test) else { return };
    let Some(clickhouse_binary) = common::clickhouse::clickhouse_or_skip(test) else { return };
    let folder = tempfile::tempdir().unwrap();
    let tansu = Tansu::start(binary, &folder.path().join("tansu"));
    let mut clickhouse = common::clickhouse::ClickHouse::new(clickhouse_binary, &folder.path().join("clickhouse"));
    clickhouse.start().await;
    let config = write_config(folder.path(), &tansu, "");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("\n[sinks.clickhouse]\nurl = \"{}\"\nbatch_ms = 100\n", clickhouse.url()));
    std::fs::write(&config, text).unwrap();
    // Reference 000: producer → raw → enrich → enriched → history (sync_to_clickhouse).
    let _enrich = role(folder.path(), "enrich", &config);
    let history = role(folder.path(), "history", &config);
    let raw = format!("kafka://{}/vehicle_telemetry_raw", tansu.brokers());
    let status = Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["simulate", "--profile", "vehicle", "--seed", "6", "--start", "2024-09-04T07:00:00Z"])
        .args(["--duration", "10m", "--to", &raw])
        .status()
        .unwrap();
    assert!(status.success());
    let sent = 15 * 120;
    let table = "teleguard.enriched_telemetry_history";
    let count = format!("SELECT uniqExact(vehicle_id, timestamp_ms) FROM {table}");
    let stored = settle(|| clickhouse.number(&count), |n| *n >= sent).await;
    assert_eq!(stored, sent, "every enriched reading is in ClickHouse once");
    let with_driver = clickhouse.number(&format!("SELECT count() FROM {table} FINAL WHERE driver_name != ''")).await;
    assert_eq!(with_driver, sent, "each with its driver, enriched upstream");
    let http = client();
    let sink = sink_stats(&http, &history, "clickhouse").await;
    assert_eq!(sink["up"], true, "{sink}");
    let stats = get_json(&http, &history.url("/api/stats")).await;
    assert_eq!(stats["totals"]["anomalies"], 0, "the history role runs no detectors: {stats}");
}

/// `SELECT`s one text column of `sql` from the store in `data_dir` as a set.
fn store_set(data_dir: &Path, sql: &str) -> BTreeSet<String> {
    store_rows(data_dir, sql).into_iter().collect()
}

/// Each anomaly as its id and episode end, and each alert as its first anomaly and count: what a
/// repeated or reordered message must not change.
const ANOMALY_STATES: &str = "SELECT id || ' end ' || coalesce(episode_end_ms, '-') FROM telemetry_anomalies";
const ALERT_COUNTS: &str = "SELECT first_anomaly_id || ' x' || anomalies FROM alerts";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serving_role_keeps_each_anomaly_once_whatever_the_topic_repeats_and_files_hostile_messages() {
    let test = "the_serving_role_keeps_each_anomaly_once_whatever_the_topic_repeats_and_files_hostile_messages";
    let (Some(binary), Some(python)) = (tansu_or_skip(test), python_or_skip(test)) else { return };
    let folder = tempfile::tempdir().unwrap();
    let tansu = Tansu::start(binary, &folder.path().join("tansu"));
    // A member that stops heartbeating leaves the group after 6 s (see the restart below).
    let config =
        write_config(folder.path(), &tansu, "\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"");
    let detect = role(folder.path(), "detect", &config);
    let serve_dir = folder.path().join("serve");
    let serve = role(folder.path(), "serve", &config);
    let http = client();

    // A night of vehicles with injected anomalies goes to the detector; its store's anomalies
    // reach the anomalies topic and from there the serving process.
    let night = folder.path().join("night.ndjson");
    simulate_file("vehicle", 5, "2024-09-04T00:00:00Z", "1h", &["--anomaly-rate", "3"], &night);
    python_produce(&python, &tansu.brokers(), "vehicle_events_enriched", &night);
    let sent = std::fs::read_to_string(&night).unwrap().lines().count() as i64;
    let analysed_now = settle(|| analysed(&http, &detect), |n| *n >= sent).await;
    assert_eq!(analysed_now, sent);
    wait_for("the detector's anomalies to be produced", || async {
        let sink = sink_stats(&http, &detect, "kafka").await;
        (sink["up"] == true && sink["lag_anomalies"] == 0).then_some(())
    })
    .await;
    // Stopped, so that nothing more comes (its fleet watch would find the vehicles silent and
    // raise `offline` anomalies); what it holds is produced before it exits.
    let detect_dir = detect.data_dir.clone();
    assert!(detect.terminate().success());
    let detected = store_set(&detect_dir, ANOMALY_STATES);
    assert!(detected.len() > 10, "the night has anomalies to serve: {}", detected.len());
    assert!(detected.iter().any(|a| !a.ends_with("end -")), "some are closed episodes (stops, zone visits)");
    let served = settle(|| async { store_set(&serve_dir, ANOMALY_STATES) }, |s| *s == detected).await;
    assert_eq!(served, detected, "the serving store holds the detector's anomalies, closed as they closed");
    let detector_alerts = store_set(&detect_dir, ALERT_COUNTS);
    assert_eq!(store_set(&serve_dir, ALERT_COUNTS), detector_alerts, "the same alerts, one per episode");
    // And it serves them: the API's list is the detector's anomalies, most anomalous first.
    let listed = get_json(&http, &serve.url("/api/anomalies?limit=10000")).await;
    let listed_ids: BTreeSet<String> =
        listed.as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_string()).collect();
    let detected_ids = store_set(&detect_dir, "SELECT id FROM telemetry_anomalies");
    assert_eq!(listed_ids, detected_ids);
    let alerts = get_json(&http, &serve.url("/api/alerts?limit=10000")).await;
    assert_eq!(alerts.as_array().unwrap().len(), detector_alerts.len());

    // The whole topic again (as after a producer's retry or a replay), an episode whose close
    // arrives before its opening, hostile messages, and one new anomaly after them.
    let everything = python_consume(&python, &tansu.brokers(), "telemetry-anomalies", usize::MAX, 5);
    assert!(everything.len() >= detected.len(), "every change of every anomaly is on the topic");
    let template = everything.iter().map(|m| m["value"].clone()).find(|v| v["detector"] == "teleport").unwrap();
    let variant = |id: &str, change_seq: i64, end: Option<i64>| {
        let mut anomaly = template.clone();
        anomaly["id"] = id.into();
        anomaly["change_seq"] = change_seq.into();
        anomaly["detector"] = "unusual_stop".into();
        anomaly["entity_id"] = format!("V-{id}").into(); // an alert of its own
        anomaly["episode_start_ms"] = 1_725_400_000_000_i64.into();
        anomaly["episode_end_ms"] = end.map_or(serde_json::Value::Null, Into::into);
        anomaly.to_string()
    };
    let mut lines: Vec<String> = everything.iter().map(|m| m["value"].to_string()).collect();
    lines.push(variant("episode-x", 101, Some(1_725_403_000_000)));
    lines.push(variant("episode-x", 100, None));
    let mut missing_id = template.clone();
    missing_id.as_object_mut().unwrap().remove("id");
    let mut numeric_id = template.clone();
    numeric_id["id"] = 5.into();
    let mut unknown_detector = template.clone();
    unknown_detector["detector"] = "tea_leaves".into();
    let hostile = [
        "{\"id\": \"cut short".to_string(),
        missing_id.to_string(),
        numeric_id.to_string(),
        "[\"an\", \"array\"]".to_string(),
        unknown_detector.to_string(),
    ];
    lines.extend(hostile.iter().cloned());
    lines.push(variant("after-the-hostile-ones", 102, None));
    let file = folder.path().join("again.ndjson");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    python_produce(&python, &tansu.brokers(), "telemetry-anomalies", &file);

    let mut expected = detected.clone();
    expected.insert("episode-x end 1725403000000".into());
    expected.insert("after-the-hostile-ones end -".into());
    let served = settle(|| async { store_set(&serve_dir, ANOMALY_STATES) }, |s| *s == expected).await;
    assert_eq!(served, expected, "repeats change nothing; the close wins over the older opening");
    let mut expected_alerts = detector_alerts.clone();
    expected_alerts.insert("episode-x x1".into());
    expected_alerts.insert("after-the-hostile-ones x1".into());
    assert_eq!(store_set(&serve_dir, ALERT_COUNTS), expected_alerts, "no alert raised or counted twice");
    let letters = settle(
        || async { get_json(&http, &serve.url("/api/dead-letters?limit=100")).await },
        |l| l.as_array().unwrap().len() >= hostile.len(),
    )
    .await;
    let reasons: Vec<String> = letters
        .as_array()
        .unwrap()
        .iter()
        .map(|l| format!("{} {}", l["reason_code"].as_str().unwrap(), l["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(reasons.len(), hostile.len(), "{reasons:#?}");
    for expected_reason in [
        "malformed_json not an anomaly message at telemetry-anomalies/",
        "field `id`: missing",
        "field `id`: expected a string, got a number",
        "invalid_message not an anomaly message at telemetry-anomalies/",
        "\"tea_leaves\" is not a detector",
    ] {
        assert!(reasons.iter().any(|r| r.contains(expected_reason)), "{expected_reason:?} in {reasons:#?}");
    }
    let topic_letters = python_consume(&python, &tansu.brokers(), "telemetry-dead-letters", hostile.len(), 10);
    assert_eq!(topic_letters.len(), hostile.len(), "and on the dead-letter topic: {topic_letters:?}");

    // kill -9 and start again: the committed offsets hold, whatever comes again changes nothing.
    serve.kill_hard();
    // tansu 0.6 gives a member that joins before the dead one's session expired no partitions
    // in the rebalance that follows the eviction: the restart waits the session out.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let serve = role(folder.path(), "serve", &config);
    let late = folder.path().join("late.ndjson");
    std::fs::write(&late, variant("after-the-restart", 103, None) + "\n").unwrap();
    python_produce(&python, &tansu.brokers(), "telemetry-anomalies", &late);
    expected.insert("after-the-restart end -".into());
    let served = settle(|| async { store_set(&serve_dir, ANOMALY_STATES) }, |s| *s == expected).await;
    assert_eq!(served, expected);
    expected_alerts.insert("after-the-restart x1".into());
    assert_eq!(store_set(&serve_dir, ALERT_COUNTS), expected_alerts);
    let letters = get_json(&http, &serve.url("/api/dead-letters?limit=100")).await;
    assert_eq!(letters.as_array().unwrap().len(), hostile.len(), "no hostile message filed twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_forwards_its_rejects_to_the_dead_letter_topic_from_its_store_across_a_kill() {
    let test = "the_gateway_forwards_its_rejects_to_the_dead_letter_topic_from_its_store_across_a_kill";
    let (Some(binary), Some(python)) = (tansu_or_skip(test), python_or_skip(test)) else { return };
    let folder = tempfile::tempdir().unwrap();
    let tansu = Tansu::start(binary, &folder.path().join("tansu"));
    let config = write_config(folder.path(), &tansu, "");
    // The sink holds a batch for 4 s, so the kill below comes before anything was produced.
    let text = std::fs::read_to_string(&config).unwrap().replace("batch_ms = 50", "batch_ms = 4000");
    std::fs::write(&config, text).unwrap();
    let gateway = role(folder.path(), "gateway", &config);
    let http = client();
    let valid = r#"{"drone_id":"D-1","timestamp":1725436800000,"latitude":40.7,"longitude":-74.0,"altitude":120.0,"velocity":12.0,"acceleration_x":0.1,"acceleration_y":0.1,"acceleration_z":9.8,"battery_level":80.0,"signal_strength":-60.0}"#;
    let body = [
        valid.to_string(),
        r#"{"drone_id": "D-2", "timestamp": "yesterday"}"#.to_string(),
        "{\"drone_id\": \"D-3\", \"timest".to_string(),
        valid.replace("D-1", "D-4").replace("120.0", "\"high\""),
    ]
    .join("\n");
    let (status, report) = common::post(&http, &gateway, "drone", body).await;
    assert_eq!(status, 202, "{report}");
    assert_eq!(report["accepted"], 1, "{report}");
    let codes: BTreeSet<String> =
        report["errors"].as_array().unwrap().iter().map(|e| e["reason"].as_str().unwrap().to_string()).collect();
    assert_eq!(codes, ["invalid_timestamp", "malformed_json", "schema"].map(String::from).into(), "{report}");
    gateway.kill_hard();
    let before = python_consume(&python, &tansu.brokers(), "telemetry-dead-letters", usize::MAX, 3);
    assert!(before.is_empty(), "killed before its sink produced anything: {before:?}");

    // Started again on the same store, the sink finds the rejects after its cursor.
    let gateway = role(folder.path(), "gateway", &config);
    let letters = python_consume(&python, &tansu.brokers(), "telemetry-dead-letters", 3, 30);
    let by_code: BTreeMap<String, &serde_json::Value> =
        letters.iter().map(|l| (l["headers"]["reason_code"].as_str().unwrap().to_string(), l)).collect();
    assert_eq!(by_code.keys().cloned().collect::<BTreeSet<String>>(), codes, "{letters:?}");
    assert_eq!(letters.len(), 3, "{letters:?}");
    for letter in &letters {
        assert_eq!(letter["key"], "drone", "{letter}");
        assert!(letter["headers"]["origin"].as_str().unwrap().starts_with("http/bronze/"), "{letter}");
        assert!(!letter["headers"]["error"].as_str().unwrap().is_empty(), "{letter}");
    }
    assert_eq!(by_code["invalid_timestamp"]["value"]["timestamp"], "yesterday", "the message as it was sent");
    assert!(by_code["schema"]["headers"]["error"].as_str().unwrap().contains("altitude"), "{letters:?}");
    let validated = python_consume(&python, &tansu.brokers(), "telemetry-validated", 1, 30);
    assert_eq!(validated.len(), 1, "the valid reading goes on to the raw topic");
    // Nothing more once the cursor is past them: a clean stop and start produces no copies.
    wait_for("the dead-letter cursor to be recorded", || async {
        let cursor = store_rows(
            &gateway.data_dir,
            "SELECT CAST(position AS TEXT) FROM sink_cursors WHERE sink = 'kafka' AND layer = 'dead_letters'",
        );
        (!cursor.is_empty()).then_some(())
    })
    .await;
    assert!(gateway.terminate().success());
    let gateway = role(folder.path(), "gateway", &config);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = python_consume(&python, &tansu.brokers(), "telemetry-dead-letters", usize::MAX, 3);
    assert_eq!(after.len(), 3, "{after:?}");
    drop(gateway);
}

/// A gateway and an enricher on `config`, and a simulated night of vehicles (`seed`) posted to
/// the gateway: returns once the enricher analysed every reading through the broker and the
/// gateway's Kafka sink is up, with both servers, the body posted and its reading count.
async fn a_night_from_gateway_to_enricher(folder: &Path, config: &str, seed: u64) -> (Server, Server, String, i64) {
    let gateway = role(folder, "gateway", config);
    let enrich = role(folder, "enrich", config);
    let night = folder.join("night.ndjson");
    simulate_file("vehicle", seed, "2024-09-04T02:00:00Z", "5m", &[], &night);
    let body = std::fs::read_to_string(&night).unwrap();
    let sent = body.lines().count() as i64;
    let http = client();
    let (status, report) = common::post(&http, &gateway, "vehicle", body.clone()).await;
    assert_eq!((status, report["accepted"].as_i64()), (202, Some(sent)), "{report}");
    let enriched = settle(|| analysed(&http, &enrich), |n| *n >= sent).await;
    assert_eq!(enriched, sent, "every reading crossed the broker");
    assert_eq!(sink_stats(&http, &gateway, "kafka").await["up"], true);
    (gateway, enrich, body, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_scram_through_the_client_settings_moves_messages_and_a_wrong_password_keeps_them_in_the_store() {
    let test = "sasl_scram_through_the_client_settings_moves_messages_and_a_wrong_password_keeps_them_in_the_store";
    let Some(binary) = tansu_or_skip(test) else { return };
    let folder = tempfile::tempdir().unwrap();
    // tansu keeps SCRAM credentials in its storage; they are made while it does not ask for
    // them yet (`tansu user create` cannot authenticate), then it restarts asking.
    let mut tansu = Tansu::start_with(binary.clone(), &folder.path().join("tansu"), "sqlite://tansu.db");
    let created = Command::new(&binary)
        .args(["user", "create", "--broker", &format!("tcp://{}", tansu.brokers()), "teleguard", "s3cret"])
        .args(["--mechanism", "scram512"])
        .status()
        .unwrap();
    assert!(created.success(), "tansu user create");
    tansu.authentication = true;
    tansu.restart();
    let sasl = |password: &str| {
        format!(
            "[kafka.client]\n\"security.protocol\" = \"sasl_plaintext\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\
             \"sasl.username\" = \"teleguard\"\n\"sasl.password\" = \"{password}\"\n"
        )
    };
    let config = write_config(folder.path(), &tansu, "");
    let text = std::fs::read_to_string(&config).unwrap() + &sasl("s3cret");
    std::fs::write(&config, text).unwrap();
    // The gateway produces what it is posted, the enricher consumes it: topics, producer,
    // consumer group and commits all through SCRAM-SHA-512.
    let (_gateway, _enrich, body, sent) = a_night_from_gateway_to_enricher(folder.path(), &config, 2).await;
    let http = client();

    // The same with a wrong password: the gateway takes readings in (they wait in its store)
    // and says why it cannot deliver them.
    let wrong = folder.path().join("wrong.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace("\"s3cret\"", "\"wrong\"");
    std::fs::write(&wrong, text).unwrap();
    let log_path = folder.path().join("wrong.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let refused = Server::start_with_stderr(
        &folder.path().join("refused"),
        &["--config", wrong.to_str().unwrap(), "--role", "gateway"],
        log,
    );
    let (status, _) = common::post(&http, &refused, "vehicle", body).await;
    assert_eq!(status, 202);
    // tansu leaves the refused SCRAM exchange unanswered, so librdkafka sees only a timeout;
    // the error names the brokers and the settings to check.
    let said = wait_for_log(&log_path, "sink kafka: target down").await;
    eprintln!("with a wrong password: {said}");
    assert!(said.contains(&tansu.brokers()), "the error names the brokers: {said}");
    assert!(said.contains("security.protocol = \"sasl_plaintext\""), "and what to check: {said}");
    let sink = sink_stats(&http, &refused, "kafka").await;
    assert_eq!(sink["up"], false, "{sink}");
    assert_eq!(sink["lag_readings"], sent, "the readings wait in its store: {sink}");
    assert_eq!(sink["written_readings"], 0, "{sink}");
}

/// A mutual-TLS terminator (Debian's socat) on a free loopback port in front of a plaintext
/// broker: it presents `server.crt` of `certs` (a `teleguard certs` folder), takes only clients
/// with a certificate its `ca.crt` signed, and forwards each connection to `target`.
struct TlsTerminator {
    child: Child,
}

impl TlsTerminator {
    fn binary_or_skip(test: &str) -> Option<PathBuf> {
        let binary = ["/usr/bin/socat", "/bin/socat"].map(PathBuf::from).into_iter().find(|p| p.is_file());
        installed_or_skip(binary, test, "socat", "socat")
    }

    fn start(binary: &Path, port: u16, certs: &Path, target: u16, log: &Path) -> TlsTerminator {
        let file = |name: &str| certs.join(name).to_str().unwrap().to_string();
        let listen = format!(
            "openssl-listen:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},cafile={},verify=1",
            file("server.crt"),
            file("server.key"),
            file("ca.crt")
        );
        let log_file = std::fs::File::create(log).unwrap();
        let child = Command::new(binary)
            .args(["-d", "-d", &listen, &format!("tcp:127.0.0.1:{target}")])
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start socat");
        let terminator = TlsTerminator { child };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return terminator;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("socat did not listen on 127.0.0.1:{port}; its log: {}", log.display());
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `teleguard certs` in `dir`: a CA, `server.crt` for 127.0.0.1 / localhost and `teleguard.crt`.
fn make_certificates(dir: &Path) {
    let output = Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["certs", "--client", "teleguard", "--out"])
        .arg(dir)
        .output()
        .expect("run teleguard certs");
    assert!(output.status.success(), "teleguard certs: {}", String::from_utf8_lossy(&output.stderr));
}

/// `[kafka.client]` for TLS with a client certificate: `ca.crt`, `teleguard.crt` and
/// `teleguard.key` of `certs`.
fn tls_client(certs: &Path) -> String {
    format!(
        "[kafka.client]\n\"security.protocol\" = \"ssl\"\n\"ssl.ca.location\" = {:?}\n\
         \"ssl.certificate.location\" = {:?}\n\"ssl.key.location\" = {:?}\n",
        certs.join("ca.crt"),
        certs.join("teleguard.crt"),
        certs.join("teleguard.key")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_through_the_client_settings_moves_messages_and_another_ca_or_no_client_certificate_keeps_them_in_the_store()
 {
    let test = "mutual_tls_through_the_client_settings_moves_messages_and_another_ca_or_no_client_certificate_keeps_them_in_the_store";
    let Some(binary) = tansu_or_skip(test) else { return };
    let Some(socat) = TlsTerminator::binary_or_skip(test) else { return };
    let folder = tempfile::tempdir().unwrap();
    let (certs, other) = (folder.path().join("certs"), folder.path().join("other-ca"));
    make_certificates(&certs);
    make_certificates(&other);
    // tansu listens in plaintext but advertises the terminator's port, and the clients speak
    // only TLS, which tansu's own port does not: every connection that works, bootstrap and
    // after metadata, went through the terminator with a client certificate.
    let mut tansu = Tansu::stopped(binary, &folder.path().join("tansu"), "memory://tansu/");
    tansu.advertised = free_port();
    let _terminator =
        TlsTerminator::start(&socat, tansu.advertised, &certs, tansu.port, &folder.path().join("socat.log"));
    tansu.launch();
    let config = write_config(folder.path(), &tansu, "");
    let text = std::fs::read_to_string(&config).unwrap() + &tls_client(&certs);
    std::fs::write(&config, text).unwrap();
    let (_gateway, _enrich, body, sent) = a_night_from_gateway_to_enricher(folder.path(), &config, 3).await;
    let http = client();

    // A gateway that trusts another CA refuses the broker's certificate, and the terminator
    // refuses a gateway without a client certificate: each takes readings in (they wait in its
    // store) and says what to check. Both are started first, so their timeouts overlap.
    let text = std::fs::read_to_string(&config).unwrap();
    let ca_line = format!("\"ssl.ca.location\" = {:?}\n", certs.join("ca.crt"));
    let key_lines = format!(
        "\"ssl.certificate.location\" = {:?}\n\"ssl.key.location\" = {:?}\n",
        certs.join("teleguard.crt"),
        certs.join("teleguard.key")
    );
    assert!(text.contains(&ca_line) && text.contains(&key_lines), "{text}");
    let refused: Vec<(&str, Server, PathBuf)> = [
        ("another-ca", text.replace(&ca_line, &format!("\"ssl.ca.location\" = {:?}\n", other.join("ca.crt")))),
        ("no-client-certificate", text.replace(&key_lines, "")),
    ]
    .into_iter()
    .map(|(name, text)| {
        let config = folder.path().join(format!("{name}.toml"));
        std::fs::write(&config, text).unwrap();
        let log_path = folder.path().join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let args = ["--config", config.to_str().unwrap(), "--role", "gateway"];
        (name, Server::start_with_stderr(&folder.path().join(name), &args, log), log_path)
    })
    .collect();
    for (_, server, _) in &refused {
        let (status, _) = common::post(&http, server, "vehicle", body.clone()).await;
        assert_eq!(status, 202);
    }
    for (name, server, log_path) in &refused {
        let said = wait_for_log(log_path, "sink kafka: target down").await;
        eprintln!("{name}: {said}");
        assert!(said.contains(&tansu.brokers()), "the error names the brokers: {said}");
        assert!(said.contains("security.protocol = \"ssl\""), "and what to check: {said}");
        assert!(said.contains("ssl.ca.location must hold the CA"), "the CA setting in particular: {said}");
        assert!(said.contains("ssl.certificate.location"), "and the client certificate: {said}");
        let sink = sink_stats(&http, server, "kafka").await;
        assert_eq!(sink["up"], false, "{name}: {sink}");
        assert_eq!(sink["lag_readings"], sent, "{name}: the readings wait in its store: {sink}");
        assert_eq!(sink["written_readings"], 0, "{name}: {sink}");
    }
    let socat_log = std::fs::read_to_string(folder.path().join("socat.log")).unwrap();
    assert!(socat_log.contains("peer did not return a certificate"), "the terminator refused the second: {socat_log}");
}

/// A plain, anonymous mosquitto on a free loopback port (Debian's `mosquitto`), for the gateway's
/// MQTT source.
struct Mosquitto {
    port: u16,
    child: Child,
}

impl Mosquitto {
    fn start_or_skip(test: &str, folder: &Path) -> Option<Mosquitto> {
        let binary = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"].map(PathBuf::from).into_iter().find(|p| p.is_file());
        let binary = installed_or_skip(binary, test, "mosquitto", "mosquitto and mosquitto-clients")?;
        std::fs::create_dir_all(folder).unwrap();
        let port = free_port();
        let config = folder.join("mosquitto.conf");
        std::fs::write(&config, format!("user root\nallow_anonymous true\nlistener {port} 127.0.0.1\n")).unwrap();
        let child = Command::new(binary).arg("-c").arg(&config).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
        let mosquitto = Mosquitto { port, child: child.expect("start mosquitto") };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(mosquitto);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("mosquitto did not listen on 127.0.0.1:{port}");
    }

    /// `mosquitto_pub` of `message` to the reference topic, QoS 1.
    fn publish(&self, message: &str) {
        let output = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q", "1", "-t", "iot/telemetry", "-m", message])
            .output()
            .expect("mosquitto_pub (Debian's mosquitto-clients) runs");
        assert!(output.status.success(), "mosquitto_pub: {}", String::from_utf8_lossy(&output.stderr));
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_forwards_the_rejects_of_its_mqtt_source_to_the_dead_letter_topic() {
    let test = "the_gateway_forwards_the_rejects_of_its_mqtt_source_to_the_dead_letter_topic";
    let (Some(binary), Some(python)) = (tansu_or_skip(test), python_or_skip(test)) else { return };
    let folder = tempfile::tempdir().unwrap();
    let Some(mosquitto) = Mosquitto::start_or_skip(test, &folder.path().join("mosquitto")) else { return };
    let tansu = Tansu::start(binary, &folder.path().join("tansu"));
    let config = write_config(folder.path(), &tansu, "");
    let text = std::fs::read_to_string(&config).unwrap()
        + &format!(
            "\n[[sources.mqtt]]\nurl = \"mqtt://127.0.0.1:{}\"\nclient_id = \"teleguard-gateway\"\n\
             reconnect_min_ms = 50\nreconnect_max_ms = 500\n",
            mosquitto.port
        );
    std::fs::write(&config, text).unwrap();
    let gateway = role(folder.path(), "gateway", &config);
    let drone = |entity: &str, second: i64| {
        format!(
            r#"{{"timestamp": {}, "drone_id": "{entity}", "latitude": 37.77, "longitude": -122.41, "altitude": 120.0, "velocity": 12.0, "acceleration_x": 0.1, "acceleration_y": -0.1, "acceleration_z": 0.0, "battery_level": 80.0, "signal_strength": -60.0}}"#,
            1_725_446_400_000 + second * 1000
        )
    };
    // Valid probes until one is stored: the source has subscribed.
    let http = client();
    let mut second = 0;
    wait_for("the MQTT source to subscribe", || {
        second += 1;
        mosquitto.publish(&drone("probe", second));
        let url = gateway.url("/api/readings?entity=probe");
        let http = http.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            (!get_json(&http, &url).await.as_array()?.is_empty()).then_some(())
        }
    })
    .await;
    mosquitto.publish("{\"timestamp\": 1725446400000, \"drone_id\": ");
    mosquitto.publish(&drone("d-bad", 1).replace("\"velocity\": 12.0", "\"velocity\": \"fast\""));

    let letters = python_consume(&python, &tansu.brokers(), "telemetry-dead-letters", 2, 30);
    let codes: BTreeSet<&str> = letters.iter().map(|l| l["headers"]["reason_code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["malformed_json", "schema"].into(), "{letters:?}");
    assert_eq!(letters.len(), 2, "{letters:?}");
    for letter in &letters {
        assert!(letter["headers"]["origin"].as_str().unwrap().starts_with("mqtt/bronze/"), "{letter}");
        assert_eq!(letter["key"], "drone", "{letter}");
    }
    let schema = letters.iter().find(|l| l["headers"]["reason_code"] == "schema").unwrap();
    assert!(schema["headers"]["error"].as_str().unwrap().contains("velocity"), "{schema}");
    assert_eq!(schema["value"]["drone_id"], "d-bad", "the message as it was published");
}
