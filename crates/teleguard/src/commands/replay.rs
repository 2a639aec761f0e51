//! `teleguard replay`: the configured detectors over a CSV or NDJSON file, in event-time
//! order, as fast as the machine allows; NDJSON findings out.

use anyhow::{Context as _, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use teleguard_core::detect::isolation_forest::ModelRegistry;
use teleguard_core::detect::{DetectorSet, Findings, Observation};
use teleguard_core::enrich::{Enricher, parse_drivers};
use teleguard_core::geo::GeofenceIndex;
use teleguard_core::model::Reading;
use teleguard_core::time::format_millis;
use teleguard_core::validate::validate;
use teleguard_pipeline::config::{Config, Overrides};

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// CSV (header row: timestamp plus the profile's fields) or NDJSON file.
    file: PathBuf,
    /// The profile the file's readings speak.
    #[arg(long)]
    profile: String,
    /// TOML config file with profiles, detector settings and reference data.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// One line per reading and detector (in input order), not only anomalies.
    #[arg(long)]
    all_scores: bool,
    /// Where to write the NDJSON; standard output by default.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
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

    let messages = read_messages(&args.file)?;
    let mut readings: Vec<(usize, Reading)> = Vec::with_capacity(messages.len());
    let mut rejected = 0;
    for (index, message) in messages.iter().enumerate() {
        match validate(&profile, message) {
            Ok(reading) => readings.push((index, reading)),
            Err(rejection) => {
                rejected += 1;
                if rejected <= 5 {
                    eprintln!("record {}: {rejection}", index + 1);
                }
            }
        }
    }
    if rejected > 0 {
        eprintln!("{rejected} of {} records rejected; replaying the other {}", messages.len(), readings.len());
    }
    readings.sort_by_key(|(_, reading)| reading.event_time_ms);

    let progress = ProgressBar::new(readings.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} readings ({per_sec})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let mut detectors = DetectorSet::standard(Arc::new(ModelRegistry::default()));
    let mut findings = if args.all_scores { Findings::keeping_scores() } else { Findings::default() };
    let mut lines: Vec<(usize, Value)> = Vec::new();
    let mut anomalies = 0;
    for (done, (index, reading)) in readings.iter().enumerate() {
        findings.clear();
        let enrichment = enricher.enrich(&profile, reading);
        detectors.observe(Observation { profile: &profile, reading, enrichment: &enrichment }, &mut findings);
        let common = |detector: &str| json!({"entity": &*reading.entity, "timestamp": format_millis(reading.event_time_ms), "detector": detector});
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
                    line["episode_start"] = json!(format_millis(episode.start_ms));
                    line["episode_end"] = json!(episode.end_ms.map(format_millis));
                }
                lines.push((*index, line));
            }
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
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => {
            Box::new(std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::new(&mut out);
    for (_, line) in &lines {
        serde_json::to_writer(&mut out, line)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    eprintln!("{} readings replayed, {anomalies} anomalies", readings.len());
    Ok(())
}

/// The file's records as JSON messages: NDJSON lines as they are, CSV rows as objects.
fn read_messages(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let is_csv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    if !is_csv {
        let mut messages = Vec::new();
        for line in BufReader::new(file).lines() {
            let line = line.with_context(|| format!("cannot read {}", path.display()))?;
            if !line.trim().is_empty() {
                messages.push(line.into_bytes());
            }
        }
        return Ok(messages);
    }
    let mut reader = csv::Reader::from_reader(file);
    let headers = reader.headers().with_context(|| format!("{}: no header row", path.display()))?.clone();
    let mut messages = Vec::new();
    for (row, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("{}: row {}", path.display(), row + 2))?;
        let object: serde_json::Map<String, Value> = headers
            .iter()
            .zip(record.iter())
            .filter(|(_, cell)| !cell.trim().is_empty())
            .map(|(name, cell)| {
                let cell = cell.trim();
                let value = match cell.parse::<f64>() {
                    Ok(x) if x.is_finite() => json!(x),
                    _ => json!(cell),
                };
                (name.to_string(), value)
            })
            .collect();
        messages.push(serde_json::to_vec(&object)?);
    }
    Ok(messages)
}
