//! The ClickHouse target: statements and JSONEachRow inserts over the HTTP interface. Rows carry
//! their store ids; a batch written twice leaves duplicates that `ReplacingMergeTree` removes
//! on merge and that readers dedupe by id (`uniqExact(id)`, `FINAL`, `argMax(.., change_seq)`).

use super::ClickHouseSinkConfig;
use super::schema::{Applied, Schema};
use crate::sinks::error_chain;
use crate::sinks::{AnomalyRecord, ReadingRecord, Target, TargetError};
use serde::Serialize;

/// The profile whose readings go to reference 000's `enriched_telemetry_history`.
const VEHICLE: &str = "vehicle";

/// A ClickHouse server's HTTP interface.
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
    url: reqwest::Url,
    user: String,
    password: Option<String>,
    describe: String,
}

impl Http {
    pub fn new(config: &ClickHouseSinkConfig) -> Result<Http, TargetError> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| TargetError::new("clickhouse: cannot build an HTTP client", e))?;
        Ok(Http {
            client,
            url: config.url.clone(),
            user: config.user.clone(),
            password: config.password.clone(),
            describe: config.describe(),
        })
    }

    fn request(&self, query: Option<&str>) -> reqwest::RequestBuilder {
        let mut url = self.url.clone();
        {
            let mut pairs = url.query_pairs_mut();
            if let Some(query) = query {
                pairs.append_pair("query", query);
            }
            pairs.append_pair("user", &self.user);
            if let Some(password) = &self.password {
                pairs.append_pair("password", password);
            }
        }
        self.client.post(url)
    }

    async fn send(&self, request: reqwest::RequestBuilder, what: &str) -> Result<String, TargetError> {
        let response = request
            .send()
            .await
            .map_err(|e| TargetError(format!("clickhouse {} {what}: {}", self.describe, error_chain(&e))))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| TargetError(format!("clickhouse {} {what}: {}", self.describe, error_chain(&e))))?;
        if !status.is_success() {
            let message: String = text.trim().chars().take(400).collect();
            return Err(TargetError(format!("clickhouse {} {what}: {status}: {message}", self.describe)));
        }
        Ok(text)
    }

    /// Runs one statement; returns what it printed.
    pub async fn query(&self, sql: &str) -> Result<String, TargetError> {
        let what = sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
        self.send(self.request(None).body(sql.to_string()), &what).await
    }

    /// Runs one query and hands each line of its answer to `each`, as the answer streams in.
    pub async fn query_lines(&self, sql: &str, mut each: impl FnMut(&str)) -> Result<(), TargetError> {
        let what = sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
        let fail = |e: reqwest::Error| TargetError(format!("clickhouse {} {what}: {}", self.describe, error_chain(&e)));
        let mut response = self.request(None).body(sql.to_string()).send().await.map_err(fail)?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.map_err(fail)?;
            let message: String = text.trim().chars().take(400).collect();
            return Err(TargetError(format!("clickhouse {} {what}: {status}: {message}", self.describe)));
        }
        let mut pending: Vec<u8> = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(fail)? {
            pending.extend_from_slice(&chunk);
            let Some(last_newline) = pending.iter().rposition(|b| *b == b'\n') else { continue };
            for line in pending[..last_newline].split(|b| *b == b'\n') {
                each(&String::from_utf8_lossy(line));
            }
            pending.drain(..=last_newline);
        }
        if !pending.is_empty() {
            each(&String::from_utf8_lossy(&pending));
        }
        Ok(())
    }

    /// Inserts NDJSON rows into `table`.
    async fn insert(&self, table: &str, rows: Vec<u8>) -> Result<(), TargetError> {
        let query = format!("INSERT INTO {table} FORMAT JSONEachRow");
        self.send(self.request(Some(&query)).body(rows), &format!("insert into {table}")).await.map(drop)
    }
}

/// Writes to one ClickHouse database.
#[derive(Debug)]
pub struct ClickHouseTarget {
    config: ClickHouseSinkConfig,
    http: Option<Http>,
    /// The server version, logged once.
    version: Option<String>,
}

impl ClickHouseTarget {
    pub fn new(config: ClickHouseSinkConfig) -> Self {
        ClickHouseTarget { config, http: None, version: None }
    }

    /// `teleguard clickhouse init`: reference 000's raw tables (with the Kafka-engine table and
    /// its view when Kafka is configured) and the sink's tables.
    pub async fn init(config: &ClickHouseSinkConfig) -> Result<Applied, TargetError> {
        let http = Http::new(config)?;
        let schema = Schema::new(config);
        let mut tables = schema.raw_tables(config.kafka.as_ref());
        tables.extend(schema.sink_tables());
        schema.apply(&http, &tables).await
    }

    fn http(&self) -> Result<&Http, TargetError> {
        self.http.as_ref().ok_or_else(|| TargetError("clickhouse: not connected".into()))
    }

    fn table(&self, name: &str) -> String {
        format!("{}.{name}", self.config.database)
    }
}

impl Target for ClickHouseTarget {
    fn name(&self) -> &'static str {
        "clickhouse"
    }

    async fn connect(&mut self, store_uid: i64) -> Result<(), TargetError> {
        let http = Http::new(&self.config)?;
        let schema = Schema::new(&self.config);
        let applied = schema.apply(&http, &schema.sink_tables()).await?;
        if self.version.as_deref() != Some(applied.server_version.as_str()) {
            tracing::info!(
                "clickhouse {}: server version {}; one SQL path for every version (none of \
                 LowCardinality, DateTime64, TTL or window functions)",
                self.config.describe(),
                applied.server_version
            );
            self.version = Some(applied.server_version);
        }
        let table = self.table("teleguard_store");
        let held = http.query(&format!("SELECT uid FROM {table} LIMIT 1")).await?;
        match held.trim() {
            "" => http.query(&format!("INSERT INTO {table} (uid) VALUES ({store_uid})")).await.map(drop)?,
            uid if uid == store_uid.to_string() => {}
            _ => {
                return Err(TargetError(format!(
                    "clickhouse {} holds the rows of another teleguard store (a different data folder), whose ids \
                     would collide with this one's: set sinks.clickhouse.database to a new database, or drop this one",
                    self.config.describe()
                )));
            }
        }
        self.http = Some(http);
        Ok(())
    }

    async fn write_readings(&mut self, rows: &[ReadingRecord]) -> Result<(), TargetError> {
        let (mut vehicles, mut others) = (Vec::new(), Vec::new());
        for row in rows {
            if row.profile == VEHICLE {
                append_json(&mut vehicles, &VehicleRow::from(row));
            } else {
                append_json(&mut others, &HistoryRow::from(row));
            }
        }
        let http = self.http()?;
        if !vehicles.is_empty() {
            http.insert(&self.table("enriched_telemetry_history"), vehicles).await?;
        }
        if !others.is_empty() {
            http.insert(&self.table("telemetry_history"), others).await?;
        }
        Ok(())
    }

    async fn write_anomalies(&mut self, rows: &[AnomalyRecord]) -> Result<(), TargetError> {
        let mut body = Vec::new();
        for row in rows {
            append_json(&mut body, &AnomalyRow::from(row));
        }
        self.http()?.insert(&self.table("telemetry_anomalies"), body).await
    }
}

fn append_json(body: &mut Vec<u8>, row: &impl Serialize) {
    serde_json::to_writer(&mut *body, row).expect("a row serialises into memory");
    body.push(b'\n');
}

/// `YYYY-MM-DD hh:mm:ss` in UTC, as `DateTime('UTC')` reads it (clamped to its range).
fn date_time(millis: i64) -> String {
    let seconds = (millis.div_euclid(1000)).clamp(0, u32::MAX as i64);
    chrono::DateTime::from_timestamp(seconds, 0).unwrap_or_default().format("%Y-%m-%d %H:%M:%S").to_string()
}

#[derive(Serialize)]
struct VehicleRow<'a> {
    id: i64,
    vehicle_id: &'a str,
    timestamp: String,
    timestamp_ms: i64,
    latitude: Option<f64>,
    longitude: Option<f64>,
    speed: Option<f64>,
    engine_status: Option<String>,
    driver_name: Option<&'a str>,
    current_zone: Option<&'a str>,
}

impl<'a> From<&'a ReadingRecord> for VehicleRow<'a> {
    fn from(r: &'a ReadingRecord) -> Self {
        let metrics: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&r.metrics).unwrap_or_default();
        let attributes: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&r.attributes).unwrap_or_default();
        VehicleRow {
            id: r.id,
            vehicle_id: &r.entity_id,
            timestamp: date_time(r.timestamp_ms),
            timestamp_ms: r.timestamp_ms,
            latitude: r.latitude,
            longitude: r.longitude,
            speed: metrics.get("speed").and_then(serde_json::Value::as_f64),
            engine_status: attributes.get("engine_status").and_then(|v| v.as_str()).map(str::to_string),
            driver_name: r.driver_name.as_deref(),
            current_zone: r.current_zone.as_deref(),
        }
    }
}

#[derive(Serialize)]
struct HistoryRow<'a> {
    id: i64,
    profile: &'a str,
    entity_id: &'a str,
    timestamp: String,
    timestamp_ms: i64,
    latitude: Option<f64>,
    longitude: Option<f64>,
    metrics: &'a str,
    attributes: &'a str,
    driver_name: Option<&'a str>,
    current_zone: Option<&'a str>,
    processed_at: String,
}

impl<'a> From<&'a ReadingRecord> for HistoryRow<'a> {
    fn from(r: &'a ReadingRecord) -> Self {
        HistoryRow {
            id: r.id,
            profile: &r.profile,
            entity_id: &r.entity_id,
            timestamp: date_time(r.timestamp_ms),
            timestamp_ms: r.timestamp_ms,
            latitude: r.latitude,
            longitude: r.longitude,
            metrics: &r.metrics,
            attributes: &r.attributes,
            driver_name: r.driver_name.as_deref(),
            current_zone: r.current_zone.as_deref(),
            processed_at: date_time(r.processed_at_ms),
        }
    }
}

#[derive(Serialize)]
struct AnomalyRow<'a> {
    id: &'a str,
    change_seq: i64,
    reading_id: i64,
    profile: &'a str,
    entity_id: &'a str,
    timestamp: String,
    timestamp_ms: i64,
    detector: &'a str,
    metric: Option<&'a str>,
    value: Option<f64>,
    anomaly_score: f64,
    threshold: f64,
    severity: &'a str,
    reason: &'a str,
    features: &'a str,
    detected_at: String,
    episode_start_ms: Option<i64>,
    episode_end_ms: Option<i64>,
}

impl<'a> From<&'a AnomalyRecord> for AnomalyRow<'a> {
    fn from(a: &'a AnomalyRecord) -> Self {
        AnomalyRow {
            id: &a.id,
            change_seq: a.change_seq,
            reading_id: a.reading_id,
            profile: &a.profile,
            entity_id: &a.entity_id,
            timestamp: date_time(a.timestamp_ms),
            timestamp_ms: a.timestamp_ms,
            detector: &a.detector,
            metric: a.metric.as_deref(),
            value: a.value.filter(|v| v.is_finite()),
            anomaly_score: a.anomaly_score,
            threshold: a.threshold,
            severity: &a.severity,
            reason: &a.reason,
            features: &a.features,
            detected_at: date_time(a.detected_at_ms),
            episode_start_ms: a.episode_start_ms,
            episode_end_ms: a.episode_end_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_times_are_utc_seconds_in_clickhouse_text_form() {
        assert_eq!(date_time(1_725_446_400_999), "2024-09-04 10:40:00");
        assert_eq!(date_time(-5), "1970-01-01 00:00:00");
    }

    #[test]
    fn a_vehicle_row_takes_speed_and_engine_status_out_of_the_json() {
        let reading = ReadingRecord {
            id: 7,
            profile: "vehicle".into(),
            entity_id: "V001".into(),
            timestamp_ms: 1_725_446_400_000,
            latitude: Some(40.7),
            longitude: Some(-74.0),
            metrics: r#"{"speed":88.5}"#.into(),
            attributes: r#"{"engine_status":"on"}"#.into(),
            driver_name: Some("Ada".into()),
            current_zone: None,
            processed_at_ms: 1_725_446_400_100,
        };
        let json = serde_json::to_value(VehicleRow::from(&reading)).unwrap();
        assert_eq!(json["speed"], 88.5);
        assert_eq!(json["engine_status"], "on");
        assert_eq!(json["current_zone"], serde_json::Value::Null);
        assert_eq!(json["timestamp"], "2024-09-04 10:40:00");
    }
}
