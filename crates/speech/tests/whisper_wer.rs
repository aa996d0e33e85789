//! Embedded STT accuracy over the phone path: phone-style phrases synthesised with flite,
//! passed through G.711 mu-law at 8 kHz and back, transcribed with Whisper tiny.en.
//! Done when the word error rate is at most 10 %.
//!
//! Needs the model directory (see `voicegate_speech::whisper::resolve_model_dir`); without
//! it the test is skipped with a reason, unless VOICEGATE_REQUIRE_PEERS=1.

#![cfg(all(feature = "whisper", feature = "flite"))]

use voicegate_speech::audio::resample;
use voicegate_speech::stt::SttSettings;
use voicegate_speech::whisper::{WhisperStt, resolve_model_dir};

fn model() -> Option<WhisperStt> {
    match resolve_model_dir(None) {
        Ok(dir) => Some(WhisperStt::load(&dir, SttSettings::default()).expect("model loads")),
        Err(e) => {
            assert!(
                std::env::var("VOICEGATE_REQUIRE_PEERS").as_deref() != Ok("1"),
                "whisper model required (VOICEGATE_REQUIRE_PEERS=1): {e}"
            );
            eprintln!("skipped: {e}");
            None
        }
    }
}

/// G.711 mu-law encode (ITU-T G.711, segment/quantisation with bias 0x84).
fn mulaw_encode(s: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32_635;
    let mut v = i32::from(s);
    let sign = if v < 0 { 0x80 } else { 0 };
    if v < 0 {
        v = -v;
    }
    v = v.min(CLIP) + BIAS;
    let mut exponent = 7;
    let mut mask = 0x4000;
    while exponent > 0 && v & mask == 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = (v >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) | mantissa) as u8
}

fn mulaw_decode(b: u8) -> i16 {
    let b = !b;
    let sign = b & 0x80;
    let exponent = i32::from((b >> 4) & 0x07);
    let mantissa = i32::from(b & 0x0F);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    (if sign != 0 { -magnitude } else { magnitude }) as i16
}

/// 16 kHz -> 8 kHz -> mu-law -> 8 kHz -> 16 kHz, with silence around it.
fn through_phone(pcm16k: &[i16]) -> Vec<i16> {
    let narrow = resample(pcm16k, 16_000, 8_000);
    let coded: Vec<i16> = narrow
        .iter()
        .map(|&s| mulaw_decode(mulaw_encode(s)))
        .collect();
    let mut out = vec![0i16; 4_800];
    out.extend(resample(&coded, 8_000, 16_000));
    out.extend(std::iter::repeat_n(0i16, 4_800));
    out
}

fn words(s: &str) -> Vec<String> {
    s.to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '\'' {
                c
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn edit_distance(a: &[String], b: &[String]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(x != y))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[test]
fn mulaw_round_trip_is_close() {
    for s in [-32_000i16, -1000, -1, 0, 1, 1000, 32_000] {
        let d = mulaw_decode(mulaw_encode(s));
        assert!(
            (i32::from(d) - i32::from(s)).abs() <= i32::from(s).abs() / 16 + 8,
            "{s} -> {d}"
        );
    }
}

#[test]
fn word_error_rate_over_phone_path_at_most_10_percent() {
    let Some(stt) = model() else { return };
    let phrases = include_str!("data/phone_phrases.txt");
    let phrases: Vec<&str> = phrases.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(phrases.len() >= 20);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut errors, mut total) = (0usize, 0usize);
    for phrase in &phrases {
        let pcm = voicegate_speech::flite::synthesize_blocking(phrase, 1.0).unwrap();
        // Through a session, as on a call: segmented, then transcribed.
        let heard = rt
            .block_on(voicegate_speech::transcribe_pcm(&stt, &through_phone(&pcm)))
            .unwrap();
        let (r, h) = (words(phrase), words(&heard));
        let e = edit_distance(&r, &h);
        if e > 0 {
            eprintln!("{e} error(s): {phrase:?} -> {heard:?}");
        }
        errors += e;
        total += r.len();
    }
    let wer = errors as f64 / total as f64;
    eprintln!(
        "WER {:.1}% ({errors}/{total} words, {} phrases)",
        wer * 100.0,
        phrases.len()
    );
    assert!(wer <= 0.10, "WER {:.1}%", wer * 100.0);
}

/// `voicegate say` then `voicegate transcribe`: the library functions behind both, with
/// the default (offline) config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn say_then_transcribe_round_trip() {
    if model().is_none() {
        return;
    }
    let cfg = voicegate_speech::SpeechConfig::default();
    let dir = std::env::temp_dir().join(format!("vg-roundtrip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wav = dir.join("say.wav");
    voicegate_speech::say_to_wav(&cfg, "Please transfer me to the billing department.", &wav)
        .await
        .unwrap();
    let text = voicegate_speech::transcribe_wav(&cfg, &wav).await.unwrap();
    let w = words(&text);
    for expected in ["transfer", "billing", "department"] {
        assert!(w.iter().any(|x| x == expected), "{expected} in {text:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The STT prompt (STTUpdateSettingsEvent `prompt`) biases the decoder to
/// the words an agent listens for: flite's "sales" over the phone path is
/// misheard by tiny.en without it ("say, Alan", "say loans"), and heard with
/// a prompt naming the choices. Each phrase must come out right with it.
#[test]
fn prompt_biases_recognition_towards_its_words() {
    let Some(stt) = model() else { return };
    let prompt = "Would you like sales, or to speak with a person?";
    let mut unprompted_hits = 0;
    let phrases = [
        "I want to talk to sales.",
        "Transfer me to sales.",
        "Sales, please.",
    ];
    for phrase in phrases {
        let pcm =
            through_phone(&voicegate_speech::flite::synthesize_blocking(phrase, 1.0).unwrap());
        let plain = stt.transcribe_blocking(&pcm).unwrap();
        let prompted = stt.transcribe_with_prompt(&pcm, Some(prompt)).unwrap();
        eprintln!("{phrase:?}: without prompt {plain:?}, with {prompted:?}");
        unprompted_hits += usize::from(words(&plain).iter().any(|w| w == "sales"));
        assert!(
            words(&prompted).iter().any(|w| w == "sales"),
            "{phrase:?} -> {prompted:?} with the prompt"
        );
    }
    eprintln!(
        "\"sales\" heard without the prompt: {unprompted_hits} of {}",
        phrases.len()
    );
}
