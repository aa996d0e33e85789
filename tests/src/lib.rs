//! Shared helpers for the interop tests: start a gateway on free loopback
//! ports, find and run the real peers (SIPp, ...), and the skip rule.
//!
//! # Skips
//!
//! A test that needs a Debian tool which is not installed prints why and
//! passes on a developer machine. With `VOICEGATE_REQUIRE_PEERS=1` (CI sets
//! it) the same situation fails the test: CI never skips silently.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use voicegate::{Config, Gateway};

/// The environment variable that turns a missing peer into a failure.
pub const REQUIRE_PEERS: &str = "VOICEGATE_REQUIRE_PEERS";

/// Whether `tool` is on PATH. When it is not: panics if
/// [`REQUIRE_PEERS`] is set, else prints the skip reason and returns false.
pub fn require_tool(tool: &str, package: &str) -> bool {
    if find_on_path(tool).is_some() {
        return true;
    }
    let required = std::env::var(REQUIRE_PEERS).is_ok_and(|v| v == "1" || v == "true");
    if required {
        panic!("{tool} not found on PATH (Debian package {package}) and {REQUIRE_PEERS} is set");
    }
    eprintln!(
        "SKIPPED: {tool} not found on PATH; install the Debian package {package} to run this test"
    );
    false
}

fn find_on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A SIPp scenario file under tests/scenarios/.
pub fn scenario(name: &str) -> PathBuf {
    repo_root().join("tests/scenarios").join(name)
}

/// Logs from the gateway under test go to the test's output (shown on failure).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_test_writer()
        .try_init();
}

/// A test configuration: SIP and HTTP on free loopback ports, the echo agent
/// for every number.
pub fn test_config() -> Config {
    let mut cfg = Config::default();
    cfg.sip.listen = "127.0.0.1:0".parse().unwrap();
    cfg.http.listen = "127.0.0.1:0".parse().unwrap();
    cfg.agents.push(agent("echo", true, ""));
    cfg
}

/// Starts a gateway with `cfg`.
pub async fn start_gateway(cfg: Config) -> Gateway {
    init_logging();
    voicegate::start(cfg).await.expect("gateway starts")
}

/// Sends `request` on a connected UDP socket and returns the first response
/// other than 100 Trying (within 2 s each).
pub async fn final_reply(sock: &tokio::net::UdpSocket, request: &str) -> String {
    sock.send(request.as_bytes()).await.expect("send");
    let mut buf = vec![0u8; 65536];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf))
            .await
            .expect("a response in time")
            .expect("recv");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !text.starts_with("SIP/2.0 100") {
            return text;
        }
    }
}

/// An `[[agents]]` entry for a test agent under tests/agents/NAME (or
/// config/agents/NAME when `config` is set), routed every number, one
/// worker; `extra` is more TOML for the table (e.g. variables).
pub fn agent(name: &str, numbers_star: bool, extra: &str) -> voicegate::config::AgentConfig {
    let dir = if name == "echo" {
        repo_root().join("config/agents/echo")
    } else {
        repo_root().join("tests/agents").join(name)
    };
    let numbers = if numbers_star {
        "numbers = [\"*\"]\n"
    } else {
        ""
    };
    toml::from_str(&format!(
        "id = {name:?}\ndir = {dir:?}\n{numbers}workers = 1\n{extra}"
    ))
    .expect("agent table")
}

/// A UDP port free right now on loopback (for a peer's local port).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("bind loopback")
}

/// What a SIPp run reported.
#[derive(Debug)]
pub struct SippRun {
    /// SIPp's exit code: 0 when every call succeeded.
    pub exit_code: i32,
    /// Calls counted successful.
    pub successful: u64,
    /// Calls counted failed.
    pub failed: u64,
    /// The final screen, for failure messages.
    pub screen: String,
    /// Seconds the run took.
    pub elapsed: Duration,
    /// SIPp's message trace, when the args asked for `-trace_msg`.
    pub messages: String,
}

/// Runs SIPp against `target` with `args` (scenario, rate, count...), bounded
/// by `timeout`, on a free local port.
pub async fn run_sipp(
    target: SocketAddr,
    args: &[&str],
    timeout: Duration,
) -> anyhow::Result<SippRun> {
    run_sipp_on(free_udp_port(), Some(target), args, timeout).await
}

/// Runs SIPp on local port `port`; `target` is the remote for client
/// scenarios, `None` for a UAS that waits for calls.
pub async fn run_sipp_on(
    port: u16,
    target: Option<SocketAddr>,
    args: &[&str],
    timeout: Duration,
) -> anyhow::Result<SippRun> {
    let dir = scratch_dir("sipp");
    let screen_file = dir.join("screen.txt");
    let port = port.to_string();
    let mut cmd = tokio::process::Command::new("sipp");
    if let Some(target) = target {
        cmd.arg(target.to_string());
    }
    cmd.args(["-i", "127.0.0.1", "-p", &port]);
    // A caller-chosen media port wins; else a free one (SIPp's default 6000
    // would clash between parallel tests).
    let message_file = dir.join("messages.txt");
    if args.contains(&"-trace_msg") {
        cmd.arg("-message_file").arg(&message_file);
    }
    if !args.contains(&"-mp") {
        cmd.args(["-mp", &free_udp_port().to_string()]);
    }
    cmd.args(["-nostdin", "-trace_screen", "-screen_file"])
        .arg(&screen_file)
        .args(args)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = std::time::Instant::now();
    let child = cmd.spawn().context("cannot start sipp")?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(out) => out?,
        Err(_) => bail!("sipp did not finish within {timeout:?}"),
    };
    let elapsed = started.elapsed();
    let screen = std::fs::read_to_string(&screen_file).unwrap_or_default();
    let messages = std::fs::read_to_string(&message_file).unwrap_or_default();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    let exit_code = out.status.code().unwrap_or(-1);
    let (successful, failed) = (
        cumulative(&screen, "Successful call"),
        cumulative(&screen, "Failed call"),
    );
    if screen.is_empty() {
        bail!("sipp wrote no screen (exit {exit_code}): {stderr}");
    }
    Ok(SippRun {
        exit_code,
        successful,
        failed,
        screen,
        elapsed,
        messages,
    })
}

/// Runs the SIPp scenario `name` (tests/scenarios) for `calls` calls
/// against `target` and asserts that every call succeeded.
pub async fn scenario_succeeds(target: SocketAddr, name: &str, calls: u64) -> SippRun {
    let sf = scenario(name);
    let count = calls.to_string();
    let run = run_sipp(
        target,
        &["-sf", sf.to_str().expect("UTF-8 path"), "-m", &count],
        Duration::from_secs(120),
    )
    .await
    .expect("sipp runs");
    assert_eq!(
        (run.exit_code, run.successful),
        (0, calls),
        "{name}:\n{}",
        run.screen
    );
    run
}

/// The cumulative column of a SIPp statistics line (the last such line).
fn cumulative(screen: &str, label: &str) -> u64 {
    screen
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with(label))
        .and_then(|l| l.split('|').nth(2))
        .and_then(|c| c.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A trunk named "carrier" at 127.0.0.1:`port` (SIPp standing in for it).
pub fn carrier_trunk(port: u16) -> voicegate::config::TrunkConfig {
    toml::from_str(&format!(
        "name = \"carrier\"\nhost = \"127.0.0.1\"\nport = {port}\n"
    ))
    .expect("valid trunk")
}

/// The test config with the transferrer test agent (tests/agents: transfers
/// every call to +14155550199, with `mode` if given) answering every number,
/// behind [`carrier_trunk`] on `trunk_port`.
pub fn transferrer_config(trunk_port: u16, mode: Option<&str>) -> Config {
    let mut cfg = test_config();
    let mode = mode
        .map(|m| format!(", mode = \"{m}\""))
        .unwrap_or_default();
    cfg.agents[0] = agent(
        "transferrer",
        true,
        &format!("variables = {{ target = \"+14155550199\"{mode} }}\n"),
    );
    cfg.trunks.push(carrier_trunk(trunk_port));
    cfg
}

/// A call placed to the gateway by a plain UAC (voicegate-sip) offering
/// PCMU only, answered; its RTP goes through `rtp`.
pub struct PcmuCall {
    /// The UAC (to hang up).
    pub sip: voicegate_sip::transport::SipHandle,
    /// The UAC's events after the answer.
    pub events: tokio::sync::mpsc::Receiver<voicegate_sip::endpoint::Event>,
    /// The call.
    pub handle: voicegate_sip::endpoint::CallHandle,
    /// Our RTP socket (127.0.0.1).
    pub rtp: tokio::net::UdpSocket,
    /// The gateway's RTP address from its answer.
    pub remote: SocketAddr,
}

impl PcmuCall {
    /// Calls `sip:{user}@{gateway}` from `sip:{from}@127.0.0.1`; waits (10 s
    /// at most) for the answer.
    pub async fn dial(gateway: SocketAddr, user: &str, from: &str) -> anyhow::Result<Self> {
        use voicegate_sip::endpoint::{EndpointConfig, Event, Peer, TransportKind};
        let (sip, mut events, _task) =
            voicegate_sip::transport::spawn(voicegate_sip::transport::TransportConfig {
                bind: "127.0.0.1:0".parse()?,
                endpoint: EndpointConfig {
                    advertised: "127.0.0.1:0".parse()?,
                    ..EndpointConfig::default()
                },
                seed: u64::from(std::process::id()),
            })
            .await?;
        let rtp = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let offer = voicegate_sdp::offer(&voicegate_sdp::OfferParams::new(
            "127.0.0.1".parse()?,
            rtp.local_addr()?.port(),
            voicegate_sdp::CodecPreference::from_names(["PCMU"])?,
        ));
        let target = format!("sip:{user}@{gateway}");
        let handle = sip
            .invite(
                &target,
                &format!("sip:{from}@127.0.0.1"),
                &target,
                offer.to_string().into_bytes(),
                Peer {
                    transport: TransportKind::Udp,
                    addr: gateway,
                    connection: None,
                },
            )
            .await?;
        let answer = loop {
            match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
                Ok(Some(Event::CallAnswered { body, .. })) => break body,
                Ok(Some(Event::CallEnded { reason, .. })) => bail!("call failed: {reason:?}"),
                Ok(Some(_)) => continue,
                other => bail!("no answer: {other:?}"),
            }
        };
        let answer: voicegate_sdp::SessionDescription = std::str::from_utf8(&answer)?.parse()?;
        let remote = voicegate_sdp::process_answer(&offer, &answer)?.remote_rtp;
        Ok(Self {
            sip,
            events,
            handle,
            rtp,
            remote,
        })
    }
}

/// Waits until the gateway is idle and returns its one call record.
pub async fn only_record(gw: &Gateway) -> voicegate::records::CallRecord {
    assert!(
        gw.wait_idle(Duration::from_secs(10)).await,
        "call still live"
    );
    let mut records = gw.call_records();
    assert_eq!(records.len(), 1, "{records:?}");
    records.remove(0)
}

/// A new empty directory for one test's files, under the system's temp dir.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "voicegate-{name}-{}-{}",
        std::process::id(),
        free_udp_port()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[cfg(test)]
mod tests {
    use super::cumulative;

    #[test]
    fn reads_sipp_cumulative_counts() {
        let screen = "  Successful call        |        3                  |      100                 \n\
                      \x20 Failed call            |        0                  |        2                 \n";
        assert_eq!(cumulative(screen, "Successful call"), 100);
        assert_eq!(cumulative(screen, "Failed call"), 2);
    }
}
