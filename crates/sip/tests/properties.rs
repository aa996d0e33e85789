//! Property tests: parse(print(msg)) round-trips, and no input panics the
//! parser, the stream framer or the endpoint.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use rsip::Header;
use rsip::headers::UntypedHeader;
use voicegate_sip::endpoint::{ConnectionId, Endpoint, EndpointConfig, Peer, TransportKind};
use voicegate_sip::framing::StreamFramer;
use voicegate_sip::message::{parse, to_bytes};

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9]{1,12}"
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        (1u8..=254, 0u8..=255, 0u8..=255, 1u8..=254)
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        "[a-z]{1,8}\\.(example|test)\\.(com|org)",
    ]
}

fn method() -> impl Strategy<Value = rsip::Method> {
    prop_oneof![
        Just(rsip::Method::Invite),
        Just(rsip::Method::Ack),
        Just(rsip::Method::Bye),
        Just(rsip::Method::Cancel),
        Just(rsip::Method::Options),
        Just(rsip::Method::Register),
        Just(rsip::Method::Info),
        Just(rsip::Method::Message),
        Just(rsip::Method::Refer),
        Just(rsip::Method::Notify),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        "[ -~\r\n]{1,200}".prop_map(String::into_bytes),
    ]
}

/// Headers every request carries, in a canonical printed form.
fn common_headers() -> impl Strategy<Value = Vec<Header>> {
    (
        host(),
        1024u16..65535,
        token(),
        token(),
        host(),
        token(),
        token(),
        0u32..100_000,
        0u8..=70,
        proptest::option::of((
            "[A-Z][a-z]{1,8}",
            "[a-zA-Z0-9]([a-zA-Z0-9 ;=.]{0,30}[a-zA-Z0-9])?",
        )),
    )
        .prop_map(|(vh, vp, branch, fu, fh, tag, callid, seq, mf, extra)| {
            let mut h = vec![
                Header::Via(rsip::headers::Via::new(format!(
                    "SIP/2.0/UDP {vh}:{vp};branch=z9hG4bK{branch}"
                ))),
                Header::MaxForwards(rsip::headers::MaxForwards::new(mf.to_string())),
                Header::From(rsip::headers::From::new(format!(
                    "<sip:{fu}@{fh}>;tag={tag}"
                ))),
                Header::To(rsip::headers::To::new(format!("<sip:{fu}@{fh}>"))),
                Header::CallId(rsip::headers::CallId::new(format!("{callid}@{fh}"))),
                Header::CSeq(rsip::headers::CSeq::new(format!("{seq} INVITE"))),
            ];
            if let Some((name, value)) = extra {
                h.push(Header::Other(format!("X-{name}"), value));
            }
            h
        })
}

fn request() -> impl Strategy<Value = rsip::SipMessage> {
    (
        method(),
        token(),
        host(),
        1024u16..65535,
        common_headers(),
        body(),
    )
        .prop_map(|(method, user, host, port, mut headers, body)| {
            // CSeq carries the request's method (RFC 3261 8.1.1.5).
            for h in headers.iter_mut() {
                if let Header::CSeq(c) = h {
                    let n = c.value().split_whitespace().next().unwrap().to_string();
                    *c = rsip::headers::CSeq::new(format!("{n} {method}"));
                }
            }
            let mut req = rsip::Request {
                method,
                uri: rsip::Uri::try_from(format!("sip:{user}@{host}:{port}").as_str()).unwrap(),
                version: rsip::Version::V2,
                headers: headers.into(),
                body,
            };
            req.headers
                .push(Header::ContentLength(rsip::headers::ContentLength::new(
                    req.body.len().to_string(),
                )));
            req.into()
        })
}

fn response() -> impl Strategy<Value = rsip::SipMessage> {
    (
        prop_oneof![
            Just(100u16),
            Just(180),
            Just(200),
            Just(404),
            Just(486),
            Just(503)
        ],
        common_headers(),
        body(),
    )
        .prop_map(|(code, headers, body)| {
            let mut resp = rsip::Response {
                status_code: code.into(),
                version: rsip::Version::V2,
                headers: headers.into(),
                body,
            };
            resp.headers
                .push(Header::ContentLength(rsip::headers::ContentLength::new(
                    resp.body.len().to_string(),
                )));
            resp.into()
        })
}

fn endpoint() -> Endpoint {
    Endpoint::new(EndpointConfig::default(), 7)
}

const INVITE: &str = "INVITE sip:agent@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:agent@127.0.0.1>\r\n\
From: <sip:caller@127.0.0.1>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@127.0.0.1\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:caller@127.0.0.1:5070>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\r\nv=0\n";

fn feed(ep: &mut Endpoint, transport: TransportKind, bytes: &[u8], now: Instant) {
    let peer = Peer {
        transport,
        addr: "127.0.0.1:5070".parse().unwrap(),
        connection: (transport == TransportKind::Tcp).then_some(ConnectionId(1)),
    };
    ep.handle_input(peer, bytes, now);
    while ep.poll_transmit().is_some() || ep.poll_event().is_some() {}
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn request_round_trips(msg in request()) {
        let printed = to_bytes(msg.clone());
        let parsed = parse(&printed).expect("printed request parses");
        prop_assert_eq!(parsed, msg);
    }

    #[test]
    fn response_round_trips(msg in response()) {
        let printed = to_bytes(msg.clone());
        let parsed = parse(&printed).expect("printed response parses");
        prop_assert_eq!(parsed, msg);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse(&bytes);
        let mut ep = endpoint();
        let now = Instant::now();
        feed(&mut ep, TransportKind::Udp, &bytes, now);
        feed(&mut ep, TransportKind::Tcp, &bytes, now);
        ep.handle_timeout(now + Duration::from_secs(64));
        let mut framer = StreamFramer::new();
        framer.push(&bytes);
        while let Ok(Some(_)) = framer.next_frame() {}
    }

    /// Valid INVITEs with bytes flipped, cut or inserted reach the deep
    /// parser paths random bytes rarely do.
    #[test]
    fn mutated_invites_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = INVITE.as_bytes().to_vec();
        for (at, byte, op) in edits {
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => { bytes.remove(i); }
            }
        }
        let mut ep = endpoint();
        let now = Instant::now();
        feed(&mut ep, TransportKind::Udp, &bytes, now);
        let truncated = &bytes[..cut.index(bytes.len())];
        feed(&mut ep, TransportKind::Udp, truncated, now);
        for step in 1..=70 {
            ep.handle_timeout(now + Duration::from_secs(step));
            while ep.poll_transmit().is_some() || ep.poll_event().is_some() {}
        }
    }
}

proptest! {
    /// Digest, sipfrag and Session-Expires parsers take peer input.
    #[test]
    fn header_parsers_never_panic(s in "\\PC{0,200}", t in "(Digest|digest) ([a-z]{1,8}=(\"[^\"]{0,20}\"?|[a-zA-Z0-9/+=-]{0,20}),? ?){0,8}") {
        use voicegate_sip::auth::{Authorization, Challenge};
        for v in [&s, &t] {
            let _ = Challenge::parse(v);
            let _ = Authorization::parse(v);
            let _ = voicegate_sip::refer::parse_sipfrag(v.as_bytes());
            let _ = voicegate_sip::session_timer::SessionExpires::parse(v);
            let _ = voicegate_sip::session_timer::parse_min_se(v);
        }
    }

    /// What we print for a challenge parses back to the same challenge.
    #[test]
    fn challenge_round_trips(realm in "[ -~]{1,30}", nonce in "[a-zA-Z0-9+/=]{1,40}", stale in any::<bool>()) {
        use voicegate_sip::auth::{Algorithm, Challenge};
        let mut c = Challenge::new(realm, nonce, Algorithm::Sha256);
        c.stale = stale;
        prop_assert_eq!(Challenge::parse(&c.to_header_value()).unwrap(), c);
    }
}
