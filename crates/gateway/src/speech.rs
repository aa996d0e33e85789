//! Speech on a call: the agent's TextToSpeechEvents synthesised and streamed
//! into playout, in order, cancellable by barge-in; and the caller's speech
//! frames streamed to speech-to-text, whose finals become TextEvents.
//!
//! # Ordering and completion
//!
//! One speaker task per call synthesises the queued speech items one after
//! another, so they play in the order the handler yielded them, each
//! streamed chunk by chunk as the TTS produces it (the first words play
//! while later sentences are still being synthesised). A streamed item
//! reaches the media playout as several pieces under one segment id; to
//! report the item finished exactly when its last piece has played, the
//! speaker queues a one-sample silent end marker (the id with
//! [`END_MARKER`] set) after it: its `Finished` is the item's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use voicegate_engine::event::Voice;
use voicegate_engine::session::Speech;
use voicegate_media::{MediaControl, SegmentId};
use voicegate_speech::{SAMPLE_RATE_HZ, SpeakRequest, TtsService, VoiceSelection, VoiceTarget};

/// Set on the id of an item's end marker segment.
pub(crate) const END_MARKER: u64 = 1 << 63;

/// One speech item to synthesise and play.
struct Job {
    id: u64,
    interruptible: bool,
    request: SpeakRequest,
    /// Flush generations when queued (see [`Speaker::flush`]).
    gen_interruptible: u64,
    gen_all: u64,
}

/// The call's speaker: queue items with [`Speaker::speak`], drop them with
/// [`Speaker::flush`]. Items that produce no audio at all are reported on
/// the `failed` channel given to [`Speaker::start`].
pub(crate) struct Speaker {
    jobs: mpsc::UnboundedSender<Job>,
    flushed_interruptible: Arc<AtomicU64>,
    flushed_all: Arc<AtomicU64>,
}

impl Speaker {
    /// Starts the speaker task for a call.
    pub(crate) fn start(
        tts: TtsService,
        media: MediaControl,
        failed: mpsc::UnboundedSender<u64>,
    ) -> Self {
        let (jobs, rx) = mpsc::unbounded_channel();
        let flushed_interruptible = Arc::new(AtomicU64::new(0));
        let flushed_all = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(
            rx,
            tts,
            media,
            flushed_interruptible.clone(),
            flushed_all.clone(),
            failed,
        ));
        Speaker {
            jobs,
            flushed_interruptible,
            flushed_all,
        }
    }

    /// Queues `speech` as playback item `id`.
    pub(crate) fn speak(&self, id: u64, interruptible: bool, speech: Speech) {
        let request = SpeakRequest {
            text: speech.text,
            voice: speech.voice.map(|v| match v {
                Voice::Name(name) => VoiceSelection::Name(name),
                Voice::Identifier {
                    provider,
                    identifier,
                } => VoiceSelection::Identifier(VoiceTarget {
                    provider,
                    identifier,
                }),
            }),
            speed: speech.speed as f32,
            language: speech.language,
            instructions: speech.instructions,
            model: speech.model,
            cache: speech.cache,
        };
        let _ = self.jobs.send(Job {
            id,
            interruptible,
            request,
            gen_interruptible: self.flushed_interruptible.load(Ordering::SeqCst),
            gen_all: self.flushed_all.load(Ordering::SeqCst),
        });
    }

    /// Drops queued and in-progress items: interruptible ones, or all.
    pub(crate) fn flush(&self, all: bool) {
        self.flushed_interruptible.fetch_add(1, Ordering::SeqCst);
        if all {
            self.flushed_all.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn run(
    mut jobs: mpsc::UnboundedReceiver<Job>,
    tts: TtsService,
    media: MediaControl,
    flushed_interruptible: Arc<AtomicU64>,
    flushed_all: Arc<AtomicU64>,
    failed: mpsc::UnboundedSender<u64>,
) {
    let stale = |interruptible: bool, gen_interruptible: u64, gen_all: u64| {
        (interruptible && gen_interruptible < flushed_interruptible.load(Ordering::SeqCst))
            || gen_all < flushed_all.load(Ordering::SeqCst)
    };
    while let Some(job) = jobs.recv().await {
        let Job {
            id,
            interruptible,
            request,
            gen_interruptible,
            gen_all,
        } = job;
        let stale = || stale(interruptible, gen_interruptible, gen_all);
        // Flushed while queued: the session has already dropped it.
        if stale() {
            continue;
        }
        let mut out = match media.stream(SegmentId(id), interruptible, SAMPLE_RATE_HZ) {
            Ok(out) => out,
            Err(e) => {
                tracing::warn!(error = %e, "speech not played: media stopped");
                let _ = failed.send(id);
                continue;
            }
        };
        let mut synth = tts.speak(request);
        let mut pushed = false;
        let mut flushed = false;
        while let Some(chunk) = synth.next_chunk().await {
            if stale() {
                synth.cancel();
                flushed = true;
                break;
            }
            match chunk {
                Ok(pcm) => {
                    if !pushed && let Some(latency) = synth.first_chunk_latency() {
                        metrics::histogram!("voicegate_tts_first_chunk_seconds")
                            .record(latency.as_secs_f64());
                    }
                    if let Err(e) = out.push(&pcm) {
                        tracing::warn!(error = %e, "speech cut: playout refused audio");
                        break;
                    }
                    pushed = true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "speech synthesis failed");
                    break;
                }
            }
        }
        if flushed {
            continue;
        }
        if !pushed {
            let _ = failed.send(id);
            continue;
        }
        let _ = out.finish();
        let rate = media.playout_rate_hz();
        if media
            .play(SegmentId(id | END_MARKER), interruptible, vec![0], rate)
            .is_err()
        {
            let _ = failed.send(id);
        }
    }
}
