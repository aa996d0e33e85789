//! Speech-to-text: the trait and the session handle.
//!
//! A session is two bounded channels: audio and control go in with `try_send` (the
//! media loop never waits; a full queue drops the frame and counts it), transcripts come
//! out. The provider's worker task owns the other ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use crate::error::SpeechError;

/// 20 ms frames queued towards a provider before new ones are dropped (2 s).
pub const AUDIO_QUEUE_FRAMES: usize = 100;
/// Queue slots kept free of audio so control (end of utterance, settings) always fits.
const CONTROL_RESERVE: usize = 8;
/// Events queued towards the consumer.
const EVENT_QUEUE: usize = 64;

/// End-of-utterance detection, as STTUpdateSettingsEvent's `endpointing` encodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpointing {
    /// Silence of this length ends an utterance (wire values > 3).
    SilenceMs(u32),
    /// Semantic end-of-turn detection, with eagerness 0 (auto) .. 3 (high).
    Semantic(u8),
}

impl Endpointing {
    /// From the wire integer: > 3 is milliseconds of silence, 0..=3 semantic eagerness.
    pub fn from_wire(v: i64) -> Option<Self> {
        match v {
            0..=3 => Some(Endpointing::Semantic(v as u8)),
            4..=60_000 => Some(Endpointing::SilenceMs(v as u32)),
            _ => None,
        }
    }

    /// A silence length for providers that only know silence endpointing.
    pub fn silence_ms(self) -> u32 {
        match self {
            Endpointing::SilenceMs(ms) => ms,
            // Higher eagerness ends turns sooner.
            Endpointing::Semantic(e) => [500, 800, 500, 300][usize::from(e.min(3))],
        }
    }
}

/// Recognition settings; on update, `None` fields keep their current value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SttSettings {
    /// Language code ("en", "es", "multi").
    pub language: Option<String>,
    /// Context prompt.
    pub prompt: Option<String>,
    /// End-of-utterance detection.
    pub endpointing: Option<Endpointing>,
}

impl SttSettings {
    /// Applies the fields set in `update`.
    pub fn merge(&mut self, update: &SttSettings) {
        if update.language.is_some() {
            self.language.clone_from(&update.language);
        }
        if update.prompt.is_some() {
            self.prompt.clone_from(&update.prompt);
        }
        if update.endpointing.is_some() {
            self.endpointing = update.endpointing;
        }
    }
}

/// A transcript, with times relative to the start of the session's audio.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    /// Recognised text.
    pub text: String,
    /// Start of the speech it covers.
    pub start: Duration,
    /// End of the speech it covers.
    pub end: Duration,
    /// Language, as detected or configured.
    pub language: Option<String>,
    /// Provider confidence 0..1, where given.
    pub confidence: Option<f32>,
}

/// What a session reports.
#[derive(Debug, Clone, PartialEq)]
pub enum SttEvent {
    /// The utterance so far; later partials replace it.
    Partial(Transcript),
    /// The whole utterance, final: the utterance has ended.
    Final(Transcript),
}

/// Inputs a provider worker receives.
#[derive(Debug)]
pub enum SttInput {
    /// 16 kHz mono PCM.
    Audio(Vec<i16>),
    /// The caller's VAD says the utterance ended: finalise now.
    EndOfUtterance,
    /// New settings (merge into the current ones).
    Update(SttSettings),
}

/// A speech-to-text engine or provider.
pub trait SpeechToText: Send + Sync + 'static {
    /// Provider name, as in config.
    fn name(&self) -> &'static str;
    /// Opens a recognition session (connects, for network providers).
    fn start(&self, settings: SttSettings) -> BoxFuture<'static, Result<SttSession, SpeechError>>;
}

/// The caller's side of a recognition session. Dropping it ends the session.
#[derive(Debug)]
pub struct SttSession {
    input: mpsc::Sender<SttInput>,
    events: mpsc::Receiver<Result<SttEvent, SpeechError>>,
    dropped_frames: Arc<AtomicU64>,
}

/// The worker's side of a session.
#[derive(Debug)]
pub struct SttWorker {
    /// Audio and control from the caller; `None` once the caller finished or went away.
    pub input: mpsc::Receiver<SttInput>,
    /// Transcripts to the caller.
    pub events: mpsc::Sender<Result<SttEvent, SpeechError>>,
}

impl SttSession {
    /// A connected session/worker pair.
    pub fn channel() -> (SttSession, SttWorker) {
        let (itx, irx) = mpsc::channel(AUDIO_QUEUE_FRAMES + CONTROL_RESERVE);
        let (etx, erx) = mpsc::channel(EVENT_QUEUE);
        (
            SttSession {
                input: itx,
                events: erx,
                dropped_frames: Arc::default(),
            },
            SttWorker {
                input: irx,
                events: etx,
            },
        )
    }

    /// Queues a frame of 16 kHz PCM without waiting; returns false (and counts it) when
    /// the queue is full or the session is over.
    pub fn push_audio(&self, pcm: Vec<i16>) -> bool {
        let ok = self.input.capacity() > CONTROL_RESERVE
            && self.input.try_send(SttInput::Audio(pcm)).is_ok();
        if !ok {
            self.dropped_frames.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Queues audio, waiting for room: for callers that are not real time (files,
    /// replay). Returns false once the session is over.
    pub async fn send_audio(&self, pcm: Vec<i16>) -> bool {
        // Wait until audio would still leave the control reserve free.
        match self.input.reserve_many(CONTROL_RESERVE + 1).await {
            Ok(mut permits) => {
                if let Some(p) = permits.next() {
                    p.send(SttInput::Audio(pcm));
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Tells the provider the utterance ended (from the caller's VAD).
    pub fn end_utterance(&self) -> bool {
        self.input.try_send(SttInput::EndOfUtterance).is_ok()
    }

    /// Changes language, prompt or endpointing mid-call.
    pub fn update_settings(&self, update: SttSettings) -> bool {
        self.input.try_send(SttInput::Update(update)).is_ok()
    }

    /// Frames dropped because the queue was full.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped_frames.load(Ordering::Relaxed)
    }

    /// The next transcript; `None` once the session is over.
    pub async fn next_event(&mut self) -> Option<Result<SttEvent, SpeechError>> {
        self.events.recv().await
    }

    /// Stops sending audio: the provider flushes, sends its last finals, and the event
    /// stream ends. Returns the receiving half.
    pub fn finish(self) -> SttEvents {
        SttEvents {
            events: self.events,
        }
    }
}

/// The rest of a finished session's transcripts.
#[derive(Debug)]
pub struct SttEvents {
    events: mpsc::Receiver<Result<SttEvent, SpeechError>>,
}

impl SttEvents {
    /// The next transcript; `None` at the end.
    pub async fn next_event(&mut self) -> Option<Result<SttEvent, SpeechError>> {
        self.events.recv().await
    }

    /// All remaining final transcripts joined with spaces.
    pub async fn final_text(mut self) -> Result<String, SpeechError> {
        let mut parts = Vec::new();
        while let Some(ev) = self.next_event().await {
            if let SttEvent::Final(t) = ev?
                && !t.text.trim().is_empty()
            {
                parts.push(t.text.trim().to_string());
            }
        }
        Ok(parts.join(" "))
    }
}

/// Samples to a duration at 16 kHz.
pub fn samples_to_duration(samples: u64) -> Duration {
    Duration::from_micros(samples * 1_000_000 / u64::from(crate::SAMPLE_RATE_HZ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpointing_wire_values() {
        assert_eq!(
            Endpointing::from_wire(500),
            Some(Endpointing::SilenceMs(500))
        );
        assert_eq!(Endpointing::from_wire(2), Some(Endpointing::Semantic(2)));
        assert_eq!(Endpointing::from_wire(-1), None);
        assert_eq!(Endpointing::Semantic(3).silence_ms(), 300);
    }

    #[test]
    fn settings_merge_keeps_unset_fields() {
        let mut s = SttSettings {
            language: Some("en".into()),
            prompt: Some("p".into()),
            endpointing: None,
        };
        s.merge(&SttSettings {
            language: Some("es".into()),
            ..Default::default()
        });
        assert_eq!(s.language.as_deref(), Some("es"));
        assert_eq!(s.prompt.as_deref(), Some("p"));
    }

    #[tokio::test]
    async fn push_never_blocks_and_counts_drops() {
        let (session, _worker) = SttSession::channel();
        for _ in 0..AUDIO_QUEUE_FRAMES {
            assert!(session.push_audio(vec![0; 320]));
        }
        assert!(!session.push_audio(vec![0; 320]));
        assert_eq!(session.dropped_frames(), 1);
        // Control still fits when audio has filled its share.
        assert!(session.end_utterance());
        assert!(session.update_settings(SttSettings::default()));
    }
}
