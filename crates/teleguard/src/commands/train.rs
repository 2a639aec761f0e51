//! `teleguard train`: fits a profile's isolation forest on files of readings known to be normal
//! and writes it, with the settings it was trained under, to a model file that
//! `replay --models` and `run` (`models = ...` or `--models`) use instead of training on the
//! first readings they see.

use super::input::{expand, read_file};
use anyhow::{Context as _, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use teleguard_core::detect::for_people;
use teleguard_core::detect::isolation_forest::trained::{
    ForestTrainer, MODEL_FILE_FORMAT, MODEL_FILE_VERSION, ModelFile, TrainingRecord,
};
use teleguard_core::time::{format_millis, now_millis};
use teleguard_pipeline::config::{Config, Overrides};
use teleguard_pipeline::models::{model_file_path, write_model_file};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// CSV or NDJSON files of normal readings, or folders of them.
    #[arg(required = true, value_name = "FILE|DIR")]
    files: Vec<PathBuf>,
    /// The profile the files' readings speak.
    #[arg(long)]
    profile: String,
    /// TOML config file with the profile and its detector settings.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Folder to write <profile>.model.json into (made if missing; an older file is replaced).
    #[arg(long, value_name = "DIR")]
    models: PathBuf,
}

pub fn train(args: TrainArgs) -> anyhow::Result<()> {
    let config =
        Config::load(args.config.as_deref(), Overrides { simulate: Some("none".into()), ..Default::default() })?;
    let Some(profile) = config.profiles.by_name(&args.profile).cloned() else {
        bail!("unknown profile {:?}; known profiles: {}", args.profile, config.profiles.names().join(", "));
    };
    let Some(mut trainer) = ForestTrainer::new(&profile) else {
        bail!(
            "profile {:?} has no isolation forest to train: add [profiles.{}.detectors.isolation_forest] \
             with its features to the config",
            profile.name,
            profile.name
        );
    };
    let files = expand(&args.files)?;
    let mut training = TrainingRecord::default();
    for file in &files {
        let data = read_file(&profile, file)?;
        let progress = ProgressBar::new(data.records.len() as u64);
        progress.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} readings of {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        progress.set_message(file.display().to_string());
        trainer.start_series();
        for (done, record) in data.records.iter().enumerate() {
            trainer.observe(&record.reading);
            if done % 4096 == 0 {
                progress.set_position(done as u64);
            }
        }
        progress.finish_and_clear();
        training.files.push(file.display().to_string());
        training.readings += data.records.len() as u64;
        training.rejected += (data.total - data.records.len()) as u64;
    }
    if trainer.scopes() == 0 {
        bail!(
            "no reading of {} had every feature of profile {:?}'s isolation forest; nothing to train on",
            files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "),
            profile.name
        );
    }
    let progress = ProgressBar::new(trainer.scopes() as u64);
    progress.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} forests grown")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let (forests, skipped) = trainer.fit(|done, _| progress.set_position(done as u64));
    progress.finish_and_clear();
    for scope in &skipped {
        eprintln!("{scope}: fewer than 2 readings with every feature; no model (it trains on its own readings)");
    }
    if forests.models.is_empty() {
        bail!("no model scope had the 2 readings a forest needs; give more normal readings");
    }
    let summary: Vec<String> = forests
        .models
        .iter()
        .map(|m| {
            format!("{} from {} readings (sample of {})", m.scope, for_people(m.readings as f64), m.model.trained_on)
        })
        .collect();
    std::fs::create_dir_all(&args.models)
        .with_context(|| format!("cannot make models folder {}", args.models.display()))?;
    let path = model_file_path(&args.models, &profile.name);
    let file = ModelFile {
        format: MODEL_FILE_FORMAT.into(),
        version: MODEL_FILE_VERSION,
        profile: profile.name.to_string(),
        trained_at: format_millis(now_millis()),
        teleguard_version: env!("CARGO_PKG_VERSION").into(),
        training,
        isolation_forest: Some(forests),
    };
    write_model_file(&path, &file)?;
    let shown = if summary.len() > 5 {
        format!("{} and {} more", summary[..5].join(", "), summary.len() - 5)
    } else {
        summary.join(", ")
    };
    eprintln!(
        "trained {} isolation forest{} of profile {} on {} readings of {} file{}: {shown}; wrote {}",
        summary.len(),
        if summary.len() == 1 { "" } else { "s" },
        profile.name,
        for_people(file.training.readings as f64),
        files.len(),
        if files.len() == 1 { "" } else { "s" },
        path.display()
    );
    Ok(())
}
