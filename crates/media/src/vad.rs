//! Voice activity detection on 16 kHz, 20 ms frames: earshot (default, neural) or
//! WebRTC VAD (cheaper), with configurable onset and hangover, speech-start /
//! speech-end events with stream timestamps, and speech frames with pre-roll.

use std::collections::VecDeque;
use std::time::Duration;

use crate::MediaError;

/// Samples in one 20 ms frame at 16 kHz.
pub const FRAME_16K: usize = 320;
const FRAME_MS: u32 = 20;
const EARSHOT_FRAME: usize = 256;
/// Frames whose peak stays below this (about -60 dBFS) are silence without
/// asking the detector.
const SILENCE_PEAK: u16 = 32;

/// One 20 ms frame of 16 kHz mono PCM.
pub type Frame16k = [i16; FRAME_16K];

/// Which detector to run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum VadEngine {
    /// earshot (neural, pure Rust); speech when the score is at least `threshold`.
    Earshot {
        /// Score threshold in `[0, 1]` (0.5 is earshot's suggestion).
        threshold: f32,
    },
    /// WebRTC VAD (GMM, libfvad) with aggressiveness 0..=3.
    WebRtc {
        /// 0 = quality .. 3 = very aggressive.
        mode: u8,
    },
}

/// VAD configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadConfig {
    /// Detector.
    pub engine: VadEngine,
    /// Speech must last this long before speech-start is emitted.
    pub onset_ms: u32,
    /// Non-speech must last this long before speech-end is emitted.
    pub hangover_ms: u32,
    /// Audio before the detected onset passed on with the first speech frames.
    pub pre_roll_ms: u32,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self {
            engine: VadEngine::Earshot { threshold: 0.5 },
            onset_ms: 60,
            hangover_ms: 500,
            pre_roll_ms: 200,
        }
    }
}

/// Output of the VAD.
// Frames travel inline: boxing them would allocate on the 20 ms path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum VadEvent {
    /// Speech began at this stream position (start of the onset).
    SpeechStart {
        /// Stream position of the onset.
        at: Duration,
    },
    /// A frame of speech (pre-roll frames first, then live ones until the end).
    SpeechFrame {
        /// Stream position of the frame's first sample.
        at: Duration,
        /// The audio.
        pcm: Frame16k,
    },
    /// Speech ended at this stream position (start of the hangover).
    SpeechEnd {
        /// Stream position where non-speech began.
        at: Duration,
    },
}

// One detector per call, never moved on the media path.
#[allow(clippy::large_enum_variant)]
enum Detector {
    Earshot {
        det: Box<earshot::Detector>,
        threshold: f32,
        carry: [i16; EARSHOT_FRAME],
        carry_len: usize,
        last_score: f32,
    },
    WebRtc(WebRtcVad),
}

/// `webrtc_vad::Vad` holds a raw pointer to its libfvad state and so is not `Send`;
/// the state is owned exclusively and libfvad has no thread affinity.
struct WebRtcVad(webrtc_vad::Vad);
// SAFETY: the fvad instance is only reached through this owner (&mut self).
unsafe impl Send for WebRtcVad {}

/// The voice activity detector of one inbound stream (sans-IO).
pub struct Vad {
    cfg: VadConfig,
    det: Detector,
    history: VecDeque<(Duration, Frame16k)>,
    history_cap: usize,
    events: VecDeque<VadEvent>,
    in_speech: bool,
    speech_run: u32,
    silence_run: u32,
    position: Duration,
    frames: u64,
}

impl std::fmt::Debug for Vad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vad")
            .field("cfg", &self.cfg)
            .field("in_speech", &self.in_speech)
            .field("position", &self.position)
            .finish()
    }
}

impl Vad {
    /// Builds the detector and its buffers.
    pub fn new(cfg: VadConfig) -> Result<Self, MediaError> {
        let det = match cfg.engine {
            VadEngine::Earshot { threshold } => Detector::Earshot {
                det: earshot::Detector::default_boxed(),
                threshold,
                carry: [0; EARSHOT_FRAME],
                carry_len: 0,
                last_score: 0.0,
            },
            VadEngine::WebRtc { mode } => {
                let mode = match mode {
                    0 => webrtc_vad::VadMode::Quality,
                    1 => webrtc_vad::VadMode::LowBitrate,
                    2 => webrtc_vad::VadMode::Aggressive,
                    3 => webrtc_vad::VadMode::VeryAggressive,
                    _ => {
                        return Err(MediaError::Config {
                            key: "vad.webrtc_mode",
                            reason: "must be 0..=3",
                        });
                    }
                };
                Detector::WebRtc(WebRtcVad(webrtc_vad::Vad::new_with_rate_and_mode(
                    webrtc_vad::SampleRate::Rate16kHz,
                    mode,
                )))
            }
        };
        let history_cap = (cfg.pre_roll_ms + cfg.onset_ms).div_ceil(FRAME_MS) as usize + 1;
        Ok(Self {
            cfg,
            det,
            history: VecDeque::with_capacity(history_cap + 1),
            history_cap,
            events: VecDeque::with_capacity(history_cap + 4),
            in_speech: false,
            speech_run: 0,
            silence_run: 0,
            position: Duration::ZERO,
            frames: 0,
        })
    }

    /// Whether the detector is inside a speech segment.
    pub fn in_speech(&self) -> bool {
        self.in_speech
    }

    /// Stream position after the frames processed so far.
    pub fn position(&self) -> Duration {
        self.position
    }

    fn classify(&mut self, pcm: &Frame16k) -> bool {
        // Digital silence (DTX, hold, the silence fed while the jitter buffer is
        // empty, the end of concealment) is not speech: skip the detector, which
        // is the most expensive step of the inbound path.
        let peak = pcm.iter().fold(0u16, |m, s| m.max(s.unsigned_abs()));
        if peak < SILENCE_PEAK {
            if let Detector::Earshot {
                carry_len,
                last_score,
                ..
            } = &mut self.det
            {
                *carry_len = 0;
                *last_score = 0.0;
            }
            return false;
        }
        match &mut self.det {
            Detector::Earshot {
                det,
                threshold,
                carry,
                carry_len,
                last_score,
            } => {
                // earshot wants 256-sample (16 ms) frames: run it on every full
                // 256-sample window of the stream and keep the latest score.
                let mut input = &pcm[..];
                let mut best = -1.0f32;
                while !input.is_empty() {
                    let take = (EARSHOT_FRAME - *carry_len).min(input.len());
                    carry[*carry_len..*carry_len + take].copy_from_slice(&input[..take]);
                    *carry_len += take;
                    input = &input[take..];
                    if *carry_len == EARSHOT_FRAME {
                        let s = det.predict_i16(&carry[..]);
                        best = best.max(s);
                        *carry_len = 0;
                    }
                }
                if best >= 0.0 {
                    *last_score = best;
                }
                *last_score >= *threshold
            }
            Detector::WebRtc(v) => v.0.is_voice_segment(&pcm[..]).unwrap_or(false),
        }
    }

    /// Processes one 20 ms frame; events are drained with [`Vad::poll_event`].
    pub fn process(&mut self, pcm: &Frame16k) {
        let at = self.position;
        self.frames += 1;
        self.position = Duration::from_millis(self.frames * FRAME_MS as u64);
        let speech = self.classify(pcm);
        if self.history.len() == self.history_cap {
            self.history.pop_front();
        }
        self.history.push_back((at, *pcm));

        if !self.in_speech {
            if speech {
                self.speech_run += 1;
                if self.speech_run * FRAME_MS >= self.cfg.onset_ms.max(FRAME_MS) {
                    self.in_speech = true;
                    self.silence_run = 0;
                    let onset_frames = self.speech_run as usize;
                    let start = at.saturating_sub(Duration::from_millis(
                        ((onset_frames - 1) as u32 * FRAME_MS) as u64,
                    ));
                    self.push_event(VadEvent::SpeechStart { at: start });
                    // Pre-roll plus the onset frames, oldest first.
                    let pre = (self.cfg.pre_roll_ms / FRAME_MS) as usize + onset_frames;
                    let skip = self.history.len().saturating_sub(pre);
                    for i in skip..self.history.len() {
                        let (fat, frame) = self.history[i];
                        self.push_event(VadEvent::SpeechFrame {
                            at: fat,
                            pcm: frame,
                        });
                    }
                }
            } else {
                self.speech_run = 0;
            }
            return;
        }
        self.push_event(VadEvent::SpeechFrame { at, pcm: *pcm });
        if speech {
            self.silence_run = 0;
        } else {
            self.silence_run += 1;
            if self.silence_run * FRAME_MS >= self.cfg.hangover_ms.max(FRAME_MS) {
                self.in_speech = false;
                self.speech_run = 0;
                let end = self
                    .position
                    .saturating_sub(Duration::from_millis((self.silence_run * FRAME_MS) as u64));
                self.silence_run = 0;
                self.push_event(VadEvent::SpeechEnd { at: end });
            }
        }
    }

    fn push_event(&mut self, ev: VadEvent) {
        // Capacity is sized for pre-roll + one frame; drop the oldest if the
        // caller does not drain (keeps the no-allocation promise).
        if self.events.len() == self.events.capacity() {
            self.events.pop_front();
        }
        self.events.push_back(ev);
    }

    /// Next event, oldest first.
    pub fn poll_event(&mut self) -> Option<VadEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Voiced-speech-like test signal: a 150 Hz pulse train through a few formant
    /// resonances, with a syllable envelope.
    pub(crate) fn voiced(frame_idx: usize, out: &mut Frame16k) {
        for (i, s) in out.iter_mut().enumerate() {
            let n = frame_idx * FRAME_16K + i;
            let t = n as f32 / 16000.0;
            let f0 = 140.0 + 20.0 * (2.0 * std::f32::consts::PI * 3.0 * t).sin();
            let mut v = 0.0;
            for h in 1..30 {
                let f = f0 * h as f32;
                if f > 7000.0 {
                    break;
                }
                let formant = |c: f32, bw: f32| 1.0 / (1.0 + ((f - c) / bw).powi(2));
                let amp = formant(700.0, 150.0)
                    + 0.6 * formant(1200.0, 200.0)
                    + 0.3 * formant(2500.0, 300.0);
                v += amp * (2.0 * std::f32::consts::PI * f * t).sin();
            }
            let env = 0.6 + 0.4 * (2.0 * std::f32::consts::PI * 4.0 * t).sin().abs();
            *s = (v * env * 4000.0).clamp(-32000.0, 32000.0) as i16;
        }
    }

    fn run(cfg: VadConfig) -> Vec<VadEvent> {
        let mut vad = Vad::new(cfg).unwrap();
        let mut evs = vec![];
        let mut frame = [0i16; FRAME_16K];
        for k in 0..150 {
            if (50..100).contains(&k) {
                voiced(k, &mut frame);
            } else {
                frame = [0; FRAME_16K];
            }
            vad.process(&frame);
            while let Some(e) = vad.poll_event() {
                evs.push(e);
            }
        }
        evs
    }

    fn check(evs: &[VadEvent]) {
        let starts: Vec<_> = evs
            .iter()
            .filter_map(|e| match e {
                VadEvent::SpeechStart { at } => Some(*at),
                _ => None,
            })
            .collect();
        let ends: Vec<_> = evs
            .iter()
            .filter_map(|e| match e {
                VadEvent::SpeechEnd { at } => Some(*at),
                _ => None,
            })
            .collect();
        assert_eq!(starts.len(), 1, "{starts:?}");
        assert_eq!(ends.len(), 1, "{ends:?}");
        let s = starts[0].as_millis();
        assert!((1000..=1200).contains(&s), "start {s}");
        let e = ends[0].as_millis();
        assert!((1900..=2300).contains(&e), "end {e}");
        // The first speech frame is the pre-roll: 200 ms before the onset.
        let first_frame = evs
            .iter()
            .find_map(|e| match e {
                VadEvent::SpeechFrame { at, .. } => Some(at.as_millis()),
                _ => None,
            })
            .unwrap();
        assert!(
            first_frame + 150 <= s,
            "pre-roll {first_frame} vs start {s}"
        );
    }

    #[test]
    fn earshot_detects_voiced_signal() {
        check(&run(VadConfig::default()));
    }

    #[test]
    fn webrtc_detects_voiced_signal() {
        check(&run(VadConfig {
            engine: VadEngine::WebRtc { mode: 2 },
            ..VadConfig::default()
        }));
    }

    #[test]
    fn silence_emits_nothing() {
        let mut vad = Vad::new(VadConfig::default()).unwrap();
        for _ in 0..100 {
            vad.process(&[0; FRAME_16K]);
        }
        assert!(vad.poll_event().is_none());
        assert!(
            Vad::new(VadConfig {
                engine: VadEngine::WebRtc { mode: 9 },
                ..VadConfig::default()
            })
            .is_err()
        );
    }
}
