//! Device identity: the security finding raised when a message names another entity than the
//! one its transport vouches for (an MQTT topic the broker binds to the device's certificate).
//!
//! The message itself is quarantined (`identity_mismatch`); this is the anomaly an operator
//! sees beside it, on the device that sent it, naming both ids.

use crate::model::{Anomaly, Severity, anomaly_id};

/// The detector's name on anomalies.
pub const NAME: &str = "identity";

/// The finding for one spoofed message: `vouched` (the device the transport authenticated)
/// sent a reading of `claimed` at `event_time_ms`, over `transport` (e.g. its topic).
/// Its id is stable per message, so a redelivery raises no second anomaly.
pub fn spoofed_identity(profile: &str, vouched: &str, claimed: &str, event_time_ms: i64, transport: &str) -> Anomaly {
    Anomaly {
        id: anomaly_id(profile, vouched, event_time_ms, NAME, claimed),
        detector: NAME,
        metric: None,
        value: None,
        score: 1.0,
        threshold: 1.0,
        severity: Severity::Critical,
        reason: format!(
            "device {vouched:?} sent a reading that claims to be entity {claimed:?} over {transport}; \
             the message is quarantined as identity_mismatch: check the device's certificate and firmware"
        ),
        features: Vec::new(),
        episode: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_both_ids_and_is_stable_per_message() {
        let a = spoofed_identity("drone", "d-1", "d-2", 1_000, "topic iot/telemetry/d-1");
        assert_eq!(a.detector, NAME);
        assert_eq!(a.severity, Severity::Critical);
        assert!(a.reason.contains("\"d-1\"") && a.reason.contains("\"d-2\""), "{}", a.reason);
        assert_eq!(a.id, spoofed_identity("drone", "d-1", "d-2", 1_000, "topic iot/telemetry/d-1").id);
        assert_ne!(a.id, spoofed_identity("drone", "d-1", "d-3", 1_000, "topic iot/telemetry/d-1").id);
        assert_ne!(a.id, spoofed_identity("drone", "d-1", "d-2", 1_001, "topic iot/telemetry/d-1").id);
    }
}
