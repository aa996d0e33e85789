//! One inbound call: admission (capacity, draining, routing), SDP
//! negotiation, answer, and the call's life until it ends. Each call is one
//! task owning its state; the router forwards the call's SIP events to it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tracing::Instrument;
use voicegate_media::port_pool::PortLease;
use voicegate_media::{
    Codec as MediaCodec, MediaConfig, MediaEvent, MediaHandle, MediaSession, NegotiatedParams,
};
use voicegate_sdp::{
    AnswerParams, Codec as SdpCodec, NegotiatedMedia, NegotiationError, SessionDescription,
};
use voicegate_sip::endpoint::{CallHandle, EndReason, IncomingCall};

use crate::access::{Admission, Verdict};
use crate::records::{CallRecord, Direction, Outcome, new_call_id};
use crate::redact::Redacted;
use crate::{Shared, conversation};

/// What the router or the gateway tells a call task.
#[derive(Debug)]
pub(crate) enum CallSignal {
    /// Our 2xx was acknowledged.
    Confirmed,
    /// The call is over (SIP side).
    Ended(EndReason),
    /// Shutdown phase two, or the API: end the call.
    HangUp,
    /// A provisional response to our INVITE.
    Progress {
        /// 180, 183, ...
        status: u16,
    },
    /// Our INVITE was answered (ACK sent); the answer body.
    Answered {
        /// SDP answer.
        body: Vec<u8>,
    },
    /// Progress of a REFER we sent (transfer).
    Refer(voicegate_sip::refer::ReferEvent),
    /// The peer sent a re-INVITE with a new offer (hold, resume, new address).
    Reinvite {
        /// The offer.
        body: Vec<u8>,
    },
}

/// Decides on a new call at once (in the router, so a CallEnded for it can
/// never overtake its registration) and starts its task when admitted.
pub(crate) fn admit(shared: &Arc<Shared>, incoming: Box<IncomingCall>) {
    let call = incoming.call;
    let refuse = |code: u16, reason: &'static str, extra: Vec<(String, String)>, why: &str| {
        metrics::counter!("voicegate_calls_total", "outcome" => why.to_string()).increment(1);
        tracing::info!(%call, call_id = %incoming.call_id, code, reason, "call refused: {why}");
        let sip = shared.sip.clone();
        tokio::spawn(async move {
            if let Err(e) = sip.reject(call, code, reason, extra).await {
                tracing::debug!(%call, error = %e, "reject failed");
            }
        });
    };
    let retry_after = vec![(
        "Retry-After".to_string(),
        shared.config.limits.retry_after_s.to_string(),
    )];
    let now = tokio::time::Instant::now().into_std();
    match shared.access.admit(incoming.peer.addr.ip(), now) {
        Admission::Allowed => {}
        Admission::Forbidden => {
            let Some(gate) = &shared.digest else {
                return refuse(403, "Forbidden", Vec::new(), "forbidden_source");
            };
            let unix = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            match gate.verify(
                incoming.authorization.as_deref(),
                &incoming.request_uri,
                &incoming.body,
                unix,
            ) {
                Verdict::Valid(user) => {
                    tracing::info!(%call, user = %user, "caller authenticated by digest");
                }
                Verdict::Challenge(header) => {
                    let extra = vec![("WWW-Authenticate".to_string(), header)];
                    return refuse(401, "Unauthorized", extra, "challenged");
                }
                Verdict::Invalid(why) => {
                    tracing::info!(%call, why, "digest credentials refused");
                    return refuse(403, "Forbidden", Vec::new(), "bad_credentials");
                }
            }
        }
        Admission::RateLimited => {
            let retry = vec![("Retry-After".to_string(), "1".to_string())];
            return refuse(503, "Service Unavailable", retry, "rate_limited");
        }
    }
    if shared.draining.load(Ordering::SeqCst) {
        return refuse(503, "Service Unavailable", retry_after, "draining");
    }
    if shared.active.load(Ordering::SeqCst) >= shared.config.limits.max_calls {
        return refuse(503, "Service Unavailable", retry_after, "over_capacity");
    }
    let Some(agent) = shared.config.route(incoming.called_user.as_deref()) else {
        return refuse(404, "Not Found", Vec::new(), "no_route");
    };
    let agent_id = agent.id.clone();
    let record_id = new_call_id();
    let mut record = CallRecord::new(
        record_id.clone(),
        incoming.call_id.clone(),
        Direction::Inbound,
        uri_of(&incoming.from),
        uri_of(&incoming.to),
        agent_id.clone(),
        now,
    );
    record.handle = Some(call);
    shared.records.insert(record);
    let (tx, rx) = mpsc::channel(8);
    shared.calls.insert(call, tx);
    let active = shared.active.fetch_add(1, Ordering::SeqCst) + 1;
    metrics::gauge!("voicegate_calls_active").set(active as f64);
    let span = tracing::info_span!("call", call_id = %incoming.call_id, id = %record_id);
    tokio::spawn(inbound(shared.clone(), incoming, agent_id, record_id, rx).instrument(span));
}

async fn inbound(
    shared: Arc<Shared>,
    incoming: Box<IncomingCall>,
    agent: String,
    record_id: String,
    mut signals: mpsc::Receiver<CallSignal>,
) {
    let call = incoming.call;
    tracing::info!(
        from = %Redacted(&incoming.from),
        to = %Redacted(&incoming.to),
        peer = %incoming.peer.addr,
        transport = incoming.peer.transport.token(),
        agent = %agent,
        "incoming call"
    );
    let outcome = match negotiate(&shared, &incoming).await {
        Ok((answer_sdp, negotiated, lease)) => {
            match ring_then_answer(&shared, call, &mut signals, answer_sdp).await {
                Ok(()) => {
                    shared.records.answered(&record_id, now());
                    match start_media_for(&negotiated, lease, call) {
                        Ok(media) => {
                            let reason = match shared.agents.get(&agent) {
                                Some(a) => {
                                    let ctx = conversation::CallContext {
                                        call,
                                        call_id: &incoming.call_id,
                                        record_id: &record_id,
                                        input_data: Default::default(),
                                        confirmed: false,
                                    };
                                    conversation::converse(&shared, ctx, a, &mut signals, media)
                                        .await
                                }
                                None => hold(&shared, call, &mut signals).await,
                            };
                            tracing::info!(reason = reason.label(), "call ended");
                            outcome_of(&reason)
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "media did not start: hanging up");
                            let _ = shared.sip.hangup(call).await;
                            let _ = hold(&shared, call, &mut signals).await;
                            Outcome {
                                label: "media_error".into(),
                                sip_status: None,
                                reason: Some(e.to_string()),
                            }
                        }
                    }
                }
                Err(reason) => {
                    tracing::info!(reason = reason.label(), "call ended before answer");
                    outcome_of(&reason)
                }
            }
        }
        Err(Refusal {
            code,
            reason,
            warning,
            outcome,
        }) => {
            tracing::info!(code, reason = %reason, warning = ?warning, "call rejected: {outcome}");
            let extra = warning
                .map(|w| vec![("Warning".to_string(), w)])
                .unwrap_or_default();
            if let Err(e) = shared.sip.reject(call, code, &reason, extra).await {
                tracing::debug!(error = %e, "reject failed");
            }
            Outcome {
                label: outcome.into(),
                sip_status: Some(code),
                reason: Some(reason),
            }
        }
    };
    let label = outcome.label.clone();
    if let Some(record) = shared.records.ended(&record_id, outcome, now())
        && let Some(webhook) = &shared.webhook
    {
        webhook.session_ended(record);
    }
    metrics::counter!("voicegate_calls_total", "outcome" => label).increment(1);
    shared.calls.remove(&call);
    let active = shared.active.fetch_sub(1, Ordering::SeqCst) - 1;
    metrics::gauge!("voicegate_calls_active").set(active as f64);
    shared.call_ended.notify_waiters();
}

/// Why a call was not answered: one status, one reason, one metric label.
struct Refusal {
    code: u16,
    reason: String,
    warning: Option<String>,
    outcome: &'static str,
}

impl From<NegotiationError> for Refusal {
    fn from(e: NegotiationError) -> Self {
        Refusal {
            code: e.sip_status(),
            reason: "Not Acceptable Here".into(),
            warning: Some(e.warning_header()),
            outcome: "no_common_media",
        }
    }
}

/// The media side of an answered call: the running media session (its
/// ports go back to the pool, quarantined, when it stops) and its events.
pub(crate) struct CallMedia {
    pub(crate) handle: MediaHandle,
    pub(crate) events: mpsc::Receiver<MediaEvent>,
    /// What answering a re-INVITE needs: our address and port, the codec
    /// in use (kept: the media session cannot switch codecs mid-call), and
    /// the `o=` session id.
    pub(crate) sdp_codec: SdpCodec,
    pub(crate) telephone_event: bool,
    pub(crate) sdp_session_id: u64,
}

/// Starts the RTP media session for a negotiated stream.
pub(crate) fn start_media_for(
    negotiated: &NegotiatedMedia,
    lease: PortLease,
    call: CallHandle,
) -> Result<CallMedia, voicegate_media::MediaError> {
    let codec = match negotiated.codec {
        SdpCodec::Pcmu => MediaCodec::Pcmu,
        SdpCodec::Pcma => MediaCodec::Pcma,
        SdpCodec::Opus => MediaCodec::Opus,
        // The SDP layer never negotiates telephone-event as the audio codec.
        SdpCodec::TelephoneEvent => MediaCodec::Pcmu,
    };
    let params = NegotiatedParams {
        payload_type: negotiated.payload_type,
        codec,
        clock_rate: negotiated.clock_rate_hz,
        channels: negotiated.channels,
        ptime_ms: negotiated.ptime_ms,
        telephone_event_pt: negotiated.telephone_event.map(|t| t.payload_type),
        remote_addr: negotiated.remote_rtp,
        remote_rtcp_addr: Some(negotiated.remote_rtcp),
    };
    let mut cfg = MediaConfig::new(params);
    cfg.telephone_event_clock_rate = negotiated
        .telephone_event
        .map(|t| t.clock_rate_hz)
        .filter(|r| *r != negotiated.clock_rate_hz);
    cfg.seed = session_id(call) ^ 0x9e37_79b9_7f4a_7c15;
    let (handle, events) = MediaSession::start(cfg, lease)?;
    Ok(CallMedia {
        handle,
        events,
        sdp_codec: negotiated.codec,
        telephone_event: negotiated.telephone_event.is_some(),
        sdp_session_id: session_id(call),
    })
}

/// The end of a call as an [`Outcome`].
pub(crate) fn outcome_of(reason: &EndReason) -> Outcome {
    match reason {
        EndReason::Rejected {
            status,
            reason,
            reason_header,
        } => Outcome {
            label: match status {
                486 | 600 => "busy",
                408 | 480 => "no_answer",
                487 => "cancelled",
                403 | 603 => "declined",
                404 | 484 | 604 => "not_found",
                _ => "rejected",
            }
            .into(),
            sip_status: Some(*status),
            // The Reason header (RFC 3326) says more than the phrase when present.
            reason: Some(reason_header.clone().unwrap_or_else(|| reason.clone())),
        },
        EndReason::LocalBye { status } => Outcome {
            label: reason.label().into(),
            sip_status: *status,
            reason: None,
        },
        EndReason::Timeout => Outcome {
            label: "no_answer".into(),
            sip_status: Some(408),
            reason: Some("no final response".into()),
        },
        other => Outcome {
            label: other.label().into(),
            sip_status: None,
            reason: None,
        },
    }
}

/// The URI inside a From/To value (`"Bob" <sip:b@h>;tag=x` -> `sip:b@h`).
fn uri_of(value: &str) -> String {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => value[a + 1..b].to_string(),
        _ => value.split(';').next().unwrap_or(value).trim().to_string(),
    }
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Negotiates the offer and takes a port pair: the answer SDP to send.
async fn negotiate(
    shared: &Shared,
    incoming: &IncomingCall,
) -> Result<(Vec<u8>, NegotiatedMedia, PortLease), Refusal> {
    let is_sdp = incoming.content_type.as_deref().map(|c| {
        c.split(';')
            .next()
            .unwrap_or(c)
            .trim()
            .eq_ignore_ascii_case("application/sdp")
    });
    if incoming.body.is_empty() {
        // RFC 3261 13.2.1 allows the offer in the 2xx and the answer in the
        // ACK; the endpoint does not surface ACK bodies yet.
        return Err(Refusal {
            code: 488,
            reason: "Not Acceptable Here".into(),
            warning: Some("399 voicegate \"INVITE without SDP offer is not supported\"".into()),
            outcome: "no_offer",
        });
    }
    if is_sdp == Some(false) {
        return Err(Refusal {
            code: 415,
            reason: "Unsupported Media Type".into(),
            warning: None,
            outcome: "bad_content_type",
        });
    }
    let offer: SessionDescription = std::str::from_utf8(&incoming.body)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| Refusal {
            code: 488,
            reason: "Not Acceptable Here".into(),
            warning: Some("399 voicegate \"Malformed SDP offer\"".into()),
            outcome: "bad_sdp",
        })?;
    let lease = shared.ports.lease().await.map_err(|e| {
        tracing::warn!(error = %e, "no RTP ports");
        Refusal {
            code: 503,
            reason: "Service Unavailable".into(),
            warning: None,
            outcome: "no_ports",
        }
    })?;
    let local_ip = shared
        .config
        .media
        .advertised_ip
        .unwrap_or(shared.config.media.rtp_ip);
    let mut params = AnswerParams::new(local_ip, lease.pair().rtp, shared.config.codecs());
    params.session_id = session_id(incoming.call);
    let negotiated = voicegate_sdp::answer(&offer, &params)?;
    tracing::info!(
        codec = ?negotiated.media.codec,
        remote_rtp = %negotiated.media.remote_rtp,
        local_rtp = lease.pair().rtp,
        "media negotiated"
    );
    Ok((
        negotiated.answer.to_string().into_bytes(),
        negotiated.media,
        lease,
    ))
}

/// Rings for `calls.ring_ms` (180 Ringing) when configured, then sends the
/// 200 OK. A CANCEL or hang-up during the ring ends the call: its reason.
async fn ring_then_answer(
    shared: &Shared,
    call: CallHandle,
    signals: &mut mpsc::Receiver<CallSignal>,
    answer_sdp: Vec<u8>,
) -> Result<(), EndReason> {
    let ring = std::time::Duration::from_millis(shared.config.calls.ring_ms);
    if !ring.is_zero() {
        if let Err(e) = shared.sip.ring(call, 180, Vec::new()).await {
            tracing::debug!(error = %e, "180 failed");
        }
        let until = tokio::time::Instant::now() + ring;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                signal = signals.recv() => match signal {
                    Some(CallSignal::Ended(reason)) => return Err(reason),
                    Some(CallSignal::HangUp) => {
                        // 480 to the caller; the endpoint reports the end.
                        let _ = shared.sip.hangup(call).await;
                    }
                    // Confirmed, and UAC-only signals that cannot occur here.
                    Some(_) => {}
                    None => return Err(EndReason::TransportError),
                },
            }
        }
    }
    if let Err(e) = shared.sip.answer(call, answer_sdp).await {
        // The call ended meanwhile (CANCEL crossed the answer): wait for why.
        tracing::debug!(error = %e, "answer failed");
        return Err(match signals.recv().await {
            Some(CallSignal::Ended(reason)) => reason,
            _ => EndReason::TransportError,
        });
    }
    Ok(())
}

/// Waits until the SIP side ends the call (a HangUp signal meanwhile sends
/// BYE or CANCEL): for an answered call with no loaded agent, after a failed
/// media start, and wherever a call task has asked for the end.
pub(crate) async fn hold(
    shared: &Shared,
    call: CallHandle,
    signals: &mut mpsc::Receiver<CallSignal>,
) -> EndReason {
    loop {
        match signals.recv().await {
            Some(CallSignal::Ended(reason)) => return reason,
            Some(CallSignal::HangUp) => {
                if let Err(e) = shared.sip.hangup(call).await {
                    tracing::debug!(error = %e, "hangup failed");
                }
            }
            Some(_) => {}
            None => return EndReason::TransportError,
        }
    }
}

/// An `o=` session id unique per call in this process.
fn session_id(call: CallHandle) -> u64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (secs << 20) ^ call.0
}
