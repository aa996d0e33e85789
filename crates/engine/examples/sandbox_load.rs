//! Bounded load run for the Python sandbox: TextEvent in -> first TextToSpeechEvent
//! out, through the session state machine, a worker pipe and a real `handler.py`.
//!
//! ```text
//! cargo run --release -p voicegate-engine --example sandbox_load -- [AGENT_DIR] [TURNS] [SESSIONS]
//! ```
//!
//! Defaults: `config/agents/echo`, 1000 turns, 500 sessions, all on ONE worker.
//! Phases:
//! 1. `TURNS` sequential turns on one session (latency with an idle worker);
//! 2. `SESSIONS` sessions opened on the same worker (each runs its StartEvent turn),
//!    with the worker's and this process's RSS measured before and after;
//! 3. `TURNS` sequential turns spread round-robin over those live sessions;
//! 4. a burst: every session sends a TextEvent at the same instant.
//!
//! Latency is measured from `Session::handle_text` to the `Command::Speak` that the
//! first TextToSpeechEvent becomes. Prints a Markdown table.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use voicegate_engine::{
    Command, HandlerLink, PoolConfig, PythonAgent, PythonAgentConfig, Session, SessionConfig,
    SessionInfo,
};

struct Call {
    s: Session,
    link: HandlerLink,
}

impl Call {
    fn drain(&mut self) -> Option<Command> {
        let mut speak = None;
        loop {
            let mut progressed = false;
            while let Some(r) = self.s.poll_request() {
                progressed = true;
                self.link.send(r).expect("worker alive");
            }
            while let Some(c) = self.s.poll_command() {
                progressed = true;
                if let Command::Speak { id, .. } = &c {
                    // No audio here: playback is done at once.
                    self.s.handle_playback_done(*id, Instant::now());
                    speak.get_or_insert(c);
                }
            }
            if !progressed {
                return speak;
            }
        }
    }

    /// Runs one input to its first Speak and then to the end of the handler call;
    /// returns the time to the first Speak.
    async fn turn(&mut self, text: Option<&str>) -> Duration {
        let t0 = Instant::now();
        match text {
            Some(t) => self.s.handle_text("speech", t, None, t0),
            None => self.s.handle_start(t0),
        }
        let mut first = self.drain().map(|_| t0.elapsed());
        while first.is_none() || self.s.is_turn_running() {
            let ev = tokio::time::timeout(Duration::from_secs(30), self.link.recv())
                .await
                .expect("worker answers")
                .expect("link open");
            self.s.handle_link(ev, Instant::now());
            if self.drain().is_some() && first.is_none() {
                first = Some(t0.elapsed());
            }
        }
        first.unwrap_or_default()
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn row(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "| {name} | {} | {:.3} | {:.3} | {:.3} |",
        v.len(),
        ms(pct(&v, 0.5)),
        ms(pct(&v, 0.99)),
        ms(*v.last().unwrap_or(&Duration::ZERO))
    );
}

fn session_cfg() -> SessionConfig {
    SessionConfig {
        silence_timeout: None,
        ..SessionConfig::default()
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config/agents/echo")
    });
    let turns: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let sessions: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(500);

    let mut cfg = PythonAgentConfig::new(&dir);
    cfg.pool = PoolConfig {
        workers: 1,
        max_sessions_per_worker: sessions + 10,
        ..PoolConfig::default()
    };
    let agent = PythonAgent::load(cfg).await.expect("agent loads");
    let pid = agent.worker_pids()[0];

    // Phase 1: one session, sequential turns.
    let mut one = Call {
        s: Session::new(session_cfg()),
        link: agent.open_session(SessionInfo::default()).await.unwrap(),
    };
    one.turn(None).await;
    for _ in 0..50 {
        one.turn(Some("warm up")).await;
    }
    let mut idle = Vec::with_capacity(turns);
    for i in 0..turns {
        idle.push(one.turn(Some(&format!("hello {i}"))).await);
    }

    // Phase 2: many sessions on the same worker.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (w0, e0) = (rss_kib(pid), rss_kib(std::process::id()));
    let mut calls = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let link = agent.open_session(SessionInfo::default()).await.unwrap();
        let mut c = Call {
            s: Session::new(session_cfg()),
            link,
        };
        c.turn(None).await;
        c.turn(Some("first words")).await;
        calls.push(c);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (w1, e1) = (rss_kib(pid), rss_kib(std::process::id()));

    // Phase 3: sequential turns, round-robin over the live sessions.
    let mut rr = Vec::with_capacity(turns);
    for i in 0..turns {
        let n = calls.len();
        rr.push(calls[i % n].turn(Some(&format!("hello {i}"))).await);
    }

    // Phase 4: every session speaks at once.
    let gate = Arc::new(tokio::sync::Barrier::new(calls.len()));
    let mut tasks = Vec::new();
    for mut c in calls {
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            c.turn(Some("all at once")).await
        }));
    }
    let mut burst = Vec::new();
    for t in tasks {
        burst.push(t.await.unwrap());
    }

    println!("agent: {}", dir.display());
    println!("worker pid {pid}, one worker for all sessions\n");
    println!("| phase | turns | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    row("1 session, sequential turns", idle);
    row(
        &format!("{sessions} live sessions, sequential turns round-robin"),
        rr,
    );
    row(
        &format!("{sessions} sessions, one turn each at once"),
        burst,
    );
    let per = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / sessions as f64;
    println!(
        "\nworker RSS: {} KiB -> {} KiB with {sessions} more sessions: {:.1} KiB/session",
        w0,
        w1,
        per(w0, w1)
    );
    println!(
        "engine process RSS: {} KiB -> {} KiB: {:.1} KiB/session",
        e0,
        e1,
        per(e0, e1)
    );
    agent.shutdown();
}
