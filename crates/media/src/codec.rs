//! The negotiated codec behind one interface: decode with concealment, encode.
//!
//! G.711 runs at 8 kHz; Opus at the PCM rate chosen for the call. Every method
//! writes into caller buffers (no allocation on the 20 ms path).

use crate::g711::{self, G711Plc, Law};
use crate::opus::{OpusDecoder, OpusEncoder, OpusEncoderConfig};
use crate::{Codec, MediaError};

/// Decoder of the negotiated codec, with loss concealment.
#[derive(Debug)]
pub enum AudioDecoder {
    /// G.711 with Appendix I style concealment.
    G711 {
        /// Companding law.
        law: Law,
        /// Concealment state.
        plc: Box<G711Plc>,
    },
    /// Opus with decoder FEC / PLC.
    Opus(OpusDecoder),
}

impl AudioDecoder {
    /// A decoder for `codec`; `opus_rate_hz` is the Opus PCM rate.
    pub fn new(codec: Codec, opus_rate_hz: u32) -> Result<Self, MediaError> {
        Ok(match codec {
            Codec::Pcmu => Self::G711 {
                law: Law::Mu,
                plc: Box::default(),
            },
            Codec::Pcma => Self::G711 {
                law: Law::A,
                plc: Box::default(),
            },
            Codec::Opus => Self::Opus(OpusDecoder::new(opus_rate_hz)?),
        })
    }

    /// PCM rate of the decoded audio.
    pub fn rate_hz(&self) -> u32 {
        match self {
            Self::G711 { .. } => 8000,
            Self::Opus(d) => d.rate_hz(),
        }
    }

    /// Decodes a received payload; returns samples written.
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, MediaError> {
        match self {
            Self::G711 { law, plc } => {
                let n = g711::decode(*law, payload, out)?;
                plc.good_frame(&mut out[..n]);
                Ok(n)
            }
            Self::Opus(d) => d.decode(payload, out),
        }
    }

    /// Conceals one lost frame of `out.len()` samples; `next` is the following
    /// packet when already received (Opus in-band FEC).
    pub fn conceal(&mut self, next: Option<&[u8]>, out: &mut [i16]) -> Result<usize, MediaError> {
        match self {
            Self::G711 { plc, .. } => {
                plc.conceal(out);
                Ok(out.len())
            }
            Self::Opus(d) => match next {
                Some(n) if !n.is_empty() => d.decode_fec(n, out),
                _ => d.conceal(out),
            },
        }
    }
}

/// Encoder of the negotiated codec.
#[derive(Debug)]
pub enum AudioEncoder {
    /// G.711.
    G711(Law),
    /// Opus.
    Opus(Box<OpusEncoder>),
}

impl AudioEncoder {
    /// An encoder for `codec`.
    pub fn new(codec: Codec, opus: OpusEncoderConfig) -> Result<Self, MediaError> {
        Ok(match codec {
            Codec::Pcmu => Self::G711(Law::Mu),
            Codec::Pcma => Self::G711(Law::A),
            Codec::Opus => Self::Opus(Box::new(OpusEncoder::new(opus)?)),
        })
    }

    /// PCM rate of the input.
    pub fn rate_hz(&self) -> u32 {
        match self {
            Self::G711(_) => 8000,
            Self::Opus(e) => e.rate_hz(),
        }
    }

    /// Encodes one frame; returns the payload length.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, MediaError> {
        match self {
            Self::G711(law) => g711::encode(*law, pcm, out),
            Self::Opus(e) => e.encode(pcm, out),
        }
    }
}
