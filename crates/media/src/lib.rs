//! voicegate-media: the RTP media path of one call.
//!
//! The crate is split into sans-IO protocol cores and one tokio driver:
//!
//! * [`rtp`]: RTP packet parsing (on top of the `rtp` / `webrtc-util` crates),
//!   RFC 3550 sequence/timestamp bookkeeping, symmetric-RTP latching, the sender.
//! * [`g711`], [`opus`]: codecs with loss concealment; [`resample`]: rubato wrappers.
//! * [`jitter`]: adaptive jitter buffer; [`dtmf`]: RFC 4733 telephone-event.
//! * [`vad`]: voice activity detection with onset/hangover and pre-roll.
//! * [`playout`]: paced queue of agent audio with barge-in flush and background mix.
//! * [`rtcp`]: sender/receiver reports and per-call statistics.
//! * [`recording`]: stereo WAV of both directions.
//! * [`port_pool`]: RTP/RTCP port pairs with quarantine.
//! * [`pipeline`]: [`pipeline::CallMedia`], the sans-IO core of one call that ties
//!   the pieces together; [`driver`]: the tokio task that owns the sockets.
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
//! decode, resample, VAD, playout, encode, send) does not allocate; a test with a
//! counting global allocator (`tests/no_alloc.rs`) holds that line.

pub mod dtmf;
pub mod g711;
pub mod jitter;
pub mod port_pool;
pub mod resample;
pub mod rtp;
pub mod vad;

mod error;
mod types;

pub use error::MediaError;
pub use types::{Codec, NegotiatedParams};
