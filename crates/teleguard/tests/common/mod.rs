//! Shared test harness: starts the real `teleguard` binary on a free port with its own data
//! folder and talks to it over HTTP.

#![allow(dead_code)]

pub mod clickhouse;
pub mod events;
pub mod postgres;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub child: Child,
    pub base: String,
    pub data_dir: PathBuf,
}

impl Server {
    /// Starts `teleguard run --simulate none` on 127.0.0.1:0 with `data_dir`.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> Server {
        Server::start_with_stderr(data_dir, extra_args, Stdio::inherit())
    }

    /// [`Server::start`] with its log (stderr) sent to `stderr`, e.g. a file to read.
    pub fn start_with_stderr(data_dir: &Path, extra_args: &[&str], stderr: impl Into<Stdio>) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_teleguard"))
            .args(["run", "--simulate", "none", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra_args)
            .env("RUST_LOG", std::env::var("TELEGUARD_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start teleguard");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = lines.next().expect("teleguard printed its address").expect("read stdout");
        let address = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, base: format!("http://{address}"), data_dir: data_dir.to_path_buf() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill_hard(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "teleguard did not stop within 20 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client")
}

pub async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    let response = client.get(url).send().await.expect("GET");
    assert!(response.status().is_success(), "GET {url}: {}", response.status());
    response.json().await.expect("JSON body")
}

/// Posts `body` to `/api/ingest/{profile}`; returns the status and JSON answer.
pub async fn post(
    client: &reqwest::Client,
    server: &Server,
    profile: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, serde_json::Value) {
    let response = client.post(server.url(&format!("/api/ingest/{profile}"))).body(body).send().await.expect("POST");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    match serde_json::from_str(&text) {
        Ok(json) => (status, json),
        Err(_) => (status, serde_json::Value::String(text)),
    }
}

/// The value of one Prometheus sample, matched by its full name and labels prefix.
pub fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(name_and_labels) && line[name_and_labels.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Polls `attempt` until it gives a value or 15 s pass.
pub async fn wait_for<T, F, Fut>(what: &str, attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    wait_for_within(what, Duration::from_secs(15), attempt).await
}

/// Polls `attempt` until it gives a value or `limit` passes (a server starting on a loaded
/// machine needs longer than a request).
pub async fn wait_for_within<T, F, Fut>(what: &str, limit: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The schema `schemas/drone_telemetry.avsc` ships.
pub fn drone_avro_schema() -> apache_avro::Schema {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas/drone_telemetry.avsc");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    apache_avro::Schema::parse_str(&text).expect("the shipped drone schema parses")
}

/// Reference 001's sample reading, for `drone_id` at `timestamp_ms`, as an Avro record of the
/// drone schema.
pub fn reference_sample_avro(
    schema: &apache_avro::Schema,
    drone_id: &str,
    timestamp_ms: i64,
) -> apache_avro::types::Value {
    use apache_avro::types::{Record, Value};
    let mut record = Record::new(schema).expect("a record schema");
    record.put("timestamp", Value::TimestampMillis(timestamp_ms));
    record.put("drone_id", drone_id);
    for (field, value) in [
        ("latitude", 37.7749),
        ("longitude", -122.4194),
        ("altitude", 120.5),
        ("velocity", 12.3),
        ("acceleration_x", 0.1),
        ("acceleration_y", -0.2),
        ("acceleration_z", 0.0),
        ("battery_level", 87.5),
        ("signal_strength", -67.0),
    ] {
        record.put(field, value);
    }
    record.into()
}

/// [`reference_sample_avro`] in Avro's single-object encoding, as a device would send it.
pub fn reference_sample_single_object(drone_id: &str, timestamp_ms: i64) -> Vec<u8> {
    let schema = drone_avro_schema();
    let mut writer = apache_avro::GenericSingleObjectWriter::new_with_capacity(&schema, 256).expect("a writer");
    let mut bytes = Vec::new();
    writer.write_value(reference_sample_avro(&schema, drone_id, timestamp_ms), &mut bytes).expect("encodes");
    bytes
}

/// Config that lets a test send readings from 2024 (the reference designs' samples, fixed
/// times of day for the geofence rule): teleguard rejects event times more than 30 days
/// before their arrival by default (`pipeline.max_age_secs`).
pub const HISTORICAL: &str = "[pipeline]\nmax_age_secs = 0\n";

/// Writes [`HISTORICAL`] followed by `extra` to `dir/historical.toml`; its path for `--config`.
pub fn historical_config(dir: &Path, extra: &str) -> String {
    let path = dir.join("historical.toml");
    std::fs::write(&path, format!("{HISTORICAL}{extra}")).expect("write config");
    path.to_str().expect("a UTF-8 path").to_string()
}

/// `teleguard simulate` posting a fleet's `duration` from `start` (RFC 3339) to `server`, at
/// `speed`, in the background.
pub fn simulate_to(server: &Server, seed: u64, start: &str, duration: &str, speed: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["simulate", "--seed", &seed.to_string(), "--anomaly-rate", "4", "--start", start])
        .args(["--duration", duration, "--speed", speed, "--to", &server.base])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start teleguard simulate")
}

/// Waits for `child` and fails the test, naming `what`, unless it succeeded.
pub fn wait_success(mut child: std::process::Child, what: &str) {
    let status = child.wait().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(status.success(), "{what} failed: {status}");
}

/// Waits until every valid message of the store has its silver row (ingest has settled).
pub async fn wait_until_analysed(client: &reqwest::Client, server: &Server) {
    wait_for("every accepted reading to be analysed", || async {
        let totals = get_json(client, &server.url("/api/stats")).await["totals"].clone();
        (totals["valid"] == totals["analysed"]).then_some(())
    })
    .await;
}

/// The entry of sink `name` in `/api/stats`.
pub async fn sink_stats(client: &reqwest::Client, server: &Server, name: &str) -> serde_json::Value {
    let stats = get_json(client, &server.url("/api/stats")).await;
    stats["sinks"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["sink"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no {name} sink in /api/stats: {stats}"))
}

/// A loopback port free right now, for a server a test starts, and none this test process was
/// given before (the kernel may hand a just-released port out again, so that two listeners of
/// one server would get the same one).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// `found` (a server binary), or `None` with a loud message so that `test` is skipped, when
/// `program` is not installed outside CI; under CI a missing server fails the test, since
/// scripts/test installs Debian's `package`.
pub fn installed_or_skip<T>(found: Option<T>, test: &str, program: &str, package: &str) -> Option<T> {
    match found {
        Some(found) => Some(found),
        None if std::env::var_os("CI").is_some() => {
            panic!("{program} is not installed but CI is set: scripts/test installs Debian's {package}")
        }
        None => {
            eprintln!("skipping {test}: {program} is not installed (scripts/test installs Debian's {package})");
            None
        }
    }
}
