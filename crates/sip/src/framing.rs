//! Message framing on stream transports (RFC 3261 18.3): the header section
//! ends at the first blank line and Content-Length gives the body length.
//! CRLF keep-alives (RFC 5626 3.5.1) are recognised between messages: a
//! double CRLF "ping" is answered with a single CRLF "pong".

use bytes::{Buf, Bytes, BytesMut};

use crate::message::{MAX_MESSAGE_BYTES, find_header_end};

/// One unit cut from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete SIP message.
    Message(Bytes),
    /// A CRLFCRLF keep-alive ping: answer with [`PONG`].
    Ping,
}

/// The keep-alive answer.
pub const PONG: &[u8] = b"\r\n";

/// The stream cannot be framed any more: close the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The header section or body exceeds the limit.
    #[error("message exceeds {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
    /// Content-Length is missing or not a number (it is mandatory on streams).
    #[error("missing or invalid Content-Length on a stream transport")]
    BadContentLength,
}

/// Accumulates stream bytes and cuts them into frames.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buf: BytesMut,
}

impl StreamFramer {
    /// An empty framer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered and not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        // Between messages: CRLFCRLF is a ping; a lone CRLF (a pong, or
        // RFC 3261 7.5 leading CRLF) is skipped.
        loop {
            if self.buf.starts_with(b"\r\n\r\n") {
                self.buf.advance(4);
                return Ok(Some(Frame::Ping));
            }
            if self.buf.starts_with(b"\r\n") {
                if self.buf.len() < 4 && b"\r\n\r\n".starts_with(&self.buf) {
                    // Could become a ping; wait unless it is a pong alone.
                    if self.buf.len() == 2 {
                        self.buf.advance(2);
                        continue;
                    }
                    return Ok(None);
                }
                self.buf.advance(2);
                continue;
            }
            if self.buf.starts_with(b"\n") {
                self.buf.advance(1);
                continue;
            }
            break;
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        let Some((head_end, body_start)) = find_header_end(&self.buf) else {
            if self.buf.len() > MAX_MESSAGE_BYTES {
                return Err(FramingError::TooLarge);
            }
            return Ok(None);
        };
        let head = &self.buf[..head_end];
        let len = content_length(head).ok_or(FramingError::BadContentLength)?;
        let total = body_start
            .checked_add(len)
            .filter(|t| *t <= MAX_MESSAGE_BYTES)
            .ok_or(FramingError::TooLarge)?;
        if self.buf.len() < total {
            return Ok(None);
        }
        Ok(Some(Frame::Message(self.buf.split_to(total).freeze())))
    }
}

/// Content-Length from a raw header section (long or compact `l` form).
fn content_length(head: &[u8]) -> Option<usize> {
    let head = std::str::from_utf8(head).ok()?;
    for line in head.split('\n') {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("Content-Length") || name.eq_ignore_ascii_case("l") {
            return value.trim().parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"OPTIONS sip:a SIP/2.0\r\nl: 5\r\n\r\nhello";

    #[test]
    fn frames_split_across_reads_and_pipelined() {
        let mut f = StreamFramer::new();
        let mut stream = Vec::new();
        stream.extend_from_slice(MSG);
        stream.extend_from_slice(b"\r\n\r\n");
        stream.extend_from_slice(MSG);
        let mut out = Vec::new();
        for chunk in stream.chunks(3) {
            f.push(chunk);
            while let Some(frame) = f.next_frame().unwrap() {
                out.push(frame);
            }
        }
        assert_eq!(
            out,
            vec![
                Frame::Message(Bytes::from_static(MSG)),
                Frame::Ping,
                Frame::Message(Bytes::from_static(MSG))
            ]
        );
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn pong_is_skipped() {
        let mut f = StreamFramer::new();
        f.push(b"\r\n");
        assert_eq!(f.next_frame().unwrap(), None);
        f.push(MSG);
        assert_eq!(
            f.next_frame().unwrap(),
            Some(Frame::Message(Bytes::from_static(MSG)))
        );
    }

    #[test]
    fn missing_content_length_is_an_error() {
        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n");
        assert_eq!(f.next_frame(), Err(FramingError::BadContentLength));
    }

    #[test]
    fn oversized_is_an_error() {
        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 99999999999\r\n\r\n");
        assert_eq!(f.next_frame(), Err(FramingError::TooLarge));
        let mut f = StreamFramer::new();
        f.push(&vec![b'a'; MAX_MESSAGE_BYTES + 1]);
        assert_eq!(f.next_frame(), Err(FramingError::TooLarge));
    }
}
