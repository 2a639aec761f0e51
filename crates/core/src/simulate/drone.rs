//! Drones (reference 001): missions of take-off, cruise through waypoints, return and landing;
//! the battery drains with speed and climb, the signal fades with distance from home, and the
//! accelerations are the changes of the simulated velocity; injected battery collapses,
//! altitude drops and sensor spikes.

use super::{Core, Emit, EntityModel, Kind, Label, displacement, offset};
use crate::model::GeoPoint;

const DETECTORS: &[&str] = &["zscore", "isolation_forest"];
const BATTERY_COLLAPSE: Kind = Kind { name: "battery_collapse", detectors: DETECTORS };
const ALTITUDE_DROP: Kind = Kind { name: "altitude_drop", detectors: DETECTORS };
const SPIKE: Kind = Kind { name: "spike", detectors: DETECTORS };

/// Largest change of velocity per second on each axis, m/s².
const MAX_ACCELERATION: f64 = 2.0;

#[derive(Debug, Clone)]
enum Phase {
    Ground { until_ms: i64 },
    Climb,
    Cruise { waypoints: Vec<GeoPoint> },
    Descend,
}

/// An injected anomaly in progress.
#[derive(Debug, Clone)]
enum Fault {
    /// The battery loses `per_second` percentage points a second until `until_ms`.
    BatteryCollapse { start_ms: i64, until_ms: i64, per_second: f64 },
    /// The drone sinks at `rate` m/s until `until_ms`, then climbs back.
    AltitudeDrop { start_ms: i64, until_ms: i64, rate: f64 },
}

pub struct Drone {
    core: Core,
    home: GeoPoint,
    position: GeoPoint,
    altitude: f64,
    /// East, north, up, m/s.
    velocity: [f64; 3],
    battery: f64,
    cruise_speed: f64,
    cruise_altitude: f64,
    phase: Phase,
    fault: Option<Fault>,
}

impl Drone {
    pub(super) fn new(mut core: Core) -> Drone {
        let home = GeoPoint { lat: core.uniform(37.66, 37.80), lon: core.uniform(-122.48, -122.22) };
        let cruise_altitude = core.uniform(80.0, 120.0);
        let mut drone = Drone {
            home,
            position: home,
            altitude: 0.0,
            velocity: [0.0; 3],
            battery: core.uniform(40.0, 95.0),
            cruise_speed: core.uniform(10.0, 15.0),
            cruise_altitude,
            phase: Phase::Climb,
            fault: None,
            core,
        };
        // A fleet already at work: most drones are mid-mission when the simulation starts.
        if drone.core.chance(0.3) {
            let until_ms = drone.core.start_ms + (drone.core.uniform(0.0, 300.0) * 1000.0) as i64;
            drone.phase = Phase::Ground { until_ms };
        } else {
            drone.position = drone.around_home(300.0, 1500.0);
            drone.altitude = cruise_altitude;
            drone.phase = Phase::Cruise { waypoints: drone.plan() };
        }
        drone
    }

    fn around_home(&mut self, min_m: f64, max_m: f64) -> GeoPoint {
        let distance = self.core.uniform(min_m, max_m);
        let bearing = self.core.uniform(0.0, std::f64::consts::TAU);
        offset(self.home, distance * bearing.sin(), distance * bearing.cos())
    }

    /// Two to four waypoints around home, then home.
    fn plan(&mut self) -> Vec<GeoPoint> {
        let count = 2 + self.core.rng_index(3);
        let mut waypoints: Vec<GeoPoint> = (0..count).map(|_| self.around_home(600.0, 2500.0)).collect();
        waypoints.push(self.home);
        waypoints.reverse(); // popped from the end
        waypoints
    }

    /// The velocity the autopilot wants now, and advances the mission.
    fn desired_velocity(&mut self, at_ms: i64) -> [f64; 3] {
        let hold_altitude = |altitude: f64, target: f64| ((target - altitude) * 0.5).clamp(-3.0, 3.0);
        match &mut self.phase {
            Phase::Ground { until_ms } => {
                if at_ms >= *until_ms {
                    if self.battery < 60.0 {
                        self.battery = 100.0 - self.core.uniform(0.0, 3.0);
                    }
                    self.phase = Phase::Climb;
                }
                [0.0; 3]
            }
            Phase::Climb => {
                if self.altitude >= self.cruise_altitude - 1.0 {
                    let waypoints = self.plan();
                    self.phase = Phase::Cruise { waypoints };
                }
                [0.0, 0.0, 3.0]
            }
            Phase::Cruise { waypoints } => {
                if self.battery < 30.0 && waypoints.len() > 1 {
                    // Low battery: return home now.
                    waypoints.drain(..waypoints.len() - 1);
                    waypoints[0] = self.home;
                }
                let Some(target) = waypoints.last().copied() else {
                    self.phase = Phase::Descend;
                    return [0.0; 3];
                };
                let (east, north) = displacement(self.position, target);
                let distance = east.hypot(north);
                if distance < 15.0 {
                    waypoints.pop();
                    if waypoints.is_empty() {
                        self.phase = Phase::Descend;
                    }
                    return [0.0, 0.0, hold_altitude(self.altitude, self.cruise_altitude)];
                }
                let speed = self.cruise_speed.min(distance / 3.0);
                [speed * east / distance, speed * north / distance, hold_altitude(self.altitude, self.cruise_altitude)]
            }
            Phase::Descend => {
                if self.altitude <= 0.2 {
                    self.altitude = 0.0;
                    let until_ms = at_ms + (self.core.uniform(120.0, 360.0) * 1000.0) as i64;
                    self.phase = Phase::Ground { until_ms };
                    return [0.0; 3];
                }
                let (east, north) = displacement(self.position, self.home);
                [east.clamp(-2.0, 2.0), north.clamp(-2.0, 2.0), -(self.altitude * 0.3).clamp(0.5, 2.5)]
            }
        }
    }

    fn start_fault(&mut self, emit: &mut Emit<'_>) -> Option<Spike> {
        let at_ms = emit.at_ms;
        let flying = matches!(self.phase, Phase::Cruise { .. }) && self.altitude > 40.0;
        match self.core.rng_index(3) {
            // A collapse needs charge to lose: an empty battery shows nothing.
            0 if self.battery > 10.0 => {
                let seconds = self.core.uniform(4.0, 8.0);
                let loss = self.core.uniform(25.0, 45.0).min(self.battery - 2.0).max(5.0);
                self.fault = Some(Fault::BatteryCollapse {
                    start_ms: at_ms,
                    until_ms: at_ms + (seconds * 1000.0) as i64,
                    per_second: loss / seconds,
                });
                None
            }
            1 if flying => {
                let seconds = self.core.uniform(3.0, 5.0);
                self.fault = Some(Fault::AltitudeDrop {
                    start_ms: at_ms,
                    until_ms: at_ms + (seconds * 1000.0) as i64,
                    rate: self.core.uniform(8.0, 12.0),
                });
                None
            }
            _ => {
                self.core.schedule_after(at_ms);
                Some(if self.core.chance(0.5) {
                    Spike::Signal(self.core.uniform(30.0, 45.0))
                } else {
                    Spike::AccelerationZ(self.core.uniform(8.0, 15.0) * self.core.sign())
                })
            }
        }
    }
}

/// A one-reading sensor glitch.
#[derive(Debug, Clone, Copy)]
enum Spike {
    /// dB lost from the signal strength.
    Signal(f64),
    /// m/s² added to the vertical acceleration.
    AccelerationZ(f64),
}

impl EntityModel for Drone {
    fn emit(&mut self, emit: &mut Emit<'_>) {
        let at_ms = emit.at_ms;
        let dt = emit.dt_s;
        let spike = if self.fault.is_none() && self.core.anomaly_due(at_ms) { self.start_fault(emit) } else { None };
        let mut desired = self.desired_velocity(at_ms);
        if let Some(Fault::AltitudeDrop { rate, .. }) = &self.fault {
            desired[2] = -rate;
        }
        let mut acceleration = [0.0; 3];
        let max_change = match &self.fault {
            // An altitude drop is a fall: faster than the autopilot would ever command.
            Some(Fault::AltitudeDrop { .. }) => 12.0 * dt,
            _ => MAX_ACCELERATION * dt,
        };
        for axis in 0..3 {
            let change = (desired[axis] - self.velocity[axis]).clamp(-max_change, max_change);
            self.velocity[axis] += change;
            acceleration[axis] = change / dt;
        }
        let flying = !matches!(self.phase, Phase::Ground { .. });
        if flying {
            // Gusts.
            for axis in &mut acceleration {
                *axis += self.core.gauss(0.0, 0.15);
            }
        }
        self.position = offset(self.position, self.velocity[0] * dt, self.velocity[1] * dt);
        self.altitude = (self.altitude + self.velocity[2] * dt).max(0.0);
        if self.altitude == 0.0 && self.velocity[2] < 0.0 {
            self.velocity[2] = 0.0;
        }
        let horizontal = self.velocity[0].hypot(self.velocity[1]);
        if flying {
            self.battery -= (0.028 + 0.0015 * horizontal + 0.01 * self.velocity[2].max(0.0)) * dt;
        }
        if let Some(Fault::BatteryCollapse { per_second, .. }) = &self.fault {
            self.battery -= per_second * dt;
        }
        self.battery = self.battery.max(0.0);
        let (east, north) = displacement(self.home, self.position);
        let distance = east.hypot(north).hypot(self.altitude);
        let mut signal = -40.0 - 20.0 * (1.0 + distance / 100.0).log10() + self.core.gauss(0.0, 1.2);
        let mut acceleration_z = acceleration[2] + self.core.gauss(0.0, 0.05);
        match spike {
            Some(Spike::Signal(loss)) => signal -= loss,
            Some(Spike::AccelerationZ(extra)) => acceleration_z += extra,
            None => {}
        }
        let speed = horizontal.hypot(self.velocity[2]);
        let json = emit.begin();
        json.int("timestamp", at_ms);
        json.str("drone_id", &self.core.id);
        json.fixed("latitude", self.position.lat, 6);
        json.fixed("longitude", self.position.lon, 6);
        json.fixed("altitude", self.altitude, 2);
        json.fixed("velocity", speed, 2);
        json.fixed("acceleration_x", acceleration[0] + self.core.gauss(0.0, 0.05), 2);
        json.fixed("acceleration_y", acceleration[1] + self.core.gauss(0.0, 0.05), 2);
        json.fixed("acceleration_z", acceleration_z, 2);
        json.fixed("battery_level", self.battery, 2);
        json.fixed("signal_strength", signal.clamp(-149.0, -1.0), 2);
        emit.send(&mut self.core);
        if let Some(spike) = spike {
            let metric = match spike {
                Spike::Signal(_) => "signal_strength",
                Spike::AccelerationZ(_) => "acceleration_z",
            };
            emit.label(&self.core, SPIKE, at_ms, at_ms, Some(metric));
        }
        let ended = match &self.fault {
            Some(Fault::BatteryCollapse { start_ms, until_ms, .. }) if at_ms + 1 >= *until_ms => {
                Some((BATTERY_COLLAPSE, *start_ms, Some("battery_level")))
            }
            Some(Fault::AltitudeDrop { start_ms, until_ms, .. }) if at_ms + 1 >= *until_ms => {
                Some((ALTITUDE_DROP, *start_ms, Some("altitude")))
            }
            _ => None,
        };
        if let Some((kind, start_ms, metric)) = ended {
            emit.label(&self.core, kind, start_ms, at_ms, metric);
            self.fault = None;
            self.core.schedule_after(at_ms);
        }
    }

    fn finish(&mut self, profile: &'static str, labels: &mut Vec<Label>) {
        let Some(last_ms) = self.core.last_sent_ms else { return };
        match self.fault.take() {
            Some(Fault::BatteryCollapse { start_ms, .. }) => {
                labels.push(self.core.label(profile, BATTERY_COLLAPSE, start_ms, last_ms, Some("battery_level")));
            }
            Some(Fault::AltitudeDrop { start_ms, .. }) => {
                labels.push(self.core.label(profile, ALTITUDE_DROP, start_ms, last_ms, Some("altitude")));
            }
            None => {}
        }
    }
}
