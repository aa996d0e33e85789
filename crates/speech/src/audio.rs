//! PCM helpers: the crate's sample rate, a streaming resampler, WAV files.

use std::path::Path;

use crate::error::SpeechError;

/// Every PCM buffer in this crate is mono i16 at this rate.
pub const SAMPLE_RATE_HZ: u32 = 16_000;

/// Half-width of the windowed-sinc kernel, in input samples.
const HALF_TAPS: usize = 8;

/// Streaming band-limited resampler (windowed sinc) from any rate to another.
///
/// Input can be fed in chunks of any size; output is continuous across chunks.
#[derive(Debug)]
pub struct Resampler {
    step: f64,
    cutoff: f64,
    // Input history: the last 2*HALF_TAPS samples plus pending ones.
    buf: Vec<f32>,
    // Position of the next output sample, in input samples, relative to buf[0].
    pos: f64,
}

impl Resampler {
    /// A resampler from `from_hz` to `to_hz`.
    pub fn new(from_hz: u32, to_hz: u32) -> Self {
        let step = f64::from(from_hz) / f64::from(to_hz);
        Self {
            step,
            cutoff: (1.0 / step).min(1.0),
            buf: vec![0.0; HALF_TAPS],
            pos: HALF_TAPS as f64,
        }
    }

    /// Feeds `input`, appends what can be produced to `out`.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        if (self.step - 1.0).abs() < f64::EPSILON {
            out.extend_from_slice(input);
            return;
        }
        self.buf.extend(input.iter().map(|&s| f32::from(s)));
        while self.pos + HALF_TAPS as f64 + 1.0 < self.buf.len() as f64 {
            out.push(self.sample_at(self.pos));
            self.pos += self.step;
        }
        // Keep only the history the kernel still needs.
        let keep_from = (self.pos.floor() as usize).saturating_sub(HALF_TAPS);
        if keep_from > 0 {
            self.buf.drain(..keep_from);
            self.pos -= keep_from as f64;
        }
    }

    /// Flushes the tail (pads with silence).
    pub fn finish(&mut self, out: &mut Vec<i16>) {
        let pad = [0i16; HALF_TAPS * 2 + 2];
        let target = self.buf.len() as f64 - HALF_TAPS as f64;
        self.buf.extend(pad.iter().map(|&s| f32::from(s)));
        while self.pos < target {
            out.push(self.sample_at(self.pos));
            self.pos += self.step;
        }
        self.buf.clear();
        self.buf.resize(HALF_TAPS, 0.0);
        self.pos = HALF_TAPS as f64;
    }

    fn sample_at(&self, t: f64) -> i16 {
        let centre = t.floor() as isize;
        let mut acc = 0.0f64;
        for k in (centre - HALF_TAPS as isize + 1)..=(centre + HALF_TAPS as isize) {
            if k < 0 || k as usize >= self.buf.len() {
                continue;
            }
            let x = t - k as f64;
            let arg = x * self.cutoff;
            let sinc = if arg.abs() < 1e-9 {
                1.0
            } else {
                (std::f64::consts::PI * arg).sin() / (std::f64::consts::PI * arg)
            };
            // Hann window over the kernel span.
            let w = 0.5 + 0.5 * (std::f64::consts::PI * x / (HALF_TAPS as f64 + 1.0)).cos();
            acc += f64::from(self.buf[k as usize]) * sinc * self.cutoff * w;
        }
        acc.round().clamp(-32768.0, 32767.0) as i16
    }
}

/// Resamples a whole buffer.
pub fn resample(input: &[i16], from_hz: u32, to_hz: u32) -> Vec<i16> {
    let mut r = Resampler::new(from_hz, to_hz);
    let mut out = Vec::with_capacity(input.len() * to_hz as usize / from_hz.max(1) as usize + 32);
    r.process(input, &mut out);
    r.finish(&mut out);
    out
}

/// Decodes little-endian 16-bit PCM bytes that may split a sample across calls;
/// `carry` holds the odd byte between calls.
pub fn le_bytes_to_pcm(bytes: &[u8], carry: &mut Option<u8>) -> Vec<i16> {
    let mut out = Vec::with_capacity(bytes.len() / 2 + 1);
    let mut bytes = bytes;
    if let (Some(lo), Some(&hi)) = (*carry, bytes.first()) {
        out.push(i16::from_le_bytes([lo, hi]));
        bytes = &bytes[1..];
        *carry = None;
    }
    let mut pairs = bytes.chunks_exact(2);
    out.extend(pairs.by_ref().map(|p| i16::from_le_bytes([p[0], p[1]])));
    if let Some(&b) = pairs.remainder().first() {
        *carry = Some(b);
    }
    out
}

/// Writes 16 kHz mono PCM as a 16-bit WAV file.
pub fn write_wav(path: &Path, pcm: &[i16]) -> Result<(), SpeechError> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE_HZ,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)?;
    for &s in pcm {
        w.write_sample(s)?;
    }
    w.finalize()?;
    Ok(())
}

/// Reads a WAV file (16-bit int or float, any rate, any channel count) as 16 kHz mono.
pub fn read_wav_16k(path: &Path) -> Result<Vec<i16>, SpeechError> {
    let mut r = hound::WavReader::open(path)?;
    let spec = r.spec();
    let channels = usize::from(spec.channels.max(1));
    let interleaved: Vec<i16> = match spec.sample_format {
        hound::SampleFormat::Int if spec.bits_per_sample <= 16 => {
            let shift = 16 - spec.bits_per_sample;
            r.samples::<i16>()
                .map(|s| s.map(|v| v << shift))
                .collect::<Result<_, _>>()?
        }
        hound::SampleFormat::Int => {
            let shift = spec.bits_per_sample - 16;
            r.samples::<i32>()
                .map(|s| s.map(|v| (v >> shift) as i16))
                .collect::<Result<_, _>>()?
        }
        hound::SampleFormat::Float => r
            .samples::<f32>()
            .map(|s| s.map(|v| (v * 32767.0).clamp(-32768.0, 32767.0) as i16))
            .collect::<Result<_, _>>()?,
    };
    let mono: Vec<i16> = interleaved
        .chunks(channels)
        .map(|c| (c.iter().map(|&s| i32::from(s)).sum::<i32>() / c.len() as i32) as i16)
        .collect();
    Ok(resample(&mono, spec.sample_rate, SAMPLE_RATE_HZ))
}

/// Root-mean-square level of a buffer (0..32768).
pub fn rms(pcm: &[i16]) -> f64 {
    if pcm.is_empty() {
        return 0.0;
    }
    let sum: f64 = pcm.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / pcm.len() as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, hz: f64, secs: f64) -> Vec<i16> {
        (0..(f64::from(rate) * secs) as usize)
            .map(|i| {
                (10_000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate)).sin())
                    as i16
            })
            .collect()
    }

    /// Goertzel power of `hz` in `pcm`, normalised.
    fn power(pcm: &[i16], rate: u32, hz: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * hz / f64::from(rate);
        let (mut s1, mut s2) = (0.0, 0.0);
        for &x in pcm {
            let s = f64::from(x) + 2.0 * w.cos() * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2) / (pcm.len() as f64).powi(2)
    }

    #[test]
    fn resample_keeps_length_and_pitch() {
        for from in [24_000, 22_050, 8_000] {
            let input = tone(from, 440.0, 1.0);
            let out = resample(&input, from, SAMPLE_RATE_HZ);
            assert!(
                (out.len() as i64 - 16_000).abs() < 40,
                "{from}: {}",
                out.len()
            );
            let p440 = power(&out, SAMPLE_RATE_HZ, 440.0);
            let p600 = power(&out, SAMPLE_RATE_HZ, 600.0);
            assert!(p440 > 100.0 * p600, "{from}: {p440} vs {p600}");
            assert!((rms(&out[1000..15_000]) - 7071.0).abs() < 400.0, "{from}");
        }
    }

    #[test]
    fn streaming_equals_one_shot() {
        let input = tone(24_000, 300.0, 0.5);
        let whole = resample(&input, 24_000, 16_000);
        let mut r = Resampler::new(24_000, 16_000);
        let mut out = Vec::new();
        for c in input.chunks(333) {
            r.process(c, &mut out);
        }
        r.finish(&mut out);
        assert_eq!(whole, out);
    }

    #[test]
    fn wav_round_trip() {
        let dir = std::env::temp_dir().join(format!("vg-speech-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.wav");
        let pcm = tone(16_000, 200.0, 0.2);
        write_wav(&p, &pcm).unwrap();
        assert_eq!(read_wav_16k(&p).unwrap(), pcm);
    }
}
