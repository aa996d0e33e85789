//! One inbound call: admission (capacity, draining, routing), SDP
//! negotiation, answer, and the call's life until it ends. Each call is one
//! task owning its state; the router forwards the call's SIP events to it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tracing::Instrument;
use voicegate_media::port_pool::PortLease;
use voicegate_sdp::{AnswerParams, NegotiationError, SessionDescription};
use voicegate_sip::endpoint::{CallHandle, EndReason, IncomingCall};

use crate::redact::Redacted;
use crate::{Shared, conversation};

/// What the router or the gateway tells a call task.
#[derive(Debug)]
pub(crate) enum CallSignal {
    /// Our 2xx was acknowledged.
    Confirmed,
    /// The call is over (SIP side).
    Ended(EndReason),
    /// Shutdown phase two: end the call.
    HangUp,
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
    let (tx, rx) = mpsc::channel(8);
    shared.calls.insert(call, tx);
    let active = shared.active.fetch_add(1, Ordering::SeqCst) + 1;
    metrics::gauge!("voicegate_calls_active").set(active as f64);
    let span = tracing::info_span!("call", call_id = %incoming.call_id, handle = %call);
    tokio::spawn(inbound(shared.clone(), incoming, agent_id, rx).instrument(span));
}

async fn inbound(
    shared: Arc<Shared>,
    incoming: Box<IncomingCall>,
    agent: String,
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
        Ok((answer_sdp, lease)) => {
            match ring_then_answer(&shared, call, &mut signals, answer_sdp).await {
                Ok(()) => {
                    let (rtp, rtcp, guard) = lease.into_parts();
                    let media = CallMedia {
                        rtp,
                        _rtcp: rtcp,
                        _ports: guard,
                    };
                    let reason = match shared.agents.get(&agent) {
                        Some(a) => {
                            conversation::converse(
                                &shared,
                                call,
                                &incoming.call_id,
                                a,
                                &mut signals,
                                media,
                            )
                            .await
                        }
                        None => hold(&shared, call, &mut signals, media).await,
                    };
                    tracing::info!(reason = reason.label(), "call ended");
                    reason.label()
                }
                Err(reason) => {
                    tracing::info!(reason = reason.label(), "call ended before answer");
                    reason.label()
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
            outcome
        }
    };
    metrics::counter!("voicegate_calls_total", "outcome" => outcome).increment(1);
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

/// The media side of an answered call.
pub(crate) struct CallMedia {
    pub(crate) rtp: tokio::net::UdpSocket,
    _rtcp: tokio::net::UdpSocket,
    _ports: voicegate_media::port_pool::PortGuard,
}

/// Negotiates the offer and takes a port pair: the answer SDP to send.
async fn negotiate(
    shared: &Shared,
    incoming: &IncomingCall,
) -> Result<(Vec<u8>, PortLease), Refusal> {
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
    Ok((negotiated.answer.to_string().into_bytes(), lease))
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
                    Some(CallSignal::Confirmed) => {}
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

/// An answered call with no loaded agent (the route names an agent that is
/// not loaded): held until the SIP side ends it, media counted.
async fn hold(
    shared: &Shared,
    call: CallHandle,
    signals: &mut mpsc::Receiver<CallSignal>,
    media: CallMedia,
) -> EndReason {
    let mut buf = [0u8; 2048];
    let mut packets: u64 = 0;
    loop {
        tokio::select! {
            signal = signals.recv() => match signal {
                Some(CallSignal::Confirmed) => tracing::debug!("call confirmed by ACK"),
                Some(CallSignal::Ended(reason)) => {
                    tracing::debug!(rtp_packets = packets, "media stopped");
                    return reason;
                }
                Some(CallSignal::HangUp) => {
                    if let Err(e) = shared.sip.hangup(call).await {
                        tracing::debug!(error = %e, "hangup failed");
                    }
                }
                // The router dropped us: the driver is gone.
                None => return EndReason::TransportError,
            },
            r = media.rtp.recv_from(&mut buf) => {
                if r.is_ok() {
                    packets += 1;
                }
            }
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
