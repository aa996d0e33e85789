//! A whole conversation over real SIP and RTP: a caller (voicegate-sip as the
//! UAC, a plain UDP socket for RTP) calls the echo agent, says a phrase
//! synthesised with flite, and what the agent says back is transcribed with
//! Whisper: the greeting, then "You said: ..." with the caller's words.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use voicegate_media::g711::{linear_to_ulaw, ulaw_to_linear};
use voicegate_sdp::{CodecPreference, OfferParams, SessionDescription};
use voicegate_sip::endpoint::{EndpointConfig, Event, Peer, TransportKind};
use voicegate_sip::transport::{TransportConfig, spawn};
use voicegate_speech::{SpeakRequest, SpeechConfig, TtsService};
use voicegate_tests::{start_gateway, test_config};

/// 16 kHz to 8 kHz by averaging pairs: a crude low-pass, enough for speech
/// that Whisper has to understand.
fn to_8k(pcm16: &[i16]) -> Vec<i16> {
    pcm16
        .chunks(2)
        .map(|c| ((i32::from(c[0]) + i32::from(*c.last().unwrap())) / 2) as i16)
        .collect()
}

/// 8 kHz to 16 kHz by repeating samples.
fn to_16k(pcm8: &[i16]) -> Vec<i16> {
    pcm8.iter().flat_map(|&s| [s, s]).collect()
}

fn rtp_packet(seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_speaks_and_the_echo_agent_answers_with_speech() {
    let gw = start_gateway(test_config()).await;

    // The caller's signalling and media.
    let (uac, mut events, _task) = spawn(TransportConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        endpoint: EndpointConfig {
            advertised: "127.0.0.1:0".parse().unwrap(),
            ..EndpointConfig::default()
        },
        seed: 99,
    })
    .await
    .unwrap();
    let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let rtp_port = rtp.local_addr().unwrap().port();
    let codecs = CodecPreference::from_names(["PCMU"]).unwrap();
    let offer = voicegate_sdp::offer(&OfferParams::new(
        "127.0.0.1".parse().unwrap(),
        rtp_port,
        codecs,
    ));
    let target = format!("sip:echo@{}", gw.sip_addr());
    let call = uac
        .invite(
            &target,
            "sip:caller@127.0.0.1",
            &target,
            offer.to_string().into_bytes(),
            Peer {
                transport: TransportKind::Udp,
                addr: gw.sip_addr(),
                connection: None,
            },
        )
        .await
        .unwrap();
    let answer = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Some(Event::CallAnswered { body, .. })) => break body,
            Ok(Some(_)) => continue,
            other => panic!("no answer: {other:?}"),
        }
    };
    let answer: SessionDescription = std::str::from_utf8(&answer).unwrap().parse().unwrap();
    let negotiated = voicegate_sdp::process_answer(&offer, &answer).unwrap();
    let remote: SocketAddr = negotiated.remote_rtp;

    // Everything the gateway sends, decoded to 8 kHz PCM.
    let rtp = std::sync::Arc::new(rtp);
    let rx = rtp.clone();
    let heard = tokio::spawn(async move {
        let mut pcm = Vec::new();
        let mut buf = [0u8; 2048];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(14);
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, rx.recv(&mut buf)).await {
            if n > 12 && buf[1] & 0x7f == 0 {
                pcm.extend(buf[12..n].iter().map(|&b| ulaw_to_linear(b)));
            }
        }
        pcm
    });

    // The caller's phrase, sent after the greeting had time to play, then
    // silence so the agent's VAD ends the utterance.
    let tts = TtsService::from_config(&SpeechConfig::default()).unwrap();
    let phrase = tts
        .speak(SpeakRequest::new("I would like to book a table for two."))
        .collect()
        .await
        .unwrap();
    let mut caller = vec![0i16; 8000 * 3];
    caller.extend(to_8k(&phrase));
    caller.extend(vec![0i16; 8000 * 7]);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for (i, frame) in caller.chunks(160).enumerate() {
        tick.tick().await;
        let payload: Vec<u8> = frame.iter().map(|&s| linear_to_ulaw(s)).collect();
        rtp.send_to(&rtp_packet(i as u16, (i * 160) as u32, &payload), remote)
            .await
            .unwrap();
    }
    uac.hangup(call).await.unwrap();
    let agent_audio = heard.await.unwrap();
    assert!(gw.wait_idle(Duration::from_secs(15)).await);

    let stt = voicegate_speech::stt_from_config(&SpeechConfig::default()).unwrap();
    let said = voicegate_speech::transcribe_pcm(&stt, &to_16k(&agent_audio))
        .await
        .unwrap()
        .to_lowercase();
    println!("the agent said: {said}");
    // The greeting is one short word ("Hello!"), which Whisper does not
    // reliably recover from 8 kHz G.711; check that audio was played before
    // the caller spoke, and its text in the record below.
    let greeting_rms = {
        let early = &agent_audio[..agent_audio.len().min(8000 * 3)];
        (early.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / early.len().max(1) as f64)
            .sqrt()
    };
    assert!(
        greeting_rms > 300.0,
        "no greeting audio before the caller spoke (rms {greeting_rms:.0})"
    );
    assert!(said.contains("you said"), "no echo in {said:?}");
    assert!(
        said.contains("table"),
        "the caller's words are not in {said:?}"
    );
    let record = &gw.call_records()[0];
    assert!(
        record
            .transcript
            .iter()
            .any(|l| l.role == "agent" && l.text == "Hello!"),
        "{:?}",
        record.transcript
    );
    assert!(
        record
            .transcript
            .iter()
            .any(|l| l.role == "caller" && l.text.to_lowercase().contains("table")),
        "{:?}",
        record.transcript
    );
    gw.stop().await;
}
