//! The session/turn state machine: what a primfunctions handler's events mean on a
//! phone call (sans-IO).
//!
//! A [`Session`] sits between the host of a call (media, STT, TTS, SIP — it knows none
//! of them) and the handler (a [`crate::HandlerLink`], Python or native). It owns the
//! call's conversational state: turn numbers, whether a handler call is running, what
//! audio is queued and whether it may be interrupted, the silence timer, the
//! once-only clean-up `StopEvent`, `output_data` and the transcript.
//!
//! # Feeding and draining
//!
//! Feed with `handle_*(…, now)`: host inputs ([`Session::handle_start`],
//! [`Session::handle_text`], [`Session::handle_speech_started`],
//! [`Session::handle_dtmf`], [`Session::handle_playback_done`],
//! [`Session::handle_call_ended`], …), handler outputs ([`Session::handle_link`]) and
//! the passage of time ([`Session::handle_timeout`]). The session never reads a
//! clock; `now` is the only time it knows.
//!
//! After every `handle_*` call, drain all three outputs until they return `None`:
//! [`Session::poll_request`] (requests for the handler side: forward to
//! [`crate::HandlerLink::send`]), [`Session::poll_command`] (commands for the host:
//! speak, play, flush, hang up, transfer, …) and [`Session::poll_timeout`] (the
//! instant at which [`Session::handle_timeout`] must be called next, if any).
//! [`Command::Ended`] is the last command a session gives.
//!
//! # Playback bookkeeping
//!
//! Every [`Command::Speak`], [`Command::Play`] and [`Command::Silence`] carries a
//! [`PlaybackId`]. The host reports each one it finished (played to the end, or failed)
//! with [`Session::handle_playback_done`]. Items the host drops because of a
//! [`Command::Flush`] are not reported: the session removes them itself when it emits
//! the flush. "The agent finished speaking" means: no handler call running and no
//! playback outstanding; the silence timer starts then.
//!
//! # Turns and barge-in
//!
//! Each input delivered to the handler (StartEvent, TextEvent, TimeoutEvent, DTMFEvent,
//! an external event, the final StopEvent) starts a new turn: its `turn` is one more
//! than the previous input's (StartEvent is turn 1). Foreground actions (speech, call
//! control) are accepted only from the running turn, so late outputs of a cancelled
//! turn are dropped; background-task outputs are accepted whenever the session is
//! live, and records (`context_patch`, log, error, `metrics.*`) always are.
//!
//! Barge-in: speech onset while interruptible audio plays flushes the interruptible
//! audio ([`FlushScope::Interruptible`]) and cancels the running handler call and its
//! interruptible tasks ([`crate::LinkRequest::Cancel`]). A TextEvent or DTMFEvent that
//! arrives while a handler call still runs follows the same rule. The next input then
//! carries `previous_turn_interrupted: true`; every TextEvent/DTMFEvent after the first
//! agent turn carries `previous_turn_interrupted` and `previous_turn_agent_transcript`
//! (the agent speech of the previous turn the caller heard: items played to the end,
//! plus the item that was playing when the caller barged in).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::event::{
    Event, EventKind, SttUpdateSettingsData, TextData, TextToSpeechData, TransferSessionData, Voice,
};
use crate::link::{LinkEvent, LinkRequest};

/// The most `context.output_data` may weigh, serialised (primfunctions' limit).
pub const MAX_OUTPUT_DATA_BYTES: usize = 64 * 1024;

/// Output names a handler may still send during clean-up (primfunctions
/// `cleanup.CLEANUP_OUTPUT_NAMES`); anything else is dropped then.
const CLEANUP_OUTPUT_NAMES: &[&str] = &[
    "context_patch",
    "context",
    "external_event",
    "log",
    "error",
    "debug",
];

/// Session behaviour that comes from configuration.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Silence after the agent finished speaking before a TimeoutEvent; `None`
    /// disables timeouts.
    pub silence_timeout: Option<Duration>,
    /// Whether speech with `interruptible=None` may be barged in on.
    pub default_interruptible: bool,
    /// The clean-up budget for the final StopEvent (primfunctions: 30 s).
    pub cleanup_budget: Duration,
    /// Extra time past the budget before the session gives up on the handler side.
    pub cleanup_grace: Duration,
    /// Spoken when the handler side is lost (worker crash or hang); `None` hangs up
    /// without a word.
    pub apology: Option<String>,
    /// Voice for the apology (`None`: the host's default voice).
    pub apology_voice: Option<Voice>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            silence_timeout: Some(Duration::from_secs(10)),
            default_interruptible: true,
            cleanup_budget: Duration::from_secs(30),
            cleanup_grace: Duration::from_secs(2),
            apology: Some(
                "Sorry, something went wrong on our side. Please call again later.".into(),
            ),
            apology_voice: None,
        }
    }
}

/// Identifies one queued playback item (speech, audio or silence).
pub type PlaybackId = u64;

/// Text to synthesise, with the handler's TTS parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Speech {
    /// What to say.
    pub text: String,
    /// The voice; `None` means the host's default voice.
    pub voice: Option<Voice>,
    /// Playback speed (0.25-4.0).
    pub speed: f64,
    /// Language code.
    pub language: String,
    /// Voice styling instructions (providers that support them).
    pub instructions: Option<String>,
    /// TTS model override.
    pub model: Option<String>,
    /// Whether the synthesised audio may be cached.
    pub cache: bool,
}

impl Speech {
    fn from_tts(d: &TextToSpeechData) -> Self {
        Speech {
            text: d.text.clone(),
            voice: d.voice.clone(),
            speed: d.speed.unwrap_or(1.0),
            language: d.language.clone().unwrap_or_else(|| "en".into()),
            instructions: d.instructions.clone().filter(|s| !s.is_empty()),
            model: d.model.clone(),
            cache: d.cache.unwrap_or(true),
        }
    }

    fn closing(
        text: &str,
        voice: &Option<Voice>,
        speed: Option<f64>,
        language: &Option<String>,
    ) -> Self {
        Speech {
            text: text.to_owned(),
            voice: voice.clone(),
            speed: speed.unwrap_or(1.0),
            language: language.clone().unwrap_or_else(|| "en".into()),
            instructions: None,
            model: None,
            cache: true,
        }
    }
}

/// Which queued audio a [`Command::Flush`] removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushScope {
    /// Interruptible items only (barge-in); non-interruptible audio keeps playing.
    Interruptible,
    /// Everything, including non-interruptible speech (InterruptEvent, `replace`,
    /// `clear_speech`). The background track is not touched.
    All,
}

/// Where a transfer goes.
#[derive(Debug, Clone, PartialEq)]
pub enum TransferTarget {
    /// A phone number through the trunk (`phone_number`, or `destination` type phone).
    Phone {
        /// The number, as the handler gave it.
        number: String,
    },
    /// A SIP URI (`destination` type sip; refer mode only).
    Sip {
        /// `sip:DIGITS@host[:port]`.
        uri: String,
    },
    /// Another agent on this gateway: a new session on the same call.
    Agent {
        /// Target agent id.
        agent_id: String,
        /// Target environment.
        environment: String,
        /// Becomes the new session's `input_data`.
        data: Value,
    },
}

/// How an external transfer is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferMode {
    /// SIP REFER to the caller's side.
    Refer,
    /// A second outbound leg bridged to this one (B2BUA).
    Bridge,
}

/// Severity of a [`Command::Log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Engine detail (stale events dropped, ...).
    Debug,
    /// Handler `LogEvent`s.
    Info,
    /// Events voicegate cannot honour, ignored inputs.
    Warn,
    /// Handler `ErrorEvent`s and exceptions, rejected events, a lost handler.
    Error,
}

/// Who said something in the transcript.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The caller (TextEvent, DTMF).
    User,
    /// The agent (speech it queued).
    Agent,
}

/// One transcript line.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptLine {
    /// Speaker.
    pub role: Role,
    /// What was said (DTMF as `"DTMF 1#"`).
    pub text: String,
    /// The turn it belongs to.
    pub turn: i64,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The clean-up StopEvent ran to completion.
    Completed,
    /// The handler side was lost (worker crash/hang) or never answered clean-up.
    HandlerLost,
}

/// What the session asks its host to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Synthesise and queue speech (TextToSpeechEvent).
    Speak {
        /// Report with [`Session::handle_playback_done`].
        id: PlaybackId,
        /// Text and TTS parameters.
        speech: Speech,
        /// Whether the caller may barge in.
        interruptible: bool,
    },
    /// Queue an audio file or http(s) URL (AudioEvent).
    Play {
        /// Report with [`Session::handle_playback_done`].
        id: PlaybackId,
        /// File path or URL.
        path: String,
        /// Whether the caller may barge in.
        interruptible: bool,
        /// Loop until flushed.
        looped: bool,
    },
    /// Queue silence (SilenceEvent).
    Silence {
        /// Report with [`Session::handle_playback_done`].
        id: PlaybackId,
        /// How long.
        duration: Duration,
    },
    /// Drop queued and playing audio now (within one frame at the media edge).
    Flush {
        /// Which audio.
        scope: FlushScope,
    },
    /// End the call (StopEvent): after queued audio (flushed first when
    /// `clear_speech`), speak `closing`, then hang up. Report the end of the call
    /// with [`Session::handle_call_ended`].
    HangUp {
        /// Flush all queued audio first.
        clear_speech: bool,
        /// Said before hanging up.
        closing: Option<Speech>,
    },
    /// Transfer the call (TransferSessionEvent, validated): after queued audio
    /// (flushed first when `clear_speech`) and `closing`. Report the end of this
    /// session's part with [`Session::handle_call_ended`].
    Transfer {
        /// Where to.
        target: TransferTarget,
        /// REFER or bridge; `None` lets the host choose (refer where the trunk allows).
        mode: Option<TransferMode>,
        /// Flush all queued audio first.
        clear_speech: bool,
        /// Said before transferring.
        closing: Option<Speech>,
    },
    /// Start recording the call.
    StartRecording {
        /// Status callback URL, if the handler gave one.
        status_callback_url: Option<String>,
    },
    /// Stop recording the call.
    StopRecording,
    /// Change the background track (UpdateAudioSettingsEvent); `url: None` stops it.
    UpdateBackground {
        /// Track URL or path.
        url: Option<String>,
        /// Volume 0.0-1.0.
        volume: f64,
        /// Loop the track.
        looped: bool,
    },
    /// New STT settings (STTUpdateSettingsEvent).
    SttSettings(SttUpdateSettingsData),
    /// Deliver an event to another local session (ExternalEvent).
    External {
        /// Target agent.
        agent_id: String,
        /// Target session.
        session_id: String,
        /// Event name the target handler receives.
        name: String,
        /// Event data.
        data: Value,
    },
    /// A handler metric (`metrics.*`).
    Metric {
        /// Full wire name.
        name: String,
        /// Payload.
        data: Value,
    },
    /// A line for the log: handler LogEvent/ErrorEvent, or the engine explaining what
    /// it did not do.
    Log {
        /// Severity.
        level: LogLevel,
        /// The message.
        message: String,
        /// `file.py:line` in the handler, when known.
        location: Option<String>,
    },
    /// The session is over: drop the link. Always the last command.
    Ended {
        /// The final `context.output_data`.
        output_data: Value,
        /// What was said.
        transcript: Vec<TranscriptLine>,
        /// True when clean-up ran out of budget.
        cleanup_timed_out: bool,
        /// Why it ended.
        reason: EndReason,
    },
}

impl Command {
    /// Writes a [`Command::Log`] to `tracing` (other commands are ignored), with the
    /// session id and the handler's location as fields.
    pub fn trace_log(&self, session: &str) {
        let Command::Log {
            level,
            message,
            location,
        } = self
        else {
            return;
        };
        let location = location.as_deref().unwrap_or("");
        match level {
            LogLevel::Debug => tracing::debug!(session, location, "{message}"),
            LogLevel::Info => tracing::info!(session, location, "{message}"),
            LogLevel::Warn => tracing::warn!(session, location, "{message}"),
            LogLevel::Error => tracing::error!(session, location, "{message}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotStarted,
    Active,
    /// HangUp/Transfer issued; waiting for the host to report the call ended.
    Ending,
    /// The final StopEvent was sent; waiting for `closed`.
    Cleanup {
        deadline: Instant,
    },
    Ended,
}

#[derive(Debug)]
struct Queued {
    id: PlaybackId,
    interruptible: bool,
    /// Speech text (for the heard transcript).
    text: Option<String>,
}

/// One call's conversational state (see the module docs).
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    state: State,
    turn: i64,
    running: Option<i64>,
    input_allowed: bool,
    handler_alive: bool,
    playback: VecDeque<Queued>,
    next_playback: PlaybackId,
    after_speech: Vec<Command>,
    pending_inputs: VecDeque<Event>,
    silence_since: Option<Instant>,
    timeout_count: i64,
    last_input_at: Option<Instant>,
    interrupted: bool,
    agent_turns: u64,
    heard: Vec<String>,
    output_data: Value,
    transcript: Vec<TranscriptLine>,
    requests: VecDeque<LinkRequest>,
    commands: VecDeque<Command>,
    /// A Transfer command is out and the host has not reported its end.
    transfer_pending: bool,
}

impl Session {
    /// A session that has not started yet.
    pub fn new(cfg: SessionConfig) -> Self {
        Session {
            cfg,
            state: State::NotStarted,
            turn: 0,
            running: None,
            input_allowed: true,
            handler_alive: true,
            playback: VecDeque::new(),
            next_playback: 1,
            after_speech: Vec::new(),
            pending_inputs: VecDeque::new(),
            silence_since: None,
            timeout_count: 0,
            last_input_at: None,
            interrupted: false,
            agent_turns: 0,
            heard: Vec::new(),
            output_data: Value::Object(Default::default()),
            transcript: Vec::new(),
            requests: VecDeque::new(),
            commands: VecDeque::new(),
            transfer_pending: false,
        }
    }

    /// The last turn number given to an input.
    pub fn turn(&self) -> i64 {
        self.turn
    }

    /// True while a handler call is running.
    pub fn is_turn_running(&self) -> bool {
        self.running.is_some()
    }

    /// True when no handler call runs and no playback is outstanding.
    pub fn is_idle(&self) -> bool {
        self.running.is_none() && self.playback.is_empty() && self.pending_inputs.is_empty()
    }

    /// True once [`Command::Ended`] was given.
    pub fn is_ended(&self) -> bool {
        self.state == State::Ended
    }

    /// True after a HangUp/Transfer, during clean-up, and once ended: the call is
    /// going away and inputs are ignored.
    pub fn is_ending(&self) -> bool {
        !matches!(self.state, State::NotStarted | State::Active)
    }

    /// The latest `context.output_data` the handler set.
    pub fn output_data(&self) -> &Value {
        &self.output_data
    }

    /// The transcript so far.
    pub fn transcript(&self) -> &[TranscriptLine] {
        &self.transcript
    }

    /// The next request for the handler side.
    pub fn poll_request(&mut self) -> Option<LinkRequest> {
        self.requests.pop_front()
    }

    /// The next command for the host.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// When [`Session::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Active => self
                .silence_since
                .zip(self.cfg.silence_timeout)
                .map(|(t, d)| t + d),
            State::Cleanup { deadline } => Some(deadline),
            _ => None,
        }
    }

    // ---- host inputs ----

    /// The call was answered: StartEvent (turn 1).
    pub fn handle_start(&mut self, now: Instant) {
        if self.state != State::NotStarted {
            return;
        }
        self.state = State::Active;
        self.last_input_at = Some(now);
        self.deliver(Event::start(), now);
    }

    /// A final transcript (`source` "speech") or typed line (`source` "text").
    pub fn handle_text(&mut self, source: &str, text: &str, language: Option<&str>, now: Instant) {
        let mut ev = Event::text(source, text);
        if let EventKind::Text(TextData { language: l, .. }) = &mut ev.kind {
            *l = language.map(str::to_owned);
        }
        self.user_input(ev, text.to_owned(), now);
    }

    /// DTMF digits from the caller (RFC 4733 / SIP INFO).
    pub fn handle_dtmf(&mut self, digits: &str, now: Instant) {
        self.user_input(Event::dtmf(digits), format!("DTMF {digits}"), now);
    }

    /// VAD detected the caller starting to speak.
    pub fn handle_speech_started(&mut self, now: Instant) {
        if self.state != State::Active || !self.input_allowed {
            return;
        }
        // The caller is talking: the silence clock restarts.
        if self.silence_since.is_some() {
            self.silence_since = Some(now);
        }
        if self.playing_interruptible() {
            self.barge_in();
        }
    }

    /// An event sent to this session by another one (the target of an ExternalEvent):
    /// delivered as `Event(name, data)` once no handler call runs.
    pub fn handle_external(&mut self, name: &str, data: Value, now: Instant) {
        if self.state != State::Active {
            return;
        }
        self.pending_inputs.push_back(Event::other(name, data));
        self.deliver_pending(now);
    }

    /// The host finished (or failed) playing a Speak/Play/Silence item.
    pub fn handle_playback_done(&mut self, id: PlaybackId, now: Instant) {
        if self.state == State::Ended {
            return;
        }
        let Some(pos) = self.playback.iter().position(|q| q.id == id) else {
            return;
        };
        if let Some(Queued { text: Some(t), .. }) = self.playback.remove(pos) {
            self.heard.push(t);
        }
        if self.playback.is_empty() {
            let released = std::mem::take(&mut self.after_speech);
            self.commands.extend(released);
        }
        self.became_idle(now);
    }

    /// The call is over for this session (caller or agent hung up, transfer done):
    /// the handler gets its one clean-up StopEvent.
    pub fn handle_call_ended(&mut self, now: Instant) {
        match self.state {
            State::Ended | State::Cleanup { .. } => {}
            State::NotStarted => self.finish(false, EndReason::Completed),
            State::Active | State::Ending => {
                self.silence_since = None;
                self.pending_inputs.clear();
                self.playback.clear();
                self.after_speech.clear();
                if !self.handler_alive {
                    self.finish(false, EndReason::HandlerLost);
                    return;
                }
                self.turn += 1;
                self.running = Some(self.turn);
                self.state = State::Cleanup {
                    deadline: now + self.cfg.cleanup_budget + self.cfg.cleanup_grace,
                };
                self.requests.push_back(LinkRequest::Stop {
                    event: Event::stop().with_turn(self.turn),
                    budget: self.cfg.cleanup_budget,
                });
            }
        }
    }

    /// The host could not carry out a [`Command::Transfer`] (REFER refused,
    /// target busy or not answering, no trunk): the session goes on, and the
    /// handler gets an `ErrorEvent` with `message` (which names the SIP
    /// status) as its next input. Ignored unless a transfer is pending.
    pub fn handle_transfer_failed(&mut self, message: &str, now: Instant) {
        if self.state != State::Ending || !self.transfer_pending {
            return;
        }
        self.transfer_pending = false;
        self.state = State::Active;
        self.pending_inputs.push_back(Event::error(message));
        self.deliver_pending(now);
        self.became_idle(now);
    }

    /// Time passed: fires the silence timer or gives up on clean-up.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Active => {
                let (Some(since), Some(after)) = (self.silence_since, self.cfg.silence_timeout)
                else {
                    return;
                };
                if now < since + after {
                    return;
                }
                self.silence_since = None;
                self.timeout_count += 1;
                let ms = self
                    .last_input_at
                    .map(|t| now.saturating_duration_since(t).as_millis() as i64)
                    .unwrap_or(0);
                self.deliver(Event::timeout(self.timeout_count, ms), now);
            }
            State::Cleanup { deadline } if now >= deadline => {
                self.log(
                    LogLevel::Error,
                    format!(
                        "the handler did not finish clean-up within {} ms; session ended",
                        (self.cfg.cleanup_budget + self.cfg.cleanup_grace).as_millis()
                    ),
                );
                self.finish(true, EndReason::HandlerLost);
            }
            _ => {}
        }
    }

    // ---- handler outputs ----

    /// Something arrived from the handler side.
    pub fn handle_link(&mut self, ev: LinkEvent, now: Instant) {
        if self.state == State::Ended {
            return;
        }
        match ev {
            LinkEvent::Event(e) => self.handle_handler_event(e, now),
            LinkEvent::Closed {
                output_data,
                timed_out,
            } => {
                if output_data.is_object() {
                    self.output_data = output_data;
                }
                if timed_out {
                    self.log(
                        LogLevel::Warn,
                        format!(
                            "handler clean-up ran out of its {} s budget",
                            self.cfg.cleanup_budget.as_secs()
                        ),
                    );
                }
                if matches!(self.state, State::Cleanup { .. }) {
                    self.finish(timed_out, EndReason::Completed);
                } else {
                    // Closed without a stop: the handler side forgot the session.
                    self.handler_lost("the handler side closed the session", now);
                }
            }
            LinkEvent::Lost { reason } => self.handler_lost(&reason, now),
        }
    }

    fn handler_lost(&mut self, reason: &str, _now: Instant) {
        if !self.handler_alive {
            return;
        }
        self.handler_alive = false;
        self.running = None;
        self.log(LogLevel::Error, format!("handler lost: {reason}"));
        match self.state {
            State::NotStarted | State::Active => {
                self.state = State::Ending;
                self.silence_since = None;
                let closing = self.cfg.apology.as_deref().map(|t| Speech {
                    voice: self.cfg.apology_voice.clone(),
                    ..Speech::closing(t, &None, None, &None)
                });
                self.commands.push_back(Command::HangUp {
                    clear_speech: true,
                    closing,
                });
            }
            State::Cleanup { .. } => self.finish(false, EndReason::HandlerLost),
            State::Ending | State::Ended => {}
        }
    }

    fn handle_handler_event(&mut self, ev: Event, now: Instant) {
        if self.state == State::Ended || self.state == State::NotStarted {
            return;
        }
        if let EventKind::HandlerEnd(_) = ev.kind {
            if self.running == Some(ev.turn) {
                self.running = None;
                // InputAllowed(false) lasts until InputAllowed(true) or HandlerEnd.
                self.input_allowed = true;
                self.deliver_pending(now);
                self.became_idle(now);
            }
            return;
        }
        // Records of what already happened in the handler (state patches, logs,
        // errors, metrics) are applied whatever turn they carry: `set_output` from a
        // background task or a cancelled turn still changed `output_data`. Actions
        // (speech, call control) from a turn that is no longer current are dropped.
        let record = matches!(
            ev.kind,
            EventKind::ContextPatch(_)
                | EventKind::Log(_)
                | EventKind::Error(_)
                | EventKind::Metric(_)
        );
        if !ev.background && !record && self.running != Some(ev.turn) {
            self.log(
                LogLevel::Debug,
                format!(
                    "dropped `{}` from turn {} (turn {} is current)",
                    ev.name(),
                    ev.turn,
                    self.turn
                ),
            );
            return;
        }
        if self.state != State::Active && !CLEANUP_OUTPUT_NAMES.contains(&ev.name()) {
            self.log(
                LogLevel::Debug,
                format!("ignored `{}`: the session is ending", ev.name()),
            );
            return;
        }
        self.apply_output(ev);
    }

    fn apply_output(&mut self, ev: Event) {
        let turn = ev.turn;
        match ev.kind {
            EventKind::TextToSpeech(d) => {
                if d.replace {
                    self.flush(FlushScope::All);
                }
                let interruptible = d.interruptible.unwrap_or(self.cfg.default_interruptible);
                let id = self.enqueue(interruptible, Some(d.text.clone()));
                self.transcript.push(TranscriptLine {
                    role: Role::Agent,
                    text: d.text.clone(),
                    turn,
                });
                self.commands.push_back(Command::Speak {
                    id,
                    speech: Speech::from_tts(&d),
                    interruptible,
                });
            }
            EventKind::Audio(d) => {
                let interruptible = d.interruptible.unwrap_or(true);
                let id = self.enqueue(interruptible, None);
                self.commands.push_back(Command::Play {
                    id,
                    path: d.path,
                    interruptible,
                    looped: d.loop_.unwrap_or(false),
                });
            }
            EventKind::Silence(d) => {
                let id = self.enqueue(true, None);
                let ms = if d.duration.is_finite() {
                    d.duration.max(0.0)
                } else {
                    0.0
                };
                self.commands.push_back(Command::Silence {
                    id,
                    duration: Duration::from_micros((ms * 1000.0) as u64),
                });
            }
            EventKind::Interrupt(_) => self.flush(FlushScope::All),
            EventKind::Stop(d) => {
                let closing = d
                    .closing_speech
                    .as_deref()
                    .map(|t| Speech::closing(t, &d.voice, d.speed, &d.language));
                self.end_with(Command::HangUp {
                    clear_speech: d.clear_speech,
                    closing,
                });
            }
            EventKind::TransferSession(d) => match validate_transfer(&d) {
                Ok((target, mode)) => {
                    let closing = d
                        .closing_speech
                        .as_deref()
                        .map(|t| Speech::closing(t, &d.voice, d.speed, &d.language));
                    self.transfer_pending = true;
                    self.end_with(Command::Transfer {
                        target,
                        mode,
                        clear_speech: d.clear_speech,
                        closing,
                    });
                }
                Err(why) => self.log(
                    LogLevel::Error,
                    format!("TransferSessionEvent rejected: {why}; the call goes on"),
                ),
            },
            EventKind::InputAllowed(d) => self.input_allowed = d.allowed,
            EventKind::ContextPatch(p) => {
                if let Some(od) = p.get("output_data") {
                    let size = serde_json::to_string(od).map(|s| s.len()).unwrap_or(0);
                    if !od.is_object() {
                        self.log(
                            LogLevel::Error,
                            "output_data must be a dict; ignored".into(),
                        );
                    } else if size > MAX_OUTPUT_DATA_BYTES {
                        self.log(
                            LogLevel::Error,
                            format!(
                                "output_data of {size} bytes exceeds the {MAX_OUTPUT_DATA_BYTES}-byte limit; ignored"
                            ),
                        );
                    } else {
                        self.output_data = od.clone();
                    }
                }
            }
            EventKind::Log(d) => {
                let message = match d.message {
                    Value::String(s) => s,
                    v => v.to_string(),
                };
                let level = match d
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get("level"))
                    .and_then(Value::as_str)
                {
                    Some("error") => LogLevel::Error,
                    Some("warn" | "warning") => LogLevel::Warn,
                    Some("debug") => LogLevel::Debug,
                    _ => LogLevel::Info,
                };
                self.commands.push_back(Command::Log {
                    level,
                    message,
                    location: d.location,
                });
            }
            EventKind::Error(d) => {
                self.log(LogLevel::Error, format!("handler error: {}", d.message))
            }
            EventKind::Metric(m) => self.commands.push_back(Command::Metric {
                name: m.name,
                data: m.data,
            }),
            EventKind::External(d) => {
                let cmd = Command::External {
                    agent_id: d.agent_id,
                    session_id: d.session_id,
                    name: d.name,
                    data: d.data,
                };
                self.after_speech_or_now(d.after_speech, cmd);
            }
            EventKind::UpdateAudioSettings(d) => {
                let cmd = Command::UpdateBackground {
                    url: d.background_track_url,
                    volume: d.background_track_volume.unwrap_or(1.0).clamp(0.0, 1.0),
                    looped: d.background_track_loop.unwrap_or(true),
                };
                self.after_speech_or_now(d.after_speech, cmd);
            }
            EventKind::SttUpdateSettings(d) => self.commands.push_back(Command::SttSettings(d)),
            EventKind::StartRecording(d) => self.commands.push_back(Command::StartRecording {
                status_callback_url: d.status_callback_url,
            }),
            EventKind::StopRecording(_) => self.commands.push_back(Command::StopRecording),
            // Bookkeeping events with nothing to do on a call.
            EventKind::TurnEnd(_) | EventKind::TranscriptPart(_) | EventKind::Debug(_) => {}
            input @ (EventKind::Start(_)
            | EventKind::Text(_)
            | EventKind::Timeout(_)
            | EventKind::Dtmf(_)
            | EventKind::HandlerEnd(_)) => {
                let name = input.name().to_owned();
                self.log(
                    LogLevel::Warn,
                    format!("`{name}` is an input event; a handler yielding it has no effect"),
                );
            }
            other => {
                let name = other.name().to_owned();
                self.log(
                    LogLevel::Warn,
                    format!("voicegate does not support the `{name}` event yet; ignored"),
                );
            }
        }
    }

    // ---- internals ----

    fn user_input(&mut self, mut ev: Event, line: String, now: Instant) {
        if self.state != State::Active {
            return;
        }
        if !self.input_allowed {
            self.log(
                LogLevel::Debug,
                format!(
                    "`{}` ignored: the handler disabled input (InputAllowedEvent)",
                    ev.name()
                ),
            );
            return;
        }
        self.last_input_at = Some(now);
        self.timeout_count = 0;
        if self.running.is_some() || self.playing_interruptible() {
            self.barge_in();
        }
        if self.agent_turns > 0 {
            let heard = self.heard.join(" ");
            if let Some(extra) = ev.extra_mut() {
                extra.insert(
                    "previous_turn_interrupted".into(),
                    Value::Bool(self.interrupted),
                );
                extra.insert(
                    "previous_turn_agent_transcript".into(),
                    Value::String(heard),
                );
            }
        }
        self.interrupted = false;
        self.heard.clear();
        self.transcript.push(TranscriptLine {
            role: Role::User,
            text: line,
            turn: self.turn + 1,
        });
        self.deliver(ev, now);
    }

    fn deliver(&mut self, ev: Event, _now: Instant) {
        self.turn += 1;
        self.running = Some(self.turn);
        self.agent_turns += 1;
        self.silence_since = None;
        self.requests
            .push_back(LinkRequest::Deliver(ev.with_turn(self.turn)));
    }

    fn deliver_pending(&mut self, now: Instant) {
        if self.state == State::Active
            && self.running.is_none()
            && let Some(ev) = self.pending_inputs.pop_front()
        {
            self.deliver(ev, now);
        }
    }

    fn became_idle(&mut self, now: Instant) {
        if self.state == State::Active
            && self.running.is_none()
            && self.playback.is_empty()
            && self.silence_since.is_none()
            && self.cfg.silence_timeout.is_some()
        {
            self.silence_since = Some(now);
        }
    }

    fn playing_interruptible(&self) -> bool {
        self.playback.front().is_some_and(|q| q.interruptible)
    }

    fn barge_in(&mut self) {
        if self.playing_interruptible() {
            // The item playing was (partly) heard; the rest of the queue was not.
            if let Some(t) = self.playback.front().and_then(|q| q.text.clone()) {
                self.heard.push(t);
            }
            self.playback.retain(|q| !q.interruptible);
            self.after_speech.clear();
            self.commands.push_back(Command::Flush {
                scope: FlushScope::Interruptible,
            });
            self.interrupted = true;
        }
        if self.running.take().is_some() {
            self.requests.push_back(LinkRequest::Cancel);
            self.interrupted = true;
        }
    }

    fn flush(&mut self, scope: FlushScope) {
        match scope {
            FlushScope::All => self.playback.clear(),
            FlushScope::Interruptible => self.playback.retain(|q| !q.interruptible),
        }
        self.after_speech.clear();
        self.commands.push_back(Command::Flush { scope });
    }

    fn enqueue(&mut self, interruptible: bool, text: Option<String>) -> PlaybackId {
        let id = self.next_playback;
        self.next_playback += 1;
        self.playback.push_back(Queued {
            id,
            interruptible,
            text,
        });
        self.silence_since = None;
        id
    }

    fn after_speech_or_now(&mut self, after_speech: bool, cmd: Command) {
        if after_speech && !self.playback.is_empty() {
            self.after_speech.push(cmd);
        } else {
            self.commands.push_back(cmd);
        }
    }

    fn end_with(&mut self, cmd: Command) {
        self.state = State::Ending;
        self.silence_since = None;
        self.pending_inputs.clear();
        self.commands.push_back(cmd);
    }

    fn finish(&mut self, cleanup_timed_out: bool, reason: EndReason) {
        self.state = State::Ended;
        self.running = None;
        self.silence_since = None;
        self.playback.clear();
        self.after_speech.clear();
        self.pending_inputs.clear();
        self.commands.push_back(Command::Ended {
            output_data: self.output_data.clone(),
            transcript: self.transcript.clone(),
            cleanup_timed_out,
            reason,
        });
    }

    fn log(&mut self, level: LogLevel, message: String) {
        self.commands.push_back(Command::Log {
            level,
            message,
            location: None,
        });
    }
}

/// Checks a TransferSessionEvent with the SDK's rules (`TransferSessionEvent.__init__`
/// and `validate_transfer_destination`), for handlers that did not go through the
/// Python constructor (native handlers, hand-built JSON).
pub fn validate_transfer(
    d: &TransferSessionData,
) -> Result<(TransferTarget, Option<TransferMode>), String> {
    let nonempty = |s: &Option<String>| s.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
    let phone = nonempty(&d.phone_number);
    let agent = nonempty(&d.agent_id);
    let environment = nonempty(&d.environment);
    let mode = match d.mode.as_deref() {
        None => None,
        Some("refer") => Some(TransferMode::Refer),
        Some("bridge") => Some(TransferMode::Bridge),
        Some(m) => return Err(format!("mode must be bridge or refer, not {m:?}")),
    };
    let mut target = None;
    if let Some(dest) = &d.destination {
        if d.phone_number.is_some() || d.agent_id.is_some() || d.environment.is_some() {
            return Err("destination cannot be combined with legacy transfer targets".into());
        }
        let t = validate_destination(dest)?;
        if matches!(t, TransferTarget::Sip { .. }) && mode != Some(TransferMode::Refer) {
            return Err("SIP destination requires refer mode".into());
        }
        target = Some(t);
    }
    if agent.is_some() && mode.is_some() {
        return Err("mode only applies to external transfers".into());
    }
    let legacy_mode = d
        .data
        .get("transfer_mode")
        .or_else(|| d.data.get("transferMode"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    if let (Some(m), Some(l)) = (d.mode.as_deref(), legacy_mode)
        && m != l
    {
        return Err("conflicting transfer modes".into());
    }
    let mode = mode.or(match legacy_mode {
        Some("refer") => Some(TransferMode::Refer),
        Some("bridge") => Some(TransferMode::Bridge),
        _ => None,
    });
    if phone.is_some() && agent.is_some() {
        return Err("pass either phone_number or agent_id, not both".into());
    }
    if let Some(t) = target {
        return Ok((t, mode));
    }
    if let Some(number) = phone {
        return Ok((TransferTarget::Phone { number }, mode));
    }
    match (agent, environment) {
        (Some(agent_id), Some(environment)) => Ok((
            TransferTarget::Agent {
                agent_id,
                environment,
                data: if d.data.is_null() {
                    Value::Object(Default::default())
                } else {
                    d.data.clone()
                },
            },
            None,
        )),
        (Some(_), None) => Err("environment is required when agent_id is provided".into()),
        (None, _) => Err("either phone_number or agent_id is required".into()),
    }
}

fn validate_destination(dest: &Value) -> Result<TransferTarget, String> {
    let obj = dest
        .as_object()
        .ok_or("destination must be a phone or sip object")?;
    let kind = obj.get("type").and_then(Value::as_str);
    let field = match kind {
        Some("phone") => "number",
        Some("sip") => "uri",
        _ => return Err("destination must be a phone or sip object".into()),
    };
    if obj.len() != 2 || !obj.contains_key(field) {
        return Err("destination must contain exactly type and number or uri".into());
    }
    let value = obj[field]
        .as_str()
        .ok_or("destination value must be a string")?;
    if field == "number" {
        let digits = value.strip_prefix('+').unwrap_or(value);
        if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err("phone destination must be numeric".into());
        }
        return Ok(TransferTarget::Phone {
            number: value.to_owned(),
        });
    }
    if value.len() > 512 || !valid_sip_destination(value) {
        return Err("unsupported SIP destination URI".into());
    }
    Ok(TransferTarget::Sip {
        uri: value.to_owned(),
    })
}

/// `sip:[0-9]{1,15}@host(:port)?` where host is alphanumerics, dots and dashes, not
/// starting or ending with a dot or dash, and port is 1-65535.
fn valid_sip_destination(uri: &str) -> bool {
    let Some(rest) = uri.strip_prefix("sip:") else {
        return false;
    };
    let Some((user, hostport)) = rest.split_once('@') else {
        return false;
    };
    if user.is_empty() || user.len() > 15 || !user.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let (host, port) = match hostport.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (hostport, None),
    };
    let hb = host.as_bytes();
    let host_ok = !hb.is_empty()
        && hb
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'.' || *b == b'-')
        && hb[0].is_ascii_alphanumeric()
        && hb[hb.len() - 1].is_ascii_alphanumeric();
    let port_ok = match port {
        None => true,
        Some(p) => {
            !p.is_empty()
                && p.len() <= 5
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n))
        }
    };
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t0() -> Instant {
        // The one clock read: a base for fake time.
        Instant::now()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    struct H {
        s: Session,
        base: Instant,
    }

    impl H {
        fn new(cfg: SessionConfig) -> Self {
            H {
                s: Session::new(cfg),
                base: t0(),
            }
        }
        fn at(&self, n: u64) -> Instant {
            self.base + ms(n)
        }
        fn requests(&mut self) -> Vec<LinkRequest> {
            std::iter::from_fn(|| self.s.poll_request()).collect()
        }
        fn commands(&mut self) -> Vec<Command> {
            std::iter::from_fn(|| self.s.poll_command()).collect()
        }
        fn handler(&mut self, e: Event, at: u64) {
            let now = self.at(at);
            self.s.handle_link(LinkEvent::Event(e), now);
        }
        fn end_turn(&mut self, turn: i64, at: u64) {
            self.handler(Event::handler_end().with_turn(turn), at);
        }
    }

    fn delivered(reqs: &[LinkRequest]) -> Vec<Event> {
        reqs.iter()
            .filter_map(|r| match r {
                LinkRequest::Deliver(e) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    fn speak_id(cmds: &[Command]) -> PlaybackId {
        cmds.iter()
            .find_map(|c| match c {
                Command::Speak { id, .. } => Some(*id),
                _ => None,
            })
            .expect("a Speak command")
    }

    #[test]
    fn start_speak_and_silence_timeouts_count_up_and_reset() {
        let mut h = H::new(SessionConfig {
            silence_timeout: Some(ms(5000)),
            ..Default::default()
        });
        h.s.handle_start(h.at(0));
        let d = delivered(&h.requests());
        assert_eq!(d.len(), 1);
        assert!(matches!(d[0].kind, EventKind::Start(_)));
        assert_eq!(d[0].turn, 1);

        h.handler(Event::text_to_speech("Hello!", "nova").with_turn(1), 10);
        let cmds = h.commands();
        let id = speak_id(&cmds);
        match &cmds[0] {
            Command::Speak {
                speech,
                interruptible,
                ..
            } => {
                assert_eq!(speech.text, "Hello!");
                assert_eq!(speech.voice, Some(Voice::Name("nova".into())));
                assert_eq!(speech.speed, 1.0);
                assert_eq!(speech.language, "en");
                assert!(*interruptible);
            }
            c => panic!("{c:?}"),
        }
        h.end_turn(1, 20);
        // Still speaking: no timer.
        assert_eq!(h.s.poll_timeout(), None);
        h.s.handle_playback_done(id, h.at(1000));
        assert_eq!(h.s.poll_timeout(), Some(h.at(6000)));
        h.s.handle_timeout(h.at(5999));
        assert!(h.requests().is_empty());
        h.s.handle_timeout(h.at(6000));
        let d = delivered(&h.requests());
        match &d[0].kind {
            EventKind::Timeout(t) => {
                assert_eq!((t.count, t.ms_since_input), (1, 6000));
            }
            k => panic!("{k:?}"),
        }
        assert_eq!(d[0].turn, 2);
        // Handler says nothing: the timer re-arms at the handler's end, count grows.
        h.end_turn(2, 6100);
        assert_eq!(h.s.poll_timeout(), Some(h.at(11_100)));
        h.s.handle_timeout(h.at(11_100));
        match &delivered(&h.requests())[0].kind {
            EventKind::Timeout(t) => assert_eq!((t.count, t.ms_since_input), (2, 11_100)),
            k => panic!("{k:?}"),
        }
        h.end_turn(3, 11_200);
        // User input resets the count.
        h.s.handle_text("speech", "hi", None, h.at(12_000));
        let d = delivered(&h.requests());
        assert_eq!(d[0].turn, 4);
        h.end_turn(4, 12_100);
        h.s.handle_timeout(h.at(17_100));
        match &delivered(&h.requests())[0].kind {
            EventKind::Timeout(t) => assert_eq!((t.count, t.ms_since_input), (1, 5100)),
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn barge_in_flushes_cancels_and_marks_next_input() {
        let mut h = H::new(SessionConfig::default());
        h.s.handle_start(h.at(0));
        h.requests();
        h.handler(
            Event::text_to_speech("Welcome to the shop.", "nova").with_turn(1),
            5,
        );
        h.handler(
            Event::text_to_speech("We have many offers.", "nova").with_turn(1),
            6,
        );
        let first = speak_id(&h.commands());
        h.s.handle_playback_done(first, h.at(1500));
        // Second sentence is playing and the turn still runs; the caller talks.
        h.s.handle_speech_started(h.at(2000));
        let cmds = h.commands();
        assert_eq!(
            cmds,
            vec![Command::Flush {
                scope: FlushScope::Interruptible
            }]
        );
        let reqs = h.requests();
        assert!(matches!(reqs[..], [LinkRequest::Cancel]), "{reqs:?}");
        // A late output of the cancelled turn is dropped; a late state record is not.
        h.handler(Event::text_to_speech("late", "nova").with_turn(1), 2100);
        let mut patch = crate::event::Object::new();
        patch.insert("output_data".into(), json!({"late": true}));
        h.handler(
            Event::new(EventKind::ContextPatch(patch)).with_turn(1),
            2101,
        );
        assert!(
            !h.commands()
                .iter()
                .any(|c| matches!(c, Command::Speak { .. })),
        );
        assert_eq!(h.s.output_data(), &json!({"late": true}));
        h.s.handle_text("speech", "stop talking", None, h.at(2500));
        let d = delivered(&h.requests());
        let EventKind::Text(t) = &d[0].kind else {
            panic!()
        };
        assert_eq!(t.text, "stop talking");
        assert_eq!(t.extra["previous_turn_interrupted"], json!(true));
        assert_eq!(
            t.extra["previous_turn_agent_transcript"],
            json!("Welcome to the shop. We have many offers.")
        );
        assert_eq!(d[0].turn, 2);
        // The next turn was not interrupted.
        h.handler(Event::text_to_speech("OK.", "nova").with_turn(2), 2600);
        let id = speak_id(&h.commands());
        h.end_turn(2, 2700);
        h.s.handle_playback_done(id, h.at(3000));
        h.s.handle_text("speech", "thanks", None, h.at(4000));
        let d = delivered(&h.requests());
        let EventKind::Text(t) = &d[0].kind else {
            panic!()
        };
        assert_eq!(t.extra["previous_turn_interrupted"], json!(false));
        assert_eq!(t.extra["previous_turn_agent_transcript"], json!("OK."));
    }

    #[test]
    fn non_interruptible_speech_is_not_barged_in() {
        let mut h = H::new(SessionConfig::default());
        h.s.handle_start(h.at(0));
        h.requests();
        let mut tts = TextToSpeechData::new("Please listen carefully.", "nova");
        tts.interruptible = Some(false);
        h.handler(Event::new(EventKind::TextToSpeech(tts)).with_turn(1), 5);
        match &h.commands()[0] {
            Command::Speak { interruptible, .. } => assert!(!interruptible),
            c => panic!("{c:?}"),
        }
        h.end_turn(1, 10);
        h.s.handle_speech_started(h.at(100));
        assert!(h.commands().is_empty());
        assert!(h.requests().is_empty());
    }

    #[test]
    fn text_while_handler_runs_cancels_the_turn() {
        let mut h = H::new(SessionConfig::default());
        h.s.handle_start(h.at(0));
        h.requests();
        h.end_turn(1, 5);
        h.s.handle_text("speech", "one", None, h.at(100));
        h.requests();
        h.s.handle_text("speech", "two", None, h.at(200));
        let reqs = h.requests();
        assert!(matches!(reqs[0], LinkRequest::Cancel), "{reqs:?}");
        let d = delivered(&reqs);
        assert_eq!(d[0].turn, 3);
        let EventKind::Text(t) = &d[0].kind else {
            panic!()
        };
        assert_eq!(t.extra["previous_turn_interrupted"], json!(true));
        // The cancelled turn's handler_end does not end turn 3.
        h.end_turn(2, 210);
        assert!(h.s.is_turn_running());
    }

    #[test]
    fn stop_hangs_up_then_cleanup_stop_exactly_once() {
        let mut h = H::new(SessionConfig::default());
        h.s.handle_start(h.at(0));
        h.requests();
        let stop = Event::new(EventKind::Stop(crate::event::StopData {
            closing_speech: Some("Goodbye".into()),
            clear_speech: true,
            ..Default::default()
        }));
        h.handler(stop.with_turn(1), 10);
        match &h.commands()[..] {
            [
                Command::HangUp {
                    clear_speech: true,
                    closing: Some(s),
                },
            ] => assert_eq!(s.text, "Goodbye"),
            c => panic!("{c:?}"),
        }
        // Speech after the stop is ignored; inputs too.
        h.handler(Event::text_to_speech("more", "nova").with_turn(1), 11);
        assert!(
            !h.commands()
                .iter()
                .any(|c| matches!(c, Command::Speak { .. }))
        );
        h.s.handle_text("speech", "wait", None, h.at(12));
        assert!(h.requests().is_empty());
        h.end_turn(1, 20);
        h.s.handle_call_ended(h.at(3000));
        h.s.handle_call_ended(h.at(3001));
        let reqs = h.requests();
        assert_eq!(reqs.len(), 1, "{reqs:?}");
        match &reqs[0] {
            LinkRequest::Stop { event, budget } => {
                assert!(matches!(event.kind, EventKind::Stop(_)));
                assert_eq!(event.turn, 2);
                assert_eq!(*budget, Duration::from_secs(30));
            }
            r => panic!("{r:?}"),
        }
        assert_eq!(h.s.poll_timeout(), Some(h.at(35_000)));
        // Clean-up may patch output_data but not speak.
        let mut patch = crate::event::Object::new();
        patch.insert("output_data".into(), json!({"done": true}));
        h.handler(
            Event::new(EventKind::ContextPatch(patch)).with_turn(2),
            3100,
        );
        h.handler(Event::text_to_speech("no", "nova").with_turn(2), 3101);
        assert!(
            !h.commands()
                .iter()
                .any(|c| matches!(c, Command::Speak { .. }))
        );
        h.s.handle_link(
            LinkEvent::Closed {
                output_data: json!({"done": true}),
                timed_out: false,
            },
            h.at(3200),
        );
        match h.commands().last() {
            Some(Command::Ended {
                output_data,
                reason: EndReason::Completed,
                cleanup_timed_out: false,
                transcript,
            }) => {
                assert_eq!(output_data, &json!({"done": true}));
                assert!(transcript.is_empty());
            }
            c => panic!("{c:?}"),
        }
        assert!(h.s.is_ended());
    }

    #[test]
    fn cleanup_that_never_closes_ends_at_the_deadline() {
        let mut h = H::new(SessionConfig::default());
        h.s.handle_start(h.at(0));
        h.s.handle_call_ended(h.at(100));
        h.s.handle_timeout(h.at(32_099));
        assert!(!h.s.is_ended());
        h.s.handle_timeout(h.at(32_100));
        assert!(matches!(
            h.commands().last(),
            Some(Command::Ended {
                cleanup_timed_out: true,
                reason: EndReason::HandlerLost,
                ..
            })
        ));
    }

    #[test]
    fn nothing_follows_ended() {
        // Found by tests/session_props.rs: a Lost after the end still logged.
        let mut h = H::new(SessionConfig::default());
        h.s.handle_call_ended(h.at(0));
        assert!(matches!(h.commands()[..], [Command::Ended { .. }]));
        h.s.handle_link(LinkEvent::Lost { reason: "x".into() }, h.at(1));
        h.s.handle_playback_done(1, h.at(2));
        h.s.handle_start(h.at(3));
        assert!(h.commands().is_empty());
        assert!(h.requests().is_empty());
    }

    #[test]
    fn lost_handler_apologises_and_hangs_up_without_cleanup() {
        let mut h = H::new(SessionConfig::default());
        h.s.handle_start(h.at(0));
        h.requests();
        h.s.handle_link(
            LinkEvent::Lost {
                reason: "worker exited".into(),
            },
            h.at(50),
        );
        let cmds = h.commands();
        assert!(cmds.iter().any(
            |c| matches!(c, Command::Log { level: LogLevel::Error, message, .. } if message.contains("worker exited"))
        ));
        match cmds.last() {
            Some(Command::HangUp {
                clear_speech: true,
                closing: Some(s),
            }) => assert!(s.text.starts_with("Sorry")),
            c => panic!("{c:?}"),
        }
        h.s.handle_call_ended(h.at(4000));
        assert!(h.requests().is_empty(), "no StopEvent to a dead handler");
        assert!(matches!(
            h.commands().last(),
            Some(Command::Ended {
                reason: EndReason::HandlerLost,
                ..
            })
        ));
    }

    #[test]
    fn outputs_map_to_commands_and_unsupported_ones_are_named() {
        let mut h = H::new(SessionConfig::default());
        h.s.handle_start(h.at(0));
        h.requests();
        let ev = |kind: &str, data: Value| {
            Event::from_json(&json!({"name": kind, "data": data, "turn": 1}).to_string()).unwrap()
        };
        h.handler(
            ev(
                "audio",
                json!({"path": "https://x.invalid/a.wav", "interruptible": false, "loop": true}),
            ),
            1,
        );
        h.handler(ev("silence", json!({"duration": 750})), 2);
        h.handler(ev("interrupt", json!({})), 3);
        h.handler(
            ev("start_recording", json!({"status_callback_url": null})),
            4,
        );
        h.handler(ev("stop_recording", json!({})), 5);
        h.handler(ev("update_audio_settings", json!({"after_speech": false, "background_track_url": "hold.wav", "background_track_volume": 0.3, "background_track_loop": true})), 6);
        h.handler(ev("stt_update_settings", json!({"language": "de", "prompt": null, "endpointing": 500, "noise_reduction_type": null, "model": null})), 7);
        h.handler(ev("metrics.count.orders", json!({"value": 2})), 8);
        h.handler(
            ev("log", json!({"message": "hi", "location": "handler.py:3"})),
            9,
        );
        h.handler(ev("error", json!({"message": "bad"})), 10);
        h.handler(ev("collect_payment", json!({"amount": 3.5})), 11);
        h.handler(ev("my_custom", json!({})), 12);
        h.handler(ev("external_event", json!({"after_speech": false, "agent_id": "a", "session_id": "s2", "name": "ping", "data": {"x": 1}})), 13);
        let cmds = h.commands();
        assert!(
            matches!(&cmds[0], Command::Play { path, interruptible: false, looped: true, .. } if path == "https://x.invalid/a.wav")
        );
        assert!(matches!(&cmds[1], Command::Silence { duration, .. } if *duration == ms(750)));
        assert_eq!(
            cmds[2],
            Command::Flush {
                scope: FlushScope::All
            }
        );
        assert_eq!(
            cmds[3],
            Command::StartRecording {
                status_callback_url: None
            }
        );
        assert_eq!(cmds[4], Command::StopRecording);
        assert_eq!(
            cmds[5],
            Command::UpdateBackground {
                url: Some("hold.wav".into()),
                volume: 0.3,
                looped: true
            }
        );
        assert!(matches!(&cmds[6], Command::SttSettings(s) if s.endpointing == Some(500)));
        assert!(matches!(&cmds[7], Command::Metric { name, .. } if name == "metrics.count.orders"));
        assert!(
            matches!(&cmds[8], Command::Log { level: LogLevel::Info, message, location: Some(l) } if message == "hi" && l == "handler.py:3")
        );
        assert!(
            matches!(&cmds[9], Command::Log { level: LogLevel::Error, message, .. } if message.contains("bad"))
        );
        assert!(
            matches!(&cmds[10], Command::Log { level: LogLevel::Warn, message, .. } if message.contains("`collect_payment`") && message.contains("not support"))
        );
        assert!(
            matches!(&cmds[11], Command::Log { level: LogLevel::Warn, message, .. } if message.contains("`my_custom`"))
        );
        assert!(
            matches!(&cmds[12], Command::External { session_id, name, .. } if session_id == "s2" && name == "ping")
        );
    }

    #[test]
    fn after_speech_waits_and_replace_flushes_everything() {
        let mut h = H::new(SessionConfig::default());
        h.s.handle_start(h.at(0));
        h.requests();
        h.handler(Event::text_to_speech("one", "nova").with_turn(1), 1);
        let id = speak_id(&h.commands());
        let bg = Event::from_json(&json!({"name": "update_audio_settings", "turn": 1, "data": {"after_speech": true, "background_track_url": "m.wav", "background_track_volume": 1.0, "background_track_loop": true}}).to_string()).unwrap();
        h.handler(bg, 2);
        assert!(h.commands().is_empty());
        h.s.handle_playback_done(id, h.at(500));
        assert!(matches!(
            h.commands()[..],
            [Command::UpdateBackground { .. }]
        ));
        let mut tts = TextToSpeechData::new("two", "nova");
        tts.replace = true;
        h.handler(Event::new(EventKind::TextToSpeech(tts)).with_turn(1), 600);
        let cmds = h.commands();
        assert_eq!(
            cmds[0],
            Command::Flush {
                scope: FlushScope::All
            }
        );
        assert!(matches!(cmds[1], Command::Speak { .. }));
    }

    #[test]
    fn input_allowed_false_drops_input_until_handler_end() {
        let mut h = H::new(SessionConfig::default());
        h.s.handle_start(h.at(0));
        h.requests();
        let off = Event::from_json(r#"{"name":"input_allowed","data":{"allowed":false},"turn":1}"#)
            .unwrap();
        h.handler(off, 1);
        h.s.handle_text("speech", "ignored", None, h.at(2));
        assert!(h.requests().is_empty());
        h.end_turn(1, 3);
        h.s.handle_text("speech", "heard", None, h.at(4));
        assert_eq!(delivered(&h.requests()).len(), 1);
    }

    #[test]
    fn output_data_cap_and_external_inputs_queue_behind_running_turn() {
        let mut h = H::new(SessionConfig::default());
        h.s.handle_start(h.at(0));
        h.requests();
        let mut p = crate::event::Object::new();
        p.insert("output_data".into(), json!({"blob": "x".repeat(70_000)}));
        h.handler(Event::new(EventKind::ContextPatch(p)).with_turn(1), 1);
        assert!(
            matches!(&h.commands()[0], Command::Log { level: LogLevel::Error, message, .. } if message.contains("65536"))
        );
        assert_eq!(h.s.output_data(), &json!({}));
        h.s.handle_external("crm_update", json!({"lead": 7}), h.at(2));
        assert!(h.requests().is_empty(), "waits for the running turn");
        h.end_turn(1, 3);
        let d = delivered(&h.requests());
        assert_eq!(d[0].name(), "crm_update");
        assert_eq!(d[0].turn, 2);
    }

    #[test]
    fn transfer_is_validated_with_the_sdk_rules() {
        let t = |v: Value| -> Result<_, String> {
            let d: TransferSessionData = serde_json::from_value(v).unwrap();
            validate_transfer(&d)
        };
        assert_eq!(
            t(json!({"phone_number": "+15550100"})).unwrap(),
            (
                TransferTarget::Phone {
                    number: "+15550100".into()
                },
                None
            )
        );
        assert_eq!(
            t(json!({"destination": {"type": "sip", "uri": "sip:1000@pbx.example.com:5070"}, "mode": "refer"})).unwrap().0,
            TransferTarget::Sip { uri: "sip:1000@pbx.example.com:5070".into() }
        );
        assert!(
            t(json!({"destination": {"type": "sip", "uri": "sip:1000@pbx.example.com"}})).is_err()
        );
        assert!(
            t(json!({"destination": {"type": "sip", "uri": "sip:alice@pbx"}, "mode": "refer"}))
                .is_err()
        );
        assert!(
            t(json!({"destination": {"type": "sip", "uri": "sip:1@-x"}, "mode": "refer"})).is_err()
        );
        assert!(
            t(json!({"destination": {"type": "sip", "uri": "sip:1@x:70000"}, "mode": "refer"}))
                .is_err()
        );
        assert!(t(json!({"destination": {"type": "phone", "number": "12ab"}})).is_err());
        assert!(
            t(json!({"destination": {"type": "phone", "number": "1"}, "phone_number": "2"}))
                .is_err()
        );
        assert!(t(json!({"agent_id": "b"})).is_err());
        assert!(t(json!({"agent_id": "b", "environment": "prod", "mode": "refer"})).is_err());
        assert!(t(json!({"phone_number": "1", "agent_id": "b", "environment": "p"})).is_err());
        assert!(
            t(json!({"phone_number": "1", "mode": "bridge", "data": {"transfer_mode": "refer"}}))
                .is_err()
        );
        assert_eq!(
            t(json!({"phone_number": "1", "data": {"transferMode": "bridge"}}))
                .unwrap()
                .1,
            Some(TransferMode::Bridge)
        );
        assert!(t(json!({})).is_err());
        match t(json!({"agent_id": "billing", "environment": "prod", "data": {"k": 1}}))
            .unwrap()
            .0
        {
            TransferTarget::Agent { agent_id, data, .. } => {
                assert_eq!(agent_id, "billing");
                assert_eq!(data, json!({"k": 1}));
            }
            x => panic!("{x:?}"),
        }
        // An invalid transfer is a logged error and the call goes on.
        let mut h = H::new(SessionConfig::default());
        h.s.handle_start(h.at(0));
        h.requests();
        let bad =
            Event::from_json(r#"{"name":"transfer_session","data":{"agent_id":"x"},"turn":1}"#)
                .unwrap();
        h.handler(bad, 1);
        assert!(
            matches!(&h.commands()[0], Command::Log { level: LogLevel::Error, message, .. } if message.contains("environment is required"))
        );
        assert!(!h.s.is_ending());
    }

    #[test]
    fn failed_transfer_is_told_to_the_handler_and_the_session_goes_on() {
        let mut h = H::new(SessionConfig::default());
        h.s.handle_start(h.at(0));
        h.requests();
        let transfer = Event::from_json(
            r#"{"name":"transfer_session","data":{"phone_number":"+15550100"},"turn":1}"#,
        )
        .unwrap();
        h.handler(transfer, 1);
        assert!(matches!(&h.commands()[0], Command::Transfer { .. }));
        assert!(h.s.is_ending());
        h.end_turn(1, 2);
        // Not pending: a failure report without a transfer changes nothing.
        let mut idle = H::new(SessionConfig::default());
        idle.s.handle_start(idle.at(0));
        idle.requests();
        idle.s.handle_transfer_failed("x", idle.at(1));
        assert!(delivered(&idle.requests()).is_empty());

        h.s.handle_transfer_failed("transfer to +15550100 failed: 486 Busy Here", h.at(3));
        assert!(!h.s.is_ending());
        let d = delivered(&h.requests());
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].turn, 2);
        assert!(
            matches!(&d[0].kind, EventKind::Error(e) if e.message.contains("486")),
            "{:?}",
            d[0]
        );
        // The conversation goes on.
        h.end_turn(2, 4);
        h.s.handle_text("speech", "hello again", None, h.at(5));
        assert_eq!(delivered(&h.requests()).len(), 1);
        // A second report is ignored.
        h.s.handle_transfer_failed("again", h.at(6));
        assert!(delivered(&h.requests()).is_empty());
    }
}
