//! SIPp against a real gateway on loopback: call flows over UDP and TCP,
//! CANCEL, OPTIONS, malformed input, draining.

use std::time::Duration;

use tokio::net::UdpSocket;
use voicegate_tests::{
    free_udp_port, require_tool, run_sipp, scenario, start_gateway, test_config,
};

const SIPP_TIMEOUT: Duration = Duration::from_secs(120);

async fn hundred_calls(transport: &str) {
    if !require_tool("sipp", "sip-tester") {
        return;
    }
    let gw = start_gateway(test_config()).await;
    let run = run_sipp(
        gw.sip_addr(),
        &[
            "-sn", "uac", "-t", transport, "-r", "20", "-m", "100", "-l", "100",
        ],
        SIPP_TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(
        (run.exit_code, run.successful, run.failed),
        (0, 100, 0),
        "sipp over {transport}:\n{}",
        run.screen
    );
    assert!(
        gw.wait_idle(Duration::from_secs(5)).await,
        "calls left over"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_uac_100_calls_at_20_per_second_over_udp() {
    hundred_calls("u1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_uac_100_calls_at_20_per_second_over_tcp() {
    hundred_calls("t1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_answer_gets_487_and_the_call_ends_cleanly() {
    if !require_tool("sipp", "sip-tester") {
        return;
    }
    let mut cfg = test_config();
    cfg.calls.ring_ms = 5_000;
    let gw = start_gateway(cfg).await;
    let sf = scenario("uac_cancel.xml");
    let run = run_sipp(
        gw.sip_addr(),
        &["-sf", sf.to_str().unwrap(), "-m", "3", "-r", "10"],
        SIPP_TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(
        (run.exit_code, run.successful, run.failed),
        (0, 3, 0),
        "{}",
        run.screen
    );
    // Cancelled calls end at once, well before the 5 s ring would.
    assert!(
        gw.wait_idle(Duration::from_secs(2)).await,
        "cancelled calls still live"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_gets_200_with_allow_and_accept() {
    if !require_tool("sipp", "sip-tester") {
        return;
    }
    let gw = start_gateway(test_config()).await;
    let sf = scenario("options.xml");
    for transport in ["u1", "t1"] {
        let run = run_sipp(
            gw.sip_addr(),
            &["-sf", sf.to_str().unwrap(), "-t", transport, "-m", "1"],
            SIPP_TIMEOUT,
        )
        .await
        .unwrap();
        assert_eq!(
            (run.exit_code, run.successful),
            (0, 1),
            "{transport}:\n{}",
            run.screen
        );
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_stop_event_ends_the_call_with_bye() {
    if !require_tool("sipp", "sip-tester") {
        return;
    }
    let mut cfg = test_config();
    cfg.agents[0] = voicegate_tests::agent("hang_up", true, "");
    let gw = start_gateway(cfg).await;
    let sf = scenario("uac_wait_bye.xml");
    let run = run_sipp(
        gw.sip_addr(),
        &["-sf", sf.to_str().unwrap(), "-m", "3", "-r", "3"],
        SIPP_TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(
        (run.exit_code, run.successful, run.failed),
        (0, 3, 0),
        "{}",
        run.screen
    );
    // Each session's clean-up StopEvent ran before the call task ended.
    assert!(
        gw.wait_idle(Duration::from_secs(10)).await,
        "sessions still live"
    );
    // The greeting and the closing speech ("Goodbye.") were said before the
    // BYE: the call lasted as long as the speech, not a few milliseconds.
    for r in gw.call_records() {
        let lasted = r.timings.duration_ms.unwrap_or(0);
        assert!(
            lasted > 1000,
            "BYE after {lasted} ms: speech not played first"
        );
        // The closing speech is in the record's transcript, last.
        assert_eq!(
            r.transcript
                .last()
                .map(|l| (l.role.as_str(), l.text.as_str())),
            Some(("agent", "Goodbye.")),
            "{:?}",
            r.transcript
        );
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_to_agent_transfer_moves_the_live_call() {
    if !require_tool("sipp", "sip-tester") {
        return;
    }
    let mut cfg = test_config();
    cfg.agents = vec![
        voicegate_tests::agent("front", true, ""),
        voicegate_tests::agent("back", false, ""),
    ];
    let gw = start_gateway(cfg).await;
    // The caller waits for the BYE that agent "back" sends.
    voicegate_tests::scenario_succeeds(gw.sip_addr(), "uac_wait_bye.xml", 1).await;
    assert!(gw.wait_idle(Duration::from_secs(10)).await);
    let records = gw.call_records();
    let r = &records[0];
    assert_eq!(r.agent, "back");
    assert_eq!(r.output_data["agent"], "back", "{:?}", r.output_data);
    assert_eq!(
        r.output_data["input"]["handed_by"], "front",
        "{:?}",
        r.output_data
    );
    gw.stop().await;
}

async fn exchange(sock: &UdpSocket, msg: &[u8], wait: Duration) -> Option<String> {
    sock.send(msg).await.unwrap();
    let mut buf = vec![0u8; 65536];
    match tokio::time::timeout(wait, sock.recv(&mut buf)).await {
        Ok(Ok(n)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        _ => None,
    }
}

fn invite(
    target: std::net::SocketAddr,
    local: std::net::SocketAddr,
    call_id: &str,
    body: &str,
    content_length: usize,
) -> String {
    format!(
        "INVITE sip:100@{target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK{call_id}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:caller@{local}>;tag=t{call_id}\r\n\
         To: <sip:100@{target}>\r\n\
         Call-ID: {call_id}@127.0.0.1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:caller@{local}>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {content_length}\r\n\r\n{body}"
    )
}

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                   m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_truncated_invite_get_400_or_drop_and_the_next_call_succeeds() {
    let gw = start_gateway(test_config()).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(gw.sip_addr()).await.unwrap();
    let local = sock.local_addr().unwrap();

    // Binary garbage: nothing to answer, so it is dropped.
    let garbage: Vec<u8> = (0..512u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert_eq!(
        exchange(&sock, &garbage, Duration::from_millis(300)).await,
        None
    );
    // A request line alone.
    let reply = exchange(
        &sock,
        b"INVITE sip:x SIP/2.0\r\n\r\n",
        Duration::from_millis(300),
    )
    .await;
    assert!(
        reply.is_none() || reply.as_deref().unwrap().starts_with("SIP/2.0 400"),
        "{reply:?}"
    );
    // A truncated INVITE: Content-Length promises more body than arrived.
    let truncated = invite(gw.sip_addr(), local, "trunc1", &SDP[..40], SDP.len());
    let reply = exchange(&sock, truncated.as_bytes(), Duration::from_secs(2))
        .await
        .expect("truncated INVITE answered");
    assert!(reply.starts_with("SIP/2.0 400 "), "{reply}");
    assert!(reply.contains("Call-ID: trunc1@127.0.0.1"), "{reply}");
    // Garbage on TCP closes that connection only.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(gw.sip_addr()).await.unwrap();
        tcp.write_all(b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf))
            .await
            .expect("closed in time")
            .unwrap_or(0);
        assert!(n == 0 || buf.starts_with(b"SIP/2.0 400"), "{:?}", &buf[..n]);
    }

    // A well-formed INVITE now gets through to a 200 with an SDP answer.
    let good = invite(gw.sip_addr(), local, "good1", SDP, SDP.len());
    let answer = voicegate_tests::final_reply(&sock, &good).await;
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
    assert!(answer.contains("m=audio "), "{answer}");
    // ACK and BYE it, so the call ends now rather than at the ACK timeout.
    let to = answer
        .lines()
        .find(|l| l.starts_with("To:"))
        .expect("To in 200")
        .to_string();
    let target = gw.sip_addr();
    for (method, branch) in [("ACK", "z9hG4bKgoodack"), ("BYE", "z9hG4bKgoodbye")] {
        let cseq = if method == "ACK" { 1 } else { 2 };
        let req = format!(
            "{method} sip:100@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:caller@{local}>;tag=tgood1\r\n{to}\r\n\
             Call-ID: good1@127.0.0.1\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        );
        sock.send(req.as_bytes()).await.unwrap();
    }
    let mut buf = vec![0u8; 65536];
    let n = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf))
        .await
        .expect("BYE answered in time")
        .unwrap();
    let bye_ok = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        bye_ok.starts_with("SIP/2.0 200") && bye_ok.contains("CSeq: 2 BYE"),
        "{bye_ok}"
    );
    assert!(gw.wait_idle(Duration::from_secs(2)).await);

    if require_tool("sipp", "sip-tester") {
        let run = run_sipp(
            gw.sip_addr(),
            &["-sn", "uac", "-m", "5", "-r", "10"],
            SIPP_TIMEOUT,
        )
        .await
        .unwrap();
        assert_eq!(
            (run.exit_code, run.successful, run.failed),
            (0, 5, 0),
            "{}",
            run.screen
        );
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_common_codec_gets_488_with_warning() {
    let gw = start_gateway(test_config()).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(gw.sip_addr()).await.unwrap();
    let local = sock.local_addr().unwrap();
    let g729 = SDP
        .replace("RTP/AVP 0", "RTP/AVP 18")
        .replace("0 PCMU/8000", "18 G729/8000");
    let msg = invite(gw.sip_addr(), local, "g729", &g729, g729.len());
    let reply = voicegate_tests::final_reply(&sock, &msg).await;
    assert!(reply.starts_with("SIP/2.0 488"), "{reply}");
    assert!(
        reply.contains("Warning: 305 voicegate \"Incompatible media format"),
        "{reply}"
    );
    assert!(reply.contains("G729/8000"), "{reply}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_gateway_answers_503_with_retry_after() {
    let gw = start_gateway(test_config()).await;
    gw.drain();
    let sock = UdpSocket::bind(("127.0.0.1", free_udp_port()))
        .await
        .unwrap();
    sock.connect(gw.sip_addr()).await.unwrap();
    let local = sock.local_addr().unwrap();
    let msg = invite(gw.sip_addr(), local, "drain1", SDP, SDP.len());
    let reply = voicegate_tests::final_reply(&sock, &msg).await;
    assert!(reply.starts_with("SIP/2.0 503"), "{reply}");
    assert!(reply.contains("Retry-After: 30"), "{reply}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_and_resume_by_reinvite_keep_the_call() {
    if !require_tool("sipp", "sip-tester") {
        return;
    }
    let gw = start_gateway(test_config()).await;
    voicegate_tests::scenario_succeeds(gw.sip_addr(), "uac_hold_resume.xml", 1).await;
    assert!(gw.wait_idle(Duration::from_secs(10)).await);
    let r = &gw.call_records()[0];
    assert_eq!(
        r.outcome.as_ref().map(|o| o.label.as_str()),
        Some("remote_bye")
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_timer_is_refreshed_by_the_gateway() {
    if !require_tool("sipp", "sip-tester") {
        return;
    }
    let mut cfg = test_config();
    // Short intervals for the test (RFC 4028's floor of 90 s is the default).
    cfg.sip.min_se_s = 1;
    cfg.sip.session_expires_s = 2;
    let gw = start_gateway(cfg).await;
    voicegate_tests::scenario_succeeds(gw.sip_addr(), "uac_session_timer.xml", 1).await;
    assert!(gw.wait_idle(Duration::from_secs(10)).await);
    gw.stop().await;
}

/// SIPp standing in for the trunk (and the person behind it) on `port`,
/// running `name` for one call; with `-rtp_echo` its media port sends back
/// what it receives.
fn trunk_uas(port: u16, name: &str) -> tokio::task::JoinHandle<voicegate_tests::SippRun> {
    let sf = scenario(name).to_str().unwrap().to_string();
    tokio::spawn(async move {
        voicegate_tests::run_sipp_on(
            port,
            None,
            &["-sf", &sf, "-m", "1", "-rtp_echo"],
            SIPP_TIMEOUT,
        )
        .await
        .unwrap()
    })
}

/// One call from SIPp (`uac`) to the transferrer agent, whose transfer
/// reaches SIPp as the trunk (`uas`); both scenarios must pass. Returns the
/// call's record.
async fn transfer_call(uac: &str, uas: &str) -> voicegate::records::CallRecord {
    let trunk_port = free_udp_port();
    let trunk = trunk_uas(trunk_port, uas);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gw = start_gateway(voicegate_tests::transferrer_config(trunk_port, None)).await;
    voicegate_tests::scenario_succeeds(gw.sip_addr(), uac, 1).await;
    assert_sipp_ok(&trunk.await.unwrap(), "trunk");
    assert!(gw.wait_idle(Duration::from_secs(10)).await);
    let record = gw.call_records().remove(0);
    gw.stop().await;
    record
}

fn assert_sipp_ok(run: &voicegate_tests::SippRun, what: &str) {
    assert_eq!(
        (run.exit_code, run.successful),
        (0, 1),
        "{what}:\n{}",
        run.screen
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_by_refer_then_bye_when_notify_reports_200() {
    if !require_tool("sipp", "sip-tester") {
        return;
    }
    let gw = start_gateway(voicegate_tests::transferrer_config(free_udp_port(), None)).await;
    voicegate_tests::scenario_succeeds(gw.sip_addr(), "uac_refer_accept.xml", 1).await;
    assert!(gw.wait_idle(Duration::from_secs(10)).await);
    let r = &gw.call_records()[0];
    assert_eq!(
        r.outcome.as_ref().map(|o| o.label.as_str()),
        Some("local_bye")
    );
    assert!(
        r.output_data.get("transfer_error").is_none(),
        "{:?}",
        r.output_data
    );
    let t = r.transfer.as_ref().expect("transfer recorded");
    assert_eq!((t.mode.as_str(), t.result.as_str()), ("refer", "ok"));
    assert_eq!(t.sip_codes.first(), Some(&202), "{t:?}");
    assert_eq!(t.sip_codes.last(), Some(&200), "{t:?}");
    gw.stop().await;
}

/// REFER refused (603): the gateway falls back to bridging through the
/// trunk, whose callee is busy (486). The agent is told both statuses with
/// an ErrorEvent and goes on (here: records the message and hangs up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_refer_falls_back_to_a_bridge_and_a_busy_target_is_told_to_the_agent() {
    if !require_tool("sipp", "sip-tester") {
        return;
    }
    let r = &transfer_call("uac_refer_decline.xml", "uas_busy.xml").await;
    let err = r.output_data["transfer_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("603") && err.contains("486"),
        "{:?}",
        r.output_data
    );
    let t = r.transfer.as_ref().expect("transfer recorded");
    assert_eq!((t.mode.as_str(), t.result.as_str()), ("bridge", "failed"));
    assert_eq!(t.sip_codes, vec![603, 486], "{t:?}");
}

/// REFER refused (603): the gateway calls the target through the trunk
/// (SIPp, answering PCMU and echoing its RTP) and bridges the legs; the
/// caller (SIPp, PCMA) talks for 8 s and hangs up, which ends the target's
/// leg too. The caller's audio went to the target and came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_refer_is_bridged_to_the_target_and_the_callers_bye_ends_both() {
    if !require_tool("sipp", "sip-tester") {
        return;
    }
    let r = &transfer_call("uac_refer_decline_then_talk.xml", "uas_bridge_target.xml").await;
    assert_eq!(
        r.outcome.as_ref().map(|o| o.label.as_str()),
        Some("remote_bye"),
        "{r:?}"
    );
    assert!(r.output_data.get("transfer_error").is_none(), "{r:?}");
    assert_eq!(r.media.as_ref().map(|m| m.codec.as_str()), Some("Pcma"));
    let t = r.transfer.as_ref().expect("transfer recorded");
    assert_eq!((t.mode.as_str(), t.result.as_str()), ("bridge", "ok"));
    assert_eq!(t.sip_codes, vec![603, 180, 200], "{t:?}");
    let b = t.bridge.as_ref().expect("bridge figures");
    assert_eq!((b.codec.as_str(), b.ended_by.as_str()), ("Pcmu", "caller"));
    // ~8 s of the caller's speech reached the target as 20 ms frames and
    // came back from its echo.
    assert!(b.frames_to_target > 300, "{b:?}");
    assert!(b.target_rtp_received > 300, "{b:?}");
    assert!(b.frames_from_target > 300, "{b:?}");
}

/// The target hangs up first: the gateway ends the caller's call with BYE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridged_target_hanging_up_ends_the_callers_call() {
    if !require_tool("sipp", "sip-tester") {
        return;
    }
    // The caller refuses the REFER, then waits for the gateway's BYE.
    let r = &transfer_call("uac_refer_decline.xml", "uas_bridge_target_hangs_up.xml").await;
    assert_eq!(
        r.outcome.as_ref().map(|o| o.label.as_str()),
        Some("local_bye"),
        "{r:?}"
    );
    let b = r.transfer.as_ref().and_then(|t| t.bridge.as_ref());
    assert_eq!(b.map(|b| b.ended_by.as_str()), Some("target"), "{r:?}");
}

/// The example keypad menu over a real call: DTMF 1 from SIPp's pcap reaches
/// the agent, which transfers to sales by REFER; the caller declines, the
/// bridge fallback finds sales busy (486 from the trunk), the agent is told
/// (ErrorEvent) and keeps the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_menu_transfers_on_1_and_survives_a_declined_refer() {
    if !require_tool("sipp", "sip-tester") {
        return;
    }
    let mut cfg = test_config();
    let dir = voicegate_tests::repo_root().join("config/agents/dtmf-menu");
    cfg.agents[0] = toml::from_str(&format!(
        "id = \"dtmf-menu\"\ndir = {dir:?}\nnumbers = [\"*\"]\nworkers = 1\n"
    ))
    .unwrap();
    // The caller declines the REFER; the bridge fallback finds sales busy.
    let trunk_port = free_udp_port();
    let uas = trunk_uas(trunk_port, "uas_busy.xml");
    tokio::time::sleep(Duration::from_millis(500)).await;
    cfg.trunks.push(voicegate_tests::carrier_trunk(trunk_port));
    let gw = start_gateway(cfg).await;
    voicegate_tests::scenario_succeeds(gw.sip_addr(), "uac_dtmf_menu.xml", 1).await;
    assert_sipp_ok(&uas.await.unwrap(), "trunk");
    assert!(gw.wait_idle(Duration::from_secs(15)).await);
    let r = &gw.call_records()[0];
    assert_eq!(r.media.as_ref().map(|m| m.dtmf.as_str()), Some("1"));
    assert!(
        r.transcript
            .iter()
            .any(|l| l.role == "agent" && l.text.contains("busy")),
        "{:?}",
        r.transcript
    );
    gw.stop().await;
}
