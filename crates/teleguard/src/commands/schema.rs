//! `teleguard schema export`: a profile's Avro schema and JSON Schema, generated from the
//! profile itself, for device teams to validate against on their side.

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;
use teleguard_core::schema::{SchemaKind, avro_schema, file_name, json_schema, to_pretty_text};
use teleguard_pipeline::config::{Config, Overrides};

#[derive(Debug, Args)]
pub struct SchemaArgs {
    #[command(subcommand)]
    command: SchemaCommand,
}

#[derive(Debug, Subcommand)]
enum SchemaCommand {
    /// Print a profile's schemas (built-in, or from --config), or write them into a folder.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// The profile, e.g. `drone`; `all` with --out writes every profile's.
    profile: String,
    /// Which schema: the Avro record, the JSON Schema (draft 2020-12), or both, one after the other.
    #[arg(long, value_enum, default_value_t = Format::Both)]
    format: Format,
    /// TOML config file with profiles of your own.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Write `<profile>_telemetry.avsc` and `<profile>_telemetry.schema.json` into this folder
    /// instead of printing them (the repository's `schemas/` is written this way).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Avro,
    JsonSchema,
    Both,
}

impl Format {
    fn kinds(self) -> &'static [SchemaKind] {
        match self {
            Format::Avro => &[SchemaKind::Avro],
            Format::JsonSchema => &[SchemaKind::JsonSchema],
            Format::Both => &[SchemaKind::Avro, SchemaKind::JsonSchema],
        }
    }
}

pub fn schema(args: SchemaArgs) -> anyhow::Result<()> {
    let SchemaCommand::Export(args) = args.command;
    let config =
        Config::load(args.config.as_deref(), Overrides { simulate: Some("none".into()), ..Default::default() })?;
    let profiles: Vec<_> = if args.profile == "all" {
        if args.out.is_none() {
            bail!("`all` writes one file per profile and schema: give a folder with --out");
        }
        config.profiles.iter().cloned().collect()
    } else {
        match config.profiles.by_name(&args.profile) {
            Some(profile) => vec![profile.clone()],
            None => bail!("unknown profile {:?}; known profiles: {}", args.profile, config.profiles.names().join(", ")),
        }
    };
    for profile in &profiles {
        for &kind in args.format.kinds() {
            let schema = match kind {
                SchemaKind::Avro => avro_schema(profile),
                SchemaKind::JsonSchema => json_schema(profile),
            };
            let text = to_pretty_text(&schema);
            match &args.out {
                Some(dir) => {
                    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
                    let path = dir.join(file_name(&profile.name, kind));
                    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
                None => print!("{text}"),
            }
        }
    }
    Ok(())
}
