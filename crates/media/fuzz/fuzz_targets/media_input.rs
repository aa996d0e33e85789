//! Peer input into one call's media core: the first byte picks the codec, then
//! each record is `[kind, len, bytes...]` fed to the RTP or RTCP handler, with a
//! 20 ms tick after each. Nothing may panic.
#![no_main]

use std::time::{Duration, Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use voicegate_media::pipeline::{CallMedia, MediaConfig};
use voicegate_media::{Codec, NegotiatedParams, dtmf, rtp};

fuzz_target!(|data: &[u8]| {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let codec = [Codec::Pcmu, Codec::Pcma, Codec::Opus][first as usize % 3];
    let peer = "127.0.0.1:4000".parse().unwrap();
    let t0 = Instant::now();
    let Ok(mut media) = CallMedia::new(
        &MediaConfig::new(NegotiatedParams::simple(codec, peer)),
        t0,
        SystemTime::now(),
    ) else {
        return;
    };
    let mut now = t0;
    while rest.len() >= 2 {
        let kind = rest[0];
        let len = (rest[1] as usize).min(rest.len() - 2);
        let bytes = &rest[2..2 + len];
        rest = &rest[2 + len..];
        let _ = rtp::parse(bytes);
        let _ = dtmf::EventPayload::parse(bytes);
        if kind & 1 == 0 {
            media.handle_rtp(bytes, peer, now);
        } else {
            media.handle_rtcp(bytes, peer, now);
        }
        now += Duration::from_millis(20);
        media.handle_timeout(now);
        while media.poll_transmit().is_some() {}
        while media.poll_event().is_some() {}
        while media.poll_recording().is_some() {}
    }
});
