//! Outbound calls: `POST /v1/calls {to, from?, agent, input_data?,
//! timeout_s?, trunk?}` places an INVITE — to a `sip:` URI directly, or to a
//! number through a trunk — and, once answered, runs the agent's session
//! with `input_data` as `context.input_data`.
//!
//! Failures before answer become the record's outcome with the SIP status
//! and reason: busy (486/600), no_answer (408/480, timer B, or our
//! `timeout_s` which CANCELs), declined (403/603), not_found (404/484/604),
//! rejected (others), no_common_media (the answer's SDP).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use tracing::Instrument;
use voicegate_sdp::{OfferParams, SessionDescription};
use voicegate_sip::endpoint::{CallHandle, EndReason, Peer, TransportKind};

use crate::Shared;
use crate::api::ApiError;
use crate::call::{CallMedia, CallSignal, hold, outcome_of, start_media_for};
use crate::config::{NumberFormat, TrunkConfig};
use crate::conversation::{self, CallContext};
use crate::records::{CallRecord, Direction, Outcome, new_call_id};

/// The body of `POST /v1/calls`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewCall {
    /// A phone number (through a trunk) or a `sip:` URI (direct).
    to: String,
    /// Caller number or user; default: the trunk's `from_number`, else "voicegate".
    from: Option<String>,
    /// The agent that talks on the call.
    agent: String,
    /// `context.input_data` for the session.
    input_data: Option<serde_json::Map<String, serde_json::Value>>,
    /// Seconds to wait for an answer (default 60).
    timeout_s: Option<u64>,
    /// Trunk name (default: the first trunk).
    trunk: Option<String>,
}

/// Where the INVITE goes.
struct Target {
    /// Digest credentials for 401/407 (the trunk's).
    credentials: Option<voicegate_sip::auth::Credentials>,
    request_uri: String,
    to_uri: String,
    from_uri: String,
    peer: Peer,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::UNPROCESSABLE_ENTITY, msg.into())
}

/// `POST /v1/calls`
pub(crate) async fn create_call(
    State(shared): State<Arc<Shared>>,
    Json(req): Json<NewCall>,
) -> Result<impl IntoResponse, ApiError> {
    if shared.draining.load(Ordering::SeqCst) {
        return Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, "draining".into()));
    }
    if shared.active.load(Ordering::SeqCst) >= shared.config.limits.max_calls {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "at max_calls".into(),
        ));
    }
    let Some(agent) = shared.agents.get(&req.agent).cloned() else {
        return Err(bad(format!("no agent {:?}", req.agent)));
    };
    let timeout = Duration::from_secs(req.timeout_s.unwrap_or(60).clamp(1, 600));
    let placed = place(&shared, &req.to, req.from.as_deref(), req.trunk.as_deref())
        .await
        .map_err(|e| match e {
            PlaceError::Target(m) => bad(m),
            PlaceError::NoPorts(m) => ApiError(StatusCode::SERVICE_UNAVAILABLE, m),
            PlaceError::Internal(m) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, m),
        })?;
    let id = new_call_id();
    let handle = placed.handle;
    let input_data = req.input_data.unwrap_or_default();
    let mut record = CallRecord::new(
        id.clone(),
        String::new(),
        Direction::Outbound,
        placed.from_uri.clone(),
        placed.to_uri.clone(),
        req.agent.clone(),
        now(),
    );
    record.handle = Some(handle);
    record.input_data = serde_json::Value::Object(input_data.clone());
    shared.records.insert(record);
    let active = shared.active.fetch_add(1, Ordering::SeqCst) + 1;
    metrics::gauge!("voicegate_calls_active").set(active as f64);
    let span = tracing::info_span!("call", id = %id, direction = "outbound");
    tracing::info!(parent: &span, to = %crate::redact::Redacted(&placed.to_uri), agent = %req.agent, "placing call");
    let task = OutboundCall {
        shared: shared.clone(),
        id: id.clone(),
        placed,
        agent,
        input_data,
        timeout,
    };
    tokio::spawn(task.run().instrument(span));
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "state": "ringing"})),
    ))
}

/// Why a call could not be placed.
#[derive(Debug)]
pub(crate) enum PlaceError {
    /// The destination is malformed, unknown or unreachable.
    Target(String),
    /// No RTP port pair free.
    NoPorts(String),
    /// Our own configuration (trunk credentials) is unusable.
    Internal(String),
}

impl std::fmt::Display for PlaceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlaceError::Target(m) | PlaceError::NoPorts(m) | PlaceError::Internal(m) => {
                f.write_str(m)
            }
        }
    }
}

/// A call whose INVITE is out: the SIP handle, its events (the router
/// forwards them here from now on), and what answering needs.
pub(crate) struct Placed {
    pub(crate) handle: CallHandle,
    pub(crate) signals: mpsc::Receiver<CallSignal>,
    pub(crate) to_uri: String,
    pub(crate) from_uri: String,
    offer: SessionDescription,
    lease: Option<voicegate_media::port_pool::PortLease>,
}

/// Places an INVITE to `to` (a phone number through `trunk`, default the
/// first trunk; or a `sip:` URI directly) with an SDP offer on a leased port
/// pair. Used by `POST /v1/calls` and by bridged transfers.
pub(crate) async fn place(
    shared: &Shared,
    to: &str,
    from: Option<&str>,
    trunk: Option<&str>,
) -> Result<Placed, PlaceError> {
    let trunk_config = trunk_named(shared, trunk);
    let target = resolve_target(shared, to, from, trunk).await?;
    let lease = shared
        .ports
        .lease()
        .await
        .map_err(|e| PlaceError::NoPorts(format!("no RTP ports: {e}")))?;
    let local_ip = shared
        .config
        .media
        .advertised_ip
        .unwrap_or(shared.config.media.rtp_ip);
    let codecs = trunk_config
        .filter(|_| !to.starts_with("sip:"))
        .and_then(|t| t.codecs.as_ref())
        .and_then(|c| voicegate_sdp::CodecPreference::from_names(c.iter().map(String::as_str)).ok())
        .unwrap_or_else(|| shared.config.codecs());
    let mut params = OfferParams::new(local_ip, lease.pair().rtp, codecs);
    params.session_id = u64::from(lease.pair().rtp) << 32 | u64::from(std::process::id());
    let offer = voicegate_sdp::offer(&params);
    let (tx, rx) = mpsc::channel(8);
    // Held while the INVITE goes out and the call registers, so the router
    // cannot see the call's first response before the call is known.
    let handle = {
        let _registering = shared.outbound.lock().await;
        let handle = shared
            .sip
            .invite_with_auth(
                &target.request_uri,
                &target.from_uri,
                &target.to_uri,
                offer.to_string().into_bytes(),
                target.peer,
                target.credentials.clone(),
            )
            .await
            .map_err(|e| PlaceError::Target(format!("cannot place the call: {e}")))?;
        shared.calls.insert(handle, tx);
        handle
    };
    Ok(Placed {
        handle,
        signals: rx,
        to_uri: target.to_uri,
        from_uri: target.from_uri,
        offer,
        lease: Some(lease),
    })
}

impl Placed {
    /// Waits for the answer: the started media once answered with usable
    /// SDP; otherwise the outcome, the SIP call being over (not answered
    /// within `timeout`: CANCEL, outcome `no_answer`). `progress` gets each
    /// provisional status.
    pub(crate) async fn wait_answer(
        &mut self,
        shared: &Shared,
        timeout: Duration,
        mut progress: impl FnMut(u16),
    ) -> Result<CallMedia, Outcome> {
        let deadline = tokio::time::Instant::now() + timeout;
        let signals = &mut self.signals;
        let answer = loop {
            let signal = tokio::select! {
                s = signals.recv() => s,
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::info!("no answer within the timeout: cancelling");
                    let _ = shared.sip.hangup(self.handle).await;
                    return Err(match hold(shared, self.handle, signals).await {
                        // The CANCEL won: report the timeout, not the 487.
                        EndReason::Rejected { status: 487, .. } | EndReason::Cancelled => Outcome {
                            label: "no_answer".into(),
                            sip_status: Some(487),
                            reason: Some(format!("no answer within {} s", timeout.as_secs())),
                        },
                        other => outcome_of(&other),
                    });
                }
            };
            match signal {
                Some(CallSignal::Progress { status }) => {
                    tracing::info!(status, "progress");
                    progress(status);
                }
                Some(CallSignal::Answered { body }) => break body,
                Some(CallSignal::Ended(reason)) => return Err(outcome_of(&reason)),
                Some(CallSignal::HangUp) => {
                    let _ = shared.sip.hangup(self.handle).await;
                }
                // No dialog yet: neither can happen before the answer.
                Some(
                    CallSignal::Confirmed | CallSignal::Reinvite { .. } | CallSignal::Refer(_),
                ) => {}
                None => return Err(outcome_of(&EndReason::TransportError)),
            }
        };
        let negotiated = std::str::from_utf8(&answer)
            .ok()
            .and_then(|t| t.parse::<SessionDescription>().ok())
            .ok_or_else(|| "the answer has no valid SDP".to_string())
            .and_then(|sdp| {
                voicegate_sdp::process_answer(&self.offer, &sdp).map_err(|e| e.to_string())
            });
        let negotiated = match negotiated {
            Ok(n) => n,
            Err(reason) => {
                tracing::warn!(%reason, "answer not usable: hanging up");
                let _ = shared.sip.hangup(self.handle).await;
                hold(shared, self.handle, signals).await;
                return Err(Outcome {
                    label: "no_common_media".into(),
                    sip_status: Some(488),
                    reason: Some(reason),
                });
            }
        };
        let lease = self.lease.take().expect("answered once");
        match start_media_for(&negotiated, lease, self.handle) {
            Ok(m) => Ok(m),
            Err(e) => {
                let _ = shared.sip.hangup(self.handle).await;
                hold(shared, self.handle, signals).await;
                Err(Outcome {
                    label: "media_error".into(),
                    sip_status: None,
                    reason: Some(e.to_string()),
                })
            }
        }
    }
}

fn trunk_named<'a>(shared: &'a Shared, name: Option<&str>) -> Option<&'a TrunkConfig> {
    match name {
        Some(name) => shared.config.trunks.iter().find(|t| t.name == name),
        None => shared.config.trunks.first(),
    }
}

async fn resolve_target(
    shared: &Shared,
    to: &str,
    from: Option<&str>,
    trunk_name: Option<&str>,
) -> Result<Target, PlaceError> {
    let advertised = shared
        .config
        .sip
        .advertised
        .unwrap_or(shared.config.sip.listen);
    let advertised = if advertised.port() == 0 || advertised.ip().is_unspecified() {
        shared.sip.local_addr()
    } else {
        advertised
    };
    if to.starts_with("sip:") {
        let uri = to.trim();
        let host_port = uri["sip:".len()..]
            .split(['@'])
            .next_back()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("");
        let transport = if uri.to_ascii_lowercase().contains(";transport=tcp") {
            TransportKind::Tcp
        } else {
            TransportKind::Udp
        };
        let addr = lookup(host_port, 5060).await?;
        let from_user = from.unwrap_or("voicegate");
        return Ok(Target {
            credentials: None,
            request_uri: uri.to_string(),
            to_uri: uri.to_string(),
            from_uri: format!("sip:{}@{}", from_user, advertised),
            peer: Peer {
                transport,
                addr,
                connection: None,
            },
        });
    }
    let number = to.trim();
    let digits = number.strip_prefix('+').unwrap_or(number);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(PlaceError::Target(format!(
            "`to` must be a phone number (+14155550123) or a sip: URI, not {to:?}"
        )));
    }
    let Some(trunk) = trunk_named(shared, trunk_name) else {
        return Err(PlaceError::Target(match trunk_name {
            Some(name) => format!("no trunk {name:?}"),
            None => "no trunk configured to reach phone numbers".to_string(),
        }));
    };
    let peer = crate::trunks::trunk_peer(trunk)
        .await
        .map_err(|e| PlaceError::Target(e.to_string()))?;
    let host = format!("{}:{}", trunk.host, trunk.port);
    let format_number = |n: &str| {
        let d = n.strip_prefix('+').unwrap_or(n);
        match trunk.number_format {
            NumberFormat::E164 | NumberFormat::Tel => format!("+{d}"),
            NumberFormat::Sip => d.to_string(),
        }
    };
    let user = format_number(number);
    let request_uri = match trunk.number_format {
        NumberFormat::Tel => format!("sip:{user}@{host};user=phone"),
        _ => format!("sip:{user}@{host}"),
    };
    let to_uri = match trunk.number_format {
        NumberFormat::Tel => format!("tel:{user}"),
        _ => request_uri.clone(),
    };
    let from = from
        .map(str::to_string)
        .or_else(|| trunk.from_number.clone())
        .unwrap_or_else(|| "voicegate".into());
    let from_user = if from
        .trim_start_matches('+')
        .chars()
        .all(|c| c.is_ascii_digit())
    {
        format_number(&from)
    } else {
        from
    };
    let credentials =
        crate::trunks::credentials(trunk).map_err(|e| PlaceError::Internal(e.to_string()))?;
    Ok(Target {
        credentials,
        request_uri,
        to_uri,
        from_uri: format!("sip:{from_user}@{}", trunk.host),
        peer,
    })
}

async fn lookup(host_port: &str, default_port: u16) -> Result<SocketAddr, PlaceError> {
    let with_port = if host_port
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host_port.to_string()
    } else {
        format!("{host_port}:{default_port}")
    };
    tokio::net::lookup_host(&with_port)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| PlaceError::Target(format!("cannot resolve {host_port:?}")))
}

/// One placed call's task.
struct OutboundCall {
    shared: Arc<Shared>,
    id: String,
    placed: Placed,
    agent: voicegate_engine::PythonAgent,
    input_data: serde_json::Map<String, serde_json::Value>,
    timeout: Duration,
}

impl OutboundCall {
    async fn run(mut self) {
        let outcome = self.call().await;
        tracing::info!(outcome = %outcome.label, status = ?outcome.sip_status, "outbound call over");
        let label = outcome.label.clone();
        if let Some(record) = self.shared.records.ended(&self.id, outcome, now())
            && let Some(webhook) = &self.shared.webhook
        {
            webhook.session_ended(record);
        }
        metrics::counter!("voicegate_calls_total", "outcome" => label).increment(1);
        self.shared.calls.remove(&self.placed.handle);
        let active = self.shared.active.fetch_sub(1, Ordering::SeqCst) - 1;
        metrics::gauge!("voicegate_calls_active").set(active as f64);
        self.shared.call_ended.notify_waiters();
    }

    async fn call(&mut self) -> Outcome {
        let (shared, id) = (&self.shared, &self.id);
        // Early media (183) is not played to anyone: the agent starts on
        // answer. Provisional statuses are kept in the record.
        let answered = self
            .placed
            .wait_answer(shared, self.timeout, |status| {
                shared.records.update(id, |r| r.progress.push(status))
            })
            .await;
        let media = match answered {
            Ok(media) => media,
            Err(outcome) => return outcome,
        };
        self.shared.records.answered(&self.id, now());
        let ctx = CallContext {
            call: self.placed.handle,
            call_id: &self.id,
            record_id: &self.id,
            input_data: std::mem::take(&mut self.input_data),
            // We sent the ACK with the answer.
            confirmed: true,
        };
        let reason = conversation::converse(
            &self.shared,
            ctx,
            &self.agent,
            &mut self.placed.signals,
            media,
        )
        .await;
        outcome_of(&reason)
    }
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}
