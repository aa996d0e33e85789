//! voicegate-engine: the agent engine.
//!
//! - [`event`]: the primfunctions event model (the handler wire format).
//! - [`sandbox`] and [`worker`]: the Python sandbox — a venv voicegate creates on
//!   first use, and per-agent pools of worker processes that run an unchanged
//!   `handler.py`.
//! - [`link`]: one session's connection to its handler, Python or native.
//! - [`session`]: the sans-IO session/turn state machine — what the handler's events
//!   mean on a call, as [`session::Command`]s for the host. Its module docs state the
//!   drain rule (`handle_*(…, now)`, then `poll_request` / `poll_command` /
//!   `poll_timeout` until `None`).
//! - [`native`]: the Rust [`Handler`] trait for handlers without Python.
//! - [`chat`]: `voicegate chat --agent DIR`, the text loop for agent development.
//!
//! # Engine <-> worker wire protocol
//!
//! A worker is `VENV/bin/python voicegate_runtime.py AGENT_DIR` (the runtime lives in
//! `crates/engine/python/` and is embedded in the binary). Frames are one JSON object
//! per line: engine -> worker on the worker's stdin, worker -> engine on its stdout.
//! The runtime moves the handler's own stdout to stderr, so a `print` in a handler
//! never corrupts a frame; stderr lines are logged by the engine. Every frame has a
//! `type`; session frames carry `session` (the session id). `event` is always a
//! primfunctions event dict as `event_to_dict` writes it:
//! `{"name", "data", "timestamp", "turn", "background", "background_task_name"}`.
//!
//! Worker -> engine:
//!
//! | frame | meaning |
//! |---|---|
//! | `{"type":"ready","pid","sdk_version"}` | first frame: the handler module imported |
//! | `{"type":"load_error","message"}` | first frame: import failed (traceback); the worker exits |
//! | `{"type":"event","session","event"}` | an output event; `handler_end` closes each handler call (its `turn` is the call's turn); background-task events have `background: true` and `background_task_name` |
//! | `{"type":"closed","session","output_data","timed_out"}` | clean-up after `stop` finished; the session is forgotten |
//! | `{"type":"pong","id"}` | answer to `ping` |
//! | `{"type":"protocol_error","session"?,"message"}` | a frame the worker could not use |
//!
//! Engine -> worker:
//!
//! | frame | meaning |
//! |---|---|
//! | `{"type":"open","session","context":{agent_id, environment, variables, configuration, input_data, data}}` | create the session's `primfunctions.context.Context`, kept until `stop`/`drop` |
//! | `{"type":"event","session","event"}` | run `handler(event, context)` as a new task; its outputs are stamped with the event's `turn` |
//! | `{"type":"cancel","session"}` | barge-in: cancel running handler calls and `context.cancel_interruptible_tasks()` |
//! | `{"type":"stop","session","event","timeout_s"}` | session end: run the handler on the final `StopEvent` under `primfunctions.cleanup.SessionCleanup` (default 30 s), then answer `closed` |
//! | `{"type":"drop","session"}` | forget a session without clean-up |
//! | `{"type":"ping","id"}` | liveness; a worker that does not answer within the hang deadline is killed |
//! | `{"type":"shutdown"}` | exit |
//!
//! A handler exception becomes an `error` event followed by `handler_end`; the session
//! goes on. A worker that exits or stops answering pings ends only its own sessions
//! ([`link::LinkEvent::Lost`]) and is replaced.

pub mod chat;
pub mod error;
pub mod event;
pub mod link;
pub mod native;
pub mod sandbox;
pub mod session;
pub mod worker;

pub use error::EngineError;
pub use event::{Event, EventKind};
pub use link::{HandlerLink, LinkEvent, LinkRequest, SessionId, SessionInfo};
pub use native::{Handler, HandlerContext, native_link};
pub use session::{Command, Session, SessionConfig};
pub use worker::{PoolConfig, PythonAgent, PythonAgentConfig};
