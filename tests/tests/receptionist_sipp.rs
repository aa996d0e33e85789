//! SIPp asks the receptionist example agent for sales in speech: flite says
//! "I want to talk to sales", the test encodes it as PCMU RTP in a pcap that
//! SIPp streams into the call, the gateway's Whisper hears "sales" and the
//! agent transfers the call by REFER to the sales number; SIPp accepts it
//! (202, NOTIFY 200) and answers the gateway's BYE.

use std::path::Path;
use std::time::{Duration, Instant};

use voicegate_media::g711::linear_to_ulaw;
use voicegate_tests::{
    free_udp_port, require_tool, run_sipp, scenario, start_gateway, test_config,
};

const SALES: &str = "+14155550101";
const PHRASE: &str = "I want to talk to sales";
/// The flite voice and `duration_stretch` for [`PHRASE`].
///
/// Whisper tiny.en mishears flite's "sales" for some voices and speeds.
/// Measured before the receptionist named its choices in an STT prompt
/// (which makes "sales" far more robust; see docs/benchmarks.md). Whole test runs, passed/runs, and what the gateway transcribed when a
/// run failed (the same setting can fail differently: slt at 1.0 gave "say,
/// alums" and "say a lot"):
///
/// | voice | 1.0 | 1.1 | 1.2 | 1.3 | 1.4 | 1.5 |
/// |-------|-----|-----|-----|-----|-----|-----|
/// | slt (embedded) | 0/3 "to say, alums" | | 0/1 "to say, Elon's" | | 0/1 "to say anything else" | |
/// | kal   | 6/6 | | 0/1 "to you" | | 6/6 | |
/// | kal16 | 0/1 "to you, say" | 0/1 "to you" | 6/6 | 1/1 | 6/6 | 1/1 |
/// | rms   | 6/6 | | 0/1 "to say all of you" | | 0/1 "to say all of this" | |
/// | awb   | 0/3 "to St." | 1/1 | 6/6 | 11/11 | 6/6 | 1/1 |
///
/// awb slowed to 1.3 is in the middle of the widest band that works (1.1 to
/// 1.5), so a small change in flite or in the gateway's audio path should
/// not tip it over; it needs the flite command, the embedded library links
/// slt only.
const VOICE: &str = "awb";
const STRETCH: f32 = 1.3;
/// Silence streamed before the phrase: the greeting ("Thank you for
/// calling. Would you like sales, or to speak with a person?") is over by
/// then, so the phrase is not taken for a barge-in.
const LEAD_IN_MS: usize = 6_000;
/// Silence after the phrase, so the gateway's endpointing ends the turn.
const TAIL_MS: usize = 2_000;
const RATE_HZ: usize = 8_000;
const FRAME_SAMPLES: usize = 160;
const SIPP_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_asks_the_receptionist_for_sales_in_speech_and_is_referred() {
    if !require_tool("sipp", "sip-tester") || !require_tool("flite", "flite") {
        return;
    }
    let started = Instant::now();
    let dir = voicegate_tests::scratch_dir("receptionist");
    let speech = flite_cli(&dir, VOICE, STRETCH, PHRASE);
    let pcap = dir.join("speech.pcap");
    write_pcap(&pcap, &speech);
    let template = std::fs::read_to_string(scenario("uac_receptionist_sales.xml")).unwrap();
    let sf = dir.join("uac_receptionist_sales.xml");
    std::fs::write(
        &sf,
        template.replace(
            "\"speech.pcap\"",
            &format!("{:?}", pcap.display().to_string()),
        ),
    )
    .unwrap();

    let mut cfg = test_config();
    let agent_dir = voicegate_tests::repo_root().join("config/agents/receptionist");
    cfg.agents[0] = toml::from_str(&format!(
        "id = \"receptionist\"\ndir = {agent_dir:?}\nnumbers = [\"*\"]\nworkers = 1\n\
         variables = {{ sales = \"{SALES}\", human = \"+14155550100\" }}\n"
    ))
    .unwrap();
    cfg.trunks
        .push(voicegate_tests::carrier_trunk(free_udp_port()));
    let gw = start_gateway(cfg).await;
    let run = run_sipp(
        gw.sip_addr(),
        &["-sf", sf.to_str().unwrap(), "-m", "1"],
        SIPP_TIMEOUT,
    )
    .await
    .expect("sipp runs");
    let r = &voicegate_tests::only_record(&gw).await;
    println!("transcript: {:?}", r.transcript);
    assert_eq!(
        (run.exit_code, run.successful),
        (0, 1),
        "no REFER to sales (transcript {:?}):\n{}",
        r.transcript,
        run.screen
    );
    assert!(
        r.transcript
            .iter()
            .any(|l| l.role == "caller" && l.text.to_lowercase().contains("sales")),
        "{:?}",
        r.transcript
    );
    assert_eq!(
        r.outcome.as_ref().map(|o| o.label.as_str()),
        Some("local_bye"),
        "{r:?}"
    );
    assert!(
        r.output_data.get("transfer_error").is_none(),
        "{:?}",
        r.output_data
    );
    gw.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    println!("receptionist test took {:?}", started.elapsed());
}

/// `text` spoken by the flite command-line voice `voice`, slowed by
/// `stretch`, as 16 kHz mono PCM.
fn flite_cli(dir: &Path, voice: &str, stretch: f32, text: &str) -> Vec<i16> {
    let wav = dir.join(format!("{voice}.wav"));
    let out = std::process::Command::new("timeout")
        .args(["20", "flite", "-voice", voice, "--setf"])
        .arg(format!("duration_stretch={stretch}"))
        .args(["-t", text, "-o"])
        .arg(&wav)
        .output()
        .expect("flite runs");
    assert!(
        out.status.success(),
        "flite -voice {voice}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    voicegate_speech::audio::read_wav_16k(&wav).expect("flite wrote a WAV")
}

/// Writes `speech16k` as a pcap of PCMU RTP in 20 ms packets (Ethernet,
/// IPv4, UDP; SIPp rewrites addresses and ports when it plays it): silence,
/// the speech, silence.
fn write_pcap(path: &Path, speech16k: &[i16]) {
    let speech = voicegate_speech::audio::resample(speech16k, 16_000, RATE_HZ as u32);
    let samples: Vec<i16> = std::iter::repeat_n(0, LEAD_IN_MS * RATE_HZ / 1000)
        .chain(speech)
        .chain(std::iter::repeat_n(0, TAIL_MS * RATE_HZ / 1000))
        .collect();
    let mut out = Vec::new();
    // Global header: microsecond timestamps, snaplen 65535, Ethernet.
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (n, frame) in samples.chunks(FRAME_SAMPLES).enumerate() {
        let mut rtp = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78];
        if n == 0 {
            rtp[1] |= 0x80;
        }
        rtp[2..4].copy_from_slice(&(n as u16).to_be_bytes());
        rtp[4..8].copy_from_slice(&((n * FRAME_SAMPLES) as u32).to_be_bytes());
        rtp.extend(frame.iter().map(|&s| linear_to_ulaw(s)));
        rtp.resize(12 + FRAME_SAMPLES, 0xff);
        let udp_len = 8 + rtp.len();
        let ip_len = 20 + udp_len;
        let mut ip = vec![
            0x45,
            0,
            (ip_len >> 8) as u8,
            ip_len as u8,
            0,
            0,
            0x40,
            0,
            64,
            17,
            0,
            0,
            127,
            0,
            0,
            1,
            127,
            0,
            0,
            1,
        ];
        let sum = ip
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum::<u32>();
        let sum = (sum & 0xffff) + (sum >> 16);
        let sum = (sum & 0xffff) + (sum >> 16);
        ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        let mut packet = vec![0u8; 12];
        packet.extend_from_slice(&0x0800u16.to_be_bytes());
        packet.extend_from_slice(&ip);
        packet.extend_from_slice(&6000u16.to_be_bytes());
        packet.extend_from_slice(&6000u16.to_be_bytes());
        packet.extend_from_slice(&(udp_len as u16).to_be_bytes());
        packet.extend_from_slice(&[0, 0]);
        packet.extend_from_slice(&rtp);
        let usec = n * 20_000;
        out.extend_from_slice(&((usec / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((usec % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(packet.len() as u32).to_le_bytes());
        out.extend_from_slice(&(packet.len() as u32).to_le_bytes());
        out.extend_from_slice(&packet);
    }
    std::fs::write(path, out).unwrap();
}
