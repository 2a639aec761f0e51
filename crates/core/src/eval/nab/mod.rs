//! The Numenta Anomaly Benchmark (NAB): its label windows, its scoring profiles, and its
//! score, computed the way NAB's own scorer computes it (see [`sweep`]).
//!
//! NAB's files, as in `shared/datasets/nab/`:
//! - `labels/combined_windows.json`: data file (`realKnownCause/nyc_taxi.csv`) → list of
//!   `[start, end]` windows, timestamps `YYYY-MM-DD HH:MM:SS.ffffff` that are row timestamps of
//!   the data file;
//! - `config/profiles.json`: profile name → `{"CostMatrix": {"tpWeight", "fpWeight",
//!   "fnWeight", "tnWeight"}}`.

pub mod sweep;

pub use sweep::{NabScore, ScoredFile, score_corpus};

use serde::Deserialize;
use std::collections::BTreeMap;

/// One anomaly window of a NAB data file; both ends are row timestamps and inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_ms: i64,
    pub end_ms: i64,
}

/// The label windows of every data file, by file key (`<category>/<name>.csv`).
pub type Windows = BTreeMap<String, Vec<Window>>;

/// What a scoring profile charges and rewards.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CostMatrix {
    pub tp_weight: f64,
    pub fp_weight: f64,
    pub fn_weight: f64,
    /// Read for completeness; NAB's score does not use it.
    #[serde(default)]
    pub tn_weight: f64,
}

/// A named NAB scoring profile, e.g. `standard`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoringProfile {
    pub name: String,
    pub costs: CostMatrix,
}

/// The name of NAB's headline profile.
pub const STANDARD_PROFILE: &str = "standard";

/// Why NAB labels, profiles or scores cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NabError {
    #[error("line {line}, column {column}: {message}")]
    Syntax { line: usize, column: usize, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

impl NabError {
    fn invalid(key: &str, message: impl Into<String>) -> Self {
        NabError::Invalid { key: key.to_string(), message: message.into() }
    }
}

fn syntax(error: serde_json::Error) -> NabError {
    let text = error.to_string();
    let message = text.rfind(" at line ").map_or(text.as_str(), |cut| &text[..cut]).to_string();
    NabError::Syntax { line: error.line(), column: error.column(), message }
}

/// Reads `config/profiles.json`: the standard profile first, then the others by name.
pub fn parse_profiles(text: &str) -> Result<Vec<ScoringProfile>, NabError> {
    #[derive(Deserialize)]
    struct RawProfile {
        #[serde(rename = "CostMatrix")]
        cost_matrix: CostMatrix,
    }
    let raw: BTreeMap<String, RawProfile> = serde_json::from_str(text).map_err(syntax)?;
    let mut profiles: Vec<ScoringProfile> =
        raw.into_iter().map(|(name, profile)| ScoringProfile { name, costs: profile.cost_matrix }).collect();
    for profile in &profiles {
        let c = profile.costs;
        if ![c.tp_weight, c.fp_weight, c.fn_weight].iter().all(|w| w.is_finite() && *w >= 0.0) || c.tp_weight == 0.0 {
            return Err(NabError::invalid(&profile.name, "weights must be finite and not negative, tpWeight above 0"));
        }
    }
    profiles.sort_by_key(|p| (p.name != STANDARD_PROFILE, p.name.clone()));
    Ok(profiles)
}

/// Reads `labels/combined_windows.json`.
pub fn parse_windows(text: &str) -> Result<Windows, NabError> {
    let raw: BTreeMap<String, Vec<(String, String)>> = serde_json::from_str(text).map_err(syntax)?;
    let mut windows = Windows::new();
    for (key, pairs) in raw {
        let mut file_windows = Vec::with_capacity(pairs.len());
        for (index, (start, end)) in pairs.iter().enumerate() {
            let at = |text: &str| {
                crate::time::parse_iso8601(text)
                    .map_err(|e| NabError::invalid(&key, format!("window {}: {e}", index + 1)))
            };
            let window = Window { start_ms: at(start)?, end_ms: at(end)? };
            if window.end_ms < window.start_ms {
                return Err(NabError::invalid(
                    &key,
                    format!("window {}: end {end} is before start {start}", index + 1),
                ));
            }
            file_windows.push(window);
        }
        windows.insert(key, file_windows);
    }
    Ok(windows)
}

/// Whether a JSON document looks like NAB windows: an object whose every value is a list.
pub fn looks_like_windows(document: &serde_json::Value) -> bool {
    document.as_object().is_some_and(|object| object.values().all(serde_json::Value::is_array))
}

/// A detector score mapped into NAB's [0, 1]: `score / (score + threshold)`. Strictly
/// increasing, so it keeps the order NAB's threshold sweep works on; 0 stays 0, the detector's
/// own threshold becomes 0.5, and unbounded scores such as the z-score's |z| approach 1
/// without reaching it. Negative or missing scores count as 0; a threshold that is missing
/// or not above 0 counts as 1.
pub fn unit_score(score: Option<f64>, threshold: Option<f64>) -> f64 {
    let score = score.filter(|s| s.is_finite() && *s > 0.0).unwrap_or(0.0);
    let threshold = threshold.filter(|t| t.is_finite() && *t > 0.0).unwrap_or(1.0);
    if score == 0.0 { 0.0 } else { score / (score + threshold) }
}

/// The [0, 1] score NAB is computed on for one of `detector`'s scores: the score itself for a
/// detector whose scores already lie in [0, 1] (sequence novelty), [`unit_score`] otherwise.
pub fn nab_score(detector: &str, score: Option<f64>, threshold: Option<f64>) -> f64 {
    if detector == crate::detect::novelty::NAME {
        score.filter(|s| s.is_finite()).map_or(0.0, |s| s.clamp(0.0, 1.0))
    } else {
        unit_score(score, threshold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_read_with_standard_first() {
        let text = r#"{"reward_low_FN_rate": {"CostMatrix": {"tpWeight": 1.0, "fnWeight": 2.0, "fpWeight": 0.11, "tnWeight": 1.0}},
                       "standard": {"CostMatrix": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11, "tnWeight": 1.0}}}"#;
        let profiles = parse_profiles(text).unwrap();
        assert_eq!(profiles[0].name, "standard");
        assert_eq!(profiles[1].costs.fn_weight, 2.0);
        assert_eq!(profiles[0].costs.fp_weight, 0.11);
    }

    #[test]
    fn windows_read_and_bad_ones_are_named() {
        let text = r#"{"a/x.csv": [["2014-04-10 07:15:00.000000", "2014-04-11 16:45:00.000000"]], "a/y.csv": []}"#;
        let windows = parse_windows(text).unwrap();
        assert_eq!(windows["a/x.csv"][0].start_ms, 1_397_114_100_000);
        assert!(windows["a/y.csv"].is_empty());
        let reversed = r#"{"a/x.csv": [["2014-04-11 07:15:00", "2014-04-10 16:45:00"]]}"#;
        let error = parse_windows(reversed).unwrap_err().to_string();
        assert!(error.starts_with("a/x.csv: window 1: end 2014-04-10 16:45:00 is before start"), "{error}");
        assert!(parse_windows("{\"a/x.csv\": [[1, 2]]}").unwrap_err().to_string().starts_with("line 1, column"));
    }

    #[test]
    fn unit_scores_keep_order_and_put_the_threshold_at_a_half() {
        assert_eq!(unit_score(Some(3.0), Some(3.0)), 0.5);
        assert_eq!(unit_score(None, Some(3.0)), 0.0);
        assert_eq!(unit_score(Some(-2.0), None), 0.0);
        assert!(unit_score(Some(1e12), Some(3.0)) < 1.0);
        assert!(unit_score(Some(4.0), Some(3.0)) < unit_score(Some(4.5), Some(3.0)));
    }
}
