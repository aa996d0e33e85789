//! The SIP entry point: whatever arrives on a socket goes through the parser,
//! the stream framer and the endpoint, none of which may panic.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use voicegate_sip::endpoint::{ConnectionId, Endpoint, EndpointConfig, Peer, TransportKind};
use voicegate_sip::framing::StreamFramer;
use voicegate_sip::message::parse;

fuzz_target!(|data: &[u8]| {
    let _ = parse(data);

    let mut framer = StreamFramer::new();
    framer.push(data);
    while let Ok(Some(_)) = framer.next_frame() {}

    let mut ep = Endpoint::new(EndpointConfig::default(), 1);
    let now = Instant::now();
    for transport in [TransportKind::Udp, TransportKind::Tcp] {
        let peer = Peer {
            transport,
            addr: "127.0.0.1:5070".parse().unwrap(),
            connection: (transport == TransportKind::Tcp).then_some(ConnectionId(1)),
        };
        ep.handle_input(peer, data, now);
        while ep.poll_transmit().is_some() || ep.poll_event().is_some() {}
    }
    ep.handle_timeout(now + Duration::from_secs(64));
    while ep.poll_transmit().is_some() || ep.poll_event().is_some() {}
});
