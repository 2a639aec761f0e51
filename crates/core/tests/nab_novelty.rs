//! Sequence novelty over the whole Numenta Anomaly Benchmark at its default settings: its NAB
//! standard score at its own threshold (the one it raises anomalies at live) must stay at the
//! figure the example config states, less a small margin. Deterministic: no timing, no seeds.
//!
//! Reads the dataset from `TELEGUARD_NAB_DIR`, by default `../shared/datasets/nab` beside the
//! repository. `TELEGUARD_NOVELTY_SETTINGS` (TOML inline-table keys, e.g. `rest_readings =
//! 100`) puts settings on top of the defaults, to measure a change without a rebuild; the
//! assertion then does not apply.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use teleguard_core::detect::DetectorSet;
use teleguard_core::detect::isolation_forest::ModelRegistry;
use teleguard_core::eval::nab::{self, ScoredFile};
use teleguard_core::eval::series::{SERIES_PROFILE, detect_series, series_profile};
use teleguard_core::profile::{ProfileRegistry, RawProfile};

/// The NAB standard score the defaults reach at their own threshold (as in
/// `config/teleguard.example.toml`), and how far below it a change may fall.
const STANDARD_AT_OWN_THRESHOLD: f64 = 70.2;
const MARGIN: f64 = 0.5;

fn dataset_dir() -> PathBuf {
    std::env::var_os("TELEGUARD_NAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets/nab"))
}

/// The rows of a NAB data file: (timestamp in ms, value).
fn read_rows(path: &Path) -> Vec<(i64, f64)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .skip(1)
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (time, value) = line.split_once(',').unwrap_or_else(|| panic!("{}: {line:?}", path.display()));
            (teleguard_core::time::parse_iso8601(time).unwrap(), value.trim().parse().unwrap())
        })
        .collect()
}

fn series_registry(extra: Option<&str>) -> ProfileRegistry {
    let mut raw: RawProfile = series_profile();
    if let Some(extra) = extra {
        let text = format!(
            "entity_field = \"series\"\nmetrics = [{{ field = \"value\" }}]\ndetectors.novelty = {{ {extra} }}\n"
        );
        raw = toml::from_str(&text).unwrap_or_else(|e| panic!("TELEGUARD_NOVELTY_SETTINGS {extra:?}: {e}"));
    }
    ProfileRegistry::with_builtins(BTreeMap::from([(SERIES_PROFILE.to_string(), raw)])).unwrap()
}

#[test]
fn novelty_at_its_default_settings_keeps_its_nab_score() {
    let dataset = dataset_dir();
    let read = |name: &str| {
        std::fs::read_to_string(dataset.join(name)).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (set TELEGUARD_NAB_DIR to a copy of NAB's data, labels and config)",
                dataset.join(name).display()
            )
        })
    };
    let windows = nab::parse_windows(&read("labels/combined_windows.json")).unwrap();
    let profiles = nab::parse_profiles(&read("config/profiles.json")).unwrap();
    let extra = std::env::var("TELEGUARD_NOVELTY_SETTINGS").ok();
    let registry = series_registry(extra.as_deref());
    let profile = registry.by_name(SERIES_PROFILE).unwrap();
    let threshold = profile.detectors.novelty.as_ref().expect("novelty is on in the series profile").threshold;

    let mut files = Vec::new();
    for key in windows.keys() {
        let rows = read_rows(&dataset.join("data").join(key));
        let mut detectors = DetectorSet::standard(Arc::new(ModelRegistry::default()));
        let scores: Vec<f64> = detect_series(profile, &mut detectors, key, &rows, "novelty")
            .iter()
            .map(|s| nab::nab_score("novelty", s.score, s.threshold))
            .collect();
        let timestamps: Vec<i64> = rows.iter().map(|r| r.0).collect();
        files.push((key.clone(), timestamps, scores));
    }
    let scored: Vec<ScoredFile<'_>> = files
        .iter()
        .map(|(key, timestamps_ms, scores)| ScoredFile { name: key, timestamps_ms, scores, windows: &windows[key] })
        .collect();
    let mut standard = None;
    for profile in &profiles {
        let own = nab::score_corpus(&scored, &profile.costs, Some(threshold)).unwrap();
        let best = nab::score_corpus(&scored, &profile.costs, None).unwrap();
        println!(
            "{:<22} own threshold {threshold}: {:6.2} ({} of {} windows, {} false rows)   best {:.3}: {:6.2}",
            profile.name,
            own.score.unwrap(),
            own.detected_windows,
            own.windows,
            own.false_positive_rows,
            best.threshold,
            best.score.unwrap()
        );
        if profile.name == nab::STANDARD_PROFILE {
            standard = own.score;
        }
    }
    if std::env::var_os("TELEGUARD_NAB_PER_FILE").is_some() {
        for file in &scored {
            let own = nab::score_corpus(std::slice::from_ref(file), &profiles[0].costs, Some(threshold)).unwrap();
            println!(
                "{:<60} {}/{} windows, {} false rows, raw {:.2}",
                file.name, own.detected_windows, own.windows, own.false_positive_rows, own.raw_score
            );
        }
    }
    if let Some(dir) = std::env::var_os("TELEGUARD_NAB_DUMP") {
        let mut text = String::from("file,time_ms,score\n");
        for (key, timestamps, scores) in &files {
            for (t, s) in timestamps.iter().zip(scores) {
                text.push_str(&format!("{key},{t},{s}\n"));
            }
        }
        std::fs::write(PathBuf::from(dir).join("scores.csv"), text).unwrap();
    }
    let standard = standard.expect("NAB has a standard profile");
    if extra.is_none() {
        assert!(
            standard >= STANDARD_AT_OWN_THRESHOLD - MARGIN,
            "NAB standard {standard:.2} at the default settings, below {STANDARD_AT_OWN_THRESHOLD} - {MARGIN}"
        );
    }
}
