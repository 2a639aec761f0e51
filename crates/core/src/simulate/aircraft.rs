//! Aircraft (reference 002): flights between western US airports along great circles, with
//! climb, cruise and descent, the heading following the track; each flight has its own id and
//! the airframe waits on the ground between flights. Injected: altitude drops and sensor spikes.

use super::{Core, Emit, EntityModel, Kind, Label};
use crate::geo::{EARTH_RADIUS_KM, haversine_km};
use crate::model::GeoPoint;

const DETECTORS: &[&str] = &["zscore", "isolation_forest"];
const ALTITUDE_DROP: Kind = Kind { name: "altitude_drop", detectors: DETECTORS };
const SPIKE: Kind = Kind { name: "spike", detectors: DETECTORS };
/// An altitude glitch of 1,500 ft or more in one reading (a second) is a climb or descent no
/// airframe can fly: evidence the `spoofing` rule raises too (spoofed or broken altitude).
const ALTITUDE_SPIKE: Kind = Kind { name: "spike", detectors: &["zscore", "isolation_forest", "spoofing"] };

const AIRPORTS: [(f64, f64); 10] = [
    (37.6189, -122.3750), // SFO
    (33.9416, -118.4085), // LAX
    (47.4502, -122.3088), // SEA
    (45.5898, -122.5951), // PDX
    (36.0840, -115.1537), // LAS
    (33.4342, -112.0116), // PHX
    (39.8561, -104.6737), // DEN
    (40.7899, -111.9791), // SLC
    (32.7338, -117.1933), // SAN
    (38.6954, -121.5908), // SMF
];
const KM_PER_NM: f64 = 1.852;
/// No anomaly is injected this soon after a flight's first reading: detectors judge a new
/// entity only once they have seen enough of it.
const NEW_FLIGHT_WARM_UP_MS: i64 = 5 * 60_000;
/// Speed changes at most this many knots a second.
const SPEED_CHANGE_KN_PER_S: f64 = 2.0;

fn airport(index: usize) -> GeoPoint {
    GeoPoint { lat: AIRPORTS[index].0, lon: AIRPORTS[index].1 }
}

/// Initial great-circle bearing from `a` to `b`, degrees in [0, 360).
fn bearing(a: GeoPoint, b: GeoPoint) -> f64 {
    let (la, lb) = (a.lat.to_radians(), b.lat.to_radians());
    let dl = (b.lon - a.lon).to_radians();
    let y = dl.sin() * lb.cos();
    let x = la.cos() * lb.sin() - la.sin() * lb.cos() * dl.cos();
    y.atan2(x).to_degrees().rem_euclid(360.0)
}

/// The point `km` along the great circle leaving `from` on `bearing_deg`.
fn travel(from: GeoPoint, bearing_deg: f64, km: f64) -> GeoPoint {
    let delta = km / EARTH_RADIUS_KM;
    let theta = bearing_deg.to_radians();
    let (phi1, lambda1) = (from.lat.to_radians(), from.lon.to_radians());
    let phi2 = (phi1.sin() * delta.cos() + phi1.cos() * delta.sin() * theta.cos()).asin();
    let lambda2 = lambda1 + (theta.sin() * delta.sin() * phi1.cos()).atan2(delta.cos() - phi1.sin() * phi2.sin());
    GeoPoint { lat: phi2.to_degrees(), lon: (lambda2.to_degrees() + 540.0).rem_euclid(360.0) - 180.0 }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Ground { until_ms: i64 },
    Climb,
    Cruise,
    Descent,
}

#[derive(Debug, Clone)]
struct Flight {
    id: String,
    to: usize,
    position: GeoPoint,
    altitude_ft: f64,
    speed_kn: f64,
    cruise_ft: f64,
    cruise_kn: f64,
}

/// An altitude drop in progress: sinking at `ft_per_s` until `until_ms`.
#[derive(Debug, Clone)]
struct Drop {
    start_ms: i64,
    until_ms: i64,
    ft_per_s: f64,
}

pub struct Aircraft {
    /// Its `id` is the current flight's.
    core: Core,
    airframe: usize,
    flights_flown: usize,
    at_airport: usize,
    flight: Option<Flight>,
    phase: Phase,
    drop: Option<Drop>,
}

impl Aircraft {
    pub(super) fn new(mut core: Core, airframe: usize) -> Aircraft {
        let at_airport = core.rng_index(AIRPORTS.len());
        let mut aircraft =
            Aircraft { airframe, flights_flown: 0, at_airport, flight: None, phase: Phase::Climb, drop: None, core };
        if aircraft.core.chance(0.25) {
            let wait_ms = (aircraft.core.uniform(0.0, 30.0) * 60_000.0) as i64;
            aircraft.phase = Phase::Ground { until_ms: aircraft.core.start_ms + wait_ms };
        } else {
            // Already airborne somewhere along a flight when the simulation starts.
            aircraft.depart();
            let progress = aircraft.core.uniform(0.05, 0.85);
            let flight = aircraft.flight.as_mut().expect("departed");
            let origin = airport(aircraft.at_airport);
            let destination = airport(flight.to);
            let total_km = haversine_km(origin, destination);
            let flown_km = progress * total_km;
            flight.position = travel(origin, bearing(origin, destination), flown_km);
            let climb_km = flight.cruise_ft / 1000.0 * 6.0;
            let descent_km = descent_distance_km(flight.cruise_ft);
            let (altitude, phase) = if flown_km < climb_km {
                (flight.cruise_ft * flown_km / climb_km, Phase::Climb)
            } else if total_km - flown_km < descent_km {
                (flight.cruise_ft * (total_km - flown_km) / descent_km, Phase::Descent)
            } else {
                (flight.cruise_ft, Phase::Cruise)
            };
            flight.altitude_ft = altitude.max(1000.0);
            flight.speed_kn = target_speed(phase, flight.altitude_ft, flight.cruise_kn);
            aircraft.phase = phase;
        }
        aircraft
    }

    /// Starts a new flight from the current airport to another at least 400 km away.
    fn depart(&mut self) {
        let from = airport(self.at_airport);
        let to = loop {
            let candidate = self.core.rng_index(AIRPORTS.len());
            if haversine_km(from, airport(candidate)) > 400.0 {
                break candidate;
            }
        };
        self.flights_flown += 1;
        let id = format!("FL{:02}{:03}", self.airframe, self.flights_flown);
        self.core.id.clone_from(&id);
        self.core.announced = false;
        self.flight = Some(Flight {
            id,
            to,
            position: from,
            altitude_ft: 0.0,
            speed_kn: 150.0,
            cruise_ft: 1000.0 * (33.0 + self.core.rng_index(7) as f64),
            cruise_kn: self.core.uniform(440.0, 480.0),
        });
        self.phase = Phase::Climb;
    }

    fn start_anomaly(&mut self, at_ms: i64) -> Option<Spike> {
        if self.phase == Phase::Cruise && self.core.chance(0.5) {
            let seconds = self.core.uniform(15.0, 30.0);
            self.drop = Some(Drop {
                start_ms: at_ms,
                until_ms: at_ms + (seconds * 1000.0) as i64,
                ft_per_s: self.core.uniform(100.0, 150.0),
            });
            return None;
        }
        self.core.schedule_after(at_ms);
        Some(if self.core.chance(0.5) {
            Spike::Speed(self.core.uniform(60.0, 120.0))
        } else {
            Spike::Altitude(self.core.uniform(1500.0, 3000.0) * self.core.sign())
        })
    }
}

/// A one-reading sensor glitch.
#[derive(Debug, Clone, Copy)]
enum Spike {
    Speed(f64),
    Altitude(f64),
}

/// The three-to-one rule: 3 nm of track per 1000 ft to lose, plus room to slow down.
fn descent_distance_km(altitude_ft: f64) -> f64 {
    altitude_ft / 1000.0 * 3.0 * KM_PER_NM + 20.0
}

fn target_speed(phase: Phase, altitude_ft: f64, cruise_kn: f64) -> f64 {
    match phase {
        Phase::Ground { .. } => 0.0,
        Phase::Climb if altitude_ft < 10_000.0 => 250.0,
        Phase::Climb | Phase::Cruise => cruise_kn,
        Phase::Descent if altitude_ft > 10_000.0 => 290.0,
        Phase::Descent if altitude_ft > 3_000.0 => 220.0,
        Phase::Descent => 150.0,
    }
}

impl EntityModel for Aircraft {
    fn emit(&mut self, emit: &mut Emit<'_>) {
        let at_ms = emit.at_ms;
        let dt = emit.dt_s;
        if let Phase::Ground { until_ms } = self.phase {
            if at_ms < until_ms {
                return;
            }
            self.depart();
            // A new flight is a new entity: like a new simulation, its first minutes carry no
            // anomaly (the clock ran on while the airframe waited, and would fire at take-off).
            self.core.next_anomaly_ms = self.core.next_anomaly_ms.max(at_ms + NEW_FLIGHT_WARM_UP_MS);
        }
        let spike = if self.drop.is_none() && self.core.anomaly_due(at_ms) { self.start_anomaly(at_ms) } else { None };
        let phase = self.phase;
        let Some(flight) = self.flight.as_mut() else { return };
        let destination = airport(flight.to);
        let remaining_km = haversine_km(flight.position, destination);
        if matches!(phase, Phase::Climb | Phase::Cruise) && remaining_km < descent_distance_km(flight.altitude_ft) {
            self.phase = Phase::Descent;
        }
        let climb_rate = if flight.altitude_ft < 25_000.0 { 2000.0 } else { 1000.0 } / 60.0;
        let vertical_ft_per_s = match (&self.drop, self.phase) {
            (Some(drop), _) => -drop.ft_per_s,
            (None, Phase::Climb) => climb_rate,
            (None, Phase::Cruise) => ((flight.cruise_ft - flight.altitude_ft) * 0.05).clamp(-25.0, 25.0),
            (None, _) => -(if flight.altitude_ft > 10_000.0 { 1800.0 } else { 1200.0 }) / 60.0,
        };
        flight.altitude_ft = (flight.altitude_ft + vertical_ft_per_s * dt).max(0.0);
        if self.phase == Phase::Climb && flight.altitude_ft >= flight.cruise_ft {
            self.phase = Phase::Cruise;
        }
        let target = target_speed(self.phase, flight.altitude_ft, flight.cruise_kn);
        let change = (target - flight.speed_kn).clamp(-SPEED_CHANGE_KN_PER_S * dt, SPEED_CHANGE_KN_PER_S * dt);
        flight.speed_kn += change;
        let track = bearing(flight.position, destination);
        flight.position = travel(flight.position, track, flight.speed_kn * KM_PER_NM * dt / 3600.0);
        let landed = self.phase == Phase::Descent && (flight.altitude_ft <= 0.0 || remaining_km < 2.0);

        let mut altitude = flight.altitude_ft + self.core.gauss(0.0, 12.0);
        let mut speed = flight.speed_kn + self.core.gauss(0.0, 1.5);
        match spike {
            Some(Spike::Speed(extra)) => speed += extra,
            Some(Spike::Altitude(extra)) => altitude += extra,
            None => {}
        }
        let heading = (track + self.core.gauss(0.0, 0.3)).rem_euclid(360.0);
        let status = match self.phase {
            Phase::Climb => "climb",
            Phase::Cruise => "cruise",
            _ => "descent",
        };
        let (id, position) = (flight.id.clone(), flight.position);
        let json = emit.begin();
        json.timestamp("timestamp", at_ms);
        json.str("flight_id", &id);
        json.fixed("lat", position.lat, 6);
        json.fixed("lon", position.lon, 6);
        json.fixed("altitude", altitude.max(0.0), 1);
        json.fixed("speed", speed.max(0.0), 1);
        json.fixed("heading", heading, 2);
        json.str("status", status);
        emit.send(&mut self.core);
        if let Some(spike) = spike {
            let (kind, metric) = match spike {
                Spike::Speed(_) => (SPIKE, "speed"),
                Spike::Altitude(_) => (ALTITUDE_SPIKE, "altitude"),
            };
            emit.label(&self.core, kind, at_ms, at_ms, Some(metric));
        }
        if let Some(drop) = self.drop.as_ref().filter(|d| at_ms + 1 >= d.until_ms || landed) {
            emit.label(&self.core, ALTITUDE_DROP, drop.start_ms, at_ms, Some("altitude"));
            self.drop = None;
            self.core.schedule_after(at_ms);
        }
        if landed {
            self.at_airport = self.flight.take().expect("flying").to;
            let wait_ms = (self.core.uniform(20.0, 60.0) * 60_000.0) as i64;
            self.phase = Phase::Ground { until_ms: at_ms + wait_ms };
        }
    }

    fn finish(&mut self, profile: &'static str, labels: &mut Vec<Label>) {
        if let (Some(drop), Some(last_ms)) = (self.drop.take(), self.core.last_sent_ms) {
            labels.push(self.core.label(profile, ALTITUDE_DROP, drop.start_ms, last_ms, Some("altitude")));
        }
    }
}
