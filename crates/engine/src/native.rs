//! Native (Rust) handlers: the same events as a Python `handler.py`, no sandbox.
//!
//! Used by tests, benchmarks and embedders that want no Python. A [`Handler`] is
//! called once per input event and pushes its output events; [`native_link`] wraps
//! it in a [`HandlerLink`] that behaves like a sandbox session (outputs stamped with
//! the input's turn, `handler_end` after each call, clean-up on the final StopEvent
//! with only the outputs primfunctions allows then, `closed` with `output_data`).
//!
//! Native handler calls are synchronous and run on the caller's task, so there is
//! nothing to cancel on barge-in and no background tasks: a handler that needs slow
//! work should run it elsewhere and feed results back as external events.

use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::EngineError;
use crate::event::{Event, EventKind, Object};
use crate::link::{HandlerLink, LinkEvent, LinkRequest, LinkSink, SessionId, SessionInfo};
use crate::session::MAX_OUTPUT_DATA_BYTES;

/// A handler written in Rust.
pub trait Handler: Send + 'static {
    /// One handler call: react to `event`, pushing output events to `out` in order.
    fn handle(&mut self, event: &Event, ctx: &mut HandlerContext, out: &mut Vec<Event>);
}

impl<F> Handler for F
where
    F: FnMut(&Event, &mut HandlerContext, &mut Vec<Event>) + Send + 'static,
{
    fn handle(&mut self, event: &Event, ctx: &mut HandlerContext, out: &mut Vec<Event>) {
        self(event, ctx, out)
    }
}

/// The native counterpart of `primfunctions.context.Context` (the parts that make
/// sense without Python).
#[derive(Debug, Clone, Default)]
pub struct HandlerContext {
    /// `context.session_id`.
    pub session_id: String,
    /// `context.input_data`.
    pub input_data: Object,
    /// `context.data`: kept for the session's life.
    pub data: Object,
    output_data: Object,
    patches: Vec<Event>,
}

impl HandlerContext {
    /// `context.output_data`.
    pub fn output_data(&self) -> &Object {
        &self.output_data
    }

    /// `context.set_output`: replaces `output_data` (64 KB serialised at most) and
    /// reports it to the engine as a `context_patch`.
    pub fn set_output(&mut self, payload: Object) -> Result<(), EngineError> {
        let size = serde_json::to_string(&payload)
            .map(|s| s.len())
            .unwrap_or(0);
        if size > MAX_OUTPUT_DATA_BYTES {
            return Err(EngineError::OutputTooLarge {
                size,
                limit: MAX_OUTPUT_DATA_BYTES,
            });
        }
        self.output_data = payload;
        let mut patch = Object::new();
        patch.insert(
            "output_data".into(),
            Value::Object(self.output_data.clone()),
        );
        self.patches
            .push(Event::new(EventKind::ContextPatch(patch)));
        Ok(())
    }
}

/// Output names primfunctions lets through during clean-up.
const CLEANUP_OUTPUT_NAMES: &[&str] = &[
    "context_patch",
    "context",
    "external_event",
    "log",
    "error",
    "debug",
];

struct NativeSink {
    state: Mutex<(Box<dyn Handler>, HandlerContext, bool)>,
    tx: mpsc::UnboundedSender<LinkEvent>,
}

impl NativeSink {
    fn call(&self, event: &Event, cleanup: bool) -> Result<(), EngineError> {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (handler, ctx, closed) = &mut *guard;
        if *closed {
            return Err(EngineError::SessionClosed(ctx.session_id.clone()));
        }
        let mut out = Vec::new();
        handler.handle(event, ctx, &mut out);
        // `set_output` patches come first: they happened during the call.
        let patches = std::mem::take(&mut ctx.patches);
        for mut e in patches.into_iter().chain(out) {
            if cleanup && !CLEANUP_OUTPUT_NAMES.contains(&e.name()) {
                continue;
            }
            e.turn = event.turn;
            let _ = self.tx.send(LinkEvent::Event(e));
        }
        if cleanup {
            *closed = true;
            let _ = self.tx.send(LinkEvent::Closed {
                output_data: Value::Object(ctx.output_data.clone()),
                timed_out: false,
            });
        } else {
            let _ = self
                .tx
                .send(LinkEvent::Event(Event::handler_end().with_turn(event.turn)));
        }
        Ok(())
    }
}

impl LinkSink for NativeSink {
    fn send(&self, _session: &SessionId, req: LinkRequest) -> Result<(), EngineError> {
        match req {
            LinkRequest::Deliver(event) => self.call(&event, false),
            // Calls are synchronous: by the time a cancel arrives nothing runs.
            LinkRequest::Cancel => Ok(()),
            LinkRequest::Stop { event, .. } => self.call(&event, true),
        }
    }

    fn drop_session(&self, _session: &SessionId) {}
}

/// A link to a native handler for one session.
pub fn native_link(handler: impl Handler, info: SessionInfo) -> HandlerLink {
    let session = info
        .session_id
        .clone()
        .unwrap_or_else(|| SessionId("native".into()));
    let ctx = HandlerContext {
        session_id: session.0.clone(),
        input_data: info.input_data,
        data: info.data,
        ..Default::default()
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let sink = NativeSink {
        state: Mutex::new((Box::new(handler), ctx, false)),
        tx,
    };
    HandlerLink {
        session,
        sink: Arc::new(sink),
        rx,
        closed: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::TextData;
    use serde_json::json;
    use std::time::Duration;

    #[tokio::test]
    async fn native_link_behaves_like_a_sandbox_session() {
        let echo = |ev: &Event, ctx: &mut HandlerContext, out: &mut Vec<Event>| match &ev.kind {
            EventKind::Start(_) => out.push(Event::text_to_speech("Hello!", "nova")),
            EventKind::Text(TextData { text, .. }) => {
                let n = ctx.data.get("n").and_then(Value::as_i64).unwrap_or(0) + 1;
                ctx.data.insert("n".into(), json!(n));
                out.push(Event::text_to_speech(&format!("You said: {text}"), "nova"));
            }
            EventKind::Stop(_) => {
                let mut o = Object::new();
                o.insert("turns".into(), ctx.data["n"].clone());
                ctx.set_output(o).unwrap();
                out.push(Event::text_to_speech("not during clean-up", "nova"));
            }
            _ => {}
        };
        let mut link = native_link(echo, SessionInfo::default());
        link.send(LinkRequest::Deliver(Event::text("text", "hi").with_turn(4)))
            .unwrap();
        let mut got = Vec::new();
        while let Ok(ev) = link.rx.try_recv() {
            got.push(ev);
        }
        assert!(
            matches!(&got[0], LinkEvent::Event(e) if e.turn == 4 && matches!(&e.kind, EventKind::TextToSpeech(d) if d.text == "You said: hi"))
        );
        assert!(
            matches!(&got[1], LinkEvent::Event(e) if e.turn == 4 && matches!(e.kind, EventKind::HandlerEnd(_)))
        );
        link.send(LinkRequest::Stop {
            event: Event::stop().with_turn(5),
            budget: Duration::from_secs(30),
        })
        .unwrap();
        let got: Vec<_> = std::iter::from_fn(|| link.rx.try_recv().ok()).collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            matches!(&got[0], LinkEvent::Event(e) if matches!(e.kind, EventKind::ContextPatch(_)))
        );
        assert!(
            matches!(&got[1], LinkEvent::Closed { output_data, .. } if output_data == &json!({"turns": 1}))
        );
    }

    #[test]
    fn set_output_enforces_the_cap() {
        let mut ctx = HandlerContext::default();
        let mut o = Object::new();
        o.insert("blob".into(), json!("x".repeat(70 * 1024)));
        let err = ctx.set_output(o).unwrap_err();
        assert!(err.to_string().contains("65536"), "{err}");
        assert!(ctx.output_data().is_empty());
    }
}
