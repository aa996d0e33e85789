//! Typed speech settings, embedded by the gateway's config file.
//!
//! Every struct denies unknown keys; [`SpeechConfig::validate`] reports every problem at
//! once, each with the key path that is wrong.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::SpeechError;
use crate::voice::VoiceTarget;

/// Speech settings: `[speech]` in the gateway config.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SpeechConfig {
    /// Speech-to-text.
    pub stt: SttConfig,
    /// Text-to-speech.
    pub tts: TtsConfig,
    /// Synthesis cache.
    pub cache: CacheConfig,
}

impl SpeechConfig {
    /// Checks everything that serde cannot; lists every problem with its key.
    pub fn validate(&self) -> Result<(), SpeechError> {
        let mut problems = Vec::new();
        if self.stt.providers.is_empty() {
            problems.push("stt.providers: at least one provider is needed".to_string());
        }
        for (i, p) in self.stt.providers.iter().enumerate() {
            p.check(&format!("stt.providers[{i}]"), &mut problems);
        }
        if self.tts.providers.is_empty() {
            problems.push("tts.providers: at least one provider is needed".to_string());
        }
        for (i, p) in self.tts.providers.iter().enumerate() {
            p.check(&format!("tts.providers[{i}]"), &mut problems);
        }
        for (name, target) in &self.tts.voices {
            if !self
                .tts
                .providers
                .iter()
                .any(|p| p.name() == target.provider)
            {
                problems.push(format!(
                    "tts.voices.{name}.provider: {:?} is not among tts.providers",
                    target.provider
                ));
            }
        }
        if self.tts.first_chunk_timeout_ms == 0 {
            problems.push("tts.first_chunk_timeout_ms: must be > 0".to_string());
        }
        if self.stt.connect_timeout_ms == 0 {
            problems.push("stt.connect_timeout_ms: must be > 0".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SpeechError::Config(problems))
        }
    }
}

/// Speech-to-text settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SttConfig {
    /// Providers in order of preference; later ones take over when one fails.
    pub providers: Vec<SttProviderConfig>,
    /// Language code ("en", "es", "multi").
    pub language: String,
    /// Context prompt given to providers that take one.
    pub prompt: Option<String>,
    /// Silence (ms) that ends an utterance, for providers with server endpointing.
    pub endpointing_ms: u32,
    /// Limit on connecting to a provider.
    pub connect_timeout_ms: u64,
}

impl Default for SttConfig {
    fn default() -> Self {
        Self {
            providers: vec![SttProviderConfig::Whisper(WhisperConfig::default())],
            language: "en".into(),
            prompt: None,
            endpointing_ms: 300,
            connect_timeout_ms: 5_000,
        }
    }
}

impl SttConfig {
    /// The session settings this config starts with.
    pub fn settings(&self) -> crate::stt::SttSettings {
        crate::stt::SttSettings {
            language: Some(self.language.clone()),
            prompt: self.prompt.clone(),
            endpointing: Some(crate::stt::Endpointing::SilenceMs(self.endpointing_ms)),
        }
    }

    /// `connect_timeout_ms` as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

/// One STT provider.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum SttProviderConfig {
    /// Embedded Whisper tiny.en (CTranslate2), offline.
    Whisper(WhisperConfig),
    /// Deepgram live streaming (WebSocket).
    Deepgram(DeepgramConfig),
    /// OpenAI transcription, per utterance.
    Openai(OpenAiSttConfig),
}

impl SttProviderConfig {
    /// The provider's name as written in config.
    pub fn name(&self) -> &'static str {
        match self {
            SttProviderConfig::Whisper(_) => "whisper",
            SttProviderConfig::Deepgram(_) => "deepgram",
            SttProviderConfig::Openai(_) => "openai",
        }
    }

    fn check(&self, key: &str, problems: &mut Vec<String>) {
        match self {
            SttProviderConfig::Whisper(c) => {
                if c.model_dir
                    .as_ref()
                    .is_some_and(|d| d.as_os_str().is_empty())
                {
                    problems.push(format!("{key}.model_dir: empty"));
                }
            }
            SttProviderConfig::Deepgram(c) => {
                c.api_key.check(&format!("{key}.api_key"), problems);
                check_url(&c.base_url, &format!("{key}.base_url"), problems);
            }
            SttProviderConfig::Openai(c) => {
                c.api_key.check(&format!("{key}.api_key"), problems);
                check_url(&c.base_url, &format!("{key}.base_url"), problems);
                if c.request_timeout_ms == 0 {
                    problems.push(format!("{key}.request_timeout_ms: must be > 0"));
                }
            }
        }
    }
}

/// Embedded Whisper.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct WhisperConfig {
    /// Model directory; unset: `$VOICEGATE_WHISPER_MODEL_DIR`, else the cache directory
    /// (`~/.cache/voicegate/whisper-tiny.en`).
    pub model_dir: Option<PathBuf>,
}

/// Deepgram live transcription.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeepgramConfig {
    /// Credentials.
    pub api_key: ApiKey,
    /// WebSocket endpoint (`wss://api.deepgram.com/v1/listen`); tests point it at loopback.
    pub base_url: String,
    /// Model name.
    pub model: String,
    /// Send a KeepAlive message after this much time without audio.
    pub keepalive_ms: u64,
}

impl Default for DeepgramConfig {
    fn default() -> Self {
        Self {
            api_key: ApiKey::from_env("DEEPGRAM_API_KEY"),
            base_url: "wss://api.deepgram.com/v1/listen".into(),
            model: "nova-3".into(),
            keepalive_ms: 5_000,
        }
    }
}

/// OpenAI transcription (`POST {base}/audio/transcriptions`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenAiSttConfig {
    /// Credentials.
    pub api_key: ApiKey,
    /// API base (`https://api.openai.com/v1`).
    pub base_url: String,
    /// Model name.
    pub model: String,
    /// Limit on one utterance's request, answer included.
    pub request_timeout_ms: u64,
}

impl Default for OpenAiSttConfig {
    fn default() -> Self {
        Self {
            api_key: ApiKey::from_env("OPENAI_API_KEY"),
            base_url: "https://api.openai.com/v1".into(),
            model: "gpt-4o-mini-transcribe".into(),
            request_timeout_ms: 15_000,
        }
    }
}

/// Text-to-speech settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TtsConfig {
    /// Providers in order of preference; later ones take over when one fails.
    pub providers: Vec<TtsProviderConfig>,
    /// Voice used when a request names none.
    pub default_voice: String,
    /// VoiceRun voice names (e.g. "nova") mapped to a provider voice.
    pub voices: BTreeMap<String, VoiceTarget>,
    /// Limit on waiting for a provider's first audio.
    pub first_chunk_timeout_ms: u64,
}

impl Default for TtsConfig {
    fn default() -> Self {
        Self {
            providers: vec![
                TtsProviderConfig::Flite(FliteConfig::default()),
                TtsProviderConfig::Espeak(EspeakConfig::default()),
            ],
            default_voice: "nova".into(),
            voices: BTreeMap::new(),
            first_chunk_timeout_ms: 3_000,
        }
    }
}

impl TtsConfig {
    /// `first_chunk_timeout_ms` as a duration.
    pub fn first_chunk_timeout(&self) -> Duration {
        Duration::from_millis(self.first_chunk_timeout_ms)
    }
}

/// One TTS provider.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum TtsProviderConfig {
    /// flite, in-process (voice slt, 16 kHz).
    Flite(FliteConfig),
    /// espeak-ng, for languages flite lacks.
    Espeak(EspeakConfig),
    /// OpenAI speech (HTTP streaming PCM).
    Openai(OpenAiTtsConfig),
    /// Cartesia (HTTP streaming raw PCM).
    Cartesia(CartesiaConfig),
    /// ElevenLabs (WebSocket stream-input).
    Elevenlabs(ElevenLabsConfig),
}

impl TtsProviderConfig {
    /// The provider's name as written in config and in `{provider, identifier}` voices.
    pub fn name(&self) -> &'static str {
        match self {
            TtsProviderConfig::Flite(_) => "flite",
            TtsProviderConfig::Espeak(_) => "espeak",
            TtsProviderConfig::Openai(_) => "openai",
            TtsProviderConfig::Cartesia(_) => "cartesia",
            TtsProviderConfig::Elevenlabs(_) => "elevenlabs",
        }
    }

    fn check(&self, key: &str, problems: &mut Vec<String>) {
        match self {
            TtsProviderConfig::Flite(c) => {
                if c.voice != "slt" {
                    problems.push(format!("{key}.voice: only \"slt\" is linked in"));
                }
            }
            TtsProviderConfig::Espeak(c) => {
                if c.binary.as_os_str().is_empty() {
                    problems.push(format!("{key}.binary: empty"));
                }
            }
            TtsProviderConfig::Openai(c) => {
                c.api_key.check(&format!("{key}.api_key"), problems);
                check_url(&c.base_url, &format!("{key}.base_url"), problems);
            }
            TtsProviderConfig::Cartesia(c) => {
                c.api_key.check(&format!("{key}.api_key"), problems);
                check_url(&c.base_url, &format!("{key}.base_url"), problems);
            }
            TtsProviderConfig::Elevenlabs(c) => {
                c.api_key.check(&format!("{key}.api_key"), problems);
                check_url(&c.base_url, &format!("{key}.base_url"), problems);
                if c.default_voice.is_empty() {
                    problems.push(format!("{key}.default_voice: empty"));
                }
            }
        }
    }
}

/// Embedded flite.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FliteConfig {
    /// Voice; "slt" is the one linked in.
    pub voice: String,
}

impl Default for FliteConfig {
    fn default() -> Self {
        Self {
            voice: "slt".into(),
        }
    }
}

/// espeak-ng, run as a process.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EspeakConfig {
    /// The espeak-ng binary.
    pub binary: PathBuf,
}

impl Default for EspeakConfig {
    fn default() -> Self {
        Self {
            binary: "espeak-ng".into(),
        }
    }
}

/// OpenAI speech (`POST /v1/audio/speech`, `response_format: "pcm"`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenAiTtsConfig {
    /// Credentials.
    pub api_key: ApiKey,
    /// API base (`https://api.openai.com/v1`); tests point it at loopback.
    pub base_url: String,
    /// Model name.
    pub model: String,
}

impl Default for OpenAiTtsConfig {
    fn default() -> Self {
        Self {
            api_key: ApiKey::from_env("OPENAI_API_KEY"),
            base_url: "https://api.openai.com/v1".into(),
            model: "gpt-4o-mini-tts".into(),
        }
    }
}

/// Cartesia (`POST {base}/tts/bytes`, raw PCM streamed).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CartesiaConfig {
    /// Credentials.
    pub api_key: ApiKey,
    /// API base (`https://api.cartesia.ai`).
    pub base_url: String,
    /// Model name.
    pub model: String,
    /// `Cartesia-Version` header.
    pub version: String,
    /// Voice id used when a request names none (failover, unmapped names).
    pub default_voice: Option<String>,
}

impl Default for CartesiaConfig {
    fn default() -> Self {
        Self {
            api_key: ApiKey::from_env("CARTESIA_API_KEY"),
            base_url: "https://api.cartesia.ai".into(),
            model: "sonic-2".into(),
            version: "2024-06-10".into(),
            default_voice: None,
        }
    }
}

/// ElevenLabs WebSocket streaming.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ElevenLabsConfig {
    /// Credentials.
    pub api_key: ApiKey,
    /// API base (`wss://api.elevenlabs.io/v1`).
    pub base_url: String,
    /// Model id.
    pub model: String,
    /// Voice id used when a request names none.
    pub default_voice: String,
    /// Limit on opening the WebSocket.
    pub connect_timeout_ms: u64,
}

impl Default for ElevenLabsConfig {
    fn default() -> Self {
        Self {
            api_key: ApiKey::from_env("ELEVENLABS_API_KEY"),
            base_url: "wss://api.elevenlabs.io/v1".into(),
            model: "eleven_flash_v2_5".into(),
            default_voice: "21m00Tcm4TlvDq8ikWAM".into(),
            connect_timeout_ms: 5_000,
        }
    }
}

/// Synthesis cache.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Upper bound on cached PCM, in bytes; 0 turns the cache off.
    pub max_bytes: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// An API key: given inline or read from an environment variable.
#[derive(Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ApiKey {
    /// The key itself (prefer `env`).
    pub value: Option<String>,
    /// Environment variable holding the key.
    pub env: Option<String>,
}

impl ApiKey {
    /// A key read from `var` at use.
    pub fn from_env(var: &str) -> Self {
        Self {
            value: None,
            env: Some(var.into()),
        }
    }

    /// A literal key.
    pub fn literal(key: &str) -> Self {
        Self {
            value: Some(key.into()),
            env: None,
        }
    }

    /// The key, if one is set.
    pub fn resolve(&self) -> Option<String> {
        self.value
            .clone()
            .or_else(|| self.env.as_ref().and_then(|v| std::env::var(v).ok()))
            .filter(|k| !k.is_empty())
    }

    fn check(&self, key: &str, problems: &mut Vec<String>) {
        if self.value.is_some() && self.env.is_some() {
            problems.push(format!("{key}: set either value or env, not both"));
        }
        if self.value.is_none() && self.env.is_none() {
            problems.push(format!("{key}: set value or env"));
        }
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .field("env", &self.env)
            .finish()
    }
}

fn check_url(url: &str, key: &str, problems: &mut Vec<String>) {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https" | "ws" | "wss") => {}
        Ok(u) => problems.push(format!("{key}: unsupported scheme {:?}", u.scheme())),
        Err(e) => problems.push(format!("{key}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        SpeechConfig::default().validate().unwrap();
    }

    #[test]
    fn parses_toml_and_denies_unknown_keys() {
        let cfg: SpeechConfig = toml::from_str(
            r#"
            [stt]
            language = "en"
            providers = [{ provider = "deepgram", api_key = { env = "DG" }, base_url = "ws://127.0.0.1:9/v1/listen" }]
            [tts]
            providers = [{ provider = "openai", api_key = { value = "k" } }, { provider = "flite" }]
            voices.nova = { provider = "openai", identifier = "nova" }
            "#,
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.tts.providers[1].name(), "flite");

        let bad = toml::from_str::<SpeechConfig>(
            "[tts]\nproviders = [{ provider = \"flite\", colour = 1 }]",
        );
        assert!(bad.unwrap_err().to_string().contains("colour"));
        let bad = toml::from_str::<SpeechConfig>("[stt]\nlanguge = \"en\"");
        assert!(bad.unwrap_err().to_string().contains("languge"));
    }

    #[test]
    fn validate_lists_every_problem_with_its_key() {
        let mut cfg = SpeechConfig::default();
        cfg.stt.providers.clear();
        cfg.tts.voices.insert(
            "nova".into(),
            VoiceTarget {
                provider: "openai".into(),
                identifier: "nova".into(),
            },
        );
        cfg.tts
            .providers
            .push(TtsProviderConfig::Openai(OpenAiTtsConfig {
                base_url: "ftp://x".into(),
                ..Default::default()
            }));
        cfg.tts.providers.remove(2);
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("stt.providers:"), "{err}");
        assert!(err.contains("tts.voices.nova.provider"), "{err}");
    }

    #[test]
    fn api_key_is_redacted_in_debug() {
        let k = ApiKey::literal("sk-secret");
        assert!(!format!("{k:?}").contains("sk-secret"));
    }
}
