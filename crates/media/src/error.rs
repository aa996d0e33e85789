//! The crate's error type.

/// Errors of the media crate.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// A packet from the peer could not be parsed; it is counted and dropped.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// A caller-provided output buffer is too small.
    #[error("output buffer too small: need {needed}, have {have}")]
    BufferTooSmall {
        /// Samples or bytes needed.
        needed: usize,
        /// Samples or bytes available.
        have: usize,
    },
    /// A configuration or negotiated parameter is not supported.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// Invalid configuration value.
    #[error("invalid config `{key}`: {reason}")]
    Config {
        /// The configuration key that is wrong.
        key: &'static str,
        /// Why it is wrong.
        reason: &'static str,
    },
    /// The Opus library reported an error.
    #[error("opus: {0}")]
    Opus(#[from] audiopus::Error),
    /// The resampler could not be built or run.
    #[error("resampler: {0}")]
    Resample(&'static str),
    /// No RTP port pair is free in the pool.
    #[error("no free RTP port pair in the pool")]
    PortsExhausted,
    /// A bounded queue is full; the item was dropped.
    #[error("queue full")]
    QueueFull,
    /// The media session has stopped.
    #[error("media session closed")]
    Closed,
    /// Socket or file I/O failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Writing the WAV recording failed.
    #[error("wav: {0}")]
    Wav(#[from] hound::Error),
}
