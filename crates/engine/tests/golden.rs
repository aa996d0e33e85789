//! Golden test: the real primfunctions package emits every event class; Rust parses
//! each into its typed variant and re-emits it equal; Python rebuilds Rust's output
//! with `event_from_str` and gets the same dict back.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;
use voicegate_engine::event::{Event, EventKind};

/// JSON equality where 1 == 1.0 (Python writes `speed=1` as 1, Rust's f64 as 1.0).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

#[test]
fn every_primfunctions_event_round_trips() {
    let env = common::sdk_env();
    let script = common::test_path("golden/emit_all.py");
    let out = Command::new(&env.python)
        .arg(&script)
        .arg("emit")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "emitter failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut rust_lines = Vec::new();
    let mut classes = std::collections::BTreeSet::new();
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let class = v["class"].as_str().unwrap().to_owned();
        let wire = v["event"].clone();
        let ev: Event = serde_json::from_value(wire.clone())
            .unwrap_or_else(|e| panic!("{class}: Rust could not parse {wire}: {e}"));
        let generic = matches!(ev.kind, EventKind::Other { .. });
        let expect_generic = class == "Event" || class == "CustomEvent";
        assert_eq!(generic, expect_generic, "{class} parsed as {:?}", ev.kind);
        if class == "MetricEvent" {
            assert!(matches!(ev.kind, EventKind::Metric(_)));
        }
        let back = ev.to_value();
        assert!(
            json_eq(&back, &wire),
            "{class}: re-emitted\n{back}\n!= python\n{wire}"
        );
        classes.insert(class);
        rust_lines.push(ev.to_json());
    }
    assert!(
        classes.len() >= 40,
        "only {} classes emitted",
        classes.len()
    );

    // Reverse direction: Python rebuilds what Rust wrote.
    let mut child = Command::new(&env.python)
        .arg(&script)
        .arg("check")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rust_lines.join("\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let mut checked = 0;
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        match v["ok"].as_bool() {
            Some(true) => checked += 1,
            Some(false) => panic!("python rebuilt a different event: {v}"),
            // Base Event / CustomEvent names: event_from_str has no class for them.
            None => {}
        }
    }
    assert!(checked >= 50, "only {checked} events checked by python");
}
