//! The REGISTER client (RFC 3261 10.2), sans-IO: one [`Registration`] per
//! binding of our Contact at a registrar.
//!
//! The machine decides what to send and when; the [`crate::endpoint::Endpoint`]
//! owns the client non-INVITE transactions that carry each REGISTER and feeds
//! their final responses (or timeouts) back. The rules:
//!
//! - One Call-ID and From tag for the life of the registration, CSeq
//!   incremented on every REGISTER (RFC 3261 10.2.4).
//! - 401/407: answered with digest credentials ([`ClientAuth`]); a realm
//!   challenged again without `stale=true` is a failure.
//! - 2xx: registered until the expiry the registrar granted (our Contact's
//!   `expires` parameter, else the Expires header, else what we asked for);
//!   refreshed at the later of half that time and [`REFRESH_MARGIN`] before
//!   it runs out.
//! - 423 Interval Too Brief: asked again at once with the Min-Expires value.
//! - Any other failure (final error, timer F, transport error): retried with
//!   exponential backoff from `retry_min` capped at `retry_max` (Retry-After
//!   honoured when present).
//! - Unregister: REGISTER with `Expires: 0`; the registration ends on its
//!   final response or timeout.

use std::time::{Duration, Instant};

use rsip::Header;
use rsip::headers::UntypedHeader;

use crate::auth::{ClientAuth, Credentials};
use crate::endpoint::Peer;
use crate::message::{header_values, param_value};

/// How long before the granted expiry a refresh is sent (at most; never
/// earlier than half the expiry).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// A registration, as numbered by the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistrationId(pub u64);

impl std::fmt::Display for RegistrationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "registration-{}", self.0)
    }
}

/// What to register where.
#[derive(Debug, Clone)]
pub struct RegistrationConfig {
    /// The registrar's Request-URI (`sip:trunk.example.com`).
    pub registrar: String,
    /// The address-of-record, put in From and To (`sip:1001@trunk.example.com`).
    pub aor: String,
    /// Where REGISTERs are sent.
    pub peer: Peer,
    /// Digest credentials for 401/407 challenges.
    pub credentials: Option<Credentials>,
    /// The expiry asked for.
    pub expires: Duration,
    /// User part of the registered Contact (the endpoint's contact user when
    /// None).
    pub contact_user: Option<String>,
    /// First retry delay after a failure.
    pub retry_min: Duration,
    /// Largest retry delay.
    pub retry_max: Duration,
}

impl RegistrationConfig {
    /// A registration of `aor` at `registrar` through `peer`, one hour,
    /// retrying from 5 s up to 5 min.
    pub fn new(registrar: impl Into<String>, aor: impl Into<String>, peer: Peer) -> Self {
        Self {
            registrar: registrar.into(),
            aor: aor.into(),
            peer,
            credentials: None,
            expires: Duration::from_secs(3600),
            contact_user: None,
            retry_min: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
        }
    }
}

/// Where a registration stands; every change is reported as
/// [`crate::endpoint::Event::Registration`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    /// A REGISTER is out (first one, or a retry after a failure).
    Registering,
    /// The registrar accepted the binding.
    Registered {
        /// The expiry granted.
        expires: Duration,
        /// When the binding lapses unless refreshed.
        expires_at: Instant,
        /// When the refresh will be sent.
        refresh_at: Instant,
    },
    /// The last attempt failed; another follows at `retry_at`.
    Failed {
        /// Final status code (None: no response, or authentication gave up
        /// before sending).
        status: Option<u16>,
        /// Reason phrase, or what went wrong.
        reason: String,
        /// When the next attempt goes out.
        retry_at: Instant,
    },
    /// Unregister (Expires: 0) sent.
    Unregistering,
    /// The binding is removed (or the unregister got no answer); the
    /// registration is gone.
    Unregistered {
        /// Final status of the unregister (None on timeout).
        status: Option<u16>,
    },
}

impl RegistrationState {
    /// A short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Registering => "registering",
            Self::Registered { .. } => "registered",
            Self::Failed { .. } => "failed",
            Self::Unregistering => "unregistering",
            Self::Unregistered { .. } => "unregistered",
        }
    }
}

/// What the endpoint does after feeding a response to a [`Registration`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Send [`Registration::request`] now (challenge answered, 423).
    SendNow,
    /// Wait for [`Registration::deadline`] (refresh or retry).
    Wait,
    /// The registration is over; drop it.
    Done,
}

/// One registration's state machine.
#[derive(Debug)]
pub struct Registration {
    cfg: RegistrationConfig,
    call_id: String,
    from_tag: String,
    cseq: u32,
    auth: Option<ClientAuth>,
    /// The expiry to ask for next (raised by 423).
    asking: Duration,
    state: RegistrationState,
    /// When to send the next REGISTER (refresh or retry).
    deadline: Option<Instant>,
    /// Failures in a row, for the backoff.
    failures: u32,
    /// The request in flight is an unregister.
    unregistering: bool,
    /// An unregister was asked while a REGISTER was in flight.
    unregister_pending: bool,
    /// The state last reported to the user.
    reported: Option<RegistrationState>,
}

impl Registration {
    /// A registration not yet sent; `call_id` and `from_tag` come from the
    /// endpoint's random source.
    pub(crate) fn new(cfg: RegistrationConfig, call_id: String, from_tag: String) -> Self {
        let auth = cfg.credentials.clone().map(ClientAuth::new);
        let asking = cfg.expires;
        Self {
            cfg,
            call_id,
            from_tag,
            cseq: 0,
            auth,
            asking,
            state: RegistrationState::Registering,
            deadline: None,
            failures: 0,
            unregistering: false,
            unregister_pending: false,
            reported: None,
        }
    }

    /// The settings.
    pub fn config(&self) -> &RegistrationConfig {
        &self.cfg
    }

    /// Current state.
    pub fn state(&self) -> &RegistrationState {
        &self.state
    }

    /// The state, when it differs from the one last reported.
    pub(crate) fn take_change(&mut self) -> Option<RegistrationState> {
        if self.reported.as_ref() == Some(&self.state) {
            return None;
        }
        self.reported = Some(self.state.clone());
        Some(self.state.clone())
    }

    /// When the next REGISTER is due (None while one is in flight).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The contact user this registration binds.
    pub(crate) fn contact_user(&self) -> Option<&str> {
        self.cfg.contact_user.as_deref()
    }

    /// Builds the next REGISTER (`fresh`: a new request rather than the
    /// same one re-sent with credentials). `via` carries a new branch;
    /// `contact` is the bare Contact URI in angle brackets.
    pub(crate) fn request(
        &mut self,
        via: String,
        contact: &str,
        user_agent: &str,
        fresh: bool,
        cnonce: &mut dyn FnMut() -> String,
    ) -> rsip::Request {
        self.deadline = None;
        self.cseq += 1;
        if fresh && let Some(a) = self.auth.as_mut() {
            a.new_request();
        }
        let expires = if self.unregistering {
            0
        } else {
            self.asking.as_secs()
        };
        let mut headers = rsip::Headers::default();
        headers.push(Header::Via(rsip::headers::Via::new(via)));
        headers.push(Header::MaxForwards(rsip::headers::MaxForwards::new("70")));
        headers.push(Header::From(rsip::headers::From::new(format!(
            "<{}>;tag={}",
            self.cfg.aor, self.from_tag
        ))));
        headers.push(Header::To(rsip::headers::To::new(format!(
            "<{}>",
            self.cfg.aor
        ))));
        headers.push(Header::CallId(rsip::headers::CallId::new(
            self.call_id.clone(),
        )));
        headers.push(Header::CSeq(rsip::headers::CSeq::new(format!(
            "{} REGISTER",
            self.cseq
        ))));
        headers.push(Header::Contact(rsip::headers::Contact::new(contact)));
        headers.push(Header::Expires(rsip::headers::Expires::new(
            expires.to_string(),
        )));
        headers.push(Header::UserAgent(rsip::headers::UserAgent::new(user_agent)));
        let uri = rsip::Uri::try_from(self.cfg.registrar.as_str())
            .unwrap_or_else(|_| rsip::Uri::try_from("sip:invalid").expect("static URI parses"));
        let mut req = rsip::Request {
            method: rsip::Method::Register,
            uri,
            version: rsip::Version::V2,
            headers,
            body: Vec::new(),
        };
        if let Some(a) = self.auth.as_mut() {
            // RFC 3261 22.3: credentials for a realm are reused preemptively
            // (with the next nonce count) once challenged.
            a.apply(&mut req, cnonce);
        }
        req
    }

    /// Starts the first REGISTER (state Registering).
    pub(crate) fn start(&mut self, now: Instant) {
        self.deadline = Some(now);
    }

    /// Asks for the binding to be removed: at once when idle, after the
    /// response when a REGISTER is in flight. False when nothing is
    /// registered or pending, and the registration can be dropped at once.
    pub(crate) fn unregister(&mut self, now: Instant) -> bool {
        if self.unregistering {
            return true;
        }
        let in_flight = self.deadline.is_none();
        let bound = matches!(self.state, RegistrationState::Registered { .. });
        if in_flight {
            self.unregister_pending = true;
            return true;
        }
        if !bound {
            return false;
        }
        self.unregistering = true;
        self.deadline = Some(now);
        true
    }

    /// Marks the request about to be sent (changes state for a retry).
    pub(crate) fn sending(&mut self) {
        if self.unregistering {
            self.state = RegistrationState::Unregistering;
        } else if matches!(self.state, RegistrationState::Failed { .. }) {
            self.state = RegistrationState::Registering;
        }
    }

    fn backoff(&self) -> Duration {
        let shift = self.failures.saturating_sub(1).min(16);
        self.cfg
            .retry_min
            .saturating_mul(1 << shift)
            .min(self.cfg.retry_max)
    }

    fn fail(
        &mut self,
        status: Option<u16>,
        reason: String,
        retry_after: Option<Duration>,
        now: Instant,
    ) -> Next {
        if self.unregistering {
            self.state = RegistrationState::Unregistered { status };
            return Next::Done;
        }
        if self.unregister_pending {
            // A refresh failed while shutting down: remove whatever binding
            // may remain, unless the registrar is not answering at all.
            if status.is_none() {
                self.state = RegistrationState::Unregistered { status: None };
                return Next::Done;
            }
            self.unregistering = true;
            self.state = RegistrationState::Unregistering;
            return Next::SendNow;
        }
        self.failures += 1;
        let retry_at = now
            + retry_after
                .unwrap_or_else(|| self.backoff())
                .max(Duration::from_secs(1));
        tracing::info!(aor = %self.cfg.aor, ?status, %reason, "registration failed");
        self.state = RegistrationState::Failed {
            status,
            reason,
            retry_at,
        };
        self.deadline = Some(retry_at);
        Next::Wait
    }

    /// Timer F or a transport error on the REGISTER in flight.
    pub(crate) fn on_no_response(&mut self, now: Instant) -> Next {
        self.fail(None, "no response".to_string(), None, now)
    }

    /// A final response to the REGISTER in flight. `contact_uri` is our
    /// registered Contact URI, to find our binding among those listed.
    pub(crate) fn on_final(
        &mut self,
        resp: &rsip::Response,
        contact_uri: &str,
        now: Instant,
    ) -> Next {
        let code = resp.status_code.code();
        let reason = crate::endpoint::reason_phrase(resp);
        match code {
            200..=299 => {
                if self.unregistering || self.unregister_pending {
                    if self.unregister_pending && !self.unregistering {
                        // Registered meanwhile: now remove the binding.
                        self.unregistering = true;
                        self.state = RegistrationState::Unregistering;
                        return Next::SendNow;
                    }
                    self.state = RegistrationState::Unregistered { status: Some(code) };
                    return Next::Done;
                }
                self.failures = 0;
                let granted = granted_expiry(resp, contact_uri).unwrap_or(self.asking);
                if granted.is_zero() {
                    return self.fail(Some(code), "registrar granted no expiry".into(), None, now);
                }
                let refresh_in = (granted / 2).max(granted.saturating_sub(REFRESH_MARGIN));
                let refresh_at = now + refresh_in;
                self.state = RegistrationState::Registered {
                    expires: granted,
                    expires_at: now + granted,
                    refresh_at,
                };
                self.deadline = Some(refresh_at);
                Next::Wait
            }
            401 | 407 => {
                let Some(auth) = self.auth.as_mut() else {
                    return self.fail(Some(code), reason, None, now);
                };
                match auth.challenged(resp) {
                    Ok(()) => Next::SendNow,
                    Err(e) => self.fail(Some(code), format!("{reason} ({e})"), None, now),
                }
            }
            423 if !self.unregistering => {
                let min = header_values(&resp.headers, "Min-Expires")
                    .first()
                    .and_then(|v| v.trim().parse::<u64>().ok());
                match min {
                    Some(m) if Duration::from_secs(m) > self.asking => {
                        self.asking = Duration::from_secs(m);
                        Next::SendNow
                    }
                    _ => self.fail(Some(code), reason, None, now),
                }
            }
            _ => {
                let retry_after = header_values(&resp.headers, "Retry-After")
                    .first()
                    .and_then(|v| v.split([';', '(']).next())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                self.fail(Some(code), reason, retry_after, now)
            }
        }
    }
}

/// The expiry a 2xx to REGISTER grants our binding: the `expires`
/// parameter of the Contact matching ours, else the Expires header.
fn granted_expiry(resp: &rsip::Response, contact_uri: &str) -> Option<Duration> {
    let ours = normalize(contact_uri);
    let from_contact = resp.headers.iter().find_map(|h| match h {
        Header::Contact(c) => {
            let v = c.value();
            if normalize(crate::dialog::uri_of(v)) == ours {
                param_value(v, "expires").and_then(|e| e.trim().parse::<u64>().ok())
            } else {
                None
            }
        }
        _ => None,
    });
    from_contact
        .or_else(|| {
            resp.headers.iter().find_map(|h| match h {
                Header::Expires(e) => e.value().trim().parse().ok(),
                _ => None,
            })
        })
        .map(Duration::from_secs)
}

/// A URI reduced for comparison: scheme, user and host:port, lower-cased.
fn normalize(uri: &str) -> String {
    uri.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .split(';')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}
