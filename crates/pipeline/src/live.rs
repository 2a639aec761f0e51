//! The latest stored readings, kept in memory so the API serves them without scanning silver,
//! and the stream of committed anomalies and alert changes the dashboard follows.

use crate::store::SilverRow;
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Readings kept across all entities.
const RECENT_CAPACITY: usize = 1000;
/// Readings kept per entity.
const PER_ENTITY_CAPACITY: usize = 100;
/// Events a subscriber may fall behind by before it skips the oldest.
const EVENT_BACKLOG: usize = 1024;

#[derive(Debug, Default)]
struct Inner {
    recent: VecDeque<Arc<SilverRow>>,
    by_entity: FxHashMap<Arc<str>, VecDeque<Arc<SilverRow>>>,
}

/// Something committed that a live view shows at once.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LiveEvent {
    /// An anomaly, committed to gold.
    Anomaly {
        id: String,
        profile: Arc<str>,
        entity: Arc<str>,
        timestamp_ms: i64,
        detector: &'static str,
        metric: Option<Arc<str>>,
        value: Option<f64>,
        score: f64,
        severity: &'static str,
        reason: String,
    },
    /// A committed change of an alert: `opened`, `escalated`, `acknowledged` or `resolved`
    /// (by an operator, or by the pipeline when the entity's episode is over).
    Alert { id: i64, event: &'static str },
}

/// One entity as the fleet view shows it.
#[derive(Debug, Clone)]
pub struct EntitySnapshot {
    pub latest: Arc<SilverRow>,
    /// Positions of its newest readings (at most the trail length asked for), oldest first.
    pub trail: Vec<(f64, f64)>,
    /// The median gap between its readings' event times, when it has two or more.
    pub usual_interval_ms: Option<i64>,
}

/// Newest-first views of committed readings, and the live event stream.
#[derive(Debug)]
pub struct LiveView {
    inner: Mutex<Inner>,
    events: broadcast::Sender<LiveEvent>,
}

impl Default for LiveView {
    fn default() -> Self {
        LiveView { inner: Mutex::default(), events: broadcast::channel(EVENT_BACKLOG).0 }
    }
}

impl LiveView {
    /// Adds committed readings, oldest first.
    pub fn push(&self, rows: impl IntoIterator<Item = Arc<SilverRow>>) {
        let mut inner = self.inner.lock().expect("live view lock");
        for row in rows {
            let per_entity = crate::by_name(&mut inner.by_entity, &row.entity, VecDeque::new);
            if per_entity.len() == PER_ENTITY_CAPACITY {
                per_entity.pop_front();
            }
            per_entity.push_back(row.clone());
            if inner.recent.len() == RECENT_CAPACITY {
                inner.recent.pop_front();
            }
            inner.recent.push_back(row);
        }
    }

    /// The newest `limit` readings, of one entity or of all, newest first.
    pub fn latest(&self, entity: Option<&str>, limit: usize) -> Vec<Arc<SilverRow>> {
        let inner = self.inner.lock().expect("live view lock");
        let source = match entity {
            Some(entity) => match inner.by_entity.get(entity) {
                Some(rows) => rows,
                None => return Vec::new(),
            },
            None => &inner.recent,
        };
        source.iter().rev().take(limit).cloned().collect()
    }

    /// Every entity seen, with its newest reading, its last `trail_len` positions and its usual
    /// reporting interval.
    pub fn fleet(&self, trail_len: usize) -> Vec<EntitySnapshot> {
        let inner = self.inner.lock().expect("live view lock");
        let mut gaps = Vec::with_capacity(PER_ENTITY_CAPACITY);
        inner
            .by_entity
            .values()
            .filter_map(|rows| {
                let latest = rows.back()?.clone();
                let mut trail: Vec<(f64, f64)> =
                    rows.iter().rev().filter_map(|r| Some((r.latitude?, r.longitude?))).take(trail_len).collect();
                trail.reverse();
                gaps.clear();
                gaps.extend(rows.iter().zip(rows.iter().skip(1)).map(|(a, b)| b.timestamp_ms - a.timestamp_ms));
                gaps.retain(|gap| *gap > 0);
                let usual_interval_ms = median(&mut gaps);
                Some(EntitySnapshot { latest, trail, usual_interval_ms })
            })
            .collect()
    }

    /// Tells every subscriber; never waits for one.
    pub fn announce(&self, event: LiveEvent) {
        // No subscriber is not an error: nobody is watching.
        let _ = self.events.send(event);
    }

    /// A receiver of events announced from now on; one that falls behind by more than
    /// the backlog skips the oldest.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.events.subscribe()
    }
}

fn median(values: &mut [i64]) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    let middle = values.len() / 2;
    Some(*values.select_nth_unstable(middle).1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn row(entity: &str, timestamp_ms: i64, position: Option<(f64, f64)>) -> Arc<SilverRow> {
        Arc::new(SilverRow {
            id: timestamp_ms,
            profile: Arc::from("vehicle"),
            entity: Arc::from(entity),
            timestamp_ms,
            latitude: position.map(|p| p.0),
            longitude: position.map(|p| p.1),
            metrics: "{}".into(),
            attributes: "{}".into(),
            driver_name: None,
            current_zone: None,
            processed_at_ms: timestamp_ms,
            anomalies: Vec::new(),
            received: Instant::now(),
        })
    }

    #[test]
    fn fleet_gives_each_entity_its_trail_and_median_interval() {
        let live = LiveView::default();
        // Gaps of 10 s, 10 s, 30 s: the median is 10 s; one reading has no position.
        live.push([0, 10_000, 20_000, 50_000].map(|t| row("V1", t, Some((37.0 + t as f64 / 1e6, -122.0)))));
        live.push([row("V1", 60_000, None), row("V2", 5_000, Some((1.0, 2.0)))]);
        let mut fleet = live.fleet(3);
        fleet.sort_by(|a, b| a.latest.entity.cmp(&b.latest.entity));
        assert_eq!(fleet.len(), 2);
        assert_eq!(fleet[0].latest.timestamp_ms, 60_000);
        assert_eq!(fleet[0].trail, vec![(37.01, -122.0), (37.02, -122.0), (37.05, -122.0)]);
        assert_eq!(fleet[0].usual_interval_ms, Some(10_000));
        assert_eq!(fleet[1].trail, vec![(1.0, 2.0)]);
        assert_eq!(fleet[1].usual_interval_ms, None);
    }

    #[test]
    fn a_subscriber_that_falls_behind_skips_and_never_blocks_the_sender() {
        let live = LiveView::default();
        let mut slow = live.subscribe();
        for id in 0..(EVENT_BACKLOG as i64 + 10) {
            live.announce(LiveEvent::Alert { id, event: "acknowledged" });
        }
        assert!(matches!(slow.try_recv(), Err(broadcast::error::TryRecvError::Lagged(10))));
        assert_eq!(slow.try_recv().unwrap(), LiveEvent::Alert { id: 10, event: "acknowledged" });
    }
}
