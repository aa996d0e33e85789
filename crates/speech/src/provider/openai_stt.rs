//! OpenAI transcription: `POST {base}/audio/transcriptions` (multipart: `file` as WAV,
//! `model`, `language`, `prompt`, `response_format=json`), answered with `{"text": ...}`.
//! The API takes whole files, so audio is cut into utterances first (caller's VAD marks
//! or silence endpointing) and each utterance is one request.

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Deserialize;

use crate::audio::SAMPLE_RATE_HZ;
use crate::config::OpenAiSttConfig;
use crate::error::SpeechError;
use crate::provider::{http_error, reqwest_error};
use crate::segment::{UtteranceTranscriber, utterance_session};
use crate::stt::{SpeechToText, SttSession, SttSettings};

const PROVIDER: &str = "openai";

/// OpenAI transcription client.
#[derive(Debug, Clone)]
pub struct OpenAiStt {
    cfg: OpenAiSttConfig,
    defaults: SttSettings,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct TranscriptionBody {
    text: String,
}

impl OpenAiStt {
    /// A client; `defaults` are the session settings before any update.
    pub fn new(cfg: &OpenAiSttConfig, defaults: SttSettings, connect_timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(Duration::from_millis(cfg.request_timeout_ms))
            .build()
            .unwrap_or_default();
        Self {
            cfg: cfg.clone(),
            defaults,
            http,
        }
    }

    async fn request(&self, pcm: Vec<i16>, settings: SttSettings) -> Result<String, SpeechError> {
        let key = self
            .cfg
            .api_key
            .resolve()
            .ok_or(SpeechError::Unauthorized {
                provider: PROVIDER,
                status: 0,
            })?;
        let wav = wav_bytes(&pcm)?;
        let file = reqwest::multipart::Part::bytes(wav)
            .file_name("utterance.wav")
            .mime_str("audio/wav")
            .map_err(|e| reqwest_error(PROVIDER, &e))?;
        let mut form = reqwest::multipart::Form::new()
            .part("file", file)
            .text("model", self.cfg.model.clone())
            .text("response_format", "json");
        if let Some(lang) = settings.language.filter(|l| l != "multi") {
            form = form.text("language", lang);
        }
        if let Some(prompt) = settings.prompt {
            form = form.text("prompt", prompt);
        }
        let url = format!(
            "{}/audio/transcriptions",
            self.cfg.base_url.trim_end_matches('/')
        );
        let resp = self
            .http
            .post(url)
            .bearer_auth(key)
            .multipart(form)
            .send()
            .await
            .map_err(|e| self.transport(&e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.transport(&e))?;
        if !status.is_success() {
            return Err(http_error(PROVIDER, status.as_u16(), &text));
        }
        let body: TranscriptionBody =
            serde_json::from_str(&text).map_err(|e| SpeechError::Protocol {
                provider: PROVIDER,
                reason: format!("{e}: {}", text.chars().take(200).collect::<String>()),
            })?;
        Ok(body.text)
    }

    fn transport(&self, e: &reqwest::Error) -> SpeechError {
        if e.is_timeout() {
            SpeechError::Timeout {
                provider: PROVIDER,
                timeout: Duration::from_millis(self.cfg.request_timeout_ms),
            }
        } else {
            reqwest_error(PROVIDER, e)
        }
    }
}

fn wav_bytes(pcm: &[i16]) -> Result<Vec<u8>, SpeechError> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE_HZ,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut cur = Cursor::new(Vec::with_capacity(44 + pcm.len() * 2));
    {
        let mut w = hound::WavWriter::new(&mut cur, spec)?;
        for &s in pcm {
            w.write_sample(s)?;
        }
        w.finalize()?;
    }
    Ok(cur.into_inner())
}

impl UtteranceTranscriber for OpenAiStt {
    fn transcribe(
        &self,
        pcm: Vec<i16>,
        settings: &SttSettings,
    ) -> BoxFuture<'static, Result<String, SpeechError>> {
        let this = self.clone();
        let settings = settings.clone();
        Box::pin(async move { this.request(pcm, settings).await })
    }
}

impl SpeechToText for OpenAiStt {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn start(&self, settings: SttSettings) -> BoxFuture<'static, Result<SttSession, SpeechError>> {
        let mut current = self.defaults.clone();
        current.merge(&settings);
        let session = utterance_session(Arc::new(self.clone()), current);
        Box::pin(async move { Ok(session) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiKey;
    use crate::failover::FailoverStt;
    use crate::provider::testserver::{HttpReply, HttpServer};
    use crate::stt::SttEvent;

    fn client(base: &str, timeout_ms: u64) -> Arc<dyn SpeechToText> {
        let cfg = OpenAiSttConfig {
            api_key: ApiKey::literal("sk-t"),
            base_url: base.into(),
            model: "gpt-4o-mini-transcribe".into(),
            request_timeout_ms: timeout_ms,
        };
        let defaults = SttSettings {
            language: Some("en".into()),
            prompt: Some("a call to a dentist".into()),
            endpointing: None,
        };
        Arc::new(OpenAiStt::new(&cfg, defaults, Duration::from_secs(2)))
    }

    /// 0.5 s of silence, 1 s of "speech" (a loud tone), 0.2 s of silence.
    async fn speak(s: &SttSession) {
        for i in 0..85 {
            let loud = (25..75).contains(&i);
            let frame: Vec<i16> = (0..320)
                .map(|n| {
                    if loud {
                        if n % 20 < 10 { 4000 } else { -4000 }
                    } else {
                        0
                    }
                })
                .collect();
            assert!(s.send_audio(frame).await);
        }
        assert!(s.end_utterance());
    }

    fn multipart_field(body: &[u8], name: &str) -> Option<String> {
        let text = String::from_utf8_lossy(body);
        let marker = format!("name=\"{name}\"");
        let at = text.find(&marker)?;
        let rest = &text[at..];
        let start = rest.find("\r\n\r\n")? + 4;
        let end = rest[start..].find("\r\n")?;
        Some(rest[start..start + end].to_string())
    }

    #[tokio::test]
    async fn utterance_request_follows_the_documented_form() {
        let server = HttpServer::start(vec![HttpReply::full(
            200,
            br#"{"text":"I need an appointment."}"#.to_vec(),
        )])
        .await;
        let mut s = client(&server.base_url(), 2_000)
            .start(SttSettings::default())
            .await
            .unwrap();
        speak(&s).await;
        let ev = s.next_event().await.unwrap().unwrap();
        let SttEvent::Final(t) = ev else {
            panic!("{ev:?}")
        };
        assert_eq!(t.text, "I need an appointment.");
        assert_eq!(t.start, Duration::from_millis(200), "pre-roll of 300 ms");
        let r = &server.requests().await[0];
        assert_eq!(r.path, "/v1/audio/transcriptions");
        assert_eq!(r.header("authorization").as_deref(), Some("Bearer sk-t"));
        assert!(
            r.header("content-type")
                .unwrap()
                .starts_with("multipart/form-data")
        );
        assert_eq!(
            multipart_field(&r.body, "model").as_deref(),
            Some("gpt-4o-mini-transcribe")
        );
        assert_eq!(multipart_field(&r.body, "language").as_deref(), Some("en"));
        assert_eq!(
            multipart_field(&r.body, "prompt").as_deref(),
            Some("a call to a dentist")
        );
        let wav_at = String::from_utf8_lossy(&r.body)
            .find("RIFF")
            .expect("a WAV file part");
        assert_eq!(&r.body[wav_at + 8..wav_at + 12], b"WAVE");
    }

    #[tokio::test]
    async fn failover_on_401_and_slow_answer_keeps_the_utterance() {
        for (name, reply) in [
            ("401", HttpReply::full(401, br#"{"error":{"message":"Incorrect API key provided","code":"invalid_api_key"}}"#.to_vec())),
            ("slow", HttpReply::full(200, br#"{"text":"late"}"#.to_vec()).delay(Duration::from_secs(3))),
            ("cut", HttpReply::chunked(200, vec![b"{\"te".to_vec()]).cut_off()),
        ] {
            let primary = HttpServer::start(vec![reply]).await;
            let backup = HttpServer::start(vec![HttpReply::full(200, br#"{"text":"hello"}"#.to_vec())]).await;
            let stt = FailoverStt::new(vec![client(&primary.base_url(), 500), client(&backup.base_url(), 2_000)]);
            let s = stt.start(SttSettings::default()).await.unwrap();
            speak(&s).await;
            let text = tokio::time::timeout(Duration::from_secs(5), s.finish().final_text()).await.unwrap().unwrap();
            assert_eq!(text, "hello", "{name}");
            let got = backup.requests().await;
            assert_eq!(got.len(), 1, "{name}");
            // The backup received the whole utterance: at least what the primary got (it
            // may carry up to 100 ms more trailing silence, as replay comes in bigger
            // chunks and early transcription starts at a chunk boundary).
            let sent = primary.requests().await[0].body.len();
            let diff = got[0].body.len() as i64 - sent as i64;
            assert!((-200..3_400).contains(&diff), "{name}: {} vs {sent}", got[0].body.len());
        }
    }
}
