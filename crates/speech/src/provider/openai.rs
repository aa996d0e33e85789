//! OpenAI speech: `POST {base}/audio/speech` with `response_format: "pcm"`, which answers
//! with raw 24 kHz 16-bit little-endian mono PCM, streamed as it is generated; it is
//! resampled to 16 kHz as it arrives. Voice, speed and instructions are sent; the
//! language is not (the model reads it from the text).

use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;

use crate::audio::{Resampler, SAMPLE_RATE_HZ};
use crate::config::OpenAiTtsConfig;
use crate::error::SpeechError;
use crate::provider::{http_error, reqwest_error};
use crate::tts::{TextToSpeech, TtsRequest, TtsSink, TtsStream};

const PROVIDER: &str = "openai";
/// OpenAI's PCM output rate.
const OPENAI_PCM_HZ: u32 = 24_000;
/// Voice used when a request names none (VoiceRun's default).
const DEFAULT_VOICE: &str = "nova";

/// OpenAI text-to-speech client.
#[derive(Debug, Clone)]
pub struct OpenAiTts {
    cfg: OpenAiTtsConfig,
    http: reqwest::Client,
}

#[derive(Serialize)]
struct SpeechBody<'a> {
    model: &'a str,
    input: &'a str,
    voice: &'a str,
    response_format: &'static str,
    speed: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    instructions: Option<&'a str>,
}

impl OpenAiTts {
    /// A client for `cfg`.
    pub fn new(cfg: &OpenAiTtsConfig) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            cfg: cfg.clone(),
            http,
        }
    }

    async fn run(&self, req: &TtsRequest, sink: &TtsSink) -> Result<(), SpeechError> {
        let key = self
            .cfg
            .api_key
            .resolve()
            .ok_or(SpeechError::Unauthorized {
                provider: PROVIDER,
                status: 0,
            })?;
        let voice = if req.voice.identifier.is_empty() {
            DEFAULT_VOICE
        } else {
            req.voice.identifier.as_str()
        };
        let body = SpeechBody {
            model: req.model.as_deref().unwrap_or(&self.cfg.model),
            input: &req.text,
            voice,
            response_format: "pcm",
            speed: req.speed.clamp(0.25, 4.0),
            instructions: req.instructions.as_deref().filter(|s| !s.is_empty()),
        };
        let url = format!("{}/audio/speech", self.cfg.base_url.trim_end_matches('/'));
        let resp = self
            .http
            .post(url)
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .map_err(|e| reqwest_error(PROVIDER, &e))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(http_error(PROVIDER, status.as_u16(), &text));
        }
        let mut resampler = Resampler::new(OPENAI_PCM_HZ, SAMPLE_RATE_HZ);
        let mut carry: Option<u8> = None;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| reqwest_error(PROVIDER, &e))?;
            let samples = crate::audio::le_bytes_to_pcm(&chunk, &mut carry);
            let mut out = Vec::with_capacity(samples.len());
            resampler.process(&samples, &mut out);
            sink.send(out).await?;
        }
        let mut out = Vec::new();
        resampler.finish(&mut out);
        sink.send(out).await
    }
}

impl TextToSpeech for OpenAiTts {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn synthesize(&self, req: TtsRequest) -> TtsStream {
        let (stream, sink) = TtsStream::channel();
        let this = self.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = this.run(&req, &sink).await {
                sink.fail(e).await;
            }
        });
        stream.with_task(task.abort_handle())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::cache::SynthesisCache;
    use crate::config::{ApiKey, TtsConfig};
    use crate::provider::testserver::{HttpReply, HttpServer, Named};
    use crate::service::{SpeakRequest, TtsService};
    use crate::voice::VoiceTarget;

    fn cfg(base: &str, key: &str) -> OpenAiTtsConfig {
        OpenAiTtsConfig {
            api_key: ApiKey::literal(key),
            base_url: base.into(),
            model: "gpt-4o-mini-tts".into(),
        }
    }

    fn pcm24k(ms: usize) -> Vec<u8> {
        (0..24 * ms)
            .flat_map(|i| ((((i as f64) * 0.1).sin() * 8000.0) as i16).to_le_bytes())
            .collect()
    }

    fn req(text: &str) -> TtsRequest {
        TtsRequest::new(
            text,
            VoiceTarget {
                provider: "openai".into(),
                identifier: "coral".into(),
            },
        )
    }

    #[tokio::test]
    async fn streams_pcm_and_sends_documented_request() {
        let audio = pcm24k(600);
        let server = HttpServer::start(vec![HttpReply::chunked(
            200,
            audio.chunks(4801).map(<[u8]>::to_vec).collect(),
        )])
        .await;
        let tts = OpenAiTts::new(&cfg(&server.base_url(), "sk-good"));
        let mut r = req("Hello there.");
        r.instructions = Some("cheerful".into());
        let pcm = tts.synthesize(r).collect().await.unwrap();
        // 600 ms at 16 kHz.
        assert!((pcm.len() as i64 - 9_600).abs() < 40, "{}", pcm.len());
        let seen = server.requests().await;
        assert_eq!(seen.len(), 1);
        let r = &seen[0];
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/v1/audio/speech");
        assert_eq!(r.header("authorization").as_deref(), Some("Bearer sk-good"));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["voice"], "coral");
        assert_eq!(body["input"], "Hello there.");
        assert_eq!(body["response_format"], "pcm");
        assert_eq!(body["model"], "gpt-4o-mini-tts");
        assert_eq!(body["instructions"], "cheerful");
    }

    #[tokio::test]
    async fn bad_key_is_unauthorized() {
        let server = HttpServer::start(vec![HttpReply::full(
            401,
            br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#.to_vec(),
        )])
        .await;
        let err = OpenAiTts::new(&cfg(&server.base_url(), "sk-bad"))
            .synthesize(req("hi"))
            .collect()
            .await
            .unwrap_err();
        assert!(
            matches!(err, SpeechError::Unauthorized { status: 401, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn disconnect_mid_stream_is_an_error() {
        let server =
            HttpServer::start(vec![HttpReply::chunked(200, vec![pcm24k(100)]).cut_off()]).await;
        let mut s = OpenAiTts::new(&cfg(&server.base_url(), "k")).synthesize(req("hi"));
        let mut got_audio = false;
        let err = loop {
            match s.next_chunk().await {
                Some(Ok(_)) => got_audio = true,
                Some(Err(e)) => break e,
                None => panic!("stream ended cleanly after a cut-off"),
            }
        };
        assert!(got_audio);
        assert!(matches!(err, SpeechError::Disconnected { .. }), "{err}");
    }

    fn service(primary: &str, secondary: &str, timeout_ms: u64) -> TtsService {
        let tts_cfg = TtsConfig {
            providers: vec![],
            default_voice: "nova".into(),
            voices: [(
                "nova".to_string(),
                VoiceTarget {
                    provider: "openai".into(),
                    identifier: "nova".into(),
                },
            )]
            .into(),
            first_chunk_timeout_ms: timeout_ms,
        };
        let engines: Vec<Arc<dyn crate::tts::TextToSpeech>> = vec![
            Arc::new(OpenAiTts::new(&cfg(primary, "k"))),
            Arc::new(Named("backup", OpenAiTts::new(&cfg(secondary, "k")))),
        ];
        TtsService::with_engines(tts_cfg, engines, SynthesisCache::new(1 << 20))
    }

    #[tokio::test]
    async fn failover_on_401_disconnect_and_slow_first_byte_loses_no_sentence() {
        let two_sentences = "First sentence here. Second one.";
        for (name, primary_reply) in [
            ("401", HttpReply::full(401, b"{}".to_vec())),
            ("cut", HttpReply::chunked(200, vec![pcm24k(50)]).cut_off()),
            (
                "slow",
                HttpReply::chunked(200, vec![pcm24k(50)]).delay(Duration::from_secs(3)),
            ),
        ] {
            let primary = HttpServer::start(vec![primary_reply]).await;
            let backup = HttpServer::start(vec![
                HttpReply::chunked(200, vec![pcm24k(300)]),
                HttpReply::chunked(200, vec![pcm24k(200)]),
            ])
            .await;
            let svc = service(&primary.base_url(), &backup.base_url(), 500);
            let started = std::time::Instant::now();
            let pcm = svc
                .speak(SpeakRequest::new(two_sentences))
                .collect()
                .await
                .unwrap();
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{name}: timeout applied"
            );
            let inputs: Vec<String> = backup
                .requests()
                .await
                .iter()
                .map(|r| {
                    serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["input"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect();
            assert_eq!(inputs, ["First sentence here.", "Second one."], "{name}");
            // Backup audio: 500 ms = 8000 samples (plus any partial from the primary).
            assert!(pcm.len() >= 7_960, "{name}: {}", pcm.len());
            assert_eq!(
                primary.requests().await.len(),
                1,
                "{name}: primary dropped after failing"
            );
        }
    }

    #[tokio::test]
    async fn cache_serves_repeat_without_a_request() {
        let primary = HttpServer::start(vec![HttpReply::chunked(200, vec![pcm24k(300)])]).await;
        let svc = service(&primary.base_url(), "http://127.0.0.1:9/v1", 2000);
        let a = svc
            .speak(SpeakRequest::new("Hello."))
            .collect()
            .await
            .unwrap();
        let b = svc
            .speak(SpeakRequest::new("Hello."))
            .collect()
            .await
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(primary.requests().await.len(), 1);
        assert_eq!(svc.cache().stats().0, 1);
        // cache=false bypasses it: the server has no reply left, so this fails over
        // to an unreachable backup and errors.
        let mut no_cache = SpeakRequest::new("Hello.");
        no_cache.cache = false;
        assert!(svc.speak(no_cache).collect().await.is_err());
    }
}
