//! The SDP parser (RFC 8866 section 5, 9).
//!
//! Leniency rules, each taken from what real peers send:
//! - lines end in CRLF or bare LF; surrounding whitespace and blank lines are ignored;
//! - session-level lines are accepted in any order before the first `m=`;
//! - unknown line types, and session-only types inside a media section, are ignored
//!   (RFC 8866 5 lets a parser ignore type letters it does not understand);
//! - a repeated singleton line (`o=`, `s=`, `c=`, ...) keeps its first occurrence;
//! - a missing `s=` gives an empty name and a missing `t=` no timing.
//!
//! Strict where meaning would be lost: the first line must be `v=0`, `o=` must be
//! present with six fields, and `c=`, `b=`, `t=` and `m=` lines must be well formed
//! (an `m=` line without a numeric port is an error).

use crate::error::{SdpError, quote};
use crate::session::{
    Attribute, Bandwidth, Connection, MediaDescription, Origin, SessionDescription, Timing,
};

/// Parse an SDP body. Never panics, whatever the input.
pub fn parse(text: &str) -> Result<SessionDescription, SdpError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, raw)| (i + 1, raw.trim()))
        .filter(|(_, raw)| !raw.is_empty())
        .map(|(number, raw)| Line::split(number, raw));

    let first = lines.next().ok_or(SdpError::Empty)??;
    if first.kind != 'v' || first.value.trim() != "0" {
        return Err(SdpError::InvalidLine {
            line: first.number,
            kind: 'v',
            reason: format!(
                "a description must start with `v=0`, found {:?}",
                quote(first.raw)
            ),
        });
    }

    let mut b = Builder::default();
    for line in lines {
        let line = line?;
        match b.media.last_mut() {
            None => b.session_line(&line)?,
            Some(media) if line.kind != 'm' => media_line(media, &line)?,
            Some(_) => b.media.push(parse_media(&line)?),
        }
    }
    b.finish()
}

/// One non-blank input line split at its `=`.
struct Line<'a> {
    number: usize,
    kind: char,
    value: &'a str,
    raw: &'a str,
}

impl<'a> Line<'a> {
    fn split(number: usize, raw: &'a str) -> Result<Self, SdpError> {
        let mut chars = raw.chars();
        match (chars.next(), chars.next()) {
            (Some(kind), Some('=')) if kind.is_ascii_alphabetic() => Ok(Line {
                number,
                kind,
                // `kind` is ASCII, so the value starts at byte 2.
                value: &raw[2..],
                raw,
            }),
            _ => Err(SdpError::MalformedLine {
                line: number,
                found: quote(raw),
            }),
        }
    }

    fn invalid(&self, reason: impl Into<String>) -> SdpError {
        SdpError::InvalidLine {
            line: self.number,
            kind: self.kind,
            reason: reason.into(),
        }
    }
}

#[derive(Default)]
struct Builder {
    origin: Option<Origin>,
    session_name: Option<String>,
    session_info: Option<String>,
    uri: Option<String>,
    emails: Vec<String>,
    phones: Vec<String>,
    connection: Option<Connection>,
    bandwidths: Vec<Bandwidth>,
    timings: Vec<Timing>,
    time_zones: Option<String>,
    encryption_key: Option<String>,
    attributes: Vec<Attribute>,
    media: Vec<MediaDescription>,
}

impl Builder {
    fn session_line(&mut self, line: &Line<'_>) -> Result<(), SdpError> {
        let value = line.value;
        match line.kind {
            'o' => {
                let origin = parse_origin(line)?;
                self.origin.get_or_insert(origin);
            }
            's' => set_once(&mut self.session_name, value),
            'i' => set_once(&mut self.session_info, value),
            'u' => set_once(&mut self.uri, value),
            'e' => self.emails.push(value.to_owned()),
            'p' => self.phones.push(value.to_owned()),
            'c' => {
                let connection = parse_connection(line)?;
                self.connection.get_or_insert(connection);
            }
            'b' => self.bandwidths.push(parse_bandwidth(line)?),
            't' => self.timings.push(parse_timing(line)?),
            // An `r=` before any `t=` has nothing to repeat; dropping it loses nothing.
            'r' => {
                if let Some(t) = self.timings.last_mut() {
                    t.repeats.push(value.to_owned());
                }
            }
            'z' => set_once(&mut self.time_zones, value),
            'k' => set_once(&mut self.encryption_key, value),
            'a' => self.attributes.push(parse_attribute(value)),
            'm' => self.media.push(parse_media(line)?),
            _ => {}
        }
        Ok(())
    }

    fn finish(self) -> Result<SessionDescription, SdpError> {
        Ok(SessionDescription {
            version: 0,
            origin: self.origin.ok_or(SdpError::MissingLine { kind: 'o' })?,
            session_name: self.session_name.unwrap_or_default(),
            session_info: self.session_info,
            uri: self.uri,
            emails: self.emails,
            phones: self.phones,
            connection: self.connection,
            bandwidths: self.bandwidths,
            timings: self.timings,
            time_zones: self.time_zones,
            encryption_key: self.encryption_key,
            attributes: self.attributes,
            media: self.media,
        })
    }
}

fn set_once(slot: &mut Option<String>, value: &str) {
    slot.get_or_insert_with(|| value.to_owned());
}

fn media_line(media: &mut MediaDescription, line: &Line<'_>) -> Result<(), SdpError> {
    match line.kind {
        'i' => set_once(&mut media.title, line.value),
        'c' => {
            let connection = parse_connection(line)?;
            media.connection.get_or_insert(connection);
        }
        'b' => media.bandwidths.push(parse_bandwidth(line)?),
        'k' => set_once(&mut media.encryption_key, line.value),
        'a' => media.attributes.push(parse_attribute(line.value)),
        _ => {}
    }
    Ok(())
}

fn parse_origin(line: &Line<'_>) -> Result<Origin, SdpError> {
    let fields: Vec<&str> = line.value.split_whitespace().collect();
    let [
        username,
        session_id,
        session_version,
        nettype,
        addrtype,
        address,
    ] = fields[..]
    else {
        return Err(line.invalid(format!(
            "expected 6 fields `<username> <sess-id> <sess-version> <nettype> <addrtype> \
             <address>`, found {}",
            fields.len()
        )));
    };
    Ok(Origin {
        username: username.to_owned(),
        session_id: session_id.to_owned(),
        session_version: session_version.to_owned(),
        nettype: nettype.to_owned(),
        addrtype: addrtype.to_owned(),
        address: address.to_owned(),
    })
}

fn parse_connection(line: &Line<'_>) -> Result<Connection, SdpError> {
    let fields: Vec<&str> = line.value.split_whitespace().collect();
    let [nettype, addrtype, address] = fields[..] else {
        return Err(line.invalid(format!(
            "expected 3 fields `<nettype> <addrtype> <connection-address>`, found {}",
            fields.len()
        )));
    };
    Ok(Connection {
        nettype: nettype.to_owned(),
        addrtype: addrtype.to_owned(),
        address: address.to_owned(),
    })
}

fn parse_bandwidth(line: &Line<'_>) -> Result<Bandwidth, SdpError> {
    let (bwtype, value) = line
        .value
        .split_once(':')
        .ok_or_else(|| line.invalid("expected `<bwtype>:<bandwidth>`"))?;
    let bandwidth = value.trim().parse().map_err(|_| {
        line.invalid(format!(
            "bandwidth {:?} is not a non-negative integer",
            quote(value)
        ))
    })?;
    Ok(Bandwidth {
        bwtype: bwtype.trim().to_owned(),
        bandwidth,
    })
}

fn parse_timing(line: &Line<'_>) -> Result<Timing, SdpError> {
    let fields: Vec<&str> = line.value.split_whitespace().collect();
    let [start, stop] = fields[..] else {
        return Err(line.invalid(format!(
            "expected `<start-time> <stop-time>`, found {} fields",
            fields.len()
        )));
    };
    let number = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| line.invalid(format!("time {:?} is not a number", quote(s))))
    };
    Ok(Timing {
        start: number(start)?,
        stop: number(stop)?,
        repeats: Vec::new(),
    })
}

fn parse_attribute(value: &str) -> Attribute {
    match value.split_once(':') {
        Some((name, value)) => Attribute::value(name, value),
        None => Attribute::property(value),
    }
}

fn parse_media(line: &Line<'_>) -> Result<MediaDescription, SdpError> {
    let mut fields = line.value.split_whitespace();
    let media = fields
        .next()
        .ok_or_else(|| line.invalid("missing media type"))?;
    let port_field = fields.next().ok_or_else(|| line.invalid("missing port"))?;
    let (port, port_count) = match port_field.split_once('/') {
        Some((port, count)) => (port, Some(count)),
        None => (port_field, None),
    };
    let port = port.parse().map_err(|_| {
        line.invalid(format!(
            "port {:?} is not a number in 0..=65535",
            quote(port_field)
        ))
    })?;
    let port_count = match port_count {
        Some(count) => Some(count.parse().map_err(|_| {
            line.invalid(format!(
                "port count {:?} is not a number in 0..=65535",
                quote(count)
            ))
        })?),
        None => None,
    };
    let proto = fields
        .next()
        .ok_or_else(|| line.invalid("missing transport protocol"))?;
    // RFC 8866 asks for at least one format, but rejected streams from some peers
    // carry none; nothing is lost by accepting that.
    let formats = fields.map(str::to_owned).collect();
    let mut m = MediaDescription::new(media, port, proto);
    m.port_count = port_count;
    m.formats = formats;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_blank_inputs_are_empty() {
        assert_eq!(parse(""), Err(SdpError::Empty));
        assert_eq!(parse("\r\n \n\t\r\n"), Err(SdpError::Empty));
    }

    #[test]
    fn first_line_must_be_v0() {
        let err = parse("o=- 1 1 IN IP4 1.2.3.4\r\n").unwrap_err();
        assert!(matches!(
            err,
            SdpError::InvalidLine {
                line: 1,
                kind: 'v',
                ..
            }
        ));
        let err = parse("\r\nv=1\r\n").unwrap_err();
        assert!(matches!(
            err,
            SdpError::InvalidLine {
                line: 2,
                kind: 'v',
                ..
            }
        ));
        assert!(err.to_string().starts_with("line 2: invalid `v=` line"));
    }

    #[test]
    fn origin_is_mandatory_and_needs_six_fields() {
        assert_eq!(
            parse("v=0\r\ns=-\r\n"),
            Err(SdpError::MissingLine { kind: 'o' })
        );
        let err = parse("v=0\r\no=- 1 IN IP4 1.2.3.4\r\n").unwrap_err();
        assert!(matches!(
            err,
            SdpError::InvalidLine {
                line: 2,
                kind: 'o',
                ..
            }
        ));
    }

    #[test]
    fn m_line_needs_a_numeric_port() {
        let base = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\n";
        let err = parse(&format!("{base}m=audio\r\n")).unwrap_err();
        assert!(matches!(
            err,
            SdpError::InvalidLine {
                line: 5,
                kind: 'm',
                ..
            }
        ));
        let err = parse(&format!("{base}m=audio RTP/AVP 0\r\n")).unwrap_err();
        assert!(err.to_string().contains("port \"RTP/AVP\""), "{err}");
        let err = parse(&format!("{base}m=audio 70000 RTP/AVP 0\r\n")).unwrap_err();
        assert!(matches!(err, SdpError::InvalidLine { line: 5, .. }));
        let sdp = parse(&format!("{base}m=audio 49170/2 RTP/AVP 0\r\n")).unwrap();
        assert_eq!(sdp.media[0].port, 49170);
        assert_eq!(sdp.media[0].port_count, Some(2));
    }

    #[test]
    fn lenient_on_line_endings_whitespace_unknown_lines() {
        let text = "v=0\no=alice 1 2 IN IP4 10.0.0.1  \r\n\r\ns=call \nx=whatever\n\
                    t=0 0\nm=audio 4000 RTP/AVP 0\ny=media-level unknown\na=sendonly\n";
        let sdp = parse(text).unwrap();
        assert_eq!(sdp.origin.address, "10.0.0.1");
        assert_eq!(sdp.session_name, "call");
        assert_eq!(sdp.media.len(), 1);
        assert_eq!(
            sdp.media[0].attributes,
            vec![Attribute::property("sendonly")]
        );
    }

    #[test]
    fn malformed_line_names_its_number() {
        let err = parse("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nhello\r\n").unwrap_err();
        assert_eq!(
            err,
            SdpError::MalformedLine {
                line: 3,
                found: "hello".into()
            }
        );
    }

    #[test]
    fn error_quotes_are_truncated_on_char_boundaries() {
        let long = "é".repeat(100);
        let err = parse(&format!(
            "v=0\r\no=- 1 1 IN IP4 x\r\nm=audio {long} RTP/AVP\r\n"
        ))
        .unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
    }
}
