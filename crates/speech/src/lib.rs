//! voicegate-speech: streaming speech-to-text and text-to-speech behind traits, with
//! embedded offline defaults (Whisper tiny.en, flite, espeak-ng) and provider clients
//! (Deepgram, OpenAI, ElevenLabs, Cartesia).
//!
//! All PCM is mono i16 at [`SAMPLE_RATE_HZ`] (16 kHz).
//!
//! - STT: [`SpeechToText::start`] gives an [`SttSession`]: audio in without waiting
//!   (bounded queue, frames dropped and counted when full), [`SttEvent`]s out.
//!   [`stt_from_config`] builds the configured providers behind
//!   [`failover::FailoverStt`].
//! - TTS: [`TtsService::speak`] gives a [`TtsStream`] of PCM chunks as produced,
//!   cancellable at once; it resolves voices, serves the synthesis cache and fails over
//!   between providers.
//! - CLI helpers: [`say_to_wav`] and [`transcribe_wav`].

pub mod audio;
pub mod cache;
pub mod config;
pub mod error;
pub mod espeak;
pub mod failover;
#[cfg(feature = "flite")]
pub mod flite;
pub mod provider;
pub mod segment;
pub mod service;
pub mod stt;
pub mod tts;
pub mod voice;
#[cfg(feature = "whisper")]
pub mod whisper;

pub use audio::SAMPLE_RATE_HZ;
pub use config::SpeechConfig;
pub use error::SpeechError;
pub use service::{
    SpeakRequest, TtsService, say_to_wav, stt_from_config, transcribe_pcm, transcribe_wav,
};
pub use stt::{SpeechToText, SttEvent, SttSession, SttSettings, Transcript};
pub use tts::{TextToSpeech, TtsRequest, TtsStream};
pub use voice::{VoiceSelection, VoiceTarget};
