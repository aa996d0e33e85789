//! Session timers (RFC 4028): the `Session-Expires` / `Min-SE` header
//! fields and the per-dialog timer the endpoint runs.
//!
//! The refresher sends a session refresh (a re-INVITE offering the same
//! session description) half-way through the interval; the other side, when
//! no refresh came, sends BYE `min(32 s, interval/3)` before the interval
//! ends (RFC 4028 10). Every successful re-INVITE in the dialog restarts the
//! interval with the values its 2xx carried.

use std::time::{Duration, Instant};

/// The RFC 4028 4 floor for Min-SE.
pub const MIN_SE_FLOOR: Duration = Duration::from_secs(90);

/// Which side refreshes the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    /// The UAC of the transaction that set the interval.
    Uac,
    /// The UAS of that transaction.
    Uas,
}

impl Refresher {
    /// The parameter value.
    pub fn token(self) -> &'static str {
        match self {
            Self::Uac => "uac",
            Self::Uas => "uas",
        }
    }
}

/// A parsed `Session-Expires` value: `delta-seconds [;refresher=uac|uas]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExpires {
    /// The session interval.
    pub interval: Duration,
    /// The refresher parameter, when present.
    pub refresher: Option<Refresher>,
}

impl SessionExpires {
    /// Parses a header value; None when malformed.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.split(';');
        let secs: u64 = parts.next()?.trim().parse().ok()?;
        if secs == 0 {
            return None;
        }
        let mut refresher = None;
        for p in parts {
            if let Some((k, v)) = p.split_once('=')
                && k.trim().eq_ignore_ascii_case("refresher")
            {
                refresher = match v.trim().to_ascii_lowercase().as_str() {
                    "uac" => Some(Refresher::Uac),
                    "uas" => Some(Refresher::Uas),
                    _ => None,
                };
            }
        }
        Some(Self {
            interval: Duration::from_secs(secs),
            refresher,
        })
    }

    /// Prints the header value.
    pub fn to_header_value(&self) -> String {
        match self.refresher {
            Some(r) => format!("{};refresher={}", self.interval.as_secs(), r.token()),
            None => self.interval.as_secs().to_string(),
        }
    }
}

/// A `Min-SE` value (`delta-seconds`, parameters ignored).
pub fn parse_min_se(value: &str) -> Option<Duration> {
    value
        .split(';')
        .next()?
        .trim()
        .parse()
        .ok()
        .map(Duration::from_secs)
}

/// The timer of one dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimer {
    /// The negotiated interval.
    pub interval: Duration,
    /// Whether we send the refreshes.
    pub we_refresh: bool,
    /// When the current interval started (the last successful refresh).
    pub started: Instant,
    /// A failed refresh is tried again at this time (refresher only).
    pub retry_at: Option<Instant>,
}

impl SessionTimer {
    /// When we must act: send a refresh (refresher) or give up on the
    /// peer's (RFC 4028 10: BYE `min(32 s, interval/3)` before expiry).
    pub fn deadline(&self) -> Instant {
        if self.we_refresh {
            self.retry_at.unwrap_or(self.started + self.interval / 2)
        } else {
            let slack = Duration::from_secs(32).min(self.interval / 3);
            self.started + self.interval - slack
        }
    }
}

/// The `o=` line of an SDP body: an offer repeating the previous one's
/// origin (same session version) changes nothing (RFC 3264 8).
pub fn sdp_origin(body: &[u8]) -> Option<String> {
    std::str::from_utf8(body)
        .ok()?
        .lines()
        .find(|l| l.starts_with("o="))
        .map(|l| l.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        let se = SessionExpires::parse("1800;refresher=UAS").unwrap();
        assert_eq!(se.interval, Duration::from_secs(1800));
        assert_eq!(se.refresher, Some(Refresher::Uas));
        assert_eq!(se.to_header_value(), "1800;refresher=uas");
        assert_eq!(SessionExpires::parse(" 90 ").unwrap().refresher, None);
        for bad in ["", "x", "0", "-5;refresher=uac"] {
            assert_eq!(SessionExpires::parse(bad), None, "{bad}");
        }
        assert_eq!(parse_min_se("120;x=y"), Some(Duration::from_secs(120)));
    }

    #[test]
    fn deadlines() {
        let t0 = Instant::now();
        let mut t = SessionTimer {
            interval: Duration::from_secs(90),
            we_refresh: true,
            started: t0,
            retry_at: None,
        };
        assert_eq!(t.deadline(), t0 + Duration::from_secs(45));
        t.we_refresh = false;
        assert_eq!(t.deadline(), t0 + Duration::from_secs(60));
        t.interval = Duration::from_secs(1800);
        assert_eq!(t.deadline(), t0 + Duration::from_secs(1768));
    }

    #[test]
    fn origin_line() {
        assert_eq!(
            sdp_origin(b"v=0\r\no=- 1 2 IN IP4 1.2.3.4\r\ns=-\r\n").as_deref(),
            Some("o=- 1 2 IN IP4 1.2.3.4")
        );
        assert_eq!(sdp_origin(b"\xff"), None);
    }
}
