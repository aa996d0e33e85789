//! Opus (RFC 6716, RTP payload RFC 7587) through `audiopus` (system libopus).
//!
//! The RTP clock of Opus is always 48 kHz; the PCM rate of the encoder and decoder
//! is chosen per call (8, 12, 16, 24 or 48 kHz). Decoding at 16 kHz hands the STT
//! rate straight to the VAD without resampling.
//!
//! Loss handling follows the libopus API: a lost frame whose successor is already
//! in the jitter buffer is rebuilt from the successor's in-band FEC (LBRR) data
//! ([`OpusDecoder::decode_fec`]); otherwise the decoder's own PLC extrapolates
//! ([`OpusDecoder::conceal`]). Both write into caller buffers and do not allocate.

use audiopus::coder::{Decoder, Encoder};
use audiopus::packet::Packet;
use audiopus::{Application, Bitrate, Channels, MutSignals, SampleRate};

use crate::MediaError;

/// RTP clock rate of Opus (RFC 7587 section 4.1).
pub const OPUS_RTP_CLOCK_HZ: u32 = 48_000;
/// Largest Opus packet we produce (RFC 6716 section 3.4 bound for one frame).
pub const MAX_OPUS_PACKET: usize = 1275;

fn sample_rate(rate_hz: u32) -> Result<SampleRate, MediaError> {
    Ok(match rate_hz {
        8000 => SampleRate::Hz8000,
        12000 => SampleRate::Hz12000,
        16000 => SampleRate::Hz16000,
        24000 => SampleRate::Hz24000,
        48000 => SampleRate::Hz48000,
        _ => {
            return Err(MediaError::Unsupported(
                "opus pcm rate must be 8/12/16/24/48 kHz",
            ));
        }
    })
}

/// Mono Opus decoder with FEC and PLC.
#[derive(Debug)]
pub struct OpusDecoder {
    dec: Decoder,
    rate_hz: u32,
}

impl OpusDecoder {
    /// A decoder producing mono PCM at `rate_hz`.
    pub fn new(rate_hz: u32) -> Result<Self, MediaError> {
        Ok(Self {
            dec: Decoder::new(sample_rate(rate_hz)?, Channels::Mono)?,
            rate_hz,
        })
    }

    /// PCM rate of the output.
    pub fn rate_hz(&self) -> u32 {
        self.rate_hz
    }

    /// Decodes one packet into `out` (room for the packet's duration, at most
    /// 120 ms); returns the samples written.
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, MediaError> {
        let packet = Packet::try_from(payload)?;
        let signals = MutSignals::try_from(out)?;
        Ok(self.dec.decode(Some(packet), signals, false)?)
    }

    /// Rebuilds a lost frame of exactly `out.len()` samples from the in-band FEC data
    /// carried by the following packet `next`. Falls back to PLC when `next` carries
    /// no FEC (libopus then conceals on its own).
    pub fn decode_fec(&mut self, next: &[u8], out: &mut [i16]) -> Result<usize, MediaError> {
        let packet = Packet::try_from(next)?;
        let signals = MutSignals::try_from(out)?;
        Ok(self.dec.decode(Some(packet), signals, true)?)
    }

    /// Packet loss concealment for one lost frame of `out.len()` samples (a
    /// multiple of 2.5 ms).
    pub fn conceal(&mut self, out: &mut [i16]) -> Result<usize, MediaError> {
        let signals = MutSignals::try_from(out)?;
        Ok(self.dec.decode(None, signals, false)?)
    }
}

/// Opus encoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusEncoderConfig {
    /// PCM input rate (8/12/16/24/48 kHz).
    pub rate_hz: u32,
    /// Target bitrate in bits/s.
    pub bitrate_bps: i32,
    /// In-band FEC (LBRR) so the peer can rebuild a lost packet from the next one.
    pub inband_fec: bool,
    /// Expected loss in percent; libopus only spends bits on FEC when this is > 0.
    pub expected_loss_percent: u8,
    /// Encoder complexity 0..=10 (lower is cheaper).
    pub complexity: u8,
}

impl Default for OpusEncoderConfig {
    fn default() -> Self {
        Self {
            rate_hz: 16_000,
            bitrate_bps: 24_000,
            inband_fec: true,
            expected_loss_percent: 10,
            complexity: 5,
        }
    }
}

/// Mono Opus encoder for VoIP.
#[derive(Debug)]
pub struct OpusEncoder {
    enc: Encoder,
    rate_hz: u32,
}

impl OpusEncoder {
    /// An encoder for mono speech.
    pub fn new(cfg: OpusEncoderConfig) -> Result<Self, MediaError> {
        let mut enc = Encoder::new(sample_rate(cfg.rate_hz)?, Channels::Mono, Application::Voip)?;
        enc.set_bitrate(Bitrate::BitsPerSecond(cfg.bitrate_bps))?;
        enc.set_inband_fec(cfg.inband_fec)?;
        enc.set_packet_loss_perc(cfg.expected_loss_percent.min(100))?;
        enc.set_complexity(cfg.complexity.min(10))?;
        Ok(Self {
            enc,
            rate_hz: cfg.rate_hz,
        })
    }

    /// PCM rate of the input.
    pub fn rate_hz(&self) -> u32 {
        self.rate_hz
    }

    /// Encodes one frame (2.5, 5, 10, 20, 40 or 60 ms of PCM) into `out`; returns
    /// the packet length.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, MediaError> {
        Ok(self.enc.encode(pcm, out)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, n: usize, offset: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = (i + offset) as f32 / rate as f32;
                (8000.0 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()) as i16
            })
            .collect()
    }

    fn rms(x: &[i16]) -> f32 {
        (x.iter().map(|s| (*s as f32).powi(2)).sum::<f32>() / x.len() as f32).sqrt()
    }

    #[test]
    fn roundtrip_at_each_rate() {
        for rate in [8000u32, 16000, 48000] {
            let mut enc = OpusEncoder::new(OpusEncoderConfig {
                rate_hz: rate,
                ..Default::default()
            })
            .unwrap();
            let mut dec = OpusDecoder::new(rate).unwrap();
            let frame = (rate / 50) as usize;
            let mut pkt = [0u8; MAX_OPUS_PACKET];
            let mut out = vec![0i16; frame];
            let mut last_rms = 0.0;
            for k in 0..20 {
                let pcm = tone(rate, frame, k * frame);
                let n = enc.encode(&pcm, &mut pkt).unwrap();
                assert!(n > 0 && n < 400);
                let m = dec.decode(&pkt[..n], &mut out).unwrap();
                assert_eq!(m, frame);
                last_rms = rms(&out);
            }
            assert!(last_rms > 3000.0, "rate {rate}: rms {last_rms}");
        }
    }

    #[test]
    fn fec_and_plc_fill_a_lost_frame() {
        let rate = 16000;
        let frame = 320;
        let mut enc = OpusEncoder::new(OpusEncoderConfig::default()).unwrap();
        let mut dec = OpusDecoder::new(rate).unwrap();
        let mut pkts = vec![];
        for k in 0..30 {
            let mut buf = [0u8; MAX_OPUS_PACKET];
            let n = enc.encode(&tone(rate, frame, k * frame), &mut buf).unwrap();
            pkts.push(buf[..n].to_vec());
        }
        let mut out = [0i16; 320];
        for p in &pkts[..20] {
            dec.decode(p, &mut out).unwrap();
        }
        // Packet 20 lost: rebuild from 21's FEC, then decode 21 normally.
        assert_eq!(dec.decode_fec(&pkts[21], &mut out).unwrap(), frame);
        assert!(rms(&out) > 1000.0, "fec rms {}", rms(&out));
        dec.decode(&pkts[21], &mut out).unwrap();
        // Packet 22 lost with nothing after it: PLC.
        assert_eq!(dec.conceal(&mut out).unwrap(), frame);
        assert!(rms(&out) > 500.0, "plc rms {}", rms(&out));
        assert!(dec.decode(&[], &mut out).is_err());
        assert!(OpusDecoder::new(44100).is_err());
    }
}
