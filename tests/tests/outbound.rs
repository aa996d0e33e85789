//! Outbound calls through the API against SIPp standing in for the callee
//! (or the trunk): answered, busy, no answer.

use std::time::Duration;

use serde_json::{Value, json};
use voicegate::Gateway;
use voicegate_tests::{
    free_udp_port, require_tool, run_sipp_on, scenario, start_gateway, test_config,
};

const SIPP_TIMEOUT: Duration = Duration::from_secs(60);
const TOKEN: &str = "outbound-test-token";

async fn gateway(agent: &str) -> Gateway {
    let mut cfg = test_config();
    cfg.agents[0] = toml::from_str(&format!(
        "id = {agent:?}\ndir = {:?}\nnumbers = [\"*\"]\nworkers = 1\n",
        voicegate_tests::repo_root()
            .join("tests/agents")
            .join(agent)
    ))
    .unwrap();
    let dir = std::env::temp_dir().join(format!(
        "voicegate-outbound-{}-{}",
        std::process::id(),
        free_udp_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    cfg.api.token_file = Some(dir.join("token"));
    start_gateway(cfg).await
}

async fn place(gw: &Gateway, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/calls", gw.http_addr()))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn record(gw: &Gateway, id: &str) -> Value {
    reqwest::Client::new()
        .get(format!("http://{}/v1/calls/{id}", gw.http_addr()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_outbound_call_runs_the_agent_with_input_data() {
    if !require_tool("sipp", "sip-tester") {
        return;
    }
    let gw = gateway("hang_up").await;
    let port = free_udp_port();
    // SIPp's built-in UAS: 180, 200, waits for our BYE.
    let uas = tokio::spawn(run_sipp_on(
        port,
        None,
        &["-sn", "uas", "-m", "1"],
        SIPP_TIMEOUT,
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = place(
        &gw,
        json!({"to": format!("sip:alice@127.0.0.1:{port}"), "agent": "hang_up",
               "input_data": {"order": 42}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let run = uas.await.unwrap().unwrap();
    assert_eq!((run.exit_code, run.successful), (0, 1), "{}", run.screen);
    assert!(gw.wait_idle(Duration::from_secs(10)).await);
    let call = record(&gw, &id).await;
    assert_eq!(call["direction"], "outbound");
    assert_eq!(call["state"], "ended");
    assert_eq!(call["outcome"]["label"], "local_bye", "{call}");
    assert_eq!(call["input_data"]["order"], 42);
    assert_eq!(call["output_data"]["cleanup"], "done");
    assert!(call["timings"]["answered"].is_string(), "{call}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_callee_is_reported_with_status_and_reason() {
    if !require_tool("sipp", "sip-tester") {
        return;
    }
    let gw = gateway("hang_up").await;
    let port = free_udp_port();
    let sf = scenario("uas_busy.xml");
    let sf = sf.to_str().unwrap().to_string();
    let uas = tokio::spawn(async move {
        run_sipp_on(port, None, &["-sf", &sf, "-m", "1"], SIPP_TIMEOUT).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = place(
        &gw,
        json!({"to": format!("sip:bob@127.0.0.1:{port}"), "agent": "hang_up"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let run = uas.await.unwrap().unwrap();
    assert_eq!(run.exit_code, 0, "{}", run.screen);
    assert!(gw.wait_idle(Duration::from_secs(10)).await);
    let call = record(&gw, &id).await;
    assert_eq!(call["outcome"]["label"], "busy", "{call}");
    assert_eq!(call["outcome"]["sip_status"], 486);
    assert!(
        call["outcome"]["reason"]
            .as_str()
            .unwrap()
            .contains("cause=17"),
        "{call}"
    );
    assert!(call["timings"]["answered"].is_null());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_call_is_cancelled_at_its_timeout() {
    if !require_tool("sipp", "sip-tester") {
        return;
    }
    let gw = gateway("hang_up").await;
    let port = free_udp_port();
    let sf = scenario("uas_no_answer.xml");
    let sf = sf.to_str().unwrap().to_string();
    let uas = tokio::spawn(async move {
        run_sipp_on(port, None, &["-sf", &sf, "-m", "1"], SIPP_TIMEOUT).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = place(
        &gw,
        json!({"to": format!("sip:carol@127.0.0.1:{port}"), "agent": "hang_up", "timeout_s": 2}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let run = uas.await.unwrap().unwrap();
    assert_eq!(run.exit_code, 0, "{}", run.screen);
    assert!(gw.wait_idle(Duration::from_secs(10)).await);
    let call = record(&gw, &id).await;
    assert_eq!(call["outcome"]["label"], "no_answer", "{call}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_the_reason() {
    let gw = gateway("hang_up").await;
    let (status, body) = place(&gw, json!({"to": "+14155550123", "agent": "hang_up"})).await;
    assert_eq!(status, 422);
    assert!(
        body["error"].as_str().unwrap().contains("no trunk"),
        "{body}"
    );
    let (status, body) = place(
        &gw,
        json!({"to": "sip:a@127.0.0.1:5999", "agent": "nobody"}),
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        body["error"].as_str().unwrap().contains("no agent"),
        "{body}"
    );
    let (status, _) = place(&gw, json!({"to": "not a number", "agent": "hang_up"})).await;
    assert_eq!(status, 422);
    gw.stop().await;
}
