//! `teleguard run`: the whole pipeline in one process, until Ctrl-C or SIGTERM.

use anyhow::Context as _;
use clap::Args;
use std::path::PathBuf;
use teleguard_api::AppState;
use teleguard_pipeline::Pipeline;
use teleguard_pipeline::config::{Config, Overrides};
use teleguard_pipeline::notify;
use teleguard_pipeline::sources::kafka::KafkaSourceConfig;
use teleguard_pipeline::sources::kafka_anomalies::AnomalySourceConfig;
use teleguard_pipeline::sources::{self, mqtt, simulator};
use tokio::sync::watch;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML config file (see config/teleguard.example.toml); defaults apply without one.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Folder of the embedded store [default: ./teleguard-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the API and dashboard; port 0 picks a free one [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Isolation forests trained ahead of time (`teleguard train ... --models DIR`): a folder
    /// of model files or one file; loaded at start in place of the store's and kept in it.
    /// Models trained under other settings than the config's stop the start with the reason.
    #[arg(long, value_name = "DIR|FILE")]
    models: Option<PathBuf>,
    /// Profiles to simulate: all, none, or a list such as vehicle,drone [default: all].
    #[arg(long, value_name = "LIST|none")]
    simulate: Option<String>,
    /// Simulated time runs N times faster than real time [default: 1].
    #[arg(long, value_name = "N")]
    speed: Option<f64>,
    /// Stages to run: `all` (one process, the default), or over Kafka (`[kafka]` in the
    /// config) one or more of `gateway` (simulator, MQTT, HTTP → raw topics), `enrich` (raw →
    /// enriched topics), `detect` (enriched or raw topics → detectors → anomalies topic, local
    /// store), `history` (enriched topics → ClickHouse / PostgreSQL), `serve` (anomalies topic →
    /// this process's store, API and dashboard: one dashboard for many detectors), e.g.
    /// `--role enrich,detect`. `gateway` also forwards its rejects to the dead-letter topic.
    #[arg(long, value_name = "ROLE[,ROLE...]")]
    role: Option<String>,
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        data_dir: args.data_dir,
        models: args.models,
        listen: args.listen,
        simulate: args.simulate,
        speed: args.speed,
        role: args.role,
    };
    let config = Config::load(args.config.as_deref(), overrides)?;
    let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| {
        format!("cannot listen on {}; is another process using it? pick another with --listen", config.listen)
    })?;
    let address = listener.local_addr()?;
    let pipeline = Pipeline::start(config).await.context("cannot start the pipeline")?;
    let (shutdown_sender, shutdown) = watch::channel(false);
    let edge = pipeline.config.plan.edge_sources;
    let simulator_task = (edge && !pipeline.config.simulator.profiles.is_empty())
        .then(|| tokio::spawn(simulator::run(pipeline.ingest(), pipeline.config.simulator.clone(), shutdown.clone())));
    let mut source_tasks: Vec<_> = pipeline
        .config
        .mqtt
        .iter()
        .filter(|_| edge)
        .map(|source| {
            tokio::spawn(mqtt::run(pipeline.ingest(), pipeline.metrics.clone(), source.clone(), shutdown.clone()))
        })
        .collect();
    // A source that cannot go on (its store failed, its config was refused) stops the process
    // with its error instead of leaving a server that takes nothing in.
    let (failed_sender, mut failed) = tokio::sync::mpsc::channel::<String>(4);
    if let Some(kafka) = pipeline.config.kafka.clone().filter(|_| !pipeline.config.plan.consume.is_empty()) {
        let plan = &pipeline.config.plan;
        let source = KafkaSourceConfig {
            kafka,
            group: plan.group.clone(),
            topics: plan.consume.clone(),
            rebuild_state: plan.detect,
        };
        let (ingest, metrics, stop, failed_sender) =
            (pipeline.ingest(), pipeline.metrics.clone(), shutdown.clone(), failed_sender.clone());
        source_tasks.push(tokio::spawn(async move {
            let result = sources::kafka::run(ingest, metrics, source, stop).await;
            if let Err(e) = &result {
                let _ = failed_sender.send(e.clone()).await;
            }
            result
        }));
    }
    if let Some((topic, group)) = pipeline.config.plan.consume_anomalies.clone() {
        let kafka = pipeline.config.kafka.clone().expect("a role that consumes has [kafka]");
        let source = AnomalySourceConfig { kafka, topic, group };
        let (ingest, store, stop, failed_sender) =
            (pipeline.ingest(), pipeline.store(), shutdown.clone(), failed_sender.clone());
        source_tasks.push(tokio::spawn(async move {
            let result = sources::kafka_anomalies::run(ingest, store, source, stop).await;
            if let Err(e) = &result {
                let _ = failed_sender.send(e.clone()).await;
            }
            result
        }));
    }
    let notify_context = notify::deliver::Context {
        reader: pipeline.reader.clone(),
        store: pipeline.store(),
        metrics: pipeline.metrics.clone(),
        client: notify::deliver::Context::client().map_err(anyhow::Error::msg)?,
    };
    let mut notify_tasks: Vec<_> = pipeline
        .config
        .notification_routes
        .iter()
        .map(|route| tokio::spawn(notify::deliver::run(route.clone(), notify_context.clone(), shutdown.clone())))
        .collect();
    let fleet_watch = teleguard_pipeline::fleet_watch::FleetWatch {
        live: pipeline.live.clone(),
        profiles: pipeline.config.profiles.clone(),
        reader: pipeline.reader.clone(),
        store: pipeline.store(),
    };
    notify_tasks.push(tokio::spawn(fleet_watch.run(shutdown.clone())));
    if let Some(after) = pipeline.config.escalate_after {
        notify_tasks.push(tokio::spawn(notify::deliver::escalate(pipeline.store(), after, shutdown.clone())));
    }
    let state = AppState::from_pipeline(&pipeline);
    let roles: Vec<&str> = pipeline.config.plan.roles.iter().map(|r| r.name()).collect();
    println!(
        "teleguard ({}) listening on http://{address} (dashboard, API, /metrics); data in {}",
        roles.join(","),
        pipeline.config.data_dir.display()
    );
    let mut server_shutdown = shutdown.clone();
    let server = tokio::spawn(async move {
        teleguard_api::serve(listener, state, async move {
            let _ = server_shutdown.wait_for(|stop| *stop).await;
        })
        .await
    });
    let failure = tokio::select! {
        () = wait_for_signal() => None,
        Some(error) = failed.recv() => Some(error),
    };
    if let Some(error) = &failure {
        tracing::error!("{error}; stopping");
    }
    tracing::info!("stopping: sources first, then draining the pipeline");
    let _ = shutdown_sender.send(true);
    server.await?.context("HTTP server")?;
    if let Some(task) = simulator_task {
        task.await?.map_err(anyhow::Error::msg)?;
    }
    for task in source_tasks {
        if let Err(e) = task.await? {
            // Reported above when it stopped the process.
            if failure.is_none() {
                return Err(anyhow::Error::msg(e));
            }
        }
    }
    for task in notify_tasks {
        task.await?;
    }
    drop(notify_context);
    pipeline.shutdown().await?;
    match failure {
        Some(error) => Err(anyhow::anyhow!("a source stopped: {error}")),
        None => {
            tracing::info!("stopped cleanly");
            Ok(())
        }
    }
}

async fn wait_for_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(e) => {
                tracing::warn!("cannot watch SIGTERM ({e}); stop with Ctrl-C");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
