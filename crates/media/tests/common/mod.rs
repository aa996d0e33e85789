//! Shared test helpers: a speech-like signal and a two-party harness that wires
//! two `CallMedia` cores back to back with fake time.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use voicegate_media::pipeline::{CallMedia, MediaConfig, MediaEvent, TransmitKind};
use voicegate_media::{Codec, NegotiatedParams};

/// Voiced-speech-like signal at `rate` Hz: a ~150 Hz pulse train through three
/// formant resonances with a syllable envelope. Sample `n` of the stream.
pub fn voiced_sample(n: usize, rate: u32) -> i16 {
    let t = n as f32 / rate as f32;
    let f0 = 140.0 + 20.0 * (2.0 * std::f32::consts::PI * 3.0 * t).sin();
    let mut v = 0.0;
    for h in 1..30 {
        let f = f0 * h as f32;
        if f > (rate as f32 / 2.0).min(7000.0) {
            break;
        }
        let formant = |c: f32, bw: f32| 1.0 / (1.0 + ((f - c) / bw).powi(2));
        let amp =
            formant(700.0, 150.0) + 0.6 * formant(1200.0, 200.0) + 0.3 * formant(2500.0, 300.0);
        v += amp * (2.0 * std::f32::consts::PI * f * t).sin();
    }
    let env = 0.6 + 0.4 * (2.0 * std::f32::consts::PI * 4.0 * t).sin().abs();
    (v * env * 4000.0).clamp(-32000.0, 32000.0) as i16
}

/// `ms` of voiced signal at `rate`.
pub fn voiced(ms: u32, rate: u32) -> Vec<i16> {
    (0..(rate * ms / 1000) as usize)
        .map(|n| voiced_sample(n, rate))
        .collect()
}

pub const A_ADDR: &str = "127.0.0.1:40000";
pub const B_ADDR: &str = "127.0.0.1:40002";

pub fn config(codec: Codec, remote: &str, seed: u64) -> MediaConfig {
    let mut cfg = MediaConfig::new(NegotiatedParams::simple(codec, remote.parse().unwrap()));
    cfg.seed = seed;
    cfg
}

/// Two cores, A (think: the caller's phone) and B (the gateway), on a perfect
/// network with fixed one-way delay (0 by default), advanced in lockstep.
pub struct Pair {
    pub a: CallMedia,
    pub b: CallMedia,
    pub now: Instant,
    pub t0: Instant,
    pub a_events: Vec<(Duration, MediaEvent)>,
    pub b_events: Vec<(Duration, MediaEvent)>,
    /// Drop every Nth RTP packet from A to B (0: none).
    pub drop_every: usize,
    a_sent: usize,
}

impl Pair {
    pub fn new(codec: Codec) -> Self {
        Self::with_configs(config(codec, B_ADDR, 1), config(codec, A_ADDR, 2))
    }

    pub fn with_configs(a: MediaConfig, b: MediaConfig) -> Self {
        let t0 = Instant::now();
        let wall = SystemTime::now();
        Self {
            a: CallMedia::new(&a, t0, wall).unwrap(),
            b: CallMedia::new(&b, t0, wall).unwrap(),
            now: t0,
            t0,
            a_events: vec![],
            b_events: vec![],
            drop_every: 0,
            a_sent: 0,
        }
    }

    /// Runs both cores for `ms` milliseconds of fake time.
    pub fn run(&mut self, ms: u64) {
        let end = self.now + Duration::from_millis(ms);
        while self.now < end {
            let next = self.a.poll_timeout().min(self.b.poll_timeout());
            if next > end {
                self.now = end;
                break;
            }
            self.now = next;
            let now = self.now;
            self.a.handle_timeout(now);
            self.b.handle_timeout(now);
            self.exchange();
        }
    }

    fn exchange(&mut self) {
        let a_addr: SocketAddr = A_ADDR.parse().unwrap();
        let b_addr: SocketAddr = B_ADDR.parse().unwrap();
        let now = self.now;
        let mut to_b: Vec<(TransmitKind, Vec<u8>)> = vec![];
        while let Some(t) = self.a.poll_transmit() {
            to_b.push((t.kind, t.payload.to_vec()));
        }
        let mut to_a: Vec<(TransmitKind, Vec<u8>)> = vec![];
        while let Some(t) = self.b.poll_transmit() {
            to_a.push((t.kind, t.payload.to_vec()));
        }
        for (k, p) in to_b {
            match k {
                TransmitKind::Rtp => {
                    self.a_sent += 1;
                    if self.drop_every > 0 && self.a_sent.is_multiple_of(self.drop_every) {
                        continue;
                    }
                    self.b.handle_rtp(&p, a_addr, now)
                }
                TransmitKind::Rtcp => {
                    self.b
                        .handle_rtcp(&p, SocketAddr::new(a_addr.ip(), 40001), now)
                }
            }
        }
        for (k, p) in to_a {
            match k {
                TransmitKind::Rtp => self.a.handle_rtp(&p, b_addr, now),
                TransmitKind::Rtcp => {
                    self.a
                        .handle_rtcp(&p, SocketAddr::new(b_addr.ip(), 40003), now)
                }
            }
        }
        let at = now - self.t0;
        while let Some(e) = self.a.poll_event() {
            self.a_events.push((at, e));
        }
        while let Some(e) = self.b.poll_event() {
            self.b_events.push((at, e));
        }
        while self.a.poll_recording().is_some() {}
        while self.b.poll_recording().is_some() {}
    }
}
