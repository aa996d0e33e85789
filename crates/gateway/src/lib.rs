//! voicegate: the gateway binary's library — configuration, the call router,
//! per-call orchestration, the HTTP listener and shutdown.
//!
//! [`start`] binds everything and returns a running [`Gateway`] (tests start
//! one on port 0); [`run`] is the binary's entry: it starts a gateway and
//! shuts it down in two phases as signals arrive.
//!
//! # Shutdown
//!
//! Phase one ([`Gateway::drain`]): new INVITEs are answered 503 Service
//! Unavailable with Retry-After, `/healthz` answers 503 so load balancers
//! stop sending, and live calls go on. Phase two ([`Gateway::hang_up_all`]):
//! every live call is ended with BYE (or 480 if not yet answered). [`run`]
//! enters phase two on the second signal or when the drain timeout passes.

pub mod access;
pub mod caller;
pub mod config;
pub mod records;
pub mod trunks;
pub mod webhook;

mod api;
mod bridge;
mod call;
mod conversation;
mod http;
mod outbound;
mod redact;
mod speech;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use dashmap::DashMap;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use voicegate_engine::{PythonAgent, PythonAgentConfig};
use voicegate_media::port_pool::SharedPortPool;
use voicegate_sip::endpoint::{CallHandle, EndpointConfig, Event};
use voicegate_sip::transport::{self, SipHandle, TransportConfig};

pub use config::Config;

use crate::call::CallSignal;

/// State shared by the router, the call tasks and the HTTP listener.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) sip: SipHandle,
    pub(crate) ports: SharedPortPool,
    /// Loaded agents by id.
    pub(crate) agents: std::collections::HashMap<String, PythonAgent>,
    pub(crate) access: access::AccessControl,
    /// Digest authentication for callers outside the allow list.
    pub(crate) digest: Option<access::DigestGate>,
    /// Call records for the API and the webhook.
    pub(crate) records: records::Records,
    /// The API bearer token (from `api.token_env`); `None` disables `/v1`.
    pub(crate) api_token: Option<String>,
    /// The `session.ended` webhook, when configured.
    pub(crate) webhook: Option<webhook::Webhook>,
    /// Trunk registrations.
    pub(crate) trunks: trunks::Trunks,
    /// Text-to-speech for agents' speech.
    pub(crate) tts: voicegate_speech::TtsService,
    /// Speech-to-text for callers' speech.
    pub(crate) stt: Arc<dyn voicegate_speech::SpeechToText>,
    /// Held while an outbound INVITE is sent and its call registered.
    pub(crate) outbound: tokio::sync::Mutex<()>,
    /// HTTP client for fetching audio (AudioEvent URLs).
    pub(crate) http_client: reqwest::Client,
    pub(crate) draining: AtomicBool,
    /// Live calls: where the router forwards each call's SIP events.
    pub(crate) calls: DashMap<CallHandle, mpsc::Sender<CallSignal>>,
    pub(crate) active: AtomicUsize,
    /// Signalled each time a call ends.
    pub(crate) call_ended: Notify,
}

/// A running gateway.
pub struct Gateway {
    sip_addr: SocketAddr,
    http_addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Gateway {
    /// The SIP address (UDP and TCP).
    pub fn sip_addr(&self) -> SocketAddr {
        self.sip_addr
    }

    /// The HTTP listener's address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Records of live and recently ended calls, oldest first.
    pub fn call_records(&self) -> Vec<records::CallRecord> {
        self.shared.records.all()
    }

    /// Every trunk's registration status.
    pub fn trunk_statuses(&self) -> Vec<trunks::TrunkStatus> {
        self.shared
            .trunks
            .statuses(&self.shared.config.trunks, std::time::Instant::now())
    }

    /// Calls in progress.
    pub fn active_calls(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }

    /// Phase one of shutdown: refuse new calls with 503, let live ones finish.
    pub fn drain(&self) {
        if !self.shared.draining.swap(true, Ordering::SeqCst) {
            tracing::info!(
                active = self.active_calls(),
                "draining: new calls get 503, live calls continue"
            );
        }
    }

    /// Whether [`Gateway::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::SeqCst)
    }

    /// Waits until no call is live, or `timeout` passes; true when idle.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ended = self.shared.call_ended.notified();
            if self.active_calls() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                return self.active_calls() == 0;
            }
        }
    }

    /// Phase two of shutdown: ends every live call (BYE, or 480 before answer).
    pub fn hang_up_all(&self) {
        let mut n = 0;
        for entry in self.shared.calls.iter() {
            // A full queue means the call is already busy ending.
            let _ = entry.value().try_send(CallSignal::HangUp);
            n += 1;
        }
        tracing::info!(calls = n, "hanging up all calls");
    }

    /// Drains, hangs up whatever is left, waits (bounded) for the BYEs and
    /// stops every task.
    pub async fn stop(self) {
        self.drain();
        self.hang_up_all();
        // Remove trunk bindings so carriers stop sending us calls.
        let registered = self.shared.config.trunks.iter().any(|t| t.register);
        if registered
            && tokio::time::timeout(Duration::from_secs(5), self.shared.sip.unregister_all())
                .await
                .is_err()
        {
            tracing::warn!("trunk unregistration did not finish in 5 s");
        }
        // A BYE transaction ends within 64*T1; don't wait longer than that.
        let bye_budget = Duration::from_millis(self.shared.config.sip.t1_ms * 64);
        if !self.wait_idle(bye_budget).await {
            tracing::warn!(active = self.active_calls(), "calls still live at exit");
        }
        for t in &self.tasks {
            t.abort();
        }
        for agent in self.shared.agents.values() {
            agent.shutdown();
        }
    }
}

/// Binds SIP (UDP+TCP), HTTP and the RTP port pool, and starts the router.
pub async fn start(config: Config) -> anyhow::Result<Gateway> {
    config.validate()?;
    http::prometheus();
    let endpoint = EndpointConfig {
        advertised: config.sip.advertised.unwrap_or(config.sip.listen),
        user_agent: config.sip.user_agent.clone(),
        timers: config.timers(),
        reinvite_to_app: true,
        session_expires: (config.sip.session_expires_s > 0)
            .then(|| Duration::from_secs(config.sip.session_expires_s)),
        min_se: Duration::from_secs(config.sip.min_se_s),
        ..EndpointConfig::default()
    };
    let seed = rand_seed();
    let (sip, events, sip_task) = transport::spawn(TransportConfig {
        bind: config.sip.listen,
        endpoint,
        seed,
    })
    .await
    .with_context(|| format!("cannot bind SIP on {} (sip.listen)", config.sip.listen))?;
    let ports = SharedPortPool::new(
        config.media.rtp_ip,
        config.media.rtp_port_min,
        config.media.rtp_port_max,
        Duration::from_secs(config.media.port_quarantine_s),
    )
    .context("media port range")?;
    let agents = load_agents(&config).await?;
    let http_listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot bind HTTP on {} (http.listen)", config.http.listen))?;
    let http_addr = http_listener.local_addr()?;
    let sip_addr = sip.local_addr();
    let access = access::AccessControl::new(
        config.allowed_sources(),
        config.access.invites_per_second,
        config.access.burst,
    );
    let records = records::Records::new(
        Duration::from_secs(config.api.keep_ended_s),
        config.api.max_ended,
    );
    let api_token = config::secret_from(config.api.token_file.as_deref(), &config.api.token_env)?;
    if api_token.is_none() {
        tracing::info!(env = %config.api.token_env, "call API disabled: token not set");
    }
    let webhook = webhook::Webhook::from_config(&config.webhook)?;
    let digest = digest_gate(&config)?;
    let tts = voicegate_speech::TtsService::from_config(&config.speech)
        .context("speech.tts: cannot start text-to-speech")?;
    // Loading the Whisper model reads ~75 MB: off the async threads.
    let speech_cfg = config.speech.clone();
    let stt = tokio::task::spawn_blocking(move || shared_stt(&speech_cfg))
        .await?
        .context("speech.stt: cannot start speech-to-text")?;
    let shared = Arc::new(Shared {
        config,
        sip,
        ports,
        agents,
        access,
        digest,
        records,
        api_token,
        webhook,
        trunks: trunks::Trunks::default(),
        tts,
        stt,
        outbound: tokio::sync::Mutex::new(()),
        http_client: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .context("HTTP client")?,
        draining: AtomicBool::new(false),
        calls: DashMap::new(),
        active: AtomicUsize::new(0),
        call_ended: Notify::new(),
    });
    let router = tokio::spawn(route_events(shared.clone(), events));
    shared
        .trunks
        .register_all(&shared.config.trunks, &shared.sip)
        .await?;
    let http = tokio::spawn(http::serve(http_listener, shared.clone()));
    tracing::info!(sip = %sip_addr, http = %http_addr, "voicegate started");
    Ok(Gateway {
        sip_addr,
        http_addr,
        shared,
        tasks: vec![router, http, sip_task],
    })
}

/// The binary's entry: runs until shut down in two phases by `signals`
/// (the first item drains, the second — or the drain timeout — hangs up).
pub async fn run<S>(config: Config, mut signals: S) -> anyhow::Result<()>
where
    S: FnMut() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
{
    let drain_timeout = Duration::from_secs(config.limits.drain_timeout_s);
    let gateway = start(config).await?;
    signals().await;
    gateway.drain();
    tokio::select! {
        idle = gateway.wait_idle(drain_timeout) => {
            if !idle {
                tracing::warn!("drain timeout passed with calls live");
            }
        }
        _ = signals() => tracing::info!("second signal"),
    }
    gateway.stop().await;
    tracing::info!("voicegate stopped");
    Ok(())
}

/// The router: hands each new call to its own task and forwards later SIP
/// events to the task owning the call.
async fn route_events(shared: Arc<Shared>, mut events: mpsc::Receiver<Event>) {
    while let Some(ev) = events.recv().await {
        match ev {
            Event::IncomingCall(incoming) => call::admit(&shared, incoming),
            Event::CallConfirmed { call } => forward(&shared, call, CallSignal::Confirmed).await,
            Event::CallEnded { call, reason } => {
                if !shared.calls.contains_key(&call) {
                    // An outbound call may be registering right now.
                    drop(shared.outbound.lock().await);
                }
                if let Some((_, tx)) = shared.calls.remove(&call) {
                    // The call task may be gone already (it ended itself).
                    let _ = tx.try_send(CallSignal::Ended(reason));
                }
            }
            Event::CallProgress { call, status, .. } => {
                forward(&shared, call, CallSignal::Progress { status }).await
            }
            Event::CallAnswered { call, body } => {
                forward(&shared, call, CallSignal::Answered { body }).await
            }
            Event::Refer(ev) => {
                use voicegate_sip::refer::ReferEvent;
                let call = match &ev {
                    ReferEvent::Accepted { call, .. }
                    | ReferEvent::Failed { call, .. }
                    | ReferEvent::Notify { call, .. }
                    | ReferEvent::Incoming { call, .. } => *call,
                };
                forward(&shared, call, CallSignal::Refer(ev)).await
            }
            Event::Reinvite { call, body, .. } => {
                forward(&shared, call, CallSignal::Reinvite { body }).await
            }
            Event::Registration {
                registration,
                state,
            } => shared.trunks.registration_event(registration, state),
        }
    }
}

/// The configured speech-to-text, loaded once per process for each distinct
/// `[speech.stt]`: a second gateway in the same process (tests, embedders)
/// shares the loaded model instead of loading another copy. Sessions are
/// independent, so sharing is safe.
fn shared_stt(
    cfg: &voicegate_speech::SpeechConfig,
) -> Result<Arc<dyn voicegate_speech::SpeechToText>, voicegate_speech::SpeechError> {
    type Loaded = Vec<(
        voicegate_speech::config::SttConfig,
        Arc<dyn voicegate_speech::SpeechToText>,
    )>;
    static CACHE: std::sync::OnceLock<std::sync::Mutex<Loaded>> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut loaded = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, stt)) = loaded.iter().find(|(c, _)| *c == cfg.stt) {
        return Ok(stt.clone());
    }
    let stt: Arc<dyn voicegate_speech::SpeechToText> =
        Arc::new(voicegate_speech::stt_from_config(cfg)?);
    loaded.push((cfg.stt.clone(), stt.clone()));
    Ok(stt)
}

/// The digest gate for `access.users`, with passwords resolved now so a
/// missing one stops the start with its key named.
fn digest_gate(config: &Config) -> anyhow::Result<Option<access::DigestGate>> {
    if config.access.users.is_empty() {
        return Ok(None);
    }
    let mut users = std::collections::HashMap::new();
    for (i, u) in config.access.users.iter().enumerate() {
        let env = u.password_env.as_deref().unwrap_or("");
        let password = config::secret_from(u.password_file.as_deref(), env)?.ok_or_else(|| {
            anyhow::anyhow!(
                "access.users[{i}]: no password for {:?} (set {env:?} or password_file)",
                u.username
            )
        })?;
        users.insert(u.username.clone(), password);
    }
    let algorithm = if config.access.digest_algorithm == "SHA-256" {
        voicegate_sip::auth::Algorithm::Sha256
    } else {
        voicegate_sip::auth::Algorithm::Md5
    };
    let secret = match std::env::var(&config.access.nonce_secret_env) {
        Ok(s) if !s.is_empty() => s.into_bytes(),
        _ => {
            use rand::{Rng, SeedableRng};
            let mut key = vec![0u8; 32];
            rand::rngs::StdRng::from_os_rng().fill(&mut key[..]);
            key
        }
    };
    Ok(Some(access::DigestGate::new(
        &config.access.realm,
        algorithm,
        secret,
        users,
    )))
}

/// Loads every configured agent (creating the sandbox venv on first use) and
/// starts its worker pool; an agent that cannot be loaded stops the start.
async fn load_agents(
    config: &Config,
) -> anyhow::Result<std::collections::HashMap<String, PythonAgent>> {
    let mut agents = std::collections::HashMap::new();
    for a in &config.agents {
        let mut cfg = PythonAgentConfig::new(&a.dir);
        cfg.agent_id = Some(a.id.clone());
        cfg.environment = a.environment.clone();
        cfg.variables = a.variables.clone();
        cfg.pool.workers = a.workers;
        let agent = PythonAgent::load(cfg)
            .await
            .with_context(|| format!("agent {:?} (agents.dir = {})", a.id, a.dir.display()))?;
        tracing::info!(agent = %a.id, dir = %a.dir.display(), workers = a.workers, "agent loaded");
        agents.insert(a.id.clone(), agent);
    }
    Ok(agents)
}

async fn forward(shared: &Shared, call: CallHandle, signal: CallSignal) {
    if !shared.calls.contains_key(&call) {
        // An outbound call may be registering right now: wait for it.
        drop(shared.outbound.lock().await);
    }
    let tx = shared.calls.get(&call).map(|tx| tx.clone());
    match tx {
        Some(tx) => {
            // Answers must not be lost: wait for room rather than drop.
            if tx.send(signal).await.is_err() {
                tracing::debug!(%call, "call task gone");
            }
        }
        None => tracing::debug!(%call, "event for an unknown call"),
    }
}

fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    // RandomState is seeded from the OS once per process; mixing in the time
    // keeps two gateways in one process apart.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    RandomState::new().hash_one(nanos)
}
