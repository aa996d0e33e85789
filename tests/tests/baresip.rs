//! baresip calls the echo agent over loopback: the caller's words (flite
//! speech played by baresip's `aufile` source) come back in the agent's
//! reply, and what baresip heard is checked by transcribing it with the
//! embedded Whisper.
//!
//! baresip 1.0 (Debian bookworm) has `aufile` as an audio *source* only, so
//! the far end is recorded with the `sndfile` audio filter: it writes what
//! baresip decoded to `dump-<time>-dec.wav` in `snd_path`. The player is the
//! `aubridge` module's device "nil", which nothing reads: no sound card
//! needed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use voicegate::records::CallState;
use voicegate_speech::SpeechConfig;
use voicegate_tests::{free_udp_port, require_tool, start_gateway, test_config};

/// What the caller says.
const CALLER_TEXT: &str = "Hello, my name is Alice.";
/// Words of [`CALLER_TEXT`] that should come back after "you said".
const CALLER_WORDS: [&str; 3] = ["hello", "name", "alice"];
/// baresip quits (hanging up with BYE) this long after it starts: the
/// greeting, our phrase and the agent's "You said ..." fit well inside.
const CALL_SECONDS: u32 = 18;
/// Silence before the phrase, so that it follows the greeting ("Hello!").
const LEAD_IN_MS: usize = 3_000;
const RATE_HZ: u32 = 8_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_talks_to_the_echo_agent_and_hears_its_words_back() {
    if !require_tool("baresip", "baresip") {
        return;
    }
    let started = Instant::now();
    let dir = voicegate_tests::scratch_dir("baresip");
    let rec = dir.join("rec");
    std::fs::create_dir_all(&rec).unwrap();

    let source = dir.join("caller.wav");
    caller_wav(&source).await;

    let gw = start_gateway(test_config()).await;
    write_config(&dir, &source, &rec);
    let target = format!("sip:echo@{}", gw.sip_addr());
    let log_path = dir.join("baresip.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut baresip = tokio::process::Command::new("baresip")
        .arg("-f")
        .arg(&dir)
        .args(["-4", "-v", "-e"])
        .arg(format!("/dial {target}"))
        .args(["-t", &CALL_SECONDS.to_string()])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("baresip starts");
    // -t ends baresip; the margin covers its BYE transaction and exit.
    let limit = Duration::from_secs(u64::from(CALL_SECONDS) + 20);
    let status = tokio::time::timeout(limit, baresip.wait()).await;
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        matches!(status, Ok(Ok(s)) if s.success()),
        "baresip did not exit cleanly within {limit:?} ({status:?}):\n{log}"
    );

    let r = &voicegate_tests::only_record(&gw).await;
    assert_eq!(r.state, CallState::Ended);
    assert_eq!(
        r.outcome.as_ref().map(|o| o.label.as_str()),
        Some("remote_bye"),
        "baresip hangs up at -t: {r:?}"
    );
    assert_eq!(
        r.media.as_ref().map(|m| m.codec.as_str()),
        Some("Pcmu"),
        "{r:?}"
    );

    let heard = recording(&rec, "dec")
        .unwrap_or_else(|| panic!("baresip wrote no decode dump in {}:\n{log}", rec.display()));
    let pcm = voicegate_speech::audio::read_wav_16k(&heard).unwrap();
    assert!(
        voicegate_speech::audio::rms(&pcm) > 100.0,
        "the recording of the agent is silent ({} samples, rms {:.1}); gateway transcript {:?}\n{log}",
        pcm.len(),
        voicegate_speech::audio::rms(&pcm),
        r.transcript
    );
    // The dump starts with the first packet, right on the greeting; Whisper
    // tiny.en hears the bare "Hello!" as "..." without a lead-in of silence
    // (measured: "..." bare, "Hello." after 1 s of silence).
    let padded: Vec<i16> = std::iter::repeat_n(0, voicegate_speech::SAMPLE_RATE_HZ as usize)
        .chain(pcm)
        .collect();
    let stt =
        tokio::task::spawn_blocking(|| voicegate_speech::stt_from_config(&SpeechConfig::default()))
            .await
            .unwrap()
            .expect("the embedded Whisper loads");
    let text = voicegate_speech::transcribe_pcm(&stt, &padded)
        .await
        .expect("Whisper transcribes the recording");
    println!("baresip heard: {text:?}");
    println!("gateway transcript: {:?}", r.transcript);
    let words = normalise(&text);
    let (greeting, echoed) = words
        .split_once("you said")
        .unwrap_or_else(|| panic!("no \"you said\" in {text:?}; gateway: {:?}", r.transcript));
    assert!(greeting.contains("hello"), "no greeting in {text:?}");
    assert!(
        CALLER_WORDS.iter().any(|w| echoed.contains(w)),
        "none of {CALLER_WORDS:?} after \"you said\" in {text:?}"
    );
    gw.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    println!("baresip test took {:?}", started.elapsed());
}

/// The caller's side as an 8 kHz mono WAV (PCMU's rate, so baresip does not
/// resample): silence, the phrase from the embedded flite, then silence
/// longer than the call. `aufile` ends the call at the end of its file
/// ("menu: audio error (0,end of file)"), so the file must outlast
/// [`CALL_SECONDS`].
async fn caller_wav(path: &Path) {
    let speech = tokio::task::spawn_blocking(|| {
        voicegate_speech::flite::synthesize_blocking(CALLER_TEXT, 1.0)
    })
    .await
    .unwrap()
    .expect("flite speaks");
    let speech =
        voicegate_speech::audio::resample(&speech, voicegate_speech::SAMPLE_RATE_HZ, RATE_HZ);
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: RATE_HZ,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let lead_in = LEAD_IN_MS * RATE_HZ as usize / 1000;
    let tail = (CALL_SECONDS as usize + 20) * RATE_HZ as usize;
    for s in std::iter::repeat_n(0, lead_in)
        .chain(speech)
        .chain(std::iter::repeat_n(0, tail))
    {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}

/// baresip's config directory: SIP on a free loopback port, PCMU only, the
/// WAV as source, a dump of both directions in `rec`, no registration.
fn write_config(dir: &Path, source: &Path, rec: &Path) {
    let sip_port = free_udp_port();
    let config = format!(
        "poll_method epoll\n\
         sip_listen 127.0.0.1:{sip_port}\n\
         net_interface 127.0.0.1\n\
         call_local_timeout 30\n\
         call_max_calls 1\n\
         audio_source aufile,{source}\n\
         audio_player aubridge,nil\n\
         audio_alert aubridge,nil\n\
         audio_level no\n\
         ausrc_format s16\n\
         auplay_format s16\n\
         auenc_format s16\n\
         audec_format s16\n\
         jitter_buffer_delay 5-10\n\
         rtcp_mux no\n\
         module_path /usr/lib/baresip/modules\n\
         module g711.so\n\
         module sndfile.so\n\
         module aufile.so\n\
         module aubridge.so\n\
         module_tmp account.so\n\
         module_app menu.so\n\
         snd_path {rec}\n",
        source = source.display(),
        rec = rec.display(),
    );
    std::fs::write(dir.join("config"), config).unwrap();
    std::fs::write(
        dir.join("accounts"),
        format!("<sip:alice@127.0.0.1:{sip_port}>;regint=0;audio_codecs=PCMU\n"),
    )
    .unwrap();
    // Empty: baresip would otherwise write a default contacts file.
    std::fs::write(dir.join("contacts"), "").unwrap();
}

/// The sndfile dump for `direction` ("enc" or "dec"), if written.
fn recording(rec: &Path, direction: &str) -> Option<PathBuf> {
    std::fs::read_dir(rec)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(&format!("-{direction}.wav")))
        })
}

/// Lower case, letters and digits only, single spaces.
fn normalise(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
