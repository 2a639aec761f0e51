use teleguard_core::simulate::{SIMULATED_PROFILES, SimMessage, SimSettings, Simulator};
#[test]
fn dump() {
    let mut out = String::new();
    for seed in [7u64, 8, 9] {
        for profiles in [&SIMULATED_PROFILES[..], &["vehicle"][..]] {
            let settings = SimSettings::new(profiles, seed, 1_725_408_000_000);
            let mut sim = Simulator::new(&settings).unwrap();
            let mut msgs: Vec<SimMessage> = Vec::new();
            sim.emit_until(1_725_408_000_000 + 24 * 3_600_000 - 1, &mut msgs);
            sim.finish();
            let mut labels: Vec<String> = sim
                .take_labels()
                .into_iter()
                .filter(|l| l.kind != "fleet_spoof" && l.kind != "clock_jump")
                .map(|l| format!("{} {} {} {} {}", l.kind, l.profile, l.entity, l.start_ms, l.end_ms))
                .collect();
            labels.sort();
            out.push_str(&format!(
                "seed {seed} {:?} messages {} labels {}\n",
                profiles.len(),
                msgs.len(),
                labels.len()
            ));
            for l in labels {
                out.push_str(&l);
                out.push('\n');
            }
        }
    }
    std::fs::write(std::env::var("AB_OUT").unwrap(), out).unwrap();
}
