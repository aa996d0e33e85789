//! RTCP (RFC 3550 section 6): sender and receiver reports with SDES CNAME, parsing
//! of the peer's reports, and the per-call figures derived from them: loss and
//! jitter as the peer sees our stream, and round-trip time (section 6.4.1).
//!
//! Sans-IO: [`RtcpSession::handle_rtcp`] takes a datagram and `now`;
//! [`RtcpSession::write_report`] builds the next compound packet into a caller
//! buffer; [`RtcpSession::poll_timeout`] says when. Wall-clock NTP time is derived
//! from an anchor (`SystemTime` read once by the driver, paired with an `Instant`).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::MediaError;
use crate::rtp::{RtpSender, SourceState};

/// RTCP packet types (RFC 3550 section 12.1).
const PT_SR: u8 = 200;
const PT_RR: u8 = 201;
const PT_SDES: u8 = 202;
const PT_BYE: u8 = 203;
/// Seconds between 1900-01-01 (NTP era 0) and 1970-01-01.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// Longest CNAME kept (SDES item length is one byte; we cap lower).
const MAX_CNAME: usize = 64;

/// Maps `Instant`s to 64-bit NTP timestamps (32.32 fixed point).
#[derive(Debug, Clone, Copy)]
pub struct NtpClock {
    anchor: Instant,
    anchor_ntp: u64,
}

impl NtpClock {
    /// Pairs a monotonic instant with the wall-clock time read at the same moment.
    pub fn new(anchor: Instant, wall: SystemTime) -> Self {
        let d = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        Self {
            anchor,
            anchor_ntp: duration_to_ntp(d) + (NTP_UNIX_OFFSET << 32),
        }
    }

    /// NTP timestamp at `now`.
    pub fn ntp(&self, now: Instant) -> u64 {
        self.anchor_ntp
            .wrapping_add(duration_to_ntp(now.saturating_duration_since(self.anchor)))
    }
}

fn duration_to_ntp(d: Duration) -> u64 {
    (d.as_secs() << 32) + ((d.subsec_nanos() as u64) << 32) / 1_000_000_000
}

/// One reception report block (RFC 3550 section 6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// SSRC the block is about.
    pub ssrc: u32,
    /// Fraction lost since the previous report (8-bit fixed point).
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub extended_highest_seq: u32,
    /// Inter-arrival jitter in RTP clock units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received (0: none).
    pub last_sr: u32,
    /// Delay since that SR in 1/65536 s.
    pub delay_since_last_sr: u32,
}

impl ReportBlock {
    fn write(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.ssrc.to_be_bytes());
        let lost = self.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF) as u32 & 0xFF_FFFF;
        out[4..8].copy_from_slice(&(((self.fraction_lost as u32) << 24) | lost).to_be_bytes());
        out[8..12].copy_from_slice(&self.extended_highest_seq.to_be_bytes());
        out[12..16].copy_from_slice(&self.jitter.to_be_bytes());
        out[16..20].copy_from_slice(&self.last_sr.to_be_bytes());
        out[20..24].copy_from_slice(&self.delay_since_last_sr.to_be_bytes());
    }

    fn parse(b: &[u8]) -> Self {
        let w = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let lost = w(4) & 0xFF_FFFF;
        // Sign-extend the 24-bit field.
        let cumulative_lost = ((lost << 8) as i32) >> 8;
        Self {
            ssrc: w(0),
            fraction_lost: b[4],
            cumulative_lost,
            extended_highest_seq: w(8),
            jitter: w(12),
            last_sr: w(16),
            delay_since_last_sr: w(20),
        }
    }
}

/// Figures from RTCP exchanged with the peer.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RtcpStats {
    /// Round-trip time from the last report block that echoed one of our SRs.
    pub rtt: Option<Duration>,
    /// Loss fraction of our stream as the peer reported it (0.0..=1.0).
    pub remote_fraction_lost: f32,
    /// Cumulative loss of our stream as the peer reported it.
    pub remote_cumulative_lost: i32,
    /// Jitter of our stream at the peer, in ms.
    pub remote_jitter_ms: f32,
    /// Sender reports received.
    pub sr_received: u64,
    /// Receiver reports received.
    pub rr_received: u64,
    /// Reports sent.
    pub reports_sent: u64,
    /// RTCP datagrams that did not parse.
    pub malformed: u64,
    /// The peer sent BYE.
    pub bye_received: bool,
}

/// RTCP state of one call (see module docs).
#[derive(Debug, Clone)]
pub struct RtcpSession {
    clock: NtpClock,
    clock_rate: u32,
    cname: [u8; MAX_CNAME],
    cname_len: usize,
    interval: Duration,
    next_report: Instant,
    /// Middle 32 bits of the last SR's NTP time and when it arrived.
    last_sr: Option<(u32, Instant)>,
    stats: RtcpStats,
}

impl RtcpSession {
    /// A session sending every `interval` (RFC 3550 suggests 5 s minimum), the first
    /// report half an interval after `now`.
    pub fn new(
        clock: NtpClock,
        clock_rate: u32,
        cname: &str,
        interval: Duration,
        now: Instant,
    ) -> Self {
        let mut c = [0u8; MAX_CNAME];
        let bytes = cname.as_bytes();
        let len = bytes.len().min(MAX_CNAME);
        c[..len].copy_from_slice(&bytes[..len]);
        // Below 1 s would flood the peer (and 0 would report on every tick).
        let interval = interval.max(Duration::from_secs(1));
        Self {
            clock,
            clock_rate: clock_rate.max(1),
            cname: c,
            cname_len: len,
            interval,
            next_report: now + interval / 2,
            last_sr: None,
            stats: RtcpStats::default(),
        }
    }

    /// Current figures.
    pub fn stats(&self) -> RtcpStats {
        self.stats
    }

    /// When the next report is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next_report
    }

    /// Feeds one received RTCP datagram (a compound packet). `our_ssrc` selects the
    /// report block about our stream.
    pub fn handle_rtcp(
        &mut self,
        buf: &[u8],
        our_ssrc: u32,
        now: Instant,
    ) -> Result<(), MediaError> {
        let r = self.parse_compound(buf, our_ssrc, now);
        if r.is_err() {
            self.stats.malformed += 1;
        }
        r
    }

    fn parse_compound(
        &mut self,
        mut buf: &[u8],
        our_ssrc: u32,
        now: Instant,
    ) -> Result<(), MediaError> {
        if buf.len() < 4 {
            return Err(MediaError::Malformed("rtcp too short"));
        }
        while buf.len() >= 4 {
            if buf[0] >> 6 != 2 {
                return Err(MediaError::Malformed("rtcp version"));
            }
            let count = (buf[0] & 0x1F) as usize;
            let pt = buf[1];
            let len = (u16::from_be_bytes([buf[2], buf[3]]) as usize + 1) * 4;
            if len > buf.len() {
                return Err(MediaError::Malformed("rtcp length"));
            }
            let pkt = &buf[..len];
            match pt {
                PT_SR => {
                    if pkt.len() < 28 + 24 * count {
                        return Err(MediaError::Malformed("rtcp sr"));
                    }
                    let ntp_mid = u32::from_be_bytes([pkt[10], pkt[11], pkt[12], pkt[13]]);
                    self.last_sr = Some((ntp_mid, now));
                    self.stats.sr_received += 1;
                    self.handle_blocks(&pkt[28..28 + 24 * count], our_ssrc, now);
                }
                PT_RR => {
                    if pkt.len() < 8 + 24 * count {
                        return Err(MediaError::Malformed("rtcp rr"));
                    }
                    self.stats.rr_received += 1;
                    self.handle_blocks(&pkt[8..8 + 24 * count], our_ssrc, now);
                }
                PT_BYE => self.stats.bye_received = true,
                _ => {}
            }
            buf = &buf[len..];
        }
        Ok(())
    }

    fn handle_blocks(&mut self, blocks: &[u8], our_ssrc: u32, now: Instant) {
        for b in blocks.chunks_exact(24) {
            let rb = ReportBlock::parse(b);
            if rb.ssrc != our_ssrc {
                continue;
            }
            self.stats.remote_fraction_lost = rb.fraction_lost as f32 / 256.0;
            self.stats.remote_cumulative_lost = rb.cumulative_lost;
            self.stats.remote_jitter_ms = rb.jitter as f32 * 1000.0 / self.clock_rate as f32;
            if rb.last_sr != 0 {
                // RFC 3550 6.4.1: RTT = A - LSR - DLSR, in 1/65536 s.
                let a = (self.clock.ntp(now) >> 16) as u32;
                let rtt = a
                    .wrapping_sub(rb.last_sr)
                    .wrapping_sub(rb.delay_since_last_sr);
                // A negative result (clock trouble, stale block) wraps huge: skip it.
                if rtt < 65536 * 60 {
                    self.stats.rtt = Some(Duration::from_micros(rtt as u64 * 1_000_000 / 65536));
                }
            }
        }
    }

    /// Builds the compound report (SR if we sent media since the last one, else RR;
    /// one report block about `source` if any; SDES CNAME) into `out`, schedules the
    /// next and returns the length. `out` should hold 128 bytes.
    pub fn write_report(
        &mut self,
        now: Instant,
        our_ssrc: u32,
        sender: Option<&RtpSender>,
        source: Option<&mut SourceState>,
        out: &mut [u8],
    ) -> Result<usize, MediaError> {
        let need = 28 + 24 + 12 + self.cname_len + 4;
        if out.len() < need {
            return Err(MediaError::BufferTooSmall {
                needed: need,
                have: out.len(),
            });
        }
        self.next_report = now + self.interval;
        let block = source.map(|s| {
            let (lsr, dlsr) = match self.last_sr {
                Some((mid, at)) => {
                    let d = now.saturating_duration_since(at);
                    (mid, (d.as_micros() as u64 * 65536 / 1_000_000) as u32)
                }
                None => (0, 0),
            };
            ReportBlock {
                ssrc: s.ssrc,
                fraction_lost: s.take_fraction_lost(),
                cumulative_lost: s.cumulative_lost().clamp(i32::MIN as i64, i32::MAX as i64) as i32,
                extended_highest_seq: s.extended_max() as u32,
                jitter: s.jitter_rtp_units(),
                last_sr: lsr,
                delay_since_last_sr: dlsr,
            }
        });
        let rc = block.is_some() as usize;
        let mut n;
        match sender.filter(|s| s.packet_count() > 0) {
            Some(s) => {
                n = 28 + 24 * rc;
                out[0] = 0x80 | rc as u8;
                out[1] = PT_SR;
                out[2..4].copy_from_slice(&((n / 4 - 1) as u16).to_be_bytes());
                out[4..8].copy_from_slice(&our_ssrc.to_be_bytes());
                let ntp = self.clock.ntp(now);
                out[8..16].copy_from_slice(&ntp.to_be_bytes());
                // RTP timestamp of the last packet; close enough at 20 ms pacing.
                out[16..20].copy_from_slice(&s.last_timestamp().to_be_bytes());
                out[20..24].copy_from_slice(&s.packet_count().to_be_bytes());
                out[24..28].copy_from_slice(&s.octet_count().to_be_bytes());
                if let Some(b) = block {
                    b.write(&mut out[28..52]);
                }
            }
            None => {
                n = 8 + 24 * rc;
                out[0] = 0x80 | rc as u8;
                out[1] = PT_RR;
                out[2..4].copy_from_slice(&((n / 4 - 1) as u16).to_be_bytes());
                out[4..8].copy_from_slice(&our_ssrc.to_be_bytes());
                if let Some(b) = block {
                    b.write(&mut out[8..32]);
                }
            }
        }
        // SDES with one chunk: CNAME, then the null item, padded to 32 bits.
        let start = n;
        let items = 2 + self.cname_len + 1;
        let chunk = 4 + items.div_ceil(4) * 4;
        let len = 4 + chunk;
        out[start] = 0x81;
        out[start + 1] = PT_SDES;
        out[start + 2..start + 4].copy_from_slice(&((len / 4 - 1) as u16).to_be_bytes());
        out[start + 4..start + 8].copy_from_slice(&our_ssrc.to_be_bytes());
        out[start + 8] = 1;
        out[start + 9] = self.cname_len as u8;
        out[start + 10..start + 10 + self.cname_len].copy_from_slice(&self.cname[..self.cname_len]);
        out[start + 10 + self.cname_len..start + len].fill(0);
        n += len;
        self.stats.reports_sent += 1;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::SeededRng;

    #[test]
    fn sr_rr_roundtrip_gives_rtt_and_loss() {
        let t0 = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        // Two sessions, A and B, with 40 ms one-way delay each way.
        let mut a = RtcpSession::new(
            NtpClock::new(t0, wall),
            8000,
            "a@test",
            Duration::from_secs(5),
            t0,
        );
        let mut b = RtcpSession::new(
            NtpClock::new(t0, wall),
            8000,
            "b@test",
            Duration::from_secs(5),
            t0,
        );
        let mut rng = SeededRng::new(3);
        let mut a_sender = RtpSender::new(&mut rng);
        let b_ssrc = 0xB0B;
        let mut buf = [0u8; 1500];
        for _ in 0..10 {
            a_sender
                .write_media(&mut buf, 0, false, &[0; 160], 160)
                .unwrap();
        }
        // B receives A's stream with one packet lost.
        let mut b_src = SourceState::new(a_sender.ssrc(), 10, 8000);
        for seq in [10u16, 11, 12, 14, 15] {
            b_src.update_seq(seq);
        }
        let mut out = [0u8; 256];
        let n = a
            .write_report(t0, a_sender.ssrc(), Some(&a_sender), None, &mut out)
            .unwrap();
        assert_eq!(out[1], PT_SR);
        assert_eq!(n % 4, 0);
        // B gets the SR 40 ms later, answers 100 ms after that.
        b.handle_rtcp(&out[..n], b_ssrc, t0 + Duration::from_millis(40))
            .unwrap();
        assert_eq!(b.stats().sr_received, 1);
        let n = b
            .write_report(
                t0 + Duration::from_millis(140),
                b_ssrc,
                None,
                Some(&mut b_src),
                &mut out,
            )
            .unwrap();
        assert_eq!(out[1], PT_RR);
        a.handle_rtcp(&out[..n], a_sender.ssrc(), t0 + Duration::from_millis(180))
            .unwrap();
        let st = a.stats();
        let rtt = st.rtt.unwrap().as_millis();
        assert!((79..=81).contains(&rtt), "rtt {rtt}");
        assert_eq!(st.remote_cumulative_lost, 1);
        assert!(st.remote_fraction_lost > 0.1);
        assert_eq!(st.rr_received, 1);
    }

    #[test]
    fn malformed_is_counted_not_panicking() {
        let t0 = Instant::now();
        let mut s = RtcpSession::new(
            NtpClock::new(t0, SystemTime::UNIX_EPOCH),
            8000,
            "x",
            Duration::from_secs(5),
            t0,
        );
        for bad in [
            &[][..],
            &[0x80, 200, 0, 50][..],
            &[0x00, 200, 0, 0][..],
            &[0x81, 201, 0, 1, 0, 0, 0, 0][..],
        ] {
            assert!(s.handle_rtcp(bad, 1, t0).is_err());
        }
        assert_eq!(s.stats().malformed, 4);
        assert!(
            s.handle_rtcp(&[0x81, PT_BYE, 0, 1, 0, 0, 0, 1], 1, t0)
                .is_ok()
        );
        assert!(s.stats().bye_received);
    }

    #[test]
    fn negative_cumulative_loss_roundtrips() {
        let rb = ReportBlock {
            cumulative_lost: -3,
            ..Default::default()
        };
        let mut b = [0u8; 24];
        rb.write(&mut b);
        assert_eq!(ReportBlock::parse(&b).cumulative_lost, -3);
    }
}
