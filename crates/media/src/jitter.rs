//! Adaptive jitter buffer (sans-IO): reorder, duplicate drop, loss detection for
//! concealment, late-packet accounting, SSRC changes and timestamp jumps.
//!
//! # Design
//!
//! Looked at: baresip's `jbuf` / `aubuf` (EMA of RFC 3550 A.8 transit differences
//! with a fast rise and slow fall; grow by holding back a frame, shrink by dropping
//! one), pjmedia's `jbuf` (burst level, progressive discard, prefetch after an
//! empty buffer) and the RFC 3550 A.8 estimator. This buffer combines them:
//!
//! * Packets live in a fixed ring of slots indexed by extended sequence number
//!   (no allocation after construction). Playout is **sequence driven**: a pop takes
//!   the next sequence number, so silence suppression and timestamp jumps with a
//!   contiguous sequence play without spurious loss; DTMF / comfort-noise packets
//!   that share the sequence space are stored as "skip" slots.
//! * The delay target is `frame + 2 * J`, clamped to `[floor, ceiling]` (20 ms /
//!   200 ms by default), where `J` is an EMA of `|D(i-1,i)|` (RFC 3550 A.8) that rises
//!   with gain 1/4 and decays with gain 1/128.
//! * Growing: when the next packet has not arrived yet (underrun) the pop returns
//!   [`Pop::Lost`] *without* consuming the sequence number, i.e. a concealment frame
//!   is inserted and the buffer gets one frame deeper. A slower sender clock is
//!   absorbed the same way. After `rebuffer_ms` of continuous underrun (hold, DTX,
//!   end of talk) the buffer goes back to prefetching.
//! * Shrinking: when the buffered span stays above `target + 2 frames` for 5 pops,
//!   the oldest frame is dropped (a faster sender clock is absorbed this way); above
//!   the ceiling, frames are dropped at once.
//! * A missing packet with later ones already buffered is lost: [`Pop::Lost`]
//!   consumes the sequence number and offers the following payload for in-band FEC.
//!   If it shows up afterwards it is counted as late and dropped.
//! * An SSRC change resets the buffer (packets of the previous SSRC are dropped
//!   afterwards); a sequence jump beyond the ring resynchronises.

use std::time::{Duration, Instant};

/// Jitter buffer configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JitterConfig {
    /// Minimum delay target (floor).
    pub min_delay_ms: u32,
    /// Maximum delay target (ceiling); more than this is dropped.
    pub max_delay_ms: u32,
    /// Continuous underrun after which the buffer prefetches again.
    pub rebuffer_ms: u32,
    /// Number of packet slots in the ring.
    pub capacity: usize,
    /// Largest payload stored, in bytes.
    pub max_payload: usize,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            min_delay_ms: 20,
            max_delay_ms: 200,
            rebuffer_ms: 200,
            capacity: 64,
            max_payload: 1276,
        }
    }
}

/// Kind of a stored packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// Codec audio.
    Audio,
    /// A packet that occupies a sequence number but carries no codec audio
    /// (telephone-event, comfort noise): played as one frame of silence.
    Skip,
}

/// Result of [`JitterBuffer::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Stored.
    Accepted,
    /// Same sequence number already buffered: dropped.
    Duplicate,
    /// Arrived after its playout time: dropped.
    Late,
    /// Larger than `max_payload`: dropped.
    TooLarge,
    /// From a previous SSRC after a change: dropped.
    StaleSsrc,
}

/// Result of [`JitterBuffer::pop`].
#[derive(Debug, PartialEq, Eq)]
pub enum Pop<'a> {
    /// Prefetching (not started or rebuffering): produce nothing.
    Buffering,
    /// The next packet's payload.
    Frame {
        /// Codec payload.
        payload: &'a [u8],
        /// RTP timestamp.
        timestamp: u32,
    },
    /// A sequence number carrying no audio (DTMF / CN): play silence.
    Skip,
    /// The next packet is missing: conceal one frame. `next` is the following
    /// packet's payload when already buffered (for Opus in-band FEC).
    Lost {
        /// Payload of the packet after the lost one, if buffered.
        next: Option<&'a [u8]>,
    },
}

/// Counters of the jitter buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JitterStats {
    /// Packets stored.
    pub accepted: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Late packets dropped.
    pub late: u64,
    /// Packets too large for a slot.
    pub too_large: u64,
    /// Packets declared lost (later packets were present).
    pub lost: u64,
    /// Concealment frames inserted because the buffer ran dry.
    pub underruns: u64,
    /// Concealment frames inserted to grow the buffer towards its target.
    pub inserted: u64,
    /// Frames dropped to bring the delay back to target (or under the ceiling).
    pub dropped_for_latency: u64,
    /// SSRC changes seen.
    pub ssrc_changes: u64,
    /// Resynchronisations after sequence jumps.
    pub resyncs: u64,
    /// Timestamp discontinuities (the jitter estimator was re-anchored).
    pub timestamp_jumps: u64,
    /// Packets from a previous SSRC dropped.
    pub stale_ssrc: u64,
    /// Current delay target in ms.
    pub target_delay_ms: u32,
    /// Currently buffered span in ms.
    pub buffered_ms: u32,
    /// Smoothed jitter estimate used for the target, in ms.
    pub jitter_ms: f32,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    used: bool,
    seq: u64,
    timestamp: u32,
    len: u16,
    skip: bool,
}

/// The adaptive jitter buffer of one received stream (see module docs).
#[derive(Debug)]
pub struct JitterBuffer {
    cfg: JitterConfig,
    clock_rate: u32,
    slots: Vec<Slot>,
    data: Vec<u8>,
    ssrc: Option<u32>,
    previous_ssrc: Option<u32>,
    started: bool,
    /// Next extended sequence number to play; None until the first packet.
    next_seq: Option<u64>,
    highest_seq: u64,
    last_ts: Option<(u64, u32)>,
    frame_ts: u32,
    epoch: Option<Instant>,
    last_transit: Option<i64>,
    jitter_ts: f64,
    high_pops: u32,
    low_pops: u32,
    underrun_pops: u32,
    waited_for: Option<u64>,
    stats: JitterStats,
}

impl JitterBuffer {
    /// A buffer for a stream with the given RTP clock rate.
    pub fn new(cfg: JitterConfig, clock_rate: u32) -> Self {
        let cap = cfg.capacity.max(4);
        let cfg = JitterConfig {
            capacity: cap,
            min_delay_ms: cfg.min_delay_ms.min(cfg.max_delay_ms),
            ..cfg
        };
        let mut jb = Self {
            cfg,
            clock_rate,
            slots: vec![Slot::default(); cap],
            data: vec![0; cap * cfg.max_payload],
            ssrc: None,
            previous_ssrc: None,
            started: false,
            next_seq: None,
            highest_seq: 0,
            last_ts: None,
            frame_ts: clock_rate / 50,
            epoch: None,
            last_transit: None,
            jitter_ts: 0.0,
            high_pops: 0,
            low_pops: 0,
            underrun_pops: 0,
            waited_for: None,
            stats: JitterStats::default(),
        };
        jb.stats.target_delay_ms = jb.target_ms();
        jb
    }

    /// Counters and current delay figures.
    pub fn stats(&self) -> JitterStats {
        let mut s = self.stats;
        s.target_delay_ms = self.target_ms();
        s.buffered_ms = self.buffered_ms();
        s.jitter_ms = (self.jitter_ts * 1000.0 / self.clock_rate as f64) as f32;
        s
    }

    /// Whether the buffer is playing (not prefetching).
    pub fn is_playing(&self) -> bool {
        self.started
    }

    /// Duration of one packet in ms as learned from the stream (default 20).
    pub fn frame_ms(&self) -> u32 {
        (self.frame_ts as u64 * 1000 / self.clock_rate as u64) as u32
    }

    /// Duration of one packet in RTP clock units as learned from the stream.
    pub fn frame_rtp_units(&self) -> u32 {
        self.frame_ts
    }

    fn target_ms(&self) -> u32 {
        let frame_ms = self.frame_ms() as f64;
        let jit_ms = self.jitter_ts * 1000.0 / self.clock_rate as f64;
        let t = (frame_ms + 2.0 * jit_ms).ceil() as u32;
        t.clamp(self.cfg.min_delay_ms, self.cfg.max_delay_ms)
    }

    fn buffered_ms(&self) -> u32 {
        match self.next_seq {
            Some(next) if self.highest_seq + 1 > next => {
                ((self.highest_seq + 1 - next) * self.frame_ms() as u64) as u32
            }
            _ => 0,
        }
    }

    fn reset(&mut self) {
        for s in self.slots.iter_mut() {
            s.used = false;
        }
        self.started = false;
        self.next_seq = None;
        self.last_ts = None;
        self.last_transit = None;
        self.high_pops = 0;
        self.underrun_pops = 0;
    }

    fn extend(&self, seq: u16) -> Option<u64> {
        let Some(next) = self.next_seq else {
            return Some(seq as u64 + (1 << 16));
        };
        let reference = self.highest_seq.max(next);
        let diff = seq.wrapping_sub(reference as u16) as i16 as i64;
        let ext = reference as i64 + diff;
        (ext >= 0).then_some(ext as u64)
    }

    /// Stores a received packet (the caller has parsed and latched it).
    pub fn push(
        &mut self,
        ssrc: u32,
        seq: u16,
        timestamp: u32,
        payload: &[u8],
        kind: PacketKind,
        now: Instant,
    ) -> Push {
        if payload.len() > self.cfg.max_payload {
            self.stats.too_large += 1;
            return Push::TooLarge;
        }
        match self.ssrc {
            Some(s) if s == ssrc => {}
            Some(s) => {
                if self.previous_ssrc == Some(ssrc) {
                    self.stats.stale_ssrc += 1;
                    return Push::StaleSsrc;
                }
                self.stats.ssrc_changes += 1;
                self.previous_ssrc = Some(s);
                self.ssrc = Some(ssrc);
                self.reset();
            }
            None => self.ssrc = Some(ssrc),
        }
        let Some(mut ext) = self.extend(seq) else {
            self.stats.late += 1;
            return Push::Late;
        };
        let cap = self.slots.len() as u64;
        match self.next_seq {
            None => {
                self.next_seq = Some(ext);
                self.highest_seq = ext;
            }
            Some(next) => {
                if ext < next {
                    if !self.started && next - ext < cap && self.highest_seq - ext < cap {
                        // Reordered before playout started: start earlier.
                        self.next_seq = Some(ext);
                    } else if next - ext > cap * 4 {
                        // Far behind: the sender restarted its sequence.
                        self.stats.resyncs += 1;
                        self.reset();
                        ext = seq as u64 + (1 << 16);
                        self.next_seq = Some(ext);
                        self.highest_seq = ext;
                    } else {
                        self.stats.late += 1;
                        return Push::Late;
                    }
                } else if ext >= next + cap {
                    if ext - next > cap * 4 {
                        self.stats.resyncs += 1;
                        self.reset();
                        ext = seq as u64 + (1 << 16);
                        self.next_seq = Some(ext);
                        self.highest_seq = ext;
                    } else {
                        // Make room: drop the oldest span.
                        let new_next = ext + 1 - cap;
                        for s in next..new_next {
                            let slot = &mut self.slots[(s % cap) as usize];
                            if slot.used && slot.seq == s {
                                slot.used = false;
                            }
                            self.stats.dropped_for_latency += 1;
                        }
                        self.next_seq = Some(new_next);
                    }
                }
            }
        }
        let idx = (ext % cap) as usize;
        let slot = self.slots[idx];
        if slot.used && slot.seq == ext {
            self.stats.duplicates += 1;
            return Push::Duplicate;
        }
        if ext > self.highest_seq {
            self.highest_seq = ext;
        }
        let off = idx * self.cfg.max_payload;
        self.data[off..off + payload.len()].copy_from_slice(payload);
        self.slots[idx] = Slot {
            used: true,
            seq: ext,
            timestamp,
            len: payload.len() as u16,
            skip: kind == PacketKind::Skip,
        };
        self.stats.accepted += 1;
        self.observe_timing(ext, timestamp, kind, now);
        Push::Accepted
    }

    fn observe_timing(&mut self, ext: u64, timestamp: u32, kind: PacketKind, now: Instant) {
        let epoch = *self.epoch.get_or_insert(now);
        let arrival = (now.saturating_duration_since(epoch).as_micros() as u64
            * self.clock_rate as u64
            / 1_000_000) as i64;
        // Learn the packet duration from consecutive audio packets.
        if kind == PacketKind::Audio {
            if let Some((prev_seq, prev_ts)) = self.last_ts
                && ext == prev_seq + 1
            {
                let d = timestamp.wrapping_sub(prev_ts);
                let lo = self.clock_rate / 100; // 10 ms
                let hi = self.clock_rate * 3 / 25; // 120 ms
                if (lo..=hi).contains(&d) {
                    self.frame_ts = d;
                }
            }
            self.last_ts = Some((ext, timestamp));
        }
        // Telephone-event packets keep the event's start timestamp for its whole
        // duration (RFC 4733 2.5.1.3): their transit is not a jitter sample.
        if kind != PacketKind::Audio {
            return;
        }
        let transit = arrival - timestamp as i64;
        if let Some(prev) = self.last_transit {
            let d = (transit - prev).abs() as f64;
            if d > self.clock_rate as f64 {
                // More than 1 s of disagreement: a timestamp jump, not jitter.
                self.stats.timestamp_jumps += 1;
            } else {
                let gain = if d > self.jitter_ts {
                    0.25
                } else {
                    1.0 / 128.0
                };
                self.jitter_ts += (d - self.jitter_ts) * gain;
            }
        }
        self.last_transit = Some(transit);
    }

    fn take(&mut self, seq: u64) -> Option<Slot> {
        let cap = self.slots.len() as u64;
        let slot = &mut self.slots[(seq % cap) as usize];
        if slot.used && slot.seq == seq {
            slot.used = false;
            Some(*slot)
        } else {
            None
        }
    }

    fn peek(&self, seq: u64) -> Option<&[u8]> {
        let cap = self.slots.len() as u64;
        let idx = (seq % cap) as usize;
        let slot = &self.slots[idx];
        if slot.used && slot.seq == seq && !slot.skip {
            let off = idx * self.cfg.max_payload;
            Some(&self.data[off..off + slot.len as usize])
        } else {
            None
        }
    }

    /// Takes the next frame for playout; call once per packet duration of audio
    /// needed. `now` is accepted for symmetry with other cores.
    pub fn pop(&mut self, _now: Instant) -> Pop<'_> {
        let Some(mut next) = self.next_seq else {
            return Pop::Buffering;
        };
        let frame_ms = self.frame_ms().max(1);
        if !self.started {
            let have_any = self.highest_seq >= next;
            if !have_any || self.buffered_ms() < self.target_ms() {
                return Pop::Buffering;
            }
            // Start at the first buffered packet.
            while self.peek_slot(next).is_none() && next < self.highest_seq {
                next += 1;
            }
            self.next_seq = Some(next);
            self.started = true;
            self.underrun_pops = 0;
        }
        // Latency control.
        let target = self.target_ms();
        while self.buffered_ms() > self.cfg.max_delay_ms + frame_ms {
            self.drop_oldest();
        }
        if self.buffered_ms() > target + 2 * frame_ms {
            self.high_pops += 1;
            if self.high_pops >= 5 {
                self.drop_oldest();
                self.high_pops = 0;
            }
        } else {
            self.high_pops = 0;
        }
        let next = self.next_seq.unwrap_or(next);
        // Growing: buffered below target for a while -> hold back one frame.
        if self.buffered_ms() + frame_ms <= target {
            self.low_pops += 1;
            if self.low_pops >= 2 {
                self.low_pops = 0;
                self.stats.inserted += 1;
                return Pop::Lost { next: None };
            }
        } else {
            self.low_pops = 0;
        }
        if let Some(slot) = self.take(next) {
            self.next_seq = Some(next + 1);
            self.underrun_pops = 0;
            if slot.skip {
                return Pop::Skip;
            }
            let off = (next % self.slots.len() as u64) as usize * self.cfg.max_payload;
            return Pop::Frame {
                payload: &self.data[off..off + slot.len as usize],
                timestamp: slot.timestamp,
            };
        }
        if self.highest_seq > next {
            // A gap with later packets present: give a reordered packet one frame
            // of grace (insert concealment, keep `next`) unless enough is buffered.
            if self.waited_for == Some(next) || self.buffered_ms() >= target + 2 * frame_ms {
                self.next_seq = Some(next + 1);
                self.stats.lost += 1;
                self.underrun_pops = 0;
                return Pop::Lost {
                    next: self.peek(next + 1),
                };
            }
            self.waited_for = Some(next);
            self.stats.underruns += 1;
            return Pop::Lost { next: None };
        }
        // Underrun: insert a concealment frame without consuming `next`.
        self.underrun_pops += 1;
        if self.underrun_pops * frame_ms > self.cfg.rebuffer_ms {
            self.started = false;
            return Pop::Buffering;
        }
        self.stats.underruns += 1;
        Pop::Lost { next: None }
    }

    fn peek_slot(&self, seq: u64) -> Option<Slot> {
        let s = self.slots[(seq % self.slots.len() as u64) as usize];
        (s.used && s.seq == seq).then_some(s)
    }

    fn drop_oldest(&mut self) {
        if let Some(next) = self.next_seq {
            let _ = self.take(next);
            self.next_seq = Some(next + 1);
            self.stats.dropped_for_latency += 1;
        }
    }

    /// Time until the buffered span would play out (for diagnostics).
    pub fn buffered(&self) -> Duration {
        Duration::from_millis(self.buffered_ms() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(seq: u16) -> [u8; 160] {
        [seq as u8; 160]
    }

    /// Feeds packets (seq, arrival ms) and pops every 20 ms; returns the sequence of
    /// outcomes as compact tags: Some(seq byte) for frames, None for lost/skip.
    fn run(
        arrivals: &[(u16, u64)],
        pops: usize,
        cfg: JitterConfig,
    ) -> (Vec<Option<u8>>, JitterStats) {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg, 8000);
        let mut out = Vec::new();
        let mut sorted: Vec<_> = arrivals.to_vec();
        sorted.sort_by_key(|a| a.1);
        let mut i = 0;
        for k in 0..pops as u64 {
            let now_ms = k * 20 + 10;
            while i < sorted.len() && sorted[i].1 <= now_ms {
                let (seq, at) = sorted[i];
                jb.push(
                    7,
                    seq,
                    seq as u32 * 160,
                    &payload(seq),
                    PacketKind::Audio,
                    t0 + Duration::from_millis(at),
                );
                i += 1;
            }
            match jb.pop(t0 + Duration::from_millis(now_ms)) {
                Pop::Frame { payload, .. } => out.push(Some(payload[0])),
                Pop::Lost { .. } | Pop::Skip => out.push(None),
                Pop::Buffering => {}
            }
        }
        (out, jb.stats())
    }

    #[test]
    fn in_order_plays_everything() {
        let arr: Vec<_> = (0..50u16).map(|s| (s, s as u64 * 20)).collect();
        let (out, st) = run(&arr, 60, JitterConfig::default());
        let frames: Vec<u8> = out.iter().flatten().copied().collect();
        assert_eq!(frames, (0..50u8).collect::<Vec<_>>());
        assert_eq!(st.lost, 0);
        assert_eq!(st.target_delay_ms, 20);
    }

    #[test]
    fn reorder_and_duplicates() {
        let mut arr: Vec<_> = (0..40u16).map(|s| (s, s as u64 * 20)).collect();
        // Swap 10 and 11 in arrival, duplicate 20 three times.
        arr[10].1 = 11 * 20 + 1;
        arr[11].1 = 10 * 20;
        arr.push((20, 20 * 20 + 2));
        arr.push((20, 20 * 20 + 5));
        let (out, st) = run(&arr, 50, JitterConfig::default());
        let frames: Vec<u8> = out.iter().flatten().copied().collect();
        assert_eq!(frames, (0..40u8).collect::<Vec<_>>());
        assert_eq!(st.duplicates, 2);
    }

    #[test]
    fn loss_is_reported_and_late_counted() {
        let mut arr: Vec<_> = (0..40u16)
            .filter(|s| *s != 15 && *s != 16)
            .map(|s| (s, s as u64 * 20))
            .collect();
        arr.push((16, 40 * 20)); // 16 arrives way too late
        let (out, st) = run(&arr, 50, JitterConfig::default());
        let frames: Vec<u8> = out.iter().flatten().copied().collect();
        let expect: Vec<u8> = (0..40u8).filter(|s| *s != 15 && *s != 16).collect();
        assert_eq!(frames, expect);
        assert_eq!(st.lost, 2);
        assert_eq!(st.late, 1);
    }

    #[test]
    fn jitter_grows_target_within_ceiling() {
        // +-30 ms jitter pattern.
        let arr: Vec<_> = (0..300u16)
            .map(|s| (s, s as u64 * 20 + [0u64, 30, 5, 40, 10][s as usize % 5]))
            .collect();
        let (out, st) = run(&arr, 320, JitterConfig::default());
        assert!(
            st.target_delay_ms > 20 && st.target_delay_ms <= 200,
            "{st:?}"
        );
        let frames = out.iter().flatten().count();
        assert!(frames >= 290, "frames {frames} {st:?}");
    }

    #[test]
    fn clock_skew_fast_sender_stays_bounded() {
        // Sender 1 % fast: a packet every 19.8 ms for 60 s.
        let arr: Vec<_> = (0..3000u16).map(|s| (s, s as u64 * 198 / 10)).collect();
        let (_out, st) = run(&arr, 3000, JitterConfig::default());
        assert!(st.dropped_for_latency > 10, "{st:?}");
        assert!(st.buffered_ms <= 200, "{st:?}");
    }

    #[test]
    fn clock_skew_slow_sender_inserts_concealment() {
        // Sender 1 % slow.
        let arr: Vec<_> = (0..2000u16).map(|s| (s, s as u64 * 202 / 10)).collect();
        let (out, st) = run(&arr, 2000, JitterConfig::default());
        let frames: Vec<u8> = out.iter().flatten().copied().collect();
        // No packet is thrown away: every one is played, in order.
        assert_eq!(frames.len(), arr.len().min(frames.len()));
        assert!(frames.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
        assert!(st.underruns > 5, "{st:?}");
        assert_eq!(st.late, 0);
    }

    #[test]
    fn ssrc_change_resets_and_stale_dropped() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default(), 8000);
        jb.push(1, 100, 0, &[1], PacketKind::Audio, t0);
        assert!(matches!(jb.pop(t0), Pop::Frame { .. }));
        assert_eq!(
            jb.push(2, 5000, 999, &[2], PacketKind::Audio, t0),
            Push::Accepted
        );
        assert!(matches!(jb.pop(t0), Pop::Frame { payload: [2], .. }));
        assert_eq!(
            jb.push(1, 101, 160, &[1], PacketKind::Audio, t0),
            Push::StaleSsrc
        );
        assert_eq!(jb.stats().ssrc_changes, 1);
    }

    #[test]
    fn sequence_jump_resyncs_and_wraps() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default(), 8000);
        for (i, seq) in [65534u16, 65535, 0, 1].iter().enumerate() {
            let at = t0 + Duration::from_millis(i as u64 * 20);
            jb.push(
                1,
                *seq,
                i as u32 * 160,
                &[*seq as u8],
                PacketKind::Audio,
                at,
            );
        }
        let mut got = vec![];
        for _ in 0..4 {
            if let Pop::Frame { payload, .. } = jb.pop(t0) {
                got.push(payload[0]);
            }
        }
        assert_eq!(got, vec![254, 255, 0, 1]);
        jb.push(
            1,
            30000,
            9_000_000,
            &[9],
            PacketKind::Audio,
            t0 + Duration::from_millis(80),
        );
        assert_eq!(jb.stats().resyncs, 1);
        assert!(matches!(jb.pop(t0), Pop::Frame { payload: [9], .. }));
        assert_eq!(jb.stats().timestamp_jumps, 0);
    }

    #[test]
    fn timestamp_jump_with_contiguous_seq_is_not_loss() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default(), 8000);
        jb.push(1, 1, 0, &[1], PacketKind::Audio, t0);
        jb.push(
            1,
            2,
            80_000_000,
            &[2],
            PacketKind::Audio,
            t0 + Duration::from_millis(20),
        );
        assert!(matches!(jb.pop(t0), Pop::Frame { payload: [1], .. }));
        assert!(matches!(jb.pop(t0), Pop::Frame { payload: [2], .. }));
        assert_eq!(jb.stats().lost, 0);
        assert_eq!(jb.stats().timestamp_jumps, 1);
    }

    #[test]
    fn skip_slots_fill_sequence_gaps() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default(), 8000);
        jb.push(1, 1, 0, &[1], PacketKind::Audio, t0);
        jb.push(1, 2, 160, &[0, 0, 0, 0], PacketKind::Skip, t0);
        jb.push(1, 3, 320, &[3], PacketKind::Audio, t0);
        assert!(matches!(jb.pop(t0), Pop::Frame { .. }));
        assert_eq!(jb.pop(t0), Pop::Skip);
        assert!(matches!(jb.pop(t0), Pop::Frame { payload: [3], .. }));
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn lost_offers_next_payload_for_fec() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default(), 8000);
        jb.push(1, 1, 0, &[1], PacketKind::Audio, t0);
        jb.push(1, 3, 320, &[3], PacketKind::Audio, t0);
        assert!(matches!(jb.pop(t0), Pop::Frame { .. }));
        // One frame of grace for a reordered packet, then the loss with FEC data.
        assert_eq!(jb.pop(t0), Pop::Lost { next: None });
        assert_eq!(
            jb.pop(t0),
            Pop::Lost {
                next: Some(&[3][..])
            }
        );
        assert!(matches!(jb.pop(t0), Pop::Frame { payload: [3], .. }));
    }

    #[test]
    fn oversized_and_burst_do_not_panic() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default(), 8000);
        assert_eq!(
            jb.push(1, 1, 0, &[0; 2000], PacketKind::Audio, t0),
            Push::TooLarge
        );
        // A burst of 200 packets at once (network stall) keeps the delay capped.
        for s in 0..200u16 {
            jb.push(1, s, s as u32 * 160, &[s as u8], PacketKind::Audio, t0);
        }
        let _ = jb.pop(t0);
        assert!(jb.stats().buffered_ms <= 220, "{:?}", jb.stats());
    }
}
