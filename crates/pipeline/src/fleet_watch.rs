//! The fleet watcher. Offline alerts: an entity silent past its profile's threshold (`offline_after_secs`, else
//! five times its usual interval, at least 30 s) raises an `offline` anomaly and alert; its
//! next reading resolves the alert.
//!
//! The watcher is stateless: each tick it compares the live view (latest arrival per entity)
//! with the `offline` alerts open in the store, so a restart neither forgets an open alert nor
//! raises a second one (the anomaly id is that of the entity's last reading). Silence is
//! counted from the later of the last arrival and this process's start: what happened while
//! teleguard was down is not known, so every entity gets its threshold after a start.
//!
//! It also has the writer clear every few seconds the alerts whose episode is over (their
//! entity reported past the cooldown since their last anomaly): see `Gold::clear_finished`.

use crate::live::LiveView;
use crate::store::writer::StoreWriter;
use crate::store::{GoldRow, Reader, StoreError};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use teleguard_core::detect::for_people;
use teleguard_core::model::{Anomaly, Severity, anomaly_id};
use teleguard_core::profile::ProfileRegistry;
use teleguard_core::time::{format_millis, now_millis};
use tokio::sync::watch;

/// The detector's name on anomalies and alerts.
pub const OFFLINE: &str = "offline";
/// How often the fleet is looked at.
const TICK: Duration = Duration::from_secs(1);
/// Every this many ticks, alerts whose episode is over are cleared.
const CLEAR_EVERY_TICKS: u32 = 5;

/// What the watcher needs from the pipeline.
#[derive(Debug, Clone)]
pub struct FleetWatch {
    pub live: Arc<LiveView>,
    pub profiles: Arc<ProfileRegistry>,
    pub reader: Arc<Reader>,
    pub store: StoreWriter,
}

impl FleetWatch {
    /// Looks at the fleet every second until `shutdown`, and every few seconds has the alerts
    /// whose episode is over cleared.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let started_ms = now_millis();
        for tick in 1u32.. {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            if let Err(e) = self.tick(started_ms, now_millis()).await {
                tracing::warn!("offline alerts: cannot look at the fleet: {e}");
            }
            if tick % CLEAR_EVERY_TICKS == 0 && self.store.clear_finished_alerts(now_millis()).await.is_err() {
                return;
            }
        }
    }

    /// One look: raise what went silent, resolve what is back.
    pub async fn tick(&self, started_ms: i64, now_ms: i64) -> Result<(), StoreError> {
        let open: HashSet<(String, String)> = self
            .reader
            .run(|c| {
                let mut statement = c.prepare_cached(
                    "SELECT DISTINCT profile, entity_id FROM alerts WHERE detector = ?1 AND state != 'resolved'",
                )?;
                let rows = statement.query_map([OFFLINE], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(rows.collect::<Result<HashSet<_>, _>>()?)
            })
            .await?;
        let (mut went, mut came_back) = (Vec::new(), Vec::new());
        for snapshot in self.live.fleet(0) {
            let row = &snapshot.latest;
            let Some(profile) = self.profiles.by_name(&row.profile) else { continue };
            let usual = snapshot.usual_interval_ms.map(|ms| Duration::from_millis(ms.max(0) as u64));
            let threshold_ms = profile.silence_threshold(usual).as_millis() as i64;
            let silent_ms = now_ms - row.processed_at_ms.max(started_ms);
            let has_alert = open.contains(&(row.profile.to_string(), row.entity.to_string()));
            if silent_ms > threshold_ms && profile.offline_alert && !has_alert {
                let anomaly = offline_anomaly(&row.profile, &row.entity, row, silent_ms, threshold_ms, usual);
                went.push(GoldRow::new(
                    row.id,
                    row.profile.clone(),
                    row.entity.clone(),
                    row.timestamp_ms,
                    anomaly,
                    now_ms,
                ));
            } else if silent_ms <= threshold_ms && has_alert {
                came_back.push((row.profile.clone(), row.entity.clone()));
            }
        }
        if went.is_empty() && came_back.is_empty() {
            return Ok(());
        }
        if !went.is_empty() {
            tracing::info!("offline alerts: {} entities went silent", went.len());
        }
        self.store.offline_changes(went, came_back).await
    }
}

fn offline_anomaly(
    profile: &str,
    entity: &str,
    last: &crate::store::SilverRow,
    silent_ms: i64,
    threshold_ms: i64,
    usual: Option<Duration>,
) -> Anomaly {
    let where_seen = match (last.latitude, last.longitude) {
        (Some(lat), Some(lon)) => format!(" at {lat:.5},{lon:.5}"),
        _ => String::new(),
    };
    let usual_text = usual.map_or_else(String::new, |u| format!(", usually every {} s", for_people(u.as_secs_f64())));
    Anomaly {
        id: anomaly_id(profile, entity, last.timestamp_ms, OFFLINE, ""),
        detector: OFFLINE,
        metric: None,
        value: Some(silent_ms as f64 / 1000.0),
        score: silent_ms as f64 / threshold_ms.max(1) as f64,
        threshold: 1.0,
        severity: Severity::Minor,
        reason: format!(
            "no reading for {} s (offline after {} s{usual_text}); last seen {}{where_seen}",
            for_people(silent_ms as f64 / 1000.0),
            for_people(threshold_ms as f64 / 1000.0),
            format_millis(last.timestamp_ms)
        ),
        features: vec![
            (Arc::from("silent_s"), silent_ms as f64 / 1000.0),
            (Arc::from("threshold_s"), threshold_ms as f64 / 1000.0),
        ],
        episode: None,
    }
}
