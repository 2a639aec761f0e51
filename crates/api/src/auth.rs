//! Authentication of ingest requests: the `Authorization: Bearer` token, matched against the
//! configured token hashes; a request without a known token gets 401 and is not stored.

use crate::error::ApiError;
use axum::http::{HeaderMap, header};
use teleguard_pipeline::auth::{TokenGrant, Tokens};
use teleguard_pipeline::metrics::{Metrics, ReasonLabels};

/// The challenge sent with a 401 for a request that presented no token.
const CHALLENGE: &str = "Bearer realm=\"teleguard\"";
/// The challenge sent with a 401 for a token that is not configured (RFC 6750 `invalid_token`).
const CHALLENGE_INVALID: &str = "Bearer realm=\"teleguard\", error=\"invalid_token\"";

/// The grant of the request's token: `Ok(None)` when no tokens are configured (ingest is
/// open), the token's grant when it is a configured one, else a 401 (counted in metrics).
pub fn authenticate<'a>(
    tokens: &'a Tokens,
    metrics: &Metrics,
    headers: &HeaderMap,
) -> Result<Option<&'a TokenGrant>, ApiError> {
    if !tokens.required() {
        return Ok(None);
    }
    let refuse = |reason: &str, challenge: &'static str, message: &str| {
        metrics.http_auth_failures.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
        tracing::debug!("ingest refused: {reason}");
        ApiError::unauthorized(challenge, message)
    };
    let Some(presented) = bearer_token(headers) else {
        return Err(refuse(
            "missing_token",
            CHALLENGE,
            "ingest requires a token: send `Authorization: Bearer <token>` (an operator makes one with `teleguard token new`)",
        ));
    };
    tokens.authenticate(presented).map(Some).ok_or_else(|| {
        refuse(
            "unknown_token",
            CHALLENGE_INVALID,
            "the bearer token is not one this server accepts; check it, or ask an operator for a new one",
        )
    })
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case), if any.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::bearer_token;
    use axum::http::{HeaderMap, HeaderValue, header};

    fn with_authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn reads_bearer_tokens_and_nothing_else() {
        assert_eq!(bearer_token(&with_authorization("Bearer tg_abc")), Some("tg_abc"));
        assert_eq!(bearer_token(&with_authorization("bearer   tg_abc ")), Some("tg_abc"));
        assert_eq!(bearer_token(&with_authorization("Basic dXNlcjpwYXNz")), None);
        assert_eq!(bearer_token(&with_authorization("Bearer ")), None);
        assert_eq!(bearer_token(&with_authorization("tg_abc")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }
}
