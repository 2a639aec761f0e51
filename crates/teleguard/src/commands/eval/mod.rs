//! `teleguard eval`: detections scored against ground truth, our simulator's labels or the
//! NAB benchmark's windows; a table per anomaly type, or JSON.

mod nab;
mod report;

use anyhow::{Context as _, bail};
use clap::Args;
use std::path::{Path, PathBuf};
use teleguard_core::eval::detections::{Detection, parse_detections};
use teleguard_core::eval::labels::LabelSet;
use teleguard_core::eval::matching::{DEFAULT_GRACE_MS, evaluate};

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("truth").required(true).args(["labels", "nab"]))]
pub struct EvalArgs {
    /// Ground truth: the labels document `teleguard simulate` writes, or NAB's
    /// `labels/combined_windows.json` (told apart by their shape).
    #[arg(long, value_name = "FILE", requires = "anomalies")]
    labels: Option<PathBuf>,
    /// What the detectors said: NDJSON from `teleguard replay` (`--all-scores` gives NAB the
    /// score of every row), or the JSON `GET /api/anomalies` answers.
    #[arg(long, value_name = "FILE")]
    anomalies: Option<PathBuf>,
    /// Seconds after a label's end during which a detection still counts for it.
    #[arg(long = "grace", value_name = "SECS", default_value_t = (DEFAULT_GRACE_MS / 1000) as u64)]
    grace_secs: u64,
    /// Run our detector over every series of the NAB benchmark in DIR (with `data/`,
    /// `labels/combined_windows.json` and `config/profiles.json`) and score it.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["labels", "anomalies"])]
    nab: Option<PathBuf>,
    /// The detector to run with `--nab`, or to score against NAB labels [default: every
    /// detector in the anomalies file; zscore with `--nab`].
    #[arg(long)]
    detector: Option<String>,
    /// TOML config for `--nab`; a `[profiles.series]` there replaces the built-in univariate
    /// profile (one metric, `value`), e.g. to tune `detectors.zscore`.
    #[arg(long, value_name = "FILE", requires = "nab")]
    config: Option<PathBuf>,
    /// With `--nab`: also write every row's score as NDJSON, the way `teleguard replay
    /// --all-scores` does, to score again later with `--labels` and `--anomalies`.
    #[arg(long, value_name = "FILE", requires = "nab")]
    scores_out: Option<PathBuf>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

pub fn eval(args: EvalArgs) -> anyhow::Result<()> {
    let grace_ms = i64::try_from(args.grace_secs.saturating_mul(1000)).context("--grace is too large")?;
    if let Some(dir) = &args.nab {
        let detector = args.detector.as_deref().unwrap_or(teleguard_core::detect::zscore::NAME);
        let options = nab::RunOptions { config: args.config.as_deref(), scores_out: args.scores_out.as_deref() };
        let evaluation = nab::run_and_score(dir, detector, grace_ms, options)?;
        return report::print(&evaluation, args.json);
    }
    let (Some(labels_path), Some(anomalies_path)) = (&args.labels, &args.anomalies) else {
        bail!("give --labels FILE and --anomalies FILE, or --nab DIR");
    };
    let detections = read_detections(anomalies_path)?;
    let evaluation = match read_truth(labels_path)? {
        Truth::Labels(labels) => {
            report::Evaluation { matching: evaluate(&labels, &detections, grace_ms), nab: Vec::new() }
        }
        Truth::NabWindows(windows) => {
            nab::score_detections(labels_path, windows, &detections, args.detector.as_deref(), grace_ms)?
        }
    };
    report::print(&evaluation, args.json)
}

/// The ground truth a labels file holds.
enum Truth {
    Labels(LabelSet),
    NabWindows(teleguard_core::eval::nab::Windows),
}

fn read_truth(path: &Path) -> anyhow::Result<Truth> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read labels file {}", path.display()))?;
    let document: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        let message = e.to_string();
        let message = message.rfind(" at line ").map_or(message.as_str(), |cut| &message[..cut]).to_string();
        anyhow::anyhow!(
            "labels file {}: line {}, column {}: {message} (expected JSON: a teleguard labels document or NAB windows)",
            path.display(),
            e.line(),
            e.column()
        )
    })?;
    if document.get("labels").is_some() {
        let labels = LabelSet::from_json(&text).with_context(|| format!("labels file {}", path.display()))?;
        return Ok(Truth::Labels(labels));
    }
    if teleguard_core::eval::nab::looks_like_windows(&document) {
        let windows = teleguard_core::eval::nab::parse_windows(&text)
            .with_context(|| format!("NAB labels file {}", path.display()))?;
        return Ok(Truth::NabWindows(windows));
    }
    bail!(
        "labels file {}: neither a teleguard labels document (an object with \"labels\") nor NAB windows \
         (an object of data file -> [[start, end], ...])",
        path.display()
    )
}

fn read_detections(path: &Path) -> anyhow::Result<Vec<Detection>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read anomalies file {}", path.display()))?;
    parse_detections(&text).map_err(|e| {
        anyhow::anyhow!(
            "anomalies file {}: {e} (expected teleguard replay NDJSON or the JSON of GET /api/anomalies)",
            path.display()
        )
    })
}
