//! Isolation forests trained ahead of time (`teleguard train`) on readings known to be normal,
//! and the versioned records that carry them with the settings they were trained under, so a
//! model is refused under other settings instead of being misused.
//!
//! A model file (`<profile>.model.json`) is one JSON object:
//!
//! ```json
//! { "format": "teleguard-models", "version": 1, "profile": "drone",
//!   "trained_at": "2026-12-03T11:00:00.000Z", "teleguard_version": "0.1.0",
//!   "training": { "files": ["normal.csv"], "readings": 86400, "rejected": 0 },
//!   "isolation_forest": {
//!     "settings": { "features": ["altitude", "velocity"], "scope": "profile",
//!                   "training_size": 20000, "holdout": 0.25, "contamination": 0.05,
//!                   "trees": 100, "seed": 0 },
//!     "models": [ { "scope": "drone", "readings": 86400, "model": { "trees": [...], ... } } ] } }
//! ```
//!
//! A row of the store's `models` table holds one [`StoredModel`]: the same `settings` with one
//! `model`.

use super::{IsolationForest, ModelKey, compute_features, fit, seed};
use crate::detect::settings::{IsolationForestSettings, ModelScope};
use crate::model::Reading;
use crate::profile::Profile;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a model file says it is in its `format` field.
pub const MODEL_FILE_FORMAT: &str = "teleguard-models";
/// The version of the model file and stored-model layout this build writes and reads.
pub const MODEL_FILE_VERSION: u32 = 1;

/// The settings that shape a fitted forest; a model is used only under the same ones.
/// (`retrain_every` is left out: it says what happens after loading, not what was loaded.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainedUnder {
    pub features: Vec<String>,
    /// `profile` or `entity`.
    pub scope: String,
    pub training_size: usize,
    pub holdout: f64,
    pub contamination: f64,
    pub trees: usize,
    pub seed: u64,
}

impl TrainedUnder {
    pub fn of(settings: &IsolationForestSettings) -> TrainedUnder {
        TrainedUnder {
            features: settings.feature_names.iter().map(|f| f.to_string()).collect(),
            scope: match settings.scope {
                ModelScope::Profile => "profile".into(),
                ModelScope::Entity => "entity".into(),
            },
            training_size: settings.training_size,
            holdout: settings.holdout,
            contamination: settings.contamination,
            trees: settings.trees,
            seed: settings.seed,
        }
    }

    /// Each setting that differs, as `name: trained with A, configured B`.
    pub fn differences(&self, now: &TrainedUnder) -> Vec<String> {
        let mut differences = Vec::new();
        let mut compare = |name: &str, then: String, configured: String| {
            if then != configured {
                differences.push(format!("{name}: trained with {then}, configured {configured}"));
            }
        };
        compare("features", format!("{:?}", self.features), format!("{:?}", now.features));
        compare("scope", format!("{:?}", self.scope), format!("{:?}", now.scope));
        compare("training_size", self.training_size.to_string(), now.training_size.to_string());
        compare("holdout", self.holdout.to_string(), now.holdout.to_string());
        compare("contamination", self.contamination.to_string(), now.contamination.to_string());
        compare("trees", self.trees.to_string(), now.trees.to_string());
        compare("seed", self.seed.to_string(), now.seed.to_string());
        differences
    }
}

/// Why trained models cannot be used with a profile.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ModelMismatch {
    #[error("holds models of profile {found:?}, not of {wanted:?}: train them for {wanted:?} or pick its file")]
    OtherProfile { found: String, wanted: String },
    #[error(
        "is a {found_format:?} version {found_version} file; this build reads {MODEL_FILE_FORMAT:?} version \
         {MODEL_FILE_VERSION}: train the models again with this build"
    )]
    Version { found_format: String, found_version: u32 },
    #[error(
        "was trained for profile {profile:?} with an isolation forest, but the profile has it turned off: \
         enable detectors.isolation_forest or drop the models"
    )]
    ForestOff { profile: String },
    #[error(
        "was trained under other isolation-forest settings of profile {profile:?} ({}): train again with the \
         config used now (teleguard train ... --profile {profile} --config FILE), or use the config it was \
         trained with",
        differences.join("; ")
    )]
    Settings { profile: String, differences: Vec<String> },
    #[error("holds model scope {scope:?}, which is not one of profile {profile:?}'s")]
    Scope { scope: String, profile: String },
}

/// The readings a model file was trained on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingRecord {
    pub files: Vec<String>,
    pub readings: u64,
    pub rejected: u64,
}

/// One scope's forest in a model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeModel {
    /// `drone`, or `drone/d-1` for an entity's own model.
    pub scope: String,
    /// Readings of the scope seen in training (the forest holds up to `training_size` of them).
    pub readings: u64,
    pub model: IsolationForest,
}

/// A profile's isolation forests with the settings they were trained under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForestModels {
    pub settings: TrainedUnder,
    pub models: Vec<ScopeModel>,
}

/// A model file as `teleguard train` writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    pub format: String,
    pub version: u32,
    pub profile: String,
    pub trained_at: String,
    pub teleguard_version: String,
    pub training: TrainingRecord,
    pub isolation_forest: Option<ForestModels>,
}

impl ModelFile {
    /// The models for `profile` by registry key, if they were trained under its settings.
    pub fn models_for(&self, profile: &Profile) -> Result<Vec<(ModelKey, IsolationForest)>, ModelMismatch> {
        if self.format != MODEL_FILE_FORMAT || self.version != MODEL_FILE_VERSION {
            return Err(ModelMismatch::Version { found_format: self.format.clone(), found_version: self.version });
        }
        if self.profile != *profile.name {
            return Err(ModelMismatch::OtherProfile { found: self.profile.clone(), wanted: profile.name.to_string() });
        }
        let Some(forests) = &self.isolation_forest else { return Ok(Vec::new()) };
        check_settings(profile, &forests.settings)?;
        forests.models.iter().map(|m| Ok((key_of(profile, &m.scope)?, m.model.clone()))).collect()
    }
}

/// One row of the store's `models` table: a scope's forest with the settings it was trained under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredModel {
    pub version: u32,
    pub settings: TrainedUnder,
    pub model: IsolationForest,
}

impl StoredModel {
    pub fn new(settings: &IsolationForestSettings, model: IsolationForest) -> StoredModel {
        StoredModel { version: MODEL_FILE_VERSION, settings: TrainedUnder::of(settings), model }
    }

    /// The row's key and model, if it was trained under `profile`'s settings.
    pub fn for_profile(self, profile: &Profile, scope: &str) -> Result<(ModelKey, IsolationForest), ModelMismatch> {
        if self.version != MODEL_FILE_VERSION {
            return Err(ModelMismatch::Version { found_format: "stored model".into(), found_version: self.version });
        }
        check_settings(profile, &self.settings)?;
        Ok((key_of(profile, scope)?, self.model))
    }
}

fn check_settings(profile: &Profile, trained: &TrainedUnder) -> Result<(), ModelMismatch> {
    let Some(settings) = &profile.detectors.isolation_forest else {
        return Err(ModelMismatch::ForestOff { profile: profile.name.to_string() });
    };
    let differences = trained.differences(&TrainedUnder::of(settings));
    if differences.is_empty() {
        Ok(())
    } else {
        Err(ModelMismatch::Settings { profile: profile.name.to_string(), differences })
    }
}

/// The registry key of a scope label (`drone`, `drone/d-1`) of `profile`, as its settings scope it.
fn key_of(profile: &Profile, scope: &str) -> Result<ModelKey, ModelMismatch> {
    let mismatch = || ModelMismatch::Scope { scope: scope.into(), profile: profile.name.to_string() };
    let per_entity = profile.detectors.isolation_forest.as_ref().is_some_and(|s| s.scope == ModelScope::Entity);
    match scope.split_once('/') {
        Some((name, entity)) if per_entity && name == &*profile.name && !entity.is_empty() => {
            Ok(ModelKey { profile: profile.name.clone(), entity: Some(Arc::from(entity)) })
        }
        None if !per_entity && scope == &*profile.name => Ok(ModelKey { profile: profile.name.clone(), entity: None }),
        _ => Err(mismatch()),
    }
}

/// A uniform sample of a scope's feature vectors (Vitter's algorithm R), so a model learns from
/// the whole of a long training period in bounded memory.
#[derive(Debug)]
struct Reservoir {
    rows: Vec<Vec<f64>>,
    seen: u64,
    rng: SmallRng,
}

/// Fits a profile's isolation forests on readings known to be normal: the features of every
/// reading, per scope, sampled uniformly down to `training_size`, then one forest per scope
/// exactly as the live detector fits one (same seed, same held-back threshold).
#[derive(Debug)]
pub struct ForestTrainer {
    profile: Arc<str>,
    settings: IsolationForestSettings,
    /// Each entity's previous metrics, for `_diff` and `_change` features.
    previous: BTreeMap<Arc<str>, Vec<(u16, f64)>>,
    scopes: BTreeMap<ModelKey, Reservoir>,
    features: Vec<f64>,
}

impl ForestTrainer {
    /// A trainer for `profile`'s forest; `None` when the profile has none.
    pub fn new(profile: &Profile) -> Option<ForestTrainer> {
        let settings = profile.detectors.isolation_forest.clone()?;
        Some(ForestTrainer {
            profile: profile.name.clone(),
            settings,
            previous: BTreeMap::new(),
            scopes: BTreeMap::new(),
            features: Vec::new(),
        })
    }

    /// A new series begins (another file): changes are not taken across it.
    pub fn start_series(&mut self) {
        self.previous.clear();
    }

    /// Takes one reading (in event-time order per entity) into the sample of its scope.
    pub fn observe(&mut self, reading: &Reading) {
        let previous = self.previous.entry(reading.entity.clone()).or_default();
        let complete = compute_features(
            &self.settings,
            &reading.metrics,
            Some(&*previous).filter(|p| !p.is_empty()),
            &mut self.features,
        );
        previous.clone_from(&reading.metrics);
        if !complete {
            return;
        }
        let key = ModelKey {
            profile: self.profile.clone(),
            entity: (self.settings.scope == ModelScope::Entity).then(|| reading.entity.clone()),
        };
        let capacity = self.settings.training_size;
        let reservoir = self.scopes.entry(key).or_insert_with_key(|key| Reservoir {
            rows: Vec::new(),
            seen: 0,
            rng: SmallRng::seed_from_u64(seed(key, &self.settings)),
        });
        reservoir.seen += 1;
        if reservoir.rows.len() < capacity {
            reservoir.rows.push(self.features.clone());
        } else {
            let slot = reservoir.rng.random_range(0..reservoir.seen);
            if let Some(row) = reservoir.rows.get_mut(slot as usize) {
                row.clone_from(&self.features);
            }
        }
    }

    /// Scopes with readings so far.
    pub fn scopes(&self) -> usize {
        self.scopes.len()
    }

    /// Fits a forest per scope with at least two readings, calling `progress(done, total)`
    /// after each; scopes with fewer are skipped and named in the answer's second part.
    pub fn fit(self, mut progress: impl FnMut(usize, usize)) -> (ForestModels, Vec<String>) {
        let total = self.scopes.len();
        let mut models = Vec::new();
        let mut skipped = Vec::new();
        for (done, (key, reservoir)) in self.scopes.into_iter().enumerate() {
            if reservoir.rows.len() < 2 {
                skipped.push(key.label());
            } else {
                let model = fit(&reservoir.rows, &self.settings, seed(&key, &self.settings));
                models.push(ScopeModel { scope: key.label(), readings: reservoir.seen, model });
            }
            progress(done + 1, total);
        }
        (ForestModels { settings: TrainedUnder::of(&self.settings), models }, skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{ProfileRegistry, RawProfile};

    /// A profile `pump` with metrics `a` and `b` and a small forest over them.
    fn pump(scope: &str) -> Profile {
        #[derive(serde::Deserialize)]
        struct File {
            profiles: BTreeMap<String, RawProfile>,
        }
        let text = format!(
            "[profiles.pump]\nentity_field = \"id\"\nmetrics = [{{ field = \"a\" }}, {{ field = \"b\" }}]\n\
             [profiles.pump.detectors.isolation_forest]\nfeatures = [\"a\", \"b_diff\"]\nscope = \"{scope}\"\n\
             training_size = 300\ntrees = 10\n"
        );
        let file: File = toml::from_str(&text).unwrap();
        (**ProfileRegistry::with_builtins(file.profiles).unwrap().by_name("pump").unwrap()).clone()
    }

    fn reading(profile: &Profile, entity: &str, i: i64, a: f64) -> Reading {
        Reading {
            profile: profile.id,
            entity: entity.into(),
            event_time_ms: i * 1000,
            position: None,
            metrics: vec![(0, a), (1, (i % 7) as f64)],
            attributes: vec![],
        }
    }

    fn file_of(profile: &Profile, forests: ForestModels) -> ModelFile {
        ModelFile {
            format: MODEL_FILE_FORMAT.into(),
            version: MODEL_FILE_VERSION,
            profile: profile.name.to_string(),
            trained_at: "2026-12-03T11:00:00.000Z".into(),
            teleguard_version: "test".into(),
            training: TrainingRecord::default(),
            isolation_forest: Some(forests),
        }
    }

    #[test]
    fn a_reservoir_samples_the_whole_training_period_in_bounded_memory() {
        let profile = pump("profile");
        let mut trainer = ForestTrainer::new(&profile).unwrap();
        // `a` counts the readings: a row's `a` says when it was read.
        for i in 0..3000 {
            trainer.observe(&reading(&profile, "p-1", i, i as f64));
        }
        let reservoir = trainer.scopes.values().next().unwrap();
        assert_eq!((reservoir.rows.len(), reservoir.seen), (300, 3000));
        // A uniform sample: about a third of it from each third of the period (binomial, σ ≈ 8).
        let per_third: Vec<usize> =
            (0..3).map(|t| reservoir.rows.iter().filter(|r| (r[0] / 1000.0).floor() == f64::from(t)).count()).collect();
        assert!(per_third.iter().all(|n| (70..=130).contains(n)), "{per_third:?}");
        let (forests, skipped) = trainer.fit(|_, _| {});
        assert!(skipped.is_empty());
        assert_eq!(forests.models.len(), 1);
        assert_eq!((forests.models[0].scope.as_str(), forests.models[0].readings), ("pump", 3000));
        assert_eq!(forests.models[0].model.trained_on, 300);
        assert_eq!(forests.settings.features, ["a", "b_diff"]);
    }

    #[test]
    fn models_are_refused_under_other_settings_or_another_profile() {
        let profile = pump("profile");
        let mut trainer = ForestTrainer::new(&profile).unwrap();
        for i in 0..400 {
            trainer.observe(&reading(&profile, "p-1", i, (i % 13) as f64));
        }
        let file = file_of(&profile, trainer.fit(|_, _| {}).0);
        assert_eq!(file.models_for(&profile).unwrap().len(), 1);
        let round_trip: ModelFile = serde_json::from_str(&serde_json::to_string(&file).unwrap()).unwrap();
        let (before, after) =
            (&file.models_for(&profile).unwrap()[0].1, &round_trip.models_for(&profile).unwrap()[0].1);
        assert!([[3.0, 0.0], [40.0, 6.0]].iter().all(|x| before.score(x) == after.score(x)), "scores survive JSON");

        let mut other = profile.clone();
        other.detectors.isolation_forest.as_mut().unwrap().trees = 50;
        let refused = file.models_for(&other).unwrap_err();
        assert_eq!(
            refused,
            ModelMismatch::Settings {
                profile: "pump".into(),
                differences: vec!["trees: trained with 10, configured 50".into()]
            }
        );
        assert!(refused.to_string().contains("--profile pump --config FILE"), "{refused}");
        let per_entity = pump("entity");
        let refused = file.models_for(&per_entity).unwrap_err().to_string();
        assert!(refused.contains(r#"scope: trained with "profile", configured "entity""#), "{refused}");

        let mut renamed = profile.clone();
        renamed.name = "boiler".into();
        assert!(matches!(file.models_for(&renamed), Err(ModelMismatch::OtherProfile { .. })));
        let mut off = profile.clone();
        off.detectors.isolation_forest = None;
        assert!(matches!(file.models_for(&off), Err(ModelMismatch::ForestOff { .. })));
        let mut future = file.clone();
        future.version = MODEL_FILE_VERSION + 1;
        assert!(matches!(future.models_for(&profile), Err(ModelMismatch::Version { .. })));
    }

    #[test]
    fn per_entity_scopes_train_one_model_each() {
        let profile = pump("entity");
        let mut trainer = ForestTrainer::new(&profile).unwrap();
        for i in 0..100 {
            trainer.observe(&reading(&profile, "p-1", i, (i % 5) as f64));
            trainer.observe(&reading(&profile, "p-2", i, 50.0 + (i % 5) as f64));
        }
        trainer.observe(&reading(&profile, "p-3", 0, 1.0));
        let (forests, skipped) = trainer.fit(|_, _| {});
        assert_eq!(skipped, ["pump/p-3"], "one reading is not enough for a model");
        let models = file_of(&profile, forests).models_for(&profile).unwrap();
        let keys: Vec<String> = models.iter().map(|(k, _)| k.label()).collect();
        assert_eq!(keys, ["pump/p-1", "pump/p-2"]);
        // Each learnt its own entity: p-2's level is an outlier to p-1's model and back.
        let (p1, p2) = (&models[0].1, &models[1].1);
        assert!(p1.score(&[52.0, 1.0]) > p1.score(&[2.0, 1.0]) && p2.score(&[2.0, 1.0]) > p2.score(&[52.0, 1.0]));
    }
}
