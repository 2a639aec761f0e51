//! The gold layer: anomalies (`telemetry_anomalies`) and the alerts they open or update.

use super::GoldRow;
use rusqlite::{OptionalExtension, Transaction, params};
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

/// How many of the most anomalous anomalies (by score / threshold) the store can list in
/// order; `GET /api/anomalies` asks for at most this many.
pub const RANKED_ANOMALIES: usize = 10_000;

/// Alerts cached at most; past this the cache starts afresh.
const MAX_CACHED_ALERTS: usize = 100_000;

/// The writer's gold-layer state: the live alert of every (profile, entity, detector) it has
/// touched, with the alert updates of the current transaction gathered into one UPDATE per
/// alert, and the ranks of the most anomalous anomalies.
///
/// Only the writer changes alerts and anomalies, so the state stays true as long as every
/// transaction commits; after a rollback [`Gold::forget`] drops it and it is read again.
#[derive(Debug, Default)]
pub struct Gold {
    live: HashMap<AlertKey, LiveAlert>,
    /// Keys whose alert has updates not yet written, in the order they were first updated.
    pending: Vec<AlertKey>,
    leaders: Leaderboard,
    /// The `change_seq` the next insert or close of an anomaly takes; read at first use.
    next_change_seq: Option<i64>,
    /// What happened to alerts in the transaction being written, for the live stream once it
    /// commits: (alert id, `opened`, `escalated`, `acknowledged` or `resolved`).
    changes: Vec<(i64, &'static str)>,
}

type AlertKey = (Arc<str>, Arc<str>, &'static str);

#[derive(Debug, Clone)]
struct LiveAlert {
    id: i64,
    last_event_ms: i64,
    severity: String,
    /// Anomalies added since the alert row was last written, and the newest of them.
    unwritten: Option<UnwrittenUpdate>,
}

#[derive(Debug, Clone)]
struct UnwrittenUpdate {
    anomalies: i64,
    last_anomaly_id: String,
    reason: String,
    updated_at_ms: i64,
}

impl Gold {
    /// Forgets everything (after a rolled-back transaction); it is read again from the store.
    pub fn forget(&mut self) {
        self.live.clear();
        self.pending.clear();
        self.leaders = Leaderboard::default();
        self.next_change_seq = None;
        self.changes.clear();
    }

    /// The alert changes of the transaction just committed, in order.
    pub fn take_changes(&mut self) -> Vec<(i64, &'static str)> {
        std::mem::take(&mut self.changes)
    }

    /// The next `change_seq` (see schema migration 5), read from the store the first time.
    fn next_change_seq(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<i64> {
        if let Some(next) = self.next_change_seq {
            return Ok(next);
        }
        let last: i64 =
            tx.query_row("SELECT COALESCE(MAX(change_seq), 0) FROM telemetry_anomalies", [], |row| row.get(0))?;
        self.next_change_seq = Some(last + 1);
        Ok(last + 1)
    }

    /// Writes anomalies: a new one is inserted and opens or updates its alert; one that closes
    /// an episode (a stop, a zone visit) updates the row of the same id. Re-processed
    /// anomalies (same id) change nothing. Calls `counted` for each new anomaly; returns how
    /// many rows were written. Alert updates are written by [`Gold::write_alerts`].
    pub fn write(
        &mut self,
        tx: &Transaction<'_>,
        rows: &[GoldRow],
        alert_cooldown_ms: i64,
        counted: &mut dyn FnMut(&Arc<str>),
    ) -> rusqlite::Result<usize> {
        self.leaders.load_once(tx)?;
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO telemetry_anomalies (id, reading_id, profile, entity_id, timestamp_ms, detector,
                 metric, value, anomaly_score, threshold, model_label, model_is_anomaly, severity, reason, features,
                 detected_at_ms, episode_start_ms, episode_end_ms, leader, change_seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, -1, 1, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        )?;
        // An episode's score only grows when it closes (a stop's minutes), so a leader stays
        // one; a closing that enters the ranks becomes one.
        let mut close = tx.prepare_cached(
            "UPDATE telemetry_anomalies SET anomaly_score = ?2, value = ?3, severity = ?4, reason = ?5, features = ?6,
                 episode_end_ms = ?7, leader = MAX(leader, ?8), change_seq = ?9
             WHERE id = ?1 AND episode_end_ms IS NULL",
        )?;
        let mut written = 0;
        for row in rows {
            let a = &row.anomaly;
            let features = &row.features_json;
            let episode_end = a.episode.and_then(|e| e.end_ms);
            let excess = excess(a.score, a.threshold);
            let change_seq = self.next_change_seq(tx)?;
            if episode_end.is_some() {
                let leader = self.leaders.would_admit(excess);
                let closed = close.execute(params![
                    a.id,
                    a.score,
                    a.value,
                    a.severity.as_str(),
                    a.reason,
                    features,
                    episode_end,
                    leader,
                    change_seq
                ])?;
                if closed > 0 {
                    self.next_change_seq = Some(change_seq + 1);
                    if leader {
                        self.leaders.admit(excess);
                    }
                    written += 1;
                    continue;
                }
            }
            let leader = self.leaders.would_admit(excess);
            let inserted = insert.execute(params![
                a.id,
                row.reading_id,
                &*row.profile,
                &*row.entity,
                row.timestamp_ms,
                a.detector,
                a.metric.as_deref(),
                a.value,
                a.score,
                a.threshold,
                a.severity.as_str(),
                a.reason,
                features,
                row.detected_at_ms,
                a.episode.map(|e| e.start_ms),
                episode_end,
                leader,
                change_seq
            ])?;
            if inserted > 0 {
                self.next_change_seq = Some(change_seq + 1);
                if leader {
                    self.leaders.admit(excess);
                }
                written += 1;
                counted(&row.profile);
                self.raise_alert(tx, row, alert_cooldown_ms)?;
            }
        }
        Ok(written)
    }

    /// Updates the live alert of the anomaly's (profile, entity, detector) if its last anomaly
    /// is within the cooldown (in event time), or opens a new one. An update is only gathered
    /// here; [`Gold::write_alerts`] writes it.
    fn raise_alert(&mut self, tx: &Transaction<'_>, row: &GoldRow, cooldown_ms: i64) -> rusqlite::Result<()> {
        let a = &row.anomaly;
        let key = (row.profile.clone(), row.entity.clone(), a.detector);
        if !self.live.contains_key(&key) {
            if self.live.len() >= MAX_CACHED_ALERTS {
                self.write_alerts(tx)?;
                self.live.clear();
            }
            if let Some(stored) = stored_live_alert(tx, &key)? {
                self.live.insert(key.clone(), stored);
            }
        }
        if let Some(live) = self.live.get_mut(&key)
            && live.last_event_ms >= row.timestamp_ms - cooldown_ms
        {
            if severity_rank(a.severity.as_str()) > severity_rank(&live.severity) {
                live.severity = a.severity.as_str().to_string();
            }
            live.last_event_ms = live.last_event_ms.max(row.timestamp_ms);
            let update = UnwrittenUpdate {
                anomalies: live.unwritten.as_ref().map_or(0, |u| u.anomalies) + 1,
                last_anomaly_id: a.id.clone(),
                reason: a.reason.clone(),
                updated_at_ms: row.detected_at_ms,
            };
            if live.unwritten.replace(update).is_none() {
                self.pending.push(key);
            }
            return Ok(());
        }
        // No live alert, or its last anomaly is older than the cooldown: a new alert. The old
        // one's gathered update is written first, so the alerts table stays in event order.
        if let Some(mut old) = self.live.remove(&key)
            && let Some(update) = old.unwritten.take()
        {
            write_alert_update(tx, &old, &update)?;
        }
        tx.prepare_cached(
            "INSERT INTO alerts (profile, entity_id, detector, state, severity, reason, first_anomaly_id,
                 last_anomaly_id, anomalies, first_event_ms, last_event_ms, opened_at_ms, updated_at_ms)
             VALUES (?1, ?2, ?3, 'open', ?4, ?5, ?6, ?6, 1, ?7, ?7, ?8, ?8)",
        )?
        .execute(params![
            &*row.profile,
            &*row.entity,
            a.detector,
            a.severity.as_str(),
            a.reason,
            a.id,
            row.timestamp_ms,
            row.detected_at_ms
        ])?;
        let id = tx.last_insert_rowid();
        append_alert_event(tx, id, AlertEvent::Opened, a.severity.as_str(), row.detected_at_ms)?;
        self.changes.push((id, AlertEvent::Opened.as_str()));
        let opened = LiveAlert {
            id,
            last_event_ms: row.timestamp_ms,
            severity: a.severity.as_str().to_string(),
            unwritten: None,
        };
        self.live.insert(key, opened);
        Ok(())
    }

    /// Writes the alert updates gathered so far: one UPDATE per alert.
    pub fn write_alerts(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        for key in self.pending.drain(..) {
            let Some(live) = self.live.get_mut(&key) else { continue };
            if let Some(update) = live.unwritten.take() {
                write_alert_update(tx, live, &update)?;
            }
        }
        Ok(())
    }

    /// Acknowledges or clears (resolves) alert `id`, ThingsBoard's way: the two are
    /// independent, so an alert is active or cleared, and acknowledged or not. Doing either
    /// twice changes nothing. Gathered alert updates are written first, so they land before
    /// the change.
    pub fn transition_alert(
        &mut self,
        tx: &Transaction<'_>,
        id: i64,
        action: AlertAction,
        now_ms: i64,
    ) -> rusqlite::Result<AlertTransition> {
        self.write_alerts(tx)?;
        let current: Option<(String, Option<i64>)> = tx
            .query_row("SELECT state, acknowledged_at_ms FROM alerts WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let Some((state, acknowledged_at_ms)) = current else { return Ok(AlertTransition::NotFound) };
        match action {
            AlertAction::Acknowledge if acknowledged_at_ms.is_some() => Ok(AlertTransition::Unchanged),
            AlertAction::Acknowledge => {
                // A cleared alert stays cleared; an active one becomes `acknowledged`.
                tx.execute(
                    "UPDATE alerts SET state = CASE state WHEN 'resolved' THEN 'resolved' ELSE 'acknowledged' END,
                         acknowledged_at_ms = ?2, updated_at_ms = ?2 WHERE id = ?1",
                    params![id, now_ms],
                )?;
                self.changes.push((id, "acknowledged"));
                Ok(AlertTransition::Done)
            }
            AlertAction::Resolve if state == "resolved" => Ok(AlertTransition::Unchanged),
            AlertAction::Resolve => {
                self.clear(tx, id, now_ms)?;
                Ok(AlertTransition::Done)
            }
        }
    }

    /// Clears alert `id` (state `resolved`, its acknowledgement kept) and records a
    /// `resolved` event for the notification routes.
    fn clear(&mut self, tx: &Transaction<'_>, id: i64, now_ms: i64) -> rusqlite::Result<()> {
        self.live.retain(|_, live| live.id != id);
        let severity: String = tx.query_row(
            "UPDATE alerts SET state = 'resolved', resolved_at_ms = ?2, updated_at_ms = ?2 WHERE id = ?1
             RETURNING severity",
            params![id, now_ms],
            |r| r.get(0),
        )?;
        append_alert_event(tx, id, AlertEvent::Resolved, &severity, now_ms)?;
        self.changes.push((id, AlertEvent::Resolved.as_str()));
        Ok(())
    }

    /// Clears every active alert whose episode is over: its entity has reported readings
    /// more than `cooldown_ms` (event time) past the alert's last anomaly, and that anomaly is
    /// not a finding still under way (a stop or zone visit without its end). What a reading
    /// past the cooldown would do to it anyway (open a new alert) is then visible at once:
    /// the old alert turns `cleared_unack` unless someone acknowledged it. Offline alerts are
    /// the fleet watcher's. Returns how many were cleared.
    pub fn clear_finished(&mut self, tx: &Transaction<'_>, now_ms: i64, cooldown_ms: i64) -> rusqlite::Result<usize> {
        self.write_alerts(tx)?;
        let finished: Vec<i64> = tx
            .prepare_cached(
                "SELECT a.id FROM alerts a
                 JOIN entities e ON e.profile = a.profile AND e.entity_id = a.entity_id
                 WHERE a.state != 'resolved' AND a.detector != ?1 AND e.last_seen_ms > a.last_event_ms + ?2
                   AND NOT EXISTS (SELECT 1 FROM telemetry_anomalies t WHERE t.id = a.last_anomaly_id
                                   AND t.episode_start_ms IS NOT NULL AND t.episode_end_ms IS NULL)",
            )?
            .query_map(params![crate::fleet_watch::OFFLINE, cooldown_ms], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for id in &finished {
            self.clear(tx, *id, now_ms)?;
        }
        Ok(finished.len())
    }

    /// Raises by one severity every alert still open and unacknowledged `after_ms` after it
    /// opened (or after its last escalation), and records an `escalated` event for each, so
    /// the notification routes tell someone again. A critical alert stays critical.
    pub fn escalate(&mut self, tx: &Transaction<'_>, now_ms: i64, after_ms: i64) -> rusqlite::Result<usize> {
        self.write_alerts(tx)?;
        let due: Vec<(i64, String)> = tx
            .prepare_cached(
                "SELECT id, severity FROM alerts
                 WHERE state = 'open' AND severity != 'critical' AND COALESCE(escalated_at_ms, opened_at_ms) <= ?1",
            )?
            .query_map([now_ms - after_ms], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (id, severity) in &due {
            let raised = match severity.as_str() {
                "minor" => "major",
                _ => "critical",
            };
            tx.prepare_cached(
                "UPDATE alerts SET severity = ?2, escalated_at_ms = ?3, updated_at_ms = ?3 WHERE id = ?1",
            )?
            .execute(params![id, raised, now_ms])?;
            append_alert_event(tx, *id, AlertEvent::Escalated, raised, now_ms)?;
            self.changes.push((*id, AlertEvent::Escalated.as_str()));
            for live in self.live.values_mut().filter(|live| live.id == *id) {
                live.severity = raised.to_string();
            }
        }
        Ok(due.len())
    }
}

/// What happened to an alert, as the notification routes see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertEvent {
    Opened,
    Escalated,
    Resolved,
}

impl AlertEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertEvent::Opened => "opened",
            AlertEvent::Escalated => "escalated",
            AlertEvent::Resolved => "resolved",
        }
    }
}

/// Appends to `alert_events`, the ordered log the notification routes follow.
fn append_alert_event(
    tx: &Transaction<'_>,
    alert_id: i64,
    event: AlertEvent,
    severity: &str,
    at_ms: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT INTO alert_events (alert_id, event, severity, at_ms) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![alert_id, event.as_str(), severity, at_ms])?;
    Ok(())
}

/// The newest unresolved alert of `key`, if any.
fn stored_live_alert(tx: &Transaction<'_>, key: &AlertKey) -> rusqlite::Result<Option<LiveAlert>> {
    tx.prepare_cached(
        "SELECT id, severity, last_event_ms FROM alerts
         WHERE profile = ?1 AND entity_id = ?2 AND detector = ?3 AND state != 'resolved'
         ORDER BY id DESC LIMIT 1",
    )?
    .query_row(params![&*key.0, &*key.1, key.2], |r| {
        Ok(LiveAlert { id: r.get(0)?, severity: r.get(1)?, last_event_ms: r.get(2)?, unwritten: None })
    })
    .optional()
}

fn write_alert_update(tx: &Transaction<'_>, live: &LiveAlert, update: &UnwrittenUpdate) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE alerts SET anomalies = anomalies + ?2, last_anomaly_id = ?3, reason = ?4, severity = ?5,
             last_event_ms = ?6, updated_at_ms = ?7
         WHERE id = ?1",
    )?
    .execute(params![
        live.id,
        update.anomalies,
        update.last_anomaly_id,
        update.reason,
        live.severity,
        live.last_event_ms,
        update.updated_at_ms
    ])?;
    Ok(())
}

/// How far past its threshold an anomaly is, as the store ranks it (`anomaly_score /
/// threshold`; SQLite's division by zero is NULL, which ranks below every number).
fn excess(score: f64, threshold: f64) -> f64 {
    let excess = score / threshold;
    if threshold == 0.0 || excess.is_nan() { f64::NEG_INFINITY } else { excess }
}

/// The excess of the [`RANKED_ANOMALIES`] most anomalous anomalies stored so far.
///
/// An anomaly that enters their ranks when it is written is flagged `leader`, and only
/// leaders are indexed by excess. Every anomaly among today's top N was among the top N when
/// it was written (the anomalies before it were a subset of today's), so the leaders always
/// hold the exact top N for any N up to [`RANKED_ANOMALIES`], while the index grows by about
/// N·ln(anomalies / N) entries in all instead of one per anomaly: an index with a random key
/// costs a page write per anomaly and commit, which made it the store's largest cost.
#[derive(Debug, Default)]
struct Leaderboard {
    ranks: BinaryHeap<Reverse<Excess>>,
    loaded: bool,
}

/// An excess ordered by `total_cmp`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Excess(f64);

impl Eq for Excess {}

impl PartialOrd for Excess {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Excess {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl Leaderboard {
    fn load_once(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        if self.loaded {
            return Ok(());
        }
        let mut statement = tx.prepare(
            "SELECT anomaly_score, threshold FROM telemetry_anomalies WHERE leader = 1
             ORDER BY anomaly_score / threshold DESC LIMIT ?1",
        )?;
        let ranked = statement.query_map([RANKED_ANOMALIES as i64], |r| Ok(excess(r.get(0)?, r.get(1)?)))?;
        self.ranks.clear();
        for value in ranked {
            self.ranks.push(Reverse(Excess(value?)));
        }
        self.loaded = true;
        Ok(())
    }

    /// Whether an anomaly of this excess enters the ranks (ties enter: the list breaks them
    /// by id).
    fn would_admit(&self, excess: f64) -> bool {
        match self.ranks.peek() {
            _ if self.ranks.len() < RANKED_ANOMALIES => true,
            Some(Reverse(lowest)) => excess >= lowest.0,
            None => true,
        }
    }

    fn admit(&mut self, excess: f64) {
        self.ranks.push(Reverse(Excess(excess)));
        if self.ranks.len() > RANKED_ANOMALIES {
            self.ranks.pop();
        }
    }
}

fn severity_rank(severity: &str) -> u8 {
    match severity {
        "critical" => 3,
        "major" => 2,
        _ => 1,
    }
}

/// What an operator can do to an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertAction {
    Acknowledge,
    Resolve,
}

impl AlertAction {
    /// How the API and the live stream name the action.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertAction::Acknowledge => "acknowledge",
            AlertAction::Resolve => "resolve",
        }
    }
}

/// The outcome of an operator's action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertTransition {
    Done,
    /// The alert already was what the action makes it.
    Unchanged,
    NotFound,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::query::{self, AnomalyFilter, AnomalyOrder};
    use crate::store::{Durability, open};
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use rusqlite::Connection;
    use teleguard_core::model::{Anomaly, Severity, anomaly_id};

    const COOLDOWN_MS: i64 = 60_000;

    fn store() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().expect("temporary folder");
        let connection = open(dir.path(), Durability::Normal).expect("store");
        (dir, connection)
    }

    fn row(entity: &str, at_ms: i64, score: f64, threshold: f64) -> GoldRow {
        let anomaly = Anomaly {
            id: anomaly_id("drone", entity, at_ms, "zscore", "altitude"),
            detector: "zscore",
            metric: Some("altitude".into()),
            value: Some(score),
            score,
            threshold,
            severity: Severity::from_excess(score, threshold),
            reason: format!("altitude at {at_ms}"),
            features: vec![("z".into(), score)],
            episode: None,
        };
        GoldRow::new(at_ms, "drone".into(), entity.into(), at_ms, anomaly, at_ms)
    }

    fn write(connection: &mut Connection, gold: &mut Gold, rows: &[GoldRow]) {
        let tx = connection.transaction().expect("transaction");
        gold.write(&tx, rows, COOLDOWN_MS, &mut |_| {}).expect("write");
        gold.write_alerts(&tx).expect("alerts");
        tx.commit().expect("commit");
    }

    fn most_anomalous(connection: &Connection, limit: usize) -> Vec<String> {
        let filter = AnomalyFilter {
            limit,
            profile: None,
            entity: None,
            detector: None,
            since_ms: None,
            order: AnomalyOrder::Score,
        };
        query::anomalies(connection, &filter).expect("query").into_iter().map(|a| a.id).collect()
    }

    #[test]
    fn the_leaders_always_hold_the_exact_most_anomalous() {
        let (_dir, mut connection) = store();
        let mut gold = Gold::default();
        let mut rng = SmallRng::seed_from_u64(7);
        let mut at_ms = 0;
        for batch in 0..12i32 {
            // Scores rise for a while (as a fleet going wrong), then fall, so both early and
            // late anomalies end among the most anomalous; ties are common (a coarse score).
            let spread = 400 + 40 * (6 - (batch - 6i32).abs());
            let rows: Vec<GoldRow> = (0..3_000)
                .map(|_| {
                    at_ms += 1;
                    let score = f64::from(rng.random_range(0..spread)) / 10.0 + 3.0;
                    row(&format!("d{}", rng.random_range(0..50)), at_ms, score, 3.0)
                })
                .collect();
            write(&mut connection, &mut gold, &rows);
            if batch == 6 {
                gold.forget(); // as after a rolled-back transaction: read again from the store
            }
        }
        let everything: Vec<String> = connection
            .prepare("SELECT id FROM telemetry_anomalies ORDER BY anomaly_score / threshold DESC, id")
            .expect("statement")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        for limit in [1, 100, RANKED_ANOMALIES] {
            let listed = most_anomalous(&connection, limit);
            let first_difference = listed.iter().zip(&everything).position(|(a, b)| a != b);
            assert_eq!((listed.len(), first_difference), (limit, None), "top {limit}");
        }
        let leaders: usize = connection
            .query_row("SELECT count(*) FROM telemetry_anomalies WHERE leader = 1", [], |r| r.get(0))
            .unwrap();
        // Few left out at this size (36,000 anomalies for 10,000 ranks, rising, with many ties
        // at the floor); a long run indexes a small share.
        assert!(leaders < everything.len() * 9 / 10, "{leaders} leaders of {} anomalies", everything.len());
    }

    #[test]
    fn alert_updates_of_a_transaction_are_gathered_into_one_and_count_every_anomaly() {
        let (_dir, mut connection) = store();
        let mut gold = Gold::default();
        // Five anomalies 10 s apart, then one after the cooldown: two alerts.
        let mut rows: Vec<GoldRow> = (0..5).map(|i| row("d1", i * 10_000, 4.0 + i as f64, 3.0)).collect();
        rows.push(row("d1", 40_000 + COOLDOWN_MS + 1, 3.1, 3.0));
        rows.push(row("d2", 0, 3.3, 3.0));
        write(&mut connection, &mut gold, &rows[..3]);
        write(&mut connection, &mut gold, &rows[3..]);
        let alerts = query::alerts(&connection, query::AlertSelection::All, 10).expect("alerts");
        let d1: Vec<_> = alerts.iter().filter(|a| a.entity == "d1").collect();
        assert_eq!(d1.len(), 2, "{alerts:#?}");
        let first = d1.iter().find(|a| a.first_anomaly_id == rows[0].anomaly.id).expect("the first alert");
        assert_eq!(first.anomalies, 5);
        assert_eq!(first.last_anomaly_id, rows[4].anomaly.id);
        assert_eq!(first.reason, rows[4].anomaly.reason);
        assert_eq!(first.severity, "critical", "8 / 3 is the highest excess of the five");
        let second = d1.iter().find(|a| a.first_anomaly_id == rows[5].anomaly.id).expect("the second alert");
        assert_eq!(second.anomalies, 1);
        assert_eq!(alerts.iter().filter(|a| a.entity == "d2").count(), 1);

        // Written again (re-processing after a crash): nothing changes.
        write(&mut connection, &mut gold, &rows);
        let again = query::alerts(&connection, query::AlertSelection::All, 10).expect("alerts");
        assert_eq!(again.iter().map(|a| a.anomalies).sum::<i64>(), 7);
    }

    #[test]
    fn an_anomaly_after_its_alert_is_resolved_opens_a_new_one() {
        let (_dir, mut connection) = store();
        let mut gold = Gold::default();
        let tx = connection.transaction().expect("transaction");
        gold.write(&tx, &[row("d1", 0, 4.0, 3.0)], COOLDOWN_MS, &mut |_| {}).expect("write");
        gold.write(&tx, &[row("d1", 1_000, 4.0, 3.0)], COOLDOWN_MS, &mut |_| {}).expect("write");
        let id: i64 = tx.query_row("SELECT id FROM alerts", [], |r| r.get(0)).expect("an alert");
        let done = gold.transition_alert(&tx, id, AlertAction::Resolve, 5_000).expect("resolve");
        assert_eq!(done, AlertTransition::Done);
        gold.write(&tx, &[row("d1", 2_000, 4.0, 3.0)], COOLDOWN_MS, &mut |_| {}).expect("write");
        gold.write_alerts(&tx).expect("alerts");
        tx.commit().expect("commit");
        let alerts = query::alerts(&connection, query::AlertSelection::All, 10).expect("alerts");
        assert_eq!(alerts.len(), 2, "{alerts:#?}");
        let resolved = alerts.iter().find(|a| a.state == "resolved").expect("the resolved alert");
        assert_eq!(resolved.anomalies, 2, "the update gathered before resolving is written first");
        assert_eq!(alerts.iter().find(|a| a.state == "open").expect("a new alert").anomalies, 1);
    }

    fn statuses(connection: &Connection) -> Vec<(String, &'static str)> {
        let mut alerts = query::alerts(connection, query::AlertSelection::All, 10).expect("alerts");
        alerts.sort_by_key(|a| a.id);
        alerts.into_iter().map(|a| (a.entity, a.status)).collect()
    }

    fn act(connection: &mut Connection, gold: &mut Gold, id: i64, action: AlertAction) -> AlertTransition {
        let tx = connection.transaction().unwrap();
        let outcome = gold.transition_alert(&tx, id, action, 5_000).unwrap();
        tx.commit().unwrap();
        outcome
    }

    #[test]
    fn acknowledging_and_clearing_are_independent_as_in_thingsboard() {
        let (_dir, mut connection) = store();
        let mut gold = Gold::default();
        write(&mut connection, &mut gold, &[row("d1", 0, 4.0, 3.0), row("d2", 0, 4.0, 3.0)]);
        assert_eq!(statuses(&connection), [("d1".into(), "active_unack"), ("d2".into(), "active_unack")]);
        // d1: acknowledged, then cleared. d2: cleared, then acknowledged.
        assert_eq!(act(&mut connection, &mut gold, 1, AlertAction::Acknowledge), AlertTransition::Done);
        assert_eq!(statuses(&connection)[0].1, "active_ack");
        assert_eq!(act(&mut connection, &mut gold, 1, AlertAction::Resolve), AlertTransition::Done);
        assert_eq!(act(&mut connection, &mut gold, 2, AlertAction::Resolve), AlertTransition::Done);
        assert_eq!(statuses(&connection), [("d1".into(), "cleared_ack"), ("d2".into(), "cleared_unack")]);
        assert_eq!(act(&mut connection, &mut gold, 2, AlertAction::Acknowledge), AlertTransition::Done);
        assert_eq!(statuses(&connection)[1].1, "cleared_ack");
        // Twice changes nothing, and says so; an unknown id is not found.
        assert_eq!(act(&mut connection, &mut gold, 2, AlertAction::Acknowledge), AlertTransition::Unchanged);
        assert_eq!(act(&mut connection, &mut gold, 2, AlertAction::Resolve), AlertTransition::Unchanged);
        assert_eq!(act(&mut connection, &mut gold, 9, AlertAction::Resolve), AlertTransition::NotFound);
        let resolved = events(&connection).into_iter().filter(|e| e.1 == "resolved").count();
        assert_eq!(resolved, 2, "one resolved event per alert, none for the repeat");
        let changes: Vec<_> = gold.take_changes();
        assert_eq!(
            changes,
            [(1, "opened"), (2, "opened"), (1, "acknowledged"), (1, "resolved"), (2, "resolved"), (2, "acknowledged")]
        );
    }

    #[test]
    fn an_alert_clears_once_its_entity_reports_past_the_cooldown_unless_its_finding_is_under_way() {
        let (_dir, mut connection) = store();
        let mut gold = Gold::default();
        let mut stop = row("d3", 0, 4.0, 3.0);
        stop.anomaly.episode = Some(teleguard_core::model::Episode { start_ms: 0, end_ms: None });
        write(&mut connection, &mut gold, &[row("d1", 0, 4.0, 3.0), row("d2", 0, 4.0, 3.0), stop]);
        let seen = |connection: &Connection, entity: &str, last_seen_ms: i64| {
            connection
                .execute(
                    "INSERT INTO entities VALUES ('drone', ?1, 0, ?2)
                     ON CONFLICT DO UPDATE SET last_seen_ms = excluded.last_seen_ms",
                    params![entity, last_seen_ms],
                )
                .unwrap();
        };
        let clear = |connection: &mut Connection, gold: &mut Gold| {
            let tx = connection.transaction().unwrap();
            let cleared = gold.clear_finished(&tx, 9_000, COOLDOWN_MS).unwrap();
            tx.commit().unwrap();
            cleared
        };
        // d1 reports past the cooldown, d2 only within it, d3 past it but still stopped.
        seen(&connection, "d1", COOLDOWN_MS + 1);
        seen(&connection, "d2", COOLDOWN_MS);
        seen(&connection, "d3", COOLDOWN_MS * 2);
        assert_eq!(clear(&mut connection, &mut gold), 1);
        assert_eq!(
            statuses(&connection),
            [("d1".into(), "cleared_unack"), ("d2".into(), "active_unack"), ("d3".into(), "active_unack")]
        );
        assert_eq!(clear(&mut connection, &mut gold), 0, "cleared once");
        // A new anomaly of d1 opens a new alert; d2's next one within the cooldown updates its own.
        write(&mut connection, &mut gold, &[row("d1", COOLDOWN_MS + 2, 4.0, 3.0), row("d2", COOLDOWN_MS, 4.0, 3.0)]);
        assert_eq!(statuses(&connection).len(), 4);
        assert_eq!(clear(&mut connection, &mut gold), 0);
    }

    fn events(connection: &Connection) -> Vec<(i64, String, String)> {
        crate::store::alert_events::after(connection, 0, 100)
            .expect("events")
            .into_iter()
            .map(|e| (e.alert_id, e.event, e.severity))
            .collect()
    }

    #[test]
    fn open_alerts_left_unacknowledged_escalate_a_severity_at_a_time_and_say_so() {
        let (_dir, mut connection) = store();
        let mut gold = Gold::default();
        // Two minor alerts opened at t = 1,000 (detected_at); one is acknowledged.
        write(&mut connection, &mut gold, &[row("d1", 1_000, 3.1, 3.0), row("d2", 1_000, 3.1, 3.0)]);
        let tx = connection.transaction().unwrap();
        gold.transition_alert(&tx, 2, AlertAction::Acknowledge, 1_500).unwrap();
        tx.commit().unwrap();
        let escalate = |connection: &mut Connection, gold: &mut Gold, now_ms: i64| {
            let tx = connection.transaction().unwrap();
            let count = gold.escalate(&tx, now_ms, 10_000).unwrap();
            tx.commit().unwrap();
            count
        };
        assert_eq!(escalate(&mut connection, &mut gold, 10_999), 0, "not yet");
        assert_eq!(escalate(&mut connection, &mut gold, 11_000), 1, "only the unacknowledged one");
        assert_eq!(escalate(&mut connection, &mut gold, 15_000), 0, "counted from its escalation");
        // A new anomaly of the escalated alert keeps the raised severity.
        write(&mut connection, &mut gold, &[row("d1", 20_000, 3.2, 3.0)]);
        assert_eq!(escalate(&mut connection, &mut gold, 21_000), 1);
        assert_eq!(escalate(&mut connection, &mut gold, 99_000), 0, "critical is the top");
        let severity: String =
            connection.query_row("SELECT severity FROM alerts WHERE id = 1", [], |r| r.get(0)).unwrap();
        assert_eq!(severity, "critical");
        let tx = connection.transaction().unwrap();
        gold.transition_alert(&tx, 1, AlertAction::Resolve, 100_000).unwrap();
        tx.commit().unwrap();
        let expected = [
            (1, "opened", "minor"),
            (2, "opened", "minor"),
            (1, "escalated", "major"),
            (1, "escalated", "critical"),
            (1, "resolved", "critical"),
        ]
        .map(|(id, event, severity)| (id, event.to_string(), severity.to_string()));
        assert_eq!(events(&connection), expected);
    }
}
