//! Property test: any sequence of host inputs, handler outputs and time never panics
//! the session, sends at most one clean-up StopEvent, and `Ended` is final.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::json;
use voicegate_engine::event::{Event, EventKind, TextToSpeechData};
use voicegate_engine::session::PlaybackId;
use voicegate_engine::{Command, LinkEvent, LinkRequest, Session, SessionConfig};

#[derive(Debug, Clone)]
enum Op {
    Start,
    Text,
    SpeechStarted,
    Dtmf,
    External,
    PlaybackDone(u8),
    Tts {
        turn_back: u8,
        interruptible: Option<bool>,
        background: bool,
    },
    HandlerEnd {
        turn_back: u8,
    },
    Yield(&'static str),
    Lost,
    Closed,
    CallEnded,
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Start),
        Just(Op::Text),
        Just(Op::SpeechStarted),
        Just(Op::Dtmf),
        Just(Op::External),
        any::<u8>().prop_map(Op::PlaybackDone),
        (0u8..3, proptest::option::of(any::<bool>()), any::<bool>()).prop_map(
            |(turn_back, interruptible, background)| Op::Tts {
                turn_back,
                interruptible,
                background
            }
        ),
        (0u8..3).prop_map(|turn_back| Op::HandlerEnd { turn_back }),
        prop::sample::select(vec![
            r#"{"name":"stop","data":{"closing_speech":"bye"}}"#,
            r#"{"name":"interrupt","data":{}}"#,
            r#"{"name":"transfer_session","data":{"phone_number":"+1555"}}"#,
            r#"{"name":"transfer_session","data":{"agent_id":"x"}}"#,
            r#"{"name":"input_allowed","data":{"allowed":false}}"#,
            r#"{"name":"context_patch","data":{"output_data":{"a":1}}}"#,
            r#"{"name":"audio","data":{"path":"a.wav","loop":true}}"#,
            r#"{"name":"silence","data":{"duration":-5}}"#,
            r#"{"name":"external_event","data":{"after_speech":true,"session_id":"s"}}"#,
            r#"{"name":"update_audio_settings","data":{"after_speech":true}}"#,
            r#"{"name":"collect_payment","data":{"amount":1}}"#,
            r#"{"name":"text","data":{"source":"x","text":"y"}}"#,
        ])
        .prop_map(Op::Yield),
        Just(Op::Lost),
        Just(Op::Closed),
        Just(Op::CallEnded),
        (0u16..40_000).prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn session_never_panics_and_ends_once(ops in proptest::collection::vec(op(), 0..80)) {
        let base = Instant::now();
        let mut now = base;
        let mut s = Session::new(SessionConfig {
            silence_timeout: Some(Duration::from_secs(5)),
            ..SessionConfig::default()
        });
        let mut stops = 0;
        let mut ended = false;
        let mut speaks: Vec<PlaybackId> = Vec::new();
        for op in ops {
            let turn = s.turn();
            match op {
                Op::Start => s.handle_start(now),
                Op::Text => s.handle_text("speech", "hi", None, now),
                Op::SpeechStarted => s.handle_speech_started(now),
                Op::Dtmf => s.handle_dtmf("1", now),
                Op::External => s.handle_external("ping", json!({}), now),
                Op::PlaybackDone(i) => {
                    let id = speaks.get(i as usize % speaks.len().max(1)).copied().unwrap_or(u64::from(i));
                    s.handle_playback_done(id, now)
                }
                Op::Tts { turn_back, interruptible, background } => {
                    let mut d = TextToSpeechData::new("x", "nova");
                    d.interruptible = interruptible;
                    let mut e = Event::new(EventKind::TextToSpeech(d)).with_turn(turn - i64::from(turn_back));
                    e.background = background;
                    s.handle_link(LinkEvent::Event(e), now);
                }
                Op::HandlerEnd { turn_back } => s.handle_link(
                    LinkEvent::Event(Event::handler_end().with_turn(turn - i64::from(turn_back))),
                    now,
                ),
                Op::Yield(j) => {
                    let e = Event::from_json(j).unwrap().with_turn(turn);
                    s.handle_link(LinkEvent::Event(e), now);
                }
                Op::Lost => s.handle_link(LinkEvent::Lost { reason: "x".into() }, now),
                Op::Closed => s.handle_link(LinkEvent::Closed { output_data: json!({}), timed_out: false }, now),
                Op::CallEnded => s.handle_call_ended(now),
                Op::Advance(ms) => {
                    now += Duration::from_millis(u64::from(ms));
                    if s.poll_timeout().is_some_and(|t| t <= now) {
                        s.handle_timeout(now);
                    }
                }
            }
            while let Some(r) = s.poll_request() {
                prop_assert!(!ended, "request after Ended: {:?}", r);
                if matches!(r, LinkRequest::Stop { .. }) {
                    stops += 1;
                }
            }
            while let Some(c) = s.poll_command() {
                prop_assert!(!ended, "command after Ended: {:?}", c);
                match c {
                    Command::Speak { id, .. } => speaks.push(id),
                    Command::Ended { .. } => ended = true,
                    _ => {}
                }
            }
            prop_assert!(stops <= 1, "clean-up StopEvent sent {} times", stops);
            prop_assert_eq!(ended, s.is_ended());
        }
    }
}
