//! Rolling z-score / 3-sigma per entity and metric (references 003 and 004).
//!
//! A reading is judged against the window of readings *before* it (sample mean and standard
//! deviation), then joins the window. Updates are O(1) amortised: running sums are kept relative
//! to an anchor that moves to the window mean each time the window has been replaced, so
//! rounding neither drifts nor cancels after a level shift.
//!
//! The window holds the last `window` readings; with `window_secs` also only those of the last
//! so many seconds (event time, in arrival order): each signal then keeps its readings' times in
//! a second ring, and readings that aged out leave from the oldest end before a reading is judged.
//!
//! An entity's state is two allocations: the running sums of each of its profile's metrics side
//! by side, and one buffer holding the rings of the metrics it has reported, back to back. Nearly
//! every reading is unremarkable, so the loop over a reading's metrics only judges and pushes;
//! scores and anomalies are written out of line.

use super::settings::{Direction, ZScoreSettings};
use super::{Detector, EntityMap, Findings, ForPeople, Observation};
use crate::model::{Anomaly, Episode, Severity, anomaly_id};
use std::sync::Arc;

/// The detector's name on anomalies.
pub const NAME: &str = "zscore";

/// The smallest standard deviation used, relative to the mean's magnitude (at least 1e-9):
/// a window of identical values followed by a different value gives a finite, large z.
const SIGMA_FLOOR_RELATIVE: f64 = 1e-6;

/// The running sums and ring position of one window. Its values live in a ring the owner keeps
/// and passes in, whose length is the window's capacity: a [`RollingWindow`]'s own, or a stretch
/// of an entity's shared buffer in the detector.
#[derive(Debug, Clone, Default)]
struct WindowSums {
    anchor: f64,
    /// Sum of the values minus `anchor`.
    sum: f64,
    /// Sum of the squares of the values minus `anchor`.
    sum_squares: f64,
    /// How many values the window holds, up to the ring's length; 0 until the first push.
    len: usize,
    /// The ring slot the next value goes to; the window is the `len` slots before it (wrapping).
    /// Without a time limit it wraps to 0 every `capacity` pushes, each time the window has been
    /// replaced, and that is when the sums are re-anchored.
    next: usize,
    /// Pushes since the sums were last re-anchored (kept for time-limited windows, whose values
    /// can all be replaced well before the ring wraps).
    since_anchor: usize,
}

impl WindowSums {
    /// Sample mean and variance (n - 1), once the window holds two values.
    fn mean_variance(&self) -> Option<(f64, f64)> {
        let n = self.len;
        if n < 2 {
            return None;
        }
        let n_f = n as f64;
        let shifted_mean = self.sum / n_f;
        let variance = ((self.sum_squares - self.sum * shifted_mean) / (n_f - 1.0)).max(0.0);
        Some((self.anchor + shifted_mean, variance))
    }

    /// Adds `x` to the window whose values are `ring`, replacing the oldest once it is full.
    // Always inlined: it is a handful of instructions on every update, and left to itself the
    // compiler keeps one out-of-line copy for its two callers.
    #[inline(always)]
    fn push(&mut self, ring: &mut [f64], x: f64) {
        if self.insert(ring, x) {
            self.reanchor(ring);
        }
    }

    /// [`WindowSums::push`] for a time-limited window: `t` goes to `times` beside the value, and
    /// the sums are also re-anchored once as many values were pushed as the window holds.
    fn push_timed(&mut self, ring: &mut [f64], times: &mut [i64], x: f64, t: i64) {
        times[self.next] = t;
        self.since_anchor += 1;
        if self.insert(ring, x) || self.since_anchor >= self.len {
            self.reanchor(ring);
        }
    }

    /// Puts `x` in the next slot and into the sums; answers whether the ring wrapped.
    #[inline(always)]
    fn insert(&mut self, ring: &mut [f64], x: f64) -> bool {
        let capacity = ring.len();
        if self.len == 0 {
            self.anchor = x;
        }
        let shifted = x - self.anchor;
        let slot = self.next;
        if self.len < capacity {
            self.len += 1;
        } else {
            let old = ring[slot] - self.anchor;
            self.sum -= old;
            self.sum_squares -= old * old;
        }
        ring[slot] = x;
        self.sum += shifted;
        self.sum_squares += shifted * shifted;
        self.next = if slot + 1 == capacity { 0 } else { slot + 1 };
        self.next == 0
    }

    /// Takes out the oldest values whose time in `times` is before `cutoff`.
    fn expire(&mut self, ring: &[f64], times: &[i64], cutoff: i64) {
        let capacity = ring.len();
        while self.len > 0 {
            let oldest = (self.next + capacity - self.len) % capacity;
            if times[oldest] >= cutoff {
                return;
            }
            let old = ring[oldest] - self.anchor;
            self.sum -= old;
            self.sum_squares -= old * old;
            self.len -= 1;
        }
        // Empty: nothing of the rounding of what left stays behind.
        (self.sum, self.sum_squares) = (0.0, 0.0);
    }

    /// The window's values in `ring`, oldest first, as the part up to the ring's end and the
    /// part that wrapped to its start.
    fn values<'r>(&self, ring: &'r [f64]) -> (&'r [f64], &'r [f64]) {
        let capacity = ring.len();
        let start = (self.next + capacity - self.len) % capacity;
        if start + self.len <= capacity {
            (&ring[start..start + self.len], &[])
        } else {
            (&ring[start..], &ring[..start + self.len - capacity])
        }
    }

    /// Recomputes the sums exactly around the current mean of the window's values.
    #[inline(never)]
    fn reanchor(&mut self, ring: &[f64]) {
        let (older, newer) = self.values(ring);
        let n = self.len as f64;
        self.anchor = older.iter().chain(newer).sum::<f64>() / n;
        // Both sums in one pass, each added in order starting from -0.0 as `Iterator::sum` does,
        // so they equal two separate sums to the bit while their additions overlap.
        (self.sum, self.sum_squares) = older.iter().chain(newer).fold((-0.0, -0.0), |(sum, sum_squares), v| {
            let shifted = v - self.anchor;
            (sum + shifted, sum_squares + shifted.powi(2))
        });
        self.since_anchor = 0;
    }
}

/// The last `capacity` values of one metric, with running sums for mean and variance.
#[derive(Debug, Clone)]
pub struct RollingWindow {
    sums: WindowSums,
    values: Box<[f64]>,
}

impl RollingWindow {
    pub fn new(capacity: usize) -> Self {
        debug_assert!(capacity >= 2);
        RollingWindow { sums: WindowSums::default(), values: vec![0.0; capacity].into_boxed_slice() }
    }

    pub fn len(&self) -> usize {
        self.sums.len
    }

    pub fn is_empty(&self) -> bool {
        self.sums.len == 0
    }

    /// Sample mean and standard deviation (n - 1), once the window holds two values.
    pub fn mean_std(&self) -> Option<(f64, f64)> {
        self.mean_variance().map(|(mean, variance)| (mean, variance.sqrt()))
    }

    /// Sample mean and variance (n - 1), once the window holds two values.
    pub fn mean_variance(&self) -> Option<(f64, f64)> {
        self.sums.mean_variance()
    }

    pub fn push(&mut self, x: f64) {
        self.sums.push(&mut self.values, x);
    }
}

/// What one watched signal of one entity remembers: its window, its previous value, and the
/// episodes it has open.
#[derive(Debug, Clone, Default)]
struct SignalState {
    sums: WindowSums,
    /// Where the signal's ring starts in the entity's `rings`; set by its first push.
    ring_start: usize,
    has_ring: bool,
    /// The metric's previous value, for changes and for telling a stuck sensor.
    previous: Option<f64>,
    /// Readings in a row that repeated the previous value exactly.
    repeats: usize,
    /// Readings in a row beyond the threshold, and back within it.
    beyond: usize,
    quiet: usize,
    /// The anomaly of the deviation episode open now, re-sent with its end when it closes.
    episode: Option<Box<Anomaly>>,
    /// The same for a stuck value.
    stuck: Option<Box<Anomaly>>,
}

/// Every window of one entity: the state of each watched signal, and the rings of the signals
/// it has reported back to back in one buffer. A ring is added when its signal first has a
/// value, so a metric the entity never reports costs none. Time-limited windows keep their
/// values' times in `times`, at the same places as the values in `rings`.
#[derive(Debug)]
struct EntityWindows {
    capacity: usize,
    signals: Box<[SignalState]>,
    rings: Vec<f64>,
    times: Vec<i64>,
}

impl EntityWindows {
    fn new(signal_count: usize, capacity: usize) -> Self {
        debug_assert!(capacity >= 2);
        EntityWindows {
            capacity,
            signals: vec![SignalState::default(); signal_count].into(),
            rings: Vec::new(),
            times: Vec::new(),
        }
    }

    /// The signal's ring, added on its first push.
    fn ring_of(&mut self, signal: usize) -> usize {
        let state = &mut self.signals[signal];
        if !state.has_ring {
            state.has_ring = true;
            state.ring_start = self.rings.len();
            self.rings.reserve_exact(self.capacity);
            self.rings.resize(state.ring_start + self.capacity, 0.0);
        }
        state.ring_start
    }

    fn push(&mut self, signal: usize, x: f64) {
        let start = self.ring_of(signal);
        let ring = &mut self.rings[start..start + self.capacity];
        self.signals[signal].sums.push(ring, x);
    }

    fn push_timed(&mut self, signal: usize, x: f64, t: i64) {
        let start = self.ring_of(signal);
        if self.times.len() < self.rings.len() {
            self.times.resize(self.rings.len(), 0);
        }
        let ring = &mut self.rings[start..start + self.capacity];
        let times = &mut self.times[start..start + self.capacity];
        self.signals[signal].sums.push_timed(ring, times, x, t);
    }

    /// Takes the signal's values from before `cutoff` out of its window.
    fn expire(&mut self, signal: usize, cutoff: i64) {
        let state = &mut self.signals[signal];
        if state.sums.len == 0 || self.times.is_empty() {
            return;
        }
        let range = state.ring_start..state.ring_start + self.capacity;
        state.sums.expire(&self.rings[range.clone()], &self.times[range], cutoff);
    }
}

/// The smallest σ used for a window with this mean when the signal sets no floor of its own.
fn sigma_floor(mean: f64) -> f64 {
    (SIGMA_FLOOR_RELATIVE * mean.abs()).max(1e-9)
}

/// The z of `x` against a window's mean and standard deviation, with the σ floor applied.
pub fn z_score(x: f64, mean: f64, std: f64) -> f64 {
    (x - mean) / std.max(sigma_floor(mean))
}

/// Rolling z-score over the signals of every profile that enables it, raising one anomaly per
/// episode: it opens after `persistence` readings beyond the threshold and closes (the same
/// anomaly again, with its end) after `quiet_readings` back within it. Every value joins the
/// window, so a level shift is learnt within a window; a jump in a direction the signal does
/// not watch joins clipped to the threshold.
#[derive(Debug)]
pub struct ZScoreDetector {
    windows: EntityMap<EntityWindows>,
    /// The names of an anomaly's features, made once instead of allocated for every anomaly.
    feature_names: [Arc<str>; 4],
}

impl Default for ZScoreDetector {
    fn default() -> Self {
        ZScoreDetector { windows: EntityMap::default(), feature_names: ["value", "mean", "std", "z"].map(Arc::from) }
    }
}

impl ZScoreDetector {
    /// Number of entities with state.
    pub fn entities(&self) -> usize {
        self.windows.len()
    }
}

/// A reading of one signal judged against the window before it.
struct Judgement {
    signal: usize,
    x: f64,
    mean: f64,
    std: f64,
    window_len: usize,
}

/// Whether `deviation` from a window with this variance and σ floor is beyond the threshold
/// (either way). Squares are compared so the square root waits for anomalies.
#[inline(always)]
fn is_beyond(deviation: f64, variance: f64, floor: f64, threshold: f64) -> bool {
    deviation * deviation > threshold * threshold * variance.max(floor * floor)
}

/// Whether a deviation in this direction is one the signal watches for.
#[inline(always)]
fn counts(deviation: f64, direction: Direction) -> bool {
    match direction {
        Direction::Both => true,
        Direction::Above => deviation > 0.0,
        Direction::Below => deviation < 0.0,
    }
}

impl Detector for ZScoreDetector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn observe(&mut self, observation: Observation<'_>, findings: &mut Findings) {
        let Observation { profile, reading, .. } = observation;
        let Some(settings) = &profile.detectors.zscore else {
            return;
        };
        let ZScoreDetector { windows, feature_names } = self;
        let windows = windows.get_or_insert_with(reading.profile, &reading.entity, || {
            EntityWindows::new(settings.signals.len(), settings.window.get())
        });
        for (index, signal) in settings.signals.iter().enumerate() {
            let Some(&(_, value)) = reading.metrics.iter().find(|(metric, _)| *metric == signal.metric) else {
                continue;
            };
            if let Some(window_ms) = settings.window_ms {
                windows.expire(index, reading.event_time_ms.saturating_sub(window_ms));
            }
            let state = &mut windows.signals[index];
            let previous = state.previous.replace(value);
            if !signal.diff && settings.stuck_after > 0 {
                track_stuck(observation, settings, index, previous == Some(value), findings, state);
                if state.stuck.is_some() {
                    // A stuck sensor's repeats say nothing about the signal: neither judged
                    // nor learnt, so the window does not shrink to the one value.
                    continue;
                }
            }
            let x = match (signal.diff, previous) {
                (false, _) => value,
                (true, Some(previous)) => value - previous,
                (true, None) => continue,
            };
            let sums = &state.sums;
            let mut pushed = x;
            let mut beyond = false;
            if sums.len >= settings.min_history
                && let Some((mean, variance)) = sums.mean_variance()
            {
                let floor = signal.sigma_floor.max(sigma_floor(mean));
                let outside = is_beyond(x - mean, variance, floor, settings.threshold);
                beyond = outside && counts(x - mean, signal.direction);
                if outside || state.episode.is_some() || findings.keeps_scores() {
                    let std = variance.sqrt().max(floor);
                    // A jump the signal does not watch for (a battery swap) is no fault, but
                    // left whole in the window it would hide the next fault for a window: it
                    // joins clipped. A watched deviation joins as it is, so a new level is learnt.
                    if outside && !beyond {
                        let reach = settings.threshold * std;
                        pushed = x.clamp(mean - reach, mean + reach);
                    }
                    let judgement = Judgement { signal: index, x, mean, std, window_len: sums.len };
                    judge(observation, settings, feature_names, judgement, beyond, findings, state);
                }
            }
            if !beyond {
                state.beyond = 0;
            }
            match settings.window_ms {
                None => windows.push(index, pushed),
                Some(_) => windows.push_timed(index, pushed, reading.event_time_ms),
            }
        }
    }
}

/// Counts repeats of a level signal's value; a run of `stuck_after` opens a stuck episode,
/// the first different value closes it.
#[cold]
#[inline(never)]
fn track_stuck(
    observation: Observation<'_>,
    settings: &ZScoreSettings,
    index: usize,
    repeated: bool,
    findings: &mut Findings,
    state: &mut SignalState,
) {
    let Observation { profile, reading, .. } = observation;
    if !repeated {
        state.repeats = 0;
        if let Some(mut open) = state.stuck.take() {
            open.episode =
                Some(Episode { start_ms: open.episode.map_or(0, |e| e.start_ms), end_ms: Some(reading.event_time_ms) });
            findings.anomalies.push(*open);
        }
        return;
    }
    state.repeats += 1;
    // `repeats` counts the readings after the first of the run.
    if state.repeats + 1 != settings.stuck_after || state.stuck.is_some() {
        return;
    }
    let signal = &settings.signals[index];
    let value = state.previous.unwrap_or(f64::NAN);
    let anomaly = Anomaly {
        id: anomaly_id(&profile.name, &reading.entity, reading.event_time_ms, NAME, &format!("{}_stuck", signal.name)),
        detector: NAME,
        metric: Some(signal.name.clone()),
        value: Some(value),
        score: settings.stuck_after as f64,
        threshold: settings.stuck_after as f64,
        severity: Severity::Major,
        reason: format!(
            "{} has reported exactly {} for {} readings in a row: a stuck sensor or a frozen feed",
            signal.name,
            ForPeople(value),
            settings.stuck_after
        ),
        features: vec![(Arc::from("repeats"), settings.stuck_after as f64)],
        episode: Some(Episode { start_ms: reading.event_time_ms, end_ms: None }),
    };
    findings.score(NAME, || Some(signal.name.clone()), anomaly.score, anomaly.threshold, true);
    state.stuck = Some(Box::new(anomaly.clone()));
    findings.anomalies.push(anomaly);
}

/// Moves a signal's episode on by one judged reading (its score line, when scores are kept,
/// says whether this reading is beyond the threshold): opens it after `persistence` readings
/// beyond the threshold (the anomaly goes into `findings`), closes it after `quiet_readings`
/// within it (the same anomaly again, with its end). Out of line (and marked cold) so that the
/// loop over a reading's signals stays small and in registers.
#[cold]
#[inline(never)]
fn judge(
    observation: Observation<'_>,
    settings: &ZScoreSettings,
    feature_names: &[Arc<str>; 4],
    judgement: Judgement,
    beyond: bool,
    findings: &mut Findings,
    state: &mut SignalState,
) {
    let Observation { profile, reading, .. } = observation;
    let Judgement { signal, x, mean, std, window_len } = judgement;
    let signal = &settings.signals[signal];
    let z = (x - mean) / std;
    if beyond {
        state.beyond += 1;
        state.quiet = 0;
    } else if state.episode.is_some() {
        state.quiet += 1;
    }
    let opens = beyond && state.episode.is_none() && state.beyond >= settings.persistence.get();
    findings.score(NAME, || Some(signal.name.clone()), z.abs(), settings.threshold, beyond);
    if opens {
        let name = &signal.name;
        let direction = if z > 0.0 { "above" } else { "below" };
        let score = z.abs();
        let [value_name, mean_name, std_name, z_name] = feature_names;
        let anomaly = Anomaly {
            id: anomaly_id(&profile.name, &reading.entity, reading.event_time_ms, NAME, name),
            detector: NAME,
            metric: Some(name.clone()),
            value: Some(x),
            score,
            threshold: settings.threshold,
            severity: Severity::from_excess(score, settings.threshold),
            reason: format!(
                "{name} {} is {}σ {direction} the mean {} of the last {window_len} readings",
                ForPeople(x),
                ForPeople(score),
                ForPeople(mean),
            ),
            features: vec![
                (value_name.clone(), x),
                (mean_name.clone(), mean),
                (std_name.clone(), std),
                (z_name.clone(), z),
            ],
            episode: Some(Episode { start_ms: reading.event_time_ms, end_ms: None }),
        };
        state.episode = Some(Box::new(anomaly.clone()));
        findings.anomalies.push(anomaly);
    } else if state.quiet >= settings.quiet_readings.get()
        && let Some(mut open) = state.episode.take()
    {
        state.quiet = 0;
        let start_ms = open.episode.map_or(reading.event_time_ms, |e| e.start_ms);
        open.episode = Some(Episode { start_ms, end_ms: Some(reading.event_time_ms) });
        findings.anomalies.push(*open);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Enrichment, Reading};
    use crate::profile::{Profile, ProfileRegistry, RawProfile};
    use std::collections::BTreeMap;

    /// Reference 003's and 004's parameters: 3σ over the last 30 readings, judged from the
    /// second reading on.
    const REFERENCE: &str = "window = 30\nthreshold = 3.0\nmin_history = 2";

    /// A one-metric profile `sensor` (metric `value`) with these `detectors.zscore` settings.
    fn sensor_profile(zscore: &str) -> Arc<Profile> {
        #[derive(serde::Deserialize)]
        struct File {
            profiles: BTreeMap<String, RawProfile>,
        }
        let text = format!(
            "[profiles.sensor]\nentity_field = \"id\"\nmetrics = [{{ field = \"value\" }}]\n[profiles.sensor.detectors.zscore]\n{zscore}\n"
        );
        let file: File = toml::from_str(&text).unwrap();
        let registry = ProfileRegistry::with_builtins(file.profiles).unwrap();
        registry.by_name("sensor").unwrap().clone()
    }

    fn builtin(name: &str) -> Arc<Profile> {
        ProfileRegistry::with_builtins(Default::default()).unwrap().by_name(name).unwrap().clone()
    }

    /// Feeds one metric's values (a reading a second) and answers each reading's anomalies.
    fn feed_metric(
        detector: &mut ZScoreDetector,
        profile: &Profile,
        entity: &str,
        metric: &str,
        values: &[f64],
    ) -> Vec<Vec<Anomaly>> {
        let metric = profile.metric_id(metric).unwrap();
        values
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let reading = Reading {
                    profile: profile.id,
                    entity: entity.into(),
                    event_time_ms: i as i64 * 1000,
                    position: None,
                    metrics: vec![(metric, x)],
                    attributes: vec![],
                };
                let mut findings = Findings::default();
                let enrichment = Enrichment::default();
                detector.observe(
                    Observation { profile, reading: &reading, enrichment: &enrichment, arrival_ms: None },
                    &mut findings,
                );
                findings.anomalies
            })
            .collect()
    }

    fn feed(detector: &mut ZScoreDetector, profile: &Profile, entity: &str, values: &[f64]) -> Vec<Vec<Anomaly>> {
        feed_metric(detector, profile, entity, &profile.metric_name(0).clone(), values)
    }

    /// Readings at which an anomaly opened (not the closing copies).
    fn openings(results: &[Vec<Anomaly>]) -> Vec<usize> {
        let mut opened = Vec::new();
        for (i, anomalies) in results.iter().enumerate() {
            for anomaly in anomalies {
                if anomaly.episode.is_none_or(|e| e.end_ms.is_none()) {
                    opened.push(i);
                }
            }
        }
        opened
    }

    /// `n` readings of `level` with a deterministic ±`noise` wobble (mean `level`, sample std
    /// just over `noise`).
    fn wobble(level: f64, noise: f64, n: usize) -> Vec<f64> {
        (0..n).map(|i| level + if i % 2 == 0 { noise } else { -noise }).collect()
    }

    #[test]
    fn reference_003_ten_flat_readings_then_a_jump_is_an_anomaly() {
        let profile = sensor_profile(REFERENCE);
        let mut detector = ZScoreDetector::default();
        let mut values = vec![20.0; 10];
        values.push(100.0);
        let results = feed(&mut detector, &profile, "s1", &values);
        assert!(results[..10].iter().all(Vec::is_empty), "the same value again is not an anomaly");
        let anomaly = &results[10][0];
        assert_eq!(anomaly.detector, "zscore");
        assert_eq!(anomaly.metric.as_deref(), Some("value"));
        assert!(anomaly.score.is_finite() && anomaly.score > 3.0);
        assert!(anomaly.reason.starts_with("value 100 is "), "{}", anomaly.reason);
        assert!(anomaly.reason.ends_with("above the mean 20 of the last 10 readings"), "{}", anomaly.reason);
        assert_eq!(anomaly.episode, Some(Episode { start_ms: 10_000, end_ms: None }));
    }

    #[test]
    fn reference_hand_computed_z_uses_the_window_before_the_point() {
        // Window [10, 12, 14]: mean 12, sample std 2. 19 gives z = 3.5 > 3; 17 gives 2.5.
        let profile = sensor_profile(REFERENCE);
        let mut detector = ZScoreDetector::default();
        let results = feed(&mut detector, &profile, "s1", &[10.0, 12.0, 14.0, 19.0]);
        assert!((results[3][0].score - 3.5).abs() < 1e-12);
        let mut detector = ZScoreDetector::default();
        assert!(feed(&mut detector, &profile, "s1", &[10.0, 12.0, 14.0, 17.0])[3].is_empty());
    }

    #[test]
    fn the_first_readings_of_a_new_entity_are_never_flagged() {
        // By default a window judges once it is full (120 readings): nothing before that,
        // however wild, and the 121st reading is judged.
        let profile = builtin("environment");
        let settings = profile.detectors.zscore.as_ref().unwrap();
        assert_eq!((settings.window.get(), settings.min_history), (120, 120));
        let mut detector = ZScoreDetector::default();
        let mut values: Vec<f64> = (0..120).map(|i| if i % 10 == 9 { 1000.0 } else { 20.0 }).collect();
        values.extend([20.0, 5000.0]);
        let results = feed(&mut detector, &profile, "new", &values);
        assert_eq!(openings(&results), [121], "judged from the 121st reading on");
        // Even the reference settings need two readings.
        let mut detector = ZScoreDetector::default();
        assert!(feed(&mut detector, &sensor_profile(REFERENCE), "s1", &[1.0, 1000.0]).iter().all(Vec::is_empty));
    }

    #[test]
    fn a_level_shift_raises_one_anomaly_then_the_window_adapts() {
        // 200 readings around 20 (σ ≈ 0.1), then 300 around 25: a 50σ shift. One anomaly opens
        // at the shift; the window learns the new level and the episode closes, sent again with
        // its end under the same id; the rest of the new level is normal.
        let profile = builtin("environment");
        let mut detector = ZScoreDetector::default();
        let mut values = wobble(20.0, 0.1, 200);
        values.extend(wobble(25.0, 0.1, 300));
        let results = feed(&mut detector, &profile, "s1", &values);
        assert_eq!(openings(&results), [200]);
        let all: Vec<&Anomaly> = results.iter().flatten().collect();
        assert_eq!(all.len(), 2, "the opening and the closing: {all:?}");
        assert_eq!(all[0].id, all[1].id);
        let end_ms = all[1].episode.unwrap().end_ms.expect("closed");
        assert!(end_ms > 200_000 && end_ms < 440_000, "closed once the window had learnt the level: {end_ms}");
        // The reference settings also raise it once: 30 anomalies are what they used to give.
        let mut detector = ZScoreDetector::default();
        let results = feed(&mut detector, &sensor_profile(REFERENCE), "s1", &values);
        assert_eq!(openings(&results), [200]);
    }

    #[test]
    fn a_spike_does_not_blind_the_window_to_the_next_one() {
        // A spike of 50σ joins the 120-reading window and widens its σ to about 0.47, so a
        // second one 20 readings later is still over 10σ out; each is its own short episode.
        let profile = builtin("environment");
        let mut detector = ZScoreDetector::default();
        let mut values = wobble(20.0, 0.1, 200);
        values[150] += 5.0;
        values[170] += 5.0;
        let results = feed(&mut detector, &profile, "s1", &values);
        assert_eq!(openings(&results), [150, 170]);
    }

    #[test]
    fn persistence_needs_that_many_readings_in_a_row() {
        let profile = sensor_profile("window = 30\nthreshold = 3.0\nmin_history = 10\npersistence = 3");
        let mut detector = ZScoreDetector::default();
        let mut values = wobble(20.0, 0.1, 50);
        values[12] = 30.0; // one reading out: no anomaly (and out of the window by reading 43)
        values[45] = 30.0;
        values[46] = 30.0;
        values[47] = 30.0; // three in a row: opens on the third
        let results = feed(&mut detector, &profile, "s1", &values);
        assert_eq!(openings(&results), [47]);
    }

    #[test]
    fn a_drone_landing_waiting_and_taking_off_again_raises_nothing() {
        // The built-in drone profile watches altitude and speed as changes per reading, with
        // σ floors at the autopilot's own manoeuvres: a landing, five minutes on the ground and
        // a climb back at 3 m/s (reached at 2 m/s²) are a mission, not a fault.
        let profile = builtin("drone");
        let mut detector = ZScoreDetector::default();
        let mut altitude = Vec::new();
        let mut height: f64 = 100.0;
        for _ in 0..300 {
            altitude.push(height);
        }
        let mut rate: f64 = 0.0;
        while height > 0.0 {
            rate = (rate - 2.0).max(-(height * 0.3).clamp(0.5, 2.5));
            height = (height + rate).max(0.0);
            altitude.push(height);
        }
        altitude.extend([0.0; 300]);
        let mut rate: f64 = 0.0;
        for _ in 0..60 {
            rate = (rate + 2.0).min(3.0);
            height += rate;
            altitude.push(height);
        }
        let results = feed_metric(&mut detector, &profile, "d-1", "altitude", &altitude);
        assert!(openings(&results).is_empty(), "{:?}", results.iter().flatten().next());
        // A fall at 10 m/s is not.
        let mut falling = altitude.clone();
        let last = *falling.last().unwrap();
        falling.extend((1..=4).map(|i| last - 10.0 * f64::from(i)));
        let mut detector = ZScoreDetector::default();
        let results = feed_metric(&mut detector, &profile, "d-1", "altitude", &falling);
        assert_eq!(openings(&results), [altitude.len()]);
    }

    #[test]
    fn a_vehicle_stopping_and_driving_off_raises_no_zscore_anomaly() {
        // Vehicle speed is traffic: the built-in profile leaves it to the rules. A z-score on it
        // (the reference settings) flags the departure after a stop at a red light.
        assert!(builtin("vehicle").detectors.zscore.is_none());
        let mut speed = wobble(50.0, 3.0, 60);
        speed.extend([30.0, 10.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        speed.extend([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        speed.extend([15.0, 30.0, 45.0, 50.0]);
        let mut detector = ZScoreDetector::default();
        let flagged = openings(&feed(&mut detector, &sensor_profile(REFERENCE), "V001", &speed));
        assert!(!flagged.is_empty(), "the reference z-score calls a green light an anomaly");
    }

    #[test]
    fn direction_below_ignores_a_battery_swap_but_not_a_collapse() {
        let profile = builtin("drone");
        // Draining 0.05 a reading, swapped to 98 at reading 200, collapsing 4 a reading at 300.
        let mut battery: Vec<f64> = (0..200).map(|i| 60.0 - 0.05 * f64::from(i)).collect();
        battery.extend((0..100).map(|i| 98.0 - 0.05 * f64::from(i)));
        battery.extend((1..=8).map(|i| 93.0 - 4.0 * f64::from(i)));
        let mut detector = ZScoreDetector::default();
        let results = feed_metric(&mut detector, &profile, "d-1", "battery_level", &battery);
        assert_eq!(openings(&results), [300], "the swap is a rise; the collapse is one episode");
    }

    #[test]
    fn a_stuck_sensor_is_one_episode_and_its_repeats_are_not_learnt() {
        // Environment stations report noise always: twelve identical readings open a stuck
        // episode, the first different value closes it, and the window never learnt the repeats,
        // so the honest readings after it are not flagged.
        let profile = builtin("environment");
        let mut detector = ZScoreDetector::default();
        let mut values = wobble(20.0, 0.1, 200);
        values.extend([20.05; 100]);
        values.extend(wobble(20.0, 0.1, 200));
        let results = feed(&mut detector, &profile, "s1", &values);
        let all: Vec<&Anomaly> = results.iter().flatten().collect();
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(all[0].reason.contains("exactly 20.05 for 12 readings"), "{}", all[0].reason);
        assert_eq!(all[0].episode, Some(Episode { start_ms: 211_000, end_ms: None }));
        assert_eq!(all[1].episode, Some(Episode { start_ms: 211_000, end_ms: Some(300_000) }));
    }

    #[test]
    fn entities_do_not_share_state() {
        let profile = sensor_profile(REFERENCE);
        let mut detector = ZScoreDetector::default();
        feed(&mut detector, &profile, "a", &[20.0; 10]);
        let other = feed(&mut detector, &profile, "b", &[500.0, 500.0, 500.0]);
        assert!(other.iter().all(Vec::is_empty));
        assert_eq!(detector.entities(), 2);
    }

    #[test]
    fn a_metric_missing_from_a_reading_leaves_its_window_alone() {
        // Drone readings carrying only some metrics: each window holds only its own values.
        let profile = builtin("drone");
        let mut detector = ZScoreDetector::default();
        let acceleration_z = profile.metric_id("acceleration_z").unwrap();
        let signal = profile.metric_id("signal_strength").unwrap();
        for i in 0..50_i64 {
            let mut metrics = vec![(acceleration_z, 0.1 * (i % 3) as f64)];
            if i % 5 == 0 {
                metrics.push((signal, -60.0 - i as f64));
            }
            let reading = Reading {
                profile: profile.id,
                entity: "d-1".into(),
                event_time_ms: i * 1000,
                position: None,
                metrics,
                attributes: vec![],
            };
            let enrichment = Enrichment::default();
            let observation =
                Observation { profile: &profile, reading: &reading, enrichment: &enrichment, arrival_ms: None };
            detector.observe(observation, &mut Findings::default());
        }
        let settings = profile.detectors.zscore.as_ref().unwrap();
        let windows = detector.windows.get(profile.id, "d-1").unwrap();
        let length =
            |name: &str| windows.signals[settings.signals.iter().position(|s| &*s.name == name).unwrap()].sums.len;
        assert_eq!((length("acceleration_z"), length("signal_strength_diff"), length("altitude_diff")), (50, 9, 0));
        assert_eq!(windows.rings.len(), 2 * settings.window.get(), "rings only for the signals seen");
    }

    /// Feeds `(seconds, value)` readings of the profile's first metric; answers each reading's
    /// z-score lines (empty when it was not judged) and anomalies.
    fn feed_timed(
        detector: &mut ZScoreDetector,
        profile: &Profile,
        readings: &[(f64, f64)],
    ) -> Vec<(Vec<crate::detect::Score>, Vec<Anomaly>)> {
        readings
            .iter()
            .map(|&(secs, x)| {
                let reading = Reading {
                    profile: profile.id,
                    entity: "s1".into(),
                    event_time_ms: (secs * 1000.0).round() as i64,
                    position: None,
                    metrics: vec![(0, x)],
                    attributes: vec![],
                };
                let mut findings = Findings::keeping_scores();
                let enrichment = Enrichment::default();
                detector.observe(
                    Observation { profile, reading: &reading, enrichment: &enrichment, arrival_ms: None },
                    &mut findings,
                );
                (findings.scores, findings.anomalies)
            })
            .collect()
    }

    #[test]
    fn a_time_window_judges_by_the_readings_of_the_last_seconds_at_irregular_intervals() {
        // 10 s window, 3σ, from two readings on. At 13.2 s the readings before 3.2 s have left:
        // the 1000 at 0 s goes, [10, 12, 14] stay (mean 12, sample std 2), so 19 is z = 3.5.
        let profile = sensor_profile("window = 30\nwindow_secs = 10\nthreshold = 3.0\nmin_history = 2");
        let mut detector = ZScoreDetector::default();
        let results =
            feed_timed(&mut detector, &profile, &[(0.0, 1000.0), (3.5, 10.0), (5.5, 12.0), (9.0, 14.0), (13.2, 19.0)]);
        assert!(results[1].0.is_empty(), "one reading in the window: not judged");
        assert!(results[..4].iter().all(|(_, anomalies)| anomalies.is_empty()));
        assert!((results[4].0[0].score - 3.5).abs() < 1e-12, "{:?}", results[4].0);
        assert!(
            results[4].1[0].reason.ends_with("above the mean 12 of the last 3 readings"),
            "{}",
            results[4].1[0].reason
        );
        // Counted by readings alone the 1000 is still in the window and hides the 19.
        let mut detector = ZScoreDetector::default();
        let by_count = sensor_profile("window = 30\nthreshold = 3.0\nmin_history = 2");
        let results =
            feed_timed(&mut detector, &by_count, &[(0.0, 1000.0), (3.5, 10.0), (5.5, 12.0), (9.0, 14.0), (13.2, 19.0)]);
        assert!(results[4].1.is_empty() && results[4].0[0].score < 1.0, "{:?}", results[4].0);
    }

    #[test]
    fn a_reading_exactly_window_secs_old_still_counts() {
        // At 10 s the reading of 0 s is exactly 10 s old: the window is [10, 14] (mean 12,
        // std √8), and 22 is 10 / √8 = 3.54σ out. A millisecond later it has left, and a window
        // of one reading judges nothing.
        let profile = sensor_profile("window = 30\nwindow_secs = 10\nthreshold = 3.0\nmin_history = 2");
        let mut detector = ZScoreDetector::default();
        let results = feed_timed(&mut detector, &profile, &[(0.0, 10.0), (2.0, 14.0), (10.0, 22.0)]);
        assert!((results[2].0[0].score - 10.0 / 8f64.sqrt()).abs() < 1e-12, "{:?}", results[2].0);
        assert_eq!(results[2].1.len(), 1);
        let mut detector = ZScoreDetector::default();
        let results = feed_timed(&mut detector, &profile, &[(0.0, 10.0), (2.0, 14.0), (10.001, 22.0)]);
        assert!(results[2].0.is_empty() && results[2].1.is_empty(), "{results:?}");
    }

    #[test]
    fn both_bounds_hold_and_a_gap_empties_the_window() {
        // window = 3 readings and 100 s: the count bounds it while readings come every 2 s.
        let profile = sensor_profile("window = 3\nwindow_secs = 100\nthreshold = 3.0\nmin_history = 2");
        let mut detector = ZScoreDetector::default();
        let readings: Vec<(f64, f64)> = (0..10).map(|i| (f64::from(i) * 2.0, f64::from(i % 4))).collect();
        feed_timed(&mut detector, &profile, &readings);
        let sums = &detector.windows.get(profile.id, "s1").unwrap().signals[0].sums;
        let (mean, variance) = sums.mean_variance().unwrap();
        // The last three values: 3, 0, 1 (readings 7, 8, 9).
        assert_eq!(sums.len, 3);
        assert!((mean - 4.0 / 3.0).abs() < 1e-12 && (variance - 7.0 / 3.0).abs() < 1e-12, "{mean} {variance}");
        // 5 minutes of silence: everything aged out, so the first reading back is not judged
        // against what came before the gap, and the window starts again from it.
        let results = feed_timed(&mut detector, &profile, &[(318.0, 500.0), (319.0, 501.0)]);
        assert!(results[0].0.is_empty(), "{results:?}");
        let sums = &detector.windows.get(profile.id, "s1").unwrap().signals[0].sums;
        assert_eq!(sums.len, 2);
        assert_eq!(sums.mean_variance().unwrap(), (500.5, 0.5));
        assert_eq!(detector.windows.get(profile.id, "s1").unwrap().rings.len(), 3, "the ring is reused");
    }

    #[test]
    fn time_limited_sums_stay_exact_after_a_level_shift() {
        // A ring of 1000 whose time limit keeps 4 readings: the window is replaced every 4
        // pushes, long before the ring wraps, so the sums are re-anchored as often as that.
        let mut sums = WindowSums::default();
        let (mut ring, mut times) = (vec![0.0; 1000], vec![0_i64; 1000]);
        let value = |i: i64| if i < 2500 { 1e9 } else { 5.0 } + (i as f64).sin();
        for i in 0..5000_i64 {
            sums.expire(&ring, &times, (i - 3) * 1000);
            sums.push_timed(&mut ring, &mut times, value(i), i * 1000);
            if i >= 2500 + 10 {
                let window: Vec<f64> = (i - 3..=i).map(value).collect();
                let mean = window.iter().sum::<f64>() / 4.0;
                let variance = window.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 3.0;
                let (m, v) = sums.mean_variance().unwrap();
                assert_eq!(sums.len, 4);
                assert!(
                    (m - mean).abs() < 1e-9 && (v - variance).abs() < 1e-9 * variance,
                    "{i}: {m} {v} vs {mean} {variance}"
                );
            }
        }
    }

    #[test]
    fn window_forgets_old_values_and_stays_exact() {
        let mut window = RollingWindow::new(3);
        for x in [1e9, 1e9 + 1.0, 1e9 + 2.0, 5.0, 6.0, 7.0] {
            window.push(x);
        }
        let (mean, std) = window.mean_std().unwrap();
        assert!((mean - 6.0).abs() < 1e-6 && (std - 1.0).abs() < 1e-6, "{mean} {std}");
        for i in 0..1000 {
            window.push(f64::from(i % 7));
        }
        let exact: Vec<f64> = (997..1000).map(|i| f64::from(i % 7)).collect();
        let exact_mean = exact.iter().sum::<f64>() / 3.0;
        assert!((window.mean_std().unwrap().0 - exact_mean).abs() < 1e-9);
    }

    #[test]
    fn reanchored_sums_are_the_plain_sums_to_the_bit() {
        // `reanchor` folds from -0.0 to match `Iterator::sum`; this pins that start.
        assert!(std::iter::empty::<f64>().sum::<f64>().is_sign_negative());
        let mut window = RollingWindow::new(7);
        for i in 0..7 * 5 {
            window.push(1e6 + f64::from(i).sin() * 3.0);
        }
        let sums = &window.sums;
        let values = &window.values;
        assert_eq!(sums.next, 0, "just re-anchored");
        let sum: f64 = values.iter().map(|v| v - sums.anchor).sum();
        let sum_squares: f64 = values.iter().map(|v| (v - sums.anchor).powi(2)).sum();
        assert_eq!((sums.sum.to_bits(), sums.sum_squares.to_bits()), (sum.to_bits(), sum_squares.to_bits()));
    }
}
