//! `teleguard clickhouse init`: applies reference 000's ClickHouse schema and the sink's tables.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use teleguard_pipeline::config::{Config, Overrides};
use teleguard_pipeline::sinks::clickhouse::ClickHouseTarget;

#[derive(Debug, Args)]
pub struct ClickHouseArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Create the database and tables of `[sinks.clickhouse]` where missing: live_telemetry_queue
    /// (and, with kafka_brokers, live_telemetry_stream and telemetry_consumer_mv),
    /// enriched_telemetry_history, telemetry_history and telemetry_anomalies.
    Init {
        /// TOML config file with a [sinks.clickhouse] table.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

pub async fn clickhouse(args: ClickHouseArgs) -> anyhow::Result<()> {
    let Action::Init { config: path } = args.action;
    let config = Config::load(Some(&path), Overrides::default())?;
    let clickhouse = config
        .sinks
        .clickhouse
        .with_context(|| format!("{} has no [sinks.clickhouse] table to initialise", path.display()))?;
    let applied = ClickHouseTarget::init(&clickhouse)
        .await
        .with_context(|| format!("cannot initialise ClickHouse at {}", clickhouse.describe()))?;
    println!(
        "clickhouse {} (server {}): one SQL path for every version (none of LowCardinality, DateTime64, TTL or window functions)",
        clickhouse.describe(),
        applied.server_version
    );
    for object in &applied.objects {
        println!("  {object}");
    }
    if clickhouse.kafka.is_none() {
        println!("  (no kafka_brokers configured: live_telemetry_stream and telemetry_consumer_mv not created)");
    }
    Ok(())
}
