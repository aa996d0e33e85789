//! Bridged transfers (B2BUA): the agent hands the caller to a person by a
//! second call that voicegate places itself, instead of asking the caller's
//! side to place it (REFER).
//!
//! A `TransferSessionEvent` with mode `bridge`, or a REFER that was refused,
//! failed or timed out (see `conversation`), dials the target as leg B: a
//! phone number through the first trunk, or a `sip:` URI directly, exactly
//! as `POST /v1/calls` places calls ([`crate::outbound::place`]). The agent's
//! session goes on while B rings. When B answers, each leg's decoded audio
//! is played out on the other ([`voicegate_media::MediaControl::bridge_to`]:
//! a codec or rate difference between the legs is converted there, DTMF is
//! relayed as RFC 4733 events), and the agent leaves: its session gets the
//! final StopEvent. From then on either side's BYE ends both. When B does
//! not answer (busy, declined, no answer within `calls.transfer_timeout_s`,
//! unusable SDP), the agent's session gets an ErrorEvent naming the SIP
//! status and goes on with the caller.
//!
//! Leg B is part of the caller's call: it is not counted against
//! `limits.max_calls` and has no call record of its own; the caller's record
//! holds the transfer (`transfer`), with the bridge's media figures.
//! The caller hears silence while B rings.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;
use voicegate_media::{MediaControl, MediaEvent};
use voicegate_sip::endpoint::{CallHandle, EndReason};

use crate::Shared;
use crate::call::{CallMedia, CallSignal, hold};
use crate::conversation::Reoffer;
use crate::outbound::Placed;
use crate::records::{BridgeSummary, Outcome, TransferSummary};

/// A transfer to carry out by bridging.
#[derive(Debug, Clone)]
pub(crate) struct BridgeRequest {
    /// The number or URI as the agent gave it (logs, ErrorEvent).
    pub(crate) label: String,
    /// What to dial: a phone number (through the first trunk) or a `sip:` URI.
    pub(crate) to: String,
    /// SIP codes seen so far: a REFER's answer and NOTIFY statuses when
    /// this bridge is the fallback of a failed REFER.
    pub(crate) codes: Vec<u16>,
    /// Why the REFER failed, when this is its fallback.
    pub(crate) refer_failure: Option<String>,
}

impl BridgeRequest {
    /// The message for the agent's ErrorEvent and the log when leg B could
    /// not be reached.
    fn failure(&self, why: &str) -> String {
        match &self.refer_failure {
            Some(refer) => format!(
                "transfer to {} failed: {refer}; bridged call: {why}",
                self.label
            ),
            None => format!("transfer to {} failed: {why}", self.label),
        }
    }

    /// The call record's view of this transfer.
    fn summary(&self, result: &str, reason: Option<String>) -> TransferSummary {
        TransferSummary {
            target: self.label.clone(),
            mode: "bridge".into(),
            sip_codes: self.codes.clone(),
            result: result.into(),
            reason,
            bridge: None,
        }
    }
}

type Answer = (Placed, Vec<u16>, Result<CallMedia, Outcome>);

/// Leg B while it rings.
pub(crate) struct Dialing<'a> {
    request: BridgeRequest,
    handle: CallHandle,
    answer: Pin<Box<dyn Future<Output = Answer> + Send + 'a>>,
}

/// Leg B, answered, with its media running.
pub(crate) struct Bridged {
    request: BridgeRequest,
    placed: Placed,
    media: CallMedia,
}

impl Bridged {
    /// Starts the two-way audio between the caller's leg and leg B (the
    /// agent's queued audio on the caller's leg is dropped). Err: the media
    /// layer refused; leg B is hung up and the message is for the agent.
    pub(crate) async fn link(
        self: Box<Self>,
        shared: &Shared,
        record_id: &str,
        caller_media: &MediaControl,
    ) -> Result<Box<Self>, String> {
        let b = self.media.handle.control();
        let linked = caller_media
            .bridge_to(b.clone())
            .and_then(|()| b.bridge_to(caller_media.clone()));
        match linked {
            Ok(()) => {
                tracing::info!(target = %self.request.label, "legs bridged; the agent leaves");
                metrics::counter!("voicegate_transfers_total", "mode" => "bridge", "result" => "ok")
                    .increment(1);
                Ok(self)
            }
            Err(e) => {
                let _ = caller_media.unbridge();
                let msg = self
                    .request
                    .failure(&format!("cannot bridge the media: {e}"));
                fail(shared, record_id, &self.request, &msg);
                self.abandon(shared).await;
                Err(msg)
            }
        }
    }

    /// Hangs up leg B (the caller is gone, or linking failed) and frees it.
    pub(crate) async fn abandon(self: Box<Self>, shared: &Shared) {
        let Bridged {
            mut placed, media, ..
        } = *self;
        let _ = shared.sip.hangup(placed.handle).await;
        hold(shared, placed.handle, &mut placed.signals).await;
        media.handle.stop().await;
        shared.calls.remove(&placed.handle);
    }
}

/// How dialling leg B ended.
pub(crate) enum Dialled {
    Answered(Box<Bridged>),
    /// Not reached: the message for the agent's ErrorEvent.
    Failed(String),
}

/// Places leg B's INVITE. Err: it could not even be sent (no trunk for a
/// number, unresolvable host, no RTP ports): the message for the agent.
pub(crate) async fn dial<'a>(
    shared: &'a Shared,
    record_id: &str,
    request: BridgeRequest,
) -> Result<Dialing<'a>, String> {
    tracing::info!(target = %request.label, "transfer: placing the bridged call");
    let placed = match crate::outbound::place(shared, &request.to, None, None).await {
        Ok(p) => p,
        Err(e) => {
            let msg = request.failure(&e.to_string());
            fail(shared, record_id, &request, &msg);
            return Err(msg);
        }
    };
    let handle = placed.handle;
    let timeout = Duration::from_secs(shared.config.calls.transfer_timeout_s);
    let answer = Box::pin(async move {
        let mut placed = placed;
        let mut progress = Vec::new();
        let r = placed
            .wait_answer(shared, timeout, |status| progress.push(status))
            .await;
        (placed, progress, r)
    });
    Ok(Dialing {
        request,
        handle,
        answer,
    })
}

impl Dialing<'_> {
    /// Waits until leg B answers or fails. Call once.
    pub(crate) async fn outcome(&mut self, shared: &Shared, record_id: &str) -> Dialled {
        let (placed, progress, answer) = self.answer.as_mut().await;
        let mut request = self.request.clone();
        request.codes.extend(progress);
        match answer {
            Ok(media) => {
                request.codes.push(200);
                tracing::info!(target = %request.label, codes = ?request.codes, "transfer: bridged call answered");
                shared.records.update(record_id, |r| {
                    r.transfer = Some(request.summary("ok", None))
                });
                Dialled::Answered(Box::new(Bridged {
                    request,
                    placed,
                    media,
                }))
            }
            Err(outcome) => {
                shared.calls.remove(&placed.handle);
                request.codes.extend(outcome.sip_status);
                let why = match (&outcome.sip_status, &outcome.reason) {
                    (Some(s), Some(r)) => format!("{} ({s} {r})", outcome.label),
                    (Some(s), None) => format!("{} ({s})", outcome.label),
                    (None, Some(r)) => format!("{} ({r})", outcome.label),
                    (None, None) => outcome.label.clone(),
                };
                let msg = request.failure(&why);
                fail(shared, record_id, &request, &msg);
                Dialled::Failed(msg)
            }
        }
    }

    /// The caller left while leg B rang: cancel it and wait until it is over
    /// (hanging it up should it have answered meanwhile).
    pub(crate) async fn cancel(mut self, shared: &Shared, record_id: &str) {
        tracing::info!(target = %self.request.label, "caller gone: cancelling the bridged call");
        if let Err(e) = shared.sip.hangup(self.handle).await {
            tracing::debug!(error = %e, "cancel failed");
        }
        if let Dialled::Answered(b) = self.outcome(shared, record_id).await {
            b.abandon(shared).await;
        }
    }
}

fn fail(shared: &Shared, record_id: &str, request: &BridgeRequest, msg: &str) {
    tracing::warn!(target = %request.label, codes = ?request.codes, reason = %msg, "transfer failed; the agent continues");
    metrics::counter!("voicegate_transfers_total", "mode" => "bridge", "result" => "failed")
        .increment(1);
    shared.records.update(record_id, |r| {
        r.transfer = Some(request.summary("failed", Some(msg.to_string())))
    });
}

/// The caller's side of the bridge, as the conversation hands it over.
pub(crate) struct CallerLeg<'a, 'b> {
    pub(crate) call: CallHandle,
    pub(crate) signals: &'b mut mpsc::Receiver<CallSignal>,
    pub(crate) media: &'a MediaControl,
    pub(crate) events: &'b mut mpsc::Receiver<MediaEvent>,
    pub(crate) reoffer: &'b mut Reoffer,
}

/// Holds a linked bridge ([`Bridged::link`]) until either side hangs up,
/// then hangs up the other. Returns why the caller's call ended.
pub(crate) async fn relay(
    shared: &Shared,
    record_id: &str,
    caller: CallerLeg<'_, '_>,
    bridged: Bridged,
) -> EndReason {
    let Bridged {
        request,
        mut placed,
        media,
    } = bridged;
    let CallMedia {
        handle: b_handle,
        events: mut b_events,
        sdp_codec,
        telephone_event,
        sdp_session_id,
    } = media;
    let b_control = b_handle.control();
    let mut b_reoffer = Reoffer::new(sdp_codec, telephone_event, sdp_session_id);
    let (b_call, a_call) = (placed.handle, caller.call);
    let mut ended_by = "caller";
    let (mut a_media_open, mut b_media_open) = (true, true);
    let a_end = loop {
        tokio::select! {
            s = caller.signals.recv() => match s {
                Some(CallSignal::Ended(reason)) => {
                    let _ = shared.sip.hangup(b_call).await;
                    break reason;
                }
                Some(CallSignal::HangUp) => {
                    let _ = shared.sip.hangup(a_call).await;
                }
                Some(CallSignal::Reinvite { body }) => {
                    caller.reoffer.answer(shared, a_call, caller.media, &body).await;
                }
                Some(_) => {}
                None => {
                    let _ = shared.sip.hangup(b_call).await;
                    break EndReason::TransportError;
                }
            },
            s = placed.signals.recv() => match s {
                Some(CallSignal::Ended(reason)) => {
                    tracing::info!(reason = reason.label(), "the transfer target hung up: ending the caller's call");
                    ended_by = "target";
                    let _ = shared.sip.hangup(a_call).await;
                    break hold(shared, a_call, caller.signals).await;
                }
                Some(CallSignal::HangUp) => {
                    let _ = shared.sip.hangup(b_call).await;
                }
                Some(CallSignal::Reinvite { body }) => {
                    b_reoffer.answer(shared, b_call, &b_control, &body).await;
                }
                Some(_) => {}
                None => {
                    ended_by = "target";
                    let _ = shared.sip.hangup(a_call).await;
                    break hold(shared, a_call, caller.signals).await;
                }
            },
            // Both legs' DTMF is relayed by the media layer; their VAD
            // events have no listener any more.
            ev = caller.events.recv(), if a_media_open => a_media_open = ev.is_some(),
            ev = b_events.recv(), if b_media_open => b_media_open = ev.is_some(),
        }
    };
    let _ = caller.media.unbridge();
    // Leg B is over or hung up: wait for its end (BYE answered or timed out).
    if ended_by != "target" {
        hold(shared, b_call, &mut placed.signals).await;
    }
    let stats = b_handle.stop().await;
    shared.calls.remove(&b_call);
    let summary = BridgeSummary {
        codec: format!("{sdp_codec:?}"),
        frames_to_target: stats.bridge.frames_played,
        frames_from_target: stats.bridge.frames_out,
        target_rtp_received: stats.rtp_received,
        target_rtp_sent: stats.rtp_sent,
        ended_by: ended_by.into(),
    };
    tracing::info!(target = %request.label, ?summary, "bridge over");
    shared.records.update(record_id, |r| {
        if let Some(t) = r.transfer.as_mut() {
            t.bridge = Some(summary)
        }
    });
    a_end
}
