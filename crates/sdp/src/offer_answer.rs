//! The offer/answer model of RFC 3264, sans-IO: plain functions from descriptions and
//! parameters to descriptions and the negotiated media.

use std::net::{IpAddr, SocketAddr};

use crate::codec::{Codec, CodecPreference, TELEPHONE_EVENT_48K_PAYLOAD_TYPE};
use crate::session::{
    Attribute, Connection, Direction, MediaDescription, Origin, RtpMap, SessionDescription,
    addrtype_of,
};

/// The only transport profile voicegate speaks (RFC 3551). SRTP profiles, AVPF and
/// DTLS are refused per m-line.
pub const RTP_AVP: &str = "RTP/AVP";
/// Packetization time used when the peer asks for none (RFC 3551 4.5: 20 ms default
/// for G.711; RFC 7587 also defaults Opus to 20 ms).
pub const DEFAULT_PTIME_MS: u32 = 20;
/// The warn-agent of Warning headers (a pseudonym, RFC 3261 20.43).
pub const WARN_AGENT: &str = "voicegate";
/// Default `o=` username.
pub const DEFAULT_USERNAME: &str = "voicegate";

/// A ptime outside this range is a peer error; voicegate then uses
/// [`DEFAULT_PTIME_MS`]. 120 ms is Opus' largest frame (RFC 7587).
const PTIME_RANGE_MS: std::ops::RangeInclusive<u32> = 10..=120;
/// Most format names quoted in a Warning header, to keep the header short.
const WARN_MAX_FORMATS: usize = 12;

/// Whose codec order decides when several codecs are common to offer and answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AnswerOrder {
    /// Our configured preference decides (the default): the operator chose the order
    /// for a reason (transcription quality, transcoding cost), and RFC 3264 6.1 leaves
    /// the answerer free to pick any offered format.
    #[default]
    Ours,
    /// The offerer's order decides: the first offered format we support wins.
    Offerer,
}

/// Local facts needed to answer an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerParams {
    /// Address our RTP socket is reachable at; goes into `o=` and `c=`.
    pub local_addr: IpAddr,
    /// Our RTP port (RTCP is on the next one, RFC 3550 11).
    pub local_rtp_port: u16,
    /// Acceptable codecs, in preference order.
    pub codecs: CodecPreference,
    /// `o=` username.
    pub username: String,
    /// `o=` session id; constant for the life of the dialog.
    pub session_id: u64,
    /// `o=` session version; the caller increments it for each new answer in the same
    /// dialog, e.g. to a re-INVITE (RFC 3264 8).
    pub session_version: u64,
    /// Whose codec order wins.
    pub order: AnswerOrder,
}

impl AnswerParams {
    /// Parameters with username `voicegate`, session id and version 0 and our order.
    pub fn new(local_addr: IpAddr, local_rtp_port: u16, codecs: CodecPreference) -> Self {
        Self {
            local_addr,
            local_rtp_port,
            codecs,
            username: DEFAULT_USERNAME.to_owned(),
            session_id: 0,
            session_version: 0,
            order: AnswerOrder::Ours,
        }
    }
}

/// Local facts needed to make an offer (voicegate as UAC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferParams {
    /// Address our RTP socket is reachable at; goes into `o=` and `c=`.
    pub local_addr: IpAddr,
    /// Our RTP port.
    pub local_rtp_port: u16,
    /// Codecs to offer, in preference order.
    pub codecs: CodecPreference,
    /// `o=` username.
    pub username: String,
    /// `o=` session id.
    pub session_id: u64,
    /// `o=` session version; incremented by the caller for each new offer in a dialog.
    pub session_version: u64,
    /// `a=ptime` to ask for.
    pub ptime_ms: u32,
    /// Direction to offer: `sendrecv`, or `sendonly`/`inactive` to put a call on hold.
    pub direction: Direction,
}

impl OfferParams {
    /// Parameters with username `voicegate`, session id and version 0, 20 ms ptime and
    /// `sendrecv`.
    pub fn new(local_addr: IpAddr, local_rtp_port: u16, codecs: CodecPreference) -> Self {
        Self {
            local_addr,
            local_rtp_port,
            codecs,
            username: DEFAULT_USERNAME.to_owned(),
            session_id: 0,
            session_version: 0,
            ptime_ms: DEFAULT_PTIME_MS,
            direction: Direction::SendRecv,
        }
    }
}

/// The telephone-event (RFC 4733) format agreed for DTMF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEventFormat {
    /// Payload type to send events with (the one the peer asked to receive).
    pub payload_type: u8,
    /// Payload type events arrive with (the one we asked to receive).
    pub recv_payload_type: u8,
    /// RTP clock rate of the events.
    pub clock_rate_hz: u32,
}

/// The outcome of a negotiation, for the media layer.
///
/// Payload types come in pairs because RFC 3264 6.1 lets each side pick the number it
/// receives a dynamic codec with; when voicegate answers it reuses the offerer's
/// numbers, so the two are equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedMedia {
    /// Index of the negotiated m-line in the offer (and answer).
    pub mline_index: usize,
    /// The one audio codec both sides use.
    pub codec: Codec,
    /// Payload type to send audio with (the one the peer asked to receive).
    pub payload_type: u8,
    /// Payload type audio arrives with (the one we asked to receive).
    pub recv_payload_type: u8,
    /// RTP clock rate of `codec`.
    pub clock_rate_hz: u32,
    /// Channels as written in `a=rtpmap`; always 2 for Opus, which may still carry
    /// mono (`stereo=0` in `fmtp`), as RFC 7587 7 explains.
    pub channels: u8,
    /// The peer's `a=fmtp` parameters for `codec`: what it asks us to send, e.g.
    /// `useinbandfec=1; maxplaybackrate=16000` for Opus.
    pub fmtp: Option<String>,
    /// Packetization time to send with: the peer's `a=ptime` (capped by its
    /// `a=maxptime`), else [`DEFAULT_PTIME_MS`].
    pub ptime_ms: u32,
    /// DTMF events, when both sides allow them.
    pub telephone_event: Option<TelephoneEventFormat>,
    /// Where to send RTP. An unspecified IP (`0.0.0.0`, RFC 2543 hold) comes with a
    /// `direction` that does not send.
    pub remote_rtp: SocketAddr,
    /// Where to send RTCP: `a=rtcp` (RFC 3605), the RTP port under `a=rtcp-mux`
    /// (RFC 5761), else the RTP port + 1.
    pub remote_rtcp: SocketAddr,
    /// What voicegate does on this stream, seen from voicegate.
    pub direction: Direction,
}

/// An answer to send and what it agrees to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The answer, with as many m-lines as the offer, in the same order.
    pub answer: SessionDescription,
    /// The accepted audio stream.
    pub media: NegotiatedMedia,
}

/// Why no media could be agreed. Each maps to a SIP status ([`Self::sip_status`]) and
/// a Warning header ([`Self::warning_header`]).
///
/// The messages begin with the RFC 3261 20.43 warn-text of their warn-code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    /// No usable audio stream has a codec we accept. `offered` lists the offered formats
    /// of those streams, e.g. `G729/8000`.
    #[error(
        "Incompatible media format: no common codec; offered {}",
        list(offered)
    )]
    NoCommonCodec {
        /// Offered formats, as `name/rate[/channels]` or the bare format.
        offered: Vec<String>,
    },
    /// The offer holds no active audio stream.
    #[error(
        "Media type not available: no active audio stream; offered media {}",
        list(offered)
    )]
    NoAudioStream {
        /// Media types of the offered streams, e.g. `video`.
        offered: Vec<String>,
    },
    /// The audio streams use transport profiles voicegate does not speak.
    #[error(
        "Incompatible transport protocol: offered {}; supported: RTP/AVP",
        list(offered)
    )]
    UnsupportedTransport {
        /// The offered profiles, e.g. `RTP/SAVP`.
        offered: Vec<String>,
    },
    /// The audio stream has no `c=` line, at media or session level.
    #[error("Miscellaneous warning: m-line {mline} has no connection address (c=)")]
    MissingConnection {
        /// Index of the m-line.
        mline: usize,
    },
    /// The connection address is not an IP address (an FQDN, which a sans-IO crate
    /// cannot resolve, or garbage).
    #[error(
        "Incompatible network address formats: m-line {mline} connection address {address:?} \
         is not an IP address"
    )]
    UnsupportedAddress {
        /// Index of the m-line.
        mline: usize,
        /// The address as sent, truncated.
        address: String,
    },
    /// The peer's media address is IPv4 and ours IPv6, or the reverse.
    #[error(
        "Incompatible network address formats: m-line {mline} peer address {remote} and \
         local address {local} are of different families"
    )]
    AddressFamilyMismatch {
        /// Index of the m-line.
        mline: usize,
        /// The peer's address.
        remote: IpAddr,
        /// Our address.
        local: IpAddr,
    },
    /// The answer does not have one m-line per offered m-line (RFC 3264 6).
    #[error("Miscellaneous warning: the answer has {answer} m-lines, the offer {offer}")]
    MediaCountMismatch {
        /// m-lines in our offer.
        offer: usize,
        /// m-lines in the answer.
        answer: usize,
    },
    /// The answer rejected every audio stream we offered (port 0).
    #[error("Media type not available: the answer rejected every audio stream")]
    AudioRejected,
    /// The answer accepted an audio stream with none of the codecs we offered.
    #[error(
        "Incompatible media format: m-line {mline} answered with no offered codec; answered {}",
        list(answered)
    )]
    AnswerCodecMismatch {
        /// Index of the m-line.
        mline: usize,
        /// The answered formats.
        answered: Vec<String>,
    },
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        return "nothing".to_owned();
    }
    let mut out = items
        .iter()
        .take(WARN_MAX_FORMATS)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > WARN_MAX_FORMATS {
        out.push_str(", ...");
    }
    out
}

impl NegotiationError {
    /// The SIP status for a failed offer: 488 Not Acceptable Here (RFC 3261 21.4.26).
    ///
    /// For errors from [`process_answer`] there is no request to reject any more (the
    /// answer came in a 2xx); the gateway then ACKs and sends BYE, and may use this
    /// status and [`Self::warning_header`] in its log line and a `Reason` header.
    pub fn sip_status(&self) -> u16 {
        488
    }

    /// The warn-code of RFC 3261 20.43 for this error.
    pub fn warn_code(&self) -> u16 {
        match self {
            NegotiationError::NoCommonCodec { .. }
            | NegotiationError::AnswerCodecMismatch { .. } => 305,
            NegotiationError::NoAudioStream { .. } | NegotiationError::AudioRejected => 304,
            NegotiationError::UnsupportedTransport { .. } => 302,
            NegotiationError::UnsupportedAddress { .. }
            | NegotiationError::AddressFamilyMismatch { .. } => 301,
            NegotiationError::MissingConnection { .. }
            | NegotiationError::MediaCountMismatch { .. } => 399,
        }
    }

    /// A Warning header value (RFC 3261 20.43), e.g.
    /// `305 voicegate "Incompatible media format: no common codec; offered G729/8000"`.
    ///
    /// The text quotes peer input, so it is made safe for a header: `"` and `\` are
    /// escaped and control characters (CR, LF, ...) replaced by `?`.
    pub fn warning_header(&self) -> String {
        let mut text = String::new();
        for c in self.to_string().chars() {
            match c {
                '"' | '\\' => {
                    text.push('\\');
                    text.push(c);
                }
                c if c.is_control() => text.push('?'),
                c => text.push(c),
            }
        }
        format!("{} {} \"{}\"", self.warn_code(), WARN_AGENT, text)
    }
}

/// Answer an offer (voicegate as UAS, or for a re-INVITE) per RFC 3264 6.
///
/// The first active audio m-line with `RTP/AVP`, an IP connection address and a common
/// codec is accepted; every other m-line is rejected with port 0, so the answer has the
/// offer's m-lines in the offer's order. The accepted line carries one audio codec (so
/// both sides send the same one, and no mid-call codec switch has to be handled) and,
/// if both sides allow it, telephone-event. Dynamic payload types reuse the offerer's
/// numbers (RFC 3264 6.1). The direction mirrors the offer (`sendonly` -> `recvonly`,
/// `inactive` -> `inactive`); an offer with `c=0.0.0.0` (RFC 3264 8.4, old-style hold)
/// is treated as not wanting to receive.
pub fn answer(
    offer: &SessionDescription,
    params: &AnswerParams,
) -> Result<Negotiated, NegotiationError> {
    let mut accepted = None;
    // When nothing is accepted, the most specific reason is reported: a codec or
    // address problem on an audio line, else a transport problem, else no audio.
    let mut first_error = None;
    let mut transports = Vec::new();
    for (index, m) in offer.media.iter().enumerate() {
        if m.port == 0 || !m.media.eq_ignore_ascii_case("audio") {
            continue;
        }
        if !m.proto.eq_ignore_ascii_case(RTP_AVP) {
            transports.push(crate::error::quote(&m.proto));
            continue;
        }
        match accept_audio(offer, index, params) {
            Ok(media) => {
                accepted = Some(media);
                break;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let Some(accepted) = accepted else {
        return Err(match first_error {
            Some(e) => e,
            None if !transports.is_empty() => NegotiationError::UnsupportedTransport {
                offered: transports,
            },
            None => NegotiationError::NoAudioStream {
                offered: offer
                    .media
                    .iter()
                    .map(|m| crate::error::quote(&m.media))
                    .collect(),
            },
        });
    };

    let mut answer = SessionDescription::new(origin(
        &params.username,
        params.session_id,
        params.session_version,
        params.local_addr,
    ));
    answer.connection = Some(Connection::from_ip(params.local_addr));
    // RFC 3264 6: "The t= line in the answer MUST equal that of the offer."
    if !offer.timings.is_empty() {
        answer.timings = offer.timings.clone();
    }
    answer.media = offer
        .media
        .iter()
        .enumerate()
        .map(|(index, m)| {
            if index == accepted.media.mline_index {
                accepted.answer_media(m, params.local_rtp_port)
            } else {
                rejected(m)
            }
        })
        .collect();
    Ok(Negotiated {
        answer,
        media: accepted.media,
    })
}

/// An accepted audio m-line of an offer, before the answer is written.
struct Accepted {
    media: NegotiatedMedia,
    /// The offer's fmtp for the accepted telephone-event, echoed so that we do not claim
    /// events the offerer does not send.
    te_fmtp: Option<String>,
}

impl Accepted {
    /// The accepted m-line; media type and proto are echoed in the offer's spelling.
    fn answer_media(&self, offered: &MediaDescription, port: u16) -> MediaDescription {
        let n = &self.media;
        let mut m = MediaDescription::new(offered.media.clone(), port, offered.proto.clone());
        m.formats.push(n.payload_type.to_string());
        m.attributes
            .push(rtpmap_attribute(n.codec.rtpmap(n.payload_type)));
        if let Some(fmtp) = n.codec.default_fmtp() {
            m.attributes.push(fmtp_attribute(n.payload_type, fmtp));
        }
        if let Some(te) = n.telephone_event {
            m.formats.push(te.payload_type.to_string());
            m.attributes.push(rtpmap_attribute(RtpMap {
                payload_type: te.payload_type,
                encoding_name: Codec::TelephoneEvent.encoding_name().to_owned(),
                clock_rate_hz: te.clock_rate_hz,
                encoding_params: None,
            }));
            let fmtp = self
                .te_fmtp
                .as_deref()
                .or(Codec::TelephoneEvent.default_fmtp());
            if let Some(fmtp) = fmtp {
                m.attributes.push(fmtp_attribute(te.payload_type, fmtp));
            }
        }
        m.attributes
            .push(Attribute::value("ptime", n.ptime_ms.to_string()));
        m.attributes.push(Attribute::property(n.direction.as_str()));
        m
    }
}

/// A rejected m-line: same media type, proto and formats, port 0 (RFC 3264 6).
fn rejected(offered: &MediaDescription) -> MediaDescription {
    let mut m = MediaDescription::new(offered.media.clone(), 0, offered.proto.clone());
    m.formats = offered.formats.clone();
    m
}

/// One offered format, identified.
struct Format<'a> {
    payload_type: u8,
    codec: Option<Codec>,
    rtpmap: Option<RtpMap>,
    raw: &'a str,
}

impl Format<'_> {
    fn describe(&self) -> String {
        match &self.rtpmap {
            Some(map) => {
                let name = crate::error::quote(&map.encoding_name);
                match map.encoding_params {
                    Some(p) => format!("{name}/{}/{p}", map.clock_rate_hz),
                    None => format!("{name}/{}", map.clock_rate_hz),
                }
            }
            None => static_name(self.payload_type)
                .map(str::to_owned)
                .unwrap_or_else(|| crate::error::quote(self.raw)),
        }
    }

    fn clock_rate_hz(&self) -> u32 {
        self.rtpmap
            .as_ref()
            .map(|m| m.clock_rate_hz)
            .or_else(|| self.codec.map(Codec::clock_rate_hz))
            .unwrap_or(0)
    }
}

fn formats(m: &MediaDescription) -> Vec<Format<'_>> {
    m.formats
        .iter()
        .map(|raw| {
            // Non-numeric formats cannot be RTP payload types; 255 is never valid
            // (payload types are 7 bits), so such formats never match a codec.
            let payload_type = raw.parse::<u8>().ok().filter(|pt| *pt < 128);
            let rtpmap = payload_type.and_then(|pt| m.rtpmap(pt));
            let codec = payload_type.and_then(|pt| Codec::identify(pt, rtpmap.as_ref()));
            Format {
                payload_type: payload_type.unwrap_or(255),
                codec,
                rtpmap,
                raw,
            }
        })
        .collect()
}

/// Names of the static payload types of RFC 3551 table 4 that peers still send, for
/// error messages only.
fn static_name(payload_type: u8) -> Option<&'static str> {
    Some(match payload_type {
        0 => "PCMU/8000",
        3 => "GSM/8000",
        4 => "G723/8000",
        8 => "PCMA/8000",
        9 => "G722/8000",
        13 => "CN/8000",
        18 => "G729/8000",
        _ => return None,
    })
}

/// The format with its codec, if it is an audio codec we accept.
fn usable_format<'f, 'a>(
    f: &'f Format<'a>,
    codecs: &CodecPreference,
) -> Option<(&'f Format<'a>, Codec)> {
    f.codec
        .filter(|c| c.is_audio() && codecs.contains(*c))
        .map(|c| (f, c))
}

fn accept_audio(
    offer: &SessionDescription,
    index: usize,
    params: &AnswerParams,
) -> Result<Accepted, NegotiationError> {
    let m = &offer.media[index];
    let offered = formats(m);
    let usable = |f| usable_format(f, &params.codecs);
    let chosen = match params.order {
        AnswerOrder::Offerer => offered.iter().find_map(usable),
        AnswerOrder::Ours => params.codecs.audio().find_map(|wanted| {
            offered
                .iter()
                .filter_map(usable)
                .find(|(_, c)| *c == wanted)
        }),
    };
    let Some((chosen, codec)) = chosen else {
        return Err(NegotiationError::NoCommonCodec {
            offered: offered.iter().map(Format::describe).collect(),
        });
    };

    let remote_ip = remote_ip(offer, index)?;
    if !remote_ip.is_unspecified() && remote_ip.is_ipv4() != params.local_addr.is_ipv4() {
        return Err(NegotiationError::AddressFamilyMismatch {
            mline: index,
            remote: remote_ip,
            local: params.local_addr,
        });
    }

    let mut offer_direction = offer.media_direction(index).unwrap_or(Direction::SendRecv);
    if remote_ip.is_unspecified() {
        // RFC 3264 8.4: c=0.0.0.0 means "do not send to me".
        offer_direction = Direction::from_flags(offer_direction.sends(), false);
    }

    let telephone_event = if params.codecs.telephone_event() {
        pick_telephone_event(m, codec.clock_rate_hz())
    } else {
        None
    };
    let te_fmtp = telephone_event.and_then(|te| fmtp_of(m, te.payload_type));

    Ok(Accepted {
        media: NegotiatedMedia {
            mline_index: index,
            codec,
            payload_type: chosen.payload_type,
            recv_payload_type: chosen.payload_type,
            clock_rate_hz: codec.clock_rate_hz(),
            channels: codec.channels(),
            fmtp: fmtp_of(m, chosen.payload_type),
            ptime_ms: ptime_ms(offer, index),
            telephone_event,
            remote_rtp: SocketAddr::new(remote_ip, m.port),
            remote_rtcp: remote_rtcp(m, remote_ip),
            direction: offer_direction.reversed(),
        },
        te_fmtp,
    })
}

/// The telephone-event format at the audio clock rate (RFC 4733 2.1), else the first
/// one offered: peers such as baresip offer only `/8000` next to Opus.
///
/// All `a=rtpmap` lines are searched, not only the first per payload type, because
/// some carriers map one payload type twice (`telephone-event/16000` and `/8000`).
fn pick_telephone_event(m: &MediaDescription, audio_clock_hz: u32) -> Option<TelephoneEventFormat> {
    let events = || {
        m.rtpmaps().filter(|map| {
            map.payload_type < 128
                && Codec::identify(map.payload_type, Some(map)) == Some(Codec::TelephoneEvent)
                && m.formats
                    .iter()
                    .any(|f| f.parse::<u8>().ok() == Some(map.payload_type))
        })
    };
    let map = events()
        .find(|map| map.clock_rate_hz == audio_clock_hz)
        .or_else(|| events().next())?;
    Some(TelephoneEventFormat {
        payload_type: map.payload_type,
        recv_payload_type: map.payload_type,
        clock_rate_hz: map.clock_rate_hz,
    })
}

fn remote_ip(sdp: &SessionDescription, index: usize) -> Result<IpAddr, NegotiationError> {
    let connection = sdp
        .media_connection(index)
        .ok_or(NegotiationError::MissingConnection { mline: index })?;
    connection
        .ip()
        .ok_or_else(|| NegotiationError::UnsupportedAddress {
            mline: index,
            address: crate::error::quote(&connection.address),
        })
}

fn ptime_ms(sdp: &SessionDescription, index: usize) -> u32 {
    let valid = |ms: u32| PTIME_RANGE_MS.contains(&ms).then_some(ms);
    let ptime = sdp
        .media_ptime_ms(index)
        .and_then(valid)
        .unwrap_or(DEFAULT_PTIME_MS);
    let maxptime = sdp
        .media
        .get(index)
        .and_then(|m| m.maxptime_ms())
        .and_then(valid);
    match maxptime {
        Some(max) => ptime.min(max),
        None => ptime,
    }
}

fn remote_rtcp(m: &MediaDescription, rtp_ip: IpAddr) -> SocketAddr {
    if m.has_attribute("rtcp-mux") {
        return SocketAddr::new(rtp_ip, m.port);
    }
    // a=rtcp:<port> [<nettype> <addrtype> <address>] (RFC 3605 2.1)
    if let Some(value) = m.attribute("rtcp") {
        let mut fields = value.split_whitespace();
        if let Some(port) = fields.next().and_then(|p| p.parse().ok()) {
            let ip = fields.nth(2).and_then(|a| a.parse().ok()).unwrap_or(rtp_ip);
            return SocketAddr::new(ip, port);
        }
    }
    // RFC 3550 11: RTCP on the next port; port 65535 has none, so keep the RTP port.
    SocketAddr::new(rtp_ip, m.port.checked_add(1).unwrap_or(m.port))
}

fn origin(username: &str, session_id: u64, session_version: u64, addr: IpAddr) -> Origin {
    Origin {
        // The username is a token; an empty one would make an unparseable `o=` line.
        username: if username.trim().is_empty() {
            "-".to_owned()
        } else {
            username.split_whitespace().collect::<Vec<_>>().join("_")
        },
        session_id: session_id.to_string(),
        session_version: session_version.to_string(),
        nettype: "IN".to_owned(),
        addrtype: addrtype_of(addr).to_owned(),
        address: addr.to_string(),
    }
}

/// The fmtp parameters for `payload_type`; an empty `a=fmtp:<pt>` counts as none.
fn fmtp_of(m: &MediaDescription, payload_type: u8) -> Option<String> {
    m.fmtp(payload_type)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
}

fn rtpmap_attribute(map: RtpMap) -> Attribute {
    Attribute::value("rtpmap", map.to_value())
}

fn fmtp_attribute(payload_type: u8, params: &str) -> Attribute {
    Attribute::value("fmtp", format!("{payload_type} {params}"))
}

/// Make an offer (voicegate as UAC, RFC 3264 5): one `RTP/AVP` audio m-line with our
/// codecs in preference order, then telephone-event.
///
/// Payload types: PCMU 0 and PCMA 8 (static), Opus 111, `telephone-event/8000` 101 and,
/// when Opus is offered, `telephone-event/48000` 102 so that events can share Opus'
/// clock (RFC 4733 2.1). Every format gets an `a=rtpmap`; Opus and telephone-event an
/// `a=fmtp` ([`crate::OPUS_FMTP`], [`crate::TELEPHONE_EVENT_FMTP`]); then `a=ptime` and
/// the direction.
pub fn offer(params: &OfferParams) -> SessionDescription {
    let mut sdp = SessionDescription::new(origin(
        &params.username,
        params.session_id,
        params.session_version,
        params.local_addr,
    ));
    sdp.connection = Some(Connection::from_ip(params.local_addr));
    let mut m = MediaDescription::new("audio", params.local_rtp_port, RTP_AVP);
    let mut add = |pt: u8, map: RtpMap, fmtp: Option<&str>| {
        m.formats.push(pt.to_string());
        m.attributes.push(rtpmap_attribute(map));
        if let Some(fmtp) = fmtp {
            m.attributes.push(fmtp_attribute(pt, fmtp));
        }
    };
    for codec in params.codecs.audio() {
        let pt = codec.default_payload_type();
        add(pt, codec.rtpmap(pt), codec.default_fmtp());
    }
    if params.codecs.telephone_event() {
        let te = Codec::TelephoneEvent;
        let pt = te.default_payload_type();
        add(pt, te.rtpmap(pt), te.default_fmtp());
        if params.codecs.contains(Codec::Opus) {
            let pt = TELEPHONE_EVENT_48K_PAYLOAD_TYPE;
            let mut map = te.rtpmap(pt);
            map.clock_rate_hz = Codec::Opus.clock_rate_hz();
            add(pt, map, te.default_fmtp());
        }
    }
    m.attributes
        .push(Attribute::value("ptime", params.ptime_ms.to_string()));
    m.attributes
        .push(Attribute::property(params.direction.as_str()));
    sdp.media.push(m);
    sdp
}

/// Take the answer to our offer (voicegate as UAC, RFC 3264 7).
///
/// The answer must have one m-line per offered m-line. The first audio m-line that
/// both sides left active is used, with the first codec in the answer's format list
/// that we offered (the answerer lists its preference first, RFC 3264 6.1). We send
/// with the answer's payload types and receive with our offer's.
pub fn process_answer(
    our_offer: &SessionDescription,
    answer: &SessionDescription,
) -> Result<NegotiatedMedia, NegotiationError> {
    if our_offer.media.len() != answer.media.len() {
        return Err(NegotiationError::MediaCountMismatch {
            offer: our_offer.media.len(),
            answer: answer.media.len(),
        });
    }
    for (index, (ours, theirs)) in our_offer.media.iter().zip(&answer.media).enumerate() {
        let active = |m: &MediaDescription| {
            m.port != 0
                && m.media.eq_ignore_ascii_case("audio")
                && m.proto.eq_ignore_ascii_case(RTP_AVP)
        };
        if !active(ours) || !active(theirs) {
            continue;
        }
        let offered = formats(ours);
        let answered = formats(theirs);
        let offered_pt = |codec: Codec, clock_hz: u32| {
            offered
                .iter()
                .find(|f| f.codec == Some(codec) && f.clock_rate_hz() == clock_hz)
                .map(|f| f.payload_type)
        };
        let chosen = answered.iter().find_map(|f| {
            let codec = f.codec.filter(|c| c.is_audio())?;
            Some((f, codec, offered_pt(codec, codec.clock_rate_hz())?))
        });
        let Some((chosen, codec, recv_payload_type)) = chosen else {
            return Err(NegotiationError::AnswerCodecMismatch {
                mline: index,
                answered: answered.iter().map(Format::describe).collect(),
            });
        };

        let telephone_event =
            pick_telephone_event(theirs, codec.clock_rate_hz()).and_then(|mut te| {
                te.recv_payload_type = offered_pt(Codec::TelephoneEvent, te.clock_rate_hz)?;
                Some(te)
            });

        let remote_ip = remote_ip(answer, index)?;
        let our_direction = our_offer
            .media_direction(index)
            .unwrap_or(Direction::SendRecv);
        let mut their_direction = answer.media_direction(index).unwrap_or(Direction::SendRecv);
        if remote_ip.is_unspecified() {
            their_direction = Direction::from_flags(their_direction.sends(), false);
        }
        return Ok(NegotiatedMedia {
            mline_index: index,
            codec,
            payload_type: chosen.payload_type,
            recv_payload_type,
            clock_rate_hz: codec.clock_rate_hz(),
            channels: codec.channels(),
            fmtp: fmtp_of(theirs, chosen.payload_type),
            ptime_ms: ptime_ms(answer, index),
            telephone_event,
            remote_rtp: SocketAddr::new(remote_ip, theirs.port),
            remote_rtcp: remote_rtcp(theirs, remote_ip),
            direction: our_direction.intersect(their_direction.reversed()),
        });
    }
    Err(NegotiationError::AudioRejected)
}
