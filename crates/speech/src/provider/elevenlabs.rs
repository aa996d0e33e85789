//! ElevenLabs streaming TTS over WebSocket
//! (`/v1/text-to-speech/{voice_id}/stream-input?model_id=..&output_format=pcm_16000`).
//!
//! Wire protocol as documented: the key goes in the `xi-api-key` header; the first
//! message opens the stream with `{"text": " ", "voice_settings": {..}}`, text follows as
//! `{"text": "... ", "flush": true}` (ending with a space), and `{"text": ""}` ends it.
//! The server answers with `{"audio": "<base64 PCM>", "isFinal": ..}` messages and a
//! last `{"isFinal": true}`; errors come as `{"message", "error"}` and/or a close frame.

use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::config::ElevenLabsConfig;
use crate::error::SpeechError;
use crate::provider::http_error;
use crate::tts::{TextToSpeech, TtsRequest, TtsSink, TtsStream};

const PROVIDER: &str = "elevenlabs";

/// ElevenLabs WebSocket text-to-speech client.
#[derive(Debug, Clone)]
pub struct ElevenLabsTts {
    cfg: ElevenLabsConfig,
}

impl ElevenLabsTts {
    /// A client for `cfg`.
    pub fn new(cfg: &ElevenLabsConfig) -> Self {
        Self { cfg: cfg.clone() }
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
            self.cfg.default_voice.as_str()
        } else {
            req.voice.identifier.as_str()
        };
        let mut url = url::Url::parse(&format!(
            "{}/text-to-speech/{voice}/stream-input",
            self.cfg.base_url.trim_end_matches('/')
        ))
        .map_err(|e| SpeechError::Connect {
            provider: PROVIDER,
            reason: format!("bad url: {e}"),
        })?;
        url.query_pairs_mut()
            .append_pair("model_id", req.model.as_deref().unwrap_or(&self.cfg.model))
            .append_pair("output_format", "pcm_16000")
            .append_pair("language_code", &req.language);
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| SpeechError::Connect {
                provider: PROVIDER,
                reason: e.to_string(),
            })?;
        request.headers_mut().insert(
            "xi-api-key",
            key.parse().map_err(|_| {
                SpeechError::Config(vec![
                    "tts elevenlabs api_key: not a valid header value".into(),
                ])
            })?,
        );
        let connect = tokio::time::timeout(
            Duration::from_millis(self.cfg.connect_timeout_ms),
            tokio_tungstenite::connect_async(request),
        );
        let mut ws = match connect.await {
            Err(_) => {
                return Err(SpeechError::Timeout {
                    provider: PROVIDER,
                    timeout: Duration::from_millis(self.cfg.connect_timeout_ms),
                });
            }
            Ok(Err(tungstenite::Error::Http(resp))) => {
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).to_string())
                    .unwrap_or_default();
                return Err(http_error(PROVIDER, resp.status().as_u16(), &body));
            }
            Ok(Err(e)) => {
                return Err(SpeechError::Connect {
                    provider: PROVIDER,
                    reason: e.to_string(),
                });
            }
            Ok(Ok((ws, _))) => ws,
        };
        let mut text = req.text.trim().to_string();
        text.push(' ');
        let messages = [
            json!({"text": " ", "voice_settings": {"stability": 0.5, "similarity_boost": 0.8, "speed": req.speed.clamp(0.7, 1.2)}}),
            json!({"text": text, "flush": true}),
            json!({"text": ""}),
        ];
        for m in messages {
            ws.send(Message::Text(m.to_string().into()))
                .await
                .map_err(disconnected)?;
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        while let Some(msg) = ws.next().await {
            match msg.map_err(disconnected)? {
                Message::Text(t) => {
                    let v: serde_json::Value =
                        serde_json::from_str(&t).map_err(|e| SpeechError::Protocol {
                            provider: PROVIDER,
                            reason: e.to_string(),
                        })?;
                    if let Some(err) = v.get("error").or_else(|| v.get("message")) {
                        let err = err.as_str().unwrap_or_default().to_string();
                        return Err(error_message(&err));
                    }
                    if let Some(audio) = v.get("audio").and_then(|a| a.as_str()) {
                        let bytes = b64.decode(audio).map_err(|e| SpeechError::Protocol {
                            provider: PROVIDER,
                            reason: format!("audio is not base64: {e}"),
                        })?;
                        let mut carry = None;
                        sink.send(crate::audio::le_bytes_to_pcm(&bytes, &mut carry))
                            .await?;
                    }
                    if v.get("isFinal").and_then(|f| f.as_bool()) == Some(true) {
                        let _ = ws.close(None).await;
                        return Ok(());
                    }
                }
                Message::Close(frame) => {
                    let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                    return Err(error_message(&format!("closed before the end: {reason}")));
                }
                _ => {}
            }
        }
        Err(SpeechError::Disconnected {
            provider: PROVIDER,
            reason: "connection ended before isFinal".into(),
        })
    }
}

fn error_message(msg: &str) -> SpeechError {
    let lower = msg.to_ascii_lowercase();
    if lower.contains("api key") || lower.contains("api_key") || lower.contains("auth") {
        SpeechError::Unauthorized {
            provider: PROVIDER,
            status: 401,
        }
    } else {
        SpeechError::Disconnected {
            provider: PROVIDER,
            reason: msg.to_string(),
        }
    }
}

fn disconnected(e: tungstenite::Error) -> SpeechError {
    SpeechError::Disconnected {
        provider: PROVIDER,
        reason: e.to_string(),
    }
}

impl TextToSpeech for ElevenLabsTts {
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
// The handshake callback's error type is tungstenite's, not ours to shrink.
#[allow(clippy::result_large_err)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

    use super::*;
    use crate::config::ApiKey;
    use crate::voice::VoiceTarget;

    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        Speak,
        Reject401,
        /// Sends an auth error message, as the service does for a bad key in-band.
        AuthMessage,
        DropAfterFirstAudio,
        /// Accepts the stream, never sends audio.
        Silent,
    }

    #[derive(Default)]
    struct Log {
        paths: Vec<String>,
        keys: Vec<String>,
        texts: Vec<serde_json::Value>,
    }

    async fn server(mode: Mode) -> (String, Arc<Mutex<Log>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("ws://{}/v1", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Log::default()));
        let l = log.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let l = l.clone();
                tokio::spawn(async move {
                    let l2 = l.clone();
                    let cb =
                        move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
                            let mut g = l2.lock().unwrap();
                            g.paths.push(req.uri().to_string());
                            g.keys.push(
                                req.headers()
                                    .get("xi-api-key")
                                    .map(|v| v.to_str().unwrap().to_string())
                                    .unwrap_or_default(),
                            );
                            if mode == Mode::Reject401 {
                                let mut e = ErrorResponse::new(Some("invalid api key".into()));
                                *e.status_mut() = tungstenite::http::StatusCode::UNAUTHORIZED;
                                return Err(e);
                            }
                            Ok(resp)
                        };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(sock, cb).await else {
                        return;
                    };
                    let b64 = base64::engine::general_purpose::STANDARD;
                    while let Some(Ok(Message::Text(t))) = ws.next().await {
                        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                        l.lock().unwrap().texts.push(v.clone());
                        let text = v["text"].as_str().unwrap().to_string();
                        if mode == Mode::Silent {
                            continue;
                        }
                        if mode == Mode::AuthMessage {
                            let _ = ws.send(Message::Text(r#"{"message":"Invalid API key","error":"auth_error","code":1008}"#.into())).await;
                            let _ = ws.close(None).await;
                            return;
                        }
                        if text.trim().is_empty() && !text.is_empty() {
                            continue; // stream opened
                        }
                        if !text.is_empty() {
                            // 0.25 s of audio per chunk, two chunks.
                            for _ in 0..2 {
                                let pcm: Vec<u8> =
                                    (0..4000i16).flat_map(|s| s.to_le_bytes()).collect();
                                let msg = json!({"audio": b64.encode(pcm), "isFinal": null, "normalizedAlignment": null});
                                let _ = ws.send(Message::Text(msg.to_string().into())).await;
                                if mode == Mode::DropAfterFirstAudio {
                                    return;
                                }
                            }
                        } else {
                            let _ = ws.send(Message::Text(r#"{"isFinal":true}"#.into())).await;
                        }
                    }
                });
            }
        });
        (base, log)
    }

    fn tts(base: &str) -> ElevenLabsTts {
        ElevenLabsTts::new(&ElevenLabsConfig {
            api_key: ApiKey::literal("xi-k"),
            base_url: base.into(),
            model: "eleven_flash_v2_5".into(),
            default_voice: "21m00Tcm4TlvDq8ikWAM".into(),
            connect_timeout_ms: 2_000,
        })
    }

    fn req() -> TtsRequest {
        TtsRequest::new(
            "Hello there.",
            VoiceTarget {
                provider: "elevenlabs".into(),
                identifier: "voice123".into(),
            },
        )
    }

    #[tokio::test]
    async fn documented_stream_input_exchange() {
        let (base, log) = server(Mode::Speak).await;
        let pcm = tts(&base).synthesize(req()).collect().await.unwrap();
        assert_eq!(pcm.len(), 8_000);
        let g = log.lock().unwrap();
        assert!(
            g.paths[0].starts_with("/v1/text-to-speech/voice123/stream-input?"),
            "{}",
            g.paths[0]
        );
        assert!(
            g.paths[0].contains("output_format=pcm_16000")
                && g.paths[0].contains("model_id=eleven_flash_v2_5")
        );
        assert_eq!(g.keys[0], "xi-k");
        assert_eq!(g.texts[0]["text"], " ");
        assert!(g.texts[0]["voice_settings"].is_object());
        assert_eq!(g.texts[1]["text"], "Hello there. ");
        assert_eq!(g.texts[2]["text"], "");
    }

    #[tokio::test]
    async fn silent_server_times_out_and_fails_over() {
        use crate::cache::SynthesisCache;
        use crate::config::TtsConfig;
        use crate::provider::testserver::Named;
        use crate::service::{SpeakRequest, TtsService};

        let (silent, _) = server(Mode::Silent).await;
        let (good, log) = server(Mode::Speak).await;
        let cfg = TtsConfig {
            providers: vec![],
            default_voice: "v".into(),
            voices: [(
                "v".to_string(),
                VoiceTarget {
                    provider: "elevenlabs".into(),
                    identifier: "voice123".into(),
                },
            )]
            .into(),
            first_chunk_timeout_ms: 300,
        };
        let engines: Vec<Arc<dyn TextToSpeech>> = vec![
            Arc::new(tts(&silent)),
            Arc::new(Named("el-backup", tts(&good))),
        ];
        let svc = TtsService::with_engines(cfg, engines, SynthesisCache::new(0));
        let t0 = std::time::Instant::now();
        let pcm = svc
            .speak(SpeakRequest::new("Hello there."))
            .collect()
            .await
            .unwrap();
        assert_eq!(pcm.len(), 8_000);
        assert!(t0.elapsed() < Duration::from_secs(2));
        // The backup used its default voice.
        assert!(log.lock().unwrap().paths[0].contains("/21m00Tcm4TlvDq8ikWAM/"));
    }

    #[tokio::test]
    async fn bad_key_and_disconnect() {
        for mode in [Mode::Reject401, Mode::AuthMessage] {
            let (base, _) = server(mode).await;
            let err = tts(&base).synthesize(req()).collect().await.unwrap_err();
            assert!(matches!(err, SpeechError::Unauthorized { .. }), "{err}");
        }
        let (base, _) = server(Mode::DropAfterFirstAudio).await;
        let mut s = tts(&base).synthesize(req());
        assert!(s.next_chunk().await.unwrap().is_ok());
        let err = s.next_chunk().await.unwrap().unwrap_err();
        assert!(matches!(err, SpeechError::Disconnected { .. }), "{err}");
    }
}
