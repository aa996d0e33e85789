//! The conversation on an answered call: hosts the engine's [`Session`] for
//! the call, connects it to the agent's handler and carries out the
//! session's commands.
//!
//! The session gets StartEvent on answer, DTMFEvents from RFC 4733, speech
//! onsets (barge-in), TimeoutEvents on silence, and the final StopEvent when
//! the caller hangs up; its HangUp becomes a BYE. AudioEvent (WAV files) and
//! SilenceEvent play through the call's media session; Flush reaches the
//! media edge. Commands that need speech synthesis, transfer, recording,
//! background audio or STT settings are not carried out yet: each is logged
//! at warn level naming what was not done, and a playback item that cannot be
//! played is reported finished at once so the session's turn and silence
//! logic stays correct.

use std::time::Instant;

use tokio::sync::mpsc;
use voicegate_engine::link::{LinkEvent, SessionId, SessionInfo};
use voicegate_engine::session::{
    Command, FlushScope, Role, Session, SessionConfig, Speech, TransferTarget,
};
use voicegate_engine::{HandlerLink, PythonAgent};
use voicegate_media::{MediaControl, MediaEvent, PlayoutEvent, SegmentId};
use voicegate_sip::endpoint::{CallHandle, EndReason};

use crate::Shared;
use crate::bridge::BridgeRequest;
use crate::call::{CallMedia, CallSignal};
use crate::config::NumberFormat;
use crate::records::{MediaSummary, TranscriptEntry, TransferSummary};
use crate::speech::{END_MARKER, Speaker};

/// Which call a conversation runs on.
pub(crate) struct CallContext<'a> {
    pub(crate) call: CallHandle,
    pub(crate) call_id: &'a str,
    pub(crate) record_id: &'a str,
    /// `context.input_data` (outbound calls, transfers).
    pub(crate) input_data: serde_json::Map<String, serde_json::Value>,
    /// Whether the dialog is confirmed (our 2xx ACKed, or we sent the ACK):
    /// in-dialog requests such as REFER wait for it.
    pub(crate) confirmed: bool,
}

/// Runs the agent's conversation on an answered call until both the SIP call
/// and the session are over. Returns why the SIP call ended.
pub(crate) async fn converse(
    shared: &Shared,
    ctx: CallContext<'_>,
    agent: &PythonAgent,
    signals: &mut mpsc::Receiver<CallSignal>,
    media: CallMedia,
) -> EndReason {
    let CallContext {
        call,
        call_id,
        record_id,
        input_data,
        mut confirmed,
    } = ctx;
    let CallMedia {
        handle: media_handle,
        events: mut media_events,
        sdp_codec,
        telephone_event,
        sdp_session_id,
    } = media;
    let mut reoffer = Reoffer::new(sdp_codec, telephone_event, sdp_session_id);
    let control = media_handle.control();
    let mut sip_end: Option<EndReason> = None;
    let mut media_open = true;
    let (loaded_tx, mut loaded_rx) = mpsc::unbounded_channel::<Loaded>();
    let (unspoken_tx, mut unspoken_rx) = mpsc::unbounded_channel::<u64>();
    let stt = match shared.stt.start(shared.config.speech.stt.settings()).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "speech recognition unavailable on this call");
            None
        }
    };
    let mut stt_open = stt.is_some();
    let mut host = Host {
        after_closing: Default::default(),
        closing_lines: Default::default(),
        next_host_item: std::cell::Cell::new(HOST_ITEM | 1),
        speaker: Speaker::start(shared.tts.clone(), control.clone(), unspoken_tx),
        tts_ids: Default::default(),
        stt,
        loaded: loaded_tx,
        refer: Default::default(),
        bridge: Default::default(),
        speech_segments: Default::default(),
        dtmf: Default::default(),
        transfer: Default::default(),
        shared,
        call,
        record_id,
        session_id: std::cell::RefCell::new(call_id.to_string()),
        media: &control,
    };
    let mut agent = agent.clone();
    let mut input_data = input_data;
    // A REFER in flight: where to, SIP codes seen, and its deadline.
    let mut referring: Option<Referral> = None;
    // A bridged transfer's leg B: ringing, then answered and linked.
    let mut dialing: Option<crate::bridge::Dialing> = None;
    let mut bridged: Option<Box<crate::bridge::Bridged>> = None;
    // One session per agent the call meets: an agent-to-agent transfer ends
    // the current session (with its clean-up StopEvent) and opens the next
    // on the same call and media.
    for hop in 1u32.. {
        let session_id = if hop == 1 {
            call_id.to_string()
        } else {
            format!("{call_id}-{hop}")
        };
        host.session_id.replace(session_id.clone());
        let info = SessionInfo {
            session_id: Some(SessionId(session_id)),
            input_data: std::mem::take(&mut input_data),
            ..SessionInfo::default()
        };
        let mut link = match agent.open_session(info).await {
            Ok(link) => link,
            Err(e) => {
                tracing::error!(error = %e, agent = agent.agent_id(), "cannot open a session: hanging up");
                if sip_end.is_none() {
                    sip_end = Some(hang_up_and_wait(shared, call, signals).await);
                }
                break;
            }
        };
        let mut session = Session::new(SessionConfig::default());
        session.handle_start(now());
        loop {
            if host.drain(&mut session, &mut link) {
                break;
            }
            // A transfer waits for the ACK of our 2xx (the dialog must be
            // confirmed before we send requests in it).
            let ready = confirmed && host.refer.borrow().is_some();
            if let Some(req) = ready.then(|| host.refer.take()).flatten() {
                let r = Referral {
                    target: req.label,
                    dial: req.dial,
                    codes: Vec::new(),
                    deadline: tokio::time::Instant::now() + REFER_TIMEOUT,
                };
                match shared.sip.refer(call, &req.refer_to).await {
                    Ok(()) => {
                        tracing::info!(target = %r.target, refer_to = %req.refer_to, "transfer: REFER sent");
                        referring = Some(r);
                    }
                    Err(e) => {
                        let fallback =
                            r.finish(shared, record_id, call, Err(format!("REFER not sent: {e}")));
                        host.bridge.replace(fallback);
                    }
                }
                continue;
            }
            // A bridged transfer: dial leg B while the session goes on.
            if sip_end.is_none()
                && dialing.is_none()
                && bridged.is_none()
                && let Some(req) = host.bridge.take()
            {
                match crate::bridge::dial(shared, record_id, req).await {
                    Ok(d) => dialing = Some(d),
                    Err(msg) => session.handle_transfer_failed(&msg, now()),
                }
                continue;
            }
            let deadline = session.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                ev = link.recv() => {
                    let ev = ev.unwrap_or_else(|| LinkEvent::Lost { reason: "handler link closed".into() });
                    session.handle_link(ev, now());
                }
                signal = signals.recv(), if sip_end.is_none() => match signal {
                    Some(CallSignal::Confirmed) => {
                        tracing::debug!("call confirmed by ACK");
                        confirmed = true;
                    }
                    // A retransmitted answer or late provisional: nothing to do.
                    Some(CallSignal::Progress { .. } | CallSignal::Answered { .. }) => {}
                    Some(CallSignal::Reinvite { body }) => {
                        reoffer.answer(shared, call, &control, &body).await;
                    }
                    Some(CallSignal::Refer(ev)) => {
                        if let Some(r) = referring.as_mut()
                            && let Some(done) = r.progress(&ev)
                        {
                            let r = referring.take().expect("checked");
                            host.bridge.replace(r.finish(shared, record_id, call, done));
                        }
                    }
                    Some(CallSignal::Ended(reason)) => {
                        tracing::debug!(reason = reason.label(), "SIP call over; final StopEvent to the handler");
                        sip_end = Some(reason);
                        host.transfer.take();
                        host.bridge.take();
                        if let Some(d) = dialing.take() {
                            d.cancel(shared, record_id).await;
                        }
                        session.handle_call_ended(now());
                    }
                    Some(CallSignal::HangUp) => {
                        if let Err(e) = shared.sip.hangup(call).await {
                            tracing::debug!(error = %e, "hangup failed");
                        }
                    }
                    None => {
                        sip_end = Some(EndReason::TransportError);
                        host.transfer.take();
                        host.bridge.take();
                        if let Some(d) = dialing.take() {
                            d.cancel(shared, record_id).await;
                        }
                        session.handle_call_ended(now());
                    }
                },
                _ = sleep_until(deadline) => session.handle_timeout(now()),
                _ = sleep_until(referring.as_ref().map(|r| r.deadline)), if referring.is_some() => {
                    let r = referring.take().expect("guarded");
                    host.bridge.replace(r.finish(shared, record_id, call, Err("no final NOTIFY within 32 s".into())));
                }
                dialled = next_dialled(&mut dialing, shared, record_id), if dialing.is_some() => {
                    dialing = None;
                    match dialled {
                        crate::bridge::Dialled::Answered(b) => match b.link(shared, record_id, &control).await {
                            Ok(b) => {
                                // The agent leaves: its speech stops, and the
                                // session ends with its final StopEvent.
                                host.speaker.flush(true);
                                host.stt = None;
                                stt_open = false;
                                bridged = Some(b);
                                session.handle_call_ended(now());
                            }
                            Err(msg) => session.handle_transfer_failed(&msg, now()),
                        },
                        crate::bridge::Dialled::Failed(msg) => session.handle_transfer_failed(&msg, now()),
                    }
                }
                Some(l) = loaded_rx.recv() => host.play_loaded(&mut session, l),
                Some(id) = unspoken_rx.recv() => host.playback_done(&mut session, id, now()),
                ev = next_stt(&mut host.stt), if stt_open => match ev {
                    Some(Ok(voicegate_speech::SttEvent::Final(t))) => {
                        let text = t.text.trim();
                        // Whisper can return bare punctuation for a noise burst.
                        if text.chars().any(char::is_alphanumeric) {
                            tracing::info!(text = %text, "caller said");
                            session.handle_text("speech", text, t.language.as_deref(), now());
                        }
                    }
                    Some(Ok(voicegate_speech::SttEvent::Partial(_))) => {}
                    Some(Err(e)) => tracing::warn!(error = %e, "speech recognition error"),
                    None => {
                        tracing::warn!("speech recognition ended");
                        stt_open = false;
                    }
                },
                ev = media_events.recv(), if media_open => match ev {
                    Some(ev) => host.media_event(&mut session, ev),
                    None => media_open = false,
                },
            }
        }
        if bridged.is_some() {
            break;
        }
        let Some((next, data)) = host.transfer.take() else {
            break;
        };
        if sip_end.is_some() {
            break;
        }
        let Some(next_agent) = shared.agents.get(&next) else {
            // Checked when the transfer was accepted; agents are never unloaded.
            break;
        };
        tracing::info!(from = agent.agent_id(), to = %next, "call handed to another agent");
        shared.records.update(record_id, |r| r.agent = next.clone());
        agent = next_agent.clone();
        input_data = match data {
            serde_json::Value::Object(map) => map,
            serde_json::Value::Null => Default::default(),
            other => {
                let mut map = serde_json::Map::new();
                map.insert("data".into(), other);
                map
            }
        };
        // Audio the previous agent queued does not belong to the next one.
        let _ = control.clear();
    }
    // The session is over. A leg B still ringing is not wanted any more; an
    // answered one now holds the call until either side hangs up.
    if let Some(d) = dialing.take() {
        d.cancel(shared, record_id).await;
    }
    if let Some(b) = bridged.take() {
        if sip_end.is_none() {
            let caller = crate::bridge::CallerLeg {
                call,
                signals: &mut *signals,
                media: &control,
                events: &mut media_events,
                reoffer: &mut reoffer,
            };
            sip_end = Some(crate::bridge::relay(shared, record_id, caller, *b).await);
        } else {
            b.abandon(shared).await;
        }
    }
    let stats = media_handle.stop().await;
    tracing::info!(
        rtp_received = stats.rtp_received,
        rtp_sent = stats.rtp_sent,
        lost = stats.inbound_lost,
        jitter_ms = stats.inbound_jitter_ms,
        dtmf = stats.dtmf_received,
        events_dropped = stats.events_dropped,
        "media stopped"
    );
    let summary = MediaSummary {
        codec: format!("{sdp_codec:?}"),
        rtp_received: stats.rtp_received,
        rtp_sent: stats.rtp_sent,
        inbound_lost: stats.inbound_lost,
        inbound_jitter_ms: stats.inbound_jitter_ms,
        speech_segments: host.speech_segments.get(),
        dtmf: host.dtmf.take(),
    };
    shared
        .records
        .update(record_id, |r| r.media = Some(summary));
    // The session is over; the SIP call may still be up (a HangUp is in flight).
    match sip_end {
        Some(reason) => reason,
        None => crate::call::hold(shared, call, signals).await,
    }
}

/// What the session's commands act on.
/// How long a REFER may take to reach a final NOTIFY (64*T1 with defaults).
const REFER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(32);

/// A transfer by REFER (RFC 3515) in flight.
struct Referral {
    target: String,
    /// What the bridge fallback dials (number or URI).
    dial: String,
    /// SIP codes seen: the REFER's answer, then each NOTIFY's sipfrag status.
    codes: Vec<u16>,
    deadline: tokio::time::Instant,
}

impl Referral {
    /// Follows a REFER event; `Some` once the transfer's fate is known
    /// (Ok: the transferee reached the target).
    fn progress(&mut self, ev: &voicegate_sip::refer::ReferEvent) -> Option<Result<(), String>> {
        use voicegate_sip::refer::ReferEvent;
        match ev {
            ReferEvent::Accepted { status, .. } => {
                self.codes.push(*status);
                None
            }
            ReferEvent::Failed { status, reason, .. } => {
                self.codes.extend(status);
                Some(Err(match status {
                    Some(s) => format!("REFER refused: {s} {reason}"),
                    None => format!("REFER failed: {reason}"),
                }))
            }
            ReferEvent::Notify {
                status,
                reason,
                terminated,
                ..
            } => {
                self.codes.extend(status);
                match status {
                    Some(s) if (200..300).contains(s) => Some(Ok(())),
                    Some(s) if *s >= 300 => Some(Err(format!("target answered {s} {reason}"))),
                    _ if *terminated => {
                        Some(Err("subscription ended without a final status".into()))
                    }
                    _ => None,
                }
            }
            ReferEvent::Incoming { .. } => None,
        }
    }

    /// Success: our part of the call is over (BYE). Failure (refused,
    /// failed or timed out): the bridge to dial instead, carrying the codes
    /// seen and why the REFER failed.
    fn finish(
        self,
        shared: &Shared,
        record_id: &str,
        call: CallHandle,
        result: Result<(), String>,
    ) -> Option<BridgeRequest> {
        match result {
            Ok(()) => {
                tracing::info!(target = %self.target, codes = ?self.codes, "transfer succeeded: leaving the call");
                metrics::counter!("voicegate_transfers_total", "mode" => "refer", "result" => "ok")
                    .increment(1);
                shared.records.update(record_id, |r| {
                    r.transfer = Some(TransferSummary {
                        target: self.target.clone(),
                        mode: "refer".into(),
                        sip_codes: self.codes.clone(),
                        result: "ok".into(),
                        reason: None,
                        bridge: None,
                    })
                });
                hang_up(shared, call);
                None
            }
            Err(why) => {
                tracing::warn!(target = %self.target, codes = ?self.codes, %why, "REFER failed: bridging the call instead");
                metrics::counter!("voicegate_transfers_total", "mode" => "refer", "result" => "failed")
                    .increment(1);
                Some(BridgeRequest {
                    label: self.target,
                    to: self.dial,
                    codes: self.codes,
                    refer_failure: Some(why),
                })
            }
        }
    }
}

/// Answers re-INVITEs of an established call.
pub(crate) struct Reoffer {
    codec: voicegate_sdp::Codec,
    telephone_event: bool,
    session_id: u64,
    version: u64,
}

impl Reoffer {
    pub(crate) fn new(codec: voicegate_sdp::Codec, telephone_event: bool, session_id: u64) -> Self {
        Reoffer {
            codec,
            telephone_event,
            session_id,
            version: 0,
        }
    }

    /// Answers a re-INVITE's offer: same address, port and codec (the media
    /// session keeps its codec for the call), direction mirrored (RFC 3264
    /// 6.1: `sendonly` hold is answered `recvonly`), a new `o=` version (RFC
    /// 3264 8). A new peer address moves the media. No acceptable stream:
    /// 488, and the call goes on as before.
    pub(crate) async fn answer(
        &mut self,
        shared: &Shared,
        call: CallHandle,
        media: &MediaControl,
        body: &[u8],
    ) {
        let mut codecs = vec![self.codec];
        if self.telephone_event {
            codecs.push(voicegate_sdp::Codec::TelephoneEvent);
        }
        let local = media.local_rtp_addr();
        let ip = shared.config.media.advertised_ip.unwrap_or(local.ip());
        let answered = std::str::from_utf8(body)
            .ok()
            .and_then(|t| t.parse::<voicegate_sdp::SessionDescription>().ok())
            .ok_or_else(|| "malformed SDP".to_string())
            .and_then(|offer| {
                let prefs =
                    voicegate_sdp::CodecPreference::new(codecs).map_err(|e| e.to_string())?;
                let mut params = voicegate_sdp::AnswerParams::new(ip, local.port(), prefs);
                params.session_id = self.session_id;
                params.session_version = self.version + 1;
                voicegate_sdp::answer(&offer, &params).map_err(|e| e.to_string())
            });
        match answered {
            Ok(n) => {
                self.version += 1;
                let remote = n.media.remote_rtp;
                tracing::info!(direction = ?n.media.direction, %remote, "re-INVITE answered");
                if !remote.ip().is_unspecified() {
                    let _ = media.set_remote(remote, Some(n.media.remote_rtcp));
                }
                if let Err(e) = shared
                    .sip
                    .answer_reinvite(call, n.answer.to_string().into_bytes())
                    .await
                {
                    tracing::debug!(error = %e, "re-INVITE answer failed");
                }
            }
            Err(reason) => {
                tracing::warn!(%reason, "re-INVITE offer refused with 488; the call goes on");
                let _ = shared
                    .sip
                    .reject_reinvite(call, 488, "Not Acceptable Here")
                    .await;
            }
        }
    }
}

async fn next_dialled(
    dialing: &mut Option<crate::bridge::Dialing<'_>>,
    shared: &Shared,
    record_id: &str,
) -> crate::bridge::Dialled {
    match dialing {
        Some(d) => d.outcome(shared, record_id).await,
        None => std::future::pending().await,
    }
}

async fn next_stt(
    stt: &mut Option<voicegate_speech::SttSession>,
) -> Option<Result<voicegate_speech::SttEvent, voicegate_speech::SpeechError>> {
    match stt {
        Some(s) => s.next_event().await,
        None => std::future::pending().await,
    }
}

/// Set on playback ids the host queues itself (closing speech): their end
/// is not the session's business.
const HOST_ITEM: u64 = 1 << 62;

/// What to do once closing speech has been said.
enum AfterClosing {
    HangUp,
    Refer(ReferRequest),
    Bridge(BridgeRequest),
}

/// A transfer by REFER, before it is sent.
struct ReferRequest {
    /// The number or URI as the agent gave it.
    label: String,
    /// The Refer-To URI.
    refer_to: String,
    /// What a bridge falls back to dialling (number or URI).
    dial: String,
}

/// Audio for an AudioEvent, loaded.
struct Loaded {
    id: u64,
    interruptible: bool,
    path: String,
    result: Result<(Vec<i16>, u32), String>,
}

struct Host<'a> {
    loaded: mpsc::UnboundedSender<Loaded>,
    /// Synthesises the agent's speech into playout.
    speaker: Speaker,
    /// Playback ids that are streamed speech (done at their end marker).
    tts_ids: std::cell::RefCell<std::collections::HashSet<u64>>,
    /// The caller's speech recognition, when it could be started.
    stt: Option<voicegate_speech::SttSession>,
    /// A transfer by REFER to start.
    refer: std::cell::RefCell<Option<ReferRequest>>,
    /// A bridged transfer to start (mode bridge, or a failed REFER).
    bridge: std::cell::RefCell<Option<BridgeRequest>>,
    /// Closing speech being said, and what follows it.
    after_closing: std::cell::RefCell<Option<(u64, AfterClosing)>>,
    /// Closing speech said on the session's behalf (not in its transcript):
    /// added to the call record's transcript after the session's lines.
    closing_lines: std::cell::RefCell<Vec<String>>,
    next_host_item: std::cell::Cell<u64>,
    /// An accepted agent-to-agent transfer: the next agent and its input.
    transfer: std::cell::RefCell<Option<(String, serde_json::Value)>>,
    /// Speech segments and DTMF digits seen, for the call record.
    speech_segments: std::cell::Cell<u32>,
    dtmf: std::cell::RefCell<String>,
    shared: &'a Shared,
    call: CallHandle,
    record_id: &'a str,
    session_id: std::cell::RefCell<String>,
    media: &'a MediaControl,
}

impl Host<'_> {
    /// A playback item ended (played, cut or failed).
    fn playback_done(&self, session: &mut Session, id: u64, t: Instant) {
        if id & HOST_ITEM == 0 {
            session.handle_playback_done(id, t);
            return;
        }
        let matches = self
            .after_closing
            .borrow()
            .as_ref()
            .is_some_and(|(i, _)| *i == id);
        if !matches {
            return;
        }
        if let Some((_, then)) = self.after_closing.take() {
            self.carry_out(then);
        }
    }

    /// Hangs up or starts the transfer (the loop sends it).
    fn carry_out(&self, then: AfterClosing) {
        match then {
            AfterClosing::HangUp => hang_up(self.shared, self.call),
            AfterClosing::Refer(r) => {
                self.refer.replace(Some(r));
            }
            AfterClosing::Bridge(b) => {
                self.bridge.replace(Some(b));
            }
        }
    }

    /// Says `closing` (not interruptible) first, if any, then does `then`.
    fn close_then(&self, closing: Option<Speech>, then: AfterClosing) {
        match closing {
            Some(closing) => self.say_closing(closing, then),
            None => self.carry_out(then),
        }
    }

    /// Says `closing` (not interruptible), then does `then`.
    fn say_closing(&self, closing: Speech, then: AfterClosing) {
        let id = self.next_host_item.get();
        self.next_host_item.set(id + 1);
        self.tts_ids.borrow_mut().insert(id);
        self.closing_lines.borrow_mut().push(closing.text.clone());
        self.speaker.speak(id, false, closing);
        self.after_closing.replace(Some((id, then)));
    }

    /// The Refer-To URI for a phone number: through the first trunk, in
    /// its number format; without a trunk, a `tel:` URI the caller's side
    /// routes (RFC 3966).
    fn refer_to_number(&self, number: &str) -> String {
        let digits = number.trim().trim_start_matches('+');
        match self.shared.config.trunks.first() {
            Some(t) => match t.number_format {
                NumberFormat::E164 => format!("sip:+{digits}@{}:{}", t.host, t.port),
                NumberFormat::Sip => format!("sip:{digits}@{}:{}", t.host, t.port),
                NumberFormat::Tel => format!("tel:+{digits}"),
            },
            None => format!("tel:+{digits}"),
        }
    }

    /// Feeds a media event to the session.
    fn media_event(&self, session: &mut Session, ev: MediaEvent) {
        let t = now();
        match ev {
            MediaEvent::SpeechStart { at } => {
                tracing::debug!(at_ms = at.as_millis() as u64, "caller speech started");
                self.speech_segments.set(self.speech_segments.get() + 1);
                session.handle_speech_started(t);
            }
            MediaEvent::SpeechEnd { at } => {
                tracing::debug!(at_ms = at.as_millis() as u64, "caller speech ended");
                if let Some(stt) = self.stt.as_ref() {
                    stt.end_utterance();
                }
            }
            MediaEvent::BargeIn { at } => {
                tracing::debug!(at_ms = at.as_millis() as u64, "barge-in: playout flushed");
                // The media layer reports the flush (and the Interrupted
                // segments after it) before SpeechStart. Tell the session
                // now, while its item still counts as playing: it barges in,
                // cancelling the turn and flushing the speech still being
                // synthesised. Were it told only at SpeechStart, the
                // Interrupted events would have closed the item first, and
                // the rest of a streamed reply would play on.
                session.handle_speech_started(t);
            }
            // Speech recognition arrives with the speech pipeline.
            MediaEvent::SpeechFrame { pcm, .. } => {
                // Never blocks: a full queue drops the frame and counts it.
                if let Some(stt) = self.stt.as_ref() {
                    stt.push_audio(pcm.to_vec());
                }
            }
            MediaEvent::Dtmf(d) => {
                tracing::debug!(digit = %d.digit, duration_ms = d.duration.as_millis() as u64, "DTMF to the session");
                self.dtmf.borrow_mut().push(d.digit);
                session.handle_dtmf(&d.digit.to_string(), t);
            }
            // A streamed speech item is done when its end marker has played
            // (see crate::speech); its pieces' own Finished events are not.
            MediaEvent::Playout(PlayoutEvent::Finished { id, .. }) => {
                if id.0 & END_MARKER != 0 {
                    self.playback_done(session, id.0 & !END_MARKER, t);
                } else if !self.tts_ids.borrow().contains(&id.0) {
                    self.playback_done(session, id.0, t);
                }
            }
            MediaEvent::Playout(PlayoutEvent::Rejected { id })
            | MediaEvent::Playout(PlayoutEvent::Interrupted { id, .. }) => {
                self.playback_done(session, id.0 & !END_MARKER, t)
            }
            MediaEvent::Playout(PlayoutEvent::Started { .. }) => {}
            MediaEvent::Latched { remote } => tracing::debug!(%remote, "media latched"),
            MediaEvent::RemoteBye => tracing::debug!("peer sent RTCP BYE"),
        }
    }

    /// Queues loaded AudioEvent audio, or reports the item done when it
    /// could not be loaded.
    fn play_loaded(&self, session: &mut Session, l: Loaded) {
        let t = now();
        let played = l.result.and_then(|(pcm, rate)| {
            self.media
                .play(SegmentId(l.id), l.interruptible, pcm, rate)
                .map_err(|e| e.to_string())
        });
        if let Err(e) = played {
            tracing::warn!(path = %l.path, error = %e, "AudioEvent not played");
            session.handle_playback_done(l.id, t);
        }
    }

    /// Forwards the session's requests to the handler and carries out its
    /// commands; true once the session has ended.
    fn drain(&self, session: &mut Session, link: &mut HandlerLink) -> bool {
        loop {
            let t = now();
            link.forward_requests(session, t);
            let Some(cmd) = session.poll_command() else {
                return false;
            };
            if self.command(session, cmd, t) {
                return true;
            }
        }
    }

    fn command(&self, session: &mut Session, cmd: Command, t: Instant) -> bool {
        match cmd {
            Command::Speak {
                id,
                speech,
                interruptible,
            } => {
                self.tts_ids.borrow_mut().insert(id);
                self.speaker.speak(id, interruptible, speech);
            }
            Command::Play {
                id,
                path,
                interruptible,
                looped,
            } => {
                if looped {
                    tracing::warn!(%path, "AudioEvent loop=True not supported yet: plays once");
                }
                // Loading (file or http fetch) runs off the call's task; the
                // result comes back through `loaded`.
                let tx = self.loaded.clone();
                let client = self.shared.http_client.clone();
                tokio::spawn(async move {
                    let result = load_audio(&client, &path).await;
                    let _ = tx.send(Loaded {
                        id,
                        interruptible,
                        path,
                        result,
                    });
                });
            }
            Command::Silence { id, duration } => {
                let rate = self.media.playout_rate_hz();
                let samples = (duration.as_millis() as u64 * u64::from(rate) / 1000) as usize;
                if let Err(e) = self.media.play(SegmentId(id), true, vec![0; samples], rate) {
                    tracing::warn!(error = %e, "silence not queued");
                    session.handle_playback_done(id, t);
                }
            }
            Command::Flush { scope } => {
                self.speaker.flush(scope == FlushScope::All);
                let r = match scope {
                    FlushScope::Interruptible => self.media.flush(),
                    FlushScope::All => self.media.clear(),
                };
                if let Err(e) = r {
                    tracing::debug!(error = %e, "flush after media stopped");
                }
            }
            Command::HangUp { closing, .. } => {
                tracing::info!("agent hangs up");
                self.close_then(closing, AfterClosing::HangUp);
            }
            Command::Transfer {
                target: TransferTarget::Agent { agent_id, data, .. },
                ..
            } => {
                if self.shared.agents.contains_key(&agent_id) {
                    tracing::info!(to = %agent_id, "transfer to another agent: ending this session");
                    self.transfer.replace(Some((agent_id, data)));
                    session.handle_call_ended(t);
                } else {
                    tracing::error!(to = %agent_id, "transfer to an agent that is not loaded on this gateway: hanging up");
                    hang_up(self.shared, self.call);
                }
            }
            Command::Transfer {
                target,
                mode,
                closing,
                ..
            } => {
                let (label, refer_to) = match &target {
                    TransferTarget::Phone { number } => {
                        (number.clone(), self.refer_to_number(number))
                    }
                    TransferTarget::Sip { uri } => (uri.clone(), uri.clone()),
                    TransferTarget::Agent { .. } => {
                        unreachable!("agent transfers are matched above")
                    }
                };
                let then = if mode == Some(voicegate_engine::session::TransferMode::Bridge) {
                    AfterClosing::Bridge(BridgeRequest {
                        to: label.clone(),
                        label,
                        codes: Vec::new(),
                        refer_failure: None,
                    })
                } else {
                    AfterClosing::Refer(ReferRequest {
                        dial: label.clone(),
                        label,
                        refer_to,
                    })
                };
                self.close_then(closing, then);
            }
            Command::StartRecording { .. } | Command::StopRecording => {
                tracing::warn!("recording events not supported yet by the gateway; ignored")
            }
            Command::UpdateBackground { .. } => {
                tracing::warn!("UpdateAudioSettingsEvent not supported yet by the gateway; ignored")
            }
            Command::SttSettings(update) => {
                let settings = voicegate_speech::SttSettings {
                    language: update.language.clone(),
                    prompt: update.prompt.clone(),
                    endpointing: update
                        .endpointing
                        .and_then(voicegate_speech::stt::Endpointing::from_wire),
                };
                match self.stt.as_ref() {
                    Some(stt) => {
                        stt.update_settings(settings);
                    }
                    None => tracing::warn!(
                        "STTUpdateSettingsEvent ignored: no speech recognition on this call"
                    ),
                }
            }
            Command::External {
                agent_id,
                session_id: target,
                name,
                ..
            } => {
                tracing::warn!(%agent_id, session = %target, %name, "ExternalEvent delivery not supported yet by the gateway; dropped")
            }
            Command::Metric { name, .. } => {
                metrics::counter!("voicegate_handler_metrics_total", "name" => name).increment(1);
            }
            cmd @ Command::Log { .. } => cmd.trace_log(&self.session_id.borrow()),
            Command::Ended {
                output_data,
                transcript,
                cleanup_timed_out,
                reason,
            } => {
                tracing::info!(
                    ?reason,
                    cleanup_timed_out,
                    transcript_lines = transcript.len(),
                    output_data = %output_data,
                    "session ended"
                );
                // After an agent-to-agent transfer the record holds every
                // session's transcript in order and the last output_data.
                self.shared.records.update(self.record_id, |r| {
                    r.output_data = output_data;
                    r.transcript
                        .extend(transcript.into_iter().map(|l| TranscriptEntry {
                            role: match l.role {
                                Role::User => "caller".into(),
                                Role::Agent => "agent".into(),
                            },
                            text: l.text,
                        }));
                    r.transcript
                        .extend(self.closing_lines.take().into_iter().map(|text| {
                            TranscriptEntry {
                                role: "agent".into(),
                                text,
                            }
                        }));
                });
                return true;
            }
        }
        false
    }
}

/// The largest audio file an AudioEvent may load (about 10 minutes of
/// 16-bit 8 kHz mono, or 1 minute at 48 kHz stereo).
const MAX_AUDIO_BYTES: usize = 12 * 1024 * 1024;

/// Loads an AudioEvent's audio: a local path or an http(s) URL holding a WAV
/// file (16-bit PCM or 32-bit float, any rate, mono or stereo). Other
/// formats (MP3...) are refused with a clear error.
async fn load_audio(client: &reqwest::Client, path: &str) -> Result<(Vec<i16>, u32), String> {
    let bytes = if path.starts_with("http://") || path.starts_with("https://") {
        let resp = client
            .get(path)
            .send()
            .await
            .map_err(|e| format!("fetch failed: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("fetch failed: HTTP {}", resp.status()));
        }
        if resp
            .content_length()
            .is_some_and(|n| n as usize > MAX_AUDIO_BYTES)
        {
            return Err(format!("larger than {MAX_AUDIO_BYTES} bytes"));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("fetch failed: {e}"))?;
        if body.len() > MAX_AUDIO_BYTES {
            return Err(format!("larger than {MAX_AUDIO_BYTES} bytes"));
        }
        body.to_vec()
    } else {
        let path = path.strip_prefix("file://").unwrap_or(path).to_string();
        tokio::task::spawn_blocking(move || {
            let meta = std::fs::metadata(&path).map_err(|e| e.to_string())?;
            if meta.len() as usize > MAX_AUDIO_BYTES {
                return Err(format!("larger than {MAX_AUDIO_BYTES} bytes"));
            }
            std::fs::read(&path).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())??
    };
    decode_wav(&bytes)
}

/// Decodes a WAV file to mono 16-bit samples and its rate.
fn decode_wav(bytes: &[u8]) -> Result<(Vec<i16>, u32), String> {
    if !bytes.starts_with(b"RIFF") {
        return Err("not a WAV file (only WAV audio is supported)".into());
    }
    let reader = hound::WavReader::new(std::io::Cursor::new(bytes)).map_err(|e| e.to_string())?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels.max(1));
    let samples: Vec<i16> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, 16) => reader
            .into_samples::<i16>()
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?,
        (hound::SampleFormat::Float, 32) => reader
            .into_samples::<f32>()
            .map(|s| s.map(|v| (v.clamp(-1.0, 1.0) * 32767.0) as i16))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?,
        (format, bits) => {
            return Err(format!(
                "unsupported WAV sample format {format:?}/{bits} bits"
            ));
        }
    };
    let mono = samples
        .chunks(channels)
        .map(|c| (c.iter().map(|&s| i32::from(s)).sum::<i32>() / c.len() as i32) as i16)
        .collect();
    Ok((mono, spec.sample_rate))
}

fn hang_up(shared: &Shared, call: CallHandle) {
    let sip = shared.sip.clone();
    tokio::spawn(async move {
        if let Err(e) = sip.hangup(call).await {
            tracing::debug!(%call, error = %e, "hangup failed (call already over)");
        }
    });
}

async fn hang_up_and_wait(
    shared: &Shared,
    call: CallHandle,
    signals: &mut mpsc::Receiver<CallSignal>,
) -> EndReason {
    if let Err(e) = shared.sip.hangup(call).await {
        tracing::debug!(error = %e, "hangup failed");
    }
    crate::call::hold(shared, call, signals).await
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
