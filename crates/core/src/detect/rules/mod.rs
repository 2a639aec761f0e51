//! Track rules over enriched vehicle readings (reference 000), per vehicle in event-time order.
//!
//! Each rule ignores a reading older than the newest it has seen of that vehicle (it counts
//! it in `out_of_order`): a late reading must not reopen or reorder a track.

pub mod geofence;
pub mod spoofing;
pub mod stop;
pub mod teleport;

use crate::detect::EntityMap;
use std::sync::Arc;

/// Per-vehicle state of one rule, keyed by (profile, entity).
#[derive(Debug)]
pub struct Tracks<S> {
    states: EntityMap<(i64, S)>,
    /// Readings ignored because they were not newer than the vehicle's previous one.
    pub out_of_order: u64,
}

impl<S> Default for Tracks<S> {
    fn default() -> Self {
        Tracks { states: EntityMap::default(), out_of_order: 0 }
    }
}

impl<S: Default> Tracks<S> {
    /// The vehicle's state and the time of its previous reading, if `at_ms` is newer than it;
    /// `strictly_newer` also refuses a reading at the same time.
    pub fn advance(
        &mut self,
        profile: u16,
        entity: &Arc<str>,
        at_ms: i64,
        strictly_newer: bool,
    ) -> Option<(Option<i64>, &mut S)> {
        let (last, state) = self.states.get_or_insert_with(profile, entity, || (i64::MIN, S::default()));
        let previous = (*last != i64::MIN).then_some(*last);
        let stale = if strictly_newer { at_ms <= *last } else { at_ms < *last };
        if stale {
            self.out_of_order += 1;
            return None;
        }
        *last = at_ms;
        Some((previous, state))
    }
}

#[cfg(test)]
mod tests;
