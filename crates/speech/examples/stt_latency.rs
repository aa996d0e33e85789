//! Measures embedded Whisper: time from the end of a ~2 s utterance to its final
//! transcript (the whole utterance is transcribed at its end).
//!
//! `cargo run --release -p voicegate-speech --example stt_latency`

use std::time::{Duration, Instant};

use voicegate_speech::stt::{SpeechToText, SttEvent, SttSettings};
use voicegate_speech::whisper::{WhisperStt, resolve_model_dir};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = resolve_model_dir(None)?;
    let t0 = Instant::now();
    let stt = WhisperStt::load(&dir, SttSettings::default())?;
    println!("model load {:?}", t0.elapsed());
    let mut pcm =
        voicegate_speech::flite::synthesize_blocking("Please check my account balance.", 1.0)?;
    pcm.truncate(32_000);
    pcm.resize(32_000, 0);
    // Warm up once.
    stt.transcribe_blocking(&pcm)?;
    let mut blocking = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        stt.transcribe_blocking(&pcm)?;
        blocking.push(t.elapsed());
    }
    let mut session = Vec::new();
    let mut text = String::new();
    for _ in 0..5 {
        let mut s = stt.start(SttSettings::default()).await?;
        for f in pcm.chunks(320) {
            s.send_audio(f.to_vec()).await;
        }
        let end = Instant::now();
        s.end_utterance();
        let ev = tokio::time::timeout(Duration::from_secs(30), s.next_event()).await?;
        if let Some(Ok(SttEvent::Final(t))) = ev {
            text = t.text;
        }
        session.push(end.elapsed());
    }
    // Real time: 20 ms frames paced by a clock, the caller's VAD marks the end after
    // 300 ms of silence (its hangover); early transcription starts 160 ms into it.
    let mut paced = Vec::new();
    for _ in 0..5 {
        let mut s = stt.start(SttSettings::default()).await?;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let silence = vec![0i16; 320];
        for f in pcm.chunks(320).chain(std::iter::repeat_n(&silence[..], 15)) {
            tick.tick().await;
            s.push_audio(f.to_vec());
        }
        let end = Instant::now();
        s.end_utterance();
        let ev = tokio::time::timeout(Duration::from_secs(30), s.next_event()).await?;
        if let Some(Ok(SttEvent::Final(t))) = ev {
            text = t.text;
        }
        paced.push(end.elapsed());
    }
    blocking.sort();
    session.sort();
    paced.sort();
    println!("2.0 s utterance: {text:?}");
    let show = |v: &[Duration]| format!("min {:?} median {:?} max {:?}", v[0], v[2], v[4]);
    println!("transcribe_blocking: {}", show(&blocking));
    println!(
        "final after end mark, audio pushed at once: {}",
        show(&session)
    );
    println!(
        "final after end mark, real time, mark after 300 ms of silence: {}",
        show(&paced)
    );
    Ok(())
}
