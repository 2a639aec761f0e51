//! Slope changes per entity and metric: a signal that starts to ramp away from its course (a
//! sensor drifting out of calibration, a slow leak) is found while it drifts, not only when it
//! snaps back.
//!
//! Readings are averaged into blocks of `block_secs` of event time, which takes the measurement
//! noise down by the square root of the readings per block. Over the last `window_blocks` block
//! means the detector fits a smooth course, a quadratic in time (a daily cycle is locally one to
//! within a few hundredths of its swing over two hours), plus a kink: a change of slope at some
//! block. The kink is tried at three places, half, a third and a sixth of the window before its
//! newest block, so a steep drift is seen after a sixth of the window and a slow one after half
//! of it. Each fit is a fixed linear filter over the block means (the design does not depend on
//! the data), computed once per setting, so a judgement costs three dot products per block.
//!
//! A change between two blocks of more than `STEP_CHANGES` times the usual one is a step (a
//! level shift, a sensor swapped): the z-score's business, and the course before it says
//! nothing about the slope after it, so the window starts again from it (a step left in the
//! window would look like a bend until it left; carrying the course across the step instead
//! left enough of it to raise false bends). A drift is made of many small changes and never
//! looks like a step. A block whose readings all repeat one value (a stuck sensor) measures
//! nothing, and the window starts again after it, as after a gap.
//!
//! A kink is judged against two scales, and the larger one counts:
//! - the measurement noise: a block mean's own noise (from the usual change between
//!   consecutive blocks, which a smooth course barely moves) carried through the filter;
//! - the kinks this metric usually makes: a running mean of the squared kinks of the last
//!   `history_blocks` blocks, each capped at the threshold (an anomaly does not widen it). A
//!   signal that wanders by itself (barometric pressure, a random walk) bends all the time, and
//!   is then judged by its own bends.
//!
//! A kink beyond `threshold` scales opens an episode; it closes when no kink has passed the
//! threshold for a sixth of the window, and the metric then rests a whole window (its window
//! still holds the episode's bends) before it is judged again. The first verdict comes after
//! a full window and as many kinks again to learn their scale from.

use super::settings::TrendSettings;
use super::{Detector, EntityMap, Findings, ForPeople, Observation};
use crate::model::{Anomaly, Episode, MetricId, Severity, anomaly_id};
use std::sync::Arc;

/// The detector's name on anomalies.
pub const NAME: &str = "trend";

/// The kink positions tried: this fraction of the window before its newest block.
pub const KINK_FRACTIONS: [usize; 3] = [2, 3, 6];

/// The smallest window a fit can be made over (four parameters and a kink a sixth in).
pub const MIN_WINDOW_BLOCKS: usize = 12;

/// The fitted filters of one window length: for each kink position, the weights that give the
/// slope change at the kink from the window's block means, oldest first, and their norm.
#[derive(Debug, Clone, PartialEq)]
pub struct KinkFilters {
    pub weights: Vec<Box<[f64]>>,
    pub norms: Vec<f64>,
    /// Blocks from each kink to the window's newest block.
    pub recent: Vec<usize>,
}

impl KinkFilters {
    /// The filters for a window of `blocks` block means (at least [`MIN_WINDOW_BLOCKS`]).
    pub fn new(blocks: usize) -> KinkFilters {
        let blocks = blocks.max(MIN_WINDOW_BLOCKS);
        let mut filters = KinkFilters { weights: Vec::new(), norms: Vec::new(), recent: Vec::new() };
        for fraction in KINK_FRACTIONS {
            let recent = blocks / fraction;
            let weights = kink_weights(blocks, recent);
            filters.norms.push(weights.iter().map(|w| w * w).sum::<f64>().sqrt());
            filters.weights.push(weights);
            filters.recent.push(recent);
        }
        filters
    }
}

/// Least-squares weights of the kink coefficient `d` in `y = a + b·s + c·s² + d·max(0, s − k)`
/// over `blocks` equally spaced points, with the kink `recent` points before the last one.
fn kink_weights(blocks: usize, recent: usize) -> Box<[f64]> {
    let centre = (blocks as f64 - 1.0) / 2.0;
    let kink = (blocks - recent) as f64 - 0.5;
    let row = |i: usize| {
        let s = i as f64 - centre;
        [1.0, s, s * s, (i as f64 - kink).max(0.0)]
    };
    // The normal equations X'X, inverted by Gauss-Jordan elimination (4 × 4, well scaled
    // enough for windows of a few hundred blocks in f64).
    let mut gram = [[0.0_f64; 8]; 4];
    for i in 0..blocks {
        let x = row(i);
        for (line, xr) in gram.iter_mut().zip(x) {
            for (value, xc) in line.iter_mut().zip(x) {
                *value += xr * xc;
            }
        }
    }
    for (r, line) in gram.iter_mut().enumerate() {
        line[4 + r] = 1.0;
    }
    for pivot in 0..4 {
        let best = (pivot..4).max_by(|&a, &b| gram[a][pivot].abs().total_cmp(&gram[b][pivot].abs())).unwrap_or(pivot);
        gram.swap(pivot, best);
        let p = gram[pivot][pivot];
        for value in &mut gram[pivot] {
            *value /= p;
        }
        let pivot_row = gram[pivot];
        for (r, line) in gram.iter_mut().enumerate() {
            if r != pivot {
                let factor = line[pivot];
                for (value, p) in line.iter_mut().zip(pivot_row) {
                    *value -= factor * p;
                }
            }
        }
    }
    // The kink's row of (X'X)⁻¹ X'.
    let inverse_row = [gram[3][4], gram[3][5], gram[3][6], gram[3][7]];
    (0..blocks).map(|i| row(i).iter().zip(inverse_row).map(|(x, w)| x * w).sum()).collect()
}

/// How many of its usual sizes a change between two blocks must have to be a step (a level
/// shift, a sensor swapped), not noise or a bend: a step is the z-score's business, and the
/// course before it says nothing about the slope after it, so the window starts again.
pub const STEP_CHANGES: f64 = 6.0;

/// One metric's blocks, course, scales and episode.
#[derive(Debug, Clone)]
struct MetricState {
    /// The block the readings now arriving fall in (event time / block length).
    block: i64,
    sum: f64,
    count: u32,
    /// Whether every reading of the current block had the same value (a stuck sensor).
    first_of_block: f64,
    all_same: bool,
    /// The last complete block's mean.
    last_mean: Option<f64>,
    /// Running mean of the squared change between consecutive block means (steps left out).
    change_square: f64,
    changes_seen: u64,
    /// The means of the last `window_blocks` blocks, a ring starting at `head` (oldest).
    window: Box<[f64]>,
    head: usize,
    filled: usize,
    /// Per kink position, the running mean of squared (capped) kinks.
    kink_square: [f64; 3],
    kinks_seen: u64,
    episode: Option<Box<Anomaly>>,
    /// Blocks since a kink last passed the threshold, while an episode is open.
    quiet_blocks: usize,
    /// Blocks left to rest after an episode.
    rest_blocks: usize,
}

impl MetricState {
    fn new(settings: &TrendSettings) -> Self {
        MetricState {
            block: i64::MIN,
            sum: 0.0,
            count: 0,
            first_of_block: 0.0,
            all_same: true,
            last_mean: None,
            change_square: 0.0,
            changes_seen: 0,
            window: vec![0.0; settings.window_blocks].into(),
            head: 0,
            filled: 0,
            kink_square: [0.0; 3],
            kinks_seen: 0,
            episode: None,
            quiet_blocks: 0,
            rest_blocks: 0,
        }
    }

    /// Takes a reading; returns the judgement of the block it completed, if it completed one
    /// and the metric judges now.
    fn observe(&mut self, x: f64, time_ms: i64, settings: &TrendSettings) -> Option<Kink> {
        let block = time_ms.div_euclid(settings.block_ms);
        if self.count == 0 || block <= self.block {
            // The first reading, or one of the current block (a late one counts in it).
            if self.count == 0 {
                self.block = block;
                self.first_of_block = x;
            }
            self.all_same &= x == self.first_of_block;
            self.sum += x;
            self.count += 1;
            return None;
        }
        let mean = self.sum / f64::from(self.count);
        let stuck = self.all_same && self.count > 1;
        let judgement = if stuck {
            // A sensor repeating one value measures nothing: its course starts again after it.
            self.restart();
            None
        } else {
            self.take_block(mean, settings);
            self.judge(settings)
        };
        if block != self.block + 1 {
            // A gap of at least one empty block: the block grid (and the fits) start anew.
            self.restart();
        }
        self.block = block;
        self.sum = x;
        self.count = 1;
        self.first_of_block = x;
        self.all_same = true;
        judgement
    }

    fn restart(&mut self) {
        self.filled = 0;
        self.head = 0;
        self.last_mean = None;
    }

    /// Puts a block's mean in the window, after learning the usual change between blocks from
    /// it; a step starts the window again from this block.
    fn take_block(&mut self, mean: f64, settings: &TrendSettings) {
        if let Some(last) = self.last_mean.replace(mean) {
            let change = mean - last;
            let learned = self.changes_seen >= 16;
            if learned && change.abs() > STEP_CHANGES * self.change_square.sqrt() {
                self.restart();
                self.last_mean = Some(mean);
            } else {
                self.changes_seen += 1;
                let span = self.changes_seen.min(settings.history_blocks as u64);
                self.change_square += (change * change - self.change_square) / span as f64;
            }
        }
        self.push(mean, settings);
    }

    fn push(&mut self, value: f64, settings: &TrendSettings) {
        let len = settings.window_blocks;
        let slot = (self.head + self.filled) % len;
        self.window[slot] = value;
        if self.filled < len {
            self.filled += 1;
        } else {
            self.head = (self.head + 1) % len;
        }
    }

    /// The kinks of the full window against their scales, the episode moved on by one block.
    fn judge(&mut self, settings: &TrendSettings) -> Option<Kink> {
        let len = settings.window_blocks;
        if self.filled < len {
            return None;
        }
        if self.rest_blocks > 0 {
            self.rest_blocks -= 1;
            return None;
        }
        // The ring holds the oldest block at `head`: oldest first is `window[head..]`, then
        // `window[..head]`.
        let (newest_part, oldest_part) = self.window.split_at(self.head);
        // A block mean's own noise: a change between two of them carries it twice.
        let noise = (self.change_square / 2.0).sqrt();
        let learned = self.kinks_seen >= settings.learning_kinks;
        let mut best: Option<Kink> = None;
        for (position, weights) in settings.filters.weights.iter().enumerate() {
            let (oldest_weights, newest_weights) = weights.split_at(oldest_part.len());
            let change: f64 = oldest_weights.iter().zip(oldest_part).map(|(w, y)| w * y).sum::<f64>()
                + newest_weights.iter().zip(newest_part).map(|(w, y)| w * y).sum::<f64>();
            let noise_scale = noise * settings.filters.norms[position];
            let usual_scale = self.kink_square[position].sqrt();
            let scale = noise_scale.max(usual_scale).max(f64::MIN_POSITIVE);
            let score = if learned { change.abs() / scale } else { 0.0 };
            if best.is_none_or(|b| score > b.score) {
                best = Some(Kink { position, change, scale, score });
            }
            if self.episode.is_none() {
                let square = change * change;
                let capped = if learned { square.min((settings.threshold * scale).powi(2)) } else { square };
                let span = (self.kinks_seen + 1).min(settings.history_blocks as u64);
                self.kink_square[position] += (capped - self.kink_square[position]) / span as f64;
            }
        }
        if self.episode.is_none() {
            self.kinks_seen += 1;
        }
        best.filter(|_| learned)
    }
}

/// The strongest kink of one window.
#[derive(Debug, Clone, Copy)]
struct Kink {
    position: usize,
    /// Slope change at the kink, in the metric's units per block.
    change: f64,
    scale: f64,
    score: f64,
}

/// Slope changes over every watched metric of every profile that enables the detector.
#[derive(Debug, Default)]
pub struct TrendDetector {
    /// Per entity, one slot per metric of its profile, filled when the metric first arrives.
    states: EntityMap<Box<[Option<MetricState>]>>,
}

impl Detector for TrendDetector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn observe(&mut self, observation: Observation<'_>, findings: &mut Findings) {
        let Observation { profile, reading, .. } = observation;
        let Some(settings) = &profile.detectors.trend else {
            return;
        };
        let states = self
            .states
            .get_or_insert_with(reading.profile, &reading.entity, || vec![None; profile.metrics.len()].into());
        for &(metric, x) in &reading.metrics {
            let index = usize::from(metric);
            if !settings.watched[index] || !x.is_finite() {
                continue;
            }
            let state = states[index].get_or_insert_with(|| MetricState::new(settings));
            if let Some(kink) = state.observe(x, reading.event_time_ms, settings) {
                judge(observation, settings, metric, x, kink, state, findings);
            }
        }
    }
}

/// Moves a metric's episode on by one judged block: opens it at a kink beyond the threshold,
/// closes it (the same anomaly again, with its end) after a sixth of the window without one.
#[cold]
#[inline(never)]
fn judge(
    observation: Observation<'_>,
    settings: &TrendSettings,
    metric: MetricId,
    x: f64,
    kink: Kink,
    state: &mut MetricState,
    findings: &mut Findings,
) {
    let Observation { profile, reading, .. } = observation;
    let name = profile.metric_name(metric);
    let beyond = kink.score >= settings.threshold;
    findings.score(NAME, || Some(name.clone()), kink.score, settings.threshold, beyond);
    if beyond {
        state.quiet_blocks = 0;
    } else if state.episode.is_some() {
        state.quiet_blocks += 1;
    }
    if beyond && state.episode.is_none() {
        let per_hour = 3_600_000.0 / settings.block_ms as f64;
        let change_per_hour = kink.change * per_hour;
        let recent_minutes = (settings.filters.recent[kink.position] as i64 * settings.block_ms) as f64 / 60_000.0;
        let direction = if kink.change > 0.0 { "upward" } else { "downward" };
        let anomaly = Anomaly {
            id: anomaly_id(&profile.name, &reading.entity, reading.event_time_ms, NAME, name),
            detector: NAME,
            metric: Some(name.clone()),
            value: Some(x),
            score: kink.score,
            threshold: settings.threshold,
            severity: Severity::from_excess(kink.score, settings.threshold),
            reason: format!(
                "{name} turned {direction} about {} min ago: its slope changed by {} per hour, {} times the \
                 change its noise and its usual bends explain (over {} min of {} s averages)",
                ForPeople(recent_minutes),
                ForPeople(change_per_hour),
                ForPeople(kink.score),
                ForPeople((settings.window_blocks as i64 * settings.block_ms) as f64 / 60_000.0),
                ForPeople(settings.block_ms as f64 / 1000.0),
            ),
            features: vec![
                (Arc::from("slope_change_per_hour"), change_per_hour),
                (Arc::from("scale_per_hour"), kink.scale * per_hour),
                (Arc::from("minutes_since_turn"), recent_minutes),
            ],
            episode: Some(Episode { start_ms: reading.event_time_ms, end_ms: None }),
        };
        state.episode = Some(Box::new(anomaly.clone()));
        findings.anomalies.push(anomaly);
    } else if state.quiet_blocks >= (settings.window_blocks / 6).max(1)
        && let Some(mut open) = state.episode.take()
    {
        state.quiet_blocks = 0;
        state.rest_blocks = settings.window_blocks;
        let start_ms = open.episode.map_or(reading.event_time_ms, |e| e.start_ms);
        open.episode = Some(Episode { start_ms, end_ms: Some(reading.event_time_ms) });
        findings.anomalies.push(*open);
    }
}

#[cfg(test)]
mod tests;
