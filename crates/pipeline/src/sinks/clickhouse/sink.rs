//! The ClickHouse target: statements and RowBinary inserts over the HTTP interface. Rows carry
//! their store ids; a batch written twice leaves duplicates that `ReplacingMergeTree` removes
//! on merge and that readers dedupe by id (`uniqExact(id)`, `FINAL`, `argMax(.., change_seq)`).

use super::ClickHouseSinkConfig;
use super::row_binary::RowBinary;
use super::schema::{Applied, Schema};
use crate::sinks::error_chain;
use crate::sinks::{AnomalyRecord, ReadingRecord, Target, TargetError};

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
    /// For statements and inserts: a request fails after the configured timeout.
    pub fn new(config: &ClickHouseSinkConfig) -> Result<Http, TargetError> {
        Http::build(config, reqwest::Client::builder().timeout(config.timeout))
    }

    /// For queries whose answer takes as long as it takes (a hunt over months of history, which
    /// ClickHouse sorts before the first row comes back): only connecting fails after the
    /// configured timeout.
    pub fn streaming(config: &ClickHouseSinkConfig) -> Result<Http, TargetError> {
        Http::build(config, reqwest::Client::builder().connect_timeout(config.timeout))
    }

    fn build(config: &ClickHouseSinkConfig, builder: reqwest::ClientBuilder) -> Result<Http, TargetError> {
        let client = builder.build().map_err(|e| TargetError::new("clickhouse: cannot build an HTTP client", e))?;
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

    /// Inserts a RowBinary body of `columns` into `table`; an empty body has nothing to insert
    /// and sends nothing.
    async fn insert(&self, table: &str, columns: &str, rows: Vec<u8>) -> Result<(), TargetError> {
        if rows.is_empty() {
            return Ok(());
        }
        let query = format!("INSERT INTO {table} ({columns}) FORMAT RowBinary");
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
                 LowCardinality, DateTime64, TTL or window functions), rows inserted as RowBinary",
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
        let (vehicles, others) = encode_readings(rows);
        let http = self.http()?;
        let (vehicle_table, history_table) =
            (self.table("enriched_telemetry_history"), self.table("telemetry_history"));
        // The two tables' inserts go at once, so the server takes both on its cores; the batch
        // is confirmed only when both are (a retry writes both again, and ids make it once).
        let (vehicles_written, others_written) = tokio::join!(
            http.insert(&vehicle_table, VEHICLE_COLUMNS, vehicles.into_bytes()),
            http.insert(&history_table, HISTORY_COLUMNS, others.into_bytes()),
        );
        vehicles_written.and(others_written)
    }

    async fn write_anomalies(&mut self, rows: &[AnomalyRecord]) -> Result<(), TargetError> {
        let mut body = RowBinary::with_capacity(rows.len() * 256);
        for row in rows {
            encode_anomaly(&mut body, row);
        }
        self.http()?.insert(&self.table("telemetry_anomalies"), ANOMALY_COLUMNS, body.into_bytes()).await
    }
}

/// The columns of `enriched_telemetry_history` in the order [`encode_vehicle`] writes them.
const VEHICLE_COLUMNS: &str =
    "id, vehicle_id, timestamp, timestamp_ms, latitude, longitude, speed, engine_status, driver_name, current_zone";
/// The columns of `telemetry_history` in the order [`encode_history`] writes them.
const HISTORY_COLUMNS: &str = "id, profile, entity_id, timestamp, timestamp_ms, latitude, longitude, metrics, \
                               attributes, driver_name, current_zone, processed_at";
/// The columns of `telemetry_anomalies` in the order [`encode_anomaly`] writes them.
const ANOMALY_COLUMNS: &str = "id, change_seq, reading_id, profile, entity_id, timestamp, timestamp_ms, detector, \
                               metric, value, anomaly_score, threshold, severity, reason, features, detected_at, \
                               episode_start_ms, episode_end_ms";

/// The RowBinary bodies of a batch: vehicle readings, and every other profile's.
fn encode_readings(rows: &[ReadingRecord]) -> (RowBinary, RowBinary) {
    let vehicle_rows = rows.iter().filter(|r| r.profile == VEHICLE).count();
    let mut vehicles = RowBinary::with_capacity(vehicle_rows * 96);
    let mut others = RowBinary::with_capacity((rows.len() - vehicle_rows) * 192);
    for row in rows {
        if row.profile == VEHICLE {
            encode_vehicle(&mut vehicles, row);
        } else {
            encode_history(&mut others, row);
        }
    }
    (vehicles, others)
}

/// The two fields reference 000's history takes out of a vehicle reading's JSON objects. A
/// value of another type is NULL, as in a reading that lacks it.
#[derive(Default, serde::Deserialize)]
struct VehicleFields {
    #[serde(default)]
    speed: Option<serde_json::Value>,
    #[serde(default)]
    engine_status: Option<serde_json::Value>,
}

impl VehicleFields {
    fn of(json: &str) -> VehicleFields {
        serde_json::from_str(json).unwrap_or_default()
    }
}

fn encode_vehicle(body: &mut RowBinary, r: &ReadingRecord) {
    let speed = VehicleFields::of(&r.metrics).speed.and_then(|v| v.as_f64());
    let engine_status = VehicleFields::of(&r.attributes).engine_status;
    body.u64(r.id);
    body.string(&r.entity_id);
    body.date_time(r.timestamp_ms);
    body.i64(r.timestamp_ms);
    body.nullable_f64(r.latitude);
    body.nullable_f64(r.longitude);
    body.nullable_f64(speed);
    body.nullable_string(engine_status.as_ref().and_then(|v| v.as_str()));
    body.nullable_string(r.driver_name.as_deref());
    body.nullable_string(r.current_zone.as_deref());
}

fn encode_history(body: &mut RowBinary, r: &ReadingRecord) {
    body.u64(r.id);
    body.string(&r.profile);
    body.string(&r.entity_id);
    body.date_time(r.timestamp_ms);
    body.i64(r.timestamp_ms);
    body.nullable_f64(r.latitude);
    body.nullable_f64(r.longitude);
    body.string(&r.metrics);
    body.string(&r.attributes);
    body.nullable_string(r.driver_name.as_deref());
    body.nullable_string(r.current_zone.as_deref());
    body.date_time(r.processed_at_ms);
}

fn encode_anomaly(body: &mut RowBinary, a: &AnomalyRecord) {
    body.string(&a.id);
    body.u64(a.change_seq);
    body.u64(a.reading_id);
    body.string(&a.profile);
    body.string(&a.entity_id);
    body.date_time(a.timestamp_ms);
    body.i64(a.timestamp_ms);
    body.string(&a.detector);
    body.nullable_string(a.metric.as_deref());
    body.nullable_f64(a.value.filter(|v| v.is_finite()));
    body.f64(a.anomaly_score);
    body.f64(a.threshold);
    body.string(&a.severity);
    body.string(&a.reason);
    body.string(&a.features);
    body.date_time(a.detected_at_ms);
    body.nullable_i64(a.episode_start_ms);
    body.nullable_i64(a.episode_end_ms);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(profile: &str) -> ReadingRecord {
        ReadingRecord {
            id: 7,
            profile: profile.into(),
            entity_id: "V001".into(),
            timestamp_ms: 1_725_446_400_000,
            latitude: Some(40.7),
            longitude: None,
            metrics: r#"{"rpm":3000,"speed":88.5}"#.into(),
            attributes: r#"{"engine_status":"on","fuel":"diesel"}"#.into(),
            driver_name: Some("Ada".into()),
            current_zone: None,
            processed_at_ms: 1_725_446_400_100,
        }
    }

    #[test]
    fn a_vehicle_row_takes_speed_and_engine_status_out_of_the_json() {
        let mut expected = RowBinary::default();
        expected.u64(7);
        expected.string("V001");
        expected.date_time(1_725_446_400_000);
        expected.i64(1_725_446_400_000);
        expected.nullable_f64(Some(40.7));
        expected.nullable_f64(None);
        expected.nullable_f64(Some(88.5));
        expected.nullable_string(Some("on"));
        expected.nullable_string(Some("Ada"));
        expected.nullable_string(None);
        let (vehicles, others) = encode_readings(&[reading("vehicle")]);
        assert!(others.is_empty());
        assert_eq!(vehicles.into_bytes(), expected.into_bytes());
    }

    #[test]
    fn a_vehicle_field_of_another_type_is_null() {
        let mut odd = reading("vehicle");
        odd.metrics = r#"{"speed":"fast"}"#.into();
        odd.attributes = r#"{"engine_status":1}"#.into();
        let (vehicles, _) = encode_readings(&[odd]);
        let bytes = vehicles.into_bytes();
        // speed, engine_status, driver_name (Ada) and current_zone after the fixed part.
        let fixed = 8 + 5 + 4 + 8 + 9 + 1;
        assert_eq!(&bytes[fixed..fixed + 2], &[1, 1]);
    }

    #[test]
    fn other_profiles_keep_their_json_and_go_to_the_history_body() {
        let (vehicles, others) = encode_readings(&[reading("drone")]);
        assert!(vehicles.is_empty());
        let bytes = others.into_bytes();
        let metrics = r#"{"rpm":3000,"speed":88.5}"#.as_bytes();
        assert!(bytes.windows(metrics.len()).any(|w| w == metrics));
        assert_eq!(&bytes[bytes.len() - 4..], &1_725_446_400u32.to_le_bytes());
    }
}
