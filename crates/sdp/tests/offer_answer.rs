//! Offer/answer against SDP bodies shaped like those real peers send.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use voicegate_sdp::{
    AnswerOrder, AnswerParams, Codec, CodecPreference, Direction, NegotiationError, OfferParams,
    SessionDescription, TelephoneEventFormat, answer, offer, process_answer,
};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));

/// SIPp 3.x `-sn uac` default offer, as SIPp sends it (bare LF is also tested below).
const SIPP_UAC: &str = "v=0\r\n\
o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n\
s=-\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

/// A baresip offer: Opus on a dynamic PT, G.711, telephone-event/8000 only, and the
/// extra attributes baresip adds.
const BARESIP: &str = "v=0\r\n\
o=- 2237437666 647389653 IN IP4 192.168.168.187\r\n\
s=-\r\n\
c=IN IP4 192.168.168.187\r\n\
t=0 0\r\n\
a=tool:baresip 3.10.0\r\n\
m=audio 8570 RTP/AVP 98 9 8 0 101\r\n\
b=AS:64\r\n\
a=rtpmap:98 opus/48000/2\r\n\
a=fmtp:98 stereo=0;sprop-stereo=0;maxaveragebitrate=28000;useinbandfec=1\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=sendrecv\r\n\
a=rtcp-rsize\r\n\
a=ssrc:3299428848 cname:sip:bob@example.com\r\n\
a=mid:0\r\n\
a=minptime:20\r\n\
a=ptime:20\r\n\
a=label:1\r\n";

/// A carrier (SBC) offer: G.711 both laws, G.729, telephone-event/8000, 30 ms ptime,
/// session name and origin address unlike the media address.
const CARRIER: &str = "v=0\r\n\
o=- 1700000000 1700000001 IN IP4 203.0.113.5\r\n\
s=SBC\r\n\
c=IN IP4 198.51.100.20\r\n\
t=0 0\r\n\
m=audio 31000 RTP/AVP 0 8 18 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:18 G729/8000\r\n\
a=fmtp:18 annexb=no\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:30\r\n\
a=maxptime:40\r\n\
a=sendrecv\r\n";

fn prefs(names: &[&str]) -> CodecPreference {
    CodecPreference::from_names(names).unwrap()
}

fn params(names: &[&str]) -> AnswerParams {
    let mut p = AnswerParams::new(LOCAL, 20000, prefs(names));
    p.session_id = 42;
    p.session_version = 1;
    p
}

fn sdp(text: &str) -> SessionDescription {
    text.parse().unwrap()
}

#[test]
fn sipp_uac_pcmu_only() {
    let n = answer(
        &sdp(SIPP_UAC),
        &params(&["opus", "PCMU", "PCMA", "telephone-event"]),
    )
    .unwrap();
    assert_eq!(
        n.answer.to_string(),
        "v=0\r\n\
         o=voicegate 42 1 IN IP4 192.0.2.10\r\n\
         s=-\r\n\
         c=IN IP4 192.0.2.10\r\n\
         t=0 0\r\n\
         m=audio 20000 RTP/AVP 0\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=ptime:20\r\n\
         a=sendrecv\r\n"
    );
    let m = n.media;
    assert_eq!(m.codec, Codec::Pcmu);
    assert_eq!((m.payload_type, m.recv_payload_type), (0, 0));
    assert_eq!((m.clock_rate_hz, m.channels), (8000, 1));
    assert_eq!(m.fmtp, None);
    assert_eq!(m.ptime_ms, 20);
    assert_eq!(m.telephone_event, None);
    assert_eq!(
        m.remote_rtp,
        "127.0.0.1:6000".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        m.remote_rtcp,
        "127.0.0.1:6001".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(m.direction, Direction::SendRecv);
    assert_eq!(m.mline_index, 0);
}

#[test]
fn sipp_uac_with_bare_lf_is_the_same() {
    assert_eq!(sdp(&SIPP_UAC.replace("\r\n", "\n")), sdp(SIPP_UAC));
}

#[test]
fn baresip_opus_with_telephone_event_8000() {
    let offer = sdp(BARESIP);
    let n = answer(&offer, &params(&["opus", "PCMU", "telephone-event"])).unwrap();
    let m = &n.media;
    assert_eq!(m.codec, Codec::Opus);
    assert_eq!(m.payload_type, 98, "the offerer's dynamic PT is reused");
    assert_eq!((m.clock_rate_hz, m.channels), (48000, 2));
    assert_eq!(
        m.fmtp.as_deref(),
        Some("stereo=0;sprop-stereo=0;maxaveragebitrate=28000;useinbandfec=1")
    );
    // Only /8000 offered: taken although Opus runs at 48 kHz.
    assert_eq!(
        m.telephone_event,
        Some(TelephoneEventFormat {
            payload_type: 101,
            recv_payload_type: 101,
            clock_rate_hz: 8000
        })
    );
    let audio = &n.answer.media[0];
    assert_eq!(audio.formats, vec!["98", "101"]);
    assert_eq!(audio.attribute("rtpmap"), Some("98 opus/48000/2"));
    assert_eq!(audio.fmtp(98), Some("useinbandfec=1"));
    assert_eq!(audio.fmtp(101), Some("0-15"));
    assert_eq!(audio.direction(), Some(Direction::SendRecv));
}

#[test]
fn carrier_g711_mirrors_ptime_and_telephone_event_fmtp() {
    let n = answer(&sdp(CARRIER), &params(&["PCMA", "PCMU", "telephone-event"])).unwrap();
    let m = &n.media;
    assert_eq!(m.codec, Codec::Pcma, "our order: PCMA before PCMU");
    assert_eq!(m.payload_type, 8);
    assert_eq!(m.ptime_ms, 30);
    assert_eq!(
        m.remote_rtp,
        "198.51.100.20:31000".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(m.telephone_event.map(|t| t.payload_type), Some(101));
    let text = n.answer.to_string();
    assert!(
        text.ends_with(
            "m=audio 20000 RTP/AVP 8 101\r\n\
             a=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-16\r\n\
             a=ptime:30\r\n\
             a=sendrecv\r\n"
        ),
        "{text}"
    );
}

#[test]
fn offerer_order_when_asked() {
    let mut p = params(&["PCMA", "PCMU"]);
    p.order = AnswerOrder::Offerer;
    assert_eq!(answer(&sdp(CARRIER), &p).unwrap().media.codec, Codec::Pcmu);
    p.order = AnswerOrder::Ours;
    assert_eq!(answer(&sdp(CARRIER), &p).unwrap().media.codec, Codec::Pcma);
}

#[test]
fn telephone_event_not_answered_unless_configured() {
    let n = answer(&sdp(CARRIER), &params(&["PCMU"])).unwrap();
    assert_eq!(n.media.telephone_event, None);
    assert_eq!(n.answer.media[0].formats, vec!["0"]);
}

#[test]
fn g729_only_is_no_common_codec_with_488_and_305_warning() {
    let offer = sdp(
        "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                     m=audio 4000 RTP/AVP 18 101\r\na=rtpmap:18 G729/8000\r\n\
                     a=rtpmap:101 telephone-event/8000\r\n",
    );
    let err = answer(
        &offer,
        &params(&["PCMU", "PCMA", "opus", "telephone-event"]),
    )
    .unwrap_err();
    assert_eq!(
        err,
        NegotiationError::NoCommonCodec {
            offered: vec!["G729/8000".into(), "telephone-event/8000".into()]
        }
    );
    assert_eq!(err.sip_status(), 488);
    assert_eq!(
        err.warning_header(),
        "305 voicegate \"Incompatible media format: no common codec; offered G729/8000, \
         telephone-event/8000\""
    );
}

#[test]
fn static_g729_without_rtpmap_is_named_in_the_error() {
    let offer = sdp(
        "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                     m=audio 4000 RTP/AVP 18 3\r\n",
    );
    let err = answer(&offer, &params(&["PCMU"])).unwrap_err();
    assert_eq!(
        err,
        NegotiationError::NoCommonCodec {
            offered: vec!["G729/8000".into(), "GSM/8000".into()]
        }
    );
}

#[test]
fn static_payload_types_without_rtpmap_and_any_case_names() {
    let offer = sdp(
        "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                     m=audio 4000 RTP/AVP 8\r\n",
    );
    assert_eq!(
        answer(&offer, &params(&["PCMA"])).unwrap().media.codec,
        Codec::Pcma
    );
    let offer = sdp(
        "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                     m=audio 4000 RTP/AVP 96\r\na=rtpmap:96 pcmu/8000\r\n",
    );
    let n = answer(&offer, &params(&["PCMU"])).unwrap();
    assert_eq!((n.media.codec, n.media.payload_type), (Codec::Pcmu, 96));
}

fn hold_offer(extra_session: &str, connection: &str, media_attr: &str) -> SessionDescription {
    sdp(&format!(
        "v=0\r\no=- 1 2 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 {connection}\r\nt=0 0\r\n\
         {extra_session}m=audio 4000 RTP/AVP 0\r\n{media_attr}"
    ))
}

#[test]
fn hold_offers_are_mirrored() {
    let p = params(&["PCMU"]);
    let cases = [
        ("", "10.0.0.1", "a=sendonly\r\n", Direction::RecvOnly),
        ("", "10.0.0.1", "a=recvonly\r\n", Direction::SendOnly),
        ("", "10.0.0.1", "a=inactive\r\n", Direction::Inactive),
        ("a=sendonly\r\n", "10.0.0.1", "", Direction::RecvOnly),
        // Media level overrides session level.
        (
            "a=inactive\r\n",
            "10.0.0.1",
            "a=sendrecv\r\n",
            Direction::SendRecv,
        ),
        // RFC 3264 8.4 old-style hold.
        ("", "0.0.0.0", "", Direction::RecvOnly),
        ("", "0.0.0.0", "a=sendonly\r\n", Direction::RecvOnly),
        ("", "0.0.0.0", "a=inactive\r\n", Direction::Inactive),
        ("", "0.0.0.0", "a=recvonly\r\n", Direction::Inactive),
    ];
    for (session, c, media, expected) in cases {
        let n = answer(&hold_offer(session, c, media), &p).unwrap();
        assert_eq!(n.media.direction, expected, "{session:?} {c} {media:?}");
        assert_eq!(n.answer.media_direction(0), Some(expected));
    }
}

#[test]
fn audio_and_video_answer_keeps_m_line_count_and_order() {
    let offer = sdp(
        "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                     m=video 5002 RTP/AVP 96 97\r\na=rtpmap:96 H264/90000\r\n\
                     a=rtpmap:97 VP8/90000\r\n\
                     m=audio 5000 RTP/AVP 0 8\r\n\
                     m=application 5004 UDP/BFCP *\r\n",
    );
    let n = answer(&offer, &params(&["PCMU"])).unwrap();
    assert_eq!(n.media.mline_index, 1);
    let lines: Vec<String> = n
        .answer
        .media
        .iter()
        .map(|m| format!("{} {} {} {}", m.media, m.port, m.proto, m.formats.join(" ")))
        .collect();
    assert_eq!(
        lines,
        vec![
            "video 0 RTP/AVP 96 97",
            "audio 20000 RTP/AVP 0",
            "application 0 UDP/BFCP *"
        ]
    );
    assert!(n.answer.media[0].attributes.is_empty());
}

#[test]
fn rejected_and_secure_audio_lines_are_skipped() {
    let offer = sdp(
        "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                     m=audio 0 RTP/AVP 0\r\n\
                     m=audio 5000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:xyz\r\n\
                     m=audio 5002 RTP/AVP 0\r\n",
    );
    let n = answer(&offer, &params(&["PCMU"])).unwrap();
    assert_eq!(n.media.mline_index, 2);
    let ports: Vec<u16> = n.answer.media.iter().map(|m| m.port).collect();
    assert_eq!(ports, vec![0, 0, 20000]);
    assert_eq!(n.answer.media[1].proto, "RTP/SAVP");
}

#[test]
fn only_one_audio_stream_is_accepted() {
    let offer = sdp(
        "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                     m=audio 5000 RTP/AVP 0\r\nm=audio 5002 RTP/AVP 0\r\n",
    );
    let n = answer(&offer, &params(&["PCMU"])).unwrap();
    let ports: Vec<u16> = n.answer.media.iter().map(|m| m.port).collect();
    assert_eq!(ports, vec![20000, 0]);
}

#[test]
fn srtp_only_is_incompatible_transport() {
    let offer = sdp(
        "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                     m=audio 5000 RTP/SAVP 0\r\n\
                     m=audio 5002 UDP/TLS/RTP/SAVPF 111\r\n",
    );
    let err = answer(&offer, &params(&["PCMU"])).unwrap_err();
    assert_eq!(
        err,
        NegotiationError::UnsupportedTransport {
            offered: vec!["RTP/SAVP".into(), "UDP/TLS/RTP/SAVPF".into()]
        }
    );
    assert_eq!(err.sip_status(), 488);
    assert!(
        err.warning_header()
            .starts_with("302 voicegate \"Incompatible transport protocol")
    );
}

#[test]
fn no_audio_is_media_type_not_available() {
    let offer = sdp(
        "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                     m=video 5002 RTP/AVP 96\r\nm=audio 0 RTP/AVP 0\r\n",
    );
    let err = answer(&offer, &params(&["PCMU"])).unwrap_err();
    assert_eq!(
        err,
        NegotiationError::NoAudioStream {
            offered: vec!["video".into(), "audio".into()]
        }
    );
    assert!(
        err.warning_header()
            .starts_with("304 voicegate \"Media type not available")
    );
    let empty = sdp("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\n");
    assert!(matches!(
        answer(&empty, &params(&["PCMU"])),
        Err(NegotiationError::NoAudioStream { .. })
    ));
}

#[test]
fn ipv6_offer_gets_ipv6_answer() {
    let offer = sdp("v=0\r\no=- 1 1 IN IP6 2001:db8::1\r\ns=-\r\nt=0 0\r\n\
                     m=audio 5000 RTP/AVP 0\r\nc=IN IP6 2001:db8::1\r\n");
    let mut p = params(&["PCMU"]);
    p.local_addr = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let n = answer(&offer, &p).unwrap();
    assert_eq!(
        n.media.remote_rtp,
        "[2001:db8::1]:5000".parse::<SocketAddr>().unwrap()
    );
    let text = n.answer.to_string();
    assert!(text.contains("o=voicegate 42 1 IN IP6 ::1\r\n"), "{text}");
    assert!(text.contains("c=IN IP6 ::1\r\n"), "{text}");

    // Our IPv4 socket cannot reach an IPv6 peer.
    let err = answer(&offer, &params(&["PCMU"])).unwrap_err();
    assert!(matches!(
        err,
        NegotiationError::AddressFamilyMismatch { mline: 0, .. }
    ));
    assert!(err.warning_header().starts_with("301 voicegate "));
}

#[test]
fn connection_problems() {
    let no_c = sdp("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n");
    assert_eq!(
        answer(&no_c, &params(&["PCMU"])).unwrap_err(),
        NegotiationError::MissingConnection { mline: 0 }
    );
    let fqdn = sdp(
        "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 media.example.com\r\n\
                    t=0 0\r\nm=audio 5000 RTP/AVP 0\r\n",
    );
    assert_eq!(
        answer(&fqdn, &params(&["PCMU"])).unwrap_err(),
        NegotiationError::UnsupportedAddress {
            mline: 0,
            address: "media.example.com".into()
        }
    );
}

#[test]
fn rtcp_attribute_and_rtcp_mux() {
    let base = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                m=audio 5000 RTP/AVP 0\r\n";
    let n = answer(
        &sdp(&format!("{base}a=rtcp:5009 IN IP4 10.0.0.9\r\n")),
        &params(&["PCMU"]),
    )
    .unwrap();
    assert_eq!(
        n.media.remote_rtcp,
        "10.0.0.9:5009".parse::<SocketAddr>().unwrap()
    );
    let n = answer(&sdp(&format!("{base}a=rtcp:5009\r\n")), &params(&["PCMU"])).unwrap();
    assert_eq!(
        n.media.remote_rtcp,
        "10.0.0.1:5009".parse::<SocketAddr>().unwrap()
    );
    let n = answer(&sdp(&format!("{base}a=rtcp-mux\r\n")), &params(&["PCMU"])).unwrap();
    assert_eq!(
        n.media.remote_rtcp,
        "10.0.0.1:5000".parse::<SocketAddr>().unwrap()
    );
}

#[test]
fn telephone_event_at_the_audio_clock_is_preferred() {
    // rtpengine-style transcoding offer: both /48000 and /8000.
    let offer = sdp(
        "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                     m=audio 11492 RTP/AVP 8 96 97 101\r\na=rtpmap:8 PCMA/8000\r\n\
                     a=rtpmap:96 opus/48000/2\r\na=fmtp:96 useinbandfec=1\r\n\
                     a=rtpmap:97 telephone-event/48000\r\na=fmtp:97 0-15\r\n\
                     a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n\
                     a=ptime:20\r\na=maxptime:140\r\n",
    );
    let n = answer(&offer, &params(&["opus", "PCMA", "telephone-event"])).unwrap();
    assert_eq!(n.media.codec, Codec::Opus);
    assert_eq!(
        n.media
            .telephone_event
            .map(|t| (t.payload_type, t.clock_rate_hz)),
        Some((97, 48000))
    );
    let n = answer(&offer, &params(&["PCMA", "opus", "telephone-event"])).unwrap();
    assert_eq!(
        n.media
            .telephone_event
            .map(|t| (t.payload_type, t.clock_rate_hz)),
        Some((101, 8000))
    );
}

#[test]
fn payload_type_mapped_twice_picks_the_matching_clock() {
    // A carrier mapping PT 101 twice (seen in the wild, pjsip issue 2675).
    let offer = sdp(
        "v=0\r\no=- 0 0 IN IP4 217.0.26.165\r\ns=on transit\r\nc=IN IP4 10.100.1.21\r\n\
                     t=0 0\r\nm=audio 7882 RTP/AVP 8 101 101 18 0\r\nb=AS:80\r\n\
                     a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/16000\r\n\
                     a=rtpmap:101 telephone-event/8000\r\na=rtpmap:18 G729/8000\r\n\
                     a=rtpmap:0 PCMU/8000\r\n",
    );
    let n = answer(&offer, &params(&["PCMA", "telephone-event"])).unwrap();
    assert_eq!(
        n.media
            .telephone_event
            .map(|t| (t.payload_type, t.clock_rate_hz)),
        Some((101, 8000))
    );
}

#[test]
fn ptime_maxptime_and_bad_values() {
    let base = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n";
    let case = |session: &str, media: &str| {
        let offer = sdp(&format!("{base}{session}m=audio 5000 RTP/AVP 0\r\n{media}"));
        answer(&offer, &params(&["PCMU"])).unwrap().media.ptime_ms
    };
    assert_eq!(case("", "a=ptime:40\r\n"), 40);
    assert_eq!(
        case("a=ptime:30\r\n", ""),
        30,
        "session-level ptime from sloppy peers"
    );
    assert_eq!(case("", "a=ptime:40\r\na=maxptime:30\r\n"), 30);
    assert_eq!(case("", "a=maxptime:10\r\n"), 10);
    assert_eq!(case("", "a=ptime:0\r\n"), 20);
    assert_eq!(case("", "a=ptime:100000\r\n"), 20);
    assert_eq!(case("", "a=ptime:abc\r\n"), 20);
    assert_eq!(case("", "a=ptime:20.0\r\n"), 20);
}

#[test]
fn reanswer_for_reinvite_increments_version_and_copies_timing() {
    let mut p = params(&["PCMU"]);
    let first = answer(&sdp(SIPP_UAC), &p).unwrap().answer;
    p.session_version += 1;
    let hold = sdp(&SIPP_UAC.replace(
        "a=rtpmap:0 PCMU/8000\r\n",
        "a=rtpmap:0 PCMU/8000\r\na=sendonly\r\n",
    ));
    let second = answer(&hold, &p).unwrap();
    assert_eq!(first.origin.session_id, second.answer.origin.session_id);
    assert_eq!(second.answer.origin.session_version, "2");
    assert_eq!(second.media.direction, Direction::RecvOnly);

    let timed = sdp(&SIPP_UAC.replace("t=0 0", "t=3034423619 3042462419\r\nr=604800 3600 0 90000"));
    let a = answer(&timed, &p).unwrap().answer;
    assert_eq!(a.timings, timed.timings);
}

#[test]
fn answers_parse_back_to_themselves() {
    for text in [SIPP_UAC, BARESIP, CARRIER] {
        let a = answer(
            &sdp(text),
            &params(&["opus", "PCMU", "PCMA", "telephone-event"]),
        )
        .unwrap()
        .answer;
        assert_eq!(sdp(&a.to_string()), a);
    }
}

#[test]
fn warning_header_escapes_peer_text() {
    let offer = sdp(
        "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                     m=audio 5000 RTP/AVP 96\r\na=rtpmap:96 EVIL\"\\\u{7}/8000\r\n",
    );
    let err = answer(&offer, &params(&["PCMU"])).unwrap_err();
    assert_eq!(
        err.warning_header(),
        "305 voicegate \"Incompatible media format: no common codec; offered EVIL\\\"\\\\?/8000\""
    );
}

// ---- voicegate as UAC ----

fn offer_params(names: &[&str]) -> OfferParams {
    let mut p = OfferParams::new(LOCAL, 30000, prefs(names));
    p.session_id = 7;
    p.session_version = 7;
    p
}

#[test]
fn our_offer_text() {
    let o = offer(&offer_params(&["PCMU", "PCMA", "opus", "telephone-event"]));
    assert_eq!(
        o.to_string(),
        "v=0\r\n\
         o=voicegate 7 7 IN IP4 192.0.2.10\r\n\
         s=-\r\n\
         c=IN IP4 192.0.2.10\r\n\
         t=0 0\r\n\
         m=audio 30000 RTP/AVP 0 8 111 101 102\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:111 opus/48000/2\r\n\
         a=fmtp:111 useinbandfec=1\r\n\
         a=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-15\r\n\
         a=rtpmap:102 telephone-event/48000\r\n\
         a=fmtp:102 0-15\r\n\
         a=ptime:20\r\n\
         a=sendrecv\r\n"
    );
    let o = offer(&offer_params(&["PCMA"]));
    assert_eq!(o.media[0].formats, vec!["8"]);
}

#[test]
fn our_offer_answered_by_ourselves() {
    let o = offer(&offer_params(&["opus", "PCMU", "telephone-event"]));
    let n = answer(&o, &params(&["PCMU", "opus", "telephone-event"])).unwrap();
    let ours = process_answer(&o, &n.answer).unwrap();
    assert_eq!(ours.codec, Codec::Pcmu);
    assert_eq!(ours.telephone_event.map(|t| t.payload_type), Some(101));
    assert_eq!(ours.remote_rtp, SocketAddr::new(LOCAL, 20000));
    assert_eq!(n.media.remote_rtp, SocketAddr::new(LOCAL, 30000));
}

#[test]
fn process_answer_with_other_payload_types() {
    let o = offer(&offer_params(&["opus", "PCMU", "telephone-event"]));
    // The answerer picked its own numbers; we send with them and receive with ours.
    let a = sdp(
        "v=0\r\no=- 5 5 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n\
                 m=audio 7000 RTP/AVP 96 97\r\na=rtpmap:96 opus/48000/2\r\n\
                 a=fmtp:96 maxplaybackrate=16000\r\na=rtpmap:97 telephone-event/48000\r\n\
                 a=ptime:40\r\na=recvonly\r\n",
    );
    let n = process_answer(&o, &a).unwrap();
    assert_eq!(n.codec, Codec::Opus);
    assert_eq!((n.payload_type, n.recv_payload_type), (96, 111));
    assert_eq!(n.fmtp.as_deref(), Some("maxplaybackrate=16000"));
    assert_eq!(
        n.telephone_event,
        Some(TelephoneEventFormat {
            payload_type: 97,
            recv_payload_type: 102,
            clock_rate_hz: 48000
        })
    );
    assert_eq!(n.ptime_ms, 40);
    assert_eq!(n.direction, Direction::SendOnly);
    assert_eq!(n.remote_rtp, "10.0.0.2:7000".parse::<SocketAddr>().unwrap());
}

#[test]
fn process_answer_errors() {
    let o = offer(&offer_params(&["PCMU"]));
    let two = sdp(
        "v=0\r\no=- 5 5 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n\
                   m=audio 7000 RTP/AVP 0\r\nm=video 0 RTP/AVP 96\r\n",
    );
    assert_eq!(
        process_answer(&o, &two).unwrap_err(),
        NegotiationError::MediaCountMismatch {
            offer: 1,
            answer: 2
        }
    );
    let rejected = sdp(
        "v=0\r\no=- 5 5 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n\
                        m=audio 0 RTP/AVP 0\r\n",
    );
    assert_eq!(
        process_answer(&o, &rejected).unwrap_err(),
        NegotiationError::AudioRejected
    );
    let wrong = sdp(
        "v=0\r\no=- 5 5 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n\
                     m=audio 7000 RTP/AVP 8\r\n",
    );
    assert_eq!(
        process_answer(&o, &wrong).unwrap_err(),
        NegotiationError::AnswerCodecMismatch {
            mline: 0,
            answered: vec!["PCMA/8000".into()]
        }
    );
}

#[test]
fn hold_offer_from_us() {
    let mut p = offer_params(&["PCMU"]);
    p.direction = Direction::SendOnly;
    p.session_version += 1;
    let o = offer(&p);
    let n = answer(&o, &params(&["PCMU"])).unwrap();
    assert_eq!(n.media.direction, Direction::RecvOnly);
    let ours = process_answer(&o, &n.answer).unwrap();
    assert_eq!(ours.direction, Direction::SendOnly);
}
