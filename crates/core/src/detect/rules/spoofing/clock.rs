//! Clock jumps of one device: its event time far behind its own newest reading, or far ahead of
//! the message's arrival.
//!
//! Delivery can only make a message late, never early, and reorders a live stream by seconds
//! (MQTT redelivery, batching, parallel HTTP requests). So, with `limit` the configured jump:
//! - an event time more than `limit` behind the device's newest one is a clock that jumped back
//!   (a reset, a spoofed GPS time) or old messages replayed; judged with or without an arrival
//!   time, so `teleguard replay` of a file sees it too;
//! - an event time more than `limit` ahead of the message's arrival is a clock that jumped ahead:
//!   judged only when the arrival is known (live sources; not the simulator, which keeps its own
//!   clock, nor a replayed file). A late arrival is not judged: a device offline for an hour that
//!   sends its backlog, or a consumer catching up, is late, not wrong.
//!
//! One anomaly per episode: a jump back stays one episode until the device's clock passes its
//! newest time from before the jump (it caught up, or was set right); a jump ahead until a
//! reading arrives within `limit` of its event time again, and then that reading's time is the
//! device's newest (the times of the jump were wrong), so setting the clock right is no second
//! jump.

/// One device's clock as the check follows it.
#[derive(Debug, Default)]
pub(super) struct Clock {
    newest_ms: Option<i64>,
    episode: Option<Episode>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Episode {
    /// Behind the newest event time the device had sent before the jump.
    Behind {
        newest_before_ms: i64,
    },
    Ahead,
}

/// Why a reading opens a clock episode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Jump {
    /// The event time is `by_ms` behind the device's newest, `newest_ms`.
    Back { by_ms: i64, newest_ms: i64 },
    /// The event time is `by_ms` ahead of the arrival, `arrival_ms`.
    Ahead { by_ms: i64, arrival_ms: i64 },
}

impl Clock {
    /// Takes a reading with event time `event_ms` that arrived at `arrival_ms` (when known);
    /// returns the jump it opens an episode with, if it does.
    pub(super) fn judge(&mut self, event_ms: i64, arrival_ms: Option<i64>, limit_ms: i64) -> Option<Jump> {
        let ahead_ms = arrival_ms.map(|arrival| event_ms - arrival);
        match self.episode {
            Some(Episode::Behind { newest_before_ms }) => {
                if event_ms > newest_before_ms {
                    self.episode = None;
                }
                self.advance(event_ms);
                return None;
            }
            Some(Episode::Ahead) => {
                if ahead_ms.is_some_and(|ahead| ahead <= limit_ms) {
                    self.episode = None;
                    self.newest_ms = Some(event_ms);
                } else {
                    self.advance(event_ms);
                }
                return None;
            }
            None => {}
        }
        if let Some(newest_ms) = self.newest_ms
            && newest_ms - event_ms > limit_ms
        {
            self.episode = Some(Episode::Behind { newest_before_ms: newest_ms });
            return Some(Jump::Back { by_ms: newest_ms - event_ms, newest_ms });
        }
        self.advance(event_ms);
        match (ahead_ms, arrival_ms) {
            (Some(by_ms), Some(arrival_ms)) if by_ms > limit_ms => {
                self.episode = Some(Episode::Ahead);
                Some(Jump::Ahead { by_ms, arrival_ms })
            }
            _ => None,
        }
    }

    fn advance(&mut self, event_ms: i64) {
        self.newest_ms = Some(self.newest_ms.map_or(event_ms, |newest| newest.max(event_ms)));
    }
}

#[cfg(test)]
mod tests {
    use super::{Clock, Jump};

    const LIMIT_MS: i64 = 60_000;

    /// What `judge` says of readings (event time, arrival) in order, in seconds.
    fn judged(readings: &[(i64, Option<i64>)]) -> Vec<Option<Jump>> {
        let mut clock = Clock::default();
        readings
            .iter()
            .map(|&(event, arrival)| clock.judge(event * 1000, arrival.map(|a| a * 1000), LIMIT_MS))
            .collect()
    }

    #[test]
    fn seconds_of_out_of_order_delivery_are_no_jump() {
        // Every 5 s, two pairs swapped and one reading 50 s late (a redelivery after a
        // reconnect); arrivals a second after the event, or later.
        let readings = [
            (0, Some(1)),
            (10, Some(11)),
            (5, Some(12)),
            (15, Some(16)),
            (20, Some(21)),
            (30, Some(31)),
            (25, Some(31)),
            (80, Some(81)),
            (35, Some(82)),
            (85, Some(86)),
        ];
        assert_eq!(judged(&readings), vec![None; readings.len()]);
    }

    #[test]
    fn a_clock_set_back_ten_minutes_is_one_jump_until_it_catches_up() {
        // Every 10 s until 100 s, then the clock reads 600 s less (event -490 s at 110 s) for
        // 60 s, then it is set right.
        let mut readings: Vec<(i64, Option<i64>)> = (0..=10).map(|i| (i * 10, None)).collect();
        readings.extend((11..=16).map(|i| (i * 10 - 600, None)));
        readings.extend((17..=20).map(|i| (i * 10, None)));
        let verdicts = judged(&readings);
        assert_eq!(verdicts[11], Some(Jump::Back { by_ms: 590_000, newest_ms: 100_000 }));
        assert_eq!(verdicts.iter().flatten().count(), 1, "{verdicts:?}");
    }

    #[test]
    fn a_clock_set_back_for_good_is_one_jump() {
        let readings: Vec<(i64, Option<i64>)> =
            (0..400).map(|i| (if i < 10 { i * 10 } else { i * 10 - 3600 }, None)).collect();
        assert_eq!(judged(&readings).iter().flatten().count(), 1);
    }

    #[test]
    fn a_clock_ahead_of_arrival_is_a_jump_and_setting_it_right_is_none() {
        // Arrivals 1 s after the event; from 50 s the clock reads 120 s ahead, from 100 s right
        // again, a step back of 120 s that is the end of the episode, not another.
        let readings: Vec<(i64, Option<i64>)> = (0..20)
            .map(|i| {
                let t = i * 10;
                let ahead = if (5..10).contains(&i) { 120 } else { 0 };
                (t + ahead, Some(t + 1))
            })
            .collect();
        let verdicts = judged(&readings);
        assert_eq!(verdicts[5], Some(Jump::Ahead { by_ms: 119_000, arrival_ms: 51_000 }));
        assert_eq!(verdicts.iter().flatten().count(), 1, "{verdicts:?}");
    }

    #[test]
    fn a_backlog_arriving_late_is_no_jump() {
        // An hour offline, then the buffered readings arrive within a second, in order.
        let mut readings: Vec<(i64, Option<i64>)> = (0..10).map(|i| (i * 10, Some(i * 10))).collect();
        readings.extend((10..370).map(|i| (i * 10, Some(3_700 + i / 100))));
        assert!(judged(&readings).iter().all(Option::is_none));
    }

    #[test]
    fn without_arrival_times_a_jump_ahead_is_not_judged() {
        let readings: Vec<(i64, Option<i64>)> =
            (0..20).map(|i| (i * 10 + if i >= 5 { 600 } else { 0 }, None)).collect();
        assert!(judged(&readings).iter().all(Option::is_none));
    }
}
