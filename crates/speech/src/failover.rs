//! STT failover: sessions that move to the next configured provider when one fails,
//! replaying the utterance in flight so no speech is lost.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::error::SpeechError;
use crate::stt::{
    SpeechToText, SttEvent, SttInput, SttSession, SttSettings, SttWorker, samples_to_duration,
};

/// Audio kept for replay: at most this many samples (30 s) since the last final.
const MAX_REPLAY_SAMPLES: usize = 30 * 16_000;

/// Providers in order of preference behind one [`SpeechToText`].
///
/// On a connect error the next provider is tried. On a failure mid-stream the session
/// opens the next provider and replays the audio since the last final transcript (and
/// the end-of-utterance mark, if one was given), so the utterance in flight is still
/// transcribed. Times in the transcripts stay relative to the session start.
#[derive(Clone)]
pub struct FailoverStt {
    providers: Arc<Vec<Arc<dyn SpeechToText>>>,
}

impl std::fmt::Debug for FailoverStt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.providers.iter().map(|p| p.name()))
            .finish()
    }
}

impl FailoverStt {
    /// Providers in order of preference.
    pub fn new(providers: Vec<Arc<dyn SpeechToText>>) -> Self {
        Self {
            providers: Arc::new(providers),
        }
    }

    /// Opens a session on the first provider at or after `from` that connects.
    async fn open(
        &self,
        from: usize,
        settings: &SttSettings,
    ) -> Result<(usize, SttSession), SpeechError> {
        let mut last = None;
        for (i, p) in self.providers.iter().enumerate().skip(from) {
            match p.start(settings.clone()).await {
                Ok(s) => return Ok((i, s)),
                Err(e) => {
                    tracing::warn!(provider = p.name(), error = %e, "STT provider failed to start; trying the next");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| SpeechError::Unsupported("no STT provider configured".into())))
    }
}

impl SpeechToText for FailoverStt {
    fn name(&self) -> &'static str {
        "failover"
    }

    fn start(&self, settings: SttSettings) -> BoxFuture<'static, Result<SttSession, SpeechError>> {
        let this = self.clone();
        Box::pin(async move {
            let (index, inner) = this.open(0, &settings).await?;
            let (session, worker) = SttSession::channel();
            tokio::spawn(async move {
                let mut run = Run {
                    stt: this,
                    settings,
                    index,
                    offset: Duration::ZERO,
                    pending: Vec::new(),
                    pending_eou: false,
                    pushed: 0,
                };
                if let Err(e) = run.drive(inner, worker).await {
                    tracing::warn!(error = %e, "STT session failed on every provider");
                }
            });
            Ok(session)
        })
    }
}

struct Run {
    stt: FailoverStt,
    settings: SttSettings,
    index: usize,
    /// Session time at which the current provider's audio starts.
    offset: Duration,
    /// Audio since the last final transcript.
    pending: Vec<i16>,
    /// Whether the caller ended the pending utterance.
    pending_eou: bool,
    /// Samples received from the caller in all.
    pushed: u64,
}

impl Run {
    async fn drive(
        &mut self,
        mut inner: SttSession,
        mut worker: SttWorker,
    ) -> Result<(), SpeechError> {
        let mut caller_done = false;
        let mut finished: Option<crate::stt::SttEvents> = None;
        loop {
            let event = if let Some(f) = finished.as_mut() {
                f.next_event().await
            } else {
                tokio::select! {
                    input = worker.input.recv(), if !caller_done => {
                        match input {
                            None => {
                                caller_done = true;
                                finished = Some(std::mem::replace(&mut inner, SttSession::channel().0).finish());
                            }
                            Some(SttInput::Audio(pcm)) => {
                                self.pushed += pcm.len() as u64;
                                if self.pending.len() + pcm.len() <= MAX_REPLAY_SAMPLES {
                                    self.pending.extend_from_slice(&pcm);
                                }
                                inner.send_audio(pcm).await;
                            }
                            Some(SttInput::EndOfUtterance) => {
                                self.pending_eou = true;
                                inner.end_utterance();
                            }
                            Some(SttInput::Update(u)) => {
                                self.settings.merge(&u);
                                inner.update_settings(u);
                            }
                        }
                        continue;
                    }
                    ev = inner.next_event() => ev,
                }
            };
            match event {
                Some(Ok(ev)) => {
                    let ev = self.shift(ev);
                    if matches!(ev, SttEvent::Final(_)) {
                        self.pending.clear();
                        self.pending_eou = false;
                    }
                    if worker.events.send(Ok(ev)).await.is_err() {
                        return Ok(());
                    }
                }
                None if caller_done => return Ok(()),
                failure => {
                    let err = match failure {
                        Some(Err(e)) => e,
                        _ => SpeechError::Disconnected {
                            provider: "stt",
                            reason: "provider session ended".into(),
                        },
                    };
                    tracing::warn!(error = %err, "STT provider failed mid-stream; failing over");
                    match self.stt.open(self.index + 1, &self.settings).await {
                        Ok((i, next)) => {
                            self.index = i;
                            self.offset =
                                samples_to_duration(self.pushed - self.pending.len() as u64);
                            for chunk in self.pending.chunks(3_200) {
                                next.send_audio(chunk.to_vec()).await;
                            }
                            if self.pending_eou {
                                next.end_utterance();
                            }
                            inner = next;
                            if caller_done {
                                finished = Some(
                                    std::mem::replace(&mut inner, SttSession::channel().0).finish(),
                                );
                            } else {
                                finished = None;
                            }
                        }
                        Err(e) => {
                            let _ = worker.events.send(Err(err)).await;
                            return Err(e);
                        }
                    }
                }
            }
        }
    }

    fn shift(&self, ev: SttEvent) -> SttEvent {
        let off = self.offset;
        match ev {
            SttEvent::Partial(mut t) => {
                t.start += off;
                t.end += off;
                SttEvent::Partial(t)
            }
            SttEvent::Final(mut t) => {
                t.start += off;
                t.end += off;
                SttEvent::Final(t)
            }
        }
    }
}
