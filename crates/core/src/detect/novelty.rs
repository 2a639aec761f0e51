//! Sequence novelty per entity and metric: how much of what a metric just did was never seen.
//!
//! Each metric's values are cut into a few levels of the range it kept during its first readings
//! (its learning period); each reading then ends one sequence of levels per order, the current
//! level alone and with the one, two, ... `orders - 1` levels before it. Its novelty is the
//! fraction of those sequences never seen before: 0 for a familiar pattern, 1 for a level or a jump
//! the metric never made. With parts of the day (by hour, UTC, by default) the level is also
//! remembered with the part of the day it came in, one more item of the fraction: telemetry keeps
//! daily cycles, and a level usual at noon but never seen at 3 a.m. is new at 3 a.m. (the
//! time-of-day context HTM's detector encodes in NAB); the first day is then learned before any
//! verdict, since every part of it is new. The score is how unusual the novelty of the last ten
//! readings is for this metric (Numenta's anomaly likelihood: a normal tail probability against the
//! running mean and variance of that average, on a log scale in [0, 1]), so a noisy metric that
//! often makes new sequences is judged by its own standard. A value beyond every value the metric
//! had before, by more than a margin of their span (5 %, as the spatial anomaly of Numenta's HTM
//! detector in NAB), scores 1 outright: a new extreme is news however noisy the metric's sequences
//! are, and however soon after the last anomaly. After an anomaly the metric's sequences rest
//! (score 0) for a number of readings, so one event raises one anomaly and the new behaviour is
//! learned meanwhile. This is the idea of contextual anomaly detection (Smirnov's CAD OSE, 2016, in
//! the Numenta Anomaly Benchmark) with HTM's likelihood, cut down to constant work and memory per
//! reading:
//!
//! - the sequences seen are kept in two Bloom filters of fixed size, the current one and the
//!   one before; when the current one has taken its share of new sequences it becomes the
//!   previous one and a cleared one takes its place, so what was not seen for two generations
//!   is forgotten and memory never grows;
//! - the learning period's values are kept (at most `learning_readings`), the range taken from
//!   them, then they are replayed into the memory and dropped; after it the range stays as
//!   learned, and values outside it fall on levels of their own below 0 or above the top.
//!
//! A live detector cannot know the range of a series in advance (NAB gives each of its
//! detectors the file's minimum and maximum): this one assumes the learning period shows the
//! metric's normal range, and treats what goes beyond it as new levels.

use super::settings::NoveltySettings;
use super::{Detector, EntityMap, Findings, ForPeople, Observation};
use crate::model::{Anomaly, MetricId, Severity, anomaly_id};
use std::sync::Arc;

/// The detector's name on anomalies.
pub const NAME: &str = "novelty";

/// The most orders (sequence lengths) a metric can be watched at.
pub const MAX_ORDERS: usize = 16;

/// Sequences seen: two generations of a Bloom filter with two bits per sequence.
#[derive(Debug, Clone)]
struct SeenSequences {
    current: Box<[u64]>,
    previous: Box<[u64]>,
    /// New sequences put into `current` since it was cleared.
    added: usize,
    /// How many new sequences a generation takes before it is retired.
    generation_size: usize,
}

impl SeenSequences {
    fn new(bits_log2: u32) -> Self {
        let words = (1_usize << bits_log2) / 64;
        SeenSequences {
            current: vec![0; words].into(),
            previous: vec![0; words].into(),
            added: 0,
            // A sixteenth of the bits: at most an eighth of a filter's bits are set, so an
            // unseen sequence looks seen with a chance of about 1.5 % per generation.
            generation_size: (1_usize << bits_log2) / 16,
        }
    }

    /// The two bits of a sequence's hash, as (word, mask) pairs.
    fn bits(&self, hash: u64) -> [(usize, u64); 2] {
        let mask = self.current.len() * 64 - 1;
        let first = (hash as usize) & mask;
        let second = ((hash >> 32) as usize) & mask;
        [(first / 64, 1 << (first % 64)), (second / 64, 1 << (second % 64))]
    }

    fn contains(filter: &[u64], bits: &[(usize, u64); 2]) -> bool {
        bits.iter().all(|&(word, mask)| filter[word] & mask != 0)
    }

    /// Whether the sequence was seen in this generation or the one before; records it.
    fn check_and_insert(&mut self, hash: u64) -> bool {
        let bits = self.bits(hash);
        if Self::contains(&self.current, &bits) {
            return true;
        }
        let seen = Self::contains(&self.previous, &bits);
        for (word, mask) in bits {
            self.current[word] |= mask;
        }
        self.added += 1;
        if self.added >= self.generation_size {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.fill(0);
            self.added = 0;
        }
        seen
    }
}

/// One step of a sequence hash: mixes `level` into `hash` (a multiply-xorshift finaliser).
fn mix(hash: u64, level: i64) -> u64 {
    let mut h = (hash ^ (level as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= h >> 29;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^ (h >> 32)
}

/// The levels a metric's values fall on: `levels` equal steps over the learned range.
#[derive(Debug, Clone, Copy)]
struct Levels {
    low: f64,
    high: f64,
    step: f64,
    /// The number of levels inside the range.
    count: i64,
}

impl Levels {
    /// Levels over the range of `values`; a range of one value gets steps of a millionth of
    /// its magnitude (or 1e-9), so any change from it is a new level.
    fn learned_from(values: &[f64], levels: usize) -> Self {
        let low = values.iter().copied().fold(f64::INFINITY, f64::min);
        let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let span = high - low;
        let step = if span > 0.0 { span / levels as f64 } else { (low.abs() * 1e-6).max(1e-9) };
        Levels { low, high, step, count: levels as i64 }
    }

    /// The level of `x`: 0 to `count - 1` within the range (its top is the top level, not one
    /// above it), below 0 or from `count` on outside it.
    fn of(&self, x: f64) -> i64 {
        // `as` saturates: a value far outside the range is a level of its own all the same.
        let level = ((x - self.low) / self.step).floor() as i64;
        if level == self.count && x <= self.high { level - 1 } else { level }
    }
}

/// How unusual the recent novelty is for this metric (Numenta's anomaly likelihood, Ahmad et
/// al. 2017, with running estimates instead of a stored history): the mean novelty of the last
/// readings against a normal distribution of that mean learned over the metric's history.
#[derive(Debug, Clone)]
struct Likelihood {
    /// The last novelty scores, a ring of `AVERAGE_READINGS`.
    recent: [f64; AVERAGE_READINGS],
    recent_sum: f64,
    next: usize,
    /// Running mean and variance of the averaged novelty.
    mean: f64,
    variance: f64,
    samples: u64,
}

/// Readings the novelty is averaged over before it is judged (Numenta's 10).
const AVERAGE_READINGS: usize = 10;
/// The smallest mean and variance of the averaged novelty (Numenta's): without them a metric
/// that was never novel would call its first blip certain.
const MEAN_FLOOR: f64 = 0.03;
const VARIANCE_FLOOR: f64 = 0.0003;
/// The smallest tail probability told apart: 1e-10 scores 1.
const TAIL_FLOOR: f64 = 1e-10;

impl Likelihood {
    fn new() -> Self {
        Likelihood { recent: [0.0; AVERAGE_READINGS], recent_sum: 0.0, next: 0, mean: 0.0, variance: 0.0, samples: 0 }
    }

    /// Takes one novelty in [0, 1] and returns how unusual the recent average is, in [0, 1]:
    /// `ln(tail probability) / ln(1e-10)`, 0 at or below the usual mean. `history` is the
    /// number of readings the running estimates average over.
    fn observe(&mut self, novelty: f64, history: u64) -> f64 {
        self.recent_sum += novelty - self.recent[self.next];
        self.recent[self.next] = novelty;
        self.next = (self.next + 1) % AVERAGE_READINGS;
        if self.next == 0 {
            // Once per ring: the running sum again exactly, so rounding never accumulates.
            self.recent_sum = self.recent.iter().sum();
        }
        let average = (self.recent_sum / AVERAGE_READINGS as f64).max(0.0);
        // Judged against the estimates before this reading joins them.
        let mean = self.mean.max(MEAN_FLOOR);
        let std = self.variance.max(VARIANCE_FLOOR).sqrt();
        let score = if average <= mean {
            0.0
        } else {
            let tail = upper_tail((average - mean) / std).max(TAIL_FLOOR);
            (tail.ln() / TAIL_FLOOR.ln()).clamp(0.0, 1.0)
        };
        self.samples += 1;
        let weight = 1.0 / self.samples.min(history.max(1)) as f64;
        let deviation = average - self.mean;
        self.mean += weight * deviation;
        self.variance = (1.0 - weight) * (self.variance + weight * deviation * deviation);
        score
    }
}

/// The probability that a standard normal variable exceeds `z`: `erfc(z / √2) / 2`, from
/// the Chebyshev fit of Numerical Recipes (relative error below 1.2e-7).
fn upper_tail(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let poly = -x * x - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    0.5 * if x >= 0.0 { erfc } else { 2.0 - erfc }
}

/// Seeds the hash of a (part of the day, level) pair, apart from the sequences' `0x5EED`.
const DAY_PART_SEED: u64 = 0xDA70_FDA7;
const DAY_MS: i64 = 86_400_000;

/// The part of the day (UTC) `time_ms` falls in, 0 to `parts - 1`; `None` when `parts` is 0.
fn day_part(time_ms: i64, parts: u32) -> Option<i64> {
    (parts > 0).then(|| time_ms.rem_euclid(DAY_MS) * i64::from(parts) / DAY_MS)
}

/// What the detector knows of one metric of one entity.
#[derive(Debug, Clone)]
struct MetricState {
    /// Values of the learning period with their event times, until it ends; then empty and
    /// unused.
    learning: Vec<(f64, i64)>,
    levels: Option<Levels>,
    /// The last `orders - 1` levels, newest first.
    recent: [i64; MAX_ORDERS],
    /// How many of `recent` are real levels.
    recent_len: usize,
    seen: SeenSequences,
    likelihood: Likelihood,
    /// Readings since the last anomaly, `None` before the first.
    since_anomaly: Option<u64>,
    /// The smallest and largest value so far, learning period included.
    lowest: f64,
    highest: f64,
    /// The event time of the metric's first reading.
    first_time_ms: Option<i64>,
}

/// One reading's judgement of one metric.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Judgement {
    /// In [0, 1]: how unusual the recent novelty is (or the novelty itself when
    /// `history_readings` is 0); 0 while resting after an anomaly.
    score: f64,
    /// The fraction of the reading's sequences never seen before.
    novelty: f64,
    level: i64,
    /// Whether the value lies beyond every value before it by more than the margin.
    new_extreme: bool,
    is_anomaly: bool,
}

impl MetricState {
    fn new(settings: &NoveltySettings) -> Self {
        MetricState {
            learning: Vec::with_capacity(settings.learning_readings),
            levels: None,
            recent: [0; MAX_ORDERS],
            recent_len: 0,
            seen: SeenSequences::new(settings.memory_bits_log2),
            likelihood: Likelihood::new(),
            since_anomaly: None,
            lowest: f64::INFINITY,
            highest: f64::NEG_INFINITY,
            first_time_ms: None,
        }
    }

    /// Takes `x`, read at `time_ms`, in; a judgement once the learning period is over.
    fn observe(&mut self, x: f64, time_ms: i64, settings: &NoveltySettings) -> Option<Judgement> {
        let new_extreme = self.is_new_extreme(x, settings.extreme_margin);
        self.lowest = self.lowest.min(x);
        self.highest = self.highest.max(x);
        let first_ms = *self.first_time_ms.get_or_insert(time_ms);
        let Some(levels) = self.levels else {
            self.learn(x, time_ms, settings);
            return None;
        };
        let level = levels.of(x);
        let novelty = self.remember(level, time_ms, settings);
        let unusual = self.likelihood.observe(novelty, settings.history_readings);
        // With parts of the day, the first day is learned before anything is judged: until
        // then most parts of the day are new to the metric whatever it does.
        if settings.day_parts > 0 && time_ms.saturating_sub(first_ms) < DAY_MS {
            return None;
        }
        let resting = self.since_anomaly.is_some_and(|since| since < settings.rest_readings);
        self.since_anomaly = self.since_anomaly.map(|since| since.saturating_add(1));
        // A new extreme is news however soon after the last anomaly: the rest keeps one
        // event's aftermath of new sequences from raising more anomalies, and a value beyond
        // every earlier one by the margin is no aftermath.
        let score = match (resting, settings.history_readings) {
            _ if new_extreme => 1.0,
            (true, _) => 0.0,
            (false, 0) => novelty,
            (false, _) => unusual,
        };
        let is_anomaly = score >= settings.threshold;
        if is_anomaly {
            self.since_anomaly = Some(0);
        }
        Some(Judgement { score, novelty, level, new_extreme, is_anomaly })
    }

    /// Whether `x` lies beyond every value before it by more than `margin` of their span (a
    /// span of 0: any other value). False for the first value and for an infinite margin.
    fn is_new_extreme(&self, x: f64, margin: f64) -> bool {
        if margin.is_infinite() || self.lowest > self.highest {
            return false;
        }
        let slack = margin * (self.highest - self.lowest);
        x > self.highest + slack || x < self.lowest - slack
    }

    /// Keeps a value of the learning period; at its end, learns the range and replays the
    /// period's values into the memory.
    fn learn(&mut self, x: f64, time_ms: i64, settings: &NoveltySettings) {
        self.learning.push((x, time_ms));
        if self.learning.len() < settings.learning_readings {
            return;
        }
        let values: Vec<f64> = self.learning.iter().map(|&(value, _)| value).collect();
        let levels = Levels::learned_from(&values, settings.levels);
        self.levels = Some(levels);
        for (value, time_ms) in std::mem::take(&mut self.learning) {
            let novelty = self.remember(levels.of(value), time_ms, settings);
            self.likelihood.observe(novelty, settings.history_readings);
        }
    }

    /// Records what a reading at `level` and `time_ms` did, the sequences of levels it ends
    /// and (with `day_parts`) its level at that part of the day, and returns the fraction of
    /// them never seen.
    fn remember(&mut self, level: i64, time_ms: i64, settings: &NoveltySettings) -> f64 {
        let mut hash = mix(0x5EED, level);
        let mut novel = usize::from(!self.seen.check_and_insert(hash));
        // Before a metric has `orders - 1` earlier levels, the missing sequences count as seen.
        for &earlier in &self.recent[..self.recent_len] {
            hash = mix(hash, earlier);
            novel += usize::from(!self.seen.check_and_insert(hash));
        }
        self.recent.copy_within(0..MAX_ORDERS - 1, 1);
        self.recent[0] = level;
        self.recent_len = (self.recent_len + 1).min(settings.orders - 1);
        let mut items = settings.orders;
        if let Some(part) = day_part(time_ms, settings.day_parts) {
            novel += usize::from(!self.seen.check_and_insert(mix(mix(DAY_PART_SEED, part), level)));
            items += 1;
        }
        novel as f64 / items as f64
    }
}

/// Sequence novelty over every watched metric of every profile that enables it.
#[derive(Debug, Default)]
pub struct NoveltyDetector {
    /// Per entity, one slot per metric of its profile, filled when the metric first arrives.
    states: EntityMap<Box<[Option<MetricState>]>>,
}

impl NoveltyDetector {
    /// Number of entities with state.
    pub fn entities(&self) -> usize {
        self.states.len()
    }
}

impl Detector for NoveltyDetector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn observe(&mut self, observation: Observation<'_>, findings: &mut Findings) {
        let Observation { profile, reading, .. } = observation;
        let Some(settings) = &profile.detectors.novelty else {
            return;
        };
        let states = self
            .states
            .get_or_insert_with(reading.profile, &reading.entity, || vec![None; profile.metrics.len()].into());
        for &(metric, x) in &reading.metrics {
            let index = usize::from(metric);
            if !settings.watched[index] {
                continue;
            }
            let state = states[index].get_or_insert_with(|| MetricState::new(settings));
            if let Some(judgement) = state.observe(x, reading.event_time_ms, settings)
                && (judgement.is_anomaly || findings.keeps_scores())
            {
                record(observation, settings, metric, x, judgement, findings);
            }
        }
    }
}

/// Puts a judgement's score, and the anomaly if it is one, into `findings`.
#[cold]
#[inline(never)]
fn record(
    observation: Observation<'_>,
    settings: &NoveltySettings,
    metric: MetricId,
    x: f64,
    judgement: Judgement,
    findings: &mut Findings,
) {
    let Observation { profile, reading, .. } = observation;
    let name = profile.metric_name(metric);
    findings.score(NAME, || Some(name.clone()), judgement.score, settings.threshold, judgement.is_anomaly);
    if !judgement.is_anomaly {
        return;
    }
    let novel_percent = 100.0 * judgement.novelty;
    let level_text = match judgement.level {
        level if level < 0 => "below the range it learned",
        level if level >= settings.levels as i64 => "above the range it learned",
        _ => "within the range it learned",
    };
    let items = match settings.day_parts {
        0 => format!("{} level sequences", settings.orders),
        _ => format!("{} level sequences and its level at this part of the day", settings.orders),
    };
    findings.anomalies.push(Anomaly {
        id: anomaly_id(&profile.name, &reading.entity, reading.event_time_ms, NAME, name),
        detector: NAME,
        metric: Some(name.clone()),
        value: Some(x),
        score: judgement.score,
        threshold: settings.threshold,
        severity: Severity::from_excess(judgement.score, settings.threshold),
        reason: if judgement.new_extreme {
            format!(
                "{name} {} ({level_text}) lies beyond every value it had before by more than {}% of their span",
                ForPeople(x),
                ForPeople(100.0 * settings.extreme_margin),
            )
        } else if settings.history_readings == 0 {
            format!(
                "{name} {} ({level_text}): {}% of its {items} never seen before",
                ForPeople(x),
                ForPeople(novel_percent),
            )
        } else {
            format!(
                "{name} {} ({level_text}): {}% of its {items} never seen before; \
                 as much that is new in its last {AVERAGE_READINGS} readings is unusual for it (score {})",
                ForPeople(x),
                ForPeople(novel_percent),
                ForPeople(judgement.score),
            )
        },
        features: vec![
            (Arc::from("value"), x),
            (Arc::from("level"), judgement.level as f64),
            (Arc::from("novelty"), judgement.novelty),
            (Arc::from("new_extreme"), f64::from(u8::from(judgement.new_extreme))),
        ],
        episode: None,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Enrichment, Reading};
    use crate::profile::{ProfileRegistry, RawProfile};
    use std::collections::BTreeMap;

    /// A one-metric profile with the detector's defaults and `settings` (TOML inline-table
    /// keys) on top.
    fn registry(settings: &str) -> ProfileRegistry {
        let text = format!(
            "entity_field = \"sensor\"\nmetrics = [{{ field = \"value\" }}]\ndetectors.zscore = {{ enabled = false }}\n\
             detectors.novelty = {{ {settings} }}\n"
        );
        let raw: RawProfile = toml::from_str(&text).unwrap();
        ProfileRegistry::with_builtins(BTreeMap::from([("probe".to_string(), raw)])).unwrap()
    }

    /// Readings every five minutes, as in most NAB files: the 300 readings of the learning
    /// period cover the first day.
    const READING_MS: i64 = 300_000;

    /// Feeds `values` as readings of one entity, one every `READING_MS`; per reading, its
    /// score (None while learning) and its anomalies.
    fn feed(registry: &ProfileRegistry, values: &[f64]) -> Vec<(Option<f64>, Vec<Anomaly>)> {
        feed_every(registry, values, READING_MS)
    }

    fn feed_every(registry: &ProfileRegistry, values: &[f64], every_ms: i64) -> Vec<(Option<f64>, Vec<Anomaly>)> {
        let profile = registry.by_name("probe").unwrap();
        let mut detector = NoveltyDetector::default();
        values
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let reading = Reading {
                    profile: profile.id,
                    entity: "s1".into(),
                    event_time_ms: i as i64 * every_ms,
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
                (findings.scores.first().map(|s| s.score), findings.anomalies)
            })
            .collect()
    }

    /// A stable, slightly noisy signal: 10, 11, 12, 11, 10, ... (period 4).
    fn stable(n: usize) -> Vec<f64> {
        (0..n).map(|i| [10.0, 11.0, 12.0, 11.0][i % 4]).collect()
    }

    #[test]
    fn levels_cut_the_learned_range_and_extend_beyond_it() {
        let levels = Levels::learned_from(&[10.0, 18.0, 14.0], 8);
        // Steps of 1 from 10: 10 is level 0, 17.5 level 7, the top 18 level 7 too.
        assert_eq!([10.0, 10.99, 17.5, 18.0].map(|x| levels.of(x)), [0, 0, 7, 7]);
        assert_eq!([9.5, 18.5, 40.0].map(|x| levels.of(x)), [-1, 8, 30]);
        let flat = Levels::learned_from(&[5.0, 5.0], 8);
        assert_eq!(flat.of(5.0), 0);
        assert!(flat.of(5.001) > 100, "any change from a flat range is far outside it");
    }

    #[test]
    fn hand_computed_novelty_of_a_short_sequence() {
        // Orders 2, raw novelty (history 0): the level alone and the pair ending in it.
        let registry =
            registry("learning_readings = 2, orders = 2, history_readings = 0, threshold = 1.0, day_parts = 0");
        let settings = registry.by_name("probe").unwrap().detectors.novelty.clone().unwrap();
        let mut state = MetricState::new(&settings);
        // Learning [0, 8]: steps of 1. Replayed: level 0 (new), then 7 (new), pair (0, 7) new.
        assert_eq!(state.observe(0.0, 0, &settings), None);
        assert_eq!(state.observe(8.0, 0, &settings), None);
        let judge = |state: &mut MetricState, x: f64| state.observe(x, 0, &settings).unwrap().novelty;
        assert_eq!(judge(&mut state, 0.0), 0.5, "level 0 seen, pair (7, 0) new");
        assert_eq!(judge(&mut state, 8.0), 0.0, "level 7 and pair (0, 7) seen");
        assert_eq!(judge(&mut state, 4.0), 1.0, "level 4 and pair (7, 4) new");
        assert_eq!(judge(&mut state, 0.0), 0.5, "pair (4, 0) new");
        assert_eq!(judge(&mut state, 4.0), 0.5, "pair (0, 4) new");
        assert_eq!(judge(&mut state, 0.0), 0.0, "pair (4, 0) seen");
    }

    #[test]
    fn the_first_readings_of_a_new_series_are_never_judged() {
        let registry = registry("");
        let mut values = stable(300);
        values[5] = 1000.0;
        values[200] = -1000.0;
        let results = feed(&registry, &values);
        assert!(results.iter().all(|(score, anomalies)| score.is_none() && anomalies.is_empty()));
        let results = feed(&registry, &stable(301));
        assert!(results[300].0.is_some(), "judged from reading 301 on");
    }

    #[test]
    fn a_clear_spike_after_a_stable_stretch_is_flagged_once() {
        // New extremes aside, so the sequences and their likelihood judge the spike.
        let registry = registry("extreme_margin = inf");
        let mut values = stable(1000);
        values[700] = 40.0;
        let results = feed(&registry, &values);
        let flagged: Vec<usize> = (0..values.len()).filter(|&i| !results[i].1.is_empty()).collect();
        // One anomaly, at the spike or the reading after it: the likelihood judges the novelty
        // of the last ten readings, and the return from the spike is a new pair too.
        assert_eq!(flagged.len(), 1, "{flagged:?}");
        assert!((700..=701).contains(&flagged[0]), "{flagged:?}");
        let anomaly = &results[flagged[0]].1[0];
        let value = values[flagged[0]];
        assert_eq!((anomaly.detector, anomaly.metric.as_deref(), anomaly.value), (NAME, Some("value"), Some(value)));
        assert!(anomaly.score >= 0.2 && anomaly.score <= 1.0, "{}", anomaly.score);
        assert!(
            anomaly.reason.contains("3 level sequences and its level at this part of the day never seen before"),
            "{}",
            anomaly.reason
        );
        assert!(anomaly.reason.contains("new in its last 10 readings is unusual"), "{}", anomaly.reason);
        // Resting afterwards: scores 0 for the next 200 readings.
        let rest = flagged[0] + 1..flagged[0] + 201;
        assert!(results[rest].iter().all(|(score, _)| *score == Some(0.0)));
    }

    #[test]
    fn a_level_shift_raises_one_anomaly_then_is_learned() {
        let registry = registry("");
        let mut values = stable(3000);
        for value in &mut values[1000..] {
            *value += 30.0;
        }
        let results = feed(&registry, &values);
        let flagged: Vec<usize> = (0..values.len()).filter(|&i| !results[i].1.is_empty()).collect();
        assert_eq!(flagged.len(), 1, "{flagged:?}");
        assert!((1000..=1001).contains(&flagged[0]), "{flagged:?}");
        assert!(results[flagged[0]].1[0].reason.contains("(above the range it learned)"));
    }

    #[test]
    fn a_new_extreme_is_beyond_every_value_before_by_the_margin_of_their_span() {
        let registry = registry("learning_readings = 3");
        let settings = registry.by_name("probe").unwrap().detectors.novelty.clone().unwrap();
        let mut state = MetricState::new(&settings);
        assert!(!state.is_new_extreme(1e9, 0.05), "nothing before the first value");
        for x in [0.0, 10.0, 5.0] {
            assert_eq!(state.observe(x, 0, &settings), None);
        }
        // Span 10, margin 5 %: beyond 10.5 above or -0.5 below.
        assert!(!state.is_new_extreme(10.5, 0.05) && state.is_new_extreme(10.51, 0.05));
        assert!(!state.is_new_extreme(-0.5, 0.05) && state.is_new_extreme(-0.51, 0.05));
        assert!(!state.is_new_extreme(-1e12, f64::INFINITY), "an infinite margin turns it off");
        // Judged from a day after the first reading on.
        assert_eq!(state.observe(5.0, DAY_MS - 1, &settings), None);
        let judgement = state.observe(11.0, DAY_MS, &settings).unwrap();
        assert!(judgement.new_extreme && judgement.is_anomaly && judgement.score == 1.0, "{judgement:?}");
        // 11 is now the top: 11.5 is within 5 % of the span 11, and the metric rests anyway.
        let judgement = state.observe(11.5, DAY_MS, &settings).unwrap();
        assert!(!judgement.new_extreme && !judgement.is_anomaly && judgement.score == 0.0, "{judgement:?}");
        // A new extreme is news while resting too: 13 is beyond 11.5 by more than 5 % of 13.5.
        let judgement = state.observe(13.0, DAY_MS, &settings).unwrap();
        assert!(judgement.new_extreme && judgement.is_anomaly && judgement.score == 1.0, "{judgement:?}");
    }

    #[test]
    fn hand_computed_novelty_with_the_part_of_the_day() {
        // Orders 1 and two parts of the day (before and after noon, UTC): each reading ends
        // its level alone and its level in its half of the day.
        let registry =
            registry("learning_readings = 2, orders = 1, history_readings = 0, threshold = 1.0, day_parts = 2");
        let settings = registry.by_name("probe").unwrap().detectors.novelty.clone().unwrap();
        let mut state = MetricState::new(&settings);
        let morning = |day: i64| day * DAY_MS + 3_600_000;
        let evening = |day: i64| day * DAY_MS + 13 * 3_600_000;
        // Learning [0, 8] on the first morning: levels 0 and 7, each seen in the morning.
        assert_eq!(state.observe(0.0, morning(0), &settings), None);
        assert_eq!(state.observe(8.0, morning(0), &settings), None);
        // The first evening and the rest of the first day are learned, not judged.
        assert_eq!(state.observe(8.0, evening(0), &settings), None);
        let judge = |state: &mut MetricState, x: f64, at: i64| state.observe(x, at, &settings).unwrap().novelty;
        assert_eq!(judge(&mut state, 0.0, morning(1)), 0.0, "level 0 seen, and seen in the morning");
        assert_eq!(judge(&mut state, 0.0, evening(1)), 0.5, "level 0 seen, never in the evening");
        assert_eq!(judge(&mut state, 0.0, evening(2)), 0.0, "now seen in the evening too");
        assert_eq!(judge(&mut state, 4.0, morning(3)), 1.0, "level 4 never seen, nor in the morning");
        assert_eq!(day_part(-1, 2), Some(1), "a time before 1970 falls in its own day's part");
        assert_eq!((day_part(DAY_MS - 1, 24), day_part(0, 0)), (Some(23), None));
    }

    #[test]
    fn a_level_usual_by_day_is_new_at_night() {
        // Readings every 5 minutes: 80 from 08:00 to 20:00 UTC, 20 otherwise, for a week;
        // then 80 at 03:00. Its level and the sequences it ends are familiar (80 after 20s
        // happens every morning); 80 at 03:00 never happened: one of its four items is new.
        let daily =
            |time_ms: i64| if (8..20).contains(&(time_ms.rem_euclid(DAY_MS) / 3_600_000)) { 80.0 } else { 20.0 };
        for (day_parts, novelty) in [(24, 0.25), (0, 0.0)] {
            let registry = registry(&format!("extreme_margin = inf, day_parts = {day_parts}"));
            let settings = registry.by_name("probe").unwrap().detectors.novelty.clone().unwrap();
            let mut state = MetricState::new(&settings);
            let week = 7 * DAY_MS / READING_MS;
            for time_ms in (0..week).map(|i| i * READING_MS) {
                state.observe(daily(time_ms), time_ms, &settings);
            }
            let night = 7 * DAY_MS + 3 * 3_600_000;
            let judgement = state.observe(80.0, night, &settings).unwrap();
            assert_eq!(judgement.novelty, novelty, "day_parts {day_parts}");
        }
    }

    #[test]
    fn with_parts_of_the_day_the_first_day_is_learned_before_any_verdict() {
        // One reading a minute: the learning period's 300 readings are five hours.
        let results = feed_every(&registry(""), &stable(3000), 60_000);
        assert!(results[..1440].iter().all(|(score, _)| score.is_none()));
        assert!(results[1440..].iter().all(|(score, anomalies)| score == &Some(0.0) && anomalies.is_empty()));
        let results = feed_every(&registry("day_parts = 0"), &stable(400), 60_000);
        assert!(results[299].0.is_none() && results[300].0.is_some());
    }

    #[test]
    fn a_constant_series_then_a_jump_gives_one_anomaly_not_thirty() {
        let registry = registry("");
        let mut values = vec![50.0; 2000];
        for value in &mut values[1200..] {
            *value = 80.0;
        }
        let results = feed(&registry, &values);
        let flagged: Vec<usize> = (0..values.len()).filter(|&i| !results[i].1.is_empty()).collect();
        assert_eq!(flagged, [1200]);
        let anomaly = &results[1200].1[0];
        assert_eq!(anomaly.score, 1.0);
        assert!(
            anomaly.reason.contains(
                "80 (above the range it learned) lies beyond every value it had before by more than 5% of their span"
            ),
            "{}",
            anomaly.reason
        );
        assert!(anomaly.features.contains(&(Arc::from("new_extreme"), 1.0)));
    }

    #[test]
    fn a_constant_series_is_never_flagged_and_scores_are_finite_in_the_unit_interval() {
        let registry = registry("");
        for values in [vec![7.5; 5000], stable(5000), vec![0.0; 5000]] {
            let results = feed(&registry, &values);
            assert!(results.iter().all(|(_, anomalies)| anomalies.is_empty()));
            assert!(results.iter().filter_map(|r| r.0).all(|s| s.is_finite() && (0.0..=1.0).contains(&s)));
            assert!(results[300..].iter().all(|r| r.0 == Some(0.0)));
        }
    }

    #[test]
    fn memory_stays_bounded_on_a_series_that_never_repeats() {
        // Every value a new level: generations turn over, nothing grows, scores stay in [0, 1].
        let registry = registry("memory_bits_log2 = 10, learning_readings = 10");
        let values: Vec<f64> = (0..20_000).map(|i| f64::from(i) * 1e3).collect();
        let results = feed(&registry, &values);
        assert!(results.iter().filter_map(|r| r.0).all(|s| s.is_finite() && (0.0..=1.0).contains(&s)));
        let mut seen = SeenSequences::new(10);
        for i in 0..100_000_u64 {
            seen.check_and_insert(mix(1, i as i64));
        }
        assert_eq!((seen.current.len(), seen.previous.len()), (16, 16));
        assert!(seen.added < seen.generation_size);
    }

    #[test]
    fn the_upper_tail_matches_known_values() {
        for (z, tail) in [(0.0, 0.5), (1.0, 0.158_655_25), (3.0, 0.001_349_898), (-2.0, 0.977_249_87)] {
            assert!((upper_tail(z) - tail).abs() < 1e-7 * tail.max(1e-3), "{z}: {}", upper_tail(z));
        }
        assert!((upper_tail(6.0) / 9.865_876_45e-10 - 1.0).abs() < 1e-5);
    }

    #[test]
    fn settings_out_of_range_are_refused_with_their_values() {
        let text = "entity_field = \"sensor\"\nmetrics = [{ field = \"value\" }]\n\
                    detectors.novelty = { orders = 0, threshold = 1.5, memory_bits_log2 = 40, extreme_margin = -1.0, metrics = [\"nope\"] }\n";
        let raw: RawProfile = toml::from_str(text).unwrap();
        let error = ProfileRegistry::with_builtins(BTreeMap::from([("probe".to_string(), raw)])).unwrap_err();
        let text = format!("{error:#}");
        for part in [
            "orders 0 from 1 to 16",
            "threshold 1.5 must lie in (0, 1]",
            "memory_bits_log2 40",
            "extreme_margin -1 must be 0 or more",
            "`nope`",
        ] {
            assert!(text.contains(part), "{part:?} in {text}");
        }
    }
}
