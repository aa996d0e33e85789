//! Negotiated session parameters (what the gateway maps SDP results to).

use std::net::SocketAddr;

/// Audio codecs the media path can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 mu-law (static payload type 0), 8 kHz.
    Pcmu,
    /// G.711 A-law (static payload type 8), 8 kHz.
    Pcma,
    /// Opus (RFC 7587), RTP clock 48 kHz; PCM rate chosen by `MediaConfig`.
    Opus,
}

impl Codec {
    /// The RTP clock rate the codec uses on the wire (RFC 3551, RFC 7587).
    pub fn rtp_clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            Codec::Opus => 48000,
        }
    }
}

/// The result of SDP offer/answer for one audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedParams {
    /// RTP payload type of the audio codec.
    pub payload_type: u8,
    /// The audio codec.
    pub codec: Codec,
    /// RTP clock rate from the rtpmap (8000 for G.711, 48000 for Opus).
    pub clock_rate: u32,
    /// Channels from the rtpmap (1; Opus says 2 in SDP but is decoded mono here).
    pub channels: u8,
    /// Packet time we send with, in ms (a multiple of 20; others fall back to 20).
    pub ptime_ms: u32,
    /// RTP payload type of telephone-event (RFC 4733), if negotiated.
    pub telephone_event_pt: Option<u8>,
    /// Where to send RTP until symmetric RTP latches to the actual source.
    pub remote_addr: SocketAddr,
    /// Where to send RTCP (None: remote RTP port + 1, RFC 3550 section 11).
    pub remote_rtcp_addr: Option<SocketAddr>,
}

impl NegotiatedParams {
    /// Plain parameters for a codec with its static/common payload type, 20 ms ptime
    /// and telephone-event on 101.
    pub fn simple(codec: Codec, remote_addr: SocketAddr) -> Self {
        let payload_type = match codec {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
            Codec::Opus => 111,
        };
        Self {
            payload_type,
            codec,
            clock_rate: codec.rtp_clock_rate(),
            channels: 1,
            ptime_ms: 20,
            telephone_event_pt: Some(101),
            remote_addr,
            remote_rtcp_addr: None,
        }
    }
}
