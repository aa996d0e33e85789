//! The codecs the gateway negotiates, and the preference order that comes from config.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::session::RtpMap;

/// An RTP payload format voicegate can send and receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Codec {
    /// G.711 mu-law; static payload type 0, 8000 Hz, mono (RFC 3551 4.5.14).
    Pcmu,
    /// G.711 A-law; static payload type 8, 8000 Hz, mono (RFC 3551 4.5.14).
    Pcma,
    /// Opus; dynamic payload type, always `opus/48000/2` in SDP (RFC 7587 7).
    Opus,
    /// RFC 4733 named telephone events (DTMF); dynamic payload type.
    TelephoneEvent,
}

/// Dynamic payload type voicegate uses for Opus in its own offers (the value most
/// softphones and browsers use too, which eases reading captures).
pub const OPUS_PAYLOAD_TYPE: u8 = 111;
/// Dynamic payload type for `telephone-event/8000` in voicegate's own offers.
pub const TELEPHONE_EVENT_PAYLOAD_TYPE: u8 = 101;
/// Dynamic payload type for `telephone-event/48000`, offered next to Opus (RFC 4733
/// 2.1 wants the event clock to match the audio clock).
pub const TELEPHONE_EVENT_48K_PAYLOAD_TYPE: u8 = 102;

/// `a=fmtp` parameters voicegate asks for when receiving Opus: in-band FEC, because
/// telephony paths lose packets and FEC conceals a lost frame from the next one.
pub const OPUS_FMTP: &str = "useinbandfec=1";
/// `a=fmtp` for telephone-event: DTMF digits 0-9, `*`, `#`, A-D (RFC 4733 3.2).
pub const TELEPHONE_EVENT_FMTP: &str = "0-15";

impl Codec {
    /// Every codec, in voicegate's default preference order.
    pub const ALL: [Codec; 4] = [Codec::Opus, Codec::Pcmu, Codec::Pcma, Codec::TelephoneEvent];

    /// Encoding name as written in `a=rtpmap` (and as accepted in config).
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::Opus => "opus",
            Codec::TelephoneEvent => "telephone-event",
        }
    }

    /// The static payload type of RFC 3551 table 4, if the codec has one.
    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            Codec::Pcmu => Some(0),
            Codec::Pcma => Some(8),
            Codec::Opus | Codec::TelephoneEvent => None,
        }
    }

    /// Payload type voicegate uses in its own offers: the static one, else
    /// [`OPUS_PAYLOAD_TYPE`] / [`TELEPHONE_EVENT_PAYLOAD_TYPE`].
    pub fn default_payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
            Codec::Opus => OPUS_PAYLOAD_TYPE,
            Codec::TelephoneEvent => TELEPHONE_EVENT_PAYLOAD_TYPE,
        }
    }

    /// RTP clock rate in Hz as written in `a=rtpmap`. Telephone-event may also run at
    /// the audio codec's rate; this is its usual 8000.
    pub fn clock_rate_hz(self) -> u32 {
        match self {
            Codec::Opus => 48_000,
            Codec::Pcmu | Codec::Pcma | Codec::TelephoneEvent => 8_000,
        }
    }

    /// Channel count as written in `a=rtpmap` (Opus always says 2, RFC 7587 7).
    pub fn channels(self) -> u8 {
        match self {
            Codec::Opus => 2,
            Codec::Pcmu | Codec::Pcma | Codec::TelephoneEvent => 1,
        }
    }

    /// `a=fmtp` parameters voicegate puts in its offers and answers, if any.
    pub fn default_fmtp(self) -> Option<&'static str> {
        match self {
            Codec::Opus => Some(OPUS_FMTP),
            Codec::TelephoneEvent => Some(TELEPHONE_EVENT_FMTP),
            Codec::Pcmu | Codec::Pcma => None,
        }
    }

    /// Whether this is an audio codec (as opposed to telephone-event).
    pub fn is_audio(self) -> bool {
        !matches!(self, Codec::TelephoneEvent)
    }

    /// The `a=rtpmap` for this codec at `payload_type`.
    pub fn rtpmap(self, payload_type: u8) -> RtpMap {
        RtpMap {
            payload_type,
            encoding_name: self.encoding_name().to_owned(),
            clock_rate_hz: self.clock_rate_hz(),
            encoding_params: (self == Codec::Opus).then_some(2),
        }
    }

    /// The codec a payload type of an offer or answer stands for, from its `a=rtpmap`
    /// if there is one, else from the static table (0 and 8 only). Names are compared
    /// case-insensitively (RFC 4855 3). Telephone-event is recognised at any clock
    /// rate; the rate is in `rtpmap`.
    pub fn identify(payload_type: u8, rtpmap: Option<&RtpMap>) -> Option<Codec> {
        let Some(map) = rtpmap else {
            return match payload_type {
                0 => Some(Codec::Pcmu),
                8 => Some(Codec::Pcma),
                _ => None,
            };
        };
        let name = map.encoding_name.as_str();
        let mono = matches!(map.encoding_params, None | Some(1));
        if name.eq_ignore_ascii_case("PCMU") && map.clock_rate_hz == 8000 && mono {
            Some(Codec::Pcmu)
        } else if name.eq_ignore_ascii_case("PCMA") && map.clock_rate_hz == 8000 && mono {
            Some(Codec::Pcma)
        } else if name.eq_ignore_ascii_case("opus")
            && map.clock_rate_hz == 48_000
            // RFC 7587 mandates "/2"; a missing channel count is a sloppy peer.
            && matches!(map.encoding_params, None | Some(2))
        {
            Some(Codec::Opus)
        } else if name.eq_ignore_ascii_case("telephone-event") && map.clock_rate_hz > 0 {
            Some(Codec::TelephoneEvent)
        } else {
            None
        }
    }

    /// The codec for a config name: the encoding name, case-insensitively, or one of the
    /// aliases `G711U`/`ULAW`/`G711A`/`ALAW`/`DTMF`.
    pub fn from_name(name: &str) -> Result<Codec, UnknownCodec> {
        let n = name.trim();
        let is = |s: &str| n.eq_ignore_ascii_case(s);
        if is("PCMU") || is("G711U") || is("ULAW") {
            Ok(Codec::Pcmu)
        } else if is("PCMA") || is("G711A") || is("ALAW") {
            Ok(Codec::Pcma)
        } else if is("opus") {
            Ok(Codec::Opus)
        } else if is("telephone-event") || is("DTMF") {
            Ok(Codec::TelephoneEvent)
        } else {
            Err(UnknownCodec {
                name: name.to_owned(),
            })
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encoding_name())
    }
}

impl FromStr for Codec {
    type Err = UnknownCodec;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Codec::from_name(s)
    }
}

impl TryFrom<String> for Codec {
    type Error = UnknownCodec;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Codec::from_name(&s)
    }
}

impl From<Codec> for String {
    fn from(c: Codec) -> Self {
        c.encoding_name().to_owned()
    }
}

/// A codec name in config that voicegate does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown codec {name:?}: expected one of PCMU, PCMA, opus, telephone-event \
     (case-insensitive)"
)]
pub struct UnknownCodec {
    /// The name as given.
    pub name: String,
}

/// Why a codec preference list from config is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecPreferenceError {
    /// A name is not a codec.
    #[error(transparent)]
    Unknown(#[from] UnknownCodec),
    /// The same codec is listed twice.
    #[error("codec {0} is listed more than once")]
    Duplicate(Codec),
    /// Only telephone-event (or nothing) is listed, so no audio could flow.
    #[error("the codec list names no audio codec (PCMU, PCMA or opus)")]
    NoAudioCodec,
}

/// Codecs in preference order, most preferred first, as configured.
///
/// Holds at least one audio codec and no duplicates. Listing
/// [`Codec::TelephoneEvent`] enables DTMF events; its position does not matter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Codec>", into = "Vec<Codec>")]
pub struct CodecPreference(Vec<Codec>);

impl CodecPreference {
    /// Validate a list of codecs.
    pub fn new(codecs: Vec<Codec>) -> Result<Self, CodecPreferenceError> {
        for (i, c) in codecs.iter().enumerate() {
            if codecs[..i].contains(c) {
                return Err(CodecPreferenceError::Duplicate(*c));
            }
        }
        if !codecs.iter().any(|c| c.is_audio()) {
            return Err(CodecPreferenceError::NoAudioCodec);
        }
        Ok(Self(codecs))
    }

    /// Parse and validate config names, e.g. `["PCMU", "PCMA", "opus"]`.
    pub fn from_names<I, S>(names: I) -> Result<Self, CodecPreferenceError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let codecs = names
            .into_iter()
            .map(|n| Codec::from_name(n.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(codecs)
    }

    /// All codecs, in preference order.
    pub fn codecs(&self) -> &[Codec] {
        &self.0
    }

    /// Audio codecs only (no telephone-event), in preference order.
    pub fn audio(&self) -> impl Iterator<Item = Codec> + '_ {
        self.0.iter().copied().filter(|c| c.is_audio())
    }

    /// Whether `codec` is allowed.
    pub fn contains(&self, codec: Codec) -> bool {
        self.0.contains(&codec)
    }

    /// Whether DTMF events (RFC 4733) are enabled.
    pub fn telephone_event(&self) -> bool {
        self.contains(Codec::TelephoneEvent)
    }
}

impl Default for CodecPreference {
    /// Opus, PCMU, PCMA, telephone-event: Opus first because wideband audio helps
    /// speech recognition; G.711 after it because every telephone network has it.
    fn default() -> Self {
        Self(Codec::ALL.to_vec())
    }
}

impl TryFrom<Vec<Codec>> for CodecPreference {
    type Error = CodecPreferenceError;

    fn try_from(codecs: Vec<Codec>) -> Result<Self, Self::Error> {
        Self::new(codecs)
    }
}

impl From<CodecPreference> for Vec<Codec> {
    fn from(p: CodecPreference) -> Self {
        p.0
    }
}

impl FromStr for CodecPreference {
    type Err = CodecPreferenceError;

    /// Parse a comma-separated list such as `"PCMU, PCMA, telephone-event"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_names(s.split(',').map(str::trim).filter(|n| !n.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_case_insensitive_and_errors_clear() {
        assert_eq!(Codec::from_name("pcmu"), Ok(Codec::Pcmu));
        assert_eq!("PCMA".parse(), Ok(Codec::Pcma));
        assert_eq!("OPUS".parse(), Ok(Codec::Opus));
        assert_eq!("Telephone-Event".parse(), Ok(Codec::TelephoneEvent));
        let err = Codec::from_name("G729").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown codec \"G729\": expected one of PCMU, PCMA, opus, telephone-event \
             (case-insensitive)"
        );
    }

    #[test]
    fn preference_validation() {
        assert_eq!(
            CodecPreference::from_names(["PCMU", "pcmu"]),
            Err(CodecPreferenceError::Duplicate(Codec::Pcmu))
        );
        assert_eq!(
            CodecPreference::from_names(["telephone-event"]),
            Err(CodecPreferenceError::NoAudioCodec)
        );
        assert_eq!(
            CodecPreference::from_names(Vec::<&str>::new()),
            Err(CodecPreferenceError::NoAudioCodec)
        );
        let p: CodecPreference = "PCMA, opus, telephone-event".parse().unwrap();
        assert_eq!(
            p.codecs(),
            &[Codec::Pcma, Codec::Opus, Codec::TelephoneEvent]
        );
        assert_eq!(
            p.audio().collect::<Vec<_>>(),
            vec![Codec::Pcma, Codec::Opus]
        );
        assert!(p.telephone_event());
    }

    #[test]
    fn identify_static_and_dynamic() {
        assert_eq!(Codec::identify(0, None), Some(Codec::Pcmu));
        assert_eq!(Codec::identify(8, None), Some(Codec::Pcma));
        assert_eq!(Codec::identify(18, None), None);
        assert_eq!(Codec::identify(96, None), None);
        let opus = RtpMap::parse("96 OPUS/48000/2").unwrap();
        assert_eq!(Codec::identify(96, Some(&opus)), Some(Codec::Opus));
        let mono_opus = RtpMap::parse("96 opus/48000/1").unwrap();
        assert_eq!(Codec::identify(96, Some(&mono_opus)), None);
        let te = RtpMap::parse("101 telephone-event/48000").unwrap();
        assert_eq!(Codec::identify(101, Some(&te)), Some(Codec::TelephoneEvent));
        // An rtpmap overrides the static table.
        let g729 = RtpMap::parse("0 G729/8000").unwrap();
        assert_eq!(Codec::identify(0, Some(&g729)), None);
    }
}
