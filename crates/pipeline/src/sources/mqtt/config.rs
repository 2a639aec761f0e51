//! `[[sources.mqtt]]`: the raw TOML table, its validation, broker URLs and topic filters.

use super::tls::{self, ClientIdentity};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use teleguard_core::profile::ProfileRegistry;

/// The reference design's topic and the profile of what is published there.
pub const DEFAULT_TOPIC: &str = "iot/telemetry";
pub const DEFAULT_PROFILE: &str = "drone";
pub const DEFAULT_CLIENT_ID: &str = "teleguard";
/// The largest packet MQTT can carry; payloads over `max_payload_bytes` are read, then
/// rejected, so that an oversized message is quarantined instead of breaking the connection
/// each time the broker redelivers it.
pub const MQTT_MAX_PACKET_BYTES: usize = 268_435_455;

/// One `[[sources.mqtt]]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMqttSource {
    pub url: String,
    pub client_id: Option<String>,
    pub topics: Option<Vec<String>>,
    pub profile: Option<String>,
    /// Topic filter → profile, tried in order of the filters' text before `profile`.
    #[serde(default)]
    pub routes: BTreeMap<String, String>,
    pub entity_from_topic: Option<bool>,
    pub ca_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub max_batch: Option<usize>,
    pub max_payload_bytes: Option<usize>,
    pub keep_alive_secs: Option<u64>,
    pub reconnect_min_ms: Option<u64>,
    pub reconnect_max_ms: Option<u64>,
}

/// A validated MQTT source.
#[derive(Debug, Clone)]
pub struct MqttSourceConfig {
    pub broker: BrokerUrl,
    pub client_id: String,
    /// Every filter subscribed to: `topics` and the routes' filters.
    pub subscriptions: Vec<String>,
    pub routes: Vec<(TopicFilter, Arc<str>)>,
    pub profile: Arc<str>,
    pub entity_from_topic: bool,
    /// Present exactly when the URL is `mqtts://`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub credentials: Option<(String, String)>,
    pub max_batch: NonZeroUsize,
    pub max_payload_bytes: NonZeroUsize,
    pub keep_alive: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

impl MqttSourceConfig {
    /// The profile of a message that arrived on `topic`.
    pub fn profile_of(&self, topic: &str) -> &Arc<str> {
        self.routes.iter().find(|(filter, _)| filter.matches(topic)).map_or(&self.profile, |(_, profile)| profile)
    }

    /// Validates `raw`, the `index`-th source, adding every problem to `errors`.
    pub fn validate(
        raw: RawMqttSource,
        index: usize,
        profiles: Option<&ProfileRegistry>,
        inflight_readings: usize,
        errors: &mut Vec<String>,
    ) -> Option<MqttSourceConfig> {
        let before = errors.len();
        let name = format!("sources.mqtt[{index}]");
        let broker = BrokerUrl::parse(&raw.url).map_err(|e| errors.push(format!("{name}.url: {e}"))).ok();
        let known_profile = |profile: &str, errors: &mut Vec<String>| {
            if let Some(profiles) = profiles
                && profiles.by_name(profile).is_none()
            {
                errors.push(format!(
                    "{name}: profile {profile:?} is not configured; known: {}",
                    profiles.names().join(", ")
                ));
            }
            Arc::<str>::from(profile)
        };
        let profile = known_profile(raw.profile.as_deref().unwrap_or(DEFAULT_PROFILE), errors);
        let mut routes = Vec::new();
        for (filter, route_profile) in &raw.routes {
            let profile = known_profile(route_profile, errors);
            match TopicFilter::parse(filter) {
                Ok(filter) => routes.push((filter, profile)),
                Err(e) => errors.push(format!("{name}.routes: {e}")),
            }
        }
        let topics =
            raw.topics.unwrap_or_else(|| if raw.routes.is_empty() { vec![DEFAULT_TOPIC.into()] } else { vec![] });
        for topic in &topics {
            if let Err(e) = TopicFilter::parse(topic) {
                errors.push(format!("{name}.topics: {e}"));
            }
        }
        let mut subscriptions = topics;
        subscriptions
            .extend(raw.routes.keys().filter(|filter| !subscriptions.contains(filter)).cloned().collect::<Vec<_>>());
        if subscriptions.is_empty() {
            errors.push(format!("{name}: no topics to subscribe to; set topics = [\"{DEFAULT_TOPIC}\"]"));
        }
        let client_id = raw.client_id.unwrap_or_else(|| DEFAULT_CLIENT_ID.into());
        if client_id.is_empty() || client_id.len() > 256 {
            errors.push(format!("{name}.client_id must be 1 to 256 bytes long (it names the persistent session)"));
        }
        let tls = match (&broker, &raw.ca_file) {
            (Some(broker), Some(ca_file)) if broker.tls => {
                let identity = match (&raw.client_cert_file, &raw.client_key_file) {
                    (Some(cert_file), Some(key_file)) => Some(ClientIdentity { cert_file, key_file }),
                    (None, None) => None,
                    _ => {
                        errors.push(format!("{name}: client_cert_file and client_key_file go together (mutual TLS)"));
                        None
                    }
                };
                tls::client_config(ca_file, identity).map_err(|e| errors.push(format!("{name}: {e}"))).ok()
            }
            (Some(broker), None) if broker.tls => {
                errors.push(format!("{name}: an mqtts:// broker needs ca_file, the CA that signed its certificate"));
                None
            }
            (Some(_), _)
                if raw.ca_file.is_some() || raw.client_cert_file.is_some() || raw.client_key_file.is_some() =>
            {
                errors.push(format!("{name}: TLS files are set but the url is mqtt://; use mqtts:// for TLS"));
                None
            }
            _ => None,
        };
        let credentials = match (raw.username, raw.password) {
            (Some(user), password) => Some((user, password.unwrap_or_default())),
            (None, Some(_)) => {
                errors.push(format!("{name}: password without username"));
                None
            }
            (None, None) => None,
        };
        let max_batch = NonZeroUsize::new(raw.max_batch.unwrap_or(1000)).unwrap_or_else(|| {
            errors.push(format!("{name}.max_batch must be at least 1"));
            NonZeroUsize::MIN
        });
        if max_batch.get() > inflight_readings {
            errors.push(format!(
                "{name}.max_batch {max_batch} is more than pipeline.inflight_readings {inflight_readings}; lower it"
            ));
        }
        let max_payload_bytes = NonZeroUsize::new(raw.max_payload_bytes.unwrap_or(8 * 1024 * 1024))
            .filter(|n| n.get() <= MQTT_MAX_PACKET_BYTES)
            .unwrap_or_else(|| {
                errors.push(format!("{name}.max_payload_bytes must lie in [1, {MQTT_MAX_PACKET_BYTES}]"));
                NonZeroUsize::MIN
            });
        let keep_alive = Duration::from_secs(raw.keep_alive_secs.unwrap_or(30));
        if keep_alive < Duration::from_secs(5) {
            errors.push(format!("{name}.keep_alive_secs must be at least 5"));
        }
        let reconnect_min = Duration::from_millis(raw.reconnect_min_ms.unwrap_or(100).max(1));
        let reconnect_max = Duration::from_millis(raw.reconnect_max_ms.unwrap_or(30_000));
        if reconnect_max < reconnect_min {
            errors.push(format!("{name}.reconnect_max_ms must be at least reconnect_min_ms"));
        }
        if errors.len() > before {
            return None;
        }
        Some(MqttSourceConfig {
            broker: broker?,
            client_id,
            subscriptions,
            routes,
            profile,
            entity_from_topic: raw.entity_from_topic.unwrap_or(false),
            tls,
            credentials,
            max_batch,
            max_payload_bytes,
            keep_alive,
            reconnect_min,
            reconnect_max,
        })
    }
}

/// `mqtt://HOST[:PORT][/TOPIC]` or `mqtts://...` (TLS); ports default to 1883 and 8883.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// What follows the authority, without the leading slash, if anything.
    pub topic: Option<String>,
}

impl BrokerUrl {
    pub fn parse(text: &str) -> Result<BrokerUrl, String> {
        let (tls, rest) = if let Some(rest) = text.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(format!("{text:?} is not an MQTT URL; expected mqtt://HOST:PORT or mqtts://HOST:PORT"));
        };
        let (authority, topic) = match rest.split_once('/') {
            Some((authority, topic)) => (authority, (!topic.is_empty()).then(|| topic.to_string())),
            None => (rest, None),
        };
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) =
                bracketed.split_once(']').ok_or_else(|| format!("{text:?}: unclosed [ in the IPv6 address"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{text:?} names no host"));
        }
        let port = match port {
            Some(port) => port.parse().map_err(|_| format!("{text:?}: port {port:?} is not a number in 1..65535"))?,
            None if tls => 8883,
            None => 1883,
        };
        Ok(BrokerUrl { host: host.to_string(), port, tls, topic })
    }
}

impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// An MQTT topic filter: levels split by `/`, `+` one level, `#` (last) any number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicFilter {
    levels: Vec<String>,
}

impl TopicFilter {
    pub fn parse(text: &str) -> Result<TopicFilter, String> {
        if text.is_empty() {
            return Err("an empty topic filter matches nothing".into());
        }
        let levels: Vec<String> = text.split('/').map(str::to_string).collect();
        for (index, level) in levels.iter().enumerate() {
            let wildcard = level.contains('#') || level.contains('+');
            if wildcard && level.len() > 1 {
                return Err(format!("{text:?}: a wildcard must be a whole level, as in a/+/c or a/#"));
            }
            if level == "#" && index + 1 != levels.len() {
                return Err(format!("{text:?}: # must be the last level"));
            }
        }
        Ok(TopicFilter { levels })
    }

    /// Whether `topic` matches; wildcards at the first level skip topics starting with `$`.
    pub fn matches(&self, topic: &str) -> bool {
        if topic.starts_with('$') && self.levels.first().is_some_and(|l| l == "+" || l == "#") {
            return false;
        }
        let mut topic_levels = topic.split('/');
        for level in &self.levels {
            match (level.as_str(), topic_levels.next()) {
                ("#", _) => return true,
                ("+", Some(_)) => {}
                (literal, Some(actual)) if literal == actual => {}
                _ => return false,
            }
        }
        topic_levels.next().is_none()
    }
}

/// The last level of a topic: the device's identity under `iot/telemetry/<device>`.
pub fn last_level(topic: &str) -> &str {
    topic.rsplit('/').next().unwrap_or(topic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(filter: &str, topic: &str) -> bool {
        TopicFilter::parse(filter).unwrap().matches(topic)
    }

    #[test]
    fn wildcards_match_as_the_mqtt_specification_says() {
        assert!(matches("iot/telemetry", "iot/telemetry"));
        assert!(!matches("iot/telemetry", "iot/telemetry/d-1"));
        assert!(matches("iot/telemetry/+", "iot/telemetry/d-1"));
        assert!(!matches("iot/telemetry/+", "iot/telemetry"));
        assert!(!matches("iot/telemetry/+", "iot/telemetry/d-1/x"));
        assert!(matches("iot/#", "iot"));
        assert!(matches("iot/#", "iot/telemetry/d-1"));
        assert!(matches("+/telemetry/#", "fleet/telemetry/a/b"));
        assert!(matches("#", "anything/at/all"));
        assert!(!matches("#", "$SYS/broker/uptime"));
        assert!(!matches("+/broker", "$SYS/broker"));
        assert!(matches("$SYS/#", "$SYS/broker"));
    }

    #[test]
    fn malformed_filters_are_refused() {
        for bad in ["", "iot/#/x", "iot/tele#", "iot/+x"] {
            assert!(TopicFilter::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn broker_urls_give_host_port_tls_and_topic() {
        let plain = BrokerUrl::parse("mqtt://127.0.0.1:1884/iot/telemetry").unwrap();
        assert_eq!(
            plain,
            BrokerUrl { host: "127.0.0.1".into(), port: 1884, tls: false, topic: Some("iot/telemetry".into()) }
        );
        let secure = BrokerUrl::parse("mqtts://localhost").unwrap();
        assert_eq!((secure.port, secure.tls, secure.topic), (8883, true, None));
        assert_eq!(BrokerUrl::parse("mqtt://[::1]:1900").unwrap().host, "::1");
        assert!(BrokerUrl::parse("http://localhost").unwrap_err().contains("not an MQTT URL"));
        assert!(BrokerUrl::parse("mqtt://host:port").unwrap_err().contains("port"));
    }

    #[test]
    fn routes_pick_the_profile_and_topics_default_to_the_reference() {
        let profiles = ProfileRegistry::with_builtins(BTreeMap::new()).unwrap();
        let raw = RawMqttSource {
            url: "mqtt://127.0.0.1".into(),
            routes: [("fleet/+/position".to_string(), "vehicle".to_string())].into(),
            topics: Some(vec!["iot/telemetry".into()]),
            ..Default::default()
        };
        let mut errors = Vec::new();
        let config = MqttSourceConfig::validate(raw, 0, Some(&profiles), 1000, &mut errors).expect("valid");
        assert_eq!(config.subscriptions, ["iot/telemetry", "fleet/+/position"]);
        assert_eq!(&**config.profile_of("fleet/v-1/position"), "vehicle");
        assert_eq!(&**config.profile_of("iot/telemetry"), "drone");
        assert_eq!(last_level("iot/telemetry/drone-7"), "drone-7");
    }

    #[test]
    fn every_problem_of_a_source_is_reported() {
        let profiles = ProfileRegistry::with_builtins(BTreeMap::new()).unwrap();
        let raw = RawMqttSource {
            url: "mqtts://127.0.0.1".into(),
            profile: Some("boat".into()),
            max_batch: Some(0),
            topics: Some(vec!["a/#/b".into()]),
            password: Some("secret".into()),
            ..Default::default()
        };
        let mut errors = Vec::new();
        assert!(MqttSourceConfig::validate(raw, 2, Some(&profiles), 1000, &mut errors).is_none());
        assert_eq!(errors.len(), 5, "{errors:#?}");
        assert!(errors.iter().all(|e| e.starts_with("sources.mqtt[2]")), "{errors:#?}");
    }
}
