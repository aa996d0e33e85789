//! The HTTP call API under `/v1`, behind a bearer token:
//!
//! - `GET /v1/calls`: live calls;
//! - `GET /v1/calls/{id}`: one call (live or recently ended): state, outcome
//!   (label, SIP status, reason), timings, transcript, output_data;
//! - `DELETE /v1/calls/{id}`: hang up (BYE, or CANCEL/480 before answer);
//! - `POST /v1/calls`: place a call (see [`crate::outbound`]);
//! - `GET /v1/trunks`: each trunk's registration status.
//!
//! The token comes from the environment variable named by `api.token_env`;
//! when it is unset every `/v1` request gets 401, so the API is never open
//! by accident.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::Shared;

/// An API error: status and a JSON `{"error": ...}` body.
pub(crate) struct ApiError(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

/// Checks `Authorization: Bearer TOKEN` in constant time.
pub(crate) async fn require_token(
    State(shared): State<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(expected) = shared.api_token.as_deref() else {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            format!(
                "the call API is disabled: set {}",
                shared.config.api.token_env
            ),
        ));
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token".into(),
        ));
    }
    Ok(next.run(req).await)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) async fn list_calls(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    Json(json!({"calls": shared.records.live()}))
}

pub(crate) async fn list_trunks(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let statuses = shared
        .trunks
        .statuses(&shared.config.trunks, std::time::Instant::now());
    Json(json!({"trunks": statuses}))
}

pub(crate) async fn get_call(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    shared
        .records
        .get(&id)
        .map(Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no call {id}")))
}

pub(crate) async fn hang_up_call(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let record = shared
        .records
        .get(&id)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no call {id}")))?;
    let signalled = record
        .handle
        .and_then(|h| {
            shared
                .calls
                .get(&h)
                .map(|tx| tx.try_send(crate::call::CallSignal::HangUp).is_ok())
        })
        .unwrap_or(false);
    if !signalled {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("call {id} is not live"),
        ));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "state": "hanging_up"})),
    ))
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
