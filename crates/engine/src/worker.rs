//! Sandbox worker processes and the per-agent pool.
//!
//! A worker is `venv/bin/python voicegate_runtime.py AGENT_DIR`. The engine writes
//! frames to its stdin and reads frames from its stdout (see the crate docs for the
//! frame set); its stderr (handler `print`s, tracebacks) goes to `tracing`.
//!
//! Supervision: every `ping_interval` the engine pings each worker; a worker whose
//! last pong is older than `hang_deadline` (a handler blocking the event loop) is
//! killed. A worker that exits or is killed ends only its own sessions (each gets
//! [`LinkEvent::Lost`]) and is replaced by a fresh one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::error::EngineError;
use crate::event::{Event, Object};
use crate::link::{HandlerLink, LinkEvent, LinkRequest, LinkSink, SessionId, SessionInfo};
use crate::sandbox::{SandboxEnv, default_python, default_sandbox_dir, ensure_env};

/// Pool sizing and supervision deadlines.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Worker processes per agent.
    pub workers: usize,
    /// Sessions one worker hosts at most.
    pub max_sessions_per_worker: usize,
    /// How often workers are pinged.
    pub ping_interval: Duration,
    /// A worker silent for this long is considered hung and killed.
    pub hang_deadline: Duration,
    /// How long a worker may take to import the handler and report ready.
    pub start_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            workers: 2,
            max_sessions_per_worker: 200,
            ping_interval: Duration::from_millis(500),
            hang_deadline: Duration::from_secs(5),
            start_timeout: Duration::from_secs(60),
        }
    }
}

/// How to load a Python agent.
#[derive(Debug, Clone)]
pub struct PythonAgentConfig {
    /// The agent directory (holds `handler.py`, maybe `requirements.txt`).
    pub dir: PathBuf,
    /// `context.agent_id` (defaults to the directory name).
    pub agent_id: Option<String>,
    /// `context.environment`.
    pub environment: String,
    /// `context.variables`.
    pub variables: Object,
    /// `context.configuration` overrides (primfunctions `Configuration` fields).
    pub configuration: Object,
    /// Interpreter used to create the venv.
    pub python: String,
    /// Where venvs live (see [`crate::sandbox`]).
    pub sandbox_dir: PathBuf,
    /// Pool settings.
    pub pool: PoolConfig,
}

impl PythonAgentConfig {
    /// Defaults for an agent directory.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PythonAgentConfig {
            dir: dir.into(),
            agent_id: None,
            environment: "development".into(),
            variables: Object::new(),
            configuration: Object::new(),
            python: default_python(),
            sandbox_dir: default_sandbox_dir(),
            pool: PoolConfig::default(),
        }
    }
}

/// A loaded Python agent: its venv and its worker pool.
#[derive(Clone)]
pub struct PythonAgent {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    cfg: PythonAgentConfig,
    agent_id: String,
    env: SandboxEnv,
    workers: Mutex<Vec<Arc<Worker>>>,
    next_worker: AtomicU64,
    next_session: AtomicU64,
    replaced: AtomicU64,
}

impl PythonAgent {
    /// Creates the sandbox venv if needed and starts the pool; fails if the handler
    /// cannot be imported.
    pub async fn load(cfg: PythonAgentConfig) -> Result<Self, EngineError> {
        let dir = cfg.dir.canonicalize().map_err(|e| EngineError::AgentLoad {
            dir: cfg.dir.clone(),
            message: e.to_string(),
        })?;
        if !dir.join("handler.py").is_file() {
            return Err(EngineError::AgentLoad {
                dir,
                message: "no handler.py in the agent directory".into(),
            });
        }
        let (sandbox_dir, python, d) = (cfg.sandbox_dir.clone(), cfg.python.clone(), dir.clone());
        let env = tokio::task::spawn_blocking(move || ensure_env(&sandbox_dir, &python, Some(&d)))
            .await
            .map_err(|e| EngineError::Worker(e.to_string()))??;
        let agent_id = cfg.agent_id.clone().unwrap_or_else(|| {
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        let mut cfg = cfg;
        cfg.dir = dir;
        let inner = Arc::new(PoolInner {
            cfg,
            agent_id,
            env,
            workers: Mutex::new(Vec::new()),
            next_worker: AtomicU64::new(1),
            next_session: AtomicU64::new(1),
            replaced: AtomicU64::new(0),
        });
        let n = inner.cfg.pool.workers.max(1);
        for _ in 0..n {
            let w = Worker::spawn(&inner).await?;
            lock(&inner.workers).push(w);
        }
        Ok(PythonAgent { inner })
    }

    /// The agent id handlers see.
    pub fn agent_id(&self) -> &str {
        &self.inner.agent_id
    }

    /// The venv the workers run in.
    pub fn env(&self) -> &SandboxEnv {
        &self.inner.env
    }

    /// Live worker process ids, in pool order.
    pub fn worker_pids(&self) -> Vec<u32> {
        lock(&self.inner.workers)
            .iter()
            .filter(|w| !w.dead.load(Ordering::SeqCst))
            .filter_map(|w| w.pid)
            .collect()
    }

    /// How many workers have been replaced after dying or hanging.
    pub fn replaced_workers(&self) -> u64 {
        self.inner.replaced.load(Ordering::SeqCst)
    }

    /// Opens a session on the least-loaded live worker.
    pub async fn open_session(&self, info: SessionInfo) -> Result<HandlerLink, EngineError> {
        let worker = self.pick_worker().await?;
        let session = info.session_id.clone().unwrap_or_else(|| {
            SessionId(format!(
                "{}-{}-{}",
                self.inner.agent_id,
                std::process::id(),
                self.inner.next_session.fetch_add(1, Ordering::Relaxed)
            ))
        });
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&worker.sessions).insert(session.clone(), tx);
        let cfg = &self.inner.cfg;
        let frame = json!({
            "type": "open",
            "session": session.0,
            "context": {
                "agent_id": self.inner.agent_id,
                "environment": cfg.environment,
                "variables": cfg.variables,
                "configuration": cfg.configuration,
                "input_data": info.input_data,
                "data": info.data,
            }
        });
        worker.write(frame)?;
        Ok(HandlerLink {
            session,
            sink: worker,
            rx,
            closed: false,
        })
    }

    async fn pick_worker(&self) -> Result<Arc<Worker>, EngineError> {
        let max = self.inner.cfg.pool.max_sessions_per_worker.max(1);
        {
            let workers = lock(&self.inner.workers);
            let best = workers
                .iter()
                .filter(|w| !w.dead.load(Ordering::SeqCst))
                .map(|w| (lock(&w.sessions).len(), w))
                .filter(|(n, _)| *n < max)
                .min_by_key(|(n, _)| *n);
            if let Some((_, w)) = best {
                return Ok(w.clone());
            }
        }
        // Every worker is full or dead: grow by one.
        let w = Worker::spawn(&self.inner).await?;
        lock(&self.inner.workers).push(w.clone());
        Ok(w)
    }

    /// Stops every worker (their sessions get [`LinkEvent::Lost`]).
    pub fn shutdown(&self) {
        for w in lock(&self.inner.workers).drain(..) {
            let _ = w.write(json!({"type": "shutdown"}));
            w.retired.store(true, Ordering::SeqCst);
            w.kill.notify_one();
            w.fail("agent shut down");
        }
    }
}

impl std::fmt::Debug for PythonAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PythonAgent")
            .field("agent_id", &self.inner.agent_id)
            .field("dir", &self.inner.cfg.dir)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these maps cannot leave them inconsistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) struct Worker {
    id: u64,
    pid: Option<u32>,
    frames: mpsc::UnboundedSender<String>,
    sessions: Mutex<HashMap<SessionId, mpsc::UnboundedSender<LinkEvent>>>,
    /// Set once the worker's sessions were ended; no new sessions go to it.
    dead: AtomicBool,
    /// Set when the pool stops the worker on purpose: it is not replaced.
    retired: AtomicBool,
    /// Wakes the supervisor to kill the process (shutdown).
    kill: tokio::sync::Notify,
    /// Wakes the supervisor when the worker's stdout closed.
    eof: tokio::sync::Notify,
}

impl Worker {
    async fn spawn(pool: &Arc<PoolInner>) -> Result<Arc<Worker>, EngineError> {
        let id = pool.next_worker.fetch_add(1, Ordering::Relaxed);
        let mut child = Command::new(&pool.env.python)
            .arg(&pool.env.runtime)
            .arg(&pool.cfg.dir)
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| EngineError::Worker(format!("spawn {:?}: {e}", pool.env.python)))?;
        let pid = child.id();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| EngineError::Worker("no stdout".into()))?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| EngineError::Worker("no stdin".into()))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| EngineError::Worker("no stderr".into()))?;
        let agent = pool.agent_id.clone();

        // Handler prints and tracebacks.
        let log_agent = agent.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                info!(agent = %log_agent, worker = id, "handler: {line}");
            }
        });

        let mut reader = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(pool.cfg.pool.start_timeout, reader.next_line()).await;
        let first: Value = match first {
            Err(_) => {
                let _ = child.start_kill();
                return Err(EngineError::AgentLoad {
                    dir: pool.cfg.dir.clone(),
                    message: format!(
                        "worker did not report ready within {:?}",
                        pool.cfg.pool.start_timeout
                    ),
                });
            }
            Ok(Ok(Some(line))) => serde_json::from_str(&line).unwrap_or(Value::Null),
            Ok(_) => {
                let status = child.wait().await.ok();
                return Err(EngineError::AgentLoad {
                    dir: pool.cfg.dir.clone(),
                    message: format!("worker exited during start-up ({status:?})"),
                });
            }
        };
        match first.get("type").and_then(Value::as_str) {
            Some("ready") => {}
            Some("load_error") => {
                let _ = child.wait().await;
                return Err(EngineError::AgentLoad {
                    dir: pool.cfg.dir.clone(),
                    message: first
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown error")
                        .to_owned(),
                });
            }
            _ => {
                let _ = child.start_kill();
                return Err(EngineError::Worker(format!(
                    "unexpected first frame {first}"
                )));
            }
        }
        info!(agent = %agent, worker = id, pid = ?pid, sdk = %first["sdk_version"], "sandbox worker ready");

        let (frames, mut frames_rx) = mpsc::unbounded_channel::<String>();
        let worker = Arc::new(Worker {
            id,
            pid,
            frames,
            sessions: Mutex::new(HashMap::new()),
            dead: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            kill: tokio::sync::Notify::new(),
            eof: tokio::sync::Notify::new(),
        });

        tokio::spawn(async move {
            while let Some(mut line) = frames_rx.recv().await {
                line.push('\n');
                if stdin.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
            }
        });

        let last_pong = Arc::new(Mutex::new(Instant::now()));
        tokio::spawn(read_frames(
            Arc::downgrade(&worker),
            reader,
            last_pong.clone(),
        ));
        tokio::spawn(supervise(
            Arc::downgrade(pool),
            worker.clone(),
            child,
            last_pong,
        ));
        Ok(worker)
    }

    fn write(&self, frame: Value) -> Result<(), EngineError> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(EngineError::Worker(format!("worker {} is gone", self.id)));
        }
        self.frames
            .send(frame.to_string())
            .map_err(|_| EngineError::Worker(format!("worker {} is gone", self.id)))
    }

    /// Marks the worker dead and ends its sessions (once; the first reason wins).
    ///
    /// Only the supervisor (which knows why the process ended) and `shutdown` call
    /// this; the frame reader merely reports end of stream.
    fn fail(&self, reason: &str) {
        if self.dead.swap(true, Ordering::SeqCst) {
            return;
        }
        let sessions: Vec<_> = lock(&self.sessions).drain().collect();
        if !sessions.is_empty() {
            warn!(worker = self.id, pid = ?self.pid, sessions = sessions.len(), "sandbox worker lost: {reason}");
        }
        for (_, tx) in sessions {
            let _ = tx.send(LinkEvent::Lost {
                reason: reason.to_owned(),
            });
        }
    }
}

impl LinkSink for Worker {
    fn send(&self, session: &SessionId, req: LinkRequest) -> Result<(), EngineError> {
        let frame = match req {
            LinkRequest::Deliver(event) => {
                json!({"type": "event", "session": session.0, "event": event.to_value()})
            }
            LinkRequest::Cancel => json!({"type": "cancel", "session": session.0}),
            LinkRequest::Stop { event, budget } => json!({
                "type": "stop",
                "session": session.0,
                "event": event.to_value(),
                "timeout_s": budget.as_secs_f64(),
            }),
        };
        self.write(frame)
            .map_err(|_| EngineError::SessionClosed(session.0.clone()))
    }

    fn drop_session(&self, session: &SessionId) {
        if lock(&self.sessions).remove(session).is_some() {
            let _ = self.write(json!({"type": "drop", "session": session.0}));
        }
    }

    fn worker_id(&self) -> Option<u64> {
        Some(self.id)
    }
}

async fn read_frames(
    worker: Weak<Worker>,
    mut reader: tokio::io::Lines<BufReader<ChildStdout>>,
    last_pong: Arc<Mutex<Instant>>,
) {
    loop {
        let line = match reader.next_line().await {
            Ok(Some(line)) => line,
            _ => break,
        };
        let Some(w) = worker.upgrade() else { return };
        let frame: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                warn!(worker = w.id, "malformed frame from worker ({e}): {line}");
                continue;
            }
        };
        let session = frame
            .get("session")
            .and_then(Value::as_str)
            .map(|s| SessionId(s.to_owned()));
        match frame.get("type").and_then(Value::as_str) {
            Some("pong") => *lock(&last_pong) = Instant::now(),
            Some("event") => {
                let ev = match serde_json::from_value::<Event>(frame["event"].clone()) {
                    Ok(ev) => ev,
                    Err(e) => Event::error(&format!(
                        "voicegate could not parse an event from the handler ({e}): {}",
                        frame["event"]
                    )),
                };
                if let Some(s) = session
                    && let Some(tx) = lock(&w.sessions).get(&s)
                {
                    let _ = tx.send(LinkEvent::Event(ev));
                }
            }
            Some("closed") => {
                if let Some(s) = session
                    && let Some(tx) = lock(&w.sessions).remove(&s)
                {
                    let _ = tx.send(LinkEvent::Closed {
                        output_data: frame.get("output_data").cloned().unwrap_or(Value::Null),
                        timed_out: frame["timed_out"].as_bool().unwrap_or(false),
                    });
                }
            }
            Some("protocol_error") => {
                warn!(worker = w.id, session = ?session, "worker protocol error: {}", frame["message"]);
            }
            other => debug!(worker = w.id, "ignored frame type {other:?}"),
        }
    }
    // The supervisor ends the worker: it knows the exit status, or that it killed a
    // hung worker (whose stdout closes as a consequence).
    if let Some(w) = worker.upgrade() {
        w.eof.notify_one();
    }
}

async fn supervise(
    pool: Weak<PoolInner>,
    worker: Arc<Worker>,
    mut child: Child,
    last_pong: Arc<Mutex<Instant>>,
) {
    let (interval, deadline) = match pool.upgrade() {
        Some(p) => (p.cfg.pool.ping_interval, p.cfg.pool.hang_deadline),
        None => return,
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut ping_id: u64 = 0;
    let reason = loop {
        tokio::select! {
            status = child.wait() => {
                break format!("the sandbox worker process exited ({})",
                    status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()));
            }
            _ = worker.kill.notified() => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                break "the sandbox worker was stopped".to_owned();
            }
            _ = worker.eof.notified() => {
                // Stdout closed: the process is exiting (or closed its protocol
                // channel, which makes it useless). Give it a moment to report a status.
                let status = match tokio::time::timeout(Duration::from_secs(1), child.wait()).await {
                    Ok(s) => s.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                    Err(_) => {
                        let _ = child.start_kill();
                        let _ = child.wait().await;
                        "closed its protocol channel; killed".to_owned()
                    }
                };
                break format!("the sandbox worker process exited ({status})");
            }
            _ = tick.tick() => {
                let silent = lock(&last_pong).elapsed();
                if silent > deadline {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    break format!(
                        "the sandbox worker did not answer for {} ms (a handler blocked its event loop); killed",
                        silent.as_millis()
                    );
                }
                ping_id += 1;
                let _ = worker.write(json!({"type": "ping", "id": ping_id}));
            }
        }
    };
    worker.fail(&reason);
    if worker.retired.load(Ordering::SeqCst) {
        return;
    }
    // Replace it.
    let Some(pool) = pool.upgrade() else { return };
    lock(&pool.workers).retain(|w| !Arc::ptr_eq(w, &worker));
    pool.replaced.fetch_add(1, Ordering::SeqCst);
    match respawn(pool.clone()).await {
        Ok(w) => lock(&pool.workers).push(w),
        Err(e) => warn!(agent = %pool.agent_id, "could not replace sandbox worker: {e}"),
    }
}

// Boxed to break the spawn -> supervise -> spawn cycle in the future types.
fn respawn(
    pool: Arc<PoolInner>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Arc<Worker>, EngineError>> + Send>> {
    Box::pin(async move { Worker::spawn(&pool).await })
}

/// The directory holding the engine's Python runtime sources.
pub fn runtime_source_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/python"))
}
