//! The engine's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The Python interpreter could not be run.
    #[error(
        "python interpreter `{python}` could not be run ({source}); install Python 3.10+ \
         or set the interpreter with --python / VOICEGATE_PYTHON"
    )]
    PythonMissing {
        /// The interpreter that was tried.
        python: String,
        /// Why it could not run.
        source: std::io::Error,
    },
    /// Creating the sandbox venv or installing packages failed.
    #[error("sandbox setup in {dir} failed: {message}")]
    SandboxSetup {
        /// The venv directory.
        dir: PathBuf,
        /// What failed, with the tool's output.
        message: String,
    },
    /// The agent directory or its handler could not be loaded.
    #[error("agent {dir} could not be loaded: {message}")]
    AgentLoad {
        /// The agent directory.
        dir: PathBuf,
        /// Why (the Python traceback for import errors).
        message: String,
    },
    /// A worker process could not be started or died during start-up.
    #[error("sandbox worker failed: {0}")]
    Worker(String),
    /// The session is gone (ended, or its worker was lost).
    #[error("session {0} is closed")]
    SessionClosed(String),
    /// The session's input queue is full; the input was dropped.
    #[error("session {0} input queue is full")]
    InputQueueFull(String),
    /// `set_output` with more than the allowed bytes.
    #[error("output_data of {size} bytes exceeds the {limit}-byte limit")]
    OutputTooLarge {
        /// Serialised size.
        size: usize,
        /// The limit (65536).
        limit: usize,
    },
    /// An I/O error.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}
