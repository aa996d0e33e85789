//! voicegate-media: the RTP media path of one call.
//!
//! The crate is split into sans-IO protocol cores and one tokio driver:
//!
//! * [`rtp`]: RTP packet parsing (on top of the `rtp` / `webrtc-util` crates),
//!   RFC 3550 sequence/timestamp bookkeeping, symmetric-RTP latching, the sender.
//! * [`g711`], [`opus`]: codecs with loss concealment, behind [`codec`]'s
//!   `AudioDecoder` / `AudioEncoder`; [`resample`]: rubato wrappers.
//! * [`jitter`]: adaptive jitter buffer; [`dtmf`]: RFC 4733 telephone-event.
//! * [`vad`]: voice activity detection with onset/hangover and pre-roll.
//! * [`playout`]: paced queue of agent audio with barge-in flush and background mix.
//! * [`rtcp`]: sender/receiver reports and per-call statistics.
//! * [`recording`]: stereo WAV of both directions.
//! * [`port_pool`]: RTP/RTCP port pairs with quarantine.
//! * [`bridge`]: one call leg's decoded audio played out on another (B2BUA
//!   bridge), see [`MediaControl::bridge_to`].
//! * [`pipeline`]: [`pipeline::CallMedia`], the sans-IO core of one call that ties
//!   the pieces together; [`driver`]: the tokio task that owns the sockets.
//!
//! # Using it from the gateway
//!
//! ```text
//! let lease = pool.lease().await?;                      // port_pool::SharedPortPool
//! let cfg = MediaConfig::new(NegotiatedParams { .. });  // from the SDP answer
//! let (handle, mut events) = MediaSession::start(cfg, lease)?;
//! // events: SpeechStart / SpeechFrame (16 kHz, pre-roll first) / SpeechEnd,
//! //         Dtmf, BargeIn, Playout(Started | Finished | Interrupted), Latched, RemoteBye
//! handle.play(id, interruptible, pcm, tts_rate_hz)?;    // or handle.stream(..)
//! handle.flush()?;                                      // barge-in
//! let control = handle.control();                       // cloneable, for other tasks
//! // Transfer to a human (B2BUA bridge) with an outbound leg `human`:
//! handle.bridge_to(human.control())?;                   // caller -> human
//! human.bridge_to(handle.control())?;                   // human -> caller
//! handle.unbridge()?; human.unbridge()?;                // back to the agent
//! let stats = handle.stop().await;                      // CallStats
//! ```
//!
//! # The drain rule
//!
//! Every sans-IO core is fed with `handle_*(input, now)` and drained with `poll_*()`.
//! After each `handle_*` call the caller drains every `poll_*` until it returns
//! `None`, then sleeps until `poll_timeout()` (or the next input). Cores never read
//! the clock: time comes in as `now: Instant` (or a sample clock) and randomness
//! (SSRC, initial sequence number and timestamp) from an injected seed.
//!
//! # Allocation
//!
//! Buffers are sized when a call starts. The 20 ms path (receive, jitter buffer,
//! decode, resample, VAD, playout, encode, send, and the bridge tap, hand-off and
//! lane of a bridged call) does not allocate; a test with a counting global
//! allocator (`tests/no_alloc.rs`) holds that line.

pub mod bridge;
pub mod codec;
pub mod driver;
pub mod dtmf;
pub mod g711;
pub mod jitter;
pub mod opus;
pub mod pipeline;
pub mod playout;
pub mod port_pool;
pub mod recording;
pub mod resample;
pub mod rtcp;
pub mod rtp;
pub mod vad;

mod error;
mod types;

pub use bridge::{BridgeSourceId, BridgeStats};
pub use driver::{MediaControl, MediaHandle, MediaSession, PlayoutStream};
pub use error::MediaError;
pub use pipeline::{CallMedia, CallStats, MediaConfig, MediaEvent};
pub use playout::{PlayoutEvent, SegmentId};
pub use types::{Codec, NegotiatedParams};
