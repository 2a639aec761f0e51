//! The latest stored readings, kept in memory so the API serves them without scanning silver.

use crate::store::SilverRow;
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Readings kept across all entities.
const RECENT_CAPACITY: usize = 1000;
/// Readings kept per entity.
const PER_ENTITY_CAPACITY: usize = 100;

#[derive(Debug, Default)]
struct Inner {
    recent: VecDeque<Arc<SilverRow>>,
    by_entity: FxHashMap<Arc<str>, VecDeque<Arc<SilverRow>>>,
}

/// Newest-first views of committed readings.
#[derive(Debug, Default)]
pub struct LiveView {
    inner: Mutex<Inner>,
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
}
