//! The tokio transport driver: one task owns the [`Endpoint`] and the UDP
//! socket and TCP listener bound on the same address (RFC 3261 18: a UAS
//! listens on both), and drives the endpoint by the drain rule.
//!
//! - UDP: one datagram is one message.
//! - TCP: each connection has a reader task that frames the stream with
//!   [`StreamFramer`] (Content-Length, CRLF keep-alive answered with a pong)
//!   and a writer task fed by a bounded channel. Responses on TCP go back over
//!   the connection the request came on (RFC 3261 18.2.2); when that
//!   connection is gone, or for a request we originate, a connection to the
//!   destination is reused or opened.
//! - Time: `now` is read from the tokio clock, so tests with a paused clock
//!   drive the retransmission timers.
//!
//! The application talks to the driver through a [`SipHandle`] (commands)
//! and receives [`Event`]s on a bounded channel. An INVITE that finds the
//! event channel full is answered 503 with Retry-After at once: the gateway is
//! overloaded, and the caller's proxy can try another node.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::auth::Credentials;
use crate::endpoint::{
    CallError, CallHandle, ConnectionId, Endpoint, EndpointConfig, Event, Peer, Transmit,
    TransportKind,
};
use crate::framing::{Frame, PONG, StreamFramer};
use crate::register::{RegistrationConfig, RegistrationId};

/// Events waiting for the application before INVITEs are refused with 503.
pub const EVENT_QUEUE: usize = 1024;
/// Frames waiting to be written on one TCP connection before it is closed
/// as stuck.
const WRITE_QUEUE: usize = 256;
/// Messages read from all TCP connections waiting for the endpoint task.
const INBOUND_QUEUE: usize = 1024;
/// How long an outbound TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stopping driver waits for unregisters to be answered.
const UNREGISTER_BUDGET: Duration = Duration::from_secs(5);
/// Retry-After (seconds) on the 503 sent when the application is behind.
const OVERLOAD_RETRY_AFTER_S: u32 = 5;

/// Driver settings.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Address to bind for UDP and TCP. Port 0 picks a free UDP port and
    /// binds TCP on the same port.
    pub bind: SocketAddr,
    /// Endpoint settings; `advertised` is replaced by the bound address
    /// when it has port 0 or an unspecified IP.
    pub endpoint: EndpointConfig,
    /// Seed for tags, branches and Call-IDs.
    pub seed: u64,
}

/// A command from the application to the endpoint task.
#[derive(Debug)]
enum Command {
    Ring {
        call: CallHandle,
        code: u16,
        body: Vec<u8>,
        reply: oneshot::Sender<Result<(), CallError>>,
    },
    Answer {
        call: CallHandle,
        sdp: Vec<u8>,
        reply: oneshot::Sender<Result<(), CallError>>,
    },
    Reject {
        call: CallHandle,
        code: u16,
        reason: String,
        extra: Vec<(String, String)>,
        reply: oneshot::Sender<Result<(), CallError>>,
    },
    Hangup {
        call: CallHandle,
        reply: oneshot::Sender<Result<(), CallError>>,
    },
    Invite {
        target: String,
        from_uri: String,
        to_uri: String,
        sdp: Vec<u8>,
        peer: Peer,
        creds: Option<Credentials>,
        reply: oneshot::Sender<Result<CallHandle, CallError>>,
    },
    Register {
        cfg: Box<RegistrationConfig>,
        reply: oneshot::Sender<RegistrationId>,
    },
    Unregister {
        registration: RegistrationId,
        reply: oneshot::Sender<Result<(), CallError>>,
    },
    UnregisterAll {
        reply: oneshot::Sender<()>,
    },
    AnswerReinvite {
        call: CallHandle,
        sdp: Vec<u8>,
        reply: oneshot::Sender<Result<(), CallError>>,
    },
    RejectReinvite {
        call: CallHandle,
        code: u16,
        reason: String,
        reply: oneshot::Sender<Result<(), CallError>>,
    },
    Refer {
        call: CallHandle,
        refer_to: String,
        reply: oneshot::Sender<Result<(), CallError>>,
    },
    Notify {
        call: CallHandle,
        status: u16,
        terminated: bool,
        reply: oneshot::Sender<Result<(), CallError>>,
    },
    Stats {
        reply: oneshot::Sender<DriverStats>,
    },
}

/// The driver task stopped before answering a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// The endpoint refused the command.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The driver task has ended.
    #[error("the SIP transport driver has stopped")]
    Stopped,
}

/// Counts the driver keeps, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Calls the endpoint is tracking.
    pub calls: usize,
    /// Open TCP connections.
    pub tcp_connections: usize,
    /// INVITEs answered 503 because the application was behind.
    pub overload_rejects: u64,
    /// Endpoint counters.
    pub endpoint: crate::endpoint::Stats,
}

/// The application's side of a running driver. Cloneable; the driver stops
/// when every handle is dropped.
#[derive(Debug, Clone)]
pub struct SipHandle {
    commands: mpsc::Sender<Command>,
    local: SocketAddr,
}

impl SipHandle {
    /// The bound address (UDP and TCP share it).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, DriverError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)
    }

    /// Sends a provisional response (180, 183 with `body` as early media).
    pub async fn ring(
        &self,
        call: CallHandle,
        code: u16,
        body: Vec<u8>,
    ) -> Result<(), DriverError> {
        Ok(self
            .call(|reply| Command::Ring {
                call,
                code,
                body,
                reply,
            })
            .await??)
    }

    /// Answers an incoming call with `sdp`.
    pub async fn answer(&self, call: CallHandle, sdp: Vec<u8>) -> Result<(), DriverError> {
        Ok(self
            .call(|reply| Command::Answer { call, sdp, reply })
            .await??)
    }

    /// Rejects an incoming call with a final status and extra headers.
    pub async fn reject(
        &self,
        call: CallHandle,
        code: u16,
        reason: &str,
        extra: Vec<(String, String)>,
    ) -> Result<(), DriverError> {
        let reason = reason.to_string();
        Ok(self
            .call(|reply| Command::Reject {
                call,
                code,
                reason,
                extra,
                reply,
            })
            .await??)
    }

    /// Ends a call: BYE when established, 480 or CANCEL before.
    pub async fn hangup(&self, call: CallHandle) -> Result<(), DriverError> {
        Ok(self.call(|reply| Command::Hangup { call, reply }).await??)
    }

    /// Places an outbound call (see [`Endpoint::invite`]).
    pub async fn invite(
        &self,
        target: &str,
        from_uri: &str,
        to_uri: &str,
        sdp: Vec<u8>,
        peer: Peer,
    ) -> Result<CallHandle, DriverError> {
        let (target, from_uri, to_uri) = (target.into(), from_uri.into(), to_uri.into());
        Ok(self
            .call(|reply| Command::Invite {
                target,
                from_uri,
                to_uri,
                sdp,
                peer,
                creds: None,
                reply,
            })
            .await??)
    }

    /// Places an outbound call answering 401/407 challenges with `creds`
    /// (see [`Endpoint::invite_with_auth`]).
    pub async fn invite_with_auth(
        &self,
        target: &str,
        from_uri: &str,
        to_uri: &str,
        sdp: Vec<u8>,
        peer: Peer,
        creds: Option<Credentials>,
    ) -> Result<CallHandle, DriverError> {
        let (target, from_uri, to_uri) = (target.into(), from_uri.into(), to_uri.into());
        Ok(self
            .call(|reply| Command::Invite {
                target,
                from_uri,
                to_uri,
                sdp,
                peer,
                creds,
                reply,
            })
            .await??)
    }

    /// Starts a registration (see [`Endpoint::register`]); its progress
    /// arrives as [`Event::Registration`].
    pub async fn register(&self, cfg: RegistrationConfig) -> Result<RegistrationId, DriverError> {
        let cfg = Box::new(cfg);
        self.call(|reply| Command::Register { cfg, reply }).await
    }

    /// Removes a registration's binding (REGISTER with Expires: 0).
    pub async fn unregister(&self, registration: RegistrationId) -> Result<(), DriverError> {
        Ok(self
            .call(|reply| Command::Unregister {
                registration,
                reply,
            })
            .await??)
    }

    /// Unregisters everything (for shutdown); each ends with
    /// [`RegistrationState::Unregistered`](crate::register::RegistrationState::Unregistered).
    /// The driver also does this by itself when the last handle is dropped.
    pub async fn unregister_all(&self) -> Result<(), DriverError> {
        self.call(|reply| Command::UnregisterAll { reply }).await
    }

    /// Answers the peer's re-INVITE (after [`Event::Reinvite`]) with `sdp`
    /// (see [`Endpoint::answer_reinvite`]).
    pub async fn answer_reinvite(&self, call: CallHandle, sdp: Vec<u8>) -> Result<(), DriverError> {
        Ok(self
            .call(|reply| Command::AnswerReinvite { call, sdp, reply })
            .await??)
    }

    /// Refuses the peer's re-INVITE (see [`Endpoint::reject_reinvite`]).
    pub async fn reject_reinvite(
        &self,
        call: CallHandle,
        code: u16,
        reason: &str,
    ) -> Result<(), DriverError> {
        let reason = reason.to_string();
        Ok(self
            .call(|reply| Command::RejectReinvite {
                call,
                code,
                reason,
                reply,
            })
            .await??)
    }

    /// Transfers the peer of a confirmed call with an in-dialog REFER
    /// (see [`Endpoint::refer`]); the outcome arrives as [`Event::Refer`].
    pub async fn refer(&self, call: CallHandle, refer_to: &str) -> Result<(), DriverError> {
        let refer_to = refer_to.to_string();
        Ok(self
            .call(|reply| Command::Refer {
                call,
                refer_to,
                reply,
            })
            .await??)
    }

    /// Reports the progress of a transfer the peer asked for with an
    /// in-dialog NOTIFY (see [`Endpoint::notify`]).
    pub async fn notify(
        &self,
        call: CallHandle,
        status: u16,
        terminated: bool,
    ) -> Result<(), DriverError> {
        Ok(self
            .call(|reply| Command::Notify {
                call,
                status,
                terminated,
                reply,
            })
            .await??)
    }

    /// The driver's counters.
    pub async fn stats(&self) -> Result<DriverStats, DriverError> {
        self.call(|reply| Command::Stats { reply }).await
    }
}

/// Binds UDP and TCP on `cfg.bind` and starts the driver task.
///
/// Returns the handle, the event stream and the task (which ends when every
/// [`SipHandle`] is dropped).
pub async fn spawn(
    cfg: TransportConfig,
) -> io::Result<(SipHandle, mpsc::Receiver<Event>, JoinHandle<()>)> {
    let udp = UdpSocket::bind(cfg.bind).await?;
    let local = udp.local_addr()?;
    let listener = TcpListener::bind(local).await?;
    let mut ecfg = cfg.endpoint;
    if ecfg.advertised.port() == 0 || ecfg.advertised.ip().is_unspecified() {
        let ip = if ecfg.advertised.ip().is_unspecified() {
            local.ip()
        } else {
            ecfg.advertised.ip()
        };
        let port = if ecfg.advertised.port() == 0 {
            local.port()
        } else {
            ecfg.advertised.port()
        };
        ecfg.advertised = SocketAddr::new(ip, port);
    }
    let (cmd_tx, cmd_rx) = mpsc::channel(256);
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
    let (in_tx, in_rx) = mpsc::channel(INBOUND_QUEUE);
    let driver = Driver {
        endpoint: Endpoint::new(ecfg, cfg.seed),
        udp,
        listener,
        events: ev_tx,
        backlog: VecDeque::new(),
        inbound_tx: in_tx,
        connections: HashMap::new(),
        by_addr: HashMap::new(),
        next_conn: 1,
        overload_rejects: 0,
    };
    tracing::info!(%local, "SIP listening on UDP and TCP");
    let task = tokio::spawn(driver.run(cmd_rx, in_rx));
    Ok((
        SipHandle {
            commands: cmd_tx,
            local,
        },
        ev_rx,
        task,
    ))
}

/// What connection tasks tell the endpoint task.
enum Inbound {
    Message { peer: Peer, bytes: Bytes },
    Closed(ConnectionId),
}

/// Why the driver loop woke up.
enum Wake {
    Udp(io::Result<(usize, SocketAddr)>),
    Accept(io::Result<(TcpStream, SocketAddr)>),
    Inbound(Inbound),
    Command(Command),
    Timer,
}

struct Connection {
    addr: SocketAddr,
    writer: mpsc::Sender<Bytes>,
}

struct Driver {
    endpoint: Endpoint,
    udp: UdpSocket,
    listener: TcpListener,
    events: mpsc::Sender<Event>,
    /// Events other than new calls that found the channel full; they are
    /// never dropped (a lost CallEnded would leak a call).
    backlog: VecDeque<Event>,
    inbound_tx: mpsc::Sender<Inbound>,
    connections: HashMap<ConnectionId, Connection>,
    by_addr: HashMap<SocketAddr, ConnectionId>,
    next_conn: u64,
    overload_rejects: u64,
}

impl Driver {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut inbound: mpsc::Receiver<Inbound>,
    ) {
        let mut buf = vec![0u8; 65_536];
        // Set when the last handle is gone: bindings are removed
        // (Expires: 0) before the driver stops, within UNREGISTER_BUDGET.
        let mut closing: Option<Instant> = None;
        loop {
            self.drain().await;
            if let Some(until) = closing
                && (self.endpoint.registration_count() == 0 || Instant::now() >= until)
            {
                self.drain().await;
                break;
            }
            let deadline = self.endpoint.poll_timeout().map(Instant::from_std);
            let backlog_wait = !self.backlog.is_empty();
            let wake = tokio::select! {
                r = self.udp.recv_from(&mut buf) => Wake::Udp(r),
                r = self.listener.accept() => Wake::Accept(r),
                Some(msg) = inbound.recv() => Wake::Inbound(msg),
                cmd = commands.recv(), if closing.is_none() => match cmd {
                    Some(cmd) => Wake::Command(cmd),
                    None if self.endpoint.registration_count() > 0 => {
                        self.endpoint.unregister_all(now());
                        closing = Some(Instant::now() + UNREGISTER_BUDGET);
                        continue;
                    }
                    None => break,
                },
                _ = sleep_until(closing), if closing.is_some() => continue,
                _ = sleep_until(deadline), if deadline.is_some() => Wake::Timer,
                permit = self.events.reserve(), if backlog_wait => {
                    if let (Ok(permit), Some(ev)) = (permit, self.backlog.pop_front()) {
                        permit.send(ev);
                    }
                    continue;
                }
            };
            match wake {
                Wake::Udp(Ok((n, addr))) => {
                    let peer = Peer {
                        transport: TransportKind::Udp,
                        addr,
                        connection: None,
                    };
                    self.endpoint.handle_input(peer, &buf[..n], now());
                }
                // ICMP port unreachable surfaces here on some systems.
                Wake::Udp(Err(e)) => tracing::debug!(error = %e, "UDP receive error"),
                Wake::Accept(Ok((stream, addr))) => self.adopt(stream, addr),
                Wake::Accept(Err(e)) => {
                    tracing::warn!(error = %e, "TCP accept failed");
                    // Out of descriptors: do not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Wake::Inbound(Inbound::Message { peer, bytes }) => {
                    self.endpoint.handle_input(peer, &bytes, now())
                }
                Wake::Inbound(Inbound::Closed(id)) => self.forget(id),
                Wake::Command(cmd) => self.command(cmd),
                Wake::Timer => self.endpoint.handle_timeout(now()),
            }
        }
        tracing::info!("SIP transport driver stopped");
    }

    fn command(&mut self, cmd: Command) {
        let t = now();
        // A reply the application stopped waiting for is not an error.
        match cmd {
            Command::Ring {
                call,
                code,
                body,
                reply,
            } => {
                let _ = reply.send(self.endpoint.ring(call, code, body, t));
            }
            Command::Answer { call, sdp, reply } => {
                let _ = reply.send(self.endpoint.answer(call, sdp, t));
            }
            Command::Reject {
                call,
                code,
                reason,
                extra,
                reply,
            } => {
                let _ = reply.send(self.endpoint.reject(call, code, &reason, extra, t));
            }
            Command::Hangup { call, reply } => {
                let _ = reply.send(self.endpoint.hangup(call, t));
            }
            Command::Invite {
                target,
                from_uri,
                to_uri,
                sdp,
                peer,
                creds,
                reply,
            } => {
                let _ = reply.send(
                    self.endpoint
                        .invite_with_auth(&target, &from_uri, &to_uri, sdp, peer, creds, t),
                );
            }
            Command::Register { cfg, reply } => {
                let _ = reply.send(self.endpoint.register(*cfg, t));
            }
            Command::Unregister {
                registration,
                reply,
            } => {
                let _ = reply.send(self.endpoint.unregister(registration, t));
            }
            Command::UnregisterAll { reply } => {
                self.endpoint.unregister_all(t);
                let _ = reply.send(());
            }
            Command::AnswerReinvite { call, sdp, reply } => {
                let _ = reply.send(self.endpoint.answer_reinvite(call, sdp, t));
            }
            Command::RejectReinvite {
                call,
                code,
                reason,
                reply,
            } => {
                let _ = reply.send(self.endpoint.reject_reinvite(call, code, &reason, t));
            }
            Command::Refer {
                call,
                refer_to,
                reply,
            } => {
                let _ = reply.send(self.endpoint.refer(call, &refer_to, t));
            }
            Command::Notify {
                call,
                status,
                terminated,
                reply,
            } => {
                let _ = reply.send(self.endpoint.notify(call, status, terminated, t));
            }
            Command::Stats { reply } => {
                let _ = reply.send(DriverStats {
                    calls: self.endpoint.call_count(),
                    tcp_connections: self.connections.len(),
                    overload_rejects: self.overload_rejects,
                    endpoint: self.endpoint.stats(),
                });
            }
        }
    }

    /// The drain rule: transmit and deliver everything the endpoint has.
    async fn drain(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.endpoint.poll_transmit() {
                progressed = true;
                self.transmit(t).await;
            }
            while let Some(ev) = self.endpoint.poll_event() {
                progressed = true;
                self.deliver(ev);
            }
            if !progressed {
                return;
            }
        }
    }

    fn deliver(&mut self, ev: Event) {
        if !self.backlog.is_empty() {
            if let Event::IncomingCall(call) = ev {
                self.overloaded(call.call);
            } else {
                self.backlog.push_back(ev);
            }
            return;
        }
        match self.events.try_send(ev) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(Event::IncomingCall(call))) => {
                self.overloaded(call.call);
            }
            Err(mpsc::error::TrySendError::Full(ev)) => self.backlog.push_back(ev),
            // The application is gone; nothing to tell.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn overloaded(&mut self, call: CallHandle) {
        self.overload_rejects += 1;
        metrics::counter!("voicegate_sip_overload_rejects_total").increment(1);
        tracing::warn!(%call, "event queue full: rejecting INVITE with 503");
        let _ = self.endpoint.reject(
            call,
            503,
            "Service Unavailable",
            vec![("Retry-After".into(), OVERLOAD_RETRY_AFTER_S.to_string())],
            now(),
        );
    }

    async fn transmit(&mut self, t: Transmit) {
        match t.peer.transport {
            TransportKind::Udp => {
                if let Err(e) = self.udp.send_to(&t.bytes, t.peer.addr).await {
                    tracing::debug!(peer = %t.peer.addr, error = %e, "UDP send failed");
                }
            }
            TransportKind::Tcp => self.send_tcp(t.peer, t.bytes),
        }
    }

    fn send_tcp(&mut self, peer: Peer, bytes: Bytes) {
        let id = peer
            .connection
            .filter(|id| self.connections.contains_key(id))
            .or_else(|| self.by_addr.get(&peer.addr).copied());
        let id = match id {
            Some(id) => id,
            None => self.connect(peer.addr),
        };
        let Some(conn) = self.connections.get(&id) else {
            return;
        };
        if conn.writer.try_send(bytes).is_err() {
            tracing::warn!(peer = %conn.addr, "TCP write queue full or closed: closing connection");
            self.forget(id);
        }
    }

    fn new_id(&mut self) -> ConnectionId {
        let id = ConnectionId(self.next_conn);
        self.next_conn += 1;
        id
    }

    /// Registers an accepted connection and starts its tasks.
    fn adopt(&mut self, stream: TcpStream, addr: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let id = self.new_id();
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        self.register(id, addr, tx.clone());
        tokio::spawn(connection(
            stream,
            id,
            addr,
            tx,
            rx,
            self.inbound_tx.clone(),
        ));
    }

    /// Opens a connection to `addr`; frames queue until it is up.
    fn connect(&mut self, addr: SocketAddr) -> ConnectionId {
        let id = self.new_id();
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        self.register(id, addr, tx.clone());
        let inbound = self.inbound_tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    connection(stream, id, addr, tx, rx, inbound).await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(peer = %addr, error = %e, "TCP connect failed");
                    let _ = inbound.send(Inbound::Closed(id)).await;
                }
                Err(_) => {
                    tracing::debug!(peer = %addr, "TCP connect timed out");
                    let _ = inbound.send(Inbound::Closed(id)).await;
                }
            }
        });
        id
    }

    fn register(&mut self, id: ConnectionId, addr: SocketAddr, writer: mpsc::Sender<Bytes>) {
        self.connections.insert(id, Connection { addr, writer });
        self.by_addr.insert(addr, id);
        metrics::gauge!("voicegate_sip_tcp_connections").set(self.connections.len() as f64);
    }

    fn forget(&mut self, id: ConnectionId) {
        if let Some(conn) = self.connections.remove(&id) {
            if self.by_addr.get(&conn.addr) == Some(&id) {
                self.by_addr.remove(&conn.addr);
            }
            metrics::gauge!("voicegate_sip_tcp_connections").set(self.connections.len() as f64);
        }
    }
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Runs one TCP connection: a reader that frames messages for the endpoint
/// task and answers keep-alive pings, and a writer draining `rx`.
async fn connection(
    stream: TcpStream,
    id: ConnectionId,
    addr: SocketAddr,
    tx: mpsc::Sender<Bytes>,
    mut rx: mpsc::Receiver<Bytes>,
    inbound: mpsc::Sender<Inbound>,
) {
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if let Err(e) = write.write_all(&bytes).await {
                tracing::debug!(peer = %addr, error = %e, "TCP write failed");
                break;
            }
        }
        let _ = write.shutdown().await;
    });
    let peer = Peer {
        transport: TransportKind::Tcp,
        addr,
        connection: Some(id),
    };
    let mut framer = StreamFramer::new();
    let mut buf = vec![0u8; 16 * 1024];
    'read: loop {
        let n = match read.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(peer = %addr, error = %e, "TCP read failed");
                break;
            }
        };
        framer.push(&buf[..n]);
        loop {
            match framer.next_frame() {
                Ok(None) => break,
                Ok(Some(Frame::Ping)) => {
                    if tx.try_send(Bytes::from_static(PONG)).is_err() {
                        break 'read;
                    }
                }
                Ok(Some(Frame::Message(bytes))) => {
                    if inbound
                        .send(Inbound::Message { peer, bytes })
                        .await
                        .is_err()
                    {
                        break 'read;
                    }
                }
                Err(e) => {
                    // The stream cannot be resynchronised (RFC 3261 18.3).
                    metrics::counter!("voicegate_sip_malformed_total").increment(1);
                    tracing::debug!(peer = %addr, error = %e, "closing TCP connection");
                    break 'read;
                }
            }
        }
    }
    drop(tx);
    let _ = inbound.send(Inbound::Closed(id)).await;
    // The endpoint task drops its sender on Closed; the writer then ends.
    let _ = writer.await;
}
