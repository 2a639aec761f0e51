//! Observability through a real Prometheus: it scrapes teleguard with the shipped
//! `deploy/prometheus/prometheus.yml`, finds the reference designs' series, and evaluates every
//! query of the shipped Grafana dashboard against them.

mod common;

use common::{Server, client, free_port, installed_or_skip, post, wait_for};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use teleguard_core::time::{format_millis, now_millis};

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

fn prometheus_or_skip() -> Option<PathBuf> {
    let found =
        ["/usr/bin/prometheus", "/usr/local/bin/prometheus"].map(PathBuf::from).into_iter().find(|p| p.exists());
    installed_or_skip(found, "the Prometheus test", "prometheus", "prometheus")
}

struct Prometheus {
    child: Child,
    base: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus with the shipped config, pointed at `target` and scraping every second.
    fn start(binary: &Path, dir: &Path, target: &str) -> Prometheus {
        let shipped = std::fs::read_to_string(repo_file("deploy/prometheus/prometheus.yml")).unwrap();
        assert!(shipped.contains("127.0.0.1:8080") && shipped.contains("scrape_interval: 5s"), "{shipped}");
        let config = shipped.replace("127.0.0.1:8080", target).replace("scrape_interval: 5s", "scrape_interval: 1s");
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("start prometheus");
        Prometheus { child, base: format!("http://127.0.0.1:{port}") }
    }

    async fn query(&self, http: &reqwest::Client, expr: &str) -> Value {
        let response = http.get(format!("{}/api/v1/query", self.base)).query(&[("query", expr)]).send().await.unwrap();
        response.json().await.unwrap()
    }
}

fn vehicle(id: &str, seconds_ago: i64, lat: f64) -> Value {
    json!({"vehicle_id": id, "timestamp": format_millis(now_millis() - seconds_ago * 1000), "latitude": lat,
           "longitude": -122.45, "speed": 40.0, "engine_status": "on"})
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_the_reference_series_and_evaluates_every_dashboard_query() {
    let Some(binary) = prometheus_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let http = client();
    // Readings, a teleport (an anomaly) and a dead letter, so every family has a series.
    let track = [vehicle("V1", 40, 37.76), vehicle("V1", 30, 37.7601), vehicle("V1", 20, 38.5)];
    assert_eq!(post(&http, &server, "vehicle", serde_json::to_vec(&track).unwrap()).await.0, 202);
    assert_eq!(post(&http, &server, "vehicle", "{broken".to_string()).await.0, 422);

    let target = server.base.trim_start_matches("http://").to_string();
    let prometheus = Prometheus::start(&binary, dir.path(), &target);
    wait_for("Prometheus to be ready", || async {
        let ready = http.get(format!("{}/-/ready", prometheus.base)).send().await.ok()?;
        ready.status().is_success().then_some(())
    })
    .await;
    let health = wait_for("the teleguard target to be up", || async {
        let targets: Value =
            http.get(format!("{}/api/v1/targets", prometheus.base)).send().await.ok()?.json().await.ok()?;
        let target = targets["data"]["activeTargets"][0].clone();
        (target["health"] == "up").then_some(target)
    })
    .await;
    assert_eq!(health["labels"]["job"], "teleguard", "{health:#}");
    // Two scrapes at least, so that rates have two samples.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    for (series, at_least) in [
        ("anomaly_detector_messages_consumed_total", 3.0),
        ("sum(anomaly_detector_anomalies_detected_total{detector=\"teleport\"})", 1.0),
        ("pipeline_end_to_end_latency_seconds_count", 3.0),
        ("teleguard_discarded_total{reason=\"malformed_json\"}", 1.0),
    ] {
        let answer = prometheus.query(&http, series).await;
        let value = answer["data"]["result"][0]["value"][1].as_str().unwrap_or_else(|| panic!("{series}: {answer:#}"));
        assert!(value.parse::<f64>().unwrap() >= at_least, "{series} = {value}");
    }

    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_file("deploy/grafana/dashboards/teleguard.json")).unwrap())
            .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let mut queries = 0;
    for panel in panels {
        assert_eq!(panel["datasource"]["uid"], "teleguard-prometheus", "{}", panel["title"]);
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let answer = prometheus.query(&http, expr).await;
            assert_eq!(answer["status"], "success", "panel {:?}: {expr}: {answer:#}", panel["title"]);
            let result = answer["data"]["result"].as_array().unwrap();
            assert!(!result.is_empty(), "panel {:?}: {expr} found no teleguard series", panel["title"]);
            queries += 1;
        }
    }
    assert!(queries >= 20, "{queries} queries");
    let datasource =
        std::fs::read_to_string(repo_file("deploy/grafana/provisioning/datasources/prometheus.yml")).unwrap();
    assert!(datasource.contains("uid: teleguard-prometheus"), "the dashboard's datasource is provisioned");
}
