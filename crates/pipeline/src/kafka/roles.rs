//! `teleguard run --role ...`: which stages a process runs, what it consumes from Kafka and what
//! it produces, so that the reference designs' chains run as separate processes.

use super::KafkaConfig;
use std::collections::BTreeMap;

/// One stage of the distributed shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Everything in one process (the default; Kafka optional).
    All,
    /// Edge ingest: the simulator, MQTT and HTTP; valid readings go to the raw topics
    /// (reference 001's gateway → `telemetry-validated`).
    Gateway,
    /// Raw topics → drivers and geofences → enriched topics (reference 000's enrichment consumer).
    Enrich,
    /// Detectors on the enriched (or raw) topics → the anomalies topic, and the local store.
    Detect,
    /// The external history stores (ClickHouse, PostgreSQL) fed from the enriched topics
    /// (reference 000's `sync_to_clickhouse`).
    History,
    /// The anomalies topic → this process's gold table and alerts, served by the API and the
    /// dashboard: one dashboard for a fleet of detector processes.
    Serve,
}

impl Role {
    pub const ALL: [Role; 6] = [Role::All, Role::Gateway, Role::Enrich, Role::Detect, Role::History, Role::Serve];

    pub fn name(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Gateway => "gateway",
            Role::Enrich => "enrich",
            Role::Detect => "detect",
            Role::History => "history",
            Role::Serve => "serve",
        }
    }

    /// Parses `all` or a comma-separated list such as `enrich,detect`.
    pub fn parse_list(text: &str) -> Result<Vec<Role>, String> {
        let mut roles = Vec::new();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let role = Role::ALL.into_iter().find(|r| r.name() == word).ok_or_else(|| {
                let names: Vec<&str> = Role::ALL.iter().map(|r| r.name()).collect();
                format!("--role {word:?} is not a role; roles: {}", names.join(", "))
            })?;
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        if roles.is_empty() {
            return Err("--role needs a role: all, gateway, enrich, detect, history or serve".into());
        }
        if roles.contains(&Role::All) && roles.len() > 1 {
            return Err("--role all already runs every stage; name it alone".into());
        }
        if roles.contains(&Role::Serve) && roles.contains(&Role::Detect) {
            return Err("--role serve reads the anomalies topic that detect writes (its store would send them back \
                        there); run serve in a process of its own"
                .into());
        }
        roles.sort();
        Ok(roles)
    }
}

/// What a process runs, from its roles and `[kafka]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolePlan {
    pub roles: Vec<Role>,
    /// The simulator, MQTT sources (HTTP ingest is always served).
    pub edge_sources: bool,
    /// Detectors run on the readings (otherwise readings are only enriched).
    pub detect: bool,
    /// The configured PostgreSQL and ClickHouse sinks run.
    pub external_sinks: bool,
    /// Topics consumed, each with the profile its messages are (empty: no Kafka source).
    pub consume: Vec<(String, String)>,
    /// The consumer group of the reading topics: `PREFIX-ROLE[-ROLE...]` (without `serve`), so
    /// processes of the same roles share work.
    pub group: String,
    /// Readings produced: profile → topic.
    pub produce_readings: BTreeMap<String, String>,
    /// Anomalies produced to this topic.
    pub produce_anomalies: Option<String>,
    /// Rejects of the edge sources (bronze dead letters) produced to this topic.
    pub produce_dead_letters: Option<String>,
    /// `serve`: the anomalies topic consumed into the store, and the consumer group doing it
    /// (`PREFIX-serve`, whatever other roles the process has).
    pub consume_anomalies: Option<(String, String)>,
}

impl RolePlan {
    /// `--role all`: every stage in this process, publishing what it is given to publish.
    fn all_in_one(
        produce_readings: BTreeMap<String, String>,
        produce_anomalies: Option<String>,
        produce_dead_letters: Option<String>,
    ) -> RolePlan {
        RolePlan {
            roles: vec![Role::All],
            edge_sources: true,
            detect: true,
            external_sinks: true,
            consume: Vec::new(),
            group: String::new(),
            produce_readings,
            produce_anomalies,
            produce_dead_letters,
            consume_anomalies: None,
        }
    }

    /// The plan of `roles`; every role but `all` needs `[kafka]`.
    pub fn of(roles: &[Role], kafka: Option<&KafkaConfig>) -> Result<RolePlan, String> {
        let has = |role| roles.contains(&role);
        let names: Vec<&str> = roles.iter().map(|r| r.name()).collect();
        let Some(kafka) = kafka else {
            if has(Role::All) {
                return Ok(RolePlan::all_in_one(BTreeMap::new(), None, None));
            }
            return Err(format!(
                "--role {} connects stages over Kafka: add [kafka] brokers = \"HOST:PORT\" to the config",
                names.join(",")
            ));
        };
        let topics = &kafka.topics;
        // Serving anomalies does not change which group a process's reading stages join.
        let mut reading_stages: Vec<&str> = roles.iter().filter(|r| **r != Role::Serve).map(|r| r.name()).collect();
        if reading_stages.is_empty() {
            reading_stages = names.clone();
        }
        if has(Role::All) {
            // One process, and its results published for whoever listens.
            let mut readings = topics.raw.clone();
            readings.extend(topics.enriched.clone());
            let (anomalies, dead_letters) = (topics.anomalies.clone(), topics.dead_letters.clone());
            return Ok(RolePlan::all_in_one(readings, Some(anomalies), Some(dead_letters)));
        }
        let (gateway, enrich, detect, history, serve) =
            (has(Role::Gateway), has(Role::Enrich), has(Role::Detect), has(Role::History), has(Role::Serve));
        let consume: Vec<(String, String)> = if gateway || !(enrich || detect || history) {
            Vec::new()
        } else if enrich {
            topics
                .raw
                .iter()
                .filter(|(profile, _)| detect || history || topics.enriched.contains_key(*profile))
                .map(|(profile, topic)| (topic.clone(), profile.clone()))
                .collect()
        } else {
            let profiles: std::collections::BTreeSet<&String> =
                topics.raw.keys().chain(topics.enriched.keys()).collect();
            profiles.into_iter().filter_map(|p| topics.analysed_input(p).map(|t| (t.clone(), p.clone()))).collect()
        };
        let produce_readings = if enrich {
            topics.enriched.clone()
        } else if gateway {
            topics.raw.clone()
        } else {
            BTreeMap::new()
        };
        Ok(RolePlan {
            roles: roles.to_vec(),
            edge_sources: gateway,
            detect,
            external_sinks: history,
            consume,
            group: format!("{}-{}", kafka.group_prefix, reading_stages.join("-")),
            produce_readings,
            produce_anomalies: detect.then(|| topics.anomalies.clone()),
            produce_dead_letters: gateway.then(|| topics.dead_letters.clone()),
            consume_anomalies: serve
                .then(|| (topics.anomalies.clone(), format!("{}-{}", kafka.group_prefix, Role::Serve.name()))),
        })
    }

    /// Whether this process publishes anything (and so runs the Kafka sink).
    pub fn produces(&self) -> bool {
        !self.produce_readings.is_empty() || self.produce_anomalies.is_some() || self.produce_dead_letters.is_some()
    }

    /// Every topic this process reads or writes, for creation at start.
    pub fn topics(&self, kafka: &KafkaConfig) -> Vec<String> {
        let mut topics: Vec<String> = self.consume.iter().map(|(t, _)| t.clone()).collect();
        topics.extend(self.produce_readings.values().cloned());
        topics.extend(self.produce_anomalies.clone());
        topics.extend(self.produce_dead_letters.clone());
        topics.extend(self.consume_anomalies.iter().map(|(topic, _)| topic.clone()));
        if !self.consume.is_empty() || self.consume_anomalies.is_some() {
            topics.push(kafka.topics.dead_letters.clone());
        }
        topics.sort();
        topics.dedup();
        topics
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::config::RawKafka;
    use teleguard_core::profile::ProfileRegistry;

    fn kafka() -> KafkaConfig {
        let raw = RawKafka { brokers: "127.0.0.1:9092".into(), ..RawKafka::default() };
        KafkaConfig::validate(raw, Some(&ProfileRegistry::with_builtins(BTreeMap::new()).unwrap()), &mut Vec::new())
            .unwrap()
    }

    fn plan(roles: &str) -> RolePlan {
        RolePlan::of(&Role::parse_list(roles).unwrap(), Some(&kafka())).unwrap()
    }

    #[test]
    fn reference_000_runs_as_a_chain_of_roles() {
        let enrich = plan("enrich");
        assert_eq!(enrich.consume, [("vehicle_telemetry_raw".to_string(), "vehicle".to_string())]);
        assert_eq!(enrich.produce_readings["vehicle"], "vehicle_events_enriched");
        assert!(!enrich.detect && !enrich.edge_sources && enrich.produce_anomalies.is_none());
        let detect = plan("detect");
        assert!(detect.consume.contains(&("vehicle_events_enriched".into(), "vehicle".into())));
        assert!(detect.consume.contains(&("telemetry-validated".into(), "drone".into())));
        assert!(detect.consume.contains(&("iot-data-stream".into(), "environment".into())));
        assert_eq!(detect.produce_anomalies.as_deref(), Some("telemetry-anomalies"));
        assert_eq!(detect.group, "teleguard-detect");
        assert!(detect.produce_readings.is_empty());
        let history = plan("history");
        assert!(history.external_sinks && !history.detect);
        assert_eq!(plan("detect,enrich").group, "teleguard-enrich-detect");
    }

    #[test]
    fn the_gateway_feeds_the_raw_topics_and_consumes_none() {
        let gateway = plan("gateway");
        assert!(gateway.edge_sources && gateway.consume.is_empty());
        assert_eq!(gateway.produce_readings["drone"], "telemetry-validated");
    }

    #[test]
    fn roles_need_kafka_and_a_known_name() {
        assert!(RolePlan::of(&[Role::All], None).unwrap().consume.is_empty());
        let error = RolePlan::of(&[Role::Detect], None).unwrap_err();
        assert!(error.contains("[kafka]"), "{error}");
        assert!(Role::parse_list("detect,router").unwrap_err().contains("\"router\""));
        assert!(Role::parse_list("all,detect").is_err());
        assert!(Role::parse_list("detect,serve").unwrap_err().contains("serve"));
    }

    #[test]
    fn the_serving_role_consumes_only_the_anomalies_topic_in_a_group_of_its_own() {
        let serve = plan("serve");
        assert_eq!(serve.consume_anomalies, Some(("telemetry-anomalies".into(), "teleguard-serve".into())));
        assert!(serve.consume.is_empty() && !serve.detect && !serve.edge_sources && !serve.produces());
        let both = plan("enrich,serve");
        assert_eq!(both.consume_anomalies.as_ref().map(|(_, group)| group.as_str()), Some("teleguard-serve"));
        assert_eq!(both.group, "teleguard-enrich", "the enrich stage shares its group with plain enrich processes");
        assert!(!both.consume.is_empty());
    }

    #[test]
    fn edge_sources_forward_their_rejects_to_the_dead_letter_topic() {
        assert_eq!(plan("gateway").produce_dead_letters.as_deref(), Some("telemetry-dead-letters"));
        assert_eq!(plan("all").produce_dead_letters.as_deref(), Some("telemetry-dead-letters"));
        assert_eq!(plan("enrich").produce_dead_letters, None, "the Kafka source forwards its own");
        assert_eq!(RolePlan::of(&[Role::All], None).unwrap().produce_dead_letters, None);
    }
}
