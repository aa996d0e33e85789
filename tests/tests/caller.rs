//! `voicegate call` against the receptionist example agent: the caller hears
//! the greeting (transcribed), asks for a person in speech, and gets a REFER
//! to the front-desk number; accepting it (NOTIFY 200) ends the call.

use std::time::Duration;

use voicegate::caller::{CallOptions, call};
use voicegate_speech::SpeechConfig;
use voicegate_tests::{start_gateway, test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voicegate_call_asks_the_receptionist_for_a_person_and_is_referred() {
    let mut cfg = test_config();
    let dir = voicegate_tests::repo_root().join("config/agents/receptionist");
    cfg.agents[0] = toml::from_str(&format!(
        "id = \"receptionist\"\ndir = {dir:?}\nnumbers = [\"*\"]\nworkers = 1\n\
         variables = {{ human = \"+14155550100\" }}\n"
    ))
    .unwrap();
    cfg.trunks
        .push(toml::from_str("name = \"carrier\"\nhost = \"127.0.0.1\"\nport = 5999\n").unwrap());
    let gw = start_gateway(cfg).await;
    let mut lines = Vec::new();
    let report = call(
        CallOptions {
            target: format!("sip:receptionist@{}", gw.sip_addr()),
            say: vec!["I want to speak with a person.".into()],
            wav: None,
            dtmf: None,
            timeout: Duration::from_secs(60),
            accept_refer: true,
            speech: SpeechConfig::default(),
        },
        |l| lines.push(l.to_string()),
    )
    .await
    .unwrap();
    println!("{}", lines.join("\n"));
    let greeting = report
        .heard
        .first()
        .map(|s| s.to_lowercase())
        .unwrap_or_default();
    assert!(greeting.contains("thank you for calling"), "{lines:#?}");
    let refer_to = report.refer_to.expect("a REFER");
    assert!(refer_to.contains("+14155550100"), "{refer_to}");
    assert_eq!(report.ended, "the far end hung up", "{lines:#?}");
    assert!(gw.wait_idle(Duration::from_secs(10)).await);
    gw.stop().await;
}
