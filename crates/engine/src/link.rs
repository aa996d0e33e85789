//! The connection between one session and its handler (Python worker or native).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::EngineError;
use crate::event::{Event, Object};
use crate::session::Session;

/// A session id (the `context.session_id` the handler sees).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub String);

impl SessionId {
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for SessionId {
    fn from(s: &str) -> Self {
        SessionId(s.to_owned())
    }
}

/// An agent id (`context.agent_id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AgentId(pub String);

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the handler's `Context` is built from when a session opens.
#[derive(Debug, Clone, Default)]
pub struct SessionInfo {
    /// `context.session_id`.
    pub session_id: Option<SessionId>,
    /// `context.input_data` (read-only input from whoever started the session).
    pub input_data: Object,
    /// Initial `context.data`.
    pub data: Object,
}

/// A request from the engine to the handler side of one session.
#[derive(Debug, Clone)]
pub enum LinkRequest {
    /// Run the handler on this input event (one handler call).
    Deliver(Event),
    /// Cancel the running handler call and the session's interruptible tasks.
    Cancel,
    /// Session end: run the handler once more on this `StopEvent` for clean-up,
    /// within `budget`, then close (answered by [`LinkEvent::Closed`]).
    Stop {
        /// The final `StopEvent`.
        event: Event,
        /// The clean-up budget (primfunctions' default is 30 s).
        budget: Duration,
    },
}

/// What the handler side sends back for one session.
// Nearly every LinkEvent is an `Event`: boxing it would add an allocation per
// handler output and save no space.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum LinkEvent {
    /// An output event (a yielded event, a background event, `handler_end`, ...).
    Event(Event),
    /// Clean-up finished; the handler side forgot the session.
    Closed {
        /// The final `context.output_data`.
        output_data: Value,
        /// True when the clean-up budget ran out.
        timed_out: bool,
    },
    /// The handler side died or hung; the session cannot go on.
    Lost {
        /// What happened, for logs.
        reason: String,
    },
}

/// Where requests for a link go.
pub(crate) trait LinkSink: Send + Sync {
    fn send(&self, session: &SessionId, req: LinkRequest) -> Result<(), EngineError>;
    fn drop_session(&self, session: &SessionId);
    fn worker_id(&self) -> Option<u64> {
        None
    }
}

/// One session's connection to its handler.
pub struct HandlerLink {
    pub(crate) session: SessionId,
    pub(crate) sink: Arc<dyn LinkSink>,
    pub(crate) rx: mpsc::UnboundedReceiver<LinkEvent>,
    pub(crate) closed: bool,
}

impl fmt::Debug for HandlerLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerLink")
            .field("session", &self.session)
            .field("worker", &self.sink.worker_id())
            .finish()
    }
}

impl HandlerLink {
    /// The session this link serves.
    pub fn session_id(&self) -> &SessionId {
        &self.session
    }

    /// The sandbox worker hosting the session (None for native handlers).
    pub fn worker_id(&self) -> Option<u64> {
        self.sink.worker_id()
    }

    /// Sends a request to the handler side.
    pub fn send(&mut self, req: LinkRequest) -> Result<(), EngineError> {
        if matches!(req, LinkRequest::Stop { .. }) {
            self.closed = true;
        }
        self.sink.send(&self.session, req)
    }

    /// The next event from the handler side; `None` once the handler side is gone.
    pub async fn recv(&mut self) -> Option<LinkEvent> {
        self.rx.recv().await
    }

    /// Sends every request `session` has queued. A request the handler side can no
    /// longer take is fed back to the session as [`LinkEvent::Lost`].
    pub fn forward_requests(&mut self, session: &mut Session, now: Instant) {
        while let Some(req) = session.poll_request() {
            if let Err(e) = self.send(req) {
                let reason = e.to_string();
                session.handle_link(LinkEvent::Lost { reason }, now);
            }
        }
    }
}

impl Drop for HandlerLink {
    fn drop(&mut self) {
        if !self.closed {
            self.sink.drop_session(&self.session);
        }
    }
}
