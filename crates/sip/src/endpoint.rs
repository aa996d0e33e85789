//! The sans-IO SIP endpoint: transaction matching (RFC 3261 17.1.3, 17.2.3),
//! the UAS and UAC cores (8.2, 13, 15), dialogs, CANCEL, OPTIONS and the
//! error responses, over transactions from [`crate::transaction`].
//!
//! Drive it like the transactions: feed [`Endpoint::handle_input`],
//! [`Endpoint::handle_timeout`] and the commands (calls: [`Endpoint::ring`],
//! [`Endpoint::answer`], [`Endpoint::reject`], [`Endpoint::hangup`],
//! [`Endpoint::invite`] / [`Endpoint::invite_with_auth`]; re-INVITEs:
//! [`Endpoint::answer_reinvite`], [`Endpoint::reject_reinvite`]; transfer:
//! [`Endpoint::refer`], [`Endpoint::notify`]; registrations:
//! [`Endpoint::register`], [`Endpoint::unregister`]); after each, drain
//! [`Endpoint::poll_transmit`] and [`Endpoint::poll_event`] until both return
//! `None`, then sleep until [`Endpoint::poll_timeout`].
//!
//! The endpoint also runs the UAC side of digest authentication (401/407 to
//! our INVITEs and REGISTERs), RFC 4028 session timers when
//! [`EndpointConfig::session_expires`] is set, and REFER/NOTIFY in dialogs.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rsip::Header;
use rsip::headers::UntypedHeader;
use rsip::prelude::HeadersExt;

use crate::auth::{ClientAuth, Credentials};
use crate::dialog::{Dialog, DialogId, host_port_of_uri};
use crate::message::{
    self, ParseError, Summary, header_values, parse, response_destination, response_from_context,
    response_to, stamp_top_via, to_bytes,
};
use crate::refer::{ReferEvent, is_refer_event, is_terminated, parse_sipfrag, sipfrag};
use crate::register::{Next, Registration, RegistrationConfig, RegistrationId, RegistrationState};
use crate::session_timer::{
    MIN_SE_FLOOR, Refresher, SessionExpires, SessionTimer, parse_min_se, sdp_origin,
};
use crate::transaction::{
    ClientInvite, ClientKey, ClientNonInvite, ServerInvite, ServerKey, ServerNonInvite, State,
    Timers, TxEvent,
};

/// Methods this endpoint implements (the Allow header).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY";

/// A transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// RFC 768 datagrams: unreliable, retransmission timers run.
    Udp,
    /// A TCP stream: reliable, no retransmissions.
    Tcp,
}

impl TransportKind {
    /// Whether the transport is reliable (RFC 3261 17).
    pub fn reliable(self) -> bool {
        matches!(self, Self::Tcp)
    }

    /// The Via transport token.
    pub fn token(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
        }
    }
}

/// A TCP connection, as numbered by the transport driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId(pub u64);

/// Where a message came from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Transport protocol.
    pub transport: TransportKind,
    /// Remote socket address.
    pub addr: SocketAddr,
    /// The TCP connection to use, when one is known.
    pub connection: Option<ConnectionId>,
}

/// Bytes for the driver to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Transmit {
    /// Destination.
    pub peer: Peer,
    /// The serialized message.
    pub bytes: Bytes,
}

/// A call, as numbered by the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallHandle(pub u64);

impl std::fmt::Display for CallHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "call-{}", self.0)
    }
}

/// A new inbound INVITE, waiting for [`Endpoint::answer`] or
/// [`Endpoint::reject`].
#[derive(Debug, Clone)]
pub struct IncomingCall {
    /// The endpoint's handle.
    pub call: CallHandle,
    /// The SIP Call-ID.
    pub call_id: String,
    /// The Request-URI.
    pub request_uri: String,
    /// The user part of the Request-URI (the called number), if any.
    pub called_user: Option<String>,
    /// From header value.
    pub from: String,
    /// To header value.
    pub to: String,
    /// Content-Type of the body, if any.
    pub content_type: Option<String>,
    /// The body (normally an SDP offer).
    pub body: Vec<u8>,
    /// Where it came from.
    pub peer: Peer,
    /// The Authorization header value, if any: check it with
    /// [`crate::auth::Authorization::parse`] and `verify` (method INVITE)
    /// for digest access control; challenge with
    /// [`Endpoint::reject`] 401 and a `WWW-Authenticate` header.
    pub authorization: Option<String>,
}

/// Why a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The peer sent BYE.
    RemoteBye,
    /// We sent BYE; the final status of the BYE (None on timeout).
    LocalBye {
        /// Final status code of the BYE transaction.
        status: Option<u16>,
    },
    /// The caller sent CANCEL before we answered.
    Cancelled,
    /// No ACK for our 2xx within 64*T1 (RFC 3261 13.3.1.4); we sent BYE.
    AckTimeout,
    /// We rejected the call, or the peer rejected ours.
    Rejected {
        /// Final status code.
        status: u16,
        /// Reason phrase.
        reason: String,
        /// The Reason header of the final response (RFC 3326), e.g.
        /// `Q.850;cause=17;text="User busy"`, when the peer sent one.
        reason_header: Option<String>,
    },
    /// An outbound INVITE got no final response (timer B).
    Timeout,
    /// The transport failed.
    TransportError,
    /// The session timer ran out (RFC 4028 10): the peer stopped
    /// refreshing, or our refresh failed with 408/481 or timed out. We
    /// sent BYE.
    SessionExpired,
}

impl EndReason {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::RemoteBye => "remote_bye",
            Self::LocalBye { .. } => "local_bye",
            Self::Cancelled => "cancelled",
            Self::AckTimeout => "ack_timeout",
            Self::Rejected { .. } => "rejected",
            Self::Timeout => "timeout",
            Self::TransportError => "transport_error",
            Self::SessionExpired => "session_expired",
        }
    }
}

/// What the endpoint tells its user.
#[derive(Debug, Clone)]
pub enum Event {
    /// A new inbound call.
    IncomingCall(Box<IncomingCall>),
    /// Our 2xx was acknowledged: the call is up.
    CallConfirmed {
        /// The call.
        call: CallHandle,
    },
    /// A provisional response to our INVITE.
    CallProgress {
        /// The call.
        call: CallHandle,
        /// Status code (180, 183...).
        status: u16,
        /// Body (early media SDP), if any.
        body: Vec<u8>,
    },
    /// Our INVITE was answered (we have sent the ACK).
    CallAnswered {
        /// The call.
        call: CallHandle,
        /// The answer body (SDP).
        body: Vec<u8>,
    },
    /// The call is over.
    CallEnded {
        /// The call.
        call: CallHandle,
        /// Why.
        reason: EndReason,
    },
    /// The peer sent a re-INVITE with a new offer (hold, resume, codec
    /// change), when [`EndpointConfig::reinvite_to_app`] is set: answer it
    /// with [`Endpoint::answer_reinvite`] or [`Endpoint::reject_reinvite`].
    Reinvite {
        /// The call.
        call: CallHandle,
        /// Content-Type of the body, if any.
        content_type: Option<String>,
        /// The new offer (SDP).
        body: Vec<u8>,
    },
    /// A transfer happening in a call's dialog (see [`crate::refer`]).
    Refer(ReferEvent),
    /// A registration changed state (see [`crate::register`]).
    Registration {
        /// The registration.
        registration: RegistrationId,
        /// Its new state.
        state: RegistrationState,
    },
}

/// A call command could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No such call (already ended).
    #[error("no such call {0}")]
    NoSuchCall(CallHandle),
    /// The call is not in a state that allows this command.
    #[error("{0} is not in a state to {1}")]
    WrongState(CallHandle, &'static str),
    /// A URI given for an outbound call is invalid.
    #[error("invalid URI {0:?}")]
    InvalidUri(String),
    /// No such registration (already ended).
    #[error("no such registration {0}")]
    NoSuchRegistration(RegistrationId),
}

/// Endpoint settings.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// The address we put in Via and Contact (the bound SIP address, or the
    /// advertised one behind NAT).
    pub advertised: SocketAddr,
    /// User part of our Contact.
    pub contact_user: String,
    /// Server / User-Agent header value.
    pub user_agent: String,
    /// Timer values.
    pub timers: Timers,
    /// Option tags we support (Supported; anything else in Require gets 420).
    pub supported: Vec<String>,
    /// Hand re-INVITEs that change the session to the application as
    /// [`Event::Reinvite`] (answered with [`Endpoint::answer_reinvite`]).
    /// When false, or for an offer repeating the previous one (a refresh),
    /// the endpoint answers with the current local SDP itself.
    pub reinvite_to_app: bool,
    /// Session timers (RFC 4028): the interval we ask for and grant. None
    /// turns the extension off (Session-Expires is then ignored and
    /// `Require: timer` gets 420).
    pub session_expires: Option<Duration>,
    /// The smallest interval we accept (Min-SE). RFC 4028 4 sets a 90 s
    /// floor ([`MIN_SE_FLOOR`], the default); lower values are honoured
    /// for tests that want to watch refreshes happen.
    pub min_se: Duration,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            advertised: SocketAddr::from(([127, 0, 0, 1], 5060)),
            contact_user: "voicegate".to_string(),
            user_agent: concat!("voicegate/", env!("CARGO_PKG_VERSION")).to_string(),
            timers: Timers::default(),
            supported: Vec::new(),
            reinvite_to_app: false,
            session_expires: None,
            min_se: MIN_SE_FLOOR,
        }
    }
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages that failed to parse.
    pub malformed: u64,
    /// Malformed requests answered with an error response.
    pub malformed_answered: u64,
    /// Requests answered 481.
    pub no_such_transaction: u64,
    /// Stray ACKs and responses dropped.
    pub stray: u64,
}

enum ServerTx {
    Invite(ServerInvite),
    NonInvite(ServerNonInvite),
}

struct ServerEntry {
    key: ServerKey,
    tx: ServerTx,
    /// Where responses go (RFC 3261 18.2.2).
    dest: Peer,
    call: Option<CallHandle>,
}

enum ClientTx {
    Invite(ClientInvite),
    NonInvite(ClientNonInvite),
}

#[derive(Clone, Copy)]
enum Purpose {
    /// BYE for this call.
    Bye(CallHandle),
    /// Our INVITE for this call.
    Invite(CallHandle),
    /// CANCEL of our INVITE: the INVITE's own final response ends the call.
    Cancel,
    /// A REGISTER of this registration.
    Register(RegistrationId),
    /// Our REFER in this call.
    Refer(CallHandle),
    /// Our NOTIFY in this call (its outcome changes nothing).
    Notify,
    /// Our session refresh re-INVITE in this call.
    Reinvite(CallHandle),
}

struct ClientEntry {
    key: ClientKey,
    tx: ClientTx,
    peer: Peer,
    purpose: Purpose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    /// Inbound INVITE not answered yet.
    Incoming,
    /// 2xx sent, waiting for ACK; retransmitting the 2xx.
    Answered,
    /// Dialog confirmed.
    Confirmed,
    /// Our INVITE is out.
    Calling,
    /// BYE sent.
    Terminating,
}

struct Call {
    state: CallState,
    /// The INVITE (inbound or ours).
    invite: rsip::Request,
    /// The inbound INVITE's server transaction id.
    server_tx: Option<u64>,
    peer: Peer,
    local_tag: String,
    dialog: Option<Dialog>,
    /// Our 2xx while waiting for ACK (retransmitted by the UAS core).
    ok_bytes: Option<Bytes>,
    ok_interval: Duration,
    ok_next: Option<Instant>,
    ok_deadline: Option<Instant>,
    /// The last SDP we sent (answer or offer), reused for re-INVITEs.
    local_sdp: Vec<u8>,
    /// hangup() was asked before the ACK arrived (RFC 3261 15: no BYE before
    /// ACK or the 2xx timeout).
    bye_pending: bool,
    /// Digest state of our INVITE (outbound calls given credentials).
    auth: Option<ClientAuth>,
    /// CSeq of the INVITE whose 2xx `ok_bytes` holds (its ACK carries it).
    ok_seq: u32,
    /// The peer's re-INVITE waiting for the application's answer: its
    /// server transaction and the request.
    reinvite: Option<(u64, rsip::Request)>,
    /// Our refresh re-INVITE is out.
    refreshing: bool,
    /// The RFC 4028 timer, when one was negotiated.
    session: Option<SessionTimer>,
    /// The o= line of the peer's last session description.
    remote_origin: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Server(u64),
    Client(u64),
    Call(u64),
    Registration(u64),
}

/// The SIP endpoint core.
pub struct Endpoint {
    cfg: EndpointConfig,
    rng: SmallRng,
    next_id: u64,
    server: HashMap<u64, ServerEntry>,
    server_index: HashMap<ServerKey, u64>,
    client: HashMap<u64, ClientEntry>,
    client_index: HashMap<ClientKey, u64>,
    calls: HashMap<u64, Call>,
    registrations: HashMap<u64, Registration>,
    dialogs: HashMap<DialogId, u64>,
    timers: BinaryHeap<Reverse<(Instant, Slot)>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl Endpoint {
    /// Creates an endpoint; `seed` feeds branch, tag and Call-ID generation.
    pub fn new(cfg: EndpointConfig, seed: u64) -> Self {
        Self {
            cfg,
            rng: SmallRng::seed_from_u64(seed),
            next_id: 1,
            server: HashMap::new(),
            server_index: HashMap::new(),
            client: HashMap::new(),
            client_index: HashMap::new(),
            calls: HashMap::new(),
            registrations: HashMap::new(),
            dialogs: HashMap::new(),
            timers: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EndpointConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Live calls (for capacity checks and tests).
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// Live transactions (server, client).
    pub fn transaction_count(&self) -> (usize, usize) {
        (self.server.len(), self.client.len())
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn token(&mut self, len: usize) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        (0..len)
            .map(|_| HEX[self.rng.random_range(0..16)] as char)
            .collect()
    }

    fn via(&mut self, transport: TransportKind) -> String {
        let branch = self.token(16);
        format!(
            "SIP/2.0/{} {};branch={}{};rport",
            transport.token(),
            self.cfg.advertised,
            message::BRANCH_MAGIC_COOKIE,
            branch
        )
    }

    fn contact(&self, transport: TransportKind) -> String {
        match transport {
            TransportKind::Udp => {
                format!("<sip:{}@{}>", self.cfg.contact_user, self.cfg.advertised)
            }
            TransportKind::Tcp => format!(
                "<sip:{}@{};transport=tcp>",
                self.cfg.contact_user, self.cfg.advertised
            ),
        }
    }

    /// Next bytes to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event for the user.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, slot))) = self.timers.peek().copied() {
            if self.slot_deadline(slot) == Some(at) {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }

    fn slot_deadline(&self, slot: Slot) -> Option<Instant> {
        match slot {
            Slot::Server(id) => self.server.get(&id).and_then(|e| match &e.tx {
                ServerTx::Invite(t) => t.poll_timeout(),
                ServerTx::NonInvite(t) => t.poll_timeout(),
            }),
            Slot::Client(id) => self.client.get(&id).and_then(|e| match &e.tx {
                ClientTx::Invite(t) => t.poll_timeout(),
                ClientTx::NonInvite(t) => t.poll_timeout(),
            }),
            Slot::Call(id) => self.calls.get(&id).and_then(|c| {
                // The session timer waits while a re-INVITE is in progress.
                let session = c
                    .session
                    .filter(|_| {
                        c.state == CallState::Confirmed && !c.refreshing && c.reinvite.is_none()
                    })
                    .map(|t| t.deadline());
                [c.ok_next, c.ok_deadline, session]
                    .into_iter()
                    .flatten()
                    .min()
            }),
            Slot::Registration(id) => self.registrations.get(&id).and_then(|r| r.deadline()),
        }
    }

    fn schedule(&mut self, slot: Slot) {
        if let Some(at) = self.slot_deadline(slot) {
            self.timers.push(Reverse((at, slot)));
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, slot))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if self.slot_deadline(slot) != Some(at) {
                continue; // stale entry
            }
            match slot {
                Slot::Server(id) => {
                    if let Some(e) = self.server.get_mut(&id) {
                        match &mut e.tx {
                            ServerTx::Invite(t) => t.handle_timeout(now),
                            ServerTx::NonInvite(t) => t.handle_timeout(now),
                        }
                    }
                    self.service_server(id);
                }
                Slot::Client(id) => {
                    if let Some(e) = self.client.get_mut(&id) {
                        match &mut e.tx {
                            ClientTx::Invite(t) => t.handle_timeout(now),
                            ClientTx::NonInvite(t) => t.handle_timeout(now),
                        }
                    }
                    self.service_client(id, now);
                }
                Slot::Call(id) => self.call_timer(id, now),
                Slot::Registration(id) => self.send_register(id, true, now),
            }
        }
    }

    /// Feeds one message (a datagram, or one framed TCP message).
    pub fn handle_input(&mut self, peer: Peer, bytes: &[u8], now: Instant) {
        match parse(bytes) {
            Ok(rsip::SipMessage::Request(req)) => self.handle_request(req, peer, now),
            Ok(rsip::SipMessage::Response(mut resp)) => {
                keep_reason_phrase(&mut resp, bytes);
                self.handle_response(resp, now)
            }
            Err(e) => self.handle_malformed(e, peer),
        }
    }

    fn handle_malformed(&mut self, e: ParseError, peer: Peer) {
        self.stats.malformed += 1;
        metrics::counter!("voicegate_sip_malformed_total").increment(1);
        let Some(ctx) = &e.answerable else {
            tracing::debug!(peer = %peer.addr, reason = %e.reason, "dropped malformed SIP message");
            return;
        };
        // An ACK is never answered (RFC 3261 17.2.1: it has no response),
        // even a malformed one: found when a SIPp scenario sent an ACK with
        // an empty Request-URI and got a 400 back.
        if ctx
            .cseq
            .split_whitespace()
            .nth(1)
            .is_some_and(|m| m.eq_ignore_ascii_case("ACK"))
        {
            tracing::debug!(peer = %peer.addr, reason = %e.reason, "dropped malformed ACK");
            return;
        }
        // Answer without a transaction: a retransmission gets the same answer.
        let (code, reason) = e.status();
        tracing::debug!(peer = %peer.addr, code, reason = %reason, "rejected malformed request");
        let mut bytes = response_from_context(ctx, code, &reason);
        if code == 501 {
            // Advertise what we do implement.
            let text = String::from_utf8_lossy(&bytes).replacen(
                "Content-Length: 0\r\n",
                &format!("Allow: {ALLOW}\r\nContent-Length: 0\r\n"),
                1,
            );
            bytes = text.into_bytes();
        }
        self.stats.malformed_answered += 1;
        let dest = match peer.transport {
            TransportKind::Tcp => peer,
            TransportKind::Udp => {
                let sent_by = ctx
                    .vias
                    .first()
                    .and_then(|v| v.split_whitespace().nth(1))
                    .map(|s| s.split(';').next().unwrap_or(s))
                    .unwrap_or_default();
                let rport = ctx
                    .vias
                    .first()
                    .is_some_and(|v| message::param_value(v, "rport").is_some());
                let port = if rport {
                    peer.addr.port()
                } else {
                    message::sent_by_port(sent_by).unwrap_or(5060)
                };
                Peer {
                    addr: SocketAddr::new(peer.addr.ip(), port),
                    ..peer
                }
            }
        };
        self.transmits.push_back(Transmit {
            peer: dest,
            bytes: Bytes::from(bytes),
        });
    }

    fn response_peer(summary: &Summary, peer: Peer) -> Peer {
        match peer.transport {
            TransportKind::Tcp => peer,
            TransportKind::Udp => Peer {
                addr: response_destination(summary, peer.addr),
                ..peer
            },
        }
    }

    fn handle_request(&mut self, mut req: rsip::Request, peer: Peer, now: Instant) {
        let Some(summary) = Summary::of(&rsip::SipMessage::Request(req.clone())) else {
            return;
        };
        stamp_top_via(&mut req, peer.addr);
        let dest = Self::response_peer(&summary, peer);
        let key = ServerKey::of(&summary, req.method);

        if req.method == rsip::Method::Ack {
            if let Some(&id) = self.server_index.get(&key) {
                if let Some(ServerTx::Invite(t)) = self.server.get_mut(&id).map(|e| &mut e.tx) {
                    t.handle_request(req.clone(), now);
                }
                self.service_server(id);
                // An ACK matching an Accepted transaction is a 2xx ACK too.
            }
            self.ack_for_2xx(&summary, now);
            return;
        }

        if let Some(&id) = self.server_index.get(&key) {
            // A retransmission: the transaction answers it.
            if let Some(e) = self.server.get_mut(&id) {
                match &mut e.tx {
                    ServerTx::Invite(t) => t.handle_request(req, now),
                    ServerTx::NonInvite(t) => t.handle_request(req, now),
                }
            }
            self.service_server(id);
            return;
        }

        if req.method == rsip::Method::Cancel {
            self.handle_cancel(req, key, dest, now);
            return;
        }

        // Checks every new request goes through (RFC 3261 8.2.2, 16.3 step 3).
        let max_forwards = req
            .max_forwards_header()
            .ok()
            .and_then(|m| m.value().trim().parse::<u32>().ok());
        // OPTIONS with Max-Forwards 0 is addressed to this hop (RFC 3261 11).
        if max_forwards == Some(0) && req.method != rsip::Method::Options {
            self.respond_new(req, key, dest, 483, "Too Many Hops", Vec::new(), now);
            return;
        }
        let unsupported: Vec<String> = header_values(&req.headers, "Require")
            .iter()
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty() && !self.supports(t))
            .collect();
        if !unsupported.is_empty() {
            let extra = vec![Header::Unsupported(rsip::headers::Unsupported::new(
                unsupported.join(", "),
            ))];
            self.respond_new(req, key, dest, 420, "Bad Extension", extra, now);
            return;
        }

        if req.method == rsip::Method::Invite
            && self.cfg.session_expires.is_some()
            && session_expires_of(&req.headers).is_some_and(|se| se.interval < self.min_se())
        {
            // RFC 4028 8.1: too small an interval.
            let extra = vec![Header::Other(
                "Min-SE".into(),
                self.min_se().as_secs().to_string(),
            )];
            self.respond_new(
                req,
                key,
                dest,
                422,
                "Session Interval Too Small",
                extra,
                now,
            );
            return;
        }
        if !summary.to_tag.is_empty() {
            self.handle_in_dialog(req, &summary, key, dest, now);
            return;
        }

        match req.method {
            rsip::Method::Invite => self.new_invite(req, &summary, key, dest, peer, now),
            rsip::Method::Options => {
                let extra = self.capability_headers();
                self.respond_new(req, key, dest, 200, "", extra, now);
            }
            // A NOTIFY outside any subscription we know (RFC 6665 4.1.3).
            rsip::Method::Bye | rsip::Method::Notify => {
                self.stats.no_such_transaction += 1;
                self.respond_new(
                    req,
                    key,
                    dest,
                    481,
                    "Call/Transaction Does Not Exist",
                    Vec::new(),
                    now,
                );
            }
            // REFER is allowed, but only inside a call (RFC 3515 2.4.2
            // lets a UA refuse a REFER it will not act on).
            rsip::Method::Refer => {
                self.respond_new(
                    req,
                    key,
                    dest,
                    403,
                    "Out-of-dialog REFER Not Accepted",
                    Vec::new(),
                    now,
                );
            }
            _ => {
                let extra = vec![Header::Allow(rsip::headers::Allow::new(ALLOW))];
                self.respond_new(req, key, dest, 405, "Method Not Allowed", extra, now);
            }
        }
    }

    fn capability_headers(&self) -> Vec<Header> {
        vec![
            Header::Allow(rsip::headers::Allow::new(ALLOW)),
            Header::Accept(rsip::headers::Accept::new("application/sdp")),
            Header::Supported(rsip::headers::Supported::new(self.supported_value())),
            Header::Other("Accept-Encoding".into(), "identity".into()),
            Header::Other("Accept-Language".into(), "en".into()),
        ]
    }

    /// Creates a server transaction for a new request and sends one final
    /// response through it (so retransmissions are answered the same way).
    #[allow(clippy::too_many_arguments)]
    fn respond_new(
        &mut self,
        req: rsip::Request,
        key: ServerKey,
        dest: Peer,
        code: u16,
        reason: &str,
        extra: Vec<Header>,
        now: Instant,
    ) {
        let tag = self.token(12);
        let mut resp = response_to(&req, code, reason, Some(&tag));
        self.decorate(&mut resp, extra);
        let reliable = dest.transport.reliable();
        let timers = self.cfg.timers;
        let tx = if req.method == rsip::Method::Invite {
            let mut t = ServerInvite::new(req, reliable, timers);
            t.send_response(resp, now);
            ServerTx::Invite(t)
        } else {
            let mut t = ServerNonInvite::new(req, reliable, timers);
            t.send_response(resp, now);
            ServerTx::NonInvite(t)
        };
        let id = self.id();
        self.server_index.insert(key.clone(), id);
        self.server.insert(
            id,
            ServerEntry {
                key,
                tx,
                dest,
                call: None,
            },
        );
        self.service_server(id);
    }

    fn decorate(&self, resp: &mut rsip::Response, extra: Vec<Header>) {
        resp.headers.push(Header::Server(rsip::headers::Server::new(
            self.cfg.user_agent.clone(),
        )));
        for h in extra {
            resp.headers.push(h);
        }
    }

    fn new_invite(
        &mut self,
        req: rsip::Request,
        summary: &Summary,
        key: ServerKey,
        dest: Peer,
        peer: Peer,
        now: Instant,
    ) {
        let reliable = dest.transport.reliable();
        let mut tx = ServerInvite::new(req.clone(), reliable, self.cfg.timers);
        // 100 Trying at once (RFC 3261 17.2.1) stops the caller's timer A.
        tx.send_response(response_to(&req, 100, "", None), now);
        let tx_id = self.id();
        let call_id = self.id();
        self.server_index.insert(key.clone(), tx_id);
        self.server.insert(
            tx_id,
            ServerEntry {
                key,
                tx: ServerTx::Invite(tx),
                dest,
                call: Some(CallHandle(call_id)),
            },
        );
        self.service_server(tx_id);
        let local_tag = self.token(12);
        let request_uri = req.uri.to_string();
        let called_user = req.uri.auth.as_ref().map(|a| a.user.clone());
        let content_type = header_values(&req.headers, "Content-Type")
            .first()
            .map(|s| s.to_string());
        let incoming = IncomingCall {
            call: CallHandle(call_id),
            call_id: summary.call_id.clone(),
            request_uri,
            called_user,
            from: req
                .from_header()
                .map(|h| h.value().to_string())
                .unwrap_or_default(),
            to: req
                .to_header()
                .map(|h| h.value().to_string())
                .unwrap_or_default(),
            content_type,
            body: req.body.clone(),
            peer,
            authorization: req.headers.iter().find_map(|h| match h {
                Header::Authorization(a) => Some(a.value().to_string()),
                _ => None,
            }),
        };
        self.calls.insert(
            call_id,
            Call {
                state: CallState::Incoming,
                invite: req,
                server_tx: Some(tx_id),
                peer: dest,
                local_tag,
                dialog: None,
                ok_bytes: None,
                ok_interval: self.cfg.timers.t1,
                ok_next: None,
                ok_deadline: None,
                local_sdp: Vec::new(),
                bye_pending: false,
                auth: None,
                ok_seq: 0,
                reinvite: None,
                refreshing: false,
                session: None,
                remote_origin: None,
            },
        );
        self.events
            .push_back(Event::IncomingCall(Box::new(incoming)));
    }

    fn handle_cancel(&mut self, req: rsip::Request, key: ServerKey, dest: Peer, now: Instant) {
        let invite_id = self.server_index.get(&key.invite_of_cancel()).copied();
        let Some(invite_id) = invite_id else {
            self.stats.no_such_transaction += 1;
            self.respond_new(
                req,
                key,
                dest,
                481,
                "Call/Transaction Does Not Exist",
                Vec::new(),
                now,
            );
            return;
        };
        self.respond_new(req, key, dest, 200, "", Vec::new(), now);
        // RFC 3261 9.2: if no final response was sent, answer the INVITE 487.
        let call = self.server.get(&invite_id).and_then(|e| e.call);
        let Some(call) = call else { return };
        let still_incoming = self
            .calls
            .get(&call.0)
            .is_some_and(|c| c.state == CallState::Incoming);
        if still_incoming {
            self.final_to_invite(call, 487, "Request Terminated", Vec::new(), now);
            self.end_call(call.0, EndReason::Cancelled);
        } else if self
            .calls
            .get(&call.0)
            .and_then(|c| c.reinvite.as_ref())
            .is_some_and(|(tx, _)| *tx == invite_id)
        {
            // A re-INVITE the application had not answered yet.
            self.terminate_reinvite(call.0, now);
        }
    }

    /// Answers a pending peer re-INVITE 487 (cancelled, or the call ends).
    fn terminate_reinvite(&mut self, id: u64, now: Instant) {
        let Some((tx_id, req)) = self.calls.get_mut(&id).and_then(|c| c.reinvite.take()) else {
            return;
        };
        let mut resp = response_to(&req, 487, "Request Terminated", None);
        self.decorate(&mut resp, Vec::new());
        if let Some(ServerTx::Invite(t)) = self.server.get_mut(&tx_id).map(|e| &mut e.tx) {
            t.send_response(resp, now);
        }
        self.service_server(tx_id);
        self.schedule(Slot::Call(id));
    }

    fn handle_in_dialog(
        &mut self,
        req: rsip::Request,
        summary: &Summary,
        key: ServerKey,
        dest: Peer,
        now: Instant,
    ) {
        let id = DialogId {
            call_id: summary.call_id.clone(),
            local_tag: summary.to_tag.clone(),
            remote_tag: summary.from_tag.clone(),
        };
        let Some(&call_id) = self.dialogs.get(&id) else {
            self.stats.no_such_transaction += 1;
            self.respond_new(
                req,
                key,
                dest,
                481,
                "Call/Transaction Does Not Exist",
                Vec::new(),
                now,
            );
            return;
        };
        let in_order = self
            .calls
            .get_mut(&call_id)
            .and_then(|c| c.dialog.as_mut())
            .is_some_and(|d| d.accept_remote_seq(summary.cseq));
        if !in_order {
            self.respond_new(req, key, dest, 500, "CSeq Out of Order", Vec::new(), now);
            return;
        }
        match req.method {
            rsip::Method::Bye => {
                self.respond_new(req, key, dest, 200, "", Vec::new(), now);
                self.terminate_reinvite(call_id, now);
                self.end_call(call_id, EndReason::RemoteBye);
            }
            rsip::Method::Options => {
                let extra = self.capability_headers();
                self.respond_new(req, key, dest, 200, "", extra, now);
            }
            rsip::Method::Notify => self.incoming_notify(call_id, req, key, dest, now),
            rsip::Method::Refer => self.incoming_refer(call_id, req, key, dest, now),
            rsip::Method::Invite => self.incoming_reinvite(call_id, req, key, dest, now),
            _ => {
                let extra = vec![Header::Allow(rsip::headers::Allow::new(ALLOW))];
                self.respond_new(req, key, dest, 405, "Method Not Allowed", extra, now);
            }
        }
    }

    fn ack_for_2xx(&mut self, summary: &Summary, now: Instant) {
        let id = DialogId {
            call_id: summary.call_id.clone(),
            local_tag: summary.to_tag.clone(),
            remote_tag: summary.from_tag.clone(),
        };
        let Some(&call_id) = self.dialogs.get(&id) else {
            self.stats.stray += 1;
            return;
        };
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        if call.state != CallState::Answered {
            // The ACK of a re-INVITE's 2xx, or a retransmission.
            if call.ok_bytes.is_some() && call.ok_seq == summary.cseq {
                call.ok_bytes = None;
                call.ok_next = None;
                call.ok_deadline = None;
                self.schedule(Slot::Call(call_id));
            }
            return;
        }
        call.state = CallState::Confirmed;
        call.ok_bytes = None;
        call.ok_next = None;
        call.ok_deadline = None;
        let bye_pending = call.bye_pending;
        self.events.push_back(Event::CallConfirmed {
            call: CallHandle(call_id),
        });
        self.schedule(Slot::Call(call_id));
        if bye_pending {
            let _ = self.send_bye(call_id, now);
        }
    }

    fn handle_response(&mut self, resp: rsip::Response, now: Instant) {
        let Some(summary) = Summary::of(&rsip::SipMessage::Response(resp.clone())) else {
            return;
        };
        let key = ClientKey::of_response(&summary);
        let Some(&id) = self.client_index.get(&key) else {
            self.stats.stray += 1;
            return;
        };
        if let Some(e) = self.client.get_mut(&id) {
            match &mut e.tx {
                ClientTx::Invite(t) => t.handle_response(resp, now),
                ClientTx::NonInvite(t) => t.handle_response(resp, now),
            }
        }
        self.service_client(id, now);
    }

    /// Drains a server transaction's outputs, reschedules or removes it.
    fn service_server(&mut self, id: u64) {
        let Some(e) = self.server.get_mut(&id) else {
            return;
        };
        let dest = e.dest;
        let mut events = Vec::new();
        let terminated = match &mut e.tx {
            ServerTx::Invite(t) => {
                while let Some(bytes) = t.poll_transmit() {
                    self.transmits.push_back(Transmit { peer: dest, bytes });
                }
                while let Some(ev) = t.poll_event() {
                    events.push(ev);
                }
                t.state() == State::Terminated
            }
            ServerTx::NonInvite(t) => {
                while let Some(bytes) = t.poll_transmit() {
                    self.transmits.push_back(Transmit { peer: dest, bytes });
                }
                while let Some(ev) = t.poll_event() {
                    events.push(ev);
                }
                t.state() == State::Terminated
            }
        };
        let call = e.call;
        if terminated {
            if let Some(e) = self.server.remove(&id) {
                self.server_index.remove(&e.key);
            }
        } else {
            self.schedule(Slot::Server(id));
        }
        for ev in events {
            if let (TxEvent::TransportError, Some(call)) = (ev, call)
                && self.calls.contains_key(&call.0)
            {
                self.end_call(call.0, EndReason::TransportError);
            }
        }
    }

    /// Drains a client transaction's outputs and acts on its events.
    fn service_client(&mut self, id: u64, now: Instant) {
        let Some(e) = self.client.get_mut(&id) else {
            return;
        };
        let peer = e.peer;
        let purpose = e.purpose;
        let mut events: Vec<TxEvent> = Vec::new();
        let terminated = match &mut e.tx {
            ClientTx::Invite(t) => {
                while let Some(bytes) = t.poll_transmit() {
                    self.transmits.push_back(Transmit { peer, bytes });
                }
                while let Some(ev) = t.poll_event() {
                    events.push(ev);
                }
                t.state() == State::Terminated
            }
            ClientTx::NonInvite(t) => {
                while let Some(bytes) = t.poll_transmit() {
                    self.transmits.push_back(Transmit { peer, bytes });
                }
                while let Some(ev) = t.poll_event() {
                    events.push(ev);
                }
                t.state() == State::Terminated
            }
        };
        // An in-dialog request of ours challenged by the peer or a proxy.
        let challenged = matches!(
            purpose,
            Purpose::Bye(_) | Purpose::Refer(_) | Purpose::Reinvite(_)
        ) && events.iter().any(
            |ev| matches!(ev, TxEvent::Response(r) if matches!(r.status_code.code(), 401 | 407)),
        );
        let request = if challenged {
            self.client.get(&id).map(|e| match &e.tx {
                ClientTx::Invite(t) => t.request().clone(),
                ClientTx::NonInvite(t) => t.request().clone(),
            })
        } else {
            None
        };
        if terminated {
            if let Some(e) = self.client.remove(&id) {
                self.client_index.remove(&e.key);
            }
        } else {
            self.schedule(Slot::Client(id));
        }
        for ev in events {
            if let (Some(req), TxEvent::Response(r)) = (&request, &ev)
                && matches!(r.status_code.code(), 401 | 407)
                && self.retry_in_dialog(purpose, req, r, peer, now)
            {
                continue;
            }
            match purpose {
                Purpose::Bye(call) => self.bye_event(call, ev),
                Purpose::Invite(call) => self.invite_event(call, ev, now),
                Purpose::Cancel => {}
                Purpose::Register(reg) => self.register_event(reg, ev, now),
                Purpose::Refer(call) => self.refer_event(call, ev),
                Purpose::Notify => {}
                Purpose::Reinvite(call) => self.refresh_event(call, ev, now),
            }
        }
    }

    /// A 401/407 to our BYE, REFER or refresh re-INVITE in a call placed
    /// with credentials: sent again with credentials and the dialog's next
    /// CSeq (RFC 3261 22.2). False when there is nothing to answer with.
    fn retry_in_dialog(
        &mut self,
        purpose: Purpose,
        req: &rsip::Request,
        resp: &rsip::Response,
        peer: Peer,
        now: Instant,
    ) -> bool {
        let (Purpose::Bye(call) | Purpose::Refer(call) | Purpose::Reinvite(call)) = purpose else {
            return false;
        };
        let Some(c) = self.calls.get_mut(&call.0) else {
            return false;
        };
        let (Some(auth), Some(dialog)) = (c.auth.as_mut(), c.dialog.as_mut()) else {
            return false;
        };
        let had_credentials = req
            .headers
            .iter()
            .any(|h| matches!(h, Header::Authorization(_) | Header::ProxyAuthorization(_)));
        if !had_credentials {
            // A new request: realms answered for earlier ones do not count.
            auth.new_request();
        }
        if let Err(e) = auth.challenged(resp) {
            tracing::info!(%call, method = %req.method, error = %e, "in-dialog authentication failed");
            return false;
        }
        dialog.local_seq = dialog.local_seq.wrapping_add(1);
        let seq = dialog.local_seq;
        let mut auth = c.auth.take();
        let mut retry = req.clone();
        let via = self.via(peer.transport);
        for h in retry.headers.iter_mut() {
            match h {
                Header::Via(v) => *v = rsip::headers::Via::new(via.clone()),
                Header::CSeq(v) => *v = rsip::headers::CSeq::new(format!("{seq} {}", req.method)),
                _ => {}
            }
        }
        if let Some(a) = auth.as_mut() {
            let mut cnonce = || self.token(16);
            a.apply(&mut retry, &mut cnonce);
        }
        if let Some(c) = self.calls.get_mut(&call.0) {
            c.auth = auth;
        }
        self.start_client(retry, peer, purpose, now);
        true
    }

    fn bye_event(&mut self, call: CallHandle, ev: TxEvent) {
        let status = match ev {
            TxEvent::Response(r) if r.status_code.code() >= 200 => Some(r.status_code.code()),
            TxEvent::Response(_) | TxEvent::Ack(_) => return,
            TxEvent::Timeout | TxEvent::TransportError => None,
        };
        if self.calls.contains_key(&call.0) {
            self.end_call(call.0, EndReason::LocalBye { status });
        }
    }

    fn invite_event(&mut self, call: CallHandle, ev: TxEvent, now: Instant) {
        match ev {
            TxEvent::Response(resp) => {
                let code = resp.status_code.code();
                match code {
                    100 => {}
                    101..=199 => self.events.push_back(Event::CallProgress {
                        call,
                        status: code,
                        body: resp.body.clone(),
                    }),
                    200..=299 => self.invite_answered(call, resp, now),
                    _ => {
                        if (code == 401 || code == 407) && self.retry_with_auth(call, &resp, now) {
                            return;
                        }
                        if code == 422 && self.retry_interval(call, &resp, now) {
                            return;
                        }
                        if self.calls.contains_key(&call.0) {
                            self.end_call(call.0, rejected(&resp));
                        }
                    }
                }
            }
            TxEvent::Timeout => {
                if self.calls.contains_key(&call.0) {
                    self.end_call(call.0, EndReason::Timeout);
                }
            }
            TxEvent::TransportError => {
                if self.calls.contains_key(&call.0) {
                    self.end_call(call.0, EndReason::TransportError);
                }
            }
            TxEvent::Ack(_) => {}
        }
    }

    /// UAC: a 401/407 to our INVITE (RFC 3261 22.2). The transaction has
    /// ACKed it; the INVITE goes again with credentials, the same Call-ID,
    /// From tag and To, a new branch and the next CSeq. False when the call
    /// has no credentials or they were rejected: the call then ends.
    fn retry_with_auth(&mut self, call: CallHandle, resp: &rsip::Response, now: Instant) -> bool {
        let Some(c) = self.calls.get_mut(&call.0) else {
            return false;
        };
        if c.state != CallState::Calling {
            return false;
        }
        let Some(auth) = c.auth.as_mut() else {
            return false;
        };
        if let Err(e) = auth.challenged(resp) {
            tracing::info!(%call, code = resp.status_code.code(), error = %e, "INVITE authentication failed");
            return false;
        }
        self.resend_invite(call, now, |_| {});
        true
    }

    /// UAC: a 422 to our INVITE (RFC 4028 7.4): asked again with the
    /// interval raised to the Min-SE it names, once per raise.
    fn retry_interval(&mut self, call: CallHandle, resp: &rsip::Response, now: Instant) -> bool {
        let Some(c) = self.calls.get(&call.0) else {
            return false;
        };
        if c.state != CallState::Calling || self.cfg.session_expires.is_none() {
            return false;
        }
        let asked = session_expires_of(&c.invite.headers).map(|se| se.interval);
        let Some(min) = header_values(&resp.headers, "Min-SE")
            .first()
            .and_then(|v| parse_min_se(v))
        else {
            return false;
        };
        if asked.is_some_and(|a| a >= min) || min > Duration::from_secs(86_400) {
            return false;
        }
        self.resend_invite(call, now, |req| {
            req.headers.retain(|h| {
                !matches!(h, Header::Other(n, _)
                    if n.eq_ignore_ascii_case("Session-Expires") || n.eq_ignore_ascii_case("Min-SE"))
            });
            req.headers.push(Header::Other(
                "Session-Expires".into(),
                min.as_secs().to_string(),
            ));
            req.headers
                .push(Header::Other("Min-SE".into(), min.as_secs().to_string()));
        });
        true
    }

    /// Sends our INVITE again (after a 401/407/422): the same Call-ID,
    /// From tag and To, a new branch, the next CSeq, `edit` applied and
    /// credentials refreshed.
    fn resend_invite(
        &mut self,
        call: CallHandle,
        now: Instant,
        edit: impl FnOnce(&mut rsip::Request),
    ) {
        let Some(c) = self.calls.get_mut(&call.0) else {
            return;
        };
        let mut auth = c.auth.take();
        let transport = c.peer.transport;
        let mut req = c.invite.clone();
        let via = self.via(transport);
        let seq = cseq_number(&req) + 1;
        for h in req.headers.iter_mut() {
            match h {
                Header::Via(v) => *v = rsip::headers::Via::new(via.clone()),
                Header::CSeq(v) => *v = rsip::headers::CSeq::new(format!("{seq} INVITE")),
                _ => {}
            }
        }
        edit(&mut req);
        if let Some(auth) = auth.as_mut() {
            let mut cnonce = || self.token(16);
            auth.apply(&mut req, &mut cnonce);
        }
        let Some(c) = self.calls.get_mut(&call.0) else {
            return;
        };
        c.auth = auth;
        c.invite = req.clone();
        let peer = c.peer;
        self.start_client(req, peer, Purpose::Invite(call), now);
    }

    /// UAC: a 2xx to our INVITE. Every 2xx (also retransmissions, and 2xx
    /// from forked branches) gets an ACK from the dialog (RFC 3261 13.2.2.4).
    fn invite_answered(&mut self, call: CallHandle, resp: rsip::Response, now: Instant) {
        let Some(c) = self.calls.get(&call.0) else {
            return;
        };
        let first = c.dialog.is_none();
        let mut dialog = match &c.dialog {
            Some(d) => d.clone(),
            None => match Dialog::new_uac(&c.invite, &resp) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(%call, error = %e, "2xx without a usable dialog; ending call");
                    self.end_call(
                        call.0,
                        EndReason::Rejected {
                            status: 502,
                            reason: e.to_string(),
                            reason_header: None,
                        },
                    );
                    return;
                }
            },
        };
        let seq = c
            .invite
            .cseq_header()
            .ok()
            .and_then(|h| {
                h.value()
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(1);
        let transport = c.peer.transport;
        let via = self.via(transport);
        let contact = self.contact(transport);
        let ack = dialog.request(rsip::Method::Ack, via, &contact, Some(seq));
        let hop = dialog.next_hop();
        let Some(c) = self.calls.get_mut(&call.0) else {
            return;
        };
        let peer = match hop {
            Some(addr) if addr != c.peer.addr => Peer {
                addr,
                connection: None,
                ..c.peer
            },
            _ => c.peer,
        };
        self.transmits.push_back(Transmit {
            peer,
            bytes: to_bytes(ack),
        });
        if first {
            c.state = CallState::Confirmed;
            let id = dialog.id.clone();
            c.dialog = Some(dialog);
            c.remote_origin = sdp_origin(&resp.body);
            if self.cfg.session_expires.is_some() {
                // RFC 4028 7.2: the 2xx decides; without Session-Expires
                // there is no timer. We are the UAC of the INVITE.
                c.session = session_expires_of(&resp.headers).map(|se| SessionTimer {
                    interval: se.interval,
                    we_refresh: se.refresher != Some(Refresher::Uas),
                    started: now,
                    retry_at: None,
                });
            }
            self.dialogs.insert(id, call.0);
            self.schedule(Slot::Call(call.0));
            self.events.push_back(Event::CallAnswered {
                call,
                body: resp.body,
            });
        }
    }

    fn call_timer(&mut self, id: u64, now: Instant) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.state != CallState::Answered && call.ok_deadline.is_some_and(|d| d <= now) {
            // The 2xx to a re-INVITE was never ACKed: stop resending it; the
            // dialog itself stays (RFC 3261 14.2). (Also while our BYE is
            // out: a deadline left in the past would fire forever.)
            call.ok_next = None;
            call.ok_deadline = None;
            call.ok_bytes = None;
        }
        if call.state == CallState::Answered && call.ok_deadline.is_some_and(|d| d <= now) {
            // RFC 3261 13.3.1.4: no ACK within 64*T1: confirm and end with BYE.
            call.ok_next = None;
            call.ok_deadline = None;
            call.ok_bytes = None;
            call.state = CallState::Confirmed;
            tracing::warn!(call = id, "no ACK for 2xx within 64*T1; sending BYE");
            let _ = self.send_bye(id, now);
            if let Some(c) = self.calls.get_mut(&id) {
                c.bye_pending = false;
            }
            // The BYE outcome is not what the user needs to hear about.
            self.end_call(id, EndReason::AckTimeout);
            return;
        }
        if let (Some(next), Some(bytes)) = (call.ok_next, call.ok_bytes.clone())
            && next <= now
        {
            if !call.peer.transport.reliable() {
                self.transmits.push_back(Transmit {
                    peer: call.peer,
                    bytes,
                });
            }
            call.ok_interval = (call.ok_interval * 2).min(self.cfg.timers.t2);
            call.ok_next = Some(next + call.ok_interval);
        }
        let due = call
            .session
            .filter(|t| {
                call.state == CallState::Confirmed
                    && !call.refreshing
                    && call.reinvite.is_none()
                    && t.deadline() <= now
            })
            .map(|t| t.we_refresh);
        match due {
            Some(true) => self.send_refresh(id, now),
            Some(false) => {
                tracing::info!(
                    call = id,
                    "session timer expired without refresh; sending BYE"
                );
                let _ = self.send_bye(id, now);
                self.end_call(id, EndReason::SessionExpired);
                return;
            }
            None => {}
        }
        self.schedule(Slot::Call(id));
    }

    fn end_call(&mut self, id: u64, reason: EndReason) {
        if let Some(call) = self.calls.remove(&id) {
            if let Some(d) = &call.dialog {
                self.dialogs.remove(&d.id);
            }
            metrics::counter!("voicegate_sip_calls_ended_total", "reason" => reason.label())
                .increment(1);
            self.events.push_back(Event::CallEnded {
                call: CallHandle(id),
                reason,
            });
        }
    }

    fn final_to_invite(
        &mut self,
        call: CallHandle,
        code: u16,
        reason: &str,
        extra: Vec<Header>,
        now: Instant,
    ) -> bool {
        let Some(c) = self.calls.get(&call.0) else {
            return false;
        };
        let Some(tx_id) = c.server_tx else {
            return false;
        };
        let mut resp = response_to(&c.invite, code, reason, Some(&c.local_tag));
        self.decorate(&mut resp, extra);
        let sent = match self.server.get_mut(&tx_id).map(|e| &mut e.tx) {
            Some(ServerTx::Invite(t)) => t.send_response(resp, now),
            _ => false,
        };
        self.service_server(tx_id);
        sent
    }

    /// Sends a provisional response (180 Ringing, 183 with early media).
    pub fn ring(
        &mut self,
        call: CallHandle,
        code: u16,
        body: Vec<u8>,
        now: Instant,
    ) -> Result<(), CallError> {
        let c = self.calls.get(&call.0).ok_or(CallError::NoSuchCall(call))?;
        if c.state != CallState::Incoming || !(101..=199).contains(&code) {
            return Err(CallError::WrongState(call, "send a provisional response"));
        }
        let tx_id = c.server_tx.ok_or(CallError::WrongState(call, "ring"))?;
        let mut resp = response_to(&c.invite, code, "", Some(&c.local_tag));
        let contact = self.contact(c.peer.transport);
        let mut extra = vec![Header::Contact(rsip::headers::Contact::new(contact))];
        if !body.is_empty() {
            extra.push(Header::ContentType(rsip::headers::ContentType::new(
                "application/sdp",
            )));
        }
        self.decorate(&mut resp, extra);
        resp.body = body;
        if let Some(ServerTx::Invite(t)) = self.server.get_mut(&tx_id).map(|e| &mut e.tx) {
            t.send_response(resp, now);
        }
        self.service_server(tx_id);
        Ok(())
    }

    /// Answers an incoming call with 200 OK and an SDP answer. The UAS core
    /// retransmits the 2xx (T1 doubling to T2) until the ACK arrives or 64*T1
    /// passes (RFC 3261 13.3.1.4, RFC 6026).
    pub fn answer(
        &mut self,
        call: CallHandle,
        sdp: Vec<u8>,
        now: Instant,
    ) -> Result<(), CallError> {
        let c = self.calls.get(&call.0).ok_or(CallError::NoSuchCall(call))?;
        if c.state != CallState::Incoming {
            return Err(CallError::WrongState(call, "answer"));
        }
        let tx_id = c.server_tx.ok_or(CallError::WrongState(call, "answer"))?;
        let seq = self.rng.random_range(1..10_000u32);
        let dialog = match Dialog::new_uas(&c.invite, &c.local_tag, seq) {
            Ok(d) => d,
            Err(e) => {
                // RFC 3261 12.1.1 needs the caller's Contact to send a BYE.
                let reason = format!("Bad Request: {e}");
                self.final_to_invite(call, 400, &reason, Vec::new(), now);
                self.end_call(
                    call.0,
                    EndReason::Rejected {
                        status: 400,
                        reason,
                        reason_header: None,
                    },
                );
                return Ok(());
            }
        };
        let mut resp = response_to(&c.invite, 200, "", Some(&c.local_tag));
        let mut extra: Vec<Header> = c
            .invite
            .headers
            .iter()
            .filter(|h| matches!(h, Header::RecordRoute(_)))
            .cloned()
            .collect();
        extra.push(Header::Contact(rsip::headers::Contact::new(
            self.contact(c.peer.transport),
        )));
        extra.push(Header::Allow(rsip::headers::Allow::new(ALLOW)));
        extra.push(Header::Supported(rsip::headers::Supported::new(
            self.supported_value(),
        )));
        let session = self.negotiate_uas(&c.invite);
        if let Some((se, uac_supports)) = session {
            extra.extend(session_headers(se, uac_supports));
        }
        if !sdp.is_empty() {
            extra.push(Header::ContentType(rsip::headers::ContentType::new(
                "application/sdp",
            )));
        }
        let remote_origin = sdp_origin(&c.invite.body);
        self.decorate(&mut resp, extra);
        resp.body = sdp.clone();
        let bytes = to_bytes(resp.clone());
        if let Some(ServerTx::Invite(t)) = self.server.get_mut(&tx_id).map(|e| &mut e.tx) {
            t.send_response(resp, now);
        }
        self.service_server(tx_id);
        let t1 = self.cfg.timers.t1;
        let deadline = now + self.cfg.timers.t1_x64();
        let c = self
            .calls
            .get_mut(&call.0)
            .ok_or(CallError::NoSuchCall(call))?;
        let id = dialog.id.clone();
        c.dialog = Some(dialog);
        c.state = CallState::Answered;
        c.local_sdp = sdp;
        c.ok_bytes = Some(bytes);
        c.ok_interval = t1;
        c.ok_next = Some(now + t1);
        c.ok_deadline = Some(deadline);
        c.remote_origin = remote_origin;
        c.session = session.map(|(se, _)| uas_timer(se, now));
        self.dialogs.insert(id, call.0);
        self.schedule(Slot::Call(call.0));
        Ok(())
    }

    /// Rejects an incoming call with a final non-2xx response. `extra`
    /// carries headers such as Warning (488) or Retry-After (503).
    pub fn reject(
        &mut self,
        call: CallHandle,
        code: u16,
        reason: &str,
        extra: Vec<(String, String)>,
        now: Instant,
    ) -> Result<(), CallError> {
        let c = self.calls.get(&call.0).ok_or(CallError::NoSuchCall(call))?;
        if c.state != CallState::Incoming || !(300..=699).contains(&code) {
            return Err(CallError::WrongState(call, "reject"));
        }
        let extra = extra
            .into_iter()
            .map(|(n, v)| Header::Other(n, v))
            .collect();
        self.final_to_invite(call, code, reason, extra, now);
        self.end_call(
            call.0,
            EndReason::Rejected {
                status: code,
                reason: reason.to_string(),
                reason_header: None,
            },
        );
        Ok(())
    }

    /// Ends a call from our side: BYE on an established dialog (deferred
    /// until the ACK when it has not come yet), 480 to an unanswered inbound
    /// INVITE, CANCEL is not sent for our own unanswered INVITE yet (the
    /// call ends when the INVITE transaction does).
    pub fn hangup(&mut self, call: CallHandle, now: Instant) -> Result<(), CallError> {
        let c = self
            .calls
            .get_mut(&call.0)
            .ok_or(CallError::NoSuchCall(call))?;
        match c.state {
            CallState::Incoming => {
                self.final_to_invite(call, 480, "Temporarily Unavailable", Vec::new(), now);
                self.end_call(
                    call.0,
                    EndReason::Rejected {
                        status: 480,
                        reason: "Temporarily Unavailable".into(),
                        reason_header: None,
                    },
                );
                Ok(())
            }
            CallState::Answered => {
                c.bye_pending = true;
                Ok(())
            }
            CallState::Confirmed => self.send_bye(call.0, now),
            CallState::Calling => self.send_cancel(call.0, now),
            CallState::Terminating => Ok(()),
        }
    }

    fn send_bye(&mut self, id: u64, now: Instant) -> Result<(), CallError> {
        let call = CallHandle(id);
        let (bye, peer) = self.dialog_request(id, rsip::Method::Bye, "send BYE")?;
        self.terminate_reinvite(id, now);
        if let Some(c) = self.calls.get_mut(&id) {
            c.state = CallState::Terminating;
        }
        self.start_client(bye, peer, Purpose::Bye(call), now);
        Ok(())
    }

    /// Builds the next in-dialog request of a call and where to send it.
    fn dialog_request(
        &mut self,
        id: u64,
        method: rsip::Method,
        what: &'static str,
    ) -> Result<(rsip::Request, Peer), CallError> {
        let call = CallHandle(id);
        let transport = self
            .calls
            .get(&id)
            .ok_or(CallError::NoSuchCall(call))?
            .peer
            .transport;
        let via = self.via(transport);
        let contact = self.contact(transport);
        let c = self.calls.get_mut(&id).ok_or(CallError::NoSuchCall(call))?;
        let dialog = c.dialog.as_mut().ok_or(CallError::WrongState(call, what))?;
        let req = dialog.request(method, via, &contact, None);
        let peer = match dialog.next_hop() {
            Some(addr) if addr != c.peer.addr => Peer {
                addr,
                connection: None,
                ..c.peer
            },
            _ => c.peer,
        };
        Ok((req, peer))
    }

    /// Asks the peer to call `refer_to` (a SIP or tel URI, with or without
    /// angle brackets): an in-dialog REFER (RFC 3515) on a confirmed call.
    /// The outcome comes as [`Event::Refer`]: Accepted/Failed for the REFER,
    /// then Notify for each NOTIFY of the transfer's progress.
    pub fn refer(
        &mut self,
        call: CallHandle,
        refer_to: &str,
        now: Instant,
    ) -> Result<(), CallError> {
        let c = self.calls.get(&call.0).ok_or(CallError::NoSuchCall(call))?;
        if c.state != CallState::Confirmed {
            return Err(CallError::WrongState(call, "send REFER"));
        }
        let target = refer_to.trim();
        let bare = target.trim_start_matches('<').trim_end_matches('>');
        let scheme_ok = ["sip:", "sips:", "tel:"].iter().any(|p| {
            bare.get(..p.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(p))
        });
        if !scheme_ok
            || bare.contains(|c: char| c.is_whitespace() || c == '<' || c == '>')
            || (!bare[..4].eq_ignore_ascii_case("tel:") && rsip::Uri::try_from(bare).is_err())
            || bare.len() <= 4
        {
            return Err(CallError::InvalidUri(refer_to.to_string()));
        }
        let refer_to = if target.contains('<') {
            target.to_string()
        } else {
            format!("<{target}>")
        };
        let (mut req, peer) = self.dialog_request(call.0, rsip::Method::Refer, "send REFER")?;
        let local = self
            .calls
            .get(&call.0)
            .and_then(|c| c.dialog.as_ref())
            .map(|d| crate::dialog::uri_of(&d.local_header).to_string());
        req.headers.push(Header::Other("Refer-To".into(), refer_to));
        if let Some(local) = local {
            req.headers
                .push(Header::Other("Referred-By".into(), format!("<{local}>")));
        }
        self.start_client(req, peer, Purpose::Refer(call), now);
        Ok(())
    }

    /// Reports the progress of a transfer the peer asked us for (after
    /// [`ReferEvent::Incoming`]): an in-dialog NOTIFY (Event: refer) whose
    /// sipfrag carries `status` (e.g. 180, 200, 486); `terminated` ends the
    /// implicit subscription (send it with the final status).
    pub fn notify(
        &mut self,
        call: CallHandle,
        status: u16,
        terminated: bool,
        now: Instant,
    ) -> Result<(), CallError> {
        if !(100..=699).contains(&status) {
            return Err(CallError::WrongState(call, "notify with this status"));
        }
        let (req, peer) = self.build_notify(call, status, terminated)?;
        self.start_client(req, peer, Purpose::Notify, now);
        Ok(())
    }

    fn build_notify(
        &mut self,
        call: CallHandle,
        status: u16,
        terminated: bool,
    ) -> Result<(rsip::Request, Peer), CallError> {
        let (mut req, peer) = self.dialog_request(call.0, rsip::Method::Notify, "send NOTIFY")?;
        req.headers
            .push(Header::Event(rsip::headers::Event::new("refer")));
        let state = if terminated {
            "terminated;reason=noresource"
        } else {
            "active;expires=60"
        };
        req.headers.push(Header::SubscriptionState(
            rsip::headers::SubscriptionState::new(state),
        ));
        req.headers
            .push(Header::ContentType(rsip::headers::ContentType::new(
                "message/sipfrag;version=2.0",
            )));
        req.body = sipfrag(status, "");
        Ok((req, peer))
    }

    fn refer_event(&mut self, call: CallHandle, ev: TxEvent) {
        let event = match ev {
            TxEvent::Response(r) => {
                let status = r.status_code.code();
                match status {
                    100..=199 => return,
                    200..=299 => ReferEvent::Accepted { call, status },
                    _ => ReferEvent::Failed {
                        call,
                        status: Some(status),
                        reason: reason_phrase(&r),
                    },
                }
            }
            TxEvent::Timeout => ReferEvent::Failed {
                call,
                status: None,
                reason: "no response to REFER".into(),
            },
            TxEvent::TransportError => ReferEvent::Failed {
                call,
                status: None,
                reason: "transport error".into(),
            },
            TxEvent::Ack(_) => return,
        };
        if self.calls.contains_key(&call.0) {
            self.events.push_back(Event::Refer(event));
        }
    }

    /// An in-dialog NOTIFY: the progress of our REFER (RFC 3515 2.4.5).
    fn incoming_notify(
        &mut self,
        id: u64,
        req: rsip::Request,
        key: ServerKey,
        dest: Peer,
        now: Instant,
    ) {
        let event = header_values(&req.headers, "Event")
            .first()
            .map(|s| s.to_string())
            .unwrap_or_default();
        if !is_refer_event(&event) {
            // RFC 6665 8.2.1: unknown event package.
            let extra = vec![Header::Other("Allow-Events".into(), "refer".into())];
            self.respond_new(req, key, dest, 489, "Bad Event", extra, now);
            return;
        }
        let Some(state) = header_values(&req.headers, "Subscription-State")
            .first()
            .map(|s| s.to_string())
        else {
            self.respond_new(
                req,
                key,
                dest,
                400,
                "Missing Subscription-State",
                Vec::new(),
                now,
            );
            return;
        };
        let frag = parse_sipfrag(&req.body);
        self.respond_new(req, key, dest, 200, "", Vec::new(), now);
        self.events.push_back(Event::Refer(ReferEvent::Notify {
            call: CallHandle(id),
            status: frag.as_ref().map(|(c, _)| *c),
            reason: frag.map(|(_, r)| r).unwrap_or_default(),
            terminated: is_terminated(&state),
        }));
    }

    /// An in-dialog REFER: accepted with 202, the implicit subscription's
    /// first NOTIFY (100 Trying) sent at once (RFC 3515 2.4.2, 2.4.4).
    fn incoming_refer(
        &mut self,
        id: u64,
        req: rsip::Request,
        key: ServerKey,
        dest: Peer,
        now: Instant,
    ) {
        let refer_to = header_values(&req.headers, "Refer-To");
        let [refer_to] = refer_to[..] else {
            // RFC 3515 2.4.1: exactly one Refer-To.
            self.respond_new(
                req,
                key,
                dest,
                400,
                "Missing or Multiple Refer-To",
                Vec::new(),
                now,
            );
            return;
        };
        let refer_to = refer_to.to_string();
        let referred_by = header_values(&req.headers, "Referred-By")
            .first()
            .map(|s| s.to_string());
        let contact = self.contact(dest.transport);
        let extra = vec![Header::Contact(rsip::headers::Contact::new(contact))];
        self.respond_new(req, key, dest, 202, "Accepted", extra, now);
        let call = CallHandle(id);
        if let Ok((notify, peer)) = self.build_notify(call, 100, false) {
            self.start_client(notify, peer, Purpose::Notify, now);
        }
        self.events.push_back(Event::Refer(ReferEvent::Incoming {
            call,
            refer_to,
            referred_by,
        }));
    }

    fn send_cancel(&mut self, id: u64, now: Instant) -> Result<(), CallError> {
        let call = CallHandle(id);
        let c = self.calls.get(&id).ok_or(CallError::NoSuchCall(call))?;
        // RFC 3261 9.1: same Request-URI, Call-ID, From, To, CSeq number and
        // top Via as the INVITE.
        let inv = &c.invite;
        let mut headers = rsip::Headers::default();
        for h in inv.headers.iter() {
            match h {
                Header::Via(_) if !headers.iter().any(|x| matches!(x, Header::Via(_))) => {
                    headers.push(h.clone())
                }
                Header::From(_) | Header::To(_) | Header::CallId(_) | Header::Route(_) => {
                    headers.push(h.clone())
                }
                _ => {}
            }
        }
        let seq = inv
            .cseq_header()
            .ok()
            .and_then(|h| h.value().split_whitespace().next().map(str::to_string))
            .unwrap_or_else(|| "1".into());
        headers.push(Header::CSeq(rsip::headers::CSeq::new(format!(
            "{seq} CANCEL"
        ))));
        headers.push(Header::MaxForwards(rsip::headers::MaxForwards::new("70")));
        let cancel = rsip::Request {
            method: rsip::Method::Cancel,
            uri: inv.uri.clone(),
            version: rsip::Version::V2,
            headers,
            body: Vec::new(),
        };
        let peer = c.peer;
        self.start_client(cancel, peer, Purpose::Cancel, now);
        Ok(())
    }

    fn start_client(&mut self, req: rsip::Request, peer: Peer, purpose: Purpose, now: Instant) {
        let key = ClientKey::of_request(&req);
        let reliable = peer.transport.reliable();
        let tx = if req.method == rsip::Method::Invite {
            ClientTx::Invite(ClientInvite::new(req, reliable, self.cfg.timers, now))
        } else {
            ClientTx::NonInvite(ClientNonInvite::new(req, reliable, self.cfg.timers, now))
        };
        let id = self.id();
        self.client_index.insert(key.clone(), id);
        self.client.insert(
            id,
            ClientEntry {
                key,
                tx,
                peer,
                purpose,
            },
        );
        self.service_client(id, now);
    }

    /// Places an outbound call: INVITE to `target` (a SIP URI with an IP
    /// host) from `from_uri`, offering `sdp`, sent to `peer` (the trunk or
    /// the target itself).
    pub fn invite(
        &mut self,
        target: &str,
        from_uri: &str,
        to_uri: &str,
        sdp: Vec<u8>,
        peer: Peer,
        now: Instant,
    ) -> Result<CallHandle, CallError> {
        self.invite_with_auth(target, from_uri, to_uri, sdp, peer, None, now)
    }

    /// As [`invite`](Self::invite), answering 401/407 challenges with
    /// `creds` (RFC 3261 22.2): the INVITE is re-sent with credentials; a
    /// realm challenged again without `stale=true` ends the call with the
    /// challenge response as [`EndReason::Rejected`].
    #[allow(clippy::too_many_arguments)]
    pub fn invite_with_auth(
        &mut self,
        target: &str,
        from_uri: &str,
        to_uri: &str,
        sdp: Vec<u8>,
        peer: Peer,
        creds: Option<Credentials>,
        now: Instant,
    ) -> Result<CallHandle, CallError> {
        let uri = rsip::Uri::try_from(target).map_err(|_| CallError::InvalidUri(target.into()))?;
        if host_port_of_uri(target).is_none() && target.is_empty() {
            return Err(CallError::InvalidUri(target.into()));
        }
        let local_tag = self.token(12);
        let call_id = format!("{}@{}", self.token(24), self.cfg.advertised.ip());
        let via = self.via(peer.transport);
        let contact = self.contact(peer.transport);
        let mut headers = rsip::Headers::default();
        headers.push(Header::Via(rsip::headers::Via::new(via)));
        headers.push(Header::MaxForwards(rsip::headers::MaxForwards::new("70")));
        headers.push(Header::From(rsip::headers::From::new(format!(
            "<{from_uri}>;tag={local_tag}"
        ))));
        headers.push(Header::To(rsip::headers::To::new(format!("<{to_uri}>"))));
        headers.push(Header::CallId(rsip::headers::CallId::new(call_id)));
        headers.push(Header::CSeq(rsip::headers::CSeq::new("1 INVITE")));
        headers.push(Header::Contact(rsip::headers::Contact::new(contact)));
        headers.push(Header::Allow(rsip::headers::Allow::new(ALLOW)));
        if let Some(se) = self.cfg.session_expires {
            // RFC 4028 7.1: ask for an interval, leave the refresher to the UAS.
            let se = se.max(self.min_se());
            headers.push(Header::Supported(rsip::headers::Supported::new(
                self.supported_value(),
            )));
            headers.push(Header::Other(
                "Session-Expires".into(),
                se.as_secs().to_string(),
            ));
            headers.push(Header::Other(
                "Min-SE".into(),
                self.min_se().as_secs().to_string(),
            ));
        }
        headers.push(Header::UserAgent(rsip::headers::UserAgent::new(
            self.cfg.user_agent.clone(),
        )));
        if !sdp.is_empty() {
            headers.push(Header::ContentType(rsip::headers::ContentType::new(
                "application/sdp",
            )));
        }
        let req = rsip::Request {
            method: rsip::Method::Invite,
            uri,
            version: rsip::Version::V2,
            headers,
            body: sdp.clone(),
        };
        let id = self.id();
        self.calls.insert(
            id,
            Call {
                state: CallState::Calling,
                invite: req.clone(),
                server_tx: None,
                peer,
                local_tag,
                dialog: None,
                ok_bytes: None,
                ok_interval: self.cfg.timers.t1,
                ok_next: None,
                ok_deadline: None,
                local_sdp: sdp,
                bye_pending: false,
                auth: creds.map(ClientAuth::new),
                ok_seq: 0,
                reinvite: None,
                refreshing: false,
                session: None,
                remote_origin: None,
            },
        );
        self.start_client(req, peer, Purpose::Invite(CallHandle(id)), now);
        Ok(CallHandle(id))
    }
}

impl Endpoint {
    /// Starts registering (RFC 3261 10.2): the first REGISTER goes out at
    /// once; progress comes as [`Event::Registration`].
    pub fn register(&mut self, cfg: RegistrationConfig, now: Instant) -> RegistrationId {
        let call_id = format!("{}@{}", self.token(24), self.cfg.advertised.ip());
        let from_tag = self.token(12);
        let mut reg = Registration::new(cfg, call_id, from_tag);
        reg.start(now);
        let id = self.id();
        self.registrations.insert(id, reg);
        self.send_register(id, true, now);
        RegistrationId(id)
    }

    /// Removes the binding (REGISTER with Expires: 0), at once or after the
    /// REGISTER in flight; ends with [`RegistrationState::Unregistered`].
    pub fn unregister(&mut self, id: RegistrationId, now: Instant) -> Result<(), CallError> {
        let reg = self
            .registrations
            .get_mut(&id.0)
            .ok_or(CallError::NoSuchRegistration(id))?;
        if reg.unregister(now) {
            self.schedule(Slot::Registration(id.0));
            if reg_due(self.registrations.get(&id.0), now) {
                self.send_register(id.0, true, now);
            }
        } else {
            self.registrations.remove(&id.0);
            self.events.push_back(Event::Registration {
                registration: id,
                state: RegistrationState::Unregistered { status: None },
            });
        }
        Ok(())
    }

    /// Unregisters every registration (for shutdown).
    pub fn unregister_all(&mut self, now: Instant) {
        let mut ids: Vec<u64> = self.registrations.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let _ = self.unregister(RegistrationId(id), now);
        }
    }

    /// The state of a registration (None once it has ended).
    pub fn registration_state(&self, id: RegistrationId) -> Option<&RegistrationState> {
        self.registrations.get(&id.0).map(|r| r.state())
    }

    /// Live registrations.
    pub fn registration_count(&self) -> usize {
        self.registrations.len()
    }

    fn register_contact(&self, reg: &Registration, transport: TransportKind) -> String {
        let user = reg.contact_user().unwrap_or(&self.cfg.contact_user);
        match transport {
            TransportKind::Udp => format!("sip:{user}@{}", self.cfg.advertised),
            TransportKind::Tcp => format!("sip:{user}@{};transport=tcp", self.cfg.advertised),
        }
    }

    /// Sends the registration's next REGISTER (`fresh`: a new request, not
    /// a re-send with credentials).
    fn send_register(&mut self, id: u64, fresh: bool, now: Instant) {
        let Some(reg) = self.registrations.get(&id) else {
            return;
        };
        let peer = reg.config().peer;
        let contact = format!("<{}>", self.register_contact(reg, peer.transport));
        let via = self.via(peer.transport);
        let ua = self.cfg.user_agent.clone();
        // Tokens for cnonces are drawn before borrowing the registration.
        let mut cnonces: Vec<String> = (0..4).map(|_| self.token(16)).collect();
        let Some(reg) = self.registrations.get_mut(&id) else {
            return;
        };
        reg.sending();
        let mut cnonce = || cnonces.pop().unwrap_or_default();
        let req = reg.request(via, &contact, &ua, fresh, &mut cnonce);
        self.report_registration(id);
        self.start_client(req, peer, Purpose::Register(RegistrationId(id)), now);
    }

    fn register_event(&mut self, id: RegistrationId, ev: TxEvent, now: Instant) {
        let contact_uri = match self.registrations.get(&id.0) {
            Some(reg) => self.register_contact(reg, reg.config().peer.transport),
            None => return,
        };
        let Some(reg) = self.registrations.get_mut(&id.0) else {
            return;
        };
        let next = match ev {
            TxEvent::Response(r) if r.status_code.code() >= 200 => {
                reg.on_final(&r, &contact_uri, now)
            }
            TxEvent::Response(_) | TxEvent::Ack(_) => return,
            TxEvent::Timeout | TxEvent::TransportError => reg.on_no_response(now),
        };
        match next {
            Next::SendNow => self.send_register(id.0, false, now),
            Next::Wait => {
                self.report_registration(id.0);
                self.schedule(Slot::Registration(id.0));
            }
            Next::Done => {
                self.report_registration(id.0);
                self.registrations.remove(&id.0);
            }
        }
    }

    /// Reports a registration's state when it changed.
    fn report_registration(&mut self, id: u64) {
        if let Some(state) = self
            .registrations
            .get_mut(&id)
            .and_then(|r| r.take_change())
        {
            metrics::counter!("voicegate_sip_registration_states_total", "state" => state.label())
                .increment(1);
            self.events.push_back(Event::Registration {
                registration: RegistrationId(id),
                state,
            });
        }
    }
}

fn reg_due(reg: Option<&Registration>, now: Instant) -> bool {
    reg.and_then(|r| r.deadline()).is_some_and(|d| d <= now)
}

impl Endpoint {
    /// The Supported header value: our option tags, `timer` when session
    /// timers are on.
    fn supported_value(&self) -> String {
        let mut tags = self.cfg.supported.clone();
        if self.cfg.session_expires.is_some()
            && !tags.iter().any(|t| t.eq_ignore_ascii_case("timer"))
        {
            tags.push("timer".to_string());
        }
        tags.join(", ")
    }

    /// Whether we implement an option tag (`timer` when session timers are on).
    fn supports(&self, tag: &str) -> bool {
        self.cfg
            .supported
            .iter()
            .any(|s| s.eq_ignore_ascii_case(tag))
            || (self.cfg.session_expires.is_some() && tag.eq_ignore_ascii_case("timer"))
    }

    /// Our Min-SE (at least 1 s).
    fn min_se(&self) -> Duration {
        self.cfg.min_se.max(Duration::from_secs(1))
    }

    /// RFC 4028 9: the Session-Expires a 2xx to `req` carries (we are the
    /// UAS of `req`), and whether the UAC supports timers (then the 2xx
    /// carries `Require: timer`). None when timers are off, or neither side
    /// asks for one.
    fn negotiate_uas(&self, req: &rsip::Request) -> Option<(SessionExpires, bool)> {
        let ours = self.cfg.session_expires?;
        let uac_supports = supports_timer(&req.headers);
        let asked = session_expires_of(&req.headers);
        let their_min = header_values(&req.headers, "Min-SE")
            .first()
            .and_then(|v| parse_min_se(v))
            .unwrap_or_default();
        let interval = match asked {
            Some(se) => se.interval,
            None => ours.max(their_min).max(self.min_se()),
        };
        let refresher = match (uac_supports, asked.and_then(|se| se.refresher)) {
            // A UAC without timer support cannot refresh.
            (false, _) => Refresher::Uas,
            (true, Some(r)) => r,
            // Ours to choose: let the caller refresh.
            (true, None) => Refresher::Uac,
        };
        Some((
            SessionExpires {
                interval,
                refresher: Some(refresher),
            },
            uac_supports,
        ))
    }

    /// A re-INVITE from the peer (RFC 3261 14.2): glare and overlap checks,
    /// then answered at once when nothing changes (a session refresh, an
    /// offer-less INVITE, or `reinvite_to_app` off), else handed to the
    /// application as [`Event::Reinvite`].
    fn incoming_reinvite(
        &mut self,
        id: u64,
        req: rsip::Request,
        key: ServerKey,
        dest: Peer,
        now: Instant,
    ) {
        let Some(c) = self.calls.get(&id) else {
            return;
        };
        if c.reinvite.is_some() || c.ok_bytes.is_some() {
            // RFC 3261 14.2: an INVITE is still being answered.
            let after = self.rng.random_range(0..=10u32).to_string();
            let extra = vec![Header::Other("Retry-After".into(), after)];
            self.respond_new(req, key, dest, 500, "Server Internal Error", extra, now);
            return;
        }
        if c.refreshing {
            // RFC 3261 14.2: our own re-INVITE is pending (glare).
            self.respond_new(req, key, dest, 491, "Request Pending", Vec::new(), now);
            return;
        }
        let origin = sdp_origin(&req.body);
        let unchanged = req.body.is_empty() || (origin.is_some() && origin == c.remote_origin);
        let local_sdp = c.local_sdp.clone();
        let mut t = ServerInvite::new(req.clone(), dest.transport.reliable(), self.cfg.timers);
        let to_app = self.cfg.reinvite_to_app && !unchanged;
        if to_app {
            // The application may take longer than T1.
            t.send_response(response_to(&req, 100, "", None), now);
        }
        let tx_id = self.id();
        self.server_index.insert(key.clone(), tx_id);
        self.server.insert(
            tx_id,
            ServerEntry {
                key,
                tx: ServerTx::Invite(t),
                dest,
                // A CANCEL finds the pending re-INVITE through the call.
                call: to_app.then_some(CallHandle(id)),
            },
        );
        self.service_server(tx_id);
        // RFC 3261 12.2.2: a re-INVITE's Contact refreshes the remote target.
        if let Some(contact) = req.contact_header().ok().map(|h| h.value().to_string())
            && let Some(d) = self.calls.get_mut(&id).and_then(|c| c.dialog.as_mut())
        {
            d.remote_target = crate::dialog::uri_of(&contact).to_string();
        }
        if to_app {
            let content_type = header_values(&req.headers, "Content-Type")
                .first()
                .map(|s| s.to_string());
            let body = req.body.clone();
            if let Some(c) = self.calls.get_mut(&id) {
                c.reinvite = Some((tx_id, req));
            }
            self.events.push_back(Event::Reinvite {
                call: CallHandle(id),
                content_type,
                body,
            });
        } else {
            // RFC 3264 8: answering with the unchanged description is
            // allowed when nothing changes on our side.
            self.send_reinvite_ok(id, tx_id, &req, local_sdp, now);
        }
    }

    /// Sends the 2xx to a peer's re-INVITE through its transaction, resent
    /// by the UAS core until the ACK (as for the first 2xx), and restarts
    /// the session timer.
    fn send_reinvite_ok(
        &mut self,
        id: u64,
        tx_id: u64,
        req: &rsip::Request,
        sdp: Vec<u8>,
        now: Instant,
    ) {
        let Some(c) = self.calls.get(&id) else {
            return;
        };
        let transport = c.peer.transport;
        let tag = c
            .dialog
            .as_ref()
            .map(|d| d.id.local_tag.clone())
            .unwrap_or_default();
        let mut resp = response_to(req, 200, "", Some(&tag));
        let mut extra = vec![
            Header::Contact(rsip::headers::Contact::new(self.contact(transport))),
            Header::Allow(rsip::headers::Allow::new(ALLOW)),
        ];
        let session = self.negotiate_uas(req);
        if let Some((se, uac_supports)) = session {
            extra.push(Header::Supported(rsip::headers::Supported::new(
                self.supported_value(),
            )));
            extra.extend(session_headers(se, uac_supports));
        }
        if !sdp.is_empty() {
            extra.push(Header::ContentType(rsip::headers::ContentType::new(
                "application/sdp",
            )));
        }
        self.decorate(&mut resp, extra);
        resp.body = sdp.clone();
        let bytes = to_bytes(resp.clone());
        if let Some(ServerTx::Invite(t)) = self.server.get_mut(&tx_id).map(|e| &mut e.tx) {
            t.send_response(resp, now);
        }
        self.service_server(tx_id);
        let t1 = self.cfg.timers.t1;
        let deadline = now + self.cfg.timers.t1_x64();
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        c.local_sdp = sdp;
        if !req.body.is_empty() {
            c.remote_origin = sdp_origin(&req.body);
        }
        c.ok_seq = cseq_number(req);
        c.ok_bytes = Some(bytes);
        c.ok_interval = t1;
        c.ok_next = Some(now + t1);
        c.ok_deadline = Some(deadline);
        if self.cfg.session_expires.is_some() {
            // RFC 4028 9: a 2xx without Session-Expires ends the timer.
            c.session = session.map(|(se, _)| uas_timer(se, now));
        }
        self.schedule(Slot::Call(id));
    }

    /// Answers the peer's re-INVITE (after [`Event::Reinvite`]) with 200 OK
    /// and `sdp` (e.g. `recvonly` for a `sendonly` hold offer). The new
    /// description becomes the call's current one.
    pub fn answer_reinvite(
        &mut self,
        call: CallHandle,
        sdp: Vec<u8>,
        now: Instant,
    ) -> Result<(), CallError> {
        let c = self
            .calls
            .get_mut(&call.0)
            .ok_or(CallError::NoSuchCall(call))?;
        let (tx_id, req) = c
            .reinvite
            .take()
            .ok_or(CallError::WrongState(call, "answer a re-INVITE"))?;
        self.send_reinvite_ok(call.0, tx_id, &req, sdp, now);
        Ok(())
    }

    /// Refuses the peer's re-INVITE (e.g. 488 for an offer we cannot
    /// take); the call goes on with the previous session description.
    pub fn reject_reinvite(
        &mut self,
        call: CallHandle,
        code: u16,
        reason: &str,
        now: Instant,
    ) -> Result<(), CallError> {
        let c = self
            .calls
            .get_mut(&call.0)
            .ok_or(CallError::NoSuchCall(call))?;
        if !(300..=699).contains(&code) {
            return Err(CallError::WrongState(
                call,
                "reject a re-INVITE with this code",
            ));
        }
        let (tx_id, req) = c
            .reinvite
            .take()
            .ok_or(CallError::WrongState(call, "reject a re-INVITE"))?;
        let mut resp = response_to(&req, code, reason, None);
        self.decorate(&mut resp, Vec::new());
        if let Some(ServerTx::Invite(t)) = self.server.get_mut(&tx_id).map(|e| &mut e.tx) {
            t.send_response(resp, now);
        }
        self.service_server(tx_id);
        self.schedule(Slot::Call(call.0));
        Ok(())
    }

    /// We are the refresher and half the interval has passed: a re-INVITE
    /// offering the current description again (RFC 4028 7.4, 10).
    fn send_refresh(&mut self, id: u64, now: Instant) {
        let Ok((mut req, peer)) = self.dialog_request(id, rsip::Method::Invite, "refresh") else {
            // No dialog to refresh: drop the timer rather than fire forever.
            if let Some(c) = self.calls.get_mut(&id) {
                c.session = None;
            }
            return;
        };
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(t) = c.session.as_mut() else {
            return;
        };
        t.retry_at = None;
        let t = *t;
        c.refreshing = true;
        req.headers
            .push(Header::Allow(rsip::headers::Allow::new(ALLOW)));
        req.headers
            .push(Header::Supported(rsip::headers::Supported::new(
                self.supported_value(),
            )));
        req.headers.push(Header::Other(
            "Session-Expires".into(),
            SessionExpires {
                interval: t.interval,
                refresher: Some(Refresher::Uac),
            }
            .to_header_value(),
        ));
        req.headers.push(Header::Other(
            "Min-SE".into(),
            self.min_se().as_secs().to_string(),
        ));
        let sdp = self
            .calls
            .get(&id)
            .map(|c| c.local_sdp.clone())
            .unwrap_or_default();
        if !sdp.is_empty() {
            req.headers
                .push(Header::ContentType(rsip::headers::ContentType::new(
                    "application/sdp",
                )));
        }
        req.body = sdp;
        tracing::debug!(call = id, "sending session refresh");
        self.start_client(req, peer, Purpose::Reinvite(CallHandle(id)), now);
    }

    /// The outcome of our refresh re-INVITE.
    fn refresh_event(&mut self, call: CallHandle, ev: TxEvent, now: Instant) {
        let Some(c) = self.calls.get(&call.0) else {
            return;
        };
        let (confirmed, session) = (c.state == CallState::Confirmed, c.session);
        let timed_out = match ev {
            TxEvent::Response(r) => {
                let code = r.status_code.code();
                match code {
                    100..=199 => return,
                    200..=299 => {
                        self.refresh_answered(call, &r, now);
                        return;
                    }
                    // RFC 4028 10: the session is gone.
                    408 | 481 => true,
                    _ => {
                        let Some(mut t) = session else {
                            return;
                        };
                        let wait = if code == 491 {
                            // RFC 3261 14.1: 2.1-4 s (the Call-ID owner's range,
                            // used whichever side we are).
                            Duration::from_millis(self.rng.random_range(2100..=4000))
                        } else if let Some(min) = header_values(&r.headers, "Min-SE")
                            .first()
                            .and_then(|v| parse_min_se(v))
                            .filter(|m| code == 422 && *m > t.interval)
                        {
                            // RFC 4028 7.4: ask again at once with the larger interval.
                            t.interval = min;
                            Duration::ZERO
                        } else {
                            (t.interval / 8).max(Duration::from_secs(2))
                        };
                        t.retry_at = Some(now + wait);
                        if let Some(c) = self.calls.get_mut(&call.0) {
                            c.refreshing = false;
                            c.session = Some(t);
                        }
                        self.schedule(Slot::Call(call.0));
                        false
                    }
                }
            }
            TxEvent::Timeout | TxEvent::TransportError => true,
            TxEvent::Ack(_) => false,
        };
        if timed_out && confirmed {
            tracing::info!(%call, "session refresh failed; sending BYE");
            let _ = self.send_bye(call.0, now);
            self.end_call(call.0, EndReason::SessionExpired);
        }
    }

    /// A 2xx to our refresh: ACK it (every retransmission too) and restart
    /// the interval with what the 2xx says (RFC 4028 7.2).
    fn refresh_answered(&mut self, call: CallHandle, resp: &rsip::Response, now: Instant) {
        let seq = resp
            .cseq_header()
            .ok()
            .and_then(|h| {
                h.value()
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(1);
        let Some(c) = self.calls.get(&call.0) else {
            return;
        };
        let transport = c.peer.transport;
        let via = self.via(transport);
        let contact = self.contact(transport);
        let Some(c) = self.calls.get_mut(&call.0) else {
            return;
        };
        let Some(dialog) = c.dialog.as_mut() else {
            return;
        };
        let ack = dialog.request(rsip::Method::Ack, via, &contact, Some(seq));
        let peer = match dialog.next_hop() {
            Some(addr) if addr != c.peer.addr => Peer {
                addr,
                connection: None,
                ..c.peer
            },
            _ => c.peer,
        };
        self.transmits.push_back(Transmit {
            peer,
            bytes: to_bytes(ack),
        });
        if c.refreshing {
            c.refreshing = false;
            let previous = c.session;
            c.session = match session_expires_of(&resp.headers) {
                Some(se) => Some(SessionTimer {
                    interval: se.interval,
                    we_refresh: se.refresher != Some(Refresher::Uas),
                    started: now,
                    retry_at: None,
                }),
                // A peer without timer support never names one: the timer
                // we set for it ourselves keeps running (RFC 4028 9).
                None if !supports_timer(&resp.headers) => previous.map(|t| SessionTimer {
                    started: now,
                    retry_at: None,
                    ..t
                }),
                // RFC 4028 7.2: a 2xx without Session-Expires turns it off.
                None => None,
            };
            self.schedule(Slot::Call(call.0));
        }
    }
}

/// Whether a message says its sender implements RFC 4028 (`timer` in
/// Supported or Require).
fn supports_timer(headers: &rsip::Headers) -> bool {
    header_values(headers, "Supported")
        .iter()
        .chain(header_values(headers, "Require").iter())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("timer"))
}

/// The Session-Expires of a message, when present and well-formed.
fn session_expires_of(headers: &rsip::Headers) -> Option<SessionExpires> {
    header_values(headers, "Session-Expires")
        .first()
        .and_then(|v| SessionExpires::parse(v))
}

/// Headers a 2xx carries for a negotiated session timer.
fn session_headers(se: SessionExpires, uac_supports: bool) -> Vec<Header> {
    let mut out = vec![Header::Other(
        "Session-Expires".into(),
        se.to_header_value(),
    )];
    if uac_supports {
        out.push(Header::Require(rsip::headers::Require::new("timer")));
    }
    out
}

/// The timer of a dialog where we answered the refresh-setting INVITE.
fn uas_timer(se: SessionExpires, now: Instant) -> SessionTimer {
    SessionTimer {
        interval: se.interval,
        we_refresh: se.refresher == Some(Refresher::Uas),
        started: now,
        retry_at: None,
    }
}

/// The CSeq number of a request (1 when unreadable).
fn cseq_number(req: &rsip::Request) -> u32 {
    req.cseq_header()
        .ok()
        .and_then(|h| {
            h.value()
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(1)
}

/// rsip replaces the reason phrase of known status codes with its own; the
/// peer's phrase ("Declined", "User Busy") is what operators want to see.
fn keep_reason_phrase(resp: &mut rsip::Response, raw: &[u8]) {
    if matches!(resp.status_code, rsip::StatusCode::Other(..)) {
        return;
    }
    let start = raw
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(0);
    let line = raw[start..]
        .split(|b| *b == b'\n')
        .next()
        .unwrap_or_default();
    let Ok(line) = std::str::from_utf8(line) else {
        return;
    };
    let mut parts = line.trim_end_matches('\r').splitn(3, ' ');
    let (_, _, Some(phrase)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let phrase = phrase.trim();
    if !phrase.is_empty() && phrase != reason_phrase(resp) {
        resp.status_code =
            rsip::StatusCode::Other(resp.status_code.code(), message::sanitize_reason(phrase));
    }
}

/// The reason phrase of a response as received.
pub(crate) fn reason_phrase(resp: &rsip::Response) -> String {
    match &resp.status_code {
        rsip::StatusCode::Other(_, r) => r.clone(),
        other => other
            .to_string()
            .split_once(' ')
            .map(|(_, r)| r.to_string())
            .unwrap_or_default(),
    }
}

/// The Reason header values of a message (RFC 3326), joined.
pub(crate) fn reason_header(headers: &rsip::Headers) -> Option<String> {
    let values = header_values(headers, "Reason");
    (!values.is_empty()).then(|| values.join(", "))
}

/// How a final non-2xx response to our INVITE ends the call.
fn rejected(resp: &rsip::Response) -> EndReason {
    EndReason::Rejected {
        status: resp.status_code.code(),
        reason: reason_phrase(resp),
        reason_header: reason_header(&resp.headers),
    }
}

#[cfg(test)]
mod tests;
