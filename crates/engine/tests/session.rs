//! The session state machine driven by a harness with fake session time: the same
//! harness runs native handlers and real handler.py files through the sandbox.
//! (Wall-clock time only bounds how long we wait for the Python worker.)

mod common;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use voicegate_engine::event::{Event, EventKind, TextData};
use voicegate_engine::session::{EndReason, FlushScope, Role};
use voicegate_engine::{
    Command, HandlerContext, HandlerLink, LinkEvent, LinkRequest, PythonAgent, PythonAgentConfig,
    Session, SessionConfig, SessionInfo, native_link,
};

const WAIT: Duration = Duration::from_secs(30);

/// One call: a session, its handler link, and the commands the "host" saw.
struct Call {
    s: Session,
    link: HandlerLink,
    base: Instant,
    now_ms: u64,
    seen: Vec<Command>,
    unread: usize,
}

impl Call {
    fn new(link: HandlerLink, cfg: SessionConfig) -> Self {
        Call {
            s: Session::new(cfg),
            link,
            base: Instant::now(),
            now_ms: 0,
            seen: Vec::new(),
            unread: 0,
        }
    }

    fn now(&self) -> Instant {
        self.base + Duration::from_millis(self.now_ms)
    }

    /// Moves fake time to `ms` and fires the session's timer if it is due.
    fn advance_to(&mut self, ms: u64) {
        self.now_ms = ms;
        if self.s.poll_timeout().is_some_and(|t| t <= self.now()) {
            let now = self.now();
            self.s.handle_timeout(now);
        }
        self.drain();
    }

    fn drain(&mut self) {
        // Recording commands never queues requests, so one pass drains both.
        let now = self.now();
        self.link.forward_requests(&mut self.s, now);
        while let Some(c) = self.s.poll_command() {
            self.seen.push(c);
        }
    }

    /// Waits (feeding handler outputs in at the current fake time) until a command
    /// not yet returned matches `pred`; returns it.
    async fn until(&mut self, what: &str, pred: impl Fn(&Command) -> bool) -> Command {
        self.drain();
        loop {
            while self.unread < self.seen.len() {
                let c = &self.seen[self.unread];
                self.unread += 1;
                if pred(c) {
                    return c.clone();
                }
            }
            let ev = tokio::time::timeout(WAIT, self.link.recv())
                .await
                .unwrap_or_else(|_| panic!("waiting for {what}; saw {:#?}", self.seen))
                .unwrap_or(LinkEvent::Lost {
                    reason: "link closed".into(),
                });
            let now = self.now();
            self.s.handle_link(ev, now);
            self.drain();
        }
    }

    /// Waits for speech with this text, reports it played (at the current fake time)
    /// unless `play` is false, and returns its command.
    async fn speech(&mut self, text: &str, play: bool) -> Command {
        let c = self
            .until(
                text,
                |c| matches!(c, Command::Speak { speech, .. } if speech.text == text),
            )
            .await;
        if play {
            let Command::Speak { id, .. } = c else {
                unreachable!()
            };
            let now = self.now();
            self.s.handle_playback_done(id, now);
            self.drain();
        }
        c
    }

    /// Waits until the running handler call finished.
    async fn idle(&mut self) {
        self.drain();
        while self.s.is_turn_running() {
            let ev = tokio::time::timeout(WAIT, self.link.recv())
                .await
                .expect("handler call ends")
                .expect("link open");
            let now = self.now();
            self.s.handle_link(ev, now);
            self.drain();
        }
    }

    fn start(&mut self) {
        let now = self.now();
        self.s.handle_start(now);
        self.drain();
    }

    fn say(&mut self, text: &str) {
        let now = self.now();
        self.s.handle_text("speech", text, None, now);
        self.drain();
    }

    async fn hang_up(&mut self) -> Command {
        let now = self.now();
        self.s.handle_call_ended(now);
        self.until("Ended", |c| matches!(c, Command::Ended { .. }))
            .await
    }
}

fn native_echo() -> HandlerLink {
    let h = |ev: &Event, _: &mut HandlerContext, out: &mut Vec<Event>| match &ev.kind {
        EventKind::Start(_) => out.push(Event::text_to_speech("Hello!", "nova")),
        EventKind::Text(TextData { text, .. }) => {
            out.push(Event::text_to_speech(&format!("You said: {text}"), "nova"))
        }
        _ => {}
    };
    native_link(h, SessionInfo::default())
}

async fn python(dir: std::path::PathBuf) -> PythonAgent {
    common::sdk_env();
    let mut cfg = PythonAgentConfig::new(dir);
    cfg.pool.workers = 1;
    PythonAgent::load(cfg).await.expect("agent loads")
}

/// The seed example's conversation, asserted on commands.
async fn seed_conversation(link: HandlerLink) {
    let mut call = Call::new(link, SessionConfig::default());
    call.start();
    match call.speech("Hello!", true).await {
        Command::Speak {
            speech,
            interruptible,
            ..
        } => {
            assert_eq!(
                speech.voice,
                Some(voicegate_engine::event::Voice::Name("nova".into()))
            );
            assert!(interruptible);
        }
        c => panic!("{c:?}"),
    }
    call.idle().await;
    call.advance_to(1500);
    call.say("hello");
    call.speech("You said: hello", true).await;
    call.idle().await;
    match call.hang_up().await {
        Command::Ended {
            output_data,
            transcript,
            reason,
            cleanup_timed_out,
        } => {
            assert_eq!(output_data, json!({}));
            assert_eq!(reason, EndReason::Completed);
            assert!(!cleanup_timed_out);
            let lines: Vec<(Role, &str)> = transcript
                .iter()
                .map(|l| (l.role, l.text.as_str()))
                .collect();
            assert_eq!(
                lines,
                [
                    (Role::Agent, "Hello!"),
                    (Role::User, "hello"),
                    (Role::Agent, "You said: hello")
                ]
            );
        }
        c => panic!("{c:?}"),
    }
}

#[tokio::test]
async fn seed_conversation_native() {
    seed_conversation(native_echo()).await;
}

#[tokio::test]
async fn seed_conversation_python_sandbox() {
    let agent = python(common::example_agent("echo")).await;
    seed_conversation(agent.open_session(SessionInfo::default()).await.unwrap()).await;
}

#[tokio::test]
async fn python_barge_in_cancels_the_turn_and_flags_the_next_input() {
    let agent = python(common::test_path("agents/sink")).await;
    let mut call = Call::new(
        agent.open_session(SessionInfo::default()).await.unwrap(),
        SessionConfig::default(),
    );
    call.start();
    call.speech("ready", true).await;
    call.idle().await;
    call.advance_to(1000);
    // "slow" speaks "first", then sleeps 30 s before "second".
    call.say("slow");
    call.speech("first", false).await;
    call.advance_to(1400);
    let now = call.now();
    call.s.handle_speech_started(now);
    call.drain();
    assert!(
        call.seen.contains(&Command::Flush {
            scope: FlushScope::Interruptible
        }),
        "{:#?}",
        call.seen
    );
    assert!(!call.s.is_turn_running(), "the turn was cancelled");
    call.advance_to(2000);
    call.say("ctx");
    let c = call
        .until(
            "ctx answer",
            |c| matches!(c, Command::Speak { speech, .. } if speech.text.starts_with('{')),
        )
        .await;
    let Command::Speak { speech, .. } = c else {
        unreachable!()
    };
    let v: Value = serde_json::from_str(&speech.text).unwrap();
    assert_eq!(
        v["meta"],
        json!(true),
        "previous_turn_interrupted reached the handler"
    );
    assert_eq!(v["turn"], json!(3));
    call.idle().await;
    assert!(
        !call
            .seen
            .iter()
            .any(|c| matches!(c, Command::Speak { speech, .. } if speech.text == "second")),
        "the cancelled turn said no more"
    );
}

#[tokio::test]
async fn python_background_task_speech_and_silence_timeout() {
    let agent = python(common::test_path("agents/sink")).await;
    let cfg = SessionConfig {
        silence_timeout: Some(Duration::from_secs(5)),
        ..SessionConfig::default()
    };
    let mut call = Call::new(
        agent.open_session(SessionInfo::default()).await.unwrap(),
        cfg,
    );
    call.start();
    call.speech("ready", true).await;
    call.idle().await;
    call.advance_to(100);
    call.say("bg");
    call.speech("started", true).await;
    call.idle().await;
    // The background task's speech arrives after the turn ended, and is spoken.
    call.speech("from background", true).await;
    // Silence: 5 s after the agent finished speaking, a TimeoutEvent(count=1).
    assert_eq!(
        call.s.poll_timeout(),
        Some(call.now() + Duration::from_secs(5))
    );
    call.advance_to(5100);
    let c = call
        .until("timeout answer", |c| matches!(c, Command::Speak { speech, .. } if speech.text.starts_with("got timeout")))
        .await;
    let Command::Speak { speech, .. } = c else {
        unreachable!()
    };
    assert_eq!(
        speech.text,
        r#"got timeout {"count": 1, "ms_since_input": 5000}"#
    );
}

#[tokio::test]
async fn python_output_data_and_cleanup_stop() {
    let agent = python(common::test_path("agents/sink")).await;
    let mut call = Call::new(
        agent.open_session(SessionInfo::default()).await.unwrap(),
        SessionConfig::default(),
    );
    call.start();
    call.speech("ready", true).await;
    call.idle().await;
    call.say("out");
    call.speech("saved", true).await;
    call.idle().await;
    assert_eq!(call.s.output_data(), &json!({"score": 1}));
    call.say("big");
    call.until(
        "cap error",
        |c| matches!(c, Command::Log { message, .. } if message.contains("65536")),
    )
    .await;
    call.idle().await;
    match call.hang_up().await {
        Command::Ended {
            output_data,
            reason,
            ..
        } => {
            assert_eq!(output_data, json!({"score": 1, "stopped": true}));
            assert_eq!(reason, EndReason::Completed);
        }
        c => panic!("{c:?}"),
    }
    assert!(
        call.seen
            .iter()
            .any(|c| matches!(c, Command::Log { message, .. } if message == "cleanup ran"))
    );
}

#[tokio::test]
async fn python_worker_crash_apologises_and_hangs_up() {
    let agent = python(common::test_path("agents/sink")).await;
    let mut call = Call::new(
        agent.open_session(SessionInfo::default()).await.unwrap(),
        SessionConfig::default(),
    );
    call.start();
    call.speech("ready", true).await;
    call.idle().await;
    call.say("crash");
    match call
        .until("hang-up", |c| matches!(c, Command::HangUp { .. }))
        .await
    {
        Command::HangUp {
            clear_speech,
            closing: Some(s),
        } => {
            assert!(clear_speech);
            assert!(s.text.starts_with("Sorry"), "{}", s.text);
        }
        c => panic!("{c:?}"),
    }
    match call.hang_up().await {
        Command::Ended { reason, .. } => assert_eq!(reason, EndReason::HandlerLost),
        c => panic!("{c:?}"),
    }
    // No StopEvent went to a dead worker.
    assert!(!matches!(
        call.s.poll_request(),
        Some(LinkRequest::Stop { .. })
    ));
}

#[tokio::test]
async fn concierge_example_books_in_the_background_and_records_output() {
    let agent = python(common::example_agent("concierge")).await;
    let info = SessionInfo {
        input_data: json!({"caller_name": "Ada"}).as_object().unwrap().clone(),
        ..Default::default()
    };
    let mut call = Call::new(
        agent.open_session(info).await.unwrap(),
        SessionConfig::default(),
    );
    call.start();
    call.speech(
        "Hello Ada, this is the Harbor Bistro. How can I help?",
        true,
    )
    .await;
    call.idle().await;
    call.say("I'd like to book a table");
    call.speech("For how many people?", true).await;
    call.idle().await;
    call.say("for four please");
    call.speech("One moment, let me check a table for 4.", true)
        .await;
    call.idle().await;
    call.speech(
        "Good news: your table for 4 is booked for 7 pm. Anything else?",
        true,
    )
    .await;
    assert_eq!(
        call.s.output_data(),
        &json!({"booking": {"party": 4, "time": "19:00", "status": "confirmed"}})
    );
    call.say("what are your hours");
    call.speech("We are open every day from noon to 11 pm.", true)
        .await;
    call.idle().await;
    call.say("can I talk to a human");
    match call
        .until("transfer", |c| matches!(c, Command::Transfer { .. }))
        .await
    {
        Command::Transfer {
            target, closing, ..
        } => {
            assert_eq!(
                target,
                voicegate_engine::session::TransferTarget::Phone {
                    number: "+15550100".into()
                }
            );
            assert_eq!(
                closing.unwrap().text,
                "Connecting you to the front desk now."
            );
        }
        c => panic!("{c:?}"),
    }
    match call.hang_up().await {
        Command::Ended { output_data, .. } => assert_eq!(
            output_data,
            json!({"booking": {"party": 4, "time": "19:00", "status": "confirmed"}, "turns": 4})
        ),
        c => panic!("{c:?}"),
    }
}
