//! Jitter buffer under a simulated bad network: random loss, reordering,
//! duplicates, delay spikes and sender clock skew, with a seeded generator so
//! failures reproduce; plus a never-panic property over arbitrary input.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use voicegate_media::jitter::{JitterBuffer, JitterConfig, PacketKind, Pop};
use voicegate_media::rtp::SeededRng;

struct Network {
    loss_pct: u64,
    dup_pct: u64,
    /// Uniform extra delay 0..=jitter_ms.
    jitter_ms: u64,
    /// Sender clock: microseconds per 20 ms frame (20_000 = exact).
    frame_us: u64,
}

#[derive(Debug, Default)]
struct Outcome {
    frames: u64,
    concealed: u64,
    out_of_order: u64,
    max_buffered_ms: u32,
    duplicates_played: u64,
}

/// Sends `n` packets through the network model and plays the buffer every 20 ms
/// of receiver time.
fn simulate(net: &Network, n: u16, seed: u64) -> (Outcome, voicegate_media::jitter::JitterStats) {
    let mut rng = SeededRng::new(seed);
    let t0 = Instant::now();
    let mut arrivals: Vec<(u64, u16)> = vec![];
    for seq in 0..n {
        let sent_us = seq as u64 * net.frame_us;
        if rng.next_u64() % 100 < net.loss_pct {
            continue;
        }
        let delay = 10_000 + rng.next_u64() % (net.jitter_ms * 1000 + 1);
        arrivals.push((sent_us + delay, seq));
        if rng.next_u64() % 100 < net.dup_pct {
            arrivals.push((sent_us + delay + rng.next_u64() % 30_000, seq));
        }
    }
    arrivals.sort();
    let mut jb = JitterBuffer::new(JitterConfig::default(), 8000);
    let mut out = Outcome::default();
    let mut last_played: Option<u16> = None;
    let mut i = 0;
    let end_us = n as u64 * net.frame_us + 500_000;
    let mut t_us = 0;
    while t_us < end_us {
        t_us += 20_000;
        while i < arrivals.len() && arrivals[i].0 <= t_us {
            let (at, seq) = arrivals[i];
            let payload = seq.to_be_bytes();
            jb.push(
                0x1234,
                seq,
                (seq as u32).wrapping_mul(160),
                &payload,
                PacketKind::Audio,
                t0 + Duration::from_micros(at),
            );
            i += 1;
        }
        match jb.pop(t0 + Duration::from_micros(t_us)) {
            Pop::Frame { payload, .. } => {
                let seq = u16::from_be_bytes([payload[0], payload[1]]);
                if let Some(prev) = last_played {
                    if seq == prev {
                        out.duplicates_played += 1;
                    } else if seq.wrapping_sub(prev) > 0x8000 {
                        out.out_of_order += 1;
                    }
                }
                last_played = Some(seq);
                out.frames += 1;
            }
            Pop::Lost { .. } => out.concealed += 1,
            Pop::Skip | Pop::Buffering => {}
        }
        out.max_buffered_ms = out.max_buffered_ms.max(jb.stats().buffered_ms);
    }
    (out, jb.stats())
}

#[test]
fn lossy_reordering_duplicating_network() {
    let net = Network {
        loss_pct: 5,
        dup_pct: 5,
        jitter_ms: 60,
        frame_us: 20_000,
    };
    for seed in 1..=5 {
        let (out, st) = simulate(&net, 3000, seed);
        // Played strictly in order, never a duplicate.
        assert_eq!(out.out_of_order, 0, "seed {seed}: {out:?} {st:?}");
        assert_eq!(out.duplicates_played, 0, "seed {seed}: {out:?}");
        assert!(st.duplicates > 50, "seed {seed}: {st:?}");
        // ~5 % loss is concealed; reordering within the delay target is not loss.
        assert!(out.frames >= 2700, "seed {seed}: {out:?} {st:?}");
        assert!(st.lost >= 100 && st.lost <= 250, "seed {seed}: {st:?}");
        // The target adapted to the jitter and stayed under the ceiling.
        assert!(
            st.target_delay_ms >= 40 && st.target_delay_ms <= 200,
            "seed {seed}: {st:?}"
        );
        assert!(out.max_buffered_ms <= 220, "seed {seed}: {out:?}");
    }
}

#[test]
fn clock_skew_both_ways_with_jitter() {
    for frame_us in [19_800u64, 20_200] {
        let net = Network {
            loss_pct: 1,
            dup_pct: 0,
            jitter_ms: 30,
            frame_us,
        };
        let (out, st) = simulate(&net, 6000, 9);
        assert_eq!(out.out_of_order, 0, "{frame_us}: {out:?}");
        assert!(out.max_buffered_ms <= 220, "{frame_us}: {out:?} {st:?}");
        if frame_us < 20_000 {
            // Fast sender: frames are dropped to hold the delay.
            assert!(st.dropped_for_latency > 0, "{st:?}");
        } else {
            // Slow sender: concealment is inserted, nothing is thrown away late.
            assert!(out.concealed > st.lost, "{out:?} {st:?}");
        }
    }
}

#[test]
fn quiet_network_has_low_delay() {
    let net = Network {
        loss_pct: 0,
        dup_pct: 0,
        jitter_ms: 2,
        frame_us: 20_000,
    };
    let (out, st) = simulate(&net, 1000, 3);
    assert_eq!(st.lost, 0);
    assert!(out.frames >= 995, "{out:?}");
    assert!(st.target_delay_ms <= 30, "{st:?}");
}

proptest! {
    #[test]
    fn arbitrary_input_never_panics(ops in proptest::collection::vec(
        (any::<u32>(), any::<u16>(), any::<u32>(), 0usize..1400, any::<bool>(), 0u64..200), 1..300)) {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default(), 8000);
        let mut t = 0u64;
        let payload = [0u8; 1400];
        for (ssrc, seq, ts, len, pop, dt) in ops {
            t += dt;
            let now = t0 + Duration::from_millis(t);
            jb.push(ssrc % 3, seq, ts, &payload[..len], PacketKind::Audio, now);
            if pop {
                let _ = jb.pop(now);
            }
            prop_assert!(jb.stats().buffered_ms <= 64 * 20 + 20);
        }
    }
}
