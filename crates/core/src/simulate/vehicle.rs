//! Road vehicles (reference 000): delivery rounds between the bundled depot, warehouses, rest
//! areas, service centre and customers, along street-grid routes that keep out of restricted
//! zones; they accelerate and brake within plausible limits, wait at lights, dwell where they
//! stop (never 30 minutes outside a safe zone) and report engine status to match. Injected:
//! GPS teleports, out-of-hours visits to a restricted zone, long stops outside safe zones, a
//! position dragged away (GPS spoofing), clock jumps while parked, and now and then a spoofer
//! that makes several driving vehicles report the same fix (the [`FleetSpoofer`]). Every long
//! stop and out-of-hours restricted visit a vehicle really makes is labelled, injected or not
//! (a dwell that follows a restricted visit can run past 30 minutes; a visit in hours can
//! overrun 17:00): the labels are what happened, so the rules are judged against the truth.

use super::{ClockFaults, Core, Emit, EntityModel, Kind, Label, SimSettings, WARM_UP_MS, displacement, offset};
use crate::geo::GeofenceIndex;
use crate::model::GeoPoint;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

const TELEPORT: Kind = Kind { name: "teleport", detectors: &["teleport"] };
const RESTRICTED_ZONE: Kind = Kind { name: "restricted_zone", detectors: &["geofence_breach"] };
const LONG_STOP: Kind = Kind { name: "long_stop", detectors: &["unusual_stop"] };
const GPS_SPOOF: Kind = Kind { name: "gps_spoof", detectors: &["spoofing"] };
const FLEET_SPOOF: Kind = Kind { name: "fleet_spoof", detectors: &["spoofing"] };

/// Attacks of the fleet-wide spoofer per hour, at anomaly rate 1 (it scales with the rate).
const FLEET_SPOOFS_PER_HOUR: f64 = 0.25;
/// How long an attack holds its victims, and how many it takes (as many as are driving free).
const FLEET_SPOOF_SECONDS: std::ops::Range<f64> = 60.0..180.0;
const FLEET_SPOOF_VICTIMS: std::ops::RangeInclusive<usize> = 2..=4;

/// The zone name vehicles keep out of, and when they may be there (UTC, as the built-in
/// vehicle profile's geofence rule is configured).
const RESTRICTED: &str = "Restricted Area";
const ALLOWED_HOURS: std::ops::Range<i64> = 9..17;
/// Readings under this speed count as stopped, as the built-in unusual-stop rule sees them.
const STOPPED_BELOW_KMH: f64 = 5.0;
/// A stop outside a safe zone becomes unusual after this long (the built-in rule's setting).
const LONG_STOP_MS: i64 = 30 * 60_000;
/// Where a vehicle may stop as long as it likes (the built-in unusual-stop rule's safe zones).
const SAFE_ZONES: [&str; 3] = ["Warehouse", "Rest Area", "Service Center"];

/// km/h gained per second at most (1.2 m/s²), and lost when braking (2 m/s²).
const ACCELERATION_KMH_PER_S: f64 = 4.32;
const BRAKING_KMH_PER_S: f64 = 7.2;
/// Speed through a street corner.
const CORNER_KMH: f64 = 25.0;

#[derive(Debug, Clone, Copy, PartialEq)]
enum PlaceKind {
    Warehouse,
    RestArea,
    ServiceCenter,
    Depot,
    Customer,
}

impl PlaceKind {
    /// How long a vehicle stays, in minutes: never 30 outside a safe zone.
    fn dwell_minutes(self) -> (f64, f64) {
        match self {
            PlaceKind::Warehouse => (15.0, 45.0),
            PlaceKind::RestArea => (15.0, 40.0),
            PlaceKind::ServiceCenter => (20.0, 60.0),
            PlaceKind::Depot => (5.0, 20.0),
            PlaceKind::Customer => (3.0, 15.0),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Place {
    point: GeoPoint,
    kind: PlaceKind,
}

/// Where the fleet drives: places to visit and the zones to keep out of.
#[derive(Debug)]
pub struct World {
    zones: Arc<GeofenceIndex>,
    places: Vec<Place>,
    /// A point inside each restricted zone, with the zone's id.
    restricted: Vec<(String, GeoPoint)>,
}

/// The average of a zone's outer ring (inside it for the bundled, convex-ish zones).
fn centre(zone: &crate::geo::Zone) -> Option<GeoPoint> {
    let ring = &zone.shape.0.first()?.exterior().0;
    let n = ring.len().saturating_sub(1).max(1) as f64;
    let points = &ring[..ring.len().saturating_sub(1)];
    Some(GeoPoint {
        lat: points.iter().map(|c| c.y).sum::<f64>() / n,
        lon: points.iter().map(|c| c.x).sum::<f64>() / n,
    })
}

impl World {
    pub fn new(zones: Arc<GeofenceIndex>) -> World {
        let mut places = Vec::new();
        let mut restricted = Vec::new();
        for zone in zones.zones() {
            let Some(point) = centre(zone).filter(|p| zones.zone_at(*p).is_some_and(|z| z.zone_id == zone.zone_id))
            else {
                continue;
            };
            let kind = match &*zone.name {
                RESTRICTED => {
                    restricted.push((zone.zone_id.clone(), point));
                    continue;
                }
                "Warehouse" => PlaceKind::Warehouse,
                "Rest Area" => PlaceKind::RestArea,
                "Service Center" => PlaceKind::ServiceCenter,
                _ => PlaceKind::Depot,
            };
            places.push(Place { point, kind });
        }
        // Customers: fixed addresses across the area, outside every zone.
        let mut rng = SmallRng::seed_from_u64(0x5eed_c057);
        while places.iter().filter(|p| p.kind == PlaceKind::Customer).count() < 16 {
            let point = GeoPoint { lat: rng.random_range(37.63..37.80), lon: rng.random_range(-122.48..-122.21) };
            if zones.zone_at(point).is_none() {
                places.push(Place { point, kind: PlaceKind::Customer });
            }
        }
        World { zones, places, restricted }
    }

    /// Whether `point` is inside a restricted zone other than `allowed`.
    fn forbidden(&self, point: GeoPoint, allowed: Option<&str>) -> bool {
        self.zones.zone_at(point).is_some_and(|z| &*z.name == RESTRICTED && Some(z.zone_id.as_str()) != allowed)
    }

    /// A street-grid route (north-south, east-west, north-south or the other way round) from
    /// `from` to `to` that enters no restricted zone but `allowed`, as waypoints to pop.
    fn route(&self, from: GeoPoint, to: GeoPoint, allowed: Option<&str>, rng: &mut SmallRng) -> Option<Vec<GeoPoint>> {
        for _ in 0..8 {
            let fraction = rng.random_range(0.2..0.8);
            let corners = if rng.random::<bool>() {
                let lat = from.lat + (to.lat - from.lat) * fraction;
                [GeoPoint { lat, lon: from.lon }, GeoPoint { lat, lon: to.lon }]
            } else {
                let lon = from.lon + (to.lon - from.lon) * fraction;
                [GeoPoint { lat: from.lat, lon }, GeoPoint { lat: to.lat, lon }]
            };
            let path = [from, corners[0], corners[1], to];
            let clear = path.windows(2).all(|leg| {
                let steps = (metres(leg[0], leg[1]) / 50.0).ceil().max(1.0) as usize;
                (0..=steps).all(|i| !self.forbidden(lerp(leg[0], leg[1], i as f64 / steps as f64), allowed))
            });
            if clear {
                return Some(vec![to, corners[1], corners[0]]);
            }
        }
        None
    }
}

fn lerp(a: GeoPoint, b: GeoPoint, t: f64) -> GeoPoint {
    GeoPoint { lat: a.lat + (b.lat - a.lat) * t, lon: a.lon + (b.lon - a.lon) * t }
}

/// Distance in metres on a local flat map (routes span a few tens of km).
fn metres(a: GeoPoint, b: GeoPoint) -> f64 {
    let (east, north) = displacement(a, b);
    east.hypot(north)
}

/// Why a vehicle is standing still.
#[derive(Debug, Clone, Copy, PartialEq)]
enum StopReason {
    /// A light or traffic.
    Traffic,
    /// At a place on its round.
    Dwell,
    /// An injected long stop outside a safe zone.
    LongStop,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Driving,
    /// Braking for a stop of `duration_ms` on the road.
    StoppingFor {
        duration_ms: i64,
        reason: StopReason,
    },
    Stopped {
        since_ms: i64,
        until_ms: i64,
        reason: StopReason,
    },
}

/// An injected anomaly in progress.
#[derive(Debug, Clone)]
enum Fault {
    /// One reading was reported here; the next one, back on track, ends it.
    Teleport { start_ms: i64 },
    /// Driving to, staying in, and leaving restricted zone `zone_id`; readings inside it out of
    /// hours so far.
    RestrictedVisit { zone_id: String, inside: Option<(i64, i64)>, entered: bool },
    /// A stop outside any zone; readings under the stop speed so far.
    LongStop { slow: Option<(i64, i64)> },
    /// A spoofer drags the reported position away at `east_mps`, `north_mps` from `start_ms`
    /// while the vehicle drives on (and reports its true speed); at `until_ms` the receiver
    /// locks back onto the real signal. `last_ms`: the last reading so far.
    GpsSpoof { start_ms: i64, until_ms: i64, last_ms: i64, east_mps: f64, north_mps: f64 },
}

pub struct Vehicle {
    core: Core,
    world: Arc<World>,
    position: GeoPoint,
    speed: f64,
    cruise_kmh: f64,
    /// Remaining waypoints, the next one last.
    route: Vec<GeoPoint>,
    destination: PlaceKind,
    /// A restricted zone the next route may start in (the vehicle is in it).
    leaving_zone: Option<String>,
    phase: Phase,
    fault: Option<Fault>,
    /// The anomaly kind chosen for the due injection (0 restricted visit, 1 long stop,
    /// 2 teleport), and since when it waits for a moment it can happen.
    planned: Option<(usize, i64)>,
    /// A fleet-wide spoofer's hold on the reported position.
    capture: Option<Capture>,
    clock: ClockFaults,
    /// What the vehicle really did that the rules define, injected or not.
    truth: RuleTruth,
}

/// The long stops and out-of-hours restricted visits a vehicle really made, labelled whether an
/// injection caused them or the day's course did (a dwell after a restricted visit that ran
/// past 30 minutes, a visit in hours that overran 17:00): ground truth is what happened, so a
/// rule that flags it is right. An episode an injection already labelled is not labelled twice.
#[derive(Debug, Default)]
struct RuleTruth {
    /// First and last shown time of the stop under way outside safe zones.
    stop: Option<(i64, i64)>,
    /// First and last shown time of the visit under way in a restricted zone out of hours.
    visit: Option<(i64, i64)>,
    /// The injected episodes labelled so far, (kind name, start, end), the newest last.
    injected: Vec<(&'static str, i64, i64)>,
}

impl RuleTruth {
    /// Takes a reading: `stopped` below the stop speed outside safe zones, `breaching` in a
    /// restricted zone out of hours; pushes what ended to `labels` as (kind, start, end).
    fn observe(&mut self, shown_ms: i64, stopped: bool, breaching: bool, ended: &mut Vec<(Kind, i64, i64)>) {
        for (on, span, kind) in [(stopped, &mut self.stop, LONG_STOP), (breaching, &mut self.visit, RESTRICTED_ZONE)] {
            match (*span, on) {
                (Some((start, _)), true) => *span = Some((start, shown_ms.max(start))),
                (None, true) => *span = Some((shown_ms, shown_ms)),
                (Some((start, end)), false) => {
                    *span = None;
                    ended.push((kind, start, end));
                }
                (None, false) => {}
            }
        }
        let injected = &self.injected;
        ended.retain(|(kind, start, end)| {
            let long_enough = kind.name != LONG_STOP.name || end - start > LONG_STOP_MS;
            long_enough && !injected.iter().any(|(k, s, e)| *k == kind.name && s <= end && start <= e)
        });
    }

    /// Whatever is under way when the simulation ends.
    fn finish(&mut self, ended: &mut Vec<(Kind, i64, i64)>) {
        self.observe(i64::MAX, false, false, ended);
    }

    fn injected(&mut self, kind: Kind, start: i64, end: i64) {
        if kind.name == LONG_STOP.name || kind.name == RESTRICTED_ZONE.name {
            self.injected.push((kind.name, start, end));
            // Only recent episodes can overlap what is under way.
            if self.injected.len() > 8 {
                self.injected.remove(0);
            }
        }
    }
}

/// The fix a spoofer makes the vehicle report from `start_ms` until `until_ms`; `last_ms`: the
/// last reading so far.
#[derive(Debug, Clone, Copy)]
struct Capture {
    fix: GeoPoint,
    start_ms: i64,
    until_ms: i64,
    last_ms: i64,
}

/// How long a planned anomaly may wait for its moment (night, driving) before another is chosen.
const PLAN_PATIENCE_MS: i64 = 3 * 3_600_000;

impl Vehicle {
    pub(super) fn new(mut core: Core, world: Arc<World>, index: usize) -> Vehicle {
        let place = world.places[index % world.places.len()];
        let until_ms = core.start_ms + (core.uniform(0.0, 8.0) * 60_000.0) as i64;
        Vehicle {
            position: place.point,
            speed: 0.0,
            cruise_kmh: core.uniform(45.0, 70.0),
            route: Vec::new(),
            destination: place.kind,
            leaving_zone: None,
            phase: Phase::Stopped { since_ms: core.start_ms, until_ms, reason: StopReason::Dwell },
            fault: None,
            planned: None,
            capture: None,
            clock: ClockFaults::new(&core),
            truth: RuleTruth::default(),
            world,
            core,
        }
    }

    /// Picks the next place to visit and a route there.
    fn plan_next_trip(&mut self) {
        let allowed = self.leaving_zone.take();
        for _ in 0..20 {
            let place = *self.core.pick(&self.world.places);
            if metres(place.point, self.position) < 500.0 {
                continue;
            }
            if let Some(route) = self.world.route(self.position, place.point, allowed.as_deref(), &mut self.core.rng) {
                self.route = route;
                self.destination = place.kind;
                return;
            }
        }
        // Nowhere reachable (should not happen with the bundled zones): stay a little longer.
        self.route.clear();
    }

    /// Remaining distance along the route, and to the next waypoint, in metres.
    fn distances(&self) -> (f64, f64) {
        let mut previous = self.position;
        let mut total = 0.0;
        let mut next = None;
        for waypoint in self.route.iter().rev() {
            let leg = metres(previous, *waypoint);
            total += leg;
            next.get_or_insert(leg);
            previous = *waypoint;
        }
        (total, next.unwrap_or(0.0))
    }

    /// Moves `distance` metres along the route; true when the route's end is reached.
    fn advance(&mut self, mut distance: f64) -> bool {
        while let Some(next) = self.route.last().copied() {
            let leg = metres(self.position, next);
            if leg > distance {
                self.position = lerp(self.position, next, distance / leg);
                return false;
            }
            distance -= leg;
            self.position = next;
            self.route.pop();
        }
        true
    }

    /// The speed the driver aims for: cruise, slower for corners, down to zero at the end.
    fn target_speed(&mut self) -> f64 {
        let (to_end, to_corner) = self.distances();
        // v² = u² + 2as, with a in (km/h)²/m.
        let braking = 2.0 * BRAKING_KMH_PER_S * 3.6;
        let for_end = (braking * to_end).sqrt();
        let for_corner =
            if self.route.len() > 1 { (CORNER_KMH * CORNER_KMH + braking * to_corner).sqrt() } else { f64::MAX };
        (self.cruise_kmh + self.core.gauss(0.0, 2.0)).min(for_end).min(for_corner).max(0.0)
    }

    /// Starts the planned anomaly if this is a moment it can happen.
    fn start_fault(&mut self, at_ms: i64) {
        let hour = at_ms.rem_euclid(86_400_000) / 3_600_000;
        let night = !(6..18).contains(&hour);
        let driving = self.phase == Phase::Driving && self.speed > 10.0;
        let choice = match self.planned {
            Some((choice, since)) if at_ms - since < PLAN_PATIENCE_MS => choice,
            _ => {
                let choice = self.core.rng_index(4);
                self.planned = Some((choice, at_ms));
                choice
            }
        };
        if choice == 0 && night && driving && self.leaving_zone.is_none() {
            let (zone_id, target) = self.core.pick(&self.world.restricted).clone();
            if let Some(route) = self.world.route(self.position, target, Some(&zone_id), &mut self.core.rng) {
                self.route = route;
                self.destination = PlaceKind::Customer;
                self.fault = Some(Fault::RestrictedVisit { zone_id, inside: None, entered: false });
                self.planned = None;
                return;
            }
        }
        if choice == 1 && driving && self.world.zones.zone_at(self.position).is_none() {
            let duration_ms = (self.core.uniform(35.0, 70.0) * 60_000.0) as i64;
            self.phase = Phase::StoppingFor { duration_ms, reason: StopReason::LongStop };
            self.fault = Some(Fault::LongStop { slow: None });
            self.planned = None;
            return;
        }
        if choice == 2 {
            self.fault = Some(Fault::Teleport { start_ms: at_ms });
            self.planned = None;
        }
        if choice == 3 && driving {
            // A position dragged off at 40-80 m/s for one to three minutes: too slow for the
            // teleport limit at any one step, farther than the vehicle's speed could go.
            let duration_ms = (self.core.uniform(60.0, 180.0) * 1000.0) as i64;
            let drift = self.core.uniform(40.0, 80.0);
            let bearing = self.core.uniform(0.0, std::f64::consts::TAU);
            self.fault = Some(Fault::GpsSpoof {
                start_ms: at_ms,
                until_ms: at_ms + duration_ms,
                last_ms: at_ms,
                east_mps: drift * bearing.sin(),
                north_mps: drift * bearing.cos(),
            });
            self.planned = None;
        }
    }

    /// Moves the vehicle on by one reading's time.
    fn drive(&mut self, at_ms: i64, dt: f64) {
        match self.phase {
            Phase::Stopped { until_ms, reason, .. } if at_ms >= until_ms => {
                if reason == StopReason::Dwell {
                    self.plan_next_trip();
                }
                if !self.route.is_empty() {
                    self.phase = Phase::Driving;
                }
            }
            Phase::Stopped { .. } => {}
            Phase::Driving | Phase::StoppingFor { .. } => {
                if self.phase == Phase::Driving && self.speed > 20.0 && self.core.chance(dt / 180.0) {
                    let duration_ms = (self.core.uniform(20.0, 90.0) * 1000.0) as i64;
                    self.phase = Phase::StoppingFor { duration_ms, reason: StopReason::Traffic };
                }
                let target = match self.phase {
                    Phase::StoppingFor { .. } => 0.0,
                    _ => self.target_speed(),
                };
                let new_speed = target
                    .clamp(self.speed - BRAKING_KMH_PER_S * dt, self.speed + ACCELERATION_KMH_PER_S * dt)
                    .max(0.0);
                let arrived = self.advance((self.speed + new_speed) / 2.0 / 3.6 * dt);
                self.speed = new_speed;
                if arrived {
                    self.speed = 0.0;
                    let (low, high) = self.destination.dwell_minutes();
                    let mut until_ms = at_ms + (self.core.uniform(low, high) * 60_000.0) as i64;
                    if let Some(Fault::RestrictedVisit { zone_id, .. }) = &self.fault {
                        // A short look around the restricted zone, then away.
                        until_ms = at_ms + (self.core.uniform(8.0, 20.0) * 60_000.0) as i64;
                        self.leaving_zone = Some(zone_id.clone());
                    }
                    self.phase = Phase::Stopped { since_ms: at_ms, until_ms, reason: StopReason::Dwell };
                } else if let Phase::StoppingFor { duration_ms, reason } = self.phase
                    && self.speed < 0.5
                {
                    self.speed = 0.0;
                    self.phase = Phase::Stopped { since_ms: at_ms, until_ms: at_ms + duration_ms, reason };
                }
            }
        }
    }

    /// Updates the running fault after a reading at `at_ms` with `speed`; labels it once over.
    fn track_fault(&mut self, emit: &mut Emit<'_>, speed: f64) {
        let at_ms = emit.at_ms;
        let mut ended: Option<(Kind, i64, i64)> = None;
        let mut abandoned = false;
        match &mut self.fault {
            Some(Fault::Teleport { start_ms }) if *start_ms < at_ms => ended = Some((TELEPORT, *start_ms, at_ms)),
            Some(Fault::GpsSpoof { start_ms, until_ms, .. }) if *until_ms <= at_ms => {
                ended = Some((GPS_SPOOF, *start_ms, at_ms));
            }
            Some(Fault::RestrictedVisit { zone_id, inside, entered }) => {
                let in_zone = self.world.zones.zone_at(self.position).is_some_and(|z| &z.zone_id == zone_id);
                let hour = at_ms.rem_euclid(86_400_000) / 3_600_000;
                if in_zone && !ALLOWED_HOURS.contains(&hour) {
                    let start = inside.map_or(at_ms, |(start, _)| start);
                    *inside = Some((start, at_ms));
                }
                if in_zone {
                    *entered = true;
                } else if *entered {
                    // Out again: a breach to label if any of the visit fell out of hours.
                    match *inside {
                        Some((start, end)) => ended = Some((RESTRICTED_ZONE, start, end)),
                        None => abandoned = true,
                    }
                }
            }
            Some(Fault::LongStop { .. }) if matches!(self.phase, Phase::Stopped { reason: StopReason::Dwell, .. }) => {
                // Reached its destination while braking: an ordinary dwell, not the anomaly meant.
                abandoned = true;
            }
            Some(Fault::LongStop { slow }) => {
                if speed < STOPPED_BELOW_KMH {
                    let start = slow.map_or(at_ms, |(start, _)| start);
                    *slow = Some((start, at_ms));
                } else if let Some((start, end)) = *slow {
                    ended = Some((LONG_STOP, start, end));
                }
                if let Phase::Stopped { reason: StopReason::LongStop, since_ms, .. } = self.phase
                    && since_ms == at_ms
                    && self.world.zones.zone_at(self.position).is_some()
                {
                    // Rolled into a zone while braking: an ordinary stop, not the anomaly meant.
                    self.phase =
                        Phase::Stopped { since_ms: at_ms, until_ms: at_ms + 60_000, reason: StopReason::Traffic };
                    abandoned = true;
                }
            }
            _ => {}
        }
        if abandoned {
            self.fault = None;
            self.core.schedule_after(at_ms);
        } else if let Some((kind, start, end)) = ended {
            emit.label(&self.core, kind, start, end, None);
            self.truth.injected(kind, start, end);
            self.fault = None;
            self.core.schedule_after(at_ms);
        }
    }
}

impl EntityModel for Vehicle {
    fn emit(&mut self, emit: &mut Emit<'_>) {
        let at_ms = emit.at_ms;
        self.drive(at_ms, emit.dt_s);
        if self.fault.is_none() && self.core.anomaly_due(at_ms) {
            self.start_fault(at_ms);
        }
        let mut reported = self.position;
        if let Some(Fault::Teleport { start_ms }) = &self.fault
            && *start_ms == at_ms
        {
            // A spoofed fix 20-80 km away, outside every zone.
            for _ in 0..10 {
                let distance = self.core.uniform(20_000.0, 80_000.0);
                let bearing = self.core.uniform(0.0, std::f64::consts::TAU);
                reported = offset(self.position, distance * bearing.sin(), distance * bearing.cos());
                if self.world.zones.zone_at(reported).is_none() {
                    break;
                }
            }
        }
        if let Some(Fault::GpsSpoof { start_ms, until_ms, last_ms, east_mps, north_mps }) = &mut self.fault
            && at_ms < *until_ms
        {
            *last_ms = at_ms;
            let seconds = (at_ms - *start_ms) as f64 / 1000.0;
            reported = offset(self.position, *east_mps * seconds, *north_mps * seconds);
        }
        if let Some(capture) = &mut self.capture
            && at_ms < capture.until_ms
        {
            capture.last_ms = at_ms;
            reported = capture.fix;
        }
        let (fault, capture, core) = (&self.fault, &self.capture, &self.core);
        let free = |until_ms: i64| fault.is_none() && capture.is_none() && core.free_until(until_ms);
        let parked = match self.phase {
            Phase::Stopped { since_ms, until_ms, reason: StopReason::Dwell } => {
                Some((at_ms - since_ms, until_ms - at_ms))
            }
            _ => None,
        };
        let shown_ms = self.clock.shown_ms(core, at_ms, parked, free, emit.labels, emit.profile);
        let speed = if self.speed > 0.0 { (self.speed + self.core.gauss(0.0, 0.8)).max(0.0) } else { 0.0 };
        let engine = match self.phase {
            Phase::Stopped { since_ms, until_ms, .. }
                if until_ms - since_ms > 180_000 && at_ms - since_ms >= 120_000 =>
            {
                "off"
            }
            _ if speed < 1.0 => "idle",
            _ => "on",
        };
        let json = emit.begin();
        json.str("vehicle_id", &self.core.id);
        json.timestamp("timestamp", shown_ms);
        json.fixed("latitude", reported.lat, 6);
        json.fixed("longitude", reported.lon, 6);
        json.fixed("speed", speed, 2);
        json.str("engine_status", engine);
        emit.send(&mut self.core);
        self.track_fault(emit, speed);
        let zone = self.world.zones.zone_at(self.position);
        let stopped = speed < STOPPED_BELOW_KMH && !zone.is_some_and(|z| SAFE_ZONES.contains(&&*z.name));
        let hour = at_ms.rem_euclid(86_400_000) / 3_600_000;
        let breaching = zone.is_some_and(|z| &*z.name == RESTRICTED) && !ALLOWED_HOURS.contains(&hour);
        let mut natural = Vec::new();
        self.truth.observe(shown_ms, stopped, breaching, &mut natural);
        for (kind, start, end) in natural {
            emit.label(&self.core, kind, start, end, None);
        }
        if let Some(capture) = self.capture
            && capture.until_ms <= at_ms
        {
            // Locked back onto the real signal: this reading is the first true one again.
            emit.label(&self.core, FLEET_SPOOF, capture.start_ms, at_ms, None);
            self.capture = None;
        }
    }

    fn can_capture(&self, _at_ms: i64, until_ms: i64) -> bool {
        let driving = self.phase == Phase::Driving && self.speed > 10.0;
        driving
            && self.fault.is_none()
            && self.capture.is_none()
            && !self.clock.running()
            && self.core.free_until(until_ms)
    }

    fn capture(&mut self, fix: GeoPoint, at_ms: i64, until_ms: i64) {
        self.capture = Some(Capture { fix, start_ms: at_ms, until_ms, last_ms: at_ms });
    }

    fn finish(&mut self, profile: &'static str, labels: &mut Vec<Label>) {
        let label = match self.fault.take() {
            Some(Fault::Teleport { start_ms }) => Some((TELEPORT, start_ms, start_ms)),
            Some(Fault::GpsSpoof { start_ms, last_ms, .. }) => Some((GPS_SPOOF, start_ms, last_ms)),
            Some(Fault::RestrictedVisit { inside: Some((start, end)), .. }) => Some((RESTRICTED_ZONE, start, end)),
            // Cut short by the end of the simulation: a long stop only once it lasted long.
            Some(Fault::LongStop { slow: Some((start, end)) }) if end - start > LONG_STOP_MS => {
                Some((LONG_STOP, start, end))
            }
            _ => None,
        };
        if let Some((kind, start, end)) = label {
            labels.push(self.core.label(profile, kind, start, end, None));
            self.truth.injected(kind, start, end);
        }
        let mut natural = Vec::new();
        self.truth.finish(&mut natural);
        for (kind, start, end) in natural {
            labels.push(self.core.label(profile, kind, start, end, None));
        }
        if let Some(capture) = self.capture.take() {
            labels.push(self.core.label(profile, FLEET_SPOOF, capture.start_ms, capture.last_ms, None));
        }
        self.clock.finish(&self.core, profile, labels);
    }
}

/// A spoofer (or a meaconer rebroadcasting what its own antenna receives) strong enough to
/// capture the receivers of several vehicles at once: every captured vehicle reports the one
/// fix it sends, while driving on and reporting its true speed. It strikes as a Poisson process
/// of its own random stream, at [`FLEET_SPOOFS_PER_HOUR`] times the anomaly rate, and takes 2
/// to 4 of the vehicles that are driving with no anomaly of their own running or due (waiting,
/// a reading at a time, until at least two are).
#[derive(Debug)]
pub(super) struct FleetSpoofer {
    rng: SmallRng,
    mean_gap_ms: f64,
    next_ms: i64,
    /// How long the due attack lasts, drawn when it became due.
    planned_ms: Option<i64>,
    world: Arc<World>,
}

impl FleetSpoofer {
    /// The fleet's spoofer, or none for clean data.
    pub(super) fn new(settings: &SimSettings, world: Arc<World>) -> Option<FleetSpoofer> {
        let rate = settings.anomaly_rate * FLEET_SPOOFS_PER_HOUR;
        if rate <= 0.0 {
            return None;
        }
        let stream = settings.seed ^ crate::model::stable_hash(&[b"vehicle", b"fleet spoofer"]);
        let mut spoofer = FleetSpoofer {
            rng: SmallRng::seed_from_u64(stream),
            mean_gap_ms: 3_600_000.0 / rate,
            next_ms: 0,
            planned_ms: None,
            world,
        };
        spoofer.next_ms = spoofer.after(settings.start_ms + WARM_UP_MS);
        Some(spoofer)
    }

    fn after(&mut self, at_ms: i64) -> i64 {
        at_ms.saturating_add((-(1.0 - self.rng.random::<f64>()).ln() * self.mean_gap_ms) as i64)
    }

    /// Before the fleet's readings at `at_ms`: starts an attack if one is due and enough
    /// vehicles are free.
    pub(super) fn tick(&mut self, at_ms: i64, vehicles: &mut [Box<dyn EntityModel + Send>]) {
        if at_ms < self.next_ms {
            return;
        }
        let duration_ms =
            *self.planned_ms.get_or_insert_with(|| (self.rng.random_range(FLEET_SPOOF_SECONDS) * 1000.0) as i64);
        let until_ms = at_ms + duration_ms;
        let mut free: Vec<usize> = (0..vehicles.len()).filter(|&i| vehicles[i].can_capture(at_ms, until_ms)).collect();
        if free.len() < *FLEET_SPOOF_VICTIMS.start() {
            return;
        }
        let victims = self.rng.random_range(FLEET_SPOOF_VICTIMS).min(free.len());
        // A fix in the fleet's area, outside every zone.
        let mut fix = GeoPoint { lat: 37.7, lon: -122.35 };
        for _ in 0..10 {
            fix = GeoPoint { lat: self.rng.random_range(37.63..37.80), lon: self.rng.random_range(-122.48..-122.21) };
            if self.world.zones.zone_at(fix).is_none() {
                break;
            }
        }
        for taken in 0..victims {
            let pick = self.rng.random_range(taken..free.len());
            free.swap(taken, pick);
            vehicles[free[taken]].capture(fix, at_ms, until_ms);
        }
        self.planned_ms = None;
        self.next_ms = self.after(until_ms);
    }
}

#[cfg(test)]
mod rule_truth_tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    /// Feeds one reading a minute from `minutes`, stopped or breaching as `state` says.
    fn feed(
        truth: &mut RuleTruth,
        minutes: std::ops::Range<i64>,
        stopped: bool,
        breaching: bool,
    ) -> Vec<(&str, i64, i64)> {
        let mut ended = Vec::new();
        for minute in minutes {
            truth.observe(minute * MINUTE, stopped, breaching, &mut ended);
        }
        ended.into_iter().map(|(kind, start, end)| (kind.name, start / MINUTE, end / MINUTE)).collect()
    }

    #[test]
    fn a_stop_is_labelled_once_it_lasted_the_rules_half_hour_and_not_twice_when_injected() {
        let mut truth = RuleTruth::default();
        assert_eq!(feed(&mut truth, 0..20, true, false), []);
        assert_eq!(feed(&mut truth, 20..21, false, false), [], "a 19-minute stop is no anomaly");
        assert_eq!(feed(&mut truth, 21..60, true, false), []);
        assert_eq!(feed(&mut truth, 60..61, false, false), [("long_stop", 21, 59)]);
        // An injected stop, already labelled, is not labelled again.
        truth.injected(LONG_STOP, 100 * MINUTE, 140 * MINUTE);
        assert_eq!(feed(&mut truth, 100..141, true, false), []);
        assert_eq!(feed(&mut truth, 141..142, false, false), []);
    }

    #[test]
    fn a_visit_out_of_hours_is_labelled_from_its_first_reading_and_one_under_way_at_the_end_too() {
        let mut truth = RuleTruth::default();
        assert_eq!(feed(&mut truth, 0..5, false, true), []);
        assert_eq!(feed(&mut truth, 5..6, false, false), [("restricted_zone", 0, 4)]);
        assert_eq!(feed(&mut truth, 6..40, true, true), []);
        let mut ended = Vec::new();
        truth.finish(&mut ended);
        let ended: Vec<_> = ended.into_iter().map(|(k, s, e)| (k.name, s / MINUTE, e / MINUTE)).collect();
        assert_eq!(ended, [("long_stop", 6, 39), ("restricted_zone", 6, 39)]);
    }
}
