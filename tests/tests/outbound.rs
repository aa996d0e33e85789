//! Outbound calls through the API against SIPp standing in for the callee
//! (or the trunk): answered, busy, no answer.

use std::time::Duration;

use md5::Digest as _;
use serde_json::{Value, json};
use voicegate::Gateway;
use voicegate_tests::{
    free_udp_port, require_tool, run_sipp_on, scenario, start_gateway, test_config,
};

const SIPP_TIMEOUT: Duration = Duration::from_secs(60);
const TOKEN: &str = "outbound-test-token";

async fn gateway(agent: &str) -> Gateway {
    let mut cfg = test_config();
    cfg.agents[0] = voicegate_tests::agent(agent, true, "");
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

/// A trunk registering with SIPp as its registrar: challenged (401), the
/// digest answered (MD5 checked by SIPp itself; SHA-256 checked for shape,
/// its arithmetic is covered by the RFC 7616 vectors in voicegate-sip),
/// refreshed, and removed when the gateway stops.
async fn trunk_registers(scenario_file: &str) {
    if !require_tool("sipp", "sip-tester") {
        return;
    }
    let port = free_udp_port();
    let sf = scenario(scenario_file);
    let sf = sf.to_str().unwrap().to_string();
    let registrar = tokio::spawn(async move {
        run_sipp_on(port, None, &["-sf", &sf, "-m", "1"], SIPP_TIMEOUT).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dir = std::env::temp_dir().join(format!("voicegate-trunk-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("password"), "pw1\n").unwrap();
    let mut cfg = test_config();
    cfg.trunks.push(
        toml::from_str(&format!(
            "name = \"carrier\"\nhost = \"127.0.0.1\"\nport = {port}\nusername = \"acct1\"\n\
             password_file = {:?}\nregister = true\nregister_expiry_s = 120\n",
            dir.join("password")
        ))
        .unwrap(),
    );
    let gw = start_gateway(cfg).await;
    // Registered, then refreshed (the first grant is 2 s).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = &gw.trunk_statuses()[0];
        if s.registration == "registered" && s.expires_in_s.is_some_and(|e| e > 10) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not refreshed: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.stop().await;
    let run = registrar.await.unwrap().unwrap();
    assert_eq!((run.exit_code, run.successful), (0, 1), "{}", run.screen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunk_registers_with_md5_digest_refreshes_and_unregisters() {
    trunk_registers("uas_register_md5.xml").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunk_registers_with_sha256_digest_refreshes_and_unregisters() {
    trunk_registers("uas_register_sha256.xml").await;
}

/// A call to a number through a trunk (SIPp) that challenges the INVITE with
/// 407: answered with the trunk's credentials, the agent's audio reaches the
/// trunk, the trunk hangs up, and the record tells it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_through_a_trunk_answers_the_407_challenge() {
    if !require_tool("sipp", "sip-tester") {
        return;
    }
    let port = free_udp_port();
    let sf = scenario("uas_trunk_auth.xml");
    let sf = sf.to_str().unwrap().to_string();
    let trunk = tokio::spawn(async move {
        run_sipp_on(
            port,
            None,
            &["-sf", &sf, "-m", "1", "-rtp_echo", "-trace_msg"],
            SIPP_TIMEOUT,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dir = std::env::temp_dir().join(format!(
        "voicegate-trunk-call-{}-{port}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("password"), "pw1").unwrap();
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    let mut cfg = test_config();
    cfg.api.token_file = Some(dir.join("token"));
    // The echo agent greets with speech ("Hello!") when the call is answered.
    cfg.trunks.push(
        toml::from_str(&format!(
            "name = \"carrier\"\nhost = \"127.0.0.1\"\nport = {port}\nusername = \"acct1\"\n\
             password_file = {:?}\nfrom_number = \"+14155550100\"\ncodecs = [\"PCMU\", \"telephone-event\"]\n",
            dir.join("password")
        ))
        .unwrap(),
    );
    let gw = start_gateway(cfg).await;
    let (status, body) = place(
        &gw,
        json!({"to": "+14155550123", "agent": "echo", "input_data": {"campaign": "x"}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let run = trunk.await.unwrap().unwrap();
    assert_eq!((run.exit_code, run.successful), (0, 1), "{}", run.screen);
    // The digest in the re-sent INVITE is right (RFC 7616 3.4.1, MD5, qop=auth).
    let authz = run
        .messages
        .lines()
        .find_map(|l| l.strip_prefix("Proxy-Authorization: Digest "))
        .expect("Proxy-Authorization in SIPp's trace");
    let param = |name: &str| -> String {
        authz
            .split(", ")
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} missing in {authz}"))
            .trim_matches('"')
            .to_string()
    };
    let md5 = |s: String| format!("{:x}", md5::Md5::digest(s.as_bytes()));
    let ha1 = md5(format!("acct1:{}:pw1", param("realm")));
    let ha2 = md5(format!("INVITE:{}", param("uri")));
    let expected = md5(format!(
        "{ha1}:{}:{}:{}:auth:{ha2}",
        param("nonce"),
        param("nc"),
        param("cnonce")
    ));
    assert_eq!(param("response"), expected, "{authz}");
    assert!(gw.wait_idle(Duration::from_secs(10)).await);
    let call = record(&gw, &id).await;
    assert_eq!(call["outcome"]["label"], "remote_bye", "{call}");
    assert_eq!(
        call["to"],
        "sip:+14155550123@127.0.0.1:".to_string() + &port.to_string()
    );
    assert_eq!(call["input_data"]["campaign"], "x");
    assert_eq!(call["progress"], json!([180]), "{call}");
    // The greeting was spoken, and audio flowed both ways: ours to SIPp, and
    // SIPp's echo back.
    assert!(
        call["transcript"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["role"] == "agent" && l["text"] == "Hello!"),
        "{call}"
    );
    assert!(call["media"]["rtp_sent"].as_u64().unwrap() > 100, "{call}");
    assert!(
        call["media"]["rtp_received"].as_u64().unwrap() > 20,
        "{call}"
    );
    gw.stop().await;
}
