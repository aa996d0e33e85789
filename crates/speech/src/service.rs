//! The configured TTS: voice resolution, cache, per-sentence failover between providers.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::{CacheKey, SynthesisCache};
use crate::config::{SpeechConfig, SttProviderConfig, TtsConfig, TtsProviderConfig};
use crate::error::SpeechError;
use crate::failover::FailoverStt;
use crate::stt::{SpeechToText, SttSettings};
use crate::tts::{TextToSpeech, TtsRequest, TtsSink, TtsStream, split_sentences};
use crate::voice::{VoiceSelection, VoiceTarget};

/// Cached audio is handed out in chunks of this many samples (0.5 s).
const CACHED_CHUNK_SAMPLES: usize = 8_000;

/// What a TextToSpeechEvent asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeakRequest {
    /// Text to speak.
    pub text: String,
    /// Voice; `None` means the configured default voice.
    pub voice: Option<VoiceSelection>,
    /// Speed factor, 1.0 normal.
    pub speed: f32,
    /// Language code.
    pub language: String,
    /// Styling instructions (OpenAI only).
    pub instructions: Option<String>,
    /// Provider model override.
    pub model: Option<String>,
    /// Whether the result may come from / go to the synthesis cache.
    pub cache: bool,
}

impl SpeakRequest {
    /// A request with the event's defaults: default voice, speed 1, English, cached.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            voice: None,
            speed: 1.0,
            language: "en".into(),
            instructions: None,
            model: None,
            cache: true,
        }
    }
}

/// The configured text-to-speech: resolves voices, serves the cache, and fails over to
/// the next provider when one fails.
///
/// Text is synthesised a sentence at a time. A provider that fails before or during a
/// sentence (connect error, 401, timeout, disconnect) is dropped for the rest of the
/// utterance and the sentence is synthesised again by the next provider, so no words
/// are lost.
#[derive(Clone)]
pub struct TtsService {
    cfg: Arc<TtsConfig>,
    engines: Arc<Vec<Arc<dyn TextToSpeech>>>,
    cache: SynthesisCache,
}

impl std::fmt::Debug for TtsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtsService")
            .field(
                "engines",
                &self.engines.iter().map(|e| e.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl TtsService {
    /// Builds the engines `speech.tts.providers` lists, in order.
    pub fn from_config(cfg: &SpeechConfig) -> Result<Self, SpeechError> {
        cfg.validate()?;
        let mut engines: Vec<Arc<dyn TextToSpeech>> = Vec::new();
        for p in &cfg.tts.providers {
            engines.push(match p {
                #[cfg(feature = "flite")]
                TtsProviderConfig::Flite(_) => Arc::new(crate::flite::FliteTts::new()?),
                #[cfg(not(feature = "flite"))]
                TtsProviderConfig::Flite(_) => {
                    return Err(SpeechError::Unavailable {
                        engine: "flite",
                        reason: "built without the `flite` feature".into(),
                    });
                }
                TtsProviderConfig::Espeak(c) => {
                    Arc::new(crate::espeak::EspeakTts::new(c.binary.clone()))
                }
                TtsProviderConfig::Openai(c) => {
                    Arc::new(crate::provider::openai::OpenAiTts::new(c))
                }
                TtsProviderConfig::Cartesia(c) => {
                    Arc::new(crate::provider::cartesia::CartesiaTts::new(c))
                }
                TtsProviderConfig::Elevenlabs(c) => {
                    Arc::new(crate::provider::elevenlabs::ElevenLabsTts::new(c))
                }
            });
        }
        Ok(Self::with_engines(
            cfg.tts.clone(),
            engines,
            SynthesisCache::new(cfg.cache.max_bytes),
        ))
    }

    /// A service over given engines (their `name()`s are the provider names).
    pub fn with_engines(
        cfg: TtsConfig,
        engines: Vec<Arc<dyn TextToSpeech>>,
        cache: SynthesisCache,
    ) -> Self {
        Self {
            cfg: Arc::new(cfg),
            engines: Arc::new(engines),
            cache,
        }
    }

    /// The shared synthesis cache.
    pub fn cache(&self) -> &SynthesisCache {
        &self.cache
    }

    /// Starts speaking `req`; PCM (16 kHz mono) streams out as it is made.
    /// Must be called inside a tokio runtime.
    pub fn speak(&self, req: SpeakRequest) -> TtsStream {
        let voice = req
            .voice
            .clone()
            .unwrap_or_else(|| VoiceSelection::Name(self.cfg.default_voice.clone()))
            .resolve(&self.cfg);
        let tts_req = TtsRequest {
            text: req.text.clone(),
            voice,
            speed: req.speed,
            language: req.language.clone(),
            instructions: req.instructions.clone(),
            model: req.model.clone(),
        };
        let (stream, sink) = TtsStream::channel();
        let this = self.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = this.run(tts_req, req.cache, &sink).await {
                sink.fail(e).await;
            }
        });
        stream.with_task(task.abort_handle())
    }

    async fn run(
        &self,
        req: TtsRequest,
        use_cache: bool,
        sink: &TtsSink,
    ) -> Result<(), SpeechError> {
        let key = CacheKey::of(&req);
        if use_cache && let Some(pcm) = self.cache.get(&key) {
            for chunk in pcm.chunks(CACHED_CHUNK_SAMPLES) {
                sink.send(chunk.to_vec()).await?;
            }
            return Ok(());
        }
        // Candidate order: the voice's own provider, then the rest in config order with
        // their default voice.
        let mut candidates: Vec<(Arc<dyn TextToSpeech>, VoiceTarget)> = Vec::new();
        match self.engines.iter().find(|e| e.name() == req.voice.provider) {
            Some(e) => candidates.push((e.clone(), req.voice.clone())),
            None => tracing::warn!(
                provider = %req.voice.provider,
                "voice names a TTS provider that is not configured; using the others"
            ),
        }
        for e in self.engines.iter() {
            if e.name() != req.voice.provider {
                candidates.push((
                    e.clone(),
                    VoiceTarget {
                        provider: e.name().to_string(),
                        identifier: String::new(),
                    },
                ));
            }
        }
        let timeout = self.cfg.first_chunk_timeout();
        let mut current = 0usize;
        let mut all = Vec::new();
        let mut last_err = None;
        for sentence in split_sentences(&req.text) {
            loop {
                let Some((engine, voice)) = candidates.get(current) else {
                    return Err(last_err.unwrap_or_else(|| {
                        SpeechError::Unsupported("no TTS provider configured".into())
                    }));
                };
                let mut r = req.clone();
                r.text = sentence.clone();
                r.voice = voice.clone();
                match relay(engine.name(), engine.synthesize(r), sink, timeout, &mut all).await {
                    Ok(()) => break,
                    Err(SpeechError::Cancelled) => return Err(SpeechError::Cancelled),
                    Err(e) => {
                        tracing::warn!(provider = engine.name(), error = %e, "TTS provider failed; trying the next");
                        last_err = Some(e);
                        current += 1;
                    }
                }
            }
        }
        if use_cache && current == 0 && !all.is_empty() {
            self.cache.insert(key, all.into());
        }
        Ok(())
    }
}

/// Forwards one engine stream to the sink, with a limit on each wait for a chunk.
async fn relay(
    provider: &'static str,
    mut inner: TtsStream,
    sink: &TtsSink,
    timeout: Duration,
    all: &mut Vec<i16>,
) -> Result<(), SpeechError> {
    loop {
        let next = match tokio::time::timeout(timeout, inner.next_chunk()).await {
            Ok(n) => n,
            Err(_) => {
                return Err(SpeechError::Timeout { provider, timeout });
            }
        };
        match next {
            None => return Ok(()),
            Some(Err(e)) => return Err(e),
            Some(Ok(pcm)) => {
                all.extend_from_slice(&pcm);
                sink.send(pcm).await?;
            }
        }
    }
}

/// Speaks `text` with the configured TTS and writes a 16 kHz mono WAV file
/// (`voicegate say "TEXT" -o FILE.wav`). Returns the number of samples written.
pub async fn say_to_wav(
    cfg: &SpeechConfig,
    text: &str,
    path: &std::path::Path,
) -> Result<usize, SpeechError> {
    let service = TtsService::from_config(cfg)?;
    let pcm = service.speak(SpeakRequest::new(text)).collect().await?;
    crate::audio::write_wav(path, &pcm)?;
    Ok(pcm.len())
}

/// Builds the configured speech-to-text: `speech.stt.providers` in order, with failover.
pub fn stt_from_config(cfg: &SpeechConfig) -> Result<FailoverStt, SpeechError> {
    cfg.validate()?;
    let defaults = cfg.stt.settings();
    let mut providers: Vec<Arc<dyn SpeechToText>> = Vec::new();
    for p in &cfg.stt.providers {
        providers.push(match p {
            #[cfg(feature = "whisper")]
            SttProviderConfig::Whisper(c) => {
                let dir = crate::whisper::resolve_model_dir(c.model_dir.as_deref())?;
                Arc::new(crate::whisper::WhisperStt::load(&dir, defaults.clone())?)
            }
            #[cfg(not(feature = "whisper"))]
            SttProviderConfig::Whisper(_) => {
                return Err(SpeechError::Unavailable {
                    engine: "whisper",
                    reason: "built without the `whisper` feature".into(),
                });
            }
            SttProviderConfig::Deepgram(c) => {
                Arc::new(crate::provider::deepgram::DeepgramStt::new(
                    c,
                    defaults.clone(),
                    cfg.stt.connect_timeout(),
                ))
            }
            SttProviderConfig::Openai(c) => Arc::new(crate::provider::openai_stt::OpenAiStt::new(
                c,
                defaults.clone(),
                cfg.stt.connect_timeout(),
            )),
        });
    }
    Ok(FailoverStt::new(providers))
}

/// Transcribes a WAV file with the configured STT (`voicegate transcribe FILE.wav`):
/// the final transcripts, joined with spaces.
pub async fn transcribe_wav(
    cfg: &SpeechConfig,
    path: &std::path::Path,
) -> Result<String, SpeechError> {
    let stt = stt_from_config(cfg)?;
    transcribe_pcm(&stt, &crate::audio::read_wav_16k(path)?).await
}

/// Transcribes 16 kHz PCM with any STT: fed in 20 ms frames, then finished.
pub async fn transcribe_pcm(stt: &dyn SpeechToText, pcm: &[i16]) -> Result<String, SpeechError> {
    let session = stt.start(SttSettings::default()).await?;
    for frame in pcm.chunks(320) {
        if !session.send_audio(frame.to_vec()).await {
            break;
        }
    }
    session.finish().final_text().await
}

#[cfg(all(test, feature = "flite"))]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::audio::rms;

    fn espeak_present() -> bool {
        let ok = std::process::Command::new("espeak-ng")
            .arg("--version")
            .output()
            .is_ok();
        if !ok {
            assert!(
                std::env::var("VOICEGATE_REQUIRE_PEERS").as_deref() != Ok("1"),
                "espeak-ng missing and VOICEGATE_REQUIRE_PEERS=1"
            );
            eprintln!("skipped: espeak-ng not installed (apt-get install espeak-ng)");
        }
        ok
    }

    #[tokio::test]
    async fn say_to_wav_with_default_config() {
        let dir = std::env::temp_dir().join(format!("vg-say-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hello.wav");
        let n = say_to_wav(&SpeechConfig::default(), "Hello from voicegate.", &path)
            .await
            .unwrap();
        let pcm = crate::audio::read_wav_16k(&path).unwrap();
        assert_eq!(pcm.len(), n);
        assert!(n > 8_000 && rms(&pcm) > 300.0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn languages_flite_lacks_go_to_espeak() {
        if !espeak_present() {
            return;
        }
        let svc = TtsService::from_config(&SpeechConfig::default()).unwrap();
        let mut req = SpeakRequest::new("Buenos días, gracias por llamar.");
        req.language = "es".into();
        let pcm = svc.speak(req).collect().await.unwrap();
        assert!(pcm.len() > 8_000 && rms(&pcm) > 300.0);
    }

    #[tokio::test]
    async fn cancel_mid_utterance_stops_at_once() {
        let svc = TtsService::from_config(&SpeechConfig::default()).unwrap();
        let text = "This is the first sentence. ".repeat(30);
        let mut s = svc.speak(SpeakRequest::new(text));
        assert!(s.next_chunk().await.unwrap().is_ok());
        let t0 = Instant::now();
        s.cancel();
        assert!(s.next_chunk().await.is_none());
        assert!(t0.elapsed() < Duration::from_millis(5));
        // Nothing half-finished lands in the cache.
        assert_eq!(svc.cache().bytes(), 0);
    }

    #[tokio::test]
    async fn cache_honours_the_flag_and_the_key() {
        let svc = TtsService::from_config(&SpeechConfig::default()).unwrap();
        let a = svc
            .speak(SpeakRequest::new("Cached words."))
            .collect()
            .await
            .unwrap();
        let b = svc
            .speak(SpeakRequest::new("Cached words."))
            .collect()
            .await
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(svc.cache().stats().0, 1, "second request was a hit");
        let mut faster = SpeakRequest::new("Cached words.");
        faster.speed = 1.5;
        let c = svc.speak(faster).collect().await.unwrap();
        assert!(c.len() < a.len(), "speed is part of the key");
        let mut uncached = SpeakRequest::new("Not cached.");
        uncached.cache = false;
        svc.speak(uncached).collect().await.unwrap();
        let before = svc.cache().bytes();
        let mut again = SpeakRequest::new("Not cached.");
        again.cache = false;
        svc.speak(again).collect().await.unwrap();
        assert_eq!(svc.cache().bytes(), before);
        assert_eq!(svc.cache().stats().0, 1);
    }
}

#[cfg(all(test, feature = "whisper"))]
mod stt_tests {
    use super::*;
    use crate::config::WhisperConfig;

    #[test]
    fn missing_whisper_model_is_a_clear_error() {
        let mut cfg = SpeechConfig::default();
        let dir = std::env::temp_dir().join("vg-missing-whisper-model");
        cfg.stt.providers = vec![SttProviderConfig::Whisper(WhisperConfig {
            model_dir: Some(dir.clone()),
        })];
        let err = stt_from_config(&cfg).unwrap_err();
        assert!(matches!(err, SpeechError::ModelMissing { .. }), "{err}");
        assert!(
            err.to_string().contains(&dir.display().to_string()),
            "{err}"
        );
    }
}
