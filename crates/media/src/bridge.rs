//! Call bridging (B2BUA): the decoded audio of one call leg played out on another.
//!
//! Two sans-IO halves, both inside [`crate::pipeline::CallMedia`]:
//!
//! * [`BridgeTap`] on the sending leg: every decoded inbound 20 ms frame (all audio
//!   after the jitter buffer, decoding and concealment, silence included: not only
//!   VAD speech) is converted to the *receiving* leg's playout rate and queued for
//!   `CallMedia::poll_bridge`. Converting on the sending side means one resampling
//!   step at most (none between equal rates, e.g. PCMU to PCMU), instead of going
//!   through 16 kHz and back; it is a short polyphase FIR
//!   ([`LowDelayResampler`], about 1.5 ms at 8 kHz) rather than the FFT resampler
//!   of the STT path (about 10 ms).
//! * [`BridgeLane`] on the receiving leg: a small ring of 20 ms frames, mixed into
//!   each outbound frame on top of playout. It is its own non-interruptible lane:
//!   barge-in (`flush`) and `clear` act on the agent's playout queue only, so the
//!   bridged audio cannot be cut by the VAD of either leg.
//!
//! # Jitter margin
//!
//! The two legs tick on their own 20 ms intervals with an arbitrary phase between
//! them. Playing each frame at the first tick after it arrives would give the lowest
//! delay, but when the phase is near zero scheduling jitter puts arrivals on both
//! sides of the tick and the lane starves every other tick. So the lane starts (and
//! after an underrun restarts) only at a tick where the frames it needs have been
//! waiting at least `margin` (5 ms by default): from then on each tick takes the
//! next frame, which has aged the same amount. The added delay is `margin` plus the
//! phase, between `margin` and `margin + 20 ms`. An underrun (a frame later than the
//! margin allows) costs one 20 ms gap and restarts with 20 ms more slack; if more
//! than one tick of audio stays queued for [`DRAIN_AFTER_TICKS`] ticks (after a burst
//! from a leg catching up), one frame is dropped to bring the delay back down.
//!
//! Neither half allocates after construction.

use std::time::{Duration, Instant};

use crate::MediaError;
use crate::resample::LowDelayResampler;

/// Largest 20 ms frame (48 kHz).
pub const MAX_BRIDGE_FRAME: usize = 960;
/// Frames of 20 ms the lane holds (320 ms); more drops the oldest.
const LANE_SLOTS: usize = 16;
/// Frames the tap holds between drains: 120 ms packets times three catch-up ticks.
const TAP_SLOTS: usize = 18;
/// Ticks with more than one tick of audio queued before a frame is dropped.
pub const DRAIN_AFTER_TICKS: u32 = 10;

/// Identifies one `bridge_to` call: frames of an older bridge into the same leg are
/// refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BridgeSourceId(pub u64);

/// Counters of both halves of a bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BridgeStats {
    /// Frames handed out by the tap (sending leg).
    pub frames_out: u64,
    /// Frames the sending leg dropped (tap ring or hand-off channel full).
    pub frames_out_dropped: u64,
    /// Frames accepted by the lane (receiving leg).
    pub frames_in: u64,
    /// Frames the lane refused (unknown source, wrong length) or dropped (ring full,
    /// delay drained back down).
    pub frames_in_dropped: u64,
    /// Frames mixed into outbound audio.
    pub frames_played: u64,
    /// Ticks where the lane ran dry while playing.
    pub underruns: u64,
}

/// The sending half: converts decoded frames to the other leg's rate.
pub struct BridgeTap {
    resampler: LowDelayResampler,
    from_hz: u32,
    to_hz: u32,
    frame: usize,
    ring: Vec<i16>,
    head: usize,
    len: usize,
    dropped: u64,
}

impl std::fmt::Debug for BridgeTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeTap")
            .field("from_hz", &self.from_hz)
            .field("to_hz", &self.to_hz)
            .finish()
    }
}

impl BridgeTap {
    /// A tap taking 20 ms frames at `from_hz` (the sending leg's decoder rate) and
    /// producing 20 ms frames at `to_hz` (the receiving leg's playout rate).
    pub fn new(from_hz: u32, to_hz: u32) -> Result<Self, MediaError> {
        let resampler = LowDelayResampler::new_20ms(from_hz, to_hz)?;
        let frame = resampler.chunk_out();
        if frame > MAX_BRIDGE_FRAME {
            return Err(MediaError::Unsupported("bridge rate above 48 kHz"));
        }
        Ok(Self {
            resampler,
            from_hz,
            to_hz,
            frame,
            ring: vec![0; frame * TAP_SLOTS],
            head: 0,
            len: 0,
            dropped: 0,
        })
    }

    /// Rate of the frames taken in.
    pub fn input_rate_hz(&self) -> u32 {
        self.from_hz
    }

    /// Rate of the frames handed out.
    pub fn output_rate_hz(&self) -> u32 {
        self.to_hz
    }

    /// Frames dropped because nobody drained the tap.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Converts one 20 ms frame; when the ring is full the oldest frame goes.
    pub fn push(&mut self, pcm: &[i16]) {
        if self.len == TAP_SLOTS {
            self.head = (self.head + 1) % TAP_SLOTS;
            self.len -= 1;
            self.dropped += 1;
        }
        let slot = (self.head + self.len) % TAP_SLOTS;
        let out = &mut self.ring[slot * self.frame..(slot + 1) * self.frame];
        if self.resampler.process(pcm, out).is_err() {
            out.fill(0);
        }
        self.len += 1;
    }

    /// The oldest converted frame, if any.
    pub fn pop(&mut self) -> Option<&[i16]> {
        if self.len == 0 {
            return None;
        }
        let slot = self.head;
        self.head = (self.head + 1) % TAP_SLOTS;
        self.len -= 1;
        Some(&self.ring[slot * self.frame..(slot + 1) * self.frame])
    }
}

/// The receiving half: a jitter margin and a ring of 20 ms frames at the playout
/// rate (see module docs).
#[derive(Debug)]
pub struct BridgeLane {
    frame: usize,
    margin: Duration,
    source: Option<BridgeSourceId>,
    ring: Vec<i16>,
    arrivals: [Option<Instant>; LANE_SLOTS],
    head: usize,
    len: usize,
    playing: bool,
    excess_ticks: u32,
    stats: BridgeStats,
}

impl BridgeLane {
    /// A lane for 20 ms frames of `frame_samples` samples, started once frames
    /// waited `margin`.
    pub fn new(frame_samples: usize, margin: Duration) -> Self {
        Self {
            frame: frame_samples,
            margin,
            source: None,
            ring: vec![0; frame_samples * LANE_SLOTS],
            arrivals: [None; LANE_SLOTS],
            head: 0,
            len: 0,
            playing: false,
            excess_ticks: 0,
            stats: BridgeStats::default(),
        }
    }

    /// Samples per 20 ms frame the lane takes.
    pub fn frame_samples(&self) -> usize {
        self.frame
    }

    /// Accepts frames from `source` from now on (or none); queued frames go.
    pub fn set_source(&mut self, source: Option<BridgeSourceId>) {
        self.source = source;
        self.head = 0;
        self.len = 0;
        self.playing = false;
        self.excess_ticks = 0;
    }

    /// The source accepted.
    pub fn source(&self) -> Option<BridgeSourceId> {
        self.source
    }

    /// Whether bridged audio is being mixed in.
    pub fn is_playing(&self) -> bool {
        self.playing
    }

    /// Counters (the lane's part).
    pub fn stats(&self) -> BridgeStats {
        self.stats
    }

    /// Queues one 20 ms frame that arrived at `now`; frames from another source or
    /// of another length are refused.
    pub fn push(&mut self, source: BridgeSourceId, pcm: &[i16], now: Instant) -> bool {
        if self.source != Some(source) || pcm.len() != self.frame {
            self.stats.frames_in_dropped += 1;
            return false;
        }
        if self.len == LANE_SLOTS {
            self.head = (self.head + 1) % LANE_SLOTS;
            self.len -= 1;
            self.stats.frames_in_dropped += 1;
        }
        let slot = (self.head + self.len) % LANE_SLOTS;
        self.ring[slot * self.frame..(slot + 1) * self.frame].copy_from_slice(pcm);
        self.arrivals[slot] = Some(now);
        self.len += 1;
        self.stats.frames_in += 1;
        true
    }

    fn drop_oldest(&mut self) {
        self.head = (self.head + 1) % LANE_SLOTS;
        self.len -= 1;
        self.stats.frames_in_dropped += 1;
    }

    /// Mixes one tick of bridged audio (`out.len()` a multiple of the frame) into
    /// `out`, saturating. Returns whether any bridged audio went in.
    pub fn mix_into(&mut self, out: &mut [i16], now: Instant) -> bool {
        let frames = out.len() / self.frame.max(1);
        self.take_frames(frames, Some(out), now)
    }

    /// Consumes one tick of `frames` 20 ms frames without playing them (the tick
    /// went to something else, e.g. a DTMF event), so the lane keeps its timing.
    pub fn skip(&mut self, frames: usize, now: Instant) {
        let _ = self.take_frames(frames, None, now);
    }

    fn take_frames(&mut self, frames: usize, mut out: Option<&mut [i16]>, now: Instant) -> bool {
        if frames == 0 {
            return false;
        }
        if !self.playing {
            // Start once the last frame this tick needs has waited the margin.
            if self.len < frames {
                return false;
            }
            let last = (self.head + frames - 1) % LANE_SLOTS;
            match self.arrivals[last] {
                Some(at) if now.saturating_duration_since(at) >= self.margin => self.playing = true,
                _ => return false,
            }
        }
        let mut mixed = false;
        for i in 0..frames {
            if self.len == 0 {
                self.stats.underruns += 1;
                self.playing = false;
                self.excess_ticks = 0;
                return mixed;
            }
            let slot = self.head;
            if let Some(out) = out.as_deref_mut() {
                let dst = &mut out[i * self.frame..(i + 1) * self.frame];
                let src = &self.ring[slot * self.frame..(slot + 1) * self.frame];
                for (d, s) in dst.iter_mut().zip(src) {
                    *d = d.saturating_add(*s);
                }
                self.stats.frames_played += 1;
                mixed = true;
            }
            self.head = (self.head + 1) % LANE_SLOTS;
            self.len -= 1;
        }
        // More than one tick still queued: a burst raised the delay. Drain it back
        // down if it lasts.
        if self.len > frames {
            self.excess_ticks += 1;
            if self.excess_ticks >= DRAIN_AFTER_TICKS {
                self.drop_oldest();
                self.excess_ticks = 0;
            }
        } else {
            self.excess_ticks = 0;
        }
        mixed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: BridgeSourceId = BridgeSourceId(7);

    fn lane() -> BridgeLane {
        let mut l = BridgeLane::new(160, Duration::from_millis(5));
        l.set_source(Some(SRC));
        l
    }

    #[test]
    fn starts_after_margin_then_plays_every_tick() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let mut l = lane();
        let mut out = [0i16; 160];
        // Frames arrive at 20k + 1 ms, ticks at 20k + 3 ms: 2 ms is under the
        // margin, so the first frame waits for the next tick (22 ms later).
        assert!(l.push(SRC, &[100; 160], ms(1)));
        assert!(!l.mix_into(&mut out, ms(3)));
        assert!(out.iter().all(|s| *s == 0));
        for k in 1..50u64 {
            l.push(SRC, &[100 + k as i16; 160], ms(20 * k + 1));
            out.fill(1);
            assert!(l.mix_into(&mut out, ms(20 * k + 3)), "tick {k}");
            assert!(out.iter().all(|s| *s == 100 + k as i16), "tick {k}");
        }
        let st = l.stats();
        assert_eq!((st.underruns, st.frames_in_dropped), (0, 0));
        assert_eq!(st.frames_played, 49);
    }

    #[test]
    fn jitter_within_the_margin_does_not_starve() {
        let t0 = Instant::now();
        let us = |u: u64| t0 + Duration::from_micros(u);
        let mut l = lane();
        let mut out = [0i16; 160];
        // Ticks at 20k ms; frames nominally at the same instant, up to 4 ms late or
        // 4 ms early: without a margin, every other tick would starve.
        let mut played = 0;
        for k in 0..200u64 {
            let jitter = if k % 2 == 0 { 4000 } else { 0 };
            l.push(SRC, &[1; 160], us(20_000 * k + 16_000 + jitter));
            if l.mix_into(&mut out, us(20_000 * (k + 1))) {
                played += 1;
            }
        }
        assert_eq!(l.stats().underruns, 0);
        assert!(played >= 198, "{played}");
    }

    #[test]
    fn underrun_restarts_and_bursts_drain() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let mut l = lane();
        let mut out = [0i16; 160];
        l.push(SRC, &[1; 160], ms(0));
        assert!(l.mix_into(&mut out, ms(10)));
        // Nothing arrived for the next tick.
        assert!(!l.mix_into(&mut out, ms(30)));
        assert_eq!(l.stats().underruns, 1);
        assert!(!l.is_playing());
        // A burst of four frames, then one per tick: the excess drains.
        for _ in 0..4 {
            l.push(SRC, &[1; 160], ms(35));
        }
        for k in 0..30u64 {
            assert!(l.mix_into(&mut out, ms(50 + 20 * k)));
            l.push(SRC, &[1; 160], ms(55 + 20 * k));
        }
        assert!(l.stats().frames_in_dropped >= 2, "{:?}", l.stats());
        assert!(l.len <= 2, "{}", l.len);
    }

    #[test]
    fn packet_times_other_than_20_ms_on_either_leg() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        // Receiving leg at 40 ms: two frames per tick, one arriving every 20 ms.
        let mut l = lane();
        let mut out = [0i16; 320];
        let mut played = 0;
        for k in 0..100u64 {
            l.push(SRC, &[1; 160], ms(20 * k + 3));
            if k % 2 == 1 && l.mix_into(&mut out, ms(20 * k + 13)) {
                played += 1;
            }
        }
        assert_eq!(l.stats().underruns, 0, "{:?}", l.stats());
        assert!(played >= 48, "{played}");
        // Sending leg at 40 ms: two frames at once every 40 ms, ticks every 20.
        let mut l = lane();
        let mut out = [0i16; 160];
        for k in 0..100u64 {
            if k % 2 == 0 {
                l.push(SRC, &[1; 160], ms(20 * k + 3));
                l.push(SRC, &[1; 160], ms(20 * k + 3));
            }
            l.mix_into(&mut out, ms(20 * k + 13));
        }
        let st = l.stats();
        assert_eq!((st.underruns, st.frames_in_dropped), (0, 0), "{st:?}");
        assert!(st.frames_played >= 98, "{st:?}");
    }

    #[test]
    fn other_sources_and_lengths_are_refused() {
        let now = Instant::now();
        let mut l = lane();
        assert!(!l.push(BridgeSourceId(8), &[1; 160], now));
        assert!(!l.push(SRC, &[1; 80], now));
        l.set_source(None);
        assert!(!l.push(SRC, &[1; 160], now));
        assert_eq!(l.stats().frames_in_dropped, 3);
    }

    #[test]
    fn tap_converts_rates_and_bounds_its_ring() {
        let mut t = BridgeTap::new(8000, 16000).unwrap();
        for _ in 0..TAP_SLOTS + 2 {
            t.push(&[0; 160]);
        }
        assert_eq!(t.dropped(), 2);
        assert_eq!(t.pop().unwrap().len(), 320);
        let mut same = BridgeTap::new(8000, 8000).unwrap();
        same.push(&[5; 160]);
        assert_eq!(same.pop().unwrap(), &[5; 160][..]);
        assert!(same.pop().is_none());
    }
}
