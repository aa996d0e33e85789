//! G.711 mu-law / A-law (ITU-T G.711) and packet loss concealment after G.711 Appendix I.
//!
//! # Concealment design
//!
//! Looked at: the ITU reference (Appendix I, as described by its reimplementations, e.g.
//! the embedded C++ port in brucemack/itu-g711-codec and Hoene's `g711a1_plc`) and
//! spandsp's `plc.c`. All use the same time-domain scheme, which is what
//! [`G711Plc`] does:
//!
//! * keep 48.75 ms (390 samples) of output history;
//! * at the start of an erasure estimate the pitch period by normalised
//!   cross-correlation of the last 20 ms against lags of 5..15 ms (40..120 samples),
//!   coarse on every second lag/sample, then refined at full resolution;
//! * synthesise by repeating the last pitch period, with a quarter-period overlap-add
//!   at the loop point so the repetition has no click; after 10 ms the repeated
//!   section grows to 2 and then (after 20 ms) 3 periods, to avoid a buzzy tone;
//! * attenuate linearly by 20 % per 10 ms from 10 ms into the erasure, reaching
//!   silence at 60 ms;
//! * on the first good frame, overlap-add the continued synthetic signal with the
//!   real one over 4 ms, plus 4 ms per further 10 ms of erasure (at most 10 ms).
//!
//! Difference from the reference: Appendix I delays all output by 3.75 ms so the
//! first synthetic samples can be blended into the tail of the real signal. Like
//! spandsp we do not add that delay (a voice agent cares about latency more than
//! the last bit of concealment quality); the loop point is smoothed instead.

/// The G.711 companding law.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// mu-law (North America, Japan), payload type 0.
    Mu,
    /// A-law (rest of the world), payload type 8.
    A,
}

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 32635;

const fn ulaw_to_linear_const(u: u8) -> i16 {
    let u = !u;
    let sign = u & 0x80;
    let exponent = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0F) as i32;
    let sample = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    if sign != 0 {
        -sample as i16
    } else {
        sample as i16
    }
}

const fn alaw_to_linear_const(a: u8) -> i16 {
    let a = a ^ 0x55;
    let mut t = ((a & 0x0F) as i32) << 4;
    let seg = ((a & 0x70) >> 4) as i32;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    if a & 0x80 != 0 { t as i16 } else { -t as i16 }
}

const fn build_table(law: Law) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = match law {
            Law::Mu => ulaw_to_linear_const(i as u8),
            Law::A => alaw_to_linear_const(i as u8),
        };
        i += 1;
    }
    t
}

static ULAW_TABLE: [i16; 256] = build_table(Law::Mu);
static ALAW_TABLE: [i16; 256] = build_table(Law::A);

/// Decodes one mu-law byte to linear PCM.
#[inline]
pub fn ulaw_to_linear(u: u8) -> i16 {
    ULAW_TABLE[u as usize]
}

/// Decodes one A-law byte to linear PCM.
#[inline]
pub fn alaw_to_linear(a: u8) -> i16 {
    ALAW_TABLE[a as usize]
}

/// Encodes one linear PCM sample to mu-law.
#[inline]
pub fn linear_to_ulaw(pcm: i16) -> u8 {
    let mut v = pcm as i32;
    let sign = if v < 0 {
        v = -v;
        0x80
    } else {
        0
    };
    if v > ULAW_CLIP {
        v = ULAW_CLIP;
    }
    v += ULAW_BIAS;
    // exponent = floor(log2(v >> 7)); v >> 7 is in 1..=255.
    let exponent = 31 - ((v >> 7) as u32 | 1).leading_zeros() as i32;
    let mantissa = (v >> (exponent + 3)) & 0x0F;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// Encodes one linear PCM sample to A-law.
#[inline]
pub fn linear_to_alaw(pcm: i16) -> u8 {
    let mut v = (pcm as i32) >> 3; // 13-bit magnitude domain
    let mask: u8 = if v >= 0 {
        0xD5
    } else {
        v = -v - 1;
        0x55
    };
    // segment end points 0x1F, 0x3F, ... 0xFFF: seg = number of bits above 5.
    let seg = if v <= 0x1F {
        0
    } else {
        (32 - (v as u32).leading_zeros()) as i32 - 5
    };
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let mut aval = (seg << 4) as u8;
    if seg < 2 {
        aval |= ((v >> 1) & 0x0F) as u8;
    } else {
        aval |= ((v >> seg) & 0x0F) as u8;
    }
    aval ^ mask
}

/// Decodes a G.711 payload into `out`; returns the number of samples written.
pub fn decode(law: Law, payload: &[u8], out: &mut [i16]) -> Result<usize, crate::MediaError> {
    if out.len() < payload.len() {
        return Err(crate::MediaError::BufferTooSmall {
            needed: payload.len(),
            have: out.len(),
        });
    }
    let table = match law {
        Law::Mu => &ULAW_TABLE,
        Law::A => &ALAW_TABLE,
    };
    for (o, &b) in out.iter_mut().zip(payload) {
        *o = table[b as usize];
    }
    Ok(payload.len())
}

/// Encodes PCM into `out` as G.711; returns the number of bytes written.
pub fn encode(law: Law, pcm: &[i16], out: &mut [u8]) -> Result<usize, crate::MediaError> {
    if out.len() < pcm.len() {
        return Err(crate::MediaError::BufferTooSmall {
            needed: pcm.len(),
            have: out.len(),
        });
    }
    match law {
        Law::Mu => {
            for (o, &s) in out.iter_mut().zip(pcm) {
                *o = linear_to_ulaw(s);
            }
        }
        Law::A => {
            for (o, &s) in out.iter_mut().zip(pcm) {
                *o = linear_to_alaw(s);
            }
        }
    }
    Ok(pcm.len())
}

const PITCH_MIN: usize = 40; // 5 ms at 8 kHz (200 Hz)
const PITCH_MAX: usize = 120; // 15 ms (66.7 Hz)
const CORR_LEN: usize = 160; // 20 ms correlation window
const HISTORY_LEN: usize = PITCH_MAX * 3 + PITCH_MAX / 4; // 390 samples, 48.75 ms
const BLOCK_10MS: usize = 80;
const END_OVERLAP_INCR: usize = 32; // 4 ms
const ATTEN_PER_SAMPLE: f32 = 0.2 / BLOCK_10MS as f32;

/// G.711 Appendix I style packet loss concealment at 8 kHz (see module docs).
///
/// Feed every decoded frame through [`G711Plc::good_frame`] and call
/// [`G711Plc::conceal`] for each lost one.
#[derive(Debug, Clone)]
pub struct G711Plc {
    history: [i16; HISTORY_LEN],
    /// Synthetic source: the last `periods * pitch` samples of history, loop-smoothed.
    pitch_buf: [f32; PITCH_MAX * 3],
    pitch: usize,
    periods: usize,
    /// Read position inside `pitch_buf[..periods * pitch]`.
    pos: usize,
    /// Samples concealed in the current erasure.
    erased: usize,
}

impl Default for G711Plc {
    fn default() -> Self {
        Self::new()
    }
}

impl G711Plc {
    /// A concealer with empty (silent) history.
    pub fn new() -> Self {
        Self {
            history: [0; HISTORY_LEN],
            pitch_buf: [0.0; PITCH_MAX * 3],
            pitch: PITCH_MIN,
            periods: 1,
            pos: 0,
            erased: 0,
        }
    }

    /// Whether the last frame was concealed.
    pub fn in_erasure(&self) -> bool {
        self.erased > 0
    }

    /// Records a correctly received frame; after an erasure, blends its start with
    /// the continued synthetic signal (modifies `pcm` in place).
    pub fn good_frame(&mut self, pcm: &mut [i16]) {
        if self.erased > 0 {
            let extra_blocks = (self.erased.saturating_sub(1)) / BLOCK_10MS;
            let olen = (END_OVERLAP_INCR + END_OVERLAP_INCR * extra_blocks)
                .min(BLOCK_10MS)
                .min(pcm.len());
            for (i, s) in pcm.iter_mut().take(olen).enumerate() {
                let synth = self.next_synthetic();
                let w = (i + 1) as f32 / (olen + 1) as f32;
                let v = synth * (1.0 - w) + *s as f32 * w;
                *s = v.clamp(-32768.0, 32767.0) as i16;
            }
            self.erased = 0;
        }
        self.push_history(pcm);
    }

    /// Writes concealment audio for one lost frame into `out`.
    pub fn conceal(&mut self, out: &mut [i16]) {
        if self.erased == 0 {
            self.pitch = self.find_pitch();
            self.build_pitch_buf(1);
            self.pos = 0;
        }
        for s in out.iter_mut() {
            // Grow the repeated section at 10 and 20 ms into the erasure.
            if self.erased == BLOCK_10MS && self.periods == 1 {
                self.switch_periods(2);
            } else if self.erased == 2 * BLOCK_10MS && self.periods == 2 {
                self.switch_periods(3);
            }
            let gain = if self.erased < BLOCK_10MS {
                1.0
            } else {
                (1.0 - (self.erased - BLOCK_10MS) as f32 * ATTEN_PER_SAMPLE).max(0.0)
            };
            let v = self.next_synthetic() * gain;
            *s = v.clamp(-32768.0, 32767.0) as i16;
            self.erased += 1;
        }
        // History keeps only real signal so the 2- and 3-period buffers are built
        // from what was received.
    }

    fn next_synthetic(&mut self) -> f32 {
        let len = self.pitch * self.periods;
        let v = self.pitch_buf[self.pos];
        self.pos += 1;
        if self.pos >= len {
            self.pos = 0;
        }
        v
    }

    fn push_history(&mut self, pcm: &[i16]) {
        if pcm.len() >= HISTORY_LEN {
            self.history
                .copy_from_slice(&pcm[pcm.len() - HISTORY_LEN..]);
        } else {
            self.history.copy_within(pcm.len().., 0);
            self.history[HISTORY_LEN - pcm.len()..].copy_from_slice(pcm);
        }
    }

    /// Normalised cross-correlation pitch search (coarse at decimation 2, then fine).
    fn find_pitch(&self) -> usize {
        let h = &self.history;
        let end = HISTORY_LEN;
        let start = end - CORR_LEN;
        let score = |lag: usize, step: usize| -> f32 {
            let mut corr = 0f32;
            let mut energy = 0f32;
            let mut j = start;
            while j < end {
                let a = h[j] as f32;
                let b = h[j - lag] as f32;
                corr += a * b;
                energy += b * b;
                j += step;
            }
            if energy <= 1.0 || corr <= 0.0 {
                0.0
            } else {
                corr / energy.sqrt()
            }
        };
        let mut best = PITCH_MIN;
        let mut best_score = f32::MIN;
        let mut lag = PITCH_MIN;
        while lag <= PITCH_MAX {
            let s = score(lag, 2);
            if s > best_score {
                best_score = s;
                best = lag;
            }
            lag += 2;
        }
        let lo = best.saturating_sub(1).max(PITCH_MIN);
        let hi = (best + 1).min(PITCH_MAX);
        let mut fine_best = best;
        let mut fine_score = f32::MIN;
        for lag in lo..=hi {
            let s = score(lag, 1);
            if s > fine_score {
                fine_score = s;
                fine_best = lag;
            }
        }
        fine_best
    }

    /// Copies the last `periods` pitch periods of history into `pitch_buf` and
    /// smooths the loop point with a quarter-period overlap-add.
    fn build_pitch_buf(&mut self, periods: usize) {
        let p = self.pitch;
        let len = p * periods;
        let h = &self.history;
        let base = HISTORY_LEN - len;
        for i in 0..len {
            self.pitch_buf[i] = h[base + i] as f32;
        }
        // The sample played after pitch_buf[len-1] is pitch_buf[0] = h[base]; blend the
        // tail towards the samples that precede h[base] so the wrap is continuous.
        let ol = (p / 4).min(base);
        for i in 0..ol {
            let w = (i + 1) as f32 / (ol + 1) as f32;
            let tail = len - ol + i;
            let pre = h[base - ol + i] as f32;
            self.pitch_buf[tail] = self.pitch_buf[tail] * (1.0 - w) + pre * w;
        }
        self.periods = periods;
    }

    fn switch_periods(&mut self, periods: usize) {
        // Continue at the same phase, one period further back (history is not
        // updated during an erasure, so the older periods are real signal).
        let phase = self.pos % self.pitch;
        self.build_pitch_buf(periods);
        self.pos = phase;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_roundtrip_all_codes() {
        for code in 0..=255u8 {
            let lin = ulaw_to_linear(code);
            let back = linear_to_ulaw(lin);
            assert_eq!(ulaw_to_linear(back), lin, "code {code:#x}");
        }
    }

    #[test]
    fn alaw_roundtrip_all_codes() {
        for code in 0..=255u8 {
            let lin = alaw_to_linear(code);
            assert_eq!(linear_to_alaw(lin), code, "code {code:#x}");
        }
    }

    #[test]
    fn known_values() {
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
    }

    #[test]
    fn encode_error_is_close_everywhere() {
        for v in (i16::MIN..=i16::MAX).step_by(7) {
            let u = ulaw_to_linear(linear_to_ulaw(v)) as i32;
            let a = alaw_to_linear(linear_to_alaw(v)) as i32;
            let tol = (v as i32).abs() / 16 + 16;
            assert!(
                (u - v as i32).abs() <= tol.max(1100 * ((v as i32).abs() > 31000) as i32),
                "mu {v} -> {u}"
            );
            assert!(
                (a - v as i32).abs() <= tol.max(1100 * ((v as i32).abs() > 31000) as i32),
                "A {v} -> {a}"
            );
        }
    }

    fn sine(freq: f32, start: usize, out: &mut [i16]) {
        for (i, s) in out.iter_mut().enumerate() {
            let t = (start + i) as f32 / 8000.0;
            *s = (8000.0 * (2.0 * std::f32::consts::PI * freq * t).sin()) as i16;
        }
    }

    #[test]
    fn plc_continues_periodic_signal_then_fades() {
        let mut plc = G711Plc::new();
        let mut frame = [0i16; 160];
        for k in 0..5 {
            sine(200.0, k * 160, &mut frame);
            plc.good_frame(&mut frame);
        }
        // Pitch of a 200 Hz tone is 40 samples.
        assert_eq!(plc.find_pitch() % 40, 0);
        let mut lost = [0i16; 160];
        plc.conceal(&mut lost);
        let mut expect = [0i16; 160];
        sine(200.0, 5 * 160, &mut expect);
        // The first 10 ms follow the tone closely.
        let err: f32 = lost[..80]
            .iter()
            .zip(&expect[..80])
            .map(|(a, b)| ((*a as f32) - (*b as f32)).abs())
            .sum::<f32>()
            / 80.0;
        assert!(err < 800.0, "mean abs error {err}");
        // By 60 ms the output is silent.
        for _ in 0..3 {
            plc.conceal(&mut lost);
        }
        assert!(lost.iter().all(|s| *s == 0), "not silent after 60 ms");
        // Recovery blends without panicking and stores history.
        sine(200.0, 8 * 160, &mut frame);
        plc.good_frame(&mut frame);
        assert!(!plc.in_erasure());
    }

    #[test]
    fn plc_with_silence_history_is_silent() {
        let mut plc = G711Plc::new();
        let mut out = [1i16; 160];
        plc.conceal(&mut out);
        assert!(out.iter().all(|s| *s == 0));
    }
}
