//! `voicegate chat` semantics through the real sandbox and through a native handler.

mod common;

use serde_json::Value;
use voicegate_engine::event::{Event, EventKind, TextData};
use voicegate_engine::{HandlerContext, SessionInfo, chat, native_link};

fn events(out: &[u8]) -> Vec<Value> {
    String::from_utf8(out.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test]
async fn echo_agent_answers_hello() {
    common::sdk_env();
    let mut out = Vec::new();
    chat::run(&common::example_agent("echo"), &b"hello\n"[..], &mut out)
        .await
        .expect("chat runs");
    let evs = events(&out);
    let tts: Vec<&Value> = evs
        .iter()
        .filter(|e| e["name"] == "text_to_speech")
        .collect();
    assert_eq!(tts.len(), 2, "{evs:#?}");
    assert_eq!(tts[0]["data"]["text"], "Hello!");
    assert_eq!(tts[1]["data"]["text"], "You said: hello");
    assert_eq!(tts[1]["data"]["voice"], "nova");
    // primfunctions envelope on every line.
    for e in &evs {
        for k in [
            "name",
            "data",
            "timestamp",
            "turn",
            "background",
            "background_task_name",
        ] {
            assert!(e.get(k).is_some(), "{k} missing in {e}");
        }
    }
    assert_eq!(tts[0]["turn"], 1);
    assert_eq!(tts[1]["turn"], 2);
    let ends = evs.iter().filter(|e| e["name"] == "handler_end").count();
    assert_eq!(
        ends, 2,
        "one handler_end per input, none for the clean-up stop"
    );
}

#[tokio::test]
async fn each_line_is_a_text_event_and_eof_stops() {
    let handler = |ev: &Event, ctx: &mut HandlerContext, out: &mut Vec<Event>| match &ev.kind {
        EventKind::Text(TextData { text, source, .. }) => {
            out.push(Event::text_to_speech(&format!("{source}:{text}"), "nova"))
        }
        EventKind::Stop(_) => {
            let mut o = serde_json::Map::new();
            o.insert("bye".into(), Value::Bool(true));
            ctx.set_output(o).unwrap();
        }
        _ => {}
    };
    let link = native_link(handler, SessionInfo::default());
    let mut out = Vec::new();
    chat::run_link(link, &b"one\r\ntwo\n\nthree"[..], &mut out)
        .await
        .unwrap();
    let evs = events(&out);
    let texts: Vec<&str> = evs
        .iter()
        .filter(|e| e["name"] == "text_to_speech")
        .map(|e| e["data"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["text:one", "text:two", "text:", "text:three"]);
    // The clean-up StopEvent ran: its context_patch is printed too.
    assert_eq!(evs.last().unwrap()["name"], "context_patch");
}

#[tokio::test]
async fn missing_agent_is_an_error() {
    let mut out = Vec::new();
    let err = chat::run(&common::test_path("agents/none"), &b""[..], &mut out)
        .await
        .unwrap_err();
    assert!(
        matches!(err, voicegate_engine::EngineError::AgentLoad { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn receptionist_routes_sales_and_says_goodbye() {
    common::sdk_env();
    let mut out = Vec::new();
    chat::run(
        &common::example_agent("receptionist"),
        &b"hmm\nI want to talk to sales\n"[..],
        &mut out,
    )
    .await
    .expect("chat runs");
    let evs = events(&out);
    let transfer = evs
        .iter()
        .find(|e| e["name"] == "transfer_session")
        .unwrap_or_else(|| panic!("no transfer in {evs:#?}"));
    assert_eq!(transfer["data"]["phone_number"], "+14155550101");
    assert_eq!(
        transfer["data"]["closing_speech"],
        "Connecting you to sales."
    );
    let asked_again = evs.iter().any(|e| {
        e["name"] == "text_to_speech"
            && e["data"]["text"]
                .as_str()
                .unwrap_or("")
                .contains("did not catch")
    });
    assert!(asked_again, "{evs:#?}");

    let mut out = Vec::new();
    chat::run(
        &common::example_agent("receptionist"),
        &b"goodbye\n"[..],
        &mut out,
    )
    .await
    .expect("chat runs");
    let evs = events(&out);
    let stop = evs
        .iter()
        .find(|e| e["name"] == "stop")
        .unwrap_or_else(|| panic!("{evs:#?}"));
    assert!(
        stop["data"]["closing_speech"]
            .as_str()
            .unwrap()
            .contains("Goodbye")
    );
}
