//! Clients for hosted speech providers.

pub mod cartesia;
pub mod deepgram;
pub mod elevenlabs;
pub mod openai;
pub mod openai_stt;

use crate::error::SpeechError;

/// Maps a failed HTTP answer to an error, keeping the start of the body.
pub(crate) fn http_error(provider: &'static str, status: u16, body: &str) -> SpeechError {
    if status == 401 || status == 403 {
        SpeechError::Unauthorized { provider, status }
    } else {
        SpeechError::Http {
            provider,
            status,
            body: body.chars().take(300).collect(),
        }
    }
}

/// Turns a transport error into the crate's error.
pub(crate) fn reqwest_error(provider: &'static str, e: &reqwest::Error) -> SpeechError {
    if e.is_connect() {
        SpeechError::Connect {
            provider,
            reason: e.to_string(),
        }
    } else if e.is_timeout() {
        SpeechError::Timeout {
            provider,
            timeout: std::time::Duration::ZERO,
        }
    } else {
        SpeechError::Disconnected {
            provider,
            reason: error_chain(e),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
pub(crate) mod testserver;
