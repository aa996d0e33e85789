//! The sans-IO SIP endpoint: transaction matching (RFC 3261 17.1.3, 17.2.3),
//! the UAS and UAC cores (8.2, 13, 15), dialogs, CANCEL, OPTIONS and the
//! error responses, over transactions from [`crate::transaction`].
//!
//! Drive it like the transactions: feed [`Endpoint::handle_input`],
//! [`Endpoint::handle_timeout`] and the call commands ([`Endpoint::answer`],
//! [`Endpoint::reject`], [`Endpoint::hangup`], [`Endpoint::invite`]); after
//! each, drain [`Endpoint::poll_transmit`] and [`Endpoint::poll_event`] until
//! both return `None`, then sleep until [`Endpoint::poll_timeout`].

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

use crate::dialog::{Dialog, DialogId, host_port_of_uri};
use crate::message::{
    self, ParseError, Summary, header_values, parse, response_destination, response_from_context,
    response_to, stamp_top_via, to_bytes,
};
use crate::transaction::{
    ClientInvite, ClientKey, ClientNonInvite, ServerInvite, ServerKey, ServerNonInvite, State,
    Timers, TxEvent,
};

/// Methods this endpoint implements (the Allow header).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS";

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
    },
    /// An outbound INVITE got no final response (timer B).
    Timeout,
    /// The transport failed.
    TransportError,
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
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            advertised: SocketAddr::from(([127, 0, 0, 1], 5060)),
            contact_user: "voicegate".to_string(),
            user_agent: concat!("voicegate/", env!("CARGO_PKG_VERSION")).to_string(),
            timers: Timers::default(),
            supported: Vec::new(),
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Server(u64),
    Client(u64),
    Call(u64),
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
            Slot::Call(id) => self
                .calls
                .get(&id)
                .and_then(|c| match (c.ok_next, c.ok_deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }),
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
                    self.service_client(id);
                }
                Slot::Call(id) => self.call_timer(id, now),
            }
        }
    }

    /// Feeds one message (a datagram, or one framed TCP message).
    pub fn handle_input(&mut self, peer: Peer, bytes: &[u8], now: Instant) {
        match parse(bytes) {
            Ok(rsip::SipMessage::Request(req)) => self.handle_request(req, peer, now),
            Ok(rsip::SipMessage::Response(resp)) => self.handle_response(resp, now),
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
            .filter(|t| {
                !t.is_empty() && !self.cfg.supported.iter().any(|s| s.eq_ignore_ascii_case(t))
            })
            .collect();
        if !unsupported.is_empty() {
            let extra = vec![Header::Unsupported(rsip::headers::Unsupported::new(
                unsupported.join(", "),
            ))];
            self.respond_new(req, key, dest, 420, "Bad Extension", extra, now);
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
            rsip::Method::Bye => {
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
            Header::Supported(rsip::headers::Supported::new(self.cfg.supported.join(", "))),
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
        }
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
                self.end_call(call_id, EndReason::RemoteBye);
            }
            rsip::Method::Options => {
                let extra = self.capability_headers();
                self.respond_new(req, key, dest, 200, "", extra, now);
            }
            rsip::Method::Invite => {
                // A re-INVITE (refresh, hold): until media renegotiation is
                // wired, answer with our current session description, which
                // RFC 3264 8 allows when nothing changes on our side.
                let Some(call) = self.calls.get(&call_id) else {
                    return;
                };
                let sdp = call.local_sdp.clone();
                let contact = self.contact(dest.transport);
                let tag = summary.to_tag.clone();
                let mut resp = response_to(&req, 200, "", Some(&tag));
                let mut extra = vec![
                    Header::Contact(rsip::headers::Contact::new(contact)),
                    Header::Allow(rsip::headers::Allow::new(ALLOW)),
                ];
                if !sdp.is_empty() {
                    extra.push(Header::ContentType(rsip::headers::ContentType::new(
                        "application/sdp",
                    )));
                }
                self.decorate(&mut resp, extra);
                resp.body = sdp;
                let mut t = ServerInvite::new(req, dest.transport.reliable(), self.cfg.timers);
                t.send_response(resp, now);
                let tx_id = self.id();
                self.server_index.insert(key.clone(), tx_id);
                self.server.insert(
                    tx_id,
                    ServerEntry {
                        key,
                        tx: ServerTx::Invite(t),
                        dest,
                        call: None,
                    },
                );
                self.service_server(tx_id);
            }
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
            return; // ACK retransmission
        }
        call.state = CallState::Confirmed;
        call.ok_bytes = None;
        call.ok_next = None;
        call.ok_deadline = None;
        let bye_pending = call.bye_pending;
        self.events.push_back(Event::CallConfirmed {
            call: CallHandle(call_id),
        });
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
        self.service_client(id);
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
    fn service_client(&mut self, id: u64) {
        let Some(e) = self.client.get_mut(&id) else {
            return;
        };
        let peer = e.peer;
        let purpose = e.purpose;
        let mut events = Vec::new();
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
        if terminated {
            if let Some(e) = self.client.remove(&id) {
                self.client_index.remove(&e.key);
            }
        } else {
            self.schedule(Slot::Client(id));
        }
        for ev in events {
            match purpose {
                Purpose::Bye(call) => self.bye_event(call, ev),
                Purpose::Invite(call) => self.invite_event(call, ev),
                Purpose::Cancel => {}
            }
        }
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

    fn invite_event(&mut self, call: CallHandle, ev: TxEvent) {
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
                    200..=299 => self.invite_answered(call, resp),
                    _ => {
                        if self.calls.contains_key(&call.0) {
                            let reason = match &resp.status_code {
                                rsip::StatusCode::Other(_, r) => r.clone(),
                                other => other
                                    .to_string()
                                    .split_once(' ')
                                    .map(|(_, r)| r.to_string())
                                    .unwrap_or_default(),
                            };
                            self.end_call(
                                call.0,
                                EndReason::Rejected {
                                    status: code,
                                    reason,
                                },
                            );
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

    /// UAC: a 2xx to our INVITE. Every 2xx (also retransmissions, and 2xx
    /// from forked branches) gets an ACK from the dialog (RFC 3261 13.2.2.4).
    fn invite_answered(&mut self, call: CallHandle, resp: rsip::Response) {
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
            self.dialogs.insert(id, call.0);
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
        if call.state != CallState::Answered {
            return;
        }
        if call.ok_deadline.is_some_and(|d| d <= now) {
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
            self.cfg.supported.join(", "),
        )));
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
        let transport = self
            .calls
            .get(&id)
            .ok_or(CallError::NoSuchCall(call))?
            .peer
            .transport;
        let via = self.via(transport);
        let contact = self.contact(transport);
        let c = self.calls.get_mut(&id).ok_or(CallError::NoSuchCall(call))?;
        let dialog = c
            .dialog
            .as_mut()
            .ok_or(CallError::WrongState(call, "send BYE"))?;
        let bye = dialog.request(rsip::Method::Bye, via, &contact, None);
        let peer = match dialog.next_hop() {
            Some(addr) if addr != c.peer.addr => Peer {
                addr,
                connection: None,
                ..c.peer
            },
            _ => c.peer,
        };
        c.state = CallState::Terminating;
        self.start_client(bye, peer, Purpose::Bye(call), now);
        Ok(())
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
        self.service_client(id);
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
            },
        );
        self.start_client(req, peer, Purpose::Invite(CallHandle(id)), now);
        Ok(CallHandle(id))
    }
}

#[cfg(test)]
mod tests;
