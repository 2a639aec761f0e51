//! `teleguard eval` on the NAB benchmark: its series read from `data/`, scored by NAB's rules,
//! and matched window by window for precision and recall. Each NAB file is one entity named
//! by its key (`realKnownCause/nyc_taxi.csv`); the rows per type are NAB's categories, each
//! counting only its own files' detections.

use super::report::{Evaluation, NabRow};
use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::{BTreeSet, HashMap};
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use teleguard_core::detect::isolation_forest::ModelRegistry;
use teleguard_core::detect::{DETECTOR_NAMES, DetectorSet};
use teleguard_core::eval::detections::Detection;
use teleguard_core::eval::labels::Label;
use teleguard_core::eval::matching::{TypeScore, evaluate_labels};
use teleguard_core::eval::nab::{self as nab_score, ScoredFile, ScoringProfile, Windows};
use teleguard_core::eval::series::{SERIES_PROFILE, detect_series, series_profile};
use teleguard_core::profile::ProfileRegistry;
use teleguard_core::time::format_millis;
use teleguard_pipeline::config::{Config, Overrides};

/// One NAB data file: its key (`realKnownCause/nyc_taxi.csv`) and rows (time in ms, value).
struct Series {
    key: String,
    rows: Vec<(i64, f64)>,
}

impl Series {
    fn category(&self) -> &str {
        self.key.split_once('/').map_or("nab", |(category, _)| category)
    }
}

/// Where `--nab` finds its configuration and writes its scores.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions<'a> {
    pub config: Option<&'a Path>,
    pub scores_out: Option<&'a Path>,
}

/// `teleguard eval --nab DIR`: runs `detector` over every NAB series, then scores it.
pub fn run_and_score(dir: &Path, detector: &str, grace_ms: i64, options: RunOptions<'_>) -> anyhow::Result<Evaluation> {
    if !DETECTOR_NAMES.contains(&detector) {
        bail!("unknown detector {detector:?}; known detectors: {}", DETECTOR_NAMES.join(", "));
    }
    let windows_path = dir.join("labels/combined_windows.json");
    let text = std::fs::read_to_string(&windows_path)
        .with_context(|| format!("cannot read {} (is {} NAB's folder?)", windows_path.display(), dir.display()))?;
    let windows =
        nab_score::parse_windows(&text).with_context(|| format!("NAB labels file {}", windows_path.display()))?;
    let series = read_all_series(dir, &windows)?;

    let config = Config::load(options.config, Overrides { simulate: Some("none".into()), ..Default::default() })?;
    let registry = match config.profiles.by_name(SERIES_PROFILE) {
        Some(_) => (*config.profiles).clone(),
        None => ProfileRegistry::with_builtins([(SERIES_PROFILE.to_string(), series_profile())].into())?,
    }
    .keeping_detectors(&[detector]);
    let profile = registry.by_name(SERIES_PROFILE).expect("the series profile was just added");

    let total_rows: usize = series.iter().map(|s| s.rows.len()).sum();
    let progress = ProgressBar::new(total_rows as u64);
    progress.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} rows {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let started = std::time::Instant::now();
    let mut detectors = DetectorSet::standard(Arc::new(ModelRegistry::default()));
    let mut detections = Vec::new();
    for file in &series {
        progress.set_message(file.key.clone());
        let scores = detect_series(profile, &mut detectors, &file.key, &file.rows, detector);
        for (&(time_ms, _), row) in file.rows.iter().zip(scores) {
            if row.score.is_some() {
                detections.push(Detection {
                    entity: file.key.clone(),
                    profile: None,
                    time_ms,
                    detector: detector.to_string(),
                    metric: None,
                    score: row.score,
                    threshold: row.threshold,
                    is_anomaly: row.is_anomaly,
                });
            }
        }
        progress.inc(file.rows.len() as u64);
    }
    progress.finish_and_clear();
    eprintln!(
        "{detector} over {} NAB series ({total_rows} rows) in {:.1} s",
        series.len(),
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = options.scores_out {
        write_scores(path, &detections)?;
    }
    let profiles = read_profiles(dir)?;
    evaluate_corpus(&windows, &series, &profiles, &detections, &[detector.to_string()], grace_ms)
}

/// `teleguard eval --labels combined_windows.json --anomalies FILE`: the data and scoring
/// profiles are read from NAB's folder, the one above the labels file's.
pub fn score_detections(
    labels_path: &Path,
    windows: Windows,
    detections: &[Detection],
    detector: Option<&str>,
    grace_ms: i64,
) -> anyhow::Result<Evaluation> {
    let dir = nab_dir_of(labels_path);
    let series = read_all_series(&dir, &windows)?;
    let profiles = read_profiles(&dir)?;
    let detectors: Vec<String> = match detector {
        Some(name) => vec![name.to_string()],
        None => detections.iter().map(|d| d.detector.clone()).collect::<BTreeSet<_>>().into_iter().collect(),
    };
    let chosen: Vec<Detection> = detections
        .iter()
        .filter(|d| detectors.contains(&d.detector))
        .map(|d| Detection { profile: None, ..d.clone() })
        .collect();
    warn_about_strays(&series, &chosen);
    evaluate_corpus(&windows, &series, &profiles, &chosen, &detectors, grace_ms)
}

/// `labels/combined_windows.json` → the folder holding `labels/`, `data/` and `config/`.
fn nab_dir_of(labels_path: &Path) -> PathBuf {
    match labels_path.parent().and_then(Path::parent) {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Precision and recall window by window, and NAB's score per detector and profile.
fn evaluate_corpus(
    windows: &Windows,
    series: &[Series],
    profiles: &[ScoringProfile],
    detections: &[Detection],
    detectors: &[String],
    grace_ms: i64,
) -> anyhow::Result<Evaluation> {
    let labels: Vec<Label> = series
        .iter()
        .flat_map(|file| {
            windows[&file.key].iter().map(|window| Label {
                kind: file.category().to_string(),
                profile: SERIES_PROFILE.to_string(),
                entity: file.key.clone(),
                start_ms: window.start_ms,
                end_ms: window.end_ms,
                detectors: detectors.to_vec(),
                metric: None,
            })
        })
        .collect();
    let hours_of = |file: &Series| match (file.rows.first(), file.rows.last()) {
        (Some(first), Some(last)) => (last.0 - first.0) as f64 / 3_600_000.0,
        _ => 0.0,
    };
    let entity_hours: f64 = series.iter().map(hours_of).sum();
    let mut matching = evaluate_labels(&labels, entity_hours, detections, grace_ms);
    // Per category, only that category's files count: a false alarm on a tweet series says
    // nothing about the precision on machine temperatures.
    let category_of: HashMap<&str, &str> = series.iter().map(|file| (file.key.as_str(), file.category())).collect();
    let categories: BTreeSet<&str> = series.iter().map(Series::category).collect();
    matching.by_type = categories
        .into_iter()
        .map(|category| {
            let in_category = |entity: &str| category_of.get(entity) == Some(&category);
            let labels: Vec<Label> = labels.iter().filter(|l| l.kind == category).cloned().collect();
            let detections: Vec<Detection> = detections.iter().filter(|d| in_category(&d.entity)).cloned().collect();
            let hours: f64 = series.iter().filter(|file| file.category() == category).map(hours_of).sum();
            let report = evaluate_labels(&labels, hours, &detections, grace_ms);
            TypeScore { kind: category.to_string(), ..report.overall }
        })
        .collect();

    let timestamps: Vec<Vec<i64>> = series.iter().map(|file| file.rows.iter().map(|r| r.0).collect()).collect();
    let mut nab = Vec::new();
    for detector in detectors {
        let scores = row_scores(series, detections, detector);
        let files: Vec<ScoredFile<'_>> = series
            .iter()
            .zip(&timestamps)
            .zip(&scores)
            .map(|((file, timestamps_ms), scores)| ScoredFile {
                name: &file.key,
                timestamps_ms,
                scores,
                windows: &windows[&file.key],
            })
            .collect();
        // The detector's own threshold, where it raises anomalies live, in the [0, 1] scores.
        let own_threshold = detections
            .iter()
            .find(|d| &d.detector == detector && d.threshold.is_some())
            .map(|d| nab_score::nab_score(detector, d.threshold, d.threshold));
        for profile in profiles {
            let score = nab_score::score_corpus(&files, &profile.costs, None).context("NAB labels")?;
            let at_own_threshold = own_threshold
                .map(|threshold| nab_score::score_corpus(&files, &profile.costs, Some(threshold)))
                .transpose()
                .context("NAB labels")?;
            nab.push(NabRow { detector: detector.clone(), profile: profile.name.clone(), score, at_own_threshold });
        }
    }
    Ok(Evaluation { matching, nab })
}

/// Every row's score in [0, 1] for one detector: the highest of its lines for that row
/// (mapped by [`nab_score::nab_score`]), 0 for rows without one.
fn row_scores(series: &[Series], detections: &[Detection], detector: &str) -> Vec<Vec<f64>> {
    let index: HashMap<&str, usize> = series.iter().enumerate().map(|(i, file)| (file.key.as_str(), i)).collect();
    let rows: Vec<HashMap<i64, usize>> =
        series.iter().map(|file| file.rows.iter().enumerate().map(|(row, r)| (r.0, row)).collect()).collect();
    let mut scores: Vec<Vec<f64>> = series.iter().map(|file| vec![0.0; file.rows.len()]).collect();
    for detection in detections.iter().filter(|d| d.detector == detector) {
        let Some(&file) = index.get(detection.entity.as_str()) else { continue };
        let Some(&row) = rows[file].get(&detection.time_ms) else { continue };
        let score = nab_score::nab_score(detector, detection.score, detection.threshold);
        scores[file][row] = scores[file][row].max(score);
    }
    scores
}

/// Says on stderr how many detections name no NAB file or no row of one: they count as false
/// alarms for precision and nothing for NAB's score.
fn warn_about_strays(series: &[Series], detections: &[Detection]) {
    let rows: HashMap<&str, BTreeSet<i64>> =
        series.iter().map(|file| (file.key.as_str(), file.rows.iter().map(|r| r.0).collect())).collect();
    let mut unknown_entity: Option<(usize, &str)> = None;
    let mut unknown_time: Option<(usize, &Detection)> = None;
    for detection in detections {
        match rows.get(detection.entity.as_str()) {
            None => unknown_entity = Some((unknown_entity.map_or(0, |(n, _)| n) + 1, &detection.entity)),
            Some(times) if !times.contains(&detection.time_ms) => {
                unknown_time = Some((unknown_time.map_or(0, |(n, _)| n) + 1, detection));
            }
            Some(_) => {}
        }
    }
    if let Some((count, example)) = unknown_entity {
        eprintln!(
            "warning: {count} lines name an entity that is not a NAB data file (e.g. {example:?}); \
             entities must be file keys such as realKnownCause/nyc_taxi.csv"
        );
    }
    if let Some((count, example)) = unknown_time {
        eprintln!(
            "warning: {count} lines have a timestamp that is no row of their file (e.g. {} in {})",
            format_millis(example.time_ms),
            example.entity
        );
    }
}

/// Every series named in the windows file, in key order.
fn read_all_series(dir: &Path, windows: &Windows) -> anyhow::Result<Vec<Series>> {
    windows.keys().map(|key| read_series(&dir.join("data").join(key), key)).collect()
}

fn read_series(path: &Path, key: &str) -> anyhow::Result<Series> {
    let file = std::fs::File::open(path).with_context(|| {
        format!("cannot open NAB data file {} (for labels key {key}; expected data/ beside labels/)", path.display())
    })?;
    let mut reader = csv::Reader::from_reader(file);
    let headers = reader.headers().with_context(|| format!("{}: no header row", path.display()))?.clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim() == name)
            .with_context(|| format!("{}: no `{name}` column (NAB data files have `timestamp,value`)", path.display()))
    };
    let (time_column, value_column) = (column("timestamp")?, column("value")?);
    let mut rows = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let line = index + 2;
        let record = record.with_context(|| format!("{}: line {line}", path.display()))?;
        let cell = |column: usize| record.get(column).unwrap_or("").trim();
        let time_ms = teleguard_core::time::parse_iso8601(cell(time_column))
            .map_err(|e| anyhow::anyhow!("{}: line {line}: timestamp: {e}", path.display()))?;
        let value = cell(value_column).parse::<f64>().ok().filter(|v| v.is_finite()).with_context(|| {
            format!("{}: line {line}: value {:?} is not a finite number", path.display(), cell(value_column))
        })?;
        rows.push((time_ms, value));
    }
    Ok(Series { key: key.to_string(), rows })
}

fn read_profiles(dir: &Path) -> anyhow::Result<Vec<ScoringProfile>> {
    let path = dir.join("config/profiles.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("cannot read NAB scoring profiles {} (expected config/ beside labels/)", path.display())
    })?;
    nab_score::parse_profiles(&text).with_context(|| format!("NAB scoring profiles {}", path.display()))
}

/// The detector's score for every row, as `teleguard replay --all-scores` writes them.
fn write_scores(path: &Path, detections: &[Detection]) -> anyhow::Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = BufWriter::new(file);
    for d in detections {
        let nab = nab_score::nab_score(&d.detector, d.score, d.threshold);
        let line = serde_json::json!({"entity": d.entity, "timestamp": format_millis(d.time_ms), "detector": d.detector,
                                      "score": d.score, "threshold": d.threshold, "is_anomaly": d.is_anomaly,
                                      "nab_score": nab});
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush().with_context(|| format!("cannot write {}", path.display()))
}
