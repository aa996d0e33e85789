//! Dialogs (RFC 3261 12): identity, CSeq spaces, route sets and targets, and
//! construction of in-dialog requests, for both the UAS and UAC roles.

use std::net::{IpAddr, SocketAddr};

use rsip::Header;
use rsip::headers::UntypedHeader;
use rsip::prelude::HeadersExt;

use crate::message::{param_value, tag_of};

/// RFC 3261 12: a dialog is identified by Call-ID, local tag and remote tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    /// Call-ID.
    pub call_id: String,
    /// Our tag.
    pub local_tag: String,
    /// The peer's tag.
    pub remote_tag: String,
}

/// Which side created the dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We answered the INVITE.
    Uas,
    /// We sent the INVITE.
    Uac,
}

/// Dialog state shared by both roles.
#[derive(Debug, Clone)]
pub struct Dialog {
    /// Identity.
    pub id: DialogId,
    /// Our role.
    pub role: Role,
    /// Our next CSeq is `local_seq + 1`.
    pub local_seq: u32,
    /// Highest CSeq seen from the peer (None before the first request).
    pub remote_seq: Option<u32>,
    /// Our From/To value, with our tag.
    pub local_header: String,
    /// The peer's From/To value, with its tag.
    pub remote_header: String,
    /// Where in-dialog requests go: the peer's Contact URI.
    pub remote_target: String,
    /// Route set: values for Route headers, in order.
    pub route_set: Vec<String>,
}

/// Why a dialog could not be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    /// The request or response lacks a Contact (RFC 3261 12.1.1/12.1.2).
    #[error("missing Contact header")]
    MissingContact,
    /// A mandatory header is missing.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
}

/// The URI inside a Contact/Route value (`"Name" <sip:...>;p` or `sip:...;p`).
pub fn uri_of(value: &str) -> &str {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.split(';').next().unwrap_or(value).trim(),
    }
}

impl Dialog {
    /// RFC 3261 12.1.1: the dialog a UAS creates by answering `invite` with
    /// a 2xx carrying `local_tag`.
    pub fn new_uas(invite: &rsip::Request, local_tag: &str, seq: u32) -> Result<Self, DialogError> {
        let call_id = invite
            .call_id_header()
            .map_err(|_| DialogError::MissingHeader("Call-ID"))?
            .value()
            .trim()
            .to_string();
        let from = invite
            .from_header()
            .map_err(|_| DialogError::MissingHeader("From"))?
            .value()
            .to_string();
        let to = invite
            .to_header()
            .map_err(|_| DialogError::MissingHeader("To"))?
            .value()
            .to_string();
        let contact = invite
            .contact_header()
            .map_err(|_| DialogError::MissingContact)?
            .value()
            .to_string();
        let route_set = invite
            .headers
            .iter()
            .filter_map(|h| match h {
                Header::RecordRoute(r) => Some(r.value().to_string()),
                _ => None,
            })
            .collect();
        let local_header = if param_value(&to, "tag").is_some() {
            to
        } else {
            format!("{to};tag={local_tag}")
        };
        Ok(Self {
            id: DialogId {
                call_id,
                local_tag: local_tag.to_string(),
                remote_tag: tag_of(&from),
            },
            role: Role::Uas,
            local_seq: seq,
            remote_seq: invite.cseq_header().ok().and_then(|c| {
                c.value()
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
            }),
            local_header,
            remote_header: from,
            remote_target: uri_of(&contact).to_string(),
            route_set,
        })
    }

    /// RFC 3261 12.1.2: the dialog a UAC creates from a 2xx to its INVITE.
    pub fn new_uac(invite: &rsip::Request, response: &rsip::Response) -> Result<Self, DialogError> {
        let call_id = invite
            .call_id_header()
            .map_err(|_| DialogError::MissingHeader("Call-ID"))?
            .value()
            .trim()
            .to_string();
        let from = invite
            .from_header()
            .map_err(|_| DialogError::MissingHeader("From"))?
            .value()
            .to_string();
        let to = response
            .to_header()
            .map_err(|_| DialogError::MissingHeader("To"))?
            .value()
            .to_string();
        let contact = response
            .contact_header()
            .map_err(|_| DialogError::MissingContact)?
            .value()
            .to_string();
        // The UAC's route set is the Record-Route of the response, reversed.
        let mut route_set: Vec<String> = response
            .headers
            .iter()
            .filter_map(|h| match h {
                Header::RecordRoute(r) => Some(r.value().to_string()),
                _ => None,
            })
            .collect();
        route_set.reverse();
        let seq = invite
            .cseq_header()
            .ok()
            .and_then(|c| {
                c.value()
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(1);
        Ok(Self {
            id: DialogId {
                call_id,
                local_tag: tag_of(&from),
                remote_tag: tag_of(&to),
            },
            role: Role::Uac,
            local_seq: seq,
            remote_seq: None,
            local_header: from,
            remote_header: to,
            remote_target: uri_of(&contact).to_string(),
            route_set,
        })
    }

    /// RFC 3261 12.2.2: accepts the CSeq of an in-dialog request; false when
    /// it is lower than one already seen (answer 500).
    pub fn accept_remote_seq(&mut self, seq: u32) -> bool {
        match self.remote_seq {
            Some(prev) if seq < prev => false,
            _ => {
                self.remote_seq = Some(seq);
                true
            }
        }
    }

    /// RFC 3261 12.2.1.1: builds an in-dialog request. `via` is the full Via
    /// value (with a fresh branch) and `contact` our Contact value. CSeq is
    /// incremented except for ACK, which reuses the INVITE's number (`ack_seq`).
    pub fn request(
        &mut self,
        method: rsip::Method,
        via: String,
        contact: &str,
        ack_seq: Option<u32>,
    ) -> rsip::Request {
        let seq = match (method, ack_seq) {
            (rsip::Method::Ack, Some(n)) => n,
            _ => {
                self.local_seq = self.local_seq.wrapping_add(1);
                self.local_seq
            }
        };
        let (uri, routes) = self.target_and_routes();
        let mut headers = rsip::Headers::default();
        headers.push(Header::Via(rsip::headers::Via::new(via)));
        headers.push(Header::MaxForwards(rsip::headers::MaxForwards::new("70")));
        for r in routes {
            headers.push(Header::Route(rsip::headers::Route::new(r)));
        }
        headers.push(Header::From(rsip::headers::From::new(
            self.local_header.clone(),
        )));
        headers.push(Header::To(rsip::headers::To::new(
            self.remote_header.clone(),
        )));
        headers.push(Header::CallId(rsip::headers::CallId::new(
            self.id.call_id.clone(),
        )));
        headers.push(Header::CSeq(rsip::headers::CSeq::new(format!(
            "{seq} {method}"
        ))));
        if !matches!(method, rsip::Method::Ack | rsip::Method::Bye) {
            headers.push(Header::Contact(rsip::headers::Contact::new(contact)));
        }
        let uri = rsip::Uri::try_from(uri.as_str())
            .unwrap_or_else(|_| rsip::Uri::try_from("sip:invalid").expect("static URI parses"));
        rsip::Request {
            method,
            uri,
            version: rsip::Version::V2,
            headers,
            body: Vec::new(),
        }
    }

    /// RFC 3261 12.2.1.1 / 16.12.1.1: with a loose first route (`;lr`) the
    /// Request-URI is the remote target and all routes are kept; with a
    /// strict first route, it becomes the Request-URI and the remote target
    /// is appended as the last route.
    fn target_and_routes(&self) -> (String, Vec<String>) {
        match self.route_set.first() {
            None => (self.remote_target.clone(), Vec::new()),
            Some(first) if uri_of(first).contains(";lr") => {
                (self.remote_target.clone(), self.route_set.clone())
            }
            Some(first) => {
                let mut routes: Vec<String> = self.route_set[1..].to_vec();
                routes.push(format!("<{}>", self.remote_target));
                (uri_of(first).to_string(), routes)
            }
        }
    }

    /// The address in-dialog requests are sent to: the first route when
    /// present, else the remote target, when its host is an IP literal.
    /// Host names would need RFC 3263 resolution, which the caller does.
    pub fn next_hop(&self) -> Option<SocketAddr> {
        let uri = match self.route_set.first() {
            Some(r) => uri_of(r).to_string(),
            None => self.remote_target.clone(),
        };
        host_port_of_uri(&uri)
    }
}

/// `sip:user@1.2.3.4:5070;transport=tcp` -> 1.2.3.4:5070 (5060 by default).
pub fn host_port_of_uri(uri: &str) -> Option<SocketAddr> {
    let rest = uri
        .strip_prefix("sips:")
        .or_else(|| uri.strip_prefix("sip:"))
        .unwrap_or(uri);
    let hostport = rest.rsplit('@').next()?;
    let hostport = hostport.split([';', '?']).next()?;
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let ip: IpAddr = host.parse().ok()?;
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => 5060,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{parse, response_to};

    const INVITE: &str = "INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1\r\n\
Record-Route: <sip:10.0.0.1;lr>\r\n\
Record-Route: <sip:10.0.0.2;lr>\r\n\
From: sipp <sip:sipp@127.0.0.1:5061>;tag=rem\r\n\
To: <sip:service@127.0.0.1:5060>\r\n\
Call-ID: c@x\r\n\
CSeq: 5 INVITE\r\n\
Contact: <sip:sipp@127.0.0.1:5061;transport=udp>\r\n\
Max-Forwards: 70\r\n\
Content-Length: 0\r\n\r\n";

    fn invite() -> rsip::Request {
        match parse(INVITE.as_bytes()).unwrap() {
            rsip::SipMessage::Request(r) => r,
            _ => unreachable!(),
        }
    }

    #[test]
    fn uas_dialog_bye_carries_routes_tags_and_cseq() {
        let mut d = Dialog::new_uas(&invite(), "loc", 100).unwrap();
        assert_eq!(d.id.remote_tag, "rem");
        assert_eq!(d.remote_target, "sip:sipp@127.0.0.1:5061;transport=udp");
        assert_eq!(d.next_hop(), Some("10.0.0.1:5060".parse().unwrap()));
        let bye = d.request(
            rsip::Method::Bye,
            "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKb".into(),
            "<sip:vg@127.0.0.1>",
            None,
        );
        let text = bye.to_string();
        // rsip prints the transport parameter in upper case.
        assert!(text.starts_with("BYE sip:sipp@127.0.0.1:5061;transport=UDP SIP/2.0"));
        assert!(text.contains("Route: <sip:10.0.0.1;lr>\r\nRoute: <sip:10.0.0.2;lr>"));
        assert!(text.contains("From: <sip:service@127.0.0.1:5060>;tag=loc"));
        assert!(text.contains("To: sipp <sip:sipp@127.0.0.1:5061>;tag=rem"));
        assert!(text.contains("CSeq: 101 BYE"));
        assert!(parse(text.as_bytes()).is_ok());
    }

    #[test]
    fn uac_dialog_reverses_record_route_and_remote_seq_rule() {
        let inv = invite();
        let mut resp = response_to(&inv, 200, "", Some("peer"));
        resp.headers
            .push(Header::Contact(rsip::headers::Contact::new(
                "<sip:b@127.0.0.1:6000>",
            )));
        resp.headers
            .push(Header::RecordRoute(rsip::headers::RecordRoute::new(
                "<sip:10.0.0.2;lr>",
            )));
        resp.headers
            .push(Header::RecordRoute(rsip::headers::RecordRoute::new(
                "<sip:10.0.0.1;lr>",
            )));
        let mut d = Dialog::new_uac(&inv, &resp).unwrap();
        assert_eq!(d.id.local_tag, "rem");
        assert_eq!(d.id.remote_tag, "peer");
        assert_eq!(d.route_set[0], "<sip:10.0.0.1;lr>");
        assert!(d.accept_remote_seq(3));
        assert!(d.accept_remote_seq(3));
        assert!(!d.accept_remote_seq(2));
        let ack = d.request(
            rsip::Method::Ack,
            "SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKa".into(),
            "<sip:x@127.0.0.1>",
            Some(5),
        );
        assert!(ack.to_string().contains("CSeq: 5 ACK"));
    }

    #[test]
    fn strict_route_becomes_request_uri() {
        let mut d = Dialog::new_uas(&invite(), "loc", 1).unwrap();
        d.route_set = vec!["<sip:10.0.0.9>".into()];
        let req = d.request(
            rsip::Method::Bye,
            "SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKs".into(),
            "<sip:x@127.0.0.1>",
            None,
        );
        let text = req.to_string();
        assert!(text.starts_with("BYE sip:10.0.0.9 SIP/2.0"), "{text}");
        assert!(
            text.contains("Route: <sip:sipp@127.0.0.1:5061;transport=udp>"),
            "{text}"
        );
    }

    #[test]
    fn host_port_parsing() {
        assert_eq!(
            host_port_of_uri("sip:a@[::1]:5070;transport=tcp"),
            Some("[::1]:5070".parse().unwrap())
        );
        assert_eq!(host_port_of_uri("sip:example.com"), None);
        assert_eq!(
            host_port_of_uri("sip:127.0.0.1"),
            Some("127.0.0.1:5060".parse().unwrap())
        );
    }
}
