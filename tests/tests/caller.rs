//! `voicegate call` against the receptionist example agent: the caller hears
//! the greeting (transcribed), asks for a person in speech, and gets a REFER
//! to the front-desk number; accepting it (NOTIFY 200) ends the call.

use std::time::Duration;

use voicegate::caller::{CallOptions, call};
use voicegate_speech::SpeechConfig;
use voicegate_tests::{start_gateway, test_config};

/// `voicegate call` to `target`, saying `phrase` when it is our turn and
/// accepting a REFER; returns the report and the lines it printed.
async fn call_saying(target: String, phrase: &str) -> (voicegate::caller::CallReport, Vec<String>) {
    let mut lines = Vec::new();
    let report = call(
        CallOptions {
            target,
            say: vec![phrase.into()],
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
    (report, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voicegate_call_asks_the_receptionist_for_a_person_and_is_referred() {
    let mut cfg = test_config();
    let dir = voicegate_tests::repo_root().join("config/agents/receptionist");
    cfg.agents[0] = toml::from_str(&format!(
        "id = \"receptionist\"\ndir = {dir:?}\nnumbers = [\"*\"]\nworkers = 1\n\
         variables = {{ human = \"+14155550100\" }}\n"
    ))
    .unwrap();
    cfg.trunks.push(voicegate_tests::carrier_trunk(
        voicegate_tests::free_udp_port(),
    ));
    let gw = start_gateway(cfg).await;
    let (report, lines) = call_saying(
        format!("sip:receptionist@{}", gw.sip_addr()),
        "I want to speak with a person.",
    )
    .await;
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

/// A bridged transfer (mode "bridge") carries speech both ways: the agent
/// has the gateway call the target through the trunk (SIPp answering and
/// echoing its RTP), the caller speaks, and hears its own words back
/// through target and bridge. The caller's BYE ends the target's leg.
///
/// The phrase is one Whisper tiny.en recognises reliably in the telephone
/// band: "The quick brown fox..." lost its fricatives to the 8 kHz PCMU
/// (relayed bit-exactly, checked with tshark) and came back as "the link".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridged_transfer_carries_the_callers_speech_to_the_target_and_back() {
    if !voicegate_tests::require_tool("sipp", "sip-tester") {
        return;
    }
    let trunk_port = voicegate_tests::free_udp_port();
    let sf = voicegate_tests::scenario("uas_bridge_target.xml");
    let sf = sf.to_str().unwrap().to_string();
    let uas = tokio::spawn(async move {
        voicegate_tests::run_sipp_on(
            trunk_port,
            None,
            &["-sf", &sf, "-m", "1", "-rtp_echo"],
            Duration::from_secs(120),
        )
        .await
        .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gw = start_gateway(voicegate_tests::transferrer_config(
        trunk_port,
        Some("bridge"),
    ))
    .await;
    let (report, lines) = call_saying(
        format!("sip:+14155550100@{}", gw.sip_addr()),
        "I want to speak with a person.",
    )
    .await;
    assert!(report.refer_to.is_none(), "bridge mode sends no REFER");
    let heard = report.heard.join(" ").to_lowercase();
    // Words, not the exact phrase: Whisper's articles vary under load.
    assert!(
        heard.contains("speak") && heard.contains("person"),
        "{lines:#?}"
    );
    assert_eq!(report.ended, "we hung up", "{lines:#?}");
    let run = uas.await.unwrap();
    assert_eq!((run.exit_code, run.successful), (0, 1), "{}", run.screen);
    assert!(gw.wait_idle(Duration::from_secs(10)).await);
    let r = &gw.call_records()[0];
    let t = r.transfer.as_ref().expect("transfer recorded");
    assert_eq!((t.mode.as_str(), t.result.as_str()), ("bridge", "ok"));
    assert_eq!(t.sip_codes, vec![180, 200], "{t:?}");
    gw.stop().await;
}
