//! A whole conversation over real SIP and RTP: a caller (voicegate-sip as the
//! UAC, a plain UDP socket for RTP) calls the echo agent, says a phrase
//! synthesised with flite, and what the agent says back is transcribed with
//! Whisper: the greeting, then "You said: ..." with the caller's words.

use std::time::Duration;

use voicegate_media::g711::{linear_to_ulaw, ulaw_to_linear};
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
    let voicegate_tests::PcmuCall {
        sip: uac,
        handle: call,
        rtp,
        remote,
        ..
    } = voicegate_tests::PcmuCall::dial(gw.sip_addr(), "echo", "caller")
        .await
        .unwrap();

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

/// RMS of a 20 ms frame.
fn rms(frame: &[i16]) -> f64 {
    (frame.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / frame.len().max(1) as f64).sqrt()
}

/// Barge-in during a long reply that is still being synthesised sentence by
/// sentence (tests/agents/long_reply): the reply stops, and stays stopped
/// while the caller talks, until the next turn's answer. (Before the fix,
/// the media layer's Interrupted events closed the item before the session
/// heard of the onset, so the session never flushed the speaker and later
/// sentences of the reply came back.) Latency is measured by
/// tests/examples/turn_latency.rs, not bounded here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_silences_a_streamed_reply_until_the_next_turn() {
    let mut cfg = test_config();
    cfg.agents[0] = voicegate_tests::agent("long_reply", true, "");
    let gw = start_gateway(cfg).await;
    let voicegate_tests::PcmuCall {
        sip: uac,
        handle: call,
        rtp,
        remote,
        mut events,
    } = voicegate_tests::PcmuCall::dial(gw.sip_addr(), "long", "caller")
        .await
        .unwrap();
    // Keep the UAC's events drained for the rest of the call.
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let rtp = std::sync::Arc::new(rtp);
    let t0 = tokio::time::Instant::now();
    // (ms since t0, voiced) for every agent packet.
    let agent = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(u64, bool)>::new()));
    let rx = rtp.clone();
    let log = agent.clone();
    let receiver = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok(n) = rx.recv(&mut buf).await {
            if n > 12 && buf[1] & 0x7f == 0 {
                let pcm: Vec<i16> = buf[12..n].iter().map(|&b| ulaw_to_linear(b)).collect();
                let at = t0.elapsed().as_millis() as u64;
                log.lock().unwrap().push((at, rms(&pcm) >= 100.0));
            }
        }
    });
    let tts = TtsService::from_config(&SpeechConfig::default()).unwrap();
    let say = |text: &'static str| {
        let tts = &tts;
        async move {
            let pcm = tts.speak(SpeakRequest::new(text)).collect().await.unwrap();
            to_8k(&pcm)
        }
    };
    let ask = say("Tell me about your opening hours.").await;
    let interrupt = say("Wait, I have a question about my order from last week, please.").await;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let (mut seq, mut ts) = (0u16, 0u32);
    let mut send = async |frame: &[i16]| {
        tick.tick().await;
        let mut payload: Vec<u8> = frame.iter().map(|&s| linear_to_ulaw(s)).collect();
        payload.resize(160, 0xff);
        rtp.send_to(&rtp_packet(seq, ts, &payload), remote)
            .await
            .unwrap();
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(160);
        t0.elapsed().as_millis() as u64
    };
    let silence = [0i16; 160];
    // The greeting, then the question.
    for _ in 0..100 {
        send(&silence).await;
    }
    let mut asked_end = 0;
    for frame in ask.chunks(160) {
        let at = send(frame).await;
        if rms(frame) >= 100.0 {
            asked_end = at;
        }
    }
    // Three rounds: wait (bounded) for the long reply to start and talk
    // over it at once, while its later sentences are still being
    // synthesised; each interruption is a new question, whose reply the
    // next round interrupts.
    let mut windows = Vec::new();
    let mut spoke_until = asked_end;
    for round in 0..3 {
        let mut reply_started = None;
        for _ in 0..750 {
            send(&silence).await;
            let started = agent
                .lock()
                .unwrap()
                .iter()
                .find(|(at, voiced)| *voiced && *at > spoke_until + 300)
                .map(|(at, _)| *at);
            if started.is_some() {
                reply_started = started;
                break;
            }
        }
        let reply_started =
            reply_started.unwrap_or_else(|| panic!("reply {round} did not start within 15 s"));
        let (mut onset, mut speech_end) = (None, 0);
        for frame in interrupt.chunks(160) {
            let at = send(frame).await;
            if rms(frame) >= 100.0 {
                onset.get_or_insert(at);
                speech_end = at;
            }
        }
        let onset = onset.expect("voiced interruption");
        spoke_until = speech_end;
        windows.push((reply_started, onset, speech_end));
    }
    for _ in 0..25 {
        send(&silence).await;
    }
    uac.hangup(call).await.unwrap();
    receiver.abort();
    let packets = agent.lock().unwrap().clone();
    for (reply_started, onset, speech_end) in windows {
        // From shortly after the onset (VAD onset and one tick) until the
        // caller's phrase is over (+400 ms, before any answer to it can
        // come: VAD hangover 500 ms, then speech recognition), the agent
        // is silent.
        let window = (onset + 300, speech_end + 400);
        let voiced_in_window: Vec<u64> = packets
            .iter()
            .filter(|(at, voiced)| *voiced && *at >= window.0 && *at <= window.1)
            .map(|(at, _)| *at)
            .collect();
        assert!(
            voiced_in_window.is_empty(),
            "reply from {reply_started} ms, barge-in at {onset} ms: agent audio at \
             {voiced_in_window:?} ms, inside {window:?}"
        );
    }
    assert!(gw.wait_idle(Duration::from_secs(15)).await);
    gw.stop().await;
}
