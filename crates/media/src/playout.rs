//! Paced playout of agent audio (sans-IO): a queue of PCM segments, each with an
//! id and an interruptible flag, cut into ptime frames; barge-in flush; silence
//! between segments; a looping background track mixed underneath.
//!
//! The caller (the pipeline) asks for one frame per ptime tick with
//! [`Playout::next_frame`] and encodes it. Segments hold PCM at the playout rate (the
//! codec's PCM rate); converting from the TTS rate happens before
//! [`Playout::enqueue`], off the media task (see `driver::MediaHandle::play`).
//!
//! Chunks of one streamed utterance may share an id: segments play back to back
//! without a gap, and each reports its own [`PlayoutEvent`].

use std::collections::VecDeque;
use std::sync::Arc;

use crate::MediaError;

/// Identifier of a playout segment (chosen by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId(pub u64);

/// A piece of agent audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Caller's id, reported back in [`PlayoutEvent`]s.
    pub id: SegmentId,
    /// Whether [`Playout::flush`] (barge-in) may cut it.
    pub interruptible: bool,
    /// Mono PCM at the playout rate.
    pub pcm: Vec<i16>,
}

/// What happened to a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayoutEvent {
    /// The first frame of the segment went out.
    Started {
        /// Segment id.
        id: SegmentId,
    },
    /// The segment played to its end.
    Finished {
        /// Segment id.
        id: SegmentId,
        /// Milliseconds played (the whole segment).
        played_ms: u32,
    },
    /// The segment was refused because the playout queue was full; nothing of it
    /// played.
    Rejected {
        /// Segment id.
        id: SegmentId,
    },
    /// The segment was cut by a flush.
    Interrupted {
        /// Segment id.
        id: SegmentId,
        /// Milliseconds played before the cut (0 if it never started).
        played_ms: u32,
        /// Length of the segment in milliseconds.
        total_ms: u32,
    },
}

/// What [`Playout::next_frame`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// The frame carries segment audio (possibly mixed with the background).
    Audio,
    /// Nothing queued: silence, or the background track alone.
    Idle,
}

/// Playout configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayoutConfig {
    /// PCM rate of segments and output frames.
    pub rate_hz: u32,
    /// Samples per output frame (ptime).
    pub frame_samples: usize,
    /// Segments that can be queued at once; more is refused.
    pub max_segments: usize,
    /// Peak amplitude of the white comfort noise sent when no segment plays
    /// (0: digital silence). 30 is about -60 dBov.
    pub comfort_noise_peak: u16,
}

#[derive(Debug)]
struct Background {
    pcm: Arc<[i16]>,
    pos: usize,
    gain_q15: i32,
}

/// The playout queue of one call (see module docs).
#[derive(Debug)]
pub struct Playout {
    cfg: PlayoutConfig,
    queue: VecDeque<Segment>,
    /// Samples of the front segment already played.
    pos: usize,
    events: VecDeque<PlayoutEvent>,
    background: Option<Background>,
    queued_samples: usize,
    noise_state: u32,
    /// Ids of the segments most recently dropped by `flush`, oldest
    /// overwritten first: later pieces of a streamed segment with one of
    /// these ids are dropped on arrival (see [`Playout::enqueue`]).
    cut: [Option<SegmentId>; CUT_IDS],
    cut_next: usize,
}

/// How many cut segment ids [`Playout`] remembers.
const CUT_IDS: usize = 8;

impl Playout {
    /// An empty queue.
    pub fn new(cfg: PlayoutConfig) -> Result<Self, MediaError> {
        if cfg.frame_samples == 0 || cfg.rate_hz == 0 || cfg.max_segments == 0 {
            return Err(MediaError::Config {
                key: "playout",
                reason: "rate, frame size and queue length must be positive",
            });
        }
        Ok(Self {
            cfg,
            queue: VecDeque::with_capacity(cfg.max_segments),
            pos: 0,
            events: VecDeque::with_capacity(2 * cfg.max_segments + 4),
            background: None,
            queued_samples: 0,
            noise_state: 0x9E37_79B9,
            cut: [None; CUT_IDS],
            cut_next: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> PlayoutConfig {
        self.cfg
    }

    fn ms(&self, samples: usize) -> u32 {
        (samples as u64 * 1000 / self.cfg.rate_hz as u64) as u32
    }

    fn push_event(&mut self, ev: PlayoutEvent) {
        if self.events.len() == self.events.capacity() {
            self.events.pop_front();
        }
        self.events.push_back(ev);
    }

    /// Queues a segment; a full queue hands it back.
    ///
    /// A piece of a segment that barge-in (`flush`) already cut is dropped
    /// on arrival and reported `Interrupted` with nothing played: speech is
    /// streamed into playout piece by piece under one id while it is being
    /// synthesised, and a piece its producer sent before it learnt of the
    /// flush must not bring the cut reply back.
    pub fn enqueue(&mut self, segment: Segment) -> Result<(), Segment> {
        if self.cut.contains(&Some(segment.id)) {
            let ev = PlayoutEvent::Interrupted {
                id: segment.id,
                played_ms: 0,
                total_ms: self.ms(segment.pcm.len()),
            };
            self.push_event(ev);
            return Ok(());
        }
        if self.queue.len() == self.cfg.max_segments {
            return Err(segment);
        }
        self.queued_samples += segment.pcm.len();
        self.queue.push_back(segment);
        Ok(())
    }

    /// Whether segment audio is queued or playing.
    pub fn is_active(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Whether the audio playing right now may be interrupted by barge-in.
    pub fn is_interruptible_playing(&self) -> bool {
        self.queue.front().is_some_and(|s| s.interruptible)
    }

    /// Milliseconds of segment audio still queued (including the rest of the
    /// current one).
    pub fn queued_ms(&self) -> u32 {
        self.ms(self.queued_samples.saturating_sub(self.pos))
    }

    /// Barge-in: drops every interruptible segment, the one playing included. The
    /// next frame is already free of it. Returns the number of segments dropped;
    /// each is reported as [`PlayoutEvent::Interrupted`], and its id is
    /// remembered so that later pieces of it are dropped too.
    pub fn flush(&mut self) -> usize {
        self.drop_where(|s| s.interruptible, true)
    }

    /// Drops every segment, interruptible or not, and forgets the segments
    /// barge-in cut: a clear starts playout over (a new agent's session may
    /// number its segments from 1 again).
    pub fn clear(&mut self) -> usize {
        self.cut = [None; CUT_IDS];
        self.drop_where(|_| true, false)
    }

    fn drop_where(&mut self, pred: impl Fn(&Segment) -> bool, remember: bool) -> usize {
        let mut dropped = 0;
        let mut i = 0;
        while i < self.queue.len() {
            if pred(&self.queue[i]) {
                let played = if i == 0 { self.pos } else { 0 };
                if let Some(seg) = self.queue.remove(i) {
                    let ev = PlayoutEvent::Interrupted {
                        id: seg.id,
                        played_ms: self.ms(played),
                        total_ms: self.ms(seg.pcm.len()),
                    };
                    self.queued_samples -= seg.pcm.len();
                    if i == 0 {
                        self.pos = 0;
                    }
                    if remember && !self.cut.contains(&Some(seg.id)) {
                        self.cut[self.cut_next] = Some(seg.id);
                        self.cut_next = (self.cut_next + 1) % CUT_IDS;
                    }
                    self.push_event(ev);
                    dropped += 1;
                }
            } else {
                i += 1;
            }
        }
        dropped
    }

    /// Sets (or removes) the looping background track, at the playout rate, mixed at
    /// `gain` (0.0..=1.0) under speech and silence alike.
    pub fn set_background(&mut self, track: Option<Arc<[i16]>>, gain: f32) {
        self.background = track.filter(|t| !t.is_empty()).map(|pcm| Background {
            pcm,
            pos: 0,
            gain_q15: (gain.clamp(0.0, 1.0) * 32768.0) as i32,
        });
    }

    /// Produces the next frame into `out` (`frame_samples` long).
    pub fn next_frame(&mut self, out: &mut [i16]) -> FrameKind {
        let n = self.cfg.frame_samples.min(out.len());
        let out = &mut out[..n];
        let mut filled = 0;
        let mut kind = FrameKind::Idle;
        while filled < n {
            let Some(seg) = self.queue.front() else { break };
            if self.pos == 0 {
                let id = seg.id;
                self.push_event(PlayoutEvent::Started { id });
            }
            let seg = &self.queue[0];
            let take = (seg.pcm.len() - self.pos).min(n - filled);
            out[filled..filled + take].copy_from_slice(&seg.pcm[self.pos..self.pos + take]);
            filled += take;
            self.pos += take;
            kind = FrameKind::Audio;
            if self.pos >= seg.pcm.len() {
                let ev = PlayoutEvent::Finished {
                    id: seg.id,
                    played_ms: self.ms(seg.pcm.len()),
                };
                if let Some(seg) = self.queue.pop_front() {
                    self.queued_samples -= seg.pcm.len();
                }
                self.pos = 0;
                self.push_event(ev);
            }
        }
        if self.cfg.comfort_noise_peak == 0 {
            out[filled..].fill(0);
        } else {
            let span = 2 * self.cfg.comfort_noise_peak as u32 + 1;
            for s in out[filled..].iter_mut() {
                // xorshift32: cheap, allocation-free, good enough for noise.
                let mut x = self.noise_state;
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                self.noise_state = x;
                *s = ((x % span) as i32 - self.cfg.comfort_noise_peak as i32) as i16;
            }
        }
        if let Some(bg) = self.background.as_mut() {
            for s in out.iter_mut() {
                let b = (bg.pcm[bg.pos] as i32 * bg.gain_q15) >> 15;
                *s = (*s as i32 + b).clamp(i16::MIN as i32, i16::MAX as i32) as i16;
                bg.pos += 1;
                if bg.pos == bg.pcm.len() {
                    bg.pos = 0;
                }
            }
        }
        kind
    }

    /// Next playout event, oldest first.
    pub fn poll_event(&mut self) -> Option<PlayoutEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn playout() -> Playout {
        Playout::new(PlayoutConfig {
            rate_hz: 8000,
            frame_samples: 160,
            max_segments: 4,
            comfort_noise_peak: 0,
        })
        .unwrap()
    }

    fn seg(id: u64, interruptible: bool, len: usize, v: i16) -> Segment {
        Segment {
            id: SegmentId(id),
            interruptible,
            pcm: vec![v; len],
        }
    }

    fn events(p: &mut Playout) -> Vec<PlayoutEvent> {
        std::iter::from_fn(|| p.poll_event()).collect()
    }

    #[test]
    fn pieces_of_a_segment_cut_by_barge_in_are_dropped_until_a_clear() {
        let mut p = playout();
        let mut f = [0i16; 160];
        p.enqueue(seg(5, true, 480, 100)).unwrap();
        p.next_frame(&mut f);
        assert_eq!(p.flush(), 1);
        events(&mut p);
        // A later piece of the cut segment (its producer had not heard of
        // the flush yet) does not bring it back.
        p.enqueue(seg(5, true, 480, 100)).unwrap();
        assert!(!p.is_active());
        assert_eq!(
            events(&mut p),
            vec![PlayoutEvent::Interrupted {
                id: SegmentId(5),
                played_ms: 0,
                total_ms: 60
            }]
        );
        // Other segments play.
        p.enqueue(seg(6, true, 160, 100)).unwrap();
        assert!(p.is_active());
        // A clear starts over: the id may be used again.
        p.clear();
        events(&mut p);
        p.enqueue(seg(5, false, 160, 100)).unwrap();
        assert!(p.is_active());
    }

    #[test]
    fn segments_play_back_to_back_then_silence() {
        let mut p = playout();
        let mut f = [0i16; 160];
        assert_eq!(p.next_frame(&mut f), FrameKind::Idle);
        p.enqueue(seg(1, true, 240, 5)).unwrap();
        p.enqueue(seg(2, true, 100, 7)).unwrap();
        assert_eq!(p.queued_ms(), 42);
        assert_eq!(p.next_frame(&mut f), FrameKind::Audio);
        assert!(f.iter().all(|s| *s == 5));
        assert_eq!(p.next_frame(&mut f), FrameKind::Audio);
        assert!(f[..80].iter().all(|s| *s == 5));
        assert!(f[80..].iter().all(|s| *s == 7));
        assert_eq!(p.next_frame(&mut f), FrameKind::Audio);
        assert!(f[..20].iter().all(|s| *s == 7) && f[20..].iter().all(|s| *s == 0));
        assert_eq!(p.next_frame(&mut f), FrameKind::Idle);
        assert_eq!(
            events(&mut p),
            vec![
                PlayoutEvent::Started { id: SegmentId(1) },
                PlayoutEvent::Finished {
                    id: SegmentId(1),
                    played_ms: 30
                },
                PlayoutEvent::Started { id: SegmentId(2) },
                PlayoutEvent::Finished {
                    id: SegmentId(2),
                    played_ms: 12
                },
            ]
        );
    }

    #[test]
    fn flush_cuts_interruptible_within_one_frame_and_reports_ms() {
        let mut p = playout();
        let mut f = [0i16; 160];
        p.enqueue(seg(1, true, 8000, 5)).unwrap();
        p.enqueue(seg(2, false, 320, 9)).unwrap();
        p.enqueue(seg(3, true, 320, 5)).unwrap();
        for _ in 0..10 {
            p.next_frame(&mut f);
        }
        assert!(p.is_interruptible_playing());
        assert_eq!(p.flush(), 2);
        // The very next frame is the non-interruptible segment.
        p.next_frame(&mut f);
        assert!(f.iter().all(|s| *s == 9));
        let evs = events(&mut p);
        assert!(evs.contains(&PlayoutEvent::Interrupted {
            id: SegmentId(1),
            played_ms: 200,
            total_ms: 1000
        }));
        assert!(evs.contains(&PlayoutEvent::Interrupted {
            id: SegmentId(3),
            played_ms: 0,
            total_ms: 40
        }));
        assert!(!p.is_interruptible_playing());
        assert_eq!(p.flush(), 0);
        assert_eq!(p.clear(), 1);
        assert_eq!(p.queued_ms(), 0);
        assert!(!p.is_active());
    }

    #[test]
    fn queue_bound_and_background_mix() {
        let mut p = playout();
        for i in 0..4 {
            p.enqueue(seg(i, true, 10, 1)).unwrap();
        }
        assert!(p.enqueue(seg(9, true, 10, 1)).is_err());
        p.clear();
        p.set_background(Some(Arc::from(vec![1000i16, -1000].as_slice())), 0.5);
        let mut f = [0i16; 160];
        assert_eq!(p.next_frame(&mut f), FrameKind::Idle);
        assert_eq!(&f[..4], &[500, -500, 500, -500]);
        p.enqueue(seg(1, true, 160, 32000)).unwrap();
        p.next_frame(&mut f);
        assert_eq!(&f[..2], &[32500, 31500]);
    }

    #[test]
    fn comfort_noise_when_idle() {
        let mut p = Playout::new(PlayoutConfig {
            rate_hz: 8000,
            frame_samples: 160,
            max_segments: 4,
            comfort_noise_peak: 30,
        })
        .unwrap();
        let mut f = [0i16; 160];
        assert_eq!(p.next_frame(&mut f), FrameKind::Idle);
        assert!(f.iter().all(|s| s.abs() <= 30));
        assert!(f.iter().filter(|s| **s != 0).count() > 100);
        p.enqueue(seg(1, true, 80, 7)).unwrap();
        p.next_frame(&mut f);
        assert!(f[..80].iter().all(|s| *s == 7));
        assert!(f[80..].iter().any(|s| *s != 7 && *s != 0));
    }
}
