//! `teleguard replay`: the configured detectors over CSV or NDJSON files (or folders of them),
//! each file in event-time order with detectors of its own, as fast as the machine allows;
//! NDJSON findings out, with each reading's timestamp as precise as it came. Isolation forests
//! are trained on the head of each file, or taken from `--models` (`teleguard train`).
//! A file has no arrival times, so its order stands for the order each device's readings
//! arrived in (`input::read_file`): a clock that jumped back shows as the step back it was.

use super::input::{expand, read_file};
use anyhow::{Context as _, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use teleguard_core::detect::isolation_forest::ModelRegistry;
use teleguard_core::detect::{DetectorSet, Findings, Observation};
use teleguard_core::enrich::{Enricher, parse_drivers};
use teleguard_core::geo::GeofenceIndex;
use teleguard_core::time::format_millis;
use teleguard_pipeline::config::{Config, Overrides};
use teleguard_pipeline::models::{self, Models};

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// CSV (header row: timestamp plus the profile's fields) or NDJSON files, or folders of
    /// them (their .csv, .ndjson, .jsonl and .json files, by name). Each file is replayed with
    /// detectors of its own (a series judged by what it showed, not by another file).
    #[arg(required = true, value_name = "FILE|DIR")]
    files: Vec<PathBuf>,
    /// The profile the file's readings speak.
    #[arg(long)]
    profile: String,
    /// TOML config file with profiles, detector settings and reference data.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// One line per reading and detector (in input order), and one per reading with the
    /// combined verdict (`"detector": "any"`, `is_anomaly`, `detectors` that flagged it).
    #[arg(long)]
    all_scores: bool,
    /// Where to write the NDJSON; standard output by default.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Isolation forests trained ahead of time, used from the first reading instead of a
    /// forest trained on each file's head: a folder `teleguard train --models` wrote (its
    /// `<profile>.model.json`), one model file, or a `teleguard run` data folder (the models
    /// its store holds). Models trained under other settings than the config's are refused.
    #[arg(long, value_name = "DIR|FILE|STORE")]
    models: Option<PathBuf>,
}

pub fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let config =
        Config::load(args.config.as_deref(), Overrides { simulate: Some("none".into()), ..Default::default() })?;
    let Some(profile) = config.profiles.by_name(&args.profile).cloned() else {
        bail!("unknown profile {:?}; known profiles: {}", args.profile, config.profiles.names().join(", "));
    };
    let drivers = parse_drivers(&config.drivers_json).context("drivers reference data")?;
    let geofences = GeofenceIndex::from_geojson(&config.geofences_geojson).context("geofences reference data")?;
    let enricher = Enricher::new(&drivers, geofences);

    let trained = match &args.models {
        Some(path) => {
            let trained = models::load_for_profile(path, &profile)
                .with_context(|| format!("cannot use the models at {}", path.display()))?;
            let scopes: Vec<String> = trained.iter().map(|(key, _)| key.label()).collect();
            eprintln!("using the stored isolation forest of {} from {}", scopes.join(", "), path.display());
            trained
        }
        None => Vec::new(),
    };
    let files = expand(&args.files)?;
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => {
            Box::new(std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::new(&mut out);
    let mut totals = Summary::default();
    for file in &files {
        let name = (files.len() > 1).then(|| file.display().to_string());
        let summary = replay_file(&args, &profile, &enricher, &trained, file, name.as_deref(), &mut out)?;
        if files.len() > 1 {
            eprintln!("{}: {}", file.display(), summary.describe());
        }
        totals.add(&summary);
    }
    out.flush()?;
    eprintln!("{}", totals.describe());
    Ok(())
}

/// What a replay found: readings, readings flagged by any detector, and anomalies.
#[derive(Debug, Default)]
struct Summary {
    readings: usize,
    flagged: usize,
    anomalies: usize,
    by_detector: std::collections::BTreeMap<&'static str, usize>,
}

impl Summary {
    fn add(&mut self, other: &Summary) {
        self.readings += other.readings;
        self.flagged += other.flagged;
        self.anomalies += other.anomalies;
        for (detector, count) in &other.by_detector {
            *self.by_detector.entry(detector).or_default() += count;
        }
    }

    fn describe(&self) -> String {
        let detectors: Vec<String> = self.by_detector.iter().map(|(d, n)| format!("{d} {n}")).collect();
        let share = if self.readings > 0 { 100.0 * self.flagged as f64 / self.readings as f64 } else { 0.0 };
        format!(
            "{} readings replayed, {} flagged ({share:.2} %), {} anomalies{}",
            self.readings,
            self.flagged,
            self.anomalies,
            if detectors.is_empty() { String::new() } else { format!(" ({})", detectors.join(", ")) }
        )
    }
}

/// Replays one file with detectors of its own, writing its lines to `out`.
fn replay_file(
    args: &ReplayArgs,
    profile: &teleguard_core::profile::Profile,
    enricher: &Enricher,
    trained: &Models,
    file: &Path,
    name: Option<&str>,
    out: &mut impl Write,
) -> anyhow::Result<Summary> {
    let readings = read_file(profile, file)?.records;
    let progress = ProgressBar::new(readings.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} readings ({per_sec})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let registry = ModelRegistry::default();
    for (key, model) in trained {
        registry.install(key.clone(), model.clone());
    }
    let mut detectors = DetectorSet::standard(Arc::new(registry));
    // Where each episode opened, as precise as the reading that opened it.
    let mut opened_at: HashMap<String, String> = HashMap::new();
    let mut findings = if args.all_scores { Findings::keeping_scores() } else { Findings::default() };
    let mut lines: Vec<(usize, Value)> = Vec::new();
    let mut anomalies = 0;
    let mut summary = Summary::default();
    for (done, record) in readings.iter().enumerate() {
        let (index, reading) = (&record.index, &record.reading);
        findings.clear();
        let enrichment = enricher.enrich(profile, reading);
        detectors.observe(Observation { profile, reading, enrichment: &enrichment, arrival_ms: None }, &mut findings);
        // Formatted only for readings that get a line (most get none without --all-scores).
        let timestamp = || record.time.format();
        let common =
            |detector: &str| json!({"entity": &*reading.entity, "timestamp": timestamp(), "detector": detector});
        if args.all_scores {
            for score in &findings.scores {
                let mut line = common(score.detector);
                line["record"] = json!(index + 1);
                line["metric"] = json!(score.metric.as_deref());
                line["score"] = json!(score.score);
                line["threshold"] = json!(score.threshold);
                line["is_anomaly"] = json!(score.is_anomaly);
                lines.push((*index, line));
            }
        } else {
            for anomaly in &findings.anomalies {
                let mut line = common(anomaly.detector);
                line["record"] = json!(index + 1);
                line["id"] = json!(anomaly.id);
                line["metric"] = json!(anomaly.metric.as_deref());
                line["score"] = json!(anomaly.score);
                line["threshold"] = json!(anomaly.threshold);
                line["is_anomaly"] = json!(true);
                line["severity"] = json!(anomaly.severity);
                line["reason"] = json!(anomaly.reason);
                if let Some(episode) = anomaly.episode {
                    // An episode's ends are readings: written as precisely as those were when
                    // this replay saw them (this reading, or the one that opened the episode).
                    let this_reading = |ms: i64| (ms == reading.event_time_ms).then(timestamp);
                    let start = opened_at
                        .get(&anomaly.id)
                        .cloned()
                        .or_else(|| this_reading(episode.start_ms))
                        .unwrap_or_else(|| format_millis(episode.start_ms));
                    let end = episode.end_ms.map(|ms| this_reading(ms).unwrap_or_else(|| format_millis(ms)));
                    match end {
                        None => opened_at.insert(anomaly.id.clone(), start.clone()),
                        Some(_) => opened_at.remove(&anomaly.id),
                    };
                    line["episode_start"] = json!(start);
                    line["episode_end"] = json!(end);
                }
                lines.push((*index, line));
            }
        }
        // The reading's combined verdict: did any detector flag it, and which.
        let mut flagged_by: Vec<&'static str> = if args.all_scores {
            findings.scores.iter().filter(|s| s.is_anomaly).map(|s| s.detector).collect()
        } else {
            findings.anomalies.iter().map(|a| a.detector).collect()
        };
        flagged_by.sort_unstable();
        flagged_by.dedup();
        if !flagged_by.is_empty() {
            summary.flagged += 1;
            for detector in &flagged_by {
                *summary.by_detector.entry(detector).or_default() += 1;
            }
        }
        if args.all_scores {
            let mut line = common("any");
            line["record"] = json!(index + 1);
            line["is_anomaly"] = json!(!flagged_by.is_empty());
            line["detectors"] = json!(flagged_by);
            lines.push((*index, line));
        }
        anomalies += findings.anomalies.len();
        if done % 4096 == 0 {
            progress.set_position(done as u64);
        }
    }
    progress.finish_and_clear();
    if args.all_scores {
        lines.sort_by_key(|(index, _)| *index);
    }
    for (_, line) in &mut lines {
        if let Some(name) = name {
            line["file"] = json!(name);
        }
        serde_json::to_writer(&mut *out, line)?;
        out.write_all(b"\n")?;
    }
    summary.readings = readings.len();
    summary.anomalies = anomalies;
    Ok(summary)
}
