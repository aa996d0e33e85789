//! Property tests: print/parse round-trip, and no input makes parse or negotiation
//! panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use voicegate_sdp::{
    AnswerOrder, AnswerParams, Attribute, Bandwidth, Codec, CodecPreference, Connection,
    MediaDescription, OfferParams, Origin, SessionDescription, Timing, answer, offer, parse,
    process_answer,
};

/// A field without whitespace (`o=`, `c=`, `m=` fields, attribute names).
fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.+/*-]{1,10}"
}

/// Free text: printable ASCII or a few non-ASCII letters, no surrounding whitespace
/// (the parser trims lines, so such whitespace cannot round-trip).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[!-~é€]([ -~é€]{0,20}[!-~é€])?",]
}

fn connection() -> impl Strategy<Value = Connection> {
    (token(), token(), token()).prop_map(|(nettype, addrtype, address)| Connection {
        nettype,
        addrtype,
        address,
    })
}

fn bandwidth() -> impl Strategy<Value = Bandwidth> {
    ("[A-Za-z0-9_-]{1,6}", any::<u64>())
        .prop_map(|(bwtype, bandwidth)| Bandwidth { bwtype, bandwidth })
}

fn attribute() -> impl Strategy<Value = Attribute> {
    ("[A-Za-z0-9_-]{1,12}", option::of(text())).prop_map(|(name, value)| Attribute { name, value })
}

fn timing() -> impl Strategy<Value = Timing> {
    (any::<u64>(), any::<u64>(), vec(text(), 0..2)).prop_map(|(start, stop, repeats)| Timing {
        start,
        stop,
        repeats,
    })
}

fn media() -> impl Strategy<Value = MediaDescription> {
    (
        (
            token(),
            any::<u16>(),
            option::of(any::<u16>()),
            token(),
            vec(token(), 0..5),
        ),
        (
            option::of(text()),
            option::of(connection()),
            vec(bandwidth(), 0..2),
            option::of(text()),
            vec(attribute(), 0..6),
        ),
    )
        .prop_map(
            |(
                (media, port, port_count, proto, formats),
                (title, connection, bandwidths, encryption_key, attributes),
            )| MediaDescription {
                media,
                port,
                port_count,
                proto,
                formats,
                title,
                connection,
                bandwidths,
                encryption_key,
                attributes,
            },
        )
}

fn session() -> impl Strategy<Value = SessionDescription> {
    let origin = (token(), token(), token(), token(), token(), token()).prop_map(
        |(username, session_id, session_version, nettype, addrtype, address)| Origin {
            username,
            session_id,
            session_version,
            nettype,
            addrtype,
            address,
        },
    );
    (
        (
            origin,
            text(),
            option::of(text()),
            option::of(text()),
            vec(text(), 0..2),
            vec(text(), 0..2),
            option::of(connection()),
        ),
        (
            vec(bandwidth(), 0..2),
            vec(timing(), 0..3),
            option::of(text()),
            option::of(text()),
            vec(attribute(), 0..4),
            vec(media(), 0..4),
        ),
    )
        .prop_map(
            |(
                (origin, session_name, session_info, uri, emails, phones, connection),
                (bandwidths, timings, time_zones, encryption_key, attributes, media),
            )| SessionDescription {
                version: 0,
                origin,
                session_name,
                session_info,
                uri,
                emails,
                phones,
                connection,
                bandwidths,
                timings,
                time_zones,
                encryption_key,
                attributes,
                media,
            },
        )
}

/// Offers shaped like real ones, with the values negotiation looks at drawn from small
/// sets so that every branch (codec found or not, hold, IPv6, SRTP, ...) is reached.
fn plausible_offer() -> impl Strategy<Value = SessionDescription> {
    let address = prop_oneof![
        4 => Just("10.0.0.1"),
        1 => Just("0.0.0.0"),
        1 => Just("::1"),
        1 => Just("::"),
        1 => Just("host.example"),
        1 => Just("224.2.1.1/127"),
    ];
    let conn = address.prop_map(|a| Connection {
        nettype: "IN".into(),
        addrtype: if a.contains(':') { "IP6" } else { "IP4" }.into(),
        address: a.into(),
    });
    let pt = prop_oneof![
        Just("0".to_owned()),
        Just("8".to_owned()),
        Just("18".to_owned()),
        Just("96".to_owned()),
        Just("101".to_owned()),
        Just("255".to_owned()),
        Just("x".to_owned()),
    ];
    let encoding = prop_oneof![
        Just("PCMU/8000"),
        Just("pcma/8000"),
        Just("opus/48000/2"),
        Just("opus/48000"),
        Just("telephone-event/8000"),
        Just("telephone-event/48000"),
        Just("telephone-event/0"),
        Just("G729/8000"),
        Just("opus/48000/99999"),
    ];
    let attr = prop_oneof![
        (pt.clone(), encoding).prop_map(|(pt, e)| Attribute::value("rtpmap", format!("{pt} {e}"))),
        (pt.clone(), text()).prop_map(|(pt, t)| Attribute::value("fmtp", format!("{pt} {t}"))),
        any::<u32>().prop_map(|n| Attribute::value("ptime", n.to_string())),
        any::<u32>().prop_map(|n| Attribute::value("maxptime", n.to_string())),
        text().prop_map(|t| Attribute::value("rtcp", t)),
        Just(Attribute::property("rtcp-mux")),
        Just(Attribute::property("sendonly")),
        Just(Attribute::property("recvonly")),
        Just(Attribute::property("inactive")),
        Just(Attribute::property("sendrecv")),
    ];
    let m = (
        prop_oneof![4 => Just("audio"), 1 => Just("video"), 1 => Just("AUDIO")],
        prop_oneof![1 => Just(0u16), 4 => Just(4000), 1 => Just(65535)],
        prop_oneof![4 => Just("RTP/AVP"), 1 => Just("RTP/SAVP"), 1 => Just("rtp/avp")],
        vec(pt, 0..5),
        option::of(conn.clone()),
        vec(attr.clone(), 0..8),
    )
        .prop_map(|(media, port, proto, formats, connection, attributes)| {
            let mut m = MediaDescription::new(media, port, proto);
            m.formats = formats;
            m.connection = connection;
            m.attributes = attributes;
            m
        });
    (option::of(conn), vec(attr, 0..2), vec(m, 0..4)).prop_map(|(connection, attributes, media)| {
        let mut sdp = SessionDescription::new(Origin {
            username: "-".into(),
            session_id: "1".into(),
            session_version: "1".into(),
            nettype: "IN".into(),
            addrtype: "IP4".into(),
            address: "10.0.0.1".into(),
        });
        sdp.connection = connection;
        sdp.attributes = attributes;
        sdp.media = media;
        sdp
    })
}

fn answer_params() -> impl Strategy<Value = AnswerParams> {
    (
        prop_oneof![
            Just(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            Just(IpAddr::V6(Ipv6Addr::LOCALHOST))
        ],
        any::<u16>(),
        proptest::sample::subsequence(Codec::ALL.to_vec(), 1..=4),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_filter_map("needs an audio codec", |(ip, port, codecs, theirs, v)| {
            let mut p = AnswerParams::new(ip, port, CodecPreference::new(codecs).ok()?);
            p.session_version = v;
            if theirs {
                p.order = AnswerOrder::Offerer;
            }
            Some(p)
        })
}

/// Checks every successful answer must pass.
fn check_answer(offer_sdp: &SessionDescription, params: &AnswerParams) {
    let Ok(n) = answer(offer_sdp, params) else {
        return;
    };
    assert_eq!(n.answer.media.len(), offer_sdp.media.len());
    for (a, o) in n.answer.media.iter().zip(&offer_sdp.media) {
        assert_eq!(a.media, o.media);
    }
    let accepted = &n.answer.media[n.media.mline_index];
    assert_eq!(accepted.port, params.local_rtp_port);
    assert!(accepted.media.eq_ignore_ascii_case("audio"));
    assert!(params.codecs.contains(n.media.codec));
    assert_eq!(parse(&n.answer.to_string()).as_ref(), Ok(&n.answer));
    // The answer must also be acceptable to the UAC side of our own code.
    if n.answer.media[n.media.mline_index].port != 0 {
        let back = process_answer(offer_sdp, &n.answer);
        assert!(back.is_ok(), "{back:?}\n{offer_sdp}\n{}", n.answer);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn print_then_parse_round_trips(sdp in session()) {
        let text = sdp.to_string();
        prop_assert_eq!(parse(&text), Ok(sdp.clone()));
        // Bare LF bodies mean the same.
        prop_assert_eq!(parse(&text.replace("\r\n", "\n")), Ok(sdp));
    }

    #[test]
    fn parse_never_panics_on_strings(s in any::<String>()) {
        let _ = parse(&s);
    }

    #[test]
    fn parse_never_panics_on_bytes(bytes in vec(any::<u8>(), 0..512)) {
        let _ = parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn parse_and_negotiate_never_panic_on_sdp_like_lines(
        lines in vec(
            (
                prop_oneof![
                    Just("v="), Just("o="), Just("s="), Just("c="), Just("b="), Just("t="),
                    Just("r="), Just("m="), Just("m=audio "), Just("a="), Just("a=rtpmap:"),
                    Just("a=fmtp:"), Just("a=ptime:"), Just("a=rtcp:"), Just("x="), Just(""),
                ],
                "[ -~\t\r]{0,40}",
            ),
            0..20,
        ),
        params in answer_params(),
    ) {
        let body = format!(
            "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\n{}",
            lines.iter().map(|(k, v)| format!("{k}{v}\n")).collect::<String>()
        );
        if let Ok(sdp) = parse(&body) {
            check_answer(&sdp, &params);
            let ours = offer(&OfferParams::new(params.local_addr, 1, params.codecs.clone()));
            let _ = process_answer(&ours, &sdp);
        }
    }

    #[test]
    fn negotiate_never_panics_on_generated_descriptions(sdp in session(), params in answer_params()) {
        check_answer(&sdp, &params);
        let ours = offer(&OfferParams::new(params.local_addr, 1, params.codecs.clone()));
        let _ = process_answer(&ours, &sdp);
        let _ = process_answer(&sdp, &sdp);
    }

    #[test]
    fn plausible_offers_negotiate_consistently(sdp in plausible_offer(), params in answer_params()) {
        check_answer(&sdp, &params);
        if let Err(e) = answer(&sdp, &params) {
            let header = e.warning_header();
            prop_assert!(!header.chars().any(char::is_control), "{}", header);
            prop_assert_eq!(e.sip_status(), 488);
        }
    }

    #[test]
    fn our_offers_are_accepted_by_our_answerer(params in answer_params(), ours in answer_params()) {
        let o = offer(&OfferParams::new(ours.local_addr, ours.local_rtp_port, ours.codecs.clone()));
        prop_assert_eq!(parse(&o.to_string()), Ok(o.clone()));
        let common = ours.codecs.audio().any(|c| params.codecs.contains(c));
        let same_family = ours.local_addr.is_ipv4() == params.local_addr.is_ipv4();
        let result = answer(&o, &params);
        prop_assert_eq!(result.is_ok(), common && same_family && ours.local_rtp_port != 0, "{:?}", result);
        check_answer(&o, &params);
    }
}
