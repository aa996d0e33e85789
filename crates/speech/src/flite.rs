//! Embedded flite TTS (libflite, voice cmu_us_slt, 16 kHz), called in-process.
//!
//! flite keeps per-voice state and is not documented as thread-safe, so every call into
//! it holds one process-wide lock. Text is synthesised a sentence at a time, so the first
//! sentence's audio is out while the rest is still being made.

use std::ffi::{CString, c_char, c_int, c_void};
use std::sync::{Mutex, OnceLock};

use crate::audio::{SAMPLE_RATE_HZ, resample};
use crate::error::SpeechError;
use crate::tts::{TextToSpeech, TtsRequest, TtsSink, TtsStream, split_sentences};

#[repr(C)]
struct CstWave {
    kind: *const c_char,
    sample_rate: c_int,
    num_samples: c_int,
    num_channels: c_int,
    samples: *mut i16,
}

#[repr(C)]
struct CstVoice {
    name: *const c_char,
    features: *mut c_void,
    ffunctions: *mut c_void,
    utt_init: *mut c_void,
}

#[link(name = "flite_cmu_us_slt")]
#[link(name = "flite_usenglish")]
#[link(name = "flite_cmulex")]
#[link(name = "flite")]
unsafe extern "C" {
    fn flite_init() -> c_int;
    fn register_cmu_us_slt(voxdir: *const c_char) -> *mut CstVoice;
    fn flite_text_to_wave(text: *const c_char, voice: *mut CstVoice) -> *mut CstWave;
    fn delete_wave(w: *mut CstWave);
    fn flite_feat_set_float(f: *mut c_void, name: *const c_char, v: f32);
}

struct Voice(*mut CstVoice);
// SAFETY: the voice pointer is only used while holding the FLITE mutex.
unsafe impl Send for Voice {}

static FLITE: OnceLock<Result<Mutex<Voice>, String>> = OnceLock::new();

fn voice() -> Result<&'static Mutex<Voice>, SpeechError> {
    FLITE
        .get_or_init(|| {
            // SAFETY: plain C initialisers, run once; a null voice is checked.
            unsafe {
                flite_init();
                let v = register_cmu_us_slt(std::ptr::null());
                if v.is_null() {
                    Err("register_cmu_us_slt returned null".to_string())
                } else {
                    Ok(Mutex::new(Voice(v)))
                }
            }
        })
        .as_ref()
        .map_err(|e| SpeechError::Unavailable {
            engine: "flite",
            reason: e.clone(),
        })
}

/// Synthesises one piece of text to 16 kHz mono PCM, blocking.
pub fn synthesize_blocking(text: &str, speed: f32) -> Result<Vec<i16>, SpeechError> {
    let text = CString::new(text.replace('\0', " ")).expect("NULs removed");
    let stretch = CString::new("duration_stretch").expect("static");
    let lock = voice()?;
    let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
    let speed = if speed.is_finite() && speed > 0.0 {
        speed.clamp(0.25, 4.0)
    } else {
        1.0
    };
    // SAFETY: the voice is valid for the life of the process and guarded by the lock;
    // the wave returned is owned here and freed once copied.
    let (pcm, rate) = unsafe {
        flite_feat_set_float((*guard.0).features, stretch.as_ptr(), 1.0 / speed);
        let w = flite_text_to_wave(text.as_ptr(), guard.0);
        if w.is_null() {
            return Err(SpeechError::Unavailable {
                engine: "flite",
                reason: "flite_text_to_wave returned null".into(),
            });
        }
        let wave = &*w;
        let n = usize::try_from(wave.num_samples.max(0) * wave.num_channels.max(1)).unwrap_or(0);
        let pcm = if wave.samples.is_null() || n == 0 {
            Vec::new()
        } else {
            std::slice::from_raw_parts(wave.samples, n).to_vec()
        };
        let rate = wave.sample_rate;
        delete_wave(w);
        (pcm, rate)
    };
    drop(guard);
    let rate = u32::try_from(rate).unwrap_or(SAMPLE_RATE_HZ);
    Ok(if rate == SAMPLE_RATE_HZ {
        pcm
    } else {
        resample(&pcm, rate, SAMPLE_RATE_HZ)
    })
}

/// flite as a [`TextToSpeech`]: English only; any voice identifier maps to slt,
/// the one voice linked in.
#[derive(Debug, Clone, Default)]
pub struct FliteTts;

impl FliteTts {
    /// Loads the voice now, so the first call is not slowed by it.
    pub fn new() -> Result<Self, SpeechError> {
        voice()?;
        Ok(Self)
    }
}

impl TextToSpeech for FliteTts {
    fn name(&self) -> &'static str {
        "flite"
    }

    fn synthesize(&self, req: TtsRequest) -> TtsStream {
        if !is_english(&req.language) {
            return TtsStream::failed(SpeechError::Unsupported(format!(
                "flite speaks English only, not {:?}",
                req.language
            )));
        }
        let (stream, sink) = TtsStream::channel();
        let task = tokio::task::spawn_blocking(move || run(&sink, &req));
        stream.with_task(task.abort_handle())
    }
}

fn run(sink: &TtsSink, req: &TtsRequest) {
    for sentence in split_sentences(&req.text) {
        if sink.is_cancelled() {
            return;
        }
        match synthesize_blocking(&sentence, req.speed) {
            Ok(pcm) => {
                if sink.blocking_send(pcm).is_err() {
                    return;
                }
            }
            Err(e) => {
                sink.blocking_fail(e);
                return;
            }
        }
    }
}

fn is_english(lang: &str) -> bool {
    lang.is_empty()
        || lang.eq_ignore_ascii_case("en")
        || lang.to_ascii_lowercase().starts_with("en-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::rms;
    use crate::voice::VoiceTarget;

    fn req(text: &str) -> TtsRequest {
        TtsRequest::new(
            text,
            VoiceTarget {
                provider: "flite".into(),
                identifier: "nova".into(),
            },
        )
    }

    #[test]
    fn synthesises_nontrivial_16k_pcm() {
        let pcm = synthesize_blocking("Hello, thank you for calling.", 1.0).unwrap();
        let secs = pcm.len() as f64 / f64::from(SAMPLE_RATE_HZ);
        assert!((0.8..5.0).contains(&secs), "{secs} s");
        assert!(rms(&pcm) > 300.0, "rms {}", rms(&pcm));
        let fast = synthesize_blocking("Hello, thank you for calling.", 2.0).unwrap();
        assert!(
            fast.len() * 3 < pcm.len() * 2,
            "speed 2 gives shorter audio"
        );
    }

    #[tokio::test]
    async fn streams_per_sentence_and_measures_first_chunk() {
        let mut s = FliteTts::new().unwrap().synthesize(req(
            "Your appointment is confirmed. We will call you tomorrow morning. Goodbye.",
        ));
        let mut chunks = 0;
        while let Some(c) = s.next_chunk().await {
            assert!(!c.unwrap().is_empty());
            chunks += 1;
        }
        assert_eq!(chunks, 3);
        assert!(s.first_chunk_latency().is_some());
    }

    #[tokio::test]
    async fn refuses_other_languages() {
        let mut r = req("hola");
        r.language = "es".into();
        let err = FliteTts.synthesize(r).collect().await.unwrap_err();
        assert!(matches!(err, SpeechError::Unsupported(_)));
    }
}
