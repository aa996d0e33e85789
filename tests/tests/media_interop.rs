//! Media against real peers: SIPp streams recorded RTP (speech, RFC 4733
//! DTMF) into a call; SIPp echoes the gateway's paced playout.

use std::time::Duration;

use voicegate::records::CallState;
use voicegate_tests::{require_tool, run_sipp, start_gateway, test_config};

const SIPP_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcap_speech_and_dtmf_are_decoded_on_a_real_call() {
    if !require_tool("sipp", "sip-tester") {
        return;
    }
    let gw = start_gateway(test_config()).await;
    voicegate_tests::scenario_succeeds(gw.sip_addr(), "uac_pcap_dtmf.xml", 1).await;
    let r = &voicegate_tests::only_record(&gw).await;
    assert_eq!(r.state, CallState::Ended);
    assert_eq!(
        r.outcome.as_ref().map(|o| o.label.as_str()),
        Some("remote_bye")
    );
    let media = r.media.as_ref().expect("media summary");
    assert_eq!(media.codec, "Pcma");
    // g711a.pcap is ~8 s of speech at 30 ms packets.
    assert!(media.rtp_received > 200, "{media:?}");
    assert!(media.speech_segments >= 1, "VAD found no speech: {media:?}");
    assert_eq!(media.dtmf, "12#", "{media:?}");
    // The digits reached the agent's session as DTMFEvents.
    let dtmf_lines = r
        .transcript
        .iter()
        .filter(|l| l.role == "caller" && l.text.contains("DTMF"))
        .count();
    assert_eq!(dtmf_lines, 3, "{:?}", r.transcript);
    gw.stop().await;
}

/// Writes `seconds` of a 440 Hz tone at 16 kHz to a WAV file.
fn tone_wav(path: &std::path::Path, seconds: u32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for n in 0..16_000 * seconds {
        let v = (2.0 * std::f64::consts::PI * 440.0 * f64::from(n) / 16_000.0).sin();
        w.write_sample((v * 8000.0) as i16).unwrap();
    }
    w.finalize().unwrap();
}

/// The gateway's playout, as SIPp (`-rtp_echo`) receives it: an AudioEvent
/// WAV is played at a steady 20 ms. Packet arrival times are captured with
/// tshark on loopback; the pacing figures are printed (docs/benchmarks.md
/// quotes a run), and the test checks the stream's shape, not its timing
/// tail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playout_reaches_sipp_rtp_echo_paced_at_20_ms() {
    if !require_tool("sipp", "sip-tester") || !require_tool("tshark", "tshark") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("voicegate-pacing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wav = dir.join("tone.wav");
    tone_wav(&wav, 4);
    let mut cfg = test_config();
    cfg.agents[0] = toml::from_str(&format!(
        "id = \"play_audio\"\ndir = {:?}\nnumbers = [\"*\"]\nworkers = 1\nvariables = {{ audio = {:?} }}\n",
        voicegate_tests::repo_root().join("tests/agents/play_audio"),
        wav
    ))
    .unwrap();
    let gw = start_gateway(cfg).await;
    let media_port = voicegate_tests::free_udp_port();
    let capture = dir.join("rtp.pcap");
    let mut tshark = tokio::process::Command::new("tshark")
        .args([
            "-i",
            "lo",
            "-q",
            "-f",
            &format!("udp dst port {media_port}"),
            "-a",
            "duration:9",
            "-w",
        ])
        .arg(&capture)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("tshark starts");
    // tshark says "Capturing on" once the capture runs.
    {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(tshark.stderr.take().unwrap()).lines();
        let started = tokio::time::timeout(Duration::from_secs(20), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("Capturing on") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(started, Ok(true), "tshark did not start capturing");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    }
    let mp = media_port.to_string();
    let run = run_sipp(
        gw.sip_addr(),
        &[
            "-sn",
            "uac",
            "-rtp_echo",
            "-mp",
            &mp,
            "-d",
            "6000",
            "-m",
            "1",
        ],
        SIPP_TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!((run.exit_code, run.successful), (0, 1), "{}", run.screen);
    let status = tokio::time::timeout(Duration::from_secs(20), tshark.wait()).await;
    assert!(
        matches!(status, Ok(Ok(_))),
        "tshark did not stop: {status:?}"
    );
    let out = std::process::Command::new("tshark")
        .args(["-r"])
        .arg(&capture)
        .args(["-d", &format!("udp.port=={media_port},rtp")])
        .args([
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
            "-e",
            "rtp.payload",
        ])
        .output()
        .expect("tshark reads the capture");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut times: Vec<f64> = Vec::new();
    let mut pcm: Vec<f64> = Vec::new();
    for line in text.lines() {
        let mut fields = line.split('\t');
        let (Some(t), payload) = (
            fields.next().and_then(|t| t.trim().parse().ok()),
            fields.next(),
        ) else {
            continue;
        };
        times.push(t);
        let hex: String = payload
            .unwrap_or("")
            .chars()
            .filter(|c| c.is_ascii_hexdigit())
            .collect();
        for i in (0..hex.len() / 2).map(|i| i * 2) {
            let byte = u8::from_str_radix(&hex[i..i + 2], 16).unwrap();
            pcm.push(f64::from(voicegate_media::g711::ulaw_to_linear(byte)));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    // 6 s of call at 50 packets/s; allow for setup and teardown at the edges.
    assert!(
        times.len() >= 250,
        "only {} RTP packets reached SIPp",
        times.len()
    );
    let mut gaps_ms: Vec<f64> = times.windows(2).map(|w| (w[1] - w[0]) * 1000.0).collect();
    let mean = gaps_ms.iter().sum::<f64>() / gaps_ms.len() as f64;
    assert!(
        (19.5..=20.5).contains(&mean),
        "mean packet interval {mean:.2} ms"
    );
    let mut dev: Vec<f64> = gaps_ms.iter().map(|g| (g - 20.0).abs()).collect();
    dev.sort_by(f64::total_cmp);
    gaps_ms.sort_by(f64::total_cmp);
    let pct = |v: &[f64], p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    println!(
        "pacing: {} packets, mean interval {mean:.3} ms, |deviation from 20 ms| p50 {:.3} ms p99 {:.3} ms max {:.3} ms",
        times.len(),
        pct(&dev, 0.5),
        pct(&dev, 0.99),
        dev[dev.len() - 1],
    );
    // The audio is the tone: 440 Hz dominates a second of the stream.
    assert!(
        pcm.len() >= 8000 * 3,
        "only {} samples of PCMU payload",
        pcm.len()
    );
    let second = &pcm[8000..16000];
    let (at_440, at_1000) = (
        goertzel(second, 440.0, 8000.0),
        goertzel(second, 1000.0, 8000.0),
    );
    assert!(
        at_440 > 100.0 * at_1000,
        "no 440 Hz tone: {at_440:.3e} vs {at_1000:.3e} at 1 kHz"
    );
    assert!(gw.wait_idle(Duration::from_secs(10)).await);
    let r = &gw.call_records()[0];
    let media = r.media.as_ref().expect("media summary");
    assert!(media.rtp_sent >= 250, "{media:?}");
    // SIPp echoed our packets back: the inbound side saw them too.
    assert!(media.rtp_received >= 200, "{media:?}");
    gw.stop().await;
}

/// Signal power at `freq` (Goertzel).
fn goertzel(samples: &[f64], freq: f64, rate: f64) -> f64 {
    let k = 2.0 * (2.0 * std::f64::consts::PI * freq / rate).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in samples {
        let s0 = x + k * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - k * s1 * s2
}
