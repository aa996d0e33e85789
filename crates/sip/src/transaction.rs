//! The four transaction state machines of RFC 3261 section 17, updated by
//! RFC 6026 (the `Accepted` states and timers L and M).
//!
//! Each machine is sans-IO: it is created with the message that starts it and
//! the current time, then fed with `handle_*(…, now)`; after every call the
//! owner drains [`poll_transmit`](ClientInvite::poll_transmit) (bytes to send
//! to the transaction's peer) and `poll_event` (what the transaction user must
//! know), and asks `poll_timeout` when to call `handle_timeout` next. Time is
//! never read inside. Retransmission timers run only over unreliable
//! transports; over TCP the "wait" timers D, I, J and K are zero (17.1.1.2,
//! 17.1.2.2, 17.2.1, 17.2.2).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rsip::Header;
use rsip::headers::UntypedHeader;

use crate::message::{param_value, to_bytes};

/// RFC 3261 timer values (Table 4). Defaults: T1 500 ms, T2 4 s, T4 5 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses.
    pub t2: Duration,
    /// Maximum duration a message remains in the network.
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    /// 64*T1: timers B, F, H, J (UDP), L and M.
    pub fn t1_x64(&self) -> Duration {
        self.t1 * 64
    }

    /// Timer D: "> 32 s" for unreliable transports (17.1.1.2), 0 for reliable.
    pub fn timer_d(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            Duration::from_secs(32).max(self.t1_x64())
        }
    }
}

/// What a transaction tells its user.
#[derive(Debug, Clone, PartialEq)]
pub enum TxEvent {
    /// A response for the client transaction's user (first of each class, and
    /// 2xx retransmissions in `Accepted`).
    Response(rsip::Response),
    /// Timer B, F or H fired: no (final) response / no ACK in time.
    Timeout,
    /// The transport reported a failure sending.
    TransportError,
    /// An ACK matched a server INVITE transaction in `Accepted` (RFC 6026 7.1).
    Ack(rsip::Request),
}

/// States named as in RFC 3261 17 and RFC 6026.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Client INVITE: request sent, nothing heard.
    Calling,
    /// Client non-INVITE / server non-INVITE initial state.
    Trying,
    /// A provisional response was received (client) or sent (server).
    Proceeding,
    /// A final non-2xx response was received (client) or sent (server).
    Completed,
    /// RFC 6026: a 2xx was received (client INVITE) or sent (server INVITE).
    Accepted,
    /// Server INVITE: ACK for the non-2xx final response received.
    Confirmed,
    /// Done; the owner removes the transaction.
    Terminated,
}

/// A deadline and what to do when it passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timer {
    at: Instant,
    /// Current retransmission interval (for A, E, G).
    interval: Duration,
}

fn arm(now: Instant, d: Duration) -> Option<Timer> {
    Some(Timer {
        at: now + d,
        interval: d,
    })
}

fn fired(t: &Option<Timer>, now: Instant) -> bool {
    t.is_some_and(|t| t.at <= now)
}

fn earliest(timers: &[&Option<Timer>]) -> Option<Instant> {
    timers.iter().filter_map(|t| t.map(|t| t.at)).min()
}

#[derive(Debug, Default)]
struct Outputs {
    transmits: VecDeque<Bytes>,
    events: VecDeque<TxEvent>,
}

/// RFC 3261 17.1.1: the client INVITE transaction.
#[derive(Debug)]
pub struct ClientInvite {
    state: State,
    reliable: bool,
    timers: Timers,
    request: rsip::Request,
    request_bytes: Bytes,
    ack: Option<Bytes>,
    timer_a: Option<Timer>,
    timer_b: Option<Timer>,
    timer_d: Option<Timer>,
    timer_m: Option<Timer>,
    out: Outputs,
}

impl ClientInvite {
    /// Starts the transaction: the request is queued for transmission.
    pub fn new(request: rsip::Request, reliable: bool, timers: Timers, now: Instant) -> Self {
        let request_bytes = to_bytes(request.clone());
        let mut out = Outputs::default();
        out.transmits.push_back(request_bytes.clone());
        Self {
            state: State::Calling,
            reliable,
            timers,
            request,
            request_bytes,
            ack: None,
            timer_a: if reliable { None } else { arm(now, timers.t1) },
            timer_b: arm(now, timers.t1_x64()),
            timer_d: None,
            timer_m: None,
            out,
        }
    }

    /// The request that started the transaction.
    pub fn request(&self) -> &rsip::Request {
        &self.request
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Feeds a response matched to this transaction.
    pub fn handle_response(&mut self, response: rsip::Response, now: Instant) {
        let code = response.status_code.code();
        match (self.state, code) {
            (State::Calling | State::Proceeding, 100..=199) => {
                self.state = State::Proceeding;
                self.timer_a = None;
                self.out.events.push_back(TxEvent::Response(response));
            }
            (State::Calling | State::Proceeding, 200..=299) => {
                self.state = State::Accepted;
                self.timer_a = None;
                self.timer_b = None;
                self.timer_m = arm(now, self.timers.t1_x64());
                self.out.events.push_back(TxEvent::Response(response));
            }
            (State::Calling | State::Proceeding, 300..=699) => {
                self.state = State::Completed;
                self.timer_a = None;
                self.timer_b = None;
                let ack = to_bytes(ack_for_non_2xx(&self.request, &response));
                self.out.transmits.push_back(ack.clone());
                self.ack = Some(ack);
                self.timer_d = arm(now, self.timers.timer_d(self.reliable));
                self.out.events.push_back(TxEvent::Response(response));
            }
            (State::Completed, 300..=699) => {
                if let Some(ack) = &self.ack {
                    self.out.transmits.push_back(ack.clone());
                }
            }
            (State::Accepted, 200..=299) => {
                self.out.events.push_back(TxEvent::Response(response));
            }
            _ => {}
        }
    }

    /// Fires whatever timers are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Calling && fired(&self.timer_b, now) {
            self.terminate();
            self.out.events.push_back(TxEvent::Timeout);
            return;
        }
        if self.state == State::Calling
            && let Some(a) = self.timer_a.filter(|a| a.at <= now)
        {
            // Timer A doubles without the T2 cap (17.1.1.2).
            self.out.transmits.push_back(self.request_bytes.clone());
            self.timer_a = Some(Timer {
                at: a.at + a.interval * 2,
                interval: a.interval * 2,
            });
        }
        if (self.state == State::Completed && fired(&self.timer_d, now))
            || (self.state == State::Accepted && fired(&self.timer_m, now))
        {
            self.terminate();
        }
    }

    /// The transport failed to send.
    pub fn handle_transport_error(&mut self) {
        if matches!(self.state, State::Calling | State::Proceeding) {
            self.out.events.push_back(TxEvent::TransportError);
        }
        self.terminate();
    }

    fn terminate(&mut self) {
        self.state = State::Terminated;
        self.timer_a = None;
        self.timer_b = None;
        self.timer_d = None;
        self.timer_m = None;
    }

    /// Next bytes to send to the peer.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.out.transmits.pop_front()
    }

    /// Next event for the transaction user.
    pub fn poll_event(&mut self) -> Option<TxEvent> {
        self.out.events.pop_front()
    }

    /// When `handle_timeout` must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        earliest(&[&self.timer_a, &self.timer_b, &self.timer_d, &self.timer_m])
    }
}

/// RFC 3261 17.1.1.3: the ACK a client INVITE transaction sends for a final
/// non-2xx response.
pub fn ack_for_non_2xx(request: &rsip::Request, response: &rsip::Response) -> rsip::Request {
    let mut headers = rsip::Headers::default();
    if let Some(via) = request.headers.iter().find(|h| matches!(h, Header::Via(_))) {
        headers.push(via.clone());
    }
    for h in request.headers.iter() {
        match h {
            Header::From(_) | Header::CallId(_) | Header::Route(_) => headers.push(h.clone()),
            _ => {}
        }
    }
    if let Some(to) = response.headers.iter().find(|h| matches!(h, Header::To(_))) {
        headers.push(to.clone());
    }
    let seq = request
        .headers
        .iter()
        .find_map(|h| match h {
            Header::CSeq(c) => c.value().split_whitespace().next().map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| "1".to_string());
    headers.push(Header::CSeq(rsip::headers::CSeq::new(format!("{seq} ACK"))));
    headers.push(Header::MaxForwards(rsip::headers::MaxForwards::new("70")));
    rsip::Request {
        method: rsip::Method::Ack,
        uri: request.uri.clone(),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

/// RFC 3261 17.1.2: the client non-INVITE transaction.
#[derive(Debug)]
pub struct ClientNonInvite {
    state: State,
    timers: Timers,
    reliable: bool,
    request: rsip::Request,
    request_bytes: Bytes,
    timer_e: Option<Timer>,
    timer_f: Option<Timer>,
    timer_k: Option<Timer>,
    out: Outputs,
}

impl ClientNonInvite {
    /// Starts the transaction: the request is queued for transmission.
    pub fn new(request: rsip::Request, reliable: bool, timers: Timers, now: Instant) -> Self {
        let request_bytes = to_bytes(request.clone());
        let mut out = Outputs::default();
        out.transmits.push_back(request_bytes.clone());
        Self {
            state: State::Trying,
            timers,
            reliable,
            request,
            request_bytes,
            timer_e: if reliable { None } else { arm(now, timers.t1) },
            timer_f: arm(now, timers.t1_x64()),
            timer_k: None,
            out,
        }
    }

    /// The request that started the transaction.
    pub fn request(&self) -> &rsip::Request {
        &self.request
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Feeds a response matched to this transaction.
    pub fn handle_response(&mut self, response: rsip::Response, now: Instant) {
        let code = response.status_code.code();
        match (self.state, code) {
            (State::Trying | State::Proceeding, 100..=199) => {
                self.state = State::Proceeding;
                self.out.events.push_back(TxEvent::Response(response));
            }
            (State::Trying | State::Proceeding, 200..=699) => {
                self.state = State::Completed;
                self.timer_e = None;
                self.timer_f = None;
                let k = if self.reliable {
                    Duration::ZERO
                } else {
                    self.timers.t4
                };
                self.timer_k = arm(now, k);
                self.out.events.push_back(TxEvent::Response(response));
            }
            _ => {}
        }
    }

    /// Fires whatever timers are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Trying | State::Proceeding => {
                if fired(&self.timer_f, now) {
                    self.terminate();
                    self.out.events.push_back(TxEvent::Timeout);
                    return;
                }
                if let Some(e) = self.timer_e.filter(|e| e.at <= now) {
                    self.out.transmits.push_back(self.request_bytes.clone());
                    // Trying: double up to T2; Proceeding: T2 (17.1.2.2).
                    let next = if self.state == State::Trying {
                        (e.interval * 2).min(self.timers.t2)
                    } else {
                        self.timers.t2
                    };
                    self.timer_e = Some(Timer {
                        at: e.at + next,
                        interval: next,
                    });
                }
            }
            State::Completed if fired(&self.timer_k, now) => self.terminate(),
            _ => {}
        }
    }

    /// The transport failed to send.
    pub fn handle_transport_error(&mut self) {
        if matches!(self.state, State::Trying | State::Proceeding) {
            self.out.events.push_back(TxEvent::TransportError);
        }
        self.terminate();
    }

    fn terminate(&mut self) {
        self.state = State::Terminated;
        self.timer_e = None;
        self.timer_f = None;
        self.timer_k = None;
    }

    /// Next bytes to send to the peer.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.out.transmits.pop_front()
    }

    /// Next event for the transaction user.
    pub fn poll_event(&mut self) -> Option<TxEvent> {
        self.out.events.pop_front()
    }

    /// When `handle_timeout` must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        earliest(&[&self.timer_e, &self.timer_f, &self.timer_k])
    }
}

/// RFC 3261 17.2.1 with RFC 6026 7.1: the server INVITE transaction.
#[derive(Debug)]
pub struct ServerInvite {
    state: State,
    timers: Timers,
    reliable: bool,
    request: rsip::Request,
    last_response: Option<Bytes>,
    timer_g: Option<Timer>,
    timer_h: Option<Timer>,
    timer_i: Option<Timer>,
    timer_l: Option<Timer>,
    out: Outputs,
}

impl ServerInvite {
    /// Creates the transaction for a new INVITE (state Proceeding). The
    /// transaction user sends 100 Trying through [`send_response`](Self::send_response).
    pub fn new(request: rsip::Request, reliable: bool, timers: Timers) -> Self {
        Self {
            state: State::Proceeding,
            timers,
            reliable,
            request,
            last_response: None,
            timer_g: None,
            timer_h: None,
            timer_i: None,
            timer_l: None,
            out: Outputs::default(),
        }
    }

    /// The INVITE that started the transaction.
    pub fn request(&self) -> &rsip::Request {
        &self.request
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether a final response has been sent.
    pub fn is_final(&self) -> bool {
        !matches!(self.state, State::Proceeding)
    }

    /// The transaction user sends a response. Returns false (and sends
    /// nothing) when the state does not allow it, e.g. a second final.
    pub fn send_response(&mut self, response: rsip::Response, now: Instant) -> bool {
        let code = response.status_code.code();
        match (self.state, code) {
            (State::Proceeding, 100..=199) => {
                let bytes = to_bytes(response);
                self.out.transmits.push_back(bytes.clone());
                self.last_response = Some(bytes);
                true
            }
            (State::Proceeding, 200..=299) => {
                let bytes = to_bytes(response);
                self.out.transmits.push_back(bytes.clone());
                self.last_response = Some(bytes);
                self.state = State::Accepted;
                self.timer_l = arm(now, self.timers.t1_x64());
                true
            }
            // RFC 6026 7.1: the TU retransmits its 2xx through the transport.
            (State::Accepted, 200..=299) => {
                self.out.transmits.push_back(to_bytes(response));
                true
            }
            (State::Proceeding, 300..=699) => {
                let bytes = to_bytes(response);
                self.out.transmits.push_back(bytes.clone());
                self.last_response = Some(bytes);
                self.state = State::Completed;
                if !self.reliable {
                    self.timer_g = arm(now, self.timers.t1);
                }
                self.timer_h = arm(now, self.timers.t1_x64());
                true
            }
            _ => false,
        }
    }

    /// Feeds a request matched to this transaction: an INVITE retransmission
    /// or the ACK for a non-2xx final response.
    pub fn handle_request(&mut self, request: rsip::Request, now: Instant) {
        match (self.state, request.method) {
            (State::Proceeding | State::Completed, rsip::Method::Invite) => {
                if let Some(bytes) = &self.last_response {
                    self.out.transmits.push_back(bytes.clone());
                }
            }
            (State::Completed, rsip::Method::Ack) => {
                self.state = State::Confirmed;
                self.timer_g = None;
                self.timer_h = None;
                let i = if self.reliable {
                    Duration::ZERO
                } else {
                    self.timers.t4
                };
                self.timer_i = arm(now, i);
            }
            (State::Accepted, rsip::Method::Ack) => {
                self.out.events.push_back(TxEvent::Ack(request));
            }
            // Accepted absorbs INVITE retransmissions; Confirmed absorbs ACKs.
            _ => {}
        }
    }

    /// Fires whatever timers are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Completed => {
                if fired(&self.timer_h, now) {
                    self.terminate();
                    self.out.events.push_back(TxEvent::Timeout);
                    return;
                }
                if let Some(g) = self.timer_g.filter(|g| g.at <= now) {
                    if let Some(bytes) = &self.last_response {
                        self.out.transmits.push_back(bytes.clone());
                    }
                    let next = (g.interval * 2).min(self.timers.t2);
                    self.timer_g = Some(Timer {
                        at: g.at + next,
                        interval: next,
                    });
                }
            }
            State::Confirmed if fired(&self.timer_i, now) => self.terminate(),
            State::Accepted if fired(&self.timer_l, now) => self.terminate(),
            _ => {}
        }
    }

    /// The transport failed to send.
    pub fn handle_transport_error(&mut self) {
        self.out.events.push_back(TxEvent::TransportError);
        self.terminate();
    }

    fn terminate(&mut self) {
        self.state = State::Terminated;
        self.timer_g = None;
        self.timer_h = None;
        self.timer_i = None;
        self.timer_l = None;
    }

    /// Next bytes to send to the peer.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.out.transmits.pop_front()
    }

    /// Next event for the transaction user.
    pub fn poll_event(&mut self) -> Option<TxEvent> {
        self.out.events.pop_front()
    }

    /// When `handle_timeout` must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        earliest(&[&self.timer_g, &self.timer_h, &self.timer_i, &self.timer_l])
    }
}

/// RFC 3261 17.2.2: the server non-INVITE transaction.
#[derive(Debug)]
pub struct ServerNonInvite {
    state: State,
    timers: Timers,
    reliable: bool,
    request: rsip::Request,
    last_response: Option<Bytes>,
    timer_j: Option<Timer>,
    out: Outputs,
}

impl ServerNonInvite {
    /// Creates the transaction for a new request (state Trying).
    pub fn new(request: rsip::Request, reliable: bool, timers: Timers) -> Self {
        Self {
            state: State::Trying,
            timers,
            reliable,
            request,
            last_response: None,
            timer_j: None,
            out: Outputs::default(),
        }
    }

    /// The request that started the transaction.
    pub fn request(&self) -> &rsip::Request {
        &self.request
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The transaction user sends a response; false when not allowed.
    pub fn send_response(&mut self, response: rsip::Response, now: Instant) -> bool {
        let code = response.status_code.code();
        match (self.state, code) {
            (State::Trying | State::Proceeding, 100..=199) => {
                let bytes = to_bytes(response);
                self.out.transmits.push_back(bytes.clone());
                self.last_response = Some(bytes);
                self.state = State::Proceeding;
                true
            }
            (State::Trying | State::Proceeding, 200..=699) => {
                let bytes = to_bytes(response);
                self.out.transmits.push_back(bytes.clone());
                self.last_response = Some(bytes);
                self.state = State::Completed;
                let j = if self.reliable {
                    Duration::ZERO
                } else {
                    self.timers.t1_x64()
                };
                self.timer_j = arm(now, j);
                true
            }
            _ => false,
        }
    }

    /// Feeds a retransmission of the request.
    pub fn handle_request(&mut self, _request: rsip::Request, _now: Instant) {
        // Trying absorbs; Proceeding and Completed resend the last response.
        if matches!(self.state, State::Proceeding | State::Completed)
            && let Some(bytes) = &self.last_response
        {
            self.out.transmits.push_back(bytes.clone());
        }
    }

    /// Fires whatever timers are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Completed && fired(&self.timer_j, now) {
            self.state = State::Terminated;
            self.timer_j = None;
        }
    }

    /// The transport failed to send.
    pub fn handle_transport_error(&mut self) {
        self.out.events.push_back(TxEvent::TransportError);
        self.state = State::Terminated;
        self.timer_j = None;
    }

    /// Next bytes to send to the peer.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.out.transmits.pop_front()
    }

    /// Next event for the transaction user.
    pub fn poll_event(&mut self) -> Option<TxEvent> {
        self.out.events.pop_front()
    }

    /// When `handle_timeout` must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer_j.map(|t| t.at)
    }
}

/// RFC 3261 17.2.3 server transaction key: branch, sent-by and method (ACK
/// maps to INVITE). For pre-RFC 3261 branches (no magic cookie) the
/// key falls back to the 17.2.3 compat fields we can compare exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerKey {
    branch: String,
    sent_by: String,
    method: String,
}

impl ServerKey {
    /// The key of an inbound request.
    pub fn of(summary: &crate::message::Summary, method: rsip::Method) -> Self {
        let method = match method {
            rsip::Method::Ack => "INVITE".to_string(),
            m => m.to_string(),
        };
        let branch = if summary
            .branch
            .starts_with(crate::message::BRANCH_MAGIC_COOKIE)
        {
            summary.branch.clone()
        } else {
            format!(
                "compat:{}:{}:{}:{}",
                summary.branch, summary.call_id, summary.from_tag, summary.cseq
            )
        };
        Self {
            branch,
            sent_by: summary.sent_by.to_ascii_lowercase(),
            method,
        }
    }

    /// The key of the INVITE transaction a CANCEL targets (RFC 3261 9.2).
    pub fn invite_of_cancel(&self) -> Self {
        Self {
            method: "INVITE".to_string(),
            ..self.clone()
        }
    }
}

/// RFC 3261 17.1.3 client transaction key: top Via branch and CSeq method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey {
    branch: String,
    method: String,
}

impl ClientKey {
    /// Key from a branch and a method (the CSeq method of responses; ACK
    /// and CANCEL keep their own).
    pub fn new(branch: &str, method: rsip::Method) -> Self {
        Self {
            branch: branch.to_string(),
            method: method.to_string(),
        }
    }

    /// Key of a response (RFC 3261 17.1.3).
    pub fn of_response(summary: &crate::message::Summary) -> Self {
        Self::new(&summary.branch, summary.cseq_method)
    }

    /// Key of a request we send.
    pub fn of_request(request: &rsip::Request) -> Self {
        let branch = request
            .headers
            .iter()
            .find_map(|h| match h {
                Header::Via(v) => param_value(v.value(), "branch").map(str::to_string),
                _ => None,
            })
            .unwrap_or_default();
        Self::new(&branch, request.method)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{parse, response_to};

    const INVITE: &str = "INVITE sip:bob@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKabc\r\n\
From: <sip:alice@127.0.0.1>;tag=a1\r\n\
To: <sip:bob@127.0.0.1>\r\n\
Call-ID: c1\r\n\
CSeq: 1 INVITE\r\n\
Max-Forwards: 70\r\n\
Content-Length: 0\r\n\r\n";

    fn request(raw: &str) -> rsip::Request {
        match parse(raw.as_bytes()).unwrap() {
            rsip::SipMessage::Request(r) => r,
            _ => panic!("not a request"),
        }
    }

    fn invite() -> rsip::Request {
        request(INVITE)
    }

    fn options() -> rsip::Request {
        request(
            &INVITE
                .replace("INVITE sip", "OPTIONS sip")
                .replace("1 INVITE", "1 OPTIONS"),
        )
    }

    fn resp(req: &rsip::Request, code: u16) -> rsip::Response {
        response_to(req, code, "", Some("b1"))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Steps the machine from one deadline to the next and records at which
    /// offsets (ms after `t0`) something was transmitted, until `until`.
    fn run<T>(
        m: &mut T,
        t0: Instant,
        until: Duration,
        timeout: impl Fn(&T) -> Option<Instant>,
        fire: impl Fn(&mut T, Instant),
        tx: impl Fn(&mut T) -> Option<Bytes>,
    ) -> Vec<u64> {
        let mut sent = Vec::new();
        while let Some(at) = timeout(m) {
            if at > t0 + until {
                break;
            }
            fire(m, at);
            while tx(m).is_some() {
                sent.push((at - t0).as_millis() as u64);
            }
        }
        sent
    }

    #[test]
    fn client_invite_timer_a_and_b_over_udp() {
        let t0 = Instant::now();
        let mut tx = ClientInvite::new(invite(), false, Timers::default(), t0);
        assert!(tx.poll_transmit().is_some(), "initial INVITE sent at 0");
        let sent = run(
            &mut tx,
            t0,
            ms(40_000),
            ClientInvite::poll_timeout,
            ClientInvite::handle_timeout,
            ClientInvite::poll_transmit,
        );
        // Timer A: T1, 2T1, 4T1... (no cap), until timer B = 64*T1 = 32 s.
        assert_eq!(sent, vec![500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(tx.state(), State::Terminated);
        assert_eq!(tx.poll_event(), Some(TxEvent::Timeout));
    }

    #[test]
    fn client_invite_timer_b_fires_exactly_at_64_t1() {
        let t0 = Instant::now();
        let mut tx = ClientInvite::new(invite(), true, Timers::default(), t0);
        tx.poll_transmit();
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(32_000)), "reliable: no A");
        tx.handle_timeout(t0 + ms(31_999));
        assert_eq!(tx.poll_event(), None);
        tx.handle_timeout(t0 + ms(32_000));
        assert_eq!(tx.poll_event(), Some(TxEvent::Timeout));
    }

    #[test]
    fn client_invite_non_2xx_acks_and_timer_d() {
        let t0 = Instant::now();
        let req = invite();
        let mut tx = ClientInvite::new(req.clone(), false, Timers::default(), t0);
        tx.poll_transmit();
        tx.handle_response(resp(&req, 180), t0 + ms(100));
        assert_eq!(tx.state(), State::Proceeding);
        assert!(matches!(tx.poll_event(), Some(TxEvent::Response(_))));
        // No timer A in Proceeding.
        tx.handle_timeout(t0 + ms(600));
        assert!(tx.poll_transmit().is_none());
        tx.handle_response(resp(&req, 486), t0 + ms(1000));
        assert_eq!(tx.state(), State::Completed);
        let ack = tx.poll_transmit().expect("ACK sent");
        let ack = request(std::str::from_utf8(&ack).unwrap());
        assert_eq!(ack.method, rsip::Method::Ack);
        assert!(ack.to_string().contains("tag=b1"));
        assert!(ack.to_string().contains("CSeq: 1 ACK"));
        // Retransmitted 486 -> ACK again, not passed up.
        assert!(matches!(tx.poll_event(), Some(TxEvent::Response(_))));
        tx.handle_response(resp(&req, 486), t0 + ms(2000));
        assert!(tx.poll_transmit().is_some());
        assert_eq!(tx.poll_event(), None);
        // Timer D: 32 s after the final response.
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(33_000)));
        tx.handle_timeout(t0 + ms(33_000));
        assert_eq!(tx.state(), State::Terminated);
    }

    #[test]
    fn client_invite_2xx_accepted_and_timer_m() {
        let t0 = Instant::now();
        let req = invite();
        let mut tx = ClientInvite::new(req.clone(), false, Timers::default(), t0);
        tx.poll_transmit();
        tx.handle_response(resp(&req, 200), t0 + ms(200));
        assert_eq!(tx.state(), State::Accepted);
        assert!(matches!(tx.poll_event(), Some(TxEvent::Response(_))));
        assert!(tx.poll_transmit().is_none(), "2xx ACK is the TU's");
        tx.handle_response(resp(&req, 200), t0 + ms(700));
        assert!(
            matches!(tx.poll_event(), Some(TxEvent::Response(_))),
            "2xx retransmissions reach the TU"
        );
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(32_200)));
        tx.handle_timeout(t0 + ms(32_200));
        assert_eq!(tx.state(), State::Terminated);
    }

    #[test]
    fn client_non_invite_timer_e_caps_at_t2_and_f() {
        let t0 = Instant::now();
        let mut tx = ClientNonInvite::new(options(), false, Timers::default(), t0);
        tx.poll_transmit();
        let sent = run(
            &mut tx,
            t0,
            ms(40_000),
            ClientNonInvite::poll_timeout,
            ClientNonInvite::handle_timeout,
            ClientNonInvite::poll_transmit,
        );
        // E: 500, +1000, +2000, +4000 (T2 cap), +4000 ... until F at 32 s.
        assert_eq!(
            sent,
            vec![
                500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
            ]
        );
        assert_eq!(tx.poll_event(), Some(TxEvent::Timeout));
        assert_eq!(tx.state(), State::Terminated);
    }

    #[test]
    fn client_non_invite_proceeding_uses_t2_then_timer_k() {
        let t0 = Instant::now();
        let req = options();
        let mut tx = ClientNonInvite::new(req.clone(), false, Timers::default(), t0);
        tx.poll_transmit();
        tx.handle_timeout(t0 + ms(500));
        assert!(tx.poll_transmit().is_some());
        tx.handle_response(resp(&req, 100), t0 + ms(600));
        assert_eq!(tx.state(), State::Proceeding);
        // E was armed for 1500; in Proceeding the next interval is T2.
        tx.handle_timeout(t0 + ms(1500));
        assert!(tx.poll_transmit().is_some());
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(5500)));
        tx.handle_response(resp(&req, 200), t0 + ms(2000));
        assert_eq!(tx.state(), State::Completed);
        // K = T4 = 5 s over UDP.
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(7000)));
        tx.handle_timeout(t0 + ms(6999));
        assert_eq!(tx.state(), State::Completed);
        tx.handle_timeout(t0 + ms(7000));
        assert_eq!(tx.state(), State::Terminated);
    }

    #[test]
    fn client_non_invite_reliable_k_is_zero() {
        let t0 = Instant::now();
        let req = options();
        let mut tx = ClientNonInvite::new(req.clone(), true, Timers::default(), t0);
        tx.poll_transmit();
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(32_000)));
        tx.handle_response(resp(&req, 200), t0 + ms(10));
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(10)));
        tx.handle_timeout(t0 + ms(10));
        assert_eq!(tx.state(), State::Terminated);
    }

    #[test]
    fn server_invite_timer_g_h_over_udp() {
        let t0 = Instant::now();
        let req = invite();
        let mut tx = ServerInvite::new(req.clone(), false, Timers::default());
        assert!(tx.send_response(resp(&req, 100), t0));
        assert!(tx.poll_transmit().is_some());
        // Retransmitted INVITE in Proceeding: last provisional resent.
        tx.handle_request(req.clone(), t0 + ms(10));
        assert!(tx.poll_transmit().is_some());
        assert!(tx.send_response(resp(&req, 486), t0 + ms(20)));
        assert!(tx.poll_transmit().is_some());
        let sent = run(
            &mut tx,
            t0 + ms(20),
            ms(40_000),
            ServerInvite::poll_timeout,
            ServerInvite::handle_timeout,
            ServerInvite::poll_transmit,
        );
        // G: 500, 1000, 2000, 4000 (T2 cap), 4000... until H at 32 s.
        assert_eq!(
            sent,
            vec![
                500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
            ]
        );
        assert_eq!(tx.poll_event(), Some(TxEvent::Timeout));
        assert_eq!(tx.state(), State::Terminated);
    }

    #[test]
    fn server_invite_ack_confirms_and_timer_i() {
        let t0 = Instant::now();
        let req = invite();
        let mut tx = ServerInvite::new(req.clone(), false, Timers::default());
        tx.send_response(resp(&req, 404), t0);
        tx.poll_transmit();
        let ack = request(
            &INVITE
                .replace("INVITE sip", "ACK sip")
                .replace("1 INVITE", "1 ACK"),
        );
        tx.handle_request(ack.clone(), t0 + ms(300));
        assert_eq!(tx.state(), State::Confirmed);
        // No more G retransmissions; I = T4.
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(5300)));
        tx.handle_request(ack, t0 + ms(400));
        assert!(tx.poll_transmit().is_none(), "ACK retransmission absorbed");
        tx.handle_timeout(t0 + ms(5300));
        assert_eq!(tx.state(), State::Terminated);
    }

    #[test]
    fn server_invite_reliable_has_no_g_and_zero_i() {
        let t0 = Instant::now();
        let req = invite();
        let mut tx = ServerInvite::new(req.clone(), true, Timers::default());
        tx.send_response(resp(&req, 404), t0);
        tx.poll_transmit();
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(32_000)), "only H");
        let ack = request(
            &INVITE
                .replace("INVITE sip", "ACK sip")
                .replace("1 INVITE", "1 ACK"),
        );
        tx.handle_request(ack, t0 + ms(5));
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(5)));
        tx.handle_timeout(t0 + ms(5));
        assert_eq!(tx.state(), State::Terminated);
    }

    #[test]
    fn server_invite_2xx_accepted_absorbs_retransmits_until_l() {
        let t0 = Instant::now();
        let req = invite();
        let mut tx = ServerInvite::new(req.clone(), false, Timers::default());
        tx.send_response(resp(&req, 200), t0);
        tx.poll_transmit();
        assert_eq!(tx.state(), State::Accepted);
        tx.handle_request(req.clone(), t0 + ms(100));
        assert!(
            tx.poll_transmit().is_none(),
            "INVITE retransmission absorbed"
        );
        assert!(!tx.send_response(resp(&req, 486), t0 + ms(200)));
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(32_000)));
        tx.handle_timeout(t0 + ms(32_000));
        assert_eq!(tx.state(), State::Terminated);
    }

    #[test]
    fn server_non_invite_timer_j() {
        let t0 = Instant::now();
        let req = options();
        let mut tx = ServerNonInvite::new(req.clone(), false, Timers::default());
        tx.handle_request(req.clone(), t0);
        assert!(tx.poll_transmit().is_none(), "Trying absorbs");
        tx.send_response(resp(&req, 200), t0 + ms(1));
        assert!(tx.poll_transmit().is_some());
        tx.handle_request(req.clone(), t0 + ms(600));
        assert!(tx.poll_transmit().is_some(), "Completed resends final");
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(32_001)));
        tx.handle_timeout(t0 + ms(32_000));
        assert_eq!(tx.state(), State::Completed);
        tx.handle_timeout(t0 + ms(32_001));
        assert_eq!(tx.state(), State::Terminated);
        let mut reliable = ServerNonInvite::new(req.clone(), true, Timers::default());
        reliable.send_response(resp(&req, 200), t0);
        assert_eq!(reliable.poll_timeout(), Some(t0));
    }

    #[test]
    fn keys_match_rfc_17_2_3() {
        let req = invite();
        let s = crate::message::Summary::of(&rsip::SipMessage::Request(req.clone())).unwrap();
        let k_invite = ServerKey::of(&s, rsip::Method::Invite);
        let k_ack = ServerKey::of(&s, rsip::Method::Ack);
        let k_cancel = ServerKey::of(&s, rsip::Method::Cancel);
        assert_eq!(k_invite, k_ack);
        assert_ne!(k_invite, k_cancel);
        assert_eq!(k_cancel.invite_of_cancel(), k_invite);
        assert_eq!(
            ClientKey::of_request(&req),
            ClientKey::new("z9hG4bKabc", rsip::Method::Invite)
        );
    }
}
