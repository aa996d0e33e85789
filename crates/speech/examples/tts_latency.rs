//! Measures embedded TTS first-chunk latency for a 10-word sentence.
//!
//! `cargo run --release -p voicegate-speech --example tts_latency`

use std::time::Instant;

use voicegate_speech::flite::FliteTts;
use voicegate_speech::{TextToSpeech, TtsRequest, VoiceTarget};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let text = "Thank you for calling, how can I help you today?";
    assert_eq!(text.split_whitespace().count(), 10);
    let tts = FliteTts::new()?;
    let voice = VoiceTarget {
        provider: "flite".into(),
        identifier: "slt".into(),
    };
    let mut firsts = Vec::new();
    for _ in 0..20 {
        let t0 = Instant::now();
        let mut s = tts.synthesize(TtsRequest::new(text, voice.clone()));
        let first = s.next_chunk().await.ok_or("no audio")??;
        firsts.push(t0.elapsed());
        assert!(!first.is_empty());
        s.collect().await?;
    }
    firsts.sort();
    println!(
        "flite first chunk, 10 words, 20 runs: min {:?} median {:?} max {:?}",
        firsts[0], firsts[10], firsts[19]
    );
    Ok(())
}
