//! Call bridging (B2BUA), sans-IO with fake time: two phones, two gateway legs
//! (`CallMedia` cores), the legs' bridge taps wired to each other's lanes. Measures
//! the one-way delay the bridge adds for every phase between the legs' ticks, and
//! checks that the bridged audio replaces queued agent audio and survives
//! barge-in.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use voicegate_media::pipeline::{CallMedia, MediaConfig, MediaEvent, TransmitKind};
use voicegate_media::playout::{PlayoutEvent, Segment, SegmentId};
use voicegate_media::{BridgeSourceId, Codec, NegotiatedParams};

const PH_A: &str = "127.0.0.1:41000";
const GW_A: &str = "127.0.0.1:41002";
const GW_B: &str = "127.0.0.1:41004";
const PH_B: &str = "127.0.0.1:41006";
const A_TO_B: BridgeSourceId = BridgeSourceId(1);
const B_TO_A: BridgeSourceId = BridgeSourceId(2);

/// Power of `freq` in `x` relative to the whole signal (1.0: a pure tone).
pub fn tone_ratio(x: &[i16], freq: f64, rate: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / rate;
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut energy = 0.0;
    for &v in x {
        let v = v as f64;
        let s0 = v + c * s1 - s2;
        s2 = s1;
        s1 = s0;
        energy += v * v;
    }
    let power = s1 * s1 + s2 * s2 - c * s1 * s2;
    if energy == 0.0 {
        return 0.0;
    }
    power / (energy * x.len() as f64 / 2.0)
}

pub fn tone(freq: f64, rate: u32, ms: u32, amp: f64) -> Vec<i16> {
    (0..(rate * ms / 1000) as usize)
        .map(|n| (amp * (2.0 * std::f64::consts::PI * freq * n as f64 / rate as f64).sin()) as i16)
        .collect()
}

fn cfg(codec: Codec, remote: &str, seed: u64) -> MediaConfig {
    let mut c = MediaConfig::new(NegotiatedParams::simple(codec, remote.parse().unwrap()));
    c.seed = seed;
    c
}

/// Phone A - leg A == bridge == leg B - phone B, zero network delay.
struct Bridge {
    ph_a: CallMedia,
    gw_a: CallMedia,
    gw_b: CallMedia,
    ph_b: CallMedia,
    now: Instant,
    t0: Instant,
    /// (tick time, caller audio) decoded by leg A.
    a_decoded: Vec<(Duration, Vec<i16>)>,
    /// (tick time, agent audio) sent by leg B.
    b_sent: Vec<(Duration, Vec<i16>)>,
    b_events: Vec<MediaEvent>,
}

impl Bridge {
    /// Leg B ticks `phase` after leg A.
    fn new(codec_b: Codec, phase: Duration) -> Self {
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let mut gw_a = CallMedia::new(&cfg(Codec::Pcmu, PH_A, 2), t0, wall).unwrap();
        let mut gw_b = CallMedia::new(&cfg(codec_b, PH_B, 3), t0 + phase, wall).unwrap();
        gw_a.set_bridge_tap(Some(
            voicegate_media::bridge::BridgeTap::new(gw_a.playout_rate_hz(), gw_b.playout_rate_hz())
                .unwrap(),
        ))
        .unwrap();
        gw_b.set_bridge_tap(Some(
            voicegate_media::bridge::BridgeTap::new(gw_b.playout_rate_hz(), gw_a.playout_rate_hz())
                .unwrap(),
        ))
        .unwrap();
        gw_a.set_bridge_source(Some(B_TO_A));
        gw_b.set_bridge_source(Some(A_TO_B));
        Self {
            ph_a: CallMedia::new(&cfg(Codec::Pcmu, GW_A, 1), t0, wall).unwrap(),
            gw_a,
            gw_b,
            ph_b: CallMedia::new(&cfg(codec_b, GW_B, 4), t0 + phase, wall).unwrap(),
            now: t0,
            t0,
            a_decoded: vec![],
            b_sent: vec![],
            b_events: vec![],
        }
    }

    fn run(&mut self, ms: u64) {
        let end = self.now + Duration::from_millis(ms);
        loop {
            let next = [&self.ph_a, &self.gw_a, &self.gw_b, &self.ph_b]
                .iter()
                .map(|c| c.poll_timeout())
                .min()
                .unwrap();
            if next > end {
                self.now = end;
                return;
            }
            self.now = next;
            let now = next;
            let at = now - self.t0;
            for c in [&mut self.ph_a, &mut self.ph_b] {
                if c.poll_timeout() <= now {
                    c.handle_timeout(now);
                }
            }
            if self.gw_a.poll_timeout() <= now {
                self.gw_a.handle_timeout(now);
                while let Some((caller, _)) = self.gw_a.poll_recording() {
                    self.a_decoded.push((at, caller.to_vec()));
                }
            }
            // The bridge hand-off (a channel between two tasks in the driver).
            while let Some(f) = self.gw_a.poll_bridge() {
                let f = f.to_vec();
                self.gw_b.handle_bridge_frame(A_TO_B, &f, now);
            }
            if self.gw_b.poll_timeout() <= now {
                self.gw_b.handle_timeout(now);
                while let Some((_, agent)) = self.gw_b.poll_recording() {
                    self.b_sent.push((at, agent.to_vec()));
                }
            }
            while let Some(f) = self.gw_b.poll_bridge() {
                let f = f.to_vec();
                self.gw_a.handle_bridge_frame(B_TO_A, &f, now);
            }
            wire(&mut self.ph_a, PH_A, &mut self.gw_a, GW_A, now);
            wire(&mut self.ph_b, PH_B, &mut self.gw_b, GW_B, now);
            while self.ph_a.poll_event().is_some() {}
            while self.ph_b.poll_event().is_some() {}
            while self.gw_a.poll_event().is_some() {}
            while let Some(e) = self.gw_b.poll_event() {
                self.b_events.push(e);
            }
            while self.ph_a.poll_recording().is_some() {}
            while self.ph_b.poll_recording().is_some() {}
        }
    }
}

fn wire(x: &mut CallMedia, x_addr: &str, y: &mut CallMedia, y_addr: &str, now: Instant) {
    let xa: SocketAddr = x_addr.parse().unwrap();
    let ya: SocketAddr = y_addr.parse().unwrap();
    let mut to_y = vec![];
    while let Some(t) = x.poll_transmit() {
        to_y.push((t.kind, t.payload.to_vec()));
    }
    let mut to_x = vec![];
    while let Some(t) = y.poll_transmit() {
        to_x.push((t.kind, t.payload.to_vec()));
    }
    for (k, p) in to_y {
        match k {
            TransmitKind::Rtp => y.handle_rtp(&p, xa, now),
            TransmitKind::Rtcp => y.handle_rtcp(&p, xa, now),
        }
    }
    for (k, p) in to_x {
        match k {
            TransmitKind::Rtp => x.handle_rtp(&p, ya, now),
            TransmitKind::Rtcp => x.handle_rtcp(&p, ya, now),
        }
    }
}

/// Stream time of the first sample above `level`.
fn onset(frames: &[(Duration, Vec<i16>)], rate: u32, level: i16) -> Option<Duration> {
    frames.iter().find_map(|(at, pcm)| {
        pcm.iter()
            .position(|s| s.saturating_abs() > level)
            .map(|i| *at + Duration::from_micros(i as u64 * 1_000_000 / rate as u64))
    })
}

fn tone_segment(rate: u32, id: u64) -> Segment {
    let mut pcm = vec![0i16; rate as usize * 3 / 10];
    pcm.extend(tone(1000.0, rate, 1000, 8000.0));
    Segment {
        id: SegmentId(id),
        interruptible: false,
        pcm,
    }
}

#[test]
fn added_delay_over_all_phases_and_no_starving() {
    let mut report = vec![];
    for codec_b in [Codec::Pcmu, Codec::Opus] {
        let mut delays = vec![];
        for phase_ms in 0..20u64 {
            let mut br = Bridge::new(codec_b, Duration::from_millis(phase_ms));
            let rate_a = br.ph_a.playout_rate_hz();
            br.ph_a.enqueue(tone_segment(rate_a, 1)).unwrap();
            br.run(1500);
            let rate_b = br.gw_b.playout_rate_hz();
            let decoded = onset(&br.a_decoded, rate_a, 2000).expect("leg A decoded the tone");
            let sent = onset(&br.b_sent, rate_b, 2000).expect("leg B sent the tone");
            let added = sent.saturating_sub(decoded);
            delays.push(added.as_secs_f64() * 1000.0);
            // The tone at leg B's output is the tone phone A sent.
            let tail: Vec<i16> = br.b_sent[40..60]
                .iter()
                .flat_map(|(_, p)| p.iter().copied())
                .collect();
            let r = tone_ratio(&tail, 1000.0, rate_b as f64);
            assert!(r > 0.9, "{codec_b:?} phase {phase_ms}: 1 kHz ratio {r}");
            let st = br.gw_b.stats().bridge;
            // Frames go out every tick from the first decoded one, none dropped.
            assert_eq!(st.underruns, 0, "{codec_b:?} phase {phase_ms}: {st:?}");
            assert_eq!(
                st.frames_in_dropped, 0,
                "{codec_b:?} phase {phase_ms}: {st:?}"
            );
            // margin 5 ms + phase (< 20 ms) + the resampler delay (1.5 ms at 8 kHz).
            assert!(
                (4.0..=27.0).contains(delays.last().unwrap()),
                "{codec_b:?} phase {phase_ms}: {delays:?}"
            );
        }
        eprintln!("{codec_b:?} by phase: {delays:.1?}");
        let min = delays.iter().copied().fold(f64::MAX, f64::min);
        let max = delays.iter().copied().fold(0.0, f64::max);
        let mean = delays.iter().sum::<f64>() / delays.len() as f64;
        report.push(format!(
            "PCMU -> {codec_b:?}: added one-way delay over 20 phases: min {min:.2} ms, mean {mean:.2} ms, max {max:.2} ms"
        ));
    }
    for line in report {
        eprintln!("{line}");
    }
}

#[test]
fn bridging_clears_agent_audio_and_barge_in_does_not_cut_it() {
    let mut br = Bridge::new(Codec::Pcmu, Duration::from_millis(7));
    br.gw_b.set_bridge_source(None);
    // Leg B plays an agent prompt.
    br.gw_b
        .enqueue(Segment {
            id: SegmentId(50),
            interruptible: false,
            pcm: vec![300; 8000 * 5],
        })
        .unwrap();
    br.run(200);
    // The bridge into leg B starts: the prompt is cleared.
    br.gw_b.set_bridge_source(Some(A_TO_B));
    br.run(20);
    assert!(
        br.b_events.iter().any(|e| matches!(
            e,
            MediaEvent::Playout(PlayoutEvent::Interrupted {
                id: SegmentId(50),
                ..
            })
        )),
        "{:?}",
        br.b_events
    );
    br.ph_a.enqueue(tone_segment(8000, 1)).unwrap();
    br.run(600);
    // An interruptible agent prompt on leg B during the bridge, then phone B
    // talks: barge-in flushes the prompt, the bridged tone goes on.
    br.gw_b
        .enqueue(Segment {
            id: SegmentId(51),
            interruptible: true,
            pcm: vec![0; 8000 * 5],
        })
        .unwrap();
    br.ph_b
        .enqueue(Segment {
            id: SegmentId(2),
            interruptible: false,
            pcm: common::voiced(600, 8000),
        })
        .unwrap();
    let from = br.b_sent.len();
    br.run(600);
    assert!(
        br.b_events
            .iter()
            .any(|e| matches!(e, MediaEvent::BargeIn { .. })),
        "no barge-in"
    );
    let after: Vec<i16> = br.b_sent[from..]
        .iter()
        .flat_map(|(_, p)| p.iter().copied())
        .collect();
    let r = tone_ratio(&after, 1000.0, 8000.0);
    assert!(r > 0.9, "bridged tone after barge-in: ratio {r}");
    assert_eq!(br.gw_b.stats().bridge.underruns, 0);
    // The bridge ends: leg B's output is quiet again within a tick.
    br.gw_b.end_bridge_source(A_TO_B);
    br.run(40);
    let from = br.b_sent.len();
    br.run(200);
    assert!(
        br.b_sent[from..]
            .iter()
            .all(|(_, p)| p.iter().all(|s| *s == 0))
    );
}

/// A fake phone on a loopback socket: sends one RTP packet per 20 ms, keeps what
/// it receives with the tick it arrived in.
struct Phone {
    sock: tokio::net::UdpSocket,
    tx: voicegate_media::rtp::RtpSender,
    received: Vec<(u32, u8, Vec<u8>)>,
}

impl Phone {
    async fn new(seed: u64) -> Self {
        let mut rng = voicegate_media::rtp::SeededRng::new(seed);
        Self {
            sock: tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            tx: voicegate_media::rtp::RtpSender::new(&mut rng),
            received: vec![],
        }
    }

    fn collect(&mut self, tick: u32) {
        let mut buf = [0u8; 1500];
        while let Ok((n, _)) = self.sock.try_recv_from(&mut buf) {
            if let Ok((h, payload)) = voicegate_media::rtp::parse(&buf[..n]) {
                self.received.push((tick, h.payload_type, payload.to_vec()));
            }
        }
    }

    async fn send_audio(&mut self, pt: u8, payload: &[u8], units: u32, to: SocketAddr) {
        let mut pkt = [0u8; 1500];
        let n = self
            .tx
            .write_media(&mut pkt, pt, false, payload, units)
            .unwrap();
        self.sock.send_to(&pkt[..n], to).await.unwrap();
    }
}

/// Two sessions on loopback, bridged both ways: phone A talks PCMU (1 kHz tone),
/// phone B talks Opus (600 Hz tone). Each hears the other's tone; a DTMF digit
/// from A reaches B as an RFC 4733 event, not as audio; after unbridge both hear
/// silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_bridged_on_loopback_pcmu_and_opus() {
    use tokio::net::UdpSocket;
    use voicegate_media::dtmf::EventPayload;
    use voicegate_media::g711::{self, Law};
    use voicegate_media::opus::{OpusDecoder, OpusEncoder, OpusEncoderConfig};
    use voicegate_media::{MediaEvent, MediaSession};

    let mut ph_a = Phone::new(11).await;
    let mut ph_b = Phone::new(12).await;
    let start = |codec, phone: SocketAddr| async move {
        let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let rtcp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let cfg = MediaConfig::new(NegotiatedParams::simple(codec, phone));
        MediaSession::start_with_sockets(cfg, rtp, rtcp).unwrap()
    };
    let (leg_a, mut ev_a) = start(Codec::Pcmu, ph_a.sock.local_addr().unwrap()).await;
    let (leg_b, mut ev_b) = start(Codec::Opus, ph_b.sock.local_addr().unwrap()).await;
    let digits_a = tokio::spawn(async move {
        let mut digits = vec![];
        while let Some(e) = ev_a.recv().await {
            if let MediaEvent::Dtmf(d) = e {
                digits.push(d.digit);
            }
        }
        digits
    });
    let drain_b = tokio::spawn(async move { while ev_b.recv().await.is_some() {} });
    leg_a.bridge_to(leg_b.control()).unwrap();
    leg_b.bridge_to(leg_a.control()).unwrap();
    let gw_a = leg_a.local_rtp_addr();
    let gw_b = leg_b.local_rtp_addr();

    // Ticks of 20 ms: A silent 0..10, tone 10..75, DTMF '5' 75..85, tone 85..110;
    // unbridge at 110; tone on both sides until 160.
    let tone_a = tone(1000.0, 8000, 3400, 8000.0);
    let tone_b = tone(600.0, 16000, 3400, 8000.0);
    let mut opus_tx = OpusEncoder::new(OpusEncoderConfig::default()).unwrap();
    let mut interval = tokio::time::interval(Duration::from_millis(20));
    let mut onset_sent = None;
    let mut dtmf_ts = 0;
    for tick in 0..160u32 {
        interval.tick().await;
        if tick == 10 {
            onset_sent = Some(tokio::time::Instant::now());
        }
        if tick == 110 {
            leg_a.unbridge().unwrap();
            leg_b.unbridge().unwrap();
        }
        let k = tick as usize;
        // Phone A.
        if (75..85).contains(&tick) {
            if tick == 75 {
                dtmf_ts = ph_a.tx.timestamp();
            }
            let i = tick - 75;
            let mut p = [0u8; 4];
            EventPayload {
                event: 5,
                end: i >= 7,
                volume: 10,
                duration: (i.min(7) as u16 + 1) * 160,
            }
            .write(&mut p);
            let mut pkt = [0u8; 1500];
            let n = ph_a
                .tx
                .write_with_timestamp(&mut pkt, 101, i == 0, dtmf_ts, &p)
                .unwrap();
            ph_a.sock.send_to(&pkt[..n], gw_a).await.unwrap();
            if tick == 84 {
                ph_a.tx.advance(160 * 10);
            }
        } else {
            let mut pcm = [0i16; 160];
            if tick >= 10 {
                pcm.copy_from_slice(&tone_a[k * 160..(k + 1) * 160]);
            }
            let mut payload = [0u8; 160];
            g711::encode(Law::Mu, &pcm, &mut payload).unwrap();
            ph_a.send_audio(0, &payload, 160, gw_a).await;
        }
        // Phone B.
        let mut payload = [0u8; 400];
        let n = opus_tx
            .encode(&tone_b[k * 320..(k + 1) * 320], &mut payload)
            .unwrap();
        ph_b.send_audio(111, &payload[..n], 960, gw_b).await;
        ph_a.collect(tick);
        ph_b.collect(tick);
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    ph_a.collect(160);
    ph_b.collect(160);

    // Decode what each phone got, 20 ms per packet, tagged with the arrival tick.
    let mut dec_b = OpusDecoder::new(16000).unwrap();
    let mut at_b: Vec<(u32, Vec<i16>)> = vec![];
    let mut events_at_b = vec![];
    for (tick, pt, payload) in &ph_b.received {
        match pt {
            111 => {
                let mut out = vec![0i16; 16000 / 50 * 6];
                let n = dec_b.decode(payload, &mut out).unwrap();
                out.truncate(n);
                at_b.push((*tick, out));
            }
            101 => events_at_b.push(EventPayload::parse(payload).unwrap()),
            other => panic!("unexpected payload type {other} at phone B"),
        }
    }
    let at_a: Vec<(u32, Vec<i16>)> = ph_a
        .received
        .iter()
        .filter(|(_, pt, _)| *pt == 0)
        .map(|(tick, _, payload)| {
            let mut out = vec![0i16; payload.len()];
            g711::decode(Law::Mu, payload, &mut out).unwrap();
            (*tick, out)
        })
        .collect();
    let window = |frames: &[(u32, Vec<i16>)], from: u32, to: u32| -> Vec<i16> {
        frames
            .iter()
            .filter(|(t, _)| (from..to).contains(t))
            .flat_map(|(_, p)| p.iter().copied())
            .collect()
    };
    let rms = |x: &[i16]| {
        (x.iter().map(|s| (*s as f64).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt()
    };

    // B hears A's 1 kHz tone, A hears B's 600 Hz tone.
    let b_hears = window(&at_b, 30, 70);
    let r = tone_ratio(&b_hears, 1000.0, 16000.0);
    assert!(
        r > 0.8 && rms(&b_hears) > 1000.0,
        "B: ratio {r}, rms {}",
        rms(&b_hears)
    );
    let a_hears = window(&at_a, 30, 100);
    let r = tone_ratio(&a_hears, 600.0, 8000.0);
    assert!(
        r > 0.8 && rms(&a_hears) > 1000.0,
        "A: ratio {r}, rms {}",
        rms(&a_hears)
    );

    // No DTMF garbage: while A sent only telephone-event packets B heard silence
    // (quiet frames, then the relayed event's packets, which replace audio), and
    // every loud frame that is not the edge of a burst is A's tone.
    let around: Vec<&Vec<i16>> = at_b
        .iter()
        .filter(|(t, _)| (70..105).contains(t))
        .map(|(_, p)| p)
        .collect();
    let loud: Vec<bool> = around.iter().map(|p| rms(p) > 300.0).collect();
    let quiet_run = loud.split(|l| *l).map(|run| run.len()).max().unwrap_or(0);
    assert!(quiet_run >= 3, "DTMF gap at B: {loud:?}");
    for i in 1..around.len().saturating_sub(1) {
        if loud[i - 1] && loud[i] && loud[i + 1] {
            let r = tone_ratio(around[i], 1000.0, 16000.0);
            // Opus smears the burst edges a little; garbage would be near 0.
            assert!(r > 0.4, "frame {i} around the DTMF is not the tone ({r})");
        }
    }
    // The digit reached A's engine and was relayed to B as telephone-event.
    let digits = {
        leg_a.unbridge().unwrap();
        let stats_a = leg_a.stats().await.unwrap();
        let stats_b = leg_b.stats().await.unwrap();
        eprintln!(
            "leg A bridge {:?}\nleg B bridge {:?}",
            stats_a.bridge, stats_b.bridge
        );
        assert!(stats_b.bridge.frames_played > 80, "{:?}", stats_b.bridge);
        assert!(stats_a.bridge.frames_played > 80, "{:?}", stats_a.bridge);
        leg_a.stop().await;
        leg_b.stop().await;
        drain_b.await.unwrap();
        digits_a.await.unwrap()
    };
    assert_eq!(digits, vec!['5']);
    assert!(
        events_at_b.iter().any(|e| e.event == 5 && e.end),
        "relayed DTMF: {events_at_b:?}"
    );

    // After unbridge, silence both ways (a couple of ticks for frames in flight).
    let b_after = window(&at_b, 116, 160);
    let a_after = window(&at_a, 116, 160);
    assert!(
        rms(&b_after) < 50.0,
        "B after unbridge: rms {}",
        rms(&b_after)
    );
    assert!(
        rms(&a_after) < 50.0,
        "A after unbridge: rms {}",
        rms(&a_after)
    );

    // End to end (phone A send -> phone B receive, over loopback): the tone's
    // first loud frame, to the 20 ms tick.
    let first_loud = at_b.iter().find(|(_, p)| rms(p) > 1000.0).map(|(t, _)| *t);
    if let (Some(t), Some(_)) = (first_loud, onset_sent) {
        eprintln!(
            "end to end A -> B (jitter buffer, bridge, Opus, phone ticks): about {} ms",
            (t - 10) * 20
        );
    }
}

#[tokio::test]
async fn a_session_cannot_be_bridged_to_itself() {
    let rtp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let rtcp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let cfg = MediaConfig::new(NegotiatedParams::simple(
        Codec::Pcma,
        "127.0.0.1:9".parse().unwrap(),
    ));
    let (leg, _events) = voicegate_media::MediaSession::start_with_sockets(cfg, rtp, rtcp).unwrap();
    assert!(matches!(
        leg.bridge_to(leg.control()),
        Err(voicegate_media::MediaError::Unsupported(_))
    ));
    // Unbridging a leg that is not bridged is harmless.
    leg.unbridge().unwrap();
    let stats = leg.stop().await;
    assert_eq!(stats.bridge, voicegate_media::BridgeStats::default());
}
