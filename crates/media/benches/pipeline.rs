//! Hot-step benchmarks of the media path. Run with
//! `cargo bench -p voicegate-media --bench pipeline`; figures are kept in
//! docs/benchmarks-media.md.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{Criterion, criterion_group, criterion_main};
use voicegate_media::bridge::{BridgeLane, BridgeTap};
use voicegate_media::codec::{AudioDecoder, AudioEncoder};
use voicegate_media::g711::{self, Law};
use voicegate_media::jitter::{JitterBuffer, JitterConfig, PacketKind, Pop};
use voicegate_media::opus::{MAX_OPUS_PACKET, OpusDecoder, OpusEncoder, OpusEncoderConfig};
use voicegate_media::pipeline::{CallMedia, MediaConfig};
use voicegate_media::playout::{Playout, PlayoutConfig, Segment, SegmentId};
use voicegate_media::resample::Resampler;
use voicegate_media::rtp::{RtpSender, SeededRng};
use voicegate_media::vad::{FRAME_16K, Vad, VadConfig, VadEngine};
use voicegate_media::{BridgeSourceId, Codec, NegotiatedParams};

/// Speech-like test signal (pulse train through formants) at `rate`.
fn voiced(samples: usize, rate: u32) -> Vec<i16> {
    (0..samples)
        .map(|n| {
            let t = n as f32 / rate as f32;
            let f0 = 140.0 + 20.0 * (2.0 * std::f32::consts::PI * 3.0 * t).sin();
            let mut v = 0.0;
            for h in 1..30 {
                let f = f0 * h as f32;
                if f > (rate as f32 / 2.0).min(7000.0) {
                    break;
                }
                let formant = |c: f32, bw: f32| 1.0 / (1.0 + ((f - c) / bw).powi(2));
                v += (formant(700.0, 150.0) + 0.6 * formant(1200.0, 200.0))
                    * (2.0 * std::f32::consts::PI * f * t).sin();
            }
            (v * 4000.0).clamp(-32000.0, 32000.0) as i16
        })
        .collect()
}

/// 50 PCMU payloads (1 s) of speech, cycled by the benches.
fn pcmu_payloads() -> Vec<[u8; 160]> {
    let pcm = voiced(8000, 8000);
    pcm.chunks(160)
        .map(|c| {
            let mut p = [0u8; 160];
            g711::encode(Law::Mu, c, &mut p).unwrap();
            p
        })
        .collect()
}

fn inbound_g711<M: Measurement + 'static>(c: &mut Criterion<M>, id: &str, engine: VadEngine) {
    let payloads = pcmu_payloads();
    let t0 = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::default(), 8000);
    let mut dec = AudioDecoder::new(Codec::Pcmu, 16000).unwrap();
    let mut rs = Resampler::new_20ms(8000, 16000).unwrap();
    let mut vad = Vad::new(VadConfig {
        engine,
        ..VadConfig::default()
    })
    .unwrap();
    let mut pcm8 = [0i16; 160];
    let mut pcm16 = [0i16; FRAME_16K];
    let mut seq: u16 = 0;
    // Prime the buffer to its target so every pop yields a frame.
    for _ in 0..3 {
        let p = &payloads[seq as usize % payloads.len()];
        jb.push(
            1,
            seq,
            seq as u32 * 160,
            p,
            PacketKind::Audio,
            t0 + Duration::from_millis(seq as u64 * 20),
        );
        seq = seq.wrapping_add(1);
    }
    c.bench_function(id, |b| {
        b.iter(|| {
            let now = t0 + Duration::from_millis(seq as u64 * 20);
            let p = &payloads[seq as usize % payloads.len()];
            jb.push(
                1,
                seq,
                (seq as u32).wrapping_mul(160),
                p,
                PacketKind::Audio,
                now,
            );
            seq = seq.wrapping_add(1);
            match jb.pop(now) {
                Pop::Frame { payload, .. } => {
                    dec.decode(payload, &mut pcm8).unwrap();
                }
                Pop::Lost { next } => {
                    dec.conceal(next, &mut pcm8).unwrap();
                }
                _ => pcm8.fill(0),
            }
            rs.process(&pcm8, &mut pcm16).unwrap();
            vad.process(&pcm16);
            while let Some(e) = vad.poll_event() {
                black_box(e);
            }
        })
    });
}

fn g711_decode_resample_vad(c: &mut Criterion) {
    inbound_g711(
        c,
        "g711_decode_resample_vad_20ms",
        VadEngine::Earshot { threshold: 0.5 },
    );
    inbound_g711(
        c,
        "g711_decode_resample_webrtcvad_20ms",
        VadEngine::WebRtc { mode: 2 },
    );
}

fn steps_with<M: Measurement + 'static>(c: &mut Criterion<M>, prefix: &str) {
    // The inbound steps one by one, to see where the 20 ms budget goes.
    let pcm8 = voiced(160, 8000);
    let mut rs = Resampler::new_20ms(8000, 16000).unwrap();
    let mut pcm16 = [0i16; FRAME_16K];
    c.bench_function(&format!("{prefix}step_resample_8k_16k_20ms"), |b| {
        b.iter(|| rs.process(black_box(&pcm8), &mut pcm16).unwrap())
    });
    let speech16 = voiced(16000, 16000);
    for (id, engine) in [
        (
            "step_vad_earshot_20ms",
            VadEngine::Earshot { threshold: 0.5 },
        ),
        ("step_vad_webrtc_20ms", VadEngine::WebRtc { mode: 2 }),
    ] {
        let mut vad = Vad::new(VadConfig {
            engine,
            ..VadConfig::default()
        })
        .unwrap();
        let mut k = 0;
        c.bench_function(&format!("{prefix}{id}"), |b| {
            b.iter(|| {
                k = (k + 1) % 50;
                pcm16.copy_from_slice(&speech16[k * FRAME_16K..(k + 1) * FRAME_16K]);
                vad.process(&pcm16);
                while let Some(e) = vad.poll_event() {
                    black_box(e);
                }
            })
        });
    }
}

fn opus_with<M: Measurement + 'static>(c: &mut Criterion<M>, prefix: &str) {
    let rate = 16000;
    let pcm = voiced(rate as usize, rate);
    let mut enc = OpusEncoder::new(OpusEncoderConfig::default()).unwrap();
    let packets: Vec<Vec<u8>> = pcm
        .chunks(320)
        .map(|f| {
            let mut b = [0u8; MAX_OPUS_PACKET];
            let n = enc.encode(f, &mut b).unwrap();
            b[..n].to_vec()
        })
        .collect();
    let mut out = [0u8; MAX_OPUS_PACKET];
    let mut k = 0;
    c.bench_function(&format!("{prefix}opus_encode_20ms_16k"), |b| {
        b.iter(|| {
            k = (k + 1) % 50;
            black_box(enc.encode(&pcm[k * 320..(k + 1) * 320], &mut out).unwrap());
        })
    });
    let mut dec = OpusDecoder::new(rate).unwrap();
    let mut pcm_out = [0i16; 320];
    c.bench_function(&format!("{prefix}opus_decode_20ms_16k"), |b| {
        b.iter(|| {
            k = (k + 1) % 50;
            black_box(dec.decode(&packets[k], &mut pcm_out).unwrap());
        })
    });
    c.bench_function(&format!("{prefix}opus_plc_20ms_16k"), |b| {
        b.iter(|| {
            black_box(dec.conceal(&mut pcm_out).unwrap());
        })
    });
}

fn playout_encode_with<M: Measurement + 'static>(c: &mut Criterion<M>, prefix: &str) {
    for (codec, id) in [
        (Codec::Pcmu, "playout_encode_20ms_pcmu"),
        (Codec::Opus, "playout_encode_20ms_opus16k"),
    ] {
        let mut enc = AudioEncoder::new(codec, OpusEncoderConfig::default()).unwrap();
        let rate = enc.rate_hz();
        let frame = (rate / 50) as usize;
        let mut playout = Playout::new(PlayoutConfig {
            rate_hz: rate,
            frame_samples: frame,
            max_segments: 8,
            comfort_noise_peak: 0,
        })
        .unwrap();
        // 10 s of speech, re-queued when it runs out (one copy per 500 frames).
        let speech = voiced(rate as usize * 10, rate);
        let mut rng = SeededRng::new(1);
        let mut sender = RtpSender::new(&mut rng);
        let mut pcm = vec![0i16; frame];
        let mut payload = [0u8; MAX_OPUS_PACKET];
        let mut packet = [0u8; 1500];
        let pt = if codec == Codec::Pcmu { 0 } else { 111 };
        let units = codec.rtp_clock_rate() / 50;
        c.bench_function(&format!("{prefix}{id}"), |b| {
            b.iter(|| {
                if !playout.is_active() {
                    let seg = Segment {
                        id: SegmentId(1),
                        interruptible: true,
                        pcm: speech.clone(),
                    };
                    playout.enqueue(seg).unwrap();
                }
                playout.next_frame(&mut pcm);
                while let Some(e) = playout.poll_event() {
                    black_box(e);
                }
                let n = enc.encode(&pcm, &mut payload).unwrap();
                black_box(
                    sender
                        .write_media(&mut packet, pt, false, &payload[..n], units)
                        .unwrap(),
                );
            })
        });
    }
}

fn call_media_tick_with<M: Measurement + 'static>(c: &mut Criterion<M>, prefix: &str) {
    // A whole CallMedia tick: one PCMU packet in (parse, latch, jitter buffer), one
    // tick (decode, resample, VAD, playout, encode, RTP out) and the drains.
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let t0 = Instant::now();
    let mut media = CallMedia::new(
        &MediaConfig::new(NegotiatedParams::simple(Codec::Pcmu, peer)),
        t0,
        SystemTime::now(),
    )
    .unwrap();
    let payloads = pcmu_payloads();
    let mut rng = SeededRng::new(9);
    let mut peer_tx = RtpSender::new(&mut rng);
    let mut pkt = [0u8; 1500];
    let mut now = t0;
    c.bench_function(&format!("{prefix}call_media_tick_pcmu_20ms"), |b| {
        b.iter(|| {
            now += Duration::from_millis(20);
            let k = peer_tx.packet_count() as usize % payloads.len();
            let n = peer_tx
                .write_media(&mut pkt, 0, false, &payloads[k], 160)
                .unwrap();
            media.handle_rtp(&pkt[..n], peer, now);
            media.handle_timeout(now);
            while let Some(t) = media.poll_transmit() {
                black_box(t.payload);
            }
            while let Some(e) = media.poll_event() {
                black_box(e);
            }
            black_box(media.poll_recording());
        })
    });
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`): unlike wall time it
/// does not grow when other processes compete for the cores, so figures taken on
/// a busy build host stay comparable.
struct ThreadCpuTime;

fn thread_cpu_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;
    fn start(&self) -> Duration {
        thread_cpu_now()
    }
    fn end(&self, start: Duration) -> Duration {
        thread_cpu_now().saturating_sub(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        WallTime.formatter()
    }
}

fn steps(c: &mut Criterion) {
    steps_with(c, "");
}

fn opus(c: &mut Criterion) {
    opus_with(c, "");
}

fn playout_encode(c: &mut Criterion) {
    playout_encode_with(c, "");
}

fn bridge_with<M: Measurement + 'static>(c: &mut Criterion<M>, prefix: &str) {
    // One bridged 20 ms frame: the sending leg's tap (8 kHz PCMU leg to a 16 kHz
    // Opus leg: one resampling) and the receiving leg's lane (push, then mix into
    // the outbound frame on the next tick).
    let pcm8 = voiced(160, 8000);
    let mut tap = BridgeTap::new(8000, 16000).unwrap();
    let mut lane = BridgeLane::new(320, Duration::from_millis(5));
    let source = BridgeSourceId(1);
    lane.set_source(Some(source));
    let mut out = [0i16; 320];
    let mut now = Instant::now();
    c.bench_function(&format!("{prefix}bridge_tap_lane_8k_to_16k_20ms"), |b| {
        b.iter(|| {
            now += Duration::from_millis(20);
            tap.push(black_box(&pcm8));
            if let Some(f) = tap.pop() {
                lane.push(source, f, now);
            }
            out.fill(0);
            black_box(lane.mix_into(&mut out, now + Duration::from_millis(10)));
        })
    });
}

fn bridge(c: &mut Criterion) {
    bridge_with(c, "");
}

fn call_media_tick(c: &mut Criterion) {
    call_media_tick_with(c, "");
}

/// The same benches measured in thread CPU time, ids prefixed `cpu_time/`.
fn cpu_time(c: &mut Criterion<ThreadCpuTime>) {
    inbound_g711(
        c,
        "cpu_time/g711_decode_resample_vad_20ms",
        VadEngine::Earshot { threshold: 0.5 },
    );
    inbound_g711(
        c,
        "cpu_time/g711_decode_resample_webrtcvad_20ms",
        VadEngine::WebRtc { mode: 2 },
    );
    steps_with(c, "cpu_time/");
    opus_with(c, "cpu_time/");
    playout_encode_with(c, "cpu_time/");
    call_media_tick_with(c, "cpu_time/");
    bridge_with(c, "cpu_time/");
}

criterion_group!(
    benches,
    g711_decode_resample_vad,
    steps,
    opus,
    playout_encode,
    call_media_tick,
    bridge
);
criterion_group! {
    name = cpu_benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = cpu_time
}
criterion_main!(benches, cpu_benches);
