//! Our isolation forest ranks readings as scikit-learn's `IsolationForest.score_samples` does:
//! Spearman rank correlation of at least 0.95 on the same training and test data.
//!
//! Needs a Python with scikit-learn: `TELEGUARD_PYTHON` (set by `scripts/test`, which makes a
//! virtual environment), else `python3`.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::process::Command;
use teleguard_core::detect::isolation_forest::IsolationForest;

fn gauss(rng: &mut SmallRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Drone-like rows: altitude, velocity, acceleration x/y/z, battery, signal. Each row's noise
/// is scaled by `spread` drawn from 1 to `max_spread`, so rows range from typical to unusual;
/// the first `outliers` are also pushed off in one feature.
fn drone_rows(rng: &mut SmallRng, n: usize, outliers: usize, max_spread: f64) -> Vec<Vec<f64>> {
    (0..n)
        .map(|i| {
            let spread = 1.0 + rng.random::<f64>() * (max_spread - 1.0);
            let mut row = vec![
                120.0 + 2.0 * spread * gauss(rng),
                12.0 + 0.8 * spread * gauss(rng),
                0.2 * spread * gauss(rng),
                0.2 * spread * gauss(rng),
                0.1 * spread * gauss(rng),
                85.0 + 5.0 * spread * gauss(rng),
                -67.0 + 1.5 * spread * gauss(rng),
            ];
            if i < outliers {
                let feature = i % 7;
                row[feature] += [15.0, 6.0, 2.0, -2.0, 1.0, -45.0, -12.0][feature] * (1.0 + rng.random::<f64>());
            }
            row
        })
        .collect()
}

fn write_csv(path: &std::path::Path, rows: &[Vec<f64>]) {
    let mut file = std::fs::File::create(path).unwrap();
    for row in rows {
        let cells: Vec<String> = row.iter().map(|x| format!("{x:?}")).collect();
        writeln!(file, "{}", cells.join(",")).unwrap();
    }
}

fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start;
        while end + 1 < order.len() && values[order[end + 1]] == values[order[start]] {
            end += 1;
        }
        let average = (start + end) as f64 / 2.0;
        for &index in &order[start..=end] {
            ranks[index] = average;
        }
        start = end + 1;
    }
    ranks
}

fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

#[test]
fn scores_rank_like_scikit_learn() {
    let python = std::env::var("TELEGUARD_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python).args(["-c", "import sklearn"]).status();
    assert!(
        probe.is_ok_and(|s| s.success()),
        "{python} cannot import scikit-learn: run scripts/test (it makes a virtual environment) or set TELEGUARD_PYTHON"
    );
    let mut rng = SmallRng::seed_from_u64(2024);
    let train = drone_rows(&mut rng, 200, 10, 1.0);
    let test = drone_rows(&mut rng, 400, 40, 3.0);
    let dir = tempfile::tempdir().unwrap();
    let (train_csv, test_csv) = (dir.path().join("train.csv"), dir.path().join("test.csv"));
    write_csv(&train_csv, &train);
    write_csv(&test_csv, &test);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/sklearn_scores.py");
    let output = Command::new(&python).arg(script).arg(&train_csv).arg(&test_csv).output().unwrap();
    assert!(output.status.success(), "scikit-learn failed: {}", String::from_utf8_lossy(&output.stderr));
    let sklearn: Vec<f64> =
        String::from_utf8(output.stdout).unwrap().lines().map(|l| -l.parse::<f64>().unwrap()).collect();
    assert_eq!(sklearn.len(), test.len());

    let forest = IsolationForest::fit(&train, 100, 0.05, 0);
    let ours: Vec<f64> = test.iter().map(|row| forest.score(row)).collect();
    let rho = spearman(&ours, &sklearn);
    let other_seed = IsolationForest::fit(&train, 100, 0.05, 1);
    let ours_again: Vec<f64> = test.iter().map(|row| other_seed.score(row)).collect();
    eprintln!(
        "Spearman rank correlation with scikit-learn: {rho:.4} (ours with another seed: {:.4})",
        spearman(&ours, &ours_again)
    );
    assert!(rho >= 0.95, "Spearman {rho:.4} < 0.95");

    // Both flag the planted outliers far more often than the rest.
    let flagged = |scores: &[f64], threshold: f64| scores.iter().take(40).filter(|s| **s > threshold).count();
    assert!(flagged(&ours, forest.threshold) >= 30, "ours flags {} of 40 outliers", flagged(&ours, forest.threshold));
}
