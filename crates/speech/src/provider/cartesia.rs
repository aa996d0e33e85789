//! Cartesia TTS over HTTP streaming: `POST {base}/tts/bytes` with a raw `pcm_s16le`
//! 16 kHz output format; the body streams back as the audio is generated.
//! Headers: `X-API-Key`, `Cartesia-Version`. The request's speed and instructions are
//! not sent (not part of this endpoint's documented body).

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;

use crate::config::CartesiaConfig;
use crate::error::SpeechError;
use crate::provider::{http_error, reqwest_error};
use crate::tts::{TextToSpeech, TtsRequest, TtsSink, TtsStream};

const PROVIDER: &str = "cartesia";

/// Cartesia text-to-speech client.
#[derive(Debug, Clone)]
pub struct CartesiaTts {
    cfg: CartesiaConfig,
    http: reqwest::Client,
}

impl CartesiaTts {
    /// A client for `cfg`.
    pub fn new(cfg: &CartesiaConfig) -> Self {
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
            self.cfg.default_voice.clone().ok_or_else(|| {
                SpeechError::Unsupported("cartesia: no voice id given and no default_voice".into())
            })?
        } else {
            req.voice.identifier.clone()
        };
        let body = json!({
            "model_id": req.model.as_deref().unwrap_or(&self.cfg.model),
            "transcript": req.text,
            "voice": {"mode": "id", "id": voice},
            "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 16000},
            "language": req.language,
        });
        let url = format!("{}/tts/bytes", self.cfg.base_url.trim_end_matches('/'));
        let resp = self
            .http
            .post(url)
            .header("X-API-Key", key)
            .header("Cartesia-Version", &self.cfg.version)
            .json(&body)
            .send()
            .await
            .map_err(|e| reqwest_error(PROVIDER, &e))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(http_error(PROVIDER, status.as_u16(), &text));
        }
        let mut carry: Option<u8> = None;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| reqwest_error(PROVIDER, &e))?;
            let pcm = crate::audio::le_bytes_to_pcm(&chunk, &mut carry);
            sink.send(pcm).await?;
        }
        Ok(())
    }
}

impl TextToSpeech for CartesiaTts {
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
    use super::*;
    use crate::config::ApiKey;
    use crate::provider::testserver::{HttpReply, HttpServer};
    use crate::voice::VoiceTarget;

    fn tts(base: &str) -> CartesiaTts {
        CartesiaTts::new(&CartesiaConfig {
            api_key: ApiKey::literal("ck"),
            base_url: base.into(),
            model: "sonic-2".into(),
            version: "2024-06-10".into(),
            default_voice: None,
        })
    }

    fn req(voice: &str) -> TtsRequest {
        TtsRequest::new(
            "Hi there.",
            VoiceTarget {
                provider: "cartesia".into(),
                identifier: voice.into(),
            },
        )
    }

    #[tokio::test]
    async fn streams_raw_pcm_with_documented_request() {
        // Odd-sized chunks: samples split across chunk boundaries.
        let bytes: Vec<u8> = (0..1600i16).flat_map(|s| s.to_le_bytes()).collect();
        let server = HttpServer::start(vec![HttpReply::chunked(
            200,
            bytes.chunks(333).map(<[u8]>::to_vec).collect(),
        )])
        .await;
        let base = server.base_url();
        let pcm = tts(base.trim_end_matches("/v1"))
            .synthesize(req("voice-uuid"))
            .collect()
            .await
            .unwrap();
        assert_eq!(pcm, (0..1600i16).collect::<Vec<_>>());
        let r = &server.requests().await[0];
        assert_eq!(r.path, "/tts/bytes");
        assert_eq!(r.header("x-api-key").as_deref(), Some("ck"));
        assert_eq!(r.header("cartesia-version").as_deref(), Some("2024-06-10"));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["voice"]["id"], "voice-uuid");
        assert_eq!(body["output_format"]["encoding"], "pcm_s16le");
        assert_eq!(body["output_format"]["sample_rate"], 16000);
        assert_eq!(body["transcript"], "Hi there.");
    }

    #[tokio::test]
    async fn slow_first_byte_times_out_and_fails_over() {
        use std::sync::Arc;

        use crate::cache::SynthesisCache;
        use crate::config::TtsConfig;
        use crate::provider::testserver::Named;
        use crate::service::{SpeakRequest, TtsService};

        let slow = HttpServer::start(vec![
            HttpReply::chunked(200, vec![vec![1u8; 3200]]).delay(Duration::from_secs(3)),
        ])
        .await;
        let fast = HttpServer::start(vec![HttpReply::chunked(200, vec![vec![1u8; 3200]])]).await;
        let cfg = TtsConfig {
            providers: vec![],
            default_voice: "v".into(),
            voices: [(
                "v".to_string(),
                VoiceTarget {
                    provider: "cartesia".into(),
                    identifier: "uuid".into(),
                },
            )]
            .into(),
            first_chunk_timeout_ms: 300,
        };
        let mut backup = tts(fast.base_url().trim_end_matches("/v1"));
        backup.cfg.default_voice = Some("backup-voice".into());
        let engines: Vec<Arc<dyn TextToSpeech>> = vec![
            Arc::new(tts(slow.base_url().trim_end_matches("/v1"))),
            Arc::new(Named("cartesia-backup", backup)),
        ];
        let svc = TtsService::with_engines(cfg, engines, SynthesisCache::new(0));
        let t0 = std::time::Instant::now();
        let pcm = svc
            .speak(SpeakRequest::new("Hi there."))
            .collect()
            .await
            .unwrap();
        assert_eq!(pcm.len(), 1600);
        assert!(t0.elapsed() < Duration::from_secs(2));
        let body: serde_json::Value =
            serde_json::from_slice(&fast.requests().await[0].body).unwrap();
        assert_eq!(body["voice"]["id"], "backup-voice");
    }

    #[tokio::test]
    async fn errors_401_disconnect_and_missing_voice() {
        let server = HttpServer::start(vec![
            HttpReply::full(401, br#"{"error":"Invalid API key"}"#.to_vec()),
            HttpReply::chunked(200, vec![vec![0u8; 640]]).cut_off(),
        ])
        .await;
        let base = server.base_url().trim_end_matches("/v1").to_string();
        let err = tts(&base).synthesize(req("v")).collect().await.unwrap_err();
        assert!(
            matches!(err, SpeechError::Unauthorized { status: 401, .. }),
            "{err}"
        );
        let err = tts(&base).synthesize(req("v")).collect().await.unwrap_err();
        assert!(matches!(err, SpeechError::Disconnected { .. }), "{err}");
        let err = tts(&base).synthesize(req("")).collect().await.unwrap_err();
        assert!(matches!(err, SpeechError::Unsupported(_)), "{err}");
    }
}
