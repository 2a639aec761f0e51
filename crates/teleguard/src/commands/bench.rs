//! `teleguard bench`: simulated readings through validate → enrich → detect → store, as fast
//! as the machine allows; prints readings/s and per-reading latency.

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;
use teleguard_core::detect::DETECTOR_NAMES;
use teleguard_core::simulate::{SIMULATED_PROFILES, SimSettings, Simulator};
use teleguard_pipeline::Pipeline;
use teleguard_pipeline::config::{Config, Overrides, RawConfig};
use teleguard_pipeline::ingest::Admission;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Readings to push through the pipeline.
    #[arg(long, default_value_t = 1_000_000)]
    readings: usize,
    /// Messages per ingest submission.
    #[arg(long, default_value_t = 2_000)]
    batch: usize,
    /// Multiplies the reference fleet sizes (15 vehicles, 5 drones, ...).
    #[arg(long, default_value_t = 20.0)]
    fleet_scale: f64,
    /// Pipeline worker threads [default: one per core but one, at least one].
    #[arg(long)]
    workers: Option<usize>,
    /// Detectors to run, comma-separated (zscore, isolation_forest, novelty, trend, teleport,
    /// spoofing, geofence_breach, unusual_stop), or `all` (those each profile enables).
    #[arg(long, default_value = "all")]
    detectors: String,
    /// Repeat the whole run this many times (a fresh store each time) and report the best and
    /// the median: shared machines vary by tens of percent between runs.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Store folder; a fresh temporary one (removed afterwards) by default.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// TOML config file whose profiles (e.g. with `detectors.novelty` on) the run uses; its
    /// data_dir and simulator are ignored.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

pub async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.readings > 0 && args.batch > 0 && args.runs > 0,
        "--readings, --batch and --runs must be at least 1"
    );
    let batches = generate(&args)?;
    let mut rates = Vec::new();
    for run in 1..=args.runs {
        if args.runs > 1 {
            eprintln!("run {run} of {}", args.runs);
        }
        rates.push(run_once(&args, batches.clone(), run).await?);
    }
    if args.runs > 1 {
        rates.sort_by(f64::total_cmp);
        println!(
            "{} runs: best {:.0} readings/s, median {:.0}, worst {:.0}",
            args.runs,
            rates[rates.len() - 1],
            rates[rates.len() / 2],
            rates[0]
        );
    }
    Ok(())
}

/// One run on a fresh store; returns readings per second.
async fn run_once(args: &BenchArgs, batches: Batches, run: usize) -> anyhow::Result<f64> {
    let temporary = match &args.data_dir {
        Some(_) => None,
        None => Some(tempfile_dir(run)?),
    };
    let data_dir = match &args.data_dir {
        Some(dir) if args.runs > 1 => dir.join(format!("run-{run}")),
        Some(dir) => dir.clone(),
        None => temporary.clone().expect("a temporary folder"),
    };
    let mut raw = match &args.config {
        Some(path) => RawConfig::read(path)?,
        None => RawConfig::default(),
    };
    if args.workers.is_some() {
        raw.pipeline.workers = args.workers;
    }
    let overrides = Overrides { data_dir: Some(data_dir.clone()), simulate: Some("none".into()), ..Default::default() };
    let mut config = Config::validate(raw, overrides)?;
    if args.detectors != "all" {
        let keep: Vec<&str> = args.detectors.split(',').map(str::trim).collect();
        if let Some(unknown) = keep.iter().find(|d| !DETECTOR_NAMES.contains(d)) {
            anyhow::bail!("unknown detector {unknown:?}; known: {}", DETECTOR_NAMES.join(", "));
        }
        config.profiles = std::sync::Arc::new(config.profiles.keeping_detectors(&keep));
    }
    let pipeline = Pipeline::start(config).await?;
    pipeline.metrics.keep_latency_samples();
    eprintln!(
        "pushing {} readings through {} worker thread(s), detectors: {}, store in {}",
        args.readings,
        pipeline.config.workers,
        args.detectors,
        data_dir.display()
    );

    let progress = ProgressBar::new(args.readings as u64);
    progress.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} readings ({per_sec}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (profile, chunks) in batches {
        let ingest = pipeline.ingest();
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            for chunk in chunks {
                let count = chunk.len() as u64;
                ingest.submit(profile, "bench", chunk, Admission::Wait).await?;
                progress.inc(count);
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    pipeline.flush().await?;
    let elapsed = started.elapsed();
    let rate = args.readings as f64 / elapsed.as_secs_f64();
    progress.finish_and_clear();

    let mut latencies = pipeline.metrics.take_latency_samples();
    latencies.sort_by(f32::total_cmp);
    let quantile = |q: f64| {
        latencies.get(((latencies.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f32::NAN) * 1000.0
    };
    let anomalies: f64 = count_anomalies(&pipeline.metrics.encode());
    println!(
        "{} readings in {:.2} s: {:.0} readings/s end to end (validate, enrich, detect, bronze+silver+gold store)",
        args.readings,
        elapsed.as_secs_f64(),
        rate
    );
    println!(
        "latency per reading (arrival to stored): p50 {:.1} ms, p99 {:.1} ms; anomalies raised: {anomalies}",
        quantile(0.5),
        quantile(0.99)
    );
    report_sinks(&pipeline, started, elapsed).await?;
    pipeline.shutdown().await?;
    if let Some(dir) = temporary {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    Ok(rate)
}

/// With sinks configured: waits (10 minutes at most) until each has confirmed the store's last
/// reading and anomaly change, and reports when, from the run's start and after `stored` (when
/// the pipeline had stored everything): the sinks follow the store on the same cores meanwhile.
async fn report_sinks(pipeline: &Pipeline, started: Instant, stored: std::time::Duration) -> anyhow::Result<()> {
    if pipeline.sinks.is_empty() {
        return Ok(());
    }
    let (last_reading, last_change): (i64, i64) = pipeline
        .reader
        .run(|c| {
            Ok(c.query_row(
                "SELECT (SELECT coalesce(max(id), 0) FROM silver),
                        (SELECT coalesce(max(change_seq), 0) FROM telemetry_anomalies)",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?)
        })
        .await?;
    let deadline = Instant::now() + std::time::Duration::from_secs(600);
    let mut caught_up: Vec<Option<std::time::Duration>> = vec![None; pipeline.sinks.len()];
    while caught_up.iter().any(Option::is_none) && Instant::now() < deadline {
        for (sink, done) in pipeline.sinks.iter().zip(&mut caught_up) {
            let (reading, change) = sink.confirmed();
            if done.is_none() && reading >= last_reading && change >= last_change {
                *done = Some(started.elapsed());
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    for (sink, done) in pipeline.sinks.iter().zip(caught_up) {
        let view = sink.view();
        match done {
            Some(elapsed) => println!(
                "sink {}: {} readings and {} anomaly changes written, caught up {:.2} s after the start \
                 ({:.2} s after the pipeline): {:.0} readings/s",
                view.sink,
                view.written_readings,
                view.written_anomalies,
                elapsed.as_secs_f64(),
                elapsed.saturating_sub(stored).as_secs_f64(),
                view.written_readings as f64 / elapsed.as_secs_f64()
            ),
            None => println!("sink {}: still behind after 10 minutes: {view:?}", view.sink),
        }
    }
    Ok(())
}

/// Pre-generated messages: per profile, submission-sized chunks.
type Batches = BTreeMap<&'static str, Vec<Vec<Vec<u8>>>>;

/// Pre-generates the readings, grouped per profile into submission-sized chunks.
fn generate(args: &BenchArgs) -> anyhow::Result<Batches> {
    let settings = SimSettings {
        profiles: SIMULATED_PROFILES.iter().map(|p| p.to_string()).collect(),
        seed: 1,
        start_ms: 1_735_689_600_000,
        anomaly_rate: 1.0,
        fleet_scale: args.fleet_scale,
        entities: None,
    };
    let mut simulator = Simulator::new(&settings).map_err(anyhow::Error::msg)?;
    let mut chunks = Batches::new();
    let mut generated = 0;
    let mut until = settings.start_ms;
    let mut due = Vec::new();
    while generated < args.readings {
        until += 1000;
        simulator.emit_until(until, &mut due);
        for message in due.drain(..) {
            if generated == args.readings {
                break;
            }
            let profile_chunks = chunks.entry(message.profile).or_default();
            match profile_chunks.last_mut() {
                Some(chunk) if chunk.len() < args.batch => chunk.push(message.payload),
                _ => profile_chunks.push(vec![message.payload]),
            }
            generated += 1;
        }
    }
    Ok(chunks)
}

fn tempfile_dir(run: usize) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("teleguard-bench-{}-{run}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

fn count_anomalies(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with("anomaly_detector_anomalies_detected_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
