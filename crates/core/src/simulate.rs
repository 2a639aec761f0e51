//! Built-in fleet simulator: readings of every built-in profile in each reference design's
//! own JSON, on a simulated clock, with occasional injected spikes.

use crate::time::format_millis;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// One generated message, ready to ingest.
#[derive(Debug, Clone, PartialEq)]
pub struct SimMessage {
    pub profile: &'static str,
    pub event_time_ms: i64,
    pub payload: Vec<u8>,
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimSettings {
    /// Built-in profile names to simulate.
    pub profiles: Vec<String>,
    pub seed: u64,
    pub start_ms: i64,
    /// Probability that a reading carries an injected spike.
    pub anomaly_rate: f64,
    /// Multiplies the reference fleet sizes (15 vehicles, 5 drones, ...); at least 1 each.
    pub fleet_scale: f64,
}

/// The built-in profiles the simulator can generate.
pub const SIMULATED_PROFILES: [&str; 5] = ["vehicle", "drone", "aircraft", "environment", "vibration"];

struct Entity {
    id: String,
    lat: f64,
    lon: f64,
    heading_deg: f64,
    level: f64,
    extra: f64,
}

struct Fleet {
    profile: &'static str,
    interval_ms: i64,
    next_ms: i64,
    entities: Vec<Entity>,
}

/// Generates messages in event-time order for all requested profiles.
pub struct Simulator {
    fleets: Vec<Fleet>,
    rng: SmallRng,
    anomaly_rate: f64,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator").field("fleets", &self.fleets.iter().map(|f| f.profile).collect::<Vec<_>>()).finish()
    }
}

/// Reference fleet size and reading interval per profile.
fn fleet_shape(profile: &str) -> Option<(&'static str, usize, i64)> {
    SIMULATED_PROFILES.iter().find(|p| **p == profile).map(|&p| match p {
        "vehicle" => (p, 15, 5_000),
        "drone" => (p, 5, 1_000),
        "aircraft" => (p, 4, 1_000),
        "environment" => (p, 10, 2_000),
        _ => (p, 6, 1_000),
    })
}

impl Simulator {
    /// A simulator for the given profiles; unknown names are an error naming the known ones.
    pub fn new(settings: &SimSettings) -> Result<Self, String> {
        let mut rng = SmallRng::seed_from_u64(settings.seed);
        let mut fleets = Vec::new();
        for name in &settings.profiles {
            let Some((profile, size, interval_ms)) = fleet_shape(name) else {
                return Err(format!("cannot simulate profile {name:?}; known: {}", SIMULATED_PROFILES.join(", ")));
            };
            let count = ((size as f64 * settings.fleet_scale).round() as usize).max(1);
            let entities = (0..count).map(|i| new_entity(profile, i, &mut rng)).collect();
            fleets.push(Fleet { profile, interval_ms, next_ms: settings.start_ms, entities });
        }
        Ok(Simulator { fleets, rng, anomaly_rate: settings.anomaly_rate })
    }

    /// Total number of simulated entities.
    pub fn entity_count(&self) -> usize {
        self.fleets.iter().map(|f| f.entities.len()).sum()
    }

    /// Event time of the next reading due, if any fleet is simulated.
    pub fn next_due_ms(&self) -> Option<i64> {
        self.fleets.iter().map(|f| f.next_ms).min()
    }

    /// Appends every message due at or before `until_ms`, in event-time order per fleet.
    pub fn emit_until(&mut self, until_ms: i64, out: &mut Vec<SimMessage>) {
        let rate = self.anomaly_rate;
        for fleet in &mut self.fleets {
            while fleet.next_ms <= until_ms {
                let at = fleet.next_ms;
                let dt_s = fleet.interval_ms as f64 / 1000.0;
                for entity in &mut fleet.entities {
                    let spike = self.rng.random::<f64>() < rate;
                    let payload = generate(fleet.profile, entity, at, dt_s, spike, &mut self.rng);
                    out.push(SimMessage { profile: fleet.profile, event_time_ms: at, payload });
                }
                fleet.next_ms += fleet.interval_ms;
            }
        }
    }
}

fn new_entity(profile: &str, index: usize, rng: &mut SmallRng) -> Entity {
    let n = index + 1;
    let id = match profile {
        "vehicle" => format!("V{n:03}"),
        "drone" => format!("drone-{n:02}"),
        "aircraft" => format!("FL{:04}", 100 + n),
        "environment" => format!("env-sensor-{n:02}"),
        _ => format!("vib-{n:02}"),
    };
    Entity {
        id,
        lat: 37.70 + rng.random::<f64>() * 0.12,
        lon: -122.50 + rng.random::<f64>() * 0.30,
        heading_deg: rng.random::<f64>() * 360.0,
        level: 0.0,
        extra: rng.random::<f64>(),
    }
}

/// A normally distributed sample (Box-Muller).
fn gauss(rng: &mut SmallRng, mean: f64, std: f64) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    mean + std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn generate(profile: &str, e: &mut Entity, at_ms: i64, dt_s: f64, spike: bool, rng: &mut SmallRng) -> Vec<u8> {
    let value = match profile {
        "vehicle" => {
            e.heading_deg = (e.heading_deg + gauss(rng, 0.0, 10.0)).rem_euclid(360.0);
            let target = 45.0 + 15.0 * e.extra;
            e.level = (e.level + gauss(rng, 0.0, 4.0) + 0.2 * (target - e.level)).clamp(0.0, 130.0);
            let speed = if spike { (e.level + 90.0).min(220.0) } else { e.level };
            advance(e, speed, dt_s);
            json!({"vehicle_id": e.id, "timestamp": format_millis(at_ms), "latitude": round6(e.lat),
                   "longitude": round6(e.lon), "speed": round2(speed),
                   "engine_status": if speed < 1.0 { "idle" } else { "on" }})
        }
        "drone" => {
            // Drones start at different charges, drain with flight time and swap batteries at 20 %.
            if e.level == 0.0 {
                e.level = 35.0 + 65.0 * e.extra;
            }
            e.level -= 0.02 * dt_s;
            if e.level < 20.0 {
                e.level = 100.0;
            }
            let battery = e.level - if spike { 40.0 } else { 0.0 };
            let velocity = gauss(rng, 12.0, 0.8).max(0.0);
            advance(e, velocity * 3.6, dt_s);
            json!({"timestamp": at_ms, "drone_id": e.id, "latitude": round6(e.lat), "longitude": round6(e.lon),
                   "altitude": round2(gauss(rng, 120.0, 1.5)), "velocity": round2(velocity),
                   "acceleration_x": round2(gauss(rng, 0.0, 0.2)), "acceleration_y": round2(gauss(rng, 0.0, 0.2)),
                   "acceleration_z": round2(gauss(rng, 0.0, 0.1)), "battery_level": round2(battery.max(0.0)),
                   "signal_strength": round2(gauss(rng, -67.0, 1.5))})
        }
        "aircraft" => {
            e.heading_deg = (e.heading_deg + gauss(rng, 0.0, 0.5)).rem_euclid(360.0);
            let speed = gauss(rng, 450.0, 4.0);
            advance(e, speed * 1.852, dt_s);
            let altitude = gauss(rng, 35_000.0, 40.0) - if spike { 3_000.0 } else { 0.0 };
            json!({"timestamp": format_millis(at_ms), "flight_id": e.id, "lat": round6(e.lat), "lon": round6(e.lon),
                   "altitude": round2(altitude), "speed": round2(speed), "heading": round2(e.heading_deg),
                   "status": "cruise"})
        }
        "environment" => {
            let (metric, mean, std) = match (e.level as u64) % 3 {
                0 => ("temperature", 22.0 + 3.0 * day_cycle(at_ms), 0.3),
                1 => ("humidity", 45.0 - 8.0 * day_cycle(at_ms), 1.0),
                _ => ("pressure", 1013.0, 0.8),
            };
            e.level += 1.0;
            let value = gauss(rng, mean, std) + if spike { 12.0 * std } else { 0.0 };
            json!({"sensor_id": e.id, "metric_type": metric, "value": round2(value), "timestamp": format_millis(at_ms)})
        }
        _ => {
            let burst = if spike { 6.0 } else { 0.0 };
            let axis = |rng: &mut SmallRng| round2((gauss(rng, 2.5 + e.extra, 0.15) + burst).max(0.0));
            json!({"sensor_id": e.id, "machine_id": format!("press-{}", e.id.trim_start_matches("vib-")),
                   "timestamp": format_millis(at_ms), "rms_velocity_x": axis(rng), "rms_velocity_y": axis(rng),
                   "rms_velocity_z": axis(rng), "temperature": round2(gauss(rng, 45.0, 0.4))})
        }
    };
    serde_json::to_vec(&value).expect("simulated JSON serialises")
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// A smooth daily cycle in [-1, 1], peaking mid-afternoon UTC.
fn day_cycle(at_ms: i64) -> f64 {
    let hours = (at_ms as f64 / 3_600_000.0) % 24.0;
    ((hours - 9.0) / 24.0 * std::f64::consts::TAU).sin()
}

/// Moves an entity along its heading at `speed_kmh` for `dt_s`, turning back into the area.
fn advance(e: &mut Entity, speed_kmh: f64, dt_s: f64) {
    let km = speed_kmh * dt_s / 3600.0;
    let heading = e.heading_deg.to_radians();
    e.lat += km * heading.cos() / 111.2;
    e.lon += km * heading.sin() / (111.2 * e.lat.to_radians().cos());
    if !(37.60..=37.85).contains(&e.lat) || !(-122.52..=-122.15).contains(&e.lon) {
        e.heading_deg = (e.heading_deg + 180.0).rem_euclid(360.0);
        e.lat = e.lat.clamp(37.60, 37.85);
        e.lon = e.lon.clamp(-122.52, -122.15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::ProfileRegistry;
    use crate::validate::validate;

    fn settings(seed: u64) -> SimSettings {
        SimSettings {
            profiles: SIMULATED_PROFILES.iter().map(|s| s.to_string()).collect(),
            seed,
            start_ms: 1_725_446_400_000,
            anomaly_rate: 0.05,
            fleet_scale: 1.0,
        }
    }

    #[test]
    fn every_simulated_message_passes_its_profile() {
        let registry = ProfileRegistry::with_builtins(Default::default()).unwrap();
        let mut sim = Simulator::new(&settings(7)).unwrap();
        assert_eq!(sim.entity_count(), 15 + 5 + 4 + 10 + 6);
        let mut out = Vec::new();
        sim.emit_until(1_725_446_400_000 + 600_000, &mut out);
        assert!(out.len() > 3000);
        for message in &out {
            let profile = registry.by_name(message.profile).unwrap();
            validate(profile, &message.payload)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&message.payload)));
        }
    }

    #[test]
    fn same_seed_gives_same_bytes() {
        let run = |seed| {
            let mut sim = Simulator::new(&settings(seed)).unwrap();
            let mut out = Vec::new();
            sim.emit_until(1_725_446_460_000, &mut out);
            out
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn unknown_profile_is_named() {
        let mut s = settings(1);
        s.profiles = vec!["submarine".into()];
        assert!(Simulator::new(&s).unwrap_err().contains("\"submarine\""));
    }
}
