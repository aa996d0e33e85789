//! voicegate-sdp: SDP parse/print and offer/answer (RFC 8866, which obsoletes RFC 4566;
//! RFC 3264).
//!
//! The crate is sans-IO: no sockets, no clocks, no randomness. Callers pass in what it
//! needs (local address and port, session id and version) and get values back.
//!
//! # Model, parsing, printing
//!
//! [`SessionDescription`] holds every line type of RFC 8866 5 (`v o s i u e p c b t r z
//! k a m`), media sections as [`MediaDescription`], and attributes as ordered
//! [`Attribute`] name/value pairs. [`parse`] (also `str::parse` and
//! [`SessionDescription::parse`]) reads a body; `Display` prints it with CRLF line ends
//! in RFC order, so `parse(&sdp.to_string()) == Ok(sdp)` for any description whose text
//! fields hold no line breaks and no surrounding whitespace.
//!
//! The parser never panics. It accepts CRLF and bare LF, surrounding whitespace, blank
//! lines, unknown line types (ignored, RFC 8866 5) and session-level lines in any order;
//! it rejects what loses meaning: a first line other than `v=0`, a missing or short
//! `o=`, malformed `c=`/`b=`/`t=`, and an `m=` line without a numeric port. Errors are
//! [`SdpError`]s naming the 1-based line number.
//!
//! Typed views: [`MediaDescription::rtpmap`], [`MediaDescription::fmtp`],
//! [`MediaDescription::ptime_ms`], [`MediaDescription::maxptime_ms`], and
//! [`SessionDescription::media_direction`] (media-level attribute over session-level,
//! default `sendrecv`, RFC 8866 6.7).
//!
//! # Codecs
//!
//! [`Codec`]: PCMU (static PT 0), PCMA (static PT 8), Opus (`opus/48000/2`, RFC 7587)
//! and telephone-event (RFC 4733, at 8000 Hz or the audio codec's rate). Names match
//! case-insensitively (RFC 4855 3); PTs 0 and 8 are recognised without `a=rtpmap`.
//! [`CodecPreference`] is the configured order (`Codec::from_name`, `FromStr`, serde
//! from a list of names such as `["PCMU", "PCMA", "opus", "telephone-event"]`); it must
//! name at least one audio codec, and listing telephone-event enables DTMF.
//!
//! # Offer/answer (RFC 3264)
//!
//! - [`answer`] (UAS, and re-INVITEs): accepts the first active `RTP/AVP` audio m-line
//!   that has a common codec and an IP connection address, and rejects every other
//!   m-line with port 0, keeping the offer's m-line count and order (RFC 3264 6).
//!   Decisions:
//!   - **Codec order**: ours by default ([`AnswerOrder::Ours`]): the operator's order
//!     (transcription quality vs. transcoding cost) wins; RFC 3264 6.1 lets the answerer
//!     choose. [`AnswerOrder::Offerer`] picks the first offered codec we support.
//!   - **One codec per answer**, plus telephone-event: both sides then send the same
//!     codec and the media layer never sees a mid-call payload switch.
//!   - **Payload types**: dynamic ones reuse the offerer's numbers (RFC 3264 6.1).
//!   - **Telephone-event**: the one at the audio codec's clock (RFC 4733 2.1), else the
//!     first offered (baresip offers only `/8000` next to Opus).
//!   - **Direction** mirrors the offer (RFC 3264 6.1): `sendonly` -> `recvonly`,
//!     `recvonly` -> `sendonly`, `inactive` -> `inactive`. `c=0.0.0.0` (old-style hold,
//!     RFC 3264 8.4) counts as "do not send to me".
//!   - **ptime**: the offer's `a=ptime` (media level, else session level), capped by
//!     `a=maxptime`, else 20 ms; values outside 10..=120 ms are ignored.
//!   - **`t=`** is copied from the offer (RFC 3264 6).
//!   - **Session version**: [`AnswerParams::session_version`] is set by the caller, who
//!     increments it for each new answer in the dialog (RFC 3264 8); the session id
//!     stays the same.
//! - [`offer`] (UAC): one audio m-line with our codecs in preference order; PCMU 0,
//!   PCMA 8, Opus 111 ([`OPUS_PAYLOAD_TYPE`]), `telephone-event/8000` 101
//!   ([`TELEPHONE_EVENT_PAYLOAD_TYPE`]) and, next to Opus, `telephone-event/48000` 102;
//!   `a=rtpmap` for each, `a=fmtp` for Opus (`useinbandfec=1`) and telephone-event
//!   (`0-15`), `a=ptime:20`, `a=sendrecv`.
//! - [`process_answer`] (UAC): the first audio m-line active on both sides, the first
//!   answered codec we offered; we send with the answer's payload types and receive
//!   with ours, so [`NegotiatedMedia`] carries both.
//!
//! Both sides give a [`NegotiatedMedia`]: codec, payload types, clock rate, channels,
//! the peer's fmtp, ptime, telephone-event, remote RTP/RTCP addresses, our direction and
//! the m-line index.
//!
//! Failures are [`NegotiationError`]s. Each gives [`NegotiationError::sip_status`] (488
//! Not Acceptable Here) and [`NegotiationError::warning_header`], a Warning header
//! value (RFC 3261 20.43) such as
//! `305 voicegate "Incompatible media format: no common codec; offered G729/8000"`:
//! 305 for no common codec, 304 for no audio stream, 302 for an unsupported transport
//! profile (`RTP/SAVP`, ...), 301 for address problems, 399 otherwise.
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use voicegate_sdp::{AnswerParams, Codec, CodecPreference, SessionDescription, answer};
//!
//! let offer: SessionDescription = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n\
//!     s=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n\
//!     a=rtpmap:0 PCMU/8000\r\n"
//!     .parse()?;
//! let codecs = CodecPreference::from_names(["opus", "PCMU", "telephone-event"])?;
//! let params = AnswerParams::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 20000, codecs);
//! let negotiated = answer(&offer, &params)?;
//! assert_eq!(negotiated.media.codec, Codec::Pcmu);
//! assert_eq!(negotiated.media.remote_rtp.port(), 6000);
//! let body = negotiated.answer.to_string(); // the 200 OK body
//! assert!(body.contains("m=audio 20000 RTP/AVP 0\r\n"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod codec;
mod error;
mod offer_answer;
mod parse;
mod print;
mod session;

pub use codec::{
    Codec, CodecPreference, CodecPreferenceError, OPUS_FMTP, OPUS_PAYLOAD_TYPE,
    TELEPHONE_EVENT_48K_PAYLOAD_TYPE, TELEPHONE_EVENT_FMTP, TELEPHONE_EVENT_PAYLOAD_TYPE,
    UnknownCodec,
};
pub use error::SdpError;
pub use offer_answer::{
    AnswerOrder, AnswerParams, DEFAULT_PTIME_MS, DEFAULT_USERNAME, Negotiated, NegotiatedMedia,
    NegotiationError, OfferParams, RTP_AVP, TelephoneEventFormat, WARN_AGENT, answer, offer,
    process_answer,
};
pub use parse::parse;
pub use session::{
    Attribute, Bandwidth, Connection, Direction, Fmtp, MediaDescription, Origin, RtpMap,
    SessionDescription, Timing, fmtp_parameters,
};
