//! Sequence novelty per entity and metric: how much of what a metric just did was never seen.
//!
//! Each metric's values are cut into a few levels of the range it kept during its first
//! readings (its learning period); each reading then ends one sequence of levels per order,
//! the current level alone and with the one, two, ... `orders - 1` levels before it. The score
//! is the fraction of those sequences never seen before: 0 for a familiar pattern, 1 for a
//! level or a jump the metric never made. After an anomaly the detector rests (scores 0) for a
//! number of readings, so one event raises one anomaly and the new behaviour is learned
//! meanwhile. This is the idea of contextual anomaly detection (Smirnov's CAD OSE, 2016, in
//! the Numenta Anomaly Benchmark), cut down to constant work and memory per reading:
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
    step: f64,
}

impl Levels {
    /// Levels over the range of `values`; a range of one value gets steps of a millionth of
    /// its magnitude (or 1e-9), so any change from it is a new level.
    fn learned_from(values: &[f64], levels: usize) -> Self {
        let low = values.iter().copied().fold(f64::INFINITY, f64::min);
        let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let span = high - low;
        let step = if span > 0.0 { span / levels as f64 } else { (low.abs() * 1e-6).max(1e-9) };
        Levels { low, step }
    }

    /// The level of `x`; the top of the range is the top level, not one above it.
    fn of(&self, x: f64, levels: usize) -> i64 {
        let level = ((x - self.low) / self.step).floor();
        // `as` saturates: a value far outside the range is a level of its own all the same.
        let level = level as i64;
        if level == levels as i64 { level - 1 } else { level }
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

/// Readings the novelty is averaged over before it is judged.
const AVERAGE_READINGS: usize = 10;
/// The smallest mean and variance of the averaged novelty (as Numenta's): without them a
/// metric that was never novel would call its first blip certain.
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
        let average = (self.recent_sum / AVERAGE_READINGS as f64).max(0.0);
        // Judged against the estimates before this reading joins them.
        let mean = self.mean.max(MEAN_FLOOR);
        let std = self.variance.max(VARIANCE_FLOOR).sqrt();
        let score = if average <= mean {
            0.0
        } else {
            let tail = upper_tail((average - mean) / std).max(TAIL_FLOOR);
            tail.ln() / TAIL_FLOOR.ln()
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

/// What the detector knows of one metric of one entity.
#[derive(Debug, Clone)]
struct MetricState {
    /// Values of the learning period, until it ends; then empty and unused.
    learning: Vec<f64>,
    levels: Option<Levels>,
    /// The last `orders - 1` levels, newest first.
    recent: [i64; MAX_ORDERS],
    /// How many of `recent` are real levels.
    recent_len: usize,
    seen: SeenSequences,
    likelihood: Likelihood,
    /// Readings since the last anomaly, `None` before the first.
    since_anomaly: Option<u64>,
}

/// One reading's judgement of one metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judgement {
    /// The fraction of the reading's sequences never seen, in [0, 1]; 0 while resting.
    pub score: f64,
    /// The fraction before the rest after an anomaly is applied.
    pub novelty: f64,
    pub level: i64,
    pub is_anomaly: bool,
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
        }
    }

    /// Takes `x` in; a judgement once the learning period is over.
    fn observe(&mut self, x: f64, settings: &NoveltySettings) -> Option<Judgement> {
        let Some(levels) = self.levels else {
            self.learning.push(x);
            if self.learning.len() >= settings.learning_readings {
                let levels = Levels::learned_from(&self.learning, settings.levels);
                self.levels = Some(levels);
                for value in std::mem::take(&mut self.learning) {
                    let novel = self.remember(levels.of(value, settings.levels), settings.orders);
                    self.likelihood.observe(novel as f64 / settings.orders as f64, settings.history_readings);
                }
            }
            return None;
        };
        let level = levels.of(x, settings.levels);
        let novel = self.remember(level, settings.orders);
        let novelty = novel as f64 / settings.orders as f64;
        let unusual = self.likelihood.observe(novelty, settings.history_readings);
        let resting = self.since_anomaly.is_some_and(|since| since < settings.rest_readings);
        self.since_anomaly = self.since_anomaly.map(|since| since + 1);
        let score = if resting {
            0.0
        } else if settings.history_readings == 0 {
            novelty
        } else {
            unusual
        };
        let is_anomaly = score >= settings.threshold;
        if is_anomaly {
            self.since_anomaly = Some(0);
        }
        Some(Judgement { score, novelty, level, is_anomaly })
    }

    /// Records the sequences `level` ends and returns how many of them were new.
    fn remember(&mut self, level: i64, orders: usize) -> usize {
        let mut hash = mix(0x5EED, level);
        let mut novel = usize::from(!self.seen.check_and_insert(hash));
        for order in 1..orders {
            // Before a metric has `order` earlier levels, the missing ones count as seen.
            if order > self.recent_len {
                break;
            }
            hash = mix(hash, self.recent[order - 1]);
            novel += usize::from(!self.seen.check_and_insert(hash));
        }
        self.recent.copy_within(0..MAX_ORDERS - 1, 1);
        self.recent[0] = level;
        self.recent_len = (self.recent_len + 1).min(orders.saturating_sub(1));
        novel
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
            if let Some(judgement) = state.observe(x, settings) {
                if judgement.is_anomaly || findings.keeps_scores() {
                    record(observation, settings, metric, x, judgement, findings);
                }
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
    findings.anomalies.push(Anomaly {
        id: anomaly_id(&profile.name, &reading.entity, reading.event_time_ms, NAME, name),
        detector: NAME,
        metric: Some(name.clone()),
        value: Some(x),
        score: judgement.score,
        threshold: settings.threshold,
        severity: Severity::from_excess(judgement.score, settings.threshold),
        reason: format!(
            "{name} {} ({level_text}) ends {}% of its last {} level sequences never seen before",
            ForPeople(x),
            ForPeople(novel_percent),
            settings.orders,
        ),
        features: vec![
            (Arc::from("value"), x),
            (Arc::from("level"), judgement.level as f64),
            (Arc::from("novelty"), judgement.novelty),
        ],
        episode: None,
    });
}
