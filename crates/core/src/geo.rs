//! Geofences in an R-tree with point-in-zone lookup, and great-circle distance.

use crate::model::GeoPoint;
use ::geo::{BoundingRect, Intersects, MultiPolygon, Point};
use rstar::RTree;
use rstar::primitives::{GeomWithData, Rectangle};
use std::sync::Arc;

/// The zones bundled with teleguard (`data/geofences.geojson`): eight around the San Francisco Bay.
pub const BUNDLED_GEOFENCES: &str = include_str!("../../../data/geofences.geojson");

/// Mean Earth radius in kilometres, as used by the haversine formula.
pub const EARTH_RADIUS_KM: f64 = 6371.0088;

/// One named zone, e.g. a `Warehouse` or a `Restricted Area`.
#[derive(Debug, Clone)]
pub struct Zone {
    pub zone_id: String,
    pub name: Arc<str>,
    pub kind: String,
    pub shape: MultiPolygon<f64>,
}

/// Why a geofence file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum GeofenceError {
    #[error("geofences are not a GeoJSON FeatureCollection: {0}")]
    Parse(String),
    #[error("geofence feature #{index}: {message}")]
    Feature { index: usize, message: String },
}

type Entry = GeomWithData<Rectangle<[f64; 2]>, usize>;

/// All zones, indexed by bounding box for fast point lookup.
#[derive(Debug, Default)]
pub struct GeofenceIndex {
    zones: Vec<Zone>,
    tree: RTree<Entry>,
}

impl GeofenceIndex {
    /// Loads a GeoJSON FeatureCollection whose features are (multi)polygons with a `name`
    /// property (the zone name) and optional `zone_id` and `kind` properties.
    pub fn from_geojson(text: &str) -> Result<Self, GeofenceError> {
        let collection: geojson::FeatureCollection =
            serde_json::from_str(text).map_err(|e| GeofenceError::Parse(e.to_string()))?;
        let mut zones = Vec::with_capacity(collection.features.len());
        for (index, feature) in collection.features.iter().enumerate() {
            let fail = |message: String| GeofenceError::Feature { index, message };
            let name = match feature.property("name") {
                Some(serde_json::Value::String(name)) if !name.is_empty() => name.clone(),
                _ => return Err(fail("needs a non-empty string property `name`".into())),
            };
            let text_property = |key: &str| feature.property(key).and_then(|v| v.as_str()).unwrap_or("").to_string();
            let geometry = feature.geometry.as_ref().ok_or_else(|| fail(format!("zone {name:?} has no geometry")))?;
            let shape = match ::geo::Geometry::<f64>::try_from(geometry) {
                Ok(::geo::Geometry::Polygon(p)) => MultiPolygon::new(vec![p]),
                Ok(::geo::Geometry::MultiPolygon(m)) => m,
                Ok(_) => {
                    return Err(fail(format!("zone {name:?} must be a Polygon or MultiPolygon")));
                }
                Err(e) => return Err(fail(format!("zone {name:?}: {e}"))),
            };
            let zone_id = match text_property("zone_id") {
                id if id.is_empty() => format!("zone-{index}"),
                id => id,
            };
            zones.push(Zone { zone_id, name: name.into(), kind: text_property("kind"), shape });
        }
        Ok(Self::new(zones))
    }

    pub fn new(zones: Vec<Zone>) -> Self {
        let entries = zones
            .iter()
            .enumerate()
            .filter_map(|(index, zone)| {
                let rect = zone.shape.bounding_rect()?;
                let bounds = Rectangle::from_corners([rect.min().x, rect.min().y], [rect.max().x, rect.max().y]);
                Some(GeomWithData::new(bounds, index))
            })
            .collect();
        GeofenceIndex { zones, tree: RTree::bulk_load(entries) }
    }

    /// The first zone (in file order) that contains or touches the point.
    pub fn zone_at(&self, at: GeoPoint) -> Option<&Zone> {
        let point = Point::new(at.lon, at.lat);
        self.tree
            .locate_all_at_point(&[at.lon, at.lat])
            .map(|entry| entry.data)
            .filter(|&index| self.zones[index].shape.intersects(&point))
            .min()
            .map(|index| &self.zones[index])
    }

    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }
}

/// Great-circle distance between two points, in kilometres.
pub fn haversine_km(a: GeoPoint, b: GeoPoint) -> f64 {
    let (lat1, lat2) = (a.lat.to_radians(), b.lat.to_radians());
    let d_lat = lat2 - lat1;
    let d_lon = (b.lon - a.lon).to_radians();
    let h = (d_lat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (d_lon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_SQUARES: &str = r#"{"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "Warehouse", "zone_id": "W1"},
         "geometry": {"type": "Polygon", "coordinates": [[[0,0],[1,0],[1,1],[0,1],[0,0]]]}},
        {"type": "Feature", "properties": {"name": "Restricted Area"},
         "geometry": {"type": "Polygon", "coordinates": [[[2,2],[3,2],[3,3],[2,3],[2,2]]]}}
    ]}"#;

    #[test]
    fn finds_the_zone_containing_a_point() {
        let index = GeofenceIndex::from_geojson(TWO_SQUARES).unwrap();
        assert_eq!(&*index.zone_at(GeoPoint { lat: 0.5, lon: 0.5 }).unwrap().name, "Warehouse");
        assert_eq!(index.zone_at(GeoPoint { lat: 2.5, lon: 2.5 }).unwrap().zone_id, "zone-1");
        assert!(index.zone_at(GeoPoint { lat: 1.5, lon: 1.5 }).is_none());
        assert!(index.zone_at(GeoPoint { lat: 0.5, lon: 1.0 }).is_some(), "the boundary belongs to the zone");
    }

    #[test]
    fn bad_features_are_reported_by_position() {
        let err = GeofenceIndex::from_geojson(
            r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{},"geometry":null}]}"#,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "geofence feature #0: needs a non-empty string property `name`");
        assert!(GeofenceIndex::from_geojson("[]").is_err());
    }

    #[test]
    fn haversine_matches_a_known_distance() {
        // San Francisco to Los Angeles city halls: about 559 km.
        let d = haversine_km(GeoPoint { lat: 37.7793, lon: -122.4193 }, GeoPoint { lat: 34.0537, lon: -118.2428 });
        assert!((d - 559.0).abs() < 2.0, "{d}");
    }
}
