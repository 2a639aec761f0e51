//! `teleguard hunt NAME`: reference 000's threat hunts (geofence breach out of hours, GPS
//! teleport, unusual stops), run by the streaming rules over the configured store's history.

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use teleguard_core::hunt::Hunt;
use teleguard_core::json::Scalar;
use teleguard_core::time::{TimeFormat, parse_timestamp};
use teleguard_pipeline::config::{Config, Overrides};
use teleguard_pipeline::hunts::{self, HuntFormat, HuntQuery, HuntReport};

#[derive(Debug, Args)]
pub struct HuntArgs {
    /// geofence-breach, teleport or unusual-stops.
    #[arg(value_parser = Hunt::parse)]
    hunt: Hunt,
    /// Episodes that last to this event time or later (ISO 8601 or epoch seconds /
    /// milliseconds). The hunt reads a day before it, so an episode under way at T keeps its
    /// true start and a teleport across T is compared with the reading before it.
    #[arg(long, value_name = "T")]
    from: Option<String>,
    /// Readings before this event time (exclusive); an episode still under way at T is
    /// reported as lasting to the vehicle's last reading before it.
    #[arg(long, value_name = "T")]
    to: Option<String>,
    /// One vehicle only.
    #[arg(long, value_name = "ID")]
    vehicle: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Which store to read; by default ClickHouse if `[sinks.clickhouse]` is configured, else
    /// PostgreSQL if `[sinks.postgres]` is, else the embedded store.
    #[arg(long, value_enum)]
    store: Option<StoreKind>,
    /// TOML config file: profiles (the rules' thresholds and time zone), data folder, sinks.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The embedded store's data folder (overrides the config's).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoreKind {
    Embedded,
    Clickhouse,
    Postgres,
}

fn time(name: &str, text: Option<&str>) -> anyhow::Result<Option<i64>> {
    let Some(text) = text else { return Ok(None) };
    let value = text.parse::<f64>().map(Scalar::Float).unwrap_or_else(|_| Scalar::Str(text.into()));
    let ms = parse_timestamp(&value, TimeFormat::Auto).map_err(|e| anyhow::anyhow!("--{name} {text:?}: {e}"))?;
    Ok(Some(ms))
}

pub async fn hunt(args: HuntArgs) -> anyhow::Result<()> {
    let overrides = Overrides { data_dir: args.data_dir.clone(), ..Overrides::default() };
    let config = Config::load(args.config.as_deref(), overrides)?;
    let query = HuntQuery {
        hunt: args.hunt,
        from_ms: time("from", args.from.as_deref())?,
        to_ms: time("to", args.to.as_deref())?,
        vehicle: args.vehicle.clone(),
    };
    let profile = config
        .profiles
        .by_name(hunts::VEHICLE)
        .context("no `vehicle` profile is configured; the hunts read vehicle tracks")?
        .clone();
    let store = args.store.unwrap_or(match (&config.sinks.clickhouse, &config.sinks.postgres) {
        (Some(_), _) => StoreKind::Clickhouse,
        (None, Some(_)) => StoreKind::Postgres,
        (None, None) => StoreKind::Embedded,
    });
    let report: HuntReport = match store {
        StoreKind::Embedded => {
            let database = config.data_dir.join(teleguard_pipeline::store::DATABASE_FILE);
            anyhow::ensure!(
                database.exists(),
                "no embedded store at {}: pass the data folder of a `teleguard run` with --data-dir",
                database.display()
            );
            let connection = teleguard_pipeline::store::open_reader(&config.data_dir)?;
            tokio::task::block_in_place(|| hunts::embedded(&connection, profile, &query))?
        }
        StoreKind::Clickhouse => {
            let clickhouse = config.sinks.clickhouse.as_ref().context("--store clickhouse needs [sinks.clickhouse]")?;
            hunts::clickhouse(clickhouse, profile, &query).await?
        }
        StoreKind::Postgres => {
            let postgres = config.sinks.postgres.as_ref().context("--store postgres needs [sinks.postgres]")?;
            hunts::postgres(postgres, profile, &query).await?
        }
    };
    let format = match args.format {
        Format::Table => HuntFormat::Table,
        Format::Json => HuntFormat::Json,
        Format::Csv => HuntFormat::Csv,
    };
    eprintln!("hunt {} over the {} store: {}", report.hunt, report.store, report.path);
    print!("{}", report.render(format));
    Ok(())
}
