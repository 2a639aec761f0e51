//! The simulator source: the built-in fleet simulator on a clock that runs `speed` times real
//! time, submitting each profile's due messages through the ingest path.

use crate::config::SimulatorConfig;
use crate::ingest::{Admission, Ingest};
use std::collections::BTreeMap;
use std::time::Duration;
use teleguard_core::simulate::{SimMessage, SimSettings, Simulator};
use teleguard_core::time::now_millis;
use tokio::sync::watch;
use tokio::time::Instant;

/// The longest the source sleeps before looking at the clock again.
const MAX_SLEEP: Duration = Duration::from_millis(200);

/// Runs until `shutdown` turns true.
pub async fn run(ingest: Ingest, config: SimulatorConfig, mut shutdown: watch::Receiver<bool>) -> Result<(), String> {
    let start_ms = now_millis();
    let settings = SimSettings {
        profiles: config.profiles.clone(),
        seed: config.seed,
        start_ms,
        anomaly_rate: config.anomaly_rate,
        fleet_scale: config.fleet_scale,
        entities: None,
    };
    let mut simulator = Simulator::new(&settings)?;
    tracing::info!(
        "simulator: {} entities of {} at {}x real time",
        simulator.entity_count(),
        config.profiles.join(", "),
        config.speed
    );
    let started = Instant::now();
    let mut due = Vec::new();
    while !*shutdown.borrow() {
        let simulated_now = start_ms + (started.elapsed().as_secs_f64() * config.speed * 1000.0) as i64;
        simulator.emit_until(simulated_now, &mut due);
        submit(&ingest, &mut due).await;
        let Some(next_ms) = simulator.next_due_ms() else {
            break;
        };
        let wait = Duration::from_secs_f64(((next_ms - simulated_now) as f64 / 1000.0 / config.speed).max(0.0));
        tokio::select! {
            _ = tokio::time::sleep(wait.min(MAX_SLEEP)) => {}
            _ = shutdown.changed() => {}
        }
    }
    Ok(())
}

async fn submit(ingest: &Ingest, due: &mut Vec<SimMessage>) {
    let mut by_profile: BTreeMap<&'static str, Vec<Vec<u8>>> = BTreeMap::new();
    for message in due.drain(..) {
        by_profile.entry(message.profile).or_default().push(message.payload);
    }
    for (profile, payloads) in by_profile {
        if let Err(e) = ingest.submit(profile, "simulator", payloads, Admission::Wait).await {
            tracing::warn!("simulator: {profile} messages were not ingested: {e}");
        }
    }
}
