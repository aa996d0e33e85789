//! The crate's error type.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong in speech recognition or synthesis.
#[derive(Debug, thiserror::Error)]
pub enum SpeechError {
    /// The provider refused the credentials (HTTP 401/403 or a WebSocket close saying so).
    #[error("{provider}: authentication failed (status {status}); check the API key")]
    Unauthorized {
        /// Provider name, as in config.
        provider: &'static str,
        /// HTTP status (or WebSocket close code).
        status: u16,
    },
    /// Could not reach the provider at all.
    #[error("{provider}: connect failed: {reason}")]
    Connect {
        /// Provider name.
        provider: &'static str,
        /// What failed.
        reason: String,
    },
    /// The provider accepted the request but sent nothing in time.
    #[error("{provider}: no data within {timeout:?}")]
    Timeout {
        /// Provider name.
        provider: &'static str,
        /// The limit that passed.
        timeout: Duration,
    },
    /// The stream ended or broke before it was complete.
    #[error("{provider}: stream broke off: {reason}")]
    Disconnected {
        /// Provider name.
        provider: &'static str,
        /// What happened.
        reason: String,
    },
    /// A non-success HTTP answer other than an auth failure.
    #[error("{provider}: HTTP {status}: {body}")]
    Http {
        /// Provider name.
        provider: &'static str,
        /// HTTP status.
        status: u16,
        /// Start of the response body.
        body: String,
    },
    /// The peer sent something that does not follow its documented protocol.
    #[error("{provider}: protocol error: {reason}")]
    Protocol {
        /// Provider name.
        provider: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// An embedded engine cannot run here (library or binary missing, bad voice).
    #[error("{engine} unavailable: {reason}")]
    Unavailable {
        /// Engine name.
        engine: &'static str,
        /// Why.
        reason: String,
    },
    /// A model directory or file is missing.
    #[error("model file missing: {path}: {hint}")]
    ModelMissing {
        /// The path that was looked for.
        path: PathBuf,
        /// Where to get it.
        hint: String,
    },
    /// Config was wrong; every problem is listed.
    #[error("invalid speech config: {}", .0.join("; "))]
    Config(Vec<String>),
    /// The request cannot be served by this engine (unknown voice, language).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The stream was cancelled by its owner.
    #[error("cancelled")]
    Cancelled,
    /// Local I/O.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// WAV encode/decode.
    #[error("wav: {0}")]
    Wav(#[from] hound::Error),
}

impl SpeechError {
    /// Whether trying the next configured provider could help.
    pub fn is_failover(&self) -> bool {
        !matches!(self, SpeechError::Cancelled | SpeechError::Config(_))
    }
}
