//! Text-to-speech: the trait, the streaming handle, and sentence chunking.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::error::SpeechError;
use crate::voice::VoiceTarget;

/// Chunks buffered between a synthesiser and its consumer.
const CHUNK_QUEUE: usize = 16;

/// One synthesis request, voice already resolved to a provider voice.
#[derive(Debug, Clone, PartialEq)]
pub struct TtsRequest {
    /// Text to speak.
    pub text: String,
    /// Provider voice.
    pub voice: VoiceTarget,
    /// Speed factor (1.0 = normal; VoiceRun allows 0.25..4.0).
    pub speed: f32,
    /// Language code ("en").
    pub language: String,
    /// Styling instructions, for providers that take them.
    pub instructions: Option<String>,
    /// Provider model override.
    pub model: Option<String>,
}

impl TtsRequest {
    /// A request with default speed and English.
    pub fn new(text: impl Into<String>, voice: VoiceTarget) -> Self {
        Self {
            text: text.into(),
            voice,
            speed: 1.0,
            language: "en".into(),
            instructions: None,
            model: None,
        }
    }
}

/// A text-to-speech engine or provider.
pub trait TextToSpeech: Send + Sync + 'static {
    /// Provider name, as in config.
    fn name(&self) -> &'static str;
    /// Starts synthesis; PCM (16 kHz mono) arrives on the stream as it is produced.
    /// Must be called inside a tokio runtime.
    fn synthesize(&self, req: TtsRequest) -> TtsStream;
}

/// Receiving end of a synthesis: PCM chunks in order, then `None`.
///
/// Dropping it or calling [`TtsStream::cancel`] stops the producer at once.
#[derive(Debug)]
pub struct TtsStream {
    rx: mpsc::Receiver<Result<Vec<i16>, SpeechError>>,
    cancelled: Arc<AtomicBool>,
    task: Option<AbortHandle>,
    started: Instant,
    first_chunk: Option<Duration>,
    done: bool,
}

/// Producing end of a synthesis.
#[derive(Debug, Clone)]
pub struct TtsSink {
    tx: mpsc::Sender<Result<Vec<i16>, SpeechError>>,
    cancelled: Arc<AtomicBool>,
}

impl TtsStream {
    /// A connected stream/sink pair; the clock for first-chunk latency starts now.
    pub fn channel() -> (TtsStream, TtsSink) {
        let (tx, rx) = mpsc::channel(CHUNK_QUEUE);
        let cancelled = Arc::new(AtomicBool::new(false));
        (
            TtsStream {
                rx,
                cancelled: cancelled.clone(),
                task: None,
                started: Instant::now(),
                first_chunk: None,
                done: false,
            },
            TtsSink { tx, cancelled },
        )
    }

    /// A stream that fails at once.
    pub fn failed(err: SpeechError) -> TtsStream {
        let (s, sink) = Self::channel();
        let _ = sink.tx.try_send(Err(err));
        s
    }

    /// Ties the producing task to the stream so cancel aborts it.
    pub fn with_task(mut self, task: AbortHandle) -> Self {
        self.task = Some(task);
        self
    }

    /// The next chunk; `None` when synthesis is complete or cancelled.
    pub async fn next_chunk(&mut self) -> Option<Result<Vec<i16>, SpeechError>> {
        if self.done {
            return None;
        }
        let item = self.rx.recv().await;
        match &item {
            Some(Ok(_)) if self.first_chunk.is_none() => {
                self.first_chunk = Some(self.started.elapsed());
            }
            Some(Err(_)) | None => self.done = true,
            _ => {}
        }
        item
    }

    /// Stops synthesis now: the producer is aborted and no further chunk is delivered.
    pub fn cancel(&mut self) {
        self.cancelled.store(true, Ordering::SeqCst);
        if let Some(t) = self.task.take() {
            t.abort();
        }
        self.rx.close();
        self.done = true;
    }

    /// Time from the start of synthesis to the first chunk, once it has arrived.
    pub fn first_chunk_latency(&self) -> Option<Duration> {
        self.first_chunk
    }

    /// Reads the whole stream into one buffer.
    pub async fn collect(mut self) -> Result<Vec<i16>, SpeechError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next_chunk().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }
}

impl Drop for TtsStream {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl TtsSink {
    /// Sends a chunk; `Err(Cancelled)` once the consumer has gone or cancelled.
    pub async fn send(&self, pcm: Vec<i16>) -> Result<(), SpeechError> {
        if pcm.is_empty() {
            return Ok(());
        }
        if self.is_cancelled() {
            return Err(SpeechError::Cancelled);
        }
        self.tx
            .send(Ok(pcm))
            .await
            .map_err(|_| SpeechError::Cancelled)
    }

    /// Blocking send, for synthesisers running on a blocking thread.
    pub fn blocking_send(&self, pcm: Vec<i16>) -> Result<(), SpeechError> {
        if pcm.is_empty() {
            return Ok(());
        }
        if self.is_cancelled() {
            return Err(SpeechError::Cancelled);
        }
        self.tx
            .blocking_send(Ok(pcm))
            .map_err(|_| SpeechError::Cancelled)
    }

    /// Ends the stream with an error.
    pub async fn fail(&self, err: SpeechError) {
        let _ = self.tx.send(Err(err)).await;
    }

    /// Ends the stream with an error, from a blocking thread.
    pub fn blocking_fail(&self, err: SpeechError) {
        let _ = self.tx.blocking_send(Err(err));
    }

    /// Whether the consumer cancelled or went away.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst) || self.tx.is_closed()
    }
}

/// Splits text into sentence-sized pieces so the first audio comes fast.
pub fn split_sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        cur.push(c);
        let at_end = matches!(c, '.' | '!' | '?' | '\n')
            && chars.get(i + 1).is_none_or(|n| n.is_whitespace());
        if at_end {
            push_piece(&mut out, &cur);
            cur.clear();
        }
    }
    push_piece(&mut out, &cur);
    out
}

fn push_piece(out: &mut Vec<String>, piece: &str) {
    let piece = piece.trim();
    if piece.chars().any(|c| c.is_alphanumeric()) {
        out.push(piece.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_split_on_terminators_only() {
        assert_eq!(
            split_sentences("Hello there. It costs 3.50 dollars! Ok? \n bye"),
            vec!["Hello there.", "It costs 3.50 dollars!", "Ok?", "bye"]
        );
        assert!(split_sentences("  ... ").is_empty());
    }

    #[tokio::test]
    async fn cancel_stops_delivery_and_producer() {
        let (mut stream, sink) = TtsStream::channel();
        let producer = tokio::spawn(async move {
            let mut sent = 0u32;
            while sink.send(vec![1; 160]).await.is_ok() {
                sent += 1;
            }
            sent
        });
        assert!(stream.next_chunk().await.unwrap().is_ok());
        assert!(stream.first_chunk_latency().is_some());
        stream.cancel();
        assert!(stream.next_chunk().await.is_none());
        let sent = producer.await.unwrap();
        assert!(sent <= CHUNK_QUEUE as u32 + 2, "{sent}");
    }
}
