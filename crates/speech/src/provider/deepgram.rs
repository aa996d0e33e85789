//! Deepgram live transcription over WebSocket (`/v1/listen`).
//!
//! Wire protocol, as documented by Deepgram: the query string carries the settings
//! (`encoding=linear16&sample_rate=16000&channels=1&interim_results=true&endpointing=MS`
//! ...), the `Authorization: Token KEY` header the key. Audio goes up as binary frames;
//! control as JSON text frames: `{"type":"KeepAlive"}` while no audio flows,
//! `{"type":"Finalize"}` to flush the current utterance, `{"type":"CloseStream"}` to end.
//! `Results` messages come down with `is_final` (this stretch will not change) and
//! `speech_final` (the endpointer saw the end of speech); `UtteranceEnd` marks a gap
//! after the last word.
//!
//! Settings cannot change on an open socket, so an update reconnects between
//! utterances' audio: the old stream is closed (its last results still delivered) and a
//! new one opened with the new query.

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::config::DeepgramConfig;
use crate::error::SpeechError;
use crate::stt::{
    SpeechToText, SttEvent, SttInput, SttSession, SttSettings, SttWorker, Transcript,
    samples_to_duration,
};

const PROVIDER: &str = "deepgram";

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Deepgram streaming STT client.
#[derive(Debug, Clone)]
pub struct DeepgramStt {
    cfg: DeepgramConfig,
    defaults: SttSettings,
    connect_timeout: Duration,
}

impl DeepgramStt {
    /// A client; `defaults` are the session settings before any update.
    pub fn new(cfg: &DeepgramConfig, defaults: SttSettings, connect_timeout: Duration) -> Self {
        Self {
            cfg: cfg.clone(),
            defaults,
            connect_timeout,
        }
    }

    fn url(&self, s: &SttSettings) -> Result<url::Url, SpeechError> {
        let mut url = url::Url::parse(&self.cfg.base_url).map_err(|e| SpeechError::Connect {
            provider: PROVIDER,
            reason: format!("bad base_url: {e}"),
        })?;
        let endpointing = s.endpointing.map_or(300, |e| e.silence_ms());
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("model", &self.cfg.model)
                .append_pair("encoding", "linear16")
                .append_pair("sample_rate", "16000")
                .append_pair("channels", "1")
                .append_pair("interim_results", "true")
                .append_pair("punctuate", "true")
                .append_pair("smart_format", "true")
                .append_pair("vad_events", "true")
                .append_pair("utterance_end_ms", "1000")
                .append_pair("endpointing", &endpointing.to_string());
            if let Some(lang) = &s.language {
                q.append_pair("language", lang);
            }
        }
        Ok(url)
    }

    async fn connect(&self, s: &SttSettings) -> Result<Ws, SpeechError> {
        let key = self
            .cfg
            .api_key
            .resolve()
            .ok_or(SpeechError::Unauthorized {
                provider: PROVIDER,
                status: 0,
            })?;
        let mut request =
            self.url(s)?
                .as_str()
                .into_client_request()
                .map_err(|e| SpeechError::Connect {
                    provider: PROVIDER,
                    reason: e.to_string(),
                })?;
        let auth = format!("Token {key}").parse().map_err(|_| {
            SpeechError::Config(vec![
                "stt deepgram api_key: not a valid header value".into(),
            ])
        })?;
        request.headers_mut().insert("Authorization", auth);
        let connect = tokio_tungstenite::connect_async(request);
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Err(_) => Err(SpeechError::Timeout {
                provider: PROVIDER,
                timeout: self.connect_timeout,
            }),
            Ok(Err(tungstenite::Error::Http(resp))) => {
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).to_string())
                    .unwrap_or_default();
                Err(crate::provider::http_error(
                    PROVIDER,
                    resp.status().as_u16(),
                    &body,
                ))
            }
            Ok(Err(e)) => Err(SpeechError::Connect {
                provider: PROVIDER,
                reason: e.to_string(),
            }),
            Ok(Ok((ws, _))) => Ok(ws),
        }
    }
}

impl SpeechToText for DeepgramStt {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn start(&self, settings: SttSettings) -> BoxFuture<'static, Result<SttSession, SpeechError>> {
        let this = self.clone();
        Box::pin(async move {
            let mut current = this.defaults.clone();
            current.merge(&settings);
            let ws = this.connect(&current).await?;
            let (session, worker) = SttSession::channel();
            tokio::spawn(async move {
                let mut run = Run {
                    client: this,
                    settings: current,
                    worker,
                    utterance: Utterance::default(),
                    sent_samples: 0,
                    base_samples: 0,
                };
                if let Err(e) = run.drive(ws).await {
                    let _ = run.worker.events.send(Err(e)).await;
                }
            });
            Ok(session)
        })
    }
}

/// Final stretches of the utterance in progress.
#[derive(Debug, Default)]
struct Utterance {
    parts: Vec<String>,
    start: Option<f64>,
    end: f64,
    confidence: Option<f32>,
    language: Option<String>,
}

struct Run {
    client: DeepgramStt,
    settings: SttSettings,
    worker: SttWorker,
    utterance: Utterance,
    /// Samples sent on all sockets so far.
    sent_samples: u64,
    /// Samples sent before the current socket opened (its time zero).
    base_samples: u64,
}

enum Next {
    /// The caller finished: close the stream, drain, end.
    Finish,
    /// Reconnect with new settings.
    Reconnect,
}

impl Run {
    async fn drive(&mut self, mut ws: Ws) -> Result<(), SpeechError> {
        loop {
            let next = self.pump(&mut ws).await?;
            // Close this stream and take its last results.
            send_json(&mut ws, r#"{"type":"CloseStream"}"#).await?;
            while let Some(msg) = ws.next().await {
                match msg {
                    Ok(Message::Text(t)) => self.on_text(&t).await?,
                    Ok(Message::Close(_)) => break,
                    Ok(_) => {}
                    Err(e) => return Err(disconnected(e)),
                }
            }
            self.flush_utterance().await;
            match next {
                Next::Finish => return Ok(()),
                Next::Reconnect => {
                    self.base_samples = self.sent_samples;
                    ws = self.client.connect(&self.settings).await?;
                }
            }
        }
    }

    /// Moves audio up and results down until the caller finishes or settings change.
    async fn pump(&mut self, ws: &mut Ws) -> Result<Next, SpeechError> {
        let keepalive = Duration::from_millis(self.client.cfg.keepalive_ms.max(100));
        let mut tick = tokio::time::interval(keepalive);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut last_sent = Instant::now();
        loop {
            tokio::select! {
                input = self.worker.input.recv() => match input {
                    None => return Ok(Next::Finish),
                    Some(SttInput::Audio(pcm)) => {
                        let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
                        self.sent_samples += pcm.len() as u64;
                        ws.send(Message::Binary(bytes.into())).await.map_err(disconnected)?;
                        last_sent = Instant::now();
                    }
                    Some(SttInput::EndOfUtterance) => {
                        send_json(ws, r#"{"type":"Finalize"}"#).await?;
                        last_sent = Instant::now();
                    }
                    Some(SttInput::Update(u)) => {
                        let before = self.settings.clone();
                        self.settings.merge(&u);
                        if self.settings.language != before.language
                            || self.settings.endpointing != before.endpointing
                        {
                            return Ok(Next::Reconnect);
                        }
                    }
                },
                msg = ws.next() => match msg {
                    Some(Ok(Message::Text(t))) => self.on_text(&t).await?,
                    Some(Ok(Message::Close(frame))) => {
                        let reason = frame.map(|f| format!("{} {}", u16::from(f.code), f.reason)).unwrap_or_default();
                        return Err(SpeechError::Disconnected { provider: PROVIDER, reason: format!("server closed the stream: {reason}") });
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(disconnected(e)),
                    None => return Err(SpeechError::Disconnected { provider: PROVIDER, reason: "connection ended".into() }),
                },
                _ = tick.tick() => {
                    if last_sent.elapsed() >= keepalive {
                        send_json(ws, r#"{"type":"KeepAlive"}"#).await?;
                        last_sent = Instant::now();
                    }
                }
            }
        }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), SpeechError> {
        let bad = |e: serde_json::Error| SpeechError::Protocol {
            provider: PROVIDER,
            reason: format!("{e}: {}", text.chars().take(200).collect::<String>()),
        };
        let value: serde_json::Value = serde_json::from_str(text).map_err(bad)?;
        match value.get("type").and_then(|t| t.as_str()).unwrap_or("") {
            "Results" => {
                let msg: WireResults = serde_json::from_value(value).map_err(bad)?;
                let Some(alt) = msg.channel.and_then(|c| c.alternatives.into_iter().next()) else {
                    return Ok(());
                };
                let (start, dur) = (msg.start.unwrap_or(0.0), msg.duration.unwrap_or(0.0));
                let transcript = alt.transcript.trim().to_string();
                let language = alt
                    .languages
                    .and_then(|l| l.into_iter().next())
                    .or_else(|| self.settings.language.clone());
                if msg.is_final.unwrap_or(false) {
                    if !transcript.is_empty() {
                        let u = &mut self.utterance;
                        u.parts.push(transcript);
                        u.start.get_or_insert(start);
                        u.end = start + dur;
                        u.confidence = Some(alt.confidence.unwrap_or(0.0));
                        u.language = language;
                    }
                    if msg.speech_final.unwrap_or(false) || msg.from_finalize.unwrap_or(false) {
                        self.flush_utterance().await;
                    } else if !self.utterance.parts.is_empty() {
                        let t = self.transcript(self.utterance.parts.join(" "));
                        self.emit(SttEvent::Partial(t)).await;
                    }
                } else if !transcript.is_empty() {
                    let mut text = self.utterance.parts.join(" ");
                    if !text.is_empty() {
                        text.push(' ');
                    }
                    text.push_str(&transcript);
                    let mut t = self.transcript(text);
                    t.start = self.at(self.utterance.start.unwrap_or(start));
                    t.end = self.at(start + dur);
                    t.confidence = alt.confidence;
                    self.emit(SttEvent::Partial(t)).await;
                }
            }
            "UtteranceEnd" => self.flush_utterance().await,
            // Metadata, SpeechStarted and future message types carry nothing we use.
            _ => {}
        }
        Ok(())
    }

    fn at(&self, secs: f64) -> Duration {
        samples_to_duration(self.base_samples) + Duration::from_secs_f64(secs.max(0.0))
    }

    fn transcript(&self, text: String) -> Transcript {
        let u = &self.utterance;
        Transcript {
            text,
            start: self.at(u.start.unwrap_or(0.0)),
            end: self.at(u.end),
            language: u
                .language
                .clone()
                .or_else(|| self.settings.language.clone()),
            confidence: u.confidence,
        }
    }

    async fn flush_utterance(&mut self) {
        if self.utterance.parts.is_empty() {
            return;
        }
        let t = self.transcript(self.utterance.parts.join(" "));
        self.utterance = Utterance::default();
        self.emit(SttEvent::Final(t)).await;
    }

    async fn emit(&self, ev: SttEvent) {
        let _ = self.worker.events.send(Ok(ev)).await;
    }
}

async fn send_json(ws: &mut Ws, json: &'static str) -> Result<(), SpeechError> {
    ws.send(Message::Text(json.into()))
        .await
        .map_err(disconnected)
}

fn disconnected(e: tungstenite::Error) -> SpeechError {
    SpeechError::Disconnected {
        provider: PROVIDER,
        reason: e.to_string(),
    }
}

#[derive(Debug, Deserialize)]
struct WireResults {
    start: Option<f64>,
    duration: Option<f64>,
    is_final: Option<bool>,
    speech_final: Option<bool>,
    from_finalize: Option<bool>,
    channel: Option<WireChannel>,
}

#[derive(Debug, Deserialize)]
struct WireChannel {
    alternatives: Vec<WireAlternative>,
}

#[derive(Debug, Deserialize)]
struct WireAlternative {
    transcript: String,
    confidence: Option<f32>,
    languages: Option<Vec<String>>,
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
    use crate::failover::FailoverStt;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Mode {
        /// Answers like Deepgram: interims every 0.5 s, a final on Finalize/CloseStream.
        Transcribe,
        /// Drops the TCP connection after this many audio bytes.
        DropAfter(usize),
        /// Refuses the upgrade with 401.
        Reject401,
        /// Accepts TCP, never answers the upgrade.
        Hang,
    }

    #[derive(Debug, Default)]
    struct Log {
        queries: Vec<String>,
        auths: Vec<String>,
        /// Audio bytes per connection.
        audio: Vec<usize>,
        texts: Vec<String>,
    }

    struct FakeDeepgram {
        url: String,
        log: Arc<Mutex<Log>>,
    }

    impl FakeDeepgram {
        async fn start(mode: Mode) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("ws://{}/v1/listen", listener.local_addr().unwrap());
            let log = Arc::new(Mutex::new(Log::default()));
            let l = log.clone();
            tokio::spawn(async move {
                while let Ok((sock, _)) = listener.accept().await {
                    let l = l.clone();
                    tokio::spawn(async move { serve(sock, mode, l).await });
                }
            });
            Self { url, log }
        }
    }

    fn results(
        transcript: &str,
        start: f64,
        dur: f64,
        is_final: bool,
        from_finalize: bool,
    ) -> Message {
        Message::Text(
            serde_json::json!({
                "type": "Results", "channel_index": [0, 1], "start": start, "duration": dur,
                "is_final": is_final, "speech_final": false, "from_finalize": from_finalize,
                "channel": {"alternatives": [{"transcript": transcript, "confidence": 0.9, "words": []}]},
                "metadata": {"request_id": "r"}
            })
            .to_string()
            .into(),
        )
    }

    async fn serve(sock: TcpStream, mode: Mode, log: Arc<Mutex<Log>>) {
        if mode == Mode::Hang {
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(sock);
            return;
        }
        let l = log.clone();
        let callback = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
            let mut g = l.lock().unwrap();
            g.queries.push(req.uri().query().unwrap_or("").to_string());
            let auth = req
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap_or("").to_string())
                .unwrap_or_default();
            g.auths.push(auth);
            if mode == Mode::Reject401 {
                let mut e = ErrorResponse::new(Some(
                    r#"{"err_code":"INVALID_AUTH","err_msg":"Invalid credentials."}"#.into(),
                ));
                *e.status_mut() = tungstenite::http::StatusCode::UNAUTHORIZED;
                return Err(e);
            }
            g.audio.push(0);
            Ok(resp)
        };
        let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(sock, callback).await else {
            return;
        };
        let conn = log.lock().unwrap().audio.len() - 1;
        let mut bytes = 0usize;
        let mut final_upto = 0usize;
        while let Some(Ok(msg)) = ws.next().await {
            match msg {
                Message::Binary(b) => {
                    let before = bytes;
                    bytes += b.len();
                    log.lock().unwrap().audio[conn] = bytes;
                    if let Mode::DropAfter(n) = mode
                        && bytes >= n
                    {
                        return; // TCP dropped, no close frame
                    }
                    if before / 16_000 != bytes / 16_000 {
                        let _ = ws
                            .send(results("hello", 0.0, bytes as f64 / 32_000.0, false, false))
                            .await;
                    }
                }
                Message::Text(t) => {
                    log.lock().unwrap().texts.push(t.to_string());
                    let kind = serde_json::from_str::<serde_json::Value>(&t).unwrap()["type"]
                        .as_str()
                        .unwrap()
                        .to_string();
                    if (kind == "Finalize" || kind == "CloseStream") && bytes > final_upto {
                        let start = final_upto as f64 / 32_000.0;
                        let dur = (bytes - final_upto) as f64 / 32_000.0;
                        let _ = ws
                            .send(results(
                                &format!("hello world {}", bytes - final_upto),
                                start,
                                dur,
                                true,
                                kind == "Finalize",
                            ))
                            .await;
                        final_upto = bytes;
                    }
                    if kind == "CloseStream" {
                        let _ = ws
                            .send(Message::Text(
                                r#"{"type":"Metadata","request_id":"r","duration":1.0}"#.into(),
                            ))
                            .await;
                        let _ = ws.close(None).await;
                    }
                }
                _ => {}
            }
        }
    }

    fn client(url: &str, keepalive_ms: u64, connect_timeout: Duration) -> Arc<dyn SpeechToText> {
        let cfg = DeepgramConfig {
            api_key: ApiKey::literal("dg-key"),
            base_url: url.into(),
            model: "nova-3".into(),
            keepalive_ms,
        };
        let defaults = SttSettings {
            language: Some("en".into()),
            ..Default::default()
        };
        Arc::new(DeepgramStt::new(&cfg, defaults, connect_timeout))
    }

    async fn push_secs(s: &SttSession, secs: f64) {
        for _ in 0..(secs * 50.0) as usize {
            assert!(s.send_audio(vec![100i16; 320]).await);
        }
    }

    async fn next_final(s: &mut SttSession) -> (Transcript, usize) {
        let mut partials = 0;
        loop {
            match tokio::time::timeout(Duration::from_secs(5), s.next_event())
                .await
                .expect("event in time")
            {
                Some(Ok(SttEvent::Partial(_))) => partials += 1,
                Some(Ok(SttEvent::Final(t))) => return (t, partials),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn interim_final_documented_query_auth_and_close_stream() {
        let server = FakeDeepgram::start(Mode::Transcribe).await;
        let stt = client(&server.url, 5_000, Duration::from_secs(2));
        let mut s = stt.start(SttSettings::default()).await.unwrap();
        push_secs(&s, 1.0).await;
        assert!(s.end_utterance());
        let (t, partials) = next_final(&mut s).await;
        assert_eq!(t.text, "hello world 32000");
        assert!(partials >= 1, "interim results surface as partials");
        assert_eq!(t.end, Duration::from_secs(1));
        assert_eq!(t.language.as_deref(), Some("en"));
        push_secs(&s, 0.5).await;
        let rest = s.finish().final_text().await.unwrap();
        assert_eq!(
            rest, "hello world 16000",
            "CloseStream flushes the last utterance"
        );
        let log = server.log.lock().unwrap();
        let q = &log.queries[0];
        for p in [
            "encoding=linear16",
            "sample_rate=16000",
            "channels=1",
            "interim_results=true",
            "endpointing=300",
            "language=en",
            "model=nova-3",
        ] {
            assert!(q.contains(p), "{p} in {q}");
        }
        assert_eq!(log.auths[0], "Token dg-key");
        assert!(log.texts.iter().any(|t| t.contains("CloseStream")));
    }

    #[tokio::test]
    async fn keepalive_while_idle() {
        let server = FakeDeepgram::start(Mode::Transcribe).await;
        let stt = client(&server.url, 100, Duration::from_secs(2));
        let s = stt.start(SttSettings::default()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        let n = server
            .log
            .lock()
            .unwrap()
            .texts
            .iter()
            .filter(|t| t.contains("KeepAlive"))
            .count();
        assert!(n >= 2, "{n} KeepAlive messages");
        drop(s);
    }

    #[tokio::test]
    async fn bad_key_is_unauthorized_and_slow_handshake_times_out() {
        let server = FakeDeepgram::start(Mode::Reject401).await;
        let err = client(&server.url, 5_000, Duration::from_secs(2))
            .start(SttSettings::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, SpeechError::Unauthorized { status: 401, .. }),
            "{err}"
        );

        let server = FakeDeepgram::start(Mode::Hang).await;
        let t0 = std::time::Instant::now();
        let err = client(&server.url, 5_000, Duration::from_millis(300))
            .start(SttSettings::default())
            .await
            .unwrap_err();
        assert!(matches!(err, SpeechError::Timeout { .. }), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn settings_update_reconnects_with_new_query() {
        let server = FakeDeepgram::start(Mode::Transcribe).await;
        let mut s = client(&server.url, 5_000, Duration::from_secs(2))
            .start(SttSettings::default())
            .await
            .unwrap();
        push_secs(&s, 0.5).await;
        assert!(s.update_settings(SttSettings {
            language: Some("es".into()),
            endpointing: Some(crate::stt::Endpointing::SilenceMs(800)),
            prompt: None,
        }));
        // The old stream's audio is flushed as a final on close.
        let (t, _) = next_final(&mut s).await;
        assert_eq!(t.text, "hello world 16000");
        push_secs(&s, 0.5).await;
        assert!(s.end_utterance());
        let (t, _) = next_final(&mut s).await;
        assert_eq!(t.text, "hello world 16000");
        assert_eq!(
            t.start,
            Duration::from_millis(500),
            "times stay session-relative"
        );
        assert_eq!(t.language.as_deref(), Some("es"));
        let log = server.log.lock().unwrap();
        assert_eq!(log.queries.len(), 2);
        assert!(
            log.queries[1].contains("language=es") && log.queries[1].contains("endpointing=800")
        );
    }

    #[tokio::test]
    async fn failover_on_disconnect_mid_stream_keeps_the_utterance() {
        let primary = FakeDeepgram::start(Mode::DropAfter(16_000)).await;
        let backup = FakeDeepgram::start(Mode::Transcribe).await;
        let stt = FailoverStt::new(vec![
            client(&primary.url, 5_000, Duration::from_secs(2)),
            client(&backup.url, 5_000, Duration::from_secs(2)),
        ]);
        let mut s = stt.start(SttSettings::default()).await.unwrap();
        push_secs(&s, 1.0).await;
        assert!(s.end_utterance());
        let (t, _) = next_final(&mut s).await;
        assert_eq!(
            t.text, "hello world 32000",
            "the whole utterance reached the backup"
        );
        assert_eq!(t.start, Duration::ZERO);
        assert_eq!(backup.log.lock().unwrap().audio, vec![32_000]);
        // The session goes on on the backup.
        push_secs(&s, 0.5).await;
        assert_eq!(s.finish().final_text().await.unwrap(), "hello world 16000");
    }

    #[tokio::test]
    async fn failover_on_connect_errors() {
        let bad_key = FakeDeepgram::start(Mode::Reject401).await;
        let hang = FakeDeepgram::start(Mode::Hang).await;
        let good = FakeDeepgram::start(Mode::Transcribe).await;
        let stt = FailoverStt::new(vec![
            client(&bad_key.url, 5_000, Duration::from_secs(2)),
            client(&hang.url, 5_000, Duration::from_millis(200)),
            client(&good.url, 5_000, Duration::from_secs(2)),
        ]);
        let s = stt.start(SttSettings::default()).await.unwrap();
        push_secs(&s, 0.5).await;
        assert_eq!(s.finish().final_text().await.unwrap(), "hello world 16000");
    }
}
