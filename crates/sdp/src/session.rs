//! The SDP data model (RFC 8866 section 5) and typed views of the attributes the
//! gateway cares about.
//!
//! Fields the gateway never interprets (`r=`, `z=`, `k=`, `e=`, `p=`) are kept as raw
//! text so that a description round-trips through parse and print unchanged.

use std::fmt;
use std::net::IpAddr;

/// A complete session description: session-level lines followed by media sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// `v=`: protocol version; always 0 (RFC 8866 5.1).
    pub version: u8,
    /// `o=`: originator and session identifier (RFC 8866 5.2).
    pub origin: Origin,
    /// `s=`: session name; may be empty, printed then as `s= ` (RFC 8866 5.3).
    pub session_name: String,
    /// `i=`: session information.
    pub session_info: Option<String>,
    /// `u=`: URI of a description of the session.
    pub uri: Option<String>,
    /// `e=`: email addresses, raw.
    pub emails: Vec<String>,
    /// `p=`: phone numbers, raw.
    pub phones: Vec<String>,
    /// `c=` at session level: default for media sections without their own.
    pub connection: Option<Connection>,
    /// `b=` at session level.
    pub bandwidths: Vec<Bandwidth>,
    /// `t=` lines, each with its `r=` repeat lines. Usually one `t=0 0`.
    pub timings: Vec<Timing>,
    /// `z=`: time zone adjustments, raw.
    pub time_zones: Option<String>,
    /// `k=`: encryption key, raw (obsolete, RFC 8866 5.12).
    pub encryption_key: Option<String>,
    /// Session-level `a=` lines, in order.
    pub attributes: Vec<Attribute>,
    /// `m=` sections, in order; their index is the "m-line index" of RFC 3264.
    pub media: Vec<MediaDescription>,
}

/// The `o=` line: `<username> <sess-id> <sess-version> <nettype> <addrtype> <address>`.
///
/// `sess-id` and `sess-version` are kept as text: RFC 8866 only asks for numeric
/// strings, and a peer sending one wider than 64 bits must not fail the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Login of the originating user, `-` when there is none.
    pub username: String,
    /// Session id, unique per originator.
    pub session_id: String,
    /// Session version; incremented on each modification of the session.
    pub session_version: String,
    /// Network type, `IN` in practice.
    pub nettype: String,
    /// Address type, `IP4` or `IP6`.
    pub addrtype: String,
    /// Address of the originating host.
    pub address: String,
}

/// A `c=` line: `<nettype> <addrtype> <connection-address>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// Network type, `IN` in practice.
    pub nettype: String,
    /// Address type, `IP4` or `IP6`.
    pub addrtype: String,
    /// Address, raw: may be a unicast IP, a multicast `addr/ttl[/count]` or an FQDN.
    pub address: String,
}

impl Connection {
    /// A `c=IN IP4 ...` or `c=IN IP6 ...` line for `addr`.
    pub fn from_ip(addr: IpAddr) -> Self {
        Self {
            nettype: "IN".to_owned(),
            addrtype: addrtype_of(addr).to_owned(),
            address: addr.to_string(),
        }
    }

    /// The address as an IP, if it is one; a multicast `/ttl` suffix is ignored.
    ///
    /// FQDNs give `None`: this crate does no I/O, so it cannot resolve them.
    pub fn ip(&self) -> Option<IpAddr> {
        let addr = self.address.split('/').next().unwrap_or("");
        addr.parse().ok()
    }
}

/// `IP4` or `IP6`, the SDP address type for `addr`.
pub(crate) fn addrtype_of(addr: IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}

/// A `b=<bwtype>:<bandwidth>` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bandwidth {
    /// Bandwidth type: `AS`, `CT`, `TIAS`, ...
    pub bwtype: String,
    /// Value; kilobits per second for `AS`/`CT`, bits per second for `TIAS`.
    pub bandwidth: u64,
}

/// A `t=<start> <stop>` line with the `r=` lines that follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// Start time (NTP seconds); 0 for unbounded.
    pub start: u64,
    /// Stop time (NTP seconds); 0 for unbounded.
    pub stop: u64,
    /// `r=` repeat lines, raw.
    pub repeats: Vec<String>,
}

impl Default for Timing {
    /// `t=0 0`, the permanent session every SIP peer uses.
    fn default() -> Self {
        Self {
            start: 0,
            stop: 0,
            repeats: Vec::new(),
        }
    }
}

/// An `a=<name>` or `a=<name>:<value>` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Attribute name, before the first `:`.
    pub name: String,
    /// Value after the first `:`; `None` for property attributes such as `a=sendrecv`.
    pub value: Option<String>,
}

impl Attribute {
    /// A property attribute (`a=<name>`).
    pub fn property(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: None,
        }
    }

    /// A value attribute (`a=<name>:<value>`).
    pub fn value(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: Some(value.into()),
        }
    }
}

/// A media section: the `m=` line and the lines up to the next `m=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// Media type: `audio`, `video`, `application`, ...
    pub media: String,
    /// Transport port; 0 marks a rejected or disabled stream (RFC 3264 5.1, 6).
    pub port: u16,
    /// The `/<number of ports>` suffix of the port, if present.
    pub port_count: Option<u16>,
    /// Transport protocol: `RTP/AVP`, `RTP/SAVP`, `UDP/TLS/RTP/SAVPF`, ...
    pub proto: String,
    /// Media formats; RTP payload type numbers for the RTP profiles.
    pub formats: Vec<String>,
    /// `i=`: media title.
    pub title: Option<String>,
    /// `c=` for this media; overrides the session-level one.
    ///
    /// Only the first media-level `c=` is kept: further ones are only meaningful for
    /// layered multicast, which a telephony gateway never sees.
    pub connection: Option<Connection>,
    /// `b=` lines of this media.
    pub bandwidths: Vec<Bandwidth>,
    /// `k=`: encryption key, raw.
    pub encryption_key: Option<String>,
    /// Media-level `a=` lines, in order.
    pub attributes: Vec<Attribute>,
}

impl MediaDescription {
    /// A media section with no `i=`, `c=`, `b=`, `k=` or attributes.
    pub fn new(media: impl Into<String>, port: u16, proto: impl Into<String>) -> Self {
        Self {
            media: media.into(),
            port,
            port_count: None,
            proto: proto.into(),
            formats: Vec::new(),
            title: None,
            connection: None,
            bandwidths: Vec::new(),
            encryption_key: None,
            attributes: Vec::new(),
        }
    }

    /// Value of the first attribute called `name` (case-sensitive, as RFC 8866 6
    /// defines attribute names); `Some("")` for a property attribute.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        find_attribute(&self.attributes, name)
    }

    /// Whether an attribute called `name` is present.
    pub fn has_attribute(&self, name: &str) -> bool {
        self.attributes.iter().any(|a| a.name == name)
    }

    /// All well-formed `a=rtpmap` lines, in order; malformed ones are skipped.
    pub fn rtpmaps(&self) -> impl Iterator<Item = RtpMap> + '_ {
        self.attributes
            .iter()
            .filter(|a| a.name == "rtpmap")
            .filter_map(|a| a.value.as_deref().and_then(RtpMap::parse))
    }

    /// The `a=rtpmap` for `payload_type`, if any.
    pub fn rtpmap(&self, payload_type: u8) -> Option<RtpMap> {
        self.rtpmaps().find(|m| m.payload_type == payload_type)
    }

    /// The parameters of the `a=fmtp` line for `payload_type`, if any.
    pub fn fmtp(&self, payload_type: u8) -> Option<&str> {
        self.attributes
            .iter()
            .filter(|a| a.name == "fmtp")
            .filter_map(|a| a.value.as_deref().and_then(Fmtp::parse))
            .find(|f| f.payload_type == payload_type)
            .map(|f| f.params)
    }

    /// `a=ptime` in milliseconds, if present and numeric.
    pub fn ptime_ms(&self) -> Option<u32> {
        parse_ms(self.attribute("ptime")?)
    }

    /// `a=maxptime` in milliseconds, if present and numeric.
    pub fn maxptime_ms(&self) -> Option<u32> {
        parse_ms(self.attribute("maxptime")?)
    }

    /// The direction attribute of this media section alone, if it has one.
    pub fn direction(&self) -> Option<Direction> {
        direction_in(&self.attributes)
    }

    /// Whether `formats` are RTP payload types, i.e. `proto` is an RTP profile.
    pub fn is_rtp(&self) -> bool {
        self.proto.to_ascii_uppercase().contains("RTP/")
    }
}

impl SessionDescription {
    /// A description with the mandatory lines only: `v=0`, the given `o=`, `s=-`, `t=0 0`.
    pub fn new(origin: Origin) -> Self {
        Self {
            version: 0,
            origin,
            session_name: "-".to_owned(),
            session_info: None,
            uri: None,
            emails: Vec::new(),
            phones: Vec::new(),
            connection: None,
            bandwidths: Vec::new(),
            timings: vec![Timing::default()],
            time_zones: None,
            encryption_key: None,
            attributes: Vec::new(),
            media: Vec::new(),
        }
    }

    /// Parse a description; see [`crate::parse`].
    pub fn parse(text: &str) -> Result<Self, crate::SdpError> {
        crate::parse::parse(text)
    }

    /// Value of the first session-level attribute called `name`.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        find_attribute(&self.attributes, name)
    }

    /// The session-level direction attribute, if any.
    pub fn direction(&self) -> Option<Direction> {
        direction_in(&self.attributes)
    }

    /// Effective direction of media section `index`: its own attribute, else the
    /// session-level one, else `sendrecv` (RFC 8866 6.7). `None` if there is no such
    /// section.
    pub fn media_direction(&self, index: usize) -> Option<Direction> {
        let media = self.media.get(index)?;
        Some(
            media
                .direction()
                .or_else(|| self.direction())
                .unwrap_or(Direction::SendRecv),
        )
    }

    /// Effective connection of media section `index`: its own `c=`, else the
    /// session-level one (RFC 8866 5.7).
    pub fn media_connection(&self, index: usize) -> Option<&Connection> {
        let media = self.media.get(index)?;
        media.connection.as_ref().or(self.connection.as_ref())
    }

    /// Effective `a=ptime` of media section `index`: its own, else a session-level one
    /// (not allowed by RFC 8866 but sent by some peers).
    pub fn media_ptime_ms(&self, index: usize) -> Option<u32> {
        let media = self.media.get(index)?;
        media
            .ptime_ms()
            .or_else(|| parse_ms(self.attribute("ptime")?))
    }
}

fn find_attribute<'a>(attributes: &'a [Attribute], name: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.value.as_deref().unwrap_or(""))
}

fn direction_in(attributes: &[Attribute]) -> Option<Direction> {
    // Several direction attributes make no sense; the first one wins.
    attributes
        .iter()
        .find_map(|a| Direction::from_attribute_name(&a.name))
}

fn parse_ms(value: &str) -> Option<u32> {
    // Some peers send fractional ptime ("20.0"); only the integer part matters.
    let int = value.trim().split('.').next()?;
    int.parse().ok()
}

/// Media direction attributes (RFC 8866 6.7; RFC 3264 5.1 and 6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `a=sendrecv`: send and receive; the default.
    SendRecv,
    /// `a=sendonly`: send only.
    SendOnly,
    /// `a=recvonly`: receive only.
    RecvOnly,
    /// `a=inactive`: neither; a held call.
    Inactive,
}

impl Direction {
    /// The attribute name, e.g. `sendrecv`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction for an attribute name, if it is one of the four.
    pub fn from_attribute_name(name: &str) -> Option<Self> {
        match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    /// Built from what this side may do.
    pub fn from_flags(send: bool, recv: bool) -> Self {
        match (send, recv) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// Whether this side sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether this side receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The direction seen from the other side: `sendonly` <-> `recvonly`. This is the
    /// answer to an offer with this direction when the answerer accepts everything
    /// (RFC 3264 6.1).
    pub fn reversed(self) -> Self {
        Self::from_flags(self.receives(), self.sends())
    }

    /// What both directions allow, seen from the same side.
    pub fn intersect(self, other: Self) -> Self {
        Self::from_flags(
            self.sends() && other.sends(),
            self.receives() && other.receives(),
        )
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed `a=rtpmap:<pt> <encoding name>/<clock rate>[/<encoding parameters>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// RTP payload type.
    pub payload_type: u8,
    /// Encoding name as sent (match it case-insensitively, RFC 4855 3).
    pub encoding_name: String,
    /// RTP clock rate in Hz.
    pub clock_rate_hz: u32,
    /// Encoding parameters; the channel count for audio.
    pub encoding_params: Option<u16>,
}

impl RtpMap {
    /// Parse the value of an `a=rtpmap` attribute; `None` if malformed.
    pub fn parse(value: &str) -> Option<Self> {
        let (pt, rest) = value.trim().split_once(char::is_whitespace)?;
        let payload_type = pt.parse().ok()?;
        let mut parts = rest.trim().split('/');
        let encoding_name = parts.next()?.trim();
        if encoding_name.is_empty() {
            return None;
        }
        let clock_rate_hz = parts.next()?.trim().parse().ok()?;
        let encoding_params = match parts.next() {
            Some(p) => Some(p.trim().parse().ok()?),
            None => None,
        };
        Some(Self {
            payload_type,
            encoding_name: encoding_name.to_owned(),
            clock_rate_hz,
            encoding_params,
        })
    }

    /// The attribute value, e.g. `111 opus/48000/2`.
    pub fn to_value(&self) -> String {
        match self.encoding_params {
            Some(p) => format!(
                "{} {}/{}/{}",
                self.payload_type, self.encoding_name, self.clock_rate_hz, p
            ),
            None => format!(
                "{} {}/{}",
                self.payload_type, self.encoding_name, self.clock_rate_hz
            ),
        }
    }
}

/// A parsed `a=fmtp:<format> <format specific parameters>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fmtp<'a> {
    /// RTP payload type.
    pub payload_type: u8,
    /// The parameters, raw (e.g. `useinbandfec=1` or `0-15`).
    pub params: &'a str,
}

impl<'a> Fmtp<'a> {
    /// Parse the value of an `a=fmtp` attribute; `None` if malformed.
    pub fn parse(value: &'a str) -> Option<Self> {
        let value = value.trim();
        let (pt, params) = match value.split_once(char::is_whitespace) {
            Some((pt, params)) => (pt, params.trim()),
            None => (value, ""),
        };
        Some(Self {
            payload_type: pt.parse().ok()?,
            params,
        })
    }

    /// The `;`-separated `key=value` parameters; a bare item (such as `0-15` for
    /// telephone-event) comes with a `None` value.
    pub fn parameters(&self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> {
        fmtp_parameters(self.params)
    }
}

/// Split format parameters (`a=fmtp` after the payload type) into `key=value` pairs.
pub fn fmtp_parameters(params: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    params
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (p, None),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtpmap_parses_channels_and_rejects_garbage() {
        let m = RtpMap::parse("111 opus/48000/2").unwrap();
        assert_eq!(m.payload_type, 111);
        assert_eq!(m.encoding_name, "opus");
        assert_eq!(m.clock_rate_hz, 48000);
        assert_eq!(m.encoding_params, Some(2));
        assert_eq!(m.to_value(), "111 opus/48000/2");
        assert_eq!(RtpMap::parse("0 PCMU/8000").unwrap().encoding_params, None);
        assert!(RtpMap::parse("300 PCMU/8000").is_none());
        assert!(RtpMap::parse("0 PCMU").is_none());
        assert!(RtpMap::parse("0").is_none());
        assert!(RtpMap::parse("0 /8000").is_none());
    }

    #[test]
    fn fmtp_parameters_split() {
        let f = Fmtp::parse("111 minptime=10;useinbandfec=1").unwrap();
        assert_eq!(f.payload_type, 111);
        let params: Vec<_> = f.parameters().collect();
        assert_eq!(
            params,
            vec![("minptime", Some("10")), ("useinbandfec", Some("1"))]
        );
        let f = Fmtp::parse("101 0-15").unwrap();
        assert_eq!(f.parameters().collect::<Vec<_>>(), vec![("0-15", None)]);
    }

    #[test]
    fn direction_algebra() {
        assert_eq!(Direction::SendOnly.reversed(), Direction::RecvOnly);
        assert_eq!(Direction::RecvOnly.reversed(), Direction::SendOnly);
        assert_eq!(Direction::SendRecv.reversed(), Direction::SendRecv);
        assert_eq!(Direction::Inactive.reversed(), Direction::Inactive);
        assert_eq!(
            Direction::SendRecv.intersect(Direction::SendOnly),
            Direction::SendOnly
        );
        assert_eq!(
            Direction::SendOnly.intersect(Direction::RecvOnly),
            Direction::Inactive
        );
    }

    #[test]
    fn connection_ip_ignores_multicast_ttl() {
        let c = Connection {
            nettype: "IN".into(),
            addrtype: "IP4".into(),
            address: "224.2.1.1/127".into(),
        };
        assert_eq!(c.ip(), Some("224.2.1.1".parse().unwrap()));
        let c = Connection {
            address: "host.example.com".into(),
            ..c
        };
        assert_eq!(c.ip(), None);
    }
}
