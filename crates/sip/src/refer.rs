//! Call transfer with REFER (RFC 3515): the events the endpoint reports for
//! both roles, and the `message/sipfrag` bodies (RFC 3420) NOTIFYs carry.
//!
//! Transferor (we send REFER with [`crate::endpoint::Endpoint::refer`]): the
//! REFER's final response comes as [`ReferEvent::Accepted`] or
//! [`ReferEvent::Failed`]; each NOTIFY of the implicit subscription (Event:
//! refer) is answered 200 and comes as [`ReferEvent::Notify`] with the status
//! line of its sipfrag, until one says `Subscription-State: terminated`.
//!
//! Transferee (the peer sends us REFER): it is answered 202 and an initial
//! NOTIFY "100 Trying" is sent (RFC 3515 2.4.4); it comes as
//! [`ReferEvent::Incoming`], and the application reports the outcome of the
//! referenced call with [`crate::endpoint::Endpoint::notify`].
//!
//! RFC 4488 (`Refer-Sub: false`) and multiple REFERs per dialog with distinct
//! `id` parameters are not distinguished: every NOTIFY with Event `refer` in
//! the dialog is reported.

use crate::endpoint::CallHandle;

/// A REFER or NOTIFY happening in a call's dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferEvent {
    /// Our REFER was accepted (202, or another 2xx).
    Accepted {
        /// The call.
        call: CallHandle,
        /// The status code.
        status: u16,
    },
    /// Our REFER was refused (a final non-2xx) or got no answer.
    Failed {
        /// The call.
        call: CallHandle,
        /// Final status code; None on timeout or transport failure.
        status: Option<u16>,
        /// Reason phrase, or what went wrong.
        reason: String,
    },
    /// A NOTIFY about our REFER's progress (answered 200).
    Notify {
        /// The call.
        call: CallHandle,
        /// Status code of the sipfrag's status line (None: unreadable body).
        status: Option<u16>,
        /// Reason phrase of the sipfrag.
        reason: String,
        /// `Subscription-State: terminated`: no NOTIFY follows.
        terminated: bool,
    },
    /// The peer asks us to call `refer_to` (answered 202, NOTIFY 100 sent).
    Incoming {
        /// The call.
        call: CallHandle,
        /// The Refer-To value (name-addr as sent, e.g. `<sip:+1555@trunk>`).
        refer_to: String,
        /// The Referred-By value, if any.
        referred_by: Option<String>,
    },
}

/// Reads the status line of a `message/sipfrag` body (RFC 3420), e.g.
/// `SIP/2.0 200 OK`: the code and reason phrase.
pub fn parse_sipfrag(body: &[u8]) -> Option<(u16, String)> {
    let text = std::str::from_utf8(body).ok()?;
    let line = text.trim_start_matches(['\r', '\n']).lines().next()?;
    let rest = line.strip_prefix("SIP/2.0 ")?;
    let (code, reason) = match rest.split_once(' ') {
        Some((c, r)) => (c, r.trim()),
        None => (rest.trim(), ""),
    };
    if code.len() != 3 {
        return None;
    }
    let code: u16 = code.parse().ok()?;
    (100..=699)
        .contains(&code)
        .then(|| (code, crate::message::sanitize_reason(reason)))
}

/// The sipfrag body reporting `status` (RFC 3515 2.4.5).
pub fn sipfrag(status: u16, reason: &str) -> Vec<u8> {
    let reason = if reason.is_empty() {
        default_reason(status)
    } else {
        reason
    };
    format!(
        "SIP/2.0 {status} {}\r\n",
        crate::message::sanitize_reason(reason)
    )
    .into_bytes()
}

/// A reason phrase for the codes a transfer usually reports.
pub fn default_reason(status: u16) -> &'static str {
    const KNOWN: &[(u16, &str)] = &[
        (100, "Trying"),
        (180, "Ringing"),
        (183, "Session Progress"),
        (200, "OK"),
        (202, "Accepted"),
        (400, "Bad Request"),
        (403, "Forbidden"),
        (404, "Not Found"),
        (408, "Request Timeout"),
        (480, "Temporarily Unavailable"),
        (486, "Busy Here"),
        (487, "Request Terminated"),
        (488, "Not Acceptable Here"),
        (500, "Server Internal Error"),
        (503, "Service Unavailable"),
        (603, "Decline"),
    ];
    if let Some((_, r)) = KNOWN.iter().find(|(c, _)| *c == status) {
        return r;
    }
    match status / 100 {
        1 => "Progress",
        2 => "OK",
        3 => "Redirected",
        4 => "Request Failure",
        5 => "Server Failure",
        _ => "Global Failure",
    }
}

/// Whether a Subscription-State value says the subscription is over.
pub fn is_terminated(subscription_state: &str) -> bool {
    subscription_state
        .split(';')
        .next()
        .is_some_and(|s| s.trim().eq_ignore_ascii_case("terminated"))
}

/// Whether an Event header value names the `refer` package (parameters
/// such as `id` ignored).
pub fn is_refer_event(event: &str) -> bool {
    event
        .split(';')
        .next()
        .is_some_and(|s| s.trim().eq_ignore_ascii_case("refer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sipfrag_round_trip_and_tolerance() {
        assert_eq!(parse_sipfrag(&sipfrag(200, "")), Some((200, "OK".into())));
        assert_eq!(
            parse_sipfrag(b"SIP/2.0 603 Declined\r\nContent-Length: 0\r\n\r\n"),
            Some((603, "Declined".into()))
        );
        assert_eq!(
            parse_sipfrag(b"\r\nSIP/2.0 100"),
            Some((100, String::new()))
        );
        for bad in [
            &b""[..],
            b"SIP/2.0",
            b"SIP/2.0 20 OK",
            b"SIP/2.0 999 Nope",
            b"HTTP/1.1 200 OK",
            b"\xff\xfe",
        ] {
            assert_eq!(parse_sipfrag(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn header_predicates() {
        assert!(is_terminated("terminated;reason=noresource"));
        assert!(is_terminated(" Terminated"));
        assert!(!is_terminated("active;expires=60"));
        assert!(is_refer_event("refer;id=93809824"));
        assert!(is_refer_event("REFER"));
        assert!(!is_refer_event("presence"));
    }
}
