//! The tokio driver of one call's media: a task that owns the RTP and RTCP sockets
//! and a [`CallMedia`] core, paces it with a ptime interval
//! (`MissedTickBehavior::Skip`), and talks to the rest of the gateway through
//! channels:
//!
//! * events out ([`MediaEvent`], speech frames included) on a bounded channel fed
//!   with `try_send`: when the consumer lags, events are dropped and counted
//!   (`CallStats::events_dropped`), the media loop never waits;
//! * commands in from [`MediaHandle`] / its cloneable [`MediaControl`] (play,
//!   stream, flush, clear, DTMF, background, remote change, stats) on a bounded
//!   channel; [`MediaHandle::stop`] or dropping the handle ends the task;
//! * bridged audio in from another session ([`MediaControl::bridge_to`]) on a
//!   bounded channel of fixed-size 20 ms frames, and out to it with `try_send`
//!   (dropped and counted in `CallStats::bridge` when full).
//!
//! Speech start/end, DTMF digits and barge-in are also logged at info level in
//! the span current when the session was started (the call's).
//!
//! ```no_run
//! # async fn f(pool: voicegate_media::port_pool::SharedPortPool,
//! #            params: voicegate_media::NegotiatedParams) -> Result<(), voicegate_media::MediaError> {
//! use voicegate_media::driver::MediaSession;
//! use voicegate_media::pipeline::{MediaConfig, MediaEvent};
//! use voicegate_media::playout::SegmentId;
//!
//! let lease = pool.lease().await?;
//! let (handle, mut events) = MediaSession::start(MediaConfig::new(params), lease)?;
//! handle.play(SegmentId(1), true, vec![0i16; 16000], 16000)?;
//! while let Some(ev) = events.recv().await {
//!     if let MediaEvent::SpeechEnd { .. } = ev { break; }
//! }
//! let stats = handle.stop().await;
//! # let _ = stats; Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant as TokioInstant, MissedTickBehavior};
use tracing::Instrument;

use crate::MediaError;
use crate::bridge::{BridgeSourceId, BridgeTap, MAX_BRIDGE_FRAME};
use crate::pipeline::{CallMedia, CallStats, MediaConfig, MediaEvent, TransmitKind};
use crate::playout::{PlayoutEvent, Segment, SegmentId};
use crate::port_pool::{PortGuard, PortLease};
use crate::recording::Recorder;
use crate::resample::{StreamResampler, resample_all};
use crate::rtp::MAX_DATAGRAM;

const COMMAND_CAPACITY: usize = 64;
/// Bridged frames in flight between two legs' tasks (320 ms).
const BRIDGE_CAPACITY: usize = 16;

static NEXT_BRIDGE_SOURCE: AtomicU64 = AtomicU64::new(1);

/// One 20 ms frame of bridged audio at the receiving leg's playout rate. Fixed
/// size, moved through the channel: no allocation per frame.
struct BridgeFrame {
    source: BridgeSourceId,
    len: usize,
    pcm: [i16; MAX_BRIDGE_FRAME],
}

/// The sending end of a bridge, owned by the sending leg's task.
struct BridgeLink {
    source: BridgeSourceId,
    frames: mpsc::Sender<BridgeFrame>,
    /// The receiving leg's commands: DTMF relay and the end of the bridge.
    peer: mpsc::Sender<Command>,
}

enum Command {
    Play(Segment),
    Flush,
    Clear,
    Dtmf(char, u32),
    Background(Option<Arc<[i16]>>, f32),
    Stats(oneshot::Sender<CallStats>),
    Remote(SocketAddr, Option<SocketAddr>),
    /// This leg's audio goes to another leg from now on (None: no more).
    BridgeOut(Option<Box<(BridgeTap, BridgeLink)>>),
    /// Another leg bridges into this one: clear playout, accept its frames.
    BridgeIn(BridgeSourceId),
    /// That bridge into this leg ended.
    BridgeEnd(BridgeSourceId),
}

/// Starts media sessions.
#[derive(Debug)]
pub struct MediaSession;

impl MediaSession {
    /// Starts the media task of one call on a leased port pair; the ports return
    /// to the pool (quarantined) when the task ends. Must be called inside a tokio
    /// runtime.
    pub fn start(
        config: MediaConfig,
        lease: PortLease,
    ) -> Result<(MediaHandle, mpsc::Receiver<MediaEvent>), MediaError> {
        let (rtp, rtcp, guard) = lease.into_parts();
        Self::start_inner(config, rtp, rtcp, Some(guard))
    }

    /// Like [`MediaSession::start`] with sockets bound by the caller (tests, or an
    /// embedder with its own port management).
    pub fn start_with_sockets(
        config: MediaConfig,
        rtp: UdpSocket,
        rtcp: UdpSocket,
    ) -> Result<(MediaHandle, mpsc::Receiver<MediaEvent>), MediaError> {
        Self::start_inner(config, rtp, rtcp, None)
    }

    fn start_inner(
        config: MediaConfig,
        rtp: UdpSocket,
        rtcp: UdpSocket,
        guard: Option<PortGuard>,
    ) -> Result<(MediaHandle, mpsc::Receiver<MediaEvent>), MediaError> {
        let start = TokioInstant::now();
        let core = CallMedia::new(&config, start.into_std(), SystemTime::now())?;
        let recorder = match &config.record_to {
            Some(path) => Some(Recorder::create(path, core.recording_rate_hz())?),
            None => None,
        };
        let local_rtp = rtp.local_addr()?;
        let local_rtcp = rtcp.local_addr()?;
        let playout_rate_hz = core.playout_rate_hz();
        let (ev_tx, ev_rx) = mpsc::channel(config.event_capacity.max(1));
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_CAPACITY);
        let (stop_tx, stop_rx) = oneshot::channel();
        let (bridge_tx, bridge_rx) = mpsc::channel(BRIDGE_CAPACITY);
        // The core's ptime: the SDP value after its fallback rules.
        let ptime = std::time::Duration::from_millis(core.params().ptime_ms as u64);
        let task = Task {
            core,
            rtp,
            rtcp,
            events: ev_tx,
            commands: cmd_rx,
            stop: stop_rx,
            bridge_in: bridge_rx,
            bridge_out: None,
            recorder,
            _guard: guard,
        };
        // Log lines of the media task land in the caller's span (the call's).
        let span = tracing::info_span!("media", local_rtp = %local_rtp);
        let join = tokio::spawn(task.run(start + ptime, ptime).instrument(span));
        Ok((
            MediaHandle {
                control: MediaControl {
                    commands: cmd_tx,
                    bridge_frames: bridge_tx,
                    playout_rate_hz,
                    local_rtp,
                    local_rtcp,
                },
                join,
                stop: stop_tx,
            },
            ev_rx,
        ))
    }
}

/// Owner of a running media session: dropping it (or [`MediaHandle::stop`]) ends
/// the session even while [`MediaControl`] clones are still around. Derefs to
/// [`MediaControl`] for play, flush and the rest.
#[derive(Debug)]
pub struct MediaHandle {
    control: MediaControl,
    join: JoinHandle<CallStats>,
    stop: oneshot::Sender<()>,
}

impl std::ops::Deref for MediaHandle {
    type Target = MediaControl;
    fn deref(&self) -> &MediaControl {
        &self.control
    }
}

impl MediaHandle {
    /// A cloneable control for other tasks (engine commands, signalling).
    pub fn control(&self) -> MediaControl {
        self.control.clone()
    }

    /// Stops the session (finalising the recording) and returns its final counters.
    pub async fn stop(self) -> CallStats {
        let _ = self.stop.send(());
        self.join.await.unwrap_or_default()
    }
}

/// Cloneable control of a running media session; every call is a non-blocking
/// `try_send` to the media task (`QueueFull` / `Closed` errors).
#[derive(Debug, Clone)]
pub struct MediaControl {
    commands: mpsc::Sender<Command>,
    bridge_frames: mpsc::Sender<BridgeFrame>,
    playout_rate_hz: u32,
    local_rtp: SocketAddr,
    local_rtcp: SocketAddr,
}

impl MediaControl {
    /// Local RTP address (for SDP).
    pub fn local_rtp_addr(&self) -> SocketAddr {
        self.local_rtp
    }

    /// Local RTCP address.
    pub fn local_rtcp_addr(&self) -> SocketAddr {
        self.local_rtcp
    }

    /// PCM rate the playout runs at (8 kHz for G.711, the Opus PCM rate for Opus).
    pub fn playout_rate_hz(&self) -> u32 {
        self.playout_rate_hz
    }

    fn send(&self, cmd: Command) -> Result<(), MediaError> {
        self.commands.try_send(cmd).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => MediaError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => MediaError::Closed,
        })
    }

    /// Queues agent audio: mono PCM at `rate_hz` (any multiple of 50 Hz), converted
    /// to the playout rate here, on the caller's task, not on the media task.
    /// Progress comes back as [`MediaEvent::Playout`] events carrying `id`.
    pub fn play(
        &self,
        id: SegmentId,
        interruptible: bool,
        pcm: Vec<i16>,
        rate_hz: u32,
    ) -> Result<(), MediaError> {
        let pcm = if rate_hz == self.playout_rate_hz {
            pcm
        } else {
            resample_all(&pcm, rate_hz, self.playout_rate_hz)?
        };
        self.send(Command::Play(Segment {
            id,
            interruptible,
            pcm,
        }))
    }

    /// Starts a streamed segment (e.g. TTS audio arriving in chunks): chunks pushed
    /// to the returned [`PlayoutStream`] are converted from `rate_hz` without seams
    /// between them and queued under `id` as they come.
    pub fn stream(
        &self,
        id: SegmentId,
        interruptible: bool,
        rate_hz: u32,
    ) -> Result<PlayoutStream, MediaError> {
        Ok(PlayoutStream {
            commands: self.commands.clone(),
            id,
            interruptible,
            resampler: StreamResampler::new(rate_hz, self.playout_rate_hz)?,
            pending: Vec::new(),
            min_piece: (self.playout_rate_hz as usize * 60) / 1000,
        })
    }

    /// Barge-in: drops interruptible playout within one frame; each dropped segment
    /// is reported as `PlayoutEvent::Interrupted` with the ms played.
    pub fn flush(&self) -> Result<(), MediaError> {
        self.send(Command::Flush)
    }

    /// Drops all queued playout, interruptible or not (not the audio of a leg
    /// bridged into this one: see [`MediaControl::bridge_to`]).
    pub fn clear(&self) -> Result<(), MediaError> {
        self.send(Command::Clear)
    }

    /// Sends an RFC 4733 DTMF digit (0-9, *, #, A-D) lasting `duration_ms`.
    pub fn send_dtmf(&self, digit: char, duration_ms: u32) -> Result<(), MediaError> {
        self.send(Command::Dtmf(digit, duration_ms))
    }

    /// Sets a looping background track (mono PCM at `rate_hz`) mixed at `gain`
    /// (0.0..=1.0); `None` removes it.
    pub fn set_background(
        &self,
        track: Option<(&[i16], u32)>,
        gain: f32,
    ) -> Result<(), MediaError> {
        let track = match track {
            Some((pcm, rate)) => Some(Arc::from(resample_all(pcm, rate, self.playout_rate_hz)?)),
            None => None,
        };
        self.send(Command::Background(track, gain))
    }

    /// The peer's media address changed (re-INVITE): send there and latch anew.
    pub fn set_remote(&self, rtp: SocketAddr, rtcp: Option<SocketAddr>) -> Result<(), MediaError> {
        self.send(Command::Remote(rtp, rtcp))
    }

    /// Bridges this leg into `other` (B2BUA transfer to a human): from now on every
    /// decoded inbound 20 ms frame of this session (all audio after the jitter
    /// buffer, decoding and concealment, not only speech) is converted to `other`'s
    /// playout rate here, once, and played out on `other` as a continuous lane of
    /// its own, mixed on top of its playout: barge-in, `flush` and `clear` on
    /// `other` do not touch it. Agent audio queued on `other` is cleared when the
    /// bridge starts (each segment reports `Interrupted`). Call it on both legs for
    /// two-way audio.
    ///
    /// DTMF received on this leg stays out of the audio (telephone-event packets
    /// never reach the decoder) and is relayed to `other` as RFC 4733 events, after
    /// the key is released, with the held duration; it is still reported here as
    /// [`MediaEvent::Dtmf`]. VAD events keep coming from both legs.
    ///
    /// Frames go straight to `other`'s task (bounded, `try_send`; dropped and
    /// counted when full) and wait there at least `MediaConfig::bridge_margin_ms`
    /// for the next tick, so the one-way delay the bridge adds is between that
    /// margin and margin + 20 ms, plus about 1.5 ms when the rates differ (see
    /// [`crate::bridge`]). A new `bridge_to` replaces this leg's previous bridge;
    /// a new bridge into `other` from a third leg replaces this one there.
    pub fn bridge_to(&self, other: MediaControl) -> Result<(), MediaError> {
        if other.local_rtp == self.local_rtp {
            return Err(MediaError::Unsupported("bridging a session to itself"));
        }
        let tap = BridgeTap::new(self.playout_rate_hz, other.playout_rate_hz)?;
        let source = BridgeSourceId(NEXT_BRIDGE_SOURCE.fetch_add(1, Ordering::Relaxed));
        other.send(Command::BridgeIn(source))?;
        let link = BridgeLink {
            source,
            frames: other.bridge_frames,
            peer: other.commands,
        };
        self.send(Command::BridgeOut(Some(Box::new((tap, link)))))
    }

    /// Stops sending this leg's audio to the leg it was bridged to (that leg drops
    /// what it still queued). Both legs need it to end a two-way bridge. Agent
    /// playout works as before on both.
    pub fn unbridge(&self) -> Result<(), MediaError> {
        self.send(Command::BridgeOut(None))
    }

    /// Current counters.
    pub async fn stats(&self) -> Result<CallStats, MediaError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Stats(tx))
            .await
            .map_err(|_| MediaError::Closed)?;
        rx.await.map_err(|_| MediaError::Closed)
    }
}

/// A segment being streamed into playout (see [`MediaControl::stream`]). Each
/// [`PlayoutStream::push`] queues one playout segment with the stream's id.
///
/// Converted audio is sent on in pieces of at least 60 ms, so providers that
/// stream tiny chunks do not fill the playout queue with tiny segments.
#[derive(Debug)]
pub struct PlayoutStream {
    commands: mpsc::Sender<Command>,
    id: SegmentId,
    interruptible: bool,
    resampler: StreamResampler,
    pending: Vec<i16>,
    min_piece: usize,
}

impl PlayoutStream {
    fn send(&self, pcm: Vec<i16>) -> Result<(), MediaError> {
        if pcm.is_empty() {
            return Ok(());
        }
        let seg = Segment {
            id: self.id,
            interruptible: self.interruptible,
            pcm,
        };
        self.commands
            .try_send(Command::Play(seg))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => MediaError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => MediaError::Closed,
            })
    }

    /// Converts one chunk of audio and queues it once 60 ms are ready.
    pub fn push(&mut self, pcm: &[i16]) -> Result<(), MediaError> {
        self.resampler.push(pcm, &mut self.pending)?;
        if self.pending.len() >= self.min_piece {
            let piece = std::mem::take(&mut self.pending);
            self.send(piece)?;
        }
        Ok(())
    }

    /// Queues what is left; the stream is complete.
    pub fn finish(mut self) -> Result<(), MediaError> {
        let mut rest = std::mem::take(&mut self.pending);
        self.resampler.finish(&mut rest)?;
        self.send(rest)
    }
}

struct Task {
    core: CallMedia,
    rtp: UdpSocket,
    rtcp: UdpSocket,
    events: mpsc::Sender<MediaEvent>,
    commands: mpsc::Receiver<Command>,
    stop: oneshot::Receiver<()>,
    bridge_in: mpsc::Receiver<BridgeFrame>,
    bridge_out: Option<BridgeLink>,
    recorder: Option<Recorder>,
    _guard: Option<PortGuard>,
}

impl Task {
    async fn run(mut self, first_tick: TokioInstant, ptime: std::time::Duration) -> CallStats {
        let mut interval = tokio::time::interval_at(first_tick, ptime);
        interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut rtp_buf = vec![0u8; MAX_DATAGRAM];
        let mut rtcp_buf = vec![0u8; MAX_DATAGRAM];
        loop {
            tokio::select! {
                r = self.rtp.recv_from(&mut rtp_buf) => match r {
                    Ok((n, src)) => self.core.handle_rtp(&rtp_buf[..n], src, TokioInstant::now().into_std()),
                    // ICMP port unreachable surfaces here on some platforms: ignore.
                    Err(e) => tracing::trace!(error = %e, "rtp recv"),
                },
                r = self.rtcp.recv_from(&mut rtcp_buf) => match r {
                    Ok((n, src)) => self.core.handle_rtcp(&rtcp_buf[..n], src, TokioInstant::now().into_std()),
                    Err(e) => tracing::trace!(error = %e, "rtcp recv"),
                },
                _ = interval.tick() => self.core.handle_timeout(TokioInstant::now().into_std()),
                Some(f) = self.bridge_in.recv() => {
                    let pcm = &f.pcm[..f.len.min(MAX_BRIDGE_FRAME)];
                    self.core.handle_bridge_frame(f.source, pcm, TokioInstant::now().into_std());
                }
                cmd = self.commands.recv() => match cmd {
                    None => break,
                    Some(cmd) => self.command(cmd),
                },
                // Sent by stop(), or the handle was dropped.
                _ = &mut self.stop => break,
            }
            self.drain();
        }
        self.end_bridge_out();
        if let Some(rec) = self.recorder.take()
            && let Err(e) = rec.finalize()
        {
            tracing::warn!(error = %e, "finalising the call recording failed");
        }
        self.core.stats()
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Play(seg) => {
                if let Err(seg) = self.core.enqueue(seg) {
                    tracing::warn!(id = seg.id.0, "playout queue full; segment dropped");
                    let ev = MediaEvent::Playout(PlayoutEvent::Rejected { id: seg.id });
                    if self.events.try_send(ev).is_err() {
                        self.core.count_dropped_events(1);
                    }
                }
            }
            Command::Flush => {
                self.core.flush();
            }
            Command::Clear => {
                self.core.clear();
            }
            Command::Dtmf(d, ms) => {
                if let Err(e) = self.core.send_dtmf(d, ms) {
                    tracing::warn!(error = %e, "cannot send DTMF");
                }
            }
            Command::Background(track, gain) => self.core.set_background(track, gain),
            Command::Remote(rtp, rtcp) => self.core.set_remote(rtp, rtcp),
            Command::Stats(tx) => {
                let _ = tx.send(self.core.stats());
            }
            Command::BridgeOut(link) => {
                self.end_bridge_out();
                if let Some(b) = link {
                    let (tap, link) = *b;
                    match self.core.set_bridge_tap(Some(tap)) {
                        Ok(()) => {
                            tracing::info!(source = link.source.0, "bridged out");
                            self.bridge_out = Some(link);
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot bridge"),
                    }
                }
            }
            Command::BridgeIn(source) => {
                tracing::info!(source = source.0, "bridged in: playout cleared");
                self.core.set_bridge_source(Some(source));
            }
            Command::BridgeEnd(source) => self.core.end_bridge_source(source),
        }
    }

    /// Stops tapping and tells the receiving leg, which drops what it queued.
    fn end_bridge_out(&mut self) {
        let _ = self.core.set_bridge_tap(None);
        if let Some(link) = self.bridge_out.take() {
            tracing::info!(source = link.source.0, "unbridged");
            if link.peer.try_send(Command::BridgeEnd(link.source)).is_err() {
                tracing::debug!("bridged leg gone or busy; it drains by itself");
            }
        }
    }

    fn drain(&mut self) {
        while let Some(t) = self.core.poll_transmit() {
            let sock = match t.kind {
                TransmitKind::Rtp => &self.rtp,
                TransmitKind::Rtcp => &self.rtcp,
            };
            // UDP send completes at once unless the socket buffer is full; then the
            // datagram is dropped rather than stalling the call.
            if let Err(e) = sock.try_send_to(t.payload, t.dest) {
                tracing::trace!(error = %e, dest = %t.dest, "send dropped");
            }
        }
        let mut dropped = 0;
        while let Some(ev) = self.core.poll_event() {
            match &ev {
                MediaEvent::SpeechStart { at } => {
                    tracing::info!(at_ms = at.as_millis() as u64, "speech start")
                }
                MediaEvent::SpeechEnd { at } => {
                    tracing::info!(at_ms = at.as_millis() as u64, "speech end")
                }
                MediaEvent::Dtmf(d) => tracing::info!(digit = %d.digit, "dtmf"),
                MediaEvent::BargeIn { .. } => tracing::info!("barge-in: playout flushed"),
                MediaEvent::Latched { remote } => tracing::debug!(%remote, "rtp latched"),
                _ => {}
            }
            if let (MediaEvent::Dtmf(d), Some(link)) = (&ev, &self.bridge_out) {
                let ms = d.duration.as_millis().min(5000) as u32;
                if link.peer.try_send(Command::Dtmf(d.digit, ms)).is_err() {
                    tracing::warn!(digit = %d.digit, "DTMF not relayed to the bridged leg");
                }
            }
            if self.events.try_send(ev).is_err() {
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.core.count_dropped_events(dropped);
        }
        if let Some(link) = &self.bridge_out {
            let mut lost = 0;
            while let Some(pcm) = self.core.poll_bridge() {
                let mut f = BridgeFrame {
                    source: link.source,
                    len: pcm.len().min(MAX_BRIDGE_FRAME),
                    pcm: [0; MAX_BRIDGE_FRAME],
                };
                f.pcm[..f.len].copy_from_slice(&pcm[..f.len]);
                if link.frames.try_send(f).is_err() {
                    lost += 1;
                }
            }
            if lost > 0 {
                self.core.count_bridge_dropped(lost);
            }
        }
        while let Some((caller, agent)) = self.core.poll_recording() {
            if let Some(rec) = self.recorder.as_mut()
                && let Err(e) = rec.write(caller, agent)
            {
                tracing::warn!(error = %e, "call recording stopped");
                self.recorder = None;
            }
        }
    }
}
