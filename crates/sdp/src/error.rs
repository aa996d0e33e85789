//! Errors of SDP parsing.

/// Why a session description could not be parsed.
///
/// Line numbers are 1-based and count every line of the input, blank ones included, so
/// that they match what an operator sees in a packet capture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The input holds no SDP line at all.
    #[error("empty session description")]
    Empty,
    /// A line is not of the form `<type>=<value>` with a one-letter type.
    #[error("line {line}: not an SDP line (expected `<letter>=<value>`): {found:?}")]
    MalformedLine {
        /// 1-based line number.
        line: usize,
        /// The offending line, truncated.
        found: String,
    },
    /// A known line whose value cannot be understood.
    #[error("line {line}: invalid `{kind}=` line: {reason}")]
    InvalidLine {
        /// 1-based line number.
        line: usize,
        /// The line type letter.
        kind: char,
        /// What is wrong, for a human.
        reason: String,
    },
    /// A mandatory line is absent.
    #[error("missing mandatory `{kind}=` line")]
    MissingLine {
        /// The line type letter.
        kind: char,
    },
}

/// At most this many characters of peer input are quoted in an error, so that a huge
/// garbage body does not end up whole in a log line.
const QUOTE_MAX_CHARS: usize = 40;

/// Peer text shortened for quoting in an error message.
pub(crate) fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_MAX_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}
