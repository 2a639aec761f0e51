//! Data files as `replay` and `train` read them: CSV or NDJSON files or folders of them,
//! validated by a profile, in event-time order to the precision their timestamps carry.

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use teleguard_core::json::{FieldTable, Message, Scalar, parse_message};
use teleguard_core::model::Reading;
use teleguard_core::profile::Profile;
use teleguard_core::time::{PreciseTime, parse_timestamp_precise};
use teleguard_core::validate::validate;

/// One valid record of a file: its place in the file (from 0), its reading, and its event time
/// as precise as it was written.
#[derive(Debug)]
pub struct Record {
    pub index: usize,
    pub reading: Reading,
    pub time: PreciseTime,
}

/// A file's valid records in event-time order, and how many it had in all.
#[derive(Debug)]
pub struct DataFile {
    pub records: Vec<Record>,
    pub total: usize,
}

/// The files named, with each folder replaced by its data files in name order.
pub fn expand(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot read folder {}", path.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                        ["csv", "ndjson", "jsonl", "json"].iter().any(|known| e.eq_ignore_ascii_case(known))
                    })
            })
            .collect();
        if found.is_empty() {
            bail!("folder {} holds no .csv, .ndjson, .jsonl or .json file", path.display());
        }
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

/// Reads and validates one file; rejected records are counted and the first five named on
/// standard error. Records are sorted by their full-precision event time (file order among
/// equal times), so readings a fraction of a millisecond apart keep their order, but the records
/// of a device that mostly go forward in the file keep their file order: a file has no arrival
/// times, so its order stands for the order such a device's readings arrived in, and a record
/// older than an earlier one of its device stays after it (a clock that jumped back shows as the
/// step back it was). A file in event-time order is sorted exactly as by event time alone, and
/// one exported newest first is sorted by event time.
pub fn read_file(profile: &Profile, path: &Path) -> anyhow::Result<DataFile> {
    let messages = read_messages(path)?;
    let mut timestamp_only = FieldTable::default();
    let timestamp_slot = timestamp_only.slot_for(&profile.timestamp_field);
    let mut records = Vec::with_capacity(messages.len());
    let mut rejected = 0;
    for (index, message) in messages.iter().enumerate() {
        match validate(profile, message) {
            Ok(reading) => {
                let time = precise_time(message, &timestamp_only, timestamp_slot, profile)
                    .unwrap_or(PreciseTime { nanos: reading.event_time_ms * 1_000_000, decimals: 3 });
                records.push(Record { index, reading, time });
            }
            Err(rejection) => {
                rejected += 1;
                if rejected <= 5 {
                    eprintln!("{}: record {}: {rejection}", path.display(), index + 1);
                }
            }
        }
    }
    if rejected > 0 {
        eprintln!(
            "{}: {rejected} of {} records rejected; using the other {}",
            path.display(),
            messages.len(),
            records.len()
        );
    }
    Ok(DataFile { records: sort_keeping_each_device_in_file_order(records), total: messages.len() })
}

/// `records` (in file order) ordered by event time across devices. A device whose records mostly
/// go forward in time in the file (the order a live stream arrives in) keeps its file order, each
/// record placed by the newest event time its device had reached by then; a device whose records
/// mostly go back (an export newest first, a shuffled one) is sorted by event time. The sort is
/// stable, so a file in event-time order stays as it is.
fn sort_keeping_each_device_in_file_order(records: Vec<Record>) -> Vec<Record> {
    use std::collections::HashMap;
    use std::sync::Arc;
    // Per device: its last time in file order, and its steps forward minus its steps back.
    let mut steps: HashMap<Arc<str>, (i64, i64)> = HashMap::new();
    for record in &records {
        let at = record.time.nanos;
        let (last, balance) = steps.entry(record.reading.entity.clone()).or_insert((at, 0));
        *balance += (at - *last).signum();
        *last = at;
    }
    let mut newest: HashMap<Arc<str>, i64> = HashMap::new();
    let mut keyed: Vec<(i64, Record)> = records
        .into_iter()
        .map(|record| {
            let at = record.time.nanos;
            if steps.get(&record.reading.entity).is_some_and(|(_, balance)| *balance < 0) {
                return (at, record);
            }
            let reached = newest.entry(record.reading.entity.clone()).or_insert(at);
            *reached = (*reached).max(at);
            (*reached, record)
        })
        .collect();
    keyed.sort_by_key(|(key, _)| *key);
    keyed.into_iter().map(|(_, record)| record).collect()
}

/// The event time of a message validation accepted, to the precision it was written with.
fn precise_time(message: &[u8], table: &FieldTable, slot: usize, profile: &Profile) -> Option<PreciseTime> {
    let Ok(Message::Object(slots)) = parse_message(message, table) else { return None };
    let value: &Scalar<'_> = slots.get(slot)?.as_ref()?;
    parse_timestamp_precise(value, profile.timestamp_format).ok()
}

/// The file's records as JSON messages: NDJSON lines as they are, CSV rows as objects (cells
/// that are integers stay integers, so no digit of a long one is lost to a float).
fn read_messages(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let is_csv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    if !is_csv {
        let mut messages = Vec::new();
        for line in BufReader::new(file).lines() {
            let line = line.with_context(|| format!("cannot read {}", path.display()))?;
            if !line.trim().is_empty() {
                messages.push(line.into_bytes());
            }
        }
        return Ok(messages);
    }
    let mut reader = csv::Reader::from_reader(file);
    let headers = reader.headers().with_context(|| format!("{}: no header row", path.display()))?.clone();
    let mut messages = Vec::new();
    for (row, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("{}: row {}", path.display(), row + 2))?;
        let object: serde_json::Map<String, Value> = headers
            .iter()
            .zip(record.iter())
            .filter(|(_, cell)| !cell.trim().is_empty())
            .map(|(name, cell)| {
                let cell = cell.trim();
                let value = match (cell.parse::<i64>(), cell.parse::<f64>()) {
                    (Ok(i), _) => json!(i),
                    (_, Ok(x)) if x.is_finite() => json!(x),
                    _ => json!(cell),
                };
                (name.to_string(), value)
            })
            .collect();
        messages.push(serde_json::to_vec(&object)?);
    }
    Ok(messages)
}
