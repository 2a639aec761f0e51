//! Alert notifications: Slack incoming webhooks and generic JSON webhooks, each a route that
//! follows the store's alert events from its own cursor and tells its endpoint at least once.
//!
//! - [`RawSlackRoute`] / [`RawWebhookRoute`]: the `[[alerts.slack]]` / `[[alerts.webhook]]`
//!   config tables; [`Route`]: a validated one with its filter.
//! - [`slack_payload`] / [`webhook_payload`]: what is sent (Block Kit like reference 003's; a
//!   JSON document, HMAC-SHA256-signed when the route has a secret).
//! - [`deliver`]: the loop per route: read the next events, post each until the endpoint
//!   answers 2xx (capped exponential backoff meanwhile), then commit the cursor. A failing
//!   endpoint holds back only its own route; the pipeline never waits for a notification.

pub mod deliver;

use crate::store::alert_events::AlertEventRecord;
use serde::Deserialize;
use serde_json::{Value, json};
use teleguard_core::time::format_millis;

/// `[[alerts.slack]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSlackRoute {
    /// Names the route in metrics, logs and its stored cursor; `slack-N` by default.
    pub name: Option<String>,
    pub webhook_url: String,
    /// `warning` or `minor` (everything, the default), `major` or `critical`.
    pub min_severity: Option<String>,
    /// Only these profiles (all by default).
    #[serde(default)]
    pub profiles: Vec<String>,
    /// Only these detectors (all by default).
    #[serde(default)]
    pub detectors: Vec<String>,
}

/// `[[alerts.webhook]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhookRoute {
    /// Names the route in metrics, logs and its stored cursor; `webhook-N` by default.
    pub name: Option<String>,
    pub url: String,
    /// With a secret, each request carries `X-Teleguard-Signature: sha256=<hex HMAC of the body>`.
    pub secret: Option<String>,
    /// As for Slack routes.
    pub min_severity: Option<String>,
    #[serde(default)]
    pub profiles: Vec<String>,
    #[serde(default)]
    pub detectors: Vec<String>,
}

/// Where a route sends.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Slack { webhook_url: String },
    Webhook { url: String, secret: Option<Vec<u8>> },
}

/// A validated notification route.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub endpoint: Endpoint,
    /// The lowest severity sent: 1 minor, 2 major, 3 critical.
    pub min_severity: u8,
    pub profiles: Vec<String>,
    pub detectors: Vec<String>,
}

/// A severity's rank; unknown text ranks lowest.
pub fn severity_rank(severity: &str) -> u8 {
    match severity {
        "critical" => 3,
        "major" => 2,
        _ => 1,
    }
}

impl Route {
    /// Validates the config's routes; problems go to `errors`, naming the route.
    pub fn from_config(
        slack: Vec<RawSlackRoute>,
        webhook: Vec<RawWebhookRoute>,
        errors: &mut Vec<String>,
    ) -> Vec<Route> {
        let mut routes = Vec::new();
        for (index, raw) in slack.into_iter().enumerate() {
            let name = raw.name.unwrap_or_else(|| format!("slack-{}", index + 1));
            check_url(&name, "webhook_url", &raw.webhook_url, errors);
            let endpoint = Endpoint::Slack { webhook_url: raw.webhook_url };
            routes.extend(Route::filtered(name, endpoint, raw.min_severity, raw.profiles, raw.detectors, errors));
        }
        for (index, raw) in webhook.into_iter().enumerate() {
            let name = raw.name.unwrap_or_else(|| format!("webhook-{}", index + 1));
            check_url(&name, "url", &raw.url, errors);
            if raw.secret.as_deref() == Some("") {
                errors.push(format!("alerts route {name:?}: secret is empty; remove it or set one"));
            }
            let endpoint = Endpoint::Webhook { url: raw.url, secret: raw.secret.map(String::into_bytes) };
            routes.extend(Route::filtered(name, endpoint, raw.min_severity, raw.profiles, raw.detectors, errors));
        }
        let mut names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
        names.sort_unstable();
        for pair in names.windows(2).filter(|w| w[0] == w[1]) {
            errors.push(format!("alerts: two routes are named {:?}; give each its own `name`", pair[0]));
        }
        routes
    }

    fn filtered(
        name: String,
        endpoint: Endpoint,
        min_severity: Option<String>,
        profiles: Vec<String>,
        detectors: Vec<String>,
        errors: &mut Vec<String>,
    ) -> Option<Route> {
        let min_severity = match min_severity.as_deref().unwrap_or("minor") {
            "warning" | "minor" => 1,
            "major" => 2,
            "critical" => 3,
            other => {
                errors.push(format!(
                    "alerts route {name:?}: min_severity {other:?} is not a severity; use warning, minor, major or critical"
                ));
                return None;
            }
        };
        Some(Route { name, endpoint, min_severity, profiles, detectors })
    }

    /// Whether this route is told about `event`.
    pub fn wants(&self, event: &AlertEventRecord) -> bool {
        severity_rank(&event.severity) >= self.min_severity
            && (self.profiles.is_empty() || self.profiles.contains(&event.profile))
            && (self.detectors.is_empty() || self.detectors.contains(&event.detector))
    }

    /// The request body for `event`.
    pub fn payload(&self, event: &AlertEventRecord) -> Value {
        match self.endpoint {
            Endpoint::Slack { .. } => slack_payload(event),
            Endpoint::Webhook { .. } => webhook_payload(event),
        }
    }
}

fn check_url(route: &str, key: &str, url: &str, errors: &mut Vec<String>) {
    if !(url.starts_with("http://") || url.starts_with("https://")) || reqwest::Url::parse(url).is_err() {
        errors.push(format!("alerts route {route:?}: {key} {url:?} is not an http:// or https:// URL"));
    }
}

/// Text from a device (ids, reasons) made safe for Slack's mrkdwn: `&`, `<` and `>` escaped,
/// so an entity id cannot mention a channel or forge a link.
pub fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn number(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_string(), |v| format!("{v:.4}").trim_end_matches('0').trim_end_matches('.').to_string())
}

/// A Slack Block Kit message: a header, then fields for entity, profile, detector, metric,
/// value, score and time, and the reason.
pub fn slack_payload(event: &AlertEventRecord) -> Value {
    let headline = format!(
        "{} {} alert {}: {} on {}",
        match event.severity.as_str() {
            "critical" => "🚨",
            "major" => "⚠️",
            _ => "🔔",
        },
        event.severity,
        event.event,
        event.detector,
        event.entity
    );
    let field =
        |name: &str, value: &str| json!({"type": "mrkdwn", "text": format!("*{name}*\n{}", slack_escape(value))});
    let score = match (event.score, event.threshold) {
        (Some(score), Some(threshold)) => format!("{} (threshold {})", number(Some(score)), number(Some(threshold))),
        _ => "–".to_string(),
    };
    json!({
        "text": slack_escape(&headline),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": headline.chars().take(150).collect::<String>()}},
            {"type": "section", "fields": [
                field("Entity", &event.entity),
                field("Profile", &event.profile),
                field("Detector", &event.detector),
                field("Metric", event.metric.as_deref().unwrap_or("–")),
                field("Value", &number(event.value)),
                field("Score", &score),
                field("Time", &format_millis(event.last_event_ms)),
                field("Alert", &format!("#{} ({} anomalies, {})", event.alert_id, event.anomalies, event.state)),
            ]},
            {"type": "section", "text": {"type": "mrkdwn", "text": format!("*Reason*\n{}", slack_escape(&event.reason))}},
        ]
    })
}

/// The generic webhook's JSON document: the event and the alert as the API shows them.
pub fn webhook_payload(event: &AlertEventRecord) -> Value {
    json!({
        "event_id": event.event_id,
        "event": event.event,
        "at": format_millis(event.at_ms),
        "alert": {
            "id": event.alert_id,
            "profile": event.profile,
            "entity": event.entity,
            "detector": event.detector,
            "severity": event.severity,
            "state": event.state,
            "reason": event.reason,
            "anomalies": event.anomalies,
            "first_event": format_millis(event.first_event_ms),
            "last_event": format_millis(event.last_event_ms),
        },
        "anomaly": {
            "metric": event.metric,
            "value": event.value,
            "anomaly_score": event.score,
            "threshold": event.threshold,
        },
    })
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, body);
    let mut hex = String::with_capacity(7 + 64);
    hex.push_str("sha256=");
    for byte in tag.as_ref() {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(severity: &str, detector: &str) -> AlertEventRecord {
        AlertEventRecord {
            event_id: 7,
            event: "opened".into(),
            severity: severity.into(),
            at_ms: 1_000,
            alert_id: 3,
            profile: "vehicle".into(),
            entity: "<!channel> V1 & co".into(),
            detector: detector.into(),
            state: "open".into(),
            reason: "jumped 80 km in 10 s <http://evil|click>".into(),
            anomalies: 2,
            first_event_ms: 1_000,
            last_event_ms: 2_000,
            metric: Some("speed".into()),
            value: Some(1500.25),
            score: Some(9.5),
            threshold: Some(1.0),
        }
    }

    fn route(min_severity: &str, profiles: &[&str], detectors: &[&str]) -> Route {
        let raw = RawWebhookRoute {
            name: None,
            url: "http://127.0.0.1:9/hook".into(),
            secret: None,
            min_severity: Some(min_severity.into()),
            profiles: profiles.iter().map(|s| s.to_string()).collect(),
            detectors: detectors.iter().map(|s| s.to_string()).collect(),
        };
        let mut errors = Vec::new();
        let routes = Route::from_config(Vec::new(), vec![raw], &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        routes.into_iter().next().unwrap()
    }

    #[test]
    fn filters_by_severity_profile_and_detector() {
        assert!(route("warning", &[], &[]).wants(&event("minor", "zscore")));
        assert!(!route("major", &[], &[]).wants(&event("minor", "zscore")));
        assert!(route("major", &[], &[]).wants(&event("critical", "zscore")));
        assert!(!route("minor", &["drone"], &[]).wants(&event("critical", "zscore")));
        assert!(route("minor", &["vehicle"], &["teleport"]).wants(&event("minor", "teleport")));
        assert!(!route("minor", &["vehicle"], &["teleport"]).wants(&event("minor", "zscore")));
    }

    #[test]
    fn bad_routes_are_named_in_the_errors() {
        let mut errors = Vec::new();
        let slack = RawSlackRoute {
            name: None,
            webhook_url: "hooks.slack.com/x".into(),
            min_severity: None,
            profiles: Vec::new(),
            detectors: Vec::new(),
        };
        let webhook = RawWebhookRoute {
            name: Some("slack-1".into()),
            url: "http://127.0.0.1/hook".into(),
            secret: Some(String::new()),
            min_severity: Some("loud".into()),
            profiles: Vec::new(),
            detectors: Vec::new(),
        };
        Route::from_config(vec![slack], vec![webhook], &mut errors);
        let all = errors.join("\n");
        assert!(all.contains("\"slack-1\": webhook_url \"hooks.slack.com/x\" is not an http"), "{all}");
        assert!(all.contains("secret is empty"), "{all}");
        assert!(all.contains("min_severity \"loud\" is not a severity"), "{all}");
    }

    #[test]
    fn slack_blocks_escape_what_devices_sent() {
        let payload = slack_payload(&event("critical", "teleport"));
        // Everything Slack reads as mrkdwn is escaped; the header is plain text, shown as sent.
        let text = format!("{} {} {}", payload["text"], payload["blocks"][1], payload["blocks"][2]);
        assert!(!text.contains("<!channel>") && !text.contains("<http://evil"), "{text}");
        assert_eq!(payload["blocks"][0]["text"]["type"], "plain_text");
        assert!(text.contains("&lt;!channel&gt; V1 &amp; co"), "{text}");
        assert_eq!(payload["blocks"][0]["type"], "header");
        let fields = payload["blocks"][1]["fields"].as_array().unwrap();
        let names: Vec<&str> = fields.iter().map(|f| f["text"].as_str().unwrap().split('\n').next().unwrap()).collect();
        assert_eq!(
            names,
            ["*Entity*", "*Profile*", "*Detector*", "*Metric*", "*Value*", "*Score*", "*Time*", "*Alert*"]
        );
        assert_eq!(fields[4]["text"], "*Value*\n1500.25");
        assert_eq!(fields[5]["text"], "*Score*\n9.5 (threshold 1)");
    }

    #[test]
    fn signatures_are_hmac_sha256_in_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
