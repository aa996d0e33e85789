//! SIP message syntax: parsing with rsip after a tolerant pre-pass, the header
//! fields the transaction and dialog layers need, and response construction.
//!
//! rsip parses only the canonical form (CRLF line ends, long header names, no
//! line folding) and treats everything after the blank line as the body. Real
//! peers send compact header names (`v:`, `i:`), bare LF and folded lines, and
//! RFC 3261 18.3 makes Content-Length decide where the body ends. So every
//! inbound message first goes through [`parse`], which splits the raw bytes,
//! unfolds and expands header names, applies Content-Length, and only then
//! hands a canonical buffer to rsip. When the pre-pass or rsip rejects a
//! request, the error still carries the fields needed to answer it with a 400
//! (RFC 3261 8.2.6), because a silent drop makes the peer retransmit for 32 s.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use rsip::Header;
use rsip::headers::UntypedHeader;
use rsip::prelude::{HeadersExt, ToTypedHeader};

/// Largest message accepted on any transport (the UDP datagram limit).
pub const MAX_MESSAGE_BYTES: usize = 65_535;

/// The RFC 3261 magic cookie that starts every branch of a compliant element.
pub const BRANCH_MAGIC_COOKIE: &str = "z9hG4bK";

/// The header fields copied into any response (RFC 3261 8.2.6.2), kept as raw
/// text so that a request rsip cannot parse can still be answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseContext {
    /// Every Via value, top first.
    pub vias: Vec<String>,
    /// From header value.
    pub from: String,
    /// To header value.
    pub to: String,
    /// Call-ID header value.
    pub call_id: String,
    /// CSeq header value.
    pub cseq: String,
}

/// Why a message could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// Syntax error: answer 400 if possible.
    Malformed,
    /// A well-formed request with a method nobody defined: 501 (RFC 3261 21.5.2).
    UnknownMethod(String),
    /// A SIP version other than 2.0: 505.
    UnsupportedVersion,
}

/// A message that could not be parsed, with what is needed to answer it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct ParseError {
    /// What was wrong, fit for a reason phrase.
    pub reason: String,
    /// The class of error, which picks the status code.
    pub kind: ParseErrorKind,
    /// Present when the bytes were a request whose mandatory headers could be
    /// found: then a response can be sent.
    pub answerable: Option<Box<ResponseContext>>,
}

impl ParseError {
    fn malformed(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            kind: ParseErrorKind::Malformed,
            answerable: None,
        }
    }

    /// The status code and reason phrase to answer with.
    pub fn status(&self) -> (u16, String) {
        match &self.kind {
            ParseErrorKind::Malformed => (400, sanitize_reason(&self.reason)),
            ParseErrorKind::UnknownMethod(_) => (501, "Not Implemented".to_string()),
            ParseErrorKind::UnsupportedVersion => (505, "Version Not Supported".to_string()),
        }
    }
}

/// Reason phrases may not carry CR/LF; keep them short and printable.
pub fn sanitize_reason(reason: &str) -> String {
    reason
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(120)
        .collect()
}

/// RFC 3261 7.3.3 compact forms, plus those of RFC 3515 (r), RFC 3265 (o, u),
/// RFC 4028 (x), RFC 3841 (a, j, d) and RFC 4474 (y, n).
fn expand_compact(name: &str) -> &str {
    if name.len() != 1 {
        return name;
    }
    match name.as_bytes()[0].to_ascii_lowercase() {
        b'i' => "Call-ID",
        b'm' => "Contact",
        b'e' => "Content-Encoding",
        b'l' => "Content-Length",
        b'c' => "Content-Type",
        b'f' => "From",
        b's' => "Subject",
        b'k' => "Supported",
        b't' => "To",
        b'v' => "Via",
        b'r' => "Refer-To",
        b'o' => "Event",
        b'u' => "Allow-Events",
        b'x' => "Session-Expires",
        b'a' => "Accept-Contact",
        b'j' => "Reject-Contact",
        b'd' => "Request-Disposition",
        b'y' => "Identity",
        b'n' => "Identity-Info",
        b'b' => "Referred-By",
        _ => name,
    }
}

fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c)
}

/// Splits a header value list on commas outside quotes and angle brackets.
pub fn split_header_list(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut in_quotes, mut in_angle, mut escaped) = (false, false, false);
    let mut start = 0;
    for (i, c) in value.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '<' if !in_quotes => in_angle = true,
            '>' if !in_quotes => in_angle = false,
            ',' if !in_quotes && !in_angle => {
                let part = value[start..i].trim();
                if !part.is_empty() {
                    out.push(part);
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    let part = value[start..].trim();
    if !part.is_empty() {
        out.push(part);
    }
    out
}

/// Headers whose value lists are split into one header per element, so that
/// the top Via, each Route and each Record-Route entry stand alone.
fn is_list_header(name: &str) -> bool {
    ["Via", "Route", "Record-Route"]
        .iter()
        .any(|n| n.eq_ignore_ascii_case(name))
}

struct RawParts<'a> {
    start_line: &'a str,
    headers: Vec<(String, String)>,
    body: &'a [u8],
    /// A Content-Length problem, reported once the response context is known.
    body_error: Option<&'static str>,
}

/// Splits raw bytes into start line, unfolded headers (compact names
/// expanded, lists split) and the body bounded by Content-Length.
fn split_raw(bytes: &[u8]) -> Result<RawParts<'_>, ParseError> {
    // RFC 3261 7.5: ignore CRLFs before the start line.
    let first = bytes
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .ok_or_else(|| ParseError::malformed("empty message"))?;
    let bytes = &bytes[first..];
    let (head, rest) = match find_header_end(bytes) {
        Some((head_end, body_start)) => (&bytes[..head_end], &bytes[body_start..]),
        None => (bytes, &bytes[bytes.len()..]),
    };
    let head = std::str::from_utf8(head)
        .map_err(|_| ParseError::malformed("header section is not UTF-8"))?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start_line = lines.next().unwrap_or_default();
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            // RFC 3261 7.3.1 line folding: continuation of the previous value.
            match headers.last_mut() {
                Some((_, value)) => {
                    value.push(' ');
                    value.push_str(line.trim());
                }
                None => return Err(ParseError::malformed("folded line before any header")),
            }
            continue;
        }
        let Some(colon) = line.find(':') else {
            return Err(ParseError::malformed("header line without colon"));
        };
        let name = line[..colon].trim_end();
        if name.is_empty() || !name.bytes().all(is_token_char) {
            return Err(ParseError::malformed("invalid header name"));
        }
        let value = line[colon + 1..].trim();
        headers.push((expand_compact(name).to_string(), value.to_string()));
    }
    let mut split = Vec::with_capacity(headers.len() + 2);
    for (name, value) in headers {
        if is_list_header(&name) && value.contains(',') {
            for part in split_header_list(&value) {
                split.push((name.clone(), part.to_string()));
            }
        } else {
            split.push((name, value));
        }
    }
    let mut parts = RawParts {
        start_line,
        headers: split,
        body: rest,
        body_error: None,
    };
    let content_length = parts
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
        .map(|(_, v)| v.trim().parse::<usize>());
    match content_length {
        Some(Ok(len)) if len > parts.body.len() => {
            parts.body_error = Some("Content-Length exceeds body");
        }
        // RFC 3261 18.3: bytes past the body are discarded.
        Some(Ok(len)) => parts.body = &parts.body[..len],
        Some(Err(_)) => parts.body_error = Some("invalid Content-Length"),
        None => {}
    }
    Ok(parts)
}

/// Finds the blank line ending the header section: returns (end of headers,
/// start of body). Accepts CRLFCRLF and bare LFLF.
pub fn find_header_end(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            if bytes.get(i + 1) == Some(&b'\n') {
                return Some((i, i + 2));
            }
            if bytes.get(i + 1) == Some(&b'\r') && bytes.get(i + 2) == Some(&b'\n') {
                return Some((i, i + 3));
            }
        }
        i += 1;
    }
    None
}

fn response_context(headers: &[(String, String)]) -> Option<ResponseContext> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let vias: Vec<String> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Via"))
        .map(|(_, v)| v.clone())
        .collect();
    if vias.is_empty() {
        return None;
    }
    Some(ResponseContext {
        vias,
        from: get("From")?,
        to: get("To")?,
        call_id: get("Call-ID")?,
        cseq: get("CSeq")?,
    })
}

/// The methods rsip can represent.
fn known_method(token: &str) -> bool {
    matches!(
        token,
        "ACK"
            | "BYE"
            | "CANCEL"
            | "INFO"
            | "INVITE"
            | "MESSAGE"
            | "NOTIFY"
            | "OPTIONS"
            | "PRACK"
            | "PUBLISH"
            | "REFER"
            | "REGISTER"
            | "SUBSCRIBE"
            | "UPDATE"
    )
}

/// Parses one SIP message (a UDP datagram or a framed TCP message).
pub fn parse(bytes: &[u8]) -> Result<rsip::SipMessage, ParseError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(ParseError::malformed("message too large"));
    }
    let parts = split_raw(bytes)?;
    let is_response = parts.start_line.starts_with("SIP/");
    let context = if is_response {
        None
    } else {
        response_context(&parts.headers)
    };
    let with_context = |mut e: ParseError| {
        e.answerable = context.clone().map(Box::new);
        e
    };
    if let Some(reason) = parts.body_error {
        return Err(with_context(ParseError::malformed(reason)));
    }
    if !is_response {
        let mut words = parts.start_line.split(' ');
        let (method, uri, version) = (words.next(), words.next(), words.next());
        let (Some(method), Some(uri), Some(version), None) = (method, uri, version, words.next())
        else {
            return Err(with_context(ParseError::malformed(
                "malformed request line",
            )));
        };
        if method.is_empty() || !method.bytes().all(is_token_char) || uri.is_empty() {
            return Err(with_context(ParseError::malformed(
                "malformed request line",
            )));
        }
        if !version.eq_ignore_ascii_case("SIP/2.0") {
            let mut e = ParseError::malformed("unsupported SIP version");
            e.kind = ParseErrorKind::UnsupportedVersion;
            return Err(with_context(e));
        }
        if !known_method(method) {
            let mut e = ParseError::malformed(format!("unknown method {method}"));
            e.kind = ParseErrorKind::UnknownMethod(method.to_string());
            return Err(with_context(e));
        }
    }
    // Canonical form for rsip.
    let mut canon = String::with_capacity(bytes.len() + 64);
    canon.push_str(parts.start_line);
    canon.push_str("\r\n");
    for (name, value) in &parts.headers {
        let _ = write!(canon, "{name}: {value}\r\n");
    }
    canon.push_str("\r\n");
    let mut buf = canon.into_bytes();
    buf.extend_from_slice(parts.body);
    let msg = rsip_parse(&buf).map_err(|reason| with_context(ParseError::malformed(reason)))?;
    validate(&msg).map_err(|reason| with_context(ParseError::malformed(reason)))?;
    Ok(msg)
}

/// rsip behind a panic guard: a parser panic on peer input must cost one
/// message, never the endpoint. The property tests look for such panics.
fn rsip_parse(buf: &[u8]) -> Result<rsip::SipMessage, String> {
    match std::panic::catch_unwind(|| rsip::SipMessage::try_from(buf)) {
        Ok(Ok(msg)) => Ok(msg),
        Ok(Err(e)) => Err(format!(
            "unparseable message: {}",
            first_line(&e.to_string())
        )),
        Err(_) => Err("unparseable message".to_string()),
    }
}

fn first_line(s: &str) -> &str {
    let s = s.lines().next().unwrap_or_default();
    &s[..s.len().min(80)]
}

/// Checks the header fields every request and response must carry
/// (RFC 3261 8.1.1) in a form the layers above can use.
fn validate(msg: &rsip::SipMessage) -> Result<(), String> {
    let via = msg
        .via_header()
        .map_err(|_| "missing Via header".to_string())?;
    via.typed()
        .map_err(|_| "malformed Via header".to_string())?;
    msg.from_header()
        .map_err(|_| "missing From header".to_string())?
        .tag()
        .map_err(|_| "malformed From header".to_string())?;
    msg.to_header()
        .map_err(|_| "missing To header".to_string())?
        .tag()
        .map_err(|_| "malformed To header".to_string())?;
    let call_id = msg
        .call_id_header()
        .map_err(|_| "missing Call-ID header".to_string())?;
    if call_id.value().trim().is_empty() {
        return Err("empty Call-ID header".to_string());
    }
    let cseq = msg
        .cseq_header()
        .map_err(|_| "missing CSeq header".to_string())?
        .typed()
        .map_err(|_| "malformed CSeq header".to_string())?;
    if let rsip::SipMessage::Request(req) = msg {
        if cseq.method != req.method {
            return Err("CSeq method does not match request method".to_string());
        }
        if let Ok(mf) = req.max_forwards_header()
            && mf.value().trim().parse::<u32>().is_err()
        {
            return Err("malformed Max-Forwards header".to_string());
        }
    }
    Ok(())
}

/// Finds `;name=value` (or a bare `;name`, giving "") among a header value's
/// parameters, after any `<uri>` part.
pub fn param_value<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    let params = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value,
    };
    for param in params.split(';').skip(1) {
        let (k, v) = match param.find('=') {
            Some(i) => (&param[..i], &param[i + 1..]),
            None => (param, ""),
        };
        if k.trim().eq_ignore_ascii_case(name) {
            return Some(v.trim());
        }
    }
    None
}

/// The transaction-relevant facts of a message, extracted once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Top Via branch ("" when absent).
    pub branch: String,
    /// Top Via sent-by, as written (host[:port]).
    pub sent_by: String,
    /// Top Via transport token (UDP, TCP, ...).
    pub via_transport: String,
    /// Whether the top Via carries an `rport` parameter (RFC 3581).
    pub rport: bool,
    /// Call-ID value.
    pub call_id: String,
    /// CSeq number.
    pub cseq: u32,
    /// CSeq method.
    pub cseq_method: rsip::Method,
    /// From tag ("" when absent).
    pub from_tag: String,
    /// To tag ("" when absent).
    pub to_tag: String,
}

impl Summary {
    /// Extracts the summary of a message that passed [`parse`].
    pub fn of(msg: &rsip::SipMessage) -> Option<Self> {
        let via = msg.via_header().ok()?;
        let typed = via.typed().ok()?;
        let cseq = msg.cseq_header().ok()?.typed().ok()?;
        let via_raw = via.value();
        Some(Self {
            branch: param_value(via_raw, "branch")
                .unwrap_or_default()
                .to_string(),
            sent_by: typed.uri.host_with_port.to_string(),
            via_transport: typed.transport.to_string(),
            rport: param_value(via_raw, "rport").is_some(),
            call_id: msg.call_id_header().ok()?.value().trim().to_string(),
            cseq: cseq.seq,
            cseq_method: cseq.method,
            from_tag: tag_of(msg.from_header().ok()?.value()),
            to_tag: tag_of(msg.to_header().ok()?.value()),
        })
    }
}

/// The `tag` parameter of a From/To value ("" when absent).
pub fn tag_of(value: &str) -> String {
    param_value(value, "tag").unwrap_or_default().to_string()
}

/// Values of every header with this name (case-insensitive), in order.
pub fn header_values<'a>(headers: &'a rsip::Headers, name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter_map(|h| header_name_value(h))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .collect()
}

/// The name and value of a header, for the variants this crate reads
/// generically.
pub fn header_name_value(h: &Header) -> Option<(&str, &str)> {
    Some(match h {
        Header::Require(v) => ("Require", v.value()),
        Header::ProxyRequire(v) => ("Proxy-Require", v.value()),
        Header::Supported(v) => ("Supported", v.value()),
        Header::RecordRoute(v) => ("Record-Route", v.value()),
        Header::Route(v) => ("Route", v.value()),
        Header::Contact(v) => ("Contact", v.value()),
        Header::Via(v) => ("Via", v.value()),
        Header::ContentType(v) => ("Content-Type", v.value()),
        Header::MaxForwards(v) => ("Max-Forwards", v.value()),
        Header::Allow(v) => ("Allow", v.value()),
        Header::Expires(v) => ("Expires", v.value()),
        Header::MinExpires(v) => ("Min-Expires", v.value()),
        Header::RetryAfter(v) => ("Retry-After", v.value()),
        Header::Event(v) => ("Event", v.value()),
        Header::SubscriptionState(v) => ("Subscription-State", v.value()),
        Header::WwwAuthenticate(v) => ("WWW-Authenticate", v.value()),
        Header::ProxyAuthenticate(v) => ("Proxy-Authenticate", v.value()),
        Header::Authorization(v) => ("Authorization", v.value()),
        Header::ProxyAuthorization(v) => ("Proxy-Authorization", v.value()),
        Header::Accept(v) => ("Accept", v.value()),
        Header::Unsupported(v) => ("Unsupported", v.value()),
        Header::Warning(v) => ("Warning", v.value()),
        Header::Other(n, v) => (n.as_str(), v.as_str()),
        _ => return None,
    })
}

/// Builds a response to a parsed request (RFC 3261 8.2.6.2): Via, From, To,
/// Call-ID and CSeq copied; a To tag added when given and absent.
pub fn response_to(
    req: &rsip::Request,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
) -> rsip::Response {
    let mut headers = rsip::Headers::default();
    for h in req.headers.iter() {
        match h {
            Header::Via(_) | Header::From(_) | Header::CallId(_) | Header::CSeq(_) => {
                headers.push(h.clone())
            }
            Header::To(to) => {
                let value = to.value();
                match to_tag {
                    Some(tag) if param_value(value, "tag").is_none() => headers.push(Header::To(
                        rsip::headers::To::new(format!("{value};tag={tag}")),
                    )),
                    _ => headers.push(h.clone()),
                }
            }
            _ => {}
        }
    }
    rsip::Response {
        status_code: status_code(code, reason),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

/// A status code with our reason phrase (rsip's fixed phrase is used when the
/// reason is empty).
pub fn status_code(code: u16, reason: &str) -> rsip::StatusCode {
    if reason.is_empty() {
        rsip::StatusCode::from(code)
    } else {
        rsip::StatusCode::Other(code, sanitize_reason(reason))
    }
}

/// Serializes a response built from a [`ResponseContext`] (for requests rsip
/// could not parse).
pub fn response_from_context(ctx: &ResponseContext, code: u16, reason: &str) -> Vec<u8> {
    let mut out = String::with_capacity(256);
    let _ = write!(out, "SIP/2.0 {code} {}\r\n", sanitize_reason(reason));
    for via in &ctx.vias {
        let _ = write!(out, "Via: {via}\r\n");
    }
    let _ = write!(
        out,
        "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        ctx.from, ctx.to, ctx.call_id, ctx.cseq
    );
    out.into_bytes()
}

/// Serializes a message, setting Content-Length to the body's length.
pub fn to_bytes(msg: impl Into<rsip::SipMessage>) -> bytes::Bytes {
    let mut msg: rsip::SipMessage = msg.into();
    let len = msg.body().len();
    let headers = match &mut msg {
        rsip::SipMessage::Request(r) => &mut r.headers,
        rsip::SipMessage::Response(r) => &mut r.headers,
    };
    headers.retain(|h| !matches!(h, Header::ContentLength(_)));
    headers.push(Header::ContentLength(rsip::headers::ContentLength::new(
        len.to_string(),
    )));
    bytes::Bytes::from(msg.to_string().into_bytes())
}

/// Where RFC 3261 18.2.2 and RFC 3581 send the response to a request that
/// arrived over an unreliable transport from `source`: the source address
/// when `rport` was requested, else the received address with the sent-by
/// port (5060 by default).
pub fn response_destination(summary: &Summary, source: SocketAddr) -> SocketAddr {
    if summary.rport {
        return source;
    }
    let port = sent_by_port(&summary.sent_by).unwrap_or(5060);
    SocketAddr::new(source.ip(), port)
}

/// The port in a sent-by (`host:port`, `[v6]:port`).
pub fn sent_by_port(sent_by: &str) -> Option<u16> {
    let after = match sent_by.rfind(']') {
        Some(i) => &sent_by[i + 1..],
        None => sent_by,
    };
    let i = after.rfind(':')?;
    after[i + 1..].parse().ok()
}

/// The host in a sent-by, without brackets or port.
pub fn sent_by_host(sent_by: &str) -> &str {
    if let Some(rest) = sent_by.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    sent_by.split(':').next().unwrap_or(sent_by)
}

/// Adds `received` (when the sent-by host differs from the source) and fills
/// `rport` (when requested) on the top Via of a request, as RFC 3261 18.2.1
/// and RFC 3581 4 require of a server transport.
pub fn stamp_top_via(req: &mut rsip::Request, source: SocketAddr) {
    let Some(via) = req.headers.iter_mut().find_map(|h| match h {
        Header::Via(v) => Some(v),
        _ => None,
    }) else {
        return;
    };
    let value = via.value().to_string();
    let host = value
        .split_whitespace()
        .nth(1)
        .map(|s| s.split(';').next().unwrap_or(s))
        .map(sent_by_host)
        .unwrap_or_default();
    let mut params: Vec<String> = value.split(';').map(str::to_string).collect();
    let has_rport = params
        .iter()
        .skip(1)
        .any(|p| p.trim().eq_ignore_ascii_case("rport") || p.trim().starts_with("rport="));
    params.retain(|p| {
        let p = p.trim();
        !(p.starts_with("received=") || (has_rport && (p == "rport" || p.starts_with("rport="))))
    });
    let differs = host
        .parse::<IpAddr>()
        .map(|ip| ip != source.ip())
        .unwrap_or(true);
    if differs || has_rport {
        params.push(format!("received={}", source.ip()));
    }
    if has_rport {
        params.push(format!("rport={}", source.port()));
    }
    *via = rsip::headers::Via::new(params.join(";"));
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0\r\n\
From: sipp <sip:sipp@127.0.0.1:5061>;tag=1SIPpTag001\r\n\
To: service <sip:service@127.0.0.1:5060>\r\n\
Call-ID: 1-1@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: sip:sipp@127.0.0.1:5061\r\n\
Max-Forwards: 70\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\r\nv=0\nEXTRA";

    #[test]
    fn parses_and_bounds_body_by_content_length() {
        let msg = parse(INVITE.as_bytes()).unwrap();
        assert_eq!(msg.body(), b"v=0\n");
        let s = Summary::of(&msg).unwrap();
        assert_eq!(s.branch, "z9hG4bK-1-0");
        assert_eq!(s.sent_by, "127.0.0.1:5061");
        assert_eq!(s.cseq, 1);
        assert_eq!(s.from_tag, "1SIPpTag001");
        assert_eq!(s.to_tag, "");
    }

    #[test]
    fn compact_forms_bare_lf_and_folding() {
        let raw = "OPTIONS sip:a@127.0.0.1 SIP/2.0\n\
v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;rport\n\
f: <sip:b@10.0.0.1>;tag=abc\n\
t: <sip:a@127.0.0.1>\n\
i: call-1\n\
CSeq: 7\n  OPTIONS\n\
l: 0\n\n";
        let msg = parse(raw.as_bytes()).unwrap();
        let s = Summary::of(&msg).unwrap();
        assert!(s.rport);
        assert_eq!(s.call_id, "call-1");
        assert_eq!(s.cseq, 7);
        assert_eq!(s.cseq_method, rsip::Method::Options);
    }

    #[test]
    fn truncated_body_is_answerable_400() {
        let raw = INVITE.replace("Content-Length: 4", "Content-Length: 400");
        let e = parse(raw.as_bytes()).unwrap_err();
        assert_eq!(e.status().0, 400);
        let ctx = e.answerable.unwrap();
        assert_eq!(ctx.call_id, "1-1@127.0.0.1");
        let resp = response_from_context(&ctx, 400, &e.reason);
        let parsed = parse(&resp).unwrap();
        assert!(parsed.is_response());
    }

    #[test]
    fn missing_call_id_is_400_with_reason_when_context_absent() {
        let raw = INVITE.replace("Call-ID: 1-1@127.0.0.1\r\n", "");
        let e = parse(raw.as_bytes()).unwrap_err();
        assert!(e.reason.contains("Call-ID"), "{}", e.reason);
        assert!(e.answerable.is_none());
    }

    #[test]
    fn unknown_method_is_501() {
        let raw = INVITE
            .replace("INVITE sip", "FROB sip")
            .replace("1 INVITE", "1 FROB");
        let e = parse(raw.as_bytes()).unwrap_err();
        assert_eq!(e.status().0, 501);
        assert!(e.answerable.is_some());
    }

    #[test]
    fn cseq_method_mismatch_rejected() {
        let raw = INVITE.replace("1 INVITE", "1 BYE");
        let e = parse(raw.as_bytes()).unwrap_err();
        assert_eq!(e.status().0, 400);
        assert!(e.answerable.is_some());
    }

    #[test]
    fn via_list_split_into_entries() {
        let raw = INVITE.replace(
            "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0",
            "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0, SIP/2.0/TCP 10.1.1.1;branch=z9hG4bKb",
        );
        let msg = parse(raw.as_bytes()).unwrap();
        let rsip::SipMessage::Request(req) = msg else {
            panic!()
        };
        let vias = req
            .headers
            .iter()
            .filter(|h| matches!(h, Header::Via(_)))
            .count();
        assert_eq!(vias, 2);
        assert_eq!(
            Summary::of(&rsip::SipMessage::Request(req)).unwrap().branch,
            "z9hG4bK-1-0"
        );
    }

    #[test]
    fn response_destination_rules() {
        let msg = parse(INVITE.as_bytes()).unwrap();
        let mut s = Summary::of(&msg).unwrap();
        let src: SocketAddr = "127.0.0.9:40000".parse().unwrap();
        assert_eq!(
            response_destination(&s, src),
            "127.0.0.9:5061".parse().unwrap()
        );
        s.rport = true;
        assert_eq!(response_destination(&s, src), src);
    }

    #[test]
    fn stamp_via_received_and_rport() {
        let raw = INVITE.replace("branch=z9hG4bK-1-0", "branch=z9hG4bK-1-0;rport");
        let msg = parse(raw.as_bytes()).unwrap();
        let rsip::SipMessage::Request(mut req) = msg else {
            panic!()
        };
        stamp_top_via(&mut req, "127.0.0.9:40000".parse().unwrap());
        let via = req.via_header().unwrap().value().to_string();
        assert!(via.contains("received=127.0.0.9"), "{via}");
        assert!(via.contains("rport=40000"), "{via}");
    }

    #[test]
    fn to_tag_added_to_response() {
        let rsip::SipMessage::Request(req) = parse(INVITE.as_bytes()).unwrap() else {
            panic!()
        };
        let resp = response_to(&req, 486, "Busy Here", Some("t1"));
        let bytes = to_bytes(resp);
        let back = parse(&bytes).unwrap();
        let s = Summary::of(&back).unwrap();
        assert_eq!(s.to_tag, "t1");
        assert!(String::from_utf8_lossy(&bytes).starts_with("SIP/2.0 486 Busy Here\r\n"));
    }
}
