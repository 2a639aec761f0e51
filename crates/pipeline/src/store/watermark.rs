//! The silver watermark: the reading id below which every reading has its silver row committed.
//!
//! A reading's id is its bronze id, handed out in arrival order, but workers commit silver rows
//! out of that order (each shard at its own pace), so "the largest silver id" says nothing about
//! the ids below it. A sink that follows silver by id reads only below this watermark, so it
//! never steps past a reading that is still being analysed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// The published watermark, read by sinks.
#[derive(Debug, Clone)]
pub struct SilverWatermark(Arc<AtomicI64>);

impl SilverWatermark {
    pub fn new(initial: i64) -> Self {
        SilverWatermark(Arc::new(AtomicI64::new(initial)))
    }

    /// Every reading with an id below this has its silver row committed.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, value: i64) {
        self.0.store(value, Ordering::Release);
    }
}

/// The writer's record of readings in bronze without their silver row yet, as ranges of ids.
#[derive(Debug, Default)]
pub struct PendingReadings {
    /// First id of a range to (end, readings of it still without a silver row).
    ranges: BTreeMap<i64, (i64, i64)>,
}

impl PendingReadings {
    /// Readings `first .. first + count` were committed to bronze.
    pub fn accepted(&mut self, first: i64, count: i64) {
        if count > 0 {
            self.ranges.insert(first, (first + count, count));
        }
    }

    /// The silver row of reading `id` was committed.
    pub fn stored(&mut self, id: i64) {
        let Some((&start, &(end, remaining))) = self.ranges.range(..=id).next_back() else { return };
        if id >= end {
            return;
        }
        if remaining <= 1 {
            self.ranges.remove(&start);
        } else {
            self.ranges.insert(start, (end, remaining - 1));
        }
    }

    /// Publishes the watermark. With nothing in flight every bronze reading so far has its
    /// silver row (a reading the pipeline dropped, e.g. a replay that no longer validates, is
    /// forgotten here), so the watermark is the next bronze id.
    pub fn publish(&mut self, watermark: &SilverWatermark, next_bronze_id: i64, idle: bool) {
        if idle {
            self.ranges.clear();
        }
        let lowest_pending = self.ranges.keys().next().copied().unwrap_or(next_bronze_id);
        watermark.set(lowest_pending.min(next_bronze_id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_waits_for_the_lowest_reading_still_being_analysed() {
        let watermark = SilverWatermark::new(1);
        let mut pending = PendingReadings::default();
        pending.accepted(1, 3);
        pending.accepted(4, 2);
        pending.stored(4);
        pending.stored(5);
        pending.publish(&watermark, 6, false);
        assert_eq!(watermark.get(), 1, "readings 1-3 are not stored, so 4 and 5 are not safe yet");
        pending.stored(2);
        pending.stored(1);
        pending.publish(&watermark, 6, false);
        assert_eq!(watermark.get(), 1, "reading 3 is still pending");
        pending.stored(3);
        pending.publish(&watermark, 6, false);
        assert_eq!(watermark.get(), 6);
    }

    #[test]
    fn an_idle_pipeline_releases_readings_that_were_dropped() {
        let watermark = SilverWatermark::new(1);
        let mut pending = PendingReadings::default();
        pending.accepted(10, 1);
        pending.publish(&watermark, 11, false);
        assert_eq!(watermark.get(), 10);
        pending.publish(&watermark, 11, true);
        assert_eq!(watermark.get(), 11);
    }
}
