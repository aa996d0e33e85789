//! Utterance segmentation by energy, for engines that transcribe whole utterances.

use futures_util::future::BoxFuture;
use tokio::task::JoinHandle;

use crate::audio::rms;
use crate::error::SpeechError;
use crate::stt::{SttEvent, SttInput, SttSession, SttSettings, Transcript, samples_to_duration};

/// Frame used by the energy endpointer (20 ms).
const FRAME_SAMPLES: usize = 320;
/// RMS above which a frame counts as speech.
const SPEECH_RMS: f64 = 300.0;
/// Audio kept from before speech starts (300 ms).
const PREROLL_SAMPLES: usize = 4_800;
/// Silence after speech at which transcription starts early (160 ms).
pub const SPECULATE_SILENCE_SAMPLES: usize = 2_560;
/// Silence kept after the last speech frame (300 ms).
const TAIL_KEEP_SAMPLES: usize = 4_800;
/// Longest utterance buffered (30 s, Whisper's window).
const MAX_UTTERANCE_SAMPLES: usize = 30 * 16_000;

/// Cuts the audio stream into utterances by energy: speech, then enough silence.
#[derive(Debug)]
pub struct Segmenter {
    buf: Vec<i16>,
    /// Session sample index of buf[0].
    start: u64,
    /// Samples seen in all.
    seen: u64,
    heard_speech: bool,
    trailing_silence: usize,
    silence_samples: usize,
    scanned: usize,
}

impl Segmenter {
    /// Ends utterances after `silence_samples` of silence following speech.
    pub fn new(silence_samples: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            seen: 0,
            heard_speech: false,
            trailing_silence: 0,
            silence_samples,
            scanned: 0,
        }
    }

    /// Whether no speech is buffered.
    pub fn is_empty(&self) -> bool {
        !self.heard_speech
    }

    /// Adds audio; returns an utterance when the endpointer closes one.
    pub fn push(&mut self, pcm: &[i16]) -> Option<(u64, Vec<i16>)> {
        self.seen += pcm.len() as u64;
        self.buf.extend_from_slice(pcm);
        // Look at whole frames only; `scanned` is where the next unseen frame starts.
        let mut at = self.scanned;
        while at + FRAME_SAMPLES <= self.buf.len() {
            if rms(&self.buf[at..at + FRAME_SAMPLES]) > SPEECH_RMS {
                if !self.heard_speech {
                    // Speech starts here: keep exactly the pre-roll before it.
                    let drop = at.saturating_sub(PREROLL_SAMPLES);
                    self.buf.drain(..drop);
                    self.start += drop as u64;
                    at -= drop;
                }
                self.heard_speech = true;
                self.trailing_silence = 0;
            } else {
                self.trailing_silence += FRAME_SAMPLES;
            }
            at += FRAME_SAMPLES;
        }
        self.scanned = at;
        if !self.heard_speech {
            // Before speech keep only the pre-roll (of the frames already scanned).
            let drop = self.scanned.saturating_sub(PREROLL_SAMPLES);
            self.buf.drain(..drop);
            self.start += drop as u64;
            self.scanned -= drop;
            self.trailing_silence = 0;
            return None;
        }
        if self.trailing_silence >= self.silence_samples || self.buf.len() >= MAX_UTTERANCE_SAMPLES
        {
            return self.take();
        }
        None
    }

    /// Silence heard since the last speech frame, in samples.
    pub fn trailing_silence(&self) -> usize {
        self.trailing_silence
    }

    /// The utterance as it will be if only silence follows: trailing silence trimmed or
    /// padded (with zeros) to the same tail an ended utterance gets.
    pub fn snapshot(&self) -> Vec<i16> {
        let end = self.last_speech() + TAIL_KEEP_SAMPLES;
        let mut v = self.buf[..end.min(self.buf.len())].to_vec();
        v.resize(end, 0);
        v
    }

    fn last_speech(&self) -> usize {
        self.scanned - self.trailing_silence.min(self.scanned)
    }

    /// End of the audio worth transcribing: the last speech frame plus a short tail.
    /// Long digital silence makes Whisper hallucinate, and costs time.
    fn speech_end(&self) -> usize {
        (self.last_speech() + TAIL_KEEP_SAMPLES).min(self.buf.len())
    }

    /// Changes the silence that ends an utterance.
    pub fn set_silence(&mut self, silence_samples: usize) {
        self.silence_samples = silence_samples;
    }

    /// Ends the current utterance now, if it holds speech.
    pub fn take(&mut self) -> Option<(u64, Vec<i16>)> {
        let had = self.heard_speech;
        let start = self.start;
        let end = self.speech_end();
        let mut pcm = std::mem::take(&mut self.buf);
        pcm.truncate(end);
        self.start = self.seen;
        self.heard_speech = false;
        self.trailing_silence = 0;
        self.scanned = 0;
        had.then_some((start, pcm))
    }
}

/// An engine that transcribes one whole utterance at a time.
pub trait UtteranceTranscriber: Send + Sync + 'static {
    /// Transcribes 16 kHz PCM with the session's current settings.
    fn transcribe(
        &self,
        pcm: Vec<i16>,
        settings: &SttSettings,
    ) -> BoxFuture<'static, Result<String, SpeechError>>;
}

/// Runs a session over an utterance transcriber: audio is segmented by the caller's
/// end-of-utterance marks or by `endpointing` silence, each utterance gives one final.
/// A transcription error ends the session with that error.
///
/// Transcription starts early: once [`SPECULATE_SILENCE_SAMPLES`] of silence follow
/// speech, the utterance so far is sent to the engine; if the utterance then ends with
/// no new speech, that result is used, so the final comes sooner after the end mark.
/// New speech discards it.
pub fn utterance_session<T: UtteranceTranscriber>(
    engine: std::sync::Arc<T>,
    mut settings: SttSettings,
) -> SttSession {
    let (session, mut worker) = SttSession::channel();
    tokio::spawn(async move {
        let mut seg = Segmenter::new(silence_samples(&settings));
        let mut early: Option<JoinHandle<Result<String, SpeechError>>> = None;
        loop {
            let input = worker.input.recv().await;
            let done = input.is_none();
            let ready = match input {
                None | Some(SttInput::EndOfUtterance) => seg.take(),
                Some(SttInput::Audio(pcm)) => seg.push(&pcm),
                Some(SttInput::Update(u)) => {
                    settings.merge(&u);
                    seg.set_silence(silence_samples(&settings));
                    None
                }
            };
            if ready.is_none() {
                if seg.trailing_silence() == 0 {
                    // Speech (again): an early result would miss it.
                    if let Some(h) = early.take() {
                        h.abort();
                    }
                } else if early.is_none()
                    && !seg.is_empty()
                    && seg.trailing_silence() >= SPECULATE_SILENCE_SAMPLES
                {
                    early = Some(tokio::spawn(engine.transcribe(seg.snapshot(), &settings)));
                }
            }
            if let Some((start, pcm)) = ready {
                let len = pcm.len() as u64;
                let result = match early.take() {
                    Some(h) => h.await.unwrap_or_else(|e| {
                        Err(SpeechError::Unavailable {
                            engine: "stt",
                            reason: e.to_string(),
                        })
                    }),
                    None => engine.transcribe(pcm, &settings).await,
                };
                match result {
                    Ok(text) if text.trim().is_empty() => {}
                    Ok(text) => {
                        let t = Transcript {
                            text: text.trim().to_string(),
                            start: samples_to_duration(start),
                            end: samples_to_duration(start + len),
                            language: settings.language.clone(),
                            confidence: None,
                        };
                        if worker.events.send(Ok(SttEvent::Final(t))).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = worker.events.send(Err(e)).await;
                        return;
                    }
                }
            }
            if done {
                return;
            }
        }
    });
    session
}

fn silence_samples(s: &SttSettings) -> usize {
    s.endpointing.map_or(500, |e| e.silence_ms()) as usize * 16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segmenter_cuts_after_silence_with_preroll() {
        let mut s = Segmenter::new(300 * 16);
        let silence = vec![0i16; 320];
        let speech = vec![3000i16; 320];
        for _ in 0..50 {
            assert!(s.push(&silence).is_none());
        }
        for _ in 0..25 {
            assert!(s.push(&speech).is_none());
        }
        let mut cut = None;
        for _ in 0..20 {
            if let Some(c) = s.push(&silence) {
                cut = Some(c);
                break;
            }
        }
        let (start, pcm) = cut.expect("utterance ends after 300 ms of silence");
        // 1 s of silence before: the utterance starts at 700 ms (300 ms pre-roll).
        assert_eq!(start, 11_200);
        assert_eq!(
            pcm.len(),
            4_800 + 8_000 + 4_800,
            "300 ms of the trailing silence"
        );
        assert!(s.push(&silence).is_none());
        assert!(s.take().is_none(), "silence alone is no utterance");
    }

    mod early {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::time::Duration;

        use super::super::*;

        /// Takes 300 ms per utterance and reports how many samples it was given.
        #[derive(Default)]
        struct Slow {
            calls: AtomicUsize,
        }

        impl UtteranceTranscriber for Slow {
            fn transcribe(
                &self,
                pcm: Vec<i16>,
                _: &SttSettings,
            ) -> BoxFuture<'static, Result<String, SpeechError>> {
                self.calls.fetch_add(1, Ordering::SeqCst);
                Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok(format!("{} samples", pcm.len()))
                })
            }
        }

        async fn frames(s: &SttSession, loud: bool, n: usize) {
            for _ in 0..n {
                assert!(s.send_audio(vec![if loud { 3000 } else { 0 }; 320]).await);
            }
        }

        async fn final_text(s: &mut SttSession) -> String {
            match s.next_event().await {
                Some(Ok(SttEvent::Final(t))) => t.text,
                other => panic!("{other:?}"),
            }
        }

        #[tokio::test(start_paused = true)]
        async fn result_started_in_the_pause_is_used_at_the_end_mark() {
            let engine = Arc::new(Slow::default());
            let mut s = utterance_session(engine.clone(), SttSettings::default());
            frames(&s, true, 50).await; // 1 s speech
            frames(&s, false, 10).await; // 200 ms silence: early transcription starts
            tokio::time::sleep(Duration::from_millis(250)).await;
            let t0 = tokio::time::Instant::now();
            assert!(s.end_utterance());
            // No pre-roll (speech from the start), 1 s speech, 300 ms tail (zero padded).
            assert_eq!(final_text(&mut s).await, "20800 samples");
            assert!(
                t0.elapsed() <= Duration::from_millis(60),
                "{:?}",
                t0.elapsed()
            );
            assert_eq!(engine.calls.load(Ordering::SeqCst), 1);
        }

        #[tokio::test(start_paused = true)]
        async fn new_speech_discards_the_early_result() {
            let engine = Arc::new(Slow::default());
            let mut s = utterance_session(engine.clone(), SttSettings::default());
            frames(&s, true, 50).await;
            frames(&s, false, 10).await; // early transcription starts
            frames(&s, true, 25).await; // speech again
            frames(&s, false, 5).await;
            assert!(s.end_utterance());
            // 1 s speech, 200 ms pause, 0.5 s speech, the 100 ms of silence heard.
            assert_eq!(final_text(&mut s).await, "28800 samples");
            assert_eq!(engine.calls.load(Ordering::SeqCst), 2);
        }
    }
}
