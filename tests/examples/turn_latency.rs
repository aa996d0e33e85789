//! Conversation latency on a real call over loopback, measured at the caller.
//!
//! Starts a gateway in-process (embedded Whisper STT, flite TTS), calls it
//! with raw SIP over UDP (voicegate-sip as the UAC) and raw PCMU RTP sent
//! every 20 ms, speaks phrases synthesised with flite, and timestamps every
//! RTP packet it sends and receives (`Instant::now()` at the socket call).
//! A 20 ms frame is *voiced* when its RMS level is at least [`VOICED_RMS`];
//! the same rule applies to both directions.
//!
//! * `turn`: the echo agent (config/agents/echo). Per turn: the caller's
//!   last voiced packet sent -> the first voiced agent packet received.
//! * `barge`: tests/agents/long_reply, which answers every TextEvent with a
//!   long interruptible paragraph. While it plays, the caller starts a phrase
//!   (only on a tick where the last agent packet was voiced). Per barge-in:
//!   the caller's first voiced packet sent -> the first agent packet of the
//!   silent run that lasts until the caller's phrase has ended (+300 ms).
//!   Voiced agent packets more than two frames after the media core's flush
//!   (from its log line) are counted as audio that resumed after the cut.
//!
//! The gateway's own log lines (VAD speech start/end, barge-in flush, STT
//! final) are captured with their `Instant` to split each figure into parts.
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-bench cargo run --release -p voicegate-tests \
//!     --example turn_latency -- [--mode turn|barge|both] [--turns 30] \
//!     [--barge-ins 30] [--timeout-secs 900] [--verbose]
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::{Interval, MissedTickBehavior};
use voicegate_media::g711::{self, Law};
use voicegate_media::resample::resample_all;
use voicegate_media::rtp::{MAX_DATAGRAM, RtpSender, SeededRng};
use voicegate_sip::endpoint::{CallHandle, Event};
use voicegate_sip::transport::SipHandle;
use voicegate_speech::audio::rms;
use voicegate_speech::{SpeakRequest, SpeechConfig, TtsService};
use voicegate_tests::{agent, start_gateway, test_config};

/// Samples in one 20 ms PCMU frame.
const FRAME_SAMPLES: usize = 160;
const PTIME: Duration = Duration::from_millis(20);
const PT_PCMU: u8 = 0;
/// RMS level (of 32768) from which a 20 ms frame counts as voiced: about
/// -50 dBFS. The gateway's idle frames are digital silence (level 0).
const VOICED_RMS: f64 = 100.0;
/// Quiet that means the agent has finished speaking.
const AGENT_DONE: Duration = Duration::from_millis(1200);
/// The longest wait for any one thing the agent should do.
const STEP_LIMIT: Duration = Duration::from_secs(15);
/// Turns (and barge-ins) run first and left out of the figures: the first
/// Whisper run and the first synthesis of a text are slower.
const WARM_UP: usize = 2;
/// The caller's phrase after which a barge-in window closes.
const AFTER_PHRASE: Duration = Duration::from_millis(300);
/// Silent agent packets in a row that make an audible cut (200 ms).
const CUT_FRAMES: usize = 10;
/// How long after the agent's reply began the caller barges in, cycled.
const BARGE_DELAYS_MS: [u64; 6] = [700, 1000, 1300, 1600, 1900, 2200];

const TURN_PHRASES: [&str; 6] = [
    "I would like to book a table for two.",
    "What time do you open on Saturday?",
    "Can you tell me the price of a large pizza?",
    "Please send the receipt to my email address.",
    "My account number is four five six seven.",
    "Is there parking near the restaurant?",
];
const BARGE_PHRASES: [&str; 3] = [
    "Wait, I have a question about my order.",
    "Sorry to interrupt, can I ask something?",
    "Hold on a second, please.",
];
const PROMPT: &str = "Tell me about your opening hours.";

// ---------------------------------------------------------------------------
// The gateway's log lines, timestamped when they are written.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// The VAD reported the end of speech (after its hangover).
    SpeechEnd,
    /// The media core flushed playout on onset.
    BargeIn,
    /// The STT final became a TextEvent.
    CallerSaid,
}

static MARKS: Mutex<Vec<(Instant, Mark)>> = Mutex::new(Vec::new());
static VERBOSE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Receives each formatted log event (one `write` per event) and keeps the
/// time of the ones that mark a step of a turn.
struct MarkWriter;

impl std::io::Write for MarkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let now = Instant::now();
        let line = String::from_utf8_lossy(buf);
        let mark = if line.contains("voicegate_media::driver") {
            if line.contains("barge-in: playout flushed") {
                Some(Mark::BargeIn)
            } else if line.contains("speech end") {
                Some(Mark::SpeechEnd)
            } else {
                None
            }
        } else if line.contains("voicegate::conversation") && line.contains("caller said") {
            Some(Mark::CallerSaid)
        } else {
            None
        };
        if let Some(m) = mark {
            MARKS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((now, m));
        }
        let routine = mark.is_some() || line.contains(" INFO ");
        if !routine || VERBOSE.load(std::sync::atomic::Ordering::Relaxed) {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The first mark of `kind` in `(after, before)`.
fn mark_between(kind: Mark, after: Instant, before: Instant) -> Option<Instant> {
    MARKS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(t, m)| *m == kind && *t > after && *t < before)
        .map(|(t, _)| *t)
}

// ---------------------------------------------------------------------------
// The caller.

/// A phrase as PCMU frames, leading and trailing unvoiced frames cut off.
#[derive(Clone)]
struct Utterance {
    frames: Vec<([u8; FRAME_SAMPLES], bool)>,
}

async fn utterance(tts: &TtsService, text: &str) -> anyhow::Result<Utterance> {
    let pcm16 = tts.speak(SpeakRequest::new(text)).collect().await?;
    let pcm8 = resample_all(&pcm16, voicegate_speech::SAMPLE_RATE_HZ, 8000)?;
    let mut frames: Vec<([u8; FRAME_SAMPLES], bool)> = pcm8
        .chunks(FRAME_SAMPLES)
        .map(|c| {
            let mut pcm = [0i16; FRAME_SAMPLES];
            pcm[..c.len()].copy_from_slice(c);
            let mut payload = [0u8; FRAME_SAMPLES];
            g711::encode(Law::Mu, &pcm, &mut payload).expect("frame-sized buffers");
            (payload, rms(&pcm) >= VOICED_RMS)
        })
        .collect();
    let first = frames.iter().position(|f| f.1).context("no voiced frame")?;
    let last = frames.iter().rposition(|f| f.1).unwrap_or(first);
    frames.truncate(last + 1);
    frames.drain(..first);
    Ok(Utterance { frames })
}

/// What one step of the call loop did.
enum Io {
    /// A frame went out at `at`.
    Sent {
        at: Instant,
        voiced: bool,
        /// The last frame of the phrase being said.
        last: bool,
    },
    /// An agent RTP packet came in at `at`.
    Heard { at: Instant, voiced: bool },
    /// Anything else (RTCP, a SIP event, a stray datagram).
    Other,
}

struct Call {
    sip: SipHandle,
    events: mpsc::Receiver<Event>,
    handle: CallHandle,
    rtp: UdpSocket,
    remote: SocketAddr,
    sender: RtpSender,
    tick: Interval,
    outgoing: VecDeque<([u8; FRAME_SAMPLES], bool)>,
    /// Whether the last agent packet was voiced, and when the last voiced
    /// one came.
    agent_voiced_now: bool,
    agent_last_voiced: Option<Instant>,
    packet: [u8; MAX_DATAGRAM],
    recv: [u8; MAX_DATAGRAM],
    pcm: [i16; MAX_DATAGRAM],
}

impl Call {
    async fn dial(gateway: SocketAddr, user: &str) -> anyhow::Result<Call> {
        let voicegate_tests::PcmuCall {
            sip,
            events,
            handle,
            rtp,
            remote,
        } = voicegate_tests::PcmuCall::dial(gateway, user, "bench").await?;
        let mut tick = tokio::time::interval(PTIME);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        Ok(Call {
            sip,
            events,
            handle,
            rtp,
            remote,
            sender: RtpSender::new(&mut SeededRng::new(7)),
            tick,
            outgoing: VecDeque::new(),
            agent_voiced_now: false,
            agent_last_voiced: None,
            packet: [0; MAX_DATAGRAM],
            recv: [0; MAX_DATAGRAM],
            pcm: [0; MAX_DATAGRAM],
        })
    }

    fn say(&mut self, u: &Utterance) {
        self.outgoing.extend(u.frames.iter().copied());
    }

    /// Sends the next frame on the 20 ms tick (the phrase, else silence), or
    /// takes the next datagram, whichever comes first.
    async fn next(&mut self) -> anyhow::Result<Io> {
        tokio::select! {
            _ = self.tick.tick() => {
                let (payload, voiced) = self
                    .outgoing
                    .pop_front()
                    .map(|(p, v)| (p, Some(v)))
                    .unwrap_or(([0xff; FRAME_SAMPLES], None));
                let n = self.sender.write_media(
                    &mut self.packet,
                    PT_PCMU,
                    false,
                    &payload,
                    FRAME_SAMPLES as u32,
                )?;
                let at = Instant::now();
                self.rtp.send_to(&self.packet[..n], self.remote).await?;
                Ok(Io::Sent {
                    at,
                    voiced: voiced.unwrap_or(false),
                    last: voiced.is_some() && self.outgoing.is_empty(),
                })
            }
            r = self.rtp.recv_from(&mut self.recv) => {
                let at = Instant::now();
                let Ok((n, _)) = r else { return Ok(Io::Other) };
                let Ok((header, payload)) = voicegate_media::rtp::parse(&self.recv[..n]) else {
                    return Ok(Io::Other);
                };
                if header.payload_type != PT_PCMU {
                    return Ok(Io::Other);
                }
                let len = g711::decode(Law::Mu, payload, &mut self.pcm)?;
                let voiced = rms(&self.pcm[..len]) >= VOICED_RMS;
                self.agent_voiced_now = voiced;
                if voiced {
                    self.agent_last_voiced = Some(at);
                }
                Ok(Io::Heard { at, voiced })
            }
            ev = self.events.recv() => match ev {
                Some(Event::CallEnded { reason, .. }) => bail!("the gateway ended the call: {reason:?}"),
                Some(_) => Ok(Io::Other),
                None => bail!("SIP transport stopped"),
            },
        }
    }

    /// Runs the call until the agent has been quiet for [`AGENT_DONE`]
    /// (after having said something, when `expect_speech`).
    async fn wait_agent_done(&mut self, expect_speech: bool) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut heard = !expect_speech;
        loop {
            if let Io::Heard { voiced: true, .. } = self.next().await? {
                heard = true;
            }
            let quiet_since = self.agent_last_voiced.map_or(start, |t| t.max(start));
            if heard && quiet_since.elapsed() >= AGENT_DONE {
                return Ok(());
            }
            if start.elapsed() > STEP_LIMIT * 4 {
                bail!("the agent did not stop talking within {:?}", STEP_LIMIT * 4);
            }
            if !heard && start.elapsed() > STEP_LIMIT {
                heard = true; // no greeting: go on once quiet
            }
        }
    }

    /// Says `u` and returns the send time of its last voiced frame.
    async fn say_all(&mut self, u: &Utterance) -> anyhow::Result<Instant> {
        self.say(u);
        let mut last_voiced = Instant::now();
        loop {
            if let Io::Sent { at, voiced, last } = self.next().await? {
                if voiced {
                    last_voiced = at;
                }
                if last {
                    return Ok(last_voiced);
                }
            }
        }
    }

    /// The first voiced agent packet received within [`STEP_LIMIT`].
    async fn first_agent_audio(&mut self) -> anyhow::Result<Option<Instant>> {
        let start = Instant::now();
        while start.elapsed() < STEP_LIMIT {
            if let Io::Heard { at, voiced: true } = self.next().await? {
                return Ok(Some(at));
            }
        }
        Ok(None)
    }

    async fn hang_up(mut self) -> anyhow::Result<()> {
        self.sip.hangup(self.handle).await?;
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(ev) = self.events.recv().await {
                if matches!(ev, Event::CallEnded { .. }) {
                    break;
                }
            }
        })
        .await;
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The two measurements.

struct TurnSample {
    latency: Duration,
    /// Caller's last voiced packet -> the VAD's speech end.
    vad_end: Option<Duration>,
    /// Caller's last voiced packet -> the STT final (TextEvent).
    stt_final: Option<Duration>,
}

async fn measure_turns(
    call: &mut Call,
    phrases: &[Utterance],
    turns: usize,
) -> anyhow::Result<(Vec<TurnSample>, usize)> {
    let mut samples = Vec::new();
    let mut missed = 0;
    call.wait_agent_done(true).await?; // the greeting
    for i in 0..turns + WARM_UP {
        let end = call.say_all(&phrases[i % phrases.len()]).await?;
        let Some(reply) = call.first_agent_audio().await? else {
            eprintln!("turn {i}: no reply within {STEP_LIMIT:?}");
            missed += 1;
            call.wait_agent_done(false).await?;
            continue;
        };
        call.wait_agent_done(true).await?;
        let sample = TurnSample {
            latency: reply - end,
            vad_end: mark_between(Mark::SpeechEnd, end, reply).map(|t| t - end),
            stt_final: mark_between(Mark::CallerSaid, end, reply).map(|t| t - end),
        };
        eprintln!(
            "turn {i}{}: {:.0} ms (vad end +{}, stt final +{})",
            if i < WARM_UP { " (warm-up)" } else { "" },
            ms(sample.latency),
            opt_ms(sample.vad_end),
            opt_ms(sample.stt_final),
        );
        if i >= WARM_UP {
            samples.push(sample);
        }
    }
    Ok((samples, missed))
}

#[derive(Default)]
struct BargeTally {
    /// Barge-ins measured (after the warm-up).
    attempts: usize,
    /// Onset -> the audible cut (first packet of >= 200 ms of silence).
    cuts: Vec<Duration>,
    /// No such silence before the window closed.
    no_cut: usize,
    /// Onset -> silent for good (no agent audio until the window closed).
    stops: Vec<Duration>,
    /// Agent audio came back after the flush (or never stopped).
    resumed: usize,
    /// Onset -> the media core's flush (its log line).
    flushes: Vec<Duration>,
    /// Prompts that got no reply.
    no_reply: usize,
}

async fn measure_barge_ins(
    call: &mut Call,
    phrases: &[Utterance],
    prompt: &Utterance,
    barge_ins: usize,
) -> anyhow::Result<BargeTally> {
    let mut tally = BargeTally::default();
    call.wait_agent_done(true).await?; // the greeting
    let mut reply_started: Option<Instant> = None;
    let mut attempt = 0usize;
    while tally.attempts < barge_ins {
        if attempt > 3 * (barge_ins + WARM_UP) + 10 {
            bail!("too many failed attempts");
        }
        let reply = match reply_started.take() {
            Some(t) => t,
            None => {
                call.wait_agent_done(false).await?;
                call.say_all(prompt).await?;
                match call.first_agent_audio().await? {
                    Some(t) => t,
                    None => {
                        tally.no_reply += 1;
                        attempt += 1;
                        continue;
                    }
                }
            }
        };
        // Barge in after a while, on a tick where the agent is audible.
        let delay = Duration::from_millis(BARGE_DELAYS_MS[attempt % BARGE_DELAYS_MS.len()]);
        loop {
            call.next().await?;
            if reply.elapsed() >= delay && call.agent_voiced_now {
                break;
            }
            if call
                .agent_last_voiced
                .is_some_and(|t| t.elapsed() > AGENT_DONE)
            {
                bail!("the long reply ended before the barge-in");
            }
        }
        let phrase = &phrases[attempt % phrases.len()];
        call.say(phrase);
        let mut onset = None;
        let mut phrase_end = None;
        let mut heard: Vec<(Instant, bool)> = Vec::new();
        loop {
            match call.next().await? {
                Io::Sent { at, last, .. } => {
                    onset.get_or_insert(at);
                    if last {
                        phrase_end = Some(at);
                    }
                }
                Io::Heard { at, voiced } if onset.is_some() => heard.push((at, voiced)),
                _ => {}
            }
            if phrase_end.is_some_and(|t| t.elapsed() >= AFTER_PHRASE) {
                break;
            }
        }
        let onset = onset.expect("the phrase was sent");
        let i = attempt;
        attempt += 1;
        let flushed = mark_between(Mark::BargeIn, onset, Instant::now());
        // The audible cut: the first agent packet of a silent run of
        // CUT_FRAMES or more (a pause between words is shorter).
        let cut = heard
            .windows(CUT_FRAMES)
            .position(|w| w.iter().all(|h| !h.1))
            .map(|p| heard[p].0 - onset);
        // For good: silent from the cut to the end of the window. The packet
        // in flight when the core flushed may still be audio; anything voiced
        // later was queued after the flush.
        let last_voiced = heard.iter().rposition(|h| h.1);
        let stopped = match last_voiced {
            Some(l) if l + 1 >= heard.len() => None,
            Some(l) => Some(heard[l + 1].0 - onset),
            None => heard.first().map(|h| h.0 - onset),
        };
        let resumed_at = flushed.and_then(|f| {
            heard
                .iter()
                .find(|h| h.1 && h.0 > f + 2 * PTIME)
                .map(|h| h.0 - f)
        });
        eprintln!(
            "barge-in {i}{} after {:.0} ms of reply: cut +{}, core flush +{}, {}",
            if i < WARM_UP { " (warm-up)" } else { "" },
            ms(onset - reply),
            opt_ms(cut),
            opt_ms(flushed.map(|t| t - onset)),
            match (stopped, resumed_at) {
                (_, Some(r)) => format!("agent audio RESUMED {:.0} ms after the flush", ms(r)),
                (Some(s), None) => format!("silent for good from +{:.0} ms", ms(s)),
                (None, None) => "still talking when the window closed".to_string(),
            },
        );
        if i >= WARM_UP {
            tally.attempts += 1;
            match cut {
                Some(c) => tally.cuts.push(c),
                None => tally.no_cut += 1,
            }
            if let Some(f) = flushed {
                tally.flushes.push(f - onset);
            }
            match (stopped, resumed_at) {
                (Some(s), None) => tally.stops.push(s),
                _ => tally.resumed += 1,
            }
        }
        // Go on with whatever the agent says now: the rest of a reply that
        // came back, or its answer to the barge-in phrase.
        reply_started = if call
            .agent_last_voiced
            .is_some_and(|t| t.elapsed() < Duration::from_millis(300))
        {
            Some(Instant::now())
        } else {
            call.first_agent_audio().await?
        };
    }
    Ok(tally)
}

// ---------------------------------------------------------------------------
// Figures.

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn opt_ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "?".into(), |d| format!("{:.0} ms", ms(d)))
}

/// p50 / p95 / max (nearest rank) of `values`, in ms.
fn summary(values: impl IntoIterator<Item = Duration>) -> String {
    let mut v: Vec<f64> = values.into_iter().map(ms).collect();
    if v.is_empty() {
        return "n = 0".into();
    }
    v.sort_by(f64::total_cmp);
    let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    format!(
        "p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms (min {:.0} ms, n = {})",
        rank(0.50),
        rank(0.95),
        v[v.len() - 1],
        v[0],
        v.len()
    )
}

// ---------------------------------------------------------------------------

struct Args {
    turn: bool,
    barge: bool,
    turns: usize,
    barge_ins: usize,
    timeout: Duration,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        turn: true,
        barge: true,
        turns: 30,
        barge_ins: 30,
        timeout: Duration::from_secs(900),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--mode" => match value()?.as_str() {
                "turn" => a.barge = false,
                "barge" => a.turn = false,
                "both" => {}
                m => bail!("--mode {m}: turn, barge or both"),
            },
            "--turns" => a.turns = value()?.parse()?,
            "--barge-ins" => a.barge_ins = value()?.parse()?,
            "--timeout-secs" => a.timeout = Duration::from_secs(value()?.parse()?),
            "--verbose" => VERBOSE.store(true, std::sync::atomic::Ordering::Relaxed),
            f => bail!("unknown argument {f}"),
        }
    }
    if !(1..=500).contains(&a.turns) || !(1..=500).contains(&a.barge_ins) {
        bail!("--turns and --barge-ins must be 1..=500");
    }
    Ok(a)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    // Before start_gateway's own (which then does nothing): the gateway's
    // info lines go through MarkWriter.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "warn,voicegate_media::driver=info,voicegate::conversation=info",
        ))
        .with_ansi(false)
        .with_writer(|| MarkWriter)
        .init();
    tokio::time::timeout(args.timeout, run(&args))
        .await
        .with_context(|| format!("not finished within {:?}", args.timeout))?
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let tts = TtsService::from_config(&SpeechConfig::default())?;
    let mut report = Vec::new();
    if args.turn {
        let mut phrases = Vec::new();
        for p in TURN_PHRASES {
            phrases.push(utterance(&tts, p).await?);
        }
        let gw = start_gateway(test_config()).await;
        let mut call = Call::dial(gw.sip_addr(), "echo").await?;
        let (samples, missed) = measure_turns(&mut call, &phrases, args.turns).await?;
        call.hang_up().await?;
        gw.stop().await;
        report.push(format!(
            "end of caller speech -> first agent audio (echo): {}; turns without a reply: {missed}",
            summary(samples.iter().map(|s| s.latency))
        ));
        report.push(format!(
            "  of which -> VAD speech end: {}",
            summary(samples.iter().filter_map(|s| s.vad_end))
        ));
        report.push(format!(
            "  of which -> STT final (TextEvent): {}",
            summary(samples.iter().filter_map(|s| s.stt_final))
        ));
        report.push(format!(
            "  STT final -> first agent audio: {}",
            summary(
                samples
                    .iter()
                    .filter_map(|s| s.stt_final.map(|f| s.latency.saturating_sub(f)))
            )
        ));
    }
    if args.barge {
        let mut phrases = Vec::new();
        for p in BARGE_PHRASES {
            phrases.push(utterance(&tts, p).await?);
        }
        let prompt = utterance(&tts, PROMPT).await?;
        let mut cfg = test_config();
        cfg.agents = vec![agent("long_reply", true, "")];
        let gw = start_gateway(cfg).await;
        let mut call = Call::dial(gw.sip_addr(), "long_reply").await?;
        let tally = measure_barge_ins(&mut call, &phrases, &prompt, args.barge_ins).await?;
        call.hang_up().await?;
        gw.stop().await;
        report.push(format!(
            "barge-in, {} measured: caller speech onset -> agent audio cut (first packet of >= 200 ms silence): {}; no cut: {}",
            tally.attempts,
            summary(tally.cuts.iter().copied()),
            tally.no_cut,
        ));
        report.push(format!(
            "  onset -> playout flushed in the media core (log line): {}",
            summary(tally.flushes.iter().copied())
        ));
        report.push(format!(
            "  onset -> silent for good (until the phrase ended + 300 ms): {}; agent audio resumed after the cut or never stopped: {}",
            summary(tally.stops.iter().copied()),
            tally.resumed,
        ));
        report.push(format!("  prompts without a reply: {}", tally.no_reply));
    }
    println!();
    for line in report {
        println!("{line}");
    }
    Ok(())
}
