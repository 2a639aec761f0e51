//! What the benches share: simulated messages to feed, and best-of-several-passes reporting.

use std::time::Instant;
use teleguard_core::simulate::{SimMessage, SimSettings, Simulator};

const PASSES: usize = 7;

/// The first `count` simulated messages of `profile` (a large fleet, one anomaly per entity-hour).
pub fn simulated_messages(profile: &str, count: usize) -> Vec<SimMessage> {
    let settings = SimSettings {
        profiles: vec![profile.to_string()],
        seed: 3,
        start_ms: 1_725_408_000_000,
        anomaly_rate: 1.0,
        fleet_scale: 40.0,
        entities: None,
    };
    let mut simulator = Simulator::new(&settings).unwrap();
    let mut messages = Vec::new();
    let mut until = settings.start_ms;
    while messages.len() < count {
        until += 1000;
        simulator.emit_until(until, &mut messages);
    }
    messages.truncate(count);
    messages
}

/// Runs `pass` several times; prints the best and median rate of `items` per pass and returns
/// the best, in millions of `unit` per second.
pub fn report(what: &str, unit: &str, items: usize, mut pass: impl FnMut()) -> f64 {
    let mut rates: Vec<f64> = (0..PASSES)
        .map(|_| {
            let started = Instant::now();
            pass();
            items as f64 / started.elapsed().as_secs_f64() / 1e6
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    let best = rates[PASSES - 1];
    println!("{what}: {best:.2} M {unit}/s best of {PASSES} (median {:.2})", rates[PASSES / 2]);
    best
}
