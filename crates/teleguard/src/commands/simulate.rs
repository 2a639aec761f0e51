//! `teleguard simulate`: realistic fleet telemetry with labeled injected anomalies, written to
//! standard output, files, a running teleguard's ingest API, an MQTT broker or Kafka.

use super::mqtt_publish::{Publisher, TlsFiles};
use anyhow::{Context as _, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use teleguard_core::json::Scalar;
use teleguard_core::profile::ProfileRegistry;
use teleguard_core::simulate::{SIMULATED_PROFILES, SimSettings, SimSink, Simulator};
use teleguard_core::time::{TimeFormat, now_millis, parse_timestamp};
use teleguard_pipeline::kafka::{self, KafkaConfig, RawKafka};

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// A profile to simulate (repeat the flag for several), or `all`.
    #[arg(long = "profile", value_name = "PROFILE", default_value = "all")]
    profiles: Vec<String>,
    /// Entities per profile; by default the reference fleets: 15 vehicles, 5 drones,
    /// 4 aircraft, 10 environment and 6 vibration sensors.
    #[arg(long, value_name = "N")]
    entities: Option<usize>,
    /// The same seed (and start) gives the same bytes.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Simulated start time, RFC 3339 (e.g. 2024-09-04T00:00:00Z). By default now at
    /// `--speed 1` or slower; else the duration before now, so the data ends by now and no
    /// reading is from the future of a receiving teleguard.
    #[arg(long, value_name = "TIME")]
    start: Option<String>,
    /// Simulated time to generate: e.g. 90s, 30m, 24h, 7d.
    #[arg(long, value_name = "D", default_value = "1h")]
    duration: String,
    /// `max` (as fast as the target takes it) or a multiple of real time, e.g. 1 or 60.
    #[arg(long, value_name = "N|max", default_value = "max")]
    speed: String,
    /// Injected anomalies per entity per hour of simulated time; 0 gives clean data.
    #[arg(long, value_name = "R", default_value_t = 1.0)]
    anomaly_rate: f64,
    /// Write the ground truth here (JSON: entities and one label per injected anomaly).
    #[arg(long, value_name = "FILE")]
    labels: Option<PathBuf>,
    /// `stdout`, `file:PATH` (NDJSON; `{profile}` in PATH writes a file per profile),
    /// `http://HOST:PORT` (posts to a running teleguard's /api/ingest/{profile}), or
    /// `mqtt://HOST:PORT/TOPIC` / `mqtts://...` (QoS 1, waiting for the broker's PUBACKs;
    /// `{profile}` in TOPIC; default topic iot/telemetry), or `kafka://HOST:PORT[,HOST:PORT]/TOPIC`
    /// (keyed by entity id, acks=all; `{profile}` in TOPIC; by default each profile's
    /// reference topic, e.g. vehicle_telemetry_raw; missing topics are created).
    #[arg(long, value_name = "TARGET", default_value = "stdout")]
    to: String,
    /// mqtts://: the CA that signed the broker's certificate (PEM).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// mqtts:// with mutual TLS: the client certificate (PEM).
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// mqtts:// with mutual TLS: the client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// MQTT client id; it names the persistent session that survives a broker restart.
    #[arg(long, value_name = "ID", default_value = "teleguard-simulate")]
    client_id: String,
    /// MQTT: messages published but not yet acknowledged by the broker, at most.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    inflight: u16,
}

/// Simulated time generated per step when running flat out.
const MAX_SPEED_STEP_MS: i64 = 10_000;
/// Messages per HTTP request at most.
const HTTP_BATCH: usize = 2_000;

/// Parses `90s`, `30m`, `24h`, `7d` or plain seconds into milliseconds.
fn parse_duration(text: &str) -> anyhow::Result<i64> {
    let text = text.trim();
    let (number, unit_ms) = match text.char_indices().last() {
        Some((i, 's')) => (&text[..i], 1_000.0),
        Some((i, 'm')) => (&text[..i], 60_000.0),
        Some((i, 'h')) => (&text[..i], 3_600_000.0),
        Some((i, 'd')) => (&text[..i], 86_400_000.0),
        _ => (text, 1_000.0),
    };
    match number.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok((n * unit_ms) as i64),
        _ => bail!("--duration {text:?} is not a duration: write e.g. 90s, 30m, 24h or 7d"),
    }
}

/// Real-time multiple, or `None` for as fast as possible.
/// The simulated start when none is given: now for a live run (real time or slower), else
/// the duration before now, so that no event time lies in the future of its arrival (a
/// receiving teleguard rejects readings too far ahead of its clock, `pipeline.max_future_secs`).
fn default_start(now_ms: i64, duration_ms: i64, speed: Option<f64>) -> i64 {
    let now = now_ms / 1000 * 1000;
    match speed {
        Some(speed) if speed <= 1.0 => now,
        _ => now - duration_ms,
    }
}

fn parse_speed(text: &str) -> anyhow::Result<Option<f64>> {
    if text == "max" {
        return Ok(None);
    }
    match text.parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(Some(n)),
        _ => bail!("--speed {text:?}: use `max` or a positive multiple of real time, e.g. 1 or 60"),
    }
}

/// Where messages go.
enum Target {
    /// One NDJSON stream (standard output or one file).
    Stream(Box<dyn Write>),
    /// A file per profile, from a path with `{profile}` in it.
    PerProfile { pattern: String, files: BTreeMap<&'static str, BufWriter<File>> },
    /// A running teleguard: NDJSON bodies per profile, posted when full or at each step.
    Http { base: String, client: reqwest::Client, bodies: BTreeMap<&'static str, (Vec<u8>, usize)> },
    /// An MQTT broker: messages are published at each step, in order.
    Mqtt { publisher: Option<Publisher>, pending: Vec<(&'static str, Vec<u8>)> },
    /// Kafka brokers: messages are produced at each step, keyed by entity id.
    Kafka(Box<KafkaTarget>),
}

/// `--to kafka://...`: a producer and the topic of each profile.
struct KafkaTarget {
    config: KafkaConfig,
    producer: kafka::FutureProducer,
    /// A topic for every profile (`{profile}` in it), or each profile's reference topic.
    topic: Option<String>,
    topics: BTreeMap<&'static str, String>,
    profiles: ProfileRegistry,
    pending: Vec<(&'static str, Vec<u8>)>,
}

impl KafkaTarget {
    async fn connect(to: &str) -> anyhow::Result<KafkaTarget> {
        let rest = to.strip_prefix("kafka://").unwrap_or(to);
        let (brokers, topic) = match rest.split_once('/') {
            Some((brokers, topic)) if !topic.is_empty() => (brokers, Some(topic.to_string())),
            Some((brokers, _)) => (brokers, None),
            None => (rest, None),
        };
        let mut errors = Vec::new();
        let profiles = ProfileRegistry::with_builtins(BTreeMap::new()).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let raw = RawKafka { brokers: brokers.to_string(), ..RawKafka::default() };
        let Some(config) = KafkaConfig::validate(raw, Some(&profiles), &mut errors) else {
            bail!("--to {to:?}: {}", errors.join("; "));
        };
        if let Some(topic) = &topic
            && !kafka::config::valid_topic_name(&topic.replace("{profile}", "p"))
        {
            bail!("--to {to:?}: {topic:?} is not a Kafka topic name (letters, digits, '.', '_', '-')");
        }
        let producer = teleguard_pipeline::sinks::kafka::producer(&config)
            .with_context(|| format!("--to {to:?}: cannot make a Kafka producer"))?;
        Ok(KafkaTarget { config, producer, topic, topics: BTreeMap::new(), profiles, pending: Vec::new() })
    }

    async fn topic_of(&mut self, profile: &'static str) -> anyhow::Result<String> {
        if let Some(topic) = self.topics.get(profile) {
            return Ok(topic.clone());
        }
        let topic = match &self.topic {
            Some(pattern) => pattern.replace("{profile}", profile),
            None => self.config.topics.raw.get(profile).cloned().unwrap_or_else(|| format!("{profile}-telemetry")),
        };
        kafka::ensure_topics(&self.config, &[&topic]).await.map_err(anyhow::Error::msg)?;
        self.topics.insert(profile, topic.clone());
        Ok(topic)
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let mut keyed = Vec::with_capacity(pending.len());
        for (profile, payload) in pending {
            let topic = self.topic_of(profile).await?;
            let entity = self
                .profiles
                .by_name(profile)
                .and_then(|p| {
                    let json: serde_json::Value = serde_json::from_slice(&payload).ok()?;
                    json.get(&p.entity_field).and_then(|v| v.as_str()).map(str::to_string)
                })
                .unwrap_or_default();
            keyed.push((topic, entity, payload));
        }
        let messages =
            keyed.iter().map(|(topic, entity, payload)| (topic.as_str(), entity.as_str(), payload.clone(), None));
        teleguard_pipeline::sinks::kafka::produce_all(&self.producer, messages)
            .await
            .with_context(|| format!("cannot produce to Kafka at {}", self.config.brokers))?;
        Ok(())
    }
}

impl Target {
    async fn open(args: &SimulateArgs) -> anyhow::Result<Target> {
        let to = args.to.as_str();
        if to == "stdout" || to == "-" {
            return Ok(Target::Stream(Box::new(BufWriter::with_capacity(1 << 20, std::io::stdout()))));
        }
        if let Some(path) = to.strip_prefix("file:") {
            if path.contains("{profile}") {
                return Ok(Target::PerProfile { pattern: path.to_string(), files: BTreeMap::new() });
            }
            let file = File::create(path).with_context(|| format!("cannot create --to file {path:?}"))?;
            return Ok(Target::Stream(Box::new(BufWriter::with_capacity(1 << 20, file))));
        }
        if to.starts_with("http://") {
            return Ok(Target::Http {
                base: to.trim_end_matches('/').to_string(),
                client: reqwest::Client::new(),
                bodies: BTreeMap::new(),
            });
        }
        if to.starts_with("mqtt://") || to.starts_with("mqtts://") {
            let tls = TlsFiles { ca: args.ca.clone(), cert: args.cert.clone(), key: args.key.clone() };
            let publisher = Publisher::connect(to, &tls, &args.client_id, args.inflight)?;
            return Ok(Target::Mqtt { publisher: Some(publisher), pending: Vec::new() });
        }
        if to.starts_with("kafka://") {
            return Ok(Target::Kafka(Box::new(KafkaTarget::connect(to).await?)));
        }
        bail!(
            "--to {to:?} is not a target: use stdout, file:PATH, http://HOST:PORT, mqtt://HOST:PORT/TOPIC or \
             kafka://HOST:PORT/TOPIC"
        )
    }

    /// Posts every full (or, with `all`, every non-empty) HTTP body; writes are unbuffered otherwise.
    async fn flush(&mut self, all: bool) -> anyhow::Result<()> {
        match self {
            Target::Stream(out) if all => out.flush().context("cannot write the simulated readings"),
            Target::PerProfile { files, .. } if all => {
                for file in files.values_mut() {
                    file.flush().context("cannot write the simulated readings")?;
                }
                Ok(())
            }
            Target::Http { base, client, bodies } => {
                for (profile, (body, count)) in bodies.iter_mut() {
                    if *count == 0 || (!all && *count < HTTP_BATCH) {
                        continue;
                    }
                    // Requests of at most HTTP_BATCH lines each.
                    let body = std::mem::take(body);
                    let mut rest = &body[..];
                    while !rest.is_empty() {
                        let cut = rest
                            .iter()
                            .enumerate()
                            .filter(|(_, b)| **b == b'\n')
                            .nth(HTTP_BATCH - 1)
                            .map_or(rest.len(), |(i, _)| i + 1);
                        let lines = rest[..cut].iter().filter(|b| **b == b'\n').count();
                        post(client, base, profile, rest[..cut].to_vec(), lines).await?;
                        rest = &rest[cut..];
                    }
                    *count = 0;
                }
                Ok(())
            }
            Target::Mqtt { publisher: Some(publisher), pending } => {
                for (profile, payload) in pending.drain(..) {
                    publisher.publish(profile, payload).await?;
                }
                Ok(())
            }
            Target::Kafka(kafka) => kafka.flush().await,
            _ => Ok(()),
        }
    }

    /// Waits for the broker's acknowledgement of everything published (MQTT); their count.
    async fn finish(&mut self) -> anyhow::Result<Option<u64>> {
        match self {
            Target::Mqtt { publisher, .. } => match publisher.take() {
                Some(publisher) => Ok(Some(publisher.finish().await?)),
                None => Ok(None),
            },
            _ => Ok(None),
        }
    }
}

/// Posts one NDJSON body, waiting and retrying while the server is busy (503).
async fn post(client: &reqwest::Client, base: &str, profile: &str, body: Vec<u8>, count: usize) -> anyhow::Result<()> {
    let url = format!("{base}/api/ingest/{profile}");
    loop {
        let response = client
            .post(&url)
            .header("content-type", "application/x-ndjson")
            .body(body.clone())
            .send()
            .await
            .with_context(|| format!("cannot post {count} {profile} readings to {url}: is teleguard running there?"))?;
        let status = response.status();
        if status.as_u16() == 503 {
            let wait = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait.min(30))).await;
            continue;
        }
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            bail!(
                "{url} answered {status} to {count} {profile} readings: {}",
                text.chars().take(500).collect::<String>()
            );
        }
        return Ok(());
    }
}

/// Counts messages while handing them to the target; remembers the first write error.
struct Sink<'a> {
    target: &'a mut Target,
    written: u64,
    error: Option<std::io::Error>,
}

impl SimSink for Sink<'_> {
    fn accept(&mut self, profile: &'static str, _event_time_ms: i64, payload: &[u8]) {
        self.written += 1;
        let result = match &mut *self.target {
            Target::Stream(out) => out.write_all(payload).and_then(|()| out.write_all(b"\n")),
            Target::PerProfile { pattern, files } => {
                let file = match files.get_mut(profile) {
                    Some(file) => Ok(file),
                    None => File::create(pattern.replace("{profile}", profile))
                        .map(|f| files.entry(profile).or_insert(BufWriter::with_capacity(1 << 20, f))),
                };
                file.and_then(|out| out.write_all(payload).and_then(|()| out.write_all(b"\n")))
            }
            Target::Http { bodies, .. } => {
                let (body, count) = bodies.entry(profile).or_default();
                body.extend_from_slice(payload);
                body.push(b'\n');
                *count += 1;
                Ok(())
            }
            Target::Mqtt { pending, .. } => {
                pending.push((profile, payload.to_vec()));
                Ok(())
            }
            Target::Kafka(kafka) => {
                kafka.pending.push((profile, payload.to_vec()));
                Ok(())
            }
        };
        if let Err(e) = result
            && self.error.is_none()
        {
            self.error = Some(e);
        }
    }
}

pub async fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let profiles: Vec<String> = if args.profiles.iter().any(|p| p == "all") {
        SIMULATED_PROFILES.iter().map(|p| p.to_string()).collect()
    } else {
        args.profiles.clone()
    };
    let duration_ms = parse_duration(&args.duration)?;
    let speed = parse_speed(&args.speed)?;
    let start_ms = match &args.start {
        Some(text) => parse_timestamp(&Scalar::Str(text.as_str().into()), TimeFormat::Iso8601)
            .map_err(|e| anyhow::anyhow!("--start: {e}"))?,
        None => default_start(now_millis(), duration_ms, speed),
    };
    if !(0.0..=3600.0).contains(&args.anomaly_rate) {
        bail!("--anomaly-rate {} must lie in [0, 3600] (injected anomalies per entity per hour)", args.anomaly_rate);
    }
    if args.entities == Some(0) {
        bail!("--entities must be at least 1");
    }
    let settings = SimSettings {
        profiles,
        seed: args.seed,
        start_ms,
        anomaly_rate: args.anomaly_rate,
        fleet_scale: 1.0,
        entities: args.entities,
    };
    let mut simulator = Simulator::new(&settings).map_err(anyhow::Error::msg)?;
    let mut target = Target::open(&args).await?;
    let end_ms = start_ms + duration_ms;

    let progress = ProgressBar::new((duration_ms / 1000) as u64);
    progress.set_style(
        ProgressStyle::with_template("{spinner} simulated {pos}/{len} s [{wide_bar}] {msg} (eta {eta})")
            .expect("a valid progress template"),
    );
    let started = Instant::now();
    let mut written = 0;
    let mut simulated_to = start_ms;
    while simulated_to < end_ms {
        let step = match speed {
            None => MAX_SPEED_STEP_MS,
            Some(_) => 1_000,
        };
        let next = (simulated_to + step).min(end_ms);
        if let Some(speed) = speed {
            let due = Duration::from_secs_f64((next - start_ms) as f64 / 1000.0 / speed);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let mut sink = Sink { target: &mut target, written: 0, error: None };
        simulator.emit_until(next - 1, &mut sink);
        written += sink.written;
        if let Some(e) = sink.error {
            return Err(e).context(format!("cannot write the simulated readings to {}", args.to));
        }
        target.flush(speed.is_some()).await?;
        simulated_to = next;
        progress.set_position(((simulated_to - start_ms) / 1000) as u64);
        progress.set_message(format!("{written} readings"));
    }
    target.flush(true).await?;
    let acknowledged = target.finish().await?;
    simulator.finish();
    progress.finish_and_clear();
    let labels = simulator.take_labels();
    if let Some(path) = &args.labels {
        let text = simulator.label_set(&settings, end_ms, labels.clone()).to_json_pretty();
        std::fs::write(path, text + "\n").with_context(|| format!("cannot write --labels file {path:?}"))?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for label in &labels {
        *kinds.entry(label.kind.as_str()).or_default() += 1;
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    if let Some(acknowledged) = acknowledged {
        eprintln!("the broker acknowledged all {acknowledged} messages (QoS 1)");
    }
    eprintln!(
        "simulated {} of {} entities: {written} readings in {seconds:.2} s ({:.0} readings/s); {} anomalies injected{}",
        args.duration,
        simulator.entities().len(),
        written as f64 / seconds.max(1e-9),
        labels.len(),
        if kinds.is_empty() { String::new() } else { format!(": {}", kinds.join(", ")) },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_speeds_parse() {
        assert_eq!(parse_duration("90s").unwrap(), 90_000);
        assert_eq!(parse_duration("30m").unwrap(), 1_800_000);
        assert_eq!(parse_duration("24h").unwrap(), 86_400_000);
        assert_eq!(parse_duration("1.5d").unwrap(), 129_600_000);
        assert_eq!(parse_duration("45").unwrap(), 45_000);
        assert!(parse_duration("soon").unwrap_err().to_string().contains("e.g. 90s"));
        assert!(parse_duration("-5m").is_err());
        assert_eq!(parse_speed("max").unwrap(), None);
        assert_eq!(default_start(10_500, 4_000, Some(1.0)), 10_000, "a live run starts now");
        assert_eq!(default_start(10_500, 4_000, None), 6_000, "a fast one ends now");
        assert_eq!(default_start(10_500, 4_000, Some(60.0)), 6_000);
        assert_eq!(parse_speed("60").unwrap(), Some(60.0));
        assert!(parse_speed("0").is_err());
    }
}
