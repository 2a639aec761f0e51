//! Stationary sensors: environment stations (reference 003) with daily cycles and weather, and
//! machine vibration sensors (reference 004) with load changes and slow wear; faults injected
//! into their signals: spikes, level shifts, drifts, stuck values and vibration bursts.

use super::{Core, Emit, EntityModel, Kind, Label};

const SPIKE: Kind = Kind { name: "spike", detectors: &["zscore"] };
const LEVEL_SHIFT: Kind = Kind { name: "level_shift", detectors: &["zscore"] };
const DRIFT: Kind = Kind { name: "drift", detectors: &["zscore", "trend"] };
const STUCK: Kind = Kind { name: "stuck", detectors: &["zscore"] };
const VIBRATION_BURST: Kind = Kind { name: "vibration_burst", detectors: &["zscore"] };

/// How a fault changes a signal while it lasts.
#[derive(Debug, Clone, Copy)]
enum Effect {
    /// Adds this to one reading.
    Spike(f64),
    /// Adds this to every reading.
    Shift(f64),
    /// Adds this much per millisecond since the start, then snaps back (a recalibration).
    Drift(f64),
    /// Repeats the value of the first affected reading, per signal (filled in then).
    Stuck([Option<f64>; 4]),
    /// Multiplies every reading by this.
    Burst(f64),
}

/// A running fault on one signal of an entity.
#[derive(Debug, Clone)]
struct Fault {
    kind: Kind,
    /// Index of the signal it affects, or `None` for all of the entity's signals.
    signal: Option<usize>,
    metric: Option<&'static str>,
    start_ms: i64,
    until_ms: i64,
    last_ms: i64,
    effect: Effect,
}

impl Fault {
    fn applies_to(&self, signal: usize) -> bool {
        self.signal.is_none_or(|s| s == signal)
    }

    /// The faulty value of `signal` at `at_ms`, given its true value.
    fn apply(&mut self, signal: usize, value: f64, at_ms: i64) -> f64 {
        if !self.applies_to(signal) {
            return value;
        }
        self.last_ms = at_ms;
        match &mut self.effect {
            Effect::Spike(delta) | Effect::Shift(delta) => value + *delta,
            Effect::Drift(per_ms) => value + *per_ms * (at_ms - self.start_ms) as f64,
            Effect::Stuck(held) => *held[signal.min(3)].get_or_insert(value),
            Effect::Burst(factor) => value * *factor,
        }
    }

    fn label(&self, core: &Core, profile: &'static str) -> Label {
        core.label(profile, self.kind, self.start_ms, self.last_ms, self.metric)
    }
}

/// Ends `fault` once its time is up (after the tick's readings), labelling it.
fn close_if_over(fault: &mut Option<Fault>, core: &mut Core, emit: &mut Emit<'_>) {
    if let Some(f) = fault.as_ref().filter(|f| emit.at_ms >= f.until_ms) {
        emit.labels.push(f.label(core, emit.profile));
        core.schedule_after(emit.at_ms);
        *fault = None;
    }
}

fn finish_fault(fault: &mut Option<Fault>, core: &Core, profile: &'static str, labels: &mut Vec<Label>) {
    if let Some(f) = fault.take().filter(|f| f.last_ms >= f.start_ms) {
        labels.push(f.label(core, profile));
    }
}

/// A smooth daily cycle in [-1, 1], peaking mid-afternoon UTC.
fn day_cycle(at_ms: i64) -> f64 {
    let hours = (at_ms.rem_euclid(86_400_000)) as f64 / 3_600_000.0;
    ((hours - 9.0) / 24.0 * std::f64::consts::TAU).sin()
}

/// Environment metrics in the order they are sent, with their measurement noise.
const ENVIRONMENT_METRICS: [(&str, f64); 3] = [("temperature", 0.15), ("humidity", 0.6), ("pressure", 0.3)];

/// An environment station: temperature, humidity and pressure, one message each per tick.
pub struct Environment {
    core: Core,
    temperature_mean: f64,
    temperature_swing: f64,
    humidity_mean: f64,
    /// The weather: pressure wanders slowly around its mean.
    pressure_mean: f64,
    pressure_offset: f64,
    fault: Option<Fault>,
}

impl Environment {
    pub(super) fn new(mut core: Core) -> Environment {
        Environment {
            temperature_mean: core.uniform(18.0, 26.0),
            temperature_swing: core.uniform(2.0, 4.0),
            humidity_mean: core.uniform(38.0, 60.0),
            pressure_mean: core.uniform(1005.0, 1020.0),
            pressure_offset: 0.0,
            fault: None,
            core,
        }
    }

    fn start_fault(&mut self, at_ms: i64) {
        let signal = self.core.rng_index(ENVIRONMENT_METRICS.len());
        let (metric, noise) = ENVIRONMENT_METRICS[signal];
        let sign = self.core.sign();
        let core = &mut self.core;
        let (kind, duration_ms, effect) = match core.rng_index(4) {
            0 => (SPIKE, 0, Effect::Spike(sign * core.uniform(8.0, 14.0) * noise)),
            1 => {
                (LEVEL_SHIFT, minutes(core.uniform(20.0, 90.0)), Effect::Shift(sign * core.uniform(8.0, 12.0) * noise))
            }
            2 => {
                let duration = minutes(core.uniform(60.0, 180.0));
                let total = sign * core.uniform(10.0, 16.0) * noise;
                (DRIFT, duration, Effect::Drift(total / duration as f64))
            }
            _ => (STUCK, minutes(core.uniform(10.0, 60.0)), Effect::Stuck([None; 4])),
        };
        let until_ms = at_ms + duration_ms;
        self.fault = Some(Fault {
            kind,
            signal: Some(signal),
            metric: Some(metric),
            start_ms: at_ms,
            until_ms,
            last_ms: at_ms - 1,
            effect,
        });
    }
}

fn minutes(m: f64) -> i64 {
    (m * 60_000.0) as i64
}

impl EntityModel for Environment {
    fn emit(&mut self, emit: &mut Emit<'_>) {
        let at_ms = emit.at_ms;
        if self.fault.is_none() && self.core.anomaly_due(at_ms) {
            self.start_fault(at_ms);
        }
        let cycle = day_cycle(at_ms);
        self.pressure_offset = (self.pressure_offset * 0.9995 + self.core.gauss(0.0, 0.02)).clamp(-12.0, 12.0);
        let temperature = self.temperature_mean + self.temperature_swing * cycle;
        let truth = [
            temperature,
            (self.humidity_mean - 1.5 * self.temperature_swing * cycle).clamp(5.0, 95.0),
            self.pressure_mean + self.pressure_offset,
        ];
        for (signal, (metric, noise)) in ENVIRONMENT_METRICS.iter().enumerate() {
            let mut value = truth[signal] + self.core.gauss(0.0, *noise);
            if let Some(fault) = &mut self.fault {
                value = fault.apply(signal, value, at_ms);
            }
            let json = emit.begin();
            json.str("sensor_id", &self.core.id);
            json.str("metric_type", metric);
            json.fixed("value", value, 2);
            json.timestamp("timestamp", at_ms);
            emit.send(&mut self.core);
        }
        close_if_over(&mut self.fault, &mut self.core, emit);
    }

    fn finish(&mut self, profile: &'static str, labels: &mut Vec<Label>) {
        finish_fault(&mut self.fault, &self.core, profile, labels);
    }
}

/// A machine's vibration sensor: RMS velocity per axis and the bearing temperature.
pub struct Vibration {
    core: Core,
    machine: String,
    /// RMS velocity at full load, mm/s, per axis.
    level: [f64; 3],
    load: f64,
    load_target: f64,
    next_load_change_ms: Option<i64>,
    temperature: f64,
    /// When the simulation first saw it: wear counts from here.
    installed_ms: Option<i64>,
    fault: Option<Fault>,
}

/// Relative wear per day: vibration creeps up as bearings wear.
const WEAR_PER_DAY: f64 = 0.02;
const AXES: [&str; 3] = ["rms_velocity_x", "rms_velocity_y", "rms_velocity_z"];

impl Vibration {
    pub(super) fn new(mut core: Core, number: usize) -> Vibration {
        let base = core.uniform(1.5, 3.0);
        let level = [base, base * core.uniform(0.8, 1.1), base * core.uniform(0.6, 0.9)];
        let load = *core.pick(&[0.6, 0.8, 1.0]);
        Vibration {
            machine: format!("press-{number:02}"),
            level,
            load,
            load_target: load,
            next_load_change_ms: None,
            temperature: 35.0 + 10.0 * load,
            installed_ms: None,
            fault: None,
            core,
        }
    }

    fn start_fault(&mut self, at_ms: i64) {
        let core = &mut self.core;
        let axis = core.rng_index(3);
        let (kind, signal, duration_ms, effect) = match core.rng_index(3) {
            0 => (
                VIBRATION_BURST,
                None,
                (core.uniform(5.0, 40.0) * 1000.0) as i64,
                Effect::Burst(core.uniform(3.0, 6.0)),
            ),
            1 => (SPIKE, Some(axis), 0, Effect::Spike(self.level[axis] * core.uniform(3.0, 6.0))),
            _ => (STUCK, None, minutes(core.uniform(5.0, 20.0)), Effect::Stuck([None; 4])),
        };
        let metric = signal.map(|s| AXES[s]);
        self.fault = Some(Fault {
            kind,
            signal,
            metric,
            start_ms: at_ms,
            until_ms: at_ms + duration_ms,
            last_ms: at_ms - 1,
            effect,
        });
    }
}

impl EntityModel for Vibration {
    fn emit(&mut self, emit: &mut Emit<'_>) {
        let at_ms = emit.at_ms;
        let next_change = *self.next_load_change_ms.get_or_insert(at_ms + minutes(self.core.uniform(20.0, 120.0)));
        if at_ms >= next_change {
            self.load_target = *self.core.pick(&[0.6, 0.8, 1.0]);
            self.next_load_change_ms = Some(at_ms + minutes(self.core.uniform(20.0, 120.0)));
        }
        // Machines ramp between loads over a minute or so rather than jumping.
        self.load += (self.load_target - self.load).clamp(-0.005 * emit.dt_s, 0.005 * emit.dt_s);
        let temperature_target = 35.0 + 10.0 * self.load;
        self.temperature += (temperature_target - self.temperature) * (emit.dt_s / 600.0).min(1.0);
        if self.fault.is_none() && self.core.anomaly_due(at_ms) {
            self.start_fault(at_ms);
        }
        let installed_ms = *self.installed_ms.get_or_insert(at_ms);
        let wear = 1.0 + WEAR_PER_DAY * (at_ms - installed_ms) as f64 / 86_400_000.0;
        let json = emit.begin();
        json.str("sensor_id", &self.core.id);
        json.str("machine_id", &self.machine);
        json.timestamp("timestamp", at_ms);
        for (signal, axis) in AXES.iter().enumerate() {
            let truth = self.level[signal] * (0.55 + 0.45 * self.load) * wear;
            let mut value = (truth * (1.0 + self.core.gauss(0.0, 0.03))).max(0.0);
            if let Some(fault) = &mut self.fault {
                value = fault.apply(signal, value, at_ms).max(0.0);
            }
            emit.json.fixed(axis, value, 3);
        }
        let mut temperature = self.temperature + self.core.gauss(0.0, 0.2);
        if let Some(fault) = self.fault.as_mut().filter(|f| matches!(f.effect, Effect::Stuck(_))) {
            // A stuck sensor repeats its whole last message.
            temperature = fault.apply(3, temperature, at_ms);
        }
        emit.json.fixed("temperature", temperature, 2);
        emit.send(&mut self.core);
        close_if_over(&mut self.fault, &mut self.core, emit);
    }

    fn finish(&mut self, profile: &'static str, labels: &mut Vec<Label>) {
        finish_fault(&mut self.fault, &self.core, profile, labels);
    }
}
