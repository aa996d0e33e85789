//! The HTTP side against real callers: the call API with its bearer token,
//! the signed `session.ended` webhook received by a local server, and the
//! inbound allow list.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use tokio::net::UdpSocket;
use voicegate_tests::{require_tool, run_sipp, scenario, start_gateway, test_config};

const SIPP_TIMEOUT: Duration = Duration::from_secs(120);

fn temp_file(name: &str, content: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("voicegate-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_api_requires_the_token_and_shows_records_and_the_webhook_is_signed() {
    if !require_tool("sipp", "sip-tester") {
        return;
    }
    // A local webhook receiver that keeps what it gets.
    let received: Arc<Mutex<Vec<(HeaderMap, Bytes)>>> = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push((headers, body));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut cfg = test_config();
    cfg.agents[0] = voicegate_tests::agent("hang_up", true, "");
    cfg.api.token_file = Some(temp_file("token", "s3cret-token\n"));
    cfg.webhook.url = Some(format!("http://{hook_addr}/hook"));
    cfg.webhook.secret_file = Some(temp_file("hook-secret", "hook-key"));
    let gw = start_gateway(cfg).await;
    let base = format!("http://{}", gw.http_addr());
    let http = reqwest::Client::new();

    // No token, wrong token: 401.
    let r = http.get(format!("{base}/v1/calls")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("{base}/v1/calls"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // A call the agent ends itself (greets, StopEvent).
    voicegate_tests::scenario_succeeds(gw.sip_addr(), "uac_wait_bye.xml", 1).await;
    assert!(gw.wait_idle(Duration::from_secs(10)).await);

    let id = gw.call_records()[0].id.clone();
    let r = http
        .get(format!("{base}/v1/calls/{id}"))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let call: Value = r.json().await.unwrap();
    assert_eq!(call["state"], "ended");
    assert_eq!(call["direction"], "inbound");
    assert_eq!(call["agent"], "hang_up");
    assert_eq!(call["outcome"]["label"], "local_bye");
    assert_eq!(call["outcome"]["sip_status"], 200);
    assert_eq!(call["output_data"]["cleanup"], "done");
    assert_eq!(call["transcript"][0]["role"], "agent");
    assert!(call["timings"]["setup_ms"].is_u64(), "{call}");
    assert_eq!(call["media"]["codec"], "Pcmu");
    let r = http
        .get(format!("{base}/v1/calls/nope"))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let live: Value = http
        .get(format!("{base}/v1/calls"))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(live["calls"].as_array().map(Vec::len), Some(0));
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            http.get(format!("{base}{path}"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("voicegate_calls_total"), "{metrics}");

    // The webhook arrived, signed over its exact body.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while received.lock().unwrap().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "one session.ended delivery");
    let (headers, body) = &got[0];
    let body = std::str::from_utf8(body).unwrap();
    let sig = headers
        .get(voicegate::webhook::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .expect("signature header");
    assert!(
        voicegate::webhook::verify(b"hook-key", sig, body),
        "bad signature {sig}"
    );
    assert!(!voicegate::webhook::verify(b"other-key", sig, body));
    let event: Value = serde_json::from_str(body).unwrap();
    assert_eq!(event["type"], "session.ended");
    assert_eq!(event["call"]["id"], id.as_str());
    assert_eq!(event["call"]["output_data"]["cleanup"], "done");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_from_a_source_outside_the_allow_list_gets_403() {
    let mut cfg = test_config();
    cfg.access.allow = vec!["10.0.0.0/8".into()];
    let gw = start_gateway(cfg).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(gw.sip_addr()).await.unwrap();
    let local = sock.local_addr().unwrap();
    let target = gw.sip_addr();
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 40000 RTP/AVP 0\r\n";
    let invite = format!(
        "INVITE sip:100@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKacl1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:x@{local}>;tag=a1\r\nTo: <sip:100@{target}>\r\n\
         Call-ID: acl1@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:x@{local}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    let reply = voicegate_tests::final_reply(&sock, &invite).await;
    assert!(reply.starts_with("SIP/2.0 403"), "{reply}");
    gw.stop().await;
}

/// A caller outside the allow list gets through by answering the digest
/// challenge with the right password; with a wrong one it gets 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_outside_the_allow_list_passes_by_digest() {
    if !require_tool("sipp", "sip-tester") {
        return;
    }
    let mut cfg = test_config();
    cfg.access.allow = vec!["10.0.0.0/8".into()];
    cfg.access.users = vec![
        toml::from_str(&format!(
            "username = \"pbx1\"\npassword_file = {:?}\n",
            temp_file("pbx1-password", "s3cr3t\n")
        ))
        .unwrap(),
    ];
    let gw = start_gateway(cfg).await;
    let sf = scenario("uac_digest.xml");
    let sf = sf.to_str().unwrap();
    let run = run_sipp(
        gw.sip_addr(),
        &["-sf", sf, "-m", "1", "-au", "pbx1", "-ap", "s3cr3t"],
        SIPP_TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!((run.exit_code, run.successful), (0, 1), "{}", run.screen);
    let run = run_sipp(
        gw.sip_addr(),
        &["-sf", sf, "-m", "1", "-au", "pbx1", "-ap", "wrong"],
        SIPP_TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(
        run.failed, 1,
        "a wrong password must not get through:\n{}",
        run.screen
    );
    assert!(gw.wait_idle(Duration::from_secs(10)).await);
    gw.stop().await;
}
