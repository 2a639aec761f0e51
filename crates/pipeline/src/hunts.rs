//! Threat hunts over whichever store holds the history: the embedded store's silver, or the
//! sinks' tables in ClickHouse (`enriched_telemetry_history`) or PostgreSQL (`readings`).
//!
//! Every store takes the same path: it streams the vehicle readings of the range sorted by
//! (vehicle, event time, id), and the streaming rules run over them in Rust
//! ([`teleguard_core::hunt`]). No SQL dialect's window functions are needed, so ClickHouse
//! 18.16 (no `neighbor`, no window functions) and current releases answer alike, and the hunts
//! agree with the live rules by construction.

use crate::sinks::clickhouse::{ClickHouseSinkConfig, Http};
use crate::sinks::postgres::PostgresSinkConfig;
use futures_util::{StreamExt, pin_mut};
use rusqlite::Connection;
use std::collections::HashSet;
use std::sync::Arc;
use teleguard_core::hunt::{Hunt, HuntFinding, Hunter, TrackPoint};
use teleguard_core::model::GeoPoint;
use teleguard_core::profile::Profile;
use teleguard_core::time::format_millis;

/// The profile whose tracks the hunts read.
pub const VEHICLE: &str = "vehicle";

/// How far before `from` a hunt reads, so an episode under way at `from` keeps its true start
/// and a teleport across `from` has the reading before it. A stop begun earlier than this
/// shows as starting at the first reading of the lead-in.
pub const LEAD_IN_MS: i64 = 24 * 3_600_000;

/// What to hunt, over which readings: episodes that last into event times `[from_ms, to_ms)`,
/// one vehicle or all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HuntQuery {
    pub hunt: Hunt,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub vehicle: Option<String>,
}

impl HuntQuery {
    /// The first event time read: `from_ms` less the lead-in.
    fn read_from_ms(&self) -> Option<i64> {
        self.from_ms.map(|from| from.saturating_sub(LEAD_IN_MS))
    }

    fn from(&self) -> i64 {
        self.read_from_ms().unwrap_or(i64::MIN)
    }

    /// A hunter for this query's hunt that reports from `from_ms`.
    fn hunter(&self, profile: Arc<Profile>) -> Result<Hunter, HuntError> {
        let hunter = Hunter::new(self.hunt, profile).map_err(HuntError)?;
        Ok(match self.from_ms {
            Some(from) => hunter.report_from(from),
            None => hunter,
        })
    }

    fn to(&self) -> i64 {
        self.to_ms.unwrap_or(i64::MAX)
    }
}

/// A hunt's answer, and how it was reached.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HuntReport {
    pub hunt: &'static str,
    /// `embedded`, `clickhouse` or `postgres`.
    pub store: &'static str,
    /// How the store answered, e.g. the server version and the query path.
    pub path: String,
    /// Readings the rule ran over.
    pub readings: u64,
    pub findings: Vec<HuntFinding>,
}

/// A hunt that could not run: the store failed or holds something unreadable.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HuntError(pub String);

/// Makes the rows' repeated strings (vehicle ids, zones, drivers) one shared value each.
#[derive(Default)]
struct Names(HashSet<Arc<str>>);

impl Names {
    fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(known) = self.0.get(name) {
            return known.clone();
        }
        let name: Arc<str> = Arc::from(name);
        self.0.insert(name.clone());
        name
    }
}

fn position(latitude: Option<f64>, longitude: Option<f64>) -> Option<GeoPoint> {
    Some(GeoPoint { lat: latitude?, lon: longitude? })
}

/// Runs `query` over the embedded store's silver layer (a read connection).
pub fn embedded(connection: &Connection, profile: Arc<Profile>, query: &HuntQuery) -> Result<HuntReport, HuntError> {
    let speed_path = format!("$.\"{}\"", Hunter::speed_metric(&profile).replace('"', "\\\""));
    let mut hunter = query.hunter(profile)?;
    let fail = |e: rusqlite::Error| HuntError(format!("embedded store: hunt {}: {e}", query.hunt.name()));
    let mut statement = connection
        .prepare(
            "SELECT entity_id, timestamp_ms, latitude, longitude, json_extract(metrics, ?1), current_zone, driver_name
             FROM silver
             WHERE profile = ?2 AND timestamp_ms >= ?3 AND timestamp_ms < ?4 AND (?5 IS NULL OR entity_id = ?5)
             ORDER BY entity_id, timestamp_ms, id",
        )
        .map_err(fail)?;
    let mut rows = statement
        .query(rusqlite::params![speed_path, VEHICLE, query.from(), query.to(), query.vehicle])
        .map_err(fail)?;
    let mut names = Names::default();
    while let Some(row) = rows.next().map_err(fail)? {
        let vehicle: String = row.get(0).map_err(fail)?;
        let zone: Option<String> = row.get(5).map_err(fail)?;
        let driver: Option<String> = row.get(6).map_err(fail)?;
        hunter.push(TrackPoint {
            vehicle_id: names.get(&vehicle),
            timestamp_ms: row.get(1).map_err(fail)?,
            position: position(row.get(2).map_err(fail)?, row.get(3).map_err(fail)?),
            speed: row.get(4).map_err(fail)?,
            current_zone: zone.map(|z| names.get(&z)),
            driver_name: driver.map(|d| names.get(&d)),
        });
    }
    let readings = hunter.points();
    Ok(HuntReport {
        hunt: query.hunt.name(),
        store: "embedded",
        path: "silver sorted by (vehicle, event time) in SQLite; rules in Rust".into(),
        readings,
        findings: hunter.finish(),
    })
}

/// How a hunt's findings are written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HuntFormat {
    #[default]
    Table,
    Json,
    Csv,
}

impl HuntFormat {
    pub fn parse(text: &str) -> Result<HuntFormat, String> {
        match text {
            "table" => Ok(HuntFormat::Table),
            "json" => Ok(HuntFormat::Json),
            "csv" => Ok(HuntFormat::Csv),
            other => Err(format!("unknown format {other:?}: use table, json or csv")),
        }
    }
}

/// One finding as written out: times in ISO 8601 (UTC) beside the milliseconds.
#[derive(Debug, serde::Serialize)]
struct FindingView<'a> {
    vehicle_id: &'a str,
    driver_name: Option<&'a str>,
    start: String,
    end: Option<String>,
    start_ms: i64,
    end_ms: Option<i64>,
    zone: Option<&'a str>,
    value: f64,
    reason: &'a str,
}

impl<'a> From<&'a HuntFinding> for FindingView<'a> {
    fn from(finding: &'a HuntFinding) -> Self {
        FindingView {
            vehicle_id: &finding.vehicle_id,
            driver_name: finding.driver_name.as_deref(),
            start: format_millis(finding.start_ms),
            end: finding.end_ms.map(format_millis),
            start_ms: finding.start_ms,
            end_ms: finding.end_ms,
            zone: finding.zone.as_deref(),
            value: finding.value,
            reason: &finding.reason,
        }
    }
}

/// What `value` means in each hunt.
fn value_name(hunt: &str) -> &'static str {
    match hunt {
        "teleport" => "speed_kmh",
        _ => "minutes",
    }
}

const CSV_HEADER: &str = "vehicle_id,driver_name,start,end,zone,value,reason";

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text.to_string() }
}

impl HuntReport {
    /// The report in `format`: JSON is the whole report; table and CSV are the findings, with
    /// `value` named for the hunt (speed in km/h, or minutes).
    pub fn render(&self, format: HuntFormat) -> String {
        let views: Vec<FindingView<'_>> = self.findings.iter().map(FindingView::from).collect();
        match format {
            HuntFormat::Json => serde_json::json!({
                "hunt": self.hunt,
                "store": self.store,
                "path": self.path,
                "readings": self.readings,
                "value": value_name(self.hunt),
                "findings": views,
            })
            .to_string(),
            HuntFormat::Csv => {
                let mut text = CSV_HEADER.replace("value", value_name(self.hunt));
                text.push('\n');
                for view in &views {
                    let fields = [
                        csv_field(view.vehicle_id),
                        csv_field(view.driver_name.unwrap_or("")),
                        view.start.clone(),
                        view.end.clone().unwrap_or_default(),
                        csv_field(view.zone.unwrap_or("")),
                        format!("{:.1}", view.value),
                        csv_field(view.reason),
                    ];
                    text.push_str(&fields.join(","));
                    text.push('\n');
                }
                text
            }
            HuntFormat::Table => {
                let mut text = format!(
                    "{:<14} {:<18} {:<24} {:<24} {:<24} {:>10}\n",
                    "vehicle_id",
                    "driver_name",
                    "start",
                    "end",
                    "zone",
                    value_name(self.hunt)
                );
                for view in &views {
                    text.push_str(&format!(
                        "{:<14} {:<18} {:<24} {:<24} {:<24} {:>10.1}\n",
                        view.vehicle_id,
                        view.driver_name.unwrap_or("-"),
                        view.start,
                        view.end.as_deref().unwrap_or("(ongoing)"),
                        view.zone.unwrap_or("-"),
                        view.value
                    ));
                }
                text.push_str(&format!(
                    "{} {} over {} readings ({}: {})\n",
                    self.findings.len(),
                    self.hunt,
                    self.readings,
                    self.store,
                    self.path
                ));
                text
            }
        }
    }
}

/// A ClickHouse string literal.
fn clickhouse_string(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// One TabSeparated field: `\N` is NULL, escapes undone.
fn tsv_field(field: &str) -> Option<String> {
    if field == "\\N" {
        return None;
    }
    if !field.contains('\\') {
        return Some(field.to_string());
    }
    let mut text = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            text.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => text.push('\t'),
            Some('n') => text.push('\n'),
            Some('r') => text.push('\r'),
            Some('0') => text.push('\0'),
            Some(other) => text.push(other),
            None => text.push('\\'),
        }
    }
    Some(text)
}

/// Runs `query` over ClickHouse's `enriched_telemetry_history` (as the sink fills it; a batch
/// written twice is read once, by id).
pub async fn clickhouse(
    config: &ClickHouseSinkConfig,
    profile: Arc<Profile>,
    query: &HuntQuery,
) -> Result<HuntReport, HuntError> {
    let mut hunter = query.hunter(profile)?;
    let http = Http::streaming(config).map_err(|e| HuntError(e.0))?;
    let version = http.query("SELECT version()").await.map_err(|e| HuntError(e.0))?.trim().to_string();
    let mut conditions = Vec::new();
    if let Some(from) = query.read_from_ms() {
        conditions.push(format!("timestamp_ms >= {from}"));
    }
    if let Some(to) = query.to_ms {
        conditions.push(format!("timestamp_ms < {to}"));
    }
    if let Some(vehicle) = &query.vehicle {
        conditions.push(format!("vehicle_id = {}", clickhouse_string(vehicle)));
    }
    let filter = if conditions.is_empty() { "1".to_string() } else { conditions.join(" AND ") };
    let sql = format!(
        "SELECT vehicle_id, timestamp_ms, id, latitude, longitude, speed, current_zone, driver_name
         FROM {}.enriched_telemetry_history WHERE {filter}
         ORDER BY vehicle_id, timestamp_ms, id FORMAT TabSeparated",
        config.database
    );
    let mut names = Names::default();
    let mut last_id: Option<(Arc<str>, u64)> = None;
    let mut bad_line: Option<String> = None;
    http.query_lines(&sql, |line| {
        if bad_line.is_some() {
            return;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let parsed = (|| {
            let [vehicle, at, id, lat, lon, speed, zone, driver] = fields[..] else { return None };
            let vehicle = names.get(&tsv_field(vehicle)?);
            let id: u64 = id.parse().ok()?;
            let number = |field: &str| tsv_field(field).and_then(|f| f.parse::<f64>().ok());
            let point = TrackPoint {
                vehicle_id: vehicle.clone(),
                timestamp_ms: at.parse().ok()?,
                position: position(number(lat), number(lon)),
                speed: number(speed),
                current_zone: tsv_field(zone).map(|z| names.get(&z)),
                driver_name: tsv_field(driver).map(|d| names.get(&d)),
            };
            Some((vehicle, id, point))
        })();
        match parsed {
            Some((vehicle, id, point)) => {
                // Not merged yet: the same reading twice, next to each other in this order.
                let repeat = last_id.as_ref().is_some_and(|(v, i)| *i == id && Arc::ptr_eq(v, &vehicle));
                if !repeat {
                    hunter.push(point);
                }
                last_id = Some((vehicle, id));
            }
            None => bad_line = Some(line.chars().take(200).collect()),
        }
    })
    .await
    .map_err(|e| HuntError(e.0))?;
    if let Some(line) = bad_line {
        return Err(HuntError(format!(
            "clickhouse: enriched_telemetry_history gave an unreadable row {line:?}; is it the table `teleguard clickhouse init` made?"
        )));
    }
    let readings = hunter.points();
    Ok(HuntReport {
        hunt: query.hunt.name(),
        store: "clickhouse",
        path: format!(
            "ClickHouse {version}: enriched_telemetry_history sorted by (vehicle_id, timestamp_ms, id), \
             streamed as TabSeparated; rules in Rust (no window functions needed)"
        ),
        readings,
        findings: hunter.finish(),
    })
}

/// Runs `query` over PostgreSQL's `readings` (as the sink fills it).
pub async fn postgres(
    config: &PostgresSinkConfig,
    profile: Arc<Profile>,
    query: &HuntQuery,
) -> Result<HuntReport, HuntError> {
    let speed_metric = Hunter::speed_metric(&profile).to_string();
    let mut hunter = query.hunter(profile)?;
    let fail = |what: &str, e: tokio_postgres::Error| {
        let detail = e.as_db_error().map_or_else(|| e.to_string(), |db| db.message().to_string());
        HuntError(format!("postgresql {} {what}: {detail}", config.describe))
    };
    let (client, connection) =
        config.connection.connect(tokio_postgres::NoTls).await.map_err(|e| fail("connect", e))?;
    let connection = tokio::spawn(connection);
    let version: String =
        client.query_one("SHOW server_version", &[]).await.map_err(|e| fail("read the server version", e))?.get(0);
    let statement = client
        .prepare(
            "SELECT entity_id, round(extract(epoch FROM \"timestamp\") * 1000)::bigint, latitude, longitude,
                    (metrics ->> $1)::double precision, current_zone, driver_name
             FROM readings
             WHERE profile = $2
               AND ($3::bigint IS NULL OR \"timestamp\" >= to_timestamp($3::bigint / 1000.0))
               AND ($4::bigint IS NULL OR \"timestamp\" < to_timestamp($4::bigint / 1000.0))
               AND ($5::text IS NULL OR entity_id = $5)
             ORDER BY entity_id, \"timestamp\", id",
        )
        .await
        .map_err(|e| fail("prepare the hunt", e))?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
        [&speed_metric, &VEHICLE, &query.read_from_ms(), &query.to_ms, &query.vehicle];
    let rows = client.query_raw(&statement, params).await.map_err(|e| fail("run the hunt", e))?;
    pin_mut!(rows);
    let mut names = Names::default();
    while let Some(row) = rows.next().await {
        let row = row.map_err(|e| fail("read the hunt's rows", e))?;
        let vehicle: &str = row.get(0);
        let zone: Option<&str> = row.get(5);
        let driver: Option<&str> = row.get(6);
        hunter.push(TrackPoint {
            vehicle_id: names.get(vehicle),
            timestamp_ms: row.get(1),
            position: position(row.get(2), row.get(3)),
            speed: row.get(4),
            current_zone: zone.map(|z| names.get(z)),
            driver_name: driver.map(|d| names.get(d)),
        });
    }
    drop(client);
    let _ = connection.await;
    let readings = hunter.points();
    Ok(HuntReport {
        hunt: query.hunt.name(),
        store: "postgres",
        path: format!("PostgreSQL {version}: readings sorted by (entity_id, timestamp, id); rules in Rust"),
        readings,
        findings: hunter.finish(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tab_separated_fields_unescape_and_null_is_none() {
        assert_eq!(tsv_field("\\N"), None);
        assert_eq!(tsv_field("Rest Area"), Some("Rest Area".into()));
        assert_eq!(tsv_field("a\\tb\\\\c\\'d"), Some("a\tb\\c'd".into()));
        assert_eq!(clickhouse_string("o'k\\"), "'o\\'k\\\\'");
    }
}
