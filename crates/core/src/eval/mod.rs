//! Scoring detectors against ground truth: our simulator's labels, or the NAB benchmark's.
//!
//! # Layout
//! - [`labels`]: the labels document `teleguard simulate` writes (types, times, detectors).
//! - [`detections`]: reads what the detectors said (`teleguard replay` NDJSON, the API's JSON).
//! - [`matching`]: detections against labels: precision, recall, F1, delays, false alarms.
//! - [`nab`]: the Numenta Anomaly Benchmark's windows, profiles and score.
//! - [`series`]: our detectors over a univariate series (one value per timestamp, as in NAB).

pub mod detections;
pub mod labels;
pub mod matching;
pub mod nab;
pub mod series;
