//! Sample-rate conversion with rubato: decoded audio to the 16 kHz STT rate, and
//! TTS audio to the codec rate.
//!
//! [`Resampler`] works on fixed 20 ms chunks with buffers allocated at
//! construction (rubato's `FftFixedInOut`, which is exact for the integer ratios
//! used here and cheap for small chunks); equal rates pass through.

use rubato::{FftFixedInOut, Resampler as _};

use crate::MediaError;

/// A streaming mono resampler over fixed-size chunks.
pub struct Resampler {
    inner: Option<FftFixedInOut<f32>>,
    input: Vec<Vec<f32>>,
    output: Vec<Vec<f32>>,
    chunk_in: usize,
    chunk_out: usize,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("chunk_in", &self.chunk_in)
            .field("chunk_out", &self.chunk_out)
            .finish()
    }
}

impl Resampler {
    /// A resampler taking chunks of `from_hz / 50` samples (20 ms) and producing
    /// `to_hz / 50`.
    pub fn new_20ms(from_hz: u32, to_hz: u32) -> Result<Self, MediaError> {
        if !from_hz.is_multiple_of(50) || !to_hz.is_multiple_of(50) || from_hz == 0 || to_hz == 0 {
            return Err(MediaError::Unsupported(
                "sample rate must be a multiple of 50 Hz",
            ));
        }
        let chunk_in = (from_hz / 50) as usize;
        let chunk_out = (to_hz / 50) as usize;
        if from_hz == to_hz {
            return Ok(Self {
                inner: None,
                input: Vec::new(),
                output: Vec::new(),
                chunk_in,
                chunk_out,
            });
        }
        let inner = FftFixedInOut::<f32>::new(from_hz as usize, to_hz as usize, chunk_in, 1)
            .map_err(|_| MediaError::Resample("cannot build resampler"))?;
        if inner.input_frames_next() != chunk_in || inner.output_frames_next() != chunk_out {
            return Err(MediaError::Resample("rates do not give whole 20 ms chunks"));
        }
        Ok(Self {
            inner: Some(inner),
            input: vec![vec![0.0; chunk_in]],
            output: vec![vec![0.0; chunk_out]],
            chunk_in,
            chunk_out,
        })
    }

    /// Input samples per chunk.
    pub fn chunk_in(&self) -> usize {
        self.chunk_in
    }

    /// Output samples per chunk.
    pub fn chunk_out(&self) -> usize {
        self.chunk_out
    }

    /// Converts exactly one chunk; returns the number of samples written to `out`.
    pub fn process(&mut self, input: &[i16], out: &mut [i16]) -> Result<usize, MediaError> {
        if input.len() != self.chunk_in {
            return Err(MediaError::BufferTooSmall {
                needed: self.chunk_in,
                have: input.len(),
            });
        }
        if out.len() < self.chunk_out {
            return Err(MediaError::BufferTooSmall {
                needed: self.chunk_out,
                have: out.len(),
            });
        }
        let Some(inner) = self.inner.as_mut() else {
            out[..input.len()].copy_from_slice(input);
            return Ok(input.len());
        };
        const SCALE: f32 = 1.0 / 32768.0;
        for (d, s) in self.input[0].iter_mut().zip(input) {
            *d = *s as f32 * SCALE;
        }
        let (_, produced) = inner
            .process_into_buffer(&self.input, &mut self.output, None)
            .map_err(|_| MediaError::Resample("process failed"))?;
        for (d, s) in out.iter_mut().zip(&self.output[0][..produced]) {
            *d = (s * 32768.0).clamp(-32768.0, 32767.0) as i16;
        }
        Ok(produced)
    }
}

/// Streaming conversion of audio that arrives in pieces of any length (streamed
/// TTS): output is continuous across pieces, the resampler delay is removed, and
/// after [`StreamResampler::finish`] exactly `input * to / from` samples came out.
/// Runs where the audio is produced, not on the media task (it appends to `Vec`s).
#[derive(Debug)]
pub struct StreamResampler {
    r: Resampler,
    chunk: Vec<i16>,
    chunk_len: usize,
    frame: Vec<i16>,
    /// Output samples still to drop (the resampler's delay).
    skip: usize,
    consumed: u64,
    produced: u64,
    from_hz: u32,
    to_hz: u32,
}

impl StreamResampler {
    /// A converter from `from_hz` to `to_hz` (multiples of 50 Hz).
    pub fn new(from_hz: u32, to_hz: u32) -> Result<Self, MediaError> {
        let r = Resampler::new_20ms(from_hz, to_hz)?;
        let skip = if from_hz == to_hz { 0 } else { r.chunk_out };
        Ok(Self {
            chunk: vec![0; r.chunk_in],
            chunk_len: 0,
            frame: vec![0; r.chunk_out],
            skip,
            consumed: 0,
            produced: 0,
            from_hz,
            to_hz,
            r,
        })
    }

    fn emit(&mut self, out: &mut Vec<i16>) -> Result<(), MediaError> {
        let n = self.r.process(&self.chunk, &mut self.frame)?;
        let skip = self.skip.min(n);
        self.skip -= skip;
        out.extend_from_slice(&self.frame[skip..n]);
        self.produced += (n - skip) as u64;
        self.chunk_len = 0;
        Ok(())
    }

    /// Converts `input`, appending what is ready to `out`.
    pub fn push(&mut self, mut input: &[i16], out: &mut Vec<i16>) -> Result<(), MediaError> {
        self.consumed += input.len() as u64;
        while !input.is_empty() {
            let take = (self.chunk.len() - self.chunk_len).min(input.len());
            self.chunk[self.chunk_len..self.chunk_len + take].copy_from_slice(&input[..take]);
            self.chunk_len += take;
            input = &input[take..];
            if self.chunk_len == self.chunk.len() {
                self.emit(out)?;
            }
        }
        Ok(())
    }

    /// Flushes the tail (zero-padded) so the total output matches the input
    /// duration exactly.
    pub fn finish(&mut self, out: &mut Vec<i16>) -> Result<(), MediaError> {
        let expected = self.consumed * self.to_hz as u64 / self.from_hz as u64;
        let mut guard = 0;
        while self.produced < expected && guard < 4 {
            self.chunk[self.chunk_len..].fill(0);
            self.chunk_len = self.chunk.len();
            self.emit(out)?;
            guard += 1;
        }
        if self.produced > expected {
            let extra = (self.produced - expected) as usize;
            out.truncate(out.len().saturating_sub(extra));
            self.produced = expected;
        }
        Ok(())
    }
}

/// Converts a whole buffer at once (allocates; for set-up work such as loading a
/// background track, never on the 20 ms path). The output is delay-compensated.
pub fn resample_all(input: &[i16], from_hz: u32, to_hz: u32) -> Result<Vec<i16>, MediaError> {
    if from_hz == to_hz {
        return Ok(input.to_vec());
    }
    let mut s = StreamResampler::new(from_hz, to_hz)?;
    let mut out =
        Vec::with_capacity((input.len() as u64 * to_hz as u64 / from_hz as u64) as usize + 1024);
    s.push(input, &mut out)?;
    s.finish(&mut out)?;
    Ok(out)
}

/// A short polyphase FIR resampler over fixed 20 ms chunks for rational ratios
/// between the codec rates (8/12/16/24/48 kHz): a Kaiser-windowed sinc of
/// [`LowDelayResampler::TAPS`] input samples per output phase, so its delay is
/// about `TAPS / 2` input samples (1.5 ms at 8 kHz) instead of the ~10 ms of the
/// FFT resampler. Used where delay matters more than the last dB of stopband: the
/// audio of one call leg bridged into another. Equal rates pass through.
/// Allocation-free after `new`.
pub struct LowDelayResampler {
    up: usize,
    down: usize,
    chunk_in: usize,
    chunk_out: usize,
    /// `up` phases of `TAPS` coefficients each, phase-major.
    coeffs: Vec<f32>,
    /// The last `TAPS - 1` input samples, then the current chunk.
    buf: Vec<f32>,
}

impl std::fmt::Debug for LowDelayResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LowDelayResampler")
            .field("up", &self.up)
            .field("down", &self.down)
            .finish()
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Modified Bessel function of the first kind, order 0 (Kaiser window).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let half = x / 2.0;
    for k in 1..50 {
        term *= (half / k as f64) * (half / k as f64);
        sum += term;
        if term < 1e-12 * sum {
            break;
        }
    }
    sum
}

impl LowDelayResampler {
    /// Input samples each output sample is computed from.
    pub const TAPS: usize = 24;

    /// A resampler taking chunks of `from_hz / 50` samples (20 ms) and producing
    /// `to_hz / 50`.
    pub fn new_20ms(from_hz: u32, to_hz: u32) -> Result<Self, MediaError> {
        if !from_hz.is_multiple_of(50) || !to_hz.is_multiple_of(50) || from_hz == 0 || to_hz == 0 {
            return Err(MediaError::Unsupported(
                "sample rate must be a multiple of 50 Hz",
            ));
        }
        let (from, to) = (from_hz as usize, to_hz as usize);
        let g = gcd(from, to);
        let (up, down) = (to / g, from / g);
        if up > 48 || down > 48 {
            return Err(MediaError::Unsupported("resampling ratio too uneven"));
        }
        let taps = Self::TAPS;
        let n = up * taps;
        // Prototype low-pass at `from * up` Hz, cut a little below the lower
        // Nyquist, gain `up` to make up for the zeros stuffed in.
        let cutoff = 0.45 * from.min(to) as f64 / (from * up) as f64;
        let beta = 6.0;
        let centre = (n - 1) as f64 / 2.0;
        let mut proto = vec![0f64; n];
        for (i, h) in proto.iter_mut().enumerate() {
            let t = i as f64 - centre;
            let sinc = if t == 0.0 {
                2.0 * cutoff
            } else {
                (2.0 * std::f64::consts::PI * cutoff * t).sin() / (std::f64::consts::PI * t)
            };
            let r = t / centre;
            let w = bessel_i0(beta * (1.0 - r * r).max(0.0).sqrt()) / bessel_i0(beta);
            *h = sinc * w * up as f64;
        }
        // Phase p, tap t: proto[p + t * up], applied to input x[i - t].
        let mut coeffs = vec![0f32; n];
        for p in 0..up {
            for t in 0..taps {
                coeffs[p * taps + t] = proto[p + t * up] as f32;
            }
        }
        let chunk_in = from / 50;
        Ok(Self {
            up,
            down,
            chunk_in,
            chunk_out: to / 50,
            coeffs,
            buf: vec![0.0; taps - 1 + chunk_in],
        })
    }

    /// Input samples per chunk.
    pub fn chunk_in(&self) -> usize {
        self.chunk_in
    }

    /// Output samples per chunk.
    pub fn chunk_out(&self) -> usize {
        self.chunk_out
    }

    /// Converts exactly one chunk; returns the number of samples written to `out`.
    pub fn process(&mut self, input: &[i16], out: &mut [i16]) -> Result<usize, MediaError> {
        if input.len() != self.chunk_in {
            return Err(MediaError::BufferTooSmall {
                needed: self.chunk_in,
                have: input.len(),
            });
        }
        if out.len() < self.chunk_out {
            return Err(MediaError::BufferTooSmall {
                needed: self.chunk_out,
                have: out.len(),
            });
        }
        if self.up == self.down {
            out[..input.len()].copy_from_slice(input);
            return Ok(input.len());
        }
        let taps = Self::TAPS;
        let hist = taps - 1;
        for (d, s) in self.buf[hist..].iter_mut().zip(input) {
            *d = *s as f32;
        }
        // A 20 ms chunk holds a whole number of filter periods: the phase starts
        // at 0 on every chunk.
        for (j, o) in out[..self.chunk_out].iter_mut().enumerate() {
            let k = j * self.down;
            let (i, p) = (k / self.up, k % self.up);
            let c = &self.coeffs[p * taps..(p + 1) * taps];
            // x[i - t] is buf[hist + i - t]: walk the taps backwards in time.
            let x = &self.buf[i..i + taps];
            let mut acc = 0f32;
            for (cv, xv) in c.iter().zip(x.iter().rev()) {
                acc += cv * xv;
            }
            *o = acc.round().clamp(-32768.0, 32767.0) as i16;
        }
        self.buf.copy_within(self.chunk_in.., 0);
        Ok(self.chunk_out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, freq: f32, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                (10000.0 * (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin())
                    as i16
            })
            .collect()
    }

    fn power_at(x: &[i16], rate: u32, freq: f32) -> f32 {
        let (mut re, mut im) = (0f32, 0f32);
        for (i, s) in x.iter().enumerate() {
            let w = 2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32;
            re += *s as f32 * w.cos();
            im += *s as f32 * w.sin();
        }
        (re * re + im * im).sqrt() / x.len() as f32
    }

    #[test]
    fn upsample_8k_to_16k_keeps_tone() {
        let mut r = Resampler::new_20ms(8000, 16000).unwrap();
        assert_eq!((r.chunk_in(), r.chunk_out()), (160, 320));
        let input = tone(8000, 1000.0, 1600);
        let mut out = Vec::new();
        let mut frame = [0i16; 320];
        for c in input.chunks(160) {
            let n = r.process(c, &mut frame).unwrap();
            out.extend_from_slice(&frame[..n]);
        }
        let steady = &out[640..];
        let p1k = power_at(steady, 16000, 1000.0);
        let p3k = power_at(steady, 16000, 3000.0);
        assert!(p1k > 4000.0, "1 kHz power {p1k}");
        assert!(p3k < p1k / 50.0);
    }

    #[test]
    fn other_rates_and_passthrough() {
        for (a, b) in [
            (48000, 16000),
            (16000, 8000),
            (24000, 8000),
            (22050, 8000),
            (16000, 16000),
        ] {
            let r = Resampler::new_20ms(a, b).unwrap();
            assert_eq!(r.chunk_out(), (b / 50) as usize);
        }
        assert!(Resampler::new_20ms(11025, 8000).is_err());
        let mut r = Resampler::new_20ms(8000, 16000).unwrap();
        assert!(r.process(&[0; 10], &mut [0; 320]).is_err());
    }

    #[test]
    fn streaming_equals_whole_and_keeps_length() {
        let input = tone(24000, 440.0, 24000 + 77);
        let whole = resample_all(&input, 24000, 16000).unwrap();
        let mut s = StreamResampler::new(24000, 16000).unwrap();
        let mut out = Vec::new();
        for piece in input.chunks(1234) {
            s.push(piece, &mut out).unwrap();
        }
        s.finish(&mut out).unwrap();
        assert_eq!(out.len(), (24077u64 * 16000 / 24000) as usize);
        assert_eq!(out, whole);
        // Continuous across pieces: no dip in the tone's envelope at boundaries.
        let min_peak = out[400..out.len() - 400]
            .chunks(64)
            .map(|c| c.iter().map(|s| s.unsigned_abs()).max().unwrap())
            .min()
            .unwrap();
        assert!(min_peak > 9000, "min peak {min_peak}");
        let mut same = StreamResampler::new(8000, 8000).unwrap();
        let mut o = Vec::new();
        same.push(&[1, 2, 3], &mut o).unwrap();
        same.finish(&mut o).unwrap();
        assert_eq!(o, vec![1, 2, 3]);
    }

    #[test]
    fn resample_all_length_and_content() {
        let input = tone(24000, 440.0, 24000);
        let out = resample_all(&input, 24000, 8000).unwrap();
        assert_eq!(out.len(), 8000);
        assert!(power_at(&out[1000..7000], 8000, 440.0) > 4000.0);
    }

    #[test]
    fn low_delay_resampler_keeps_tones_with_little_delay() {
        for (from, to, freq) in [
            (8000, 16000, 1000.0),
            (16000, 8000, 1000.0),
            (8000, 48000, 600.0),
            (48000, 8000, 600.0),
            (12000, 16000, 1000.0),
            (8000, 8000, 1000.0),
        ] {
            let mut r = LowDelayResampler::new_20ms(from, to).unwrap();
            let (ci, co) = (r.chunk_in(), r.chunk_out());
            let input = tone(from, freq, ci * 20);
            let mut out = Vec::new();
            let mut frame = vec![0i16; co];
            for c in input.chunks(ci) {
                assert_eq!(r.process(c, &mut frame).unwrap(), co);
                out.extend_from_slice(&frame);
            }
            let tail = &out[out.len() / 2..];
            let p = power_at(tail, to, freq);
            // 10000 peak: the DFT magnitude of the tone is about 5000.
            assert!((4500.0..5500.0).contains(&p), "{from}->{to}: {p}");
            let first = out.iter().position(|s| s.abs() > 2000).unwrap();
            let delay_ms = first as f32 * 1000.0 / to as f32;
            assert!(delay_ms < 2.5, "{from}->{to}: onset after {delay_ms} ms");
        }
        // Content above the lower Nyquist is removed going down.
        let mut r = LowDelayResampler::new_20ms(16000, 8000).unwrap();
        let input = tone(16000, 6000.0, 320 * 10);
        let mut out = Vec::new();
        let mut frame = [0i16; 160];
        for c in input.chunks(320) {
            r.process(c, &mut frame).unwrap();
            out.extend_from_slice(&frame);
        }
        let rms = (out[800..].iter().map(|s| (*s as f64).powi(2)).sum::<f64>()
            / (out.len() - 800) as f64)
            .sqrt();
        assert!(rms < 100.0, "alias rms {rms}");
    }
}
