//! Quarantine: the rejected messages bronze keeps (dead letters), listed and counted by
//! profile, reason code, source and arrival time, and read back for a replay.
//!
//! A dead letter is never deleted by a replay: it gets `replayed_as`, the id of the reading
//! or of the new dead letter it became, in the same transaction that stored that outcome.

use super::StoreError;
use rusqlite::{Connection, ToSql};
use serde::Serialize;
use std::collections::BTreeMap;
use teleguard_core::time::format_millis;

/// Bytes of a payload the list shows.
const SHOWN_PAYLOAD_BYTES: usize = 1024;

/// Reason codes whose messages a replay cannot judge again: the transport's grant (the
/// vouched entity, the token) is not kept, and an oversized payload is kept only in part.
pub const NOT_REPLAYABLE: [&str; 3] = ["identity_mismatch", "forbidden", "payload_too_large"];

/// Which dead letters, by whether they were replayed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayState {
    /// Not replayed yet.
    Open,
    /// Replayed (see `replayed_as`).
    Replayed,
    /// Both.
    #[default]
    All,
}

impl ReplayState {
    /// The state as a query parameter (a reference that lives as long as the program).
    fn param(self) -> &'static &'static str {
        match self {
            ReplayState::Open => &"open",
            ReplayState::Replayed => &"replayed",
            ReplayState::All => &"all",
        }
    }
}

/// What to select; every field left `None` selects everything.
#[derive(Debug, Clone, Default)]
pub struct QuarantineFilter {
    pub profile: Option<String>,
    /// A reason code (`schema`, `malformed_json`, ...).
    pub reason: Option<String>,
    pub source: Option<String>,
    /// Arrival time bounds, epoch ms: `since` inclusive, `until` exclusive.
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub state: ReplayState,
    /// Only dead letters with a smaller id (for paging back from the newest).
    pub before_id: Option<i64>,
}

/// The WHERE clause every query shares, over `dead_letters`; parameters ?1 to ?7.
const MATCHES: &str = "(?1 IS NULL OR profile = ?1) AND (?2 IS NULL OR reason_code = ?2)
     AND (?3 IS NULL OR source = ?3) AND (?4 IS NULL OR received_at_ms >= ?4)
     AND (?5 IS NULL OR received_at_ms < ?5)
     AND (?6 = 'all' OR (?6 = 'open') = (replayed_as IS NULL)) AND (?7 IS NULL OR id < ?7)";

impl QuarantineFilter {
    fn params(&self) -> [&dyn ToSql; 7] {
        [&self.profile, &self.reason, &self.source, &self.since_ms, &self.until_ms, self.state.param(), &self.before_id]
    }
}

/// A rejected message as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub received_at: String,
    pub source: String,
    pub profile: String,
    /// The reason code, for filters and metrics.
    pub reason_code: String,
    /// The reason for people: the field, the value and what is wrong.
    pub reason: String,
    /// Once replayed: the id of the reading, or of the new dead letter, it became.
    pub replayed_as: Option<i64>,
    pub payload_bytes: usize,
    /// The payload as text, cut to its first 1024 bytes.
    pub payload: String,
}

/// Dead letters matching `filter`, newest first, at most `limit`.
pub fn list(connection: &Connection, filter: &QuarantineFilter, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
    let sql = format!(
        "SELECT id, received_at_ms, source, profile, reason_code, reason, replayed_as, payload FROM dead_letters
         WHERE {MATCHES} ORDER BY id DESC LIMIT ?8"
    );
    let mut statement = connection.prepare_cached(&sql)?;
    let [p1, p2, p3, p4, p5, p6, p7] = filter.params();
    let limit = limit as i64;
    let rows = statement
        .query_map(rusqlite::params![p1, p2, p3, p4, p5, p6, p7, limit], |row| {
            let payload: Vec<u8> = row.get(7)?;
            let shown = &payload[..payload.len().min(SHOWN_PAYLOAD_BYTES)];
            Ok(DeadLetter {
                id: row.get(0)?,
                received_at: format_millis(row.get(1)?),
                source: row.get(2)?,
                profile: row.get(3)?,
                reason_code: row.get::<_, Option<String>>(4)?.unwrap_or_default(),
                reason: row.get::<_, Option<String>>(5)?.unwrap_or_default(),
                replayed_as: row.get(6)?,
                payload_bytes: payload.len(),
                payload: String::from_utf8_lossy(shown).into_owned(),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// How many dead letters match, in all and per reason code, profile and source.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct QuarantineCounts {
    pub total: i64,
    /// Of them, not replayed yet.
    pub open: i64,
    pub by_reason: BTreeMap<String, i64>,
    pub by_profile: BTreeMap<String, i64>,
    pub by_source: BTreeMap<String, i64>,
}

/// Counts of the dead letters matching `filter` (its `before_id` included).
pub fn counts(connection: &Connection, filter: &QuarantineFilter) -> Result<QuarantineCounts, StoreError> {
    let sql = format!(
        "SELECT reason_code, profile, source, count(*), sum(replayed_as IS NULL) FROM dead_letters
         WHERE {MATCHES} GROUP BY reason_code, profile, source"
    );
    let mut statement = connection.prepare_cached(&sql)?;
    let mut counts = QuarantineCounts::default();
    let mut rows = statement.query(&filter.params()[..])?;
    while let Some(row) = rows.next()? {
        let reason: Option<String> = row.get(0)?;
        let (profile, source): (String, String) = (row.get(1)?, row.get(2)?);
        let (count, open): (i64, i64) = (row.get(3)?, row.get(4)?);
        counts.total += count;
        counts.open += open;
        *counts.by_reason.entry(reason.unwrap_or_default()).or_default() += count;
        *counts.by_profile.entry(profile).or_default() += count;
        *counts.by_source.entry(source).or_default() += count;
    }
    Ok(counts)
}

/// A dead letter as a replay needs it: the whole payload and where it came from.
#[derive(Debug, Clone)]
pub struct Quarantined {
    pub id: i64,
    pub received_at_ms: i64,
    pub source: String,
    pub profile: String,
    pub reason_code: String,
    pub replayed_as: Option<i64>,
    pub payload: Vec<u8>,
}

fn quarantined(row: &rusqlite::Row<'_>) -> rusqlite::Result<Quarantined> {
    Ok(Quarantined {
        id: row.get(0)?,
        received_at_ms: row.get(1)?,
        source: row.get(2)?,
        profile: row.get(3)?,
        reason_code: row.get::<_, Option<String>>(4)?.unwrap_or_default(),
        replayed_as: row.get(5)?,
        payload: row.get(6)?,
    })
}

/// The dead letters with these ids, in id order; ids that are no dead letter are left out.
pub fn by_ids(connection: &Connection, ids: &[i64]) -> Result<Vec<Quarantined>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT id, received_at_ms, source, profile, reason_code, replayed_as, payload FROM dead_letters WHERE id = ?1",
    )?;
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut found = Vec::with_capacity(sorted.len());
    for id in sorted {
        if let Some(letter) = statement.query_map([id], quarantined)?.next() {
            found.push(letter?);
        }
    }
    Ok(found)
}

/// The open dead letters matching `filter` that a replay can judge again, oldest first, at
/// most `limit`.
pub fn replayable(
    connection: &Connection,
    filter: &QuarantineFilter,
    limit: usize,
) -> Result<Vec<Quarantined>, StoreError> {
    let filter = QuarantineFilter { state: ReplayState::Open, ..filter.clone() };
    let excluded = NOT_REPLAYABLE.map(|code| format!("'{code}'")).join(", ");
    let sql = format!(
        "SELECT id, received_at_ms, source, profile, reason_code, replayed_as, payload FROM dead_letters
         WHERE {MATCHES} AND reason_code NOT IN ({excluded}) ORDER BY id LIMIT ?8"
    );
    let mut statement = connection.prepare_cached(&sql)?;
    let [p1, p2, p3, p4, p5, p6, p7] = filter.params();
    let limit = limit as i64;
    let rows = statement
        .query_map(rusqlite::params![p1, p2, p3, p4, p5, p6, p7, limit], quarantined)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Connection {
        let mut connection = Connection::open_in_memory().expect("database");
        super::super::schema::migrate(&mut connection).expect("schema");
        // id, arrival, source, profile, verdict, reason code, replayed as.
        type Row<'a> = (i64, i64, &'a str, &'a str, &'a str, &'a str, Option<i64>);
        let rows: [Row<'_>; 5] = [
            (1, 1_000, "http", "vehicle", "valid", "", None),
            (2, 2_000, "http", "vehicle", "rejected", "schema", None),
            (3, 3_000, "mqtt", "drone", "rejected", "malformed_json", Some(9)),
            (4, 4_000, "mqtt", "drone", "rejected", "schema", None),
            (5, 5_000, "mqtt", "drone", "rejected", "identity_mismatch", None),
        ];
        for (id, at, source, profile, verdict, code, replayed_as) in rows {
            let code = (verdict == "rejected").then_some(code);
            connection
                .execute(
                    "INSERT INTO bronze (id, received_at_ms, source, profile, verdict, reason_code, reason, replayed_as,
                         messages, payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, 1, x'7b7d')",
                    rusqlite::params![id, at, source, profile, verdict, code, replayed_as],
                )
                .expect("row");
        }
        connection
    }

    fn ids(letters: &[DeadLetter]) -> Vec<i64> {
        letters.iter().map(|l| l.id).collect()
    }

    #[test]
    fn filters_combine_and_the_newest_come_first() {
        let c = store();
        let all = QuarantineFilter::default();
        assert_eq!(ids(&list(&c, &all, 100).unwrap()), [5, 4, 3, 2]);
        assert_eq!(ids(&list(&c, &all, 2).unwrap()), [5, 4]);
        let schema = QuarantineFilter { reason: Some("schema".into()), ..Default::default() };
        assert_eq!(ids(&list(&c, &schema, 100).unwrap()), [4, 2]);
        let mqtt_schema = QuarantineFilter { source: Some("mqtt".into()), ..schema.clone() };
        assert_eq!(ids(&list(&c, &mqtt_schema, 100).unwrap()), [4]);
        let window = QuarantineFilter { since_ms: Some(3_000), until_ms: Some(5_000), ..Default::default() };
        assert_eq!(ids(&list(&c, &window, 100).unwrap()), [4, 3]);
        let open = QuarantineFilter { state: ReplayState::Open, ..Default::default() };
        assert_eq!(ids(&list(&c, &open, 100).unwrap()), [5, 4, 2]);
        let replayed = QuarantineFilter { state: ReplayState::Replayed, ..Default::default() };
        assert_eq!(list(&c, &replayed, 100).unwrap()[0].replayed_as, Some(9));
        let page = QuarantineFilter { before_id: Some(4), ..Default::default() };
        assert_eq!(ids(&list(&c, &page, 100).unwrap()), [3, 2]);
        let drone = QuarantineFilter { profile: Some("drone".into()), ..Default::default() };
        assert_eq!(ids(&list(&c, &drone, 100).unwrap()), [5, 4, 3]);
    }

    #[test]
    fn counts_per_reason_profile_and_source() {
        let c = store();
        let counts = counts(&c, &QuarantineFilter::default()).unwrap();
        assert_eq!(counts.total, 4);
        assert_eq!(counts.open, 3);
        assert_eq!(counts.by_reason["schema"], 2);
        assert_eq!(counts.by_reason["identity_mismatch"], 1);
        assert_eq!(counts.by_profile["drone"], 3);
        assert_eq!(counts.by_source["http"], 1);
        let none = QuarantineFilter { profile: Some("submarine".into()), ..Default::default() };
        assert_eq!(super::counts(&c, &none).unwrap(), QuarantineCounts::default());
    }

    #[test]
    fn a_replay_takes_open_replayable_letters_oldest_first() {
        let c = store();
        let letters = replayable(&c, &QuarantineFilter::default(), 100).unwrap();
        // 3 was replayed already, 5 is a spoofed identity: neither is taken again.
        assert_eq!(letters.iter().map(|l| l.id).collect::<Vec<_>>(), [2, 4]);
        assert_eq!(letters[0].payload, b"{}");
        let picked = by_ids(&c, &[4, 1, 4, 3, 99]).unwrap();
        assert_eq!(picked.iter().map(|l| l.id).collect::<Vec<_>>(), [3, 4], "1 is valid, 99 does not exist");
    }

    #[test]
    fn the_list_reads_rejected_rows_through_their_partial_index() {
        let c = store();
        let plan: String = c
            .query_row(
                &format!("EXPLAIN QUERY PLAN SELECT id FROM dead_letters WHERE {MATCHES} ORDER BY id DESC LIMIT 10"),
                rusqlite::params![
                    None::<String>,
                    None::<String>,
                    None::<String>,
                    None::<i64>,
                    None::<i64>,
                    "all",
                    None::<i64>
                ],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("bronze_quarantine"), "{plan}");
    }
}
