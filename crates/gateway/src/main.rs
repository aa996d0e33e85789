//! The `voicegate` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use voicegate::Config;

#[derive(Parser)]
#[command(
    name = "voicegate",
    version,
    about = "Telephony media gateway for voice agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: SIP on UDP and TCP, RTP media, agents, HTTP metrics.
    Serve {
        /// Configuration file (TOML); without it the embedded defaults apply.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// SIP address for both UDP and TCP; overrides sip.listen.
        #[arg(long)]
        sip: Option<SocketAddr>,
        /// HTTP address (/metrics, /healthz); overrides http.listen.
        #[arg(long)]
        http: Option<SocketAddr>,
    },
    /// Talk to an agent in text: each stdin line is a TextEvent (source
    /// "text"), every event the handler yields is printed as one JSON line.
    Chat {
        /// The agent directory (holding handler.py).
        #[arg(long)]
        agent: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Serve { config, sip, http } => {
            let mut cfg = match &config {
                Some(path) => Config::load(path)?,
                None => Config::default(),
            };
            if let Some(sip) = sip {
                cfg.sip.listen = sip;
            }
            if let Some(http) = http {
                cfg.http.listen = http;
            }
            runtime.block_on(voicegate::run(cfg, || Box::pin(shutdown_signal())))
        }
        Command::Chat { agent } => runtime.block_on(async {
            let stdin = tokio::io::BufReader::new(tokio::io::stdin());
            voicegate_engine::chat::run(&agent, stdin, tokio::io::stdout())
                .await
                .with_context(|| format!("agent {}", agent.display()))
        }),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
