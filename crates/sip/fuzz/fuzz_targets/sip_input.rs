//! The SIP entry point: whatever arrives on a socket goes through the parser,
//! the stream framer and the endpoint (plain, and with session timers and
//! re-INVITEs to the application), and the header-value parsers for digest,
//! sipfrag and Session-Expires, none of which may panic.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use voicegate_sip::endpoint::{ConnectionId, Endpoint, EndpointConfig, Peer, TransportKind};
use voicegate_sip::framing::StreamFramer;
use voicegate_sip::message::parse;

fuzz_target!(|data: &[u8]| {
    let _ = parse(data);
    let _ = voicegate_sip::refer::parse_sipfrag(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = voicegate_sip::auth::Challenge::parse(text);
        let _ = voicegate_sip::auth::Authorization::parse(text);
        let _ = voicegate_sip::session_timer::SessionExpires::parse(text);
    }

    let mut framer = StreamFramer::new();
    framer.push(data);
    while let Ok(Some(_)) = framer.next_frame() {}

    let timers = EndpointConfig {
        session_expires: Some(Duration::from_secs(90)),
        reinvite_to_app: true,
        ..EndpointConfig::default()
    };
    for cfg in [EndpointConfig::default(), timers] {
        endpoint(cfg, data);
    }
});

fn endpoint(cfg: EndpointConfig, data: &[u8]) {
    let mut ep = Endpoint::new(cfg, 1);
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
}
