//! Isolation forest (Liu, Ting and Zhou, 2008) over a profile's features, trained on the first
//! readings of its scope (references 001 and 002).
//!
//! Trees split on a random feature at a random value between the node's minimum and maximum,
//! down to depth ⌈log₂ ψ⌉ for a subsample of ψ = min(256, n) readings; a reading's score is
//! 2^(−E[h(x)] / c(ψ)), where h is the path length plus c(size) at the leaf. The threshold is
//! the (1 − contamination) quantile of the training scores. This is the algorithm of
//! scikit-learn's `IsolationForest`; its `score_samples` is the negative of this score.
//!
//! Scoring walks a layout rebuilt from the trees on load (`packed`): rank-coded 16-bit nodes
//! gathered eight trees at a time on CPUs with AVX2 (`avx2`), plain nodes elsewhere.
//! Models trained ahead of time on normal readings, and the records that carry them with their
//! settings, are in [`trained`].

#[cfg(target_arch = "x86_64")]
mod avx2;
mod packed;
pub mod trained;

use super::settings::{Feature, IsolationForestSettings, ModelScope};
use super::{Detector, EntityMap, Findings, Observation, for_people};
use crate::model::{Anomaly, Episode, Severity, anomaly_id};
use packed::Packed;
use rand::rngs::SmallRng;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The detector's name on anomalies.
pub const NAME: &str = "isolation_forest";

/// The largest subsample a tree is grown from.
const MAX_SUBSAMPLE: usize = 256;
/// Readings kept for retraining, per scope.
const RESERVOIR_SIZE: usize = 1024;

/// The average path length of an unsuccessful search in a binary search tree of `n` items.
pub fn average_path_length(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let n = n as f64;
            2.0 * ((n - 1.0).ln() + 0.577_215_664_901_532_9) - 2.0 * (n - 1.0) / n
        }
    }
}

/// One isolation tree, stored as a complete binary tree of depth `depth` so scoring is a
/// fixed number of branch-free steps: internal node `i` sends `x` to child `2i + 1` or, when
/// `x[feature[i]] >= threshold[i]`, to `2i + 2`. A leaf above the last level continues down
/// its leftmost path through pass-through nodes (threshold +∞); each slot of the last level
/// holds the path length of the leaf it belongs to: its depth plus c(size).
/// Values are compared as `f32`, as scikit-learn's trees do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    depth: u8,
    feature: Vec<u16>,
    #[serde(with = "infinite_as_null")]
    threshold: Vec<f32>,
    leaf_path: Vec<f32>,
}

/// JSON has no infinity: pass-through thresholds (+∞) are written as null.
mod infinite_as_null {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(values: &[f32], serializer: S) -> Result<S::Ok, S::Error> {
        let wire: Vec<Option<f32>> = values.iter().map(|v| v.is_finite().then_some(*v)).collect();
        wire.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<f32>, D::Error> {
        let wire: Vec<Option<f32>> = Vec::deserialize(deserializer)?;
        Ok(wire.into_iter().map(|v| v.unwrap_or(f32::INFINITY)).collect())
    }
}

impl Tree {
    fn grow(data: &[Vec<f64>], rows: &mut [usize], depth: usize, rng: &mut SmallRng) -> Tree {
        let internal = (1usize << depth) - 1;
        let mut tree = Tree {
            depth: depth as u8,
            feature: vec![0; internal],
            threshold: vec![f32::INFINITY; internal],
            leaf_path: vec![0.0; internal + 1],
        };
        tree.node(data, rows, 0, 0, rng);
        tree
    }

    /// Ends the path at `index` (depth `level`): its leftmost descendant on the last level
    /// carries the path length.
    fn leaf(&mut self, mut index: usize, mut level: usize, size: usize) {
        let path = level as f64 + average_path_length(size);
        while level < usize::from(self.depth) {
            index = 2 * index + 1;
            level += 1;
        }
        self.leaf_path[index - self.feature.len()] = path as f32;
    }

    fn node(&mut self, data: &[Vec<f64>], rows: &mut [usize], index: usize, level: usize, rng: &mut SmallRng) {
        if rows.len() <= 1 || level >= usize::from(self.depth) {
            return self.leaf(index, level, rows.len());
        }
        let features = data[0].len();
        // Try features in random order until one is not constant here.
        let mut order: Vec<usize> = (0..features).collect();
        for tried in 0..features {
            let pick = rng.random_range(tried..features);
            order.swap(tried, pick);
            let feature = order[tried];
            let (min, max) = rows.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &r| {
                let x = data[r][feature] as f32;
                (lo.min(x), hi.max(x))
            });
            if max <= min {
                continue;
            }
            let split = (f64::from(min) + rng.random::<f64>() * f64::from(max - min)) as f32;
            let split = if split <= min { max } else { split };
            let mut boundary = 0;
            for i in 0..rows.len() {
                if (data[rows[i]][feature] as f32) < split {
                    rows.swap(i, boundary);
                    boundary += 1;
                }
            }
            self.feature[index] = feature as u16;
            self.threshold[index] = split;
            let (low, high) = rows.split_at_mut(boundary);
            self.node(data, low, 2 * index + 1, level + 1, rng);
            self.node(data, high, 2 * index + 2, level + 1, rng);
            return;
        }
        self.leaf(index, level, rows.len())
    }
}

/// A forest as stored: its trees and what it learnt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredForest {
    trees: Vec<Tree>,
    subsample: usize,
    threshold: f64,
    feature_mean: Vec<f64>,
    feature_std: Vec<f64>,
    trained_on: usize,
}

impl From<StoredForest> for IsolationForest {
    fn from(stored: StoredForest) -> Self {
        IsolationForest {
            packed: Packed::of(&stored.trees),
            trees: stored.trees,
            subsample: stored.subsample,
            threshold: stored.threshold,
            feature_mean: stored.feature_mean,
            feature_std: stored.feature_std,
            trained_on: stored.trained_on,
        }
    }
}

impl From<IsolationForest> for StoredForest {
    fn from(forest: IsolationForest) -> Self {
        StoredForest {
            trees: forest.trees,
            subsample: forest.subsample,
            threshold: forest.threshold,
            feature_mean: forest.feature_mean,
            feature_std: forest.feature_std,
            trained_on: forest.trained_on,
        }
    }
}

/// A trained forest with its threshold and what typical training readings look like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredForest", into = "StoredForest")]
pub struct IsolationForest {
    trees: Vec<Tree>,
    packed: Packed,
    subsample: usize,
    /// Scores above this are anomalies.
    pub threshold: f64,
    /// Per feature: mean and standard deviation of the training readings.
    pub feature_mean: Vec<f64>,
    pub feature_std: Vec<f64>,
    pub trained_on: usize,
}

impl IsolationForest {
    /// Grows `trees` trees on `data` (rows of equal length) and sets the threshold so that a
    /// `contamination` share of the training rows score above it.
    pub fn fit(data: &[Vec<f64>], trees: usize, contamination: f64, seed: u64) -> IsolationForest {
        assert!(!data.is_empty(), "an isolation forest needs training data");
        let mut rng = SmallRng::seed_from_u64(seed);
        let subsample = data.len().min(MAX_SUBSAMPLE);
        let max_depth = (subsample.max(2) as f64).log2().ceil() as usize;
        debug_assert!(max_depth <= 16, "subsamples are at most {MAX_SUBSAMPLE}");
        let grown: Vec<Tree> = (0..trees)
            .map(|_| {
                let mut rows: Vec<usize> = sample(&mut rng, data.len(), subsample).into_vec();
                Tree::grow(data, &mut rows, max_depth, &mut rng)
            })
            .collect();
        let features = data[0].len();
        let n = data.len() as f64;
        let feature_mean: Vec<f64> = (0..features).map(|f| data.iter().map(|r| r[f]).sum::<f64>() / n).collect();
        let feature_std = (0..features)
            .map(|f| (data.iter().map(|r| (r[f] - feature_mean[f]).powi(2)).sum::<f64>() / n).sqrt())
            .collect();
        let mut forest = IsolationForest {
            packed: Packed::of(&grown),
            trees: grown,
            subsample,
            threshold: 0.0,
            feature_mean,
            feature_std,
            trained_on: data.len(),
        };
        let mut scores: Vec<f64> = data.iter().map(|row| forest.score(row)).collect();
        scores.sort_by(f64::total_cmp);
        forest.threshold = quantile(&scores, 1.0 - contamination);
        forest
    }

    /// Grows the trees on the readings not held back and sets the threshold from the held-back
    /// ones: their highest score plus the gap between it and their 99th percentile, so that a
    /// reading must stand out from the most unusual normal readings as much as those stand out
    /// from the rest. Every `1 / holdout`-th reading (in order) is held back, so both parts
    /// span the whole training period. `holdout` 0 is [`IsolationForest::fit`].
    pub fn fit_with_holdout(
        data: &[Vec<f64>],
        trees: usize,
        holdout: f64,
        contamination: f64,
        seed: u64,
    ) -> IsolationForest {
        if holdout <= 0.0 {
            return IsolationForest::fit(data, trees, contamination, seed);
        }
        let mut grown_on = Vec::new();
        let mut held_back = Vec::new();
        let mut credit = 0.0;
        for row in data {
            credit += holdout;
            if credit >= 1.0 {
                credit -= 1.0;
                held_back.push(row.clone());
            } else {
                grown_on.push(row.clone());
            }
        }
        if held_back.is_empty() || grown_on.len() < 2 {
            return IsolationForest::fit(data, trees, contamination, seed);
        }
        let mut forest = IsolationForest::fit(&grown_on, trees, contamination, seed);
        let mut scores: Vec<f64> = held_back.iter().map(|row| forest.score(row)).collect();
        scores.sort_by(f64::total_cmp);
        let highest = scores[scores.len() - 1];
        forest.threshold = highest + (highest - quantile(&scores, 0.99));
        forest.trained_on = data.len();
        forest
    }

    /// 2^(−E[h(x)] / c(ψ)): near 1 for readings isolated quickly, near 0.5 or below otherwise.
    pub fn score(&self, x: &[f64]) -> f64 {
        let mut narrow = [0f32; 32];
        let wide: Vec<f32>;
        let x: &[f32] = if x.len() <= narrow.len() {
            for (slot, value) in narrow.iter_mut().zip(x) {
                *slot = *value as f32;
            }
            &narrow[..x.len()]
        } else {
            wide = x.iter().map(|v| *v as f32).collect();
            &wide
        };
        let total = self.packed.path_length_sum(x);
        let mean_path = f64::from(total) / self.trees.len() as f64;
        2f64.powf(-mean_path / average_path_length(self.subsample))
    }
}

/// Linear-interpolated quantile of sorted values (numpy's default).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let position = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (low, high) = (position.floor() as usize, position.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (position - low as f64)
}

/// Which model a reading is scored by: its profile's, or its own entity's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelKey {
    pub profile: Arc<str>,
    pub entity: Option<Arc<str>>,
}

impl ModelKey {
    /// How the key is written in the store, e.g. `drone` or `drone/d-1`.
    pub fn label(&self) -> String {
        match &self.entity {
            Some(entity) => format!("{}/{entity}", self.profile),
            None => self.profile.to_string(),
        }
    }
}

#[derive(Debug)]
enum ScopeState {
    Collecting(Vec<Vec<f64>>),
    Trained { model: Arc<IsolationForest>, reservoir: Vec<Vec<f64>>, seen: u64, since_training: usize },
}

/// Models shared by every worker's detector: training data of a scope is gathered from all
/// of them, so a per-profile model does not depend on how entities are sharded.
#[derive(Debug, Default)]
pub struct ModelRegistry {
    scopes: Mutex<HashMap<ModelKey, ScopeState>>,
    trained: Mutex<Vec<(ModelKey, Arc<IsolationForest>)>>,
}

impl ModelRegistry {
    /// Installs a model loaded from the store.
    pub fn install(&self, key: ModelKey, model: IsolationForest) {
        let state = ScopeState::Trained { model: Arc::new(model), reservoir: Vec::new(), seen: 0, since_training: 0 };
        self.scopes.lock().expect("model registry lock").insert(key, state);
    }

    /// Models trained since the last call, to be stored.
    pub fn take_trained(&self) -> Vec<(ModelKey, Arc<IsolationForest>)> {
        std::mem::take(&mut *self.trained.lock().expect("model registry lock"))
    }

    /// Feeds one feature vector to its scope; answers the model to score it with, if trained.
    fn offer(
        &self,
        key: &ModelKey,
        features: &[f64],
        settings: &IsolationForestSettings,
    ) -> Option<Arc<IsolationForest>> {
        let mut scopes = self.scopes.lock().expect("model registry lock");
        let state = scopes.entry(key.clone()).or_insert_with(|| ScopeState::Collecting(Vec::new()));
        match state {
            ScopeState::Collecting(rows) => {
                rows.push(features.to_vec());
                if rows.len() < settings.training_size {
                    return None;
                }
                let model = Arc::new(fit(rows, settings, seed(key, settings)));
                let reservoir = std::mem::take(rows);
                let seen = reservoir.len() as u64;
                *state = ScopeState::Trained { model: model.clone(), reservoir, seen, since_training: 0 };
                self.trained.lock().expect("model registry lock").push((key.clone(), model.clone()));
                // The training readings themselves are not scored: the model has not seen them yet.
                None
            }
            ScopeState::Trained { model, reservoir, seen, since_training } => {
                if settings.retrain_every == 0 {
                    return Some(model.clone());
                }
                *seen += 1;
                if reservoir.len() < RESERVOIR_SIZE {
                    reservoir.push(features.to_vec());
                } else {
                    let slot =
                        (seed(key, settings).wrapping_add(*seen).wrapping_mul(0x9E37_79B9_7F4A_7C15) % *seen) as usize;
                    if slot < RESERVOIR_SIZE {
                        reservoir[slot] = features.to_vec();
                    }
                }
                *since_training += 1;
                if *since_training >= settings.retrain_every {
                    *since_training = 0;
                    *model = Arc::new(fit(reservoir, settings, seed(key, settings) ^ *seen));
                    self.trained.lock().expect("model registry lock").push((key.clone(), model.clone()));
                }
                Some(model.clone())
            }
        }
    }
}

/// A model for `rows` as `settings` say.
fn fit(rows: &[Vec<f64>], settings: &IsolationForestSettings, seed: u64) -> IsolationForest {
    IsolationForest::fit_with_holdout(rows, settings.trees, settings.holdout, settings.contamination, seed)
}

fn seed(key: &ModelKey, settings: &IsolationForestSettings) -> u64 {
    let label = key.label();
    crate::model::stable_hash(&[&settings.seed.to_le_bytes(), label.as_bytes()])
}

/// A reading's metrics: (metric id, value).
type Metrics = Vec<(u16, f64)>;

/// Scores readings with their scope's forest once it is trained.
#[derive(Debug)]
pub struct IsolationForestDetector {
    models: Arc<ModelRegistry>,
    /// Trained models already fetched, so scoring does not take the registry's lock.
    cached: rustc_hash::FxHashMap<ModelKey, Arc<IsolationForest>>,
    /// Each entity's previous metrics and open episode.
    entities: EntityMap<EntityState>,
    features: Vec<f64>,
}

impl IsolationForestDetector {
    pub fn new(models: Arc<ModelRegistry>) -> Self {
        IsolationForestDetector {
            models,
            cached: Default::default(),
            entities: EntityMap::default(),
            features: Vec::new(),
        }
    }
}

/// Readings in a row back under the threshold that close an entity's episode.
const QUIET_READINGS: usize = 3;

/// What the detector remembers of one entity.
#[derive(Debug, Default)]
struct EntityState {
    /// The previous reading's metrics, for `_diff` and `_change` features.
    previous: Metrics,
    /// The anomaly of the run of anomalous readings open now: one anomaly per run, sent again
    /// with its end once `QUIET_READINGS` readings in a row are normal.
    episode: Option<Box<Anomaly>>,
    quiet: usize,
}

/// Fills `out` with the reading's features; false when one is missing.
fn compute_features(
    settings: &IsolationForestSettings,
    metrics: &[(u16, f64)],
    previous: Option<&Metrics>,
    out: &mut Vec<f64>,
) -> bool {
    out.clear();
    let value = |list: &[(u16, f64)], id: u16| list.iter().find(|(m, _)| *m == id).map(|(_, v)| *v);
    for feature in &settings.features {
        let x = match *feature {
            Feature::Metric(id) => value(metrics, id),
            Feature::Diff(id) => {
                value(metrics, id).map(|now| previous.and_then(|p| value(p, id)).map_or(0.0, |before| now - before))
            }
            Feature::AngleChange(id) => value(metrics, id).map(|now| {
                previous
                    .and_then(|p| value(p, id))
                    .map_or(0.0, |before| (now - before + 540.0).rem_euclid(360.0) - 180.0)
            }),
        };
        match x {
            Some(x) => out.push(x),
            None => return false,
        }
    }
    true
}

impl Detector for IsolationForestDetector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn observe(&mut self, observation: Observation<'_>, findings: &mut Findings) {
        let Observation { profile, reading, .. } = observation;
        let Some(settings) = &profile.detectors.isolation_forest else { return };
        let entity = self.entities.get_or_insert_with(reading.profile, &reading.entity, EntityState::default);
        let complete = compute_features(
            settings,
            &reading.metrics,
            Some(&entity.previous).filter(|p| !p.is_empty()),
            &mut self.features,
        );
        entity.previous.clone_from(&reading.metrics);
        if !complete {
            return;
        }
        let key = ModelKey {
            profile: profile.name.clone(),
            entity: (settings.scope == ModelScope::Entity).then(|| reading.entity.clone()),
        };
        let model = match self.cached.get(&key) {
            Some(model) if settings.retrain_every == 0 => Some(model.clone()),
            _ => self.models.offer(&key, &self.features, settings),
        };
        let Some(model) = model else { return };
        if settings.retrain_every == 0 {
            self.cached.entry(key.clone()).or_insert_with(|| model.clone());
        }
        let score = model.score(&self.features);
        let is_anomaly = score > model.threshold;
        let opens = is_anomaly && entity.episode.is_none();
        findings.score(NAME, || None, score, model.threshold, is_anomaly);
        if is_anomaly {
            entity.quiet = 0;
        } else if entity.episode.is_some() {
            entity.quiet += 1;
            if entity.quiet >= QUIET_READINGS
                && let Some(mut open) = entity.episode.take()
            {
                let start_ms = open.episode.map_or(reading.event_time_ms, |e| e.start_ms);
                open.episode = Some(Episode { start_ms, end_ms: Some(reading.event_time_ms) });
                findings.anomalies.push(*open);
            }
        }
        if !opens {
            return;
        }
        let mut drivers: Vec<(usize, f64)> = self
            .features
            .iter()
            .enumerate()
            .map(|(i, x)| (i, (x - model.feature_mean[i]).abs() / model.feature_std[i].max(1e-9)))
            .collect();
        drivers.sort_by(|a, b| b.1.total_cmp(&a.1));
        let unusual: Vec<String> = drivers
            .iter()
            .take(2)
            .map(|&(i, _)| {
                format!(
                    "{} {} (typical {})",
                    settings.feature_names[i],
                    for_people(self.features[i]),
                    for_people(model.feature_mean[i])
                )
            })
            .collect();
        let anomaly = Anomaly {
            id: anomaly_id(&profile.name, &reading.entity, reading.event_time_ms, NAME, ""),
            detector: NAME,
            metric: None,
            value: None,
            score,
            threshold: model.threshold,
            severity: Severity::from_share_of_headroom(score, model.threshold, 1.0),
            reason: format!(
                "isolation score {score:.3} is above the {:.3} threshold of the {} model (trained on {} readings); most unusual: {}",
                model.threshold,
                key.label(),
                model.trained_on,
                unusual.join(", ")
            ),
            features: settings.feature_names.iter().cloned().zip(self.features.iter().copied()).collect(),
            episode: Some(Episode { start_ms: reading.event_time_ms, end_ms: None }),
        };
        entity.episode = Some(Box::new(anomaly.clone()));
        findings.anomalies.push(anomaly);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cloud(n: usize, seed: u64) -> Vec<Vec<f64>> {
        let mut rng = SmallRng::seed_from_u64(seed);
        (0..n).map(|_| vec![rng.random::<f64>() * 2.0 - 1.0, rng.random::<f64>() * 2.0 - 1.0]).collect()
    }

    #[test]
    fn average_path_length_matches_the_paper() {
        assert_eq!(average_path_length(1), 0.0);
        assert_eq!(average_path_length(2), 1.0);
        assert!((average_path_length(256) - 10.2448).abs() < 1e-3);
    }

    #[test]
    fn outliers_score_higher_than_the_cloud() {
        let forest = IsolationForest::fit(&cloud(200, 1), 100, 0.05, 7);
        let inside = forest.score(&[0.0, 0.0]);
        let outside = forest.score(&[6.0, -6.0]);
        assert!(outside > 0.6 && inside < 0.5, "inside {inside}, outside {outside}");
        assert!(outside > forest.threshold && inside < forest.threshold);
    }

    #[test]
    fn threshold_flags_the_contamination_share_of_training_data() {
        let data = cloud(400, 2);
        let forest = IsolationForest::fit(&data, 100, 0.05, 3);
        let flagged = data.iter().filter(|row| forest.score(row) > forest.threshold).count();
        assert!((19..=21).contains(&flagged), "{flagged} of 400 flagged");
    }

    #[test]
    fn same_seed_same_model_and_it_round_trips_through_json() {
        let data = cloud(200, 4);
        let a = IsolationForest::fit(&data, 20, 0.05, 9);
        assert_eq!(a, IsolationForest::fit(&data, 20, 0.05, 9));
        let json = serde_json::to_string(&a).unwrap();
        let back: IsolationForest = serde_json::from_str(&json).unwrap();
        assert_eq!(a.score(&[0.3, 0.9]), back.score(&[0.3, 0.9]));
    }

    fn settings(scope: ModelScope, retrain_every: usize) -> IsolationForestSettings {
        IsolationForestSettings {
            features: vec![Feature::Metric(0), Feature::Metric(1)],
            feature_names: vec!["a".into(), "b".into()],
            scope,
            training_size: 50,
            holdout: 0.0,
            contamination: 0.05,
            trees: 10,
            retrain_every,
            seed: 0,
        }
    }

    #[test]
    fn a_scope_trains_once_on_its_first_readings_then_scores() {
        let registry = ModelRegistry::default();
        let key = ModelKey { profile: "drone".into(), entity: None };
        let settings = settings(ModelScope::Profile, 0);
        let rows = cloud(60, 5);
        let answers: Vec<bool> = rows.iter().map(|row| registry.offer(&key, row, &settings).is_some()).collect();
        assert!(answers[..50].iter().all(|scored| !scored), "no verdict while training");
        assert!(answers[50..].iter().all(|scored| *scored));
        let trained = registry.take_trained();
        assert_eq!(trained.len(), 1);
        assert_eq!(trained[0].1.trained_on, 50);
        assert!(registry.take_trained().is_empty());
    }

    #[test]
    fn retraining_on_a_schedule_replaces_the_model() {
        let registry = ModelRegistry::default();
        let key = ModelKey { profile: "drone".into(), entity: Some("d-1".into()) };
        let settings = settings(ModelScope::Entity, 100);
        let shifted: Vec<Vec<f64>> = cloud(250, 6).into_iter().map(|r| vec![r[0] + 10.0, r[1]]).collect();
        for row in cloud(50, 5).iter().chain(&shifted) {
            registry.offer(&key, row, &settings);
        }
        let trained = registry.take_trained();
        assert_eq!(trained.len(), 3, "the first model, then one every 100 readings");
        let latest = &trained[2].1;
        assert!(latest.score(&[10.0, 0.0]) < latest.score(&[0.0, 0.0]), "the new model learnt the shifted readings");
    }

    /// Readings of three features scattered normally (σ 1) around 0.
    fn normal_cloud(n: usize, seed: u64) -> Vec<Vec<f64>> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut gauss = move || {
            let (u1, u2): (f64, f64) = (rng.random::<f64>().max(f64::MIN_POSITIVE), rng.random());
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        };
        (0..n).map(|_| vec![gauss(), gauss(), gauss()]).collect()
    }

    #[test]
    fn a_held_back_threshold_sits_above_every_held_back_reading() {
        // Every fourth reading is held back; the threshold is their highest score plus its gap
        // to their 99th percentile, so none of them, and almost no new normal reading, is flagged.
        let data = normal_cloud(2000, 8);
        let forest = IsolationForest::fit_with_holdout(&data, 100, 0.25, 0.05, 3);
        let held_back: Vec<&Vec<f64>> = data.iter().skip(3).step_by(4).collect();
        assert_eq!(held_back.len(), 500);
        let highest = held_back.iter().map(|row| forest.score(row)).fold(f64::MIN, f64::max);
        assert!(forest.threshold > highest, "{} vs {highest}", forest.threshold);
        assert_eq!(forest.trained_on, 2000);
        let fresh = normal_cloud(5000, 9);
        let flagged = fresh.iter().filter(|row| forest.score(row) > forest.threshold).count();
        assert!(flagged <= 10, "{flagged} of 5000 normal readings flagged");
        // A reading far out in every feature at once is isolated sooner than any normal one.
        let outlier = [5.0, -5.0, 5.0];
        assert!(forest.score(&outlier) > forest.threshold, "{} vs {}", forest.score(&outlier), forest.threshold);
        // No holdout is reference 001's forest exactly.
        assert_eq!(
            IsolationForest::fit_with_holdout(&data, 20, 0.0, 0.05, 3),
            IsolationForest::fit(&data, 20, 0.05, 3)
        );
    }

    #[test]
    fn a_run_of_anomalous_readings_is_one_episode() {
        use crate::model::{Enrichment, Reading};
        let registry = crate::profile::ProfileRegistry::with_builtins(Default::default()).unwrap();
        let mut profile = (**registry.by_name("drone").unwrap()).clone();
        profile.detectors.isolation_forest = Some(IsolationForestSettings {
            features: vec![Feature::Metric(0), Feature::Metric(1), Feature::Metric(2)],
            feature_names: vec!["a".into(), "b".into(), "c".into()],
            training_size: 2000,
            holdout: 0.25,
            trees: 100,
            ..settings(ModelScope::Profile, 0)
        });
        let mut detector = IsolationForestDetector::new(Arc::new(ModelRegistry::default()));
        let mut rows = normal_cloud(2600, 10);
        for row in &mut rows[2500..2505] {
            *row = vec![5.0, -5.0, 5.0];
        }
        let mut emitted = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            let reading = Reading {
                profile: profile.id,
                entity: "d-1".into(),
                event_time_ms: i as i64 * 1000,
                position: None,
                metrics: vec![(0, row[0]), (1, row[1]), (2, row[2])],
                attributes: vec![],
            };
            let mut findings = Findings::default();
            let enrichment = Enrichment::default();
            detector.observe(
                Observation { profile: &profile, reading: &reading, enrichment: &enrichment, arrival_ms: None },
                &mut findings,
            );
            emitted.extend(findings.anomalies.into_iter().map(|a| (i, a)));
        }
        let summary: Vec<(usize, Option<Episode>)> =
            emitted.iter().filter(|(i, _)| (2490..2520).contains(i)).map(|(i, a)| (*i, a.episode)).collect();
        assert_eq!(
            summary,
            [
                (2500, Some(Episode { start_ms: 2_500_000, end_ms: None })),
                (2507, Some(Episode { start_ms: 2_500_000, end_ms: Some(2_507_000) }))
            ],
            "opened at the first, closed after three normal readings"
        );
        let run: Vec<&Anomaly> = emitted.iter().filter(|(i, _)| (2490..2520).contains(i)).map(|(_, a)| a).collect();
        assert_eq!(run[0].id, run[1].id);
    }

    #[test]
    fn constant_features_do_not_break_training() {
        let data: Vec<Vec<f64>> = (0..50).map(|i| vec![1.0, f64::from(i % 5)]).collect();
        let forest = IsolationForest::fit(&data, 10, 0.05, 1);
        assert!(forest.score(&[1.0, 2.0]).is_finite());
        let flat: Vec<Vec<f64>> = vec![vec![3.0, 3.0]; 20];
        assert!(IsolationForest::fit(&flat, 10, 0.05, 1).score(&[3.0, 3.0]).is_finite());
    }
}
