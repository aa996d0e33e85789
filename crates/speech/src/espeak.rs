//! espeak-ng TTS, run as a process (`espeak-ng --stdout`), for languages flite lacks.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::OnceCell;

use crate::audio::{Resampler, SAMPLE_RATE_HZ};
use crate::error::SpeechError;
use crate::tts::{TextToSpeech, TtsRequest, TtsSink, TtsStream};

/// espeak-ng's default speaking rate, words per minute.
const BASE_WPM: f32 = 175.0;
/// Bytes read from espeak-ng per chunk (about 90 ms at 22 050 Hz).
const READ_BYTES: usize = 4096;

/// espeak-ng as a [`TextToSpeech`].
///
/// The espeak voice is the request's voice identifier when it is set (e.g. "es",
/// "en-us+f3"), else the request's language.
#[derive(Debug, Clone)]
pub struct EspeakTts {
    binary: PathBuf,
    voices: Arc<OnceCell<Vec<String>>>,
}

impl EspeakTts {
    /// Uses the given espeak-ng binary.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            voices: Arc::default(),
        }
    }
}

impl TextToSpeech for EspeakTts {
    fn name(&self) -> &'static str {
        "espeak"
    }

    fn synthesize(&self, req: TtsRequest) -> TtsStream {
        let (stream, sink) = TtsStream::channel();
        let binary = self.binary.clone();
        let voices = self.voices.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = run(&binary, &voices, &req, &sink).await {
                sink.fail(e).await;
            }
        });
        stream.with_task(task.abort_handle())
    }
}

async fn run(
    binary: &PathBuf,
    voices: &OnceCell<Vec<String>>,
    req: &TtsRequest,
    sink: &TtsSink,
) -> Result<(), SpeechError> {
    let voice = if req.voice.identifier.is_empty() {
        req.language.as_str()
    } else {
        req.voice.identifier.as_str()
    };
    // espeak-ng falls back to its default voice silently; check the name first.
    let known = known_voices(binary, voices).await?;
    let base = voice
        .split('+')
        .next()
        .unwrap_or(voice)
        .to_ascii_lowercase();
    if !known.contains(&base) {
        return Err(SpeechError::Unsupported(format!(
            "espeak-ng has no voice or language {voice:?}"
        )));
    }
    let wpm = (BASE_WPM * req.speed.clamp(0.25, 4.0)).round() as u32;
    let mut child = Command::new(binary)
        .arg("--stdout")
        .arg("-v")
        .arg(voice)
        .arg("-s")
        .arg(wpm.to_string())
        .arg("--")
        .arg(&req.text)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| SpeechError::Unavailable {
            engine: "espeak",
            reason: format!("cannot run {}: {e}", binary.display()),
        })?;
    let mut stdout = child.stdout.take().expect("piped");
    let rate = read_wav_header(&mut stdout).await;
    let rate = match rate {
        Ok(r) => r,
        Err(e) => {
            let out = child.wait_with_output().await?;
            let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(SpeechError::Unsupported(format!(
                "espeak-ng voice {voice:?}: {}",
                if msg.is_empty() { e.to_string() } else { msg }
            )));
        }
    };
    let mut resampler = Resampler::new(rate, SAMPLE_RATE_HZ);
    let mut buf = vec![0u8; READ_BYTES];
    let mut carry: Option<u8> = None;
    let mut samples = Vec::with_capacity(READ_BYTES / 2 + 1);
    loop {
        let n = stdout.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        samples.clear();
        let mut bytes = &buf[..n];
        if let Some(lo) = carry.take() {
            samples.push(i16::from_le_bytes([lo, bytes[0]]));
            bytes = &bytes[1..];
        }
        let mut pairs = bytes.chunks_exact(2);
        samples.extend(pairs.by_ref().map(|p| i16::from_le_bytes([p[0], p[1]])));
        carry = pairs.remainder().first().copied();
        let mut out = Vec::with_capacity(samples.len());
        resampler.process(&samples, &mut out);
        sink.send(out).await?;
    }
    let mut out = Vec::new();
    resampler.finish(&mut out);
    sink.send(out).await?;
    let status = child.wait().await?;
    if !status.success() {
        return Err(SpeechError::Unavailable {
            engine: "espeak",
            reason: format!("espeak-ng exited with {status}"),
        });
    }
    Ok(())
}

/// Voice names, language codes and voice file names `espeak-ng --voices` lists, lowercase.
async fn known_voices<'a>(
    binary: &PathBuf,
    cache: &'a OnceCell<Vec<String>>,
) -> Result<&'a [String], SpeechError> {
    cache
        .get_or_try_init(|| async {
            let out = Command::new(binary)
                .arg("--voices")
                .stdin(Stdio::null())
                .output()
                .await
                .map_err(|e| SpeechError::Unavailable {
                    engine: "espeak",
                    reason: format!("cannot run {}: {e}", binary.display()),
                })?;
            let mut names = Vec::new();
            // Columns: Pty Language Age/Gender VoiceName File [Other Languages]
            for line in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
                let cols: Vec<&str> = line.split_whitespace().collect();
                if cols.len() >= 5 {
                    names.push(cols[1].to_ascii_lowercase());
                    names.push(cols[3].to_ascii_lowercase());
                    names.push(cols[4].to_ascii_lowercase());
                    if let Some(last) = cols[4].rsplit('/').next() {
                        names.push(last.to_ascii_lowercase());
                    }
                }
            }
            Ok(names)
        })
        .await
        .map(Vec::as_slice)
}

/// Reads a RIFF/WAVE header up to the start of the data chunk; returns the sample rate.
/// Only 16-bit mono PCM is accepted (what espeak-ng writes).
async fn read_wav_header<R: AsyncRead + Unpin>(r: &mut R) -> Result<u32, SpeechError> {
    let bad = |why: &str| SpeechError::Protocol {
        provider: "espeak",
        reason: format!("bad WAV header: {why}"),
    };
    let mut riff = [0u8; 12];
    r.read_exact(&mut riff)
        .await
        .map_err(|_| bad("no output"))?;
    if &riff[0..4] != b"RIFF" || &riff[8..12] != b"WAVE" {
        return Err(bad("not RIFF/WAVE"));
    }
    let mut rate = None;
    loop {
        let mut hdr = [0u8; 8];
        r.read_exact(&mut hdr).await.map_err(|_| bad("truncated"))?;
        let len = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
        match &hdr[0..4] {
            b"data" => return rate.ok_or_else(|| bad("data before fmt")),
            b"fmt " => {
                if !(16..=64).contains(&len) {
                    return Err(bad("fmt size"));
                }
                let mut fmt = vec![0u8; len as usize];
                r.read_exact(&mut fmt)
                    .await
                    .map_err(|_| bad("truncated fmt"))?;
                let format = u16::from_le_bytes([fmt[0], fmt[1]]);
                let channels = u16::from_le_bytes([fmt[2], fmt[3]]);
                let bits = u16::from_le_bytes([fmt[14], fmt[15]]);
                if format != 1 || channels != 1 || bits != 16 {
                    return Err(bad("not 16-bit mono PCM"));
                }
                rate = Some(u32::from_le_bytes([fmt[4], fmt[5], fmt[6], fmt[7]]));
            }
            _ => {
                if len > 1 << 20 {
                    return Err(bad("chunk too large"));
                }
                let mut skip = vec![0u8; len as usize + (len as usize & 1)];
                r.read_exact(&mut skip)
                    .await
                    .map_err(|_| bad("truncated"))?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::rms;
    use crate::voice::VoiceTarget;

    fn have_espeak() -> bool {
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
    async fn speaks_spanish_at_16k() {
        if !have_espeak() {
            return;
        }
        let mut req = TtsRequest::new(
            "Hola, gracias por llamar.",
            VoiceTarget {
                provider: "espeak".into(),
                identifier: String::new(),
            },
        );
        req.language = "es".into();
        let pcm = EspeakTts::new("espeak-ng")
            .synthesize(req)
            .collect()
            .await
            .unwrap();
        let secs = pcm.len() as f64 / 16_000.0;
        assert!((0.8..5.0).contains(&secs), "{secs}");
        assert!(rms(&pcm) > 300.0);
    }

    #[tokio::test]
    async fn unknown_voice_and_missing_binary_are_clear_errors() {
        if !have_espeak() {
            return;
        }
        let req = TtsRequest::new(
            "x",
            VoiceTarget {
                provider: "espeak".into(),
                identifier: "no-such-voice-zz".into(),
            },
        );
        let err = EspeakTts::new("espeak-ng")
            .synthesize(req.clone())
            .collect()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no-such-voice-zz"), "{err}");
        let mut req = req;
        req.voice.identifier = "en".into();
        let err = EspeakTts::new("/nonexistent/espeak-ng")
            .synthesize(req)
            .collect()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/espeak-ng"), "{err}");
    }
}
