//! Call records: one per call, inbound or outbound, from the first INVITE to
//! a while after the end. The HTTP API reads them; the conversation writes
//! the transcript and `output_data` into them; the `session.ended` webhook
//! sends the final one.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;
use serde::Serialize;
use serde_json::Value;

/// Which way a call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// A caller called us.
    Inbound,
    /// We placed it (`POST /v1/calls`).
    Outbound,
}

/// Where a call is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallState {
    /// INVITE sent or received, no answer yet.
    Ringing,
    /// Answered; the agent's session runs.
    Answered,
    /// Over.
    Ended,
}

/// How a call ended: one label, and the SIP status and reason when SIP gave
/// one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// Metric label, e.g. `remote_bye`, `busy`, `no_answer`, `cancelled`.
    pub label: String,
    /// The SIP status that decided it (486, 487, 200 of the BYE...).
    pub sip_status: Option<u16>,
    /// The reason phrase or Reason header text.
    pub reason: Option<String>,
}

/// One line of what was said.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TranscriptEntry {
    /// `caller` or `agent`.
    pub role: String,
    /// The words (for the agent: what was actually played).
    pub text: String,
}

/// What the media path saw on a call.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MediaSummary {
    /// The negotiated codec.
    pub codec: String,
    /// RTP packets received.
    pub rtp_received: u64,
    /// RTP packets sent.
    pub rtp_sent: u64,
    /// Inbound packets lost (RFC 3550 A.3).
    pub inbound_lost: i64,
    /// Inbound inter-arrival jitter, ms.
    pub inbound_jitter_ms: f64,
    /// Stretches of caller speech the VAD detected.
    pub speech_segments: u32,
    /// DTMF digits received, in order.
    pub dtmf: String,
}

/// A transfer of the call to a phone number or SIP URI (REFER or bridge).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TransferSummary {
    /// The number or URI the agent gave.
    pub target: String,
    /// How it was last tried: `refer` or `bridge` (a failed REFER falls
    /// back to a bridge).
    pub mode: String,
    /// SIP statuses seen, in order: the REFER's answer and each NOTIFY's
    /// sipfrag status, then the bridged INVITE's responses.
    pub sip_codes: Vec<u16>,
    /// `ok` or `failed`.
    pub result: String,
    /// Why it failed (what the agent's ErrorEvent said).
    pub reason: Option<String>,
    /// The bridged leg's figures, once the bridge ended.
    pub bridge: Option<BridgeSummary>,
}

/// What went through a bridge (B2BUA) between the caller and the target.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BridgeSummary {
    /// The codec negotiated with the target.
    pub codec: String,
    /// 20 ms frames of the caller's audio played out to the target.
    pub frames_to_target: u64,
    /// 20 ms frames of the target's audio handed to the caller's leg.
    pub frames_from_target: u64,
    /// RTP packets received from the target.
    pub target_rtp_received: u64,
    /// RTP packets sent to the target.
    pub target_rtp_sent: u64,
    /// Who ended the bridge: `caller`, `target` or `error`.
    pub ended_by: String,
}

/// Wall-clock instants (RFC 3339) of the call's milestones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Timings {
    /// When the call record was created.
    pub created: String,
    /// When it was answered.
    pub answered: Option<String>,
    /// When it ended.
    pub ended: Option<String>,
    /// Milliseconds from creation to answer.
    pub setup_ms: Option<u64>,
    /// Milliseconds from answer to end.
    pub duration_ms: Option<u64>,
}

/// Everything the API tells about one call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallRecord {
    /// The API's id for the call.
    pub id: String,
    /// The SIP Call-ID.
    pub sip_call_id: String,
    /// Inbound or outbound.
    pub direction: Direction,
    /// Caller (From URI or number).
    pub from: String,
    /// Callee (To URI or number).
    pub to: String,
    /// The agent handling it.
    pub agent: String,
    /// Ringing, answered, ended.
    pub state: CallState,
    /// Set once ended.
    pub outcome: Option<Outcome>,
    /// Milestones.
    pub timings: Timings,
    /// What was said, in order.
    pub transcript: Vec<TranscriptEntry>,
    /// The handler's `context.output_data`.
    pub output_data: Value,
    /// The input given to the session (`context.input_data`).
    pub input_data: Value,
    /// Media figures, once the call's media stopped.
    pub media: Option<MediaSummary>,
    /// Provisional responses to our INVITE, in order (180, 183 with early
    /// media...), for outbound calls.
    pub progress: Vec<u16>,
    /// The transfer to a number or URI, if the agent asked for one.
    pub transfer: Option<TransferSummary>,
    /// The SIP endpoint's handle (for hang-up).
    #[serde(skip)]
    pub handle: Option<voicegate_sip::endpoint::CallHandle>,
    #[serde(skip)]
    created_at: Option<Instant>,
    #[serde(skip)]
    answered_at: Option<Instant>,
}

impl CallRecord {
    /// A new record in state ringing.
    pub fn new(
        id: String,
        sip_call_id: String,
        direction: Direction,
        from: String,
        to: String,
        agent: String,
        now: Instant,
    ) -> Self {
        CallRecord {
            id,
            sip_call_id,
            direction,
            from,
            to,
            agent,
            state: CallState::Ringing,
            outcome: None,
            timings: Timings {
                created: rfc3339(SystemTime::now()),
                ..Timings::default()
            },
            transcript: Vec::new(),
            output_data: Value::Object(Default::default()),
            input_data: Value::Object(Default::default()),
            media: None,
            progress: Vec::new(),
            transfer: None,
            handle: None,
            created_at: Some(now),
            answered_at: None,
        }
    }
}

/// All records: live ones, and ended ones for `keep` (at most `max_ended`).
pub struct Records {
    calls: DashMap<String, CallRecord>,
    ended: Mutex<VecDeque<(Instant, String)>>,
    keep: Duration,
    max_ended: usize,
}

impl Records {
    /// An empty store.
    pub fn new(keep: Duration, max_ended: usize) -> Self {
        Records {
            calls: DashMap::new(),
            ended: Mutex::new(VecDeque::new()),
            keep,
            max_ended,
        }
    }

    /// Adds a record.
    pub fn insert(&self, record: CallRecord) {
        self.calls.insert(record.id.clone(), record);
    }

    /// A copy of one record.
    pub fn get(&self, id: &str) -> Option<CallRecord> {
        self.calls.get(id).map(|r| r.clone())
    }

    /// Copies of every record held (live and recently ended), oldest first.
    pub fn all(&self) -> Vec<CallRecord> {
        let mut v: Vec<CallRecord> = self.calls.iter().map(|r| r.clone()).collect();
        v.sort_by_key(|r| r.created_at);
        v
    }

    /// Copies of the records not yet ended, oldest first.
    pub fn live(&self) -> Vec<CallRecord> {
        let mut v: Vec<CallRecord> = self
            .calls
            .iter()
            .filter(|r| r.state != CallState::Ended)
            .map(|r| r.clone())
            .collect();
        v.sort_by_key(|r| r.created_at);
        v
    }

    /// Marks a call answered.
    pub fn answered(&self, id: &str, now: Instant) {
        if let Some(mut r) = self.calls.get_mut(id) {
            r.state = CallState::Answered;
            r.answered_at = Some(now);
            r.timings.answered = Some(rfc3339(SystemTime::now()));
            r.timings.setup_ms = r.created_at.map(|c| ms(now.saturating_duration_since(c)));
        }
    }

    /// Applies a change to a record.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut CallRecord)) {
        if let Some(mut r) = self.calls.get_mut(id) {
            f(&mut r);
        }
    }

    /// Marks a call ended with `outcome` (the first outcome set wins) and
    /// returns the final record.
    pub fn ended(&self, id: &str, outcome: Outcome, now: Instant) -> Option<CallRecord> {
        let (record, first) = {
            let mut r = self.calls.get_mut(id)?;
            let first = r.state != CallState::Ended;
            if first {
                r.state = CallState::Ended;
                r.timings.ended = Some(rfc3339(SystemTime::now()));
                r.timings.duration_ms = r.answered_at.map(|a| ms(now.saturating_duration_since(a)));
            }
            if r.outcome.is_none() {
                r.outcome = Some(outcome);
            }
            (r.clone(), first)
        };
        if !first {
            return Some(record);
        }
        let mut ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        ended.push_back((now, id.to_string()));
        while let Some((at, old)) = ended.front().cloned() {
            let expired = now.saturating_duration_since(at) > self.keep;
            if !expired && ended.len() <= self.max_ended {
                break;
            }
            ended.pop_front();
            self.calls.remove(&old);
        }
        Some(record)
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

/// A new random call id (128 bits, hex).
pub fn new_call_id() -> String {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::from_os_rng();
    format!("{:032x}", rng.random::<u128>())
}

/// Formats a time as RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// well-known civil-from-days algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_550_364_100);
        assert_eq!(rfc3339(t), "2026-11-24T19:59:24.100Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    fn record(id: &str, now: Instant) -> CallRecord {
        CallRecord::new(
            id.into(),
            format!("{id}@h"),
            Direction::Inbound,
            "a".into(),
            "b".into(),
            "echo".into(),
            now,
        )
    }

    #[test]
    fn lifecycle_and_retention() {
        let t0 = Instant::now();
        let store = Records::new(Duration::from_secs(10), 2);
        for id in ["a", "b", "c"] {
            store.insert(record(id, t0));
        }
        store.answered("a", t0 + Duration::from_millis(250));
        assert_eq!(store.live().len(), 3);
        let outcome = Outcome {
            label: "remote_bye".into(),
            sip_status: None,
            reason: None,
        };
        let a = store
            .ended("a", outcome.clone(), t0 + Duration::from_secs(2))
            .unwrap();
        assert_eq!(a.state, CallState::Ended);
        assert_eq!(a.timings.setup_ms, Some(250));
        assert_eq!(a.timings.duration_ms, Some(1750));
        // A second end keeps the first outcome.
        let other = Outcome {
            label: "x".into(),
            ..outcome.clone()
        };
        assert_eq!(
            store
                .ended("a", other, t0 + Duration::from_secs(2))
                .unwrap()
                .outcome,
            Some(outcome.clone())
        );
        store.ended("b", outcome.clone(), t0 + Duration::from_secs(3));
        store.ended("c", outcome.clone(), t0 + Duration::from_secs(4));
        // max_ended = 2: the oldest ended record went.
        assert!(store.get("a").is_none());
        assert!(store.get("b").is_some() && store.get("c").is_some());
        // Past `keep`, ended records go when the next call ends.
        store.insert(record("d", t0));
        store.ended("d", outcome, t0 + Duration::from_secs(30));
        assert!(store.get("b").is_none() && store.get("c").is_none());
        assert!(store.get("d").is_some());
    }
}
