//! [`CallMedia`]: the sans-IO media core of one call.
//!
//! Inbound: `handle_rtp` parses, latches (symmetric RTP), routes telephone-event to
//! the DTMF receiver and codec audio to the jitter buffer. Every ptime tick
//! (`handle_timeout`) pops the jitter buffer, decodes (with concealment on loss),
//! resamples to 16 kHz and runs the VAD, whose speech-start / speech-end / speech
//! frames come out of `poll_event`.
//!
//! Outbound: on the same tick one frame of playout (or DTMF, or silence) is encoded
//! and written as an RTP packet for `poll_transmit`; RTCP reports go out on their
//! own schedule. Because both directions advance on the same tick, one caller frame
//! and one agent frame per tick are offered for recording (`poll_recording`).
//!
//! Speech onset while interruptible playout runs is barge-in: the playout is
//! flushed on that very tick (so at most the frame already sent was heard) and
//! [`MediaEvent::BargeIn`] is emitted before [`MediaEvent::SpeechStart`].
//!
//! Drain rule (crate docs): after every `handle_*` call, drain `poll_transmit`,
//! `poll_event` and `poll_recording` until `None`, then wait for the next datagram
//! or `poll_timeout()`. Nothing here reads the clock or allocates after `new`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use crate::bridge::{BridgeLane, BridgeSourceId, BridgeStats, BridgeTap};
use crate::codec::{AudioDecoder, AudioEncoder};
use crate::dtmf::{DtmfDigit, DtmfReceiver, DtmfSender};
use crate::jitter::{JitterBuffer, JitterConfig, JitterStats, PacketKind, Pop};
use crate::opus::OpusEncoderConfig;
use crate::playout::{FrameKind, Playout, PlayoutConfig, PlayoutEvent, Segment};
use crate::resample::Resampler;
use crate::rtcp::{NtpClock, RtcpSession, RtcpStats};
use crate::rtp::{
    self, MAX_DATAGRAM, RtpSender, SeededRng, SeqVerdict, SourceState, SymmetricLatch,
};
use crate::vad::{FRAME_16K, Frame16k, Vad, VadConfig, VadEvent};
use crate::{MediaError, NegotiatedParams};

/// Comfort noise (RFC 3389) static payload type: played as silence.
const PT_CN: u8 = 13;
/// Ticks behind after which the core stops catching up and skips ahead.
const MAX_CATCH_UP_TICKS: u32 = 3;
const TX_SLOTS: usize = 4;
const EVENT_QUEUE: usize = 64;
const VAD_FRAME_MS: u32 = 20;
/// Silence from the latched source after which another source may take over.
const RELATCH_AFTER: Duration = Duration::from_secs(2);

/// Everything needed to run the media of one call.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Codec, payload types, ptime and remote addresses from SDP offer/answer.
    pub params: NegotiatedParams,
    /// Jitter buffer limits.
    pub jitter: JitterConfig,
    /// VAD engine, onset, hangover and pre-roll.
    pub vad: VadConfig,
    /// PCM rate Opus is decoded to and encoded from (8, 12, 16, 24 or 48 kHz).
    pub opus_pcm_rate_hz: u32,
    /// Opus encoder settings (`rate_hz` is replaced by `opus_pcm_rate_hz`).
    pub opus_encoder: OpusEncoderConfig,
    /// Flush interruptible playout on speech onset.
    pub barge_in: bool,
    /// Playout segments that can be queued.
    pub max_playout_segments: usize,
    /// Comfort noise level between segments in dBov (e.g. -60.0); None: silence.
    pub comfort_noise_dbov: Option<f32>,
    /// RTP clock rate of telephone-event when it differs from the codec's (e.g.
    /// telephone-event/8000 next to Opus); only scales reported durations.
    pub telephone_event_clock_rate: Option<u32>,
    /// RTCP report interval.
    pub rtcp_interval: Duration,
    /// RTCP CNAME.
    pub cname: String,
    /// Seed for SSRC, initial sequence number and timestamp.
    pub seed: u64,
    /// Capacity of the event channel out of the driver (speech frames included:
    /// 50 per second of speech).
    pub event_capacity: usize,
    /// Write a stereo WAV (caller left, agent right) here.
    pub record_to: Option<std::path::PathBuf>,
    /// How long bridged audio from another leg waits at least before it is played
    /// (the jitter margin between the two legs' ticks, see [`crate::bridge`]).
    pub bridge_margin_ms: u32,
}

impl MediaConfig {
    /// Defaults around the negotiated parameters.
    pub fn new(params: NegotiatedParams) -> Self {
        Self {
            params,
            jitter: JitterConfig::default(),
            vad: VadConfig::default(),
            opus_pcm_rate_hz: 16_000,
            opus_encoder: OpusEncoderConfig::default(),
            barge_in: true,
            max_playout_segments: 1024,
            comfort_noise_dbov: None,
            telephone_event_clock_rate: None,
            rtcp_interval: Duration::from_secs(5),
            cname: "voicegate".to_owned(),
            seed: 0x5eed,
            event_capacity: 512,
            record_to: None,
            bridge_margin_ms: 5,
        }
    }
}

/// What the media core reports.
// Speech frames travel inline: boxing them would allocate 50 times a second.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// Media arrived from this address; RTP goes back there from now on.
    Latched {
        /// The peer's actual RTP source.
        remote: SocketAddr,
    },
    /// Speech began while interruptible playout ran; the playout was flushed.
    BargeIn {
        /// Stream position of the onset.
        at: Duration,
    },
    /// Speech began (stream position of the first onset frame; the stream clock
    /// starts with the first received packet and runs with the ptime tick).
    SpeechStart {
        /// Stream position.
        at: Duration,
    },
    /// 20 ms of 16 kHz speech: pre-roll frames first, then live ones until
    /// [`MediaEvent::SpeechEnd`].
    SpeechFrame {
        /// Stream position of the first sample.
        at: Duration,
        /// The audio.
        pcm: Frame16k,
    },
    /// Speech ended (stream position where the hangover began).
    SpeechEnd {
        /// Stream position.
        at: Duration,
    },
    /// An RFC 4733 DTMF digit (once per key press).
    Dtmf(DtmfDigit),
    /// Progress of playout segments.
    Playout(PlayoutEvent),
    /// The peer sent RTCP BYE.
    RemoteBye,
}

/// Which socket a datagram goes out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransmitKind {
    /// RTP socket.
    Rtp,
    /// RTCP socket.
    Rtcp,
}

/// A datagram to send.
#[derive(Debug)]
pub struct Transmit<'a> {
    /// RTP or RTCP socket.
    pub kind: TransmitKind,
    /// Destination.
    pub dest: SocketAddr,
    /// The datagram.
    pub payload: &'a [u8],
}

/// Per-call counters and figures.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CallStats {
    /// RTP datagrams received (all sources).
    pub rtp_received: u64,
    /// Datagrams that did not parse as RTP.
    pub rtp_malformed: u64,
    /// Packets from a non-latched source.
    pub ignored_source: u64,
    /// Packets with a payload type not negotiated.
    pub unknown_payload_type: u64,
    /// Packets dropped by RFC 3550 sequence validation (probation, bad jumps).
    pub seq_rejected: u64,
    /// Payloads the decoder rejected (concealed instead).
    pub decode_errors: u64,
    /// Cumulative loss of the inbound stream (RFC 3550 A.3).
    pub inbound_lost: i64,
    /// Inbound inter-arrival jitter in ms (RFC 3550 A.8).
    pub inbound_jitter_ms: f64,
    /// Jitter buffer counters.
    pub jitter: JitterStats,
    /// RTCP figures (RTT, loss/jitter of our stream at the peer).
    pub rtcp: RtcpStats,
    /// RTP packets sent.
    pub rtp_sent: u64,
    /// Frames of segment audio sent.
    pub playout_frames: u64,
    /// Ticks skipped because the driver fell behind.
    pub ticks_skipped: u64,
    /// DTMF digits received.
    pub dtmf_received: u64,
    /// Events dropped because the queue was not drained (or the driver's channel
    /// was full; the driver adds its drops here).
    pub events_dropped: u64,
    /// Bridge counters (both directions: what this leg sent to the leg it is
    /// bridged to, and what it played from a leg bridged to it).
    pub bridge: BridgeStats,
}

#[derive(Debug, Clone, Copy)]
struct TxMeta {
    slot: usize,
    kind: TransmitKind,
    dest: SocketAddr,
    len: usize,
}

/// The sans-IO media core of one call (see module docs).
pub struct CallMedia {
    params: NegotiatedParams,
    barge_in: bool,
    latch: SymmetricLatch,
    /// Last packet from the latched source (for re-latching after a NAT rebind).
    latched_rx: Instant,
    ignored_before: u64,
    rtcp_latch: Option<SocketAddr>,
    source: Option<SourceState>,
    epoch: Instant,
    jitter: JitterBuffer,
    decoder: AudioDecoder,
    encoder: AudioEncoder,
    resampler: Resampler,
    vad: Vad,
    dtmf_rx: DtmfReceiver,
    dtmf_tx: DtmfSender,
    playout: Playout,
    bridge_tap: Option<BridgeTap>,
    bridge_lane: BridgeLane,
    bridge_out_dropped: u64,
    sender: RtpSender,
    rtcp: RtcpSession,
    // Inbound PCM at the decoder rate, waiting to be cut into 20 ms VAD frames.
    rx_pcm: Vec<i16>,
    rx_len: usize,
    rx_started: bool,
    rx_frame: usize,
    vad_in: Vec<i16>,
    vad_frame: Frame16k,
    // One ptime of each direction for recording.
    rec_caller: Vec<i16>,
    rec_agent: Vec<i16>,
    // Ticks not yet taken by poll_recording (a catch-up runs up to
    // MAX_CATCH_UP_TICKS ticks in one handle_timeout), one ptime per slot.
    rec_ring_caller: Vec<i16>,
    rec_ring_agent: Vec<i16>,
    rec_written: usize,
    rec_read: usize,
    tx_pcm: Vec<i16>,
    tx_payload: Vec<u8>,
    tx_buf: Vec<u8>,
    tx_queue: VecDeque<TxMeta>,
    tx_next_slot: usize,
    tx_marker: bool,
    events: VecDeque<MediaEvent>,
    ptime: Duration,
    next_tick: Instant,
    stats: CallStats,
}

impl std::fmt::Debug for CallMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallMedia")
            .field("params", &self.params)
            .field("stats", &self.stats)
            .finish()
    }
}

impl CallMedia {
    /// Builds the core and all its buffers. `wall` is the wall-clock time at `now`
    /// (for RTCP NTP timestamps); the first tick is due at `now + ptime`.
    pub fn new(cfg: &MediaConfig, now: Instant, wall: SystemTime) -> Result<Self, MediaError> {
        let mut p = cfg.params.clone();
        // The tick cuts 20 ms VAD frames; other packet times (e.g. a=ptime:30)
        // fall back to 20 ms for what we send. Inbound packets of any length are
        // fine.
        if p.ptime_ms == 0 || !p.ptime_ms.is_multiple_of(VAD_FRAME_MS) || p.ptime_ms > 120 {
            p.ptime_ms = VAD_FRAME_MS;
        }
        let clock_rate = p.codec.rtp_clock_rate();
        let decoder = AudioDecoder::new(p.codec, cfg.opus_pcm_rate_hz)?;
        let encoder = AudioEncoder::new(
            p.codec,
            OpusEncoderConfig {
                rate_hz: cfg.opus_pcm_rate_hz,
                ..cfg.opus_encoder
            },
        )?;
        let dec_rate = decoder.rate_hz();
        let enc_rate = encoder.rate_hz();
        let resampler = Resampler::new_20ms(dec_rate, 16_000)?;
        let rx_frame = (dec_rate / 50) as usize;
        let tx_frame = (enc_rate * p.ptime_ms / 1000) as usize;
        let mut rng = SeededRng::new(cfg.seed);
        let sender = RtpSender::new(&mut rng);
        let playout = Playout::new(PlayoutConfig {
            rate_hz: enc_rate,
            frame_samples: tx_frame,
            max_segments: cfg.max_playout_segments,
            comfort_noise_peak: cfg
                .comfort_noise_dbov
                .map(|db| (32768.0 * 10f32.powf(db.min(0.0) / 20.0)) as u16)
                .unwrap_or(0),
        })?;
        let ptime = Duration::from_millis(p.ptime_ms as u64);
        // Room for the largest packet (120 ms) on top of a partial frame.
        let rx_cap = (dec_rate as usize * 120 / 1000) + rx_frame * 2;
        let vad_cfg = cfg.vad;
        Ok(Self {
            barge_in: cfg.barge_in,
            latch: SymmetricLatch::new(p.remote_addr),
            latched_rx: now,
            ignored_before: 0,
            rtcp_latch: None,
            source: None,
            epoch: now,
            jitter: JitterBuffer::new(cfg.jitter, clock_rate),
            decoder,
            encoder,
            resampler,
            vad: Vad::new(vad_cfg)?,
            dtmf_rx: DtmfReceiver::new(cfg.telephone_event_clock_rate.unwrap_or(clock_rate)),
            dtmf_tx: DtmfSender::new(),
            playout,
            bridge_tap: None,
            bridge_lane: BridgeLane::new(
                (enc_rate / 50) as usize,
                Duration::from_millis(cfg.bridge_margin_ms as u64),
            ),
            bridge_out_dropped: 0,
            sender,
            rtcp: RtcpSession::new(
                NtpClock::new(now, wall),
                clock_rate,
                &cfg.cname,
                cfg.rtcp_interval,
                now,
            ),
            rx_pcm: vec![0; rx_cap],
            rx_len: 0,
            rx_started: false,
            rx_frame,
            vad_in: vec![0; rx_frame],
            vad_frame: [0; FRAME_16K],
            rec_caller: vec![0; tx_frame.max(rx_frame * (p.ptime_ms / VAD_FRAME_MS) as usize)],
            rec_agent: vec![0; tx_frame],
            rec_ring_caller: vec![0; tx_frame * MAX_CATCH_UP_TICKS as usize],
            rec_ring_agent: vec![0; tx_frame * MAX_CATCH_UP_TICKS as usize],
            rec_written: 0,
            rec_read: 0,
            tx_pcm: vec![0; tx_frame],
            tx_payload: vec![0; MAX_DATAGRAM],
            tx_buf: vec![0; TX_SLOTS * MAX_DATAGRAM],
            tx_queue: VecDeque::with_capacity(TX_SLOTS),
            tx_next_slot: 0,
            tx_marker: true,
            events: VecDeque::with_capacity(EVENT_QUEUE),
            ptime,
            next_tick: now + ptime,
            params: p,
            stats: CallStats::default(),
        })
    }

    /// The negotiated parameters.
    pub fn params(&self) -> &NegotiatedParams {
        &self.params
    }

    /// PCM rate of playout segments (the codec's PCM rate).
    pub fn playout_rate_hz(&self) -> u32 {
        self.encoder.rate_hz()
    }

    /// PCM rate of [`CallMedia::poll_recording`] frames.
    pub fn recording_rate_hz(&self) -> u32 {
        self.encoder.rate_hz()
    }

    /// Our RTP SSRC.
    pub fn ssrc(&self) -> u32 {
        self.sender.ssrc()
    }

    /// Counters and figures.
    pub fn stats(&self) -> CallStats {
        let mut s = self.stats;
        s.jitter = self.jitter.stats();
        s.rtcp = self.rtcp.stats();
        if let Some(src) = &self.source {
            s.inbound_lost = src.cumulative_lost();
            s.inbound_jitter_ms = src.jitter_ms();
        }
        s.ignored_source = self.ignored_before + self.latch.ignored();
        let lane = self.bridge_lane.stats();
        s.bridge.frames_in = lane.frames_in;
        s.bridge.frames_in_dropped = lane.frames_in_dropped;
        s.bridge.frames_played = lane.frames_played;
        s.bridge.underruns = lane.underruns;
        s.bridge.frames_out_dropped =
            self.bridge_out_dropped + self.bridge_tap.as_ref().map_or(0, |t| t.dropped());
        s
    }

    /// Starts (or with `None` stops) sending this leg's decoded inbound audio to a
    /// bridged leg: every 20 ms frame from then on, converted by `tap`, comes out of
    /// [`CallMedia::poll_bridge`]. The tap's input rate must be this leg's
    /// [`CallMedia::playout_rate_hz`] (the decoder rate).
    pub fn set_bridge_tap(&mut self, tap: Option<BridgeTap>) -> Result<(), MediaError> {
        if let Some(t) = &tap
            && t.input_rate_hz() != self.decoder.rate_hz()
        {
            return Err(MediaError::Config {
                key: "bridge",
                reason: "tap input rate differs from the decoder rate",
            });
        }
        if let Some(old) = self.bridge_tap.take() {
            self.bridge_out_dropped += old.dropped();
        }
        self.bridge_tap = tap;
        Ok(())
    }

    /// Whether decoded audio is being tapped for a bridge.
    pub fn is_bridged_out(&self) -> bool {
        self.bridge_tap.is_some()
    }

    /// Next 20 ms frame for the bridged leg (at the rate the tap was built for).
    pub fn poll_bridge(&mut self) -> Option<&[i16]> {
        let tap = self.bridge_tap.as_mut()?;
        let frame = tap.pop()?;
        self.stats.bridge.frames_out += 1;
        Some(frame)
    }

    /// Counts bridge frames the driver could not hand off (full channel).
    pub fn count_bridge_dropped(&mut self, n: u64) {
        self.bridge_out_dropped += n;
    }

    /// Another leg starts bridging into this one (`source`), or with `None` none
    /// does any more. Starting clears all queued agent playout (bridged audio
    /// replaces it rather than queueing behind it; each dropped segment reports
    /// `Interrupted`). Agent audio queued later is mixed with the bridged audio.
    pub fn set_bridge_source(&mut self, source: Option<BridgeSourceId>) {
        if source.is_some() && source != self.bridge_lane.source() {
            self.clear();
        }
        self.bridge_lane.set_source(source);
    }

    /// The bridge from `source` ended: its queued audio goes at once. A newer
    /// source that took over meanwhile is left alone.
    pub fn end_bridge_source(&mut self, source: BridgeSourceId) {
        if self.bridge_lane.source() == Some(source) {
            self.bridge_lane.set_source(None);
        }
    }

    /// Feeds one 20 ms frame of bridged audio (at [`CallMedia::playout_rate_hz`])
    /// that arrived at `now`; frames of a source other than the current one are
    /// counted and dropped.
    pub fn handle_bridge_frame(&mut self, source: BridgeSourceId, pcm: &[i16], now: Instant) {
        self.bridge_lane.push(source, pcm, now);
    }

    /// Adds drops counted outside the core (the driver's full channel).
    pub fn count_dropped_events(&mut self, n: u64) {
        self.stats.events_dropped += n;
    }

    /// Queues agent audio (PCM at [`CallMedia::playout_rate_hz`]); a full queue
    /// hands the segment back.
    pub fn enqueue(&mut self, segment: Segment) -> Result<(), Segment> {
        self.playout.enqueue(segment)
    }

    /// Barge-in flush: drops interruptible playout; the next packet is free of it.
    pub fn flush(&mut self) -> usize {
        let n = self.playout.flush();
        self.drain_playout_events();
        n
    }

    /// Drops all playout, interruptible or not.
    pub fn clear(&mut self) -> usize {
        let n = self.playout.clear();
        self.drain_playout_events();
        n
    }

    /// Milliseconds of agent audio still queued.
    pub fn playout_queued_ms(&self) -> u32 {
        self.playout.queued_ms()
    }

    /// Sets the looping background track (PCM at the playout rate).
    pub fn set_background(&mut self, track: Option<std::sync::Arc<[i16]>>, gain: f32) {
        self.playout.set_background(track, gain);
    }

    /// The peer's media address changed (re-INVITE): send there and latch anew.
    pub fn set_remote(&mut self, rtp: SocketAddr, rtcp: Option<SocketAddr>) {
        self.ignored_before += self.latch.ignored();
        self.latch = SymmetricLatch::new(rtp);
        self.params.remote_addr = rtp;
        self.params.remote_rtcp_addr = rtcp;
        self.rtcp_latch = None;
    }

    /// Queues an RFC 4733 digit to send (needs a negotiated telephone-event).
    pub fn send_dtmf(&mut self, digit: char, duration_ms: u32) -> Result<(), MediaError> {
        if self.params.telephone_event_pt.is_none() {
            return Err(MediaError::Unsupported("telephone-event not negotiated"));
        }
        self.dtmf_tx.queue(digit, duration_ms)
    }

    fn push_event(&mut self, ev: MediaEvent) {
        if self.events.len() == EVENT_QUEUE {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(ev);
    }

    fn drain_playout_events(&mut self) {
        while let Some(ev) = self.playout.poll_event() {
            self.push_event(MediaEvent::Playout(ev));
        }
    }

    /// Feeds one datagram received on the RTP socket from `src`.
    pub fn handle_rtp(&mut self, datagram: &[u8], src: SocketAddr, now: Instant) {
        // RFC 5761 rtcp-mux: RTCP packet types 200..=204 on the RTP port.
        if datagram.len() >= 8 && (200..=204).contains(&datagram[1]) {
            self.handle_rtcp(datagram, src, now);
            return;
        }
        self.stats.rtp_received += 1;
        let Ok((h, payload)) = rtp::parse(datagram) else {
            self.stats.rtp_malformed += 1;
            return;
        };
        let mut first = self.latch.latched().is_none();
        if !self.latch.accept(src) {
            // The latched source went quiet and another one talks: the peer's NAT
            // rebound (or a re-INVITE moved media). Follow it.
            if now.saturating_duration_since(self.latched_rx) < RELATCH_AFTER {
                return;
            }
            // accept() counted this packet as ignored; it is taken after all.
            self.ignored_before += self.latch.ignored().saturating_sub(1);
            self.latch = SymmetricLatch::new(src);
            self.latch.accept(src);
            self.rtcp_latch = None;
            first = true;
        }
        self.latched_rx = now;
        if first {
            self.push_event(MediaEvent::Latched { remote: src });
        }
        if Some(h.payload_type) == self.params.telephone_event_pt {
            match self
                .dtmf_rx
                .handle_packet(h.ssrc, h.timestamp, payload, now)
            {
                Ok(Some(d)) => self.push_dtmf(d),
                Ok(None) => {}
                Err(_) => self.stats.rtp_malformed += 1,
            }
            if let Some(d) = self.dtmf_rx.poll_digit() {
                self.push_dtmf(d);
            }
            // Keep the sequence space contiguous for the jitter buffer.
            self.jitter.push(
                h.ssrc,
                h.sequence_number,
                h.timestamp,
                &[],
                PacketKind::Skip,
                now,
            );
            return;
        }
        let kind = if h.payload_type == self.params.payload_type {
            PacketKind::Audio
        } else if h.payload_type == PT_CN {
            PacketKind::Skip
        } else {
            self.stats.unknown_payload_type += 1;
            return;
        };
        let clock_rate = self.params.codec.rtp_clock_rate();
        if self.source.as_ref().is_none_or(|s| s.ssrc != h.ssrc) {
            self.source = Some(SourceState::new(h.ssrc, h.sequence_number, clock_rate));
        }
        let Some(src_state) = self.source.as_mut() else {
            return;
        };
        match src_state.update_seq(h.sequence_number) {
            SeqVerdict::Valid | SeqVerdict::Restarted | SeqVerdict::Probation => {}
            SeqVerdict::BadJump => {
                self.stats.seq_rejected += 1;
                return;
            }
        }
        let arrival = (now.saturating_duration_since(self.epoch).as_micros() as u64
            * clock_rate as u64
            / 1_000_000) as i64;
        src_state.update_jitter(arrival, h.timestamp);
        self.jitter
            .push(h.ssrc, h.sequence_number, h.timestamp, payload, kind, now);
        self.rx_started = true;
    }

    fn push_dtmf(&mut self, d: DtmfDigit) {
        self.stats.dtmf_received += 1;
        self.push_event(MediaEvent::Dtmf(d));
    }

    /// Feeds one datagram received on the RTCP socket from `src`.
    pub fn handle_rtcp(&mut self, datagram: &[u8], src: SocketAddr, now: Instant) {
        // Accept RTCP from the latched host only (any port: some NATs remap it).
        if let Some(rtp_src) = self.latch.latched()
            && rtp_src.ip() != src.ip()
        {
            return;
        }
        let ssrc = self.sender.ssrc();
        let before = self.rtcp.stats().bye_received;
        if self.rtcp.handle_rtcp(datagram, ssrc, now).is_ok() {
            self.rtcp_latch = Some(src);
            if !before && self.rtcp.stats().bye_received {
                self.push_event(MediaEvent::RemoteBye);
            }
        }
    }

    /// When [`CallMedia::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Instant {
        self.next_tick
    }

    /// Runs the ticks due at `now`: one ptime of inbound and outbound media each.
    /// If the caller fell far behind, the missed ticks are skipped (the RTP clock
    /// still advances) instead of sending a burst.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = 0u32;
        while self.next_tick <= now {
            due += 1;
            self.next_tick += self.ptime;
        }
        if due > MAX_CATCH_UP_TICKS {
            let skipped = due - 1;
            self.stats.ticks_skipped += skipped as u64;
            let units = self.frame_units();
            self.sender.advance(units * skipped);
            self.tx_marker = true;
            due = 1;
        }
        for _ in 0..due {
            self.tick(now);
        }
        if let Some(d) = self.dtmf_rx.handle_timeout(now) {
            self.push_dtmf(d);
        }
        if now >= self.rtcp.poll_timeout() {
            self.send_rtcp(now);
        }
    }

    fn frame_units(&self) -> u32 {
        self.params.codec.rtp_clock_rate() * self.params.ptime_ms / 1000
    }

    fn tick(&mut self, now: Instant) {
        let vad_frames = (self.params.ptime_ms / VAD_FRAME_MS) as usize;
        let mut rec_len = 0;
        for _ in 0..vad_frames {
            if let Some(n) = self.inbound_frame(now) {
                let (dst, src) = (
                    &mut self.rec_caller[rec_len..rec_len + n],
                    &self.vad_in[..n],
                );
                dst.copy_from_slice(src);
                rec_len += n;
            }
        }
        self.rec_caller[rec_len..].fill(0);
        self.outbound_frame(now);
        // Keep this tick for poll_recording; if the caller never drains, the last
        // slot is overwritten.
        let n = self.rec_agent.len();
        if self.rec_read == self.rec_written {
            self.rec_read = 0;
            self.rec_written = 0;
        }
        let slot = self.rec_written.min(MAX_CATCH_UP_TICKS as usize - 1);
        self.rec_ring_caller[slot * n..(slot + 1) * n].copy_from_slice(&self.rec_caller[..n]);
        self.rec_ring_agent[slot * n..(slot + 1) * n].copy_from_slice(&self.rec_agent);
        self.rec_written = slot + 1;
    }

    /// One 20 ms frame of inbound audio through decode, resample and VAD. Returns
    /// the number of decoder-rate samples (left in `vad_in`), or None before media.
    fn inbound_frame(&mut self, now: Instant) -> Option<usize> {
        if !self.rx_started {
            return None;
        }
        let clock_rate = self.params.codec.rtp_clock_rate() as u64;
        let dec_rate = self.decoder.rate_hz() as u64;
        // Each pop is one packet; a handful covers any ptime.
        let mut pops = 0;
        while self.rx_len < self.rx_frame && pops < 8 {
            pops += 1;
            let lost_len = ((self.jitter.frame_rtp_units() as u64 * dec_rate / clock_rate)
                as usize)
                .min(self.rx_pcm.len() - self.rx_len);
            let room = &mut self.rx_pcm[self.rx_len..];
            let written = match self.jitter.pop(now) {
                Pop::Buffering => {
                    // Nothing to play (prefetch, hold, DTX): feed silence so the VAD
                    // clock keeps running and speech can end.
                    let n = self.rx_frame - self.rx_len;
                    room[..n].fill(0);
                    n
                }
                Pop::Frame { payload, .. } => match self.decoder.decode(payload, room) {
                    Ok(n) => n,
                    Err(_) => {
                        self.stats.decode_errors += 1;
                        self.decoder
                            .conceal(None, &mut room[..lost_len])
                            .unwrap_or(0)
                    }
                },
                Pop::Skip => {
                    room[..lost_len].fill(0);
                    lost_len
                }
                Pop::Lost { next } => self
                    .decoder
                    .conceal(next, &mut room[..lost_len])
                    .unwrap_or_else(|_| {
                        room[..lost_len].fill(0);
                        lost_len
                    }),
            };
            self.rx_len += written;
        }
        if self.rx_len < self.rx_frame {
            let n = self.rx_frame - self.rx_len;
            self.rx_pcm[self.rx_len..self.rx_frame].fill(0);
            self.rx_len += n;
        }
        let n = self.rx_frame;
        self.vad_in.copy_from_slice(&self.rx_pcm[..n]);
        self.rx_pcm.copy_within(n..self.rx_len, 0);
        self.rx_len -= n;
        if let Some(tap) = self.bridge_tap.as_mut() {
            tap.push(&self.vad_in);
        }
        if self
            .resampler
            .process(&self.vad_in, &mut self.vad_frame)
            .is_err()
        {
            self.vad_frame.fill(0);
        }
        self.vad.process(&self.vad_frame);
        while let Some(ev) = self.vad.poll_event() {
            match ev {
                VadEvent::SpeechStart { at } => {
                    if self.barge_in && self.playout.is_interruptible_playing() {
                        self.playout.flush();
                        self.push_event(MediaEvent::BargeIn { at });
                        self.drain_playout_events();
                    }
                    self.push_event(MediaEvent::SpeechStart { at });
                }
                VadEvent::SpeechFrame { at, pcm } => {
                    self.push_event(MediaEvent::SpeechFrame { at, pcm })
                }
                VadEvent::SpeechEnd { at } => self.push_event(MediaEvent::SpeechEnd { at }),
            }
        }
        Some(n)
    }

    /// The free transmit slot, if the queue has room. Slots are used round-robin
    /// and drained in order, so the next one is always free when the queue is not
    /// full.
    fn free_slot(&self) -> Option<usize> {
        (self.tx_queue.len() < TX_SLOTS).then_some(self.tx_next_slot)
    }

    fn commit_slot(&mut self, slot: usize, kind: TransmitKind, dest: SocketAddr, len: usize) {
        self.tx_queue.push_back(TxMeta {
            slot,
            kind,
            dest,
            len,
        });
        self.tx_next_slot = (slot + 1) % TX_SLOTS;
        if kind == TransmitKind::Rtp {
            self.stats.rtp_sent += 1;
        }
    }

    fn outbound_frame(&mut self, now: Instant) {
        let units = self.frame_units();
        let clock_rate = self.params.codec.rtp_clock_rate();
        let dest = self.latch.destination();
        let ts = self.sender.timestamp();
        if let (Some(te_pt), Some(ev)) = (
            self.params.telephone_event_pt,
            self.dtmf_tx.poll(ts, units, clock_rate),
        ) {
            self.rec_agent.fill(0);
            self.bridge_lane
                .skip(self.tx_pcm.len() / self.bridge_lane.frame_samples(), now);
            self.sender.advance(units);
            // Audio after the event starts a new talkspurt.
            self.tx_marker = true;
            let Some(slot) = self.free_slot() else { return };
            let buf = &mut self.tx_buf[slot * MAX_DATAGRAM..(slot + 1) * MAX_DATAGRAM];
            if let Ok(len) =
                self.sender
                    .write_with_timestamp(buf, te_pt, ev.marker, ev.timestamp, &ev.payload)
            {
                self.commit_slot(slot, TransmitKind::Rtp, dest, len);
            }
            return;
        }
        if self.playout.next_frame(&mut self.tx_pcm) == FrameKind::Audio {
            self.stats.playout_frames += 1;
        }
        self.drain_playout_events();
        // Bridged audio is its own lane on top of playout: barge-in never cuts it.
        self.bridge_lane.mix_into(&mut self.tx_pcm, now);
        self.rec_agent.copy_from_slice(&self.tx_pcm);
        let Ok(n) = self.encoder.encode(&self.tx_pcm, &mut self.tx_payload) else {
            self.sender.advance(units);
            return;
        };
        let pt = self.params.payload_type;
        let Some(slot) = self.free_slot() else {
            self.sender.advance(units);
            return;
        };
        let marker = std::mem::take(&mut self.tx_marker);
        let buf = &mut self.tx_buf[slot * MAX_DATAGRAM..(slot + 1) * MAX_DATAGRAM];
        match self
            .sender
            .write_media(buf, pt, marker, &self.tx_payload[..n], units)
        {
            Ok(len) => self.commit_slot(slot, TransmitKind::Rtp, dest, len),
            Err(_) => self.sender.advance(units),
        }
    }

    fn send_rtcp(&mut self, now: Instant) {
        let dest = match (self.rtcp_latch, self.params.remote_rtcp_addr) {
            (Some(a), _) => a,
            (None, Some(a)) => a,
            (None, None) => {
                let d = self.latch.destination();
                SocketAddr::new(d.ip(), d.port().wrapping_add(1))
            }
        };
        let Some(slot) = self.free_slot() else { return };
        let buf = &mut self.tx_buf[slot * MAX_DATAGRAM..(slot + 1) * MAX_DATAGRAM];
        let ssrc = self.sender.ssrc();
        if let Ok(len) =
            self.rtcp
                .write_report(now, ssrc, Some(&self.sender), self.source.as_mut(), buf)
        {
            self.commit_slot(slot, TransmitKind::Rtcp, dest, len);
        }
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit<'_>> {
        let meta = self.tx_queue.pop_front()?;
        let slot = meta.slot;
        Some(Transmit {
            kind: meta.kind,
            dest: meta.dest,
            payload: &self.tx_buf[slot * MAX_DATAGRAM..slot * MAX_DATAGRAM + meta.len],
        })
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    /// Caller and agent audio of each tick run since the last drain, oldest first
    /// (one ptime each, at [`CallMedia::recording_rate_hz`]).
    pub fn poll_recording(&mut self) -> Option<(&[i16], &[i16])> {
        if self.rec_read >= self.rec_written {
            return None;
        }
        let n = self.rec_agent.len();
        let slot = self.rec_read;
        self.rec_read += 1;
        Some((
            &self.rec_ring_caller[slot * n..(slot + 1) * n],
            &self.rec_ring_agent[slot * n..(slot + 1) * n],
        ))
    }
}
