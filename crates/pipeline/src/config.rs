//! Configuration: the raw TOML file, command-line overrides, and the validated [`Config`].

use crate::auth::{RawToken, Tokens};
use crate::kafka::{KafkaConfig, RawKafka, Role, RolePlan};
use crate::notify::{RawSlackRoute, RawWebhookRoute, Route};
use crate::sinks::clickhouse::{ClickHouseSinkConfig, RawClickHouseSink};
use crate::sinks::postgres::{PostgresSinkConfig, RawPostgresSink};
use crate::sources::mqtt::{MqttSourceConfig, RawMqttSource};
use crate::store::Durability;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use teleguard_core::profile::{ProfileRegistry, RawProfile};
use teleguard_core::simulate::SIMULATED_PROFILES;
use teleguard_core::validate::TimeWindow;

/// The config file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub data_dir: Option<PathBuf>,
    /// Isolation forests trained ahead of time (`teleguard train`): a model file or a folder of them.
    pub models: Option<PathBuf>,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub pipeline: RawPipeline,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub simulator: RawSimulator,
    #[serde(default)]
    pub reference: RawReference,
    #[serde(default)]
    pub sources: RawSources,
    #[serde(default)]
    pub alerts: RawAlerts,
    #[serde(default)]
    pub sinks: RawSinks,
    /// The brokers of the distributed shape; none by default.
    pub kafka: Option<RawKafka>,
    #[serde(default)]
    pub profiles: BTreeMap<String, RawProfile>,
}

impl RawConfig {
    /// Reads a TOML config file, before validation.
    pub fn read(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(vec![format!("cannot read config file {}: {e}", path.display())]))?;
        toml::from_str(&text).map_err(|e| ConfigError(vec![format!("config file {}: {e}", path.display())]))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub max_body_bytes: Option<usize>,
    /// Bearer tokens for HTTP ingest; none means no authentication.
    #[serde(default)]
    pub tokens: Vec<RawToken>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPipeline {
    pub workers: Option<usize>,
    pub inflight_readings: Option<usize>,
    pub busy_wait_ms: Option<u64>,
    /// A device's event time may be at most this far ahead of its arrival; 0 for no limit.
    pub max_future_secs: Option<u64>,
    /// ... and at most this far behind it; 0 for no limit.
    pub max_age_secs: Option<u64>,
}

/// Default `pipeline.max_future_secs`: five minutes of clock skew.
pub const DEFAULT_MAX_FUTURE_SECS: u64 = 300;
/// Default `pipeline.max_age_secs`: thirty days.
pub const DEFAULT_MAX_AGE_SECS: u64 = 30 * 86_400;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    #[serde(default)]
    pub durability: Durability,
    #[serde(default)]
    pub retention: crate::store::retention::RawRetention,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSimulator {
    pub profiles: Option<Vec<String>>,
    pub speed: Option<f64>,
    pub seed: Option<u64>,
    pub anomaly_rate: Option<f64>,
    pub fleet_scale: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    /// Anomalies of the same entity and detector within this many seconds (event time) of an
    /// alert's last one update it instead of opening another.
    pub cooldown_secs: Option<u64>,
    /// An alert open and unacknowledged this long is raised a severity and notified again;
    /// 0 never escalates.
    pub escalate_after_secs: Option<u64>,
    #[serde(default)]
    pub slack: Vec<RawSlackRoute>,
    #[serde(default)]
    pub webhook: Vec<RawWebhookRoute>,
}

/// Default `alerts.escalate_after_secs`: half an hour.
pub const DEFAULT_ESCALATE_AFTER_SECS: u64 = 1800;

/// Sources beside the simulator and HTTP.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSources {
    #[serde(default)]
    pub mqtt: Vec<RawMqttSource>,
}

/// External stores that follow the embedded one (see `crate::sinks`); none by default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSinks {
    pub postgres: Option<RawPostgresSink>,
    pub clickhouse: Option<RawClickHouseSink>,
}

/// The configured sinks, validated.
#[derive(Debug, Clone, Default)]
pub struct SinksConfig {
    pub postgres: Option<PostgresSinkConfig>,
    pub clickhouse: Option<ClickHouseSinkConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReference {
    pub drivers: Option<PathBuf>,
    pub geofences: Option<PathBuf>,
}

/// Command-line flags that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    /// `--models`: model files to load at start instead of the config's.
    pub models: Option<PathBuf>,
    pub listen: Option<String>,
    /// `none`, `all`, or a comma-separated list of profiles.
    pub simulate: Option<String>,
    pub speed: Option<f64>,
    /// `--role`: `all` (default) or a comma-separated list of roles.
    pub role: Option<String>,
}

/// Validated configuration; its field types rule out bad values.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// Model files to load into the registry at start (`models = ...`, `--models`), if any.
    pub models: Option<PathBuf>,
    pub listen: SocketAddr,
    pub max_body_bytes: NonZeroUsize,
    /// The bearer tokens HTTP ingest accepts; empty means it needs none.
    pub tokens: Arc<Tokens>,
    pub workers: NonZeroUsize,
    pub inflight_readings: NonZeroUsize,
    /// How long an HTTP ingest waits for room before answering 503.
    pub busy_wait: Duration,
    /// How far from arrival the event time of a device's reading may be (HTTP, MQTT).
    pub time_window: TimeWindow,
    pub durability: Durability,
    /// How long each layer of the embedded store keeps rows.
    pub retention: crate::store::retention::RetentionPolicy,
    pub alert_cooldown: Duration,
    /// When an open, unacknowledged alert is escalated; `None` never.
    pub escalate_after: Option<Duration>,
    /// Where alerts are notified (Slack, webhooks); none by default.
    pub notification_routes: Vec<Route>,
    pub simulator: SimulatorConfig,
    /// MQTT brokers to subscribe to; none by default.
    pub mqtt: Vec<MqttSourceConfig>,
    /// External stores that follow the embedded one; none by default.
    pub sinks: SinksConfig,
    /// `[kafka]`, when configured.
    pub kafka: Option<Arc<KafkaConfig>>,
    /// What this process runs (`--role`).
    pub plan: RolePlan,
    pub drivers_json: String,
    pub geofences_geojson: String,
    pub profiles: Arc<ProfileRegistry>,
}

#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// Profiles to simulate; empty means the simulator is off.
    pub profiles: Vec<String>,
    pub speed: f64,
    pub seed: u64,
    pub anomaly_rate: f64,
    pub fleet_scale: f64,
}

/// The event-time window of `[pipeline]`: a limit of 0 seconds is no limit.
fn time_window(pipeline: &RawPipeline) -> TimeWindow {
    let limit = |secs: Option<u64>, default: u64| match secs.unwrap_or(default) {
        0 => None,
        secs => Some(i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)),
    };
    TimeWindow {
        max_future_ms: limit(pipeline.max_future_secs, DEFAULT_MAX_FUTURE_SECS),
        max_age_ms: limit(pipeline.max_age_secs, DEFAULT_MAX_AGE_SECS),
    }
}

/// Every problem found in the configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.join("\n  "))]
pub struct ConfigError(pub Vec<String>);

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "./teleguard-data";

impl Config {
    /// Reads `path` (if any), applies `overrides`, and validates everything at once.
    pub fn load(path: Option<&Path>, overrides: Overrides) -> Result<Config, ConfigError> {
        let raw = match path {
            Some(path) => RawConfig::read(path)?,
            None => RawConfig::default(),
        };
        Self::validate(raw, overrides)
    }

    pub fn validate(raw: RawConfig, overrides: Overrides) -> Result<Config, ConfigError> {
        let mut errors = Vec::new();
        let listen_text = overrides.listen.or(raw.server.listen).unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen = listen_text.parse().unwrap_or_else(|e| {
            errors.push(format!("listen address {listen_text:?}: {e} (expected HOST:PORT, e.g. 127.0.0.1:8080)"));
            SocketAddr::from(([127, 0, 0, 1], 8080))
        });
        let mut positive = |name: &str, value: Option<usize>, default: usize| {
            NonZeroUsize::new(value.unwrap_or(default)).unwrap_or_else(|| {
                errors.push(format!("{name} must be at least 1"));
                NonZeroUsize::MIN
            })
        };
        let cores = std::thread::available_parallelism().map_or(2, NonZeroUsize::get);
        let max_body_bytes = positive("server.max_body_bytes", raw.server.max_body_bytes, 8 * 1024 * 1024);
        // The store writer keeps a core busy; more workers than the other cores only contend
        // (measured on 2 cores: 1 worker 210k-242k readings/s, 2 workers 166k-174k).
        let workers = positive("pipeline.workers", raw.pipeline.workers, cores.saturating_sub(1).max(1));
        let inflight_readings = positive("pipeline.inflight_readings", raw.pipeline.inflight_readings, 200_000);
        let simulator = simulator_config(raw.simulator, overrides.simulate, overrides.speed, &mut errors);
        let read = |path: Option<PathBuf>, bundled: &str, errors: &mut Vec<String>| match path {
            Some(path) => std::fs::read_to_string(&path).unwrap_or_else(|e| {
                errors.push(format!("reference file {}: {e}", path.display()));
                String::new()
            }),
            None => bundled.to_string(),
        };
        let drivers_json = read(raw.reference.drivers, crate::store::BUNDLED_DRIVERS, &mut errors);
        let geofences_geojson = read(raw.reference.geofences, crate::store::BUNDLED_GEOFENCES, &mut errors);
        let mut raw_profiles = raw.profiles;
        for (name, profile) in &mut raw_profiles {
            if let Some(path) = profile.avro_schema_file.take() {
                match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        profile.avro_schema_text = Some(text);
                        profile.avro_schema_file = Some(path);
                    }
                    // Reported once, here; the profile is then checked without it.
                    Err(e) => errors.push(format!("profile `{name}`: avro_schema_file {}: {e}", path.display())),
                }
            }
            if let Some(path) = profile.json_schema_file.take() {
                match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        profile.json_schema_text = Some(text);
                        profile.json_schema_file = Some(path);
                    }
                    Err(e) => errors.push(format!("profile `{name}`: json_schema_file {}: {e}", path.display())),
                }
            }
        }
        let profiles = ProfileRegistry::with_builtins(raw_profiles).map_err(|e| errors.extend(e.0)).ok();
        let tokens = Tokens::validate(raw.server.tokens, profiles.as_ref(), &mut errors);
        let mqtt = mqtt_sources(raw.sources.mqtt, profiles.as_ref(), inflight_readings.get(), &mut errors);
        let notification_routes = Route::from_config(raw.alerts.slack, raw.alerts.webhook, &mut errors);
        let escalate_after = match raw.alerts.escalate_after_secs.unwrap_or(DEFAULT_ESCALATE_AFTER_SECS) {
            0 => None,
            secs => Some(Duration::from_secs(secs)),
        };
        let sinks = SinksConfig {
            postgres: raw.sinks.postgres.and_then(|raw| PostgresSinkConfig::validate(raw, &mut errors)),
            clickhouse: raw.sinks.clickhouse.and_then(|raw| ClickHouseSinkConfig::validate(raw, &mut errors)),
        };
        let kafka = raw.kafka.and_then(|raw| KafkaConfig::validate(raw, profiles.as_ref(), &mut errors));
        let plan = Role::parse_list(overrides.role.as_deref().unwrap_or("all"))
            .and_then(|roles| RolePlan::of(&roles, kafka.as_ref()))
            .unwrap_or_else(|e| {
                errors.push(e);
                RolePlan::of(&[Role::All], None).expect("`all` needs nothing")
            });
        // Retention waits for the sinks this process runs (their cursors), and only those.
        let kafka_sink = kafka.is_some() && plan.produces();
        let external = plan.external_sinks;
        let sink_names = [
            sinks.postgres.as_ref().filter(|_| external).map(|_| "postgres"),
            sinks.clickhouse.as_ref().filter(|_| external).map(|_| "clickhouse"),
            kafka_sink.then_some("kafka"),
        ];
        let mut retention = raw.store.retention.validate(sink_names.into_iter().flatten().collect(), &mut errors);
        if kafka_sink && plan.produce_dead_letters.is_some() {
            retention.dead_letter_sinks = vec!["kafka"];
        }
        let models = overrides.models.or(raw.models);
        if let Some(path) = models.as_ref().filter(|path| !path.exists()) {
            errors.push(format!(
                "models {}: no such model file or folder; make one with `teleguard train FILE... --profile P --models DIR`",
                path.display()
            ));
        }
        match profiles {
            Some(profiles) if errors.is_empty() => Ok(Config {
                data_dir: overrides.data_dir.or(raw.data_dir).unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
                models,
                listen,
                max_body_bytes,
                tokens: Arc::new(tokens),
                workers,
                inflight_readings,
                busy_wait: Duration::from_millis(raw.pipeline.busy_wait_ms.unwrap_or(1000)),
                time_window: time_window(&raw.pipeline),
                durability: raw.store.durability,
                retention,
                alert_cooldown: Duration::from_secs(raw.alerts.cooldown_secs.unwrap_or(600)),
                escalate_after,
                notification_routes,
                simulator,
                mqtt,
                sinks,
                kafka: kafka.map(Arc::new),
                plan,
                drivers_json,
                geofences_geojson,
                profiles: Arc::new(profiles),
            }),
            _ => Err(ConfigError(errors)),
        }
    }
}

fn mqtt_sources(
    raw: Vec<RawMqttSource>,
    profiles: Option<&ProfileRegistry>,
    inflight_readings: usize,
    errors: &mut Vec<String>,
) -> Vec<MqttSourceConfig> {
    let sources: Vec<MqttSourceConfig> = raw
        .into_iter()
        .enumerate()
        .filter_map(|(index, raw)| MqttSourceConfig::validate(raw, index, profiles, inflight_readings, errors))
        .collect();
    for (index, source) in sources.iter().enumerate() {
        let same_session = sources[..index].iter().any(|other| {
            other.broker.host == source.broker.host
                && other.broker.port == source.broker.port
                && other.client_id == source.client_id
        });
        if same_session {
            errors.push(format!(
                "two [[sources.mqtt]] use client_id {:?} on {}: each needs its own (it names the persistent session)",
                source.client_id, source.broker
            ));
        }
    }
    sources
}

fn simulator_config(
    raw: RawSimulator,
    simulate: Option<String>,
    speed: Option<f64>,
    errors: &mut Vec<String>,
) -> SimulatorConfig {
    let requested: Vec<String> = match simulate {
        Some(list) => list.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
        None => raw.profiles.unwrap_or_else(|| vec!["all".into()]),
    };
    let profiles = if requested.iter().any(|p| p == "none") {
        Vec::new()
    } else if requested.iter().any(|p| p == "all") {
        SIMULATED_PROFILES.iter().map(|p| p.to_string()).collect()
    } else {
        for name in &requested {
            if !SIMULATED_PROFILES.contains(&name.as_str()) {
                errors.push(format!(
                    "cannot simulate {name:?}: use none, all, or some of {}",
                    SIMULATED_PROFILES.join(",")
                ));
            }
        }
        requested
    };
    let speed = speed.or(raw.speed).unwrap_or(1.0);
    if !(speed.is_finite() && speed > 0.0) {
        errors.push(format!("simulator speed {speed} must be a positive number"));
    }
    let anomaly_rate = raw.anomaly_rate.unwrap_or(1.0);
    if !(0.0..=3600.0).contains(&anomaly_rate) {
        errors.push(format!(
            "simulator.anomaly_rate {anomaly_rate} must lie in [0, 3600] (injected anomalies per entity per hour)"
        ));
    }
    let fleet_scale = raw.fleet_scale.unwrap_or(1.0);
    if !(fleet_scale.is_finite() && fleet_scale > 0.0) {
        errors.push(format!("simulator.fleet_scale {fleet_scale} must be a positive number"));
    }
    SimulatorConfig { profiles, speed, seed: raw.seed.unwrap_or(42), anomaly_rate, fleet_scale }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_file() {
        let config = Config::load(None, Overrides::default()).unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.simulator.profiles.len(), 5);
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn all_errors_are_collected() {
        let raw: RawConfig = toml::from_str("[pipeline]\nworkers = 0\n[simulator]\nanomaly_rate = -1.0\n").unwrap();
        let overrides =
            Overrides { listen: Some("nowhere".into()), simulate: Some("vehicle,boat".into()), ..Default::default() };
        let err = Config::validate(raw, overrides).unwrap_err();
        assert_eq!(err.0.len(), 4, "{err}");
    }

    #[test]
    fn simulate_none_turns_the_simulator_off() {
        let overrides = Overrides { simulate: Some("none".into()), ..Default::default() };
        assert!(Config::load(None, overrides).unwrap().simulator.profiles.is_empty());
    }

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/teleguard.example.toml");
        let config = Config::load(Some(&path), Overrides::default()).unwrap();
        assert!(config.profiles.by_name("pump").is_some());
        assert!(config.mqtt.is_empty(), "the example's MQTT source is commented out, so `run` needs no broker");
    }

    #[test]
    fn the_example_documents_the_zscore_defaults_and_its_time_window() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/teleguard.example.toml");
        let config = Config::load(Some(&path), Overrides::default()).unwrap();
        let zscore = config.profiles.by_name("pump").unwrap().detectors.zscore.clone().unwrap();
        let defaults = teleguard_core::detect::settings::RawZScore::default();
        assert_eq!(zscore.window.get(), defaults.window);
        assert_eq!(zscore.threshold, defaults.threshold);
        assert_eq!(
            (zscore.persistence.get(), zscore.quiet_readings.get()),
            (defaults.persistence, defaults.quiet_readings)
        );
        assert_eq!(zscore.window_ms, defaults.window_secs.map(|s| (s * 1000.0) as i64), "off, as the example says");
        assert!(config.models.is_none(), "no models by default");
        // The documented lines, uncommented, are real options.
        let text = std::fs::read_to_string(&path).unwrap();
        let timed = text
            .replace("# window_secs = 300", "window_secs = 300")
            .replace("# models = \"./models\"", "models = \".\"");
        let raw: RawConfig = toml::from_str(&timed).unwrap();
        assert_eq!(raw.models.as_deref(), Some(Path::new(".")));
        let config = Config::validate(raw, Overrides::default()).unwrap();
        let zscore = config.profiles.by_name("pump").unwrap().detectors.zscore.clone().unwrap();
        assert_eq!((zscore.window_ms, zscore.window.get()), (Some(300_000), 120));
    }

    #[test]
    fn the_example_documents_the_sinks_it_knows() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/teleguard.example.toml");
        let text = std::fs::read_to_string(path).unwrap();
        // The commented-out sink tables from `# [sinks.postgres]` to the next blank line, uncommented.
        let block: Vec<&str> = text
            .lines()
            .skip_while(|line| *line != "# [sinks.postgres]")
            .take_while(|line| !line.is_empty())
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| line.starts_with('[') || line.contains(" = "))
            .collect();
        assert!(block.len() > 3, "the example documents [sinks.postgres]");
        let raw: RawConfig = toml::from_str(&block.join("\n")).unwrap();
        let config = Config::validate(raw, Overrides::default()).unwrap();
        let postgres = config.sinks.postgres.expect("a postgres sink");
        assert_eq!(postgres.describe, "127.0.0.1:5432/teleguard");
        assert_eq!(postgres.batching.rows.get(), 5000);
        assert_eq!(postgres.batching.max_wait, Duration::from_millis(500));
        let clickhouse = config.sinks.clickhouse.expect("a clickhouse sink, documented after postgres");
        assert_eq!(clickhouse.describe(), "127.0.0.1:8123/teleguard");
        assert_eq!(clickhouse.kafka.expect("kafka ingest").topic, "vehicle_telemetry_raw");
    }

    #[test]
    fn the_example_documents_kafka_with_its_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/teleguard.example.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let block: Vec<&str> = text
            .lines()
            .skip_while(|line| *line != "# [kafka]")
            .take_while(|line| !line.is_empty())
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| line.starts_with('[') || line.contains(" = "))
            .collect();
        let raw: RawConfig = toml::from_str(&block.join("\n")).unwrap();
        let overrides = Overrides { role: Some("detect".into()), ..Default::default() };
        let config = Config::validate(raw, overrides).unwrap();
        let kafka = config.kafka.expect("[kafka]");
        let defaults = crate::kafka::KafkaConfig::validate(
            crate::kafka::RawKafka { brokers: "127.0.0.1:9092".into(), ..Default::default() },
            Some(&config.profiles),
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(kafka.topics, defaults.topics, "the example shows the default topics");
        assert_eq!((kafka.partitions, kafka.rebuild_messages), (defaults.partitions, defaults.rebuild_messages));
        assert!(kafka.client.iter().any(|(k, _)| k == "security.protocol"));
        assert_eq!(config.plan.group, "teleguard-detect");
    }

    #[test]
    fn the_example_documents_the_spoofing_options_with_their_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/teleguard.example.toml");
        let text = std::fs::read_to_string(path).unwrap();
        // The commented-out options after `# [profiles.NAME.detectors.spoofing]`, to the next blank line.
        let options: Vec<&str> = text
            .lines()
            .skip_while(|line| *line != "# [profiles.NAME.detectors.spoofing]")
            .skip(1)
            .take_while(|line| !line.is_empty())
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| line.contains(" = "))
            .collect();
        assert_eq!(options.len(), 12, "{options:#?}");
        use teleguard_core::detect::settings::RawSpoofing;
        let documented: RawSpoofing = toml::from_str(&options.join("\n")).unwrap();
        let defaults: RawSpoofing = toml::from_str("").unwrap();
        assert_eq!(documented, defaults);
    }

    #[test]
    fn the_example_documents_real_mqtt_options() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/teleguard.example.toml");
        let text = std::fs::read_to_string(path).unwrap();
        fn option(line: &str) -> Option<&str> {
            let rest = line.strip_prefix("# ")?;
            let key = rest.split(" = ").next()?;
            (rest == "[[sources.mqtt]]"
                || (rest.contains(" = ") && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')))
            .then_some(rest)
        }
        // The commented-out block from `# [[sources.mqtt]]` to the next table.
        let block =
            text.lines().skip_while(|line| *line != "# [[sources.mqtt]]").take_while(|line| !line.starts_with('['));
        let uncommented: Vec<&str> = block.filter_map(option).collect();
        assert!(uncommented.len() > 15, "{uncommented:#?}");
        let raw: RawConfig = toml::from_str(&uncommented.join("\n")).unwrap();
        let source = &raw.sources.mqtt[0];
        assert!(source.ca_file.is_some() && source.client_key_file.is_some() && source.max_batch.is_some());
        assert!(source.reconnect_max_ms.is_some() && !source.routes.is_empty());
    }

    #[test]
    fn the_example_documents_a_real_token_entry() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/teleguard.example.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let block: Vec<&str> = text
            .lines()
            .skip_while(|line| *line != "# [[server.tokens]]")
            .take_while(|line| *line != "#")
            .map(|line| line.trim_start_matches("# "))
            .collect();
        assert_eq!(block.len(), 5, "{block:#?}");
        let raw: RawConfig = toml::from_str(&block.join("\n")).unwrap();
        let config = Config::validate(raw, Overrides::default()).unwrap();
        assert_eq!(config.tokens.len(), 1);
        // The example's hash is SHA-256("test"), never a token anyone uses.
        let grant = config.tokens.authenticate("test").unwrap();
        assert!(grant.allows_profile("drone") && !grant.allows_profile("pump"));
        assert!(Config::load(None, Overrides::default()).unwrap().tokens.is_empty(), "no tokens by default");
    }

    #[test]
    fn an_mqtt_source_defaults_to_the_reference_topic_and_profile() {
        let raw: RawConfig = toml::from_str("[[sources.mqtt]]\nurl = \"mqtt://127.0.0.1:1883\"\n").unwrap();
        let config = Config::validate(raw, Overrides::default()).unwrap();
        let source = &config.mqtt[0];
        assert_eq!(source.subscriptions, ["iot/telemetry"]);
        assert_eq!(&*source.profile, "drone");
        assert_eq!(source.client_id, "teleguard");
        assert!(source.tls.is_none() && !source.entity_from_topic);
        let twice = "[[sources.mqtt]]\nurl = \"mqtt://h\"\n[[sources.mqtt]]\nurl = \"mqtt://h:1883\"\n";
        let err = Config::validate(toml::from_str(twice).unwrap(), Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("client_id \"teleguard\""), "{err}");
    }
}
