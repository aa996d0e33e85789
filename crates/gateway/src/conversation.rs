//! The conversation on an answered call: hosts the engine's [`Session`] for
//! the call, connects it to the agent's handler and carries out the
//! session's commands.
//!
//! Today the session gets StartEvent on answer, the final StopEvent when the
//! caller hangs up, TimeoutEvents on silence, and its HangUp becomes a BYE.
//! Commands that need the media and speech pipelines (speak, play, flush,
//! transfer, recording, background audio, STT settings) are not carried out
//! yet: each is logged at warn level naming what was not done, and playback
//! items are reported finished at once so the session's turn and silence
//! logic stays correct.

use std::time::Instant;

use tokio::sync::mpsc;
use voicegate_engine::link::{LinkEvent, SessionId, SessionInfo};
use voicegate_engine::session::{Command, Session, SessionConfig};
use voicegate_engine::{HandlerLink, PythonAgent};
use voicegate_sip::endpoint::{CallHandle, EndReason};

use crate::Shared;
use crate::call::{CallMedia, CallSignal};

/// Runs the agent's conversation on an answered call until both the SIP call
/// and the session are over. Returns why the SIP call ended.
pub(crate) async fn converse(
    shared: &Shared,
    call: CallHandle,
    call_id: &str,
    agent: &PythonAgent,
    signals: &mut mpsc::Receiver<CallSignal>,
    media: CallMedia,
) -> EndReason {
    let info = SessionInfo {
        session_id: Some(SessionId(call_id.to_string())),
        ..SessionInfo::default()
    };
    let mut link = match agent.open_session(info).await {
        Ok(link) => link,
        Err(e) => {
            tracing::error!(error = %e, agent = agent.agent_id(), "cannot open a session: hanging up");
            return hang_up_and_wait(shared, call, signals).await;
        }
    };
    let mut session = Session::new(SessionConfig::default());
    let session_id = call_id.to_string();
    session.handle_start(now());
    let mut sip_end: Option<EndReason> = None;
    let mut rtp_buf = [0u8; 2048];
    let mut rtp_packets: u64 = 0;
    loop {
        if drain(shared, call, &session_id, &mut session, &mut link) {
            break;
        }
        let deadline = session.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            ev = link.recv() => {
                let ev = ev.unwrap_or_else(|| LinkEvent::Lost { reason: "handler link closed".into() });
                session.handle_link(ev, now());
            }
            signal = signals.recv(), if sip_end.is_none() => match signal {
                Some(CallSignal::Confirmed) => tracing::debug!("call confirmed by ACK"),
                Some(CallSignal::Ended(reason)) => {
                    tracing::debug!(reason = reason.label(), rtp_packets, "SIP call over; final StopEvent to the handler");
                    sip_end = Some(reason);
                    session.handle_call_ended(now());
                }
                Some(CallSignal::HangUp) => {
                    if let Err(e) = shared.sip.hangup(call).await {
                        tracing::debug!(error = %e, "hangup failed");
                    }
                }
                None => {
                    sip_end = Some(EndReason::TransportError);
                    session.handle_call_ended(now());
                }
            },
            _ = sleep_until(deadline) => session.handle_timeout(now()),
            r = media.rtp.recv_from(&mut rtp_buf), if sip_end.is_none() => {
                if r.is_ok() {
                    rtp_packets += 1;
                }
            }
        }
    }
    // The session is over; the SIP call may still be up (a HangUp is in flight).
    match sip_end {
        Some(reason) => reason,
        None => wait_for_end(signals).await,
    }
}

/// Forwards the session's requests to the handler and carries out its
/// commands; true once the session has ended.
fn drain(
    shared: &Shared,
    call: CallHandle,
    session_id: &str,
    session: &mut Session,
    link: &mut HandlerLink,
) -> bool {
    loop {
        let t = now();
        link.forward_requests(session, t);
        let Some(cmd) = session.poll_command() else {
            return false;
        };
        match cmd {
            Command::Speak { id, speech, .. } => {
                tracing::warn!(text = %speech.text, "agent speech not played: this build has no TTS/media pipeline on calls yet");
                session.handle_playback_done(id, t);
            }
            Command::Play { id, path, .. } => {
                tracing::warn!(%path, "AudioEvent not played: no media pipeline on calls yet");
                session.handle_playback_done(id, t);
            }
            Command::Silence { id, duration } => {
                tracing::debug!(?duration, "silence");
                session.handle_playback_done(id, t);
            }
            Command::Flush { scope } => tracing::debug!(?scope, "flush (nothing queued)"),
            Command::HangUp { closing, .. } => {
                if let Some(closing) = closing {
                    tracing::warn!(text = %closing.text, "closing speech not played: no TTS/media pipeline on calls yet");
                }
                tracing::info!("agent hangs up");
                hang_up(shared, call);
            }
            Command::Transfer { target, mode, .. } => {
                tracing::error!(
                    ?target,
                    ?mode,
                    "TransferSessionEvent not supported yet by the gateway: hanging up instead"
                );
                hang_up(shared, call);
            }
            Command::StartRecording { .. } | Command::StopRecording => {
                tracing::warn!("recording events not supported yet by the gateway; ignored")
            }
            Command::UpdateBackground { .. } => {
                tracing::warn!("UpdateAudioSettingsEvent not supported yet by the gateway; ignored")
            }
            Command::SttSettings(_) => {
                tracing::warn!("STTUpdateSettingsEvent not supported yet by the gateway; ignored")
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
            cmd @ Command::Log { .. } => cmd.trace_log(session_id),
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
                return true;
            }
        }
    }
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
    wait_for_end(signals).await
}

async fn wait_for_end(signals: &mut mpsc::Receiver<CallSignal>) -> EndReason {
    loop {
        match signals.recv().await {
            Some(CallSignal::Ended(reason)) => return reason,
            Some(_) => {}
            None => return EndReason::TransportError,
        }
    }
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
