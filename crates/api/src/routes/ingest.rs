//! `POST /api/ingest/{profile}`: one JSON object, a JSON array of objects, or NDJSON; or one
//! Avro message (`Content-Type: avro/binary`, or a body in Avro's single-object encoding).
//!
//! 202 when at least one message was accepted, 422 when every one was rejected; either way
//! the body gives accepted and rejected counts and an error per rejected message, and every
//! message (accepted or not) has its bronze record before the answer is sent.
//!
//! With tokens configured, a request needs a known bearer token (else 401, nothing stored).
//! A token used for a profile outside its grant gets 403 and its messages are quarantined as
//! `forbidden`; messages naming entities outside its prefix are rejected one by one as
//! `forbidden`, and the answer is 403 when they are all that kept the request from succeeding.

use crate::AppState;
use crate::auth::authenticate;
use crate::error::ApiError;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::value::RawValue;
use teleguard_pipeline::auth::TokenGrant;
use teleguard_pipeline::ingest::{Admission, Delivery, EntityGrant, IngestReport};
use teleguard_pipeline::metrics::TokenLabels;

/// Bytes of an oversized body kept in its dead-letter record.
const OVERSIZED_PREFIX_BYTES: usize = 1024;
/// Bytes of an oversized body read (and discarded) to report its size, at most.
const OVERSIZED_DRAIN_BYTES: usize = 64 * 1024 * 1024;

pub async fn ingest(
    State(state): State<AppState>,
    Path(profile): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<IngestReport>), ApiError> {
    let token = authenticate(&state.tokens, &state.metrics, &headers)?;
    let body = match read_limited(body, state.max_body_bytes).await? {
        LimitedBody::Complete(bytes) => bytes,
        LimitedBody::Oversized { prefix, seen, complete } => {
            let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).map(str::to_string);
            let size = match (complete, declared) {
                (true, _) => format!("{seen} bytes"),
                (false, Some(length)) => format!("{length} bytes"),
                (false, None) => format!("more than {seen} bytes"),
            };
            let reason = format!(
                "request body of {size} exceeds the {}-byte limit; split it into smaller requests",
                state.max_body_bytes
            );
            state.ingest.record_rejected(&profile, "http", prefix, "payload_too_large", &reason).await?;
            return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, reason));
        }
    };
    let avro = is_avro(&headers, &body);
    if let Some(token) = token.filter(|token| !token.allows_profile(&profile)) {
        return Err(forbid_profile(&state, token, &profile, avro, body).await);
    }
    let grant = match token {
        Some(TokenGrant { name, entity_prefix: Some(prefix), .. }) => {
            EntityGrant::Prefixed { token: name.clone(), prefix: prefix.clone() }
        }
        _ => EntityGrant::Any,
    };
    if avro {
        let report = submit(&state, &profile, vec![body], grant, token).await?;
        return Ok((status_of(&report), Json(report)));
    }
    let items = match split_items(&body) {
        Ok(items) => items,
        Err(reason) => {
            state.ingest.record_rejected(&profile, "http", body, "malformed_json", &reason).await?;
            if state.ingest.profiles().by_name(&profile).is_none() {
                return Err(state.ingest.unknown_profile(&profile).into());
            }
            return Err(ApiError::bad_request(reason));
        }
    };
    let report = submit(&state, &profile, items, grant, token).await?;
    Ok((status_of(&report), Json(report)))
}

/// Submits `items` within `grant`, counting the messages the token may not send.
async fn submit(
    state: &AppState,
    profile: &str,
    items: Vec<Vec<u8>>,
    grant: EntityGrant,
    token: Option<&TokenGrant>,
) -> Result<IngestReport, ApiError> {
    let admission = Admission::Within(state.busy_wait);
    let report = state.ingest.submit_granted(profile, "http", items, grant, admission).await?;
    let forbidden = report.errors.iter().filter(|e| e.reason == FORBIDDEN).count();
    if let (Some(token), true) = (token, forbidden > 0) {
        let prefix = token.entity_prefix.as_deref().unwrap_or_default();
        tracing::warn!("token {:?} sent {forbidden} message(s) of entities not starting with {prefix:?}", token.name);
        state
            .metrics
            .http_forbidden
            .get_or_create(&TokenLabels { token: token.name.to_string() })
            .inc_by(forbidden as u64);
    }
    Ok(report)
}

/// Quarantines every message of a request sent to a profile outside its token's grant.
async fn forbid_profile(state: &AppState, token: &TokenGrant, profile: &str, avro: bool, body: Vec<u8>) -> ApiError {
    let shown: String = profile.chars().take(64).collect();
    let reason = format!(
        "{FORBIDDEN}: token {:?} may not send to profile {shown:?}; it may send to {}",
        token.name,
        token.profiles_text()
    );
    tracing::warn!("{reason}");
    let items = if avro { vec![body] } else { split_items(&body).unwrap_or_else(|_| vec![body]) };
    let count = items.len() as u64;
    let items = items.into_iter().map(Delivery::new).collect();
    if let Err(e) = state.ingest.record_all_rejected(profile, "http", items, FORBIDDEN, &reason).await {
        return e.into();
    }
    state.metrics.http_forbidden.get_or_create(&TokenLabels { token: token.name.to_string() }).inc_by(count);
    ApiError::new(StatusCode::FORBIDDEN, reason)
}

/// The reason code of a message outside its token's grant.
const FORBIDDEN: &str = "forbidden";

fn status_of(report: &IngestReport) -> StatusCode {
    if report.accepted > 0 || report.rejected == 0 {
        StatusCode::ACCEPTED
    } else if report.errors.iter().any(|e| e.reason == FORBIDDEN) {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    }
}

/// The media types Avro binary goes by; a body may also announce itself by the
/// single-object marker, which no JSON text begins with.
const AVRO_MEDIA_TYPES: [&str; 3] = ["avro/binary", "application/avro", "application/vnd.apache.avro+binary"];

fn is_avro(headers: &HeaderMap, body: &[u8]) -> bool {
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    media_type.is_some_and(|t| AVRO_MEDIA_TYPES.contains(&t.as_str()))
        || body.starts_with(&teleguard_core::schema::AVRO_SINGLE_OBJECT_MARKER)
}

enum LimitedBody {
    Complete(Vec<u8>),
    Oversized { prefix: Vec<u8>, seen: usize, complete: bool },
}

/// Reads the body up to `limit` bytes; past it, keeps a prefix and counts the rest.
async fn read_limited(mut body: Body, limit: usize) -> Result<LimitedBody, ApiError> {
    let mut bytes = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad_request(format!("cannot read request body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        seen += data.len();
        if seen <= limit {
            bytes.extend_from_slice(&data);
        } else if bytes.len() < OVERSIZED_PREFIX_BYTES {
            bytes.extend_from_slice(&data[..data.len().min(OVERSIZED_PREFIX_BYTES)]);
        }
        if seen > OVERSIZED_DRAIN_BYTES {
            bytes.truncate(OVERSIZED_PREFIX_BYTES);
            return Ok(LimitedBody::Oversized { prefix: bytes, seen, complete: false });
        }
    }
    if seen > limit {
        bytes.truncate(OVERSIZED_PREFIX_BYTES);
        return Ok(LimitedBody::Oversized { prefix: bytes, seen, complete: true });
    }
    Ok(LimitedBody::Complete(bytes))
}

/// Splits a body into messages: a JSON array's elements, one JSON value, or NDJSON lines.
/// An error means the body as a whole could not be read as any of them.
pub fn split_items(body: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let trimmed = body.trim_ascii();
    if trimmed.is_empty() {
        return Err("empty body: send one JSON object, a JSON array of objects, or NDJSON".into());
    }
    if trimmed.starts_with(b"[") {
        let elements: Vec<&RawValue> =
            serde_json::from_slice(trimmed).map_err(|e| format!("invalid JSON array: {e}"))?;
        return Ok(elements.iter().map(|raw| raw.get().as_bytes().to_vec()).collect());
    }
    if serde_json::from_slice::<&RawValue>(trimmed).is_ok() {
        return Ok(vec![trimmed.to_vec()]);
    }
    Ok(trimmed
        .split(|b| *b == b'\n')
        .map(<[u8]>::trim_ascii)
        .filter(|line| !line.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::split_items;

    #[test]
    fn splits_objects_arrays_and_ndjson() {
        assert_eq!(split_items(b" {\"a\": 1}\n").unwrap(), vec![b"{\"a\": 1}".to_vec()]);
        assert_eq!(split_items(b"[{\"a\":1}, {\"b\":2}]").unwrap().len(), 2);
        let lines = split_items(b"{\"a\":1}\n\n{bad\n{\"c\":3}\r\n").unwrap();
        assert_eq!(lines, vec![b"{\"a\":1}".to_vec(), b"{bad".to_vec(), b"{\"c\":3}".to_vec()]);
        assert_eq!(split_items(b"{\n  \"pretty\": true\n}").unwrap().len(), 1);
        assert!(split_items(b"[1, 2").unwrap_err().starts_with("invalid JSON array"));
        assert!(split_items(b"  ").unwrap_err().starts_with("empty body"));
    }
}
