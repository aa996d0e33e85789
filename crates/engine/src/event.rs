//! The primfunctions event model, mirrored field for field.
//!
//! Every class in `primfunctions/events.py` has a variant of [`EventKind`] whose
//! payload serialises to exactly the `data` dict the Python constructor builds. The
//! envelope ([`Event`]) carries `name`, `data`, `timestamp`, `turn`, `background` and
//! `background_task_name`, as `primfunctions.events.event_to_dict` writes them.
//!
//! Keys a payload does not model (framework turn metadata such as
//! `previous_turn_interrupted`, `TextEvent(**extra)` keys) are kept in each payload's
//! `extra` map, so parsing and re-emitting an event never loses a key. Names the SDK
//! does not know (a base `Event("my_name", ...)`, a `CustomEvent`) parse as
//! [`EventKind::Other`]; `metrics.<type>.<name>` parses as [`EventKind::Metric`].

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A JSON object, as the SDK's `data` dicts are.
pub type Object = Map<String, Value>;

/// One primfunctions event: the envelope plus a typed payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "WireEvent", into = "WireEvent")]
pub struct Event {
    /// The typed payload; its variant decides the wire `name`.
    pub kind: EventKind,
    /// ISO 8601 timestamp (`datetime.now(timezone.utc).isoformat()` by default).
    pub timestamp: String,
    /// The turn the event belongs to.
    pub turn: i64,
    /// True when a `context.create_task` background task produced the event.
    pub background: bool,
    /// The name of the background task that produced the event, if any.
    pub background_task_name: Option<String>,
}

/// The untyped envelope, exactly as `event_to_dict` writes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WireEvent {
    name: String,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    turn: Option<i64>,
    #[serde(default)]
    background: Option<bool>,
    #[serde(default)]
    background_task_name: Option<String>,
}

impl TryFrom<WireEvent> for Event {
    type Error = serde_json::Error;

    fn try_from(w: WireEvent) -> Result<Self, Self::Error> {
        let kind = EventKind::from_parts(w.name, w.data)?;
        Ok(Event {
            kind,
            timestamp: w.timestamp.unwrap_or_else(iso_now),
            turn: w.turn.unwrap_or(0),
            background: w.background.unwrap_or(false),
            background_task_name: w.background_task_name,
        })
    }
}

impl From<Event> for WireEvent {
    fn from(e: Event) -> Self {
        let name = e.kind.name().to_owned();
        WireEvent {
            name,
            data: e.kind.into_data(),
            timestamp: Some(e.timestamp),
            turn: Some(e.turn),
            background: Some(e.background),
            background_task_name: e.background_task_name,
        }
    }
}

impl Event {
    /// A new event stamped with the current UTC time, turn 0, foreground.
    pub fn new(kind: EventKind) -> Self {
        Event {
            kind,
            timestamp: iso_now(),
            turn: 0,
            background: false,
            background_task_name: None,
        }
    }

    /// The wire name (`"text_to_speech"`, `"metrics.count.foo"`, ...).
    pub fn name(&self) -> &str {
        self.kind.name()
    }

    /// Parses one event from its JSON form (`event_to_str` output).
    pub fn from_json(s: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(s)
    }

    /// Serialises to the JSON form `event_from_str` reads.
    pub fn to_json(&self) -> String {
        // Serialising a tree of strings, numbers and maps cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Serialises to a `serde_json::Value`.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// `StartEvent()`.
    pub fn start() -> Self {
        Self::new(EventKind::Start(Empty::default()))
    }

    /// `TextEvent(source, text)`.
    pub fn text(source: &str, text: &str) -> Self {
        Self::new(EventKind::Text(TextData {
            source: source.to_owned(),
            text: text.to_owned(),
            language: None,
            extra: Object::new(),
        }))
    }

    /// `TimeoutEvent(count, ms_since_input)`.
    pub fn timeout(count: i64, ms_since_input: i64) -> Self {
        Self::new(EventKind::Timeout(TimeoutData {
            count,
            ms_since_input,
            extra: Object::new(),
        }))
    }

    /// `DTMFEvent(digits)`.
    pub fn dtmf(digits: &str) -> Self {
        Self::new(EventKind::Dtmf(DtmfData {
            digits: digits.to_owned(),
            extra: Object::new(),
        }))
    }

    /// `StopEvent()` with the SDK defaults.
    pub fn stop() -> Self {
        Self::new(EventKind::Stop(StopData::default()))
    }

    /// `HandlerEndEvent()`.
    pub fn handler_end() -> Self {
        Self::new(EventKind::HandlerEnd(Empty::default()))
    }

    /// `TextToSpeechEvent(text, voice)` with the SDK defaults for the rest.
    pub fn text_to_speech(text: &str, voice: &str) -> Self {
        Self::new(EventKind::TextToSpeech(TextToSpeechData::new(text, voice)))
    }

    /// `ErrorEvent(message)`.
    pub fn error(message: &str) -> Self {
        Self::new(EventKind::Error(ErrorData {
            message: message.to_owned(),
            extra: Object::new(),
        }))
    }

    /// `LogEvent(message, location)`.
    pub fn log(message: &str, location: Option<&str>) -> Self {
        Self::new(EventKind::Log(LogData {
            message: Value::String(message.to_owned()),
            location: location.map(str::to_owned),
            attributes: None,
            extra: Object::new(),
        }))
    }

    /// A base `Event(name, data)` with a name the SDK has no class for.
    pub fn other(name: &str, data: Value) -> Self {
        Self::new(EventKind::Other {
            name: name.to_owned(),
            data,
        })
    }

    /// Sets the turn (builder style).
    pub fn with_turn(mut self, turn: i64) -> Self {
        self.turn = turn;
        self
    }

    /// The payload's keys that no field models (turn metadata, `**extra`), if the
    /// payload is an object with such a map.
    pub fn extra_mut(&mut self) -> Option<&mut Object> {
        self.kind.extra_mut()
    }
}

/// A TTS voice: a VoiceRun voice name, or `{provider, identifier}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Voice {
    /// A voice name such as `"nova"`.
    Name(String),
    /// A `TextToSpeechIdentifier`.
    Identifier {
        /// The TTS provider (`"openai"`, `"cartesia"`, ...).
        provider: String,
        /// The provider's voice id.
        identifier: String,
    },
}

/// A payload with no fields (`StartEvent`, `InterruptEvent`, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Empty {
    /// Keys no field models.
    #[serde(flatten)]
    pub extra: Object,
}

/// `StopEvent` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopData {
    /// Clear active and queued speech first.
    #[serde(default)]
    pub clear_speech: bool,
    /// Text to speak before ending the call.
    #[serde(default)]
    pub closing_speech: Option<String>,
    /// Voice for the closing speech.
    #[serde(default)]
    pub voice: Option<Voice>,
    /// Speed for the closing speech.
    #[serde(default)]
    pub speed: Option<f64>,
    /// Language for the closing speech.
    #[serde(default)]
    pub language: Option<String>,
    /// Keys no field models.
    #[serde(flatten)]
    pub extra: Object,
}

impl Default for StopData {
    fn default() -> Self {
        StopData {
            clear_speech: false,
            closing_speech: None,
            voice: None,
            speed: Some(1.0),
            language: Some("en".into()),
            extra: Object::new(),
        }
    }
}

/// `TimeoutEvent` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeoutData {
    /// Timeouts in a row so far.
    pub count: i64,
    /// Milliseconds since the last user input.
    pub ms_since_input: i64,
    /// Keys no field models.
    #[serde(flatten)]
    pub extra: Object,
}

/// `TextEvent` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextData {
    /// `"speech"` (from STT) or `"text"` (typed).
    pub source: String,
    /// What the user said or typed.
    pub text: String,
    /// Language, when the recogniser reports one.
    #[serde(default)]
    pub language: Option<String>,
    /// `**extra` keys and turn metadata.
    #[serde(flatten)]
    pub extra: Object,
}

/// `TextToSpeechEvent` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextToSpeechData {
    /// Cancel preceding speech before this speech is queued.
    #[serde(default)]
    pub replace: bool,
    /// The text to speak.
    pub text: String,
    /// The voice.
    #[serde(default)]
    pub voice: Option<Voice>,
    /// Whether generated audio may be cached.
    #[serde(default)]
    pub cache: Option<bool>,
    /// Whether the caller may barge in; `None` means the agent default.
    #[serde(default)]
    pub interruptible: Option<bool>,
    /// Voice styling instructions (OpenAI voices).
    #[serde(default)]
    pub instructions: Option<String>,
    /// Playback speed (0.25-4.0).
    #[serde(default)]
    pub speed: Option<f64>,
    /// Language code.
    #[serde(default)]
    pub language: Option<String>,
    /// Streaming preference; present only when the handler set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Model override; present only when the handler set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Keys no field models.
    #[serde(flatten)]
    pub extra: Object,
}

impl TextToSpeechData {
    /// The SDK defaults for `text` spoken with `voice`.
    pub fn new(text: &str, voice: &str) -> Self {
        TextToSpeechData {
            replace: false,
            text: text.to_owned(),
            voice: Some(Voice::Name(voice.to_owned())),
            cache: Some(true),
            interruptible: None,
            instructions: Some(String::new()),
            speed: Some(1.0),
            language: Some("en".into()),
            stream: None,
            model: None,
            extra: Object::new(),
        }
    }
}

/// `AudioEvent` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioData {
    /// A file path or an http(s) URL.
    pub path: String,
    /// Whether the caller may barge in (SDK default true).
    #[serde(default)]
    pub interruptible: Option<bool>,
    /// Loop the audio.
    #[serde(default, rename = "loop")]
    pub loop_: Option<bool>,
    /// Keys no field models.
    #[serde(flatten)]
    pub extra: Object,
}

/// `SilenceEvent` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SilenceData {
    /// Duration in milliseconds.
    pub duration: f64,
    /// Keys no field models.
    #[serde(flatten)]
    pub extra: Object,
}

/// `VoicemailDetectionEvent` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoicemailDetectionData {
    /// Transcript the classification was made from.
    #[serde(default)]
    pub transcript: String,
    /// Model confidence in [0, 1].
    #[serde(default)]
    pub confidence: Option<f64>,
    /// Short explanation.
    #[serde(default)]
    pub reason: Option<String>,
    /// Keys no field models.
    #[serde(flatten)]
    pub extra: Object,
}

/// `ContextUpdateEvent` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextUpdateData {
    /// The serialised context.
    #[serde(default)]
    pub context: Value,
    /// Keys no field models.
    #[serde(flatten)]
    pub extra: Object,
}

/// `ErrorEvent` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorData {
    /// What went wrong.
    pub message: String,
    /// Keys no field models.
    #[serde(flatten)]
    pub extra: Object,
}

/// `LogEvent` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogData {
    /// The message (a string in practice; any JSON value is kept).
    pub message: Value,
    /// `file.py:line` in the handler that logged it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Structured attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Value>,
    /// Keys no field models.
    #[serde(flatten)]
    pub extra: Object,
}

/// `CollectPaymentEvent` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectPaymentData {
    /// Amount to collect.
    #[serde(default)]
    pub amount: Option<f64>,
    /// Keys no field models.
    #[serde(flatten)]
    pub extra: Object,
}

/// `SupervisorRequestEvent` / `SupervisorResponseEvent` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SupervisorData {
    /// The content.
    #[serde(default)]
    pub content: Option<String>,
    /// Keys no field models.
    #[serde(flatten)]
    pub extra: Object,
}

/// `ConnectSTSEvent` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectStsData {
    /// STS configuration.
    #[serde(default)]
    pub configuration: Value,
    /// Keys no field models.
    #[serde(flatten)]
    pub extra: Object,
}

/// `UpdateCallEvent` / `TestingEvent` data (`{"data": ...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NestedData {
    /// The nested data.
    #[serde(default)]
    pub data: Value,
    /// Keys no field models.
    #[serde(flatten)]
    pub extra: Object,
}

/// `StartRecordingEvent` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartRecordingData {
    /// URL for recording status callbacks.
    #[serde(default)]
    pub status_callback_url: Option<String>,
    /// Keys no field models.
    #[serde(flatten)]
    pub extra: Object,
}

/// `STTUpdateSettingsEvent` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SttUpdateSettingsData {
    /// Language code.
    #[serde(default)]
    pub language: Option<String>,
    /// Recognition prompt.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Endpointing (>3: silence ms; 0-3: semantic eagerness).
    #[serde(default)]
    pub endpointing: Option<i64>,
    /// Noise reduction type.
    #[serde(default)]
    pub noise_reduction_type: Option<String>,
    /// STT model.
    #[serde(default)]
    pub model: Option<String>,
    /// Keys no field models.
    #[serde(flatten)]
    pub extra: Object,
}

/// `STTModelSwitchedEvent` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SttModelSwitchedData {
    /// Previous model.
    #[serde(default)]
    pub from_model: Option<String>,
    /// New model.
    #[serde(default)]
    pub to_model: Option<String>,
    /// Warm-up time in ms.
    #[serde(default)]
    pub warmup_ms: Option<f64>,
    /// Switch delay in ms.
    #[serde(default)]
    pub switch_delay_ms: Option<f64>,
    /// Keys no field models.
    #[serde(flatten)]
    pub extra: Object,
}

/// `TurnEndEvent` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnEndData {
    /// Turn duration in ms.
    #[serde(default)]
    pub duration: Option<f64>,
    /// Keys no field models.
    #[serde(flatten)]
    pub extra: Object,
}

/// `InitializeEvent` data (the platform's sandbox bootstrap; not used by voicegate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitializeData {
    /// Agent code.
    #[serde(default)]
    pub code: Option<String>,
    /// Code hash.
    #[serde(default)]
    pub hash: Option<String>,
    /// Multi-file agent.
    #[serde(default)]
    pub is_multifile: Option<bool>,
    /// Debug mode.
    #[serde(default)]
    pub is_debug: Option<bool>,
    /// Initial context.
    #[serde(default)]
    pub context: Value,
    /// Tracing on.
    #[serde(default)]
    pub tracing_enabled: Option<bool>,
    /// Trace token.
    #[serde(default)]
    pub trace_token: Option<String>,
    /// Completions proxy token.
    #[serde(default)]
    pub completions_proxy_token: Option<String>,
    /// Completions proxy URL.
    #[serde(default)]
    pub completions_proxy_url: Option<String>,
    /// Session API token.
    #[serde(default)]
    pub session_api_token: Option<String>,
    /// Platform API URL.
    #[serde(default)]
    pub platform_api_url: Option<String>,
    /// Keys no field models.
    #[serde(flatten)]
    pub extra: Object,
}

/// `DebugEvent` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DebugData {
    /// Debugged event's name.
    #[serde(default)]
    pub event_name: Option<String>,
    /// Debugged event's data.
    #[serde(default)]
    pub event_data: Value,
    /// `"input"` or `"output"`.
    #[serde(default)]
    pub direction: Option<String>,
    /// Context snapshot.
    #[serde(default)]
    pub context: Value,
    /// Keys no field models.
    #[serde(flatten)]
    pub extra: Object,
}

/// `MetricEvent`: wire name `metrics.<metric_type>.<metric_name>`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricData {
    /// The full wire name, kept verbatim.
    pub name: String,
    /// The metric payload.
    pub data: Value,
}

impl MetricData {
    /// The `<metric_type>` part of the name (`"counter"`, `"latency"`, ...).
    pub fn metric_type(&self) -> &str {
        self.name.split('.').nth(1).unwrap_or("")
    }

    /// The `<metric_name>` part (may itself contain dots).
    pub fn metric_name(&self) -> &str {
        let mut it = self.name.splitn(3, '.');
        it.nth(2).unwrap_or("")
    }
}

/// `StartSessionEvent` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartSessionData {
    /// Entrypoint id ("" when unused).
    #[serde(default)]
    pub entrypoint_id: String,
    /// Agent id ("" when unused).
    #[serde(default)]
    pub agent_id: String,
    /// Environment ("" when unused).
    #[serde(default)]
    pub environment: String,
    /// Channel type.
    #[serde(default)]
    pub input_type: String,
    /// Channel parameters.
    #[serde(default)]
    pub input_parameters: Value,
    /// Session parameters.
    #[serde(default)]
    pub parameters: Value,
    /// Keys no field models.
    #[serde(flatten)]
    pub extra: Object,
}

/// `MergeSessionEvent` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeSessionData {
    /// Session to merge with.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Keys no field models.
    #[serde(flatten)]
    pub extra: Object,
}

/// `TransferSessionEvent` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferSessionData {
    /// Legacy external target.
    #[serde(default)]
    pub phone_number: Option<String>,
    /// Internal target agent.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Environment of the target agent.
    #[serde(default)]
    pub environment: Option<String>,
    /// Data handed to the transferred session.
    #[serde(default)]
    pub data: Value,
    /// Clear speech first.
    #[serde(default)]
    pub clear_speech: bool,
    /// Speech before transferring.
    #[serde(default)]
    pub closing_speech: Option<String>,
    /// Voice for the closing speech.
    #[serde(default)]
    pub voice: Option<Voice>,
    /// Speed for the closing speech.
    #[serde(default)]
    pub speed: Option<f64>,
    /// Language for the closing speech.
    #[serde(default)]
    pub language: Option<String>,
    /// Typed target (`{"type":"phone","number"}` / `{"type":"sip","uri"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Value>,
    /// `"bridge"` or `"refer"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Keys no field models.
    #[serde(flatten)]
    pub extra: Object,
}

/// `TranscriptPartEvent` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptPartData {
    /// Role.
    #[serde(default)]
    pub role: Option<String>,
    /// Content.
    #[serde(default)]
    pub content: Option<String>,
    /// Keys no field models.
    #[serde(flatten)]
    pub extra: Object,
}

/// `InputAllowedEvent` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputAllowedData {
    /// Whether user input is accepted.
    pub allowed: bool,
    /// Keys no field models.
    #[serde(flatten)]
    pub extra: Object,
}

/// `DTMFEvent` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DtmfData {
    /// The digits pressed.
    pub digits: String,
    /// Keys no field models.
    #[serde(flatten)]
    pub extra: Object,
}

/// `UpdateAudioSettingsEvent` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateAudioSettingsData {
    /// Apply after preceding speech completes.
    #[serde(default)]
    pub after_speech: bool,
    /// Background track URL (None stops it).
    #[serde(default)]
    pub background_track_url: Option<String>,
    /// Background track volume (0.0-1.0).
    #[serde(default)]
    pub background_track_volume: Option<f64>,
    /// Loop the background track.
    #[serde(default)]
    pub background_track_loop: Option<bool>,
    /// Keys no field models.
    #[serde(flatten)]
    pub extra: Object,
}

/// `ExternalEvent` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalEventData {
    /// Send after preceding speech completes.
    #[serde(default)]
    pub after_speech: bool,
    /// Target agent.
    #[serde(default)]
    pub agent_id: String,
    /// Target session.
    #[serde(default)]
    pub session_id: String,
    /// Name of the event the target receives.
    #[serde(default)]
    pub name: String,
    /// Data of the event the target receives.
    #[serde(default)]
    pub data: Value,
    /// Keys no field models.
    #[serde(flatten)]
    pub extra: Object,
}

macro_rules! event_kinds {
    ($($(#[$doc:meta])* $variant:ident => $name:literal : $ty:ty),* $(,)?) => {
        /// The typed payload of an [`Event`]; one variant per primfunctions class.
        #[derive(Debug, Clone, PartialEq)]
        pub enum EventKind {
            $($(#[$doc])* $variant($ty),)*
            /// `ContextPatchEvent`: the patch dict is the data itself.
            ContextPatch(Object),
            /// `MetricEvent` (`metrics.*`).
            Metric(MetricData),
            /// Any other name (base `Event`, `CustomEvent`, external events).
            Other {
                /// The wire name.
                name: String,
                /// The data, verbatim.
                data: Value,
            },
        }

        impl EventKind {
            /// Every name with a dedicated variant, in `events.py` order.
            pub const NAMES: &'static [&'static str] = &[$($name,)* "context_patch"];

            /// The wire name.
            pub fn name(&self) -> &str {
                match self {
                    $(EventKind::$variant(_) => $name,)*
                    EventKind::ContextPatch(_) => "context_patch",
                    EventKind::Metric(m) => &m.name,
                    EventKind::Other { name, .. } => name,
                }
            }

            fn from_parts(name: String, data: Value) -> Result<Self, serde_json::Error> {
                // `event.get("data", {})`: a missing or null data is an empty dict.
                let data = if data.is_null() { Value::Object(Object::new()) } else { data };
                Ok(match name.as_str() {
                    $($name => EventKind::$variant(serde_json::from_value(data)?),)*
                    "context_patch" => EventKind::ContextPatch(serde_json::from_value(data)?),
                    n if n.starts_with("metrics.") => EventKind::Metric(MetricData { name, data }),
                    _ => EventKind::Other { name, data },
                })
            }

            fn into_data(self) -> Value {
                match self {
                    $(EventKind::$variant(d) => serde_json::to_value(d).unwrap_or(Value::Null),)*
                    EventKind::ContextPatch(m) => Value::Object(m),
                    EventKind::Metric(m) => m.data,
                    EventKind::Other { data, .. } => data,
                }
            }

            fn extra_mut(&mut self) -> Option<&mut Object> {
                match self {
                    $(EventKind::$variant(d) => Some(&mut d.extra),)*
                    EventKind::ContextPatch(m) => Some(m),
                    EventKind::Metric(_) => None,
                    EventKind::Other { data, .. } => data.as_object_mut(),
                }
            }
        }
    };
}

event_kinds! {
    /// `StartEvent`: the session started.
    Start => "start": Empty,
    /// `StopEvent`: end the call (output) / clean up (input).
    Stop => "stop": StopData,
    /// `InterruptEvent`: cut all current audio.
    Interrupt => "interrupt": Empty,
    /// `TimeoutEvent`: the user has been silent.
    Timeout => "timeout": TimeoutData,
    /// `TextEvent`: the user spoke or typed.
    Text => "text": TextData,
    /// `TextToSpeechEvent`: speak text.
    TextToSpeech => "text_to_speech": TextToSpeechData,
    /// `AudioEvent`: play a file or URL.
    Audio => "audio": AudioData,
    /// `SilenceEvent`: play silence.
    Silence => "silence": SilenceData,
    /// `VoicemailDetectionEvent`.
    VoicemailDetection => "voicemail_detection": VoicemailDetectionData,
    /// `ContextUpdateEvent` (platform-internal).
    ContextUpdate => "context": ContextUpdateData,
    /// `ErrorEvent`.
    Error => "error": ErrorData,
    /// `LogEvent`.
    Log => "log": LogData,
    /// `CollectPaymentEvent`.
    CollectPayment => "collect_payment": CollectPaymentData,
    /// `CollectPaymentSuccessEvent`.
    CollectPaymentSuccess => "collect_payment_success": Empty,
    /// `SupervisorRequestEvent`.
    SupervisorRequest => "supervisor_request": SupervisorData,
    /// `SupervisorResponseEvent`.
    SupervisorResponse => "supervisor_response": SupervisorData,
    /// `ConnectSTSEvent`.
    ConnectSts => "connect_sts": ConnectStsData,
    /// `DisconnectSTSEvent`.
    DisconnectSts => "disconnect_sts": Empty,
    /// `UpdateCallEvent`.
    UpdateCall => "update_call": NestedData,
    /// `StartRecordingEvent`.
    StartRecording => "start_recording": StartRecordingData,
    /// `StopRecordingEvent`.
    StopRecording => "stop_recording": Empty,
    /// `STTUpdateSettingsEvent`.
    SttUpdateSettings => "stt_update_settings": SttUpdateSettingsData,
    /// `STTModelSwitchedEvent`.
    SttModelSwitched => "stt_model_switched": SttModelSwitchedData,
    /// `TurnEndEvent`.
    TurnEnd => "turn_end": TurnEndData,
    /// `TurnInterruptedEvent`.
    TurnInterrupted => "turn_interrupted": Empty,
    /// `InitializeEvent`.
    Initialize => "initialize": InitializeData,
    /// `HandlerEndEvent`: one handler call finished.
    HandlerEnd => "handler_end": Empty,
    /// `TestingEvent`.
    Testing => "testing": NestedData,
    /// `DebugEvent`.
    Debug => "debug": DebugData,
    /// `SessionEndEvent`.
    SessionEnd => "session_end": Empty,
    /// `StartSessionEvent`.
    StartSession => "start_session": StartSessionData,
    /// `MergeSessionEvent`.
    MergeSession => "merge_session": MergeSessionData,
    /// `TransferSessionEvent`.
    TransferSession => "transfer_session": TransferSessionData,
    /// `TranscriptPartEvent`.
    TranscriptPart => "transcript_part": TranscriptPartData,
    /// `InputAllowedEvent`.
    InputAllowed => "input_allowed": InputAllowedData,
    /// `DTMFEvent`.
    Dtmf => "dtmf": DtmfData,
    /// `UpdateAudioSettingsEvent`.
    UpdateAudioSettings => "update_audio_settings": UpdateAudioSettingsData,
    /// `ExternalEvent`.
    External => "external_event": ExternalEventData,
}

/// The current UTC time as Python's `datetime.now(timezone.utc).isoformat()` prints it.
pub fn iso_now() -> String {
    iso_from_system_time(SystemTime::now())
}

/// Formats a time as `YYYY-MM-DDTHH:MM:SS.ffffff+00:00`.
pub fn iso_from_system_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let micros = d.subsec_micros();
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{micros:06}+00:00",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn iso_format_matches_python() {
        let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(iso_from_system_time(t), "2023-11-14T22:13:20.123456+00:00");
    }

    #[test]
    fn seed_tts_round_trips() {
        let s = r#"{"name":"text_to_speech","data":{"replace":false,"text":"Hello!","voice":"nova","cache":true,"interruptible":null,"instructions":"","speed":1.0,"language":"en"},"timestamp":"t","turn":3,"background":false,"background_task_name":null}"#;
        let e = Event::from_json(s).unwrap();
        assert!(matches!(&e.kind, EventKind::TextToSpeech(d) if d.text == "Hello!"));
        let a: Value = serde_json::from_str(s).unwrap();
        assert_eq!(a, e.to_value());
    }

    #[test]
    fn metadata_and_unknown_names_survive() {
        let s = r#"{"name":"text","data":{"source":"speech","text":"hi","language":null,"previous_turn_interrupted":true},"timestamp":"t","turn":1,"background":false,"background_task_name":null}"#;
        let e = Event::from_json(s).unwrap();
        assert_eq!(e.to_value(), serde_json::from_str::<Value>(s).unwrap());
        let o = Event::other("my_event", serde_json::json!({"x": 1}));
        let back = Event::from_json(&o.to_json()).unwrap();
        assert_eq!(back, o);
        let m =
            Event::from_json(r#"{"name":"metrics.latency.llm.first_token","data":{"value":3}}"#)
                .unwrap();
        match &m.kind {
            EventKind::Metric(md) => {
                assert_eq!(md.metric_type(), "latency");
                assert_eq!(md.metric_name(), "llm.first_token");
            }
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn malformed_never_panics() {
        for s in [
            "",
            "{}",
            "[]",
            r#"{"name":"text","data":5}"#,
            r#"{"name":"text_to_speech","data":{}}"#,
            r#"{"name":1}"#,
        ] {
            let _ = Event::from_json(s);
        }
    }
}
