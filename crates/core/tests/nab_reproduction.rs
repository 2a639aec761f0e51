//! Our NAB scorer against NAB's published results: NAB's repository keeps every published
//! detector's per-row scores (`results/<detector>/<category>/<detector>_<name>.csv`) and the
//! final scores (`results/final_results.json`); scoring the former at the thresholds NAB used
//! (`config/thresholds.json`) must give the latter. Our own threshold optimiser must find a
//! score at least as good (NAB's thresholds file predates some of its results files).
//!
//! Ignored by default: it needs NAB's `results/` folder and thresholds, which we do not ship.
//! Run with `TELEGUARD_NAB_RESULTS=/path/to/NAB/results TELEGUARD_NAB_THRESHOLDS=/path/to/NAB/config/thresholds.json cargo test -p teleguard-core --test
//! nab_reproduction -- --ignored --nocapture` (the dataset is read from
//! `TELEGUARD_NAB_DIR`, by default `../shared/datasets/nab` beside the repository).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use teleguard_core::eval::nab::{self, ScoredFile};

fn dataset_dir() -> PathBuf {
    std::env::var_os("TELEGUARD_NAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets/nab"))
}

/// The `column`th field of every data row of a CSV file with a header row and no quoting.
fn column(path: &Path, column: usize) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|line| line.split(',').nth(column).unwrap().to_string())
        .collect()
}

#[test]
#[ignore = "needs NAB's results folder in TELEGUARD_NAB_RESULTS"]
fn published_detectors_score_as_nab_published() {
    let results = PathBuf::from(std::env::var_os("TELEGUARD_NAB_RESULTS").expect("set TELEGUARD_NAB_RESULTS"));
    let dataset = dataset_dir();
    let windows =
        nab::parse_windows(&std::fs::read_to_string(dataset.join("labels/combined_windows.json")).unwrap()).unwrap();
    let profiles =
        nab::parse_profiles(&std::fs::read_to_string(dataset.join("config/profiles.json")).unwrap()).unwrap();
    let published: BTreeMap<String, BTreeMap<String, f64>> =
        serde_json::from_str(&std::fs::read_to_string(results.join("final_results.json")).unwrap()).unwrap();
    let thresholds_path = std::env::var_os("TELEGUARD_NAB_THRESHOLDS").expect("set TELEGUARD_NAB_THRESHOLDS");
    let nab_thresholds: BTreeMap<String, BTreeMap<String, serde_json::Value>> =
        serde_json::from_str(&std::fs::read_to_string(thresholds_path).unwrap()).unwrap();
    let timestamps: BTreeMap<&str, Vec<i64>> = windows
        .keys()
        .map(|key| {
            let rows = column(&dataset.join("data").join(key), 0);
            (key.as_str(), rows.iter().map(|t| teleguard_core::time::parse_iso8601(t).unwrap()).collect())
        })
        .collect();
    let only: Option<Vec<String>> =
        std::env::var("TELEGUARD_NAB_DETECTORS").ok().map(|list| list.split(',').map(String::from).collect());
    let mut worst = 0.0_f64;
    let mut optimiser_shortfall = 0.0_f64;
    for (detector, expected) in &published {
        if only.as_ref().is_some_and(|only| !only.contains(detector)) || !results.join(detector).is_dir() {
            continue;
        }
        let scores: BTreeMap<&str, Vec<f64>> = windows
            .keys()
            .map(|key| {
                let (category, name) = key.split_once('/').unwrap();
                let path = results.join(detector).join(category).join(format!("{detector}_{name}"));
                (key.as_str(), column(&path, 2).iter().map(|s| s.parse().unwrap()).collect())
            })
            .collect();
        let files: Vec<ScoredFile<'_>> = windows
            .iter()
            .map(|(key, file_windows)| ScoredFile {
                name: key,
                timestamps_ms: &timestamps[key.as_str()],
                scores: &scores[key.as_str()],
                windows: file_windows,
            })
            .collect();
        for profile in &profiles {
            let theirs = expected[&profile.name];
            let nab_threshold = nab_thresholds[detector][&profile.name]["threshold"].as_f64().unwrap();
            let at_nab_threshold = nab::score_corpus(&files, &profile.costs, Some(nab_threshold)).unwrap();
            let optimised = nab::score_corpus(&files, &profile.costs, None).unwrap();
            let difference = at_nab_threshold.score.unwrap() - theirs;
            worst = worst.max(difference.abs());
            optimiser_shortfall = optimiser_shortfall.max(theirs - optimised.score.unwrap());
            println!(
                "{detector:>18} {:>18}: NAB {theirs:7.3}, ours at NAB's threshold {:.6}: {:7.3} ({difference:+.1e}); ours optimised: {:7.3} at {:.6}",
                profile.name,
                nab_threshold,
                at_nab_threshold.score.unwrap(),
                optimised.score.unwrap(),
                optimised.threshold,
            );
        }
    }
    assert!(worst < 0.1, "largest difference from NAB's published scores: {worst}");
    assert!(optimiser_shortfall < 1e-9, "our optimiser found a worse threshold than NAB's: {optimiser_shortfall}");
}
