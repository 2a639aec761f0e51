//! Fuzzes the JSON decoder and profile mapping: any bytes, as a message of any built-in profile,
//! give a reading or a rejection, never a panic; a reading's numbers are finite and in range.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;
use teleguard_core::profile::ProfileRegistry;
use teleguard_core::validate::decode_and_validate;

static PROFILES: LazyLock<ProfileRegistry> =
    LazyLock::new(|| ProfileRegistry::with_builtins(Default::default()).expect("built-in profiles load"));

fuzz_target!(|data: &[u8]| {
    let Some((&selector, message)) = data.split_first() else { return };
    let profiles: Vec<_> = PROFILES.iter().collect();
    let profile = profiles[usize::from(selector) % profiles.len()];
    if let (_, Ok(reading)) = decode_and_validate(profile, message.to_vec()) {
        assert!(!reading.entity.is_empty());
        for &(metric, value) in &reading.metrics {
            let spec = &profile.metrics[usize::from(metric)];
            assert!(value.is_finite() && value >= spec.min && value <= spec.max, "{value} for {}", spec.name);
        }
        if let Some(position) = reading.position {
            assert!(position.lat.abs() <= 90.0 && position.lon.abs() <= 180.0);
        }
    }
});
