//! The `teleguard` command: run the pipeline, benchmark it, replay files, score detections.

mod commands;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Many small allocations cross threads (readings, rows); mimalloc handles that far better
/// than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Real-time telemetry pipeline that catches anomalies in fleets of vehicles, drones,
/// aircraft and industrial sensors.
#[derive(Debug, Parser)]
#[command(name = "teleguard", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole pipeline: simulator, ingest API, detectors, embedded store, dashboard.
    Run(commands::run::RunArgs),
    /// Push simulated readings through validate, enrich, detect and store as fast as possible.
    Bench(commands::bench::BenchArgs),
    /// Run the configured detectors over CSV or NDJSON files in event-time order, with trained
    /// models (`--models`) or forests trained on each file's head; NDJSON out.
    Replay(commands::replay::ReplayArgs),
    /// Fit a profile's isolation forest on files of normal readings and store it for replay and run.
    ///
    /// The files are read as `teleguard replay` reads them (CSV with a header row, NDJSON, or folders of
    /// them), validated by the profile, each in event-time order. Every reading's features (as the
    /// profile's detectors.isolation_forest names them) go into a uniform sample of `training_size`
    /// readings per model scope, so a long recording is learnt whole (take-off, cruise and landing), not
    /// only its head; then one forest per scope is grown exactly as the live detector grows one (same
    /// trees, seed and held-back threshold).
    ///
    /// The result is DIR/<profile>.model.json: JSON with a format name and version, the profile, the
    /// files and reading counts it was trained on, the isolation-forest settings (features, scope,
    /// training_size, holdout, contamination, trees, seed) and the forests. `teleguard replay --models DIR`
    /// and `teleguard run --models DIR` (or `models = "DIR"` in the config) refuse it, saying which
    /// setting differs, when the config they run with has other settings than these.
    ///
    /// Only the isolation forest has learnt state worth keeping: the z-score's window and the novelty
    /// detector's memory are recent history of one entity, rebuilt from the first readings it sends.
    Train(commands::train::TrainArgs),
    /// Generate realistic fleet telemetry with labeled injected anomalies (ground truth).
    Simulate(commands::simulate::SimulateArgs),
    /// Score detections against labels (ours, or the NAB benchmark's): precision, recall, F1,
    /// detection delay and false alarms per type; NAB's standard score on NAB data.
    Eval(commands::eval::EvalArgs),
    /// A profile's Avro schema and JSON Schema, generated from the profile (`schema export drone`).
    Schema(commands::schema::SchemaArgs),
    /// Make a development CA, an MQTT broker certificate and per-device client certificates.
    Certs(commands::certs::CertsArgs),
    /// Make a bearer token for HTTP ingest and its config entry (`token new`), or hash one.
    Token(commands::token::TokenArgs),
    /// Threat hunts over the stored history: `hunt geofence-breach | teleport | unusual-stops
    /// [--from T] [--to T] [--vehicle ID] [--format table|json|csv]`.
    Hunt(commands::hunt::HuntArgs),
    /// ClickHouse: `clickhouse init --config FILE` applies reference 000's schema.
    #[command(name = "clickhouse")]
    ClickHouse(commands::clickhouse::ClickHouseArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => commands::run::run(args).await,
            Command::Bench(args) => commands::bench::bench(args).await,
            Command::Replay(args) => tokio::task::block_in_place(|| commands::replay::replay(args)),
            Command::Train(args) => tokio::task::block_in_place(|| commands::train::train(args)),
            Command::Simulate(args) => commands::simulate::simulate(args).await,
            Command::Eval(args) => tokio::task::block_in_place(|| commands::eval::eval(args)),
            Command::Schema(args) => commands::schema::schema(args),
            Command::Certs(args) => commands::certs::certs(args),
            Command::Token(args) => commands::token::token(args),
            Command::Hunt(args) => commands::hunt::hunt(args).await,
            Command::ClickHouse(args) => commands::clickhouse::clickhouse(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
