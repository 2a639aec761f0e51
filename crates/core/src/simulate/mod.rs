//! Fleet simulator with ground truth: readings of every built-in profile in each reference
//! design's own JSON, on a simulated clock, with labeled injected anomalies.
//!
//! Every entity has its own random stream derived from the seed, its profile and its index, so
//! the same seed gives the same bytes, and a vehicle drives the same day whether or not drones
//! are simulated beside it. Anomalies are injected per entity as a Poisson process of
//! `anomaly_rate` per entity-hour, never in the first [`WARM_UP_MS`] (detectors are still
//! learning then) and never two at once on one entity; each becomes a [`Label`] once it ends.
//!
//! Two kinds come from streams of their own, so that adding them changed nothing else of an
//! entity's day: clock jumps ([`ClockFaults`], a stream per entity) and a spoofer that makes
//! several vehicles report one fix (`vehicle::FleetSpoofer`, a stream per fleet). Each waits for
//! a moment when the entity has no anomaly of its own running or due, so every other label, and
//! every reading outside these episodes, is the same with or without them.

mod aircraft;
mod drone;
mod sensors;
mod vehicle;
mod wire;

pub use crate::eval::labels::Label;
use crate::eval::labels::{EntityRef, LabelSet};
use crate::geo::GeofenceIndex;
use crate::model::GeoPoint;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use wire::JsonWriter;

/// The built-in profiles the simulator can generate.
pub const SIMULATED_PROFILES: [&str; 5] = ["vehicle", "drone", "aircraft", "environment", "vibration"];

/// No anomaly is injected this soon after the start: rolling windows and models fill first.
pub const WARM_UP_MS: i64 = 15 * 60_000;

/// One generated message, ready to ingest.
#[derive(Debug, Clone, PartialEq)]
pub struct SimMessage {
    pub profile: &'static str,
    /// The simulated time it is sent at: its event time, unless the device's clock is off (a
    /// `clock_jump`).
    pub event_time_ms: i64,
    pub payload: Vec<u8>,
}

/// Where generated messages go, one at a time, in event-time order.
pub trait SimSink {
    fn accept(&mut self, profile: &'static str, event_time_ms: i64, payload: &[u8]);
}

impl SimSink for Vec<SimMessage> {
    fn accept(&mut self, profile: &'static str, event_time_ms: i64, payload: &[u8]) {
        self.push(SimMessage { profile, event_time_ms, payload: payload.to_vec() });
    }
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimSettings {
    /// Built-in profile names to simulate.
    pub profiles: Vec<String>,
    pub seed: u64,
    pub start_ms: i64,
    /// Injected anomalies per entity per hour of simulated time; 0 gives clean data.
    pub anomaly_rate: f64,
    /// Multiplies the reference fleet sizes (15 vehicles, 5 drones, ...); at least 1 each.
    pub fleet_scale: f64,
    /// Entities per profile, instead of the reference size times `fleet_scale`.
    pub entities: Option<usize>,
}

impl SimSettings {
    /// Every profile, the reference fleet sizes, one anomaly per entity-hour.
    pub fn new(profiles: &[&str], seed: u64, start_ms: i64) -> SimSettings {
        SimSettings {
            profiles: profiles.iter().map(|p| p.to_string()).collect(),
            seed,
            start_ms,
            anomaly_rate: 1.0,
            fleet_scale: 1.0,
            entities: None,
        }
    }
}

/// What every entity model shares: its id, random stream, labels and injection clock.
#[derive(Debug)]
struct Core {
    id: String,
    rng: SmallRng,
    /// When the next anomaly is due, if none is running.
    next_anomaly_ms: i64,
    /// Mean gap between anomalies, in ms; `None` for clean data.
    mean_gap_ms: Option<f64>,
    /// Whether this entity's id has been listed among those seen.
    announced: bool,
    start_ms: i64,
    /// Event time of the last reading sent.
    last_sent_ms: Option<i64>,
    /// What the entity's random streams derive from: `rng`'s seed, and the side streams'.
    stream: u64,
}

impl Core {
    fn new(id: String, seed: u64, profile: &str, index: usize, start_ms: i64, rate_per_hour: f64) -> Core {
        let stream = seed ^ crate::model::stable_hash(&[profile.as_bytes(), &index.to_le_bytes()]);
        let mean_gap_ms = (rate_per_hour > 0.0).then(|| 3_600_000.0 / rate_per_hour);
        let rng = SmallRng::seed_from_u64(stream);
        let mut core = Core {
            id,
            rng,
            next_anomaly_ms: i64::MAX,
            mean_gap_ms,
            announced: false,
            start_ms,
            last_sent_ms: None,
            stream,
        };
        core.next_anomaly_ms = start_ms + WARM_UP_MS + core.gap();
        core
    }

    /// An exponentially distributed wait for the next anomaly.
    fn gap(&mut self) -> i64 {
        match self.mean_gap_ms {
            Some(mean) => (-(1.0 - self.rng.random::<f64>()).ln() * mean) as i64,
            None => i64::MAX / 4,
        }
    }

    /// Whether an anomaly should start now.
    fn anomaly_due(&self, at_ms: i64) -> bool {
        at_ms >= self.next_anomaly_ms
    }

    /// Whether none of the entity's own anomalies can start before `until_ms` and a minute more
    /// (what a side stream's episode must leave alone).
    fn free_until(&self, until_ms: i64) -> bool {
        self.next_anomaly_ms > until_ms.saturating_add(60_000)
    }

    /// A random stream of its own for `purpose`, independent of `rng`.
    fn side_stream(&self, purpose: &str) -> SmallRng {
        SmallRng::seed_from_u64(self.stream ^ crate::model::stable_hash(&[purpose.as_bytes()]))
    }

    /// Schedules the next anomaly after one that ended (or was skipped) at `at_ms`.
    fn schedule_after(&mut self, at_ms: i64) {
        self.next_anomaly_ms = at_ms.saturating_add(self.gap().max(60_000));
    }

    fn gauss(&mut self, mean: f64, std: f64) -> f64 {
        gauss(&mut self.rng, mean, std)
    }

    fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.rng.random::<f64>()
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random::<f64>() < p
    }

    /// +1 or −1, evenly.
    fn sign(&mut self) -> f64 {
        if self.chance(0.5) { 1.0 } else { -1.0 }
    }

    fn rng_index(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.random_range(0..items.len())]
    }
}

/// Metres per degree of latitude (and of longitude at the equator).
const METRES_PER_DEGREE: f64 = 111_195.0;

/// `point` moved `east` and `north` metres (flat Earth: fine over tens of km).
fn offset(point: GeoPoint, east: f64, north: f64) -> GeoPoint {
    GeoPoint {
        lat: point.lat + north / METRES_PER_DEGREE,
        lon: point.lon + east / (METRES_PER_DEGREE * point.lat.to_radians().cos()),
    }
}

/// Metres east and north from `from` to `to` on the same flat map.
fn displacement(from: GeoPoint, to: GeoPoint) -> (f64, f64) {
    ((to.lon - from.lon) * METRES_PER_DEGREE * from.lat.to_radians().cos(), (to.lat - from.lat) * METRES_PER_DEGREE)
}

/// A normally distributed sample (Box-Muller).
fn gauss(rng: &mut SmallRng, mean: f64, std: f64) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    mean + std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// What an entity model sees of the world while it writes its readings of one tick.
struct Emit<'a> {
    profile: &'static str,
    at_ms: i64,
    dt_s: f64,
    json: &'a mut JsonWriter,
    labels: &'a mut Vec<Label>,
    seen: &'a mut Vec<(&'static str, String)>,
    sink: &'a mut dyn SimSink,
}

impl Emit<'_> {
    /// Starts a message in the JSON buffer.
    fn begin(&mut self) -> &mut JsonWriter {
        self.json.clear();
        self.json.open();
        self.json
    }

    /// Sends the message written since `begin` as `core`'s reading at the tick's time.
    fn send(&mut self, core: &mut Core) {
        self.json.close();
        core.last_sent_ms = Some(self.at_ms);
        if !core.announced {
            core.announced = true;
            self.seen.push((self.profile, core.id.clone()));
        }
        self.sink.accept(self.profile, self.at_ms, &self.json.buf);
    }

    /// Records an injected anomaly of `core` that affected readings from `start_ms` to `end_ms`.
    fn label(&mut self, core: &Core, kind: Kind, start_ms: i64, end_ms: i64, metric: Option<&'static str>) {
        self.labels.push(core.label(self.profile, kind, start_ms, end_ms, metric));
    }
}

/// Clock jumps come at a tenth of the rate of an entity's own anomalies: rarer than any fault of
/// the device itself.
const CLOCK_JUMPS_PER_ANOMALY: f64 = 0.1;
const CLOCK_JUMP: Kind = Kind { name: "clock_jump", detectors: &["spoofing"] };
/// How far a jumped clock reads behind at most, and how long until it is set right at most
/// (always shorter than the jump, so every reading of the episode is older than the device's
/// newest from before it).
const CLOCK_BEHIND_MAX_MS: i64 = 60 * 60_000;
const CLOCK_BEHIND_MIN_MS: i64 = 2 * 60_000;
const CLOCK_OFF_MS: std::ops::Range<i64> = 90_000..240_000;

/// A device clock that now and then jumps back and is set right minutes later, from a random
/// stream of its own: the tracker reboots while the entity is parked and its clock restarts
/// from a stale time (or a spoofed GPS time sets it). Only while parked, and never further back
/// than the stop began, so the readings it mislabels show the entity where it really was then:
/// a history sorted by event time (the store, the hunts) stays a plausible track.
#[derive(Debug)]
struct ClockFaults {
    rng: SmallRng,
    mean_gap_ms: Option<f64>,
    next_ms: i64,
    running: Option<ClockFault>,
}

#[derive(Debug, Clone, Copy)]
struct ClockFault {
    behind_ms: i64,
    until_ms: i64,
    /// The times the clock showed on the first and the last reading so far.
    shown_ms: Option<(i64, i64)>,
}

impl ClockFaults {
    fn new(core: &Core) -> ClockFaults {
        let mut faults = ClockFaults {
            rng: core.side_stream("clock"),
            mean_gap_ms: core.mean_gap_ms.map(|gap| gap / CLOCK_JUMPS_PER_ANOMALY),
            next_ms: i64::MAX,
            running: None,
        };
        faults.next_ms = faults.after(core.start_ms + WARM_UP_MS);
        faults
    }

    fn after(&mut self, at_ms: i64) -> i64 {
        match self.mean_gap_ms {
            Some(mean) => at_ms.saturating_add((-(1.0 - self.rng.random::<f64>()).ln() * mean) as i64),
            None => i64::MAX,
        }
    }

    fn running(&self) -> bool {
        self.running.is_some()
    }

    /// The time the entity's clock shows for a reading at `at_ms`. A due jump starts while the
    /// entity is parked (`parked`: since how long, and for how much longer) and `free` says it
    /// is free until the jump's end. Labels a jump that ends here (this reading is right again).
    fn shown_ms(
        &mut self,
        core: &Core,
        at_ms: i64,
        parked: Option<(i64, i64)>,
        free: impl Fn(i64) -> bool,
        labels: &mut Vec<Label>,
        profile: &'static str,
    ) -> i64 {
        if let Some(fault) = self.running
            && at_ms >= fault.until_ms
        {
            if let Some((first, last)) = fault.shown_ms {
                labels.push(core.label(profile, CLOCK_JUMP, first, last, None));
            }
            self.running = None;
            self.next_ms = self.after(at_ms);
        }
        if self.running.is_none()
            && at_ms >= self.next_ms
            && let Some((parked_ms, remaining_ms)) = parked
        {
            let most_behind_ms = (parked_ms - 10_000).min(CLOCK_BEHIND_MAX_MS);
            let longest_off_ms = (remaining_ms - 10_000).min(CLOCK_OFF_MS.end);
            if most_behind_ms > CLOCK_BEHIND_MIN_MS
                && longest_off_ms > CLOCK_OFF_MS.start
                && at_ms - most_behind_ms >= core.start_ms + WARM_UP_MS
            {
                let behind_ms = self.rng.random_range(CLOCK_BEHIND_MIN_MS..most_behind_ms);
                let off_ms = self.rng.random_range(CLOCK_OFF_MS.start..longest_off_ms.min(behind_ms - 10_000));
                if free(at_ms + off_ms) {
                    self.running = Some(ClockFault { behind_ms, until_ms: at_ms + off_ms, shown_ms: None });
                }
            }
        }
        let Some(fault) = &mut self.running else { return at_ms };
        let shown = at_ms - fault.behind_ms;
        fault.shown_ms = Some((fault.shown_ms.map_or(shown, |(first, _)| first), shown));
        shown
    }

    /// Labels a jump still running at the end of the simulation.
    fn finish(&mut self, core: &Core, profile: &'static str, labels: &mut Vec<Label>) {
        if let Some(ClockFault { shown_ms: Some((first, last)), .. }) = self.running.take() {
            labels.push(core.label(profile, CLOCK_JUMP, first, last, None));
        }
    }
}

/// A kind of injected anomaly and the detectors meant to catch it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Kind {
    name: &'static str,
    detectors: &'static [&'static str],
}

impl Core {
    fn label(
        &self,
        profile: &'static str,
        kind: Kind,
        start_ms: i64,
        end_ms: i64,
        metric: Option<&'static str>,
    ) -> Label {
        Label {
            kind: kind.name.to_string(),
            profile: profile.to_string(),
            entity: self.id.clone(),
            start_ms,
            end_ms,
            detectors: kind.detectors.iter().map(|d| d.to_string()).collect(),
            metric: metric.map(str::to_string),
        }
    }
}

/// One simulated entity of some profile.
trait EntityModel {
    /// Writes this entity's readings due at `emit.at_ms` (none, e.g., for an aircraft on the ground).
    fn emit(&mut self, emit: &mut Emit<'_>);
    /// Ends a running anomaly at the end of the simulation, labelling what it affected.
    fn finish(&mut self, profile: &'static str, labels: &mut Vec<Label>);
    /// Whether a spoofer may take over the position this entity reports from `at_ms` to
    /// `until_ms`: only when it has no anomaly of its own running or due then.
    fn can_capture(&self, _at_ms: i64, _until_ms: i64) -> bool {
        false
    }
    /// Makes the entity report `fix` from `at_ms` until `until_ms` (labelled by the entity).
    fn capture(&mut self, _fix: GeoPoint, _at_ms: i64, _until_ms: i64) {}
}

struct Fleet {
    profile: &'static str,
    interval_ms: i64,
    next_ms: i64,
    entities: Vec<Box<dyn EntityModel + Send>>,
    /// Makes several of the fleet's entities report one fix now and then (vehicles only).
    spoofer: Option<vehicle::FleetSpoofer>,
}

/// Generates messages in event-time order for all requested profiles.
pub struct Simulator {
    fleets: Vec<Fleet>,
    json: JsonWriter,
    labels: Vec<Label>,
    /// Every entity that has sent a reading, by profile, in order of appearance.
    seen: Vec<(&'static str, String)>,
    finished: bool,
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
        "environment" => (p, 10, 5_000),
        _ => (p, 6, 1_000),
    })
}

/// The bundled zones, which vehicles drive between (and must not enter uninvited).
fn bundled_zones() -> Arc<GeofenceIndex> {
    Arc::new(GeofenceIndex::from_geojson(crate::geo::BUNDLED_GEOFENCES).expect("the bundled geofences load"))
}

impl Simulator {
    /// A simulator for the given profiles; unknown names are an error naming the known ones.
    pub fn new(settings: &SimSettings) -> Result<Self, String> {
        let mut fleets = Vec::new();
        let mut world: Option<Arc<vehicle::World>> = None;
        for name in &settings.profiles {
            let Some((profile, size, interval_ms)) = fleet_shape(name) else {
                return Err(format!("cannot simulate profile {name:?}; known: {}", SIMULATED_PROFILES.join(", ")));
            };
            if fleets.iter().any(|f: &Fleet| f.profile == profile) {
                continue;
            }
            let count =
                settings.entities.unwrap_or_else(|| ((size as f64 * settings.fleet_scale).round() as usize).max(1));
            let core = |index: usize, id: String| {
                Core::new(id, settings.seed, profile, index, settings.start_ms, settings.anomaly_rate)
            };
            let mut spoofer = None;
            let entities: Vec<Box<dyn EntityModel + Send>> = match profile {
                "vehicle" => {
                    let world = world.get_or_insert_with(|| Arc::new(vehicle::World::new(bundled_zones()))).clone();
                    spoofer = vehicle::FleetSpoofer::new(settings, world.clone());
                    (0..count)
                        .map(|i| {
                            let model = vehicle::Vehicle::new(core(i, format!("V{:03}", i + 1)), world.clone(), i);
                            Box::new(model) as Box<dyn EntityModel + Send>
                        })
                        .collect()
                }
                "drone" => (0..count)
                    .map(|i| Box::new(drone::Drone::new(core(i, format!("drone-{:02}", i + 1)))) as Box<_>)
                    .collect(),
                "aircraft" => (0..count)
                    .map(|i| Box::new(aircraft::Aircraft::new(core(i, String::new()), i + 1)) as Box<_>)
                    .collect(),
                "environment" => (0..count)
                    .map(|i| Box::new(sensors::Environment::new(core(i, format!("env-sensor-{:02}", i + 1)))) as Box<_>)
                    .collect(),
                _ => (0..count)
                    .map(|i| Box::new(sensors::Vibration::new(core(i, format!("vib-{:02}", i + 1)), i + 1)) as Box<_>)
                    .collect(),
            };
            fleets.push(Fleet { profile, interval_ms, next_ms: settings.start_ms, entities, spoofer });
        }
        Ok(Simulator { fleets, json: JsonWriter::default(), labels: Vec::new(), seen: Vec::new(), finished: false })
    }

    /// Number of simulated entities (aircraft count as one each, whatever flight they fly).
    pub fn entity_count(&self) -> usize {
        self.fleets.iter().map(|f| f.entities.len()).sum()
    }

    /// Event time of the next reading due, if any fleet is simulated.
    pub fn next_due_ms(&self) -> Option<i64> {
        self.fleets.iter().map(|f| f.next_ms).min()
    }

    /// Hands every message due at or before `until_ms` to `sink`, in event-time order.
    pub fn emit_until(&mut self, until_ms: i64, sink: &mut dyn SimSink) {
        loop {
            let Some(fleet) = self.fleets.iter_mut().filter(|f| f.next_ms <= until_ms).min_by_key(|f| f.next_ms) else {
                return;
            };
            if let Some(spoofer) = &mut fleet.spoofer {
                spoofer.tick(fleet.next_ms, &mut fleet.entities);
            }
            let mut emit = Emit {
                profile: fleet.profile,
                at_ms: fleet.next_ms,
                dt_s: fleet.interval_ms as f64 / 1000.0,
                json: &mut self.json,
                labels: &mut self.labels,
                seen: &mut self.seen,
                sink,
            };
            for entity in &mut fleet.entities {
                entity.emit(&mut emit);
            }
            fleet.next_ms += fleet.interval_ms;
        }
    }

    /// Labels of the anomalies that have ended so far, taken out of the simulator.
    pub fn take_labels(&mut self) -> Vec<Label> {
        std::mem::take(&mut self.labels)
    }

    /// Ends every running anomaly (labelling what it affected so far); call once, at the end.
    pub fn finish(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        for fleet in &mut self.fleets {
            for entity in &mut fleet.entities {
                entity.finish(fleet.profile, &mut self.labels);
            }
        }
    }

    /// Every entity that has sent a reading so far: (profile, id), in order of appearance.
    pub fn entities(&self) -> &[(&'static str, String)] {
        &self.seen
    }

    /// The ground truth of a run from `settings.start_ms` to `end_ms`: every entity seen and
    /// every label taken so far plus `labels`.
    pub fn label_set(&self, settings: &SimSettings, end_ms: i64, labels: Vec<Label>) -> LabelSet {
        LabelSet {
            generator: "teleguard simulate".into(),
            seed: Some(settings.seed),
            start_ms: settings.start_ms,
            end_ms,
            entities: self
                .seen
                .iter()
                .map(|(profile, entity)| EntityRef { profile: profile.to_string(), entity: entity.clone() })
                .collect(),
            labels,
        }
    }
}

#[cfg(test)]
mod tests;
