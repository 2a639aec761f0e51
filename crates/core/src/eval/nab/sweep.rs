//! NAB's score of a detector over a corpus: every row weighted by where it falls, then the
//! one threshold that maximises the corpus score, normalised between the null detector (0)
//! and a perfect one (100). This follows NAB's `sweeper.py`, `optimizer.py` and `runner.py`
//! rule for rule:
//!
//! - the first `min(floor(0.15 n), 750)` rows of a file are probationary and not scored;
//! - a row inside a window of width `w` (rows), `k` rows before its last one, would be a true
//!   positive worth `tp × σs(−(k + 1) / w) / σs(−1)`, where `σs(x) = 2 / (1 + e^{5x}) − 1`
//!   (and −1 for x > 3); a window scores the best of its detected rows, so in effect its
//!   first detection, or `−fn` when none;
//! - a row outside every window would be a false positive costing
//!   `fp × σs(d / (w' − 1))`, `d` rows after the last row of the preceding window of width
//!   `w'`, or `fp × −1` before any window;
//! - a row is a detection when its score ≥ the threshold; the threshold tried are the rows'
//!   own scores, from the top, and the highest of those giving the best corpus score wins;
//! - normalised score = 100 × (raw − null) / (perfect − null), with perfect = tp × windows and
//!   null the best score of the null detector (0.5 on every row).

use super::{CostMatrix, NabError, Window};
use serde::Serialize;

/// One data file's rows with a detector's scores, and its label windows.
#[derive(Debug, Clone, Copy)]
pub struct ScoredFile<'a> {
    /// The file key, e.g. `realKnownCause/nyc_taxi.csv`; named in errors.
    pub name: &'a str,
    pub timestamps_ms: &'a [i64],
    /// Per row, in [0, 1].
    pub scores: &'a [f64],
    pub windows: &'a [Window],
}

/// A detector's NAB score under one profile, at the threshold that maximises it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NabScore {
    /// Normalised: 0 = the null detector, 100 = perfect; `None` when there is no window.
    pub score: Option<f64>,
    pub threshold: f64,
    pub raw_score: f64,
    pub null_score: f64,
    pub perfect_score: f64,
    /// Windows with at least one scored (non-probationary) row.
    pub windows: usize,
    pub detected_windows: usize,
    /// Detected rows outside every window, after the probationary period.
    pub false_positive_rows: usize,
}

/// Where a row falls for scoring.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Region {
    Probation,
    Window(usize),
    Outside,
}

/// One row: its anomaly score and what detecting it would be worth.
#[derive(Debug, Clone, Copy)]
struct SweepPoint {
    anomaly_score: f64,
    worth: f64,
    region: Region,
}

/// The corpus state with every row scoring ≥ `threshold` detected.
#[derive(Debug, Clone, Copy)]
struct ThresholdScore {
    threshold: f64,
    raw_score: f64,
    detected_windows: usize,
    false_positive_rows: usize,
}

/// NAB's standard sigmoid, scaled to (−1, 1) and flipped: 0.987 at −1 (a window's first
/// row), 0 at 0, −0.987 at 1, and −1 beyond 3.
fn scaled_sigmoid(relative_position: f64) -> f64 {
    if relative_position > 3.0 { -1.0 } else { 2.0 * sigmoid(-5.0 * relative_position) - 1.0 }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// NAB's probationary length: `min(floor(0.15 n), 0.15 × 5000)` rows.
pub fn probationary_rows(rows: usize) -> f64 {
    (0.15 * rows as f64).floor().min(0.15 * 5000.0)
}

/// Scores a detector over a corpus under one profile, at the threshold that maximises the
/// score (NAB's optimise step), or at a given one (NAB's score step with its thresholds file).
pub fn score_corpus(
    files: &[ScoredFile<'_>],
    costs: &CostMatrix,
    threshold: Option<f64>,
) -> Result<NabScore, NabError> {
    let mut points = Vec::new();
    let mut window_count = 0;
    for file in files {
        if file.scores.iter().any(|s| !s.is_finite()) {
            return Err(NabError::invalid(file.name, "a score is not a finite number"));
        }
        points.extend(sweep_file(file, file.scores.iter().copied(), costs, window_count)?);
        window_count += file.windows.len();
    }
    let (by_threshold, scored_windows) = scores_by_threshold(points, costs, window_count);
    let best = match threshold {
        Some(threshold) => at_threshold(&by_threshold, threshold),
        None => best_threshold(&by_threshold),
    };

    let mut null_points = Vec::new();
    let mut null_window_count = 0;
    for file in files {
        null_points.extend(sweep_file(file, file.scores.iter().map(|_| 0.5), costs, null_window_count)?);
        null_window_count += file.windows.len();
    }
    let null = best_threshold(&scores_by_threshold(null_points, costs, null_window_count).0);

    let perfect_score = costs.tp_weight * window_count as f64;
    let score = (perfect_score != null.raw_score)
        .then(|| 100.0 * (best.raw_score - null.raw_score) / (perfect_score - null.raw_score));
    Ok(NabScore {
        score,
        threshold: best.threshold,
        raw_score: best.raw_score,
        null_score: null.raw_score,
        perfect_score,
        windows: scored_windows,
        detected_windows: best.detected_windows,
        false_positive_rows: best.false_positive_rows,
    })
}

/// The worth and region of every row of one file (NAB's `calcSweepScore`); windows are
/// numbered from `first_window`.
fn sweep_file(
    file: &ScoredFile<'_>,
    scores: impl Iterator<Item = f64>,
    costs: &CostMatrix,
    first_window: usize,
) -> Result<Vec<SweepPoint>, NabError> {
    let timestamps = file.timestamps_ms;
    if timestamps.len() != file.scores.len() {
        let message = format!("{} rows but {} scores", timestamps.len(), file.scores.len());
        return Err(NabError::invalid(file.name, message));
    }
    let row_of = |window: usize, ms: i64| {
        timestamps.iter().position(|&t| t == ms).ok_or_else(|| {
            let message =
                format!("window {}: {} is not a row timestamp of the file", window + 1, crate::time::format_millis(ms));
            NabError::invalid(file.name, message)
        })
    };
    for (index, window) in file.windows.iter().enumerate() {
        row_of(index, window.start_ms)?;
        row_of(index, window.end_ms)?;
    }
    struct Current {
        id: usize,
        right: usize,
        width: f64,
        end_ms: i64,
    }
    let mut next_window = 0;
    let mut current: Option<Current> = None;
    let mut previous: Option<(usize, f64)> = None;
    let max_true_positive = scaled_sigmoid(-1.0);
    let probation = probationary_rows(timestamps.len());
    let mut points = Vec::with_capacity(timestamps.len());
    for (row, (&time_ms, anomaly_score)) in timestamps.iter().zip(scores).enumerate() {
        if let Some(window) = file.windows.get(next_window)
            && time_ms == window.start_ms
        {
            let right = row_of(next_window, window.end_ms)?;
            let left = row_of(next_window, window.start_ms)?;
            let width = (right as f64) - (left as f64) + 1.0;
            current = Some(Current { id: first_window + next_window, right, width, end_ms: window.end_ms });
            next_window += 1;
        }
        let worth = match (&current, previous) {
            (Some(window), _) => {
                let position = -((window.right as f64) - (row as f64) + 1.0) / window.width;
                scaled_sigmoid(position) * costs.tp_weight / max_true_positive
            }
            (None, None) => -costs.fp_weight,
            (None, Some((right, width))) => {
                let distance = (right as f64 - row as f64).abs();
                scaled_sigmoid(distance / (width - 1.0)) * costs.fp_weight
            }
        };
        let region = match &current {
            _ if (row as f64) < probation => Region::Probation,
            Some(window) => Region::Window(window.id),
            None => Region::Outside,
        };
        points.push(SweepPoint { anomaly_score, worth, region });
        if let Some(window) = &current
            && time_ms == window.end_ms
        {
            previous = Some((row, window.width));
            current = None;
        }
    }
    if let Some(missed) = file.windows.get(next_window) {
        let message = format!(
            "window {} (from {}) is never reached: windows must be in time order",
            next_window + 1,
            crate::time::format_millis(missed.start_ms)
        );
        return Err(NabError::invalid(file.name, message));
    }
    Ok(points)
}

/// The corpus score at every distinct threshold, from above the highest score down
/// (NAB's `calcScoreByThreshold`), and the number of windows with a scored row.
fn scores_by_threshold(
    points: Vec<SweepPoint>,
    costs: &CostMatrix,
    window_count: usize,
) -> (Vec<ThresholdScore>, usize) {
    let mut scorable: Vec<SweepPoint> = points.into_iter().filter(|p| p.region != Region::Probation).collect();
    scorable.sort_by(|a, b| b.anomaly_score.total_cmp(&a.anomaly_score));
    // Each window's part: −fn until detected, then its best detected row's worth.
    let mut window_parts: Vec<Option<f64>> = vec![None; window_count];
    for point in &scorable {
        if let Region::Window(id) = point.region {
            window_parts[id] = Some(-costs.fn_weight);
        }
    }
    let scored_windows = window_parts.iter().flatten().count();
    let mut detected = vec![false; window_count];
    let mut raw_score: f64 = window_parts.iter().flatten().sum();
    let mut state = ThresholdScore { threshold: 1.1, raw_score: 0.0, detected_windows: 0, false_positive_rows: 0 };
    let mut scores = Vec::new();
    for point in &scorable {
        if point.anomaly_score != state.threshold {
            scores.push(ThresholdScore { raw_score, ..state });
            state.threshold = point.anomaly_score;
        }
        match point.region {
            Region::Outside => {
                raw_score += point.worth;
                state.false_positive_rows += 1;
            }
            Region::Window(id) => {
                let part = window_parts[id].as_mut().expect("every scorable window has a part");
                if point.worth > *part {
                    raw_score += point.worth - *part;
                    *part = point.worth;
                }
                if !detected[id] {
                    detected[id] = true;
                    state.detected_windows += 1;
                }
            }
            Region::Probation => unreachable!("probationary rows were filtered out"),
        }
    }
    scores.push(ThresholdScore { raw_score, ..state });
    (scores, scored_windows)
}

/// The state with every row scoring ≥ `threshold` detected.
fn at_threshold(scores: &[ThresholdScore], threshold: f64) -> ThresholdScore {
    let mut chosen = scores[0];
    for candidate in scores.iter().take_while(|s| s.threshold >= threshold) {
        chosen = *candidate;
    }
    ThresholdScore { threshold, ..chosen }
}

/// The highest threshold among those with the best score (NAB sorts by score, stably).
fn best_threshold(scores: &[ThresholdScore]) -> ThresholdScore {
    let mut best = scores[0];
    for candidate in &scores[1..] {
        if candidate.raw_score > best.raw_score {
            best = *candidate;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const STANDARD: CostMatrix = CostMatrix { tp_weight: 1.0, fp_weight: 0.11, fn_weight: 1.0, tn_weight: 1.0 };

    fn minutes(n: usize) -> Vec<i64> {
        (0..n as i64).map(|i| 1_400_000_000_000 + i * 60_000).collect()
    }

    /// 40 rows (rows 0-5 probationary), one window over rows 20-23; detections at rows 2
    /// (probationary), 21, 22 and 30 with score 1, and at row 15 with score 0.3.
    #[test]
    fn a_tiny_file_scores_exactly_as_by_hand() {
        let timestamps = minutes(40);
        let windows = [Window { start_ms: timestamps[20], end_ms: timestamps[23] }];
        let mut scores = vec![0.0; 40];
        for row in [2, 21, 22, 30] {
            scores[row] = 1.0;
        }
        scores[15] = 0.3;
        let file = ScoredFile { name: "t/x.csv", timestamps_ms: &timestamps, scores: &scores, windows: &windows };
        let result = score_corpus(&[file], &STANDARD, None).unwrap();

        // Row 21 is 3 rows from the window's end of width 4: σs(−0.75) / σs(−1).
        let flipped_sigmoid = |x: f64| 2.0 / (1.0 + (5.0 * x).exp()) - 1.0;
        let true_positive = flipped_sigmoid(-0.75) / flipped_sigmoid(-1.0);
        // Row 30 is 7 rows after the window's last row: σs(7 / 3) × 0.11.
        let false_positive = flipped_sigmoid(7.0 / 3.0) * 0.11;
        let raw = true_positive + false_positive;
        assert_eq!(result.threshold, 1.0);
        assert!((result.raw_score - raw).abs() < 1e-12, "{} vs {raw}", result.raw_score);
        assert!((raw - 0.856_99).abs() < 1e-5, "the hand value: {raw}");
        // The null detector does best by detecting nothing: −1, one missed window.
        assert_eq!((result.null_score, result.perfect_score), (-1.0, 1.0));
        assert!((result.score.unwrap() - 50.0 * (raw + 1.0)).abs() < 1e-10);
        assert_eq!((result.windows, result.detected_windows, result.false_positive_rows), (1, 1, 1));

        // At a threshold of 0.3 row 15, before any window, costs the full 0.11 as well.
        let lower = score_corpus(&[file], &STANDARD, Some(0.25)).unwrap();
        assert!((lower.raw_score - (raw - 0.11)).abs() < 1e-12);
        assert_eq!((lower.threshold, lower.false_positive_rows), (0.25, 2));
    }

    #[test]
    fn probation_is_fifteen_percent_up_to_750_rows() {
        assert_eq!(probationary_rows(40), 6.0);
        assert_eq!(probationary_rows(4032), 604.0);
        assert_eq!(probationary_rows(22695), 750.0);
    }

    #[test]
    fn a_window_off_the_rows_is_refused_with_the_file_named() {
        let timestamps = minutes(10);
        let windows = [Window { start_ms: timestamps[2] + 1, end_ms: timestamps[4] }];
        let scores = vec![0.0; 10];
        let file = ScoredFile { name: "t/x.csv", timestamps_ms: &timestamps, scores: &scores, windows: &windows };
        let error = score_corpus(&[file], &STANDARD, None).unwrap_err().to_string();
        assert!(
            error.starts_with("t/x.csv: window 1: 2014-05-13T16:55:20.001Z is not a row timestamp of the file"),
            "{error}"
        );
    }
}
