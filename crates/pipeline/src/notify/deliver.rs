//! The delivery loop of one notification route, and the escalation timer.
//!
//! A route reads the alert events after its cursor, posts each one it wants until its endpoint
//! answers 2xx (retrying with capped exponential backoff), and commits its cursor after each
//! delivery, so a restart resumes with the first event not confirmed: at least once, and a
//! confirmed event is not sent again. A route configured for the first time starts at the
//! newest event, not at the store's history.

use super::{Endpoint, Route};
use crate::metrics::Metrics;
use crate::store::Reader;
use crate::store::alert_events::{self, AlertEventRecord};
use crate::store::writer::StoreWriter;
use std::sync::Arc;
use std::time::Duration;
use teleguard_core::time::now_millis;
use tokio::sync::watch;

/// Events read per look at the store.
const EVENTS_PER_READ: usize = 100;
/// How often a route that is caught up looks for new events.
const POLL: Duration = Duration::from_millis(250);
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a route needs from the pipeline.
#[derive(Debug, Clone)]
pub struct Context {
    pub reader: Arc<Reader>,
    pub store: StoreWriter,
    pub metrics: Arc<Metrics>,
    pub client: reqwest::Client,
}

impl Context {
    /// An HTTP client for the routes: rustls with the system's root certificates.
    pub fn client() -> Result<reqwest::Client, String> {
        reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("teleguard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot make the notification HTTP client: {e}"))
    }
}

/// Runs `route` until `shutdown` turns true.
pub async fn run(route: Route, context: Context, mut shutdown: watch::Receiver<bool>) {
    let name = route.name.clone();
    let mut cursor = loop {
        let named = name.clone();
        let start = context.reader.run(move |c| Ok((alert_events::cursor(c, &named)?, alert_events::latest(c)?))).await;
        // A new route starts at the newest event, recorded at once so that a restart resumes
        // from there instead of skipping what arrived meanwhile.
        let start = match start {
            Ok((Some(cursor), _)) => Ok(cursor),
            Ok((None, latest)) => context.store.advance_notification_cursor(&name, latest).await.map(|()| latest),
            Err(e) => Err(e),
        };
        match start {
            Ok(cursor) => break cursor,
            Err(e) => {
                tracing::error!("notifications {name}: cannot read its cursor: {e}; retrying");
                if sleep_or_stop(&mut shutdown, RETRY_MAX).await {
                    return;
                }
            }
        }
    };
    tracing::info!("notifications {name}: delivering alert events after {cursor}");
    loop {
        let events = context.reader.run(move |c| alert_events::after(c, cursor, EVENTS_PER_READ)).await;
        let events = match events {
            Ok(events) => events,
            Err(e) => {
                tracing::error!("notifications {name}: cannot read alert events: {e}");
                Vec::new()
            }
        };
        if events.is_empty() {
            if sleep_or_stop(&mut shutdown, POLL).await {
                return;
            }
            continue;
        }
        let mut skipped_to = None;
        for event in events {
            if !route.wants(&event) {
                context.metrics.notification(&name, "filtered");
                skipped_to = Some(event.event_id);
                cursor = event.event_id;
                continue;
            }
            if !deliver(&route, &context, &event, &mut shutdown).await {
                return;
            }
            skipped_to = None;
            cursor = event.event_id;
            while let Err(e) = context.store.advance_notification_cursor(&name, cursor).await {
                tracing::error!("notifications {name}: delivered event {cursor} but cannot record it: {e}");
                if sleep_or_stop(&mut shutdown, RETRY_MIN).await {
                    return;
                }
            }
        }
        // Events the route does not want are passed in one write.
        if let Some(through) = skipped_to
            && let Err(e) = context.store.advance_notification_cursor(&name, through).await
        {
            tracing::warn!("notifications {name}: cannot record the skipped events through {through}: {e}");
        }
    }
}

/// Posts `event` until the endpoint takes it; false if the route was stopped meanwhile.
async fn deliver(
    route: &Route,
    context: &Context,
    event: &AlertEventRecord,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let body = serde_json::to_vec(&route.payload(event)).expect("a JSON value serialises");
    let mut wait = RETRY_MIN;
    let mut failures = 0_u32;
    loop {
        let request = match &route.endpoint {
            Endpoint::Slack { webhook_url } => context.client.post(webhook_url),
            Endpoint::Webhook { url, secret } => {
                let request = context.client.post(url).header("X-Teleguard-Event", &event.event);
                match secret {
                    Some(secret) => request.header("X-Teleguard-Signature", super::signature(secret, &body)),
                    None => request,
                }
            }
        };
        let outcome = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Teleguard-Event-Id", event.event_id.to_string())
            .body(body.clone())
            .send()
            .await;
        let failure = match outcome {
            Ok(response) if response.status().is_success() => {
                context.metrics.notification(&route.name, "delivered");
                if failures > 0 {
                    tracing::info!("notifications {}: endpoint back; event {} delivered", route.name, event.event_id);
                }
                return true;
            }
            Ok(response) => format!("the endpoint answered {}", response.status()),
            Err(e) => format!("{e}"),
        };
        context.metrics.notification(&route.name, "failed");
        failures += 1;
        if failures == 1 || failures.is_power_of_two() {
            tracing::warn!(
                "notifications {}: cannot deliver alert event {} ({failure}); retrying (attempt {failures}, next in {wait:?})",
                route.name,
                event.event_id
            );
        }
        if sleep_or_stop(shutdown, wait).await {
            return false;
        }
        wait = (wait * 2).min(RETRY_MAX);
    }
}

/// Raises the severity of alerts open and unacknowledged for `after` (checked every tenth of
/// it, at most once a minute), until `shutdown`.
pub async fn escalate(store: StoreWriter, after: Duration, mut shutdown: watch::Receiver<bool>) {
    let every = (after / 10).clamp(Duration::from_millis(100), Duration::from_secs(60));
    loop {
        if sleep_or_stop(&mut shutdown, every).await {
            return;
        }
        if store.escalate(now_millis(), after.as_millis() as i64).await.is_err() {
            return;
        }
    }
}

/// Sleeps for `wait`; true if `shutdown` turned true first.
async fn sleep_or_stop(shutdown: &mut watch::Receiver<bool>, wait: Duration) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = shutdown.wait_for(|stop| *stop) => true,
    };
    stopped || *shutdown.borrow()
}
