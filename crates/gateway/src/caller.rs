//! `voicegate call`: a SIP/RTP caller for users and tests. It dials a URI,
//! prints each thing the far end says (transcribed with the configured
//! speech-to-text), speaks each `--say` phrase (configured text-to-speech)
//! when the far end has stopped talking, plays a WAV, sends DTMF, reports a
//! REFER (and accepts it with NOTIFY 200 unless told not to), and hangs up
//! at the end.
//!
//! The far end's utterances are cut by energy: a stretch of 20 ms frames
//! above a speech level, ended by 600 ms below it. Audio is PCMU at 8 kHz
//! with RFC 4733 telephone-events.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use voicegate_media::g711::{linear_to_ulaw, ulaw_to_linear};
use voicegate_sdp::{CodecPreference, OfferParams, SessionDescription};
use voicegate_sip::endpoint::{EndReason, EndpointConfig, Event, Peer, TransportKind};
use voicegate_sip::refer::ReferEvent;
use voicegate_sip::transport::{TransportConfig, spawn};
use voicegate_speech::{SpeakRequest, SpeechConfig, SpeechToText, TtsService};

/// What to do on the call.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// `sip:user@host[:port][;transport=tcp]`.
    pub target: String,
    /// Phrases to say, one per turn of the far end.
    pub say: Vec<String>,
    /// A WAV file to play after the phrases.
    pub wav: Option<PathBuf>,
    /// DTMF digits to send at the end.
    pub dtmf: Option<String>,
    /// The whole call's limit.
    pub timeout: Duration,
    /// Accept a REFER (NOTIFY 200) rather than refuse it (NOTIFY 603).
    pub accept_refer: bool,
    /// Speech settings (TTS for `--say`, STT for the far end).
    pub speech: SpeechConfig,
}

/// What happened on the call.
#[derive(Debug, Clone, Default)]
pub struct CallReport {
    /// The far end's utterances, transcribed, in order.
    pub heard: Vec<String>,
    /// The Refer-To of a REFER received.
    pub refer_to: Option<String>,
    /// Who ended the call and how.
    pub ended: String,
}

const FRAME: usize = 160;
/// Mean absolute level above which a 20 ms frame is speech.
const SPEECH_LEVEL: f64 = 300.0;
/// Silence that ends an utterance, in 20 ms frames.
const END_FRAMES: usize = 30;

/// Places the call; `print` gets each line as it happens.
pub async fn call(opts: CallOptions, mut print: impl FnMut(&str)) -> anyhow::Result<CallReport> {
    let (peer_addr, transport) = resolve(&opts.target).await?;
    let local_ip = local_ip_for(peer_addr)?;
    let tts = TtsService::from_config(&opts.speech).context("speech.tts")?;
    let speech = opts.speech.clone();
    let stt: Arc<dyn SpeechToText> = Arc::new(
        tokio::task::spawn_blocking(move || voicegate_speech::stt_from_config(&speech))
            .await?
            .context("speech.stt")?,
    );
    let (sip, mut events, _task) = spawn(TransportConfig {
        bind: SocketAddr::new(local_ip, 0),
        endpoint: EndpointConfig {
            advertised: SocketAddr::new(local_ip, 0),
            ..EndpointConfig::default()
        },
        seed: u64::from(std::process::id()),
    })
    .await?;
    let rtp = Arc::new(UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?);
    let codecs = CodecPreference::from_names(["PCMU", "telephone-event"])?;
    let offer = voicegate_sdp::offer(&OfferParams::new(
        local_ip,
        rtp.local_addr()?.port(),
        codecs,
    ));
    let from = format!("sip:voicegate-call@{}", sip.local_addr());
    let call = sip
        .invite(
            &opts.target,
            &from,
            &opts.target,
            offer.to_string().into_bytes(),
            Peer {
                transport,
                addr: peer_addr,
                connection: None,
            },
        )
        .await?;
    print(&format!("calling {}", opts.target));
    let deadline = tokio::time::Instant::now() + opts.timeout;
    let answer = loop {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .context("no answer before the timeout")?
            .context("SIP stopped")?;
        match ev {
            Event::CallAnswered { body, .. } => break body,
            Event::CallProgress { status, .. } => print(&format!("progress: {status}")),
            Event::CallEnded { reason, .. } => bail!("call failed: {reason:?}"),
            _ => {}
        }
    };
    let answer: SessionDescription = std::str::from_utf8(&answer)?.parse()?;
    let media = voicegate_sdp::process_answer(&offer, &answer)?;
    let remote = media.remote_rtp;
    let te_pt = media.telephone_event.map(|t| t.payload_type);
    print("answered");

    // The far end's audio, cut into utterances.
    let (utter_tx, mut utterances) = mpsc::unbounded_channel::<Vec<i16>>();
    let rx = rtp.clone();
    let pt = media.recv_payload_type;
    // True while the far end is in the middle of an utterance.
    let talking = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let talking_rx = talking.clone();
    // Utterances cut so far; our turn waits until each is transcribed.
    let utterances_cut = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cut_rx = utterances_cut.clone();
    let receiver = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        let (mut current, mut quiet) = (Vec::new(), 0usize);
        while let Ok((n, _)) = rx.recv_from(&mut buf).await {
            if n <= 12 || buf[1] & 0x7f != pt {
                continue;
            }
            let frame: Vec<i16> = buf[12..n].iter().map(|&b| ulaw_to_linear(b)).collect();
            let level = frame.iter().map(|&s| f64::from(s).abs()).sum::<f64>() / frame.len() as f64;
            if level > SPEECH_LEVEL {
                quiet = 0;
                talking_rx.store(true, std::sync::atomic::Ordering::SeqCst);
                current.extend_from_slice(&frame);
            } else if !current.is_empty() {
                current.extend_from_slice(&frame);
                quiet += 1;
                if quiet >= END_FRAMES {
                    cut_rx.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let _ = utter_tx.send(std::mem::take(&mut current));
                    talking_rx.store(false, std::sync::atomic::Ordering::SeqCst);
                    quiet = 0;
                }
            }
        }
    });

    // Transcription runs off the sending loop, which must keep its 20 ms pace.
    let (text_tx, mut texts) = mpsc::unbounded_channel::<String>();
    let transcriber = {
        let stt = stt.clone();
        tokio::spawn(async move {
            while let Some(pcm) = utterances.recv().await {
                match voicegate_speech::transcribe_pcm(stt.as_ref(), &to_16k(&pcm)).await {
                    Ok(text) => {
                        let _ = text_tx.send(text.trim().to_string());
                    }
                    Err(e) => tracing::warn!(error = %e, "transcription failed"),
                }
            }
        })
    };
    let mut report = CallReport::default();
    let mut transcribed = 0usize;
    let mut to_say: std::collections::VecDeque<String> = opts.say.iter().cloned().collect();
    let mut outgoing: std::collections::VecDeque<Vec<u8>> = Default::default();
    let mut wav_pending = opts.wav.clone();
    let mut dtmf_pending = opts.dtmf.clone().filter(|d| !d.is_empty());
    let mut heard_since_spoke = false;
    let mut spoken_yet = false;
    let mut hung_up = false;
    let answered_at = tokio::time::Instant::now();
    let mut last_heard = tokio::time::Instant::now();
    let (mut seq, mut ts) = (1u16, 0u32);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let ended = loop {
        tokio::select! {
            _ = tick.tick() => {
                let frame = outgoing.pop_front().unwrap_or_else(|| vec![0xff; FRAME]);
                let packet = rtp_packet(0, seq, ts, &frame);
                let _ = rtp.send_to(&packet, remote).await;
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(FRAME as u32);
                // Our turn: the far end spoke and has been quiet a moment.
                let quiet_for = last_heard.elapsed();
                // A far end that does not speak first: our turn after 3 s.
                let cut = utterances_cut.load(std::sync::atomic::Ordering::SeqCst);
                let first_turn = !spoken_yet && cut == 0 && answered_at.elapsed() > Duration::from_secs(3);
                let far_end_quiet = !talking.load(std::sync::atomic::Ordering::SeqCst)
                    && transcribed >= cut
                    && quiet_for > Duration::from_millis(800);
                if !hung_up && outgoing.is_empty() && far_end_quiet && (heard_since_spoke || first_turn) {
                    spoken_yet = true;
                    if let Some(phrase) = to_say.pop_front() {
                        print(&format!("me: {phrase}"));
                        let pcm = tts.speak(SpeakRequest::new(phrase)).collect().await?;
                        outgoing.extend(to_8k(&pcm).chunks(FRAME).map(encode));
                        heard_since_spoke = false;
                    } else if let Some(path) = wav_pending.take() {
                        print(&format!("me: (playing {})", path.display()));
                        let pcm = voicegate_speech::audio::read_wav_16k(&path)?;
                        outgoing.extend(to_8k(&pcm).chunks(FRAME).map(encode));
                        heard_since_spoke = false;
                    } else if let Some(digits) = dtmf_pending.take() {
                        print(&format!("me: (DTMF {digits})"));
                        if let Some(te) = te_pt {
                            send_dtmf(&rtp, remote, te, &digits, &mut seq, &mut ts).await?;
                        } else {
                            print("the far end did not accept telephone-event: no DTMF sent");
                        }
                        heard_since_spoke = false;
                    } else if quiet_for > Duration::from_secs(3) {
                        print("done: hanging up");
                        hung_up = true;
                        sip.hangup(call).await?;
                    }
                }
            }
            Some(text) = texts.recv() => {
                transcribed += 1;
                last_heard = tokio::time::Instant::now();
                if !text.is_empty() {
                    print(&format!("them: {text}"));
                    report.heard.push(text);
                }
                heard_since_spoke = true;
            }
            ev = events.recv() => match ev {
                Some(Event::Refer(ReferEvent::Incoming { refer_to, .. })) => {
                    print(&format!("REFER to {refer_to}"));
                    report.refer_to = Some(refer_to);
                    let (status, done) = if opts.accept_refer { (200, true) } else { (603, true) };
                    sip.notify(call, status, done).await?;
                }
                Some(Event::CallEnded { reason, .. }) => break reason,
                Some(_) => {}
                None => break EndReason::TransportError,
            },
            _ = tokio::time::sleep_until(deadline) => {
                print("timeout: hanging up");
                sip.hangup(call).await?;
                let reason = loop {
                    match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
                        Ok(Some(Event::CallEnded { reason, .. })) => break reason,
                        Ok(Some(_)) => {}
                        _ => break EndReason::Timeout,
                    }
                };
                break reason;
            }
        }
    };
    receiver.abort();
    transcriber.abort();
    report.ended = match &ended {
        EndReason::RemoteBye => "the far end hung up".into(),
        EndReason::LocalBye { .. } => "we hung up".into(),
        other => format!("{other:?}"),
    };
    print(&format!("call ended: {}", report.ended));
    Ok(report)
}

async fn resolve(target: &str) -> anyhow::Result<(SocketAddr, TransportKind)> {
    let rest = target
        .strip_prefix("sip:")
        .with_context(|| format!("{target:?} is not a sip: URI"))?;
    let hostport = rest.rsplit('@').next().unwrap_or(rest);
    let (hostport, params) = hostport.split_once(';').unwrap_or((hostport, ""));
    let transport = if params.to_ascii_lowercase().contains("transport=tcp") {
        TransportKind::Tcp
    } else {
        TransportKind::Udp
    };
    let with_port = if hostport
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        hostport.to_string()
    } else {
        format!("{hostport}:5060")
    };
    let addr = tokio::net::lookup_host(&with_port)
        .await?
        .next()
        .with_context(|| format!("cannot resolve {with_port}"))?;
    Ok((addr, transport))
}

/// The local address that routes to `peer` (loopback for loopback).
fn local_ip_for(peer: SocketAddr) -> anyhow::Result<IpAddr> {
    let sock = std::net::UdpSocket::bind(match peer {
        SocketAddr::V4(_) => "0.0.0.0:0",
        SocketAddr::V6(_) => "[::]:0",
    })?;
    sock.connect(peer)?;
    Ok(sock.local_addr()?.ip())
}

fn encode(frame: &[i16]) -> Vec<u8> {
    let mut out: Vec<u8> = frame.iter().map(|&s| linear_to_ulaw(s)).collect();
    out.resize(FRAME, 0xff);
    out
}

fn rtp_packet(pt: u8, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt & 0x7f, 0, 0, 0, 0, 0, 0, 0x76, 0x67, 0x63, 0x6c];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// Sends each digit as an RFC 4733 event: 100 ms of updates, three end
/// packets, then 100 ms of pause.
async fn send_dtmf(
    rtp: &UdpSocket,
    remote: SocketAddr,
    pt: u8,
    digits: &str,
    seq: &mut u16,
    ts: &mut u32,
) -> anyhow::Result<()> {
    for d in digits.chars() {
        let event: u8 = match d {
            '0'..='9' => d as u8 - b'0',
            '*' => 10,
            '#' => 11,
            'A'..='D' => d as u8 - b'A' + 12,
            _ => bail!("{d:?} is not a DTMF digit"),
        };
        let start = *ts;
        for step in 1..=8u16 {
            let end = step >= 6;
            let duration = (step.min(5) * FRAME as u16).to_be_bytes();
            let payload = [
                event,
                if end { 0x80 | 10 } else { 10 },
                duration[0],
                duration[1],
            ];
            let mut packet = rtp_packet(pt, *seq, start, &payload);
            if step == 1 {
                packet[1] |= 0x80; // marker on the first packet of an event
            }
            rtp.send_to(&packet, remote).await?;
            *seq = seq.wrapping_add(1);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        *ts = ts.wrapping_add(8 * FRAME as u32);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Converts whole 20 ms chunks with the media path's resampler (the tail
/// shorter than a chunk is padded with silence).
fn resample(pcm: &[i16], from_hz: u32, to_hz: u32) -> Vec<i16> {
    let Ok(mut r) = voicegate_media::resample::Resampler::new_20ms(from_hz, to_hz) else {
        return Vec::new();
    };
    let (chunk_in, chunk_out) = ((from_hz / 50) as usize, r.chunk_out());
    let mut out = Vec::with_capacity(pcm.len() * to_hz as usize / from_hz as usize + chunk_out);
    let mut buf = vec![0i16; chunk_out];
    for chunk in pcm.chunks(chunk_in) {
        let mut input = chunk.to_vec();
        input.resize(chunk_in, 0);
        if let Ok(n) = r.process(&input, &mut buf) {
            out.extend_from_slice(&buf[..n]);
        }
    }
    out
}

/// 16 kHz (speech PCM) to 8 kHz (PCMU).
fn to_8k(pcm16: &[i16]) -> Vec<i16> {
    resample(pcm16, 16_000, 8_000)
}

/// 8 kHz (PCMU) to 16 kHz (speech-to-text).
fn to_16k(pcm8: &[i16]) -> Vec<i16> {
    resample(pcm8, 8_000, 16_000)
}
