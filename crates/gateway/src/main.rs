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
    /// Speak TEXT with the configured text-to-speech into a WAV file (16 kHz).
    Say {
        /// What to say.
        text: String,
        /// The WAV file to write.
        #[arg(long, short)]
        output: PathBuf,
        /// Configuration file (its [speech] section is used).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the transcript of a WAV file with the configured speech-to-text.
    Transcribe {
        /// The WAV file (any rate, mono or stereo).
        file: PathBuf,
        /// Configuration file (its [speech] section is used).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Call a SIP URI: say each --say phrase when the far end stops talking,
    /// print what it says (transcribed), report a REFER, hang up at the end.
    Call {
        /// `sip:user@host[:port][;transport=tcp]`.
        uri: String,
        /// A phrase to say (repeatable; one per turn of the far end).
        #[arg(long)]
        say: Vec<String>,
        /// A WAV file to play after the phrases.
        #[arg(long)]
        wav: Option<PathBuf>,
        /// DTMF digits to send at the end.
        #[arg(long)]
        dtmf: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Refuse a REFER (NOTIFY 603) instead of accepting it (NOTIFY 200).
        #[arg(long)]
        refuse_refer: bool,
        /// Configuration file (its [speech] section is used).
        #[arg(long, short)]
        config: Option<PathBuf>,
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
            let mut cfg = load(config.as_deref())?;
            if let Some(sip) = sip {
                cfg.sip.listen = sip;
            }
            if let Some(http) = http {
                cfg.http.listen = http;
            }
            runtime.block_on(voicegate::run(cfg, || Box::pin(shutdown_signal())))
        }
        Command::Say {
            text,
            output,
            config,
        } => {
            let cfg = load(config.as_deref())?;
            let samples = runtime
                .block_on(voicegate_speech::say_to_wav(&cfg.speech, &text, &output))
                .context("text-to-speech failed")?;
            eprintln!(
                "wrote {} ({:.2} s)",
                output.display(),
                samples as f64 / f64::from(voicegate_speech::SAMPLE_RATE_HZ)
            );
            Ok(())
        }
        Command::Transcribe { file, config } => {
            let cfg = load(config.as_deref())?;
            let text = runtime
                .block_on(voicegate_speech::transcribe_wav(&cfg.speech, &file))
                .with_context(|| format!("cannot transcribe {}", file.display()))?;
            println!("{text}");
            Ok(())
        }
        Command::Call {
            uri,
            say,
            wav,
            dtmf,
            timeout,
            refuse_refer,
            config,
        } => {
            let cfg = load(config.as_deref())?;
            let opts = voicegate::caller::CallOptions {
                target: uri,
                say,
                wav,
                dtmf,
                timeout: std::time::Duration::from_secs(timeout),
                accept_refer: !refuse_refer,
                speech: cfg.speech,
            };
            runtime.block_on(voicegate::caller::call(opts, |line| println!("{line}")))?;
            Ok(())
        }
        Command::Chat { agent } => runtime.block_on(async {
            let stdin = tokio::io::BufReader::new(tokio::io::stdin());
            voicegate_engine::chat::run(&agent, stdin, tokio::io::stdout())
                .await
                .with_context(|| format!("agent {}", agent.display()))
        }),
    }
}

fn load(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    match path {
        Some(path) => Config::load(path),
        None => Ok(Config::default()),
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
