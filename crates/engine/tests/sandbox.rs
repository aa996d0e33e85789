//! Real handler.py files driven through the Python sandbox (workers, pool, protocol).

mod common;

use std::time::Duration;

use serde_json::{Value, json};
use voicegate_engine::event::{Event, EventKind};
use voicegate_engine::{
    EngineError, HandlerLink, LinkEvent, LinkRequest, PoolConfig, PythonAgent, PythonAgentConfig,
    SessionInfo,
};

const WAIT: Duration = Duration::from_secs(30);

async fn load(dir: std::path::PathBuf, workers: usize) -> PythonAgent {
    common::sdk_env(); // panics with a clear message if Python is unusable
    let mut cfg = PythonAgentConfig::new(dir);
    cfg.pool.workers = workers;
    cfg.variables = json!({"greeting": "hi", "max": 3})
        .as_object()
        .unwrap()
        .clone();
    cfg.environment = "test".into();
    PythonAgent::load(cfg).await.expect("agent loads")
}

async fn next(link: &mut HandlerLink) -> LinkEvent {
    tokio::time::timeout(WAIT, link.recv())
        .await
        .expect("handler side answered in time")
        .expect("link open")
}

/// Delivers `ev` as turn `turn` and collects outputs up to its `handler_end`.
async fn turn(link: &mut HandlerLink, ev: Event, turn: i64) -> Vec<Event> {
    link.send(LinkRequest::Deliver(ev.with_turn(turn))).unwrap();
    let mut out = Vec::new();
    loop {
        match next(link).await {
            LinkEvent::Event(e) if matches!(e.kind, EventKind::HandlerEnd(_)) && e.turn == turn => {
                return out;
            }
            LinkEvent::Event(e) => out.push(e),
            other => panic!("unexpected {other:?} after {out:?}"),
        }
    }
}

fn tts_texts(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::TextToSpeech(d) => Some(d.text.clone()),
            _ => None,
        })
        .collect()
}

async fn stop(link: &mut HandlerLink) -> (Vec<Event>, Value) {
    link.send(LinkRequest::Stop {
        event: Event::stop().with_turn(99),
        budget: Duration::from_secs(30),
    })
    .unwrap();
    let mut out = Vec::new();
    loop {
        match next(link).await {
            LinkEvent::Event(e) => out.push(e),
            LinkEvent::Closed { output_data, .. } => return (out, output_data),
            LinkEvent::Lost { reason } => panic!("lost: {reason}"),
        }
    }
}

#[tokio::test]
async fn seed_echo_example_runs_unchanged() {
    let agent = load(common::example_agent("echo"), 1).await;
    let mut link = agent.open_session(SessionInfo::default()).await.unwrap();
    let out = turn(&mut link, Event::start(), 1).await;
    assert_eq!(tts_texts(&out), ["Hello!"]);
    assert_eq!(out[0].turn, 1);
    match &out[0].kind {
        EventKind::TextToSpeech(d) => {
            assert_eq!(
                d.voice,
                Some(voicegate_engine::event::Voice::Name("nova".into()))
            )
        }
        k => panic!("{k:?}"),
    }
    let out = turn(&mut link, Event::text("speech", "hello"), 2).await;
    assert_eq!(tts_texts(&out), ["You said: hello"]);
    let (out, output) = stop(&mut link).await;
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(output, json!({}));
}

#[tokio::test]
async fn context_is_kept_per_session_with_config_fields() {
    let agent = load(common::test_path("agents/sink"), 1).await;
    let info = SessionInfo {
        session_id: Some("sess-ctx".into()),
        input_data: json!({"caller": "+15550100"}).as_object().unwrap().clone(),
        ..Default::default()
    };
    let mut a = agent.open_session(info).await.unwrap();
    let mut b = agent.open_session(SessionInfo::default()).await.unwrap();
    turn(&mut a, Event::start(), 1).await;
    turn(&mut b, Event::start(), 1).await;
    turn(&mut a, Event::text("text", "x"), 2).await;
    let mut ev = Event::text("text", "ctx");
    ev.extra_mut()
        .unwrap()
        .insert("previous_turn_interrupted".into(), json!(true));
    let out = turn(&mut a, ev, 3).await;
    let v: Value = serde_json::from_str(&tts_texts(&out)[0]).unwrap();
    assert_eq!(
        v,
        json!({
            "agent_id": "sink", "session_id": "sess-ctx", "environment": "test",
            "variables": {"greeting": "hi", "max": 3},
            "input_data": {"caller": "+15550100"},
            "turns": 2, "turn": 3, "meta": true,
        })
    );
    // Session b has its own context.data.
    let out = turn(&mut b, Event::text("text", "ctx"), 2).await;
    let v: Value = serde_json::from_str(&tts_texts(&out)[0]).unwrap();
    assert_eq!(v["turns"], 1);
}

#[tokio::test]
async fn background_task_events_arrive_flagged() {
    let agent = load(common::test_path("agents/sink"), 1).await;
    let mut link = agent.open_session(SessionInfo::default()).await.unwrap();
    let out = turn(&mut link, Event::text("text", "bg"), 1).await;
    assert_eq!(tts_texts(&out), ["started"]);
    assert!(!out[0].background);
    match next(&mut link).await {
        LinkEvent::Event(e) => {
            assert_eq!(tts_texts(std::slice::from_ref(&e)), ["from background"]);
            assert!(e.background);
            assert_eq!(e.background_task_name.as_deref(), Some("bgtask"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn cancel_stops_the_turn_and_interruptible_tasks() {
    let agent = load(common::test_path("agents/sink"), 1).await;
    let mut link = agent.open_session(SessionInfo::default()).await.unwrap();
    turn(&mut link, Event::text("text", "bg-slow"), 1).await;
    link.send(LinkRequest::Deliver(
        Event::text("text", "slow").with_turn(2),
    ))
    .unwrap();
    match next(&mut link).await {
        LinkEvent::Event(e) => assert_eq!(tts_texts(&[e]), ["first"]),
        other => panic!("{other:?}"),
    }
    link.send(LinkRequest::Cancel).unwrap();
    match next(&mut link).await {
        LinkEvent::Event(e) => {
            assert!(matches!(e.kind, EventKind::HandlerEnd(_)), "{e:?}");
            assert_eq!(e.turn, 2);
        }
        other => panic!("{other:?}"),
    }
    // The interruptible background task ("too late" after 5 s) was cancelled too:
    // the next thing we see is the answer to the next turn.
    let out = turn(&mut link, Event::text("text", "after"), 3).await;
    assert_eq!(tts_texts(&out), ["echo after"]);
}

#[tokio::test]
async fn set_output_is_kept_and_capped_at_64k() {
    let agent = load(common::test_path("agents/sink"), 1).await;
    let mut link = agent.open_session(SessionInfo::default()).await.unwrap();
    let out = turn(&mut link, Event::text("text", "out"), 1).await;
    assert!(
        out.iter()
            .any(|e| matches!(&e.kind, EventKind::ContextPatch(p)
            if p.get("output_data") == Some(&json!({"score": 1})))),
        "{out:?}"
    );
    let out = turn(&mut link, Event::text("text", "big"), 2).await;
    let err = out
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Error(d) => Some(d.message.clone()),
            _ => None,
        })
        .expect("error event");
    assert!(err.contains("65536"), "{err}");
    assert!(tts_texts(&out).is_empty());
    let (out, output) = stop(&mut link).await;
    assert!(
        out.iter().any(|e| matches!(&e.kind, EventKind::Log(_))),
        "{out:?}"
    );
    assert_eq!(output, json!({"score": 1, "stopped": true}));
}

#[tokio::test]
async fn experiment_selects_a_variant() {
    let agent = load(common::test_path("agents/sink"), 1).await;
    let mut link = agent.open_session(SessionInfo::default()).await.unwrap();
    let out = turn(&mut link, Event::text("text", "exp"), 1).await;
    assert_eq!(tts_texts(&out), ["variant formal"]);
    let log = out
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Log(d) => Some(d.message.clone()),
            _ => None,
        })
        .expect("log event");
    assert_eq!(
        log,
        json!("Experiment 'greeting' selected variant 'formal'")
    );
}

#[tokio::test]
async fn logger_metrics_prints_and_sibling_modules() {
    let agent = load(common::test_path("agents/sink"), 1).await;
    let mut link = agent.open_session(SessionInfo::default()).await.unwrap();
    let out = turn(&mut link, Event::text("text", "obs"), 1).await;
    assert_eq!(tts_texts(&out), ["OBSERVED!"]);
    let log = out
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Log(d) => Some(d.clone()),
            _ => None,
        })
        .expect("log");
    assert_eq!(log.message, json!("logged via logger"));
    assert!(
        log.location
            .as_deref()
            .unwrap_or("")
            .starts_with("handler.py:"),
        "{log:?}"
    );
    let metric = out
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Metric(m) => Some(m.clone()),
            _ => None,
        })
        .expect("metric");
    assert_eq!(metric.name, "metrics.counter.orders");
    assert_eq!(metric.data["value"], json!(2));
}

#[tokio::test]
async fn handler_exception_becomes_error_event_and_session_goes_on() {
    let agent = load(common::test_path("agents/sink"), 1).await;
    let mut link = agent.open_session(SessionInfo::default()).await.unwrap();
    let out = turn(&mut link, Event::text("text", "boom"), 1).await;
    assert_eq!(tts_texts(&out), ["about to fail"]);
    let msg = match &out.last().unwrap().kind {
        EventKind::Error(d) => d.message.clone(),
        k => panic!("{k:?}"),
    };
    assert!(msg.contains("handler exploded on purpose"), "{msg}");
    let out = turn(&mut link, Event::text("text", "again"), 2).await;
    assert_eq!(tts_texts(&out), ["echo again"]);
}

#[tokio::test]
async fn os_exit_ends_only_that_workers_sessions() {
    let agent = load(common::test_path("agents/sink"), 2).await;
    let mut a = agent.open_session(SessionInfo::default()).await.unwrap();
    let mut b = agent.open_session(SessionInfo::default()).await.unwrap();
    assert_ne!(
        a.worker_id(),
        b.worker_id(),
        "sessions spread over the pool"
    );
    turn(&mut a, Event::start(), 1).await;
    turn(&mut b, Event::start(), 1).await;
    a.send(LinkRequest::Deliver(
        Event::text("text", "crash").with_turn(2),
    ))
    .unwrap();
    match next(&mut a).await {
        LinkEvent::Lost { reason } => assert!(reason.contains("exited"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // b is untouched.
    let out = turn(&mut b, Event::text("text", "still here"), 2).await;
    assert_eq!(tts_texts(&out), ["echo still here"]);
    // The dead worker is replaced.
    let t0 = std::time::Instant::now();
    while agent.replaced_workers() < 1 || agent.worker_pids().len() < 2 {
        assert!(t0.elapsed() < WAIT, "worker not replaced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut c = agent.open_session(SessionInfo::default()).await.unwrap();
    let out = turn(&mut c, Event::start(), 1).await;
    assert_eq!(tts_texts(&out), ["ready"]);
}

#[tokio::test]
async fn blocked_event_loop_hits_deadline_and_worker_is_replaced() {
    common::sdk_env();
    let mut cfg = PythonAgentConfig::new(common::test_path("agents/sink"));
    cfg.pool = PoolConfig {
        workers: 1,
        ping_interval: Duration::from_millis(100),
        hang_deadline: Duration::from_millis(1500),
        ..PoolConfig::default()
    };
    let agent = PythonAgent::load(cfg).await.unwrap();
    let pid = agent.worker_pids()[0];
    let mut a = agent.open_session(SessionInfo::default()).await.unwrap();
    let started = std::time::Instant::now();
    a.send(LinkRequest::Deliver(
        Event::text("text", "block").with_turn(1),
    ))
    .unwrap();
    match next(&mut a).await {
        LinkEvent::Lost { reason } => assert!(reason.contains("did not answer"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    let t0 = std::time::Instant::now();
    while agent.worker_pids().is_empty() {
        assert!(t0.elapsed() < WAIT, "worker not replaced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(agent.worker_pids()[0], pid);
    assert_eq!(agent.replaced_workers(), 1);
    let mut b = agent.open_session(SessionInfo::default()).await.unwrap();
    let out = turn(&mut b, Event::text("text", "alive"), 1).await;
    assert_eq!(tts_texts(&out), ["echo alive"]);
}

#[tokio::test]
async fn import_error_is_an_agent_load_error() {
    common::sdk_env();
    let err = PythonAgent::load(PythonAgentConfig::new(common::test_path("agents/broken")))
        .await
        .unwrap_err();
    match err {
        EngineError::AgentLoad { message, .. } => {
            assert!(message.contains("SyntaxError"), "{message}")
        }
        e => panic!("{e}"),
    }
    let err = PythonAgent::load(PythonAgentConfig::new(common::test_path("agents/none")))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::AgentLoad { .. }), "{err}");
}
