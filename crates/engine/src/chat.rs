//! `voicegate chat --agent DIR`: a text loop for agent development (like
//! `vr debug --headless`).
//!
//! The session starts with a StartEvent; each input line becomes a
//! `TextEvent(source="text")`; every event the handler outputs is written as one JSON
//! line in the primfunctions format (`event_to_dict`), `handler_end` included; end of
//! input ends the session with the clean-up StopEvent. A line is read only once the
//! previous handler call finished, so piped input is never treated as barge-in. The
//! session runs through the same [`Session`] state machine as a phone call, with
//! playback finishing instantly and no silence timeouts. Log lines and engine notices
//! (unsupported events, handler errors) go to `tracing`, never to the output.

use std::path::Path;
use std::time::Instant;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::EngineError;
use crate::link::{HandlerLink, LinkEvent, SessionId, SessionInfo};
use crate::session::{Command, Session, SessionConfig};
use crate::worker::{PythonAgent, PythonAgentConfig};

/// Runs `voicegate chat` on the agent in `agent_dir` (creating the sandbox venv on
/// first use). Fails only when the agent cannot be loaded or the output cannot be
/// written; a handler that crashes mid-session ends the session normally.
pub async fn run(
    agent_dir: &Path,
    input: impl AsyncBufRead,
    output: impl AsyncWrite,
) -> Result<(), EngineError> {
    run_agent(PythonAgentConfig::new(agent_dir), input, output).await
}

/// [`run`] with a full agent configuration (interpreter, sandbox directory,
/// `context.variables`, environment). The pool is reduced to one worker.
pub async fn run_agent(
    mut cfg: PythonAgentConfig,
    input: impl AsyncBufRead,
    output: impl AsyncWrite,
) -> Result<(), EngineError> {
    cfg.pool.workers = 1;
    let agent = PythonAgent::load(cfg).await?;
    let info = SessionInfo {
        session_id: Some(SessionId(format!("chat-{}", std::process::id()))),
        ..Default::default()
    };
    let link = agent.open_session(info).await?;
    let result = run_link(link, input, output).await;
    agent.shutdown();
    result
}

/// The chat loop over any handler link (Python or [`crate::native_link`]).
pub async fn run_link(
    mut link: HandlerLink,
    input: impl AsyncBufRead,
    output: impl AsyncWrite,
) -> Result<(), EngineError> {
    let input = std::pin::pin!(input);
    let mut lines = input.lines();
    let mut output = std::pin::pin!(output);
    let session_id = link.session_id().to_string();
    let mut session = Session::new(SessionConfig {
        silence_timeout: None,
        ..SessionConfig::default()
    });
    session.handle_start(Instant::now());
    let mut eof = false;
    loop {
        // Drain the session until quiet: requests to the handler, commands to this
        // "host" (handling a command can queue a request, e.g. the clean-up stop).
        let mut ended = false;
        loop {
            link.forward_requests(&mut session, Instant::now());
            let mut progressed = false;
            while let Some(cmd) = session.poll_command() {
                progressed = true;
                match cmd {
                    // No audio in chat: playback is done as soon as it is queued.
                    Command::Speak { id, .. }
                    | Command::Play { id, .. }
                    | Command::Silence { id, .. } => {
                        session.handle_playback_done(id, Instant::now())
                    }
                    Command::HangUp { .. } | Command::Transfer { .. } => {
                        session.handle_call_ended(Instant::now())
                    }
                    Command::Ended { .. } => ended = true,
                    c @ Command::Log { .. } => c.trace_log(&session_id),
                    other => tracing::debug!(session = %session_id, "chat: {other:?}"),
                }
            }
            if !progressed {
                break;
            }
        }
        if ended {
            return Ok(());
        }
        let want_line = !eof && !session.is_ending() && session.is_idle();
        let deadline = session.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            line = lines.next_line(), if want_line => match line {
                Ok(Some(line)) => {
                    let text = line.strip_suffix('\r').unwrap_or(&line);
                    session.handle_text("text", text, None, Instant::now());
                }
                Ok(None) | Err(_) => {
                    eof = true;
                    session.handle_call_ended(Instant::now());
                }
            },
            ev = link.recv() => {
                let ev = ev.unwrap_or(LinkEvent::Lost { reason: "the handler side went away".into() });
                if let LinkEvent::Event(e) = &ev {
                    let mut line = e.to_json();
                    line.push('\n');
                    output.write_all(line.as_bytes()).await?;
                    output.flush().await?;
                }
                session.handle_link(ev, Instant::now());
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                session.handle_timeout(Instant::now());
            }
        }
    }
}
