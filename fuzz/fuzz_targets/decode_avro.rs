//! Fuzzes the Avro decoder: any bytes after a drone profile's single-object header give a
//! reading or a rejection, never a panic or an allocation the size of a forged length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;
use teleguard_core::profile::ProfileRegistry;
use teleguard_core::validate::decode_and_validate;

static PROFILES: LazyLock<ProfileRegistry> =
    LazyLock::new(|| ProfileRegistry::with_builtins(Default::default()).expect("built-in profiles load"));

fuzz_target!(|data: &[u8]| {
    let drone = PROFILES.by_name("drone").expect("the drone profile is built in");
    let header = drone.avro.as_ref().expect("every profile reads Avro").single_object_header();
    // Mostly well-headed messages, so the fuzzer reaches the datum decoder; sometimes raw bytes.
    let message = match data.first() {
        Some(b) if b % 8 != 0 => [&header[..], &data[1..]].concat(),
        _ => data.to_vec(),
    };
    if let (json, Ok(reading)) = decode_and_validate(drone, message) {
        assert!(serde_json_is_object(&json));
        assert!(reading.metrics.iter().all(|(_, v)| v.is_finite()));
    }
});

fn serde_json_is_object(json: &[u8]) -> bool {
    json.first() == Some(&b'{') && json.last() == Some(&b'}')
}
