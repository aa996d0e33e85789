//! End-to-end tests of the sans-IO core: two `CallMedia` back to back, fake time.

mod common;

use std::time::Duration;

use common::{Pair, voiced};
use voicegate_media::Codec;
use voicegate_media::pipeline::MediaEvent;
use voicegate_media::playout::{PlayoutEvent, Segment, SegmentId};

fn starts_ends(events: &[(Duration, MediaEvent)]) -> (Vec<Duration>, Vec<Duration>, usize) {
    let mut s = vec![];
    let mut e = vec![];
    let mut frames = 0;
    for (_, ev) in events {
        match ev {
            MediaEvent::SpeechStart { at } => s.push(*at),
            MediaEvent::SpeechEnd { at } => e.push(*at),
            MediaEvent::SpeechFrame { .. } => frames += 1,
            _ => {}
        }
    }
    (s, e, frames)
}

fn speech_is_detected(codec: Codec) {
    let mut p = Pair::new(codec);
    let rate = p.a.playout_rate_hz();
    p.run(500);
    p.a.enqueue(Segment {
        id: SegmentId(7),
        interruptible: false,
        pcm: voiced(1000, rate),
    })
    .unwrap();
    p.run(2500);
    let (s, e, frames) = starts_ends(&p.b_events);
    assert_eq!(s.len(), 1, "{codec:?} starts {s:?}");
    assert_eq!(e.len(), 1, "{codec:?} ends {e:?}");
    // Stream time starts with B's first received packet (~t=20 ms); speech was
    // sent from ~500 ms and the jitter buffer adds its floor.
    let start = s[0].as_millis();
    assert!((400..=700).contains(&start), "{codec:?} start {start}");
    let dur = e[0].as_millis() - start;
    assert!((850..=1200).contains(&dur), "{codec:?} speech {dur} ms");
    assert!(frames >= 50, "{codec:?} frames {frames}");
    // A reports its segment played in full.
    assert!(p.a_events.iter().any(|(_, e)| *e
        == MediaEvent::Playout(PlayoutEvent::Finished {
            id: SegmentId(7),
            played_ms: 1000
        })));
    let st = p.b.stats();
    assert_eq!(st.rtp_malformed, 0);
    assert!(st.rtp_received >= 140, "{st:?}");
    assert_eq!(st.inbound_lost, 0);
}

#[test]
fn pcmu_speech_is_detected() {
    speech_is_detected(Codec::Pcmu);
}

#[test]
fn pcma_speech_is_detected() {
    speech_is_detected(Codec::Pcma);
}

#[test]
fn opus_speech_is_detected() {
    speech_is_detected(Codec::Opus);
}

#[test]
fn opus_at_8_and_48_khz_and_ptime_40() {
    for (rate, ptime) in [(8000u32, 20u32), (48000, 20), (16000, 40)] {
        let mut a = common::config(Codec::Opus, common::B_ADDR, 1);
        let mut b = common::config(Codec::Opus, common::A_ADDR, 2);
        for c in [&mut a, &mut b] {
            c.opus_pcm_rate_hz = rate;
            c.params.ptime_ms = ptime;
        }
        let mut p = Pair::with_configs(a, b);
        assert_eq!(p.a.playout_rate_hz(), rate);
        p.run(400);
        p.a.enqueue(Segment {
            id: SegmentId(1),
            interruptible: false,
            pcm: voiced(1000, rate),
        })
        .unwrap();
        p.run(2500);
        let (s, e, frames) = starts_ends(&p.b_events);
        assert_eq!((s.len(), e.len()), (1, 1), "{rate}/{ptime}: {s:?} {e:?}");
        assert!(frames >= 50, "{rate}/{ptime}: {frames}");
        let st = p.b.stats();
        assert_eq!(st.jitter.lost, 0, "{rate}/{ptime}: {st:?}");
        assert_eq!(st.rtp_sent, 2900 / ptime as u64, "{rate}/{ptime}: {st:?}");
    }
    // a=ptime:30 is sent as 20 ms.
    let mut odd = common::config(Codec::Pcmu, common::A_ADDR, 2);
    odd.params.ptime_ms = 30;
    let m = voicegate_media::CallMedia::new(
        &odd,
        std::time::Instant::now(),
        std::time::SystemTime::now(),
    )
    .unwrap();
    assert_eq!(m.params().ptime_ms, 20);
}

#[test]
fn speech_survives_loss_with_concealment() {
    for codec in [Codec::Pcmu, Codec::Opus] {
        let mut p = Pair::new(codec);
        p.drop_every = 10;
        let rate = p.a.playout_rate_hz();
        p.run(300);
        p.a.enqueue(Segment {
            id: SegmentId(1),
            interruptible: true,
            pcm: voiced(1500, rate),
        })
        .unwrap();
        p.run(3000);
        let (s, e, _) = starts_ends(&p.b_events);
        assert_eq!((s.len(), e.len()), (1, 1), "{codec:?} {s:?} {e:?}");
        let st = p.b.stats();
        assert!(st.jitter.lost >= 10, "{codec:?} {st:?}");
        assert!(st.inbound_lost >= 10, "{codec:?} {st:?}");
    }
}

#[test]
fn barge_in_flushes_interruptible_playout() {
    let mut p = Pair::new(Codec::Pcmu);
    // B (the agent side) starts a long interruptible prompt.
    p.b.enqueue(Segment {
        id: SegmentId(42),
        interruptible: true,
        pcm: vec![1000; 8000 * 10],
    })
    .unwrap();
    p.run(1000);
    // The caller talks over it.
    p.a.enqueue(Segment {
        id: SegmentId(1),
        interruptible: false,
        pcm: voiced(800, 8000),
    })
    .unwrap();
    p.run(1500);
    let barge = p
        .b_events
        .iter()
        .position(|(_, e)| matches!(e, MediaEvent::BargeIn { .. }))
        .expect("barge-in");
    let start = p
        .b_events
        .iter()
        .position(|(_, e)| matches!(e, MediaEvent::SpeechStart { .. }))
        .unwrap();
    assert!(barge < start);
    let played = p
        .b_events
        .iter()
        .find_map(|(_, e)| match e {
            MediaEvent::Playout(PlayoutEvent::Interrupted {
                id,
                played_ms,
                total_ms,
            }) => {
                assert_eq!(*id, SegmentId(42));
                assert_eq!(*total_ms, 10_000);
                Some(*played_ms)
            }
            _ => None,
        })
        .expect("interrupted");
    assert!((1000..=1300).contains(&played), "played {played}");
    assert_eq!(p.b.playout_queued_ms(), 0);
}

#[test]
fn dtmf_end_to_end_once_per_press() {
    let mut p = Pair::new(Codec::Pcmu);
    p.run(200);
    for d in ['1', '#', '1'] {
        p.a.send_dtmf(d, 100).unwrap();
    }
    p.run(2000);
    let digits: String = p
        .b_events
        .iter()
        .filter_map(|(_, e)| match e {
            MediaEvent::Dtmf(d) => Some(d.digit),
            _ => None,
        })
        .collect();
    assert_eq!(digits, "1#1");
    // DTMF packets occupy sequence numbers but are not counted as loss, and their
    // frozen timestamps do not inflate the jitter estimate.
    let st = p.b.stats();
    assert_eq!(st.jitter.lost, 0);
    assert!(st.jitter.target_delay_ms <= 30, "{st:?}");
}

#[test]
fn rtcp_reports_give_rtt_and_latching() {
    let mut p = Pair::new(Codec::Pcma);
    p.run(12_000);
    let a = p.a.stats();
    let b = p.b.stats();
    assert!(
        a.rtcp.sr_received >= 2 && b.rtcp.sr_received >= 2,
        "{a:?} {b:?}"
    );
    // Zero network delay in the harness: RTT is at most a tick.
    assert!(
        a.rtcp.rtt.unwrap() <= Duration::from_millis(21),
        "{:?}",
        a.rtcp
    );
    assert!(
        p.b_events
            .iter()
            .any(|(_, e)| matches!(e, MediaEvent::Latched { remote } if remote.port() == 40000))
    );
    // Media from another source after latching is ignored.
    let mut pkt = [0u8; 172];
    pkt[0] = 0x80;
    pkt[1] = 8;
    let before = p.b.stats().rtp_received;
    p.b.handle_rtp(&pkt, "127.0.0.1:5555".parse().unwrap(), p.now);
    let st = p.b.stats();
    assert_eq!(st.rtp_received, before + 1);
    assert_eq!(st.ignored_source, 1);
    // Garbage is counted, never a panic.
    p.b.handle_rtp(&[1, 2, 3], "127.0.0.1:40000".parse().unwrap(), p.now);
    p.b.handle_rtcp(&[0xff; 3], "127.0.0.1:40001".parse().unwrap(), p.now);
    assert_eq!(p.b.stats().rtp_malformed, 1);
    // RFC 5761 rtcp-mux: an RR arriving on the RTP port is taken as RTCP.
    let rr_before = p.b.stats().rtcp.rr_received;
    let rr = [0x80u8, 201, 0, 1, 0, 0, 0, 9];
    p.b.handle_rtp(&rr, "127.0.0.1:40000".parse().unwrap(), p.now);
    assert_eq!(p.b.stats().rtcp.rr_received, rr_before + 1);
}

#[test]
fn relatch_after_nat_rebind_and_set_remote() {
    let mut p = Pair::new(Codec::Pcmu);
    p.run(200);
    let pkt = |seq: u16| {
        let mut b = [0u8; 172];
        b[0] = 0x80;
        b[2..4].copy_from_slice(&seq.to_be_bytes());
        b[8..12].copy_from_slice(&7u32.to_be_bytes());
        b
    };
    let other: std::net::SocketAddr = "127.0.0.1:41234".parse().unwrap();
    // While A keeps talking, another source is ignored.
    p.b.handle_rtp(&pkt(1), other, p.now);
    assert_eq!(p.b.stats().ignored_source, 1);
    // A goes quiet for more than 2 s (its NAT rebinds): the new source takes over.
    let later = p.now + Duration::from_millis(2500);
    p.b.handle_rtp(&pkt(2), other, later);
    while let Some(e) = p.b.poll_event() {
        p.b_events.push((Duration::ZERO, e));
    }
    assert!(
        p.b_events
            .iter()
            .any(|(_, e)| matches!(e, MediaEvent::Latched { remote } if *remote == other))
    );
    p.b.handle_timeout(later);
    let t = p.b.poll_transmit().unwrap();
    assert_eq!(t.dest, other);
    // A re-INVITE moves media somewhere else explicitly.
    let moved: std::net::SocketAddr = "127.0.0.1:45000".parse().unwrap();
    p.b.set_remote(moved, None);
    while p.b.poll_transmit().is_some() {}
    p.b.handle_timeout(later + Duration::from_millis(20));
    assert_eq!(p.b.poll_transmit().unwrap().dest, moved);
    assert_eq!(p.b.stats().ignored_source, 1);
}

#[test]
fn stalled_driver_skips_ticks_instead_of_bursting() {
    let mut p = Pair::new(Codec::Pcmu);
    p.run(100);
    let sent = p.b.stats().rtp_sent;
    let later = p.now + Duration::from_secs(1);
    p.b.handle_timeout(later);
    let st = p.b.stats();
    assert_eq!(st.rtp_sent, sent + 1);
    assert_eq!(st.ticks_skipped, 49);
    while p.b.poll_recording().is_some() {}
    // A small lag is caught up tick by tick, and every tick is recorded.
    let t = p.now + Duration::from_millis(1060);
    p.b.handle_timeout(t);
    assert_eq!(p.b.stats().rtp_sent, sent + 4);
    let mut recorded = 0;
    while let Some((caller, agent)) = p.b.poll_recording() {
        assert_eq!((caller.len(), agent.len()), (160, 160));
        recorded += 1;
    }
    assert_eq!(recorded, 3);
}

mod never_panics {
    use std::time::{Duration, Instant, SystemTime};

    use proptest::prelude::*;
    use voicegate_media::Codec;
    use voicegate_media::pipeline::CallMedia;

    use crate::common::{A_ADDR, B_ADDR, config};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Arbitrary datagrams on the RTP and RTCP ports, mostly shaped like RTP
        /// with the negotiated, telephone-event, CN or random payload types.
        #[test]
        fn arbitrary_datagrams(
            codec in prop_oneof![Just(Codec::Pcmu), Just(Codec::Pcma), Just(Codec::Opus)],
            packets in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..300), 0usize..5, any::<bool>(), 0u64..60),
                1..80),
        ) {
            let t0 = Instant::now();
            let mut media = CallMedia::new(&config(codec, A_ADDR, 3), t0, SystemTime::now()).unwrap();
            let src = B_ADDR.parse().unwrap();
            let mut now = t0;
            for (mut bytes, pt, rtcp, dt) in packets {
                if bytes.len() >= 12 && pt < 4 {
                    bytes[0] = 0x80 | (bytes[0] & 0x3f);
                    bytes[1] = (bytes[1] & 0x80) | [0u8, 8, 101, 13][pt];
                    if codec == Codec::Opus && pt < 2 {
                        bytes[1] = (bytes[1] & 0x80) | 111;
                    }
                }
                now += Duration::from_millis(dt);
                if rtcp {
                    media.handle_rtcp(&bytes, src, now);
                } else {
                    media.handle_rtp(&bytes, src, now);
                }
                media.handle_timeout(now);
                while media.poll_transmit().is_some() {}
                while media.poll_event().is_some() {}
                while media.poll_recording().is_some() {}
            }
        }
    }
}
