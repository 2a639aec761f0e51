//! Detectors: plain synchronous structs that watch readings and report anomalies.
//!
//! Each keeps its own state per entity; the pipeline shards entities across workers so one
//! entity's state lives in one detector instance and sees its readings in order.

pub mod zscore;

use crate::model::{Anomaly, Enrichment, Reading};
use crate::profile::Profile;

/// What a detector sees of one reading.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub profile: &'a Profile,
    pub reading: &'a Reading,
    pub enrichment: &'a Enrichment,
}

/// A streaming detector.
pub trait Detector: Send {
    /// The name anomalies carry, e.g. `zscore`.
    fn name(&self) -> &'static str;
    /// Takes one reading into the detector's state and appends any anomalies it raises.
    fn observe(&mut self, observation: Observation<'_>, anomalies: &mut Vec<Anomaly>);
}

/// The detectors one pipeline worker runs, in order.
#[derive(Default)]
pub struct DetectorSet {
    detectors: Vec<Box<dyn Detector>>,
}

impl std::fmt::Debug for DetectorSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.detectors.iter().map(|d| d.name())).finish()
    }
}

impl DetectorSet {
    /// Every detector teleguard ships, each configured per profile.
    pub fn standard() -> Self {
        DetectorSet { detectors: vec![Box::new(zscore::ZScoreDetector::default())] }
    }

    pub fn observe(&mut self, observation: Observation<'_>, anomalies: &mut Vec<Anomaly>) {
        for detector in &mut self.detectors {
            detector.observe(observation, anomalies);
        }
    }
}
