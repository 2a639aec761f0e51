//! Enrichment: who drives a vehicle and which zone a reading is in.

use crate::geo::{GeofenceError, GeofenceIndex};
use crate::model::{Enrichment, Reading};
use crate::profile::Profile;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// One row of the `drivers` reference data (reference 000's `setup_data` step).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Driver {
    pub driver_id: String,
    pub name: String,
    pub vehicle_id: String,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Why reference data could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceDataError {
    #[error("drivers are not a JSON array of {{driver_id, name, vehicle_id}} objects: {0}")]
    Drivers(#[from] serde_json::Error),
    #[error(transparent)]
    Geofences(#[from] GeofenceError),
}

/// Parses the drivers file: a JSON array of driver objects.
pub fn parse_drivers(text: &str) -> Result<Vec<Driver>, ReferenceDataError> {
    Ok(serde_json::from_str(text)?)
}

/// Reference data the enricher consults: drivers by vehicle and the geofence index.
#[derive(Debug, Default)]
pub struct Enricher {
    driver_by_vehicle: HashMap<String, Arc<str>>,
    geofences: GeofenceIndex,
}

impl Enricher {
    pub fn new(drivers: &[Driver], geofences: GeofenceIndex) -> Self {
        let driver_by_vehicle = drivers.iter().map(|d| (d.vehicle_id.clone(), Arc::from(d.name.as_str()))).collect();
        Enricher { driver_by_vehicle, geofences }
    }

    /// The context for one reading, as its profile asks for.
    pub fn enrich(&self, profile: &Profile, reading: &Reading) -> Enrichment {
        let driver_name =
            if profile.enrich_drivers { self.driver_by_vehicle.get(&*reading.entity).cloned() } else { None };
        let current_zone = match (profile.enrich_geofences, reading.position) {
            (true, Some(at)) => self.geofences.zone_at(at).map(|zone| zone.name.clone()),
            _ => None,
        };
        Enrichment { driver_name, current_zone }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::ProfileRegistry;
    use crate::validate::validate;

    #[test]
    fn vehicle_gets_driver_and_zone_and_drone_gets_neither() {
        let drivers =
            parse_drivers(r#"[{"driver_id": "D1", "name": "Ada", "vehicle_id": "V1", "phone": "1"}]"#).unwrap();
        let zones = GeofenceIndex::from_geojson(
            r#"{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"name": "Warehouse"},
                "geometry": {"type": "Polygon", "coordinates": [[[0,0],[1,0],[1,1],[0,1],[0,0]]]}}]}"#,
        )
        .unwrap();
        let enricher = Enricher::new(&drivers, zones);
        let registry = ProfileRegistry::with_builtins(Default::default()).unwrap();
        let vehicle = registry.by_name("vehicle").unwrap();
        let reading = validate(
            vehicle,
            br#"{"vehicle_id": "V1", "timestamp": "2024-01-01T00:00:00Z", "latitude": 0.5, "longitude": 0.5, "speed": 10}"#,
        )
        .unwrap();
        let enrichment = enricher.enrich(vehicle, &reading);
        assert_eq!(enrichment.driver_name.as_deref(), Some("Ada"));
        assert_eq!(enrichment.current_zone.as_deref(), Some("Warehouse"));
        let drone = registry.by_name("drone").unwrap();
        assert_eq!(enricher.enrich(drone, &reading), Enrichment::default());
    }
}
