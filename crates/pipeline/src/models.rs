//! Trained isolation forests outside the detectors: the model files `teleguard train` writes,
//! the store's `models` table, and loading either under a profile's current settings.

use crate::store;
use anyhow::{Context as _, bail};
use std::path::{Path, PathBuf};
use teleguard_core::detect::isolation_forest::trained::{ModelFile, StoredModel};
use teleguard_core::detect::isolation_forest::{IsolationForest, ModelKey};
use teleguard_core::profile::{Profile, ProfileRegistry};

/// How a model file is named: `<profile>.model.json`.
pub const MODEL_FILE_SUFFIX: &str = ".model.json";

/// Models ready to install in a registry.
pub type Models = Vec<(ModelKey, IsolationForest)>;

/// Where `profile`'s model file goes in a models folder.
pub fn model_file_path(folder: &Path, profile: &str) -> PathBuf {
    folder.join(format!("{profile}{MODEL_FILE_SUFFIX}"))
}

/// Reads a model file.
pub fn read_model_file(path: &Path) -> anyhow::Result<ModelFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read model file {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a teleguard model file (written by `teleguard train`)", path.display()))
}

/// Writes a model file whole or not at all (a temporary file renamed over the old one).
pub fn write_model_file(path: &Path, file: &ModelFile) -> anyhow::Result<()> {
    let temporary = path.with_extension("json.partial");
    let json = serde_json::to_vec(file).context("a model file serialises")?;
    std::fs::write(&temporary, json).with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot move the new models to {}", path.display()))
}

/// `profile`'s models from `path`: a model file, a folder of them (its `<profile>.model.json`),
/// or the data folder of a store (its `models` table). Models trained under other settings
/// are an error.
pub fn load_for_profile(path: &Path, profile: &Profile) -> anyhow::Result<Models> {
    if path.join(store::DATABASE_FILE).is_file() {
        let connection = store::open_reader(path)?;
        let prefix = format!("{}/", profile.name);
        let mut models = Vec::new();
        for (scope, json) in store::stored_models(&connection)? {
            if scope != *profile.name && !scope.starts_with(&prefix) {
                continue;
            }
            let stored: StoredModel = serde_json::from_str(&json).with_context(|| {
                format!(
                    "model {scope:?} in the store at {} was written before models recorded their settings: \
                     train one with `teleguard train`",
                    path.display()
                )
            })?;
            let model = stored
                .for_profile(profile, &scope)
                .with_context(|| format!("model {scope:?} in the store at {}", path.display()))?;
            models.push(model);
        }
        if models.is_empty() {
            bail!("the store at {} holds no model of profile {:?}", path.display(), profile.name);
        }
        return Ok(models);
    }
    let file = if path.is_dir() { model_file_path(path, &profile.name) } else { path.to_path_buf() };
    if path.is_dir() && !file.is_file() {
        bail!(
            "{} holds no model of profile {:?} ({} is missing): train one with `teleguard train FILE... --profile {} \
             --models {}`",
            path.display(),
            profile.name,
            file.display(),
            profile.name,
            path.display()
        );
    }
    let models =
        read_model_file(&file)?.models_for(profile).with_context(|| format!("model file {}", file.display()))?;
    if models.is_empty() {
        bail!("model file {} holds no isolation forest of profile {:?}", file.display(), profile.name);
    }
    Ok(models)
}

/// Every model in `path` (a model file or a folder of them) for the profiles it names, each
/// checked against that profile's settings: what `models = ...` in the config loads at start.
pub fn load_all(path: &Path, profiles: &ProfileRegistry) -> anyhow::Result<Models> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut found: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot read models folder {}", path.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(MODEL_FILE_SUFFIX)))
            .collect();
        found.sort();
        if found.is_empty() {
            bail!(
                "models folder {} holds no *{MODEL_FILE_SUFFIX} file: train some with `teleguard train`",
                path.display()
            );
        }
        found
    } else {
        vec![path.to_path_buf()]
    };
    let mut models = Vec::new();
    for file in files {
        let contents = read_model_file(&file)?;
        let Some(profile) = profiles.by_name(&contents.profile) else {
            bail!(
                "model file {} is for profile {:?}, which is not configured; configured: {}",
                file.display(),
                contents.profile,
                profiles.names().join(", ")
            );
        };
        models.extend(contents.models_for(profile).with_context(|| format!("model file {}", file.display()))?);
    }
    Ok(models)
}

/// The store's own models (trained live by an earlier run) that fit today's settings; the
/// others are named in the second part with the reason, to be trained again from live readings.
pub fn from_store_rows(rows: Vec<(String, String)>, profiles: &ProfileRegistry) -> (Models, Vec<String>) {
    let mut models = Vec::new();
    let mut dropped = Vec::new();
    for (scope, json) in rows {
        let profile_name = scope.split_once('/').map_or(scope.as_str(), |(profile, _)| profile);
        let Some(profile) = profiles.by_name(profile_name) else {
            dropped.push(format!("{scope}: profile {profile_name:?} is not configured"));
            continue;
        };
        match serde_json::from_str::<StoredModel>(&json) {
            Ok(stored) => match stored.for_profile(profile, &scope) {
                Ok(model) => models.push(model),
                Err(mismatch) => dropped.push(format!("{scope}: {mismatch}")),
            },
            Err(_) => dropped.push(format!("{scope}: written before models recorded their settings")),
        }
    }
    (models, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use teleguard_core::detect::isolation_forest::trained::{ForestTrainer, MODEL_FILE_FORMAT, MODEL_FILE_VERSION};
    use teleguard_core::model::Reading;

    fn trained(profile: &Profile) -> ModelFile {
        let mut trainer = ForestTrainer::new(profile).unwrap();
        for i in 0..300_i64 {
            let metrics = (0..profile.metrics.len()).map(|m| (m as u16, ((i * (m as i64 + 3)) % 17) as f64)).collect();
            let reading = Reading {
                profile: profile.id,
                entity: "d-1".into(),
                event_time_ms: i * 1000,
                position: None,
                metrics,
                attributes: vec![],
            };
            trainer.observe(&reading);
        }
        ModelFile {
            format: MODEL_FILE_FORMAT.into(),
            version: MODEL_FILE_VERSION,
            profile: profile.name.to_string(),
            trained_at: "2026-12-03T11:00:00.000Z".into(),
            teleguard_version: "test".into(),
            training: Default::default(),
            isolation_forest: Some(trainer.fit(|_, _| {}).0),
        }
    }

    #[test]
    fn a_models_folder_is_read_back_and_checked_against_the_settings() {
        let profiles = ProfileRegistry::with_builtins(Default::default()).unwrap();
        let drone = profiles.by_name("drone").unwrap();
        let folder = tempfile::tempdir().unwrap();
        write_model_file(&model_file_path(folder.path(), "drone"), &trained(drone)).unwrap();
        let loaded = load_for_profile(folder.path(), drone).unwrap();
        assert_eq!(loaded.iter().map(|(k, _)| k.label()).collect::<Vec<_>>(), ["drone"]);
        assert_eq!(load_all(folder.path(), &profiles).unwrap().len(), 1);

        let mut changed = (**drone).clone();
        changed.detectors.isolation_forest.as_mut().unwrap().contamination = 0.1;
        let refused = format!("{:#}", load_for_profile(folder.path(), &changed).unwrap_err());
        assert!(refused.contains("drone.model.json: was trained under other isolation-forest settings"), "{refused}");
        assert!(refused.contains("contamination: trained with 0.05, configured 0.1"), "{refused}");

        let aircraft = profiles.by_name("aircraft").unwrap();
        let missing = format!("{:#}", load_for_profile(folder.path(), aircraft).unwrap_err());
        assert!(missing.contains("holds no model of profile \"aircraft\""), "{missing}");
    }

    #[test]
    fn store_rows_under_other_settings_are_dropped_with_the_reason() {
        let profiles = ProfileRegistry::with_builtins(Default::default()).unwrap();
        let drone = profiles.by_name("drone").unwrap();
        let file = trained(drone);
        let model = file.isolation_forest.unwrap().models.remove(0).model;
        let settings = drone.detectors.isolation_forest.as_ref().unwrap();
        let current = serde_json::to_string(&StoredModel::new(settings, model.clone())).unwrap();
        let mut other_settings = settings.clone();
        other_settings.trees = 7;
        let stale = serde_json::to_string(&StoredModel::new(&other_settings, model.clone())).unwrap();
        let legacy = serde_json::to_string(&model).unwrap();
        let rows = vec![
            ("drone".to_string(), current),
            ("drone".to_string(), stale),
            ("drone".to_string(), legacy),
            ("boat".to_string(), "{}".to_string()),
        ];
        let (models, dropped) = from_store_rows(rows, &profiles);
        assert_eq!(models.len(), 1);
        assert_eq!(models[0].0, ModelKey { profile: Arc::from("drone"), entity: None });
        assert_eq!(dropped.len(), 3, "{dropped:#?}");
        assert!(dropped[0].contains("trees: trained with 7, configured 100"), "{dropped:#?}");
        assert!(dropped[1].contains("before models recorded their settings"), "{dropped:#?}");
        assert!(dropped[2].contains("\"boat\" is not configured"), "{dropped:#?}");
    }
}
