//! RTP (RFC 3550): packet parsing and writing on top of the `rtp` / `webrtc-util`
//! crates, per-source sequence/timestamp bookkeeping (RFC 3550 appendix A.1 and A.8),
//! symmetric-RTP latching, and the sender side (SSRC, sequence, timestamp).

use std::net::SocketAddr;

use bytes::Buf;
use rtp::header::Header;
use webrtc_util::marshal::{Marshal, Unmarshal};

use crate::MediaError;

/// Fixed RTP header length (no CSRC, no extension).
pub const RTP_HEADER_LEN: usize = 12;
/// Largest datagram the media path reads or writes.
pub const MAX_DATAGRAM: usize = 1500;

/// The header fields the media path uses, copied out of [`rtp::header::Header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Marker bit.
    pub marker: bool,
    /// Payload type.
    pub payload_type: u8,
    /// Sequence number.
    pub sequence_number: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
}

/// Parses an RTP packet; returns the header and the payload (padding removed).
///
/// Structural checks run before `rtp::header::Header::unmarshal` because that
/// parser trusts RFC 8285 element lengths and would read past the end of a
/// truncated packet. Peer input never panics: every failure is an error to count.
pub fn parse(buf: &[u8]) -> Result<(RtpHeader, &[u8]), MediaError> {
    let header_len = validate(buf)?;
    let mut reader: &[u8] = buf;
    let h = Header::unmarshal(&mut reader).map_err(|_| MediaError::Malformed("rtp header"))?;
    let mut end = buf.len();
    if h.padding {
        let pad = buf[buf.len() - 1] as usize;
        if pad == 0 || header_len + pad > buf.len() {
            return Err(MediaError::Malformed("rtp padding"));
        }
        end -= pad;
    }
    let _ = reader.remaining();
    Ok((
        RtpHeader {
            marker: h.marker,
            payload_type: h.payload_type,
            sequence_number: h.sequence_number,
            timestamp: h.timestamp,
            ssrc: h.ssrc,
        },
        &buf[header_len..end],
    ))
}

/// Checks version, CSRC count and extension lengths; returns the header length.
fn validate(buf: &[u8]) -> Result<usize, MediaError> {
    if buf.len() < RTP_HEADER_LEN {
        return Err(MediaError::Malformed("rtp too short"));
    }
    if buf[0] >> 6 != 2 {
        return Err(MediaError::Malformed("rtp version"));
    }
    let pt = buf[1] & 0x7F;
    // RFC 5761: 64..=95 collide with RTCP packet types 192..=223.
    if (64..=95).contains(&pt) {
        return Err(MediaError::Malformed("rtcp on rtp port"));
    }
    let cc = (buf[0] & 0x0F) as usize;
    let mut len = RTP_HEADER_LEN + 4 * cc;
    if buf.len() < len {
        return Err(MediaError::Malformed("rtp csrc"));
    }
    if buf[0] & 0x10 != 0 {
        if buf.len() < len + 4 {
            return Err(MediaError::Malformed("rtp extension header"));
        }
        let profile = u16::from_be_bytes([buf[len], buf[len + 1]]);
        let words = u16::from_be_bytes([buf[len + 2], buf[len + 3]]) as usize;
        let start = len + 4;
        let end = start + 4 * words;
        if buf.len() < end {
            return Err(MediaError::Malformed("rtp extension length"));
        }
        // Walk RFC 8285 elements: each must fit inside the packet.
        let mut i = start;
        match profile {
            0xBEDE => {
                while i < end {
                    let b = buf[i];
                    i += 1;
                    if b == 0 {
                        continue;
                    }
                    if b >> 4 == 0x0F {
                        break;
                    }
                    i += ((b & 0x0F) + 1) as usize;
                    if i > buf.len() {
                        return Err(MediaError::Malformed("rtp extension element"));
                    }
                }
            }
            p if p & 0xFFF0 == 0x1000 => {
                while i < end {
                    let b = buf[i];
                    i += 1;
                    if b == 0 {
                        continue;
                    }
                    if i >= buf.len() {
                        return Err(MediaError::Malformed("rtp extension element"));
                    }
                    i += 1 + buf[i] as usize;
                    if i > buf.len() {
                        return Err(MediaError::Malformed("rtp extension element"));
                    }
                }
            }
            _ => {}
        }
        len = end;
    }
    Ok(len)
}

/// Small deterministic random source (SplitMix64) for SSRC and initial values;
/// the seed is injected so tests are reproducible.
#[derive(Debug, Clone)]
pub struct SeededRng(u64);

impl SeededRng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The sending side of one RTP stream: SSRC, sequence number and timestamp.
#[derive(Debug, Clone)]
pub struct RtpSender {
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    packets: u32,
    octets: u32,
    last_rtp_ts: u32,
}

impl RtpSender {
    /// A sender with random SSRC, initial sequence and timestamp (RFC 3550 5.1).
    pub fn new(rng: &mut SeededRng) -> Self {
        let r = rng.next_u64();
        let r2 = rng.next_u64();
        Self {
            ssrc: r as u32,
            seq: (r >> 32) as u16,
            timestamp: r2 as u32,
            packets: 0,
            octets: 0,
            last_rtp_ts: r2 as u32,
        }
    }

    /// Our SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The timestamp the next media packet will carry.
    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }

    /// Packets sent so far (for RTCP SR).
    pub fn packet_count(&self) -> u32 {
        self.packets
    }

    /// Payload octets sent so far (for RTCP SR).
    pub fn octet_count(&self) -> u32 {
        self.octets
    }

    /// RTP timestamp of the last packet sent.
    pub fn last_timestamp(&self) -> u32 {
        self.last_rtp_ts
    }

    /// Advances the media clock without sending (e.g. while an event is sent).
    pub fn advance(&mut self, samples: u32) {
        self.timestamp = self.timestamp.wrapping_add(samples);
    }

    /// Writes a header + payload into `buf` with an explicit timestamp and takes the
    /// next sequence number. Returns the packet length.
    pub fn write_with_timestamp(
        &mut self,
        buf: &mut [u8],
        payload_type: u8,
        marker: bool,
        timestamp: u32,
        payload: &[u8],
    ) -> Result<usize, MediaError> {
        let total = RTP_HEADER_LEN + payload.len();
        if buf.len() < total {
            return Err(MediaError::BufferTooSmall {
                needed: total,
                have: buf.len(),
            });
        }
        let header = Header {
            version: 2,
            marker,
            payload_type,
            sequence_number: self.seq,
            timestamp,
            ssrc: self.ssrc,
            ..Default::default()
        };
        let n = header
            .marshal_to(&mut buf[..RTP_HEADER_LEN])
            .map_err(|_| MediaError::Malformed("rtp marshal"))?;
        debug_assert_eq!(n, RTP_HEADER_LEN);
        buf[RTP_HEADER_LEN..total].copy_from_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(payload.len() as u32);
        self.last_rtp_ts = timestamp;
        Ok(total)
    }

    /// Writes a media packet at the current timestamp and advances the timestamp by
    /// `samples` (RTP clock units).
    pub fn write_media(
        &mut self,
        buf: &mut [u8],
        payload_type: u8,
        marker: bool,
        payload: &[u8],
        samples: u32,
    ) -> Result<usize, MediaError> {
        let n = self.write_with_timestamp(buf, payload_type, marker, self.timestamp, payload)?;
        self.timestamp = self.timestamp.wrapping_add(samples);
        Ok(n)
    }
}

/// Symmetric RTP (RFC 4961 style "latching"): send to the address media actually
/// comes from, and once latched ignore packets from any other address.
#[derive(Debug, Clone)]
pub struct SymmetricLatch {
    signalled: SocketAddr,
    latched: Option<SocketAddr>,
    ignored: u64,
}

impl SymmetricLatch {
    /// Starts unlatched, sending to the address from SDP.
    pub fn new(signalled: SocketAddr) -> Self {
        Self {
            signalled,
            latched: None,
            ignored: 0,
        }
    }

    /// Offers a valid packet's source; returns false if it must be ignored.
    pub fn accept(&mut self, from: SocketAddr) -> bool {
        match self.latched {
            None => {
                self.latched = Some(from);
                true
            }
            Some(addr) if addr == from => true,
            Some(_) => {
                self.ignored += 1;
                false
            }
        }
    }

    /// Where to send: the latched source, else the signalled address.
    pub fn destination(&self) -> SocketAddr {
        self.latched.unwrap_or(self.signalled)
    }

    /// The latched source, if any.
    pub fn latched(&self) -> Option<SocketAddr> {
        self.latched
    }

    /// Packets ignored because they came from another source.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }
}

const RTP_SEQ_MOD: u64 = 1 << 16;
const MAX_DROPOUT: u16 = 3000;
const MAX_MISORDER: u16 = 100;
const MIN_SEQUENTIAL: u32 = 2;

/// What [`SourceState::update_seq`] decided about a packet (RFC 3550 A.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    /// In sequence (or a tolerable gap / reorder): use it.
    Valid,
    /// Source still on probation; not yet valid.
    Probation,
    /// Very large jump: dropped unless the next packet confirms the new sequence.
    BadJump,
    /// The source restarted its sequence (confirmed large jump): state was reset.
    Restarted,
}

/// Reception state of one source: RFC 3550 A.1 sequence validation with extended
/// sequence numbers, A.3 loss accounting and A.8 inter-arrival jitter.
#[derive(Debug, Clone)]
pub struct SourceState {
    /// SSRC of the source.
    pub ssrc: u32,
    max_seq: u16,
    cycles: u64,
    base_seq: u64,
    bad_seq: u64,
    probation: u32,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    transit: Option<i64>,
    jitter: f64,
    clock_rate: u32,
}

impl SourceState {
    /// Starts tracking `ssrc` at its first sequence number.
    pub fn new(ssrc: u32, seq: u16, clock_rate: u32) -> Self {
        let mut s = Self {
            ssrc,
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            bad_seq: RTP_SEQ_MOD + 1,
            probation: MIN_SEQUENTIAL,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            transit: None,
            jitter: 0.0,
            clock_rate,
        };
        s.init_seq(seq);
        s.max_seq = seq.wrapping_sub(1);
        s
    }

    fn init_seq(&mut self, seq: u16) {
        self.base_seq = seq as u64;
        self.max_seq = seq;
        self.bad_seq = RTP_SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
    }

    /// RFC 3550 A.1 `update_seq`.
    pub fn update_seq(&mut self, seq: u16) -> SeqVerdict {
        let udelta = seq.wrapping_sub(self.max_seq);
        if self.probation > 0 {
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.init_seq(seq);
                    self.received += 1;
                    return SeqVerdict::Valid;
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
            }
            return SeqVerdict::Probation;
        } else if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles += RTP_SEQ_MOD;
            }
            self.max_seq = seq;
        } else if udelta as u32 <= (RTP_SEQ_MOD as u32) - MAX_MISORDER as u32 {
            if seq as u64 == self.bad_seq {
                self.init_seq(seq);
                self.received += 1;
                return SeqVerdict::Restarted;
            }
            self.bad_seq = (seq as u64 + 1) & (RTP_SEQ_MOD - 1);
            return SeqVerdict::BadJump;
        }
        // else: duplicate or reordered packet
        self.received += 1;
        SeqVerdict::Valid
    }

    /// Extended highest sequence number received.
    pub fn extended_max(&self) -> u64 {
        self.cycles + self.max_seq as u64
    }

    /// Packets received (duplicates included, as RFC 3550 counts them).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Cumulative packets lost (may be negative with duplicates; clamped at 0).
    pub fn cumulative_lost(&self) -> i64 {
        let expected = self.extended_max() + 1 - self.base_seq;
        expected as i64 - self.received as i64
    }

    /// RFC 3550 A.3 fraction lost since the last call (8-bit fixed point).
    pub fn take_fraction_lost(&mut self) -> u8 {
        let expected = self.extended_max() + 1 - self.base_seq;
        let expected_interval = expected.saturating_sub(self.expected_prior);
        self.expected_prior = expected;
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.received_prior = self.received;
        let lost = expected_interval as i64 - received_interval as i64;
        if expected_interval == 0 || lost <= 0 {
            0
        } else {
            ((lost << 8) / expected_interval as i64).min(255) as u8
        }
    }

    /// RFC 3550 A.8: update the inter-arrival jitter from an arrival time (in RTP
    /// clock units of a local clock) and the packet's RTP timestamp.
    pub fn update_jitter(&mut self, arrival_rtp_units: i64, rtp_ts: u32) {
        let transit = arrival_rtp_units.wrapping_sub(rtp_ts as i64);
        if let Some(prev) = self.transit {
            let mut d = (transit - prev) as f64;
            if d < 0.0 {
                d = -d;
            }
            // Timestamp jumps (silence suppression, new talkspurt with a big gap)
            // would spike the estimate; ignore differences above 10 s.
            if d < 10.0 * self.clock_rate as f64 {
                self.jitter += (d - self.jitter) / 16.0;
            }
        }
        self.transit = Some(transit);
    }

    /// Inter-arrival jitter in RTP clock units.
    pub fn jitter_rtp_units(&self) -> u32 {
        self.jitter as u32
    }

    /// Inter-arrival jitter in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        self.jitter * 1000.0 / self.clock_rate as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn packet(seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut rng = SeededRng::new(1);
        let mut s = RtpSender::new(&mut rng);
        s.seq = seq;
        s.ssrc = ssrc;
        let mut buf = vec![0u8; 12 + payload.len()];
        let n = s
            .write_with_timestamp(&mut buf, 0, false, ts, payload)
            .unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn roundtrip_header_and_payload() {
        let p = packet(65535, 123456, 0xdeadbeef, &[1, 2, 3]);
        let (h, payload) = parse(&p).unwrap();
        assert_eq!(h.sequence_number, 65535);
        assert_eq!(h.timestamp, 123456);
        assert_eq!(h.ssrc, 0xdeadbeef);
        assert_eq!(payload, &[1, 2, 3]);
    }

    #[test]
    fn padding_and_csrc_and_extension() {
        let mut p = vec![0xB1u8, 0x00, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2];
        p.extend_from_slice(&[0, 0, 0, 9]); // one CSRC
        p.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, 0xAA, 0, 0]); // one-byte ext
        p.extend_from_slice(&[7, 7, 0, 2]); // payload 7,7 + 2 bytes padding
        let (h, payload) = parse(&p).unwrap();
        assert_eq!(h.ssrc, 2);
        assert_eq!(payload, &[7, 7]);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse(&[0x80, 0]).is_err());
        assert!(parse(&[0x40; 20]).is_err());
        // Extension element that claims more bytes than the packet has.
        let p = [
            0x90u8, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0xBE, 0xDE, 0, 1, 0x1F, 0, 0, 0,
        ];
        let _ = parse(&p);
        // RTCP SR on the RTP port.
        assert!(parse(&[0x80, 200, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0]).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&data);
        }

        #[test]
        fn parse_never_panics_v2(mut data in proptest::collection::vec(any::<u8>(), 12..100)) {
            data[0] = (data[0] & 0x3F) | 0x80;
            let _ = parse(&data);
        }
    }

    #[test]
    fn latch_ignores_other_sources() {
        let a: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:4002".parse().unwrap();
        let sdp: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let mut l = SymmetricLatch::new(sdp);
        assert_eq!(l.destination(), sdp);
        assert!(l.accept(a));
        assert!(!l.accept(b));
        assert!(l.accept(a));
        assert_eq!(l.destination(), a);
        assert_eq!(l.ignored(), 1);
    }

    #[test]
    fn seq_probation_wrap_and_loss() {
        let mut s = SourceState::new(1, 65530, 8000);
        assert_eq!(s.update_seq(65530), SeqVerdict::Probation);
        assert_eq!(s.update_seq(65531), SeqVerdict::Valid);
        for seq in [65532u16, 65533, 65534, 65535, 0, 1, 3] {
            assert_eq!(s.update_seq(seq), SeqVerdict::Valid);
        }
        assert_eq!(s.extended_max(), 65536 + 3);
        assert_eq!(s.cumulative_lost(), 1);
        assert!(s.take_fraction_lost() > 0);
        // A big jump is dropped once, then accepted as a restart.
        assert_eq!(s.update_seq(20000), SeqVerdict::BadJump);
        assert_eq!(s.update_seq(20001), SeqVerdict::Restarted);
    }

    #[test]
    fn sender_advances() {
        let mut rng = SeededRng::new(7);
        let mut s = RtpSender::new(&mut rng);
        let ts0 = s.timestamp();
        let mut buf = [0u8; 200];
        let n = s.write_media(&mut buf, 0, true, &[0xFF; 160], 160).unwrap();
        assert_eq!(n, 172);
        let (h, _) = parse(&buf[..n]).unwrap();
        assert!(h.marker);
        assert_eq!(h.timestamp, ts0);
        assert_eq!(s.timestamp(), ts0.wrapping_add(160));
        assert_eq!(s.packet_count(), 1);
    }
}
