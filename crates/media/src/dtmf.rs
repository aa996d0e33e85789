//! RFC 4733 telephone-event: DTMF receive (once per event) and send.
//!
//! # Receive design
//!
//! Looked at: libre's `telev.c` (baresip), which de-duplicates by event code and end
//! flag only, so the same digit pressed twice with a lost end packet is merged, and
//! Asterisk/pjmedia, which key an event by its RTP timestamp. RFC 4733 section
//! 2.5.1.3 says every packet of one event carries the event's start timestamp and a
//! new event has a new timestamp, and section 2.5.1.4 makes the end packet
//! retransmitted (typically three times). So [`DtmfReceiver`]:
//!
//! * identifies an event by `(SSRC, RTP timestamp)`; the marker bit is ignored
//!   (some carriers never set it, or set it on every packet);
//! * reports a digit once, on the first end packet of an event;
//! * remembers the last 16 reported events, so retransmitted or reordered end
//!   packets and late non-end packets of a finished event are ignored;
//! * if the end packets are all lost, reports the event when a packet with a new
//!   timestamp arrives or when no packet came for `end_timeout` (default 300 ms),
//!   using the last duration seen.
//!
//! Long events split into segments (section 2.5.1.5, > 8 s at 8 kHz) are reported as
//! separate events; that does not happen with human DTMF.

use std::time::{Duration, Instant};

use crate::MediaError;

/// Payload length of one telephone-event.
pub const EVENT_PAYLOAD_LEN: usize = 4;

const DIGITS: &[u8; 16] = b"0123456789*#ABCD";

/// Maps an RFC 4733 event code to a DTMF digit.
pub fn event_to_digit(code: u8) -> Option<char> {
    DIGITS.get(code as usize).map(|b| *b as char)
}

/// Maps a DTMF digit (0-9 * # A-D, case-insensitive) to its event code.
pub fn digit_to_event(digit: char) -> Option<u8> {
    let d = digit.to_ascii_uppercase() as u8;
    DIGITS.iter().position(|b| *b == d).map(|p| p as u8)
}

/// One telephone-event payload (RFC 4733 section 2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPayload {
    /// Event code (0-15 are DTMF).
    pub event: u8,
    /// End bit.
    pub end: bool,
    /// Volume in -dBm0 (0..=63).
    pub volume: u8,
    /// Duration in RTP clock units since the event's timestamp.
    pub duration: u16,
}

impl EventPayload {
    /// Parses the first 4 bytes of a telephone-event payload. A payload may carry
    /// several events (redundancy); the first is the current one.
    pub fn parse(payload: &[u8]) -> Result<Self, MediaError> {
        if payload.len() < EVENT_PAYLOAD_LEN {
            return Err(MediaError::Malformed("telephone-event too short"));
        }
        Ok(Self {
            event: payload[0],
            end: payload[1] & 0x80 != 0,
            volume: payload[1] & 0x3F,
            duration: u16::from_be_bytes([payload[2], payload[3]]),
        })
    }

    /// Writes the payload.
    pub fn write(&self, out: &mut [u8; EVENT_PAYLOAD_LEN]) {
        out[0] = self.event;
        out[1] = (if self.end { 0x80 } else { 0 }) | (self.volume & 0x3F);
        out[2..4].copy_from_slice(&self.duration.to_be_bytes());
    }
}

/// A received DTMF digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfDigit {
    /// The digit: 0-9, *, #, A-D.
    pub digit: char,
    /// How long the key was held.
    pub duration: Duration,
    /// RTP timestamp of the event start.
    pub timestamp: u32,
}

#[derive(Debug, Clone, Copy)]
struct Current {
    ssrc: u32,
    timestamp: u32,
    event: u8,
    duration: u16,
    last_seen: Instant,
}

const REMEMBERED: usize = 16;

/// RFC 4733 receiver (sans-IO, see module docs).
#[derive(Debug, Clone)]
pub struct DtmfReceiver {
    clock_rate: u32,
    end_timeout: Duration,
    current: Option<Current>,
    done: [(u32, u32); REMEMBERED],
    done_len: usize,
    done_pos: usize,
    pending: Option<DtmfDigit>,
    ignored: u64,
}

impl DtmfReceiver {
    /// A receiver for telephone-event at `clock_rate` (usually 8000 or 48000).
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate: clock_rate.max(1),
            end_timeout: Duration::from_millis(300),
            current: None,
            done: [(0, 0); REMEMBERED],
            done_len: 0,
            done_pos: 0,
            pending: None,
            ignored: 0,
        }
    }

    /// Packets ignored as retransmits or stale.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    fn is_done(&self, ssrc: u32, ts: u32) -> bool {
        self.done[..self.done_len].contains(&(ssrc, ts))
    }

    fn mark_done(&mut self, ssrc: u32, ts: u32) {
        self.done[self.done_pos] = (ssrc, ts);
        self.done_pos = (self.done_pos + 1) % REMEMBERED;
        self.done_len = (self.done_len + 1).min(REMEMBERED);
    }

    fn digit_of(&self, c: Current) -> Option<DtmfDigit> {
        event_to_digit(c.event).map(|digit| DtmfDigit {
            digit,
            duration: Duration::from_micros(c.duration as u64 * 1_000_000 / self.clock_rate as u64),
            timestamp: c.timestamp,
        })
    }

    fn finish_current(&mut self) -> Option<DtmfDigit> {
        let c = self.current.take()?;
        self.mark_done(c.ssrc, c.timestamp);
        self.digit_of(c)
    }

    /// Feeds one telephone-event packet. Returns a digit when an event completes;
    /// a second completed digit (previous event whose end was lost) is kept for
    /// [`DtmfReceiver::poll_digit`].
    pub fn handle_packet(
        &mut self,
        ssrc: u32,
        timestamp: u32,
        payload: &[u8],
        now: Instant,
    ) -> Result<Option<DtmfDigit>, MediaError> {
        let ev = EventPayload::parse(payload)?;
        if self.is_done(ssrc, timestamp) {
            self.ignored += 1;
            return Ok(None);
        }
        let mut earlier = None;
        match self.current {
            Some(c) if c.ssrc == ssrc && c.timestamp == timestamp => {}
            Some(_) => {
                // A new event while the previous one never saw its end.
                earlier = self.finish_current();
            }
            None => {}
        }
        let cur = self.current.get_or_insert(Current {
            ssrc,
            timestamp,
            event: ev.event,
            duration: 0,
            last_seen: now,
        });
        cur.duration = cur.duration.max(ev.duration);
        cur.last_seen = now;
        let finished = if ev.end { self.finish_current() } else { None };
        Ok(match (earlier, finished) {
            (Some(a), Some(b)) => {
                self.pending = Some(b);
                Some(a)
            }
            (Some(a), None) => Some(a),
            (None, b) => b,
        })
    }

    /// Reports an event whose end packets were all lost, once `end_timeout` passed.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<DtmfDigit> {
        if let Some(p) = self.pending.take() {
            return Some(p);
        }
        match self.current {
            Some(c) if now.saturating_duration_since(c.last_seen) >= self.end_timeout => {
                self.finish_current()
            }
            _ => None,
        }
    }

    /// Drains a digit kept back by [`DtmfReceiver::handle_packet`].
    pub fn poll_digit(&mut self) -> Option<DtmfDigit> {
        self.pending.take()
    }

    /// When [`DtmfReceiver::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.current.map(|c| c.last_seen + self.end_timeout)
    }
}

/// Output of [`DtmfSender::poll`]: one telephone-event packet to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    /// Marker bit (first packet of an event).
    pub marker: bool,
    /// RTP timestamp (the event start).
    pub timestamp: u32,
    /// Payload.
    pub payload: [u8; EVENT_PAYLOAD_LEN],
}

#[derive(Debug, Clone, Copy)]
struct Sending {
    event: u8,
    timestamp: u32,
    elapsed: u32,
    total: u32,
    end_sent: u8,
    first: bool,
}

const SEND_QUEUE: usize = 32;
const END_RETRANSMITS: u8 = 3;
const GAP_FRAMES: u8 = 3;

/// RFC 4733 sender: one packet per frame while a key is "held", the end packet
/// three times, then a short gap before the next digit.
#[derive(Debug, Clone)]
pub struct DtmfSender {
    queue: [(u8, u32); SEND_QUEUE],
    head: usize,
    len: usize,
    current: Option<Sending>,
    gap: u8,
    volume: u8,
}

impl Default for DtmfSender {
    fn default() -> Self {
        Self::new()
    }
}

impl DtmfSender {
    /// An idle sender.
    pub fn new() -> Self {
        Self {
            queue: [(0, 0); SEND_QUEUE],
            head: 0,
            len: 0,
            current: None,
            gap: 0,
            volume: 10,
        }
    }

    /// Queues a digit for `duration_ms` (clamped to 40..=5000 ms).
    pub fn queue(&mut self, digit: char, duration_ms: u32) -> Result<(), MediaError> {
        let event = digit_to_event(digit).ok_or(MediaError::Unsupported("not a DTMF digit"))?;
        if self.len == SEND_QUEUE {
            return Err(MediaError::QueueFull);
        }
        self.queue[(self.head + self.len) % SEND_QUEUE] = (event, duration_ms.clamp(40, 5000));
        self.len += 1;
        Ok(())
    }

    /// Whether an event is being sent (audio is suppressed meanwhile).
    pub fn is_active(&self) -> bool {
        self.current.is_some()
    }

    /// Whether anything is queued or being sent.
    pub fn is_idle(&self) -> bool {
        self.current.is_none() && self.len == 0
    }

    /// Called once per frame with the media timestamp of this frame and the frame
    /// length in RTP clock units. Returns the packet to send instead of audio, if any.
    pub fn poll(
        &mut self,
        media_ts: u32,
        frame_units: u32,
        clock_rate: u32,
    ) -> Option<EventPacket> {
        if self.current.is_none() {
            if self.gap > 0 {
                self.gap -= 1;
                return None;
            }
            if self.len == 0 {
                return None;
            }
            let (event, ms) = self.queue[self.head];
            self.head = (self.head + 1) % SEND_QUEUE;
            self.len -= 1;
            self.current = Some(Sending {
                event,
                timestamp: media_ts,
                elapsed: 0,
                total: (ms as u64 * clock_rate as u64 / 1000) as u32,
                end_sent: 0,
                first: true,
            });
        }
        let s = self.current.as_mut()?;
        let mut payload = [0u8; EVENT_PAYLOAD_LEN];
        let end = s.elapsed >= s.total;
        if !end {
            s.elapsed = (s.elapsed + frame_units).min(s.total).min(u16::MAX as u32);
        }
        EventPayload {
            event: s.event,
            end: s.elapsed >= s.total,
            volume: self.volume,
            duration: s.elapsed as u16,
        }
        .write(&mut payload);
        let pkt = EventPacket {
            marker: s.first,
            timestamp: s.timestamp,
            payload,
        };
        s.first = false;
        if s.elapsed >= s.total {
            s.end_sent += 1;
            if s.end_sent >= END_RETRANSMITS {
                self.current = None;
                self.gap = GAP_FRAMES;
            }
        }
        Some(pkt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(event: u8, end: bool, dur: u16) -> [u8; 4] {
        let mut p = [0; 4];
        EventPayload {
            event,
            end,
            volume: 10,
            duration: dur,
        }
        .write(&mut p);
        p
    }

    #[test]
    fn one_digit_despite_three_end_packets() {
        let t = Instant::now();
        let mut rx = DtmfReceiver::new(8000);
        let mut got = vec![];
        for d in [160u16, 320, 480] {
            got.extend(rx.handle_packet(1, 1000, &pkt(5, false, d), t).unwrap());
        }
        for _ in 0..3 {
            got.extend(rx.handle_packet(1, 1000, &pkt(5, true, 640), t).unwrap());
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].digit, '5');
        assert_eq!(got[0].duration, Duration::from_millis(80));
    }

    #[test]
    fn same_digit_twice_is_two_events() {
        let t = Instant::now();
        let mut rx = DtmfReceiver::new(8000);
        let mut got = vec![];
        for ts in [1000u32, 3000] {
            got.extend(rx.handle_packet(1, ts, &pkt(1, false, 160), t).unwrap());
            got.extend(rx.handle_packet(1, ts, &pkt(1, true, 800), t).unwrap());
            got.extend(rx.handle_packet(1, ts, &pkt(1, true, 800), t).unwrap());
        }
        assert_eq!(got.iter().map(|d| d.digit).collect::<String>(), "11");
    }

    #[test]
    fn lost_end_reported_on_next_event_or_timeout() {
        let t = Instant::now();
        let mut rx = DtmfReceiver::new(8000);
        assert_eq!(
            rx.handle_packet(1, 1000, &pkt(2, false, 400), t).unwrap(),
            None
        );
        let d = rx
            .handle_packet(1, 5000, &pkt(3, false, 160), t)
            .unwrap()
            .unwrap();
        assert_eq!(d.digit, '2');
        assert_eq!(rx.handle_timeout(t + Duration::from_millis(100)), None);
        let d = rx.handle_timeout(t + Duration::from_millis(400)).unwrap();
        assert_eq!(d.digit, '3');
        // A late end packet of the finished event is ignored.
        assert_eq!(
            rx.handle_packet(1, 5000, &pkt(3, true, 800), t).unwrap(),
            None
        );
    }

    #[test]
    fn malformed_is_error_not_panic() {
        let mut rx = DtmfReceiver::new(8000);
        assert!(rx.handle_packet(1, 0, &[1, 2], Instant::now()).is_err());
        // Non-DTMF events (flash) complete silently.
        assert_eq!(
            rx.handle_packet(1, 0, &pkt(16, true, 100), Instant::now())
                .unwrap(),
            None
        );
    }

    #[test]
    fn sender_then_receiver_roundtrip() {
        let mut tx = DtmfSender::new();
        tx.queue('#', 100).unwrap();
        tx.queue('7', 100).unwrap();
        assert!(tx.queue('x', 100).is_err());
        let mut rx = DtmfReceiver::new(8000);
        let t = Instant::now();
        let mut ts = 0u32;
        let mut got = String::new();
        let mut markers = 0;
        for _ in 0..40 {
            if let Some(p) = tx.poll(ts, 160, 8000) {
                markers += p.marker as u32;
                if let Some(d) = rx.handle_packet(9, p.timestamp, &p.payload, t).unwrap() {
                    got.push(d.digit);
                    assert_eq!(d.duration, Duration::from_millis(100));
                }
            }
            ts += 160;
        }
        assert_eq!(got, "#7");
        assert_eq!(markers, 2);
        assert!(tx.is_idle());
    }
}
